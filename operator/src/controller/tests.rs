//! Controller tests against a mocked API server: each scenario lists every request a
//! reconcile must make, in order, with its method, path and (where it matters) body, and
//! what the "API server" answers. A missing request fails on the verifier's timeout; an
//! unexpected one fails the reconcile.

use std::{sync::Arc, time::Duration};

use http::Method;
use kube::runtime::controller::Action;
use serde_json::{json, Value};

use super::{
    build::{desired_children, Child},
    context::Context,
    fixtures::{
        external_pipeline, fixed_credentials, managed_pipeline, managed_plan, Expect, Reply, Seen,
    },
    reconcile::{backoff, error_policy, reconcile},
};
use crate::crd::{DataPipeline, DataPipelineStatus, ExternalSearch, SearchSpec};
use crate::error::Error;

const NS: &str = "/namespaces/shops";
const APPLY: &str = "?&force=true&fieldManager=datapipeline-operator";
const SELECTOR: &str =
    "labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddatapipeline-operator%2Capp.kubernetes.io%2Finstance%3Dshop";

fn collection(kind: &str) -> String {
    let (group, plural) = match kind {
        "Secret" => ("/api/v1", "secrets"),
        "ConfigMap" => ("/api/v1", "configmaps"),
        "Service" => ("/api/v1", "services"),
        "StatefulSet" => ("/apis/apps/v1", "statefulsets"),
        "Deployment" => ("/apis/apps/v1", "deployments"),
        "Job" => ("/apis/batch/v1", "jobs"),
        "PodDisruptionBudget" => ("/apis/policy/v1", "poddisruptionbudgets"),
        "NetworkPolicy" => ("/apis/networking.k8s.io/v1", "networkpolicies"),
        other => panic!("no path for {other}"),
    };
    format!("{group}{NS}/{plural}")
}

fn get_secret(name: &str, reply: Reply) -> Expect {
    Expect::new(
        Method::GET,
        format!("{}/{name}", collection("Secret")),
        reply,
    )
}

fn apply(kind: &str, name: &str, status: Value) -> Expect {
    Expect::new(
        Method::PATCH,
        format!("{}/{name}{APPLY}", collection(kind)),
        Reply::EchoWithStatus(status),
    )
}

fn list(kind: &str, items: Vec<Value>) -> Expect {
    Expect::new(
        Method::GET,
        format!("{}?&{SELECTOR}", collection(kind)),
        Reply::Json(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": {}, "items": items
        })),
    )
}

/// Every kind the orphan cleanup lists, in its order (workloads first).
const CLEANUP_ORDER: [&str; 8] = [
    "Deployment",
    "Job",
    "StatefulSet",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "Service",
    "ConfigMap",
    "Secret",
];

/// The pod list of a visit that found a workload not ready.
fn list_pods(items: Vec<Value>) -> Expect {
    Expect::new(
        Method::GET,
        format!("/api/v1{NS}/pods?&{SELECTOR}"),
        Reply::Json(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})),
    )
}

/// A pod of the pipeline with this component label and status.
fn pod_json(name: &str, component: &str, status: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "shops", "labels": {
               "app.kubernetes.io/component": component,
               "app.kubernetes.io/instance": "shop",
               "app.kubernetes.io/managed-by": "datapipeline-operator"}},
           "status": status})
}

fn empty_lists() -> Vec<Expect> {
    CLEANUP_ORDER.iter().map(|k| list(k, vec![])).collect()
}

fn status_patch() -> Expect {
    Expect::new(
        Method::PATCH,
        format!("/apis/datapipeline.io/v1alpha1{NS}/datapipelines/shop/status{APPLY}"),
        Reply::WithRequestStatus(serde_json::to_value(managed_pipeline()).expect("JSON")),
    )
}

fn event() -> Expect {
    Expect::new(
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/shops/events?",
        Reply::EchoWithStatus(Value::Null),
    )
}

fn secret_json(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": "shops"}, "data": data})
}

/// Names of the hashed Jobs, as the builders name them (their own tests check the hash).
fn job_names() -> Vec<String> {
    job_names_of(&managed_plan())
}

fn job_names_of(plan: &super::validate::ValidatedPipeline) -> Vec<String> {
    // Whatever the search engine needs, so that both engines build.
    let credentials = super::credentials::GeneratedCredentials {
        search_tls: fixed_credentials().minio_tls,
        search_runtime_user: Some(super::credentials::HashedPassword {
            password: "pw".into(),
            hash: "hash".into(),
        }),
        ..fixed_credentials()
    };
    desired_children(plan, &credentials)
        .expect("built")
        .iter()
        .filter(|c| matches!(c, Child::Job(..)))
        .map(|c| c.name().to_string())
        .collect()
}

fn sts_status(ready: i32) -> Value {
    json!({"replicas": 1, "readyReplicas": ready, "observedGeneration": 1})
}

/// The look for the generator Job that a visit makes instead of applying it while Kafka or
/// the object store is not ready: here it does not exist yet.
fn generator_not_created() -> Expect {
    Expect::new(
        Method::GET,
        format!("{}/{}", collection("Job"), job_names()[2]),
        Reply::Status(404),
    )
}

/// `applies` with the generator Job waiting for Kafka or the store (looked up, not applied).
fn generator_waits(mut applies: Vec<Expect>) -> Vec<Expect> {
    let last = applies.pop().expect("the generator Job's apply");
    assert!(last.uri.contains("/jobs/shop-generate-"), "{}", last.uri);
    applies.push(generator_not_created());
    applies
}

/// A real pipeline CA and the Kafka and MinIO certificates it issued for the all-managed
/// fixture, valid at the test clock, as the `data` of their Secrets (made once: key
/// generation is slow).
fn stored_tls_secrets() -> &'static (Value, Value, Value, Value, Value, Value) {
    static STORED: std::sync::OnceLock<(Value, Value, Value, Value, Value, Value)> =
        std::sync::OnceLock::new();
    STORED.get_or_init(|| {
        let plan = super::fixtures::managed_plan();
        let made = super::credentials::complete(
            super::credentials::GeneratedCredentials::default(),
            &plan,
            super::fixtures::at(0).0.as_second(),
            &super::credentials::RandomCredentials,
        )
        .expect("certificates");
        let data = |secret: k8s_openapi::api::core::v1::Secret| {
            serde_json::to_value(secret).expect("json")["data"].clone()
        };
        (
            data(super::build::secrets::pipeline_ca(
                &plan,
                made.pipeline_ca.as_ref().expect("a CA"),
                super::build::names::Role::Kafka,
            )),
            data(super::build::secrets::kafka_tls(
                &plan,
                made.kafka_tls.as_ref().expect("a certificate"),
            )),
            data(super::build::secrets::minio_tls(
                &plan,
                made.minio_tls.as_ref().expect("a certificate"),
            )),
            data(super::build::secrets::kafka_user(
                &plan,
                "shop-kafka-admin".into(),
                made.kafka_admin.as_ref().expect("a certificate"),
            )),
            data(super::build::secrets::kafka_user(
                &plan,
                "shop-kafka-runtime".into(),
                made.kafka_runtime.as_ref().expect("a certificate"),
            )),
            data(super::build::secrets::kafka_user(
                &plan,
                "shop-kafka-ingest".into(),
                made.kafka_ingest.as_ref().expect("a certificate"),
            )),
        )
    })
}

