//! The business report: pure computation from profiles (and, when available, tallies of
//! the events) to a [`Report`], the one model its text form ([`text`]) and its HTML page
//! ([`html`]) are both rendered from, so both show the same figures. No I/O here; reading a
//! local lake is in [`lake`].
//!
//! Sources of each part:
//! - customers, segments, the funnel, revenue, purchases, conversion and AOV come from the
//!   profiles (lake profiles Parquet, or the search index);
//! - top categories and brands rank by *purchase revenue of the events* in that category
//!   or brand (not by users' favourites), and revenue and AOV by day come from the events
//!   too, so both need the events: the embedded run tallies them while it streams; a lake
//!   is read back from its events Parquet; the search index holds profiles only, so a
//!   report from it has `None` for these parts.

pub mod chart;
pub mod html;
pub mod lake;
pub mod text;

use std::collections::HashMap;

use serde::Serialize;

use crate::event::{Event, EventType};
use crate::money::{divide_cents_rounded, format_cents};
use crate::profile::{Profile, Segment};

pub use lake::{parquet_files, read_profiles, read_purchase_tally, report_from_lake};

/// How many categories and brands the report lists.
pub const TOP: usize = 10;

/// What the report needs from the events: purchase revenue and count per category_code
/// and per brand, and per UTC day the events, purchases and purchase revenue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevenueTally {
    categories: HashMap<String, (i128, u64)>,
    brands: HashMap<String, (i128, u64)>,
    days: HashMap<i32, DayTally>,
}

/// One UTC day's events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct DayTally {
    events: u64,
    purchases: u64,
    revenue_cents: i128,
}

impl RevenueTally {
    /// Counts an event in its day; a purchase also in its category and brand.
    pub fn add(&mut self, event: &Event) {
        self.add_event(
            event.utc_day(),
            event.event_type,
            event.category_code.as_deref(),
            event.brand.as_deref(),
            event.price_cents,
        );
    }

    /// [`RevenueTally::add`] from an event's parts (`day`: days since 1970-01-01, UTC).
    pub fn add_event(
        &mut self,
        day: i32,
        event_type: EventType,
        category: Option<&str>,
        brand: Option<&str>,
        cents: i64,
    ) {
        let slot = self.days.entry(day).or_default();
        slot.events += 1;
        if event_type != EventType::Purchase {
            return;
        }
        slot.purchases += 1;
        slot.revenue_cents += i128::from(cents);
        self.add_purchase(category, brand, cents);
    }

    /// Counts a purchase in its category and brand only (not in a day).
    pub fn add_purchase(&mut self, category: Option<&str>, brand: Option<&str>, cents: i64) {
        let bump = |map: &mut HashMap<String, (i128, u64)>, key: &str| {
            let slot = match map.get_mut(key) {
                Some(slot) => slot,
                None => map.entry(key.to_owned()).or_default(),
            };
            slot.0 += i128::from(cents);
            slot.1 += 1;
        };
        if let Some(category) = category {
            bump(&mut self.categories, category);
        }
        if let Some(brand) = brand {
            bump(&mut self.brands, brand);
        }
    }

    pub fn merge(&mut self, other: &RevenueTally) {
        for (mine, theirs) in [
            (&mut self.categories, &other.categories),
            (&mut self.brands, &other.brands),
        ] {
            for (key, (cents, n)) in theirs {
                let slot = mine.entry(key.clone()).or_default();
                slot.0 += cents;
                slot.1 += n;
            }
        }
        for (day, theirs) in &other.days {
            let slot = self.days.entry(*day).or_default();
            slot.events += theirs.events;
            slot.purchases += theirs.purchases;
            slot.revenue_cents += theirs.revenue_cents;
        }
    }

    fn top(map: &HashMap<String, (i128, u64)>, n: usize) -> Vec<RevenueLine> {
        let mut lines: Vec<RevenueLine> = map
            .iter()
            .map(|(name, &(revenue_cents, purchases))| RevenueLine {
                name: name.clone(),
                revenue_cents,
                purchases,
            })
            .collect();
        lines.sort_by(|a, b| {
            b.revenue_cents
                .cmp(&a.revenue_cents)
                .then_with(|| a.name.cmp(&b.name))
        });
        lines.truncate(n);
        lines
    }

