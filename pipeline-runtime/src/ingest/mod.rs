//! `pipeline-runtime ingest`: CSV rows (a local file, the objects under the landing
//! prefix, or the generator) -> JSON events on the events topic keyed by user_id, rejected
//! rows -> the dead-letter topic. Does Kafka, object-store and file I/O.
//!
//! # Exactly once per source, across restarts
//!
//! Rows are sent with the idempotent producer to a partition the ingest computes itself
//! (Kafka's murmur2 of the key: user_id for events, the source id for dead letters), in
//! line order. Within one partition the idempotent producer delivers a *prefix* of what was
//! sent, in order, without duplicates.
//!
//! The progress record `_state/ingest/<source-id>.json` is written before the first row is
//! sent, then at *barriers* about once a second: the producer is flushed (everything sent
//! is now acknowledged by all in-sync replicas), and the record stores, per partition of
//! both topics, the largest line sent there and the partition's end offset. At the end the
//! record is marked complete; a complete source is never read again (a changed object, with
//! a new ETag, is a new source).
//!
//! After a crash the restart reads the record and the messages each partition received
//! after the recorded end offset: by the prefix property, they are the next rows routed
//! there, in order. It re-reads the source and, per partition, skips the rows up to the
//! recorded line, then skips (and compares with a fingerprint of key and value) one row
//! per message found, and sends the rest. So every row of a source is published exactly
//! once, whatever the crash point. This assumes one ingest writes to the topics while a
//! source is half published (the role runs as a single instance) and that the partition
//! counts do not change meanwhile; a message that is not the expected row stops the ingest
//! with an error rather than guessing.
//!
//! # Landing objects that are not CSV
//!
//! Landing objects are read in key order. One whose first line is no usable header (empty,
//! binary or compressed, another CSV's header) is a **dead-lettered file**
//! ([`crate::dead_letter::bad_file`]): instead of rows, one record (`kind: "bad_file"`,
//! the object key as `source`, the reason) goes to the dead-letter topic through the same
//! exactly-once path as a row, and its progress record is marked complete with
//! `dead_letter: <reason>`. The objects after it proceed, no restart reads it again, and
//! it is counted in `datapipeline_ingest_dead_letters_total{stage="landing_file"}` and
//! [`IngestSummary::sources_dead_lettered`]. Rows of a readable object that break the
//! rules stay row dead letters (`stage="row"`). Failures to *read* an object are not its
//! content's fault and are never dead-lettered: opening it is retried with backoff, and a
//! failure while streaming it (or a refused credential) ends the run with the error; the
//! restart resumes the object where its progress record says. A `--input FILE` with a bad
//! header fails the run as before (the user named that file).

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{IngestArgs, KafkaSettings, Lookup, ProcessEnv};
use crate::error::{Error, Result};
use crate::event::{Event, Rejected};
use crate::kafka::producer::{IngestProducer, TopicKind};
use crate::kafka::{kafka_error, partition_for_key, ReaderContext};
use crate::metrics::{DeadLetterStage, Metrics};
use crate::retry::wait_for;
use crate::store::{ObjectInfo, ObjectStore};

/// How often progress is recorded (a flush barrier) while a source is being published.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Rows between two looks at the clock.
const CLOCK_EVERY_ROWS: u64 = 4096;

/// Where rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File {
        path: PathBuf,
        version_tag: String,
    },
    Object(ObjectInfo),
    Generator {
        events: u64,
        seed: u64,
        /// At most this many rows per second (`None`: as fast as possible).
        rate_per_second: Option<u64>,
    },
}

impl Source {
    /// The name rejected rows and logs carry.
    pub fn name(&self) -> String {
        match self {
            Source::File { path, .. } => path.display().to_string(),
            Source::Object(o) => o.key.clone(),
            Source::Generator { events, seed, .. } => format!("generator:{events}:{seed}"),
        }
    }

    fn version_tag(&self) -> String {
        match self {
            Source::File { version_tag, .. } => version_tag.clone(),
            Source::Object(o) => o.version_tag.clone(),
            Source::Generator { .. } => String::new(),
        }
    }

    /// Stable id of this version of the source: same name and content tag, same id.
    pub fn id(&self) -> String {
        source_id(&self.name(), &self.version_tag())
    }
}

/// The first 16 hex digits of sha256(name NUL version_tag).
pub fn source_id(name: &str, version_tag: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([0u8]);
    hasher.update(version_tag.as_bytes());
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Key of a source's progress record.
pub fn progress_key(source_id: &str) -> String {
    format!(
        "{}/{source_id}.json",
        pipeline_config::layout::INGEST_STATE_PREFIX
    )
}

/// Whether an object under the landing prefix is an input file.
pub fn is_csv_key(key: &str) -> bool {
    key.to_ascii_lowercase().ends_with(".csv")
}

/// The durable progress of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestProgress {
    pub source: String,
    pub source_id: String,
    pub complete: bool,
    pub partitions: Vec<PartitionProgress>,
    /// Rows accepted and rejected (set when complete).
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub rejected: u64,
    /// Why the source was dead-lettered as a whole instead of read (a landing object that
    /// is not a CSV file the pipeline reads); set with `complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// One partition of one topic in a progress record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    pub topic: TopicKind,
    pub partition: i32,
    /// Messages of this source delivered after the record was written are at or after
    /// this offset.
    pub scan_from: i64,
    /// Every row of this source routed to this partition with a line <= this is in Kafka
    /// (0: none).
    pub max_line: u64,
}

