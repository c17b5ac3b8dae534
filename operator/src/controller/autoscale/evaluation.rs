//! From one measurement (Kafka offsets and the search index's document count) to the
//! status's `throughput` and `autoscaler` blocks and the runtime's replica count. No I/O:
//! `evaluate` works on the per-pipeline memory the
//! controller keeps (the sample window and the recommendation history), which lives in
//! the operator's memory only; after a restart the window refills within one window.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::decision::{decide, Policy, Previous, Recommendation};
use crate::{
    controller::{
        events::Notice,
        measure::{
            observer::Measurement,
            throughput::{LagGrowth, Sample, Window},
        },
        validate::ValidatedPipeline,
    },
    crd::{AutoscalerInputs, AutoscalerStatus, DataPipelineStatus, ThroughputStatus},
};

/// What the operator remembers about one pipeline between reconciles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineMemory {
    pub window: Window,
    pub recommendations: Vec<Recommendation>,
    /// The last successful measurement, reused when reconciles come faster than the
    /// observation interval (children's status changes wake the controller too).
    pub last_measurement: Option<(i64, Measurement)>,
}

impl PipelineMemory {
    pub fn new(window_ms: i64) -> Self {
        Self {
            window: Window::new(window_ms),
            recommendations: Vec::new(),
            last_measurement: None,
        }
    }
}

/// Health signals of the data flow, for the phase and conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowHealth {
    /// `Some` when the lag kept growing over the whole window.
    pub lag_growth: Option<LagGrowth>,
    /// `Some(message)` when Kafka could not be read; `None` when it was read or not tried.
    pub kafka_error: Option<String>,
    /// Whether a measurement was attempted (decides whether the ThroughputMeasured
    /// condition is reported at all).
    pub measured: bool,
}

/// The outcome of `evaluate`.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// `None` = not measured: the status keeps its previous block.
    pub throughput: Option<ThroughputStatus>,
    /// `None` when autoscaling is off (the block is removed).
    pub autoscaler: Option<AutoscalerStatus>,
    /// Processing pods the runtime Deployment should have.
    pub replicas: i32,
    pub health: FlowHealth,
    /// An Event for a change of the replica count.
    pub notice: Option<Notice>,
}

fn policy(plan: &ValidatedPipeline) -> Policy {
    if plan.paused {
        return Policy::Paused;
    }
    match &plan.runtime.autoscaling {
        Some(a) => Policy::Lag {
            min_replicas: a.min_replicas,
            max_replicas: a.max_replicas,
            lag_per_replica: a.lag_per_replica,
            scale_down_stabilization_seconds: i64::from(a.scale_down_stabilization_seconds),
        },
        None => Policy::Fixed(plan.runtime.replicas),
    }
}

