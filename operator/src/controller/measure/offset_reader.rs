//! Reads a pipeline's offsets from Kafka (I/O): per partition of the events topic the low
//! and high watermarks and the runtime consumer group's committed offset, and the size of
//! the dead-letter topic. The consumer carries the group id only to fetch the group's
//! commits (OffsetFetch); it never subscribes, so it never joins the group and never
//! triggers a rebalance of the runtime's consumers. rdkafka is blocking: every call runs
//! in `spawn_blocking` with a bounded timeout. The observer also asks the search engine
//! for the index's document count (`index_count::profiles`, concurrently and bounded too);
//! a count that cannot be read is logged and left out, it never fails the measurement.

use std::time::Duration;

use futures::future::BoxFuture;
use kube::Client;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    ClientConfig, Offset, TopicPartitionList,
};

use tracing::{debug, warn};

use super::{
    index_count::{self, CountError},
    observer::{Measurement, ThroughputObserver},
    throughput::{OffsetsSnapshot, PartitionOffsets},
};
use crate::controller::{
    build::{
        kafka::bootstrap,
        names::{keys, namespaced_name, ChildNames},
    },
    dereference::{read_secret, secret_text},
    validate::{KafkaMode, ValidatedPipeline},
};

/// How long one Kafka request may take before the measurement is reported as failed.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    pub bootstrap: String,
    /// librdkafka properties besides the bootstrap servers (security settings).
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for Connection {
    // Never prints a password or a key: logs and panics must not carry credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(name, value)| {
                // sasl.password, ssl.key.pem, ssl.key.password, ...
                let secret = name.contains("password") || name.starts_with("ssl.key.");
                (
                    name.as_str(),
                    if secret { "<redacted>" } else { value.as_str() },
                )
            })
            .collect();
        f.debug_struct("Connection")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &properties)
            .finish()
    }
}

/// Reads offsets from the brokers and the profile count from the search engine; reads
/// the referenced and generated Secrets for credentials.
pub struct KafkaOffsets {
    pub client: Client,
}

impl KafkaOffsets {
    async fn offsets(&self, pipeline: &ValidatedPipeline) -> Result<OffsetsSnapshot, String> {
        let connection = connection(&self.client, pipeline).await?;
        // A name that does not resolve fails here, at once and with a clear message,
        // instead of keeping a Kafka client retrying for the whole timeout.
        resolves(&connection.bootstrap).await?;
        let group = pipeline.names.consumer_group();
        let events = pipeline.names.events_topic();
        let dead_letters = pipeline.names.dead_letter_topic();
        tokio::task::spawn_blocking(move || {
            read_offsets(&connection, &group, &events, &dead_letters)
        })
        .await
        .map_err(|join| format!("offset reader stopped: {join}"))?
    }

    /// The index's document count, or `None` (logged) when it cannot be read.
    async fn profiles(&self, pipeline: &ValidatedPipeline) -> Option<i64> {
        let pipeline_key = namespaced_name(&pipeline.namespace, &pipeline.name);
        match index_count::profiles(&self.client, pipeline).await {
            Ok(count) => Some(count),
            // Expected while the search engine starts: not worth a warning.
            Err(CountError::Unreachable(error)) => {
                debug!(pipeline = %pipeline_key, %error, "search index count not read");
                None
            }
            Err(CountError::Failed(error)) => {
                warn!(pipeline = %pipeline_key, %error, "search index count not read; status.throughput.profiles keeps its last value");
                None
            }
        }
    }
}

impl ThroughputObserver for KafkaOffsets {
    fn observe<'a>(&'a self, pipeline: &'a ValidatedPipeline) -> BoxFuture<'a, Measurement> {
        Box::pin(async move {
            let (offsets, profiles) = tokio::join!(self.offsets(pipeline), self.profiles(pipeline));
            match offsets {
                Ok(snapshot) => Measurement::Measured(OffsetsSnapshot {
                    profiles,
                    ..snapshot
                }),
                Err(message) => Measurement::Failed(message),
            }
        })
    }
}