impl IngestProgress {
    /// A record for a source about to be published for the first time: scanning starts at
    /// the current end of each partition.
    pub fn fresh(source: &Source, ends: &[(TopicKind, i32, i64)]) -> Self {
        Self {
            source: source.name(),
            source_id: source.id(),
            complete: false,
            partitions: ends
                .iter()
                .map(|&(topic, partition, end)| PartitionProgress {
                    topic,
                    partition,
                    scan_from: end,
                    max_line: 0,
                })
                .collect(),
            accepted: 0,
            rejected: 0,
            dead_letter: None,
        }
    }

    /// The largest delivered line per partition.
    pub fn delivered_lines(&self) -> BTreeMap<(TopicKind, i32), u64> {
        self.partitions
            .iter()
            .map(|p| ((p.topic, p.partition), p.max_line))
            .collect()
    }

    /// Records a barrier: everything sent so far is acknowledged; `sent` holds the largest
    /// line sent (or found delivered) per partition, `ends` the partitions' end offsets
    /// right after the flush. Partitions for which `held` is true are left as they are:
    /// a resumed run has not yet matched every message an earlier run delivered there, and
    /// moving their scan start past those messages would lose track of them.
    pub fn barrier(
        &mut self,
        sent: &BTreeMap<(TopicKind, i32), u64>,
        ends: &[(TopicKind, i32, i64)],
        held: impl Fn(TopicKind, i32) -> bool,
    ) {
        for &(topic, partition, end) in ends {
            if held(topic, partition) {
                continue;
            }
            let line = sent.get(&(topic, partition)).copied().unwrap_or(0);
            match self
                .partitions
                .iter_mut()
                .find(|p| p.topic == topic && p.partition == partition)
            {
                Some(p) => {
                    p.max_line = p.max_line.max(line);
                    p.scan_from = p.scan_from.max(end);
                }
                None => self.partitions.push(PartitionProgress {
                    topic,
                    partition,
                    scan_from: end,
                    max_line: line,
                }),
            }
        }
        self.partitions.sort_by_key(|p| (p.topic, p.partition));
    }

    /// Partitions the topics have now that the record does not know (the topic grew):
    /// their whole content must be scanned.
    pub fn add_missing_partitions(&mut self, counts: &[(TopicKind, i32)]) {
        for &(topic, count) in counts {
            for partition in 0..count {
                if !self
                    .partitions
                    .iter()
                    .any(|p| p.topic == topic && p.partition == partition)
                {
                    self.partitions.push(PartitionProgress {
                        topic,
                        partition,
                        scan_from: 0,
                        max_line: 0,
                    });
                }
            }
        }
        self.partitions.sort_by_key(|p| (p.topic, p.partition));
    }
}

/// A fingerprint of a message (key and value), to recognise an already delivered row.
/// Only compared within one process, so the std hasher's stability across Rust versions
/// does not matter.
pub fn fingerprint(key: &[u8], value: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    value.hash(&mut hasher);
    hasher.finish()
}

/// What to do with one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// An earlier run delivered it.
    AlreadyDelivered,
}

/// What an earlier run of a source delivered: per partition, the largest line known
/// delivered at its last barrier and the fingerprints of the messages found after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    delivered_lines: BTreeMap<(TopicKind, i32), u64>,
    found_after: BTreeMap<(TopicKind, i32), VecDeque<u64>>,
}

impl Resume {
    pub fn new(
        delivered_lines: BTreeMap<(TopicKind, i32), u64>,
        found_after: BTreeMap<(TopicKind, i32), VecDeque<u64>>,
    ) -> Self {
        Self {
            delivered_lines,
            found_after,
        }
    }

    /// Decides for the row at `line` going to `partition` (rows arrive in line order).
    /// `fingerprint` is only computed when the row may be one found after the barrier.
    pub fn decide(
        &mut self,
        topic: TopicKind,
        partition: i32,
        line: u64,
        fingerprint: impl FnOnce() -> u64,
    ) -> std::result::Result<Decision, String> {
        if self
            .delivered_lines
            .get(&(topic, partition))
            .is_some_and(|&max| line <= max)
        {
            return Ok(Decision::AlreadyDelivered);
        }
        let Some(found) = self.found_after.get_mut(&(topic, partition)) else {
            return Ok(Decision::Send);
        };
        match found.front() {
            None => Ok(Decision::Send),
            Some(&expected) if expected == fingerprint() => {
                found.pop_front();
                Ok(Decision::AlreadyDelivered)
            }
            Some(_) => Err(format!(
                "{topic:?} partition {partition} holds a message that is not line {line} of this source: \
                 another producer wrote to the topic while the source was half published"
            )),
        }
    }

