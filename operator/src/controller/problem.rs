//! What stops a visit before anything is applied (`Problem`: a missing Secret or key, an
//! impossible spec) and the component whose condition reports it (`Component`, also the
//! owner of a child's role). Shared by dereferencing, validation, applying and the status,
//! which all import it downward. Pure data, no I/O.

use super::build::names::Role;
use crate::crd::{conditions::reasons, status::Phase, SECRET_USE_LABEL, SECRET_USE_VALUE};

/// The parts of a pipeline that have a condition of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Kafka,
    ObjectStore,
    Search,
    Runtime,
}

impl Component {
    /// The component whose condition reports on children of this role (a setup Job
    /// reports with its service, the ingest role with the runtime).
    pub fn of_role(role: Role) -> Self {
        match role {
            Role::Kafka | Role::KafkaTopics => Self::Kafka,
            Role::ObjectStore | Role::Bucket => Self::ObjectStore,
            Role::Search => Self::Search,
            Role::Runtime | Role::Ingest => Self::Runtime,
        }
    }

    pub fn condition_type(self) -> &'static str {
        use crate::crd::conditions::types;
        match self {
            Self::Kafka => types::KAFKA_READY,
            Self::ObjectStore => types::OBJECT_STORE_READY,
            Self::Search => types::SEARCH_READY,
            Self::Runtime => types::RUNTIME_READY,
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Self::Kafka => "Kafka",
            Self::ObjectStore => "object store",
            Self::Search => "search",
            Self::Runtime => "runtime",
        }
    }
}

/// Something the user must fix before the operator can do anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    SecretNotFound {
        component: Component,
        namespace: String,
        name: String,
        /// The spec field naming the Secret, e.g. `spec.kafka.external.secretRef`.
        field: String,
        /// Keys the Secret must hold.
        keys: Vec<String>,
    },
    SecretKeyNotFound {
        component: Component,
        namespace: String,
        name: String,
        field: String,
        key: String,
    },
    /// The Secret exists but lacks the opt-in label (`crd::SECRET_USE_LABEL`): the
    /// operator read its metadata only.
    SecretNotOptedIn {
        component: Component,
        namespace: String,
        name: String,
        field: String,
    },
    InvalidSpec {
        field: String,
        message: String,
    },
}

impl Problem {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => reasons::SECRET_NOT_FOUND,
            Self::SecretKeyNotFound { .. } => reasons::SECRET_KEY_NOT_FOUND,
            Self::SecretNotOptedIn { .. } => reasons::SECRET_NOT_OPTED_IN,
            Self::InvalidSpec { .. } => reasons::INVALID_SPEC,
        }
    }

    /// A message that says what is wrong and what to do about it.
    pub fn message(&self) -> String {
        match self {
            Self::SecretNotFound {
                namespace,
                name,
                field,
                keys,
                ..
            } => format!(
                "Secret {namespace}/{name} (named by {field}) does not exist: create it with the keys {} or correct {field}",
                keys.join(" and ")
            ),
            Self::SecretKeyNotFound {
                namespace,
                name,
                field,
                key,
                ..
            } => format!(
                "Secret {namespace}/{name} (named by {field}) has no key {key:?}: add the key or name the right one in the spec"
            ),
            Self::SecretNotOptedIn {
                namespace,
                name,
                field,
                ..
            } => format!(
                "Secret {namespace}/{name} (named by {field}) is not used: it lacks the label {SECRET_USE_LABEL}={SECRET_USE_VALUE} by which a Secret opts in to DataPipeline use; if this pipeline may read it, run `kubectl label secret {name} -n {namespace} {SECRET_USE_LABEL}={SECRET_USE_VALUE}`"
            ),
            Self::InvalidSpec { field, message } => format!("{field}: {message}"),
        }
    }

    /// The phase a pipeline with this problem is in: a missing Secret is expected to
    /// appear (Pending); an impossible spec needs an edit (Failed).
    pub fn phase(&self) -> Phase {
        match self {
            Self::SecretNotFound { .. }
            | Self::SecretKeyNotFound { .. }
            | Self::SecretNotOptedIn { .. } => Phase::Pending,
            Self::InvalidSpec { .. } => Phase::Failed,
        }
    }

    /// The component whose condition the problem belongs to, if any.
    pub fn component(&self) -> Option<Component> {
        match self {
            Self::SecretNotFound { component, .. }
            | Self::SecretKeyNotFound { component, .. }
            | Self::SecretNotOptedIn { component, .. } => Some(*component),
            Self::InvalidSpec { .. } => None,
        }
    }

    /// Fixed metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::SecretNotFound { .. } => "secret_not_found",
            Self::SecretKeyNotFound { .. } => "secret_key_not_found",
            Self::SecretNotOptedIn { .. } => "secret_not_opted_in",
            Self::InvalidSpec { .. } => "invalid_spec",
        }
    }
}
