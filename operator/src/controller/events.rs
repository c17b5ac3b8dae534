//! Kubernetes Events on a DataPipeline for the transitions a user cares about: a phase
//! change, and the appearance of a problem they must fix (missing Secret, invalid spec, a
//! component whose pods cannot start or whose child the API server refused).
//! `transition_notices` is pure; `publish` sends them and only logs failures, because an
//! Event that cannot be written must not fail the reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client,
};

use crate::crd::{
    conditions::{events, reasons, types},
    DataPipelineStatus, Phase,
};

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

fn ready_condition(status: &DataPipelineStatus) -> Option<(&str, &str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == types::READY)
        .map(|c| (c.reason.as_str(), c.message.as_str()))
}

/// The Events that the change from `old` to `new` deserves.
pub fn transition_notices(
    old: Option<&DataPipelineStatus>,
    new: &DataPipelineStatus,
) -> Vec<Notice> {
    let mut notices = Vec::new();
    let old_phase = old.and_then(|s| s.phase);
    let new_ready = ready_condition(new);
    if new.phase != old_phase {
        if let Some(phase) = new.phase {
            let from = old_phase.map_or("(none)", Phase::as_str);
            let why = new_ready.map(|(_, m)| m).unwrap_or_default();
            notices.push(Notice {
                warning: matches!(phase, Phase::Degraded | Phase::Failed),
                reason: events::PHASE_CHANGED.into(),
                note: truncate(&format!("{from} -> {}: {why}", phase.as_str())),
            });
        }
    }
    let problems = [
        reasons::SECRET_NOT_FOUND,
        reasons::SECRET_KEY_NOT_FOUND,
        reasons::SECRET_NOT_OPTED_IN,
        reasons::INVALID_SPEC,
    ];
    if let Some((reason, message)) = new_ready {
        let changed = old.and_then(ready_condition) != new_ready;
        if problems.contains(&reason) && changed {
            notices.push(Notice {
                warning: true,
                reason: reason.into(),
                note: truncate(message),
            });
        }
    }
    // A component whose pods cannot start, whose child the API server refused, or whose
    // generator Job failed for good, once per new reason (a message that only counts
    // another restart is no news).
    for condition in &new.conditions {
        let reason = condition.reason.as_str();
        if !types::ALL.contains(&condition.type_.as_str())
            || !(reasons::POD_PROBLEMS.contains(&reason)
                || reason == reasons::APPLY_FAILED
                || reason == reasons::INGEST_FAILED)
        {
            continue;
        }
        let old_reason = old
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition.type_))
            .map(|c| c.reason.as_str());
        if !old_reason.is_some_and(|old| same_pod_problem(old, reason)) {
            notices.push(Notice {
                warning: true,
                reason: condition.reason.clone(),
                note: truncate(&format!("{}: {}", condition.type_, condition.message)),
            });
        }
    }
    notices
}

/// Whether two reasons are one problem seen at two moments of the kubelet's retry cycle:
/// a pull that fails shows `ErrImagePull`, then `ImagePullBackOff` while the kubelet waits,
/// then `ErrImagePull` again; a container that keeps failing alternates between its failure
/// and `CrashLoopBackOff`. Announcing each swing would put a Warning on the pipeline every
/// few seconds with nothing new in it.
fn same_pod_problem(a: &str, b: &str) -> bool {
    const CRASH_CAUSES: [&str; 4] = [
        reasons::RUN_CONTAINER_ERROR,
        reasons::CONTAINER_FAILED,
        reasons::OOM_KILLED,
        reasons::CREATE_CONTAINER_ERROR,
    ];
    let pair = |x: &str, y: &str| {
        (x == reasons::IMAGE_PULL_BACK_OFF && y == reasons::ERR_IMAGE_PULL)
            || (x == reasons::CRASH_LOOP_BACK_OFF && CRASH_CAUSES.contains(&y))
    };
    a == b || pair(a, b) || pair(b, a)
}

