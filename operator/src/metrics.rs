//! The operator's Prometheus metrics (reconciles by result, their duration, failures by a
//! fixed category; per pipeline, what its status says: phase, runtime replicas desired and
//! ready, the autoscaler's reason, events/s, lag, dead letters, profiles; whether this
//! replica leads) and the HTTP server exposing `/metrics` and `/healthz`. Metric labels
//! come from fixed category strings and the pipeline's namespace and name, never from error
//! messages or free text.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc, Mutex},
};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::{
    controller::autoscale::decision::ScalingReason,
    crd::{DataPipelineStatus, Phase},
};

/// How a reconcile ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every child applied, status written if it changed.
    Applied,
    /// Measured only (nothing changed since the last apply), status written if it changed.
    Observed,
    /// Stopped before applying by a problem the user must fix (category of the problem).
    Blocked(&'static str),
    /// Failed with an error and will be retried (category of the error).
    Failed(&'static str),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

/// One pipeline: the labels of its gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PipelineLabels {
    namespace: String,
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    pipeline: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    namespace: String,
    pipeline: String,
    reason: &'static str,
}

/// Every phase, in the order of `kubectl explain`: `pipeline_phase` has one series per
/// phase and pipeline, 1 for the current one, 0 for the others.
const PHASES: [Phase; 6] = [
    Phase::Pending,
    Phase::Provisioning,
    Phase::Running,
    Phase::Degraded,
    Phase::Paused,
    Phase::Failed,
];

/// What a pipeline's status says, as its gauges show it. Pure: [`PipelineSample::of`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelineSample {
    pub phase: Option<Phase>,
    /// Processing pods the runtime Deployment should have, and those ready.
    pub replicas: Option<(i32, i32)>,
    /// The autoscaler's reason, as a fixed category (`None`: autoscaling is off).
    pub scaling: Option<ScalingReason>,
    /// `None` until the operator measured the pipeline's topic.
    pub throughput: Option<ThroughputSample>,
}

/// The status's `throughput` block, as gauges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThroughputSample {
    pub ingested_per_second: f64,
    pub processed_per_second: f64,
    pub consumer_lag: i64,
    pub dead_letters: i64,
    pub profiles: i64,
}

impl PipelineSample {
    pub fn of(status: &DataPipelineStatus) -> Self {
        let runtime = status.components.as_ref().map(|c| &c.runtime);
        Self {
            phase: status.phase,
            replicas: runtime.map(|r| {
                (
                    r.desired_replicas.unwrap_or(0),
                    r.ready_replicas.or(status.ready_replicas).unwrap_or(0),
                )
            }),
            scaling: status
                .autoscaler
                .as_ref()
                .map(|a| ScalingReason::of(&a.reason)),
            throughput: status.throughput.as_ref().map(|t| ThroughputSample {
                ingested_per_second: t.ingested_per_second,
                processed_per_second: t.processed_per_second,
                consumer_lag: t.consumer_lag,
                dead_letters: t.dead_letters,
                profiles: t.profiles,
            }),
        }
    }
}

