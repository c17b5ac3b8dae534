//! One user's running state ([`ProfileState`]), its self-contained serializable form
//! ([`StateRecord`]) and the output row ([`Profile`], design brief §4). Pure, no I/O.
//!
//! Every field is a commutative aggregate (counts, sums, min/max, set unions, per-string
//! counts with a deterministic tie-break), so applying the same multiset of events in any
//! order, or merging partial states, gives the same profile.

use serde::{Deserialize, Serialize};

use super::compact::{session_key, Interner, Sym};
use super::segment::Segment;
use crate::event::{Event, EventType};
use crate::money;
use crate::time;

/// The five distinct-value collections of a state, by position in `firsts`/`spilled`.
const SESSIONS: usize = 0;
const PRODUCTS: usize = 1;
const DAYS: usize = 2;
const CATEGORIES: usize = 3;
const BRANDS: usize = 4;

/// The running aggregate of one user's events, 128 bytes inline.
///
/// Each of the five collections (session keys, products, days, and the per-category and
/// per-brand counts) keeps its first element inline; further distinct elements go to one
/// shared, exactly sized heap slice, sorted within each collection's segment. A typical
/// user (one to three events) needs no heap at all, and a user who needs some pays one
/// allocation, not one per collection. Every element is a non-zero `u64`, so 0 marks "none":
/// sessions are [`session_key`]s (never 0), products are positive ids, days are shifted by
/// [`encode_day`], and counters are packed as `(symbol + 1) << 32 | count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileState {
    /// Sum of purchase prices in cents, at most i64::MAX (92 million billion currency
    /// units for one user, which no real data reaches; 8 bytes instead of 16 for every
    /// user is worth that bound). A sum beyond it is an error ([`Quantity::Revenue`]),
    /// never saturated or wrapped.
    revenue_cents: i64,
    first_seen: i64,
    last_seen: i64,
    /// -1 when there was no purchase.
    max_purchase_cents: i64,
    /// Indexed by `type_index`; a count beyond u32::MAX is an error ([`Quantity`]).
    counts: [u32; 4],
    firsts: [u64; 5],
    /// Elements of each collection held in `spill`.
    spilled: [u32; 5],
    spill: Option<Box<[u64]>>,
}

fn type_index(event_type: EventType) -> usize {
    match event_type {
        EventType::View => 0,
        EventType::Cart => 1,
        EventType::RemoveFromCart => 2,
        EventType::Purchase => 3,
    }
}

/// A UTC day number as a non-zero, order-preserving u64.
fn encode_day(day: i32) -> u64 {
    (i64::from(day) - i64::from(i32::MIN) + 1) as u64
}

fn decode_day(value: u64) -> i32 {
    (value as i64 - 1 + i64::from(i32::MIN)) as i32
}

fn pack(sym: Sym, count: u32) -> u64 {
    (u64::from(sym.index()) + 1) << 32 | u64::from(count)
}

fn unpack(value: u64) -> (Sym, u32) {
    (Sym::from_index(((value >> 32) - 1) as u32), value as u32)
}

/// Adds to a packed counter. Callers check with [`ProfileState::counter`] first that the
/// sum fits (saturation here would only hide a bug).
fn add_count(value: u64, count: u32) -> u64 {
    let total = (value as u32).saturating_add(count);
    (value & !0xFFFF_FFFF) | u64::from(total)
}

/// A quantity of a profile state that would not fit its integer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// The count of one event type (`views`, `carts`, `removals`, `purchases`).
    Events(EventType),
    /// The sum of purchase prices in cents.
    Revenue,
    /// The events of one `category_code` (for `favorite_category`).
    CategoryEvents,
    /// The events of one `brand` (for `favorite_brand`).
    BrandEvents,
}

