//! The lag-driven autoscaling decision (design brief §7), pure: from the measured lag, the
//! spec's policy and the recent recommendations to the replica count the runtime should
//! run. No I/O; the controller keeps the recommendation history in memory. The reason, in
//! words, reads back as a fixed category ([`ScalingReason`]) for the operator's metrics.

use crate::controller::measure::throughput::LagInputs;

// The phrases of the reasons that [`ScalingReason::of`] reads back.
const PAUSED: &str = "spec.paused is true";
const FIXED: &str = "autoscaling is off";
const NOT_MEASURED: &str = "lag not measured";
const LIMITED_TO_MAX: &str = "limited to maxReplicas";
const SCALE_UP: &str = "scale up";
const STEADY: &str = "steady";
const STABILIZING: &str = "(scale-down stabilization)";
const SCALE_DOWN: &str = "scale down to";

/// Why the autoscaler wants its replicas, as a fixed category (a metric label; the
/// status's reason has the numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalingReason {
    /// `spec.paused`: no replicas.
    Paused,
    /// Autoscaling off: `spec.runtime.replicas`.
    Fixed,
    /// The lag could not be measured: the current replicas are kept.
    NotMeasured,
    /// The lag asks for more than `maxReplicas`.
    MaxReplicas,
    ScaleUp,
    Steady,
    /// Lower recommendations, not yet for the whole stabilization window.
    Stabilizing,
    ScaleDown,
    /// A reason this module did not write.
    Other,
}

impl ScalingReason {
    pub const ALL: [ScalingReason; 9] = [
        Self::Paused,
        Self::Fixed,
        Self::NotMeasured,
        Self::MaxReplicas,
        Self::ScaleUp,
        Self::Steady,
        Self::Stabilizing,
        Self::ScaleDown,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::Fixed => "fixed",
            Self::NotMeasured => "not_measured",
            Self::MaxReplicas => "max_replicas",
            Self::ScaleUp => "scale_up",
            Self::Steady => "steady",
            Self::Stabilizing => "stabilizing",
            Self::ScaleDown => "scale_down",
            Self::Other => "other",
        }
    }

    /// The category of a reason [`decide`] wrote. A lag capped at `maxReplicas` wins over
    /// the verb: it is the one a user can act on.
    pub fn of(reason: &str) -> Self {
        let verb = reason.rsplit(": ").next().unwrap_or_default();
        if reason == PAUSED {
            Self::Paused
        } else if reason.starts_with(FIXED) {
            Self::Fixed
        } else if reason.starts_with(NOT_MEASURED) {
            Self::NotMeasured
        } else if reason.contains(LIMITED_TO_MAX) && !verb.starts_with(SCALE_DOWN) {
            Self::MaxReplicas
        } else if verb.ends_with(STABILIZING) {
            Self::Stabilizing
        } else if verb.starts_with(SCALE_DOWN) {
            Self::ScaleDown
        } else if verb.starts_with(SCALE_UP) {
            Self::ScaleUp
        } else if verb.starts_with(STEADY) {
            Self::Steady
        } else {
            Self::Other
        }
    }
}

/// What the spec says about scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Paused,
    /// Autoscaling off: `spec.runtime.replicas` (default 1) decides.
    Fixed(i32),
    Lag {
        min_replicas: i32,
        max_replicas: i32,
        lag_per_replica: i64,
        scale_down_stabilization_seconds: i64,
    },
}

/// One recommendation (unstabilized desired replicas) at a time in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub at: i64,
    pub replicas: i32,
}

/// What the autoscaler knew before this decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Previous {
    /// Replicas the runtime currently runs (the last decision).
    pub replicas: i32,
    /// Recommendations of earlier decisions, oldest first.
    pub recommendations: Vec<Recommendation>,
}

/// The decision and what produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Replicas the runtime should run now.
    pub desired: i32,
    /// What the lag alone asks for, before stabilization.
    pub recommended: i32,
    /// Why, in words (goes into `.status.autoscaler.reason`).
    pub reason: String,
    /// The history to pass as `Previous::recommendations` next time (pruned to the window).
    pub recommendations: Vec<Recommendation>,
}

