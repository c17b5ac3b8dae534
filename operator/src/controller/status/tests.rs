//! Tests of `compute_status`: from observations to phases, conditions, Events' inputs and
//! the throughput and autoscaler blocks. Pure, no I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::{
    compute::compute_status,
    findings::{Observation, PipelineFacts},
    pods::{PodProblem, PodProblems},
};
use crate::{
    controller::{
        apply::readiness::{ApplyFailure, ChildrenState, IngestState, JobOutcome},
        autoscale::evaluation::FlowHealth,
        fixtures::{applied, at, managed_facts, ready_children},
        problem::{Component, Problem},
    },
    crd::{
        conditions::{reasons, types},
        AutoscalerStatus, ComponentHealth, DataPipelineStatus, IngestJobStatus, Phase,
        ThroughputStatus,
    },
};

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
            kafka_error: Some("cannot reach Kafka at shop-kafka.shops.svc:9092: timed out".into()),
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
