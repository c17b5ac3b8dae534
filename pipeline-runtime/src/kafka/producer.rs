//! The ingest producer: a transactional `ThreadedProducer` (its own poll thread serves
//! delivery reports while the reader keeps producing) that sends to partitions the caller
//! chose. Only failed deliveries are reported: progress is established with barriers that
//! commit the open transaction (see `crate::ingest`), which is cheaper than a report per
//! message. The transactional id is the same for every ingest of a pipeline, so a second
//! ingest fences the first: its uncommitted messages are aborted (consumers read committed
//! messages only) and it can commit nothing more. Does network I/O.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::kafka_error;
use crate::config::KafkaSettings;
use crate::error::{Error, Result};

/// Which of the two ingest topics.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TopicKind {
    Events,
    DeadLetters,
}

/// The producer context: remembers the first failed delivery.
#[derive(Default)]
pub struct FailureContext {
    failure: Mutex<Option<String>>,
}

impl ClientContext for FailureContext {}

impl ProducerContext for FailureContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            use rdkafka::message::Message;
            let reason = format!(
                "delivery to {} [{}] failed: {error}",
                message.topic(),
                message.partition()
            );
            if let Ok(mut failure) = self.failure.lock() {
                failure.get_or_insert(reason);
            }
        }
    }
}

/// The ingest producer.
pub struct IngestProducer {
    producer: ThreadedProducer<FailureContext>,
    /// Reads high watermarks (see [`super::log_end_config`]).
    log_ends: BaseConsumer<super::ReaderContext>,
    events_topic: String,
    dlq_topic: String,
}

impl IngestProducer {
    /// A producer with [`super::producer_config`], compressing with `compression`, in the
    /// transactions of `transactional_id`. [`Self::start`] must run before the first send.
    pub fn new(
        settings: &KafkaSettings,
        compression: &str,
        transactional_id: &str,
    ) -> Result<Self> {
        let mut config = super::producer_config(settings);
        config
            .set("delivery.report.only.error", "true")
            .set("compression.type", compression)
            .set("transactional.id", transactional_id)
            // librdkafka requires message.timeout.ms <= transaction.timeout.ms; a barrier
            // commits about once a second, so only a stalled source or broker comes near.
            .set("transaction.timeout.ms", "300000");
        let producer = config
            .create_with_context(FailureContext::default())
            .map_err(|e| kafka_error("create producer", e))?;
        let log_ends = super::log_end_config(settings)
            .create_with_context(super::ReaderContext)
            .map_err(|e| kafka_error("create log-end reader", e))?;
        Ok(Self {
            producer,
            log_ends,
            events_topic: settings.events_topic.clone(),
            dlq_topic: settings.dlq_topic.clone(),
        })
    }

    pub fn topic_name(&self, topic: TopicKind) -> &str {
        match topic {
            TopicKind::Events => &self.events_topic,
            TopicKind::DeadLetters => &self.dlq_topic,
        }
    }

    /// Partition count of a topic.
    pub fn partition_count(&self, topic: TopicKind) -> Result<i32> {
        super::partition_count(
            self.producer.client(),
            self.topic_name(topic),
            Duration::from_secs(30),
        )
    }

    /// The low and high watermarks of a partition: its first offset, and the offset after
    /// its last message, committed or not.
    pub fn watermarks(&self, topic: TopicKind, partition: i32) -> Result<(i64, i64)> {
        super::watermarks(
            self.log_ends.client(),
            self.topic_name(topic),
            partition,
            Duration::from_secs(30),
        )
    }

    /// The high watermark of a partition (see [`Self::watermarks`]).
    pub fn end_offset(&self, topic: TopicKind, partition: i32) -> Result<i64> {
        Ok(self.watermarks(topic, partition)?.1)
    }

