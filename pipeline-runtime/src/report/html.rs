//! The report as one self-contained HTML page (`report --html FILE`): inline CSS, inline
//! SVG charts ([`super::chart`]) and a small inline script, nothing fetched at view time.
//! Pure: [`render`] turns a [`Report`] into the page; every string that comes from data
//! (categories, brands, the source's path or URL) goes through [`escape`].
//!
//! The figures are formatted by the same helpers as the text report, so the page shows
//! exactly the numbers `report` prints. Each chart is a `<figure data-chart=NAME
//! data-points=N>` (N: the values it draws). The inline script records `window.onerror`,
//! failed resource loads and `console.error` into `#page-errors`, counts the marks each
//! chart really has in the DOM (`data-marks-in-dom`, an error when it differs from N), and
//! marks `#page-status` as checked; a headless browser's dumped DOM shows all of it.

use std::fmt::Write as _;
use std::path::Path;

use super::chart::{self, Chart, Datum};
use super::{percent, share, DayLine, Report, RevenueLine};
use crate::money::format_cents;

/// Where the report's data came from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A local lake directory written by `run`.
    Lake(&'a Path),
    /// A search index (profiles only).
    Search { url: &'a str, index: &'a str },
}

impl Source<'_> {
    /// Where the profiles were read, as HTML.
    fn profiles(&self) -> String {
        match self {
            Source::Lake(dir) => format!(
                "the profiles Parquet of the lake <code>{}</code>",
                escape(&dir.display().to_string())
            ),
            Source::Search { url, index } => format!(
                "the search index <code>{}</code> at <code>{}</code>",
                escape(index),
                escape(&without_userinfo(url))
            ),
        }
    }

    /// Where the events were read, as HTML, if this source has them.
    fn events(&self) -> Option<String> {
        match self {
            Source::Lake(dir) => Some(format!(
                "the events Parquet of the lake <code>{}</code>",
                escape(&dir.display().to_string())
            )),
            Source::Search { .. } => None,
        }
    }
}

/// `url` without a `user:password@` part.
pub fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// Text safe inside HTML or SVG, in element content and in quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const BLUE: &str = "#2563eb";
const GREEN: &str = "#059669";
const VIOLET: &str = "#7c3aed";
const AMBER: &str = "#d97706";