impl Quantity {
    /// The largest value the quantity can hold, as a person reads it.
    pub fn limit(self) -> String {
        match self {
            Quantity::Revenue => format!(
                "{} (the largest sum of cents a 64-bit integer holds)",
                money::format_cents(i128::from(i64::MAX))
            ),
            _ => format!(
                "{} events (the largest count a profile state holds)",
                u32::MAX
            ),
        }
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quantity::Events(EventType::View) => "views",
            Quantity::Events(EventType::Cart) => "carts",
            Quantity::Events(EventType::RemoveFromCart) => "removals",
            Quantity::Events(EventType::Purchase) => "purchases",
            Quantity::Revenue => "revenue",
            Quantity::CategoryEvents => "the events of one category_code",
            Quantity::BrandEvents => "the events of one brand",
        })
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
            firsts: [0; 5],
            spilled: [0; 5],
            spill: None,
        }
    }
}

impl ProfileState {
    fn segment(&self, which: usize) -> std::ops::Range<usize> {
        let start: u32 = self.spilled[..which].iter().sum();
        start as usize..(start + self.spilled[which]) as usize
    }

    fn spilled_values(&self, which: usize) -> &[u64] {
        match &self.spill {
            Some(spill) => &spill[self.segment(which)],
            None => &[],
        }
    }

    /// Inserts `value` at `at` (an absolute index into the spill) for collection `which`.
    fn spill_insert(&mut self, which: usize, at: usize, value: u64) {
        let old = self.spill.take().unwrap_or_default();
        let mut grown = Vec::with_capacity(old.len() + 1);
        grown.extend_from_slice(&old[..at]);
        grown.push(value);
        grown.extend_from_slice(&old[at..]);
        self.spill = Some(grown.into_boxed_slice());
        self.spilled[which] += 1;
    }

    fn insert(&mut self, which: usize, value: u64) {
        debug_assert!(value != 0);
        if self.firsts[which] == 0 {
            self.firsts[which] = value;
        } else if self.firsts[which] != value {
            let range = self.segment(which);
            if let Err(pos) = self.spilled_values(which).binary_search(&value) {
                self.spill_insert(which, range.start + pos, value);
            }
        }
    }

    fn count_into(&mut self, which: usize, sym: Sym, count: u32) {
        let packed = pack(sym, count);
        let key = packed >> 32;
        if self.firsts[which] == 0 {
            self.firsts[which] = packed;
        } else if self.firsts[which] >> 32 == key {
            self.firsts[which] = add_count(self.firsts[which], count);
        } else {
            let range = self.segment(which);
            match self
                .spilled_values(which)
                .binary_search_by_key(&key, |v| v >> 32)
            {
                Ok(pos) => {
                    if let Some(spill) = &mut self.spill {
                        let slot = &mut spill[range.start + pos];
                        *slot = add_count(*slot, count);
                    }
                }
                Err(pos) => self.spill_insert(which, range.start + pos, packed),
            }
        }
    }

    /// The current count of `sym` in counter collection `which` (0 when absent).
    fn counter(&self, which: usize, sym: Sym) -> u32 {
        let key = u64::from(sym.index()) + 1;
        if self.firsts[which] >> 32 == key {
            return self.firsts[which] as u32;
        }
        let spilled = self.spilled_values(which);
        match spilled.binary_search_by_key(&key, |v| v >> 32) {
            Ok(pos) => spilled[pos] as u32,
            Err(_) => 0,
        }
    }

    /// Whether `count` more of `sym` still fit in counter collection `which`.
    fn counter_fits(&self, which: usize, sym: Sym, count: u32) -> bool {
        self.counter(which, sym).checked_add(count).is_some()
    }

