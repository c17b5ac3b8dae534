//! What one reconcile found: either a problem that stops it before anything is applied
//! (missing Secret, impossible spec) or the readiness of the children it applied. Pure data
//! passed from the I/O steps to the pure status computation.

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::{
    autoscale::evaluation::FlowHealth,
    problem::{Component, Problem},
};
use crate::crd::{AutoscalerStatus, SearchEngine, ThroughputStatus};

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

/// Why a component's pods cannot start: a reason of `reasons::POD_PROBLEMS` and a message
/// naming the pod, the container and what Kubernetes said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    pub reason: &'static str,
    pub message: String,
}

/// The most actionable pod problem of each component, as read from its pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodProblems {
    pub kafka: Option<PodProblem>,
    pub object_store: Option<PodProblem>,
    pub search: Option<PodProblem>,
    pub runtime: Option<PodProblem>,
}

impl PodProblems {
    pub fn of(&self, component: Component) -> Option<&PodProblem> {
        match component {
            Component::Kafka => self.kafka.as_ref(),
            Component::ObjectStore => self.object_store.as_ref(),
            Component::Search => self.search.as_ref(),
            Component::Runtime => self.runtime.as_ref(),
        }
    }

    pub fn slot(&mut self, component: Component) -> &mut Option<PodProblem> {
        match component {
            Component::Kafka => &mut self.kafka,
            Component::ObjectStore => &mut self.object_store,
            Component::Search => &mut self.search,
            Component::Runtime => &mut self.runtime,
        }
    }
}

/// Facts about the pipeline that the status reports but that are not children's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineFacts {
    pub paused: bool,
    /// Where an external service lives, for messages (`None` when managed).
    pub kafka_external: Option<String>,
    pub object_store_external: Option<String>,
    pub search_external: Option<String>,
    /// The search engine, managed or external, for messages.
    pub search_engine: SearchEngine,
    /// Label selector of the runtime processing pods.
    pub runtime_selector: String,
    pub name: String,
    pub namespace: String,
}

/// The outcome of one reconcile, input of `compute_status`.
// One value per reconcile, passed by reference and never stored: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// Nothing was applied.
    Blocked(Problem),
    /// Every child was applied; their readiness and the pipeline's measured throughput.
    Applied {
        children: Box<ChildrenState>,
        /// Why pods cannot start, read this visit (none when every workload was ready).
        pods: PodProblems,
        facts: PipelineFacts,
        /// `None` = not measured this time; the previous measurement stays.
        throughput: Option<ThroughputStatus>,
        /// The autoscaler's decision; `None` when autoscaling is off.
        autoscaler: Option<AutoscalerStatus>,
        /// Lag growth and Kafka reachability.
        flow: FlowHealth,
    },
}
