//! One user's running state ([`ProfileState`]), its self-contained serializable form
//! ([`StateRecord`]) and the output row ([`Profile`], design brief §4). Pure, no I/O.
//!
//! Every field is a commutative aggregate (counts, sums, min/max, set unions, per-string
//! counts with a deterministic tie-break), so applying the same multiset of events in any
//! order, or merging partial states, gives the same profile.

use serde::{Deserialize, Serialize};

use super::compact::{session_key, Interner, TinyCounter, TinySet};
use super::segment::Segment;
use crate::event::{Event, EventType};
use crate::money;
use crate::time;

/// The running aggregate of one user's events: 128 bytes plus heap only for users with
/// more than one distinct session, product, day, category or brand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileState {
    /// Sum of purchase prices in cents. Saturates at i64::MAX, i.e. 92 million billion
    /// currency units for one user, which no real data reaches; 8 bytes instead of 16 for
    /// every user is worth that documented bound.
    revenue_cents: i64,
    first_seen: i64,
    last_seen: i64,
    /// -1 when there was no purchase.
    max_purchase_cents: i64,
    /// Indexed by `type_index`.
    counts: [u32; 4],
    sessions: TinySet<u64>,
    products: TinySet<u64>,
    days: TinySet<i32>,
    categories: TinyCounter,
    brands: TinyCounter,
}

fn type_index(event_type: EventType) -> usize {
    match event_type {
        EventType::View => 0,
        EventType::Cart => 1,
        EventType::RemoveFromCart => 2,
        EventType::Purchase => 3,
    }
}

impl Default for ProfileState {
    fn default() -> Self {
        ProfileState {
            revenue_cents: 0,
            first_seen: i64::MAX,
            last_seen: i64::MIN,
            max_purchase_cents: -1,
            counts: [0; 4],
            sessions: TinySet::default(),
            products: TinySet::default(),
            days: TinySet::default(),
            categories: TinyCounter::default(),
            brands: TinyCounter::default(),
        }
    }
}

impl ProfileState {
    /// Folds one event in. `names` interns category and brand strings.
    pub fn apply(&mut self, event: &Event, names: &mut Interner) {
        let slot = &mut self.counts[type_index(event.event_type)];
        *slot = slot.saturating_add(1);
        if event.event_type == EventType::Purchase {
            self.revenue_cents = self.revenue_cents.saturating_add(event.price_cents);
            self.max_purchase_cents = self.max_purchase_cents.max(event.price_cents);
        }
        self.first_seen = self.first_seen.min(event.event_time);
        self.last_seen = self.last_seen.max(event.event_time);
        if let Some(session) = &event.user_session {
            self.sessions.insert(session_key(session));
        }
        self.products.insert(event.product_id);
        self.days.insert(time::utc_day(event.event_time));
        if let Some(code) = &event.category_code {
            self.categories.add(names.intern(code), 1);
        }
        if let Some(brand) = &event.brand {
            self.brands.add(names.intern(brand), 1);
        }
    }

    /// Folds another state of the same user in (both interned in `names`).
    pub fn merge(&mut self, other: &ProfileState) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine = mine.saturating_add(theirs);
        }
        self.revenue_cents = self.revenue_cents.saturating_add(other.revenue_cents);
        self.max_purchase_cents = self.max_purchase_cents.max(other.max_purchase_cents);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        other.sessions.iter().for_each(|s| self.sessions.insert(s));
        other.products.iter().for_each(|p| self.products.insert(p));
        other.days.iter().for_each(|d| self.days.insert(d));
        other
            .categories
            .iter()
            .for_each(|(s, c)| self.categories.add(s, c));
        other.brands.iter().for_each(|(s, c)| self.brands.add(s, c));
    }

    pub fn total_events(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    pub fn count(&self, event_type: EventType) -> u64 {
        u64::from(self.counts[type_index(event_type)])
    }

    pub fn revenue_cents(&self) -> i64 {
        self.revenue_cents
    }

    /// The §4 output row.
    pub fn profile(&self, user_id: u64, names: &Interner) -> Profile {
        let total_events = self.total_events();
        let views = self.count(EventType::View);
        let carts = self.count(EventType::Cart);
        let purchases = self.count(EventType::Purchase);
        let ratio = |num: u64, den: u64| if den == 0 { 0.0 } else { num as f64 / den as f64 };
        Profile {
            user_id,
            total_events,
            views,
            carts,
            removals: self.count(EventType::RemoveFromCart),
            purchases,
            revenue_cents: self.revenue_cents,
            avg_order_value_cents: money::divide_cents_rounded(
                i128::from(self.revenue_cents),
                purchases,
            ) as i64,
            max_purchase_price_cents: (self.max_purchase_cents >= 0)
                .then_some(self.max_purchase_cents),
            distinct_sessions: self.sessions.len() as u64,
            distinct_products: self.products.len() as u64,
            active_days: self.days.len() as u64,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            favorite_category: self.categories.favorite(names).map(str::to_owned),
            favorite_brand: self.brands.favorite(names).map(str::to_owned),
            conversion_rate: ratio(purchases, total_events),
            cart_to_purchase_rate: ratio(purchases, carts),
            segment: Segment::classify(purchases, self.revenue_cents, carts, views),
        }
    }

    /// The self-contained serializable form (strings instead of symbols, sorted sets).
    pub fn to_record(&self, user_id: u64, names: &Interner) -> StateRecord {
        let named = |counter: &TinyCounter| {
            let mut pairs: Vec<(String, u32)> = counter
                .iter()
                .map(|(s, c)| (names.resolve(s).to_owned(), c))
                .collect();
            pairs.sort();
            pairs
        };
        StateRecord {
            user_id,
            views: self.counts[0],
            carts: self.counts[1],
            removals: self.counts[2],
            purchases: self.counts[3],
            revenue_cents: self.revenue_cents,
            max_purchase_cents: (self.max_purchase_cents >= 0).then_some(self.max_purchase_cents),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            session_keys: self.sessions.sorted(),
            products: self.products.sorted(),
            days: self.days.sorted(),
            categories: named(&self.categories),
            brands: named(&self.brands),
        }
    }

    /// Rebuilds a state from its record, interning its strings into `names`.
    pub fn from_record(record: &StateRecord, names: &mut Interner) -> ProfileState {
        let mut state = ProfileState {
            revenue_cents: record.revenue_cents,
            first_seen: record.first_seen,
            last_seen: record.last_seen,
            max_purchase_cents: record.max_purchase_cents.unwrap_or(-1),
            counts: [record.views, record.carts, record.removals, record.purchases],
            ..ProfileState::default()
        };
        record
            .session_keys
            .iter()
            .filter(|&&k| k != 0)
            .for_each(|&k| state.sessions.insert(k));
        record
            .products
            .iter()
            .filter(|&&p| p != 0)
            .for_each(|&p| state.products.insert(p));
        record
            .days
            .iter()
            .filter(|&&d| d != i32::MIN)
            .for_each(|&d| state.days.insert(d));
        for (name, count) in &record.categories {
            state.categories.add(names.intern(name), *count);
        }
        for (name, count) in &record.brands {
            state.brands.add(names.intern(name), *count);
        }
        state
    }
}

