//! Builds every child of a pipeline as a typed Kubernetes object from a
//! `ValidatedPipeline` and the generated credentials. Pure: no client, no async, no clock,
//! no randomness; one module per kind of child, shared pieces here.

pub mod elasticsearch;
pub mod ingest;
pub mod kafka;
pub mod minio;
pub mod names;
pub mod opensearch;
pub mod pdb;
pub mod runtime;
pub mod search;
pub mod secrets;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy},
        batch::v1::Job,
        core::v1::{
            Capabilities, ConfigMap, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
            ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
            PodSecurityContext, Probe, SeccompProfile, Secret, SecretKeySelector, SecurityContext,
            Service, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
        },
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::ObjectMeta, util::intstr::IntOrString,
    },
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use self::names::{labels, Role};
use super::{
    credentials::GeneratedCredentials,
    validate::{KafkaMode, ObjectStoreMode, SearchMode, ValidatedPipeline},
};
use crate::{
    crd::{SearchEngine, StorageSpec},
    error::{Error, Result},
};

/// One desired child, tagged with the role whose readiness it carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    Secret(Secret),
    ConfigMap(ConfigMap),
    Service(Service),
    StatefulSet(StatefulSet, Role),
    PodDisruptionBudget(PodDisruptionBudget),
    Job(Job, Role),
    Deployment(Deployment, Role),
}

impl Child {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Secret(_) => "Secret",
            Self::ConfigMap(_) => "ConfigMap",
            Self::Service(_) => "Service",
            Self::StatefulSet(..) => "StatefulSet",
            Self::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Self::Job(..) => "Job",
            Self::Deployment(..) => "Deployment",
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Secret(o) => &o.metadata,
            Self::ConfigMap(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::StatefulSet(o, _) => &o.metadata,
            Self::PodDisruptionBudget(o) => &o.metadata,
            Self::Job(o, _) => &o.metadata,
            Self::Deployment(o, _) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// The role the child serves: tagged on workloads, read from the component label of
    /// the others.
    pub fn role(&self) -> Option<Role> {
        match self {
            Self::StatefulSet(_, role) | Self::Job(_, role) | Self::Deployment(_, role) => {
                Some(*role)
            }
            _ => self
                .meta()
                .labels
                .as_ref()?
                .get(names::LABEL_COMPONENT)
                .and_then(|label| Role::from_component(label)),
        }
    }
}

/// Every child of the pipeline, in the order they must be applied: Secrets and the
/// ConfigMap before the workloads that mount them, Services before StatefulSets, the
/// services before the Jobs and Deployments that use them.
pub fn desired_children(
    p: &ValidatedPipeline,
    credentials: &GeneratedCredentials,
) -> Result<Vec<Child>> {
    let mut secrets = Vec::new();
    let mut services = Vec::new();
    let mut statefulsets = Vec::new();
    let mut budgets = Vec::new();
    let mut setup_jobs = Vec::new();

    if let KafkaMode::Managed(kafka) = &p.kafka.mode {
        services.push(Child::Service(kafka::headless_service(p)));
        services.push(Child::Service(kafka::client_service(p)));
        statefulsets.push(Child::StatefulSet(
            kafka::statefulset(p, kafka),
            Role::Kafka,
        ));
        budgets.push(Child::PodDisruptionBudget(pdb::budget(
            p,
            names::ChildNames::new(&p.name).kafka(),
            Role::Kafka,
        )));
        setup_jobs.push(Child::Job(kafka::topics_job(p, kafka)?, Role::KafkaTopics));
    }
    if let ObjectStoreMode::Managed(store) = &p.object_store.mode {
        let keys = credentials
            .minio
            .as_ref()
            .ok_or_else(|| missing("MinIO credentials"))?;
        secrets.push(Child::Secret(secrets::minio_credentials(p, keys)));
        services.push(Child::Service(minio::service(p)));
        statefulsets.push(Child::StatefulSet(
            minio::statefulset(p, store),
            Role::ObjectStore,
        ));
        setup_jobs.push(Child::Job(minio::bucket_job(p, store)?, Role::Bucket));
    }
    if let SearchMode::Managed(search) = &p.search.mode {
        if search.engine == SearchEngine::Elasticsearch {
            let password = credentials
                .elastic_password
                .as_ref()
                .ok_or_else(|| missing("the elastic password"))?;
            let tls = credentials
                .search_transport
                .as_ref()
                .ok_or_else(|| missing("Elasticsearch transport TLS"))?;
            secrets.push(Child::Secret(secrets::elastic_user(p, password)));
            secrets.push(Child::Secret(secrets::search_transport_tls(p, tls)));
        }
        services.push(Child::Service(search::headless_service(p)));
        services.push(Child::Service(search::client_service(p)));
        statefulsets.push(Child::StatefulSet(
            search::statefulset(p, search),
            Role::Search,
        ));
        budgets.push(Child::PodDisruptionBudget(pdb::budget(
            p,
            names::ChildNames::new(&p.name).search(),
            Role::Search,
        )));
    }

    let config = runtime::config_map(p);
    let checksum = runtime::config_checksum(&config);
    budgets.push(Child::PodDisruptionBudget(pdb::budget(
        p,
        names::ChildNames::new(&p.name).runtime(),
        Role::Runtime,
    )));

    let mut children = secrets;
    children.push(Child::ConfigMap(config));
    children.extend(services);
    children.extend(statefulsets);
    children.extend(budgets);
    children.extend(setup_jobs);
    children.push(Child::Deployment(
        runtime::deployment(p, &checksum),
        Role::Runtime,
    ));
    children.push(ingest::ingest(p, &checksum)?);
    Ok(children)
}

fn missing(what: &str) -> Error {
    Error::Build {
        what: what.to_string(),
        reason: "not generated before building".to_string(),
    }
}

// ------------------------------------------------------------------ shared pieces

/// Metadata of a child: namespaced, labelled and owned (controller=true) by the pipeline.
pub fn meta(p: &ValidatedPipeline, name: impl Into<String>, role: Role) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(p.namespace.clone()),
        labels: Some(labels(&p.name, role)),
        owner_references: Some(vec![p.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Pod-level security: non-root user, the runtime's default seccomp profile.
pub fn pod_security(uid: i64, fs_group: Option<i64>) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group,
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// Container security: no privilege escalation, every capability dropped, and a read-only
/// root filesystem when the image allows it.
pub fn container_security(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            add: None,
            drop: Some(vec!["ALL".into()]),
        }),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

pub fn env_from_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field_path.into(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// A writable `/tmp` for containers with a read-only root filesystem.
pub fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    )
}

/// The `data` volume claim template of a StatefulSet.
pub fn data_claim(storage: &StorageSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// What happens to a StatefulSet's volumes: deleted with the StatefulSet (so with the
/// pipeline, whose child it is) unless `retainOnDelete`; never deleted by a scale-down.
pub fn claim_retention(storage: &StorageSpec) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(
            if storage.retain_on_delete {
                "Retain"
            } else {
                "Delete"
            }
            .into(),
        ),
        when_scaled: Some("Retain".into()),
    }
}