fn stored_pipeline_ca() -> Value {
    stored_tls_secrets().0.clone()
}

fn stored_kafka_tls() -> Value {
    stored_tls_secrets().1.clone()
}

fn stored_minio_tls() -> Value {
    stored_tls_secrets().2.clone()
}

fn stored_kafka_user(user: &str) -> Value {
    match user {
        "admin" => stored_tls_secrets().3.clone(),
        "ingest" => stored_tls_secrets().5.clone(),
        _ => stored_tls_secrets().4.clone(),
    }
}

/// How many generated Secrets a visit of the all-managed fixture reads first.
const GENERATED_SECRETS: usize = 9;

/// The applies of the all-managed fixture, in order, with the given readiness. Not
/// ready, the generator Job is only looked up: it is created once Kafka and MinIO are.
fn managed_applies(ready: bool) -> Vec<Expect> {
    let r = i32::from(ready);
    let jobs = job_names();
    let job_status = |done: bool| {
        if done {
            json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
        } else {
            json!({"active": 1})
        }
    };
    let applies = vec![
        apply("Secret", "shop-ca", Value::Null),
        apply("Secret", "shop-kafka-tls", Value::Null),
        apply("Secret", "shop-kafka-admin", Value::Null),
        apply("Secret", "shop-kafka-runtime", Value::Null),
        apply("Secret", "shop-kafka-ingest", Value::Null),
        apply("Secret", "shop-minio-credentials", Value::Null),
        apply("Secret", "shop-minio-tls", Value::Null),
        apply("Secret", "shop-es-elastic-user", Value::Null),
        apply("Secret", "shop-es-transport", Value::Null),
        apply("ConfigMap", "shop-runtime-config", Value::Null),
        apply("NetworkPolicy", "shop-kafka", Value::Null),
        apply("NetworkPolicy", "shop-minio", Value::Null),
        apply("NetworkPolicy", "shop-es", Value::Null),
        apply("Service", "shop-kafka-headless", Value::Null),
        apply("Service", "shop-kafka", Value::Null),
        apply("Service", "shop-minio", Value::Null),
        apply("Service", "shop-es-headless", Value::Null),
        apply("Service", "shop-es", Value::Null),
        apply("StatefulSet", "shop-kafka", sts_status(r)),
        apply("StatefulSet", "shop-minio", sts_status(r)),
        apply("StatefulSet", "shop-es", sts_status(r)),
        apply("PodDisruptionBudget", "shop-kafka", Value::Null),
        apply("PodDisruptionBudget", "shop-es", Value::Null),
        apply("PodDisruptionBudget", "shop-runtime", Value::Null),
        apply("Job", &jobs[0], job_status(ready)),
        apply("Job", &jobs[1], job_status(ready)),
        apply(
            "Deployment",
            "shop-runtime",
            json!({"replicas": 1, "readyReplicas": r, "observedGeneration": 1}),
        ),
        apply("Job", &jobs[2], job_status(false)),
    ];
    if ready {
        applies
    } else {
        generator_waits(applies)
    }
}

fn body_of<'a>(seen: &'a Seen, uri_part: &str) -> &'a Value {
    &seen
        .iter()
        .find(|(_, uri, _)| uri.contains(uri_part))
        .unwrap_or_else(|| panic!("no request to {uri_part}"))
        .2
}

fn bodies_of<'a>(seen: &'a Seen, uri_part: &str) -> Vec<&'a Value> {
    seen.iter()
        .filter(|(_, uri, _)| uri.contains(uri_part))
        .map(|(_, _, body)| body)
        .collect()
}

async fn run(
    dp: DataPipeline,
    expectations: Vec<Expect>,
) -> (Result<Action, Error>, Seen, Arc<Context>) {
    let (ctx, server) = Context::test();
    let scenario = server.run(expectations);
    let result = reconcile(Arc::new(dp), ctx.clone()).await;
    let seen = match tokio::time::timeout(Duration::from_secs(5), scenario).await {
        Ok(joined) => joined.expect("scenario assertions hold"),
        Err(_) => panic!(
            "the reconcile made fewer requests than the scenario expects; it returned {result:?}"
        ),
    };
    (result, seen, ctx)
}

#[tokio::test]
async fn first_reconcile_creates_everything_in_order() {
    let mut expectations = vec![
        get_secret("shop-minio-credentials", Reply::Status(404)),
        get_secret("shop-minio-tls", Reply::Status(404)),
        get_secret("shop-es-elastic-user", Reply::Status(404)),
        get_secret("shop-es-transport", Reply::Status(404)),
        get_secret("shop-ca", Reply::Status(404)),
        get_secret("shop-kafka-tls", Reply::Status(404)),
        get_secret("shop-kafka-admin", Reply::Status(404)),
        get_secret("shop-kafka-runtime", Reply::Status(404)),
        get_secret("shop-kafka-ingest", Reply::Status(404)),
    ];
    expectations.extend(managed_applies(false));
    expectations.extend(empty_lists());
    // Nothing is ready yet: the pods are read (none of them has a problem).
    expectations.push(list_pods(vec![]));
    expectations.push(status_patch());
    expectations.push(event());

    let (result, seen, ctx) = run(managed_pipeline(), expectations).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(300))
    );

    // New credentials were generated ("generated-password" from the fixed generator).
    assert_eq!(
        body_of(&seen, "secrets/shop-minio-credentials?")["data"],
        json!({"accessKeyId": "c2hvcC1hZG1pbg==", "secretAccessKey": "Z2VuZXJhdGVkLXBhc3N3b3Jk"})
    );
    assert_eq!(
        body_of(&seen, "secrets/shop-es-elastic-user?")["data"],
        json!({"elastic": "Z2VuZXJhdGVkLXBhc3N3b3Jk"})
    );
    // A pipeline CA named after the pipeline and its start (the clock less an hour), and a
    // Kafka certificate it issued, trusted through the bundle.
    use base64::Engine as _;
    let decoded = |v: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64 text"))
                .expect("base64"),
        )
        .expect("utf-8")
    };
    let ca = body_of(&seen, "secrets/shop-ca?");
    assert_eq!(
        decoded(&ca["data"]["ca.crt"]),
        "ca shop pipeline CA 20251231T231640Z"
    );
    let kafka_tls = body_of(&seen, "secrets/shop-kafka-tls?");
    assert_eq!(
        decoded(&kafka_tls["data"]["ca.crt"]),
        "ca shop pipeline CA 20251231T231640Z"
    );
    assert!(decoded(&kafka_tls["data"]["tls.crt"])
        .starts_with("cert for shop-kafka from ca shop pipeline CA 20251231T231640Z: "));
    // MinIO's certificate comes from the same CA, for its Service's names.
    let minio_tls = body_of(&seen, "secrets/shop-minio-tls?");
    assert_eq!(
        decoded(&minio_tls["data"]["ca.crt"]),
        "ca shop pipeline CA 20251231T231640Z"
    );
    assert_eq!(
        decoded(&minio_tls["data"]["tls.crt"]),
        "cert for shop-minio from ca shop pipeline CA 20251231T231640Z: \
         shop-minio.shops.svc,shop-minio.shops.svc.cluster.local,shop-minio.shops,shop-minio"
    );
    // Server-side apply bodies are full typed objects.
    let sts = body_of(&seen, "statefulsets/shop-kafka?");
    assert_eq!(
        (sts["apiVersion"].as_str(), sts["kind"].as_str()),
        (Some("apps/v1"), Some("StatefulSet"))
    );

    let status = body_of(&seen, "/status?");
    assert_eq!(status["apiVersion"], "datapipeline.io/v1alpha1");
    assert_eq!(status["kind"], "DataPipeline");
    assert_eq!(status["status"]["phase"], "Provisioning");
    assert_eq!(status["status"]["observedGeneration"], 1);
    assert_eq!(status["status"]["replicasSummary"], "0/1");
    let ready = status["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ComponentsNotReady");
    assert_eq!(ready["lastTransitionTime"], "2026-01-01T00:16:40Z");
    // Kafka and MinIO are not ready: the generator Job was not created.
    assert_eq!(
        status["status"]["components"]["ingest"],
        json!({"mode": "Managed", "ready": false, "message": format!(
            "generator Job {} not created yet: it is created once Kafka and the object store are ready",
            job_names()[2]
        )})
    );

    let event = body_of(&seen, "/events?");
    assert_eq!(event["reason"], "PhaseChanged");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["name"], "shop");
    assert!(event["note"]
        .as_str()
        .expect("note")
        .starts_with("(none) -> Provisioning: waiting for Kafka"));

    assert!(ctx
        .metrics
        .render()
        .contains("datapipeline_operator_reconciles_total{result=\"applied\"} 1"));
}

