//! Managed Kafka: a KRaft StatefulSet on the official `apache/kafka` image (every node both
//! broker and controller, node id = pod ordinal), its headless and client Services, and the
//! Job that grants the runtime roles' ACLs and creates the events and dead-letter topics. Both
//! listeners speak TLS with the certificate the pipeline CA issued (`pipeline_ca`); every
//! client verifies it against the trust bundle and shows its own certificate of that CA,
//! whose subject is its principal (nodes and the admin user are superusers, the ingest and
//! process roles' users have ACLs); a new certificate or bundle rolls the nodes. Pure.

use std::collections::BTreeMap;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec},
        batch::v1::Job,
        core::v1::{
            Container, ContainerPort, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
            VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use sha2::{Digest, Sha256};

use super::{
    names::{keys, labels, selector_labels, ChildNames, Role},
    pieces::{
        at_most, claim_retention, container_security, data_claim, env, env_from_field, meta,
        pod_security, secret_files, seeded_dir, tcp_probe, tmp_volume, TLS_CHECKSUM_ANNOTATION,
    },
    setup_job::{setup_job, SetupJob},
};
use crate::{controller::validate::ValidatedPipeline, crd::ManagedKafka, error::Result};

pub const CLIENT_PORT: i32 = 9092;
pub const CONTROLLER_PORT: i32 = 9093;
/// uid/gid of `appuser` in the apache/kafka image.
const KAFKA_UID: i64 = 1000;
const DATA_DIR: &str = "/var/lib/kafka/data";
/// Where the image's start script writes `server.properties` (and copies its log4j
/// configuration) before starting the node.
const CONFIG_DIR: &str = "/opt/kafka/config";
/// The node's keystore and trust bundle (from the `<pipeline>-kafka-tls` Secret).
const TLS_DIR: &str = "/etc/kafka/tls";
/// Client listener: brokers among themselves and every client.
const CLIENT_LISTENER: &str = "CLIENT";
/// A runtime role's Kafka user: the certificate and key (Secret `user`) and the trust
/// bundle, for that role's pods.
pub fn user_volume(user: &str, dir: &str) -> (k8s_openapi::api::core::v1::Volume, VolumeMount) {
    secret_files(
        "kafka-tls",
        user,
        &[keys::CA_CRT, keys::TLS_CRT, keys::TLS_KEY],
        dir,
    )
}

/// The principal of the client certificate made for `user` (a Secret name): its subject.
pub fn principal(user: &str) -> String {
    format!("User:CN={user}")
}

/// Kafka's superusers: the nodes (brokers and controllers among themselves) and the admin
/// user of the topic Job and the operator. Everyone else needs an ACL.
pub fn super_users(p: &ValidatedPipeline) -> String {
    let names = ChildNames::new(&p.name);
    format!(
        "{};{}",
        principal(&names.kafka()),
        principal(&names.kafka_admin())
    )
}

/// `host:port` of the client Service, as the runtime and the topic Job use it.
pub fn bootstrap(p: &ValidatedPipeline) -> String {
    format!(
        "{}.{}.svc:{CLIENT_PORT}",
        ChildNames::new(&p.name).kafka(),
        p.namespace
    )
}

/// Replication factor of the topics: 3 where there are enough nodes.
pub fn replication_factor(kafka: &ManagedKafka) -> i32 {
    at_most(3, kafka.replicas)
}

/// KRaft cluster id: 16 bytes derived from the pipeline's uid, so it is stable across
/// reconciles and operator restarts without being stored anywhere.
pub fn cluster_id(uid: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(uid.as_bytes())[..16])
}