/// The managed cluster's client Service, or the external brokers with their security
/// settings and the credentials of the referenced Secrets.
pub async fn connection(client: &Client, p: &ValidatedPipeline) -> Result<Connection, String> {
    let KafkaMode::External(k) = &p.kafka.mode else {
        // The managed cluster speaks TLS only and wants a client certificate: the
        // operator connects as the admin user, whose Secret also holds the trust bundle.
        let name = ChildNames::new(&p.name).kafka_admin();
        let secret = read_secret(client, &p.namespace, &p.name, &name).await?;
        let mut properties = vec![("security.protocol".to_string(), "ssl".to_string())];
        for (property, key) in [
            ("ssl.ca.pem", keys::CA_CRT),
            ("ssl.certificate.pem", keys::TLS_CRT),
            ("ssl.key.pem", keys::TLS_KEY),
        ] {
            let value = secret_text(&secret, key)
                .ok_or_else(|| format!("Secret {}/{name} has no key {key:?}", p.namespace))?;
            properties.push((property.to_string(), value));
        }
        return Ok(Connection {
            bootstrap: bootstrap(p),
            properties,
        });
    };
    let mut properties = vec![(
        "security.protocol".to_string(),
        k.security_protocol.as_str().to_string(),
    )];
    if let Some(mechanism) = k.sasl_mechanism {
        properties.push(("sasl.mechanism".into(), mechanism.as_str().into()));
    }
    if let Some(reference) = &k.secret_ref {
        let secret = read_secret(client, &p.namespace, &p.name, &reference.name).await?;
        for (property, key) in [
            ("sasl.username", &reference.username_key),
            ("sasl.password", &reference.password_key),
        ] {
            let value = secret_text(&secret, key).ok_or_else(|| {
                format!(
                    "Secret {}/{} has no key {key:?}",
                    p.namespace, reference.name
                )
            })?;
            properties.push((property.into(), value));
        }
    }
    if let Some(reference) = &k.ca_secret_ref {
        let secret = read_secret(client, &p.namespace, &p.name, &reference.name).await?;
        let pem = secret_text(&secret, &reference.key).ok_or_else(|| {
            format!(
                "Secret {}/{} has no key {:?}",
                p.namespace, reference.name, reference.key
            )
        })?;
        properties.push(("ssl.ca.pem".into(), pem));
    }
    Ok(Connection {
        bootstrap: k.bootstrap_servers.clone(),
        properties,
    })
}

/// The `host:port` pairs of a `bootstrap.servers` list (an optional `PROTOCOL://` prefix
/// and blanks removed); entries without a port are left out.
pub fn bootstrap_addresses(bootstrap: &str) -> Vec<String> {
    bootstrap
        .split(',')
        .map(str::trim)
        .map(|entry| entry.split_once("://").map_or(entry, |(_, rest)| rest))
        .filter(|entry| {
            entry
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        })
        .map(String::from)
        .collect()
}

/// Whether at least one bootstrap server's name resolves (within the timeout).
async fn resolves(bootstrap: &str) -> Result<(), String> {
    let mut last_error = format!("no host:port in {bootstrap:?}");
    for address in bootstrap_addresses(bootstrap) {
        match tokio::time::timeout(TIMEOUT, tokio::net::lookup_host(address.as_str())).await {
            Ok(Ok(mut found)) => {
                if found.next().is_some() {
                    return Ok(());
                }
                last_error = format!("{address} resolves to no address");
            }
            Ok(Err(e)) => last_error = format!("cannot resolve {address}: {e}"),
            Err(_) => last_error = format!("resolving {address} timed out"),
        }
    }
    Err(format!("cannot reach Kafka at {bootstrap}: {last_error}"))
}

/// The consumer used for reading offsets: group id set (for OffsetFetch), no
/// subscription, no commits.
pub fn offsets_consumer(connection: &Connection, group: &str) -> Result<BaseConsumer, String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &connection.bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("socket.timeout.ms", "5000")
        .set("log_level", "3");
    for (key, value) in &connection.properties {
        config.set(key, value);
    }
    config.create().map_err(|e| {
        format!(
            "cannot create a Kafka client for {}: {e}",
            connection.bootstrap
        )
    })
}