    /// Queues one message for `partition`; waits (the poll thread drains the queue) while
    /// the client queue is full. Fails on a delivery failure reported earlier.
    pub fn send(&self, topic: TopicKind, partition: i32, key: &[u8], value: &[u8]) -> Result<()> {
        let mut record = BaseRecord::to(self.topic_name(topic))
            .partition(partition)
            .key(key)
            .payload(value);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.check_failure()?;
                    // The broker threads free queue space as batches are acknowledged.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    return Err(self.fenced().unwrap_or_else(|| kafka_error("produce", e)))
                }
            }
        }
    }

    /// The fenced error, when another ingest took the transactional id over (a fatal
    /// error of the client: every later call fails).
    fn fenced(&self) -> Option<Error> {
        let (code, reason) = self.producer.client().fatal_error()?;
        matches!(
            code,
            RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fenced
        )
        .then(|| fenced_error("produce", &reason))
    }

    /// A delivery failure reported by the poll thread, if any.
    pub fn check_failure(&self) -> Result<()> {
        if let Some(fenced) = self.fenced() {
            return Err(fenced);
        }
        let failure = self
            .producer
            .context()
            .failure
            .lock()
            .ok()
            .and_then(|f| f.clone());
        match failure {
            Some(reason) => Err(Error::Kafka {
                step: "deliver",
                retryable: true,
                message: reason,
            }),
            None => Ok(()),
        }
    }

    /// Takes over the transactional id (fencing any earlier ingest with it and aborting
    /// what it left uncommitted) and opens the first transaction.
    pub fn start(&self, timeout: Duration) -> Result<()> {
        self.producer
            .init_transactions(timeout)
            .map_err(|e| transaction_error("init transactions", e))?;
        self.producer
            .begin_transaction()
            .map_err(|e| transaction_error("begin transaction", e))
    }

    /// Commits the open transaction (every queued message is delivered first) and opens
    /// the next; fails if a delivery failed or another ingest fenced this one. A commit
    /// that failed with a retriable error (a broker restarting, its coordinator loading)
    /// is repeated, as librdkafka allows, until `timeout` has passed.
    pub fn commit(&self, timeout: Duration) -> Result<()> {
        self.check_failure()?;
        let deadline = std::time::Instant::now() + timeout;
        let mut backoff =
            crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.producer.commit_transaction(left) {
                Ok(()) => break,
                Err(KafkaError::Transaction(e)) if e.is_retriable() && !left.is_zero() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "transaction commit failed; retrying it");
                    std::thread::sleep(delay);
                }
                Err(e) => return Err(transaction_error("commit transaction", e)),
            }
        }
        self.check_failure()?;
        self.producer
            .begin_transaction()
            .map_err(|e| transaction_error("begin transaction", e))
    }
}

/// A transaction call's error: fencing is its own error (retrying cannot help, and the
/// message says what happened); the rest as [`kafka_error`].
fn transaction_error(step: &'static str, e: KafkaError) -> Error {
    if is_fenced(&e) {
        return fenced_error(step, &e.to_string());
    }
    match &e {
        // librdkafka says itself whether repeating the call can succeed.
        KafkaError::Transaction(inner) => Error::Kafka {
            step,
            retryable: inner.is_retriable(),
            message: e.to_string(),
        },
        _ => kafka_error(step, e),
    }
}

fn fenced_error(step: &str, reason: &str) -> Error {
    Error::Fenced(format!(
        "{step}: another ingest of this pipeline started with the same transactional id and took over; this one's uncommitted messages are aborted ({reason})"
    ))
}

fn is_fenced(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fenced)
    )
}

/// The transactional id of a pipeline's ingest: one per events topic, so that two ingests
/// writing the same topics fence each other, and ingests of different pipelines do not.
/// (In `pipeline_config`: a managed Kafka's ACLs grant it.)
pub use pipeline_config::ingest_transactional_id as transactional_id;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_id_is_per_events_topic() {
        assert_eq!(
            transactional_id("shop.events"),
            "pipeline-runtime-ingest.shop.events"
        );
        assert_ne!(transactional_id("a"), transactional_id("b"));
    }

    #[test]
    fn fencing_is_not_a_retryable_kafka_error() {
        let fenced = KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced);
        match transaction_error("commit transaction", fenced) {
            Error::Fenced(message) => assert!(
                message.starts_with("commit transaction: another ingest of this pipeline"),
                "{message}"
            ),
            other => panic!("not fenced: {other:?}"),
        }
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::OperationTimedOut);
        assert!(matches!(
            transaction_error("commit transaction", timeout),
            Error::Kafka {
                retryable: true,
                ..
            }
        ));
    }
}
