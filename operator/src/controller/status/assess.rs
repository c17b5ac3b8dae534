//! The verdict on each component of a pipeline (`Assessment`: ready or not, the reason
//! and an actionable message, the replicas), from which `compute` derives its condition and
//! its `status.components` entry: a managed workload and its setup Job, an external
//! service, the runtime with its ingest role and the generator Job's recoveries, then why
//! pods cannot start and which child the API server refused. Pure, no I/O.

use super::{
    findings::PipelineFacts,
    pods::{PodProblem, PodProblems},
};
use crate::{
    controller::{
        apply::{
            generator_job::MAX_RECREATIONS,
            readiness::{
                ApplyFailure, ChildrenState, IngestState, JobOutcome, JobState, Recovery,
                WorkloadState,
            },
        },
        problem::Component,
    },
    crd::{conditions::reasons, ComponentHealth, IngestJobStatus},
};

/// The verdict on one component, from which its condition and health are derived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Assessment {
    pub(super) ready: bool,
    pub(super) reason: &'static str,
    pub(super) message: String,
    managed: bool,
    ready_replicas: Option<i32>,
    desired_replicas: Option<i32>,
}

impl Assessment {
    fn external(what: &str, address: &str) -> Self {
        Self {
            ready: true,
            reason: reasons::EXTERNAL,
            message: format!(
                "external {what} at {address}; the operator does not probe external services, the runtime reports connection errors in its logs"
            ),
            managed: false,
            ready_replicas: None,
            desired_replicas: None,
        }
    }

    pub(super) fn health(&self) -> ComponentHealth {
        ComponentHealth {
            mode: if self.managed { "Managed" } else { "External" }.into(),
            ready: self.ready,
            ready_replicas: self.ready_replicas,
            desired_replicas: self.desired_replicas,
            message: self.message.clone(),
        }
    }
}

/// Readiness of a managed workload, and whether its setup Job (if any) finished.
fn assess_workload(
    state: &WorkloadState,
    setup: Option<&JobState>,
    pods: &str,
    setup_task: &str,
    namespace: &str,
) -> Assessment {
    let replicas = (Some(state.ready), Some(state.desired));
    let kind = state.kind.to_lowercase();
    let not_ready = |reason, message| Assessment {
        ready: false,
        reason,
        message,
        managed: true,
        ready_replicas: replicas.0,
        desired_replicas: replicas.1,
    };
    if !state.up_to_date {
        return not_ready(
            reasons::REPLICAS_NOT_READY,
            format!(
                "{} {namespace}/{} is starting or rolling out its latest spec ({}/{} {pods} ready)",
                state.kind, state.name, state.ready, state.desired
            ),
        );
    }
    if state.ready < state.desired {
        return not_ready(
            reasons::REPLICAS_NOT_READY,
            format!(
                "{}/{} {pods} ready ({} {namespace}/{}); if this persists, see `kubectl -n {namespace} describe {kind} {}` and its pods' events",
                state.ready, state.desired, state.kind, state.name, state.name
            ),
        );
    }
    match setup {
        Some(job) if job.outcome == JobOutcome::Failed => not_ready(
            reasons::SETUP_JOB_FAILED,
            format!(
                "Job {namespace}/{} failed to {setup_task}: see `kubectl -n {namespace} logs job/{}`",
                job.name, job.name
            ),
        ),
        Some(job) if job.outcome == JobOutcome::Running => not_ready(
            reasons::SETUP_JOB_RUNNING,
            format!(
                "{}/{} {pods} ready; Job {namespace}/{} is running to {setup_task}",
                state.ready, state.desired, job.name
            ),
        ),
        _ => Assessment {
            ready: true,
            reason: reasons::WORKLOAD_READY,
            message: format!("{}/{} {pods} ready", state.ready, state.desired),
            managed: true,
            ready_replicas: replicas.0,
            desired_replicas: replicas.1,
        },
    }
}

fn assess_managed_or_external(
    workload: Option<&WorkloadState>,
    setup: Option<&JobState>,
    external: Option<&String>,
    what: &str,
    pods: &str,
    setup_task: &str,
    namespace: &str,
) -> Assessment {
    match (workload, external) {
        (Some(state), _) => assess_workload(state, setup, pods, setup_task, namespace),
        (None, Some(address)) => Assessment::external(what, address),
        (None, None) => Assessment::external(what, "an address the spec gives"),
    }
}