    /// Every day with an event, in date order.
    fn day_lines(&self) -> Vec<DayLine> {
        let mut days: Vec<(i32, DayTally)> = self.days.iter().map(|(d, t)| (*d, *t)).collect();
        days.sort_by_key(|(day, _)| *day);
        days.into_iter()
            .map(|(day, t)| DayLine {
                date: crate::time::format_day(day),
                events: t.events,
                purchases: t.purchases,
                revenue_cents: t.revenue_cents,
                avg_order_value_cents: divide_cents_rounded(t.revenue_cents, t.purchases),
            })
            .collect()
    }
}

/// One line of a top list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevenueLine {
    pub name: String,
    pub revenue_cents: i128,
    pub purchases: u64,
}

/// One UTC day of the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayLine {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub events: u64,
    pub purchases: u64,
    pub revenue_cents: i128,
    /// revenue / purchases of the day, rounded like the report's; 0 without purchases.
    pub avg_order_value_cents: i128,
}

/// One segment's weight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentLine {
    pub segment: Segment,
    pub customers: u64,
    pub revenue_cents: i128,
    /// Of all customers.
    pub customer_share: f64,
    /// Of all revenue.
    pub revenue_share: f64,
}

/// The business report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub customers: u64,
    pub events: u64,
    pub revenue_cents: i128,
    pub purchases: u64,
    /// Customers with at least one purchase / customers.
    pub conversion: f64,
    /// revenue / purchases, rounded half away from zero to the cent.
    pub avg_order_value_cents: i128,
    pub segments: Vec<SegmentLine>,
    pub viewers: u64,
    pub carters: u64,
    pub buyers: u64,
    /// Customers who put something in a cart and never purchased.
    pub abandoned_carts: u64,
    /// Customers with exactly one purchase.
    pub one_time_buyers: u64,
    /// `None` when no event-level data was available to rank them.
    pub top_categories: Option<Vec<RevenueLine>>,
    pub top_brands: Option<Vec<RevenueLine>>,
    /// Every UTC day with an event, in date order; `None` without event-level data.
    pub days: Option<Vec<DayLine>>,
}

/// `part / whole`, 0 when `whole` is 0.
pub fn share(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        0.0
    } else {
        part / whole
    }
}

