//! The operator library's error type: one variant per reconcile step, each naming the
//! object involved. Problems a user must fix (missing Secret, impossible spec) are not
//! errors: they become status conditions (see `controller::problem::Problem`).
//! API errors are boxed: `kube::Error` is large and most results carry no error.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("reading Secret {namespace}/{name}: {source}")]
    Dereference {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("generating credentials for {what}: {reason}")]
    Credentials { what: &'static str, reason: String },

    #[error("building {what}: {reason}")]
    Build { what: String, reason: String },

    #[error("applying {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("listing {kind} in {namespace} to remove orphans: {source}")]
    ListOrphans {
        kind: &'static str,
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("deleting orphaned {kind} {namespace}/{name}: {source}")]
    DeleteOrphan {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("reading Job {namespace}/{name}: {source}")]
    ReadJob {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("deleting the failed Job {namespace}/{name} to run it again: {source}")]
    RecreateJob {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("writing the status of DataPipeline {namespace}/{name}: {source}")]
    WriteStatus {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("DataPipeline has no {0}")]
    MissingMetadata(&'static str),

    #[error("reading Lease {namespace}/{name} for leader election: {source}")]
    ReadLease {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("writing Lease {namespace}/{name} for leader election: {source}")]
    WriteLease {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("leader election timing: {0}")]
    LeaderTiming(String),
}

impl Error {
    /// Fixed label for the failures metric; never derived from a message.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Dereference { .. } => "dereference",
            Self::Credentials { .. } => "credentials",
            Self::Build { .. } => "build",
            Self::Apply { .. } => "apply",
            Self::ListOrphans { .. } | Self::DeleteOrphan { .. } => "orphan_cleanup",
            Self::ReadJob { .. } | Self::RecreateJob { .. } => "ingest_job",
            Self::WriteStatus { .. } => "status",
            Self::MissingMetadata(_) => "metadata",
            Self::ReadLease { .. } | Self::WriteLease { .. } | Self::LeaderTiming(_) => {
                "leader_election"
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