/// Combines a measurement with what is remembered and the previous status at `now`.
/// `fresh` = read from Kafka for this call; a reused measurement adds no sample to the
/// window (it would repeat an old reading at a later time).
pub fn evaluate(
    memory: &mut PipelineMemory,
    measurement: &Measurement,
    fresh: bool,
    plan: &ValidatedPipeline,
    old: Option<&DataPipelineStatus>,
    now: &Time,
) -> Evaluation {
    let now_s = now.0.as_second();
    let old_throughput = old.and_then(|s| s.throughput.clone());
    let old_autoscaler = old.and_then(|s| s.autoscaler.clone());
    let (snapshot, health) = match measurement {
        Measurement::Measured(snapshot) => (
            Some(snapshot),
            FlowHealth {
                measured: true,
                ..FlowHealth::default()
            },
        ),
        Measurement::Failed(message) => (
            None,
            FlowHealth {
                measured: true,
                kafka_error: Some(message.clone()),
                lag_growth: None,
            },
        ),
        Measurement::Skipped => (None, FlowHealth::default()),
    };

    let mut health = health;
    let throughput = snapshot.map(|snapshot| {
        let sample = Sample::of(snapshot, now_s * 1000);
        let advanced = memory
            .window
            .latest()
            .is_some_and(|last| sample.committed > last.committed);
        if fresh
            && memory
                .window
                .latest()
                .is_none_or(|last| last.at_ms < sample.at_ms)
        {
            memory.window.push(sample);
        }
        health.lag_growth = memory.window.lag_growth();
        let rates = memory.window.rates();
        ThroughputStatus {
            ingested_per_second: rates.map_or(0.0, |r| r.ingested_per_second),
            processed_per_second: rates.map_or(0.0, |r| r.processed_per_second),
            consumer_lag: sample.lag,
            events_ingested: sample.log_end,
            events_processed: sample.committed,
            dead_letters: snapshot.dead_letters,
            // The index's count when it could be read with these offsets, else the last
            // one reported.
            profiles: snapshot
                .profiles
                .unwrap_or_else(|| old_throughput.as_ref().map_or(0, |t| t.profiles)),
            // A checkpoint ends with the offset commit, so the committed offsets moving
            // is the checkpoint seen from outside (to within one observation interval).
            last_checkpoint_time: if advanced {
                Some(now.clone())
            } else {
                old_throughput
                    .as_ref()
                    .and_then(|t| t.last_checkpoint_time.clone())
            },
        }
    });

    let policy = policy(plan);
    let inputs = snapshot.map(|s| s.lag_inputs());
    let previous = Previous {
        replicas: plan.runtime.replicas,
        recommendations: memory.recommendations.clone(),
    };
    let decision = decide(inputs.as_ref(), &policy, &previous, now_s);
    memory.recommendations = decision.recommendations.clone();

    let autoscaler =
        plan.runtime.autoscaling.as_ref().map(|spec| {
            let previous_desired = old_autoscaler.as_ref().map(|a| a.desired_replicas);
            let changed = previous_desired.is_some_and(|d| d != decision.desired);
            AutoscalerStatus {
                desired_replicas: decision.desired,
                // Filled from the Deployment by the status computation.
                current_replicas: old_autoscaler.as_ref().map_or(0, |a| a.current_replicas),
                inputs: match inputs {
                    Some(i) => AutoscalerInputs {
                        total_lag: i.total_lag,
                        partitions: i.partitions,
                        partitions_with_lag: i.partitions_with_lag,
                        lag_per_replica: spec.lag_per_replica,
                    },
                    None => old_autoscaler.as_ref().map(|a| a.inputs.clone()).unwrap_or(
                        AutoscalerInputs {
                            lag_per_replica: spec.lag_per_replica,
                            ..AutoscalerInputs::default()
                        },
                    ),
                },
                reason: decision.reason.clone(),
                last_scale_time: if changed {
                    Some(now.clone())
                } else {
                    old_autoscaler
                        .as_ref()
                        .and_then(|a| a.last_scale_time.clone())
                },
            }
        });

    let notice = match (&autoscaler, old_autoscaler.as_ref()) {
        (Some(new), Some(old)) if new.desired_replicas != old.desired_replicas => Some(Notice {
            warning: false,
            reason: if new.desired_replicas > old.desired_replicas {
                crate::crd::conditions::events::SCALED_UP
            } else {
                crate::crd::conditions::events::SCALED_DOWN
            }
            .into(),
            note: format!(
                "runtime replicas {} -> {}: {}",
                old.desired_replicas, new.desired_replicas, new.reason
            ),
        }),
        _ => None,
    };

    Evaluation {
        throughput,
        autoscaler,
        replicas: decision.desired,
        health,
        notice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::{
            fixtures,
            measure::throughput::{OffsetsSnapshot, PartitionOffsets},
            validate::validate,
        },
        crd::AutoscalingSpec,
    };

    fn plan(
        autoscaling: Option<AutoscalingSpec>,
        status: Option<DataPipelineStatus>,
    ) -> ValidatedPipeline {
        let mut dp = fixtures::managed_pipeline();
        dp.spec.runtime.autoscaling = autoscaling;
        dp.status = status;
        validate(&dp, &fixtures::settings()).expect("valid")
    }

    fn autoscaling() -> AutoscalingSpec {
        AutoscalingSpec {
            min_replicas: 1,
            max_replicas: 4,
            lag_per_replica: 100,
            scale_down_stabilization_seconds: 30,
        }
    }

    /// Three partitions; `ends` and `commits` per partition.
    fn snapshot(ends: [i64; 3], commits: [i64; 3]) -> Measurement {
        Measurement::Measured(OffsetsSnapshot {
            events: (0..3)
                .map(|i| PartitionOffsets {
                    partition: i as i32,
                    low: 0,
                    log_end: ends[i],
                    committed: Some(commits[i]),
                })
                .collect(),
            dead_letters: 4,
            profiles: None,
        })
    }

    fn with_profiles(measurement: Measurement, profiles: Option<i64>) -> Measurement {
        match measurement {
            Measurement::Measured(snapshot) => Measurement::Measured(OffsetsSnapshot {
                profiles,
                ..snapshot
            }),
            other => other,
        }
    }

    #[test]
    fn backlog_scales_up_at_once_and_down_after_the_window() {
        let mut memory = PipelineMemory::new(60_000);
        let mut status: Option<DataPipelineStatus> = None;
        let mut replicas = Vec::new();
        let mut notes = Vec::new();
        // (time, log ends, commits)
        let steps = [
            (0, [0, 0, 0], [0, 0, 0]),
            (15, [300, 300, 300], [0, 0, 0]),
            (30, [300, 300, 300], [300, 300, 300]),
            (45, [300, 300, 300], [300, 300, 300]),
            (60, [300, 300, 300], [300, 300, 300]),
        ];
        for (at, ends, commits) in steps {
            let p = plan(Some(autoscaling()), status.clone());
            let e = evaluate(
                &mut memory,
                &snapshot(ends, commits),
                true,
                &p,
                status.as_ref(),
                &fixtures::at(at),
            );
            replicas.push(e.replicas);
            if let Some(n) = &e.notice {
                notes.push((n.reason.clone(), n.note.clone()));
            }
            let mut next = status.clone().unwrap_or_default();
            next.throughput = e.throughput.clone();
            next.autoscaler = e.autoscaler.clone();
            status = Some(next);
        }
        // 900 lag / 100 = 9, capped at 3 partitions; down at 60 (lower since 30).
        assert_eq!(replicas, vec![1, 3, 3, 3, 1]);
        assert_eq!(
            notes,
            vec![
                (
                    "ScaledUp".to_string(),
                    "runtime replicas 1 -> 3: lag 900 at 100 per replica asks for 9, capped at 3 partitions: scale up at 3".to_string()
                ),
                (
                    "ScaledDown".to_string(),
                    "runtime replicas 3 -> 1: lag 0 at 100 per replica asks for 0, raised to minReplicas 1: scale down to 1, the highest recommendation of the last 30s".to_string()
                ),
            ]
        );
        let last = status.expect("status");
        let throughput = last.throughput.expect("throughput");
        assert_eq!(
            throughput,
            ThroughputStatus {
                // Window [0, 60]: 900 events in and out over 60 s.
                ingested_per_second: 15.0,
                processed_per_second: 15.0,
                consumer_lag: 0,
                events_ingested: 900,
                events_processed: 900,
                dead_letters: 4,
                profiles: 0,
                last_checkpoint_time: Some(fixtures::at(30)),
            }
        );
        let autoscaler = last.autoscaler.expect("autoscaler");
        assert_eq!(autoscaler.last_scale_time, Some(fixtures::at(60)));
        assert_eq!(
            autoscaler.inputs,
            AutoscalerInputs {
                total_lag: 0,
                partitions: 3,
                partitions_with_lag: 0,
                lag_per_replica: 100
            }
        );
    }

    #[test]
    fn unreachable_kafka_keeps_throughput_and_replicas_and_says_why() {
        let mut memory = PipelineMemory::new(60_000);
        let old = DataPipelineStatus {
            throughput: Some(ThroughputStatus {
                consumer_lag: 77,
                ..ThroughputStatus::default()
            }),
            autoscaler: Some(AutoscalerStatus {
                desired_replicas: 2,
                ..AutoscalerStatus::default()
            }),
            ..DataPipelineStatus::default()
        };
        let p = plan(Some(autoscaling()), Some(old.clone()));
        let e = evaluate(
            &mut memory,
            &Measurement::Failed("cannot reach Kafka at x:9092".into()),
            true,
            &p,
            Some(&old),
            &fixtures::at(5),
        );
        assert_eq!(e.throughput, None);
        assert_eq!(e.replicas, 2);
        assert_eq!(e.notice, None);
        assert_eq!(
            e.health.kafka_error.as_deref(),
            Some("cannot reach Kafka at x:9092")
        );
        assert_eq!(
            e.autoscaler.expect("autoscaler").reason,
            "lag not measured: keeping 2 replicas"
        );
    }

    #[test]
    fn autoscaling_off_follows_the_spec_and_has_no_block() {
        let mut memory = PipelineMemory::new(60_000);
        let p = plan(None, None);
        let e = evaluate(
            &mut memory,
            &snapshot([500, 0, 0], [0, 0, 0]),
            true,
            &p,
            None,
            &fixtures::at(1),
        );
        assert_eq!(e.replicas, p.runtime.replicas);
        assert_eq!(e.autoscaler, None);
        assert_eq!(e.throughput.expect("throughput").consumer_lag, 500);
    }

    #[test]
    fn profiles_are_the_index_count_or_the_last_one_reported() {
        let mut memory = PipelineMemory::new(60_000);
        let p = plan(None, None);
        let first = evaluate(
            &mut memory,
            &with_profiles(snapshot([10, 0, 0], [0, 0, 0]), Some(1234)),
            true,
            &p,
            None,
            &fixtures::at(1),
        );
        let first = first.throughput.expect("throughput");
        assert_eq!(first.profiles, 1234);
        let old = DataPipelineStatus {
            throughput: Some(first),
            ..DataPipelineStatus::default()
        };
        // Count unreadable this time: the previous one stays, the offsets still update.
        let second = evaluate(
            &mut memory,
            &with_profiles(snapshot([20, 0, 0], [0, 0, 0]), None),
            true,
            &p,
            Some(&old),
            &fixtures::at(16),
        )
        .throughput
        .expect("throughput");
        assert_eq!((second.profiles, second.events_ingested), (1234, 20));
        // A new count replaces it, also when lower (index recreated).
        let third = evaluate(
            &mut memory,
            &with_profiles(snapshot([30, 0, 0], [0, 0, 0]), Some(7)),
            true,
            &p,
            Some(&old),
            &fixtures::at(31),
        )
        .throughput
        .expect("throughput");
        assert_eq!(third.profiles, 7);
        // Never counted and no previous status: 0.
        let mut memory = PipelineMemory::new(60_000);
        let none = evaluate(
            &mut memory,
            &with_profiles(snapshot([5, 0, 0], [0, 0, 0]), None),
            true,
            &p,
            None,
            &fixtures::at(1),
        )
        .throughput
        .expect("throughput");
        assert_eq!(none.profiles, 0);
    }

    #[test]
    fn failed_offsets_keep_the_whole_block_including_profiles() {
        let mut memory = PipelineMemory::new(60_000);
        let p = plan(None, None);
        let e = evaluate(
            &mut memory,
            &Measurement::Failed("cannot reach Kafka at x:9092".into()),
            true,
            &p,
            None,
            &fixtures::at(1),
        );
        // `None` = the status keeps its previous throughput block, profiles included.
        assert_eq!(e.throughput, None);
    }
}
