//! `pipeline-runtime report --html` in a real headless Chromium: a generated dataset is
//! `run`, its report written as a page, and the page opened in Debian's `chromium`. The
//! page must load with no error (its own script records `window.onerror`, failed loads and
//! `console.error` into `#page-errors`), every chart must have data (and as many marks in
//! the browser's DOM as the page says), and every figure the text report prints must be on
//! the page. A screenshot is kept under the target directory (its path is printed).
//!
//! Needs no server, and skips nothing: without `chromium` it fails, saying how to get it.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use e2e::browser;
use e2e::runtime::runtime_binary;

/// Runs the binary; returns its stdout.
fn run_ok(binary: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(binary)
        .args(args)
        .output()
        .with_context(|| format!("starting {}", binary.display()))?;
    ensure!(
        output.status.success(),
        "pipeline-runtime {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        !String::from_utf8_lossy(&output.stderr).contains('\r'),
        "pipeline-runtime {args:?} drew progress although stderr is not a terminal"
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Text as the browser serializes a text node (the generator's names need no escaping,
/// but a check should not assume it).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}

/// What the page must contain.
#[derive(Debug)]
enum Expect {
    /// This markup, anywhere.
    Markup(String),
    /// A table row that starts with `start` and ends with `end`.
    Row { start: String, end: String },
}

/// The lines of the text report's section titled `title`, up to the next blank line.
fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

/// `<tr data-row="kind"><td>a</td><td>b</td>...</tr>`.
fn row(kind: &str, cells: &[&str]) -> String {
    let cells: String = cells
        .iter()
        .map(|c| format!("<td>{}</td>", escape(c)))
        .collect();
    format!(r#"<tr data-row="{kind}">{cells}</tr>"#)
}

/// What the page must contain for each figure of the text report.
fn expected_markup(text: &str) -> Result<Vec<Expect>> {
    let mut expected = Vec::new();
    for (label, key) in [
        ("Customers", "customers"),
        ("Events", "events"),
        ("Revenue", "revenue"),
        ("Purchases", "purchases"),
        ("Conversion", "conversion"),
        ("Average order value", "avg-order-value"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(label) && l[label.len()..].starts_with("  "))
            .with_context(|| format!("no {label} line in the text report"))?;
        let figure = line[label.len()..].trim();
        expected.push(Expect::Markup(format!(
            r#"data-figure="{key}">{figure}</div>"#
        )));
    }
    for line in section(text, "Funnel (customers)") {
        // `  {label:<19}{n:>14}  {share:>8}`: the label may have spaces.
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let [.., n, share] = tokens[..] else {
            bail!("funnel line {line:?}");
        };
        let label = tokens[..tokens.len() - 2].join(" ");
        expected.push(Expect::Markup(row("funnel", &[&label, n, share])));
    }
    for line in section(text, "Segments").into_iter().skip(1) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        ensure!(tokens.len() >= 5, "segment line {line:?}");
        let figures = &tokens[tokens.len() - 4..];
        let name = tokens[..tokens.len() - 4].join(" ");
        let mut cells = vec![name.as_str()];
        cells.extend(figures);
        expected.push(Expect::Markup(row("segment", &cells)));
    }
    for (title, kind) in [
        ("Top categories by revenue", "top-categories"),
        ("Top brands by revenue", "top-brands"),
    ] {
        let lines = section(text, title);
        ensure!(!lines.is_empty(), "no {title} in the text report");
        for line in lines {
            // `  NN. name   revenue   N purchases`; the page adds a share column.
            let tokens: Vec<&str> = line.split_whitespace().collect();
            ensure!(
                tokens.len() >= 5 && tokens[tokens.len() - 1] == "purchases",
                "{title} line {line:?}"
            );
            let purchases = tokens[tokens.len() - 2];
            let revenue = tokens[tokens.len() - 3];
            let name = tokens[..tokens.len() - 3].join(" ");
            expected.push(Expect::Row {
                start: format!(
                    r#"<tr data-row="{kind}"><td>{}</td><td>{revenue}</td>"#,
                    escape(&name)
                ),
                end: format!("<td>{purchases}</td></tr>"),
            });
        }
    }
    let days = section(text, "Revenue by day (UTC)");
    ensure!(days.len() > 1, "no days in the text report");
    for line in days.into_iter().skip(1) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        ensure!(cells.len() == 5, "day line {line:?}");
        expected.push(Expect::Markup(row("day", &cells)));
    }
    for line in section(text, "Insights") {
        let insight = line
            .strip_prefix("  - ")
            .with_context(|| format!("insight line {line:?}"))?;
        expected.push(Expect::Markup(format!("<li>{}</li>", escape(insight))));
    }
    Ok(expected)
}

fn check(dom: &str, expected: &Expect) -> Result<()> {
    match expected {
        Expect::Markup(markup) => ensure!(dom.contains(markup), "the page lacks {markup}"),
        Expect::Row { start, end } => {
            let at = dom
                .find(start.as_str())
                .with_context(|| format!("the page lacks a row starting {start}"))?;
            let close = at + dom[at..].find("</tr>").context("an unclosed row")? + "</tr>".len();
            ensure!(
                dom[at..close].ends_with(end.as_str()),
                "the row {} does not end with {end}",
                &dom[at..close]
            );
        }
    }
    Ok(())
}

/// `name="value"` of the first element whose markup starts with `prefix`.
fn attribute(dom: &str, prefix: &str, name: &str) -> Option<String> {
    let at = dom.find(prefix)?;
    let tag = &dom[at..at + dom[at..].find('>')?];
    let key = format!(r#"{name}=""#);
    let start = tag.find(&key)? + key.len();
    Some(tag[start..start + tag[start..].find('"')?].to_owned())
}

#[test]
fn the_html_report_loads_in_chromium_with_data_in_every_chart_and_the_text_reports_figures(
) -> Result<()> {
    // Fail at once, with the reason, when the browser is missing.
    let chromium = browser::chromium()?;
    println!("browser: {}", chromium.display());
    let binary = runtime_binary()?;
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("events.csv");
    let lake = dir.path().join("lake");
    let page = dir.path().join("report.html");
    let path = |p: &Path| p.to_str().map(str::to_owned).context("a UTF-8 path");
    run_ok(
        &binary,
        &[
            "generate",
            "--events",
            "30000",
            "--seed",
            "16",
            "--output",
            &path(&csv)?,
        ],
    )?;
    run_ok(
        &binary,
        &["run", "--input", &path(&csv)?, "--out", &path(&lake)?],
    )?;
    let text = run_ok(
        &binary,
        &["report", "--from", &path(&lake)?, "--html", &path(&page)?],
    )?;

    let url = browser::file_url(&page)?;
    let dom = browser::dump_dom(&url)?;

    // The page's own script ran to its end and recorded no error.
    ensure!(
        attribute(&dom, r#"<output id="page-status""#, "data-charts").as_deref() == Some("7")
            && dom.contains(r#"data-charts="7">checked</output>"#),
        "the page's check script did not run to its end: {}",
        &dom[dom.find("<footer").unwrap_or(0)..]
    );
    let errors = attribute(&dom, r#"<pre id="page-errors""#, "data-count");
    ensure!(
        errors.as_deref() == Some("0"),
        "the page recorded errors: {}",
        &dom[dom.find(r#"<pre id="page-errors""#).unwrap_or(0)..]
    );

    // Every chart has data, and the browser's DOM has as many marks as the page says.
    let mut charts = Vec::new();
    for (at, _) in dom.match_indices("<figure data-chart=") {
        let tag = &dom[at..];
        let name = attribute(tag, "<figure", "data-chart").context("chart name")?;
        let points: u64 = attribute(tag, "<figure", "data-points")
            .context("data-points")?
            .parse()?;
        let in_dom: u64 = attribute(tag, "<figure", "data-marks-in-dom")
            .context("data-marks-in-dom")?
            .parse()?;
        ensure!(points > 0, "chart {name} has no data");
        ensure!(
            in_dom == points,
            "chart {name}: {in_dom} marks in the DOM, {points} stated"
        );
        charts.push((name, points));
    }
    let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "segment-customers",
            "segment-revenue",
            "funnel",
            "revenue-by-day",
            "aov-by-day",
            "top-categories",
            "top-brands"
        ]
    );
    // The generator spreads its events over October and November 2019: 61 days.
    assert!(
        charts.contains(&("aov-by-day".to_owned(), 61)),
        "{charts:?}"
    );

    // Every figure of the text report is on the page.
    let expected = expected_markup(&text)?;
    for markup in &expected {
        check(&dom, markup)?;
    }
    println!(
        "{} figures of the text report found on the page; charts: {charts:?}",
        expected.len()
    );

    // A screenshot, kept with the build's files.
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_html_chromium/report.png");
    browser::screenshot(&url, &png, 1280, 2400)?;
    let size = std::fs::metadata(&png)?.len();
    ensure!(size > 50_000, "{}: only {size} bytes", png.display());
    println!("screenshot: {}", png.display());
    Ok(())
}