/// A share as the report prints it: `40.00%` for 0.4.
pub fn percent(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// Accumulates a [`Report`] one profile at a time (for profiles streamed in chunks).
#[derive(Debug, Default, Clone)]
pub struct ReportBuilder {
    customers: u64,
    events: u64,
    revenue_cents: i128,
    purchases: u64,
    viewers: u64,
    carters: u64,
    buyers: u64,
    abandoned_carts: u64,
    one_time_buyers: u64,
    per_segment: HashMap<Segment, (u64, i128)>,
}

impl ReportBuilder {
    pub fn add(&mut self, p: &Profile) {
        self.customers += 1;
        self.events += p.total_events;
        self.revenue_cents += i128::from(p.revenue_cents);
        self.purchases += p.purchases;
        self.viewers += u64::from(p.views > 0);
        self.carters += u64::from(p.carts > 0);
        self.buyers += u64::from(p.purchases > 0);
        self.abandoned_carts += u64::from(p.carts > 0 && p.purchases == 0);
        self.one_time_buyers += u64::from(p.purchases == 1);
        let slot = self.per_segment.entry(p.segment).or_default();
        slot.0 += 1;
        slot.1 += i128::from(p.revenue_cents);
    }

    /// The report; `tally` ranks categories and brands and gives the days when event data
    /// was available.
    pub fn finish(self, tally: Option<&RevenueTally>) -> Report {
        let segments = Segment::ALL
            .iter()
            .map(|&segment| {
                let (customers, revenue_cents) =
                    self.per_segment.get(&segment).copied().unwrap_or_default();
                SegmentLine {
                    segment,
                    customers,
                    revenue_cents,
                    customer_share: share(customers as f64, self.customers as f64),
                    revenue_share: share(revenue_cents as f64, self.revenue_cents as f64),
                }
            })
            .collect();
        Report {
            customers: self.customers,
            events: self.events,
            revenue_cents: self.revenue_cents,
            purchases: self.purchases,
            conversion: share(self.buyers as f64, self.customers as f64),
            avg_order_value_cents: divide_cents_rounded(self.revenue_cents, self.purchases),
            segments,
            viewers: self.viewers,
            carters: self.carters,
            buyers: self.buyers,
            abandoned_carts: self.abandoned_carts,
            one_time_buyers: self.one_time_buyers,
            top_categories: tally.map(|t| RevenueTally::top(&t.categories, TOP)),
            top_brands: tally.map(|t| RevenueTally::top(&t.brands, TOP)),
            days: tally.map(RevenueTally::day_lines),
        }
    }
}

/// One step of the view -> cart -> purchase funnel (customers who did it at least once).
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelStep {
    pub label: &'static str,
    pub customers: u64,
    /// Of all customers.
    pub share: f64,
}

impl Report {
    pub fn from_profiles<'a>(
        profiles: impl IntoIterator<Item = &'a Profile>,
        tally: Option<&RevenueTally>,
    ) -> Report {
        let mut builder = ReportBuilder::default();
        profiles.into_iter().for_each(|p| builder.add(p));
        builder.finish(tally)
    }

    /// The report as text for a terminal (see [`text::render`]).
    pub fn render(&self) -> String {
        text::render(self)
    }

    /// Viewed, added to cart, purchased.
    pub fn funnel(&self) -> [FunnelStep; 3] {
        let step = |label, customers: u64| FunnelStep {
            label,
            customers,
            share: share(customers as f64, self.customers as f64),
        };
        [
            step("viewed", self.viewers),
            step("added to cart", self.carters),
            step("purchased", self.buyers),
        ]
    }

    /// Abandoned carts of those who put something in a cart.
    pub fn abandoned_share(&self) -> f64 {
        share(self.abandoned_carts as f64, self.carters as f64)
    }

    /// One-time buyers of all buyers.
    pub fn one_time_share(&self) -> f64 {
        share(self.one_time_buyers as f64, self.buyers as f64)
    }

    /// What a reader should take away, as sentences built only from figures the report
    /// also prints elsewhere (same formatting). Both renderings list them.
    pub fn insights(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{} of {} customers purchased ({}); the average order is worth {}.",
            self.buyers,
            self.customers,
            percent(self.conversion),
            format_cents(self.avg_order_value_cents)
        )];
        if self.carters > 0 {
            out.push(format!(
                "Customers who put something in a cart and never purchased: {} ({} of those with a cart).",
                self.abandoned_carts,
                percent(self.abandoned_share())
            ));
        }
        if self.buyers > 0 {
            out.push(format!(
                "Buyers who purchased exactly once: {} ({} of buyers).",
                self.one_time_buyers,
                percent(self.one_time_share())
            ));
        }
        // The segment bringing most revenue (first in rule order on a tie).
        let best = self
            .segments
            .iter()
            .filter(|s| s.revenue_cents > 0)
            .reduce(|best, s| {
                if s.revenue_cents > best.revenue_cents {
                    s
                } else {
                    best
                }
            });
        if let Some(best) = best {
            out.push(format!(
                "The {} segment is {} of customers and brings {} of revenue ({}).",
                best.segment.as_str(),
                percent(best.customer_share),
                percent(best.revenue_share),
                format_cents(best.revenue_cents)
            ));
        }
        let best_day = self.days.iter().flatten().reduce(|best, d| {
            if d.revenue_cents > best.revenue_cents {
                d
            } else {
                best
            }
        });
        if let Some(day) = best_day.filter(|d| d.revenue_cents > 0) {
            out.push(format!(
                "Best day: {}, revenue {}, purchases: {}, average order {}.",
                day.date,
                format_cents(day.revenue_cents),
                day.purchases,
                format_cents(day.avg_order_value_cents)
            ));
        }
        for (what, lines) in [
            ("category", &self.top_categories),
            ("brand", &self.top_brands),
        ] {
            if let Some(first) = lines.iter().flatten().next() {
                out.push(format!(
                    "Top {what}: {}, revenue {} ({} of all revenue), purchases: {}.",
                    first.name,
                    format_cents(first.revenue_cents),
                    percent(share(first.revenue_cents as f64, self.revenue_cents as f64)),
                    first.purchases
                ));
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn profile(
        user_id: u64,
        views: u64,
        carts: u64,
        purchases: u64,
        revenue_cents: i64,
    ) -> Profile {
        let total_events = views + carts + purchases;
        Profile {
            user_id,
            total_events,
            views,
            carts,
            removals: 0,
            purchases,
            revenue_cents,
            avg_order_value_cents: 0,
            max_purchase_price_cents: None,
            distinct_sessions: 1,
            distinct_products: 1,
            active_days: 1,
            first_seen: 0,
            last_seen: 0,
            favorite_category: None,
            favorite_brand: None,
            conversion_rate: 0.0,
            cart_to_purchase_rate: 0.0,
            segment: Segment::classify(purchases, revenue_cents, carts, views),
        }
    }

    /// 2019-10-01 and 2019-10-02 as day numbers.
    pub(crate) const OCT_1: i32 = 18_170;
    pub(crate) const OCT_2: i32 = 18_171;

    /// Five customers (31 events, 11 purchases, 1510.00) and a tally of their events:
    /// 2019-10-01: 20 events, purchases 5.00 + 5.00 ; 2019-10-02: 11 events, one purchase
    /// of 1500.00 and eight of 0.00.
    pub(crate) fn fixture() -> Report {
        let profiles = vec![
            profile(1, 3, 1, 1, 1_000),    // one-time buyer
            profile(2, 1, 2, 0, 0),        // abandoned cart
            profile(3, 12, 0, 0, 0),       // active browser
            profile(4, 0, 0, 10, 150_000), // VIP, no views
            profile(5, 1, 0, 0, 0),        // casual
        ];
        let mut tally = RevenueTally::default();
        for _ in 0..18 {
            tally.add_event(OCT_1, EventType::View, None, None, 100);
        }
        tally.add_event(OCT_1, EventType::Purchase, Some("b"), Some("z"), 500);
        tally.add_event(OCT_1, EventType::Purchase, Some("a"), None, 500);
        tally.add_event(OCT_2, EventType::Purchase, Some("c"), Some("z"), 150_000);
        for _ in 0..8 {
            tally.add_event(OCT_2, EventType::Purchase, None, None, 0);
        }
        tally.add_event(OCT_2, EventType::Cart, Some("d"), Some("y"), 7_000);
        tally.add_event(OCT_2, EventType::View, None, None, 0);
        Report::from_profiles(&profiles, Some(&tally))
    }

    #[test]
    fn report_numbers() {
        let report = fixture();
        assert_eq!(report.customers, 5);
        assert_eq!(report.events, 5 + 3 + 12 + 10 + 1);
        assert_eq!(report.revenue_cents, 151_000);
        assert_eq!(report.purchases, 11);
        assert_eq!(report.conversion, 2.0 / 5.0);
        // 1510.00 / 11 = 137.2727.. -> 137.27
        assert_eq!(report.avg_order_value_cents, 13_727);
        assert_eq!((report.viewers, report.carters, report.buyers), (4, 2, 2));
        assert_eq!(report.abandoned_carts, 1);
        assert_eq!(report.one_time_buyers, 1);
        let vip = &report.segments[0];
        assert_eq!(
            (vip.segment, vip.customers, vip.revenue_cents),
            (Segment::Vip, 1, 150_000)
        );
        assert_eq!(vip.customer_share, 0.2);
        assert_eq!(vip.revenue_share, 150_000.0 / 151_000.0);
        let counts: Vec<u64> = report.segments.iter().map(|s| s.customers).collect();
        assert_eq!(counts, vec![1, 0, 0, 1, 1, 1, 1]);
        let top: Vec<(&str, i128)> = report
            .top_categories
            .as_ref()
            .unwrap()
            .iter()
            .map(|l| (l.name.as_str(), l.revenue_cents))
            .collect();
        // Ties on revenue go by name; a cart is no revenue.
        assert_eq!(top, vec![("c", 150_000), ("a", 500), ("b", 500)]);
        let brands = report.top_brands.as_ref().unwrap();
        assert_eq!(
            (brands.len(), brands[0].revenue_cents, brands[0].purchases),
            (1, 150_500, 2)
        );
        let text = report.render();
        assert!(
            text.contains("Revenue                     1510.00"),
            "{text}"
        );
        assert!(text.contains("VIP"));
    }

    #[test]
    fn days_hold_each_days_events_revenue_and_average_order() {
        let report = fixture();
        let days = report.days.as_ref().unwrap();
        assert_eq!(
            days,
            &vec![
                DayLine {
                    date: "2019-10-01".into(),
                    events: 20,
                    purchases: 2,
                    revenue_cents: 1_000,
                    avg_order_value_cents: 500,
                },
                DayLine {
                    date: "2019-10-02".into(),
                    events: 11,
                    purchases: 9,
                    revenue_cents: 150_000,
                    // 1500.00 / 9 = 166.666.. -> 166.67
                    avg_order_value_cents: 16_667,
                },
            ]
        );
        // The days add up to the profiles' totals.
        assert_eq!(days.iter().map(|d| d.events).sum::<u64>(), report.events);
        assert_eq!(
            days.iter().map(|d| d.revenue_cents).sum::<i128>(),
            report.revenue_cents
        );
    }

    #[test]
    fn merged_tallies_equal_one_tally_of_everything() {
        let mut left = RevenueTally::default();
        let mut right = RevenueTally::default();
        let mut all = RevenueTally::default();
        let events = [
            (OCT_1, EventType::Purchase, Some("a"), Some("x"), 100),
            (OCT_2, EventType::View, Some("a"), None, 5),
            (OCT_2, EventType::Purchase, None, Some("x"), 250),
            (OCT_1, EventType::Cart, None, None, 7),
        ];
        for (i, (day, kind, category, brand, cents)) in events.into_iter().enumerate() {
            let half = if i % 2 == 0 { &mut left } else { &mut right };
            half.add_event(day, kind, category, brand, cents);
            all.add_event(day, kind, category, brand, cents);
        }
        left.merge(&right);
        assert_eq!(left, all);
    }

    #[test]
    fn insights_use_the_reports_figures() {
        assert_eq!(
            fixture().insights(),
            vec![
                "2 of 5 customers purchased (40.00%); the average order is worth 137.27."
                    .to_owned(),
                "Customers who put something in a cart and never purchased: 1 (50.00% of those with a cart)."
                    .to_owned(),
                "Buyers who purchased exactly once: 1 (50.00% of buyers).".to_owned(),
                // 150000 / 151000 = 0.993377..
                "The VIP segment is 20.00% of customers and brings 99.34% of revenue (1500.00)."
                    .to_owned(),
                "Best day: 2019-10-02, revenue 1500.00, purchases: 9, average order 166.67."
                    .to_owned(),
                "Top category: c, revenue 1500.00 (99.34% of all revenue), purchases: 1."
                    .to_owned(),
                // 150500 / 151000 = 0.996688..
                "Top brand: z, revenue 1505.00 (99.67% of all revenue), purchases: 2.".to_owned(),
            ]
        );
    }

    #[test]
    fn empty_report_has_no_division_by_zero() {
        let report = Report::from_profiles(&[], None);
        assert_eq!(report.conversion, 0.0);
        assert_eq!(report.avg_order_value_cents, 0);
        assert_eq!(report.days, None);
        assert!(report.render().contains("not available from this source"));
        assert_eq!(
            report.insights(),
            vec!["0 of 0 customers purchased (0.00%); the average order is worth 0.00."]
        );
    }
}
