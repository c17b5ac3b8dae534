//! The status of a DataPipeline: `compute_status` is a pure function of the previous
//! status, what this visit found and the time. No I/O (`write` writes it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use pipeline_config::PipelineNames;

use super::{
    findings::{Observation, PipelineFacts},
    pods::PodProblem,
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
        autoscale::evaluation::FlowHealth,
        problem::{Component, Problem},
    },
    crd::{
        conditions::{reasons, types},
        AutoscalerStatus, ComponentHealth, ComponentsStatus, DataPipelineStatus, IngestJobStatus,
        Phase,
    },
};

const TRUE: &str = "True";
const FALSE: &str = "False";
const UNKNOWN: &str = "Unknown";

/// The verdict on one component, from which its condition and health are derived.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Assessment {
    ready: bool,
    reason: &'static str,
    message: String,
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

    fn health(&self) -> ComponentHealth {
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

/// What `status.ingestJob` says after this visit: a recreation made now is recorded; an
/// earlier record stays while it is about the current generator Job.
fn ingest_job_record(
    old: Option<&DataPipelineStatus>,
    ingest: &IngestState,
) -> Option<IngestJobStatus> {
    let current = match ingest {
        IngestState::Job {
            job,
            recovery: Recovery::Recreated { attempt, at },
        } => {
            return Some(IngestJobStatus {
                name: job.name.clone(),
                recreations: *attempt,
                last_failure: job.failure.clone().unwrap_or_default(),
                last_recreation_time: Some(at.clone()),
            })
        }
        IngestState::Job { job, .. } => &job.name,
        IngestState::Waiting { job, .. } => job,
        IngestState::Deployment(_) => return None,
    };
    old.and_then(|s| s.ingest_job.clone())
        .filter(|r| &r.name == current)
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

fn condition(
    old: Option<&DataPipelineStatus>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    // The transition time moves only when the status itself changes, not on every new
    // message or reason.
    let last_transition_time = old
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The status after a reconcile that observed `observation` at `now`.
pub fn compute_status(
    old: Option<&DataPipelineStatus>,
    generation: Option<i64>,
    observation: &Observation,
    now: &Time,
) -> DataPipelineStatus {
    match observation {
        Observation::Blocked(problem) => blocked_status(old, generation, problem, now),
        Observation::Applied {
            children,
            pods,
            facts,
            throughput,
            autoscaler,
            flow,
        } => {
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
            let ingest_job = ingest_job_record(old, &children.ingest);
            let runtime = assess_runtime(children, facts, ingest_job.as_ref());
            let [kafka, object_store, search, runtime] = [
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
            });

            let parts = [
                (Component::Kafka, &kafka),
                (Component::ObjectStore, &object_store),
                (Component::Search, &search),
                (Component::Runtime, &runtime),
            ];
            let mut conditions: Vec<Condition> = parts
                .iter()
                .map(|(component, a)| {
                    condition(
                        old,
                        component.condition_type(),
                        if a.ready { TRUE } else { FALSE },
                        a.reason,
                        a.message.clone(),
                        generation,
                        now,
                    )
                })
                .collect();
            let all_ready = parts.iter().all(|(_, a)| a.ready);
            let throughput = throughput
                .clone()
                .or_else(|| old.and_then(|s| s.throughput.clone()));
            let lag_growth = flow.lag_growth.filter(|_| !facts.paused);
            let (status, reason, message) = if all_ready && lag_growth.is_some() {
                let growth = lag_growth.unwrap_or_default();
                let rates = throughput.clone().unwrap_or_default();
                (
                    FALSE,
                    reasons::LAG_GROWING,
                    format!(
                        "consumer lag grew from {} to {} over the last {}s: processing ({}/s) is slower than ingest ({}/s); raise spec.runtime.autoscaling.maxReplicas (up to the partition count), or look for sink errors in the runtime's logs",
                        growth.from,
                        growth.to,
                        growth.seconds,
                        rates.processed_per_second,
                        rates.ingested_per_second
                    ),
                )
            } else if all_ready {
                (
                    TRUE,
                    reasons::ALL_COMPONENTS_READY,
                    "Kafka, the object store, search and the runtime are ready".to_string(),
                )
            } else if facts.paused {
                (FALSE, reasons::PAUSED, runtime.message.clone())
            } else {
                let waiting: Vec<String> = parts
                    .iter()
                    .filter(|(_, a)| !a.ready)
                    .map(|(c, a)| format!("{}: {}", c.display_name(), a.message))
                    .collect();
                (
                    FALSE,
                    reasons::COMPONENTS_NOT_READY,
                    format!("waiting for {}", waiting.join("; ")),
                )
            };
            conditions.push(condition(
                old,
                types::READY,
                status,
                reason,
                message,
                generation,
                now,
            ));

            let old_phase = old.and_then(|s| s.phase);
            // Degraded = lost readiness without being asked to change; a new generation
            // being rolled out is provisioning.
            let same_generation = old.and_then(|s| s.observed_generation) == generation;
            if let Some(measured) = measured_condition(old, flow, facts, generation, now) {
                conditions.push(measured);
            }
            let phase = if facts.paused {
                Phase::Paused
            } else if all_ready && lag_growth.is_some() {
                Phase::Degraded
            } else if all_ready {
                Phase::Running
            } else if same_generation && matches!(old_phase, Some(Phase::Running | Phase::Degraded))
            {
                Phase::Degraded
            } else {
                Phase::Provisioning
            };
            let rt = &children.runtime;
            DataPipelineStatus {
                observed_generation: generation,
                phase: Some(phase),
                conditions,
                components: Some(ComponentsStatus {
                    kafka: kafka.health(),
                    object_store: object_store.health(),
                    search: search.health(),
                    runtime: runtime.health(),
                    ingest: ingest_health(&children.ingest),
                }),
                ingest_job,
                throughput,
                autoscaler: autoscaler.clone().map(|a| AutoscalerStatus {
                    current_replicas: rt.current,
                    ..a
                }),
                replicas: Some(rt.current),
                ready_replicas: Some(rt.ready),
                replicas_summary: Some(format!("{}/{}", rt.ready, rt.desired)),
                selector: Some(facts.runtime_selector.clone()),
            }
        }
    }
}

/// ThroughputMeasured: reported once a measurement was attempted, kept as it was when
/// this reconcile did not try.
fn measured_condition(
    old: Option<&DataPipelineStatus>,
    flow: &FlowHealth,
    facts: &PipelineFacts,
    generation: Option<i64>,
    now: &Time,
) -> Option<Condition> {
    if !flow.measured {
        return old.and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == types::THROUGHPUT_MEASURED)
                .cloned()
        });
    }
    let names = PipelineNames::new(facts.name.clone());
    let (status, reason, message) = match &flow.kafka_error {
        None => (
            TRUE,
            reasons::OFFSETS_READ,
            format!(
                "offsets of topic {} and consumer group {} read from Kafka",
                names.events_topic(),
                names.consumer_group()
            ),
        ),
        Some(error) => (
            FALSE,
            reasons::KAFKA_UNREACHABLE,
            format!(
                "{error}; status.throughput shows the last measurement and the autoscaler keeps the current replicas until Kafka can be read"
            ),
        ),
    };
    Some(condition(
        old,
        types::THROUGHPUT_MEASURED,
        status,
        reason,
        message,
        generation,
        now,
    ))
}

