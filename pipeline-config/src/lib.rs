//! The contract between the operator (which writes it into pods) and the runtime (which
//! reads it): names derived from a pipeline, the environment variables of a runtime pod,
//! object-store layout and well-known ports. Pure data and functions; no I/O.
//!
//! Keeping this in a crate of its own means the operator never compiles rdkafka or arrow,
//! and a renamed variable breaks the build of both sides instead of a running cluster.

use serde::{Deserialize, Serialize};

/// Environment variables read by `pipeline-runtime` and set by the operator.
///
/// Any variable holding a credential may instead be given as `<NAME>_FILE`, the path of a
/// file (a mounted Secret key) whose content is the value; see [`env::file_variant`].
pub mod env {
    /// Name of the DataPipeline; used in log fields and metric labels.
    pub const PIPELINE: &str = "DP_PIPELINE";

    pub const KAFKA_BOOTSTRAP: &str = "DP_KAFKA_BOOTSTRAP";
    /// `PLAINTEXT` (default), `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub const KAFKA_SECURITY_PROTOCOL: &str = "DP_KAFKA_SECURITY_PROTOCOL";
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` when SASL is used.
    pub const KAFKA_SASL_MECHANISM: &str = "DP_KAFKA_SASL_MECHANISM";
    pub const KAFKA_USERNAME: &str = "DP_KAFKA_USERNAME";
    pub const KAFKA_PASSWORD: &str = "DP_KAFKA_PASSWORD";
    /// PEM file of the CA that signed the brokers' certificates (SSL protocols).
    pub const KAFKA_CA_FILE: &str = "DP_KAFKA_CA_FILE";
    /// PEM certificate the client presents to the brokers (mutual TLS), with its key in
    /// `KAFKA_KEY_FILE`.
    pub const KAFKA_CERT_FILE: &str = "DP_KAFKA_CERT_FILE";
    /// PEM (PKCS#8) private key of `KAFKA_CERT_FILE`.
    pub const KAFKA_KEY_FILE: &str = "DP_KAFKA_KEY_FILE";
    pub const EVENTS_TOPIC: &str = "DP_EVENTS_TOPIC";
    pub const DLQ_TOPIC: &str = "DP_DLQ_TOPIC";
    /// Compression of the ingest producer: `lz4` (default), `zstd`, `snappy`, `gzip`, `none`.
    pub const KAFKA_COMPRESSION: &str = "DP_KAFKA_COMPRESSION";
    /// Partitions of the topics when the runtime has to create them itself.
    pub const TOPIC_PARTITIONS: &str = "DP_TOPIC_PARTITIONS";
    /// Replication factor of topics the runtime creates (-1: the broker's default).
    pub const TOPIC_REPLICATION: &str = "DP_TOPIC_REPLICATION";
    pub const CONSUMER_GROUP: &str = "DP_CONSUMER_GROUP";
    /// Static group membership id of a process-role member (optional).
    pub const KAFKA_GROUP_INSTANCE_ID: &str = "DP_KAFKA_GROUP_INSTANCE_ID";

    pub const S3_ENDPOINT: &str = "DP_S3_ENDPOINT";
    pub const S3_REGION: &str = "DP_S3_REGION";
    pub const S3_BUCKET: &str = "DP_S3_BUCKET";
    pub const S3_ACCESS_KEY_ID: &str = "DP_S3_ACCESS_KEY_ID";
    pub const S3_SECRET_ACCESS_KEY: &str = "DP_S3_SECRET_ACCESS_KEY";
    /// `true` for MinIO and most self-hosted S3 servers; `false` for AWS virtual hosts.
    pub const S3_PATH_STYLE: &str = "DP_S3_PATH_STYLE";
    /// PEM file of the CA(s) that signed the S3 server's certificate (in place of the
    /// system's roots).
    pub const S3_CA_FILE: &str = "DP_S3_CA_FILE";
    /// A local directory used as the object store instead of S3 (single machine, tests).
    pub const STORE_DIR: &str = "DP_STORE_DIR";

    pub const SEARCH_URL: &str = "DP_SEARCH_URL";
    pub const SEARCH_INDEX: &str = "DP_SEARCH_INDEX";
    pub const SEARCH_USERNAME: &str = "DP_SEARCH_USERNAME";
    pub const SEARCH_PASSWORD: &str = "DP_SEARCH_PASSWORD";
    /// PEM file of the CA that signed the search cluster's HTTP certificate.
    pub const SEARCH_CA_FILE: &str = "DP_SEARCH_CA_FILE";

    /// Object-store prefix the ingest role reads CSV files from.
    pub const SOURCE_PREFIX: &str = "DP_SOURCE_PREFIX";
    /// When set, the ingest role generates this many events instead of reading files.
    pub const GENERATOR_EVENTS: &str = "DP_GENERATOR_EVENTS";
    pub const GENERATOR_SEED: &str = "DP_GENERATOR_SEED";
    /// When set, the generator publishes at most this many events per second.
    pub const GENERATOR_RATE_PER_SECOND: &str = "DP_GENERATOR_RATE_PER_SECOND";
    /// When set, the ingest role keeps listing the landing prefix at this interval (ms).
    pub const INGEST_WATCH_INTERVAL_MS: &str = "DP_INGEST_WATCH_INTERVAL_MS";

    /// Milliseconds between checkpoints of the process role.
    pub const CHECKPOINT_INTERVAL_MS: &str = "DP_CHECKPOINT_INTERVAL_MS";
    /// Events the process role holds since its last checkpoint before forcing one.
    pub const MAX_PENDING_EVENTS: &str = "DP_MAX_PENDING_EVENTS";
    /// A partition's next full checkpoint (snapshot and base) waits this many times the
    /// duration of its last one.
    pub const FULL_CHECKPOINT_COST_FACTOR: &str = "DP_FULL_CHECKPOINT_COST_FACTOR";
    /// Port of the HTTP server with `/metrics`, `/healthz` and `/readyz`.
    pub const HTTP_PORT: &str = "DP_HTTP_PORT";
    pub const LOG_FORMAT: &str = "DP_LOG_FORMAT";

    /// The `<name>_FILE` variant of a credential variable.
    pub fn file_variant(name: &str) -> String {
        format!("{name}_FILE")
    }
}

/// Default port of the runtime's and the operator's HTTP server.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Default checkpoint interval of the process role.
pub const DEFAULT_CHECKPOINT_INTERVAL_MS: u64 = 5_000;

/// Object-store key prefixes, relative to the bucket (or to `--out` when embedded).
pub mod layout {
    /// Raw accepted events, partitioned `events/dt=YYYY-MM-DD/...parquet`.
    pub const EVENTS_PREFIX: &str = "events";
    /// Profile snapshots.
    pub const PROFILES_PREFIX: &str = "profiles";
    /// Default landing prefix for CSV files the ingest role picks up.
    pub const LANDING_PREFIX: &str = "landing";
    /// Ingest progress markers (which files were fully published).
    pub const INGEST_STATE_PREFIX: &str = "_state/ingest";
    /// Restorable per-partition state and checkpoint intents of the process role.
    pub const PROCESS_STATE_PREFIX: &str = "_state/process";
}

/// The transactional id of a pipeline's ingest: one per events topic, so that two ingests
/// writing the same topics fence each other, and ingests of different pipelines do not.
pub fn ingest_transactional_id(events_topic: &str) -> String {
    format!("pipeline-runtime-ingest.{events_topic}")
}

/// The names every component of one pipeline agrees on, derived from its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineNames {
    pipeline: String,
}

impl PipelineNames {
    pub fn new(pipeline: impl Into<String>) -> Self {
        Self {
            pipeline: pipeline.into(),
        }
    }

    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// Topic of accepted events, keyed by user_id.
    pub fn events_topic(&self) -> String {
        format!("{}-events", self.pipeline)
    }

    /// Topic of rejected rows.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}-events-dlq", self.pipeline)
    }

    /// Consumer group of the process role; the operator reads its lag.
    pub fn consumer_group(&self) -> String {
        format!("{}-profiles", self.pipeline)
    }

    /// Search index of customer profiles (`_id` = user_id).
    pub fn profiles_index(&self) -> String {
        format!("{}-profiles", self.pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_design_brief() {
        let names = PipelineNames::new("shop");
        assert_eq!(names.events_topic(), "shop-events");
        assert_eq!(names.dead_letter_topic(), "shop-events-dlq");
        assert_eq!(names.profiles_index(), "shop-profiles");
        assert_eq!(names.consumer_group(), "shop-profiles");
    }

    #[test]
    fn credential_file_variant() {
        assert_eq!(
            env::file_variant(env::S3_SECRET_ACCESS_KEY),
            "DP_S3_SECRET_ACCESS_KEY_FILE"
        );
    }
}