/// Runs a reconcile of the all-managed pipeline whose generated Secrets exist and whose
/// children are all ready; returns the status it wrote (if any) and what it sent.
async fn ready_reconcile(
    status: Option<DataPipelineStatus>,
    writes_status: bool,
) -> (Seen, Option<DataPipelineStatus>) {
    let mut dp = managed_pipeline();
    dp.status = status;
    let (result, seen, _) = run(dp, ready_expectations(writes_status)).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(300))
    );
    (seen.clone(), written_status(&seen))
}

fn written_status(seen: &Seen) -> Option<DataPipelineStatus> {
    seen.iter()
        .find(|(_, uri, _)| uri.contains("/status?"))
        .map(|(_, _, body)| serde_json::from_value(body["status"].clone()).expect("status"))
}

/// The requests of an applying visit of the all-managed pipeline whose generated Secrets
/// exist and whose children are all ready.
fn ready_expectations(writes_status: bool) -> Vec<Expect> {
    let mut expectations = vec![
        get_secret(
            "shop-minio-credentials",
            Reply::Json(secret_json(
                "shop-minio-credentials",
                json!({"accessKeyId": "c2hvcC1hZG1pbg==", "secretAccessKey": "a2VwdA=="}),
            )),
        ),
        get_secret(
            "shop-minio-tls",
            Reply::Json(secret_json("shop-minio-tls", stored_minio_tls())),
        ),
        get_secret(
            "shop-es-elastic-user",
            Reply::Json(secret_json(
                "shop-es-elastic-user",
                json!({"elastic": "a2VwdA=="}),
            )),
        ),
        get_secret(
            "shop-es-transport",
            Reply::Json(secret_json(
                "shop-es-transport",
                json!({"ca.crt": "Y2E=", "tls.crt": "Y3J0", "tls.key": "a2V5"}),
            )),
        ),
        get_secret(
            "shop-ca",
            Reply::Json(secret_json("shop-ca", stored_pipeline_ca())),
        ),
        get_secret(
            "shop-kafka-tls",
            Reply::Json(secret_json("shop-kafka-tls", stored_kafka_tls())),
        ),
        get_secret(
            "shop-kafka-admin",
            Reply::Json(secret_json("shop-kafka-admin", stored_kafka_user("admin"))),
        ),
        get_secret(
            "shop-kafka-runtime",
            Reply::Json(secret_json(
                "shop-kafka-runtime",
                stored_kafka_user("runtime"),
            )),
        ),
        get_secret(
            "shop-kafka-ingest",
            Reply::Json(secret_json(
                "shop-kafka-ingest",
                stored_kafka_user("ingest"),
            )),
        ),
    ];
    expectations.extend(managed_applies(true));
    expectations.extend(empty_lists());
    if writes_status {
        expectations.push(status_patch());
        expectations.push(event());
    }
    expectations
}

/// One visit on a kept mock server; fails if the reconcile makes more requests than
/// expected (they stay unanswered) or fewer.
async fn visit(
    ctx: &Arc<Context>,
    server: super::fixtures::ApiServerVerifier,
    dp: &DataPipeline,
    expectations: Vec<Expect>,
) -> (Action, Seen, super::fixtures::ApiServerVerifier) {
    let scenario = server.run_and_keep(expectations);
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        reconcile(Arc::new(dp.clone()), ctx.clone()),
    )
    .await
    .expect("the reconcile made more requests than expected")
    .expect("reconciled");
    let (seen, server) = tokio::time::timeout(Duration::from_secs(5), scenario)
        .await
        .expect("the reconcile made fewer requests than expected")
        .expect("scenario assertions hold");
    (result, seen, server)
}

