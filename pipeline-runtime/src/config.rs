//! Configuration of the distributed roles (`ingest`, `process`, `report --from-search`)
//! from flags and environment, the names in `pipeline_config::env` being what the operator
//! sets in pods. Credentials come only from the environment or from `<NAME>_FILE` files
//! (mounted Secret keys), never from flags, and print as `***`. Reads the environment and
//! credential files; no network.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use pipeline_config::{env, PipelineNames};

use crate::error::Error;

/// A credential. `Debug` and `Display` never show it; [`Secret::expose`] is the one way in.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for handing to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where configuration values come from: the process environment in production, a map in
/// tests (so tests never mutate the process environment).
pub trait Lookup: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Lookup for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A credential from `NAME` or from the file named by `NAME_FILE`; `None` when neither is
/// set. Setting both is an error rather than a silent preference: one of them is stale.
/// A file's trailing line end is dropped (editors and `echo` add one), nothing else.
pub fn credential(lookup: &dyn Lookup, name: &str) -> Result<Option<Secret>, Error> {
    let file_var = env::file_variant(name);
    let direct = lookup.var(name).filter(|v| !v.is_empty());
    let file = lookup.var(&file_var).filter(|v| !v.is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(config_error(
            name,
            format!("both {name} and {file_var} are set; set only one"),
        )),
        (Some(value), None) => Ok(Some(Secret(value))),
        (None, Some(path)) => {
            let content = std::fs::read_to_string(&path).map_err(|e| {
                config_error(
                    &file_var,
                    format!("cannot read credential file {path}: {e}"),
                )
            })?;
            Ok(Some(Secret(strip_line_end(content))))
        }
        (None, None) => Ok(None),
    }
}

/// A non-secret value that may also come from a mounted file (usernames usually live in the
/// same Secret as the password).
fn plain_or_file(lookup: &dyn Lookup, name: &str) -> Result<Option<String>, Error> {
    Ok(credential(lookup, name)?.map(|s| s.0))
}

fn strip_line_end(mut value: String) -> String {
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    value
}

fn config_error(name: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        name: name.to_string(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------- flags

/// Flags shared by every distributed role.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Name of the DataPipeline; topic, group and index names derive from it.
    #[arg(long, env = env::PIPELINE, default_value = "datapipeline")]
    pub pipeline: String,
    /// Port of the HTTP server with /metrics, /healthz and /readyz (0: no server).
    #[arg(long, env = env::HTTP_PORT, default_value_t = pipeline_config::DEFAULT_HTTP_PORT)]
    pub http_port: u16,
}

/// Kafka connection. The SASL username and password come from `DP_KAFKA_USERNAME` and
/// `DP_KAFKA_PASSWORD` (or their `_FILE` variants).
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, env = env::KAFKA_BOOTSTRAP)]
    pub kafka_bootstrap: String,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(long, env = env::KAFKA_SECURITY_PROTOCOL, default_value = "PLAINTEXT")]
    pub kafka_security_protocol: String,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols only).
    #[arg(long, env = env::KAFKA_SASL_MECHANISM)]
    pub kafka_sasl_mechanism: Option<String>,
    /// PEM file of the CA that signed the brokers' certificates (SSL protocols).
    #[arg(long, env = env::KAFKA_CA_FILE)]
    pub kafka_ca_file: Option<PathBuf>,
    /// PEM certificate presented to the brokers (mutual TLS, SSL protocols); needs
    /// `--kafka-key-file`.
    #[arg(long, env = env::KAFKA_CERT_FILE)]
    pub kafka_cert_file: Option<PathBuf>,
    /// PEM private key of `--kafka-cert-file`.
    #[arg(long, env = env::KAFKA_KEY_FILE)]
    pub kafka_key_file: Option<PathBuf>,
    /// Topic of accepted events (default: `<pipeline>-events`).
    #[arg(long, env = env::EVENTS_TOPIC)]
    pub events_topic: Option<String>,
    /// Dead-letter topic (default: `<pipeline>-events-dlq`).
    #[arg(long, env = env::DLQ_TOPIC)]
    pub dlq_topic: Option<String>,
    /// Consumer group of the process role (default: `<pipeline>-profiles`).
    #[arg(long, env = env::CONSUMER_GROUP)]
    pub consumer_group: Option<String>,
    /// Static group membership (KIP-345): a member restarted with the same id gets its
    /// partitions back at once, without waiting for its old session to time out. Use a
    /// stable id per replica (a StatefulSet pod name); leave unset for Deployments that
    /// scale, since a static member does not leave the group on shutdown.
    #[arg(long, env = env::KAFKA_GROUP_INSTANCE_ID)]
    pub group_instance_id: Option<String>,
}

