//! Inline SVG charts for the HTML report: horizontal bars, columns and a line, each drawn
//! from labelled values. Pure: every function returns markup, with every label escaped.
//!
//! Each element that carries a value (a bar, a column, a point) has a `data-mark`
//! attribute and a `<title>` (the browser's tooltip); [`Chart::marks`] counts them, so the
//! page can state how many a chart has and a test can check the browser drew that many.

use std::fmt::Write as _;

use super::html::escape;

/// One value to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub label: String,
    /// Drawn size (any unit; only ratios matter).
    pub value: f64,
    /// The value as the page prints it.
    pub display: String,
}

impl Datum {
    pub fn new(label: impl Into<String>, value: f64, display: impl Into<String>) -> Datum {
        Datum {
            label: label.into(),
            value,
            display: display.into(),
        }
    }
}

/// An SVG element and the number of marks (values drawn) in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub svg: String,
    pub marks: usize,
}

/// Longest label drawn in full beside a bar (the tooltip has all of it).
const LABEL_CHARS: usize = 26;

/// `label` cut to `max` characters with an ellipsis.
pub fn shorten(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        return label.to_owned();
    }
    let mut out: String = label.chars().take(max.saturating_sub(1)).collect();
    out.push('\u{2026}');
    out
}

/// Horizontal bars, one row per datum, the value printed after each bar. A zero (or
/// negative) value draws no bar and is no mark.
pub fn horizontal_bars(data: &[Datum], color: &str) -> Chart {
    const ROW: f64 = 28.0;
    const LABEL_W: f64 = 200.0;
    const BAR_W: f64 = 210.0;
    const WIDTH: f64 = 580.0;
    let max = data.iter().map(|d| d.value).fold(0.0, f64::max);
    let height = ROW * data.len() as f64 + 8.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="bars" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    let mut marks = 0;
    for (i, d) in data.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let mid = y + ROW / 2.0;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{mid:.1}" class="label" text-anchor="end" dominant-baseline="middle">{}</text>"#,
            LABEL_W - 8.0,
            escape(&shorten(&d.label, LABEL_CHARS))
        );
        let width = if max > 0.0 && d.value > 0.0 {
            (d.value / max * BAR_W).max(1.0)
        } else {
            0.0
        };
        if width > 0.0 {
            marks += 1;
            let _ = write!(
                svg,
                r#"<rect data-mark="" x="{LABEL_W}" y="{:.1}" width="{width:.1}" height="{:.1}" rx="3" fill="{color}"><title>{}: {}</title></rect>"#,
                y + 4.0,
                ROW - 8.0,
                escape(&d.label),
                escape(&d.display)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{mid:.1}" class="value" dominant-baseline="middle">{}</text>"#,
            LABEL_W + width + 6.0,
            escape(&d.display)
        );
    }
    svg.push_str("</svg>");
    Chart { svg, marks }
}

/// A "nice" step (1, 2 or 5 times a power of ten) for about `ticks` gridlines up to `max`.
pub fn nice_step(max: f64, ticks: u32) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let rough = max / f64::from(ticks.max(1));
    let power = 10f64.powf(rough.log10().floor());
    let fraction = rough / power;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// An axis value: `950`, `2.5k`, `40k`, `1.2M`.
pub fn compact(value: f64) -> String {
    let trim = |x: f64| {
        let text = format!("{x:.1}");
        text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
    };
    if value.abs() >= 1e6 {
        format!("{}M", trim(value / 1e6))
    } else if value.abs() >= 1e3 {
        format!("{}k", trim(value / 1e3))
    } else {
        trim(value)
    }
}

/// Layout of the charts over days.
const W: f64 = 1000.0;
const H: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 34.0;

/// The frame of a chart over `data`: y gridlines with their values, and every n-th
/// label under the x axis. Returns the markup and the y scale's top.
fn frame(data: &[Datum], svg: &mut String) -> f64 {
    let max = data.iter().map(|d| d.value).fold(0.0, f64::max);
    let step = nice_step(max, 4);
    let top = (max / step).ceil().max(1.0) * step;
    let plot_h = H - TOP - BOTTOM;
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        let y = TOP + plot_h * (1.0 - tick / top);
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{y:.1}" class="tick" text-anchor="end" dominant-baseline="middle">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            compact(tick)
        );
        tick += step;
    }
    let every = data.len().div_ceil(12).max(1);
    let slot = (W - LEFT - RIGHT) / data.len().max(1) as f64;
    for (i, d) in data.iter().enumerate() {
        if i % every == 0 {
            let x = LEFT + slot * (i as f64 + 0.5);
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"#,
                H - BOTTOM + 18.0,
                escape(&d.label)
            );
        }
    }
    top
}

fn open_svg(class: &str) -> String {
    format!(
        r#"<svg class="{class}" viewBox="0 0 {W} {H}" width="100%" role="img" xmlns="http://www.w3.org/2000/svg">"#
    )
}