#[tokio::test]
async fn a_visit_with_nothing_changed_only_observes_and_a_changed_child_applies_again() {
    let (ctx, server) = Context::test();
    let mut dp = managed_pipeline();
    let (_, seen, server) = visit(&ctx, server, &dp, ready_expectations(true)).await;
    dp.status = written_status(&seen);
    assert!(dp.status.is_some());

    // The status write wakes the controller: no Secret read, no apply, no list, no write.
    let (action, seen, server) = visit(&ctx, server, &dp, vec![]).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert!(seen.is_empty());

    // A child changed (the watch says so): everything is applied again.
    ctx.dependent_changed("shops/shop".into());
    let (_, seen, server) = visit(&ctx, server, &dp, ready_expectations(false)).await;
    assert_eq!(seen.len(), ready_expectations(false).len());

    // A spec change applies too.
    dp.metadata.generation = Some(2);
    let mut expectations = ready_expectations(false);
    // The new generation goes into observedGeneration.
    expectations.push(status_patch());
    let (_, seen, _) = visit(&ctx, server, &dp, expectations).await;
    assert_eq!(
        written_status(&seen).and_then(|s| s.observed_generation),
        Some(2)
    );

    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains("datapipeline_operator_reconciles_total{result=\"observed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("datapipeline_operator_reconciles_total{result=\"applied\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn existing_credentials_are_reused_and_a_steady_state_writes_nothing() {
    let (seen, written) = ready_reconcile(None, true).await;
    // "kept" (a2VwdA==) was read back and applied unchanged: never regenerated.
    assert_eq!(
        body_of(&seen, "secrets/shop-minio-credentials?")["data"]["secretAccessKey"],
        "a2VwdA=="
    );
    assert_eq!(
        body_of(&seen, "secrets/shop-es-elastic-user?")["data"]["elastic"],
        "a2VwdA=="
    );
    assert_eq!(
        body_of(&seen, "secrets/shop-es-transport?")["data"]["tls.key"],
        "a2V5"
    );
    // A valid pipeline CA and a Kafka certificate it issued are kept byte for byte (the
    // fixed generator would have made "ca shop pipeline CA ..." instead).
    assert_eq!(
        body_of(&seen, "secrets/shop-ca?")["data"],
        stored_pipeline_ca()
    );
    assert_eq!(
        body_of(&seen, "secrets/shop-kafka-tls?")["data"],
        stored_kafka_tls()
    );
    assert_eq!(
        body_of(&seen, "secrets/shop-minio-tls?")["data"],
        stored_minio_tls()
    );
    assert_eq!(
        body_of(&seen, "secrets/shop-kafka-runtime?")["data"],
        stored_kafka_user("runtime")
    );
    assert_eq!(
        body_of(&seen, "secrets/shop-kafka-ingest?")["data"],
        stored_kafka_user("ingest")
    );
    let status = written.expect("first reconcile writes the status");
    assert_eq!(status.phase, Some(crate::crd::Phase::Running));
    assert_eq!(
        body_of(&seen, "/events?")["note"]
            .as_str()
            .map(|n| n.starts_with("(none) -> Running")),
        Some(true)
    );

    // The same observation again: no status write, no Event (the scenario has neither).
    let (seen, written) = ready_reconcile(Some(status), false).await;
    assert_eq!(written, None);
    assert!(bodies_of(&seen, "/events?").is_empty());
}

#[tokio::test]
async fn missing_secret_sets_the_condition_and_awaits_a_change() {
    let expectations = vec![
        get_secret("shop-kafka-user", Reply::Status(404)),
        status_patch(),
        event(),
        event(),
    ];
    let (result, seen, ctx) = run(external_pipeline(), expectations).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    let status = &body_of(&seen, "/status?")["status"];
    assert_eq!(status["phase"], "Pending");
    let message = "Secret shops/shop-kafka-user (named by spec.kafka.external.secretRef) does not exist: create it with the keys username and password or correct spec.kafka.external.secretRef";
    let conditions = status["conditions"].as_array().expect("conditions");
    assert_eq!(
        conditions[0],
        json!({"type": "KafkaReady", "status": "False", "reason": "SecretNotFound", "message": message,
               "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:16:40Z"})
    );
    assert_eq!(conditions[4]["reason"], "SecretNotFound");
    let events = bodies_of(&seen, "/events?");
    assert_eq!(events[0]["reason"], "PhaseChanged");
    assert_eq!(events[1]["reason"], "SecretNotFound");
    assert_eq!(events[1]["type"], "Warning");
    assert_eq!(events[1]["note"], message);
    let metrics = ctx.metrics.render();
    assert!(metrics.contains(
        "datapipeline_operator_reconcile_failures_total{category=\"secret_not_found\"} 1"
    ));
    // The pipeline's gauges follow the status just computed: Pending, nothing measured.
    let mut gauges: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("datapipeline_operator_pipeline_") && l.ends_with(" 1"))
        .collect();
    gauges.sort_unstable();
    assert_eq!(
        gauges,
        ["datapipeline_operator_pipeline_phase{namespace=\"shops\",pipeline=\"shop\",phase=\"Pending\"} 1"],
        "{metrics}"
    );
}

/// A named Secret without the opt-in label: one metadata read (asked as
/// PartialObjectMetadata), no read of its data, and the condition says how to opt in.
#[tokio::test]
async fn a_secret_that_did_not_opt_in_is_refused_unread() {
    let expectations = vec![
        get_secret(
            "shop-kafka-user",
            Reply::Json(json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": "shop-kafka-user", "namespace": "shops",
                             "labels": {"team": "payments"}}})),
        ),
        status_patch(),
        event(),
        event(),
    ];
    let (result, seen, _) = run(external_pipeline(), expectations).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    let secret_reads: Vec<&str> = seen
        .iter()
        .filter(|(_, uri, _)| uri.contains("/secrets/"))
        .map(|(method, uri, _)| {
            assert_eq!(method, Method::GET);
            uri.as_str()
        })
        .collect();
    assert_eq!(
        secret_reads,
        [format!("{}/shop-kafka-user", collection("Secret"))]
    );
    let status = &body_of(&seen, "/status?")["status"];
    assert_eq!(status["phase"], "Pending");
    let message = "Secret shops/shop-kafka-user (named by spec.kafka.external.secretRef) is not used: it lacks the label datapipeline.io/use=true by which a Secret opts in to DataPipeline use; if this pipeline may read it, run `kubectl label secret shop-kafka-user -n shops datapipeline.io/use=true`";
    let conditions = status["conditions"].as_array().expect("conditions");
    assert_eq!(
        conditions[0],
        json!({"type": "KafkaReady", "status": "False", "reason": "SecretNotOptedIn", "message": message,
               "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:16:40Z"})
    );
    let events = bodies_of(&seen, "/events?");
    assert_eq!(events[1]["reason"], "SecretNotOptedIn");
    assert_eq!(events[1]["note"], message);
}

#[tokio::test]
async fn a_pipeline_deleted_during_the_reconcile_ends_it_quietly() {
    let expectations = vec![
        get_secret("shop-kafka-user", Reply::Status(404)),
        Expect::new(
            Method::PATCH,
            format!("/apis/datapipeline.io/v1alpha1{NS}/datapipelines/shop/status{APPLY}"),
            Reply::Status(404),
        ),
    ];
    let (result, seen, ctx) = run(external_pipeline(), expectations).await;
    assert_eq!(result.expect("not a failure"), Action::await_change());
    assert!(
        bodies_of(&seen, "/events?").is_empty(),
        "no events about a deleted pipeline"
    );
    let metrics = ctx.metrics.render();
    assert!(
        !metrics.contains("datapipeline_operator_pipeline_"),
        "no gauges of a deleted pipeline: {metrics}"
    );
}

