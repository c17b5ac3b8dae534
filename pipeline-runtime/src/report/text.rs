//! The report as text for a terminal (what `run` and `report` print). Pure.

use std::fmt::Write as _;

use super::{percent, Report};
use crate::money::format_cents;

/// The report as text.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Customer report");
    let _ = writeln!(out, "===============");
    let _ = writeln!(out, "Customers            {:>14}", report.customers);
    let _ = writeln!(out, "Events               {:>14}", report.events);
    let _ = writeln!(
        out,
        "Revenue              {:>14}",
        format_cents(report.revenue_cents)
    );
    let _ = writeln!(out, "Purchases            {:>14}", report.purchases);
    let _ = writeln!(
        out,
        "Conversion           {:>14}",
        percent(report.conversion)
    );
    let _ = writeln!(
        out,
        "Average order value  {:>14}",
        format_cents(report.avg_order_value_cents)
    );
    let _ = writeln!(out, "\nFunnel (customers)");
    for step in report.funnel() {
        let _ = writeln!(
            out,
            "  {:<19}{:>14}  {:>8}",
            step.label,
            step.customers,
            percent(step.share)
        );
    }
    let _ = writeln!(
        out,
        "  abandoned carts    {:>14}  {:>8}",
        report.abandoned_carts,
        percent(report.abandoned_share())
    );
    let _ = writeln!(
        out,
        "  one-time buyers    {:>14}  {:>8}",
        report.one_time_buyers,
        percent(report.one_time_share())
    );
    let _ = writeln!(out, "\nSegments");
    let _ = writeln!(
        out,
        "  {:<21}{:>10} {:>8} {:>16} {:>8}",
        "segment", "customers", "share", "revenue", "share"
    );
    for line in &report.segments {
        let _ = writeln!(
            out,
            "  {:<21}{:>10} {:>8} {:>16} {:>8}",
            line.segment.as_str(),
            line.customers,
            percent(line.customer_share),
            format_cents(line.revenue_cents),
            percent(line.revenue_share)
        );
    }
    for (title, lines) in [
        ("Top categories by revenue", &report.top_categories),
        ("Top brands by revenue", &report.top_brands),
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
    let _ = writeln!(out, "\nRevenue by day (UTC)");
    match &report.days {
        None => {
            let _ = writeln!(out, "  (needs event data; not available from this source)");
        }
        Some(days) if days.is_empty() => {
            let _ = writeln!(out, "  (no events)");
        }
        Some(days) => {
            let _ = writeln!(
                out,
                "  {:<12}{:>10} {:>10} {:>16} {:>12}",
                "day", "events", "purchases", "revenue", "avg order"
            );
            for day in days {
                let _ = writeln!(
                    out,
                    "  {:<12}{:>10} {:>10} {:>16} {:>12}",
                    day.date,
                    day.events,
                    day.purchases,
                    format_cents(day.revenue_cents),
                    format_cents(day.avg_order_value_cents)
                );
            }
        }
    }
    let _ = writeln!(out, "\nInsights");
    for insight in report.insights() {
        let _ = writeln!(out, "  - {insight}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture;
    use super::*;

    #[test]
    fn the_text_of_the_fixture() {
        let text = render(&fixture());
        let expected = "\
Customer report
===============
Customers                         5
Events                           31
Revenue                     1510.00
Purchases                        11
Conversion                   40.00%
Average order value          137.27

Funnel (customers)
  viewed                          4    80.00%
  added to cart                   2    40.00%
  purchased                       2    40.00%
  abandoned carts                 1    50.00%
  one-time buyers                 1    50.00%

Segments
  segment               customers    share          revenue    share
  VIP                           1   20.00%          1500.00   99.34%
  High Value                    0    0.00%             0.00    0.00%
  Medium Value                  0    0.00%             0.00    0.00%
  Converting Customer           1   20.00%            10.00    0.66%
  Interested Shopper            1   20.00%             0.00    0.00%
  Active Browser                1   20.00%             0.00    0.00%
  Casual Visitor                1   20.00%             0.00    0.00%

Top categories by revenue
   1. c                                          1500.00        1 purchases
   2. a                                             5.00        1 purchases
   3. b                                             5.00        1 purchases

Top brands by revenue
   1. z                                          1505.00        2 purchases

Revenue by day (UTC)
  day             events  purchases          revenue    avg order
  2019-10-01          20          2            10.00         5.00
  2019-10-02          11          9          1500.00       166.67

Insights
";
        assert!(text.starts_with(expected), "{text}");
        assert!(text.ends_with(
            "  - Top brand: z, revenue 1505.00 (99.67% of all revenue), purchases: 2.\n"
        ));
    }
}
