//! Why a child's pods cannot start. `read_problems` lists the pipeline's pods by label
//! (I/O: one request, made only when `worth_reading` finds a workload or setup Job that is
//! not done; a failed list is logged and reads as no problem, since the pods only explain
//! a status and never change what is applied). `problems` picks, per component, the most
//! actionable problem of its pods: unschedulable, then an image that cannot be pulled, a
//! container that cannot be created or started, a container killed for memory, one
//! crash-looping, one that exited with an error (pure).

use k8s_openapi::api::core::v1::{
    ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
};
use kube::{api::ListParams, Api, Client, ResourceExt};

use crate::{
    controller::{
        apply::readiness::{ChildrenState, IngestState, JobOutcome, JobState, WorkloadState},
        build::names::{children_selector, namespaced_name, Role, LABEL_COMPONENT},
        problem::Component,
    },
    crd::conditions::reasons,
};

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

/// Longest container or scheduler message quoted in a condition: room for an error that
/// says what happened and how to resume (a runtime's termination message), far below the
/// 32 kB a condition message may hold.
const MESSAGE_LIMIT: usize = 1000;

/// Whether the pods could explain something: some managed workload is not ready, or a
/// setup Job has not finished.
pub fn worth_reading(children: &ChildrenState) -> bool {
    let unready = |w: &Option<WorkloadState>| w.as_ref().is_some_and(|w| !w.is_ready());
    let running =
        |j: &Option<JobState>| j.as_ref().is_some_and(|j| j.outcome == JobOutcome::Running);
    unready(&children.kafka)
        || running(&children.kafka_topics)
        || unready(&children.object_store)
        || running(&children.bucket)
        || unready(&children.search)
        || !children.runtime.is_ready()
        || matches!(&children.ingest, IngestState::Deployment(d) if !d.is_ready())
}

/// Lists the pipeline's pods when `worth_reading` says so.
pub async fn read_problems(
    client: &Client,
    namespace: &str,
    pipeline: &str,
    children: &ChildrenState,
) -> PodProblems {
    if !worth_reading(children) {
        return PodProblems::default();
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&children_selector(pipeline));
    match api.list(&params).await {
        Ok(list) => problems(&list.items),
        Err(error) => {
            tracing::warn!(%namespace, %pipeline, %error, "cannot list the pipeline's pods; conditions will not say why a pod cannot start");
            PodProblems::default()
        }
    }
}

/// The component whose condition a pod's problems belong to (by its component label).
fn component(pod: &Pod) -> Option<Component> {
    let label = pod.labels().get(LABEL_COMPONENT)?;
    Role::from_component(label).map(Component::of_role)
}

/// The most actionable problem of each component's pods.
pub fn problems(pods: &[Pod]) -> PodProblems {
    let mut found = PodProblems::default();
    for c in [
        Component::Kafka,
        Component::ObjectStore,
        Component::Search,
        Component::Runtime,
    ] {
        let mine: Vec<&Pod> = pods.iter().filter(|p| component(p) == Some(c)).collect();
        *found.slot(c) = pod_problem(&mine);
    }
    found
}

/// The most actionable problem among some pods; ties go to the first pod by name.
pub fn pod_problem(pods: &[&Pod]) -> Option<PodProblem> {
    let mut candidates: Vec<(u8, String, PodProblem)> = pods
        .iter()
        .filter(|pod| is_current(pod))
        .filter_map(|pod| problem_of(pod).map(|(rank, p)| (rank, pod.name_any(), p)))
        .collect();
    candidates.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    candidates.into_iter().next().map(|(_, _, problem)| problem)
}