/// The per-pipeline gauges, each labelled by namespace and pipeline.
#[derive(Default)]
struct PipelineGauges {
    phase: Family<PhaseLabels, Gauge>,
    desired_replicas: Family<PipelineLabels, Gauge>,
    ready_replicas: Family<PipelineLabels, Gauge>,
    autoscaler_reason: Family<ReasonLabels, Gauge>,
    ingested_per_second: Family<PipelineLabels, Gauge<f64, AtomicU64>>,
    processed_per_second: Family<PipelineLabels, Gauge<f64, AtomicU64>>,
    consumer_lag: Family<PipelineLabels, Gauge>,
    dead_letters: Family<PipelineLabels, Gauge>,
    profiles: Family<PipelineLabels, Gauge>,
    /// The pipelines that have gauges, so that a deleted one's can be removed.
    known: Mutex<BTreeSet<PipelineLabels>>,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    failures: Family<CategoryLabels, Counter>,
    duration: Histogram,
    pipelines: PipelineGauges,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("datapipeline_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let failures = Family::<CategoryLabels, Counter>::default();
        // 5 ms .. ~20 s
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        registry.register(
            "reconciles",
            "Reconciles of DataPipelines by result (applied, blocked, failed)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that were blocked or failed, by category",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of DataPipeline reconciles",
            duration.clone(),
        );
        let pipelines = PipelineGauges::default();
        pipelines.register(&mut registry);
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica reconciles (it holds the leader-election Lease, or runs \
             without leader election), 0 while it waits for the Lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            pipelines,
            leader,
        }
    }

    /// Sets `datapipeline_operator_leader`: whether this replica reconciles.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn record(&self, outcome: Outcome, seconds: f64) {
        self.duration.observe(seconds);
        let result = match outcome {
            Outcome::Applied => "applied",
            Outcome::Observed => "observed",
            Outcome::Blocked(category) => {
                self.failures
                    .get_or_create(&CategoryLabels { category })
                    .inc();
                "blocked"
            }
            Outcome::Failed(category) => {
                self.failures
                    .get_or_create(&CategoryLabels { category })
                    .inc();
                "failed"
            }
        };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Sets the pipeline's gauges from its new status. The autoscaler's reason has one
    /// series (its current category): the other categories' series are removed, and so
    /// are the throughput gauges while the pipeline is not measured.
    pub fn observe_pipeline(&self, namespace: &str, pipeline: &str, sample: &PipelineSample) {
        let g = &self.pipelines;
        let labels = PipelineLabels {
            namespace: namespace.to_string(),
            pipeline: pipeline.to_string(),
        };
        g.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(labels.clone());
        for phase in PHASES {
            let value = i64::from(sample.phase == Some(phase));
            g.phase
                .get_or_create(&g.phase_labels(&labels, phase))
                .set(value);
        }
        match sample.replicas {
            Some((desired, ready)) => {
                g.desired_replicas
                    .get_or_create(&labels)
                    .set(i64::from(desired));
                g.ready_replicas
                    .get_or_create(&labels)
                    .set(i64::from(ready));
            }
            None => {
                g.desired_replicas.remove(&labels);
                g.ready_replicas.remove(&labels);
            }
        }
        for reason in ScalingReason::ALL {
            let series = g.reason_labels(&labels, reason);
            if sample.scaling == Some(reason) {
                g.autoscaler_reason.get_or_create(&series).set(1);
            } else {
                g.autoscaler_reason.remove(&series);
            }
        }
        match &sample.throughput {
            Some(t) => {
                g.ingested_per_second
                    .get_or_create(&labels)
                    .set(t.ingested_per_second);
                g.processed_per_second
                    .get_or_create(&labels)
                    .set(t.processed_per_second);
                g.consumer_lag.get_or_create(&labels).set(t.consumer_lag);
                g.dead_letters.get_or_create(&labels).set(t.dead_letters);
                g.profiles.get_or_create(&labels).set(t.profiles);
            }
            None => g.remove_throughput(&labels),
        }
    }

    /// Removes every gauge of the pipeline (it was deleted).
    pub fn forget_pipeline(&self, namespace: &str, pipeline: &str) {
        let labels = PipelineLabels {
            namespace: namespace.to_string(),
            pipeline: pipeline.to_string(),
        };
        self.pipelines.remove(&labels);
    }

    /// Removes the gauges of every pipeline for which `exists(namespace, name)` is false.
    pub fn retain_pipelines(&self, exists: impl Fn(&str, &str) -> bool) {
        let known: Vec<PipelineLabels> = self
            .pipelines
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| !exists(&l.namespace, &l.pipeline))
            .cloned()
            .collect();
        for labels in known {
            self.pipelines.remove(&labels);
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl PipelineGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "pipeline_phase",
            "Phase of each DataPipeline: 1 for the current phase, 0 for the others",
            self.phase.clone(),
        );
        registry.register(
            "pipeline_desired_replicas",
            "Runtime processing pods the pipeline's Deployment should have",
            self.desired_replicas.clone(),
        );
        registry.register(
            "pipeline_ready_replicas",
            "Runtime processing pods of the pipeline that are ready",
            self.ready_replicas.clone(),
        );
        registry.register(
            "pipeline_autoscaler_reason",
            "Why the autoscaler wants the pipeline's replicas, as a category (1; status.autoscaler.reason has the words)",
            self.autoscaler_reason.clone(),
        );
        registry.register(
            "pipeline_ingested_events_per_second",
            "Events published to the pipeline's events topic per second, measured from Kafka",
            self.ingested_per_second.clone(),
        );
        registry.register(
            "pipeline_processed_events_per_second",
            "Events processed (offsets committed) per second, measured from Kafka",
            self.processed_per_second.clone(),
        );
        registry.register(
            "pipeline_consumer_lag",
            "Events in the pipeline's events topic not yet processed (sum over partitions)",
            self.consumer_lag.clone(),
        );
        registry.register(
            "pipeline_dead_letters",
            "Records in the pipeline's dead-letter topic",
            self.dead_letters.clone(),
        );
        registry.register(
            "pipeline_profiles",
            "Customer profiles in the pipeline's search index",
            self.profiles.clone(),
        );
    }

    fn phase_labels(&self, labels: &PipelineLabels, phase: Phase) -> PhaseLabels {
        PhaseLabels {
            namespace: labels.namespace.clone(),
            pipeline: labels.pipeline.clone(),
            phase: phase.as_str(),
        }
    }

    fn reason_labels(&self, labels: &PipelineLabels, reason: ScalingReason) -> ReasonLabels {
        ReasonLabels {
            namespace: labels.namespace.clone(),
            pipeline: labels.pipeline.clone(),
            reason: reason.as_str(),
        }
    }

    fn remove_throughput(&self, labels: &PipelineLabels) {
        self.ingested_per_second.remove(labels);
        self.processed_per_second.remove(labels);
        self.consumer_lag.remove(labels);
        self.dead_letters.remove(labels);
        self.profiles.remove(labels);
    }

    fn remove(&self, labels: &PipelineLabels) {
        for phase in PHASES {
            self.phase.remove(&self.phase_labels(labels, phase));
        }
        for reason in ScalingReason::ALL {
            self.autoscaler_reason
                .remove(&self.reason_labels(labels, reason));
        }
        self.desired_replicas.remove(labels);
        self.ready_replicas.remove(labels);
        self.remove_throughput(labels);
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(labels);
    }
}

