//! The ingest producer: an idempotent `ThreadedProducer` (its own poll thread serves
//! delivery reports while the reader keeps producing) that sends to partitions the caller
//! chose. Only failed deliveries are reported: progress is established with flush barriers
//! (see `crate::ingest`), which is cheaper than a report per message. Does network I/O.

use std::sync::Mutex;
use std::time::Duration;

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
    events_topic: String,
    dlq_topic: String,
}

impl IngestProducer {
    /// A producer with [`super::producer_config`], compressing with `compression`.
    pub fn new(settings: &KafkaSettings, compression: &str) -> Result<Self> {
        let mut config = super::producer_config(settings);
        config
            .set("delivery.report.only.error", "true")
            .set("compression.type", compression);
        let producer = config
            .create_with_context(FailureContext::default())
            .map_err(|e| kafka_error("create producer", e))?;
        Ok(Self {
            producer,
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

    /// The high watermark (offset after the last committed message) of a partition.
    pub fn end_offset(&self, topic: TopicKind, partition: i32) -> Result<i64> {
        let (_, high) = super::watermarks(
            self.producer.client(),
            self.topic_name(topic),
            partition,
            Duration::from_secs(30),
        )?;
        Ok(high)
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
                Err((e, _)) => return Err(kafka_error("produce", e)),
            }
        }
    }

    /// A delivery failure reported by the poll thread, if any.
    pub fn check_failure(&self) -> Result<()> {
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

    /// Waits until every queued message is delivered; fails if any delivery failed.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer
            .flush(timeout)
            .map_err(|e| kafka_error("flush", e))?;
        self.check_failure()
    }
}