/// Pods that finished (old Job pods) or are going away (an old ReplicaSet's) are history.
fn is_current(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// A pod's most actionable problem, with its rank (lower = more actionable).
fn problem_of(pod: &Pod) -> Option<(u8, PodProblem)> {
    let name = namespaced_name(&pod.namespace().unwrap_or_default(), &pod.name_any());
    let status = pod.status.clone().unwrap_or_default();
    if let Some(problem) = unschedulable(&name, &status) {
        return Some((0, problem));
    }
    let init = status
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| (c, true));
    let main = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| (c, false));
    init.chain(main)
        .filter_map(|(container, is_init)| container_problem(pod, &name, container, is_init))
        .min_by_key(|(rank, _)| *rank)
}

fn unschedulable(pod: &str, status: &PodStatus) -> Option<PodProblem> {
    let condition: &PodCondition = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some(reasons::UNSCHEDULABLE)
    })?;
    Some(PodProblem {
        reason: reasons::UNSCHEDULABLE,
        message: format!(
            "pod {pod} cannot be scheduled: {}",
            quote(
                condition
                    .message
                    .as_deref()
                    .unwrap_or("no node can take it")
            )
        ),
    })
}

fn container_problem(
    pod: &Pod,
    pod_name: &str,
    status: &ContainerStatus,
    is_init: bool,
) -> Option<(u8, PodProblem)> {
    if status.ready {
        return None;
    }
    let container = format!(
        "{} {} of pod {pod_name}",
        if is_init {
            "init container"
        } else {
            "container"
        },
        status.name
    );
    let state = status.state.clone().unwrap_or_default();
    let waiting_reason = state.waiting.as_ref().and_then(|w| w.reason.clone());
    let waiting_message = state
        .waiting
        .as_ref()
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    let problem = |reason: &'static str, message: String| PodProblem { reason, message };
    let image_reasons = [
        reasons::ERR_IMAGE_PULL,
        reasons::IMAGE_PULL_BACK_OFF,
        reasons::INVALID_IMAGE_NAME,
    ];
    let create_reasons = [
        reasons::CREATE_CONTAINER_CONFIG_ERROR,
        reasons::CREATE_CONTAINER_ERROR,
    ];
    if let Some(reason) = image_reasons
        .into_iter()
        .find(|r| waiting_reason.as_deref() == Some(*r))
    {
        let message = format!(
            "{container} cannot pull image {}: {}",
            status.image,
            quote(&waiting_message)
        );
        return Some((1, problem(reason, message)));
    }
    if let Some(reason) = create_reasons
        .into_iter()
        .find(|r| waiting_reason.as_deref() == Some(*r))
    {
        let message = format!("{container} cannot be created: {}", quote(&waiting_message));
        return Some((2, problem(reason, message)));
    }
    if waiting_reason.as_deref() == Some(reasons::RUN_CONTAINER_ERROR) {
        let message = format!("{container} cannot be started: {}", quote(&waiting_message));
        return Some((2, problem(reasons::RUN_CONTAINER_ERROR, message)));
    }
    let crash_looping = waiting_reason.as_deref() == Some(reasons::CRASH_LOOP_BACK_OFF);
    // The termination now (a pod that is not restarted), else the one before the restart.
    let (terminated, previous) = match (&state.terminated, status.last_state.as_ref()) {
        (Some(now), _) => (Some(now), false),
        (None, last) => (last.and_then(|l| l.terminated.as_ref()), true),
    };
    let namespace = pod.namespace().unwrap_or_default();
    let logs = format!(
        "see `kubectl -n {namespace} logs {} -c {}{}`",
        pod.name_any(),
        status.name,
        if previous { " --previous" } else { "" }
    );
    let restarts = match status.restart_count {
        1 => "1 restart".to_string(),
        n => format!("{n} restarts"),
    };
    if let Some(t) = terminated {
        if t.reason.as_deref() == Some(reasons::OOM_KILLED) {
            let limit = memory_limit(pod, &status.name)
                .map(|l| format!(" of {l}"))
                .unwrap_or_default();
            let message = format!(
                "{container} was killed for using more than its memory limit{limit} (OOMKilled, exit code {}, {restarts}): raise the memory in the spec's resources for it",
                t.exit_code
            );
            return Some((3, problem(reasons::OOM_KILLED, message)));
        }
        if crash_looping {
            let message = format!(
                "{container} keeps exiting ({restarts}); it last exited {}: {logs}",
                termination(t)
            );
            return Some((4, problem(reasons::CRASH_LOOP_BACK_OFF, message)));
        }
        if t.exit_code != 0 {
            let message = format!("{container} exited {}: {logs}", termination(t));
            return Some((5, problem(reasons::CONTAINER_FAILED, message)));
        }
    }
    if crash_looping {
        let message = format!("{container} keeps exiting ({restarts}): {logs}");
        return Some((4, problem(reasons::CRASH_LOOP_BACK_OFF, message)));
    }
    None
}