/// [`ProfileState`] in a form that stands alone: what the process role persists in its
/// snapshot and restores after a crash or rebalance. Sets are sorted, so equal states have
/// equal records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    pub user_id: u64,
    pub views: u32,
    pub carts: u32,
    pub removals: u32,
    pub purchases: u32,
    pub revenue_cents: i64,
    pub max_purchase_cents: Option<i64>,
    /// Epoch microseconds.
    pub first_seen: i64,
    pub last_seen: i64,
    /// [`super::compact::session_key`] of each distinct session.
    pub session_keys: Vec<u64>,
    pub products: Vec<u64>,
    /// UTC day numbers (days since 1970-01-01).
    pub days: Vec<i32>,
    /// (category_code, events) sorted by name.
    pub categories: Vec<(String, u32)>,
    /// (brand, events) sorted by name.
    pub brands: Vec<(String, u32)>,
}

/// One customer profile: the §4 row. Money in exact cents, times in epoch microseconds.
///
/// The serde form is the search-index document: the §4 names; `revenue`,
/// `avg_order_value` and `max_purchase_price` as JSON numbers with at most two decimals;
/// `first_seen`/`last_seen` as RFC 3339; `segment` as its display name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub user_id: u64,
    pub total_events: u64,
    pub views: u64,
    pub carts: u64,
    pub removals: u64,
    pub purchases: u64,
    #[serde(rename = "revenue", with = "cents_as_number")]
    pub revenue_cents: i64,
    /// revenue / purchases in cents, rounded half away from zero; 0 without purchases.
    #[serde(rename = "avg_order_value", with = "cents_as_number")]
    pub avg_order_value_cents: i64,
    #[serde(rename = "max_purchase_price", with = "opt_cents_as_number")]
    pub max_purchase_price_cents: Option<i64>,
    pub distinct_sessions: u64,
    pub distinct_products: u64,
    pub active_days: u64,
    #[serde(with = "micros_as_rfc3339")]
    pub first_seen: i64,
    #[serde(with = "micros_as_rfc3339")]
    pub last_seen: i64,
    pub favorite_category: Option<String>,
    pub favorite_brand: Option<String>,
    pub conversion_rate: f64,
    pub cart_to_purchase_rate: f64,
    pub segment: Segment,
}

/// The §4 column names, in output order.
pub const PROFILE_COLUMNS: [&str; 19] = [
    "user_id",
    "total_events",
    "views",
    "carts",
    "removals",
    "purchases",
    "revenue",
    "avg_order_value",
    "max_purchase_price",
    "distinct_sessions",
    "distinct_products",
    "active_days",
    "first_seen",
    "last_seen",
    "favorite_category",
    "favorite_brand",
    "conversion_rate",
    "cart_to_purchase_rate",
    "segment",
];

fn cents_to_json(cents: i64) -> serde_json::Number {
    // Shortest round-trip formatting of the f64 nearest to cents/100 prints exactly two
    // decimals for any amount below 2^53 cents; readers convert back with round(x*100).
    serde_json::Number::from_f64(cents as f64 / 100.0).unwrap_or_else(|| 0.into())
}

fn json_to_cents(number: &serde_json::Number) -> Option<i64> {
    if let Some(i) = number.as_i64() {
        return i.checked_mul(100);
    }
    number.as_f64().map(|f| (f * 100.0).round() as i64)
}

mod cents_as_number {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(cents: &i64, s: S) -> Result<S::Ok, S::Error> {
        super::cents_to_json(*cents).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let number = serde_json::Number::deserialize(d)?;
        super::json_to_cents(&number).ok_or_else(|| serde::de::Error::custom("bad amount"))
    }
}

mod opt_cents_as_number {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(cents: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        cents.map(super::cents_to_json).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<serde_json::Number>::deserialize(d)? {
            None => Ok(None),
            Some(n) => super::json_to_cents(&n)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("bad amount")),
        }
    }
}

mod micros_as_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(micros: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::time::rfc3339_string(*micros))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        crate::time::parse_event_time(text.as_bytes())
            .ok_or_else(|| serde::de::Error::custom(format!("bad time {text:?}")))
    }
}