fn ingest_health(ingest: &IngestState) -> ComponentHealth {
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

fn blocked_status(
    old: Option<&DataPipelineStatus>,
    generation: Option<i64>,
    problem: &Problem,
    now: &Time,
) -> DataPipelineStatus {
    let mut conditions: Vec<Condition> = [
        Component::Kafka,
        Component::ObjectStore,
        Component::Search,
        Component::Runtime,
    ]
    .into_iter()
    .map(|component| {
        let type_ = component.condition_type();
        if problem.component() == Some(component) {
            condition(
                old,
                type_,
                FALSE,
                problem.reason(),
                problem.message(),
                generation,
                now,
            )
        } else {
            // Not looked at this time: keep what was known, or say nothing is known yet.
            old.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_).cloned())
                .unwrap_or_else(|| {
                    condition(
                        old,
                        type_,
                        UNKNOWN,
                        reasons::RECONCILING,
                        format!(
                            "not checked: the pipeline is blocked ({})",
                            problem.reason()
                        ),
                        generation,
                        now,
                    )
                })
        }
    })
    .collect();
    conditions.push(condition(
        old,
        types::READY,
        FALSE,
        problem.reason(),
        problem.message(),
        generation,
        now,
    ));
    let kept = old.cloned().unwrap_or_default();
    DataPipelineStatus {
        observed_generation: generation,
        phase: Some(problem.phase()),
        conditions,
        ..kept
    }
}
