//! The status of a DataPipeline: `compute_status` is a pure function of the previous
//! status, what this visit found and the time, in named steps: the components' verdicts
//! (`assess`), their conditions, the Ready verdict, ThroughputMeasured, the phase. No I/O
//! (`write` writes it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use pipeline_config::PipelineNames;

use super::{
    assess::{assess_components, ingest_health, Assessment},
    findings::{Observation, PipelineFacts},
};
use crate::{
    controller::{
        apply::readiness::{IngestState, Recovery},
        autoscale::evaluation::FlowHealth,
        measure::throughput::LagGrowth,
        problem::{Component, Problem},
    },
    crd::{
        conditions::{reasons, types},
        AutoscalerStatus, ComponentsStatus, DataPipelineStatus, IngestJobStatus, Phase,
        ThroughputStatus,
    },
};

const TRUE: &str = "True";
const FALSE: &str = "False";
const UNKNOWN: &str = "Unknown";

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

/// The status after a visit that found `observation` at `now`.
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
            let ingest_job = ingest_job_record(old, &children.ingest);
            let [kafka, object_store, search, runtime] =
                assess_components(children, pods, facts, ingest_job.as_ref());
            let parts = [
                (Component::Kafka, &kafka),
                (Component::ObjectStore, &object_store),
                (Component::Search, &search),
                (Component::Runtime, &runtime),
            ];
            let mut conditions = component_conditions(old, &parts, generation, now);
            let all_ready = parts.iter().all(|(_, a)| a.ready);
            let throughput = throughput
                .clone()
                .or_else(|| old.and_then(|s| s.throughput.clone()));
            let lag_growth = flow.lag_growth.filter(|_| !facts.paused);
            let (status, reason, message) =
                ready_verdict(&parts, &runtime, facts, lag_growth, throughput.as_ref());
            conditions.push(condition(
                old,
                types::READY,
                status,
                reason,
                message,
                generation,
                now,
            ));
            if let Some(measured) = measured_condition(old, flow, facts, generation, now) {
                conditions.push(measured);
            }
            let rt = &children.runtime;
            DataPipelineStatus {
                observed_generation: generation,
                phase: Some(phase(old, generation, facts.paused, all_ready, lag_growth)),
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

/// One condition per component, from its verdict.
fn component_conditions(
    old: Option<&DataPipelineStatus>,
    parts: &[(Component, &Assessment)],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    parts
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
        .collect()
}

/// The Ready condition's status, reason and message: lag growing on a ready pipeline,
/// every component ready, paused, or waiting for the components that are not ready.
fn ready_verdict(
    parts: &[(Component, &Assessment)],
    runtime: &Assessment,
    facts: &PipelineFacts,
    lag_growth: Option<LagGrowth>,
    throughput: Option<&ThroughputStatus>,
) -> (&'static str, &'static str, String) {
    let all_ready = parts.iter().all(|(_, a)| a.ready);
    if all_ready && lag_growth.is_some() {
        let growth = lag_growth.unwrap_or_default();
        let rates = throughput.cloned().unwrap_or_default();
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
    }
}

/// Paused, Degraded (lag growing, or readiness lost), Running, or Provisioning.
fn phase(
    old: Option<&DataPipelineStatus>,
    generation: Option<i64>,
    paused: bool,
    all_ready: bool,
    lag_growth: Option<LagGrowth>,
) -> Phase {
    let old_phase = old.and_then(|s| s.phase);
    // Degraded = lost readiness without being asked to change; a new generation being
    // rolled out is provisioning.
    let same_generation = old.and_then(|s| s.observed_generation) == generation;
    if paused {
        Phase::Paused
    } else if all_ready && lag_growth.is_some() {
        Phase::Degraded
    } else if all_ready {
        Phase::Running
    } else if same_generation && matches!(old_phase, Some(Phase::Running | Phase::Degraded)) {
        Phase::Degraded
    } else {
        Phase::Provisioning
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