/// Columns over the x axis, one per datum (`label` is the axis label, `title` the tooltip's).
pub fn columns(data: &[Datum], titles: &[String], color: &str) -> Chart {
    let mut svg = open_svg("columns");
    let top = frame(data, &mut svg);
    let slot = (W - LEFT - RIGHT) / data.len().max(1) as f64;
    let plot_h = H - TOP - BOTTOM;
    let mut marks = 0;
    for (i, d) in data.iter().enumerate() {
        let h = if d.value > 0.0 {
            (d.value / top * plot_h).max(1.0)
        } else {
            0.0
        };
        if h == 0.0 {
            continue;
        }
        marks += 1;
        let _ = write!(
            svg,
            r#"<rect data-mark="" x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" rx="2" fill="{color}"><title>{}</title></rect>"#,
            LEFT + slot * i as f64 + slot * 0.15,
            TOP + plot_h - h,
            slot * 0.7,
            escape(titles.get(i).unwrap_or(&d.display))
        );
    }
    svg.push_str("</svg>");
    Chart { svg, marks }
}

/// A line through one point per datum, each point a mark.
pub fn line(data: &[Datum], titles: &[String], color: &str) -> Chart {
    let mut svg = open_svg("line");
    let top = frame(data, &mut svg);
    let slot = (W - LEFT - RIGHT) / data.len().max(1) as f64;
    let plot_h = H - TOP - BOTTOM;
    let points: Vec<(f64, f64)> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                LEFT + slot * (i as f64 + 0.5),
                TOP + plot_h * (1.0 - d.value.max(0.0) / top),
            )
        })
        .collect();
    let path: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
        path.join(" ")
    );
    for (i, (x, y)) in points.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<circle data-mark="" cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{color}"><title>{}</title></circle>"#,
            escape(titles.get(i).unwrap_or(&data[i].display))
        );
    }
    svg.push_str("</svg>");
    Chart {
        svg,
        marks: points.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks_in(svg: &str) -> usize {
        svg.matches("data-mark=").count()
    }

    #[test]
    fn bars_are_scaled_to_the_largest_and_zeros_draw_nothing() {
        let chart = horizontal_bars(
            &[
                Datum::new("a", 10.0, "10"),
                Datum::new("b", 0.0, "0"),
                Datum::new("c", 5.0, "5"),
            ],
            "#123456",
        );
        assert_eq!(chart.marks, 2);
        assert_eq!(marks_in(&chart.svg), 2);
        // The largest fills the 210-unit bar area, half of it fills half.
        assert!(chart.svg.contains(r#"width="210.0""#), "{}", chart.svg);
        assert!(chart.svg.contains(r#"width="105.0""#), "{}", chart.svg);
        assert!(chart.svg.contains("<title>c: 5</title>"));
    }

    #[test]
    fn labels_and_titles_are_escaped() {
        let chart = horizontal_bars(&[Datum::new("<script>&\"'", 1.0, "<b>")], "red");
        assert!(!chart.svg.contains("<script>"));
        assert!(!chart.svg.contains("<b>"));
        assert!(chart
            .svg
            .contains("&lt;script&gt;&amp;&quot;&#39;: &lt;b&gt;</title>"));
        let columns = columns(
            &[Datum::new("<x>", 1.0, "1")],
            &["<title-text>".to_owned()],
            "red",
        );
        assert!(columns.svg.contains("&lt;x&gt;"));
        assert!(columns.svg.contains("<title>&lt;title-text&gt;</title>"));
        assert!(!columns.svg.contains("<x>"));
    }

    #[test]
    fn columns_and_lines_count_their_marks() {
        let data = vec![
            Datum::new("10-01", 120.0, "120.00"),
            Datum::new("10-02", 0.0, "0.00"),
            Datum::new("10-03", 80.0, "80.00"),
        ];
        let titles: Vec<String> = data.iter().map(|d| d.display.clone()).collect();
        let cols = columns(&data, &titles, "blue");
        assert_eq!((cols.marks, marks_in(&cols.svg)), (2, 2));
        let line = line(&data, &titles, "blue");
        assert_eq!((line.marks, marks_in(&line.svg)), (3, 3));
        // Gridlines at 0, 50, 100, 150 (120 / 4 = 30 -> 50).
        for tick in ["0", "50", "100", "150"] {
            assert!(
                line.svg
                    .contains(&format!(r#"dominant-baseline="middle">{tick}</text>"#)),
                "{tick}: {}",
                line.svg
            );
        }
    }

    #[test]
    fn nice_steps_and_compact_numbers() {
        assert_eq!(nice_step(120.0, 4), 50.0);
        assert_eq!(nice_step(100.0, 4), 50.0);
        assert_eq!(nice_step(40.0, 4), 10.0);
        assert_eq!(nice_step(7.0, 4), 2.0);
        assert_eq!(nice_step(0.0, 4), 1.0);
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(2_500.0), "2.5k");
        assert_eq!(compact(40_000.0), "40k");
        assert_eq!(compact(1_200_000.0), "1.2M");
        assert_eq!(shorten("electronics.smartphone.x", 10), "electroni\u{2026}");
        assert_eq!(shorten("short", 10), "short");
    }
}