/// Object store: a local directory (`--store-dir`) or an S3 bucket. The S3 access key comes
/// from `DP_S3_ACCESS_KEY_ID` / `DP_S3_SECRET_ACCESS_KEY` (or `_FILE`); without them the
/// AWS default chain (web identity, instance profile) is used.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Local directory used as the object store instead of S3.
    #[arg(long, env = env::STORE_DIR, conflicts_with = "s3_bucket")]
    pub store_dir: Option<PathBuf>,
    /// S3 bucket.
    #[arg(long, env = env::S3_BUCKET)]
    pub s3_bucket: Option<String>,
    /// S3 endpoint URL for non-AWS servers (MinIO, versitygw, ...).
    #[arg(long, env = env::S3_ENDPOINT)]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = env::S3_REGION, default_value = "us-east-1")]
    pub s3_region: String,
    /// Path-style addressing; defaults to true when an endpoint is given.
    #[arg(long, env = env::S3_PATH_STYLE)]
    pub s3_path_style: Option<bool>,
    /// PEM file of the CA(s) that signed the S3 server's certificate; trusted in place of
    /// the system's roots.
    #[arg(long, env = env::S3_CA_FILE)]
    pub s3_ca_file: Option<PathBuf>,
}

/// Search index. Basic-auth credentials come from `DP_SEARCH_USERNAME` /
/// `DP_SEARCH_PASSWORD` (or `_FILE`).
#[derive(Args, Debug, Clone)]
pub struct SearchArgs {
    /// Elasticsearch or OpenSearch URL, e.g. `https://es:9200`.
    #[arg(long, env = env::SEARCH_URL)]
    pub search_url: String,
    /// Index of profiles (default: `<pipeline>-profiles`).
    #[arg(long, env = env::SEARCH_INDEX)]
    pub search_index: Option<String>,
    /// PEM file of the CA that signed the search cluster's certificate.
    #[arg(long, env = env::SEARCH_CA_FILE)]
    pub search_ca_file: Option<PathBuf>,
}

/// `pipeline-runtime ingest`.
#[derive(Args, Debug, Clone)]
pub struct IngestArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// A local CSV file to ingest (instead of the landing prefix).
    #[arg(long, conflicts_with = "generate")]
    pub input: Option<PathBuf>,
    /// Object-store prefix whose CSV objects are ingested, in key order.
    #[arg(long, env = env::SOURCE_PREFIX, default_value = pipeline_config::layout::LANDING_PREFIX)]
    pub source_prefix: String,
    /// Generate this many events instead of reading files.
    #[arg(long, env = env::GENERATOR_EVENTS)]
    pub generate: Option<u64>,
    /// Seed of the generator.
    #[arg(long, env = env::GENERATOR_SEED, default_value_t = 1)]
    pub seed: u64,
    /// Generate at most this many events per second (with --generate); omit for full speed.
    #[arg(long, env = env::GENERATOR_RATE_PER_SECOND, requires = "generate")]
    pub rate_per_second: Option<u64>,
    /// Partitions of the topics when ingest has to create them.
    #[arg(long, env = env::TOPIC_PARTITIONS, default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor of created topics; -1 = the broker's default.
    #[arg(long, env = env::TOPIC_REPLICATION, default_value_t = -1)]
    pub replication_factor: i32,
    /// Compression of the produced batches.
    #[arg(long, env = env::KAFKA_COMPRESSION, default_value = "lz4",
          value_parser = ["lz4", "zstd", "snappy", "gzip", "none"])]
    pub compression: String,
    /// Keep watching the landing prefix, listing it at this interval (milliseconds).
    #[arg(long, env = env::INGEST_WATCH_INTERVAL_MS)]
    pub watch_interval_ms: Option<u64>,
}

