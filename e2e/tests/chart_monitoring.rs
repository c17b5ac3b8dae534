//! The chart's Grafana dashboard (`dashboards/datapipeline.json`) and alert rules
//! (`rules/datapipeline.rules.yaml`) against what the binaries really export: every metric
//! named by a panel query, a dashboard variable or an alert expression must be a series of
//! the runtime's (`ingest` and `process` roles) or the operator's registry, read from the
//! registries' descriptors (`# TYPE` lines; every label family is given a series first, as
//! an empty family writes none: a new family left out fails the test, never passes it). Every
//! alert has a summary, a description and a runbook_url whose anchor is a heading of
//! README.md, and the troubleshooting rows its description quotes exist. Every dashboard
//! query returns data when promtool (Prometheus's engine) evaluates it on those series as
//! the chart's monitors scrape them. Needs no server (e2e/test.sh runs it before starting
//! them, after `e2e/promtool.sh`, which builds promtool into the cache).
//! Run: `cargo test -p e2e --test chart_monitoring`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, ensure, Context as _};
use e2e::control_plane::CHART;
use e2e::k8s::repo_root;
use serde_json::Value;

const DASHBOARD: &str = "dashboards/datapipeline.json";
const RULES: &str = "rules/datapipeline.rules.yaml";

/// PromQL words that are not metric names: aggregations (followed by `by`/`without` or
/// their arguments), binary operators, modifiers.
const NOT_METRICS: [&str; 26] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Keywords followed by a parenthesised list of label names (not metrics).
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The series names an OpenMetrics text exposes, from its `# TYPE name type` lines: a
/// counter `c` is `c_total`, a histogram `h` is `h_bucket`, `h_sum` and `h_count`.
fn exported_series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .flat_map(|(name, kind)| {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            suffixes.iter().map(move |s| format!("{name}{s}"))
        })
        .collect()
}

/// The runtime's metrics of one role, every label family with a series (an empty family
/// writes no descriptor).
fn runtime_text(role: &str) -> String {
    use pipeline_runtime::metrics::{
        DeadLetterStage, Metrics, PartitionLabels, Sink, SinkErrorKind,
    };
    let metrics = Metrics::new(role);
    metrics
        .lag
        .get_or_create(&PartitionLabels { partition: 0 })
        .set(1);
    metrics.sink_error(Sink::Search, SinkErrorKind::Retried, 1);
    metrics.dead_letter(DeadLetterStage::Row, 1);
    metrics.last_checkpoint.set(1_796_300_000);
    metrics.assigned_partitions.set(1);
    metrics.checkpoint_duration.observe(0.25);
    metrics.encode()
}

/// The operator's metrics, every label family with a series: a reconcile of each kind
/// and a pipeline whose status has every block.
fn operator_text() -> String {
    use datapipeline_operator::controller::autoscale::decision::ScalingReason;
    use datapipeline_operator::crd::Phase;
    use datapipeline_operator::metrics::{Metrics, Outcome, PipelineSample, ThroughputSample};
    let metrics = Metrics::new();
    metrics.record(Outcome::Applied, 0.1);
    metrics.record(Outcome::Failed("apply"), 0.1);
    let sample = PipelineSample {
        phase: Some(Phase::Running),
        replicas: Some((1, 1)),
        scaling: Some(ScalingReason::Steady),
        throughput: Some(ThroughputSample::default()),
    };
    metrics.observe_pipeline("shop", "clicks", &sample);
    metrics.render()
}

/// Every series the binaries export: the runtime in both roles and the operator.
fn all_exported() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for role in ["ingest", "process"] {
        names.extend(exported_series(&runtime_text(role)));
    }
    names.extend(exported_series(&operator_text()));
    names
}

/// Index just past the bracket closing the one at `open` (`{`/`}` or `[`/`]`), skipping
/// quoted strings.
fn skip_group(chars: &[char], open: usize) -> usize {
    let close = if chars[open] == '{' { '}' } else { ']' };
    let mut i = open + 1;
    while i < chars.len() && chars[i] != close {
        i = if matches!(chars[i], '"' | '\'' | '`') {
            skip_string(chars, i)
        } else {
            i + 1
        };
    }
    i + 1
}

