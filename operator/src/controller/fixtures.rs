//! Test fixtures: pipelines, plans, credentials, observations, and a mocked API server that
//! asserts each request a reconcile makes, in order (the `ApiServerVerifier` pattern of
//! kube-rs/controller-rs). Tests only.

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Response};
use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
    ByteString,
};
use kube::{client::Body, runtime::events::Reporter, Client};
use serde_json::{json, Value};

use super::{
    apply::readiness::{ChildrenState, IngestState, JobOutcome, JobState, Recovery, WorkloadState},
    context::Context,
    credentials::{CredentialGenerator, GeneratedCredentials, S3Keys, TlsBundle},
    measure::observer::NoThroughput,
    pipeline_ca::{CaKeyPair, PipelineCa, Validity},
    status::findings::{Observation, PipelineFacts},
    validate::{validate, ManagedSearchPlan, OperatorSettings, SearchMode, ValidatedPipeline},
};
use crate::{
    crd::{DataPipeline, SearchEngine},
    error::Result,
    metrics::Metrics,
};

pub const UID: &str = "0b9f5f2e-2c1a-4d5e-9a35-1f4b3c2d1e0f";

pub fn settings() -> OperatorSettings {
    OperatorSettings {
        runtime_image: "pipeline-runtime:test".into(),
        operator_pods: Some(super::validate::OperatorPods {
            namespace: "datapipeline-system".into(),
            labels: std::collections::BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "datapipeline-operator".to_string(),
                ),
                (
                    "app.kubernetes.io/instance".to_string(),
                    "datapipeline".to_string(),
                ),
            ]),
        }),
    }
}

fn pipeline(spec: Value) -> DataPipeline {
    let mut dp: DataPipeline = serde_json::from_value(json!({
        "apiVersion": "datapipeline.io/v1alpha1",
        "kind": "DataPipeline",
        "metadata": {"name": "shop", "namespace": "shops", "uid": UID, "generation": 1},
        "spec": spec,
    }))
    .expect("fixture pipeline");
    dp.metadata.resource_version = Some("100".into());
    dp
}

/// Everything managed, generator source (like examples/shop-events.yaml, smaller).
pub fn managed_pipeline() -> DataPipeline {
    pipeline(json!({
        "source": {"generator": {"events": 1000, "seed": 7}},
        "kafka": {"managed": {
            "replicas": 1,
            "storage": {"size": "5Gi"},
            "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
        }},
        "objectStore": {"managed": {}, "bucket": "shop-lake"},
        "search": {"managed": {}},
        "runtime": {
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
        }
    }))
}

/// Everything external, landing-prefix source, with Secrets for every service.
pub fn external_pipeline() -> DataPipeline {
    pipeline(json!({
        "source": {"landingPrefix": "landing/"},
        "kafka": {"external": {
            "bootstrapServers": "kafka-bootstrap.kafka.svc:9093",
            "securityProtocol": "SASL_SSL",
            "saslMechanism": "SCRAM-SHA-512",
            "secretRef": {"name": "shop-kafka-user"},
            "caSecretRef": {"name": "shop-kafka-ca"}
        }},
        "objectStore": {"external": {
            "endpoint": "https://s3.eu-west-1.amazonaws.com",
            "region": "eu-west-1",
            "secretRef": {"name": "shop-s3"}
        }, "bucket": "shop-lake"},
        "search": {"external": {
            "url": "https://opensearch.search.svc:9200",
            "engine": "opensearch",
            "secretRef": {"name": "shop-search-user"}
        }},
        "runtime": {"replicas": 2}
    }))
}

pub fn managed_plan() -> ValidatedPipeline {
    validate(&managed_pipeline(), &settings()).expect("valid fixture")
}

pub fn external_pipeline_plan() -> ValidatedPipeline {
    validate(&external_pipeline(), &settings()).expect("valid fixture")
}