/// `pipeline-runtime process`.
#[derive(Args, Debug, Clone)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub search: SearchArgs,
    /// Milliseconds between checkpoints.
    #[arg(long, env = env::CHECKPOINT_INTERVAL_MS, default_value_t = pipeline_config::DEFAULT_CHECKPOINT_INTERVAL_MS)]
    pub checkpoint_interval_ms: u64,
    /// Events held since the last checkpoint before a checkpoint is forced (bounds memory).
    #[arg(long, env = env::MAX_PENDING_EVENTS, default_value_t = 500_000)]
    pub max_pending_events: usize,
    /// A partition's next full checkpoint (profile snapshot and base state, whose cost
    /// grows with its users) waits this many times the duration of its last one; the
    /// checkpoints between are deltas. Higher: less time on snapshots, staler snapshots
    /// and commits.
    #[arg(long, env = env::FULL_CHECKPOINT_COST_FACTOR, default_value_t = 10)]
    pub full_checkpoint_cost_factor: u32,
    /// Exit (after a final checkpoint) once every assigned partition is caught up and no
    /// event arrived for one checkpoint interval. For batch runs and benchmarks.
    #[arg(long)]
    pub exit_when_idle: bool,
}

// ---------------------------------------------------------------------------- resolved

/// Everything needed to open Kafka clients. Built by [`KafkaArgs::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub bootstrap: String,
    pub security_protocol: SecurityProtocol,
    pub sasl: Option<Sasl>,
    pub ca_file: Option<PathBuf>,
    /// The client's own certificate, for brokers that authenticate clients by TLS.
    pub client_certificate: Option<ClientCertificate>,
    pub events_topic: String,
    pub dlq_topic: String,
    pub consumer_group: String,
    pub group_instance_id: Option<String>,
}

/// PEM files of a TLS client certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    /// The librdkafka `security.protocol` value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password: Secret,
}

