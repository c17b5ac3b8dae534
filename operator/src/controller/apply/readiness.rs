//! The readiness of the applied children, as the API server returned them: per workload
//! (`WorkloadState`), per Job (`JobState`), the ingest role with what the operator did
//! about a failed generator Job (`IngestState`, `Recovery`), and the children it could not
//! apply (`ApplyFailure`). Pure data, read by the status, the pod reader and the visits.

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};

use crate::controller::problem::Component;

/// Readiness of a StatefulSet or Deployment as the API server returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadState {
    pub kind: &'static str,
    pub name: String,
    /// `spec.replicas`.
    pub desired: i32,
    /// `status.replicas`: pods that exist.
    pub current: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// The workload controller has seen the latest spec (`status.observedGeneration`).
    pub up_to_date: bool,
}

impl WorkloadState {
    pub fn is_ready(&self) -> bool {
        self.up_to_date && self.ready >= self.desired
    }

    pub fn from_statefulset(sts: &StatefulSet) -> Self {
        let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = sts.status.clone().unwrap_or_default();
        Self {
            kind: "StatefulSet",
            name: sts.metadata.name.clone().unwrap_or_default(),
            desired,
            current: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            up_to_date: status.observed_generation.unwrap_or(0)
                >= sts.metadata.generation.unwrap_or(0),
        }
    }

    pub fn from_deployment(deployment: &Deployment) -> Self {
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let status = deployment.status.clone().unwrap_or_default();
        Self {
            kind: "Deployment",
            name: deployment.metadata.name.clone().unwrap_or_default(),
            desired,
            current: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            up_to_date: status.observed_generation.unwrap_or(0)
                >= deployment.metadata.generation.unwrap_or(0),
        }
    }
}

/// Progress of a Job as the API server returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    pub name: String,
    pub outcome: JobOutcome,
    /// `spec.suspend`.
    pub suspended: bool,
    /// Why it failed: `<reason>: <message>` of its `Failed` condition.
    pub failure: Option<String>,
    /// It is being deleted (`metadata.deletionTimestamp`).
    pub deleting: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn from_job(job: &Job) -> Self {
        let status = job.status.clone().unwrap_or_default();
        let has_condition = |kind: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == kind && c.status == "True")
        };
        let outcome = if has_condition("Complete") || status.succeeded.unwrap_or(0) > 0 {
            JobOutcome::Succeeded
        } else if has_condition("Failed") {
            JobOutcome::Failed
        } else {
            JobOutcome::Running
        };
        let failure = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed" && c.status == "True")
            .filter(|_| outcome == JobOutcome::Failed)
            .map(|c| {
                format!(
                    "{}: {}",
                    c.reason.as_deref().unwrap_or("Failed"),
                    c.message.as_deref().unwrap_or("no message")
                )
            });
        Self {
            name: job.metadata.name.clone().unwrap_or_default(),
            outcome,
            suspended: job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false),
            failure,
            deleting: job.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// How the ingest role runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestState {
    /// Watching the landing prefix.
    Deployment(WorkloadState),
    /// Generating a fixed number of events, and what the operator did about a failure.
    Job { job: JobState, recovery: Recovery },
    /// The generator Job is not created yet: it waits for these components to be ready
    /// (display names, e.g. `Kafka`).
    Waiting {
        job: String,
        waiting_for: Vec<&'static str>,
    },
}

/// What the operator does about a failed generator Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The Job has not failed.
    NotNeeded,
    /// It failed and was deleted at `at`, so that the next apply creates it again: the
    /// `attempt`-th recreation of this Job.
    Recreated { attempt: i32, at: Time },
    /// It failed and is already being deleted (a recreation under way).
    Deleting,
    /// It failed after `recreations` recreations: the operator leaves it to the user.
    GivenUp { recreations: i32 },
}

/// A child the API server refused to apply (the other children were applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyFailure {
    /// Whose condition reports it.
    pub component: Component,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// What the API server said (for a 422, the field it refused and why).
    pub message: String,
}

/// Readiness of everything applied in one reconcile. `None` = external (not deployed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildrenState {
    pub kafka: Option<WorkloadState>,
    pub kafka_topics: Option<JobState>,
    pub object_store: Option<WorkloadState>,
    pub bucket: Option<JobState>,
    pub search: Option<WorkloadState>,
    pub runtime: WorkloadState,
    pub ingest: IngestState,
    /// Children that could not be applied this visit.
    pub apply_failures: Vec<ApplyFailure>,
}
