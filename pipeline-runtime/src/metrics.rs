//! The runtime's Prometheus metrics (one registry per process) and the readiness state the
//! probes read (connected, and why checkpoints are failing if they are). Labels come from
//! fixed enums, never from error text; the failure reason is only shown by `/readyz`. No
//! I/O.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Which sink an error happened in.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Sink {
    Kafka,
    ObjectStore,
    Search,
}

/// What kind of sink error: `rejected` documents will never be written (the search index
/// refused them for good; each is dead-lettered, see [`DeadLetterStage`]); `retried` attempts were throttled or failed transiently and are being retried;
/// `failed` operations gave up after their retries.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SinkErrorKind {
    Rejected,
    Retried,
    Failed,
}

impl Sink {
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Kafka => "kafka",
            Sink::ObjectStore => "object_store",
            Sink::Search => "search",
        }
    }
}

impl SinkErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkErrorKind::Rejected => "rejected",
            SinkErrorKind::Retried => "retried",
            SinkErrorKind::Failed => "failed",
        }
    }
}

impl EncodeLabelValue for Sink {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for SinkErrorKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Which stage wrote a record to the dead-letter topic `<pipeline>-events-dlq`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DeadLetterStage {
    /// A CSV row the ingest rejected (one record per row).
    Row,
    /// A landing object the ingest cannot read as CSV at all (one record per object).
    LandingFile,
    /// A profile the search index refused for good (one record per document).
    Search,
}

impl DeadLetterStage {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStage::Row => "row",
            DeadLetterStage::LandingFile => "landing_file",
            DeadLetterStage::Search => "search",
        }
    }
}

impl EncodeLabelValue for DeadLetterStage {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub stage: DeadLetterStage,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkErrorLabels {
    pub sink: Sink,
    pub kind: SinkErrorKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub partition: i64,
}

/// Every metric of the runtime. Cheap to clone (all handles are shared).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Rows read (ingest) or events consumed (process).
    pub events_in: Counter,
    /// Events published (ingest) or stored in the lake at a checkpoint (process).
    pub events_out: Counter,
    /// Rows dead-lettered by ingest; in the process role, messages skipped because they are
    /// not an event its profile can take (logged, not dead-lettered).
    pub events_rejected: Counter,
    /// Records written to the dead-letter topic, by stage.
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    /// Events skipped because the restored state already holds them (replay).
    pub events_replayed: Counter,
    /// Records the topic's retention deleted after the state's offset before they were
    /// read (found when a partition is assigned).
    pub events_lost_to_retention: Counter,
    pub checkpoint_duration: Histogram,
    pub checkpoints: Counter,
    /// Checkpoint attempts that failed (each failed checkpoint is retried until it succeeds).
    pub checkpoint_failures: Counter,
    /// Checkpoints that wrote the profile snapshot and a base (the rest are deltas).
    pub full_checkpoints: Counter,
    /// Unix seconds of the last completed checkpoint (0: none yet).
    pub last_checkpoint: Gauge<i64, AtomicI64>,
    pub lag: Family<PartitionLabels, Gauge>,
    pub assigned_partitions: Gauge,
    pub sink_errors: Family<SinkErrorLabels, Counter>,
    /// Profiles written to the search index.
    pub profiles_indexed: Counter,
    health: Arc<Health>,
    registry: Arc<Registry>,
}

#[derive(Debug, Default)]
struct Health {
    ready: AtomicBool,
    /// Why checkpoints are failing (a sink refuses or is unreachable) and being retried;
    /// `None` while they succeed.
    sink_failure: Mutex<Option<String>>,
    /// Bumped on every loop iteration of the role; a stuck role stops moving it.
    heartbeat: AtomicU64,
}