const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl KafkaArgs {
    pub fn resolve(
        &self,
        names: &PipelineNames,
        lookup: &dyn Lookup,
    ) -> Result<KafkaSettings, Error> {
        let bootstrap = self.kafka_bootstrap.trim().to_string();
        if bootstrap.is_empty() {
            return Err(config_error(
                env::KAFKA_BOOTSTRAP,
                "is empty; give host:port of a broker",
            ));
        }
        let security_protocol = SecurityProtocol::parse(&self.kafka_security_protocol).ok_or_else(|| {
            config_error(
                env::KAFKA_SECURITY_PROTOCOL,
                format!(
                    "unknown security protocol {:?}; use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
                    self.kafka_security_protocol
                ),
            )
        })?;
        let sasl = if security_protocol.uses_sasl() {
            let mechanism = self
                .kafka_sasl_mechanism
                .clone()
                .unwrap_or_else(|| "SCRAM-SHA-512".to_string())
                .to_ascii_uppercase();
            if !SASL_MECHANISMS.contains(&mechanism.as_str()) {
                return Err(config_error(
                    env::KAFKA_SASL_MECHANISM,
                    format!("unknown SASL mechanism {mechanism:?}; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                ));
            }
            let username = plain_or_file(lookup, env::KAFKA_USERNAME)?.ok_or_else(|| {
                config_error(
                    env::KAFKA_USERNAME,
                    "is required with a SASL security protocol",
                )
            })?;
            let password = credential(lookup, env::KAFKA_PASSWORD)?.ok_or_else(|| {
                config_error(
                    env::KAFKA_PASSWORD,
                    "is required with a SASL security protocol",
                )
            })?;
            Some(Sasl {
                mechanism,
                username,
                password,
            })
        } else {
            None
        };
        let client_certificate = match (&self.kafka_cert_file, &self.kafka_key_file) {
            (Some(cert_file), Some(key_file)) => Some(ClientCertificate {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(config_error(
                    env::KAFKA_KEY_FILE,
                    format!("is required when {} is set", env::KAFKA_CERT_FILE),
                ))
            }
            (None, Some(_)) => {
                return Err(config_error(
                    env::KAFKA_CERT_FILE,
                    format!("is required when {} is set", env::KAFKA_KEY_FILE),
                ))
            }
        };
        Ok(KafkaSettings {
            bootstrap,
            security_protocol,
            sasl,
            ca_file: self.kafka_ca_file.clone(),
            client_certificate,
            events_topic: non_empty_or(&self.events_topic, || names.events_topic()),
            dlq_topic: non_empty_or(&self.dlq_topic, || names.dead_letter_topic()),
            consumer_group: non_empty_or(&self.consumer_group, || names.consumer_group()),
            group_instance_id: self
                .group_instance_id
                .as_deref()
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_string),
        })
    }
}

fn non_empty_or(value: &Option<String>, default: impl FnOnce() -> String) -> String {
    match value {
        Some(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => default(),
    }
}

/// Which object store to open. Built by [`StoreArgs::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    Local { root: PathBuf },
    S3(S3Settings),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    /// Static credentials; `None` = the AWS default credential chain.
    pub credentials: Option<S3Credentials>,
    /// CA certificates to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

impl StoreArgs {
    pub fn resolve(&self, lookup: &dyn Lookup) -> Result<StoreSettings, Error> {
        if let Some(root) = &self.store_dir {
            return Ok(StoreSettings::Local { root: root.clone() });
        }
        let bucket = self
            .s3_bucket
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                config_error(
                    env::S3_BUCKET,
                    format!(
                        "no object store configured: set {} or {}",
                        env::S3_BUCKET,
                        env::STORE_DIR
                    ),
                )
            })?
            .to_string();
        let endpoint = self
            .s3_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        let access_key_id = plain_or_file(lookup, env::S3_ACCESS_KEY_ID)?;
        let secret = credential(lookup, env::S3_SECRET_ACCESS_KEY)?;
        let credentials = match (access_key_id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Some(S3Credentials {
                access_key_id,
                secret_access_key,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(config_error(
                    env::S3_SECRET_ACCESS_KEY,
                    format!("is required when {} is set", env::S3_ACCESS_KEY_ID),
                ))
            }
            (None, Some(_)) => {
                return Err(config_error(
                    env::S3_ACCESS_KEY_ID,
                    format!("is required when {} is set", env::S3_SECRET_ACCESS_KEY),
                ))
            }
        };
        Ok(StoreSettings::S3(S3Settings {
            path_style: self.s3_path_style.unwrap_or(endpoint.is_some()),
            bucket,
            endpoint,
            region: self.s3_region.trim().to_string(),
            credentials,
            ca_file: self.s3_ca_file.clone(),
        }))
    }
}

/// Search connection. Built by [`SearchArgs::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchSettings {
    pub url: String,
    pub index: String,
    pub credentials: Option<(String, Secret)>,
    pub ca_file: Option<PathBuf>,
}

impl SearchArgs {
    pub fn resolve(
        &self,
        names: &PipelineNames,
        lookup: &dyn Lookup,
    ) -> Result<SearchSettings, Error> {
        search_settings(
            &self.search_url,
            self.search_index.as_deref(),
            self.search_ca_file.clone(),
            names,
            lookup,
        )
    }
}

/// Search settings from a URL and an optional index name, credentials from the lookup.
pub fn search_settings(
    url: &str,
    index: Option<&str>,
    ca_file: Option<PathBuf>,
    names: &PipelineNames,
    lookup: &dyn Lookup,
) -> Result<SearchSettings, Error> {
    let url = url.trim().trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(config_error(
            env::SEARCH_URL,
            format!("{url:?} is not an http:// or https:// URL"),
        ));
    }
    let index = non_empty_or(&index.map(str::to_string), || names.profiles_index());
    if !valid_index_name(&index) {
        return Err(config_error(
            env::SEARCH_INDEX,
            format!("{index:?} is not a valid index name (lowercase, no spaces or \\/*?\"<>|,#:, not starting with -_+)"),
        ));
    }
    let username = plain_or_file(lookup, env::SEARCH_USERNAME)?;
    let password = credential(lookup, env::SEARCH_PASSWORD)?;
    let credentials = match (username, password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(config_error(
                env::SEARCH_PASSWORD,
                format!("is required when {} is set", env::SEARCH_USERNAME),
            ))
        }
        (None, Some(_)) => {
            return Err(config_error(
                env::SEARCH_USERNAME,
                format!("is required when {} is set", env::SEARCH_PASSWORD),
            ))
        }
    };
    Ok(SearchSettings {
        url,
        index,
        credentials,
        ca_file,
    })
}

