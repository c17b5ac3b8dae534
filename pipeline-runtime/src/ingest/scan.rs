//! What the topics hold now, for the resume protocol: the end offset of every partition,
//! and the fingerprints of the messages an earlier run delivered after its last barrier.
//! Does Kafka I/O.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::progress::{fingerprint, PartitionProgress};
use crate::config::KafkaSettings;
use crate::error::{Error, Result};
use crate::kafka::producer::{IngestProducer, TopicKind};
use crate::kafka::{kafka_error, ReaderContext};

/// The current end offset of every partition of both topics.
pub(super) fn partition_ends(
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
pub(super) async fn scan_after_barrier(
    kafka: &KafkaSettings,
    producer: &Arc<IngestProducer>,
    partitions: &[PartitionProgress],
) -> Result<BTreeMap<(TopicKind, i32), VecDeque<u64>>> {
    let kafka = kafka.clone();
    let producer = producer.clone();
    let partitions = partitions.to_vec();
    tokio::task::spawn_blocking(move || scan_after_barrier_blocking(&kafka, &producer, &partitions))
        .await
        .map_err(|e| Error::Worker(format!("scan thread: {e}")))?
}

fn scan_after_barrier_blocking(
    kafka: &KafkaSettings,
    producer: &IngestProducer,
    partitions: &[PartitionProgress],
) -> Result<BTreeMap<(TopicKind, i32), VecDeque<u64>>> {
    // Committed messages only: an earlier run's uncommitted ones are aborted (the producer
    // took the transactional id over before this scan).
    let consumer: BaseConsumer<ReaderContext> = crate::kafka::reader_config(kafka)
        .create_with_context(ReaderContext)
        .map_err(|e| kafka_error("create reader", e))?;
    // Where each partition ends now (its high watermark): the scan stops there, so a
    // committed transaction whose markers are still being written is read whole.
    let mut remaining: BTreeMap<(String, i32), (TopicKind, i64)> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let name = topic_name(kafka, p.topic).to_string();
        let (low, high) = producer.watermarks(p.topic, p.partition)?;
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