    /// The elements of one collection (first inline element, then the spilled ones).
    fn values(&self, which: usize) -> impl Iterator<Item = u64> + '_ {
        let first = (self.firsts[which] != 0).then_some(self.firsts[which]);
        first
            .into_iter()
            .chain(self.spilled_values(which).iter().copied())
    }

    fn distinct(&self, which: usize) -> u64 {
        u64::from(self.firsts[which] != 0) + u64::from(self.spilled[which])
    }

    fn sorted(&self, which: usize) -> Vec<u64> {
        let mut all: Vec<u64> = self.values(which).collect();
        all.sort_unstable();
        all
    }

    /// The most frequent string of a counter; ties go to the lexicographically smallest.
    fn favorite<'a>(&self, which: usize, names: &'a Interner) -> Option<&'a str> {
        let mut best: Option<(u32, &str)> = None;
        for (sym, count) in self.values(which).map(unpack) {
            let name = names.resolve(sym);
            best = match best {
                Some((c, n)) if c > count || (c == count && n <= name) => Some((c, n)),
                _ => Some((count, name)),
            };
        }
        best.map(|(_, name)| name)
    }

    /// Folds one event in. `names` interns category and brand strings. When a count or the
    /// revenue would overflow, returns that quantity and leaves the state as it was.
    pub fn apply(&mut self, event: &Event, names: &mut Interner) -> Result<(), Quantity> {
        let kind = type_index(event.event_type);
        let count = self.counts[kind]
            .checked_add(1)
            .ok_or(Quantity::Events(event.event_type))?;
        let revenue = if event.event_type == EventType::Purchase {
            self.revenue_cents
                .checked_add(event.price_cents)
                .ok_or(Quantity::Revenue)?
        } else {
            self.revenue_cents
        };
        let category = event.category_code.as_deref().map(|c| names.intern(c));
        let brand = event.brand.as_deref().map(|b| names.intern(b));
        if category.is_some_and(|sym| !self.counter_fits(CATEGORIES, sym, 1)) {
            return Err(Quantity::CategoryEvents);
        }
        if brand.is_some_and(|sym| !self.counter_fits(BRANDS, sym, 1)) {
            return Err(Quantity::BrandEvents);
        }
        // Nothing can fail from here on.
        self.counts[kind] = count;
        self.revenue_cents = revenue;
        if event.event_type == EventType::Purchase {
            self.max_purchase_cents = self.max_purchase_cents.max(event.price_cents);
        }
        self.first_seen = self.first_seen.min(event.event_time);
        self.last_seen = self.last_seen.max(event.event_time);
        if let Some(session) = &event.user_session {
            self.insert(SESSIONS, session_key(session));
        }
        self.insert(PRODUCTS, event.product_id);
        self.insert(DAYS, encode_day(time::utc_day(event.event_time)));
        if let Some(sym) = category {
            self.count_into(CATEGORIES, sym, 1);
        }
        if let Some(sym) = brand {
            self.count_into(BRANDS, sym, 1);
        }
        Ok(())
    }

    /// Folds another state of the same user in (both interned in the same `Interner`).
    /// When a count or the revenue would overflow, returns that quantity and leaves the
    /// state as it was.
    pub fn merge(&mut self, other: &ProfileState) -> Result<(), Quantity> {
        let mut counts = self.counts;
        for ((sum, theirs), kind) in counts.iter_mut().zip(other.counts).zip(EventType::ALL) {
            *sum = sum.checked_add(theirs).ok_or(Quantity::Events(kind))?;
        }
        let revenue = self
            .revenue_cents
            .checked_add(other.revenue_cents)
            .ok_or(Quantity::Revenue)?;
        for (which, quantity) in [
            (CATEGORIES, Quantity::CategoryEvents),
            (BRANDS, Quantity::BrandEvents),
        ] {
            let fits = other
                .values(which)
                .map(unpack)
                .all(|(sym, count)| self.counter_fits(which, sym, count));
            if !fits {
                return Err(quantity);
            }
        }
        // Nothing can fail from here on.
        self.counts = counts;
        self.revenue_cents = revenue;
        self.max_purchase_cents = self.max_purchase_cents.max(other.max_purchase_cents);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        for which in [SESSIONS, PRODUCTS, DAYS] {
            other.values(which).for_each(|v| self.insert(which, v));
        }
        for which in [CATEGORIES, BRANDS] {
            other
                .values(which)
                .map(unpack)
                .for_each(|(sym, count)| self.count_into(which, sym, count));
        }
        Ok(())
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
        let ratio = |num: u64, den: u64| {
            if den == 0 {
                0.0
            } else {
                num as f64 / den as f64
            }
        };
        Profile {
            user_id,
            total_events,
            views,
            carts,
            removals: self.count(EventType::RemoveFromCart),
            purchases,
            revenue_cents: self.revenue_cents,
            // |revenue / purchases| <= |revenue| (rounding adds at most one cent, and only
            // when dividing by 2 or more), so the quotient always fits in i64.
            avg_order_value_cents: money::divide_cents_rounded(
                i128::from(self.revenue_cents),
                purchases,
            ) as i64,
            max_purchase_price_cents: (self.max_purchase_cents >= 0)
                .then_some(self.max_purchase_cents),
            distinct_sessions: self.distinct(SESSIONS),
            distinct_products: self.distinct(PRODUCTS),
            active_days: self.distinct(DAYS),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            favorite_category: self.favorite(CATEGORIES, names).map(str::to_owned),
            favorite_brand: self.favorite(BRANDS, names).map(str::to_owned),
            conversion_rate: ratio(purchases, total_events),
            cart_to_purchase_rate: ratio(purchases, carts),
            segment: Segment::classify(purchases, self.revenue_cents, carts, views),
        }
    }

    /// The self-contained serializable form (strings instead of symbols, sorted sets).
    pub fn to_record(&self, user_id: u64, names: &Interner) -> StateRecord {
        let named = |which: usize| {
            let mut pairs: Vec<(String, u32)> = self
                .values(which)
                .map(unpack)
                .map(|(s, c)| (names.resolve(s).to_owned(), c))
                .collect();
            pairs.sort();
            pairs
        };
        let mut days: Vec<i32> = self.values(DAYS).map(decode_day).collect();
        days.sort_unstable();
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
            session_keys: self.sorted(SESSIONS),
            products: self.sorted(PRODUCTS),
            days,
            categories: named(CATEGORIES),
            brands: named(BRANDS),
        }
    }

    /// Rebuilds a state from its record, interning its strings into `names`. Zero session
    /// keys and product ids (impossible in a record we wrote) are skipped; a name listed
    /// twice (also impossible) has its counts added, and a sum that would overflow is
    /// returned as an error.
    pub fn from_record(
        record: &StateRecord,
        names: &mut Interner,
    ) -> Result<ProfileState, Quantity> {
        let mut state = ProfileState {
            revenue_cents: record.revenue_cents,
            first_seen: record.first_seen,
            last_seen: record.last_seen,
            max_purchase_cents: record.max_purchase_cents.unwrap_or(-1),
            counts: [
                record.views,
                record.carts,
                record.removals,
                record.purchases,
            ],
            ..ProfileState::default()
        };
        for &key in record.session_keys.iter().filter(|&&k| k != 0) {
            state.insert(SESSIONS, key);
        }
        for &product in record.products.iter().filter(|&&p| p != 0) {
            state.insert(PRODUCTS, product);
        }
        for &day in &record.days {
            state.insert(DAYS, encode_day(day));
        }
        for (which, quantity, named) in [
            (CATEGORIES, Quantity::CategoryEvents, &record.categories),
            (BRANDS, Quantity::BrandEvents, &record.brands),
        ] {
            for (name, count) in named {
                let sym = names.intern(name);
                if !state.counter_fits(which, sym, *count) {
                    return Err(quantity);
                }
                state.count_into(which, sym, *count);
            }
        }
        Ok(state)
    }

    /// Heap bytes owned by this state (beyond its 128 inline bytes).
    pub fn heap_bytes(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.len() * 8)
    }
}