    /// Whether messages found in this partition still wait for their rows.
    pub fn has_unmatched(&self, topic: TopicKind, partition: i32) -> bool {
        self.found_after
            .get(&(topic, partition))
            .is_some_and(|found| !found.is_empty())
    }

    /// Messages found after the barrier that no row matched (must be none at the end).
    pub fn unmatched(&self) -> usize {
        self.found_after.values().map(VecDeque::len).sum()
    }
}

/// Totals of one ingest run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct IngestSummary {
    pub sources: u64,
    pub sources_skipped: u64,
    /// Landing objects dead-lettered as files by this run (not CSV; see the module doc).
    pub sources_dead_lettered: u64,
    pub rows_accepted: u64,
    pub rows_rejected: u64,
    /// Rows not sent because an earlier run had delivered them.
    pub rows_already_delivered: u64,
    pub seconds: f64,
}

/// Runs the ingest role with credentials from the process environment. Returns when
/// every source is published (or, with a watch interval, never).
pub async fn run(args: IngestArgs) -> Result<IngestSummary> {
    run_with(args, &ProcessEnv).await
}

/// [`run`] with credentials from `lookup`.
pub async fn run_with(args: IngestArgs, lookup: &dyn Lookup) -> Result<IngestSummary> {
    let names = pipeline_config::PipelineNames::new(&args.common.pipeline);
    let kafka = args.kafka.resolve(&names, lookup)?;
    let metrics = Metrics::new("ingest");
    if args.common.http_port != 0 {
        crate::http::serve(args.common.http_port, metrics.clone()).await?;
    }
    // Ingest has no graceful shutdown to honour: a signal ends the process, and the
    // progress records say where the next start resumes.
    let never = AtomicBool::new(false);
    let store_settings = args.store.resolve(lookup)?;
    let store = wait_for("the object store", &never, || {
        ObjectStore::open(&store_settings)
    })
    .await?;
    let topics = [kafka.events_topic.as_str(), kafka.dlq_topic.as_str()];
    wait_for("the Kafka brokers", &never, || {
        crate::kafka::ensure_topics(&kafka, &topics, args.partitions, args.replication_factor)
    })
    .await?;
    let producer = std::sync::Arc::new(IngestProducer::new(&kafka, &args.compression)?);
    // Readiness = the brokers answer with the topics' metadata.
    wait_for("the events topic's metadata", &never, || async {
        producer.partition_count(TopicKind::Events)
    })
    .await?;
    metrics.set_ready(true);
    tracing::info!(store = %store.describe(), topic = %kafka.events_topic, "ingest started");

    let started = Instant::now();
    let mut summary = IngestSummary::default();
    loop {
        let sources = list_sources(&args, &store).await?;
        for source in sources {
            let outcome = publish(&source, &kafka, &store, &producer, &metrics).await?;
            summary.sources += 1;
            match outcome {
                None => summary.sources_skipped += 1,
                Some(s) => {
                    summary.sources_dead_lettered += u64::from(s.dead_lettered);
                    summary.rows_accepted += s.accepted;
                    summary.rows_rejected += s.rejected;
                    summary.rows_already_delivered += s.already_delivered;
                }
            }
        }
        match args.watch_interval_ms {
            Some(ms) if args.input.is_none() && args.generate.is_none() => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            _ => break,
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    tracing::info!(?summary, "ingest finished");
    Ok(summary)
}

async fn list_sources(args: &IngestArgs, store: &ObjectStore) -> Result<Vec<Source>> {
    if let Some(events) = args.generate {
        return Ok(vec![Source::Generator {
            events,
            seed: args.seed,
            rate_per_second: args.rate_per_second,
        }]);
    }
    if let Some(path) = &args.input {
        let meta = std::fs::metadata(path).map_err(|e| Error::file(path, e))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return Ok(vec![Source::File {
            path: path.clone(),
            version_tag: format!("{}-{modified}", meta.len()),
        }]);
    }
    let prefix = format!("{}/", args.source_prefix.trim_end_matches('/'));
    Ok(store
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|o| is_csv_key(&o.key))
        .map(Source::Object)
        .collect())
}

/// Counts of one published source.
#[derive(Debug, Clone, Copy, Default)]
struct SourceCounts {
    accepted: u64,
    rejected: u64,
    already_delivered: u64,
    /// The source was dead-lettered as a file instead of read.
    dead_lettered: bool,
}

/// Publishes one source unless its progress says it is complete (`None`).
async fn publish(
    source: &Source,
    kafka: &KafkaSettings,
    store: &ObjectStore,
    producer: &std::sync::Arc<IngestProducer>,
    metrics: &Metrics,
) -> Result<Option<SourceCounts>> {
    let id = source.id();
    let key = progress_key(&id);
    let previous: Option<IngestProgress> = match store.get(&key).await? {
        Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| Error::State {
            key: key.clone(),
            reason: format!("unreadable progress record: {e}"),
        })?),
        None => None,
    };
    if let Some(previous) = previous.as_ref().filter(|p| p.complete) {
        match &previous.dead_letter {
            Some(reason) => {
                tracing::info!(source = %source.name(), reason = %reason, "dead-lettered earlier as a file; skipping")
            }
            None => tracing::info!(source = %source.name(), "already published; skipping"),
        }
        return Ok(None);
    }
    let counts = [
        (
            TopicKind::Events,
            producer.partition_count(TopicKind::Events)?,
        ),
        (
            TopicKind::DeadLetters,
            producer.partition_count(TopicKind::DeadLetters)?,
        ),
    ];
    let ends = partition_ends(producer, &counts)?;
    let (progress, resume) = match previous {
        None => (IngestProgress::fresh(source, &ends), Resume::default()),
        Some(mut progress) => {
            progress.add_missing_partitions(&counts);
            let found = scan_after_barrier(kafka, &progress.partitions).await?;
            let messages: usize = found.values().map(VecDeque::len).sum();
            tracing::info!(source = %source.name(), messages_after_last_barrier = messages, "resuming a partly published source");
            let resume = Resume::new(progress.delivered_lines(), found);
            // What is in the topics now is accounted for by `resume`; the next scan (after
            // another crash) starts at the current ends, with this run's lines.
            (progress, resume)
        }
    };
    // Durable before the first row is sent: a crash from here on is recoverable.
    put_progress(store, &key, &progress).await?;

    let reader = open_source(source, store).await?;
    let job = PublishJob {
        landing: matches!(source, Source::Object(_)),
        source_name: source.name(),
        source_id: id,
        progress,
        resume,
        progress_key: key,
        counts,
        producer: producer.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        handle: tokio::runtime::Handle::current(),
    };
    let counts = tokio::task::spawn_blocking(move || job.run(reader))
        .await
        .map_err(|e| Error::Worker(format!("ingest thread: {e}")))??;
    if !counts.dead_lettered {
        tracing::info!(
            source = %source.name(),
            accepted = counts.accepted,
            rejected = counts.rejected,
            already_delivered = counts.already_delivered,
            "source published"
        );
    }
    Ok(Some(counts))
}