/// Index just past the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names a PromQL expression selects: identifiers outside label matchers,
/// ranges and strings that are neither functions (followed by `(`), keywords nor the label
/// lists of `by (...)`/`on (...)`. Grafana variables (`$name`) are skipped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' || c == '[' {
            i = skip_group(&chars, i);
        } else if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A variable, or a number or duration (0.95, 1e3, 5m).
            i += 1;
            while i < chars.len() && (is_name_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_name_char(c) {
            let start = i;
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) && call {
                // `by (a, b)`: skip the list.
                i = chars[next..]
                    .iter()
                    .position(|&c| c == ')')
                    .map_or(chars.len(), |p| next + p + 1);
            } else if !call && !NOT_METRICS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// A Grafana variable query, `label_values(SELECTOR, label)`, as PromQL (its selector).
fn variable_expr(query: &str) -> &str {
    match query.trim().strip_prefix("label_values(") {
        Some(rest) => rest.rsplit_once(',').map_or(rest, |(selector, _)| selector),
        None => query,
    }
}

fn chart_file(path: &str) -> anyhow::Result<String> {
    let file = repo_root().join(CHART).join(path);
    std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))
}

/// (where, PromQL) of every panel target and query variable of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    for panel in &panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let title = panel["title"].as_str().unwrap_or("?");
                let ref_id = target["refId"].as_str().unwrap_or("?");
                queries.push((format!("panel {title:?} {ref_id}"), expr.to_string()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())
                .unwrap_or_default();
            let name = variable["name"].as_str().unwrap_or("?");
            queries.push((
                format!("variable ${name}"),
                variable_expr(query).to_string(),
            ));
        }
    }
    queries
}

/// The rules of the rules file, each as its YAML mapping.
fn alert_rules() -> anyhow::Result<Vec<serde_yaml::Value>> {
    let rules: serde_yaml::Value = serde_yaml::from_str(&chart_file(RULES)?)?;
    let mut all = Vec::new();
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        all.extend(group["rules"].as_sequence().into_iter().flatten().cloned());
    }
    Ok(all)
}

/// The metric names in `queries` that no binary exports, with where they are used.
fn unexported(queries: &[(String, String)], exported: &BTreeSet<String>) -> Vec<String> {
    queries
        .iter()
        .flat_map(|(place, expr)| {
            metric_names(expr)
                .into_iter()
                .filter(|name| !exported.contains(name))
                .map(move |name| format!("{place}: {name}"))
        })
        .collect()
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn readme_anchors(readme: &str) -> BTreeSet<String> {
    let mut in_code = false;
    readme
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                in_code = !in_code;
            }
            !in_code
        })
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// The symptom cells (first column, backticks removed) of the table under `## heading`.
fn table_symptoms(readme: &str, heading: &str) -> Vec<String> {
    readme
        .lines()
        .skip_while(|l| *l != format!("## {heading}"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" | ").next())
        .map(|cell| cell.replace('`', ""))
        .collect()
}

/// The texts a description quotes as `troubleshooting row "..."`.
fn quoted_rows(description: &str) -> Vec<String> {
    let flat = description.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.split("troubleshooting row \"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(row, _)| row.to_string()))
        .collect()
}

/// The samples of an OpenMetrics text as promtool input series, with the labels a scrape
/// adds (`target`; a label the series has itself wins, as with `honorLabels`): a counter,
/// `_sum`, `_count` or `_bucket` grows by its value (at least 1) every minute, a gauge
/// keeps its value.
fn input_series(text: &str, target: &[(&str, &str)]) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| {
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}').to_string()),
                None => (series, String::new()),
            };
            let mut labels: Vec<String> = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|l| format!("{}\"", l.trim_end_matches('"')))
                .collect();
            for (key, value) in target {
                if !labels.iter().any(|l| l.starts_with(&format!("{key}="))) {
                    labels.push(format!("{key}=\"{value}\""));
                }
            }
            let value: f64 = value.parse().unwrap_or(0.0);
            let grows = ["_total", "_sum", "_count", "_bucket"]
                .iter()
                .any(|s| name.ends_with(s));
            let values = if grows {
                format!("0+{}x40", value.max(1.0))
            } else {
                format!("{value}x40")
            };
            serde_json::json!({"series": format!("{name}{{{}}}", labels.join(",")), "values": values})
        })
        .collect()
}

/// A dashboard query as Prometheus gets it from Grafana for namespace `shop`, pipeline
/// `clicks`.
fn grafana_substituted(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$namespace", "shop")
        .replace("$pipeline", "clicks")
}

