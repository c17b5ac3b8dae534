//! `pipeline-runtime ingest`: CSV rows (a local file, the objects under the landing
//! prefix, or the generator) -> JSON events on the events topic keyed by user_id, rejected
//! rows -> the dead-letter topic. Does Kafka, object-store and file I/O.
//!
//! # Exactly once per source, across restarts
//!
//! Rows are sent with the transactional producer to a partition the ingest computes
//! itself (Kafka's murmur2 of the key: user_id for events, the source id for dead letters),
//! in line order. Within one partition the committed messages are a *prefix* of what was
//! sent, in order, without duplicates (consumers read committed messages only).
//!
//! The progress record `_state/ingest/<source-id>.json` is written before the first row is
//! sent, then at *barriers* about once a second: the open transaction is committed
//! (everything sent is now acknowledged by all in-sync replicas and visible), and the
//! record stores, per partition of both topics, the largest line sent there and the
//! partition's end offset. At the end the record is marked complete; a complete source is
//! never read again (a changed object, with a new ETag, is a new source).
//!
//! Every ingest of a pipeline uses one transactional id (per events topic). A starting
//! ingest takes it over before reading any progress record: an earlier ingest still
//! running is *fenced* (its open transaction is aborted, and its next commit fails with
//! [`crate::error::Error::Fenced`], which ends it), so two ingests never publish the same
//! rows, whether a pod was duplicated by a rollout or started twice by hand.
//!
//! After a crash the restart reads the record and the messages each partition received
//! after the recorded end offset: by the prefix property, they are the next rows routed
//! there, in order. It re-reads the source and, per partition, skips the rows up to the
//! recorded line, then skips (and compares with a fingerprint of key and value) one row
//! per message found, and sends the rest. So every row of a source is published exactly
//! once, whatever the crash point. Fencing keeps a second ingest from writing while a
//! source is half published; the partition counts must not change meanwhile; a message
//! that is not the expected row stops the ingest with an error rather than guessing.
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
//!
//! One job a file: `sources` (which sources there are, and opening one), `progress` (the
//! resume protocol's records and decisions, pure), `scan` (what the topics hold: partition
//! ends and the messages after a barrier), `publish` (the publish loop of one source); this
//! file runs the role and sums up the run.

mod progress;
mod publish;
mod scan;
mod sources;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{IngestArgs, Lookup, ProcessEnv};
use crate::error::Result;
use crate::kafka::producer::{transactional_id, IngestProducer, TopicKind};
use crate::metrics::Metrics;
use crate::retry::wait_for;
use crate::store::ObjectStore;

pub use progress::{
    fingerprint, progress_key, source_id, Decision, IngestProgress, PartitionProgress, Resume,
};
pub use publish::Row;
pub use sources::{is_csv_key, Source};

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
    // Rows read so far, redrawn on a terminal (nothing off one, as in a pod).
    let events_in = metrics.events_in.clone();
    let _progress = crate::progress::Ticker::spawn(
        crate::progress::Progress::stderr("ingest", None, crate::progress::Unit::Rows),
        move || events_in.get(),
    );
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
    let producer = std::sync::Arc::new(IngestProducer::new(
        &kafka,
        &args.compression,
        &transactional_id(&kafka.events_topic),
    )?);
    // Readiness = the brokers answer with the topics' metadata.
    wait_for("the events topic's metadata", &never, || async {
        producer.partition_count(TopicKind::Events)
    })
    .await?;
    // Before any progress record is read: an earlier ingest that is still running is
    // fenced here, and what it left uncommitted is aborted, so the scans below see
    // everything that will ever be visible of it.
    wait_for("the transaction coordinator", &never, || async {
        let producer = producer.clone();
        tokio::task::spawn_blocking(move || producer.start(Duration::from_secs(60)))
            .await
            .map_err(|e| crate::error::Error::Worker(format!("init transactions: {e}")))?
    })
    .await?;
    metrics.set_ready(true);
    tracing::info!(store = %store.describe(), topic = %kafka.events_topic, "ingest started");

    let started = Instant::now();
    let mut summary = IngestSummary::default();
    loop {
        let sources = sources::list_sources(&args, &store).await?;
        for source in sources {
            let outcome = publish::publish(&source, &kafka, &store, &producer, &metrics).await?;
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