async fn put_progress(store: &ObjectStore, key: &str, progress: &IngestProgress) -> Result<()> {
    let body = serde_json::to_vec_pretty(progress)?;
    crate::retry::retry("write ingest progress", 8, || {
        store.put(key, Bytes::from(body.clone()))
    })
    .await
}

async fn open_source(source: &Source, store: &ObjectStore) -> Result<Box<dyn Read + Send>> {
    match source {
        Source::File { path, .. } => {
            let file = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
            Ok(Box::new(file))
        }
        // Nothing is sent before it opens: a transient failure is simply retried.
        Source::Object(o) => {
            crate::retry::retry("open landing object", 6, || store.open_reader(&o.key)).await
        }
        Source::Generator {
            events,
            seed,
            rate_per_second,
        } => Ok(Box::new(
            crate::generator::reader(crate::generator::GeneratorConfig::new(*events, *seed))
                .paced(*rate_per_second),
        )),
    }
}

/// The blocking part of publishing a source: parse, route, send, record progress.
struct PublishJob {
    /// A landing object: dead-lettered as a file when it is not CSV.
    landing: bool,
    source_name: String,
    source_id: String,
    progress: IngestProgress,
    resume: Resume,
    progress_key: String,
    counts: [(TopicKind, i32); 2],
    producer: std::sync::Arc<IngestProducer>,
    store: ObjectStore,
    metrics: Metrics,
    handle: tokio::runtime::Handle,
}

