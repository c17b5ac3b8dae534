//! The pipeline-runtime's processing pods: the ConfigMap of environment variables every
//! runtime pod reads (names from `pipeline_config::env`), its checksum, and the Deployment
//! running `pipeline-runtime process`. Credentials reach pods only through secretKeyRef and
//! mounted Secret files, never as literals. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar,
            KeyToPath, PodSpec, PodTemplateSpec, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use pipeline_config::env as e;

use super::{
    engine::{BasicAuth, Username},
    kafka, minio,
    names::{keys, labels, selector_labels, ChildNames, Role, CONFIG_CHECKSUM_ANNOTATION},
    pieces::{
        container_security, env_from_secret, http_probe, meta, pod_security, secret_volume,
        sha256_hex, tmp_volume,
    },
    search,
};
use crate::{
    controller::validate::{KafkaMode, ObjectStoreMode, ValidatedPipeline},
    crd::CaSecretRef,
};

/// uid of the runtime image's non-root user (distroless `nonroot`).
pub const RUNTIME_UID: i64 = 65532;
pub const HTTP_PORT_NAME: &str = "http";
const KAFKA_CA_DIR: &str = "/etc/datapipeline/kafka-ca";
/// The managed Kafka's trust bundle and the runtime's client certificate and key.
const KAFKA_TLS_DIR: &str = "/etc/datapipeline/kafka";
const SEARCH_CA_DIR: &str = "/etc/datapipeline/search-ca";
const S3_CA_DIR: &str = "/etc/datapipeline/s3-ca";
const CA_FILE: &str = "ca.crt";

/// Every non-secret setting of the runtime, as environment variables.
pub fn config_data(p: &ValidatedPipeline) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        data.insert(k.to_string(), v);
    };
    set(e::PIPELINE, p.name.clone());
    set(e::EVENTS_TOPIC, p.names.events_topic());
    set(e::DLQ_TOPIC, p.names.dead_letter_topic());
    set(e::CONSUMER_GROUP, p.names.consumer_group());
    set(e::TOPIC_PARTITIONS, p.kafka.partitions.to_string());
    set(e::S3_BUCKET, p.object_store.bucket.clone());
    set(e::SEARCH_INDEX, p.search.index.clone());
    set(
        e::CHECKPOINT_INTERVAL_MS,
        p.runtime.checkpoint_interval_ms.to_string(),
    );
    set(e::HTTP_PORT, pipeline_config::DEFAULT_HTTP_PORT.to_string());
    set(e::LOG_FORMAT, "json".into());

    match &p.kafka.mode {
        KafkaMode::Managed(k) => data.extend(kafka::runtime_config(p, k, KAFKA_TLS_DIR)),
        KafkaMode::External(k) => {
            data.insert(e::KAFKA_BOOTSTRAP.into(), k.bootstrap_servers.clone());
            data.insert(
                e::KAFKA_SECURITY_PROTOCOL.into(),
                k.security_protocol.as_str().into(),
            );
            if let Some(mechanism) = k.sasl_mechanism {
                data.insert(e::KAFKA_SASL_MECHANISM.into(), mechanism.as_str().into());
            }
            if k.ca_secret_ref.is_some() {
                data.insert(e::KAFKA_CA_FILE.into(), format!("{KAFKA_CA_DIR}/{CA_FILE}"));
            }
            // The external cluster's default replication factor.
            data.insert(e::TOPIC_REPLICATION.into(), "-1".into());
        }
    }
    match &p.object_store.mode {
        ObjectStoreMode::Managed(_) => {
            data.extend(minio::runtime_config(p, &format!("{S3_CA_DIR}/{CA_FILE}")))
        }
        ObjectStoreMode::External(s) => {
            if let Some(endpoint) = &s.endpoint {
                data.insert(e::S3_ENDPOINT.into(), endpoint.clone());
            }
            if s.ca_secret_ref.is_some() {
                data.insert(e::S3_CA_FILE.into(), format!("{S3_CA_DIR}/{CA_FILE}"));
            }
            data.insert(e::S3_REGION.into(), s.region.clone());
            data.insert(e::S3_PATH_STYLE.into(), s.path_style.to_string());
        }
    }
    let search = search::endpoint(p);
    data.insert(e::SEARCH_URL.into(), search.url);
    if let Some(BasicAuth {
        username: Username::Fixed(username),
        ..
    }) = search.auth
    {
        data.insert(e::SEARCH_USERNAME.into(), username);
    }
    if search.ca.is_some() {
        data.insert(
            e::SEARCH_CA_FILE.into(),
            format!("{SEARCH_CA_DIR}/{CA_FILE}"),
        );
    }
    data
}

