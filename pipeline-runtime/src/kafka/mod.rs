//! Kafka clients of the distributed roles: the shared client configuration (bootstrap,
//! security protocol, SASL), the producer and consumer settings, the partitioner, and
//! topic creation. The producer and consumer contexts live in [`producer`] and
//! [`consumer`]. Configuration builders are pure; [`ensure_topics`], [`broker_error`] and
//! the watermark reads do network I/O.

pub mod consumer;
pub mod producer;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::util::Timeout;

use crate::config::KafkaSettings;
use crate::error::{Error, Result};

/// Settings every client shares: where the brokers are and how to authenticate.
/// `ClientConfig`'s `Debug` redacts `sasl.password`.
pub fn client_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap)
        .set("client.id", client_id)
        .set(
            "security.protocol",
            settings.security_protocol.as_librdkafka(),
        );
    if let Some(sasl) = &settings.sasl {
        config
            .set("sasl.mechanism", &sasl.mechanism)
            .set("sasl.username", &sasl.username)
            .set("sasl.password", sasl.password.expose());
    }
    if let Some(ca) = &settings.ca_file {
        config.set("ssl.ca.location", ca.display().to_string());
    }
    if let Some(client) = &settings.client_certificate {
        config
            .set(
                "ssl.certificate.location",
                client.cert_file.display().to_string(),
            )
            .set("ssl.key.location", client.key_file.display().to_string());
    }
    config
}

/// The ingest producer: idempotent (no duplicates or reordering within a partition on
/// retries, which the ingest resume logic relies on), acks from all in-sync replicas,
/// lz4 batches of up to 1 MB lingering 20 ms: throughput over latency.
pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(settings, "pipeline-runtime-ingest");
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        // Bounded client-side queue: a full queue blocks the reader (backpressure).
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "262144")
        // Delivery keeps being retried for this long before a message fails.
        .set("message.timeout.ms", "300000")
        // A broker in controlled shutdown answers metadata with no leader for its
        // partitions; a client that cached that sends nothing to them until its next
        // refresh. The default period (5 min) equals the commit timeout: once, in CI, a
        // commit after a broker restart waited it out and the ingest failed. Every 10 s
        // bounds such a stall at the cost of one metadata request.
        .set("topic.metadata.refresh.interval.ms", "10000")
        // The default, stated so the parser's event size limit and this cannot diverge.
        .set(
            "message.max.bytes",
            crate::event::KAFKA_MESSAGE_MAX_BYTES.to_string(),
        )
        .set("statistics.interval.ms", "0");
    config
}

/// The process role's dead-letter producer: idempotent with acks from all in-sync
/// replicas (a dead letter is durable before the checkpoint commits past it), sent at
/// once (they are rare), partitioned by key as Kafka's Java clients do, and failing a
/// delivery after 30 s so a checkpoint retries instead of hanging.
pub fn dead_letter_producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(settings, "pipeline-runtime-process-dlq");
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "30000")
        .set(
            "message.max.bytes",
            crate::event::KAFKA_MESSAGE_MAX_BYTES.to_string(),
        )
        .set("statistics.interval.ms", "0");
    config
}

/// The process consumer: manual commits only (offsets are committed after the checkpoint
/// wrote everything), no offset store, cooperative rebalancing so a scale-out moves only
/// the partitions it must.
pub fn consumer_config(settings: &KafkaSettings, group: &str) -> ClientConfig {
    let mut config = client_config(settings, "pipeline-runtime-process");
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "30000")
        .set("max.poll.interval.ms", "300000")
        .set("isolation.level", "read_committed")
        // Reaching a partition's end is how a member knows it caught up (and may fold
        // its deltas into a full checkpoint at once).
        .set("enable.partition.eof", "true")
        // Bounds the prefetched bytes per partition.
        .set("queued.max.messages.kbytes", "8192")
        // A partition whose prefetch queue was full is fetched again after this pause.
        // librdkafka's default (1 s) left a member that applies events faster than one
        // queue-full per second waiting for most of its catch-up: one member read about
        // 66k events/s from a local broker while its cores were mostly idle.
        .set("fetch.queue.backoff.ms", "20")
        .set("fetch.max.bytes", "52428800")
        .set("statistics.interval.ms", "5000");
    if let Some(id) = &settings.group_instance_id {
        config.set("group.instance.id", id);
    }
    config
}

/// Whether a client error only says a partition was read to its end (reported when
/// `enable.partition.eof` is set: information, not a failure).
pub fn is_end_of_partition(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
    )
}