/// The index-name rules both Elasticsearch and OpenSearch enforce.
pub fn valid_index_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with(['-', '_', '+'])
        && name
            .chars()
            .all(|c| !c.is_ascii_uppercase() && !" \\/*?\"<>|,#:".contains(c))
}

/// Settings of the process role's checkpoint loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    pub interval: Duration,
    pub max_pending_events: usize,
    pub full_checkpoint_cost_factor: u32,
    pub exit_when_idle: bool,
}

impl ProcessArgs {
    pub fn checkpoint_settings(&self) -> Result<CheckpointSettings, Error> {
        if self.checkpoint_interval_ms == 0 {
            return Err(config_error(
                env::CHECKPOINT_INTERVAL_MS,
                "must be at least 1",
            ));
        }
        if self.max_pending_events == 0 {
            return Err(config_error(env::MAX_PENDING_EVENTS, "must be at least 1"));
        }
        Ok(CheckpointSettings {
            interval: Duration::from_millis(self.checkpoint_interval_ms),
            max_pending_events: self.max_pending_events,
            full_checkpoint_cost_factor: self.full_checkpoint_cost_factor,
            exit_when_idle: self.exit_when_idle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        process: ProcessArgs,
    }

    fn lookup(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(args: &[&str]) -> ProcessArgs {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        TestCli::try_parse_from(argv).expect("flags parse").process
    }

    const MINIMAL: [&str; 6] = [
        "--kafka-bootstrap",
        "k:9092",
        "--s3-bucket",
        "lake",
        "--search-url",
        "http://os:9200/",
    ];

    #[test]
    fn secret_debug_and_display_redact() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        let settings = S3Credentials {
            access_key_id: "AK".into(),
            secret_access_key: s,
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    /// Every settings type that carries a credential formats without it.
    #[test]
    fn settings_with_credentials_debug_without_them() {
        let sasl = Sasl {
            mechanism: "SCRAM-SHA-512".into(),
            username: "runtime".into(),
            password: Secret::new("kafka-hunter2"),
        };
        let kafka = KafkaSettings {
            bootstrap: "k:9092".into(),
            security_protocol: SecurityProtocol::SaslSsl,
            sasl: Some(sasl.clone()),
            ca_file: None,
            client_certificate: None,
            events_topic: "shop-events".into(),
            dlq_topic: "shop-events-dlq".into(),
            consumer_group: "shop-profiles".into(),
            group_instance_id: None,
        };
        let search = SearchSettings {
            url: "https://os:9200".into(),
            index: "shop-profiles".into(),
            credentials: Some(("elastic".into(), Secret::new("search-hunter2"))),
            ca_file: None,
        };
        let store = S3Settings {
            bucket: "lake".into(),
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            credentials: Some(S3Credentials {
                access_key_id: "AK".into(),
                secret_access_key: Secret::new("s3-hunter2"),
            }),
            ca_file: None,
        };
        for debug in [
            format!("{sasl:?}"),
            format!("{kafka:?}"),
            format!("{search:?}"),
            format!("{store:?}"),
        ] {
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("Secret(***)"), "{debug}");
        }
    }

    #[test]
    fn credential_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cr3t\r\n").unwrap();
        let from_file = lookup(&[("DP_SEARCH_PASSWORD_FILE", file.to_str().unwrap())]);
        assert_eq!(
            credential(&from_file, env::SEARCH_PASSWORD).unwrap(),
            Some(Secret::new("s3cr3t"))
        );
        let direct = lookup(&[("DP_SEARCH_PASSWORD", "pw")]);
        assert_eq!(
            credential(&direct, env::SEARCH_PASSWORD).unwrap(),
            Some(Secret::new("pw"))
        );
        assert_eq!(
            credential(&lookup(&[]), env::SEARCH_PASSWORD).unwrap(),
            None
        );
    }

    #[test]
    fn credential_file_keeps_inner_whitespace_and_only_one_line_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, " a b \n\n").unwrap();
        let l = lookup(&[("DP_KAFKA_PASSWORD_FILE", file.to_str().unwrap())]);
        assert_eq!(
            credential(&l, env::KAFKA_PASSWORD).unwrap(),
            Some(Secret::new(" a b \n"))
        );
    }