fn partitions(consumer: &BaseConsumer, topic: &str, bootstrap: &str) -> Result<Vec<i32>, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| format!("cannot reach Kafka at {bootstrap}: {e}"))?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| format!("topic {topic} not found at {bootstrap}"))?;
    if let Some(error) = found.error() {
        return Err(format!("topic {topic} at {bootstrap}: {error:?}"));
    }
    let mut ids: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Blocking: reads the offsets of the events and dead-letter topics.
pub fn read_offsets(
    connection: &Connection,
    group: &str,
    events_topic: &str,
    dead_letter_topic: &str,
) -> Result<OffsetsSnapshot, String> {
    let consumer = offsets_consumer(connection, group)?;
    let bootstrap = &connection.bootstrap;
    let ids = partitions(&consumer, events_topic, bootstrap)?;
    let mut list = TopicPartitionList::new();
    for id in &ids {
        list.add_partition(events_topic, *id);
    }
    let committed = consumer
        .committed_offsets(list, TIMEOUT)
        .map_err(|e| format!("cannot read the commits of group {group} at {bootstrap}: {e}"))?;
    let mut events = Vec::with_capacity(ids.len());
    for id in ids {
        let (low, log_end) = consumer
            .fetch_watermarks(events_topic, id, TIMEOUT)
            .map_err(|e| {
                format!("cannot read offsets of {events_topic}/{id} at {bootstrap}: {e}")
            })?;
        let committed = committed
            .find_partition(events_topic, id)
            .and_then(|p| match p.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
        events.push(PartitionOffsets {
            partition: id,
            low,
            log_end,
            committed,
        });
    }
    // A missing dead-letter topic means nothing was rejected yet.
    let dead_letters = match partitions(&consumer, dead_letter_topic, bootstrap) {
        Ok(ids) => {
            let mut total = 0;
            for id in ids {
                let (low, high) = consumer
                    .fetch_watermarks(dead_letter_topic, id, TIMEOUT)
                    .map_err(|e| {
                        format!(
                            "cannot read offsets of {dead_letter_topic}/{id} at {bootstrap}: {e}"
                        )
                    })?;
                total += (high - low).max(0);
            }
            total
        }
        Err(_) => 0,
    };
    Ok(OffsetsSnapshot {
        events,
        dead_letters,
        profiles: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_split_into_host_port_pairs() {
        assert_eq!(
            bootstrap_addresses("shop-kafka-bootstrap.shops.svc:9092"),
            vec!["shop-kafka-bootstrap.shops.svc:9092"]
        );
        assert_eq!(
            bootstrap_addresses(" a:9092, SASL_SSL://b:9093 ,c,:9094,d:x"),
            vec!["a:9092", "b:9093"]
        );
        assert_eq!(bootstrap_addresses(""), Vec::<String>::new());
    }

    // Only names resolved without a DNS query: the tests send no traffic off this host.
    #[tokio::test]
    async fn an_address_resolves_and_a_list_without_one_fails() {
        assert_eq!(resolves("127.0.0.1:9092").await, Ok(()));
        assert_eq!(resolves("nothing, 127.0.0.1:9092").await, Ok(()));
        assert_eq!(
            resolves("nothing").await,
            Err("cannot reach Kafka at nothing: no host:port in \"nothing\"".into())
        );
    }

    #[test]
    fn debug_output_carries_no_password() {
        let connection = Connection {
            bootstrap: "kafka:9093".into(),
            properties: vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("sasl.username".into(), "shop".into()),
                ("sasl.password".into(), "kafka-SECRET".into()),
                ("ssl.certificate.pem".into(), "CERTIFICATE".into()),
                ("ssl.key.pem".into(), "PRIVATE-KEY-SECRET".into()),
            ],
        };
        let text = format!("{connection:?}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("SASL_SSL") && text.contains("shop"), "{text}");
        assert_eq!(text.matches("<redacted>").count(), 2, "{text}");
        assert!(text.contains("CERTIFICATE"), "{text}");
    }
}