/// Event notes are limited to 1 kB.
fn truncate(note: &str) -> String {
    const LIMIT: usize = 1000;
    if note.len() <= LIMIT {
        return note.to_string();
    }
    let mut end = LIMIT;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

/// Publishes each notice as a new Event. A fresh `Recorder` per notice on purpose: kube's
/// recorder folds Events with the same reason into a series that keeps the first note,
/// which would hide "Provisioning -> Running" behind "(none) -> Provisioning". Notices are
/// only produced on transitions, so there is no flood to fold.
pub async fn publish(
    client: &Client,
    reporter: &Reporter,
    reference: &ObjectReference,
    notices: Vec<Notice>,
) {
    for notice in notices {
        let recorder = Recorder::new(client.clone(), reporter.clone());
        let event = Event {
            type_: if notice.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: notice.reason.clone(),
            note: Some(notice.note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, reference).await {
            tracing::warn!(reason = %notice.reason, %error, "could not publish a Kubernetes Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::at;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn status(phase: Phase, reason: &str, message: &str) -> DataPipelineStatus {
        DataPipelineStatus {
            phase: Some(phase),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: reason.into(),
                message: message.into(),
                observed_generation: Some(1),
                last_transition_time: at(1),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn phase_changes_are_announced() {
        let provisioning = status(
            Phase::Provisioning,
            "ComponentsNotReady",
            "waiting for Kafka",
        );
        assert_eq!(
            transition_notices(None, &provisioning),
            vec![Notice {
                warning: false,
                reason: "PhaseChanged".into(),
                note: "(none) -> Provisioning: waiting for Kafka".into()
            }]
        );
        let degraded = status(Phase::Degraded, "ComponentsNotReady", "waiting for search");
        assert_eq!(
            transition_notices(Some(&provisioning), &degraded),
            vec![Notice {
                warning: true,
                reason: "PhaseChanged".into(),
                note: "Provisioning -> Degraded: waiting for search".into()
            }]
        );
        assert_eq!(transition_notices(Some(&degraded), &degraded), vec![]);
    }

    #[test]
    fn a_missing_secret_is_announced_once() {
        let pending = status(
            Phase::Pending,
            "SecretNotFound",
            "Secret shops/x does not exist",
        );
        let notices = transition_notices(None, &pending);
        assert_eq!(
            notices[1],
            Notice {
                warning: true,
                reason: "SecretNotFound".into(),
                note: "Secret shops/x does not exist".into()
            }
        );
        assert_eq!(transition_notices(Some(&pending), &pending), vec![]);
        let other = status(
            Phase::Pending,
            "SecretNotFound",
            "Secret shops/y does not exist",
        );
        assert_eq!(transition_notices(Some(&pending), &other).len(), 1);
    }

    #[test]
    fn a_component_whose_pods_cannot_start_is_announced_once_per_reason() {
        let condition = |type_: &str, reason: &str, message: &str| Condition {
            type_: type_.into(),
            status: "False".into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: at(1),
        };
        let with = |search: Condition| DataPipelineStatus {
            phase: Some(Phase::Provisioning),
            conditions: vec![
                search,
                condition("Ready", "ComponentsNotReady", "waiting for search"),
            ],
            ..Default::default()
        };
        let starting = with(condition("SearchReady", "ReplicasNotReady", "0/1 ready"));
        let pulling = with(condition(
            "SearchReady",
            "ImagePullBackOff",
            "container opensearch of pod shops/shop-es-0 cannot pull image x: not found",
        ));
        assert_eq!(
            transition_notices(Some(&starting), &pulling),
            vec![Notice {
                warning: true,
                reason: "ImagePullBackOff".into(),
                note: "SearchReady: container opensearch of pod shops/shop-es-0 cannot pull image x: not found".into()
            }]
        );
        let still = with(condition(
            "SearchReady",
            "ImagePullBackOff",
            "container opensearch of pod shops/shop-es-1 cannot pull image x: not found",
        ));
        assert_eq!(transition_notices(Some(&pulling), &still), vec![]);
        let crashing = with(condition(
            "SearchReady",
            "CrashLoopBackOff",
            "keeps exiting",
        ));
        assert_eq!(
            transition_notices(Some(&still), &crashing)
                .into_iter()
                .map(|n| n.reason)
                .collect::<Vec<_>>(),
            vec!["CrashLoopBackOff".to_string()]
        );
    }

    #[test]
    fn the_kubelet_retry_cycle_of_one_problem_is_not_news() {
        let swings = [
            ("ErrImagePull", "ImagePullBackOff"),
            ("ImagePullBackOff", "ErrImagePull"),
            ("RunContainerError", "CrashLoopBackOff"),
            ("CrashLoopBackOff", "ContainerFailed"),
            ("OOMKilled", "CrashLoopBackOff"),
        ];
        for (a, b) in swings {
            assert!(same_pod_problem(a, b), "{a} -> {b}");
        }
        let news = [
            ("ImagePullBackOff", "CrashLoopBackOff"),
            ("ErrImagePull", "RunContainerError"),
            ("OOMKilled", "ContainerFailed"),
            ("Unschedulable", "ImagePullBackOff"),
        ];
        for (a, b) in news {
            assert!(!same_pod_problem(a, b), "{a} -> {b}");
        }
    }

    #[test]
    fn long_notes_are_cut() {
        let long = "é".repeat(800);
        let cut = truncate(&long);
        assert!(cut.len() <= 1003);
        assert!(cut.ends_with("..."));
    }
}
