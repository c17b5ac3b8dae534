//! The crate's error type: one enum, a variant per step. No I/O.
//!
//! Row-level problems in input data are *not* errors: they are [`crate::event::Rejected`]
//! values, counted and dead-lettered. These variants are for failures that stop a step.

use std::path::PathBuf;

/// Every failure of the runtime library, grouped by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an input stream (file, object body) failed.
    #[error("{input}: read failed: {error}")]
    Read {
        input: String,
        #[source]
        error: std::io::Error,
    },
    /// The input's header line is missing or unusable; no row of it can be read.
    #[error("{input}: line 1: bad header: {reason}")]
    Header { input: String, reason: String },
    /// A local file or directory could not be created, written or read.
    #[error("{}: {error}", path.display())]
    File {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// A JSON event (Kafka message value) could not be decoded.
    #[error("event JSON: {0}")]
    EventJson(String),
    /// A profile value would overflow (names the user); see
    /// [`crate::profile::ProfileError`].
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    /// A serialized profile state could not be decoded.
    #[error("profile state: {0}")]
    ProfileState(String),
    /// Building an Arrow batch failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Encoding or decoding Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Parquet content does not have the schema this crate writes.
    #[error("unexpected Parquet schema: {0}")]
    Schema(String),
    /// JSON output (summary, rejected rows) could not be produced.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A worker thread of the embedded run stopped unexpectedly.
    #[error("worker thread failed: {0}")]
    Worker(String),
    /// Configuration from flags or environment is invalid (`name`: the variable or flag).
    #[error("configuration: {name}: {reason}")]
    Config { name: String, reason: String },
    /// An object-store operation failed; `retryable` says whether trying again can help.
    #[error("object store: {op} {key}: {message}")]
    Store {
        op: &'static str,
        key: String,
        retryable: bool,
        message: String,
    },
    /// A conditional write found the object changed by another writer (HTTP 412): the
    /// writer no longer owns what it was writing (see [`crate::store::Precondition`]).
    #[error("object store: {key} was changed by another writer ({detail})")]
    Conflict { key: String, detail: String },
    /// A Kafka client operation failed.
    #[error("kafka: {step}: {message}")]
    Kafka {
        step: &'static str,
        retryable: bool,
        message: String,
    },
    /// A search-index (Elasticsearch/OpenSearch) request failed.
    #[error("search: {step}: {message}")]
    Search {
        step: &'static str,
        retryable: bool,
        message: String,
    },
    /// Durable runtime state (ingest progress, process checkpoint) is unusable.
    #[error("state {key}: {reason}")]
    State { key: String, reason: String },
    /// The events topic is not the log the process state was built from (see
    /// [`crate::process::continuity`]); the message says what happened and how to resume.
    #[error("{0}")]
    LogChanged(String),
    /// Another ingest of the pipeline took over the transactional id (see
    /// [`crate::kafka::producer`]): this one must stop publishing.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A shutdown was requested while a role still waited for a service it needs.
    #[error("stopped while waiting for {what}: {last_error}")]
    StoppedWaiting { what: String, last_error: String },
    /// The HTTP server (metrics and probes) could not start.
    #[error("http server: {0}")]
    Http(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::File`] for `path`.
    pub fn file(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::File {
            path: path.into(),
            error,
        }
    }
}
