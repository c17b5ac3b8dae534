//! The status of a DataPipeline: `compute_status` is a pure function of the previous
//! status, what this reconcile observed and the time; `write_status` is the one write
//! (server-side apply of `.status`), skipped by the caller when nothing changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde_json::json;

use pipeline_config::PipelineNames;

use super::{
    autoscale::evaluation::FlowHealth,
    build::names::MANAGER,
    ingest_job::MAX_RECREATIONS,
    observed::{
        ApplyFailure, ChildrenState, IngestState, JobOutcome, JobState, Observation, PipelineFacts,
        PodProblem, Recovery, WorkloadState,
    },
    problem::{Component, Problem},
};
use crate::{
    crd::{
        conditions::{reasons, types},
        AutoscalerStatus, ComponentHealth, ComponentsStatus, DataPipeline, DataPipelineStatus,
        IngestJobStatus, Phase,
    },
    error::{Error, Result},
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

/// What became of a status write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    Written,
    /// The pipeline was deleted while the reconcile ran: there is nothing to write to.
    PipelineGone,
}

/// Writes `.status` with server-side apply under the operator's field manager.
pub async fn write_status(
    client: &Client,
    dp: &DataPipeline,
    status: &DataPipelineStatus,
) -> Result<StatusWrite> {
    let namespace = dp
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = dp
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let api: Api<DataPipeline> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({
        "apiVersion": "datapipeline.io/v1alpha1",
        "kind": "DataPipeline",
        "status": status,
    });
    match api
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(StatusWrite::Written),
        // Deleted while this reconcile ran: not a failure of the operator.
        Err(kube::Error::Api(status)) if status.is_not_found() => {
            tracing::debug!(%namespace, %name, "pipeline deleted during the reconcile; status not written");
            Ok(StatusWrite::PipelineGone)
        }
        Err(source) => Err(Error::WriteStatus {
            namespace,
            name,
            source: Box::new(source),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{applied, at, managed_facts, ready_children};
    use crate::controller::observed::PodProblems;
    use crate::crd::ThroughputStatus;

    fn ready_condition(status: &DataPipelineStatus) -> &Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .expect("Ready condition")
    }

    #[test]
    fn everything_ready_is_running() {
        let status = compute_status(
            None,
            Some(3),
            &applied(ready_children(), managed_facts()),
            &at(100),
        );
        assert_eq!(status.phase, Some(Phase::Running));
        assert_eq!(status.observed_generation, Some(3));
        let summary: Vec<(&str, &str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("KafkaReady", "True", "WorkloadReady"),
                ("ObjectStoreReady", "True", "WorkloadReady"),
                ("SearchReady", "True", "WorkloadReady"),
                ("RuntimeReady", "True", "WorkloadReady"),
                ("Ready", "True", "AllComponentsReady"),
            ]
        );
        assert_eq!(
            status.conditions[3].message,
            "2/2 runtime pods ready; generator Job shop-generate-abcd1234 running"
        );
        assert!(status
            .conditions
            .iter()
            .all(|c| c.last_transition_time == at(100)));
        assert!(status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(3)));
        assert_eq!(status.replicas, Some(2));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.replicas_summary.as_deref(), Some("2/2"));
        assert_eq!(
            status.selector.as_deref(),
            Some("app.kubernetes.io/component=runtime,app.kubernetes.io/instance=shop,app.kubernetes.io/name=pipeline-runtime")
        );
        let components = status.components.expect("components");
        assert_eq!(
            components.kafka,
            ComponentHealth {
                mode: "Managed".into(),
                ready: true,
                ready_replicas: Some(1),
                desired_replicas: Some(1),
                message: "1/1 Kafka nodes ready".into()
            }
        );
        assert_eq!(
            components.ingest.message,
            "generator Job shop-generate-abcd1234 running"
        );
    }

    #[test]
    fn first_reconcile_is_provisioning_with_actionable_messages() {
        let mut children = ready_children();
        children.kafka.as_mut().expect("kafka").ready = 0;
        children.bucket.as_mut().expect("bucket").outcome = JobOutcome::Failed;
        let status = compute_status(None, Some(1), &applied(children, managed_facts()), &at(5));
        assert_eq!(status.phase, Some(Phase::Provisioning));
        assert_eq!(status.conditions[0].reason, "ReplicasNotReady");
        assert_eq!(
            status.conditions[0].message,
            "0/1 Kafka nodes ready (StatefulSet shops/shop-kafka); if this persists, see `kubectl -n shops describe statefulset shop-kafka` and its pods' events"
        );
        assert_eq!(status.conditions[1].reason, "SetupJobFailed");
        assert_eq!(
            status.conditions[1].message,
            "Job shops/shop-minio-bucket-0000beef failed to create the bucket: see `kubectl -n shops logs job/shop-minio-bucket-0000beef`"
        );
        let ready = ready_condition(&status);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ComponentsNotReady")
        );
        assert_eq!(
            ready.message,
            format!(
                "waiting for Kafka: {}; object store: {}",
                status.conditions[0].message, status.conditions[1].message
            )
        );
    }

    #[test]
    fn losing_a_component_after_running_is_degraded_and_recovers() {
        let running = compute_status(
            None,
            Some(1),
            &applied(ready_children(), managed_facts()),
            &at(10),
        );
        let mut children = ready_children();
        children.search.as_mut().expect("search").ready = 0;
        let degraded = compute_status(
            Some(&running),
            Some(1),
            &applied(children, managed_facts()),
            &at(20),
        );
        assert_eq!(degraded.phase, Some(Phase::Degraded));
        let search = &degraded.conditions[2];
        assert_eq!(
            (search.status.as_str(), search.last_transition_time.clone()),
            ("False", at(20))
        );
        // Kafka did not change: its transition time stays.
        assert_eq!(degraded.conditions[0].last_transition_time, at(10));
        let recovered = compute_status(
            Some(&degraded),
            Some(1),
            &applied(ready_children(), managed_facts()),
            &at(30),
        );
        assert_eq!(recovered.phase, Some(Phase::Running));
        assert_eq!(recovered.conditions[2].last_transition_time, at(30));
        assert_eq!(recovered.conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn an_unready_runtime_pod_degrades_the_pipeline_and_names_failing_checkpoints() {
        let running = compute_status(
            None,
            Some(1),
            &applied(ready_children(), managed_facts()),
            &at(10),
        );
        let mut children = ready_children();
        children.runtime.ready = 1;
        let degraded = compute_status(
            Some(&running),
            Some(1),
            &applied(children, managed_facts()),
            &at(20),
        );
        assert_eq!(degraded.phase, Some(Phase::Degraded));
        let runtime = &degraded.conditions[3];
        assert_eq!(
            (runtime.status.as_str(), runtime.reason.as_str()),
            ("False", "ReplicasNotReady")
        );
        assert_eq!(
            runtime.message,
            "1/2 runtime pods ready (Deployment shops/shop-runtime); if this persists, see `kubectl -n shops describe deployment shop-runtime` and its pods' events; a runtime pod is also unready while its checkpoints fail against the object store or the search engine: see `kubectl -n shops logs deployment/shop-runtime`"
        );
    }

    #[test]
    fn rolling_out_a_new_generation_is_provisioning_not_degraded() {
        let running = compute_status(
            None,
            Some(1),
            &applied(ready_children(), managed_facts()),
            &at(10),
        );
        let mut children = ready_children();
        children.runtime.up_to_date = false;
        let changed = compute_status(
            Some(&running),
            Some(2),
            &applied(children, managed_facts()),
            &at(20),
        );
        assert_eq!(changed.phase, Some(Phase::Provisioning));
        assert_eq!(
            changed.conditions[3].message,
            "Deployment shops/shop-runtime is starting or rolling out its latest spec (2/2 runtime pods ready)"
        );
    }

    #[test]
    fn same_observation_gives_the_same_status() {
        let first = compute_status(
            None,
            Some(1),
            &applied(ready_children(), managed_facts()),
            &at(10),
        );
        let second = compute_status(
            Some(&first),
            Some(1),
            &applied(ready_children(), managed_facts()),
            &at(99),
        );
        assert_eq!(first, second);
    }

    #[test]
    fn a_new_message_keeps_the_transition_time() {
        let mut children = ready_children();
        children.kafka.as_mut().expect("kafka").ready = 0;
        let first = compute_status(
            None,
            Some(1),
            &applied(children.clone(), managed_facts()),
            &at(10),
        );
        children.kafka.as_mut().expect("kafka").up_to_date = false;
        let second = compute_status(
            Some(&first),
            Some(2),
            &applied(children, managed_facts()),
            &at(20),
        );
        assert_ne!(first.conditions[0].message, second.conditions[0].message);
        assert_eq!(second.conditions[0].last_transition_time, at(10));
        assert_eq!(second.conditions[0].observed_generation, Some(2));
    }

    #[test]
    fn paused_pipeline() {
        let mut children = ready_children();
        children.runtime.desired = 0;
        children.runtime.ready = 0;
        children.runtime.current = 0;
        let mut facts = managed_facts();
        facts.paused = true;
        let status = compute_status(None, Some(4), &applied(children, facts), &at(1));
        assert_eq!(status.phase, Some(Phase::Paused));
        let ready = ready_condition(&status);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Paused")
        );
        assert_eq!(
            ready.message,
            "spec.paused is true: processing and ingest are stopped; set spec.paused to false to resume"
        );
        assert_eq!(status.replicas_summary.as_deref(), Some("0/0"));
    }

    #[test]
    fn zero_replicas_without_pause_is_not_ready() {
        let mut children = ready_children();
        children.runtime.desired = 0;
        children.runtime.ready = 0;
        let status = compute_status(None, Some(1), &applied(children, managed_facts()), &at(1));
        let runtime = &status.conditions[3];
        assert_eq!(
            (runtime.status.as_str(), runtime.reason.as_str()),
            ("False", "ScaledToZero")
        );
        assert_eq!(
            runtime.message,
            "spec.runtime.replicas is 0: nothing processes events; scale up (`kubectl -n shops scale dp shop --replicas=1`) or use spec.paused"
        );
    }

    #[test]
    fn missing_secret_blocks_with_the_secret_named() {
        let running = compute_status(
            None,
            Some(1),
            &applied(ready_children(), managed_facts()),
            &at(10),
        );
        let problem = Problem::SecretNotFound {
            component: Component::ObjectStore,
            namespace: "shops".into(),
            name: "shop-s3".into(),
            field: "spec.objectStore.external.secretRef".into(),
            keys: vec!["accessKeyId".into(), "secretAccessKey".into()],
        };
        let status = compute_status(
            Some(&running),
            Some(2),
            &Observation::Blocked(problem),
            &at(20),
        );
        assert_eq!(status.phase, Some(Phase::Pending));
        let message = "Secret shops/shop-s3 (named by spec.objectStore.external.secretRef) does not exist: create it with the keys accessKeyId and secretAccessKey or correct spec.objectStore.external.secretRef";
        let store = &status.conditions[1];
        assert_eq!(
            (
                store.type_.as_str(),
                store.status.as_str(),
                store.reason.as_str(),
                store.message.as_str()
            ),
            ("ObjectStoreReady", "False", "SecretNotFound", message)
        );
        assert_eq!(store.last_transition_time, at(20));
        // Components not looked at keep their last known condition.
        assert_eq!(status.conditions[0], running.conditions[0]);
        let ready = ready_condition(&status);
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("SecretNotFound", message)
        );
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(status.replicas_summary, running.replicas_summary);
    }

    #[test]
    fn invalid_spec_fails_and_first_time_components_are_unknown() {
        let problem = Problem::InvalidSpec {
            field: "spec.kafka".into(),
            message: "set exactly one of managed and external".into(),
        };
        let status = compute_status(None, Some(1), &Observation::Blocked(problem), &at(7));
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.conditions[0].status, "Unknown");
        assert_eq!(status.conditions[0].reason, "Reconciling");
        let ready = ready_condition(&status);
        assert_eq!(ready.reason, "InvalidSpec");
        assert_eq!(
            ready.message,
            "spec.kafka: set exactly one of managed and external"
        );
    }

    #[test]
    fn throughput_is_kept_until_measured_again() {
        let mut first = compute_status(
            None,
            Some(1),
            &applied(ready_children(), managed_facts()),
            &at(1),
        );
        first.throughput = Some(ThroughputStatus {
            consumer_lag: 42,
            ..Default::default()
        });
        let second = compute_status(
            Some(&first),
            Some(1),
            &applied(ready_children(), managed_facts()),
            &at(2),
        );
        assert_eq!(second.throughput, first.throughput);
        let measured = ThroughputStatus {
            consumer_lag: 7,
            ..Default::default()
        };
        let third = compute_status(
            Some(&first),
            Some(1),
            &Observation::Applied {
                children: Box::new(ready_children()),
                pods: Default::default(),
                facts: managed_facts(),
                throughput: Some(measured.clone()),
                autoscaler: None,
                flow: Default::default(),
            },
            &at(3),
        );
        assert_eq!(third.throughput, Some(measured));
    }

    fn measured(
        old: Option<&DataPipelineStatus>,
        throughput: Option<ThroughputStatus>,
        autoscaler: Option<AutoscalerStatus>,
        flow: FlowHealth,
        now: i64,
    ) -> DataPipelineStatus {
        compute_status(
            old,
            Some(1),
            &Observation::Applied {
                children: Box::new(ready_children()),
                pods: Default::default(),
                facts: managed_facts(),
                throughput,
                autoscaler,
                flow,
            },
            &at(now),
        )
    }

    #[test]
    fn growing_lag_degrades_a_ready_pipeline_and_clears() {
        let throughput = ThroughputStatus {
            ingested_per_second: 100.0,
            processed_per_second: 50.0,
            consumer_lag: 3000,
            ..Default::default()
        };
        let healthy = FlowHealth {
            measured: true,
            ..FlowHealth::default()
        };
        let running = measured(None, Some(throughput.clone()), None, healthy.clone(), 10);
        assert_eq!(running.phase, Some(Phase::Running));
        let growing = FlowHealth {
            lag_growth: Some(crate::controller::measure::throughput::LagGrowth {
                from: 0,
                to: 3000,
                seconds: 60,
            }),
            ..healthy.clone()
        };
        let degraded = measured(Some(&running), Some(throughput.clone()), None, growing, 20);
        assert_eq!(degraded.phase, Some(Phase::Degraded));
        let ready = ready_condition(&degraded);
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.last_transition_time.clone()
            ),
            ("False", "LagGrowing", at(20))
        );
        assert_eq!(
            ready.message,
            "consumer lag grew from 0 to 3000 over the last 60s: processing (50/s) is slower than ingest (100/s); raise spec.runtime.autoscaling.maxReplicas (up to the partition count), or look for sink errors in the runtime's logs"
        );
        // Components themselves stay ready.
        assert!(degraded.conditions[..4].iter().all(|c| c.status == "True"));
        let cleared = measured(Some(&degraded), Some(throughput), None, healthy, 30);
        assert_eq!(cleared.phase, Some(Phase::Running));
        assert_eq!(ready_condition(&cleared).reason, "AllComponentsReady");
    }

    #[test]
    fn throughput_measured_condition_says_when_kafka_cannot_be_read() {
        let ok = measured(
            None,
            None,
            None,
            FlowHealth {
                measured: true,
                ..FlowHealth::default()
            },
            10,
        );
        let condition = ok.conditions.last().expect("condition");
        assert_eq!(
            (
                condition.type_.as_str(),
                condition.status.as_str(),
                condition.reason.as_str(),
                condition.message.as_str()
            ),
            (
                "ThroughputMeasured",
                "True",
                "OffsetsRead",
                "offsets of topic shop-events and consumer group shop-profiles read from Kafka"
            )
        );
        let failed = measured(
            Some(&ok),
            None,
            None,
            FlowHealth {
                measured: true,
                kafka_error: Some(
                    "cannot reach Kafka at shop-kafka.shops.svc:9092: timed out".into(),
                ),
                lag_growth: None,
            },
            20,
        );
        // Unreadable offsets do not make the pipeline unready.
        assert_eq!(failed.phase, Some(Phase::Running));
        let condition = failed.conditions.last().expect("condition");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "KafkaUnreachable")
        );
        assert_eq!(
            condition.message,
            "cannot reach Kafka at shop-kafka.shops.svc:9092: timed out; status.throughput shows the last measurement and the autoscaler keeps the current replicas until Kafka can be read"
        );
        // Not measured this time: the condition stays as it was.
        let kept = measured(Some(&failed), None, None, FlowHealth::default(), 30);
        assert_eq!(kept.conditions.last(), failed.conditions.last());
    }

    #[test]
    fn autoscaler_block_reports_the_deployments_replicas() {
        let decision = AutoscalerStatus {
            desired_replicas: 3,
            current_replicas: 0,
            reason: "scale up".into(),
            ..Default::default()
        };
        let status = measured(None, None, Some(decision.clone()), FlowHealth::default(), 1);
        assert_eq!(
            status.autoscaler,
            Some(AutoscalerStatus {
                current_replicas: 2,
                ..decision
            })
        );
        // Autoscaling turned off: the block goes away.
        let off = measured(Some(&status), None, None, FlowHealth::default(), 2);
        assert_eq!(off.autoscaler, None);
    }

    fn with_pods(children: ChildrenState, pods: PodProblems, facts: PipelineFacts) -> Observation {
        match applied(children, facts) {
            Observation::Applied {
                children,
                facts,
                throughput,
                autoscaler,
                flow,
                ..
            } => Observation::Applied {
                children,
                pods,
                facts,
                throughput,
                autoscaler,
                flow,
            },
            blocked => blocked,
        }
    }

    #[test]
    fn a_node_that_cannot_pull_its_image_says_so() {
        let mut children = ready_children();
        children.search.as_mut().expect("search").ready = 0;
        let message = "container elasticsearch of pod shops/shop-es-0 cannot pull image docker.elastic.co/elasticsearch/elasticsearch:9.99.0: Back-off pulling image \"docker.elastic.co/elasticsearch/elasticsearch:9.99.0\"";
        let pods = PodProblems {
            search: Some(PodProblem {
                reason: reasons::IMAGE_PULL_BACK_OFF,
                message: message.into(),
            }),
            ..PodProblems::default()
        };
        let status = compute_status(
            None,
            Some(1),
            &with_pods(children, pods, managed_facts()),
            &at(5),
        );
        assert_eq!(
            status.conditions[2],
            Condition {
                type_: "SearchReady".into(),
                status: "False".into(),
                reason: "ImagePullBackOff".into(),
                message: message.into(),
                observed_generation: Some(1),
                last_transition_time: at(5),
            }
        );
        assert_eq!(
            ready_condition(&status).message,
            format!("waiting for search: {message}")
        );
        let search = status.components.expect("components").search;
        assert_eq!(
            (search.ready, search.ready_replicas, search.message.as_str()),
            (false, Some(0), message)
        );
    }

    #[test]
    fn a_crash_looping_runtime_and_an_oom_killed_broker() {
        let mut children = ready_children();
        children.runtime.ready = 0;
        children.kafka_topics.as_mut().expect("topics").outcome = JobOutcome::Running;
        let crash = "container process of pod shops/shop-runtime-7d9f-abcde keeps exiting (3 restarts); it last exited with code 2 (Error): missing DP_S3_BUCKET: see `kubectl -n shops logs shop-runtime-7d9f-abcde -c process --previous`";
        let oom = "container kafka of pod shops/shop-kafka-topics-0000cafe-x was killed for using more than its memory limit of 256Mi (OOMKilled, exit code 137, 1 restart): raise the memory in the spec's resources for it";
        let pods = PodProblems {
            kafka: Some(PodProblem {
                reason: reasons::OOM_KILLED,
                message: oom.into(),
            }),
            runtime: Some(PodProblem {
                reason: reasons::CRASH_LOOP_BACK_OFF,
                message: crash.into(),
            }),
            ..PodProblems::default()
        };
        let status = compute_status(
            None,
            Some(1),
            &with_pods(children, pods, managed_facts()),
            &at(5),
        );
        let summary: Vec<(&str, &str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("KafkaReady", "False", "OOMKilled"),
                ("ObjectStoreReady", "True", "WorkloadReady"),
                ("SearchReady", "True", "WorkloadReady"),
                ("RuntimeReady", "False", "CrashLoopBackOff"),
                ("Ready", "False", "ComponentsNotReady"),
            ]
        );
        assert_eq!(status.conditions[0].message, oom);
        assert_eq!(status.conditions[3].message, crash);
        assert_eq!(
            ready_condition(&status).message,
            format!("waiting for Kafka: {oom}; runtime: {crash}")
        );
    }

    #[test]
    fn pod_problems_do_not_hide_other_verdicts() {
        let problem = |reason| PodProblem {
            reason,
            message: "container x of pod shops/p: boom".into(),
        };
        let every = PodProblems {
            kafka: Some(problem(reasons::CRASH_LOOP_BACK_OFF)),
            object_store: Some(problem(reasons::CONTAINER_FAILED)),
            search: Some(problem(reasons::UNSCHEDULABLE)),
            runtime: Some(problem(reasons::ERR_IMAGE_PULL)),
        };
        // Ready components stay ready (a problem of one old pod does not matter then).
        let status = compute_status(
            None,
            Some(1),
            &with_pods(ready_children(), every.clone(), managed_facts()),
            &at(5),
        );
        assert!(status.conditions.iter().all(|c| c.status == "True"));
        // A failed setup Job keeps its own reason; a paused runtime stays paused.
        let mut children = ready_children();
        children.bucket.as_mut().expect("bucket").outcome = JobOutcome::Failed;
        children.runtime.desired = 0;
        children.runtime.ready = 0;
        let mut facts = managed_facts();
        facts.paused = true;
        let status = compute_status(None, Some(1), &with_pods(children, every, facts), &at(5));
        assert_eq!(status.conditions[1].reason, "SetupJobFailed");
        assert_eq!(status.conditions[3].reason, "Paused");
    }

    #[test]
    fn a_refused_child_makes_its_component_unready_and_names_it() {
        let forbidden = "StatefulSet.apps \"shop-kafka\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";
        let mut children = ready_children();
        children.apply_failures = vec![
            ApplyFailure {
                component: Component::Kafka,
                kind: "StatefulSet",
                namespace: "shops".into(),
                name: "shop-kafka".into(),
                message: forbidden.into(),
            },
            ApplyFailure {
                component: Component::Kafka,
                kind: "Service",
                namespace: "shops".into(),
                name: "shop-kafka".into(),
                message: "mocked failure".into(),
            },
        ];
        // A pod problem does not hide the refusal either.
        let pods = PodProblems {
            kafka: Some(PodProblem {
                reason: reasons::CRASH_LOOP_BACK_OFF,
                message: "container kafka keeps exiting".into(),
            }),
            ..PodProblems::default()
        };
        let status = compute_status(
            None,
            Some(2),
            &with_pods(children, pods, managed_facts()),
            &at(5),
        );
        let message = format!("cannot apply StatefulSet shops/shop-kafka: {forbidden}; cannot apply Service shops/shop-kafka: mocked failure; the operator applied the pipeline's other children and retries with backoff");
        assert_eq!(
            status.conditions[0],
            Condition {
                type_: "KafkaReady".into(),
                status: "False".into(),
                reason: "ApplyFailed".into(),
                message: message.clone(),
                observed_generation: Some(2),
                last_transition_time: at(5),
            }
        );
        // The other components are judged as usual.
        let others: Vec<(&str, &str)> = status.conditions[1..4]
            .iter()
            .map(|c| (c.type_.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            others,
            vec![
                ("ObjectStoreReady", "WorkloadReady"),
                ("SearchReady", "WorkloadReady"),
                ("RuntimeReady", "WorkloadReady")
            ]
        );
        let ready = ready_condition(&status);
        assert_eq!(
            (ready.reason.as_str(), ready.message.clone()),
            (
                "ComponentsNotReady",
                format!("waiting for Kafka: {message}")
            )
        );
        assert_eq!(status.phase, Some(Phase::Provisioning));
        let kafka = status.components.expect("components").kafka;
        assert_eq!((kafka.ready, kafka.message), (false, message));
    }

    #[test]
    fn a_generator_job_waiting_for_kafka_is_said_to() {
        let mut children = ready_children();
        children.kafka.as_mut().expect("kafka").ready = 0;
        children.ingest = IngestState::Waiting {
            job: "shop-generate-abcd1234".into(),
            waiting_for: vec!["Kafka"],
        };
        let old = DataPipelineStatus {
            ingest_job: Some(IngestJobStatus {
                name: "shop-generate-00000000".into(),
                recreations: 2,
                last_failure: "BackoffLimitExceeded: Job has reached the specified backoff limit"
                    .into(),
                last_recreation_time: Some(at(1)),
            }),
            ..DataPipelineStatus::default()
        };
        let status = compute_status(
            Some(&old),
            Some(2),
            &applied(children, managed_facts()),
            &at(5),
        );
        let runtime = &status.conditions[3];
        assert_eq!(
            (runtime.status.as_str(), runtime.message.as_str()),
            (
                "True",
                "2/2 runtime pods ready; generator Job shop-generate-abcd1234 is created once Kafka is ready"
            )
        );
        let ingest = status.components.expect("components").ingest;
        assert_eq!(
            (ingest.ready, ingest.message.as_str()),
            (
                false,
                "generator Job shop-generate-abcd1234 not created yet: it is created once Kafka is ready"
            )
        );
        // The record of an older generator spec's Job goes: the new Job starts afresh.
        assert_eq!(status.ingest_job, None);
    }

    #[test]
    fn a_managed_opensearch_is_named_as_such() {
        let mut children = ready_children();
        children.search.as_mut().expect("search").ready = 0;
        let mut facts = managed_facts();
        facts.search_engine = crate::crd::SearchEngine::Opensearch;
        let status = compute_status(None, Some(1), &applied(children, facts), &at(5));
        assert_eq!(
            status.conditions[2].message,
            "0/1 OpenSearch nodes ready (StatefulSet shops/shop-es); if this persists, see `kubectl -n shops describe statefulset shop-es` and its pods' events"
        );
    }

    #[test]
    fn external_services_are_reported_as_such() {
        let mut children = ready_children();
        children.kafka = None;
        children.kafka_topics = None;
        let mut facts = managed_facts();
        facts.kafka_external = Some("kafka.example.com:9093".into());
        let status = compute_status(None, Some(1), &applied(children, facts), &at(1));
        let kafka = &status.conditions[0];
        assert_eq!(
            (kafka.status.as_str(), kafka.reason.as_str()),
            ("True", "ExternalService")
        );
        assert_eq!(
            kafka.message,
            "external Kafka at kafka.example.com:9093; the operator does not probe external services, the runtime reports connection errors in its logs"
        );
        assert_eq!(
            status.components.expect("components").kafka.mode,
            "External"
        );
    }
}