pub fn config_map(p: &ValidatedPipeline) -> ConfigMap {
    ConfigMap {
        metadata: meta(p, ChildNames::new(&p.name).runtime_config(), Role::Runtime),
        data: Some(config_data(p)),
        ..ConfigMap::default()
    }
}

/// sha256 of the rendered configuration and of the generated files the pods load at start
/// (the trust bundle, the Kafka client certificate), in order: a pod-template annotation,
/// so a change to any of them rolls the pods.
pub fn config_checksum(config: &ConfigMap, loaded: &[&str]) -> String {
    let data = config.data.clone().unwrap_or_default();
    let mut rendered: String = data.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    for file in loaded {
        rendered.push_str(file);
    }
    sha256_hex(rendered.as_bytes())
}

/// Which credentials a runtime role needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    pub search: bool,
    /// Whose client certificate a managed Kafka sees.
    pub kafka_user: KafkaUser,
}

/// The managed Kafka's users of the runtime roles, each with its own ACLs (see
/// `kafka::TOPICS_SCRIPT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaUser {
    /// The runtime Deployment: reads events, writes dead letters, commits the group.
    Process,
    /// The ingest Deployment and the generator: write (transactionally) and create topics.
    Ingest,
}

impl KafkaUser {
    /// The Secret holding the user's certificate, key and trust bundle.
    pub fn secret(self, names: &ChildNames) -> String {
        match self {
            KafkaUser::Process => names.kafka_runtime(),
            KafkaUser::Ingest => names.kafka_ingest(),
        }
    }
}

/// What the runtime Deployment's process role needs.
pub const PROCESS_NEEDS: Needs = Needs {
    search: true,
    kafka_user: KafkaUser::Process,
};

/// Credential variables, each a reference to a Secret key.
pub fn credential_env(p: &ValidatedPipeline, needs: Needs) -> Vec<EnvVar> {
    let names = ChildNames::new(&p.name);
    let mut vars = Vec::new();
    if let KafkaMode::External(k) = &p.kafka.mode {
        if let Some(s) = &k.secret_ref {
            vars.push(env_from_secret(e::KAFKA_USERNAME, &s.name, &s.username_key));
            vars.push(env_from_secret(e::KAFKA_PASSWORD, &s.name, &s.password_key));
        }
    }
    match &p.object_store.mode {
        ObjectStoreMode::Managed(_) => {
            let secret = names.minio_credentials();
            vars.push(env_from_secret(
                e::S3_ACCESS_KEY_ID,
                &secret,
                keys::ACCESS_KEY_ID,
            ));
            vars.push(env_from_secret(
                e::S3_SECRET_ACCESS_KEY,
                &secret,
                keys::SECRET_ACCESS_KEY,
            ));
        }
        ObjectStoreMode::External(s) => {
            if let Some(r) = &s.secret_ref {
                vars.push(env_from_secret(
                    e::S3_ACCESS_KEY_ID,
                    &r.name,
                    &r.access_key_id_key,
                ));
                vars.push(env_from_secret(
                    e::S3_SECRET_ACCESS_KEY,
                    &r.name,
                    &r.secret_access_key_key,
                ));
            }
        }
    }
    if needs.search {
        if let Some(auth) = search::endpoint(p).auth {
            if let Username::SecretKey(key) = &auth.username {
                vars.push(env_from_secret(e::SEARCH_USERNAME, &auth.secret, key));
            }
            vars.push(env_from_secret(
                e::SEARCH_PASSWORD,
                &auth.secret,
                &auth.password_key,
            ));
        }
    }
    vars
}