impl Metrics {
    pub fn new(role: &str) -> Self {
        let mut registry = Registry::with_prefix("datapipeline");
        let events_in = Counter::default();
        let events_out = Counter::default();
        let events_rejected = Counter::default();
        let events_replayed = Counter::default();
        let events_lost_to_retention = Counter::default();
        let dead_letters = Family::<DeadLetterLabels, Counter>::default();
        let checkpoint_duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let checkpoints = Counter::default();
        let checkpoint_failures = Counter::default();
        let full_checkpoints = Counter::default();
        let last_checkpoint = Gauge::<i64, AtomicI64>::default();
        let lag = Family::<PartitionLabels, Gauge>::default();
        let assigned_partitions = Gauge::default();
        let sink_errors = Family::<SinkErrorLabels, Counter>::default();
        let profiles_indexed = Counter::default();
        let r = registry.sub_registry_with_prefix(role);
        r.register(
            "events_in",
            "Rows read (ingest) or events consumed (process)",
            events_in.clone(),
        );
        r.register(
            "events_out",
            "Events published (ingest) or written to the lake (process)",
            events_out.clone(),
        );
        r.register(
            "events_rejected",
            "Rows sent to the dead-letter topic",
            events_rejected.clone(),
        );
        r.register(
            "dead_letters",
            "Records written to the dead-letter topic, by stage (row: a CSV row ingest rejected; landing_file: a landing object that is not a CSV file ingest reads; search: a profile the search index refused for good)",
            dead_letters.clone(),
        );
        r.register(
            "events_replayed",
            "Events skipped because the restored state already counts them",
            events_replayed.clone(),
        );
        r.register(
            "events_lost_to_retention",
            "Records the topic's retention deleted before they were read (found on assignment)",
            events_lost_to_retention.clone(),
        );
        r.register(
            "checkpoint_duration_seconds",
            "Duration of a checkpoint (lake, index, snapshot, commit)",
            checkpoint_duration.clone(),
        );
        r.register("checkpoints", "Completed checkpoints", checkpoints.clone());
        r.register(
            "checkpoint_failures",
            "Checkpoint attempts that failed; the checkpoint is retried until it succeeds",
            checkpoint_failures.clone(),
        );
        r.register(
            "full_checkpoints",
            "Completed checkpoints that wrote the profile snapshot and a base state",
            full_checkpoints.clone(),
        );
        r.register(
            "last_checkpoint_timestamp_seconds",
            "Unix time of the last completed checkpoint",
            last_checkpoint.clone(),
        );
        r.register(
            "consumer_lag",
            "Log end offset minus committed offset, per partition",
            lag.clone(),
        );
        r.register(
            "assigned_partitions",
            "Partitions assigned to this member",
            assigned_partitions.clone(),
        );
        r.register(
            "sink_errors",
            "Sink errors by sink and kind (rejected, retried, failed)",
            sink_errors.clone(),
        );
        r.register(
            "profiles_indexed",
            "Profiles written to the search index",
            profiles_indexed.clone(),
        );
        Self {
            events_in,
            events_out,
            events_rejected,
            dead_letters,
            events_replayed,
            events_lost_to_retention,
            checkpoint_duration,
            checkpoints,
            checkpoint_failures,
            full_checkpoints,
            last_checkpoint,
            lag,
            assigned_partitions,
            sink_errors,
            profiles_indexed,
            health: Arc::new(Health::default()),
            registry: Arc::new(registry),
        }
    }

    pub fn sink_error(&self, sink: Sink, kind: SinkErrorKind, count: u64) {
        self.sink_errors
            .get_or_create(&SinkErrorLabels { sink, kind })
            .inc_by(count);
    }

    pub fn dead_letter(&self, stage: DeadLetterStage, count: u64) {
        self.dead_letters
            .get_or_create(&DeadLetterLabels { stage })
            .inc_by(count);
    }

    pub fn set_ready(&self, ready: bool) {
        self.health.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.health.ready.load(Ordering::Relaxed)
    }

    /// Set (to the failure of one of them) while at least one checkpoint is failing and
    /// retried, `None` once none is; `/readyz` then answers 503 with the reason, so the pod
    /// turns unready and the operator reports the pipeline Degraded.
    pub fn set_sinks_failing(&self, failure: Option<String>) {
        let mut current = match self.health.sink_failure.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = failure;
    }

    /// Why checkpoints are failing, if they are.
    pub fn sinks_failing(&self) -> Option<String> {
        match self.health.sink_failure.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn beat(&self) {
        self.health.heartbeat.fetch_add(1, Ordering::Relaxed);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_fixed_labels() {
        let m = Metrics::new("process");
        m.events_in.inc_by(3);
        m.sink_error(Sink::Search, SinkErrorKind::Rejected, 2);
        m.dead_letter(DeadLetterStage::Search, 2);
        m.dead_letter(DeadLetterStage::LandingFile, 1);
        m.lag
            .get_or_create(&PartitionLabels { partition: 4 })
            .set(17);
        let text = m.encode();
        assert!(
            text.contains("datapipeline_process_events_in_total 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "datapipeline_process_sink_errors_total{sink=\"search\",kind=\"rejected\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("datapipeline_process_consumer_lag{partition=\"4\"} 17"),
            "{text}"
        );
        assert!(
            text.contains("datapipeline_process_dead_letters_total{stage=\"search\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("datapipeline_process_dead_letters_total{stage=\"landing_file\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn sink_failure_reason() {
        let m = Metrics::new("process");
        assert_eq!(m.sinks_failing(), None);
        m.set_sinks_failing(Some("partition 0: search: bulk: HTTP 403".into()));
        assert_eq!(
            m.clone().sinks_failing().as_deref(),
            Some("partition 0: search: bulk: HTTP 403")
        );
        m.set_sinks_failing(None);
        assert_eq!(m.sinks_failing(), None);
    }

    #[test]
    fn readiness_flag() {
        let m = Metrics::new("ingest");
        assert!(!m.is_ready());
        m.clone().set_ready(true);
        assert!(m.is_ready());
    }
}
