//! The business report: pure computation from profiles (and, when available, purchase
//! revenue per category and brand) to a [`Report`], and its text form. The only I/O is
//! [`report_from_lake`], which reads a local lake directory.
//!
//! Top categories and brands rank by *purchase revenue of the events* in that category or
//! brand (not by users' favourites), so they need the events: the embedded run tallies
//! them while it streams; a lake is read back from its events Parquet.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use arrow::array::{Array, Decimal128Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::event::{Event, EventType};
use crate::money::{divide_cents_rounded, format_cents};
use crate::profile::{Profile, Segment};

/// How many categories and brands the report lists.
pub const TOP: usize = 10;

/// Purchase revenue and count per category_code and per brand.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevenueTally {
    categories: HashMap<String, (i128, u64)>,
    brands: HashMap<String, (i128, u64)>,
}

impl RevenueTally {
    /// Counts a purchase; other event types are ignored.
    pub fn add(&mut self, event: &Event) {
        if event.event_type != EventType::Purchase {
            return;
        }
        self.add_purchase(
            event.category_code.as_deref(),
            event.brand.as_deref(),
            event.price_cents,
        );
    }

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
}

/// One line of a top list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevenueLine {
    pub name: String,
    pub revenue_cents: i128,
    pub purchases: u64,
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
}

fn share(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        0.0
    } else {
        part / whole
    }
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

    /// The report; `tally` ranks categories and brands when event data was available.
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
        }
    }
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

    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let pct = |x: f64| format!("{:.2}%", x * 100.0);
        let _ = writeln!(out, "Customer report");
        let _ = writeln!(out, "===============");
        let _ = writeln!(out, "Customers            {:>14}", self.customers);
        let _ = writeln!(out, "Events               {:>14}", self.events);
        let _ = writeln!(
            out,
            "Revenue              {:>14}",
            format_cents(self.revenue_cents)
        );
        let _ = writeln!(out, "Purchases            {:>14}", self.purchases);
        let _ = writeln!(out, "Conversion           {:>14}", pct(self.conversion));
        let _ = writeln!(
            out,
            "Average order value  {:>14}",
            format_cents(self.avg_order_value_cents)
        );
        let _ = writeln!(out, "\nFunnel (customers)");
        let funnel = [
            ("viewed", self.viewers),
            ("added to cart", self.carters),
            ("purchased", self.buyers),
        ];
        for (label, n) in funnel {
            let _ = writeln!(
                out,
                "  {label:<19}{n:>14}  {:>8}",
                pct(share(n as f64, self.customers as f64))
            );
        }
        let _ = writeln!(
            out,
            "  abandoned carts    {:>14}  {:>8}",
            self.abandoned_carts,
            pct(share(self.abandoned_carts as f64, self.carters as f64))
        );
        let _ = writeln!(
            out,
            "  one-time buyers    {:>14}  {:>8}",
            self.one_time_buyers,
            pct(share(self.one_time_buyers as f64, self.buyers as f64))
        );
        let _ = writeln!(out, "\nSegments");
        let _ = writeln!(
            out,
            "  {:<21}{:>10} {:>8} {:>16} {:>8}",
            "segment", "customers", "share", "revenue", "share"
        );
        for line in &self.segments {
            let _ = writeln!(
                out,
                "  {:<21}{:>10} {:>8} {:>16} {:>8}",
                line.segment.as_str(),
                line.customers,
                pct(line.customer_share),
                format_cents(line.revenue_cents),
                pct(line.revenue_share)
            );
        }
        for (title, lines) in [
            ("Top categories by revenue", &self.top_categories),
            ("Top brands by revenue", &self.top_brands),
        ] {
            let _ = writeln!(out, "\n{title}");
            match lines {
                None => {
                    let _ = writeln!(out, "  (needs event data; not available from this source)");
                }
                Some(lines) if lines.is_empty() => {
                    let _ = writeln!(out, "  (no purchases)");
                }
                Some(lines) => {
                    for (rank, line) in lines.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "  {:>2}. {:<34}{:>16} {:>8} purchases",
                            rank + 1,
                            line.name,
                            format_cents(line.revenue_cents),
                            line.purchases
                        );
                    }
                }
            }
        }
        out
    }
}

