//! The chart's Grafana dashboard against a real Prometheus fed by a real run: the server
//! (built from its Go module by `e2e/promtool.sh install-server`) scrapes a real
//! `pipeline-runtime ingest` and `process` (children, against the real Kafka, S3 and
//! OpenSearch) and the operator's /metrics (`operator::metrics::serve` of an in-process
//! controller reconciling the DataPipeline on the test control plane, the k8s tier), each
//! labelled as the chart's PodMonitor and ServiceMonitor have the Prometheus Operator label
//! them (the runtime targets' pod labels are those of the Deployments the controller made).
//! Once the run is done and scraped, every panel query of the dashboard, with its variables
//! set to this run's namespace and pipeline, returns at least one series through
//! /api/v1/query, and those whose value the run fixes equal it (profiles in the index, lag,
//! replicas, partitions); the counters behind the rate panels equal the embedded run's
//! counts. The run covers the failure panels too: the index refuses two profiles (a mapping
//! with an integer user_id; two users above 2^31), and a second DataPipeline names a
//! missing Secret (a blocked reconcile). Every query and its answer are written to
//! `$CARGO_TARGET_TMPDIR/dashboard_prometheus/queries.txt` (path printed).
//! Needs kafka, opensearch, s3 and k8s up; does I/O (processes, HTTP on 127.0.0.1).
//! Run: `cargo test -p e2e --test dashboard_prometheus -- --nocapture`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use datapipeline_operator::{
    controller::{self, validate::OperatorSettings, RunConfig},
    crd::DataPipeline,
    metrics::Metrics,
};
use e2e::control_plane::CHART;
use e2e::k8s::{self, repo_root, TestNamespace};
use e2e::runtime::{
    end_offsets, expected_from_embedded_run, free_port, http_get, open_bucket, runtime_binary,
    wait_for, wait_until_committed, write_fixture, Endpoints,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::Reporter;
use pipeline_config::PipelineNames;
use pipeline_runtime::store::Bytes;
use serde_json::{json, Value};

const PARTITIONS: i32 = 3;
const EVENTS: u64 = 20_000;
/// Users the index refuses (user_id mapped as a 32-bit integer), one event each.
const REFUSED_USERS: [u64; 2] = [3_000_000_001, 3_000_000_002];
/// What Grafana puts for `$__rate_interval` with a 1 s scrape interval is at least 4
/// scrapes; 15 s keeps several samples in every window.
const RATE_INTERVAL: &str = "15s";
/// Where the operator runs in a cluster: its own series get this `namespace`.
const OPERATOR_NAMESPACE: &str = "datapipeline-system";
const TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_the_runs_data_from_a_real_prometheus() -> Result<()> {
    k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let binary = runtime_binary()?;
    let prometheus_binary = prometheus_server()?;
    let dir = tempfile::tempdir()?;
    let csv = fixture(dir.path())?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("embedded"))?;
    let (accepted, rejected) = (expected.events.len(), expected.rejected.len());
    ensure!(
        REFUSED_USERS
            .iter()
            .all(|u| expected.profiles.iter().any(|p| p.user_id == *u)),
        "the embedded run has no profile for {REFUSED_USERS:?}"
    );
    let indexed = expected.profiles.len() - REFUSED_USERS.len();

    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let namespace = TestNamespace::create(&client, "dp-dashboard").await?;
    let name = k8s::unique_name("dash");
    let names = PipelineNames::new(name.clone());
    create_refusing_index(&endpoints.opensearch_url, &names.profiles_index()).await?;
    let bucket = open_bucket(&endpoints, &name).await?;

    // The operator: its controller and its /metrics, as the chart runs them.
    let metrics = Arc::new(Metrics::new());
    let _controller = AbortOnDrop(tokio::spawn(controller::run(
        client.clone(),
        run_config(&namespace.name),
        metrics.clone(),
    )));
    let operator_port = free_port()?;
    let _operator_metrics = AbortOnDrop(tokio::spawn(datapipeline_operator::metrics::serve(
        ([127, 0, 0, 1], operator_port).into(),
        metrics.clone(),
    )));
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &namespace.name);
    pipelines
        .create(&PostParams::default(), &pipeline(&name, &endpoints)?)
        .await?;
    let blocked = format!("{name}-blocked");
    pipelines
        .create(
            &PostParams::default(),
            &blocked_pipeline(&blocked, &endpoints)?,
        )
        .await?;

    // The runtime pods, played by local children.
    let logs = std::env::temp_dir().join(format!("{name}-logs"));
    std::fs::create_dir_all(&logs)?;
    println!("runtime logs: {}", logs.display());
    let env = endpoints.runtime_env(&name, &name);
    let mut ingest = Role::start(
        &binary,
        &env,
        logs.join("ingest.log"),
        &[
            "ingest",
            "--partitions",
            &PARTITIONS.to_string(),
            "--watch-interval-ms",
            "500",
        ],
    )?;
    // The process role starts once ingest has created the topics (a pod would restart).
    ingest.wait_until_ready().await?;
    let mut process = Role::start(
        &binary,
        &env,
        logs.join("process.log"),
        &["process", "--checkpoint-interval-ms", "300"],
    )?;

    // Prometheus scraping them as the chart's monitors would.
    let pod_labels = runtime_pod_labels(&client, &namespace.name, &name).await?;
    let targets = ScrapeTargets {
        namespace: namespace.name.clone(),
        ingest: (ingest.port, pod_labels.ingest, format!("{name}-ingest-0")),
        process: (
            process.port,
            pod_labels.runtime,
            format!("{name}-runtime-0"),
        ),
        operator_port,
    };
    let prometheus = Prometheus::start(&prometheus_binary, dir.path(), &scrape_config(&targets))?;
    println!("prometheus: http://127.0.0.1:{}", prometheus.port);
    // The file lands once Prometheus has scraped both roles' counters at zero, so the
    // throughput panels see the run happen.
    wait_for("Prometheus to scrape ingest and process", TIMEOUT, || {
        let prometheus = &prometheus;
        async move {
            let ingest = prometheus
                .single_value("count(datapipeline_ingest_events_out_total == 0)")
                .await?;
            let process = prometheus
                .single_value("count(datapipeline_process_events_in_total == 0)")
                .await?;
            Ok((ingest == Some(1.0) && process == Some(1.0)).then_some(()))
        }
    })
    .await?;
    bucket
        .put(
            &format!("{}/events.csv", pipeline_config::layout::LANDING_PREFIX),
            Bytes::from(std::fs::read(&csv)?),
        )
        .await?;

    // The run: every row published or dead-lettered, every event committed, the index
    // counted by the operator; then Prometheus holds those final values.
    let run = async {
        ingest
            .wait_for_metric(
                "datapipeline_ingest_events_in_total",
                (accepted + rejected) as f64,
            )
            .await?;
        ingest
            .wait_for_metric("datapipeline_ingest_events_out_total", accepted as f64)
            .await?;
        let kafka = endpoints.kafka(&name);
        let ends = {
            let (bootstrap, topic) = (kafka.bootstrap.clone(), kafka.events_topic.clone());
            tokio::task::spawn_blocking(move || end_offsets(&bootstrap, &topic, PARTITIONS))
                .await??
        };
        wait_until_committed(&kafka, PARTITIONS, &ends, TIMEOUT).await?;
        process.ensure_running()?;
        Ok::<_, anyhow::Error>(())
    };
    run.await
        .with_context(|| format!("the run (logs in {})", logs.display()))?;
    let selector = format!("namespace=\"{}\",pipeline=\"{name}\"", namespace.name);
    let counts = [
        // Events only: the rejected rows' dead letters have their own counter.
        (
            format!("sum(datapipeline_ingest_events_out_total{{{selector}}})"),
            accepted as f64,
        ),
        (
            format!("sum(datapipeline_ingest_dead_letters_total{{{selector},stage=\"row\"}})"),
            rejected as f64,
        ),
        (
            format!("sum(datapipeline_process_events_in_total{{{selector}}})"),
            accepted as f64,
        ),
        (
            format!("sum(datapipeline_process_dead_letters_total{{{selector},stage=\"search\"}})"),
            REFUSED_USERS.len() as f64,
        ),
        (
            format!(
                "sum(datapipeline_process_sink_errors_total{{{selector},sink=\"search\",kind=\"rejected\"}})"
            ),
            REFUSED_USERS.len() as f64,
        ),
        (
            format!("datapipeline_operator_pipeline_profiles{{{selector}}}"),
            indexed as f64,
        ),
        (
            format!("datapipeline_operator_pipeline_consumer_lag{{{selector}}}"),
            0.0,
        ),
        (
            format!("sum(datapipeline_process_consumer_lag{{{selector}}})"),
            0.0,
        ),
    ];
    wait_for("Prometheus to hold the run's final counts", TIMEOUT, || {
        let (counts, prometheus) = (&counts, &prometheus);
        async move {
            // A mismatch is an error so that the timeout names the last one.
            for (query, want) in counts {
                let got = prometheus.single_value(query).await?;
                ensure!(got == Some(*want), "{query}: {got:?}, expected {want}");
            }
            Ok(Some(()))
        }
    })
    .await
    .with_context(|| format!("logs in {}", logs.display()))?;
    // A full rate window of scrapes after the run, so every rate has its samples.
    let scraped = prometheus.single_value("max(timestamp(up))").await?;
    wait_for("a rate window of scrapes after the run", TIMEOUT, || {
        let prometheus = &prometheus;
        async move {
            let now = prometheus.single_value("max(timestamp(up))").await?;
            Ok((now >= scraped.map(|t| t + 16.0)).then_some(()))
        }
    })
    .await?;
    let phase = pipelines
        .get(&name)
        .await?
        .status
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .context("the pipeline has no phase")?;

    // Every panel query of the dashboard.
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
        repo_root().join(CHART).join("dashboards/datapipeline.json"),
    )?)?;
    let queries = panel_queries(&dashboard);
    ensure!(queries.len() > 20, "{} panel queries", queries.len());
    let mut report = format!(
        "# The chart's dashboard queries on a real run ({accepted} events, {rejected} rejected rows, {} profiles, {indexed} in the index)\n# Prometheus {}; $namespace={}, $pipeline={name}, $__rate_interval={RATE_INTERVAL}\n\n",
        expected.profiles.len(),
        prometheus_binary.display(),
        namespace.name
    );
    let mut problems = Vec::new();
    for (place, expr) in &queries {
        let query = substituted(expr, &namespace.name, &name);
        let result = prometheus.query(&query).await?;
        report.push_str(&format!(
            "## {place}\n{query}\n{}\n\n",
            result_lines(&result)
        ));
        if result.is_empty() {
            problems.push(format!("{place}: no series for {query}"));
        }
    }
    for (query, want) in &counts {
        let got = prometheus.single_value(query).await?;
        report.push_str(&format!("## count\n{query}\n{got:?} (expected {want})\n\n"));
    }
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard_prometheus/queries.txt");
    std::fs::create_dir_all(artifact.parent().context("artifact dir")?)?;
    std::fs::write(&artifact, &report)?;
    println!(
        "{} panel queries; every query and its result: {}",
        queries.len(),
        artifact.display()
    );
    ensure!(problems.is_empty(), "{}", problems.join("\n"));

    // The values the run fixes, read through the panels' own queries.
    let value = |title: &str, ref_id: &str| {
        let (_, expr) = queries
            .iter()
            .find(|(place, _)| place == &format!("panel {title:?} {ref_id}"))
            .with_context(|| format!("no panel {title:?} {ref_id}"))?;
        Ok::<_, anyhow::Error>(substituted(expr, &namespace.name, &name))
    };
    // The throughput panels read 0 once the run is over; while it went on, they rose.
    for ref_id in ["A", "B"] {
        let expr = value("Events/s: ingested and processed", ref_id)?;
        let peak = prometheus
            .single_value(&format!("max_over_time(({expr})[10m:1s])"))
            .await?;
        println!("events/s {ref_id}: peak {peak:?} during the run");
        ensure!(
            peak.is_some_and(|p| p > 0.0),
            "events/s {ref_id}: peak {peak:?} during the run"
        );
    }
    let phase_series = prometheus.query(&value("Phase", "A")?).await?;
    assert_eq!(label_values(&phase_series, "phase"), [phase]);
    assert_eq!(
        prometheus
            .single_value(&value("Profiles in the index", "A")?)
            .await?,
        Some(indexed as f64)
    );
    let lag = prometheus
        .query(&value("Consumer lag per partition", "A")?)
        .await?;
    assert_eq!(label_values(&lag, "partition"), ["0", "1", "2"]);
    assert_eq!(sample_values(&lag), [0.0, 0.0, 0.0]);
    for (title, ref_id, want) in [
        ("Consumer lag per partition", "B", 0.0),
        ("Runtime replicas: desired vs ready", "A", 1.0),
        (
            "Runtime replicas: desired vs ready",
            "C",
            f64::from(PARTITIONS),
        ),
    ] {
        assert_eq!(
            prometheus.single_value(&value(title, ref_id)?).await?,
            Some(want),
            "{title} {ref_id}"
        );
    }
    let since = prometheus
        .single_value(&value("Since the last checkpoint", "A")?)
        .await?
        .context("no checkpoint age")?;
    ensure!(
        (0.0..TIMEOUT.as_secs_f64()).contains(&since),
        "checkpoint age {since}"
    );
    let failures = prometheus
        .query(&value("Reconcile failures by category", "A")?)
        .await?;
    ensure!(
        label_values(&failures, "category").contains(&"secret_not_found".to_string()),
        "{failures:?}"
    );
    let stages = prometheus.query(&value("Dead letters", "B")?).await?;
    assert_eq!(label_values(&stages, "stage"), ["search"]);
    let reasons = prometheus.query(&value("Autoscaler", "A")?).await?;
    ensure!(label_values(&reasons, "reason").len() == 1, "{reasons:?}");
    ingest.ensure_running()?;
    process.ensure_running()?;
    Ok(())
}

