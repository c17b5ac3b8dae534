//! The process consumer's context: runs the rebalance protocol (eager or cooperative) and
//! hands assignments and revocations to a [`PartitionHandler`] *inside* the rebalance, so
//! state is loaded before the first message of a partition is delivered and a checkpoint
//! finishes before a partition is given away. Also turns librdkafka statistics into
//! per-partition lag. The context does no I/O itself; the handler does.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

/// What the process role does when partitions come and go.
pub trait PartitionHandler: Send + Sync {
    /// Partitions were assigned: load their state. `topic_partitions` is the topic's
    /// partition count as the brokers give it now (`None`: the metadata request failed).
    /// Returns, per partition, where to start reading (`None`: from the beginning). An
    /// error makes the consumer stop (see [`RebalanceContext::take_fatal`]): without its
    /// state a partition cannot be processed.
    fn on_assign(
        &self,
        partitions: &[i32],
        topic_partitions: Option<i32>,
    ) -> Result<Vec<(i32, Option<i64>)>, String>;

    /// Partitions are being revoked. `lost` means another member may already own them
    /// (session timeout): the handler must then drop their state without writing anything.
    /// Returns the offsets to commit (of checkpoints finished during the revoke); they are
    /// committed before the partitions are given up.
    fn on_revoke(&self, partitions: &[i32], lost: bool) -> Vec<(i32, i64)>;

    /// Consumer lag per partition (log end - committed offset), from the statistics.
    fn on_lag(&self, lag: &[(i32, i64)]) {
        let _ = lag;
    }
}

/// The consumer context for one topic.
pub struct RebalanceContext<H> {
    topic: String,
    handler: H,
    fatal: std::sync::Mutex<Option<String>>,
}

impl<H: PartitionHandler> RebalanceContext<H> {
    pub fn new(topic: impl Into<String>, handler: H) -> Self {
        Self {
            topic: topic.into(),
            handler,
            fatal: std::sync::Mutex::new(None),
        }
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// An unrecoverable rebalance failure, if one happened. Check it after every poll and
    /// before handling the message the poll returned.
    pub fn take_fatal(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|mut f| f.take())
    }

    fn set_fatal(&self, reason: String) {
        if let Ok(mut f) = self.fatal.lock() {
            f.get_or_insert(reason);
        }
    }
}

impl<H: PartitionHandler> ClientContext for RebalanceContext<H> {
    /// librdkafka's errors as the default context logs them, except reaching a
    /// partition's end: the consumer asks to be told (to notice it caught up).
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if !super::is_end_of_partition(&error) {
            tracing::error!(error = %error, reason, "librdkafka error");
        }
    }

    fn stats(&self, statistics: Statistics) {
        self.handler
            .on_lag(&lag_from_statistics(&statistics, &self.topic));
    }
}

impl<H: PartitionHandler> ConsumerContext for RebalanceContext<H> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let partitions = partitions_of(tpl, &self.topic);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // The count after a change: a partition added to the topic is what made
                // this rebalance happen.
                let count = super::partition_count(
                    consumer.client(),
                    &self.topic,
                    std::time::Duration::from_secs(10),
                )
                .map_err(|e| tracing::warn!(error = %e, "topic metadata for the partition count"))
                .ok();
                match self.handler.on_assign(&partitions, count) {
                    Ok(starts) => {
                        for (partition, start) in starts {
                            let offset = start.map_or(Offset::Beginning, Offset::Offset);
                            if let Err(e) = tpl.set_partition_offset(&self.topic, partition, offset)
                            {
                                self.set_fatal(format!(
                                    "setting the start of partition {partition}: {e}"
                                ));
                            }
                        }
                    }
                    Err(reason) => self.set_fatal(reason),
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    self.set_fatal(format!("assign: {e}"));
                }
                // librdkafka keeps a partition's pause flag across revoke and re-assign,
                // while the handler starts every assigned partition unpaused: a partition
                // paused for backpressure when it was revoked would never be read again.
                if let Err(e) = consumer.resume(tpl) {
                    self.set_fatal(format!("resume assigned partitions: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                let commits = self.handler.on_revoke(&partitions, lost);
                if !lost && !commits.is_empty() {
                    if let Err(e) =
                        commit_offsets(consumer, &self.topic, &commits, CommitMode::Sync)
                    {
                        tracing::warn!(error = %e, "commit on revoke failed; the state files still hold the offsets");
                    }
                }
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "unassign failed");
                }
            }
            other => {
                // librdkafka asks for the assignment to be cleared on rebalance errors.
                tracing::warn!(error = ?other, "rebalance error; dropping the assignment");
                let current = consumer
                    .assignment()
                    .map(|a| partitions_of(&a, &self.topic))
                    .unwrap_or_default();
                self.handler.on_revoke(&current, true);
                let _ = consumer.unassign();
            }
        }
    }
}

/// Commits `offsets` (the next offset to read, per partition) of `topic`.
pub fn commit_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    offsets: &[(i32, i64)],
    mode: CommitMode,
) -> rdkafka::error::KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    for &(partition, offset) in offsets {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    consumer.commit(&tpl, mode)
}

/// The partitions of `topic` in a list, sorted.
pub fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    let mut partitions: Vec<i32> = tpl
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect();
    partitions.sort_unstable();
    partitions
}

/// Lag per partition of `topic`; partitions librdkafka has no lag for yet are left out.
pub fn lag_from_statistics(statistics: &Statistics, topic: &str) -> Vec<(i32, i64)> {
    let Some(t) = statistics.topics.get(topic) else {
        return Vec::new();
    };
    let mut lag: Vec<(i32, i64)> = t
        .partitions
        .iter()
        .filter(|(p, part)| **p >= 0 && part.consumer_lag >= 0)
        .map(|(p, part)| (*p, part.consumer_lag))
        .collect();
    lag.sort_unstable();
    lag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_filters_and_sorts() {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("events", 3);
        tpl.add_partition("other", 0);
        tpl.add_partition("events", 1);
        assert_eq!(partitions_of(&tpl, "events"), vec![1, 3]);
    }
}