/// ceil(total lag / lag per replica), capped at the partitions and at the partitions with
/// lag (a consumer without a lagging partition has nothing to do), clamped to [min, max].
/// Returns the replicas and the reason.
pub fn recommend(
    inputs: &LagInputs,
    min_replicas: i32,
    max_replicas: i32,
    lag_per_replica: i64,
) -> (i32, String) {
    let lag = inputs.total_lag.max(0);
    let per = lag_per_replica.max(1);
    // Both are non-negative here: (lag + per - 1) / per is the ceiling without overflow
    // risk that matters (lag is far below i64::MAX).
    let raw = lag.saturating_add(per - 1) / per;
    let raw = i32::try_from(raw).unwrap_or(i32::MAX);
    let mut why = format!("lag {lag} at {per} per replica asks for {raw}");
    let mut replicas = raw;
    if replicas > inputs.partitions {
        replicas = inputs.partitions;
        why.push_str(&format!(", capped at {} partitions", inputs.partitions));
    }
    if replicas > inputs.partitions_with_lag {
        replicas = inputs.partitions_with_lag;
        why.push_str(&format!(
            ", capped at {} partitions with lag",
            inputs.partitions_with_lag
        ));
    }
    let max = max_replicas.max(min_replicas);
    if replicas < min_replicas {
        replicas = min_replicas;
        why.push_str(&format!(", raised to minReplicas {min_replicas}"));
    } else if replicas > max {
        replicas = max;
        why.push_str(&format!(", {LIMITED_TO_MAX} {max}"));
    }
    (replicas, why)
}

/// The replicas to run at `now` (seconds). `inputs` is `None` when the lag could not be
/// measured: the current replicas are kept. Scales up at once; scales down to the highest
/// recommendation of the stabilization window, and only once the history covers the
/// whole window (like the HPA's scale-down stabilization).
pub fn decide(
    inputs: Option<&LagInputs>,
    policy: &Policy,
    previous: &Previous,
    now: i64,
) -> Decision {
    let (min, max, lag_per_replica, window) = match *policy {
        Policy::Paused => return unrecorded(0, PAUSED.into()),
        Policy::Fixed(replicas) => {
            return unrecorded(
                replicas,
                format!("{FIXED}: spec.runtime.replicas = {replicas}"),
            )
        }
        Policy::Lag {
            min_replicas,
            max_replicas,
            lag_per_replica,
            scale_down_stabilization_seconds,
        } => (
            min_replicas,
            max_replicas.max(min_replicas),
            lag_per_replica,
            scale_down_stabilization_seconds.max(0),
        ),
    };
    let current = previous.replicas.clamp(min, max);
    let Some(inputs) = inputs else {
        return Decision {
            desired: current,
            recommended: current,
            reason: format!("{NOT_MEASURED}: keeping {current} replicas"),
            recommendations: previous.recommendations.clone(),
        };
    };
    let (recommended, why) = recommend(inputs, min, max, lag_per_replica);
    let mut history: Vec<Recommendation> = previous
        .recommendations
        .iter()
        .copied()
        .filter(|r| r.at < now)
        .collect();
    history.push(Recommendation {
        at: now,
        replicas: recommended,
    });
    // Keep the window plus the latest recommendation at or before its start: that one
    // held at the window's start, so it both counts and proves the window is covered.
    let start = now - window;
    let first_kept = history.iter().rposition(|r| r.at <= start);
    let covered = first_kept.is_some();
    let history: Vec<Recommendation> = history.split_off(first_kept.unwrap_or(0));
    let stabilized = history
        .iter()
        .map(|r| r.replicas)
        .max()
        .unwrap_or(recommended);

    let (desired, reason) = if recommended >= current {
        let verb = if recommended > current {
            SCALE_UP
        } else {
            STEADY
        };
        (recommended, format!("{why}: {verb} at {recommended}"))
    } else if !covered {
        (
            current,
            format!(
                "{why}: keeping {current} until {window}s of lower recommendations {STABILIZING}"
            ),
        )
    } else if stabilized < current {
        (
            stabilized,
            format!(
                "{why}: {SCALE_DOWN} {stabilized}, the highest recommendation of the last {window}s"
            ),
        )
    } else {
        (
            current,
            format!(
                "{why}: keeping {current} until {window}s of lower recommendations {STABILIZING}"
            ),
        )
    };
    Decision {
        desired,
        recommended,
        reason,
        recommendations: history,
    }
}

