//! `Child`: one desired child of a pipeline, a typed Kubernetes object tagged with the role
//! whose readiness it carries, as the builders make it and the apply step sends it. Pure.

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{ConfigMap, Secret, Service},
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::names::{self, Role};

/// One desired child, tagged with the role whose readiness it carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    Secret(Secret),
    ConfigMap(ConfigMap),
    Service(Service),
    StatefulSet(StatefulSet, Role),
    PodDisruptionBudget(PodDisruptionBudget),
    Job(Job, Role),
    Deployment(Deployment, Role),
}

impl Child {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Secret(_) => "Secret",
            Self::ConfigMap(_) => "ConfigMap",
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