// ------------------------------------------------------------------ pure helpers

/// (where, PromQL) of every panel target of the dashboard, rows' panels included.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let top = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let nested = top
        .iter()
        .flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default());
    top.iter()
        .cloned()
        .chain(nested)
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |t| {
                    let expr = t["expr"].as_str()?.to_string();
                    let ref_id = t["refId"].as_str().unwrap_or("?");
                    Some((format!("panel {title:?} {ref_id}"), expr))
                })
        })
        .collect()
}

/// A dashboard query as Grafana sends it for this run's namespace and pipeline.
fn substituted(expr: &str, namespace: &str, pipeline: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", namespace)
        .replace("$pipeline", pipeline)
}

/// Percent-encoding of a query parameter (RFC 3986 unreserved characters kept).
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The values of `label` in an instant-query result, sorted.
fn label_values(result: &[Value], label: &str) -> Vec<String> {
    let mut values: Vec<String> = result
        .iter()
        .filter_map(|s| s["metric"][label].as_str().map(String::from))
        .collect();
    values.sort();
    values
}

/// The sample values of an instant-query result, in the result's order.
fn sample_values(result: &[Value]) -> Vec<f64> {
    result
        .iter()
        .filter_map(|s| s["value"][1].as_str()?.parse().ok())
        .collect()
}

