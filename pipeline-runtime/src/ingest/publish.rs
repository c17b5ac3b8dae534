//! The publish loop of one source: reads its progress record, resumes or starts it, then
//! parses, routes and sends its rows (or dead-letters a landing object that is not CSV)
//! with a progress barrier about once a second. Does Kafka and object-store I/O.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::progress::{fingerprint, progress_key, Decision, IngestProgress, Resume};
use super::scan::{partition_ends, scan_after_barrier};
use super::sources::{open_source, Source};
use crate::config::KafkaSettings;
use crate::error::{Error, Result};
use crate::event::{Event, Rejected};
use crate::kafka::partition_for_key;
use crate::kafka::producer::{IngestProducer, TopicKind};
use crate::metrics::{DeadLetterStage, Metrics};
use crate::store::ObjectStore;

/// How often progress is recorded (a commit barrier) while a source is being published.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Rows between two looks at the clock.
const CLOCK_EVERY_ROWS: u64 = 4096;

/// Counts of one published source.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SourceCounts {
    pub(super) accepted: u64,
    pub(super) rejected: u64,
    pub(super) already_delivered: u64,
    /// The source was dead-lettered as a file instead of read.
    pub(super) dead_lettered: bool,
}

/// Publishes one source unless its progress says it is complete (`None`).
pub(super) async fn publish(
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
            let found = scan_after_barrier(kafka, producer, &progress.partitions).await?;
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
                    // events_out counts events; dead letters have their own counter.
                    sent_since_barrier += u64::from(topic == TopicKind::Events);
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

    /// Commits the open transaction, reads the partitions' ends and records the progress
    /// durably.
    fn barrier(&mut self, sent: &BTreeMap<(TopicKind, i32), u64>) -> Result<()> {
        self.producer.commit(Duration::from_secs(300))?;
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
    mut rows: crate::csv_input::CsvEvents<Box<dyn Read + Send>>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