/// Every `*.parquet` file under `dir`, sorted by path.
pub fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::file(&current, e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| Error::file(&current, e))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every profile of a local lake (`DIR/profiles/**.parquet`).
pub fn read_profiles(dir: &Path) -> Result<Vec<Profile>> {
    let mut profiles = Vec::new();
    for file in parquet_files(&dir.join(pipeline_config::layout::PROFILES_PREFIX))? {
        for batch in crate::parquet::read_parquet_file(&file)? {
            profiles.extend(crate::parquet::batch_to_profiles(&batch)?);
        }
    }
    Ok(profiles)
}

/// Tallies purchase revenue from a local lake's events Parquet, reading only the four
/// columns it needs.
pub fn read_purchase_tally(dir: &Path) -> Result<RevenueTally> {
    let mut tally = RevenueTally::default();
    for file in parquet_files(&dir.join(pipeline_config::layout::EVENTS_PREFIX))? {
        let handle = std::fs::File::open(&file).map_err(|e| Error::file(&file, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(handle)?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            ["event_type", "category_code", "brand", "price"],
        );
        for batch in builder.with_projection(mask).build()? {
            let batch = batch?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| Error::Schema(format!("{}: no column {name}", file.display())))
            };
            let kinds = column("event_type")?;
            let categories = column("category_code")?;
            let brands = column("brand")?;
            let prices = column("price")?;
            let (Some(kinds), Some(categories), Some(brands), Some(prices)) = (
                kinds.as_any().downcast_ref::<StringArray>(),
                categories.as_any().downcast_ref::<StringArray>(),
                brands.as_any().downcast_ref::<StringArray>(),
                prices.as_any().downcast_ref::<Decimal128Array>(),
            ) else {
                return Err(Error::Schema(format!(
                    "{}: unexpected column types",
                    file.display()
                )));
            };
            for row in 0..batch.num_rows() {
                if kinds.value(row) != EventType::Purchase.as_str() {
                    continue;
                }
                let category = categories.is_valid(row).then(|| categories.value(row));
                let brand = brands.is_valid(row).then(|| brands.value(row));
                tally.add_purchase(
                    category,
                    brand,
                    i64::try_from(prices.value(row)).unwrap_or(i64::MAX),
                );
            }
        }
    }
    Ok(tally)
}

/// The report of a local lake directory (as written by `run`).
pub fn report_from_lake(dir: &Path) -> Result<Report> {
    let profiles = read_profiles(dir)?;
    let tally = read_purchase_tally(dir)?;
    Ok(Report::from_profiles(&profiles, Some(&tally)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(
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

    #[test]
    fn report_numbers() {
        let profiles = vec![
            profile(1, 3, 1, 1, 1_000),    // one-time buyer
            profile(2, 1, 2, 0, 0),        // abandoned cart
            profile(3, 12, 0, 0, 0),       // active browser
            profile(4, 0, 0, 10, 150_000), // VIP, no views
            profile(5, 1, 0, 0, 0),        // casual
        ];
        let mut tally = RevenueTally::default();
        tally.add_purchase(Some("b"), Some("z"), 500);
        tally.add_purchase(Some("a"), None, 500);
        tally.add_purchase(Some("c"), Some("z"), 150_000);
        let report = Report::from_profiles(&profiles, Some(&tally));
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
        // Ties on revenue go by name.
        assert_eq!(top, vec![("c", 150_000), ("a", 500), ("b", 500)]);
        assert_eq!(
            report.top_brands.as_ref().unwrap()[0].revenue_cents,
            150_500
        );
        let text = report.render();
        assert!(
            text.contains("Revenue                     1510.00"),
            "{text}"
        );
        assert!(text.contains("VIP"));
    }

    #[test]
    fn empty_report_has_no_division_by_zero() {
        let report = Report::from_profiles(&[], None);
        assert_eq!(report.conversion, 0.0);
        assert_eq!(report.avg_order_value_cents, 0);
        assert!(report.render().contains("not available from this source"));
    }
}