fn ca_volume(volume: &str, dir: &str, reference: &CaSecretRef) -> (Volume, VolumeMount) {
    let item = KeyToPath {
        key: reference.key.clone(),
        path: CA_FILE.into(),
        mode: None,
    };
    secret_volume(volume, &reference.name, vec![item], None, dir)
}

/// `/tmp` plus the CA certificates to trust (the pipeline CA's trust bundle for managed
/// Kafka and MinIO, those given for external services), as volumes and mounts.
pub fn volumes(p: &ValidatedPipeline, needs: Needs) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut pairs = vec![tmp_volume()];
    match &p.kafka.mode {
        KafkaMode::Managed(_) => pairs.push(kafka::user_volume(
            &needs.kafka_user.secret(&ChildNames::new(&p.name)),
            KAFKA_TLS_DIR,
        )),
        KafkaMode::External(k) => {
            if let Some(ca) = &k.ca_secret_ref {
                pairs.push(ca_volume("kafka-ca", KAFKA_CA_DIR, ca));
            }
        }
    }
    match &p.object_store.mode {
        ObjectStoreMode::Managed(_) => pairs.push(minio::trust_volume(p, "s3-ca", S3_CA_DIR)),
        ObjectStoreMode::External(s) => {
            if let Some(ca) = &s.ca_secret_ref {
                pairs.push(ca_volume("s3-ca", S3_CA_DIR, ca));
            }
        }
    }
    if needs.search {
        if let Some(ca) = &search::endpoint(p).ca {
            pairs.push(ca_volume("search-ca", SEARCH_CA_DIR, ca));
        }
    }
    pairs.into_iter().unzip()
}

/// A runtime container running one role (`process` or `ingest`).
pub fn container(
    p: &ValidatedPipeline,
    role: &str,
    mut env: Vec<EnvVar>,
    needs: Needs,
    mounts: Vec<VolumeMount>,
    probes: bool,
) -> Container {
    env.extend(credential_env(p, needs));
    Container {
        name: role.into(),
        image: Some(p.runtime.image.clone()),
        args: Some(vec![role.into()]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: ChildNames::new(&p.name).runtime_config(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: i32::from(pipeline_config::DEFAULT_HTTP_PORT),
            ..ContainerPort::default()
        }]),
        liveness_probe: probes.then(|| http_probe("/healthz", HTTP_PORT_NAME, 10, 6)),
        readiness_probe: probes.then(|| http_probe("/readyz", HTTP_PORT_NAME, 5, 3)),
        resources: p.runtime.resources.clone(),
        security_context: Some(container_security(true)),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// Pod spec shared by the runtime's roles.
pub fn pod_spec(container: Container, volumes: Vec<Volume>, grace_seconds: i64) -> PodSpec {
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        security_context: Some(pod_security(RUNTIME_UID, Some(RUNTIME_UID))),
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(grace_seconds),
        ..PodSpec::default()
    }
}

/// Long enough to finish the checkpoint in progress and commit on SIGTERM.
pub fn grace_seconds(p: &ValidatedPipeline) -> i64 {
    (p.runtime.checkpoint_interval_ms / 1000) as i64 + 30
}

pub fn template_metadata(p: &ValidatedPipeline, role: Role, checksum: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        labels: Some(labels(&p.name, role)),
        annotations: checksum
            .map(|c| BTreeMap::from([(CONFIG_CHECKSUM_ANNOTATION.to_string(), c.to_string())])),
        ..ObjectMeta::default()
    }
}