/// A list column as one flat vector of values and each row's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatList<T> {
    pub lengths: Vec<usize>,
    pub values: Vec<T>,
}

impl<T> Default for FlatList<T> {
    fn default() -> Self {
        FlatList {
            lengths: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<T> FlatList<T> {
    /// Appends a row and returns its values (to sort them in place).
    fn push_row(&mut self, items: impl IntoIterator<Item = T>) -> &mut [T] {
        let start = self.values.len();
        self.values.extend(items);
        self.lengths.push(self.values.len() - start);
        &mut self.values[start..]
    }
}

/// Many users' [`StateRecord`]s column by column, in the order of the state files' schema,
/// with the names borrowed: filled from compact states with no vector or string per user
/// (a full checkpoint writes every user of a partition; building and freeing a
/// `StateRecord` for each was about a third of the state file's cost).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateColumns<'a> {
    pub user_ids: Vec<u64>,
    pub views: Vec<u32>,
    pub carts: Vec<u32>,
    pub removals: Vec<u32>,
    pub purchases: Vec<u32>,
    pub revenue_cents: Vec<i64>,
    pub max_purchase_cents: Vec<Option<i64>>,
    pub first_seen: Vec<i64>,
    pub last_seen: Vec<i64>,
    pub session_keys: FlatList<u64>,
    pub products: FlatList<u64>,
    pub days: FlatList<i32>,
    pub category_names: FlatList<&'a str>,
    pub category_counts: FlatList<u32>,
    pub brand_names: FlatList<&'a str>,
    pub brand_counts: FlatList<u32>,
    /// Reused to sort one user's (name, count) pairs; empty between rows.
    pairs: Vec<(&'a str, u32)>,
}

impl<'a> StateColumns<'a> {
    pub fn is_empty(&self) -> bool {
        self.user_ids.is_empty()
    }

    /// Appends a record as it is (its sets are sorted already).
    pub fn push_record(&mut self, record: &'a StateRecord) {
        self.push_scalars(
            record.user_id,
            [
                record.views,
                record.carts,
                record.removals,
                record.purchases,
            ],
            record.revenue_cents,
            record.max_purchase_cents,
            (record.first_seen, record.last_seen),
        );
        self.session_keys
            .push_row(record.session_keys.iter().copied());
        self.products.push_row(record.products.iter().copied());
        self.days.push_row(record.days.iter().copied());
        self.category_names
            .push_row(record.categories.iter().map(|(n, _)| n.as_str()));
        self.category_counts
            .push_row(record.categories.iter().map(|&(_, c)| c));
        self.brand_names
            .push_row(record.brands.iter().map(|(n, _)| n.as_str()));
        self.brand_counts
            .push_row(record.brands.iter().map(|&(_, c)| c));
    }

    fn push_scalars(
        &mut self,
        user_id: u64,
        [views, carts, removals, purchases]: [u32; 4],
        revenue_cents: i64,
        max_purchase_cents: Option<i64>,
        (first_seen, last_seen): (i64, i64),
    ) {
        self.user_ids.push(user_id);
        self.views.push(views);
        self.carts.push(carts);
        self.removals.push(removals);
        self.purchases.push(purchases);
        self.revenue_cents.push(revenue_cents);
        self.max_purchase_cents.push(max_purchase_cents);
        self.first_seen.push(first_seen);
        self.last_seen.push(last_seen);
    }
}

/// Appends one user's (name, count) pairs sorted by name, as [`ProfileState::to_record`]
/// orders them.
fn push_named<'a>(
    pairs: &mut Vec<(&'a str, u32)>,
    names: &mut FlatList<&'a str>,
    counts: &mut FlatList<u32>,
    row: impl Iterator<Item = (&'a str, u32)>,
) {
    pairs.extend(row);
    pairs.sort_unstable();
    names.push_row(pairs.iter().map(|&(n, _)| n));
    counts.push_row(pairs.iter().map(|&(_, c)| c));
    pairs.clear();
}

impl ProfileState {
    /// Appends this state as `user_id`'s row: the same values as [`Self::to_record`].
    pub fn push_columns<'a>(
        &self,
        user_id: u64,
        names: &'a Interner,
        columns: &mut StateColumns<'a>,
    ) {
        columns.push_scalars(
            user_id,
            self.counts,
            self.revenue_cents,
            (self.max_purchase_cents >= 0).then_some(self.max_purchase_cents),
            (self.first_seen, self.last_seen),
        );
        columns
            .session_keys
            .push_row(self.values(SESSIONS))
            .sort_unstable();
        columns
            .products
            .push_row(self.values(PRODUCTS))
            .sort_unstable();
        columns
            .days
            .push_row(self.values(DAYS).map(decode_day))
            .sort_unstable();
        let named = |which| {
            self.values(which)
                .map(unpack)
                .map(|(s, c)| (names.resolve(s), c))
        };
        push_named(
            &mut columns.pairs,
            &mut columns.category_names,
            &mut columns.category_counts,
            named(CATEGORIES),
        );
        push_named(
            &mut columns.pairs,
            &mut columns.brand_names,
            &mut columns.brand_counts,
            named(BRANDS),
        );
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