/// Context of the range readers: end-of-partition events are how they know they are done,
/// not errors worth a log line.
pub struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_end_of_partition(&error) {
            tracing::warn!(error = %error, reason, "kafka reader error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// A plain consumer without a group, for reading back ranges of a topic (create it with
/// [`ReaderContext`]).
pub fn reader_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(settings, "pipeline-runtime-reader");
    config
        .set("group.id", "pipeline-runtime-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    config
}

/// A client for log ends only: with `read_uncommitted` its watermark queries return the
/// high watermark (after the last message) rather than the last stable offset, which stays
/// before a committed transaction's messages until the broker has written its markers.
/// The ingest's progress barriers and resume scans need the former.
pub fn log_end_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = reader_config(settings);
    config.set("isolation.level", "read_uncommitted");
    config
}

/// The partition of a key, as Kafka's Java clients choose it (murmur2, positive part,
/// modulo): the ingest sets partitions itself so it knows where each row went, and a Java
/// or Kafka Streams producer keyed the same way lands in the same partition.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    ((murmur2(key) & 0x7fff_ffff) as i32) % partitions.max(1)
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Creates the topics that do not exist yet (`replication` -1: the broker's default).
/// A topic that already exists is left as it is.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
    replication: i32,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(settings, "pipeline-runtime-admin")
            .create()
            .map_err(|e| kafka_error("create admin client", e))?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Timeout::After(Duration::from_secs(30))))
        .request_timeout(Some(Timeout::After(Duration::from_secs(30))));
    let results = match admin.create_topics(new_topics.iter(), &options).await {
        Ok(results) => results,
        Err(e) => {
            let mut error = kafka_error("create topics", e);
            // The admin client hears nothing of its connections (librdkafka reports them on
            // a queue it does not poll): a wrong CA, protocol or address is only a timeout.
            // A second client says why.
            let probe = settings.clone();
            if let Ok(Some(reason)) =
                tokio::task::spawn_blocking(move || broker_error(&probe, PROBE_TIMEOUT)).await
            {
                if let Error::Kafka { message, .. } = &mut error {
                    message.push_str(&format!("; connecting to the brokers: {reason}"));
                }
            }
            return Err(error);
        }
    };
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            // A managed Kafka's ACLs come from a Job that may not have run yet; an external
            // one's from its admins: either way the ingest waits, saying why, rather than
            // crash-looping until someone grants them.
            Err((topic, code)) if authorization_code(code) => {
                return Err(Error::Kafka {
                    step: "create topics",
                    retryable: true,
                    message: format!("{topic}: {code} (the brokers' ACLs do not let this client create or describe it)"),
                })
            }
            Err((topic, code)) => {
                return Err(Error::Kafka {
                    step: "create topics",
                    retryable: retryable_code(code),
                    message: format!("{topic}: {code}"),
                })
            }
        }
    }
    Ok(())
}

/// How long [`broker_error`] tries to reach the brokers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Context of [`broker_error`]'s client: keeps the first error librdkafka reports that
/// says more than "all brokers are down" (that one only if there is no other).
#[derive(Default)]
struct ProbeContext {
    reported: std::sync::Mutex<Option<(bool, String)>>,
}

impl rdkafka::ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let specific = error.rdkafka_error_code() != Some(RDKafkaErrorCode::AllBrokersDown);
        if let Ok(mut reported) = self.reported.lock() {
            if reported.as_ref().is_none_or(|(kept, _)| specific && !kept) {
                *reported = Some((specific, reason.to_string()));
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ProbeContext {}

/// Why the brokers cannot be reached (a TLS handshake that failed, a refused connection,
/// a name that does not resolve), or `None` if they answer or said nothing. Blocking, up to
/// about `timeout`.
pub fn broker_error(settings: &KafkaSettings, timeout: Duration) -> Option<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut config = client_config(settings, "pipeline-runtime-probe");
    config.set("group.id", "pipeline-runtime-probe");
    let consumer: BaseConsumer<ProbeContext> =
        config.create_with_context(ProbeContext::default()).ok()?;
    if consumer.fetch_metadata(None, timeout).is_ok() {
        return None;
    }
    // Connection errors and log lines wait on the main queue; each poll hands one to the
    // context (and says `None` for a log line too, so `None` is no sign of an empty queue).
    for _ in 0..256 {
        let _ = consumer.poll(Duration::ZERO);
    }
    let reported = consumer.context().reported.lock().ok()?.clone();
    reported.map(|(_, reason)| reason)
}

/// Attempts of a watermark request before its error is returned (about 10 s of backoff).
const WATERMARK_ATTEMPTS: u32 = 8;

/// Low and high watermarks of a partition. A topic created a moment ago answers
/// `NotLeaderForPartition` or `UnknownTopicOrPartition` until its leaders are elected, and a
/// broker may be moving leadership: retryable errors are retried with backoff. Blocking.
pub fn watermarks<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64)> {
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(3));
    let mut attempt = 1;
    loop {
        match client.fetch_watermarks(topic, partition, timeout) {
            Ok(marks) => return Ok(marks),
            Err(e) => {
                let error = kafka_error("fetch watermarks", e);
                if attempt >= WATERMARK_ATTEMPTS || !error.is_retryable() {
                    return Err(error);
                }
                let delay = backoff.next_delay();
                tracing::debug!(topic, partition, attempt, error = %error, retry_in_ms = delay.as_millis() as u64, "watermarks not available yet");
                std::thread::sleep(delay);
                attempt += 1;
            }
        }
    }
}