    #[test]
    fn credential_both_set_or_missing_file_is_an_error_naming_the_variable() {
        let both = lookup(&[("DP_KAFKA_PASSWORD", "a"), ("DP_KAFKA_PASSWORD_FILE", "/x")]);
        let err = credential(&both, env::KAFKA_PASSWORD)
            .unwrap_err()
            .to_string();
        assert!(err.contains("DP_KAFKA_PASSWORD_FILE"), "{err}");
        let missing = lookup(&[("DP_KAFKA_PASSWORD_FILE", "/nonexistent/pw")]);
        let err = credential(&missing, env::KAFKA_PASSWORD)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/pw"), "{err}");
        assert!(!err.contains("hunter"), "{err}");
    }

    #[test]
    fn kafka_defaults_derive_names_from_the_pipeline() {
        let args = parse(&MINIMAL);
        let names = PipelineNames::new(&args.common.pipeline);
        let k = args.kafka.resolve(&names, &lookup(&[])).unwrap();
        assert_eq!(
            k,
            KafkaSettings {
                bootstrap: "k:9092".into(),
                security_protocol: SecurityProtocol::Plaintext,
                sasl: None,
                ca_file: None,
                client_certificate: None,
                events_topic: "datapipeline-events".into(),
                dlq_topic: "datapipeline-events-dlq".into(),
                consumer_group: "datapipeline-profiles".into(),
                group_instance_id: None,
            }
        );
    }