impl PublishJob {
    fn run(mut self, reader: Box<dyn Read + Send>) -> Result<SourceCounts> {
        let source_name = self.source_name.clone();
        let csv = match crate::csv_input::open(source_name.clone(), reader) {
            Ok(csv) => csv,
            Err(e) => {
                return match crate::dead_letter::bad_file(&source_name, &e) {
                    Some(letter) if self.landing => self.dead_letter_file(letter),
                    _ => Err(e),
                }
            }
        };
        let events_partitions = self.counts[0].1;
        let dlq_partition = partition_for_key(self.source_id.as_bytes(), self.counts[1].1);
        let producer = self.producer.clone();
        let mut counts = SourceCounts::default();
        let mut value = Vec::with_capacity(512);
        let mut key = itoa::Buffer::new();
        let mut last_barrier = Instant::now();
        let mut rows = 0u64;
        let mut sent_since_barrier = 0u64;
        // Largest line sent or found delivered per partition, indexed by partition (hot
        // path: no map lookup).
        let mut sent_events = vec![0u64; events_partitions.max(0) as usize];
        let mut sent_dlq = 0u64;

        let mut on_row = |row: Row| -> Result<()> {
            self.metrics.events_in.inc();
            rows += 1;
            value.clear();
            let (topic, line, user_id) = match &row {
                Row::Accepted { line, event } => {
                    counts.accepted += 1;
                    event.write_json(&mut value);
                    (TopicKind::Events, *line, event.user_id)
                }
                Row::Rejected(rejected) => {
                    counts.rejected += 1;
                    self.metrics.events_rejected.inc();
                    self.metrics.dead_letter(DeadLetterStage::Row, 1);
                    serde_json::to_writer(&mut value, rejected)?;
                    (TopicKind::DeadLetters, rejected.line, 0)
                }
            };
            let (message_key, partition): (&[u8], i32) = match topic {
                TopicKind::Events => {
                    let k = key.format(user_id).as_bytes();
                    (k, partition_for_key(k, events_partitions))
                }
                TopicKind::DeadLetters => (self.source_id.as_bytes(), dlq_partition),
            };
            let decision = self
                .resume
                .decide(topic, partition, line, || fingerprint(message_key, &value))
                .map_err(|reason| Error::State {
                    key: self.progress_key.clone(),
                    reason,
                })?;
            match decision {
                Decision::AlreadyDelivered => counts.already_delivered += 1,
                Decision::Send => {
                    producer.send(topic, partition, message_key, &value)?;
                    sent_since_barrier += 1;
                }
            }
            // The largest line known to be in (or on its way to) the partition, delivered
            // earlier or sent now: the next barrier records it, so a later resume does not
            // take rows an earlier run delivered after its last barrier for new ones.
            match topic {
                TopicKind::Events => sent_events[partition as usize] = line,
                TopicKind::DeadLetters => sent_dlq = line,
            }
            if rows.is_multiple_of(CLOCK_EVERY_ROWS) && last_barrier.elapsed() >= PROGRESS_INTERVAL
            {
                let sent = sent_lines(&sent_events, dlq_partition, sent_dlq);
                self.barrier(&sent)?;
                self.metrics.events_out.inc_by(sent_since_barrier);
                sent_since_barrier = 0;
                last_barrier = Instant::now();
            }
            Ok(())
        };
        for_each_row(csv, &mut on_row)?;
        let sent = sent_lines(&sent_events, dlq_partition, sent_dlq);
        if self.resume.unmatched() > 0 {
            return Err(Error::State {
                key: self.progress_key.clone(),
                reason: format!(
                    "{} messages after the last barrier match no row of the source: another producer wrote to the topics",
                    self.resume.unmatched()
                ),
            });
        }
        self.progress.complete = true;
        self.progress.accepted = counts.accepted;
        self.progress.rejected = counts.rejected;
        self.barrier(&sent)?;
        self.metrics.events_out.inc_by(sent_since_barrier);
        Ok(counts)
    }

    /// Publishes the one dead letter of a landing object that is not CSV (instead of its
    /// rows), through the same resume decision as a row (line 1 on the source's
    /// dead-letter partition), then marks the source complete with the reason.
    fn dead_letter_file(mut self, letter: Rejected) -> Result<SourceCounts> {
        let dlq_partition = partition_for_key(self.source_id.as_bytes(), self.counts[1].1);
        let value = serde_json::to_vec(&letter)?;
        let key = self.source_id.clone();
        let decision = self
            .resume
            .decide(TopicKind::DeadLetters, dlq_partition, letter.line, || {
                fingerprint(key.as_bytes(), &value)
            })
            .map_err(|reason| Error::State {
                key: self.progress_key.clone(),
                reason,
            })?;
        let mut counts = SourceCounts {
            dead_lettered: true,
            ..SourceCounts::default()
        };
        match decision {
            Decision::AlreadyDelivered => counts.already_delivered += 1,
            Decision::Send => self.producer.send(
                TopicKind::DeadLetters,
                dlq_partition,
                key.as_bytes(),
                &value,
            )?,
        }
        if self.resume.unmatched() > 0 {
            return Err(Error::State {
                key: self.progress_key.clone(),
                reason: format!(
                    "{} messages after the last barrier match nothing this source publishes: another producer wrote to the topics",
                    self.resume.unmatched()
                ),
            });
        }
        self.progress.complete = true;
        self.progress.dead_letter = Some(letter.reason.clone());
        let sent = BTreeMap::from([((TopicKind::DeadLetters, dlq_partition), letter.line)]);
        self.barrier(&sent)?;
        self.metrics.dead_letter(DeadLetterStage::LandingFile, 1);
        tracing::error!(
            source = %self.source_name,
            reason = %letter.reason,
            progress = %self.progress_key,
            "landing object is not a CSV file this pipeline reads; dead-lettered and skipped"
        );
        Ok(counts)
    }

    /// Flushes, reads the partitions' ends and records the progress durably.
    fn barrier(&mut self, sent: &BTreeMap<(TopicKind, i32), u64>) -> Result<()> {
        self.producer.flush(Duration::from_secs(300))?;
        let ends = partition_ends(&self.producer, &self.counts)?;
        let resume = &self.resume;
        self.progress.barrier(sent, &ends, |topic, partition| {
            resume.has_unmatched(topic, partition)
        });
        self.handle.block_on(put_progress(
            &self.store,
            &self.progress_key,
            &self.progress,
        ))
    }
}