/// Partition count of a topic from the cluster metadata.
pub fn partition_count<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<i32> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka_error("fetch metadata", e))?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    let count = found
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    if count == 0 {
        // Retryable: the topic and the ACLs on it may come a little after this client.
        let reason = match found.and_then(|t| t.error()) {
            Some(error) => format!("{}", RDKafkaErrorCode::from(error)),
            None => "does not exist or has no partitions".to_string(),
        };
        return Err(Error::Kafka {
            step: "fetch metadata",
            retryable: true,
            message: format!("topic {topic}: {reason}"),
        });
    }
    Ok(count)
}

/// A Kafka error with whether a retry can help.
pub fn kafka_error(step: &'static str, e: KafkaError) -> Error {
    let retryable = e.rdkafka_error_code().is_some_and(retryable_code);
    Error::Kafka {
        step,
        retryable,
        message: e.to_string(),
    }
}

/// Transient broker and network conditions; everything else (auth, config, authorization,
/// invalid requests) needs a change before a retry can succeed.
/// An ACL refuses the client (which another party may yet grant).
pub fn authorization_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed
            | TransactionalIdAuthorizationFailed
    )
}

pub fn retryable_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | OperationTimedOut
            | RequestTimedOut
            | NetworkException
            | LeaderNotAvailable
            | NotLeaderForPartition
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | QueueFull
            | CoordinatorNotAvailable
            | NotCoordinator
            | CoordinatorLoadInProgress
            | RebalanceInProgress
            | UnknownTopicOrPartition
            | Resolve
            | MessageTimedOut
            | TimedOutQueue
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Sasl, Secret, SecurityProtocol};

    fn settings(sasl: Option<Sasl>) -> KafkaSettings {
        KafkaSettings {
            bootstrap: "b1:9092,b2:9092".into(),
            security_protocol: if sasl.is_some() {
                SecurityProtocol::SaslSsl
            } else {
                SecurityProtocol::Plaintext
            },
            sasl,
            ca_file: Some("/etc/ca.pem".into()),
            client_certificate: None,
            events_topic: "e".into(),
            dlq_topic: "d".into(),
            consumer_group: "g".into(),
            group_instance_id: None,
        }
    }

    #[test]
    fn client_config_carries_security_and_redacts_the_password() {
        let c = client_config(
            &settings(Some(Sasl {
                mechanism: "SCRAM-SHA-512".into(),
                username: "u".into(),
                password: Secret::new("hunter2"),
            })),
            "id",
        );
        assert_eq!(c.get("bootstrap.servers"), Some("b1:9092,b2:9092"));
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("u"));
        assert_eq!(c.get("sasl.password"), Some("hunter2"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(c.get("ssl.certificate.location"), None);
    }

    #[test]
    fn a_client_certificate_is_presented_from_its_files() {
        let mut s = settings(None);
        s.security_protocol = SecurityProtocol::Ssl;
        s.client_certificate = Some(crate::config::ClientCertificate {
            cert_file: "/etc/kafka/tls.crt".into(),
            key_file: "/etc/kafka/tls.key".into(),
        });
        let c = client_config(&s, "id");
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(
            c.get("ssl.certificate.location"),
            Some("/etc/kafka/tls.crt")
        );
        assert_eq!(c.get("ssl.key.location"), Some("/etc/kafka/tls.key"));
    }

    #[test]
    fn producer_is_idempotent_with_acks_all_and_compression() {
        let c = producer_config(&settings(None));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("compression.type"), Some("lz4"));
        assert_eq!(c.get("topic.metadata.refresh.interval.ms"), Some("10000"));
        assert_eq!(c.get("sasl.mechanism"), None);
    }

    #[test]
    fn dead_letter_producer_waits_for_all_replicas() {
        let c = dead_letter_producer_config(&settings(None));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
        assert_eq!(c.get("message.timeout.ms"), Some("30000"));
        assert_eq!(c.get("bootstrap.servers"), Some("b1:9092,b2:9092"));
    }

    #[test]
    fn consumer_commits_manually() {
        let c = consumer_config(&settings(None), "shop-profiles");
        assert_eq!(c.get("group.id"), Some("shop-profiles"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
    }

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        // org.apache.kafka.common.utils.UtilsTest#testMurmur2
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()) as i32, expected, "{input}");
        }
    }

    #[test]
    fn partition_is_the_positive_hash_modulo_the_count() {
        // murmur2("21") = -973932308 -> & 0x7fffffff = 1173551340.
        assert_eq!(partition_for_key(b"21", 6), 1_173_551_340 % 6);
        for key in ["1", "541312140", "x"] {
            let p = partition_for_key(key.as_bytes(), 7);
            assert!((0..7).contains(&p));
            assert_eq!(p, partition_for_key(key.as_bytes(), 7));
        }
    }

    #[test]
    fn error_classification() {
        assert!(retryable_code(RDKafkaErrorCode::AllBrokersDown));
        assert!(retryable_code(RDKafkaErrorCode::NotCoordinator));
        assert!(!retryable_code(RDKafkaErrorCode::SaslAuthenticationFailed));
        assert!(!retryable_code(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert!(!retryable_code(RDKafkaErrorCode::InvalidConfig));
    }
}