/// The all-managed pipeline with a managed OpenSearch of `replicas` nodes, 2 GiB each.
pub fn opensearch_pipeline(replicas: i32) -> DataPipeline {
    let mut dp = managed_pipeline();
    dp.spec.search.managed = Some(
        serde_json::from_value(json!({
            "engine": "opensearch",
            "replicas": replicas,
            "resources": {"requests": {"cpu": "250m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
        }))
        .expect("managed OpenSearch"),
    );
    dp
}

pub fn opensearch_plan(replicas: i32) -> ValidatedPipeline {
    validate(&opensearch_pipeline(replicas), &settings()).expect("valid fixture")
}

/// The managed search cluster of a plan.
pub fn search_plan(p: &ValidatedPipeline) -> &ManagedSearchPlan {
    match &p.search.mode {
        SearchMode::Managed(search) => search,
        SearchMode::External(_) => panic!("the fixture's search is external"),
    }
}

pub fn set_search_replicas(p: &mut ValidatedPipeline, replicas: i32) {
    if let SearchMode::Managed(search) = &mut p.search.mode {
        search.replicas = replicas;
    }
}

/// Deterministic "random" credentials.
pub struct FixedCredentials;

impl CredentialGenerator for FixedCredentials {
    fn password(&self) -> String {
        "generated-password".into()
    }

    fn password_hash(&self, password: &str) -> Result<String> {
        Ok(format!("hash of {password}"))
    }

    fn tls_bundle(&self, common_name: &str, dns_names: Vec<String>) -> Result<TlsBundle> {
        Ok(TlsBundle {
            ca_crt: format!("ca for {common_name}"),
            tls_crt: format!("cert for {common_name}: {}", dns_names.join(",")),
            tls_key: format!("key for {common_name}"),
        })
    }

    fn certificate_authority(&self, common_name: &str, _validity: Validity) -> Result<CaKeyPair> {
        Ok(CaKeyPair {
            crt: format!("ca {common_name}"),
            key: "ca key".into(),
        })
    }

    fn server_certificate(
        &self,
        issuer: &CaKeyPair,
        common_name: &str,
        dns_names: &[String],
        _validity: Validity,
    ) -> Result<(String, String)> {
        Ok((
            format!(
                "cert for {common_name} from {}: {}",
                issuer.crt,
                dns_names.join(",")
            ),
            format!("key for {common_name}"),
        ))
    }
}

pub fn fixed_credentials() -> GeneratedCredentials {
    GeneratedCredentials {
        minio: Some(S3Keys {
            access_key_id: "shop-admin".into(),
            secret_access_key: "minio-secret-key".into(),
        }),
        elastic_password: Some("elastic-password".into()),
        search_transport: Some(TlsBundle {
            ca_crt: "ca-pem".into(),
            tls_crt: "node-cert-pem".into(),
            tls_key: "node-key-pem".into(),
        }),
        pipeline_ca: Some(PipelineCa {
            current: CaKeyPair {
                crt: "pipeline-ca-pem".into(),
                key: "pipeline-ca-key-pem".into(),
            },
            next: None,
            previous: None,
        }),
        kafka_tls: Some(TlsBundle {
            ca_crt: "pipeline-ca-pem".into(),
            tls_crt: "kafka-cert-pem".into(),
            tls_key: "kafka-key-pem".into(),
        }),
        kafka_admin: Some(TlsBundle {
            ca_crt: "pipeline-ca-pem".into(),
            tls_crt: "kafka-admin-cert-pem".into(),
            tls_key: "kafka-admin-key-pem".into(),
        }),
        kafka_runtime: Some(TlsBundle {
            ca_crt: "pipeline-ca-pem".into(),
            tls_crt: "kafka-runtime-cert-pem".into(),
            tls_key: "kafka-runtime-key-pem".into(),
        }),
        kafka_ingest: Some(TlsBundle {
            ca_crt: "pipeline-ca-pem".into(),
            tls_crt: "kafka-ingest-cert-pem".into(),
            tls_key: "kafka-ingest-key-pem".into(),
        }),
        minio_tls: Some(TlsBundle {
            ca_crt: "pipeline-ca-pem".into(),
            tls_crt: "minio-cert-pem".into(),
            tls_key: "minio-key-pem".into(),
        }),
        // The managed pipeline's search engine is Elasticsearch.
        search_tls: None,
        search_runtime_user: None,
    }
}

pub fn secret_with(name: &str, entries: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shops".into()),
            ..ObjectMeta::default()
        },
        data: Some(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// A status timestamp `seconds` after 2026-01-01T00:00:00Z.
pub fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_767_225_600 + seconds).expect("valid time"))
}

fn workload(kind: &'static str, name: &str, desired: i32, ready: i32) -> WorkloadState {
    WorkloadState {
        kind,
        name: name.into(),
        desired,
        current: desired,
        ready,
        up_to_date: true,
    }
}

pub fn job(name: &str, outcome: JobOutcome) -> JobState {
    JobState {
        name: name.into(),
        outcome,
        suspended: false,
        failure: None,
        deleting: false,
    }
}

/// Every managed child ready, two runtime pods, the generator running.
pub fn ready_children() -> ChildrenState {
    ChildrenState {
        kafka: Some(workload("StatefulSet", "shop-kafka", 1, 1)),
        kafka_topics: Some(job("shop-kafka-topics-0000cafe", JobOutcome::Succeeded)),
        object_store: Some(workload("StatefulSet", "shop-minio", 1, 1)),
        bucket: Some(job("shop-minio-bucket-0000beef", JobOutcome::Succeeded)),
        search: Some(workload("StatefulSet", "shop-es", 1, 1)),
        runtime: workload("Deployment", "shop-runtime", 2, 2),
        ingest: IngestState::Job {
            job: job("shop-generate-abcd1234", JobOutcome::Running),
            recovery: Recovery::NotNeeded,
        },
        apply_failures: Vec::new(),
    }
}