pub fn tcp_probe(port: i32, initial_delay: i32, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port),
            host: None,
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

pub fn http_probe(path: &str, port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Bytes of a memory quantity (`1Gi`, `1536Mi`, `2G`, `1e9`, `1073741824`); `None` if it
/// is not one.
pub fn memory_bytes(quantity: &Quantity) -> Option<f64> {
    let text = quantity.0.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let binary = |power: i32| 1024f64.powi(power);
    let factor = match suffix {
        "" => 1.0,
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E'])?;
            10f64.powi(digits.parse().ok()?)
        }
    };
    Some(number * factor).filter(|bytes| bytes.is_finite() && *bytes >= 0.0)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// First 8 hex characters of the sha256 of a value's JSON: names Jobs after their spec,
/// so a changed spec gets a new Job instead of an (impossible) update of a running one.
pub fn short_hash(value: &impl Serialize) -> Result<String> {
    let json = serde_json::to_vec(value).map_err(|e| Error::Build {
        what: "a Job spec hash".into(),
        reason: e.to_string(),
    })?;
    Ok(sha256_hex(&json)[..8].to_string())
}

/// `replicas` as a Kafka/Elasticsearch replication setting: never more than the nodes.
pub fn at_most(value: i32, limit: i32) -> i32 {
    value.min(limit).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{external_pipeline_plan, fixed_credentials, managed_plan};

    fn summary(children: &[Child]) -> Vec<(String, String)> {
        children
            .iter()
            .map(|c| (c.kind().to_string(), c.name().to_string()))
            .collect()
    }

    #[test]
    fn managed_pipeline_children_in_apply_order() {
        let children = desired_children(&managed_plan(), &fixed_credentials()).expect("built");
        let summary = summary(&children);
        let kinds_and_names: Vec<(&str, &str)> = summary
            .iter()
            .map(|(k, n)| (k.as_str(), n.as_str()))
            .collect();
        // Job names end with a hash of their spec: compare their prefixes.
        let expected = [
            ("Secret", "shop-minio-credentials"),
            ("Secret", "shop-es-elastic-user"),
            ("Secret", "shop-es-transport"),
            ("ConfigMap", "shop-runtime-config"),
            ("Service", "shop-kafka-headless"),
            ("Service", "shop-kafka"),
            ("Service", "shop-minio"),
            ("Service", "shop-es-headless"),
            ("Service", "shop-es"),
            ("StatefulSet", "shop-kafka"),
            ("StatefulSet", "shop-minio"),
            ("StatefulSet", "shop-es"),
            ("PodDisruptionBudget", "shop-kafka"),
            ("PodDisruptionBudget", "shop-es"),
            ("PodDisruptionBudget", "shop-runtime"),
            ("Job", "shop-kafka-topics-"),
            ("Job", "shop-minio-bucket-"),
            ("Deployment", "shop-runtime"),
            ("Job", "shop-generate-"),
        ];
        assert_eq!(kinds_and_names.len(), expected.len(), "{kinds_and_names:?}");
        for ((kind, name), (want_kind, want_name)) in kinds_and_names.iter().zip(expected) {
            assert_eq!(*kind, want_kind);
            if want_name.ends_with('-') {
                assert!(
                    name.starts_with(want_name),
                    "{name} should start with {want_name}"
                );
                assert_eq!(name.len(), want_name.len() + 8, "{name}");
            } else {
                assert_eq!(*name, want_name);
            }
        }
    }

    #[test]
    fn every_child_has_a_role() {
        let children = desired_children(&managed_plan(), &fixed_credentials()).expect("built");
        let roles: Vec<(&str, Option<Role>)> =
            children.iter().map(|c| (c.name(), c.role())).collect();
        let jobs: Vec<&str> = children
            .iter()
            .filter(|c| c.kind() == "Job")
            .map(Child::name)
            .collect();
        assert_eq!(
            roles,
            vec![
                ("shop-minio-credentials", Some(Role::ObjectStore)),
                ("shop-es-elastic-user", Some(Role::Search)),
                ("shop-es-transport", Some(Role::Search)),
                ("shop-runtime-config", Some(Role::Runtime)),
                ("shop-kafka-headless", Some(Role::Kafka)),
                ("shop-kafka", Some(Role::Kafka)),
                ("shop-minio", Some(Role::ObjectStore)),
                ("shop-es-headless", Some(Role::Search)),
                ("shop-es", Some(Role::Search)),
                ("shop-kafka", Some(Role::Kafka)),
                ("shop-minio", Some(Role::ObjectStore)),
                ("shop-es", Some(Role::Search)),
                ("shop-kafka", Some(Role::Kafka)),
                ("shop-es", Some(Role::Search)),
                ("shop-runtime", Some(Role::Runtime)),
                (jobs[0], Some(Role::KafkaTopics)),
                (jobs[1], Some(Role::Bucket)),
                ("shop-runtime", Some(Role::Runtime)),
                (jobs[2], Some(Role::Ingest)),
            ]
        );
    }

    #[test]
    fn managed_opensearch_has_no_search_secrets() {
        let plan = crate::controller::fixtures::opensearch_plan(3);
        let credentials = GeneratedCredentials {
            elastic_password: None,
            search_transport: None,
            ..fixed_credentials()
        };
        let children = desired_children(&plan, &credentials).expect("built");
        let search: Vec<(String, String)> = summary(&children)
            .into_iter()
            .filter(|(_, name)| name.starts_with("shop-es"))
            .collect();
        let s = |kind: &str, name: &str| (kind.to_string(), name.to_string());
        assert_eq!(
            search,
            vec![
                s("Service", "shop-es-headless"),
                s("Service", "shop-es"),
                s("StatefulSet", "shop-es"),
                s("PodDisruptionBudget", "shop-es"),
            ]
        );
    }

    #[test]
    fn external_pipeline_deploys_only_the_runtime() {
        let children =
            desired_children(&external_pipeline_plan(), &GeneratedCredentials::default())
                .expect("built");
        assert_eq!(
            summary(&children),
            vec![
                ("ConfigMap".to_string(), "shop-runtime-config".to_string()),
                (
                    "PodDisruptionBudget".to_string(),
                    "shop-runtime".to_string()
                ),
                ("Deployment".to_string(), "shop-runtime".to_string()),
                ("Deployment".to_string(), "shop-ingest".to_string()),
            ]
        );
    }

    #[test]
    fn every_child_is_labelled_and_owned() {
        let children = desired_children(&managed_plan(), &fixed_credentials()).expect("built");
        for child in &children {
            let json = match child {
                Child::Secret(o) => serde_json::to_value(o),
                Child::ConfigMap(o) => serde_json::to_value(o),
                Child::Service(o) => serde_json::to_value(o),
                Child::StatefulSet(o, _) => serde_json::to_value(o),
                Child::PodDisruptionBudget(o) => serde_json::to_value(o),
                Child::Job(o, _) => serde_json::to_value(o),
                Child::Deployment(o, _) => serde_json::to_value(o),
            }
            .expect("serialises");
            let meta = &json["metadata"];
            assert_eq!(meta["namespace"], "shops", "{}", child.name());
            assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "shop");
            assert_eq!(
                meta["labels"]["app.kubernetes.io/managed-by"],
                "datapipeline-operator"
            );
            assert_eq!(meta["labels"]["app.kubernetes.io/part-of"], "datapipeline");
            assert!(meta["labels"]["app.kubernetes.io/name"].is_string());
            assert!(meta["labels"]["app.kubernetes.io/component"].is_string());
            assert_eq!(
                meta["ownerReferences"],
                serde_json::json!([{
                    "apiVersion": "datapipeline.io/v1alpha1",
                    "kind": "DataPipeline",
                    "name": "shop",
                    "uid": "0b9f5f2e-2c1a-4d5e-9a35-1f4b3c2d1e0f",
                    "controller": true
                }]),
                "{}",
                child.name()
            );
            // No credential ever appears as a literal outside a Secret.
            if !matches!(child, Child::Secret(_)) {
                let text = json.to_string();
                for secret in ["minio-secret-key", "elastic-password", "node-key-pem"] {
                    assert!(!text.contains(secret), "{} leaks {secret}", child.name());
                }
            }
        }
    }

    /// `(name, persistentVolumeClaimRetentionPolicy)` of every StatefulSet of a plan.
    fn claim_retentions(p: &ValidatedPipeline) -> Vec<(String, serde_json::Value)> {
        desired_children(p, &fixed_credentials())
            .expect("built")
            .into_iter()
            .filter_map(|c| match c {
                Child::StatefulSet(sts, _) => Some((
                    sts.metadata.name.clone().unwrap_or_default(),
                    serde_json::to_value(&sts).expect("json")["spec"]
                        ["persistentVolumeClaimRetentionPolicy"]
                        .clone(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn volumes_go_with_the_pipeline_unless_kept() {
        let deleted = serde_json::json!({"whenDeleted": "Delete", "whenScaled": "Retain"});
        let retained = serde_json::json!({"whenDeleted": "Retain", "whenScaled": "Retain"});
        let s = |name: &str, policy: &serde_json::Value| (name.to_string(), policy.clone());
        let mut p = managed_plan();
        assert_eq!(
            claim_retentions(&p),
            vec![
                s("shop-kafka", &deleted),
                s("shop-minio", &deleted),
                s("shop-es", &deleted)
            ]
        );
        if let KafkaMode::Managed(kafka) = &mut p.kafka.mode {
            kafka.storage.retain_on_delete = true;
        }
        if let SearchMode::Managed(search) = &mut p.search.mode {
            search.storage.retain_on_delete = true;
        }
        assert_eq!(
            claim_retentions(&p),
            vec![
                s("shop-kafka", &retained),
                s("shop-minio", &deleted),
                s("shop-es", &retained)
            ]
        );
        if let ObjectStoreMode::Managed(store) = &mut p.object_store.mode {
            store.storage.retain_on_delete = true;
        }
        assert_eq!(claim_retentions(&p)[1], s("shop-minio", &retained));
    }

    #[test]
    fn unchanged_input_gives_identical_children() {
        let a = desired_children(&managed_plan(), &fixed_credentials()).expect("built");
        let b = desired_children(&managed_plan(), &fixed_credentials()).expect("built");
        assert_eq!(a, b);
    }

    #[test]
    fn memory_quantities_in_bytes() {
        let bytes = |q: &str| memory_bytes(&Quantity(q.into()));
        assert_eq!(bytes("1Gi"), Some(1_073_741_824.0));
        assert_eq!(bytes("1536Mi"), Some(1_610_612_736.0));
        assert_eq!(bytes("512Ki"), Some(524_288.0));
        assert_eq!(bytes("2G"), Some(2e9));
        assert_eq!(bytes("500M"), Some(5e8));
        assert_eq!(bytes("1e9"), Some(1e9));
        assert_eq!(bytes("1.5Gi"), Some(1_610_612_736.0));
        assert_eq!(bytes("1073741824"), Some(1_073_741_824.0));
        assert_eq!(bytes("1Gb"), None);
        assert_eq!(bytes("Gi"), None);
        assert_eq!(bytes("-1Gi"), None);
    }

    #[test]
    fn short_hash_is_stable() {
        assert_eq!(
            short_hash(&serde_json::json!({"a": 1})).expect("hash"),
            "015abd7f"
        );
    }
}