#[tokio::test]
async fn an_impossible_spec_fails_without_applying_anything() {
    let mut dp = managed_pipeline();
    dp.spec.object_store.bucket = "Not_A_Bucket".into();
    let expectations = vec![
        get_secret("shop-minio-credentials", Reply::Status(404)),
        get_secret("shop-minio-tls", Reply::Status(404)),
        get_secret("shop-es-elastic-user", Reply::Status(404)),
        get_secret("shop-es-transport", Reply::Status(404)),
        get_secret("shop-ca", Reply::Status(404)),
        get_secret("shop-kafka-tls", Reply::Status(404)),
        get_secret("shop-kafka-admin", Reply::Status(404)),
        get_secret("shop-kafka-runtime", Reply::Status(404)),
        get_secret("shop-kafka-ingest", Reply::Status(404)),
        status_patch(),
        event(),
        event(),
    ];
    let (result, seen, _) = run(dp, expectations).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    let status = &body_of(&seen, "/status?")["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(bodies_of(&seen, "/events?")[1]["reason"], "InvalidSpec");
}

#[tokio::test]
async fn switching_search_to_external_deletes_the_managed_cluster() {
    let mut dp = managed_pipeline();
    dp.spec.search = SearchSpec {
        managed: None,
        external: Some(ExternalSearch {
            url: "https://search.example.com".into(),
            engine: Default::default(),
            secret_ref: None,
            ca_secret_ref: None,
        }),
        index: None,
    };
    let owned = |name: &str| {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {
            "name": name, "namespace": "shops",
            "ownerReferences": [{"apiVersion": "datapipeline.io/v1alpha1", "kind": "DataPipeline",
                                 "name": "shop", "uid": super::fixtures::UID, "controller": true}]
        }})
    };
    let all = managed_applies(true);
    // Without managed search: no ES Secrets, Services, StatefulSet or PDB.
    let applies: Vec<Expect> = all
        .into_iter()
        .filter(|e| !e.uri.contains("shop-es"))
        .collect();
    let mut expectations = vec![get_secret(
        "shop-minio-credentials",
        Reply::Json(secret_json(
            "shop-minio-credentials",
            json!({"accessKeyId": "c2hvcC1hZG1pbg==", "secretAccessKey": "a2VwdA=="}),
        )),
    )];
    expectations.push(get_secret(
        "shop-minio-tls",
        Reply::Json(secret_json("shop-minio-tls", stored_minio_tls())),
    ));
    expectations.push(get_secret(
        "shop-ca",
        Reply::Json(secret_json("shop-ca", stored_pipeline_ca())),
    ));
    expectations.push(get_secret(
        "shop-kafka-tls",
        Reply::Json(secret_json("shop-kafka-tls", stored_kafka_tls())),
    ));
    expectations.push(get_secret(
        "shop-kafka-admin",
        Reply::Json(secret_json("shop-kafka-admin", stored_kafka_user("admin"))),
    ));
    expectations.push(get_secret(
        "shop-kafka-runtime",
        Reply::Json(secret_json(
            "shop-kafka-runtime",
            stored_kafka_user("runtime"),
        )),
    ));
    expectations.push(get_secret(
        "shop-kafka-ingest",
        Reply::Json(secret_json(
            "shop-kafka-ingest",
            stored_kafka_user("ingest"),
        )),
    ));
    assert_eq!(applies.len(), 28 - 7);
    expectations.extend(applies);
    expectations.push(list("Deployment", vec![owned("shop-runtime")]));
    expectations.push(list("Job", vec![]));
    expectations.push(list(
        "StatefulSet",
        vec![owned("shop-kafka"), owned("shop-es")],
    ));
    expectations.push(
        Expect::new(
            Method::DELETE,
            format!("{}/shop-es?", collection("StatefulSet")),
            Reply::Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
            ),
        )
        .checking(|body| assert_eq!(body["propagationPolicy"], "Background")),
    );
    expectations.push(list("PodDisruptionBudget", vec![]));
    expectations.push(list("NetworkPolicy", vec![]));
    expectations.push(list("Service", vec![]));
    expectations.push(list("ConfigMap", vec![]));
    expectations.push(list("Secret", vec![]));
    expectations.push(status_patch());
    expectations.push(event());
    expectations.push(event());
    let (result, seen, _) = run(dp, expectations).await;
    result.expect("reconciled");
    let events = bodies_of(&seen, "/events?");
    assert_eq!(events[0]["reason"], "OrphanDeleted");
    assert_eq!(
        events[0]["note"],
        "deleted StatefulSet/shop-es: the spec no longer asks for them"
    );
    let status = &body_of(&seen, "/status?")["status"];
    assert_eq!(status["conditions"][2]["reason"], "ExternalService");
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off() {
    let mut expectations = vec![
        get_secret("shop-minio-credentials", Reply::Status(404)),
        get_secret("shop-minio-tls", Reply::Status(404)),
        get_secret("shop-es-elastic-user", Reply::Status(404)),
        get_secret("shop-es-transport", Reply::Status(404)),
        get_secret("shop-ca", Reply::Status(404)),
        get_secret("shop-kafka-tls", Reply::Status(404)),
        get_secret("shop-kafka-admin", Reply::Status(404)),
        get_secret("shop-kafka-runtime", Reply::Status(404)),
        get_secret("shop-kafka-ingest", Reply::Status(404)),
    ];
    // The first apply fails; the others go ahead, and the status names the failed one.
    expectations.extend(managed_applies(false).into_iter().map(|mut e| {
        if e.uri.contains("/secrets/shop-minio-credentials?") {
            e.reply = Reply::Status(500);
        }
        e
    }));
    expectations.extend(empty_lists());
    expectations.push(list_pods(vec![]));
    expectations.push(status_patch());
    expectations.push(event());
    expectations.push(event());
    let dp = Arc::new(managed_pipeline());
    let (result, seen, ctx) = run((*dp).clone(), expectations).await;
    let status = &body_of(&seen, "/status?")["status"];
    assert_eq!(
        (
            &status["conditions"][1]["reason"],
            &status["conditions"][1]["message"]
        ),
        (
            &json!("ApplyFailed"),
            &json!("cannot apply Secret shops/shop-minio-credentials: mocked failure; the operator applied the pipeline's other children and retries with backoff")
        )
    );
    let error = result.expect_err("the apply failed");
    assert_eq!(error.category(), "apply");
    assert!(
        error
            .to_string()
            .starts_with("applying Secret shops/shop-minio-credentials:"),
        "{error}"
    );
    assert_eq!(
        error_policy(dp.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(dp.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    assert!(ctx
        .metrics
        .render()
        .contains("datapipeline_operator_reconcile_failures_total{category=\"apply\"} 1"));
}

/// The generator Job as the API server returns it: with a uid, and failed.
fn failed_generator_job(uid: &str) -> Value {
    let job = desired_children(&managed_plan(), &fixed_credentials())
        .expect("built")
        .into_iter()
        .find_map(|c| match c {
            Child::Job(job, super::build::names::Role::Ingest) => Some(job),
            _ => None,
        })
        .expect("the generator Job");
    let mut json = serde_json::to_value(job).expect("JSON");
    json["metadata"]["uid"] = json!(uid);
    json["status"] = json!({"failed": 7, "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"},
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"}
    ]});
    json
}

/// The applies of a ready all-managed pipeline whose generator Job failed.
fn expectations_with_failed_generator(uid: &'static str) -> Vec<Expect> {
    let mut expectations = ready_expectations(false);
    let generator = expectations
        .iter_mut()
        .find(|e| e.uri.contains("/jobs/shop-generate-"))
        .expect("the generator Job's apply");
    generator.reply = Reply::Json(failed_generator_job(uid));
    expectations
}

#[tokio::test]
async fn a_failed_generator_job_is_recreated_three_times_then_left_to_the_user() {
    let generator = job_names()[2].clone();
    let (ctx, server) = Context::test();
    let mut dp = managed_pipeline();

    // 1. It failed: deleted (its pods first, only this very Job), recorded, announced.
    let mut expectations = expectations_with_failed_generator("job-uid-1");
    let lists = expectations.split_off(expectations.len() - CLEANUP_ORDER.len());
    expectations.push(
        Expect::new(
            Method::DELETE,
            format!("{}/{generator}?", collection("Job")),
            Reply::Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
            ),
        )
        .checking(|body| {
            assert_eq!(body["propagationPolicy"], "Foreground");
            assert_eq!(body["preconditions"], json!({"uid": "job-uid-1"}));
        }),
    );
    // The orphan cleanup comes first; the deletion follows it.
    let delete = expectations.pop().expect("delete");
    expectations.extend(lists);
    expectations.push(delete);
    expectations.push(status_patch());
    expectations.push(event());
    expectations.push(event());
    let (_, seen, server) = visit(&ctx, server, &dp, expectations).await;
    let status = written_status(&seen).expect("status written");
    let failure = "BackoffLimitExceeded: Job has reached the specified backoff limit";
    assert_eq!(
        status.ingest_job,
        Some(crate::crd::IngestJobStatus {
            name: generator.clone(),
            recreations: 1,
            last_failure: failure.into(),
            last_recreation_time: Some(super::fixtures::at(1000)),
        })
    );
    let runtime = &status.conditions[3];
    assert_eq!(
        (
            runtime.type_.as_str(),
            runtime.status.as_str(),
            runtime.reason.as_str()
        ),
        ("RuntimeReady", "False", "IngestJobRecreated")
    );
    assert_eq!(
        runtime.message,
        format!("1/1 runtime pods ready; the generator Job shops/{generator} failed ({failure}); the operator deleted it to run it again (recreation 1 of 3): the new run resumes from its progress record and publishes no event twice")
    );
    let events = bodies_of(&seen, "/events?");
    assert_eq!(
        (&events[0]["reason"], &events[0]["type"], &events[0]["note"]),
        (
            &json!("IngestJobRecreated"),
            &json!("Warning"),
            &json!(format!("generator Job {generator} failed ({failure}); deleted it to run it again (recreation 1 of 3): the new run resumes from its progress record and publishes no event twice"))
        )
    );
    assert_eq!(events[1]["reason"], "PhaseChanged");
    dp.status = Some(status);

    // 2. The recreated Job runs (the deletion woke the pipeline): the record stays and the
    //    runtime is ready again.
    ctx.dependent_changed("shops/shop".into());
    let mut expectations = ready_expectations(false);
    expectations.push(status_patch());
    expectations.push(event());
    let (_, seen, server) = visit(&ctx, server, &dp, expectations).await;
    let status = written_status(&seen).expect("status written");
    assert_eq!(status.ingest_job.as_ref().map(|r| r.recreations), Some(1));
    assert_eq!(
        status.conditions[3].message,
        format!("1/1 runtime pods ready; generator Job {generator} running, recreated 1 time after failures (last: {failure})")
    );
    assert_eq!(status.phase, Some(crate::crd::Phase::Running));
    dp.status = Some(status);

    // 3. It failed again after its third recreation: left as it is, and said so.
    if let Some(record) = dp.status.as_mut().and_then(|s| s.ingest_job.as_mut()) {
        record.recreations = 3;
    }
    ctx.dependent_changed("shops/shop".into());
    let mut expectations = expectations_with_failed_generator("job-uid-4");
    expectations.push(status_patch());
    expectations.push(event());
    expectations.push(event());
    let (_, seen, _) = visit(&ctx, server, &dp, expectations).await;
    assert!(
        !seen.iter().any(|(method, _, _)| method == Method::DELETE),
        "no fourth recreation"
    );
    let status = written_status(&seen).expect("status written");
    assert_eq!(status.ingest_job.as_ref().map(|r| r.recreations), Some(3));
    let runtime = &status.conditions[3];
    let given_up = format!("1/1 runtime pods ready; the generator Job shops/{generator} failed ({failure}) after 3 recreations, so the operator leaves it: see `kubectl -n shops logs job/{generator}` and `kubectl -n shops describe job {generator}`, fix the cause, then `kubectl -n shops delete job {generator}` to run it once more");
    assert_eq!(
        (runtime.reason.as_str(), runtime.message.as_str()),
        ("IngestFailed", given_up.as_str())
    );
    let events = bodies_of(&seen, "/events?");
    assert_eq!(events[0]["reason"], "PhaseChanged");
    assert_eq!(
        (&events[1]["reason"], &events[1]["type"], &events[1]["note"]),
        (
            &json!("IngestFailed"),
            &json!("Warning"),
            &json!(format!("RuntimeReady: {given_up}"))
        )
    );
}