/// The processing pods (`pipeline-runtime process`), one consumer-group member each.
pub fn deployment(p: &ValidatedPipeline, checksum: &str) -> Deployment {
    let needs = PROCESS_NEEDS;
    let (volumes, mounts) = volumes(p, needs);
    let container = container(p, "process", vec![], needs, mounts, true);
    Deployment {
        metadata: meta(p, ChildNames::new(&p.name).runtime(), Role::Runtime),
        spec: Some(DeploymentSpec {
            replicas: Some(p.runtime.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&p.name, Role::Runtime)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(template_metadata(p, Role::Runtime, Some(checksum))),
                spec: Some(pod_spec(container, volumes, grace_seconds(p))),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{external_pipeline_plan, managed_plan};
    use serde_json::json;

    #[test]
    fn managed_config_points_at_the_managed_services() {
        let data = config_data(&managed_plan());
        let expected: BTreeMap<String, String> = [
            ("DP_PIPELINE", "shop"),
            ("DP_EVENTS_TOPIC", "shop-events"),
            ("DP_DLQ_TOPIC", "shop-events-dlq"),
            ("DP_CONSUMER_GROUP", "shop-profiles"),
            ("DP_TOPIC_PARTITIONS", "6"),
            ("DP_TOPIC_REPLICATION", "1"),
            ("DP_KAFKA_BOOTSTRAP", "shop-kafka.shops.svc:9092"),
            ("DP_KAFKA_SECURITY_PROTOCOL", "SSL"),
            ("DP_KAFKA_CA_FILE", "/etc/datapipeline/kafka/ca.crt"),
            ("DP_KAFKA_CERT_FILE", "/etc/datapipeline/kafka/tls.crt"),
            ("DP_KAFKA_KEY_FILE", "/etc/datapipeline/kafka/tls.key"),
            ("DP_S3_BUCKET", "shop-lake"),
            ("DP_S3_ENDPOINT", "https://shop-minio.shops.svc:9000"),
            ("DP_S3_CA_FILE", "/etc/datapipeline/s3-ca/ca.crt"),
            ("DP_S3_REGION", "us-east-1"),
            ("DP_S3_PATH_STYLE", "true"),
            ("DP_SEARCH_URL", "http://shop-es.shops.svc:9200"),
            ("DP_SEARCH_USERNAME", "elastic"),
            ("DP_SEARCH_INDEX", "shop-profiles"),
            ("DP_CHECKPOINT_INTERVAL_MS", "5000"),
            ("DP_HTTP_PORT", "8080"),
            ("DP_LOG_FORMAT", "json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(data, expected);
    }

    #[test]
    fn managed_opensearch_is_reached_over_tls_as_the_runtime_user() {
        let p = crate::controller::fixtures::opensearch_plan(1);
        let data = config_data(&p);
        assert_eq!(data["DP_SEARCH_URL"], "https://shop-es.shops.svc:9200");
        assert!(!data.contains_key("DP_SEARCH_USERNAME"));
        assert_eq!(
            data["DP_SEARCH_CA_FILE"],
            "/etc/datapipeline/search-ca/ca.crt"
        );
        let refs: Vec<(String, String, String)> = credential_env(&p, PROCESS_NEEDS)
            .into_iter()
            .filter(|v| v.name.starts_with("DP_SEARCH"))
            .map(|v| {
                let r = v
                    .value_from
                    .and_then(|f| f.secret_key_ref)
                    .expect("secret ref");
                (v.name, r.name, r.key)
            })
            .collect();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            refs,
            vec![
                s("DP_SEARCH_USERNAME", "shop-es-runtime-user", "username"),
                s("DP_SEARCH_PASSWORD", "shop-es-runtime-user", "password"),
            ]
        );
        // The trust bundle alone from the node certificate's Secret, never its key.
        let (volumes, _) = volumes(&p, PROCESS_NEEDS);
        let ca = volumes
            .iter()
            .find(|v| v.name == "search-ca")
            .and_then(|v| v.secret.clone())
            .expect("search CA volume");
        assert_eq!(ca.secret_name.as_deref(), Some("shop-es-tls"));
        assert_eq!(
            ca.items
                .expect("items")
                .iter()
                .map(|i| i.key.as_str())
                .collect::<Vec<_>>(),
            vec!["ca.crt"]
        );
        let d = serde_json::to_value(deployment(&p, "abc123")).expect("json");
        assert!(!d.to_string().contains("elastic"));
    }

    #[test]
    fn external_config_and_credentials() {
        let p = external_pipeline_plan();
        let data = config_data(&p);
        assert_eq!(data["DP_KAFKA_BOOTSTRAP"], "kafka-bootstrap.kafka.svc:9093");
        assert_eq!(data["DP_KAFKA_SECURITY_PROTOCOL"], "SASL_SSL");
        assert_eq!(data["DP_KAFKA_SASL_MECHANISM"], "SCRAM-SHA-512");
        assert_eq!(
            data["DP_KAFKA_CA_FILE"],
            "/etc/datapipeline/kafka-ca/ca.crt"
        );
        assert_eq!(data["DP_TOPIC_REPLICATION"], "-1");
        assert_eq!(data["DP_S3_ENDPOINT"], "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(data["DP_S3_REGION"], "eu-west-1");
        assert_eq!(data["DP_S3_PATH_STYLE"], "false");
        assert_eq!(data["DP_SEARCH_URL"], "https://opensearch.search.svc:9200");
        assert!(!data.contains_key("DP_SEARCH_USERNAME"));
        assert!(!data.contains_key("DP_SEARCH_CA_FILE"));
        let refs: Vec<(String, String, String)> = credential_env(&p, PROCESS_NEEDS)
            .into_iter()
            .map(|v| {
                let r = v
                    .value_from
                    .and_then(|f| f.secret_key_ref)
                    .expect("secret ref");
                assert_eq!(v.value, None, "no literal credential");
                (v.name, r.name, r.key)
            })
            .collect();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            refs,
            vec![
                s("DP_KAFKA_USERNAME", "shop-kafka-user", "username"),
                s("DP_KAFKA_PASSWORD", "shop-kafka-user", "password"),
                s("DP_S3_ACCESS_KEY_ID", "shop-s3", "accessKeyId"),
                s("DP_S3_SECRET_ACCESS_KEY", "shop-s3", "secretAccessKey"),
                s("DP_SEARCH_USERNAME", "shop-search-user", "username"),
                s("DP_SEARCH_PASSWORD", "shop-search-user", "password"),
            ]
        );
        assert_eq!(
            credential_env(
                &p,
                Needs {
                    search: false,
                    kafka_user: KafkaUser::Ingest
                }
            )
            .len(),
            4
        );
    }

    #[test]
    fn checksum_changes_with_the_configuration() {
        let p = managed_plan();
        let a = config_checksum(&config_map(&p), &[]);
        assert_eq!(a.len(), 64);
        assert_eq!(a, config_checksum(&config_map(&p), &[]));
        let mut q = p.clone();
        q.runtime.checkpoint_interval_ms = 10_000;
        assert_ne!(a, config_checksum(&config_map(&q), &[]));
        // The checksum is over the rendered `KEY=value` lines, computed independently here.
        let rendered: String = config_data(&p)
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        assert_eq!(a, sha256_hex(rendered.as_bytes()));
        // A renewed trust bundle or client certificate rolls the pods too: they follow
        // the lines, in order.
        let with_files = config_checksum(&config_map(&p), &["bundle-pem", "client-pem"]);
        assert_eq!(
            with_files,
            sha256_hex(format!("{rendered}bundle-pemclient-pem").as_bytes())
        );
    }

    #[test]
    fn deployment_runs_process_securely() {
        let mut p = managed_plan();
        p.runtime.replicas = 3;
        let d = serde_json::to_value(deployment(&p, "abc123")).expect("json");
        assert_eq!(d["metadata"]["name"], "shop-runtime");
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"],
            json!({"checksum/config": "abc123"})
        );
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["terminationGracePeriodSeconds"], 35);
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(
            pod["securityContext"],
            json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                   "seccompProfile": {"type": "RuntimeDefault"}})
        );
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "pipeline-runtime:test");
        assert_eq!(c["args"], json!(["process"]));
        assert_eq!(
            c["envFrom"],
            json!([{"configMapRef": {"name": "shop-runtime-config", "optional": false}}])
        );
        assert_eq!(
            c["env"],
            json!([
                {"name": "DP_S3_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "shop-minio-credentials", "key": "accessKeyId", "optional": false}}},
                {"name": "DP_S3_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "shop-minio-credentials", "key": "secretAccessKey", "optional": false}}},
                {"name": "DP_SEARCH_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "shop-es-elastic-user", "key": "elastic", "optional": false}}}
            ])
        );
        assert_eq!(c["ports"], json!([{"name": "http", "containerPort": 8080}]));
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "failureThreshold": 6})
        );
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3})
        );
        assert_eq!(
            c["securityContext"],
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                   "readOnlyRootFilesystem": true, "runAsNonRoot": true})
        );
        assert_eq!(
            c["resources"],
            json!({"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}})
        );
        // The trust bundle of the managed Kafka and MinIO, read-only; no key.
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "tmp", "mountPath": "/tmp"},
                   {"name": "kafka-tls", "mountPath": "/etc/datapipeline/kafka", "readOnly": true},
                   {"name": "s3-ca", "mountPath": "/etc/datapipeline/s3-ca", "readOnly": true}])
        );
        // The runtime user's certificate and key, and the trust bundle; not Kafka's key.
        assert_eq!(
            d["spec"]["template"]["spec"]["volumes"][1],
            json!({"name": "kafka-tls", "secret": {"secretName": "shop-kafka-runtime", "defaultMode": 0o440,
                   "items": [{"key": "ca.crt", "path": "ca.crt"}, {"key": "tls.crt", "path": "tls.crt"},
                             {"key": "tls.key", "path": "tls.key"}]}})
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["volumes"][2],
            json!({"name": "s3-ca", "secret": {"secretName": "shop-minio-tls", "defaultMode": 0o440,
                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
        );
    }

    #[test]
    fn external_ca_certificates_are_mounted() {
        let mut p = external_pipeline_plan();
        assert!(!config_data(&p).contains_key("DP_S3_CA_FILE"));
        let ObjectStoreMode::External(store) = &mut p.object_store.mode else {
            unreachable!("external fixture")
        };
        store.ca_secret_ref = Some(CaSecretRef {
            name: "shop-s3-ca".into(),
            key: "bundle.pem".into(),
        });
        let (volumes, mounts) = volumes(&p, PROCESS_NEEDS);
        assert_eq!(
            serde_json::to_value(&volumes).expect("json"),
            json!([
                {"name": "tmp", "emptyDir": {}},
                {"name": "kafka-ca", "secret": {"secretName": "shop-kafka-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"name": "s3-ca", "secret": {"secretName": "shop-s3-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]}}
            ])
        );
        assert_eq!(
            serde_json::to_value(&mounts).expect("json"),
            json!([
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "kafka-ca", "mountPath": "/etc/datapipeline/kafka-ca", "readOnly": true},
                {"name": "s3-ca", "mountPath": "/etc/datapipeline/s3-ca", "readOnly": true}
            ])
        );
        assert_eq!(
            config_data(&p)["DP_S3_CA_FILE"],
            "/etc/datapipeline/s3-ca/ca.crt"
        );
    }
}