fn sent_lines(
    sent_events: &[u64],
    dlq_partition: i32,
    sent_dlq: u64,
) -> BTreeMap<(TopicKind, i32), u64> {
    let mut sent: BTreeMap<(TopicKind, i32), u64> = sent_events
        .iter()
        .enumerate()
        .filter(|(_, &line)| line > 0)
        .map(|(p, &line)| ((TopicKind::Events, p as i32), line))
        .collect();
    if sent_dlq > 0 {
        sent.insert((TopicKind::DeadLetters, dlq_partition), sent_dlq);
    }
    sent
}

/// One parsed row.
pub enum Row {
    Accepted { line: u64, event: Event },
    Rejected(Rejected),
}

/// Streams the CSV rows of `reader` into `on_row`.
#[cfg(test)]
fn read_rows(
    reader: Box<dyn Read + Send>,
    source_name: &str,
    on_row: &mut dyn FnMut(Row) -> Result<()>,
) -> Result<()> {
    for_each_row(crate::csv_input::open(source_name, reader)?, on_row)
}

/// Streams the rows of an opened CSV input into `on_row`.
fn for_each_row(
    mut rows: crate::csv_input::CsvReader<Box<dyn Read + Send>>,
    on_row: &mut dyn FnMut(Row) -> Result<()>,
) -> Result<()> {
    while let Some(row) = rows.next_row()? {
        match row.outcome {
            Ok(event) => on_row(Row::Accepted {
                line: row.line,
                event,
            })?,
            Err(rejected) => on_row(Row::Rejected(rejected))?,
        }
    }
    Ok(())
}

/// The current end offset of every partition of both topics.
fn partition_ends(
    producer: &IngestProducer,
    counts: &[(TopicKind, i32)],
) -> Result<Vec<(TopicKind, i32, i64)>> {
    let mut ends = Vec::new();
    for &(topic, count) in counts {
        for partition in 0..count {
            ends.push((topic, partition, producer.end_offset(topic, partition)?));
        }
    }
    Ok(ends)
}

fn topic_name(kafka: &KafkaSettings, topic: TopicKind) -> &str {
    match topic {
        TopicKind::Events => &kafka.events_topic,
        TopicKind::DeadLetters => &kafka.dlq_topic,
    }
}

/// Fingerprints of the messages each partition received after the last barrier
/// (`scan_from`), in offset order.
async fn scan_after_barrier(
    kafka: &KafkaSettings,
    partitions: &[PartitionProgress],
) -> Result<BTreeMap<(TopicKind, i32), VecDeque<u64>>> {
    let kafka = kafka.clone();
    let partitions = partitions.to_vec();
    tokio::task::spawn_blocking(move || scan_after_barrier_blocking(&kafka, &partitions))
        .await
        .map_err(|e| Error::Worker(format!("scan thread: {e}")))?
}