async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .with_state(metrics)
}

/// Serves `/metrics` and `/healthz` until the process ends.
pub async fn serve(address: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, router(metrics)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_by_fixed_labels() {
        let metrics = Metrics::new();
        metrics.record(Outcome::Applied, 0.01);
        metrics.record(Outcome::Applied, 0.02);
        metrics.record(Outcome::Blocked("secret_not_found"), 0.001);
        metrics.record(Outcome::Failed("apply"), 0.5);
        let text = metrics.render();
        for line in [
            "datapipeline_operator_reconciles_total{result=\"applied\"} 2",
            "datapipeline_operator_reconciles_total{result=\"blocked\"} 1",
            "datapipeline_operator_reconciles_total{result=\"failed\"} 1",
            "datapipeline_operator_reconcile_failures_total{category=\"secret_not_found\"} 1",
            "datapipeline_operator_reconcile_failures_total{category=\"apply\"} 1",
            "datapipeline_operator_reconcile_duration_seconds_count 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    fn status(phase: Phase, reason: &str) -> DataPipelineStatus {
        use crate::crd::{AutoscalerStatus, ComponentHealth, ComponentsStatus, ThroughputStatus};
        DataPipelineStatus {
            phase: Some(phase),
            components: Some(ComponentsStatus {
                runtime: ComponentHealth {
                    ready_replicas: Some(2),
                    desired_replicas: Some(3),
                    ..ComponentHealth::default()
                },
                ..ComponentsStatus::default()
            }),
            autoscaler: Some(AutoscalerStatus {
                desired_replicas: 3,
                reason: reason.to_string(),
                ..AutoscalerStatus::default()
            }),
            throughput: Some(ThroughputStatus {
                ingested_per_second: 1250.5,
                processed_per_second: 980.25,
                consumer_lag: 4200,
                dead_letters: 7,
                profiles: 401390,
                ..ThroughputStatus::default()
            }),
            ready_replicas: Some(2),
            ..DataPipelineStatus::default()
        }
    }

    /// The lines of `text` that start with `prefix`, sorted (a family's series come in
    /// no fixed order).
    fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        let mut lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn pipeline_gauges_follow_the_status() {
        let metrics = Metrics::new();
        let scaling_up =
            "lag 4200 at 1000 per replica asks for 5, limited to maxReplicas 3: scale up at 3";
        metrics.observe_pipeline(
            "shop",
            "clicks",
            &PipelineSample::of(&status(Phase::Degraded, scaling_up)),
        );
        let text = metrics.render();
        assert_eq!(
            lines_of(&text, "datapipeline_operator_pipeline_"),
            [
                "datapipeline_operator_pipeline_autoscaler_reason{namespace=\"shop\",pipeline=\"clicks\",reason=\"max_replicas\"} 1",
                "datapipeline_operator_pipeline_consumer_lag{namespace=\"shop\",pipeline=\"clicks\"} 4200",
                "datapipeline_operator_pipeline_dead_letters{namespace=\"shop\",pipeline=\"clicks\"} 7",
                "datapipeline_operator_pipeline_desired_replicas{namespace=\"shop\",pipeline=\"clicks\"} 3",
                "datapipeline_operator_pipeline_ingested_events_per_second{namespace=\"shop\",pipeline=\"clicks\"} 1250.5",
                "datapipeline_operator_pipeline_phase{namespace=\"shop\",pipeline=\"clicks\",phase=\"Degraded\"} 1",
                "datapipeline_operator_pipeline_phase{namespace=\"shop\",pipeline=\"clicks\",phase=\"Failed\"} 0",
                "datapipeline_operator_pipeline_phase{namespace=\"shop\",pipeline=\"clicks\",phase=\"Paused\"} 0",
                "datapipeline_operator_pipeline_phase{namespace=\"shop\",pipeline=\"clicks\",phase=\"Pending\"} 0",
                "datapipeline_operator_pipeline_phase{namespace=\"shop\",pipeline=\"clicks\",phase=\"Provisioning\"} 0",
                "datapipeline_operator_pipeline_phase{namespace=\"shop\",pipeline=\"clicks\",phase=\"Running\"} 0",
                "datapipeline_operator_pipeline_processed_events_per_second{namespace=\"shop\",pipeline=\"clicks\"} 980.25",
                "datapipeline_operator_pipeline_profiles{namespace=\"shop\",pipeline=\"clicks\"} 401390",
                "datapipeline_operator_pipeline_ready_replicas{namespace=\"shop\",pipeline=\"clicks\"} 2",
            ]
        );

        // A new reason replaces the old series; an unmeasured pipeline has no throughput.
        let mut steady = status(
            Phase::Running,
            "lag 0 at 1000 per replica asks for 0, raised to minReplicas 1: steady at 1",
        );
        steady.throughput = None;
        metrics.observe_pipeline("shop", "clicks", &PipelineSample::of(&steady));
        let text = metrics.render();
        assert_eq!(
            lines_of(&text, "datapipeline_operator_pipeline_autoscaler_reason"),
            ["datapipeline_operator_pipeline_autoscaler_reason{namespace=\"shop\",pipeline=\"clicks\",reason=\"steady\"} 1"]
        );
        assert_eq!(
            lines_of(&text, "datapipeline_operator_pipeline_phase{namespace=\"shop\",pipeline=\"clicks\",phase=\"Running\"}"),
            ["datapipeline_operator_pipeline_phase{namespace=\"shop\",pipeline=\"clicks\",phase=\"Running\"} 1"]
        );
        assert_eq!(
            lines_of(&text, "datapipeline_operator_pipeline_consumer_lag{"),
            Vec::<&str>::new()
        );

        // A deleted pipeline leaves no series; the others stay.
        metrics.observe_pipeline("shop", "other", &PipelineSample::of(&steady));
        metrics.retain_pipelines(|namespace, name| (namespace, name) != ("shop", "clicks"));
        let text = metrics.render();
        assert_eq!(
            lines_of(&text, "datapipeline_operator_pipeline_").len(),
            9,
            "{text}"
        );
        assert!(!text.contains("pipeline=\"clicks\""), "{text}");
        metrics.forget_pipeline("shop", "other");
        assert_eq!(
            lines_of(&metrics.render(), "datapipeline_operator_pipeline_"),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn leader_gauge_is_zero_until_set() {
        let metrics = Metrics::new();
        let leader =
            |m: &Metrics| lines_of(&m.render(), "datapipeline_operator_leader ").join("\n");
        assert_eq!(leader(&metrics), "datapipeline_operator_leader 0");
        metrics.set_leader(true);
        assert_eq!(leader(&metrics), "datapipeline_operator_leader 1");
        metrics.set_leader(false);
        assert_eq!(leader(&metrics), "datapipeline_operator_leader 0");
    }

    #[tokio::test]
    async fn http_endpoints() {
        let metrics = Arc::new(Metrics::new());
        metrics.record(Outcome::Applied, 0.01);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move { axum::serve(listener, router(metrics)).await });
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response
        };
        let health = get("/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.ends_with("ok"), "{health}");
        let text = get("/metrics").await;
        assert!(
            text.contains("datapipeline_operator_reconciles_total{result=\"applied\"} 1"),
            "{text}"
        );
        server.abort();
    }
}