/// ", recreated 2 times after failures (last: <reason>: <message>)" when it was.
fn recreated_suffix(record: Option<&IngestJobStatus>) -> String {
    match record {
        Some(r) if r.recreations > 0 => format!(
            ", recreated {} time{} after failures (last: {})",
            r.recreations,
            if r.recreations == 1 { "" } else { "s" },
            r.last_failure
        ),
        _ => String::new(),
    }
}

/// "Kafka is" / "Kafka and the object store are".
fn waiting_list(waiting_for: &[&str]) -> String {
    format!(
        "{} {}",
        waiting_for.join(" and "),
        if waiting_for.len() == 1 { "is" } else { "are" }
    )
}

/// The verdicts on the four components: each from its workload (or external address),
/// then replaced by why its pods cannot start, then by a child the API server refused.
/// `ingest_job` is the record of the generator Job's recreations.
pub(super) fn assess_components(
    children: &ChildrenState,
    pods: &PodProblems,
    facts: &PipelineFacts,
    ingest_job: Option<&IngestJobStatus>,
) -> [Assessment; 4] {
    let ns = &facts.namespace;
    let kafka = assess_managed_or_external(
        children.kafka.as_ref(),
        children.kafka_topics.as_ref(),
        facts.kafka_external.as_ref(),
        "Kafka",
        "Kafka nodes",
        "create the topics",
        ns,
    );
    let object_store = assess_managed_or_external(
        children.object_store.as_ref(),
        children.bucket.as_ref(),
        facts.object_store_external.as_ref(),
        "object store",
        "MinIO pods",
        "create the bucket",
        ns,
    );
    let engine = facts.search_engine.display_name();
    let search = assess_managed_or_external(
        children.search.as_ref(),
        None,
        facts.search_external.as_ref(),
        engine,
        &format!("{engine} nodes"),
        "",
        ns,
    );
    let runtime = assess_runtime(children, facts, ingest_job);
    [
        (Component::Kafka, kafka),
        (Component::ObjectStore, object_store),
        (Component::Search, search),
        (Component::Runtime, runtime),
    ]
    .map(|(component, a)| {
        with_apply_failures(
            with_pod_problem(a, pods.of(component)),
            &children.apply_failures,
            component,
        )
    })
}

fn assess_runtime(
    children: &ChildrenState,
    facts: &PipelineFacts,
    record: Option<&IngestJobStatus>,
) -> Assessment {
    let ns = &facts.namespace;
    let runtime = &children.runtime;
    let replicas = (Some(runtime.ready), Some(runtime.desired));
    let verdict = |ready, reason, message| Assessment {
        ready,
        reason,
        message,
        managed: true,
        ready_replicas: replicas.0,
        desired_replicas: replicas.1,
    };
    if facts.paused {
        return verdict(
            false,
            reasons::PAUSED,
            "spec.paused is true: processing and ingest are stopped; set spec.paused to false to resume".into(),
        );
    }
    if runtime.desired == 0 {
        return verdict(
            false,
            reasons::SCALED_TO_ZERO,
            format!(
                "spec.runtime.replicas is 0: nothing processes events; scale up (`kubectl -n {ns} scale dp {} --replicas=1`) or use spec.paused",
                facts.name
            ),
        );
    }
    let mut processing = assess_workload(runtime, None, "runtime pods", "", ns);
    if !processing.ready {
        if runtime.up_to_date {
            // A running runtime pod turns unready when its checkpoints fail (its /readyz).
            processing.message.push_str(&format!(
                "; a runtime pod is also unready while its checkpoints fail against the object store or the search engine: see `kubectl -n {ns} logs deployment/{}`",
                runtime.name
            ));
        }
        return processing;
    }
    match &children.ingest {
        IngestState::Deployment(ingest) if !ingest.is_ready() => verdict(
            false,
            reasons::REPLICAS_NOT_READY,
            format!(
                "{}; the ingest pod is not ready (Deployment {ns}/{}): see `kubectl -n {ns} logs deployment/{}`",
                processing.message, ingest.name, ingest.name
            ),
        ),
        IngestState::Job { job, recovery } if job.outcome == JobOutcome::Failed => {
            let name = &job.name;
            let failed = format!(
                "{}; the generator Job {ns}/{name} failed ({})",
                processing.message,
                job.failure.as_deref().unwrap_or("no reason given")
            );
            let done = record.map_or(0, |r| r.recreations);
            let max = MAX_RECREATIONS;
            match recovery {
                Recovery::Recreated { attempt, .. } => verdict(
                    false,
                    reasons::INGEST_JOB_RECREATED,
                    format!("{failed}; the operator deleted it to run it again (recreation {attempt} of {max}): the new run resumes from its progress record and publishes no event twice"),
                ),
                Recovery::Deleting => verdict(
                    false,
                    reasons::INGEST_JOB_RECREATED,
                    format!("{failed}; it is being deleted to run again (recreation {done} of {max})"),
                ),
                Recovery::GivenUp { recreations } => verdict(
                    false,
                    reasons::INGEST_FAILED,
                    format!("{failed} after {recreations} recreations, so the operator leaves it: see `kubectl -n {ns} logs job/{name}` and `kubectl -n {ns} describe job {name}`, fix the cause, then `kubectl -n {ns} delete job {name}` to run it once more"),
                ),
                Recovery::NotNeeded => verdict(
                    false,
                    reasons::INGEST_FAILED,
                    format!("{failed}: see `kubectl -n {ns} logs job/{name}`"),
                ),
            }
        }
        IngestState::Job { job, .. } => verdict(
            true,
            reasons::WORKLOAD_READY,
            format!(
                "{}; generator Job {} {}{}",
                processing.message,
                job.name,
                if job.outcome == JobOutcome::Succeeded {
                    "completed"
                } else {
                    "running"
                },
                recreated_suffix(record)
            ),
        ),
        IngestState::Waiting { job, waiting_for } => verdict(
            true,
            reasons::WORKLOAD_READY,
            format!(
                "{}; generator Job {job} is created once {} ready",
                processing.message,
                waiting_list(waiting_for)
            ),
        ),
        IngestState::Deployment(_) => verdict(
            true,
            reasons::WORKLOAD_READY,
            format!("{}; ingest pod ready", processing.message),
        ),
    }
}