/// An instant-query result as lines of `{labels} value`.
fn result_lines(result: &[Value]) -> String {
    if result.is_empty() {
        return "(no series)".into();
    }
    result
        .iter()
        .map(|s| format!("{} {}", s["metric"], s["value"][1].as_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The scrape targets: each runtime role's (port, pod labels, pod name) and the operator.
struct ScrapeTargets {
    namespace: String,
    ingest: (u16, BTreeMap<String, String>, String),
    process: (u16, BTreeMap<String, String>, String),
    operator_port: u16,
}

/// `__meta_kubernetes_pod_label_<name>` of a pod label, as Kubernetes discovery names it.
fn meta_label(label: &str) -> String {
    let sanitized: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("__meta_kubernetes_pod_label_{sanitized}")
}

/// A Prometheus configuration scraping the targets every second, labelled as the Prometheus
/// Operator labels them for the chart's PodMonitor (namespace, pod, and the monitor's own
/// relabelings: pipeline from the instance label, role from the component label) and
/// ServiceMonitor (honorLabels: the per-pipeline series keep their own namespace).
fn scrape_config(t: &ScrapeTargets) -> Value {
    let runtime_target = |(port, labels, pod): &(u16, BTreeMap<String, String>, String)| {
        let mut meta: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (meta_label(k), v.clone()))
            .collect();
        meta.insert("__meta_kubernetes_namespace".into(), t.namespace.clone());
        meta.insert("__meta_kubernetes_pod_name".into(), pod.clone());
        json!({"targets": [format!("127.0.0.1:{port}")], "labels": meta})
    };
    let keep =
        |source: &str, target: &str| json!({"source_labels": [source], "target_label": target});
    json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": format!("{OPERATOR_NAMESPACE}/datapipeline-operator-runtime"),
                "metrics_path": "/metrics",
                "static_configs": [runtime_target(&t.ingest), runtime_target(&t.process)],
                "relabel_configs": [
                    keep("__meta_kubernetes_namespace", "namespace"),
                    keep("__meta_kubernetes_pod_name", "pod"),
                    keep("__meta_kubernetes_pod_label_app_kubernetes_io_instance", "pipeline"),
                    keep("__meta_kubernetes_pod_label_app_kubernetes_io_component", "role"),
                ],
            },
            {
                "job_name": "datapipeline-operator",
                "metrics_path": "/metrics",
                "honor_labels": true,
                "static_configs": [{
                    "targets": [format!("127.0.0.1:{}", t.operator_port)],
                    "labels": {"namespace": OPERATOR_NAMESPACE, "pod": "datapipeline-operator-0"},
                }],
            },
        ],
    })
}