/// The path of promtool, built into the cache by `e2e/promtool.sh install` if missing.
fn promtool() -> anyhow::Result<std::path::PathBuf> {
    let output = std::process::Command::new(repo_root().join("e2e/promtool.sh"))
        .arg("install")
        .output()
        .context("running e2e/promtool.sh install")?;
    ensure!(
        output.status.success(),
        "e2e/promtool.sh install failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    Ok(stdout.trim().lines().last().unwrap_or_default().into())
}

#[test]
fn promql_metric_names_are_found() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="y",p=~"$p"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(names("delta(lag[10m]) > 0 and lag > 0"), ["lag"]);
    assert_eq!(
        names(r#"time() - max(ts{ns="a{b}"} > 0) / on (pod) group_left (x) other offset 5m"#),
        ["other", "ts"]
    );
    assert_eq!(
        names(r#"sum without (pod) (increase(c_total{stage!~"row|\"x\""}[1h]))"#),
        ["c_total"]
    );
    assert_eq!(
        variable_expr(r#"label_values(phase{namespace="$namespace"}, pipeline)"#),
        r#"phase{namespace="$namespace"}"#
    );
    let text = "# HELP a_c A.\n# TYPE a_c counter\n# TYPE a_h histogram\n# TYPE a_g gauge\n# EOF\n";
    assert_eq!(
        exported_series(text).into_iter().collect::<Vec<_>>(),
        ["a_c_total", "a_g", "a_h_bucket", "a_h_count", "a_h_sum"]
    );
    assert_eq!(anchor(" Metrics and logs"), "metrics-and-logs");
    assert_eq!(
        anchor("On a real node (from `real_pods`, 2026-12-03)"),
        "on-a-real-node-from-real_pods-2026-12-03"
    );
}

#[test]
fn the_registries_export_what_the_dashboard_is_built_on() {
    let exported = all_exported();
    // A name no binary exports is reported with its place, and so is a counter named
    // without its `_total`.
    let queries = [
        (
            "panel A".to_string(),
            "rate(datapipeline_process_no_such_total[5m])".to_string(),
        ),
        (
            "panel B".to_string(),
            "rate(datapipeline_process_checkpoints[5m])".to_string(),
        ),
        (
            "panel C".to_string(),
            "rate(datapipeline_process_checkpoints_total[5m])".to_string(),
        ),
    ];
    assert_eq!(
        unexported(&queries, &exported),
        [
            "panel A: datapipeline_process_no_such_total",
            "panel B: datapipeline_process_checkpoints"
        ]
    );
    for name in [
        "datapipeline_ingest_events_out_total",
        "datapipeline_process_consumer_lag",
        "datapipeline_process_checkpoint_duration_seconds_bucket",
        "datapipeline_operator_reconcile_duration_seconds_count",
        "datapipeline_operator_pipeline_phase",
        "datapipeline_operator_pipeline_autoscaler_reason",
    ] {
        assert!(exported.contains(name), "{name} not in {exported:#?}");
    }
}

#[test]
fn every_dashboard_query_names_an_exported_metric() -> anyhow::Result<()> {
    let dashboard: Value = serde_json::from_str(&chart_file(DASHBOARD)?)?;
    ensure!(dashboard["uid"] == "datapipeline", "dashboard uid");
    let queries = dashboard_queries(&dashboard);
    let used: BTreeSet<String> = queries.iter().flat_map(|(_, e)| metric_names(e)).collect();
    println!(
        "{} queries name {} metrics:\n{}",
        queries.len(),
        used.len(),
        used.iter().cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(unexported(&queries, &all_exported()), Vec::<String>::new());
    // Every panel but the rows queries something, and every query names a metric.
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] != "row" {
            ensure!(
                panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "panel {} has no query",
                panel["title"]
            );
        }
    }
    for (place, expr) in &queries {
        ensure!(
            !metric_names(expr).is_empty(),
            "{place}: no metric in {expr}"
        );
    }
    // The names the test reads from the file are the ones the rendered ConfigMap holds
    // (templates/grafana-dashboard.yaml loads the file as it is; the helm chart test
    // renders it).
    Ok(())
}

#[test]
fn every_alert_names_exported_metrics_and_links_its_runbook() -> anyhow::Result<()> {
    let rules = alert_rules()?;
    ensure!(rules.len() == 5, "{} rules", rules.len());
    let queries: Vec<(String, String)> = rules
        .iter()
        .map(|r| {
            (
                format!("alert {}", r["alert"].as_str().unwrap_or("?")),
                r["expr"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(unexported(&queries, &all_exported()), Vec::<String>::new());

    let readme = std::fs::read_to_string(repo_root().join("README.md"))?;
    let anchors = readme_anchors(&readme);
    let symptoms = table_symptoms(&readme, "Troubleshooting");
    ensure!(symptoms.len() > 10, "troubleshooting table: {symptoms:?}");
    for rule in &rules {
        let name = rule["alert"].as_str().context("a rule without `alert`")?;
        let annotations = &rule["annotations"];
        for key in ["summary", "description"] {
            ensure!(
                annotations[key]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{name}: no {key}"
            );
        }
        let runbook = annotations["runbook_url"]
            .as_str()
            .with_context(|| format!("{name}: no runbook_url"))?;
        let Some(("README.md", fragment)) = runbook.split_once('#') else {
            bail!("{name}: runbook_url {runbook:?} is not README.md#<anchor>");
        };
        ensure!(
            anchors.contains(fragment),
            "{name}: README.md has no heading with anchor #{fragment}"
        );
        for row in quoted_rows(annotations["description"].as_str().unwrap_or_default()) {
            ensure!(
                symptoms.iter().any(|s| s.starts_with(&row)),
                "{name}: no troubleshooting row starts with {row:?}"
            );
        }
        ensure!(
            rule["labels"]["severity"].as_str().is_some(),
            "{name}: no severity"
        );
    }
    Ok(())
}

#[test]
fn the_chart_files_are_where_the_templates_load_them() {
    for path in [DASHBOARD, RULES] {
        assert!(
            Path::new(&repo_root().join(CHART).join(path)).is_file(),
            "{path}"
        );
    }
    for (template, loads) in [
        ("templates/grafana-dashboard.yaml", DASHBOARD),
        ("templates/prometheusrule.yaml", RULES),
    ] {
        let text = chart_file(template).expect("template");
        assert!(
            text.contains(&format!(".Files.Get \"{loads}\"")),
            "{template} does not load {loads}"
        );
    }
}

/// Every dashboard query returns data when Prometheus's engine (promtool's unit tests)
/// evaluates it, for one pipeline, on the series the binaries export, labelled as the
/// chart's ServiceMonitor and PodMonitor scrape them: no label matcher, label value or
/// aggregation leaves a panel empty. (Builds promtool on first use.)
#[test]
fn every_dashboard_query_returns_data_on_the_scraped_series() -> anyhow::Result<()> {
    let mut series = Vec::new();
    for (role, pod) in [
        ("ingest", "clicks-ingest-0"),
        ("process", "clicks-runtime-0"),
    ] {
        let target = [("namespace", "shop"), ("pipeline", "clicks"), ("pod", pod)];
        series.extend(input_series(&runtime_text(role), &target));
    }
    // Another pipeline beside it, as in a cluster.
    let other = [
        ("namespace", "shop"),
        ("pipeline", "other"),
        ("pod", "other-runtime-0"),
    ];
    series.extend(input_series(&runtime_text("process"), &other));
    let operator = [("namespace", "datapipeline-system"), ("pod", "operator-0")];
    series.extend(input_series(&operator_text(), &operator));

    let dashboard: Value = serde_json::from_str(&chart_file(DASHBOARD)?)?;
    let queries = dashboard_queries(&dashboard);
    let tests: Vec<Value> = queries
        .iter()
        .map(|(_, expr)| {
            serde_json::json!({
                "expr": format!("count(({})) > bool 0", grafana_substituted(expr)),
                "eval_time": "30m",
                "exp_samples": [{"labels": "{}", "value": 1}],
            })
        })
        .collect();
    let file = serde_json::json!({
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    });
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("dashboard.test.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file)?)?;
    let output = std::process::Command::new(promtool()?)
        .args(["test", "rules"])
        .arg(&path)
        .output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "{} queries on {} series:\n{report}",
        queries.len(),
        series.len()
    );
    ensure!(
        output.status.success(),
        "promtool test rules failed:\n{report}"
    );
    Ok(())
}