/// A component with a child the API server refused is not ready, whatever its workload
/// says, and its condition names the child and the API server's reason.
fn with_apply_failures(
    assessment: Assessment,
    failures: &[ApplyFailure],
    component: Component,
) -> Assessment {
    let mine: Vec<String> = failures
        .iter()
        .filter(|f| f.component == component)
        .map(|f| {
            format!(
                "cannot apply {} {}/{}: {}",
                f.kind, f.namespace, f.name, f.message
            )
        })
        .collect();
    if mine.is_empty() {
        return assessment;
    }
    Assessment {
        ready: false,
        reason: reasons::APPLY_FAILED,
        message: format!(
            "{}; the operator applied the pipeline's other children and retries with backoff",
            mine.join("; ")
        ),
        ..assessment
    }
}

/// A component waiting for its pods says why they cannot start, when they cannot: the
/// pod problem's reason and message replace the generic ones.
fn with_pod_problem(assessment: Assessment, problem: Option<&PodProblem>) -> Assessment {
    let waiting = !assessment.ready
        && matches!(
            assessment.reason,
            reasons::REPLICAS_NOT_READY | reasons::SETUP_JOB_RUNNING
        );
    match problem {
        Some(problem) if waiting => Assessment {
            reason: problem.reason,
            message: problem.message.clone(),
            ..assessment
        },
        _ => assessment,
    }
}

pub(super) fn ingest_health(ingest: &IngestState) -> ComponentHealth {
    match ingest {
        IngestState::Deployment(d) => ComponentHealth {
            mode: "Managed".into(),
            ready: d.is_ready(),
            ready_replicas: Some(d.ready),
            desired_replicas: Some(d.desired),
            message: format!("Deployment {} watching the landing prefix", d.name),
        },
        IngestState::Job { job, .. } => ComponentHealth {
            mode: "Managed".into(),
            ready: job.outcome != JobOutcome::Failed,
            ready_replicas: None,
            desired_replicas: None,
            message: format!(
                "generator Job {} {}",
                job.name,
                match (job.outcome, job.suspended) {
                    (JobOutcome::Succeeded, _) => "completed".to_string(),
                    (JobOutcome::Failed, _) => format!(
                        "failed ({})",
                        job.failure.as_deref().unwrap_or("no reason given")
                    ),
                    (JobOutcome::Running, true) => "suspended".to_string(),
                    (JobOutcome::Running, false) => "running".to_string(),
                }
            ),
        },
        IngestState::Waiting { job, waiting_for } => ComponentHealth {
            mode: "Managed".into(),
            ready: false,
            ready_replicas: None,
            desired_replicas: None,
            message: format!(
                "generator Job {job} not created yet: it is created once {} ready",
                waiting_list(waiting_for)
            ),
        },
    }
}