// ------------------------------------------------------------------ setup

/// The generated file with the refused users' events appended.
fn fixture(dir: &Path) -> Result<PathBuf> {
    use std::io::Write;
    let csv = write_fixture(dir, EVENTS, 41)?;
    let mut file = std::fs::OpenOptions::new().append(true).open(&csv)?;
    for (i, user) in REFUSED_USERS.iter().enumerate() {
        writeln!(
            file,
            "2019-11-30 11:00:0{i} UTC,view,{},,,,3.00,{user},sr{i}",
            2000 + i
        )?;
    }
    Ok(csv)
}

/// The prometheus binary, built into the cache by `e2e/promtool.sh install-server` if
/// missing.
fn prometheus_server() -> Result<PathBuf> {
    let output = Command::new(repo_root().join("e2e/promtool.sh"))
        .arg("install-server")
        .output()
        .context("running e2e/promtool.sh install-server")?;
    ensure!(
        output.status.success(),
        "e2e/promtool.sh install-server failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    Ok(stdout.trim().lines().last().unwrap_or_default().into())
}

/// The profiles index, created before the runtime does with the runtime's mapping but
/// user_id a 32-bit integer: profiles of users above 2^31 are refused for good.
async fn create_refusing_index(opensearch: &str, index: &str) -> Result<()> {
    use elasticsearch::http::headers::HeaderMap;
    use elasticsearch::http::transport::Transport;
    use elasticsearch::http::Method;
    let mut mapping = pipeline_runtime::search::index_mapping();
    mapping["mappings"]["properties"]["user_id"] = json!({"type": "integer"});
    let response = Transport::single_node(opensearch)?
        .send::<String, ()>(
            Method::Put,
            &format!("/{index}"),
            HeaderMap::new(),
            None,
            Some(mapping.to_string()),
            None,
        )
        .await?;
    let status = response.status_code().as_u16();
    ensure!(status == 200, "creating {index}: HTTP {status}");
    Ok(())
}

fn run_config(namespace: &str) -> RunConfig {
    RunConfig {
        settings: OperatorSettings {
            runtime_image: k8s::TEST_RUNTIME_IMAGE.into(),
            operator_pods: None,
        },
        namespaces: vec![namespace.to_string()],
        resync: Duration::from_secs(3600),
        reporter: Reporter {
            controller: "datapipeline-operator".into(),
            instance: Some("e2e-dashboard".into()),
        },
        observe_interval: Duration::from_secs(1),
    }
}

fn pipeline_json(name: &str, endpoints: &Endpoints) -> Value {
    json!({
        "apiVersion": "datapipeline.io/v1alpha1",
        "kind": "DataPipeline",
        "metadata": {"name": name},
        "spec": {
            "source": {"landingPrefix": "landing/"},
            "kafka": {"external": {"bootstrapServers": endpoints.kafka_bootstrap},
                      "partitions": PARTITIONS},
            "objectStore": {"external": {"endpoint": endpoints.s3_endpoint,
                                         "region": endpoints.s3_region},
                            "bucket": name},
            "search": {"external": {"url": endpoints.opensearch_url, "engine": "opensearch"}},
            "runtime": {
                "autoscaling": {"minReplicas": 1, "maxReplicas": PARTITIONS, "lagPerReplica": 1_000_000},
                "checkpointIntervalSeconds": 1
            }
        }
    })
}

/// The run's pipeline: external servers, autoscaling on.
fn pipeline(name: &str, endpoints: &Endpoints) -> Result<DataPipeline> {
    Ok(serde_json::from_value(pipeline_json(name, endpoints))?)
}

/// A pipeline whose object store names a Secret that does not exist: its reconciles are
/// blocked (secret_not_found).
fn blocked_pipeline(name: &str, endpoints: &Endpoints) -> Result<DataPipeline> {
    let mut spec = pipeline_json(name, endpoints);
    spec["spec"]["objectStore"]["external"]["secretRef"] =
        json!({"name": format!("{name}-missing")});
    Ok(serde_json::from_value(spec)?)
}

/// The pod-template labels of the pipeline's runtime Deployments the controller made (the
/// PodMonitor selects pods by them), by Deployment: `<name>-ingest` and `<name>-runtime`.
struct PodLabels {
    ingest: BTreeMap<String, String>,
    runtime: BTreeMap<String, String>,
}

async fn runtime_pod_labels(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<PodLabels> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    // The chart's PodMonitor selector.
    let selector = ListParams::default().labels(
        "app.kubernetes.io/name=pipeline-runtime,app.kubernetes.io/managed-by=datapipeline-operator",
    );
    k8s::poll_until(
        "the controller's ingest and runtime Deployments",
        TIMEOUT,
        || {
            let (deployments, selector) = (&deployments, &selector);
            async move {
                let listed = deployments.list(selector).await?;
                let labels_of = |suffix: &str| {
                    listed
                        .items
                        .iter()
                        .find(|d| d.metadata.name.as_deref() == Some(&format!("{name}-{suffix}")))
                        .and_then(|d| d.spec.as_ref()?.template.metadata.as_ref()?.labels.clone())
                };
                Ok(labels_of("ingest")
                    .zip(labels_of("runtime"))
                    .map(|(ingest, runtime)| PodLabels { ingest, runtime }))
            }
        },
    )
    .await
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ------------------------------------------------------------------ child processes

/// A `pipeline-runtime` child serving /metrics on its own port; killed when dropped.
struct Role {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Role {
    fn start(binary: &Path, env: &[(String, String)], log: PathBuf, args: &[&str]) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(pipeline_config::env::HTTP_PORT, port.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting pipeline-runtime")?;
        Ok(Self { child, log, port })
    }

    fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("exited with {status}; log: {}", self.log.display());
        }
        Ok(())
    }

    /// Waits until the child's /readyz answers 200.
    async fn wait_until_ready(&mut self) -> Result<()> {
        wait_for("/readyz to answer 200", TIMEOUT, || {
            let running = self.ensure_running();
            let port = self.port;
            async move {
                running?;
                Ok(matches!(http_get(port, "/readyz").await, Ok((200, _))).then_some(()))
            }
        })
        .await
    }

    /// Waits until the child's unlabelled sample `name` reaches `at_least`.
    async fn wait_for_metric(&mut self, name: &str, at_least: f64) -> Result<()> {
        wait_for(&format!("{name} >= {at_least}"), TIMEOUT, || {
            let running = self.ensure_running();
            let port = self.port;
            async move {
                running?;
                let Ok((200, text)) = http_get(port, "/metrics").await else {
                    return Ok(None);
                };
                let value = e2e::runtime::metric_value(&text, name).unwrap_or(0.0);
                Ok((value >= at_least).then_some(()))
            }
        })
        .await
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Prometheus server on 127.0.0.1, its storage in a temp dir; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    fn start(binary: &Path, dir: &Path, config: &Value) -> Result<Self> {
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, serde_yaml::to_string(config)?)?;
        let port = free_port()?;
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting prometheus")?;
        Ok(Self { child, port, log })
    }

    /// GET `path` on the server (HTTP/1.0: the body is never chunked).
    async fn get(&self, path: &str) -> Result<Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("malformed HTTP response")?;
        let body: Value = serde_json::from_str(body)
            .with_context(|| format!("{head}\n{body}\n(prometheus log: {})", self.log.display()))?;
        ensure!(body["status"] == "success", "GET {path}: {body}");
        Ok(body["data"].clone())
    }

    /// The instant vector of `query` now (fails on anything but a vector).
    async fn query(&self, query: &str) -> Result<Vec<Value>> {
        let data = self
            .get(&format!("/api/v1/query?query={}", url_encode(query)))
            .await?;
        ensure!(data["resultType"] == "vector", "{query}: {data}");
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The value of a query answering one series; None for no series (or the server not
    /// up yet). Fails on several.
    async fn single_value(&self, query: &str) -> Result<Option<f64>> {
        let Ok(result) = self.query(query).await else {
            return Ok(None);
        };
        ensure!(result.len() <= 1, "{query}: {result:?}");
        Ok(sample_values(&result).first().copied())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn queries_are_substituted_and_encoded_as_grafana_sends_them() {
    assert_eq!(
        substituted(
            r#"sum(rate(a_total{namespace="$namespace",pipeline="$pipeline"}[$__rate_interval]))"#,
            "ns",
            "p"
        ),
        r#"sum(rate(a_total{namespace="ns",pipeline="p"}[15s]))"#
    );
    assert_eq!(
        url_encode(r#"a{b="c d"}[1s]"#),
        "a%7Bb%3D%22c%20d%22%7D%5B1s%5D"
    );
    assert_eq!(
        meta_label("app.kubernetes.io/instance"),
        "__meta_kubernetes_pod_label_app_kubernetes_io_instance"
    );
    let dashboard = json!({"panels": [
        {"type": "row", "title": "r", "panels": [{"title": "in", "targets": [{"refId": "A", "expr": "x"}]}]},
        {"title": "top", "targets": [{"refId": "A", "expr": "y"}, {"refId": "B"}]},
    ]});
    assert_eq!(
        panel_queries(&dashboard),
        [
            ("panel \"top\" A".to_string(), "y".to_string()),
            ("panel \"in\" A".to_string(), "x".to_string())
        ]
    );
}