pub fn managed_facts() -> PipelineFacts {
    PipelineFacts {
        paused: false,
        kafka_external: None,
        object_store_external: None,
        search_external: None,
        search_engine: SearchEngine::Elasticsearch,
        runtime_selector: "app.kubernetes.io/component=runtime,app.kubernetes.io/instance=shop,app.kubernetes.io/name=pipeline-runtime".into(),
        name: "shop".into(),
        namespace: "shops".into(),
    }
}

pub fn applied(children: ChildrenState, facts: PipelineFacts) -> Observation {
    Observation::Applied {
        children: Box::new(children),
        pods: Default::default(),
        facts,
        throughput: None,
        autoscaler: None,
        flow: Default::default(),
    }
}

// ------------------------------------------------------------------ mocked API server

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One request the reconcile must make next, and how the "API server" answers it.
#[derive(Clone, Debug)]
pub struct Expect {
    pub method: Method,
    /// Path and query, exactly.
    pub uri: String,
    pub reply: Reply,
    /// Check on the request body (JSON), if any.
    pub body: Option<fn(&Value)>,
}

#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this JSON.
    Json(Value),
    /// 200 echoing the request body (what server-side apply returns for a new object),
    /// with this JSON merged into `status`.
    EchoWithStatus(Value),
    /// 200 with this object, its `status` replaced by the request's (a status patch).
    WithRequestStatus(Value),
    /// An API error with this HTTP code.
    Status(u16),
    /// 422 Invalid with this message, as the API server refuses a forbidden update.
    Invalid(&'static str),
}

impl Expect {
    pub fn new(method: Method, uri: impl Into<String>, reply: Reply) -> Self {
        Self {
            method,
            uri: uri.into(),
            reply,
            body: None,
        }
    }

    pub fn checking(mut self, check: fn(&Value)) -> Self {
        self.body = Some(check);
        self
    }
}

pub struct ApiServerVerifier(ApiServerHandle);

/// Bodies of the requests, in order, for assertions after the scenario.
pub type Seen = Vec<(Method, String, Value)>;

impl ApiServerVerifier {
    /// Answers the expected requests in order, asserting method, path and body; returns
    /// what it saw. Missing requests show up as the caller's timeout; extra requests make
    /// the reconcile fail (the mock closes after the last expectation).
    pub fn run(self, expectations: Vec<Expect>) -> tokio::task::JoinHandle<Seen> {
        let scenario = self.run_and_keep(expectations);
        tokio::spawn(async move { scenario.await.expect("scenario").0 })
    }

    /// Like [`Self::run`], and hands the server back for the next visit. A request beyond
    /// the expectations then stays unanswered: the caller's timeout on the reconcile shows
    /// it.
    pub fn run_and_keep(
        mut self,
        expectations: Vec<Expect>,
    ) -> tokio::task::JoinHandle<(Seen, Self)> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for (index, expect) in expectations.into_iter().enumerate() {
                let (request, send) = self.0.next_request().await.unwrap_or_else(|| {
                    panic!(
                        "request #{index} ({} {}) never came",
                        expect.method, expect.uri
                    )
                });
                assert_eq!(
                    (request.method(), request.uri().to_string()),
                    (&expect.method, expect.uri.clone()),
                    "request #{index}"
                );
                let method = request.method().clone();
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .expect("request body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("JSON request body")
                };
                if let Some(check) = expect.body {
                    check(&body);
                }
                let response = match &expect.reply {
                    Reply::Json(value) => json_response(200, value),
                    Reply::EchoWithStatus(status) => {
                        let mut echoed = body.clone();
                        if !status.is_null() {
                            echoed["status"] = status.clone();
                        }
                        json_response(200, &echoed)
                    }
                    Reply::WithRequestStatus(object) => {
                        let mut object = object.clone();
                        object["status"] = body["status"].clone();
                        json_response(200, &object)
                    }
                    Reply::Invalid(message) => json_response(
                        422,
                        &json!({
                            "kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": message,
                            "reason": "Invalid", "code": 422
                        }),
                    ),
                    Reply::Status(code) => json_response(
                        *code,
                        &json!({
                            "kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "message": "mocked failure",
                            "reason": if *code == 404 { "NotFound" } else { "InternalError" },
                            "code": code
                        }),
                    ),
                };
                send.send_response(response);
                seen.push((method, expect.uri, body));
            }
            (seen, self)
        })
    }
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(value).expect("JSON")))
        .expect("response")
}

impl Context {
    /// A context on a mocked API server, with fixed credentials and a fixed clock.
    pub fn test() -> (Arc<Self>, ApiServerVerifier) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let reporter = Reporter {
            controller: "datapipeline-operator".into(),
            instance: None,
        };
        let context = Context::new(
            client,
            reporter,
            Arc::new(Metrics::new()),
            settings(),
            Arc::new(FixedCredentials),
            Arc::new(NoThroughput),
            Arc::new(|| at(1000)),
            Duration::from_secs(300),
        );
        (Arc::new(context), ApiServerVerifier(handle))
    }
}