#[tokio::test]
async fn an_existing_generator_job_is_kept_while_kafka_is_not_ready() {
    let generator = job_names()[2].clone();
    let mut expectations = vec![
        get_secret("shop-minio-credentials", Reply::Status(404)),
        get_secret("shop-minio-tls", Reply::Status(404)),
        get_secret("shop-es-elastic-user", Reply::Status(404)),
        get_secret("shop-es-transport", Reply::Status(404)),
        get_secret("shop-ca", Reply::Status(404)),
        get_secret("shop-kafka-tls", Reply::Status(404)),
        get_secret("shop-kafka-admin", Reply::Status(404)),
        get_secret("shop-kafka-runtime", Reply::Status(404)),
        get_secret("shop-kafka-ingest", Reply::Status(404)),
    ];
    let mut applies = managed_applies(false);
    // The Job exists (created while Kafka was ready): it is applied, not left alone.
    applies.pop();
    applies.push(Expect::new(
        Method::GET,
        format!("{}/{generator}", collection("Job")),
        Reply::Json(
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                           "metadata": {"name": generator.clone(), "namespace": "shops"}}),
        ),
    ));
    applies.push(apply("Job", &generator, json!({"active": 1})));
    expectations.extend(applies);
    expectations.extend(empty_lists());
    expectations.push(list_pods(vec![]));
    expectations.push(status_patch());
    expectations.push(event());
    let (result, seen, _) = run(managed_pipeline(), expectations).await;
    result.expect("reconciled");
    assert_eq!(
        body_of(&seen, "/status?")["status"]["components"]["ingest"]["message"],
        format!("generator Job {generator} running")
    );
}

const FORBIDDEN: &str = "StatefulSet.apps \"shop-kafka\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