    #[test]
    fn kafka_sasl_needs_credentials_and_a_known_mechanism() {
        let mut argv = MINIMAL.to_vec();
        argv.extend([
            "--kafka-security-protocol",
            "sasl_ssl",
            "--pipeline",
            "shop",
        ]);
        let args = parse(&argv);
        let names = PipelineNames::new("shop");
        let err = args
            .kafka
            .resolve(&names, &lookup(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DP_KAFKA_USERNAME"), "{err}");
        let creds = lookup(&[("DP_KAFKA_USERNAME", "u"), ("DP_KAFKA_PASSWORD", "p")]);
        let k = args.kafka.resolve(&names, &creds).unwrap();
        assert_eq!(k.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            k.sasl,
            Some(Sasl {
                mechanism: "SCRAM-SHA-512".into(),
                username: "u".into(),
                password: Secret::new("p")
            })
        );
        assert_eq!(k.events_topic, "shop-events");

        argv.extend(["--kafka-sasl-mechanism", "GSSAPI"]);
        let err = parse(&argv)
            .kafka
            .resolve(&names, &creds)
            .unwrap_err()
            .to_string();
        assert!(err.contains("GSSAPI"), "{err}");
    }

    #[test]
    fn unknown_security_protocol_is_refused() {
        let mut argv = MINIMAL.to_vec();
        argv.extend(["--kafka-security-protocol", "TLS"]);
        let err = parse(&argv)
            .kafka
            .resolve(&PipelineNames::new("p"), &lookup(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DP_KAFKA_SECURITY_PROTOCOL") && err.contains("TLS"),
            "{err}"
        );
    }

    #[test]
    fn s3_settings_path_style_follows_endpoint_unless_given() {
        let mut argv = MINIMAL.to_vec();
        argv.extend(["--s3-endpoint", "https://127.0.0.1:9000"]);
        argv.extend(["--s3-ca-file", "/etc/ca/ca.crt"]);
        let creds = lookup(&[
            ("DP_S3_ACCESS_KEY_ID", "AK"),
            ("DP_S3_SECRET_ACCESS_KEY", "SK"),
        ]);
        let s = parse(&argv).store.resolve(&creds).unwrap();
        assert_eq!(
            s,
            StoreSettings::S3(S3Settings {
                bucket: "lake".into(),
                endpoint: Some("https://127.0.0.1:9000".into()),
                region: "us-east-1".into(),
                path_style: true,
                credentials: Some(S3Credentials {
                    access_key_id: "AK".into(),
                    secret_access_key: Secret::new("SK"),
                }),
                ca_file: Some("/etc/ca/ca.crt".into()),
            })
        );
        let aws = parse(&MINIMAL).store.resolve(&lookup(&[])).unwrap();
        assert!(matches!(
            aws,
            StoreSettings::S3(S3Settings {
                path_style: false,
                credentials: None,
                ..
            })
        ));
        argv.extend(["--s3-path-style", "false"]);
        let s = parse(&argv).store.resolve(&creds).unwrap();
        assert!(matches!(
            s,
            StoreSettings::S3(S3Settings {
                path_style: false,
                ..
            })
        ));
    }

    #[test]
    fn a_kafka_client_certificate_needs_both_files() {
        let names = PipelineNames::new("shop");
        let mut argv = MINIMAL.to_vec();
        argv.extend(["--kafka-cert-file", "/k/tls.crt"]);
        let err = parse(&argv)
            .kafka
            .resolve(&names, &lookup(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DP_KAFKA_KEY_FILE")
                && err.contains("is required when DP_KAFKA_CERT_FILE is set"),
            "{err}"
        );
        argv.extend(["--kafka-key-file", "/k/tls.key"]);
        let k = parse(&argv).kafka.resolve(&names, &lookup(&[])).unwrap();
        assert_eq!(
            k.client_certificate,
            Some(ClientCertificate {
                cert_file: "/k/tls.crt".into(),
                key_file: "/k/tls.key".into(),
            })
        );
    }

    #[test]
    fn half_given_s3_credentials_are_refused() {
        let only_key = lookup(&[("DP_S3_ACCESS_KEY_ID", "AK")]);
        let err = parse(&MINIMAL)
            .store
            .resolve(&only_key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("DP_S3_SECRET_ACCESS_KEY"), "{err}");
    }

    #[test]
    fn store_dir_or_bucket_is_required() {
        let args = parse(&["--kafka-bootstrap", "k:1", "--search-url", "http://s"]);
        let err = args.store.resolve(&lookup(&[])).unwrap_err().to_string();
        assert!(
            err.contains("DP_S3_BUCKET") && err.contains("DP_STORE_DIR"),
            "{err}"
        );
        let local = parse(&[
            "--kafka-bootstrap",
            "k:1",
            "--search-url",
            "http://s",
            "--store-dir",
            "/d",
        ]);
        assert_eq!(
            local.store.resolve(&lookup(&[])).unwrap(),
            StoreSettings::Local { root: "/d".into() }
        );
    }

    #[test]
    fn search_settings_trim_url_and_default_index() {
        let args = parse(&MINIMAL);
        let names = PipelineNames::new("shop");
        let s = args
            .search
            .resolve(
                &names,
                &lookup(&[
                    ("DP_SEARCH_USERNAME", "admin"),
                    ("DP_SEARCH_PASSWORD", "pw"),
                ]),
            )
            .unwrap();
        assert_eq!(
            s,
            SearchSettings {
                url: "http://os:9200".into(),
                index: "shop-profiles".into(),
                credentials: Some(("admin".into(), Secret::new("pw"))),
                ca_file: None,
            }
        );
    }

    #[test]
    fn search_url_and_index_are_validated() {
        let names = PipelineNames::new("shop");
        let err = search_settings("os:9200", None, None, &names, &lookup(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DP_SEARCH_URL"), "{err}");
        let err = search_settings("http://os", Some("Bad Index"), None, &names, &lookup(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("DP_SEARCH_INDEX"), "{err}");
        assert!(valid_index_name("shop-profiles"));
        assert!(!valid_index_name("_x"));
        assert!(!valid_index_name("a:b"));
    }

    #[test]
    fn checkpoint_settings_from_flags() {
        let mut argv = MINIMAL.to_vec();
        argv.extend([
            "--checkpoint-interval-ms",
            "250",
            "--max-pending-events",
            "1000",
            "--full-checkpoint-cost-factor",
            "40",
        ]);
        let c = parse(&argv).checkpoint_settings().unwrap();
        assert_eq!(
            c,
            CheckpointSettings {
                interval: Duration::from_millis(250),
                max_pending_events: 1000,
                full_checkpoint_cost_factor: 40,
                exit_when_idle: false,
            }
        );
        assert_eq!(
            parse(&MINIMAL)
                .checkpoint_settings()
                .unwrap()
                .full_checkpoint_cost_factor,
            10
        );
        let mut zero = MINIMAL.to_vec();
        zero.extend(["--checkpoint-interval-ms", "0"]);
        assert!(parse(&zero).checkpoint_settings().is_err());
    }
}