fn unrecorded(replicas: i32, reason: String) -> Decision {
    Decision {
        desired: replicas,
        recommended: replicas,
        reason,
        recommendations: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(total_lag: i64, partitions: i32, partitions_with_lag: i32) -> LagInputs {
        LagInputs {
            total_lag,
            partitions,
            partitions_with_lag,
        }
    }

    const POLICY: Policy = Policy::Lag {
        min_replicas: 1,
        max_replicas: 4,
        lag_per_replica: 100,
        scale_down_stabilization_seconds: 60,
    };

    fn fresh(replicas: i32) -> Previous {
        Previous {
            replicas,
            recommendations: Vec::new(),
        }
    }

    #[test]
    fn recommendation_caps_and_clamps() {
        // (lag, partitions, with lag, min, max, expected)
        let table = [
            (0, 6, 0, 1, 4, 1),   // zero lag: the minimum
            (0, 6, 0, 2, 4, 2),   // zero lag, higher minimum
            (1, 6, 1, 1, 4, 1),   // ceil(1/100) = 1
            (250, 6, 6, 1, 4, 3), // ceil(250/100) = 3
            (300, 6, 6, 1, 4, 3), // exact division
            (301, 6, 6, 1, 4, 4), // ceil
            (900, 6, 6, 1, 4, 4), // clamped at max
            (900, 2, 2, 1, 4, 2), // capped at partitions
            (900, 6, 3, 1, 4, 3), // capped at partitions with lag
            (900, 6, 1, 2, 4, 2), // cap below min: min wins
            (900, 6, 6, 1, 1, 1), // min = max
            (-5, 6, 0, 1, 4, 1),  // negative lag (offsets racing) counts as none
        ];
        for (total, partitions, with_lag, min, max, expected) in table {
            let (replicas, _) = recommend(&lag(total, partitions, with_lag), min, max, 100);
            assert_eq!(
                replicas, expected,
                "lag {total}, {partitions} partitions ({with_lag} with lag), [{min}, {max}]"
            );
        }
    }

    #[test]
    fn reason_names_every_cap() {
        let (replicas, reason) = recommend(&lag(900, 6, 3), 1, 4, 100);
        assert_eq!(replicas, 3);
        assert_eq!(
            reason,
            "lag 900 at 100 per replica asks for 9, capped at 6 partitions, capped at 3 partitions with lag"
        );
        let (_, reason) = recommend(&lag(0, 6, 0), 2, 4, 100);
        assert_eq!(
            reason,
            "lag 0 at 100 per replica asks for 0, raised to minReplicas 2"
        );
    }

    #[test]
    fn paused_and_fixed_ignore_lag() {
        let d = decide(Some(&lag(10_000, 6, 6)), &Policy::Paused, &fresh(3), 10);
        assert_eq!((d.desired, d.reason.as_str()), (0, "spec.paused is true"));
        let d = decide(Some(&lag(10_000, 6, 6)), &Policy::Fixed(2), &fresh(5), 10);
        assert_eq!(
            (d.desired, d.reason.as_str()),
            (2, "autoscaling is off: spec.runtime.replicas = 2")
        );
        assert!(d.recommendations.is_empty());
    }

    #[test]
    fn scales_up_at_once() {
        let d = decide(Some(&lag(350, 6, 6)), &POLICY, &fresh(1), 100);
        assert_eq!(d.desired, 4);
        assert_eq!(
            d.reason,
            "lag 350 at 100 per replica asks for 4: scale up at 4"
        );
        assert_eq!(
            d.recommendations,
            vec![Recommendation {
                at: 100,
                replicas: 4
            }]
        );
    }

    #[test]
    fn unmeasured_lag_keeps_the_current_replicas_within_bounds() {
        let d = decide(None, &POLICY, &fresh(3), 100);
        assert_eq!(
            (d.desired, d.reason.as_str()),
            (3, "lag not measured: keeping 3 replicas")
        );
        let d = decide(None, &POLICY, &fresh(9), 100);
        assert_eq!(d.desired, 4);
    }

    /// Drives `decide` through a sequence of (time, lag) and returns the desired replicas.
    fn run(start_replicas: i32, steps: &[(i64, i64)]) -> Vec<i32> {
        let mut previous = fresh(start_replicas);
        steps
            .iter()
            .map(|&(at, total)| {
                let with_lag = if total > 0 { 6 } else { 0 };
                let d = decide(Some(&lag(total, 6, with_lag)), &POLICY, &previous, at);
                previous = Previous {
                    replicas: d.desired,
                    recommendations: d.recommendations,
                };
                d.desired
            })
            .collect()
    }

    #[test]
    fn scale_down_waits_for_a_full_window_of_lower_recommendations() {
        // Window 60 s. Up to 4 at t=0; lag gone from t=15; down only at t=75, when the
        // recommendation 1 has held since t=15.
        let desired = run(
            1,
            &[
                (0, 400),
                (15, 0),
                (30, 0),
                (45, 0),
                (60, 0),
                (75, 0),
                (90, 0),
            ],
        );
        assert_eq!(desired, vec![4, 4, 4, 4, 4, 1, 1]);
    }

    #[test]
    fn scale_down_goes_to_the_highest_recommendation_of_the_window() {
        // Recommendations 4, 3 (t=15), 2 (t=45), 1 (t=60): at t=75 the window [15, 75]
        // holds 3, 2, 1 -> 3; at t=105 it holds [45..105] -> 2; at t=120 -> 1.
        let desired = run(
            1,
            &[
                (0, 400),
                (15, 300),
                (45, 200),
                (60, 100),
                (75, 100),
                (105, 100),
                (120, 100),
            ],
        );
        assert_eq!(desired, vec![4, 4, 4, 4, 3, 2, 1]);
    }

    #[test]
    fn a_spike_inside_the_window_restarts_the_wait() {
        let desired = run(
            4,
            &[(0, 400), (30, 0), (45, 400), (60, 0), (90, 0), (105, 0)],
        );
        // Up again at 45 is immediate (already 4); the low run starts again at 60 and
        // the window [45, 105] still holds the 4 at 45, so no scale-down before t=120.
        assert_eq!(desired, vec![4, 4, 4, 4, 4, 4]);
        let mut previous = fresh(4);
        for (at, total) in [(0, 400), (30, 0), (45, 400), (60, 0), (90, 0), (105, 0)] {
            let with_lag = if total > 0 { 6 } else { 0 };
            let d = decide(Some(&lag(total, 6, with_lag)), &POLICY, &previous, at);
            previous = Previous {
                replicas: d.desired,
                recommendations: d.recommendations,
            };
        }
        let d = decide(Some(&lag(0, 6, 0)), &POLICY, &previous, 120);
        assert_eq!(d.desired, 1);
    }

    #[test]
    fn zero_window_scales_down_at_once() {
        let policy = Policy::Lag {
            min_replicas: 1,
            max_replicas: 4,
            lag_per_replica: 100,
            scale_down_stabilization_seconds: 0,
        };
        let d = decide(Some(&lag(0, 6, 0)), &policy, &fresh(4), 10);
        assert_eq!(d.desired, 1);
        assert_eq!(
            d.reason,
            "lag 0 at 100 per replica asks for 0, raised to minReplicas 1: scale down to 1, the highest recommendation of the last 0s"
        );
    }

    #[test]
    fn history_is_pruned_to_the_window() {
        let previous = Previous {
            replicas: 2,
            recommendations: (0..10)
                .map(|i| Recommendation {
                    at: i * 15,
                    replicas: 2,
                })
                .collect(),
        };
        let d = decide(Some(&lag(200, 6, 6)), &POLICY, &previous, 150);
        // Window [90, 150]: the samples at 90, 105, 120, 135 and the new one.
        let times: Vec<i64> = d.recommendations.iter().map(|r| r.at).collect();
        assert_eq!(times, vec![90, 105, 120, 135, 150]);
    }

    #[test]
    fn every_reason_reads_back_as_its_category() {
        let zero_window = Policy::Lag {
            min_replicas: 1,
            max_replicas: 4,
            lag_per_replica: 100,
            scale_down_stabilization_seconds: 0,
        };
        let cases = [
            (decide(None, &Policy::Paused, &fresh(3), 10), "paused"),
            (decide(None, &Policy::Fixed(2), &fresh(3), 10), "fixed"),
            (decide(None, &POLICY, &fresh(3), 10), "not_measured"),
            (
                decide(Some(&lag(350, 6, 6)), &POLICY, &fresh(1), 10),
                "scale_up",
            ),
            (
                decide(Some(&lag(250, 6, 6)), &POLICY, &fresh(3), 10),
                "steady",
            ),
            (
                decide(Some(&lag(900, 6, 6)), &POLICY, &fresh(1), 10),
                "max_replicas",
            ),
            (
                decide(Some(&lag(900, 6, 6)), &POLICY, &fresh(4), 10),
                "max_replicas",
            ),
            (
                decide(Some(&lag(0, 6, 0)), &POLICY, &fresh(4), 10),
                "stabilizing",
            ),
            (
                decide(Some(&lag(0, 6, 0)), &zero_window, &fresh(4), 10),
                "scale_down",
            ),
        ];
        let read: Vec<(&str, &str)> = cases
            .iter()
            .map(|(d, _)| (d.reason.as_str(), ScalingReason::of(&d.reason).as_str()))
            .collect();
        let expected: Vec<(&str, &str)> = cases
            .iter()
            .map(|(d, category)| (d.reason.as_str(), *category))
            .collect();
        assert_eq!(read, expected);
        assert_eq!(ScalingReason::of("set by hand").as_str(), "other");
        // Every category has its own label value.
        let mut values: Vec<&str> = ScalingReason::ALL.iter().map(|r| r.as_str()).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), ScalingReason::ALL.len());
    }
}