#[tokio::test]
async fn a_refused_child_does_not_stop_the_others_and_is_named_in_the_status() {
    let mut expectations: Vec<Expect> = ready_expectations(false)
        .into_iter()
        .take(GENERATED_SECRETS)
        .collect();
    // The Kafka StatefulSet is refused (an immutable field changed behind the CRD's back);
    // every later child is still applied.
    // The generator Job waits: Kafka is not known to be ready.
    expectations.extend(generator_waits(
        managed_applies(true)
            .into_iter()
            .map(|mut e| {
                if e.uri.contains("/statefulsets/shop-kafka?") {
                    e.reply = Reply::Invalid(FORBIDDEN);
                }
                e
            })
            .collect(),
    ));
    expectations.extend(empty_lists());
    // Kafka is not known to be ready: the pods are read.
    expectations.push(list_pods(vec![]));
    expectations.push(status_patch());
    expectations.push(event());
    expectations.push(event());
    let dp = Arc::new(managed_pipeline());
    let (result, seen, ctx) = run((*dp).clone(), expectations).await;
    assert_eq!(
        seen.iter()
            .filter(|(method, _, _)| method == Method::PATCH)
            .count(),
        27 + 1,
        "every child but the waiting generator Job, and the status"
    );
    let message = format!("cannot apply StatefulSet shops/shop-kafka: {FORBIDDEN}; the operator applied the pipeline's other children and retries with backoff");
    let status = &body_of(&seen, "/status?")["status"];
    assert_eq!(
        status["conditions"][0],
        json!({"type": "KafkaReady", "status": "False", "reason": "ApplyFailed",
               "message": message, "observedGeneration": 1,
               "lastTransitionTime": "2026-01-01T00:16:40Z"})
    );
    assert_eq!(status["conditions"][3]["reason"], "WorkloadReady");
    let events = bodies_of(&seen, "/events?");
    assert_eq!(events[0]["reason"], "PhaseChanged");
    assert_eq!(
        (&events[1]["reason"], &events[1]["type"], &events[1]["note"]),
        (
            &json!("ApplyFailed"),
            &json!("Warning"),
            &json!(format!("KafkaReady: {message}"))
        )
    );
    // The reconcile still fails, so it is retried with backoff.
    let error = result.expect_err("a child was refused");
    assert_eq!(error.category(), "apply");
    assert!(
        error
            .to_string()
            .starts_with("applying StatefulSet shops/shop-kafka:"),
        "{error}"
    );
    assert_eq!(
        error_policy(dp, &error, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(delays, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
}

#[tokio::test]
async fn a_backlog_scales_the_runtime_deployment_and_reports_it() {
    use crate::{
        controller::measure::{
            observer::{FixedMeasurement, Measurement},
            throughput::{OffsetsSnapshot, PartitionOffsets},
        },
        crd::{AutoscalerStatus, AutoscalingSpec},
    };
    let mut dp = managed_pipeline();
    dp.spec.runtime.autoscaling = Some(AutoscalingSpec {
        min_replicas: 1,
        max_replicas: 5,
        lag_per_replica: 1000,
        scale_down_stabilization_seconds: 300,
    });
    dp.status = Some(DataPipelineStatus {
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "KafkaReady".into(),
            status: "True".into(),
            reason: "WorkloadReady".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: super::fixtures::at(1),
        }],
        autoscaler: Some(AutoscalerStatus {
            desired_replicas: 1,
            ..AutoscalerStatus::default()
        }),
        ..DataPipelineStatus::default()
    });
    // 3 partitions with 2500 events of lag each: ceil(7500 / 1000) = 8, capped at 3.
    let backlog = Measurement::Measured(OffsetsSnapshot {
        events: (0..3)
            .map(|partition| PartitionOffsets {
                partition,
                low: 0,
                log_end: 3000,
                committed: Some(500),
            })
            .collect(),
        dead_letters: 2,
        profiles: Some(640),
    });
    let (mut ctx, server) = Context::test();
    Arc::get_mut(&mut ctx).expect("unique").observer =
        Arc::new(FixedMeasurement(std::sync::Mutex::new(backlog)));
    let mut expectations = vec![
        get_secret("shop-minio-credentials", Reply::Status(404)),
        get_secret("shop-minio-tls", Reply::Status(404)),
        get_secret("shop-es-elastic-user", Reply::Status(404)),
        get_secret("shop-es-transport", Reply::Status(404)),
        get_secret("shop-ca", Reply::Status(404)),
        get_secret("shop-kafka-tls", Reply::Status(404)),
        get_secret("shop-kafka-admin", Reply::Status(404)),
        get_secret("shop-kafka-runtime", Reply::Status(404)),
        get_secret("shop-kafka-ingest", Reply::Status(404)),
    ];
    expectations.extend(managed_applies(true));
    expectations.extend(empty_lists());
    // The Deployment now wants 3 pods and has 1 ready: the pods are read.
    expectations.push(list_pods(vec![]));
    expectations.push(status_patch());
    expectations.push(event());
    expectations.push(event());
    let scenario = server.run(expectations);
    let result = reconcile(Arc::new(dp), ctx.clone()).await;
    let seen = tokio::time::timeout(Duration::from_secs(5), scenario)
        .await
        .expect("all requests made")
        .expect("scenario assertions hold");
    // Measured pipelines come back every observation interval.
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(15))
    );
    assert_eq!(
        body_of(&seen, "deployments/shop-runtime?")["spec"]["replicas"],
        3
    );
    let status: DataPipelineStatus =
        serde_json::from_value(body_of(&seen, "/status?")["status"].clone()).expect("status");
    let autoscaler = status.autoscaler.expect("autoscaler");
    assert_eq!(autoscaler.desired_replicas, 3);
    assert_eq!(autoscaler.current_replicas, 1);
    assert_eq!(
        autoscaler.reason,
        "lag 7500 at 1000 per replica asks for 8, capped at 3 partitions: scale up at 3"
    );
    assert_eq!(autoscaler.last_scale_time, Some(super::fixtures::at(1000)));
    let throughput = status.throughput.expect("throughput");
    assert_eq!(
        (
            throughput.consumer_lag,
            throughput.events_ingested,
            throughput.events_processed,
            throughput.dead_letters,
            throughput.profiles
        ),
        (7500, 9000, 1500, 2, 640)
    );
    let events = bodies_of(&seen, "/events?");
    assert_eq!(events[0]["reason"], "ScaledUp");
    assert_eq!(
        events[0]["note"],
        "runtime replicas 1 -> 3: lag 7500 at 1000 per replica asks for 8, capped at 3 partitions: scale up at 3"
    );
    assert_eq!(events[1]["reason"], "PhaseChanged");
}

/// The ready applies of the all-managed fixture, but the search StatefulSet has no ready
/// node.
fn applies_with_search_unready() -> Vec<Expect> {
    managed_applies(true)
        .into_iter()
        .map(|mut e| {
            if e.uri.contains("/statefulsets/shop-es?") {
                e.reply = Reply::EchoWithStatus(sts_status(0));
            }
            e
        })
        .collect()
}