/// `with code 1 (Error): <its message>`.
fn termination(t: &ContainerStateTerminated) -> String {
    let mut text = format!("with code {}", t.exit_code);
    if let Some(reason) = t.reason.as_deref().filter(|r| !r.is_empty()) {
        text.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = t.message.as_deref().filter(|m| !m.trim().is_empty()) {
        text.push_str(&format!(": {}", quote(message)));
    }
    text
}

fn memory_limit(pod: &Pod, container: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)?
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")
        .map(|q| q.0.clone())
}

/// A message from Kubernetes or a container on one line, at most `MESSAGE_LIMIT` long.
fn quote(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() <= MESSAGE_LIMIT {
        return line;
    }
    let mut end = MESSAGE_LIMIT;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::ready_children;
    use serde_json::{json, Value};

    fn pod(name: &str, component: &str, status: Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shops", "labels": {
                "app.kubernetes.io/component": component,
                "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/managed-by": "datapipeline-operator"
            }},
            "spec": {"containers": [
                {"name": "kafka", "resources": {"limits": {"memory": "1Gi"}}},
                {"name": "elasticsearch"}, {"name": "process"}, {"name": "minio"}
            ]},
            "status": status
        }))
        .expect("pod")
    }

    fn waiting(container: &str, reason: &str, message: &str) -> Value {
        json!({"phase": "Pending", "containerStatuses": [{
            "name": container, "image": "docker.elastic.co/elasticsearch/elasticsearch:9.99.0",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}
        }]})
    }

    fn crashed(
        container: &str,
        waiting_reason: Option<&str>,
        terminated: Value,
        restarts: i32,
    ) -> Value {
        let state = match waiting_reason {
            Some(reason) => {
                json!({"waiting": {"reason": reason, "message": "back-off 40s restarting failed container"}})
            }
            None => json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
        };
        json!({"phase": "Running", "containerStatuses": [{
            "name": container, "image": "apache/kafka:4.1.0", "imageID": "",
            "ready": false, "restartCount": restarts,
            "state": state, "lastState": {"terminated": terminated}
        }]})
    }

    fn unschedulable() -> Value {
        json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        }]})
    }

    fn one(pod: &Pod) -> Option<PodProblem> {
        pod_problem(&[pod])
    }

    #[test]
    fn an_image_that_cannot_be_pulled() {
        let p = pod(
            "shop-es-0",
            "search",
            waiting(
                "elasticsearch",
                "ImagePullBackOff",
                "Back-off pulling image \"docker.elastic.co/elasticsearch/elasticsearch:9.99.0\"",
            ),
        );
        assert_eq!(
            one(&p),
            Some(PodProblem {
                reason: "ImagePullBackOff",
                message: "container elasticsearch of pod shops/shop-es-0 cannot pull image docker.elastic.co/elasticsearch/elasticsearch:9.99.0: Back-off pulling image \"docker.elastic.co/elasticsearch/elasticsearch:9.99.0\"".into()
            })
        );
        let p = pod(
            "shop-es-0",
            "search",
            waiting(
                "elasticsearch",
                "ErrImagePull",
                "rpc error: code = NotFound\n desc = not found",
            ),
        );
        assert_eq!(
            one(&p).map(|p| (p.reason, p.message)),
            Some(("ErrImagePull", "container elasticsearch of pod shops/shop-es-0 cannot pull image docker.elastic.co/elasticsearch/elasticsearch:9.99.0: rpc error: code = NotFound desc = not found".to_string()))
        );
    }

    #[test]
    fn a_missing_secret_stops_container_creation() {
        let p = pod(
            "shop-runtime-7d9f-abcde",
            "runtime",
            waiting(
                "process",
                "CreateContainerConfigError",
                "secret \"shop-minio-credentials\" not found",
            ),
        );
        assert_eq!(
            one(&p),
            Some(PodProblem {
                reason: "CreateContainerConfigError",
                message: "container process of pod shops/shop-runtime-7d9f-abcde cannot be created: secret \"shop-minio-credentials\" not found".into()
            })
        );
    }

    #[test]
    fn a_crash_loop_names_the_last_exit() {
        let p = pod(
            "shop-kafka-0",
            "kafka",
            crashed(
                "kafka",
                Some("CrashLoopBackOff"),
                json!({"exitCode": 1, "reason": "Error", "message": "ERROR Exiting Kafka: log dir not writable"}),
                4,
            ),
        );
        assert_eq!(
            one(&p),
            Some(PodProblem {
                reason: "CrashLoopBackOff",
                message: "container kafka of pod shops/shop-kafka-0 keeps exiting (4 restarts); it last exited with code 1 (Error): ERROR Exiting Kafka: log dir not writable: see `kubectl -n shops logs shop-kafka-0 -c kafka --previous`".into()
            })
        );
    }

    #[test]
    fn a_command_missing_from_the_image() {
        let start_error = "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"process\": executable file not found in $PATH: unknown";
        let first = pod(
            "shop-runtime-7d9f-abcde",
            "runtime",
            waiting("process", "RunContainerError", start_error),
        );
        assert_eq!(
            one(&first),
            Some(PodProblem {
                reason: "RunContainerError",
                message: format!(
                    "container process of pod shops/shop-runtime-7d9f-abcde cannot be started: {start_error}"
                )
            })
        );
        let looping = pod(
            "shop-runtime-7d9f-abcde",
            "runtime",
            crashed(
                "process",
                Some("CrashLoopBackOff"),
                json!({"exitCode": 128, "reason": "StartError", "message": start_error}),
                2,
            ),
        );
        assert_eq!(
            one(&looping),
            Some(PodProblem {
                reason: "CrashLoopBackOff",
                message: format!(
                    "container process of pod shops/shop-runtime-7d9f-abcde keeps exiting (2 restarts); it last exited with code 128 (StartError): {start_error}: see `kubectl -n shops logs shop-runtime-7d9f-abcde -c process --previous`"
                )
            })
        );
    }

    #[test]
    fn out_of_memory_beats_the_crash_loop_it_causes() {
        let p = pod(
            "shop-kafka-0",
            "kafka",
            crashed(
                "kafka",
                Some("CrashLoopBackOff"),
                json!({"exitCode": 137, "reason": "OOMKilled"}),
                1,
            ),
        );
        assert_eq!(
            one(&p),
            Some(PodProblem {
                reason: "OOMKilled",
                message: "container kafka of pod shops/shop-kafka-0 was killed for using more than its memory limit of 1Gi (OOMKilled, exit code 137, 1 restart): raise the memory in the spec's resources for it".into()
            })
        );
    }

    #[test]
    fn an_error_exit_of_a_restarted_container() {
        let p = pod(
            "shop-minio-0",
            "object-store",
            crashed("minio", None, json!({"exitCode": 2, "reason": "Error"}), 1),
        );
        assert_eq!(
            one(&p),
            Some(PodProblem {
                reason: "ContainerFailed",
                message: "container minio of pod shops/shop-minio-0 exited with code 2 (Error): see `kubectl -n shops logs shop-minio-0 -c minio --previous`".into()
            })
        );
    }

    #[test]
    fn an_unschedulable_pod() {
        let p = pod("shop-es-0", "search", unschedulable());
        assert_eq!(
            one(&p),
            Some(PodProblem {
                reason: "Unschedulable",
                message: "pod shops/shop-es-0 cannot be scheduled: 0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.".into()
            })
        );
    }

    #[test]
    fn healthy_starting_finished_and_departing_pods_are_no_problem() {
        let starting = pod(
            "shop-es-0",
            "search",
            waiting("elasticsearch", "ContainerCreating", ""),
        );
        assert_eq!(one(&starting), None);
        let clean_exit = pod(
            "shop-minio-0",
            "object-store",
            crashed(
                "minio",
                None,
                json!({"exitCode": 0, "reason": "Completed"}),
                1,
            ),
        );
        assert_eq!(one(&clean_exit), None);
        let mut finished = pod(
            "shop-kafka-topics-1234-x",
            "kafka-topics",
            crashed("kafka", None, json!({"exitCode": 1, "reason": "Error"}), 0),
        );
        finished.status.as_mut().expect("status").phase = Some("Failed".into());
        assert_eq!(one(&finished), None);
        let mut departing = pod("shop-es-0", "search", unschedulable());
        departing.metadata.deletion_timestamp = Some(crate::controller::fixtures::at(1));
        assert_eq!(one(&departing), None);
        let mut ready = crashed("kafka", None, json!({"exitCode": 1, "reason": "Error"}), 1);
        ready["containerStatuses"][0]["ready"] = json!(true);
        assert_eq!(one(&pod("shop-kafka-0", "kafka", ready)), None);
    }

    #[test]
    fn the_most_actionable_problem_wins_and_goes_to_its_component() {
        let pods = vec![
            pod(
                "shop-es-1",
                "search",
                crashed(
                    "elasticsearch",
                    Some("CrashLoopBackOff"),
                    json!({"exitCode": 1, "reason": "Error"}),
                    2,
                ),
            ),
            pod("shop-es-2", "search", unschedulable()),
            pod("shop-es-0", "search", unschedulable()),
            pod(
                "shop-kafka-topics-0000cafe-x",
                "kafka-topics",
                waiting("kafka", "ErrImagePull", "not found"),
            ),
            pod(
                "shop-generate-abcd1234-x",
                "ingest",
                waiting("process", "InvalidImageName", "bad"),
            ),
            pod("someone-else", "unknown", unschedulable()),
        ];
        let found = problems(&pods);
        let search = found.search.expect("search problem");
        assert_eq!(search.reason, "Unschedulable");
        assert!(
            search.message.starts_with("pod shops/shop-es-0 "),
            "{}",
            search.message
        );
        assert_eq!(found.kafka.map(|p| p.reason), Some("ErrImagePull"));
        assert_eq!(found.runtime.map(|p| p.reason), Some("InvalidImageName"));
        assert_eq!(found.object_store, None);
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "x".repeat(1200);
        let p = pod(
            "shop-es-0",
            "search",
            waiting("elasticsearch", "ErrImagePull", &long),
        );
        let message = one(&p).expect("problem").message;
        assert!(
            message.ends_with(&format!("{}...", "x".repeat(1000))),
            "{message}"
        );
    }

    #[test]
    fn pods_are_read_only_while_something_is_not_ready() {
        assert!(!worth_reading(&ready_children()));
        let mut children = ready_children();
        children.search.as_mut().expect("search").ready = 0;
        assert!(worth_reading(&children));
        let mut children = ready_children();
        children.kafka_topics.as_mut().expect("topics").outcome = JobOutcome::Running;
        assert!(worth_reading(&children));
        let mut children = ready_children();
        children.runtime.ready = 1;
        assert!(worth_reading(&children));
        // A paused pipeline's runtime wants no pods.
        let mut children = ready_children();
        children.runtime.desired = 0;
        children.runtime.ready = 0;
        assert!(!worth_reading(&children));
    }
}