fn scan_after_barrier_blocking(
    kafka: &KafkaSettings,
    partitions: &[PartitionProgress],
) -> Result<BTreeMap<(TopicKind, i32), VecDeque<u64>>> {
    let consumer: BaseConsumer<ReaderContext> = crate::kafka::reader_config(kafka)
        .create_with_context(ReaderContext)
        .map_err(|e| kafka_error("create reader", e))?;
    // Where each partition ends now: the scan stops there.
    let mut remaining: BTreeMap<(String, i32), (TopicKind, i64)> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let name = topic_name(kafka, p.topic).to_string();
        let (low, high) = crate::kafka::watermarks(
            consumer.client(),
            &name,
            p.partition,
            Duration::from_secs(30),
        )?;
        let from = p.scan_from.max(low);
        if from < high {
            tpl.add_partition_offset(&name, p.partition, Offset::Offset(from))
                .map_err(|e| kafka_error("scan assignment", e))?;
            remaining.insert((name, p.partition), (p.topic, high));
        }
    }
    let mut found: BTreeMap<(TopicKind, i32), VecDeque<u64>> = BTreeMap::new();
    if remaining.is_empty() {
        return Ok(found);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_error("scan assign", e))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::Kafka {
                step: "scan",
                retryable: true,
                message: format!(
                    "reading what the last run delivered did not finish; {} partitions left",
                    remaining.len()
                ),
            });
        }
        let Some(result) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = match result {
            Ok(m) => m,
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => {
                // The end of some partition (the error does not say of which topic):
                // drop every partition whose position reached the end captured above.
                let positions = consumer
                    .position()
                    .map_err(|e| kafka_error("scan position", e))?;
                for element in positions.elements() {
                    let key = (element.topic().to_string(), element.partition());
                    if let (Some(&(_, high)), Offset::Offset(position)) =
                        (remaining.get(&key), element.offset())
                    {
                        if position >= high {
                            remaining.remove(&key);
                        }
                    }
                }
                continue;
            }
            Err(e) => return Err(kafka_error("scan", e)),
        };
        let key = (message.topic().to_string(), message.partition());
        let Some(&(topic, high)) = remaining.get(&key) else {
            continue;
        };
        if message.offset() < high {
            found
                .entry((topic, message.partition()))
                .or_default()
                .push_back(fingerprint(
                    message.key().unwrap_or_default(),
                    message.payload().unwrap_or_default(),
                ));
        }
        if message.offset() + 1 >= high {
            remaining.remove(&key);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source::Object(ObjectInfo {
            key: "landing/a.csv".into(),
            size: 10,
            version_tag: "etag1".into(),
        })
    }

    #[test]
    fn source_id_depends_on_name_and_version() {
        let a = source_id("landing/a.csv", "etag1");
        assert_eq!(a.len(), 16);
        assert_eq!(a, source().id());
        assert_ne!(a, source_id("landing/a.csv", "etag2"));
        assert_ne!(a, source_id("landing/b.csv", "etag1"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(source_id("ab", "c"), source_id("a", "bc"));
        assert_eq!(progress_key("0123"), "_state/ingest/0123.json");
    }

    #[test]
    fn csv_keys() {
        assert!(is_csv_key("landing/x.csv"));
        assert!(is_csv_key("landing/X.CSV"));
        assert!(!is_csv_key("landing/x.csv.tmp"));
        assert!(!is_csv_key("landing/readme.md"));
    }

    #[test]
    fn fresh_progress_scans_from_the_current_ends() {
        let p = IngestProgress::fresh(
            &source(),
            &[
                (TopicKind::Events, 0, 10),
                (TopicKind::Events, 1, 0),
                (TopicKind::DeadLetters, 0, 3),
            ],
        );
        assert!(!p.complete);
        assert_eq!(
            p.partitions,
            vec![
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 0,
                    scan_from: 10,
                    max_line: 0
                },
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 1,
                    scan_from: 0,
                    max_line: 0
                },
                PartitionProgress {
                    topic: TopicKind::DeadLetters,
                    partition: 0,
                    scan_from: 3,
                    max_line: 0
                },
            ]
        );
    }

    #[test]
    fn a_barrier_moves_lines_and_scan_offsets_forward_only() {
        let mut p = IngestProgress::fresh(
            &source(),
            &[(TopicKind::Events, 0, 10), (TopicKind::Events, 1, 5)],
        );
        let mut sent = BTreeMap::new();
        sent.insert((TopicKind::Events, 0), 40u64);
        p.barrier(
            &sent,
            &[
                (TopicKind::Events, 0, 20),
                (TopicKind::Events, 1, 5),
                (TopicKind::DeadLetters, 2, 1),
            ],
            |_, _| false,
        );
        // A later barrier that saw less (nothing sent to partition 0 since) keeps the line.
        p.barrier(&BTreeMap::new(), &[(TopicKind::Events, 0, 20)], |_, _| {
            false
        });
        assert_eq!(
            p.partitions,
            vec![
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 0,
                    scan_from: 20,
                    max_line: 40
                },
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 1,
                    scan_from: 5,
                    max_line: 0
                },
                PartitionProgress {
                    topic: TopicKind::DeadLetters,
                    partition: 2,
                    scan_from: 1,
                    max_line: 0
                },
            ]
        );
    }

    #[test]
    fn a_barrier_leaves_partitions_with_unmatched_found_messages_alone() {
        let mut p = IngestProgress::fresh(
            &source(),
            &[(TopicKind::Events, 0, 10), (TopicKind::Events, 1, 10)],
        );
        let mut sent = BTreeMap::new();
        sent.insert((TopicKind::Events, 0), 50u64);
        sent.insert((TopicKind::Events, 1), 60u64);
        // Partition 1 still has messages of the earlier run to match: its record stays.
        p.barrier(
            &sent,
            &[(TopicKind::Events, 0, 30), (TopicKind::Events, 1, 40)],
            |_, partition| partition == 1,
        );
        assert_eq!(
            p.partitions,
            vec![
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 0,
                    scan_from: 30,
                    max_line: 50
                },
                PartitionProgress {
                    topic: TopicKind::Events,
                    partition: 1,
                    scan_from: 10,
                    max_line: 0
                },
            ]
        );
        let mut r = resume();
        assert!(r.has_unmatched(TopicKind::Events, 0));
        r.decide(TopicKind::Events, 0, 101, || fingerprint(b"7", b"a"))
            .unwrap();
        r.decide(TopicKind::Events, 0, 102, || fingerprint(b"8", b"b"))
            .unwrap();
        assert!(!r.has_unmatched(TopicKind::Events, 0));
        assert!(!r.has_unmatched(TopicKind::DeadLetters, 0));
    }

    #[test]
    fn new_partitions_are_scanned_from_the_start() {
        let mut p = IngestProgress::fresh(&source(), &[(TopicKind::Events, 0, 10)]);
        p.add_missing_partitions(&[(TopicKind::Events, 2), (TopicKind::DeadLetters, 1)]);
        let keys: Vec<(TopicKind, i32, i64)> = p
            .partitions
            .iter()
            .map(|x| (x.topic, x.partition, x.scan_from))
            .collect();
        assert_eq!(
            keys,
            vec![
                (TopicKind::Events, 0, 10),
                (TopicKind::Events, 1, 0),
                (TopicKind::DeadLetters, 0, 0)
            ]
        );
    }

    fn resume() -> Resume {
        let mut lines = BTreeMap::new();
        lines.insert((TopicKind::Events, 0), 100u64);
        let mut found = BTreeMap::new();
        // Partition 0 received two more rows after the barrier, partition 1 one.
        found.insert(
            (TopicKind::Events, 0),
            VecDeque::from(vec![fingerprint(b"7", b"a"), fingerprint(b"8", b"b")]),
        );
        found.insert(
            (TopicKind::Events, 1),
            VecDeque::from(vec![fingerprint(b"9", b"c")]),
        );
        Resume::new(lines, found)
    }

    #[test]
    fn rows_up_to_the_barrier_and_then_the_found_ones_are_not_resent() {
        let mut r = resume();
        let unused = || panic!("no fingerprint needed below the barrier line");
        assert_eq!(
            r.decide(TopicKind::Events, 0, 3, unused),
            Ok(Decision::AlreadyDelivered)
        );
        assert_eq!(
            r.decide(TopicKind::Events, 0, 100, unused),
            Ok(Decision::AlreadyDelivered)
        );
        // After the barrier line: the next rows of partition 0 are the two found messages.
        assert_eq!(
            r.decide(TopicKind::Events, 0, 101, || fingerprint(b"7", b"a")),
            Ok(Decision::AlreadyDelivered)
        );
        assert_eq!(
            r.decide(TopicKind::Events, 1, 102, || fingerprint(b"9", b"c")),
            Ok(Decision::AlreadyDelivered)
        );
        assert_eq!(
            r.decide(TopicKind::Events, 0, 105, || fingerprint(b"8", b"b")),
            Ok(Decision::AlreadyDelivered)
        );
        assert_eq!(r.unmatched(), 0);
        // Then everything is new.
        assert_eq!(
            r.decide(TopicKind::Events, 0, 106, || 0),
            Ok(Decision::Send)
        );
        assert_eq!(
            r.decide(TopicKind::Events, 1, 107, || 0),
            Ok(Decision::Send)
        );
        assert_eq!(
            r.decide(TopicKind::DeadLetters, 0, 108, || 0),
            Ok(Decision::Send)
        );
        assert_eq!(
            r.decide(TopicKind::Events, 5, 109, || 0),
            Ok(Decision::Send)
        );
    }

    #[test]
    fn a_foreign_message_after_the_barrier_stops_the_resume() {
        let mut r = resume();
        let err = r
            .decide(TopicKind::Events, 0, 101, || fingerprint(b"7", b"other"))
            .unwrap_err();
        assert!(
            err.contains("partition 0") && err.contains("line 101"),
            "{err}"
        );
        // Unmatched leftovers are visible at the end.
        assert_eq!(resume().unmatched(), 3);
    }

    #[test]
    fn a_fresh_source_sends_everything() {
        let mut r = Resume::default();
        assert_eq!(r.decide(TopicKind::Events, 0, 2, || 0), Ok(Decision::Send));
    }

    #[test]
    fn progress_record_round_trips_as_json() {
        let mut p = IngestProgress::fresh(&source(), &[(TopicKind::DeadLetters, 0, 3)]);
        p.complete = true;
        p.accepted = 5;
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"topic\":\"dead_letters\""), "{json}");
        assert_eq!(serde_json::from_str::<IngestProgress>(&json).unwrap(), p);
    }

    #[test]
    fn a_dead_lettered_source_keeps_its_reason_and_older_records_have_none() {
        let mut p = IngestProgress::fresh(&source(), &[(TopicKind::DeadLetters, 0, 3)]);
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("\"dead_letter\""), "{json}");
        p.complete = true;
        p.dead_letter = Some("not a CSV file this pipeline reads: bad header: x".into());
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains("\"dead_letter\":\"not a CSV file this pipeline reads: bad header: x\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<IngestProgress>(&json).unwrap(), p);
        // A record written before dead-lettered files existed.
        let old = r#"{"source":"landing/a.csv","source_id":"0123","complete":true,"partitions":[],"accepted":5,"rejected":0}"#;
        let old: IngestProgress = serde_json::from_str(old).unwrap();
        assert_eq!((old.complete, old.dead_letter), (true, None));
    }

    #[test]
    fn ingest_reads_cr_only_line_ends_with_the_same_tokenizer_as_run() {
        let text = "user_id,event_type,product_id,price,timestamp\r\
                    1,view,2,3.00,2019-10-05 12:00:00 UTC\r\
                    \r\
                    2,wishlist,2,3.00,2019-10-05 12:00:00 UTC\r\
                    3,cart,4,5.50,2019-10-05 12:00:01 UTC\r";
        let mut rows = Vec::new();
        read_rows(Box::new(text.as_bytes()), "mac.csv", &mut |row| {
            rows.push(match row {
                Row::Accepted { line, event } => (line, Some(event.user_id), String::new()),
                Row::Rejected(r) => (r.line, None, r.reason),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(
            rows,
            vec![
                (2, Some(1), String::new()),
                (
                    4,
                    None,
                    "event_type \"wishlist\" is not view, cart, remove_from_cart or purchase"
                        .to_string()
                ),
                (5, Some(3), String::new()),
            ]
        );
    }
}