/// `id@host:port,...` of every controller, for a static KRaft quorum.
pub fn quorum_voters(p: &ValidatedPipeline, replicas: i32) -> String {
    let names = ChildNames::new(&p.name);
    (0..replicas)
        .map(|i| {
            format!(
                "{i}@{}-{i}.{}.{}.svc:{CONTROLLER_PORT}",
                names.kafka(),
                names.kafka_headless(),
                p.namespace
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn ports() -> Vec<ServicePort> {
    vec![
        ServicePort {
            name: Some("kafka".into()),
            port: CLIENT_PORT,
            ..ServicePort::default()
        },
        ServicePort {
            name: Some("controller".into()),
            port: CONTROLLER_PORT,
            ..ServicePort::default()
        },
    ]
}

/// Gives each node a stable DNS name; lists not-ready pods so the quorum can form.
pub fn headless_service(p: &ValidatedPipeline) -> Service {
    Service {
        metadata: meta(p, ChildNames::new(&p.name).kafka_headless(), Role::Kafka),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&p.name, Role::Kafka)),
            ports: Some(ports()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The bootstrap address of clients.
pub fn client_service(p: &ValidatedPipeline) -> Service {
    Service {
        metadata: meta(p, ChildNames::new(&p.name).kafka(), Role::Kafka),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&p.name, Role::Kafka)),
            ports: Some(vec![ServicePort {
                name: Some("kafka".into()),
                port: CLIENT_PORT,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// `tls_checksum` is `tls_checksum` of the Secret's bundle.
pub fn statefulset(p: &ValidatedPipeline, kafka: &ManagedKafka, tls_checksum: &str) -> StatefulSet {
    let names = ChildNames::new(&p.name);
    let (tls, tls_mount) = secret_files(
        "tls",
        &names.kafka_tls(),
        &[keys::KEYSTORE_PEM, keys::CA_CRT],
        TLS_DIR,
    );
    let rf = replication_factor(kafka);
    let min_isr = at_most(2, rf).to_string();
    let (tmp, tmp_mount) = tmp_volume();
    let config = seeded_dir("config", &kafka.image, CONFIG_DIR, kafka.resources.clone());
    let container = Container {
        name: "kafka".into(),
        image: Some(kafka.image.clone()),
        ports: Some(vec![
            ContainerPort {
                name: Some("kafka".into()),
                container_port: CLIENT_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("controller".into()),
                container_port: CONTROLLER_PORT,
                ..ContainerPort::default()
            },
        ]),
        env: Some(vec![
            env_from_field("POD_NAME", "metadata.name"),
            env_from_field("POD_NAMESPACE", "metadata.namespace"),
            // The StatefulSet controller labels each pod with its ordinal.
            env_from_field(
                "KAFKA_NODE_ID",
                "metadata.labels['apps.kubernetes.io/pod-index']",
            ),
            env("CLUSTER_ID", cluster_id(&p.uid)),
            env("KAFKA_PROCESS_ROLES", "broker,controller"),
            // Listener names other than `SSL`: the image's start script would otherwise
            // demand a JKS keystore with password files.
            env(
                "KAFKA_LISTENERS",
                format!("{CLIENT_LISTENER}://:{CLIENT_PORT},CONTROLLER://:{CONTROLLER_PORT}"),
            ),
            env(
                "KAFKA_ADVERTISED_LISTENERS",
                format!(
                    "{CLIENT_LISTENER}://$(POD_NAME).{}.$(POD_NAMESPACE).svc:{CLIENT_PORT}",
                    names.kafka_headless()
                ),
            ),
            env(
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                format!("CONTROLLER:SSL,{CLIENT_LISTENER}:SSL"),
            ),
            env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER"),
            env("KAFKA_INTER_BROKER_LISTENER_NAME", CLIENT_LISTENER),
            // Every client, node or user, shows a certificate of the pipeline CA; its
            // subject is its principal, and only ACLs (or being a superuser) let it act.
            env("KAFKA_SSL_CLIENT_AUTH", "required"),
            env(
                "KAFKA_AUTHORIZER_CLASS_NAME",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            ),
            env("KAFKA_SUPER_USERS", super_users(p)),
            // PEM files, unencrypted key (the Secret is the protection); host names are
            // verified (the default) on every node-to-node connection.
            env("KAFKA_SSL_KEYSTORE_TYPE", "PEM"),
            env(
                "KAFKA_SSL_KEYSTORE_LOCATION",
                format!("{TLS_DIR}/{}", keys::KEYSTORE_PEM),
            ),
            env("KAFKA_SSL_TRUSTSTORE_TYPE", "PEM"),
            env(
                "KAFKA_SSL_TRUSTSTORE_LOCATION",
                format!("{TLS_DIR}/{}", keys::CA_CRT),
            ),
            env(
                "KAFKA_CONTROLLER_QUORUM_VOTERS",
                quorum_voters(p, kafka.replicas),
            ),
            // A subdirectory: the volume's root may hold lost+found.
            env("KAFKA_LOG_DIRS", format!("{DATA_DIR}/logs")),
            env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false"),
            env("KAFKA_DEFAULT_REPLICATION_FACTOR", rf.to_string()),
            env("KAFKA_MIN_INSYNC_REPLICAS", min_isr.clone()),
            env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", rf.to_string()),
            env(
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                rf.to_string(),
            ),
            env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", min_isr),
            // Heap from the container's memory limit instead of the scripts' fixed 1 GiB.
            env(
                "KAFKA_HEAP_OPTS",
                "-XX:MaxRAMPercentage=50.0 -XX:InitialRAMPercentage=50.0",
            ),
            env("LOG_DIR", "/tmp/kafka-logs"),
        ]),
        readiness_probe: Some(tcp_probe(CLIENT_PORT, 10, 10, 6)),
        liveness_probe: Some(tcp_probe(CONTROLLER_PORT, 60, 20, 6)),
        resources: kafka.resources.clone(),
        // Read-only root. The image's start script (apache/kafka's /etc/kafka/docker/run
        // and configure; e2e/images/kafka/docker/run) writes only /opt/kafka/config (a
        // writable copy of the image's directory); the node writes the data volume, and
        // LOG_DIR, the GC log and the JVM's files go to /tmp.
        security_context: Some(container_security(true)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            config.mount,
            tmp_mount,
            tls_mount,
        ]),
        ..Container::default()
    };
    StatefulSet {
        metadata: meta(p, names.kafka(), Role::Kafka),
        spec: Some(StatefulSetSpec {
            service_name: Some(names.kafka_headless()),
            replicas: Some(kafka.replicas),
            // Every voter must run before any can become ready: start them together.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&p.name, Role::Kafka)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&p.name, Role::Kafka)),
                    annotations: Some(BTreeMap::from([(
                        TLS_CHECKSUM_ANNOTATION.to_string(),
                        tls_checksum.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: Some(vec![config.init_container]),
                    containers: vec![container],
                    volumes: Some(vec![config.volume, tmp, tls]),
                    security_context: Some(pod_security(KAFKA_UID, Some(KAFKA_UID))),
                    // Service links would inject KAFKA_PORT etc., which the image reads as config.
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(60),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![data_claim(&kafka.storage)]),
            persistent_volume_claim_retention_policy: Some(claim_retention(&kafka.storage)),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// As the admin user (a superuser): grants the runtime roles' users their ACLs, then
/// creates the events and dead-letter topics once the brokers answer, and sets their
/// retention. The ingest user (ingest Deployment, generator) reads, writes and may create
/// both topics and owns the ingest's transactional id; the process user (the runtime
/// Deployment) reads the events topic, writes the dead-letter topic and reads with the
/// consumer group: it cannot add events, and the ingest cannot move the group's offsets. The
/// ACLs come first, so a runtime that sees the topics may use them. Idempotent: safe to
/// rerun (an existing ACL is added again as a no-op). A topic that already exists with another
/// partition count (volumes kept from an earlier pipeline of the same name) is never
/// altered: ingest routes users by their key modulo the count and each profile lives with
/// its partition, so the Job fails and its log says why. The probe is bounded by `timeout`:
/// started before the brokers resolve, the tool can wait far longer than the loop's pace.
pub const TOPICS_SCRIPT: &str = r#"set -eu
bin=${KAFKA_BIN:-/opt/kafka/bin}
client=/tmp/client.properties
printf 'security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location=%s\nssl.keystore.type=PEM\nssl.keystore.location=%s\n' \
  "$TRUST_BUNDLE" "$KEYSTORE" >"$client"
until timeout 60 "$bin/kafka-broker-api-versions.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$client" >/dev/null 2>&1; do
  echo "waiting for Kafka at $BOOTSTRAP"
  sleep 5
done
allow() {
  "$bin/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$client" --add \
    --allow-principal "$@" >/dev/null
}
for topic in "$EVENTS_TOPIC" "$DLQ_TOPIC"; do
  allow "$INGEST_PRINCIPAL" --operation Read --operation Write --operation Describe --operation Create --topic "$topic"
done
allow "$INGEST_PRINCIPAL" --operation Write --operation Describe --transactional-id "$TRANSACTIONAL_ID"
echo "ACLs of $INGEST_PRINCIPAL ready"
allow "$PROCESS_PRINCIPAL" --operation Read --operation Describe --topic "$EVENTS_TOPIC"
allow "$PROCESS_PRINCIPAL" --operation Write --operation Describe --topic "$DLQ_TOPIC"
allow "$PROCESS_PRINCIPAL" --operation Read --group "$CONSUMER_GROUP"
echo "ACLs of $PROCESS_PRINCIPAL ready"
for topic in "$EVENTS_TOPIC" "$DLQ_TOPIC"; do
  "$bin/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$client" --create --if-not-exists \
    --topic "$topic" --partitions "$PARTITIONS" --replication-factor "$REPLICATION_FACTOR" \
    --config "retention.ms=$RETENTION_MS"
  current=$("$bin/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$client" --describe --topic "$topic" \
    | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n 1)
  if [ "$current" != "$PARTITIONS" ]; then
    echo "topic $topic has $current partitions, spec.kafka.partitions is $PARTITIONS: the partition count of a topic with events is never changed (profiles are kept per partition); delete the pipeline's Kafka volumes or use a new pipeline name" >&2
    exit 1
  fi
  "$bin/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$client" --alter --entity-type topics \
    --entity-name "$topic" --add-config "retention.ms=$RETENTION_MS"
  echo "topic $topic ready"
done
"#;

pub fn topics_job(p: &ValidatedPipeline, kafka: &ManagedKafka) -> Result<Job> {
    let retention_ms = p.kafka.retention_hours * 3_600_000;
    setup_job(
        p,
        SetupJob {
            role: Role::KafkaTopics,
            container: "create-topics",
            image: kafka.image.clone(),
            shell: "/bin/bash",
            script: TOPICS_SCRIPT,
            env: vec![
                env("BOOTSTRAP", bootstrap(p)),
                env("EVENTS_TOPIC", p.names.events_topic()),
                env("DLQ_TOPIC", p.names.dead_letter_topic()),
                env("PARTITIONS", p.kafka.partitions.to_string()),
                env("REPLICATION_FACTOR", replication_factor(kafka).to_string()),
                env("RETENTION_MS", retention_ms.to_string()),
                // kafka-run-class.sh creates its log directory even for tools.
                env("LOG_DIR", "/tmp/kafka-logs"),
                env("TRUST_BUNDLE", format!("{TLS_DIR}/{}", keys::CA_CRT)),
                env("KEYSTORE", format!("{TLS_DIR}/{}", keys::KEYSTORE_PEM)),
                env(
                    "INGEST_PRINCIPAL",
                    principal(&ChildNames::new(&p.name).kafka_ingest()),
                ),
                env(
                    "PROCESS_PRINCIPAL",
                    principal(&ChildNames::new(&p.name).kafka_runtime()),
                ),
                env("CONSUMER_GROUP", p.names.consumer_group()),
                env(
                    "TRANSACTIONAL_ID",
                    pipeline_config::ingest_transactional_id(&p.names.events_topic()),
                ),
            ],
            volumes: vec![secret_files(
                "kafka-admin",
                &ChildNames::new(&p.name).kafka_admin(),
                &[keys::CA_CRT, keys::KEYSTORE_PEM],
                TLS_DIR,
            )],
            uid: KAFKA_UID,
            name: ChildNames::kafka_topics_job,
        },
    )
}

/// Environment of the runtime for a managed Kafka: TLS, verified against the trust bundle,
/// as the runtime's user with its client certificate, all three mounted in `tls_dir`.
pub fn runtime_config(
    p: &ValidatedPipeline,
    kafka: &ManagedKafka,
    tls_dir: &str,
) -> BTreeMap<String, String> {
    use pipeline_config::env as e;
    BTreeMap::from([
        (e::KAFKA_BOOTSTRAP.to_string(), bootstrap(p)),
        (e::KAFKA_SECURITY_PROTOCOL.to_string(), "SSL".to_string()),
        (
            e::KAFKA_CA_FILE.to_string(),
            format!("{tls_dir}/{}", keys::CA_CRT),
        ),
        (
            e::KAFKA_CERT_FILE.to_string(),
            format!("{tls_dir}/{}", keys::TLS_CRT),
        ),
        (
            e::KAFKA_KEY_FILE.to_string(),
            format!("{tls_dir}/{}", keys::TLS_KEY),
        ),
        (
            e::TOPIC_REPLICATION.to_string(),
            replication_factor(kafka).to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::managed_plan;
    use crate::controller::validate::KafkaMode;
    use serde_json::json;

    fn managed(replicas: i32) -> (ValidatedPipeline, ManagedKafka) {
        let mut p = managed_plan();
        let KafkaMode::Managed(kafka) = &mut p.kafka.mode else {
            unreachable!("managed fixture")
        };
        kafka.replicas = replicas;
        let kafka = kafka.clone();
        (p, kafka)
    }

    fn env_of(value: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
        value["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| {
                let name = e["name"].as_str().expect("name").to_string();
                let v = e
                    .get("value")
                    .cloned()
                    .unwrap_or_else(|| e["valueFrom"].clone());
                (name, v)
            })
            .collect()
    }

    #[test]
    fn cluster_id_is_stable_and_kafka_shaped() {
        assert_eq!(
            cluster_id("0b9f5f2e-2c1a-4d5e-9a35-1f4b3c2d1e0f"),
            "l_Iz0X0PehyV88Eed_J98A"
        );
        assert_eq!(cluster_id("x").len(), 22);
    }

    #[test]
    fn three_node_statefulset() {
        let (p, kafka) = managed(3);
        let sts = serde_json::to_value(statefulset(&p, &kafka, "tls-sum")).expect("json");
        assert_eq!(sts["metadata"]["name"], "shop-kafka");
        assert_eq!(sts["spec"]["serviceName"], "shop-kafka-headless");
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        assert_eq!(
            sts["spec"]["selector"]["matchLabels"],
            json!({
                "app.kubernetes.io/component": "kafka",
                "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/name": "kafka"
            })
        );
        let env = env_of(&sts);
        assert_eq!(
            env["KAFKA_NODE_ID"],
            json!({"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}})
        );
        assert_eq!(env["CLUSTER_ID"], "l_Iz0X0PehyV88Eed_J98A");
        assert_eq!(
            env["KAFKA_CONTROLLER_QUORUM_VOTERS"],
            "0@shop-kafka-0.shop-kafka-headless.shops.svc:9093,1@shop-kafka-1.shop-kafka-headless.shops.svc:9093,2@shop-kafka-2.shop-kafka-headless.shops.svc:9093"
        );
        assert_eq!(
            env["KAFKA_ADVERTISED_LISTENERS"],
            "CLIENT://$(POD_NAME).shop-kafka-headless.$(POD_NAMESPACE).svc:9092"
        );
        // TLS on both listeners, from PEM files of the pipeline's Kafka TLS Secret.
        assert_eq!(env["KAFKA_LISTENERS"], "CLIENT://:9092,CONTROLLER://:9093");
        assert_eq!(
            env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"],
            "CONTROLLER:SSL,CLIENT:SSL"
        );
        assert_eq!(env["KAFKA_INTER_BROKER_LISTENER_NAME"], "CLIENT");
        assert_eq!(env["KAFKA_SSL_KEYSTORE_TYPE"], "PEM");
        assert_eq!(
            env["KAFKA_SSL_KEYSTORE_LOCATION"],
            "/etc/kafka/tls/keystore.pem"
        );
        assert_eq!(env["KAFKA_SSL_TRUSTSTORE_TYPE"], "PEM");
        assert_eq!(
            env["KAFKA_SSL_TRUSTSTORE_LOCATION"],
            "/etc/kafka/tls/ca.crt"
        );
        assert!(!sts.to_string().contains("PLAINTEXT"));
        assert!(!env.contains_key("KAFKA_SSL_KEY_PASSWORD"));
        assert_eq!(
            sts["spec"]["template"]["metadata"]["annotations"],
            json!({"checksum/tls": "tls-sum"})
        );
        assert_eq!(env["KAFKA_PROCESS_ROLES"], "broker,controller");
        assert_eq!(env["KAFKA_DEFAULT_REPLICATION_FACTOR"], "3");
        assert_eq!(env["KAFKA_MIN_INSYNC_REPLICAS"], "2");
        assert_eq!(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"], "3");
        assert_eq!(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"], "false");
        // POD_NAME must precede the variables that expand it.
        let order: Vec<&str> = sts["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
            .iter()
            .map(|e| e["name"].as_str().expect("name"))
            .collect();
        assert_eq!(&order[..2], &["POD_NAME", "POD_NAMESPACE"]);
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["enableServiceLinks"], false);
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(
            pod["securityContext"],
            json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                   "seccompProfile": {"type": "RuntimeDefault"}})
        );
        let read_only = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                               "readOnlyRootFilesystem": true, "runAsNonRoot": true});
        assert_eq!(pod["containers"][0]["securityContext"], read_only);
        // Writable: the data volume, a copy of the config directory, /tmp; the keystore
        // and trust bundle are read-only, readable by the group only.
        assert_eq!(
            pod["containers"][0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/var/lib/kafka/data"},
                   {"name": "config", "mountPath": "/opt/kafka/config"},
                   {"name": "tmp", "mountPath": "/tmp"},
                   {"name": "tls", "mountPath": "/etc/kafka/tls", "readOnly": true}])
        );
        assert_eq!(
            pod["volumes"],
            json!([{"name": "config", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                   {"name": "tls", "secret": {"secretName": "shop-kafka-tls", "defaultMode": 0o440,
                    "items": [{"key": "keystore.pem", "path": "keystore.pem"},
                              {"key": "ca.crt", "path": "ca.crt"}]}}])
        );
        assert_eq!(
            pod["initContainers"],
            json!([{
                "name": "seed-config",
                "image": "apache/kafka:4.1.0",
                "command": ["cp", "-R", "/opt/kafka/config/.", "/seed/"],
                "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
                "securityContext": read_only,
                "volumeMounts": [{"name": "config", "mountPath": "/seed"}]
            }])
        );
        assert_eq!(
            pod["containers"][0]["resources"],
            json!({"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}})
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"],
            json!([{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}}])
        );
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Delete", "whenScaled": "Retain"})
        );
    }

    #[test]
    fn single_node_replicates_once() {
        let (p, kafka) = managed(1);
        let env = env_of(&serde_json::to_value(statefulset(&p, &kafka, "tls-sum")).expect("json"));
        assert_eq!(env["KAFKA_DEFAULT_REPLICATION_FACTOR"], "1");
        assert_eq!(env["KAFKA_MIN_INSYNC_REPLICAS"], "1");
        assert_eq!(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"], "1");
        assert_eq!(
            env["KAFKA_CONTROLLER_QUORUM_VOTERS"],
            "0@shop-kafka-0.shop-kafka-headless.shops.svc:9093"
        );
        // Clients authenticate with certificates of the pipeline CA; ACLs decide the rest.
        assert_eq!(env["KAFKA_SSL_CLIENT_AUTH"], "required");
        assert_eq!(
            env["KAFKA_AUTHORIZER_CLASS_NAME"],
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        );
        assert_eq!(
            env["KAFKA_SUPER_USERS"],
            "User:CN=shop-kafka;User:CN=shop-kafka-admin"
        );
    }

    #[test]
    fn services() {
        let (p, _) = managed(3);
        let headless = serde_json::to_value(headless_service(&p)).expect("json");
        assert_eq!(headless["metadata"]["name"], "shop-kafka-headless");
        assert_eq!(headless["spec"]["clusterIP"], "None");
        assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
        assert_eq!(
            headless["spec"]["ports"],
            json!([{"name": "kafka", "port": 9092}, {"name": "controller", "port": 9093}])
        );
        let client = serde_json::to_value(client_service(&p)).expect("json");
        assert_eq!(client["metadata"]["name"], "shop-kafka");
        assert_eq!(
            client["spec"]["ports"],
            json!([{"name": "kafka", "port": 9092}])
        );
        assert_eq!(
            client["spec"]["selector"]["app.kubernetes.io/component"],
            "kafka"
        );
        assert_eq!(bootstrap(&p), "shop-kafka.shops.svc:9092");
    }

    #[test]
    fn topics_job_creates_both_topics_with_spec_partitions() {
        let (mut p, kafka) = managed(3);
        p.kafka.partitions = 12;
        p.kafka.retention_hours = 24;
        let job = topics_job(&p, &kafka).expect("job");
        let json = serde_json::to_value(&job).expect("json");
        let name = json["metadata"]["name"].as_str().expect("name");
        assert!(name.starts_with("shop-kafka-topics-"), "{name}");
        let env = env_of(&json);
        assert_eq!(env["BOOTSTRAP"], "shop-kafka.shops.svc:9092");
        assert_eq!(env["EVENTS_TOPIC"], "shop-events");
        assert_eq!(env["DLQ_TOPIC"], "shop-events-dlq");
        assert_eq!(env["PARTITIONS"], "12");
        assert_eq!(env["REPLICATION_FACTOR"], "3");
        assert_eq!(env["RETENTION_MS"], "86400000");
        // The tools verify the brokers against the trust bundle and act as the admin user
        // (the nodes' own key is not mounted); they grant the runtime's user its ACLs.
        assert_eq!(env["TRUST_BUNDLE"], "/etc/kafka/tls/ca.crt");
        assert_eq!(env["KEYSTORE"], "/etc/kafka/tls/keystore.pem");
        assert_eq!(env["INGEST_PRINCIPAL"], "User:CN=shop-kafka-ingest");
        assert_eq!(env["PROCESS_PRINCIPAL"], "User:CN=shop-kafka-runtime");
        assert_eq!(env["CONSUMER_GROUP"], "shop-profiles");
        assert_eq!(
            env["TRANSACTIONAL_ID"],
            "pipeline-runtime-ingest.shop-events"
        );
        let pod = &json["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"][1],
            json!({"name": "kafka-admin", "secret": {"secretName": "shop-kafka-admin", "defaultMode": 0o440,
                   "items": [{"key": "ca.crt", "path": "ca.crt"}, {"key": "keystore.pem", "path": "keystore.pem"}]}})
        );
        assert_eq!(pod["volumes"].as_array().map(Vec::len), Some(2));
        // The Secret's files are group-readable: the pod's group must own them.
        assert_eq!(pod["securityContext"]["fsGroup"], 1000);
        assert_eq!(pod["restartPolicy"], "OnFailure");
        assert_eq!(
            pod["containers"][0]["command"],
            json!(["/bin/bash", "-c", TOPICS_SCRIPT])
        );
        assert_eq!(
            pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
        assert_eq!(pod["containers"][0]["image"], "apache/kafka:4.1.0");
        assert_eq!(
            json["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"],
            "kafka-topics"
        );

        // A changed spec gets a new Job (a Job's template cannot be updated).
        let mut grown = p.clone();
        grown.kafka.partitions = 24;
        let other = topics_job(&grown, &kafka).expect("job");
        assert_ne!(other.metadata.name, job.metadata.name);
        assert_eq!(
            topics_job(&p, &kafka).expect("job").metadata.name,
            job.metadata.name
        );
    }
}