const STYLE: &str = r#"
:root{--ink:#0f172a;--muted:#64748b;--line:#e2e8f0;--card:#fff;--bg:#f1f5f9}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header{background:#0f172a;color:#f8fafc;padding:28px 40px}
header h1{margin:0 0 6px;font-size:26px}
header p{margin:0;color:#cbd5e1}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.92em}
header code{color:#f8fafc}
main{max-width:1200px;margin:0 auto;padding:24px 40px 40px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:20px 24px;margin:0 0 20px}
h2{margin:0 0 4px;font-size:19px}
.from{margin:0 0 14px;color:var(--muted);font-size:13px}
.kpis{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin:0 0 20px}
.kpi{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.kpi .name{color:var(--muted);font-size:13px}
.kpi .figure{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:20px}
figure{margin:0}
figcaption{font-weight:600;margin:0 0 6px}
svg text{font-size:12px;fill:var(--ink)}
svg text.value{fill:var(--muted)}
svg text.tick{fill:var(--muted);font-size:11px}
svg .grid{stroke:var(--line);stroke-width:1}
table{border-collapse:collapse;width:100%;margin:12px 0 0;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right}
th:first-child,td:first-child{text-align:left}
th{color:var(--muted);font-weight:600}
.notice{background:#fffbeb;border:1px solid #fcd34d;border-radius:8px;padding:12px 14px;color:#78350f}
details summary{cursor:pointer;color:var(--muted);margin-top:10px}
ul.insights{margin:0;padding-left:20px}
ul.insights li{margin:4px 0}
#page-errors{color:#b91c1c;white-space:pre-wrap}
#page-errors:empty{display:none}
footer{color:var(--muted);font-size:12px;text-align:center;padding:0 0 24px}
"#;

/// Records errors before anything else runs.
const ERROR_SCRIPT: &str = r#"(function(){var errors=[];window.__reportErrors=errors;
function record(text){errors.push(String(text));var el=document.getElementById('page-errors');
if(el){el.textContent=errors.join('\n');el.setAttribute('data-count',String(errors.length));}}
window.__recordError=record;
window.addEventListener('error',function(e){var t=e.target;
if(t&&t!==window&&(t.src||t.href)){record('failed to load '+(t.src||t.href));}
else{record('error: '+e.message+' at '+e.filename+':'+e.lineno);}},true);
window.addEventListener('unhandledrejection',function(e){record('unhandled rejection: '+e.reason);});
var original=console.error;console.error=function(){
record('console.error: '+Array.prototype.map.call(arguments,String).join(' '));
return original.apply(console,arguments);};})();"#;

/// Checks every chart's marks once the page is built.
const CHECK_SCRIPT: &str = r#"(function(){var charts=document.querySelectorAll('figure[data-chart]');
charts.forEach(function(f){var n=f.querySelectorAll('[data-mark]').length;
f.setAttribute('data-marks-in-dom',String(n));
if(String(n)!==f.getAttribute('data-points')){console.error('chart '+f.getAttribute('data-chart')+' has '+n+' marks, expected '+f.getAttribute('data-points'));}});
var errors=window.__reportErrors||[];var el=document.getElementById('page-errors');
el.textContent=errors.join('\n');el.setAttribute('data-count',String(errors.length));
var status=document.getElementById('page-status');status.setAttribute('data-charts',String(charts.length));
status.textContent='checked';})();"#;

/// A chart as a figure with its caption and point count.
fn figure(name: &str, caption: &str, chart: &Chart) -> String {
    format!(
        r#"<figure data-chart="{}" data-points="{}"><figcaption>{}</figcaption>{}</figure>"#,
        escape(name),
        chart.marks,
        escape(caption),
        chart.svg
    )
}

/// `html`: a source as [`Source::profiles`] or [`Source::events`] give it.
fn from(html: &str) -> String {
    format!(r#"<p class="from">From {html}.</p>"#)
}

fn notice(what: &str, source: &Source) -> String {
    format!(
        r#"<p class="notice">Not available from {}: {what} needs the events, which only the lake holds. Run <code>pipeline-runtime report --from DIR --html FILE</code> on the lake written by <code>run</code> (or by the process role) for this section.</p>"#,
        source.profiles()
    )
}

/// A table; `cells` are already-formatted figures, escaped here.
fn table(head: &[&str], rows: &[Vec<String>], field: &str) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        let _ = write!(out, r#"<tr data-row="{}">"#, escape(field));
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// `content` folded under a summary line (still in the DOM when folded).
fn details(summary: &str, content: &str) -> String {
    format!(
        "<details><summary>{}</summary>{content}</details>",
        escape(summary)
    )
}

fn kpis(report: &Report) -> String {
    let tiles = [
        ("customers", "Customers", report.customers.to_string()),
        ("events", "Events", report.events.to_string()),
        ("revenue", "Revenue", format_cents(report.revenue_cents)),
        ("purchases", "Purchases", report.purchases.to_string()),
        ("conversion", "Conversion", percent(report.conversion)),
        (
            "avg-order-value",
            "Average order value",
            format_cents(report.avg_order_value_cents),
        ),
    ];
    let mut out = String::from(r#"<div class="kpis" id="kpis">"#);
    for (key, name, figure) in tiles {
        let _ = write!(
            out,
            r#"<div class="kpi"><div class="name">{name}</div><div class="figure" data-figure="{key}">{}</div></div>"#,
            escape(&figure)
        );
    }
    out.push_str("</div>");
    out
}

fn segments(report: &Report, source: &Source) -> String {
    let customers: Vec<Datum> = report
        .segments
        .iter()
        .map(|s| {
            Datum::new(
                s.segment.as_str(),
                s.customers as f64,
                format!("{} ({})", s.customers, percent(s.customer_share)),
            )
        })
        .collect();
    let revenue: Vec<Datum> = report
        .segments
        .iter()
        .map(|s| {
            Datum::new(
                s.segment.as_str(),
                s.revenue_cents as f64,
                format!(
                    "{} ({})",
                    format_cents(s.revenue_cents),
                    percent(s.revenue_share)
                ),
            )
        })
        .collect();
    let rows: Vec<Vec<String>> = report
        .segments
        .iter()
        .map(|s| {
            vec![
                s.segment.as_str().to_owned(),
                s.customers.to_string(),
                percent(s.customer_share),
                format_cents(s.revenue_cents),
                percent(s.revenue_share),
            ]
        })
        .collect();
    format!(
        r#"<section id="segments"><h2>Segments</h2>{}<div class="grid2">{}{}</div>{}</section>"#,
        from(&source.profiles()),
        figure(
            "segment-customers",
            "Customers per segment",
            &chart::horizontal_bars(&customers, BLUE)
        ),
        figure(
            "segment-revenue",
            "Revenue per segment",
            &chart::horizontal_bars(&revenue, GREEN)
        ),
        details(
            "Figures by segment",
            &table(
                &["segment", "customers", "share", "revenue", "share"],
                &rows,
                "segment"
            )
        )
    )
}

fn funnel(report: &Report, source: &Source) -> String {
    let steps = report.funnel();
    let data: Vec<Datum> = steps
        .iter()
        .map(|s| {
            Datum::new(
                s.label,
                s.customers as f64,
                format!("{} ({})", s.customers, percent(s.share)),
            )
        })
        .collect();
    let mut rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            vec![
                s.label.to_owned(),
                s.customers.to_string(),
                percent(s.share),
            ]
        })
        .collect();
    rows.push(vec![
        "abandoned carts".into(),
        report.abandoned_carts.to_string(),
        percent(report.abandoned_share()),
    ]);
    rows.push(vec![
        "one-time buyers".into(),
        report.one_time_buyers.to_string(),
        percent(report.one_time_share()),
    ]);
    format!(
        r#"<section id="funnel"><h2>Funnel: view, cart, purchase</h2>{}<div class="grid2">{}<div>{}<p class="from">Customers who did each at least once, as a share of all customers; abandoned carts as a share of customers with a cart, one-time buyers as a share of buyers.</p></div></div></section>"#,
        from(&source.profiles()),
        figure(
            "funnel",
            "Customers at each step",
            &chart::horizontal_bars(&data, VIOLET)
        ),
        table(&["step", "customers", "share"], &rows, "funnel")
    )
}

fn short_date(date: &str) -> String {
    date.get(5..).unwrap_or(date).to_owned()
}

fn days(report: &Report, source: &Source) -> String {
    let head = r#"<section id="days"><h2>Revenue and average order value by day (UTC)</h2>"#;
    let (Some(days), Some(events)) = (&report.days, source.events()) else {
        return format!("{head}{}</section>", notice("revenue by day", source));
    };
    if days.is_empty() {
        return format!(
            r#"{head}{}<p class="notice">The lake holds no events.</p></section>"#,
            from(&events)
        );
    }
    let title = |d: &DayLine| {
        format!(
            "{}: revenue {}, {} purchases, average order {}, {} events",
            d.date,
            format_cents(d.revenue_cents),
            d.purchases,
            format_cents(d.avg_order_value_cents),
            d.events
        )
    };
    let titles: Vec<String> = days.iter().map(title).collect();
    let revenue: Vec<Datum> = days
        .iter()
        .map(|d| {
            Datum::new(
                short_date(&d.date),
                d.revenue_cents as f64 / 100.0,
                format_cents(d.revenue_cents),
            )
        })
        .collect();
    let aov: Vec<Datum> = days
        .iter()
        .map(|d| {
            Datum::new(
                short_date(&d.date),
                d.avg_order_value_cents as f64 / 100.0,
                format_cents(d.avg_order_value_cents),
            )
        })
        .collect();
    let rows: Vec<Vec<String>> = days
        .iter()
        .map(|d| {
            vec![
                d.date.clone(),
                d.events.to_string(),
                d.purchases.to_string(),
                format_cents(d.revenue_cents),
                format_cents(d.avg_order_value_cents),
            ]
        })
        .collect();
    format!(
        r#"{head}{}{}{}{}</section>"#,
        from(&events),
        figure(
            "revenue-by-day",
            "Revenue per day",
            &chart::columns(&revenue, &titles, GREEN)
        ),
        figure(
            "aov-by-day",
            "Average order value per day",
            &chart::line(&aov, &titles, AMBER)
        ),
        details(
            "Figures by day",
            &table(
                &["day", "events", "purchases", "revenue", "avg order"],
                &rows,
                "day"
            )
        )
    )
}

fn top_list(name: &str, title: &str, lines: &[RevenueLine], total_cents: i128) -> String {
    if lines.is_empty() {
        return format!(
            r#"<div><h3>{}</h3><p class="notice">No purchases.</p></div>"#,
            escape(title)
        );
    }
    let data: Vec<Datum> = lines
        .iter()
        .map(|l| {
            Datum::new(
                l.name.clone(),
                l.revenue_cents as f64,
                format_cents(l.revenue_cents),
            )
        })
        .collect();
    let rows: Vec<Vec<String>> = lines
        .iter()
        .enumerate()
        .map(|(rank, l)| {
            vec![
                format!("{}. {}", rank + 1, l.name),
                format_cents(l.revenue_cents),
                percent(share(l.revenue_cents as f64, total_cents as f64)),
                l.purchases.to_string(),
            ]
        })
        .collect();
    format!(
        "<div>{}{}</div>",
        figure(name, title, &chart::horizontal_bars(&data, BLUE)),
        details(
            &format!("Figures: {}", title.to_lowercase()),
            &table(&["name", "revenue", "of all", "purchases"], &rows, name)
        )
    )
}

fn top(report: &Report, source: &Source) -> String {
    let head = r#"<section id="top"><h2>Top categories and brands by purchase revenue</h2>"#;
    let (Some(categories), Some(brands), Some(events)) =
        (&report.top_categories, &report.top_brands, source.events())
    else {
        return format!(
            "{head}{}</section>",
            notice("ranking categories and brands", source)
        );
    };
    format!(
        r#"{head}{}<div class="grid2">{}{}</div></section>"#,
        from(&events),
        top_list(
            "top-categories",
            "Top categories",
            categories,
            report.revenue_cents
        ),
        top_list("top-brands", "Top brands", brands, report.revenue_cents)
    )
}

fn insights(report: &Report) -> String {
    let mut out = String::from(r#"<section id="insights"><h2>Insights</h2><ul class="insights">"#);
    for insight in report.insights() {
        let _ = write!(out, "<li>{}</li>", escape(&insight));
    }
    out.push_str("</ul></section>");
    out
}

/// The whole page.
pub fn render(report: &Report, source: &Source) -> String {
    let span = match report.days.as_deref() {
        Some([first, .., last]) => format!(", {} to {}", first.date, last.date),
        Some([only]) => format!(", {}", only.date),
        _ => String::new(),
    };
    let subtitle = format!(
        "{} customers, {} events{}. From {}.",
        report.customers,
        report.events,
        escape(&span),
        source.events().unwrap_or_else(|| source.profiles())
    );
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Customer report</title>
<script>{ERROR_SCRIPT}</script>
<style>{STYLE}</style></head>
<body><header><h1>Customer report</h1><p>{}</p></header>
<main>{}
{}
{}
{}
{}
{}
<pre id="page-errors" data-count="0"></pre></main>
<footer>pipeline-runtime report <output id="page-status" data-charts="0">not checked</output></footer>
<script>{CHECK_SCRIPT}</script>
</body></html>
"#,
        subtitle,
        kpis(report),
        segments(report, source),
        funnel(report, source),
        days(report, source),
        top(report, source),
        insights(report)
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fixture, profile, OCT_1};
    use super::super::RevenueTally;
    use super::*;
    use crate::event::EventType;

    fn lake() -> Source<'static> {
        Source::Lake(Path::new("out/shop"))
    }

    /// Every figure the text report prints for the fixture (computed by hand in
    /// `report::tests` and `text::tests`) is on the page, in the element that shows it.
    #[test]
    fn the_page_shows_the_text_reports_figures() {
        let page = render(&fixture(), &lake());
        for (key, figure) in [
            ("customers", "5"),
            ("events", "31"),
            ("revenue", "1510.00"),
            ("purchases", "11"),
            ("conversion", "40.00%"),
            ("avg-order-value", "137.27"),
        ] {
            let tile = format!(r#"data-figure="{key}">{figure}</div>"#);
            assert!(page.contains(&tile), "{tile}");
        }
        for row in [
            // Segments: customers, share, revenue, share.
            r#"<tr data-row="segment"><td>VIP</td><td>1</td><td>20.00%</td><td>1500.00</td><td>99.34%</td></tr>"#,
            r#"<tr data-row="segment"><td>Converting Customer</td><td>1</td><td>20.00%</td><td>10.00</td><td>0.66%</td></tr>"#,
            r#"<tr data-row="segment"><td>High Value</td><td>0</td><td>0.00%</td><td>0.00</td><td>0.00%</td></tr>"#,
            // The funnel.
            r#"<tr data-row="funnel"><td>viewed</td><td>4</td><td>80.00%</td></tr>"#,
            r#"<tr data-row="funnel"><td>added to cart</td><td>2</td><td>40.00%</td></tr>"#,
            r#"<tr data-row="funnel"><td>purchased</td><td>2</td><td>40.00%</td></tr>"#,
            r#"<tr data-row="funnel"><td>abandoned carts</td><td>1</td><td>50.00%</td></tr>"#,
            r#"<tr data-row="funnel"><td>one-time buyers</td><td>1</td><td>50.00%</td></tr>"#,
            // Days.
            r#"<tr data-row="day"><td>2019-10-01</td><td>20</td><td>2</td><td>10.00</td><td>5.00</td></tr>"#,
            r#"<tr data-row="day"><td>2019-10-02</td><td>11</td><td>9</td><td>1500.00</td><td>166.67</td></tr>"#,
            // Top lists: revenue, share of all revenue, purchases.
            r#"<tr data-row="top-categories"><td>1. c</td><td>1500.00</td><td>99.34%</td><td>1</td></tr>"#,
            r#"<tr data-row="top-categories"><td>3. b</td><td>5.00</td><td>0.33%</td><td>1</td></tr>"#,
            r#"<tr data-row="top-brands"><td>1. z</td><td>1505.00</td><td>99.67%</td><td>2</td></tr>"#,
        ] {
            assert!(page.contains(row), "{row}");
        }
        for insight in fixture().insights() {
            assert!(
                page.contains(&format!("<li>{}</li>", escape(&insight))),
                "{insight}"
            );
        }
        // And the text report prints those same figures.
        let text = fixture().render();
        for figure in ["1510.00", "137.27", "99.34%", "166.67", "1505.00"] {
            assert!(text.contains(figure), "{figure}");
        }
    }

    #[test]
    fn every_chart_states_its_points() {
        let page = render(&fixture(), &lake());
        for (chart, points) in [
            // 5 of 7 segments have customers; 2 have revenue.
            ("segment-customers", 5),
            ("segment-revenue", 2),
            ("funnel", 3),
            // Both days have revenue; the line has a point per day.
            ("revenue-by-day", 2),
            ("aov-by-day", 2),
            ("top-categories", 3),
            ("top-brands", 1),
        ] {
            let tag = format!(r#"data-chart="{chart}" data-points="{points}">"#);
            assert!(page.contains(&tag), "{tag}");
        }
        assert_eq!(page.matches("<figure ").count(), 7);
        assert_eq!(
            page.matches("data-mark=").count(),
            5 + 2 + 3 + 2 + 2 + 3 + 1
        );
    }

    #[test]
    fn brands_and_categories_from_the_csv_are_escaped() {
        let mut tally = RevenueTally::default();
        tally.add_event(
            OCT_1,
            EventType::Purchase,
            Some("<img src=x onerror=alert(1)>"),
            Some("<script>alert(1)</script>"),
            1_000,
        );
        let report = Report::from_profiles(&[profile(1, 0, 0, 1, 1_000)], Some(&tally));
        let page = render(&report, &Source::Lake(Path::new("dir/<b>&")));
        assert!(!page.contains("<script>alert"), "a brand is markup");
        assert!(!page.contains("<img"), "a category is markup");
        assert!(!page.contains("<b>&"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("dir/&lt;b&gt;&amp;"));
        // The only scripts are the page's own two.
        assert_eq!(page.matches("<script>").count(), 2);
    }

    #[test]
    fn without_events_the_page_says_so_instead_of_drawing_empty_charts() {
        let report = Report::from_profiles(&[profile(1, 2, 1, 1, 500)], None);
        let page = render(
            &report,
            &Source::Search {
                url: "https://elastic:secret@search.local:9200",
                index: "shop-profiles",
            },
        );
        assert_eq!(
            page.matches(
                "Not available from the search index <code>shop-profiles</code> at <code>https://search.local:9200</code>"
            )
            .count(),
            2
        );
        assert!(!page.contains("secret"));
        for chart in [
            "revenue-by-day",
            "aov-by-day",
            "top-categories",
            "top-brands",
        ] {
            assert!(
                !page.contains(&format!(r#"data-chart="{chart}""#)),
                "{chart}"
            );
        }
        assert!(page.contains(r#"data-chart="funnel" data-points="3""#));
    }

    #[test]
    fn nothing_is_fetched_at_view_time() {
        let page = render(&fixture(), &lake());
        for needle in ["src=", "href=", "http://", "https://", "@import", "url("] {
            // The SVG namespace is an identifier, not a request.
            let count = page.matches(needle).count();
            let namespaces = if needle == "http://" {
                page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
            } else {
                0
            };
            assert_eq!(count, namespaces, "{needle}");
        }
    }

    #[test]
    fn escaping_and_urls() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&#39;");
        assert_eq!(
            without_userinfo("http://u:p@h:9200/x@y"),
            "http://h:9200/x@y"
        );
        assert_eq!(without_userinfo("http://h:9200"), "http://h:9200");
        assert_eq!(without_userinfo("h:9200"), "h:9200");
    }
}