#[tokio::test]
async fn a_search_node_that_cannot_pull_its_image_says_so_until_it_can() {
    let (ctx, server) = Context::test();
    let mut dp = managed_pipeline();
    let pulling = pod_json(
        "shop-es-0",
        "search",
        json!({"phase": "Pending", "containerStatuses": [{
            "name": "elasticsearch", "image": "docker.elastic.co/elasticsearch/elasticsearch:9.99.0",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                                  "message": "Back-off pulling image \"docker.elastic.co/elasticsearch/elasticsearch:9.99.0\""}}
        }]}),
    );
    let running_kafka = pod_json(
        "shop-kafka-0",
        "kafka",
        json!({"phase": "Running", "containerStatuses": [{
            "name": "kafka", "image": "apache/kafka:4.1.0", "imageID": "", "ready": true,
            "restartCount": 0, "state": {"running": {}}
        }]}),
    );
    let mut expectations: Vec<Expect> = ready_expectations(false)
        .into_iter()
        .take(GENERATED_SECRETS)
        .collect();
    expectations.extend(applies_with_search_unready());
    expectations.extend(empty_lists());
    expectations.push(list_pods(vec![running_kafka.clone(), pulling]));
    expectations.push(status_patch());
    expectations.push(event());
    expectations.push(event());
    let (_, seen, server) = visit(&ctx, server, &dp, expectations).await;
    let message = "container elasticsearch of pod shops/shop-es-0 cannot pull image docker.elastic.co/elasticsearch/elasticsearch:9.99.0: Back-off pulling image \"docker.elastic.co/elasticsearch/elasticsearch:9.99.0\"";
    let status = &body_of(&seen, "/status?")["status"];
    assert_eq!(
        status["conditions"][2],
        json!({"type": "SearchReady", "status": "False", "reason": "ImagePullBackOff",
               "message": message, "observedGeneration": 1,
               "lastTransitionTime": "2026-01-01T00:16:40Z"})
    );
    assert_eq!(status["components"]["search"]["message"], message);
    let events = bodies_of(&seen, "/events?");
    assert_eq!(events[0]["reason"], "PhaseChanged");
    assert_eq!(
        events[0]["note"],
        format!("(none) -> Provisioning: waiting for search: {message}")
    );
    assert_eq!(
        (&events[1]["reason"], &events[1]["type"], &events[1]["note"]),
        (
            &json!("ImagePullBackOff"),
            &json!("Warning"),
            &json!(format!("SearchReady: {message}"))
        )
    );
    dp.status = written_status(&seen);

    // The next visit only observes: it reads the pods again (the StatefulSet still had no
    // ready node when last applied). The image came: the node is starting, no problem.
    let starting = pod_json(
        "shop-es-0",
        "search",
        json!({"phase": "Running", "containerStatuses": [{
            "name": "elasticsearch", "image": "docker.elastic.co/elasticsearch/elasticsearch:8.18.0",
            "imageID": "", "ready": false, "restartCount": 0, "state": {"running": {}}
        }]}),
    );
    let (_, seen, _) = visit(
        &ctx,
        server,
        &dp,
        vec![list_pods(vec![running_kafka, starting]), status_patch()],
    )
    .await;
    let status = written_status(&seen).expect("status written");
    let search = &status.conditions[2];
    assert_eq!(
        (search.reason.as_str(), search.message.as_str()),
        (
            "ReplicasNotReady",
            "0/1 Elasticsearch nodes ready (StatefulSet shops/shop-es); if this persists, see `kubectl -n shops describe statefulset shop-es` and its pods' events"
        )
    );
    // Still False: the transition time stays.
    assert_eq!(search.last_transition_time, super::fixtures::at(1000));
}

#[tokio::test]
async fn a_managed_opensearch_gets_tls_and_a_runtime_user() {
    use base64::Engine as _;
    let dp = super::fixtures::opensearch_pipeline(1);
    let plan = super::fixtures::opensearch_plan(1);
    let jobs = job_names_of(&plan);
    assert_eq!(jobs, job_names(), "the Jobs do not depend on the engine");
    // MinIO's, OpenSearch's and Kafka's generated Secrets are read; none of
    // Elasticsearch's is read or applied.
    let mut expectations = vec![
        get_secret("shop-minio-credentials", Reply::Status(404)),
        get_secret("shop-minio-tls", Reply::Status(404)),
        get_secret("shop-es-tls", Reply::Status(404)),
        get_secret("shop-es-runtime-user", Reply::Status(404)),
        get_secret("shop-ca", Reply::Status(404)),
        get_secret("shop-kafka-tls", Reply::Status(404)),
        get_secret("shop-kafka-admin", Reply::Status(404)),
        get_secret("shop-kafka-runtime", Reply::Status(404)),
        get_secret("shop-kafka-ingest", Reply::Status(404)),
    ];
    let mut applies: Vec<Expect> = Vec::new();
    for e in managed_applies(false) {
        if e.uri.contains("secrets/shop-es-") {
            continue;
        }
        let after_minio_tls = e.uri.contains("/secrets/shop-minio-tls?");
        applies.push(if e.uri.contains("/statefulsets/shop-es?") {
            e.checking(|body| {
                let pod = &body["spec"]["template"];
                let container = &pod["spec"]["containers"][0];
                assert_eq!(container["name"], "opensearch");
                assert_eq!(container["image"], "opensearchproject/opensearch:2.19.1");
                assert!(!container.to_string().contains("ELASTIC_PASSWORD"));
                assert!(!container.to_string().contains("DISABLE_SECURITY_PLUGIN"));
                // Rolls when the pipeline CA re-issues the node certificate.
                assert_eq!(
                    pod["metadata"]["annotations"]["checksum/tls"]
                        .as_str()
                        .map(str::len),
                    Some(64)
                );
            })
        } else if e.uri.contains("/configmaps/shop-runtime-config?") {
            e.checking(|body| {
                assert_eq!(
                    body["data"]["DP_SEARCH_URL"],
                    "https://shop-es.shops.svc:9200"
                );
                assert_eq!(
                    body["data"]["DP_SEARCH_CA_FILE"],
                    "/etc/datapipeline/search-ca/ca.crt"
                );
            })
        } else if e.uri.contains("/deployments/shop-runtime?") {
            e.checking(|body| {
                let text = body.to_string();
                assert!(text.contains("shop-es-runtime-user"), "{text}");
                assert!(!text.contains("elastic"), "{text}");
            })
        } else {
            e
        });
        if after_minio_tls {
            applies.push(
                apply("Secret", "shop-es-tls", Value::Null).checking(|body| {
                    assert_eq!(body["type"], "kubernetes.io/tls");
                    let keys: Vec<&String> =
                        body["data"].as_object().expect("data").keys().collect();
                    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
                }),
            );
            applies.push(
                apply("Secret", "shop-es-runtime-user", Value::Null).checking(|body| {
                    let text = |key: &str| {
                        let b64 = body["data"][key].as_str().expect("key");
                        String::from_utf8(
                            base64::engine::general_purpose::STANDARD
                                .decode(b64)
                                .expect("base64"),
                        )
                        .expect("utf-8")
                    };
                    assert_eq!(text("username"), "shop-runtime");
                    assert_eq!(text("password"), "generated-password");
                    assert_eq!(text("passwordHash"), "hash of generated-password");
                }),
            );
            applies.push(
                apply("Secret", "shop-es-security", Value::Null).checking(|body| {
                    let b64 = body["data"]["internal_users.yml"].as_str().expect("users");
                    let users = String::from_utf8(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .expect("base64"),
                    )
                    .expect("utf-8");
                    assert!(users.contains("hash of generated-password"), "{users}");
                }),
            );
        }
    }
    assert_eq!(applies.len(), 28 - 2 + 3);
    expectations.extend(applies);
    expectations.extend(empty_lists());
    expectations.push(list_pods(vec![]));
    expectations.push(status_patch());
    expectations.push(event());
    let (result, seen, _) = run(dp, expectations).await;
    result.expect("reconciled");
    let status = &body_of(&seen, "/status?")["status"];
    assert_eq!(
        status["conditions"][2]["message"],
        "0/1 OpenSearch nodes ready (StatefulSet shops/shop-es); if this persists, see `kubectl -n shops describe statefulset shop-es` and its pods' events"
    );
}
