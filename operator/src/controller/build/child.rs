//! `Child`: one desired child of a pipeline, a typed Kubernetes object tagged with the role
//! whose readiness it carries, as the builders make it and the apply step sends it. Its
//! `Debug` never prints a Secret's values (generated keys, passwords, the TLS key). Pure.

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{ConfigMap, Secret, Service},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::names::{self, Role};

/// One desired child, tagged with the role whose readiness it carries.
#[derive(Clone, PartialEq)]
pub enum Child {
    Secret(Secret),
    ConfigMap(ConfigMap),
    NetworkPolicy(NetworkPolicy),
    Service(Service),
    StatefulSet(StatefulSet, Role),
    PodDisruptionBudget(PodDisruptionBudget),
    Job(Job, Role),
    Deployment(Deployment, Role),
}

/// A Secret as `Debug` shows it: metadata, type and the keys of its data, each value
/// `<redacted>`.
struct RedactedSecret<'a>(&'a Secret);

impl std::fmt::Debug for RedactedSecret<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |keys: Option<Vec<&String>>| {
            keys.map(|keys| {
                keys.into_iter()
                    .map(|k| (k.clone(), "<redacted>"))
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
        };
        let secret = self.0;
        f.debug_struct("Secret")
            .field("metadata", &secret.metadata)
            .field("type_", &secret.type_)
            .field(
                "data",
                &redacted(secret.data.as_ref().map(|d| d.keys().collect())),
            )
            .field(
                "string_data",
                &redacted(secret.string_data.as_ref().map(|d| d.keys().collect())),
            )
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(o) => f.debug_tuple("Secret").field(&RedactedSecret(o)).finish(),
            Self::ConfigMap(o) => f.debug_tuple("ConfigMap").field(o).finish(),
            Self::NetworkPolicy(o) => f.debug_tuple("NetworkPolicy").field(o).finish(),
            Self::Service(o) => f.debug_tuple("Service").field(o).finish(),
            Self::StatefulSet(o, role) => {
                f.debug_tuple("StatefulSet").field(o).field(role).finish()
            }
            Self::PodDisruptionBudget(o) => f.debug_tuple("PodDisruptionBudget").field(o).finish(),
            Self::Job(o, role) => f.debug_tuple("Job").field(o).field(role).finish(),
            Self::Deployment(o, role) => f.debug_tuple("Deployment").field(o).field(role).finish(),
        }
    }
}

impl Child {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Secret(_) => "Secret",
            Self::ConfigMap(_) => "ConfigMap",
            Self::NetworkPolicy(_) => "NetworkPolicy",
            Self::Service(_) => "Service",
            Self::StatefulSet(..) => "StatefulSet",
            Self::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Self::Job(..) => "Job",
            Self::Deployment(..) => "Deployment",
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Secret(o) => &o.metadata,
            Self::ConfigMap(o) => &o.metadata,
            Self::NetworkPolicy(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::StatefulSet(o, _) => &o.metadata,
            Self::PodDisruptionBudget(o) => &o.metadata,
            Self::Job(o, _) => &o.metadata,
            Self::Deployment(o, _) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// The role the child serves: tagged on workloads, read from the component label of
    /// the others.
    pub fn role(&self) -> Option<Role> {
        match self {
            Self::StatefulSet(_, role) | Self::Job(_, role) | Self::Deployment(_, role) => {
                Some(*role)
            }
            _ => self
                .meta()
                .labels
                .as_ref()?
                .get(names::LABEL_COMPONENT)
                .and_then(|label| Role::from_component(label)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{
        build::desired_children,
        fixtures::{fixed_credentials, managed_plan},
    };

    #[test]
    fn debug_never_prints_a_secrets_values() {
        let children = desired_children(&managed_plan(), &fixed_credentials()).expect("built");
        let secrets: Vec<&Child> = children
            .iter()
            .filter(|c| matches!(c, Child::Secret(_)))
            .collect();
        assert_eq!(secrets.len(), 9);
        let debug = format!("{secrets:?}");
        for value in [
            "minio-secret-key",
            "elastic-password",
            "node-key-pem",
            "pipeline-ca-key-pem",
            "kafka-key-pem",
            "minio-key-pem",
            "kafka-admin-key-pem",
            "kafka-runtime-key-pem",
        ] {
            assert!(!debug.contains(value), "{debug}");
        }
        // What it does show: names and keys.
        for shown in [
            "shop-minio-credentials",
            "secretAccessKey",
            "shop-es-elastic-user",
            "tls.key",
            "<redacted>",
        ] {
            assert!(debug.contains(shown), "{shown} missing: {debug}");
        }
    }
}
