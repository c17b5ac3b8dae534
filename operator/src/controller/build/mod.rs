//! Builds every child of a pipeline as a typed Kubernetes object from a
//! `ValidatedPipeline` and the generated credentials (`desired_children`, in apply order).
//! Pure: no client, no async, no clock, no randomness. One module per kind of child; the
//! `Child` type in `child`, names and labels in `names`, shared pieces in `pieces`, what
//! both search engines share in `engine`, the setup Jobs' builder in `setup_job`.

pub mod child;
pub mod elasticsearch;
pub mod engine;
pub mod ingest;
pub mod kafka;
pub mod minio;
pub mod names;
pub mod network_policy;
pub mod opensearch;
pub mod pdb;
pub mod pieces;
pub mod runtime;
pub mod search;
pub mod secrets;
pub mod setup_job;

pub use self::child::Child;
use self::names::Role;
use super::{
    credentials::GeneratedCredentials,
    validate::{KafkaMode, ObjectStoreMode, SearchMode, ValidatedPipeline},
};
use crate::{
    crd::SearchEngine,
    error::{Error, Result},
};

/// Every child of the pipeline, in the order they must be applied: Secrets and the
/// ConfigMap before the workloads that mount them, NetworkPolicies before the pods they
/// protect, Services before StatefulSets, the services before the Jobs and Deployments
/// that use them.
pub fn desired_children(
    p: &ValidatedPipeline,
    credentials: &GeneratedCredentials,
) -> Result<Vec<Child>> {
    let mut secrets = Vec::new();
    let mut policies = Vec::new();
    let mut services = Vec::new();
    let mut statefulsets = Vec::new();
    let mut budgets = Vec::new();
    let mut setup_jobs = Vec::new();

    let policy_plan = p.network_policies.as_ref();
    let operator_pods = policy_plan.and_then(|n| n.operator.as_ref());
    let opensearch_managed = matches!(
        &p.search.mode,
        SearchMode::Managed(search) if search.engine == SearchEngine::Opensearch
    );
    let ca_role = match (&p.kafka.mode, &p.object_store.mode) {
        (KafkaMode::Managed(_), _) => Some(Role::Kafka),
        (_, ObjectStoreMode::Managed(_)) => Some(Role::ObjectStore),
        _ if opensearch_managed => Some(Role::Search),
        _ => None,
    };
    if let Some(role) = ca_role {
        let ca = credentials
            .pipeline_ca
            .as_ref()
            .ok_or_else(|| missing("the pipeline CA"))?;
        secrets.push(Child::Secret(secrets::pipeline_ca(p, ca, role)));
    }
    if let KafkaMode::Managed(kafka) = &p.kafka.mode {
        let tls = credentials
            .kafka_tls
            .as_ref()
            .ok_or_else(|| missing("Kafka's certificate"))?;
        secrets.push(Child::Secret(secrets::kafka_tls(p, tls)));
        let names = names::ChildNames::new(&p.name);
        for (name, user) in [
            (names.kafka_admin(), &credentials.kafka_admin),
            (names.kafka_runtime(), &credentials.kafka_runtime),
            (names.kafka_ingest(), &credentials.kafka_ingest),
        ] {
            let user = user
                .as_ref()
                .ok_or_else(|| missing("a Kafka client certificate"))?;
            secrets.push(Child::Secret(secrets::kafka_user(p, name, user)));
        }
        if policy_plan.is_some() {
            policies.push(Child::NetworkPolicy(network_policy::kafka(
                p,
                operator_pods,
            )));
        }
        services.push(Child::Service(kafka::headless_service(p)));
        services.push(Child::Service(kafka::client_service(p)));
        statefulsets.push(Child::StatefulSet(
            kafka::statefulset(p, kafka, &pieces::tls_checksum(tls)),
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
        let tls = credentials
            .minio_tls
            .as_ref()
            .ok_or_else(|| missing("MinIO's certificate"))?;
        secrets.push(Child::Secret(secrets::minio_credentials(p, keys)));
        secrets.push(Child::Secret(secrets::minio_tls(p, tls)));
        if policy_plan.is_some() {
            policies.push(Child::NetworkPolicy(network_policy::minio(p)));
        }
        services.push(Child::Service(minio::service(p)));
        statefulsets.push(Child::StatefulSet(
            minio::statefulset(p, store, &pieces::tls_checksum(tls)),
            Role::ObjectStore,
        ));
        setup_jobs.push(Child::Job(minio::bucket_job(p, store)?, Role::Bucket));
    }
    if let SearchMode::Managed(search) = &p.search.mode {
        let tls_checksum = match search.engine {
            SearchEngine::Opensearch => {
                let tls = credentials
                    .search_tls
                    .as_ref()
                    .ok_or_else(|| missing("OpenSearch's certificate"))?;
                let user = credentials
                    .search_runtime_user
                    .as_ref()
                    .ok_or_else(|| missing("the runtime's OpenSearch user"))?;
                secrets.push(Child::Secret(secrets::search_tls(p, tls)));
                secrets.push(Child::Secret(secrets::search_runtime_user(p, user)));
                secrets.push(Child::Secret(secrets::search_security(p, user)));
                Some(pieces::tls_checksum(tls))
            }
            SearchEngine::Elasticsearch => {
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
                None
            }
        };
        if policy_plan.is_some() {
            policies.push(Child::NetworkPolicy(network_policy::search(
                p,
                operator_pods,
            )));
        }
        services.push(Child::Service(search::headless_service(p)));
        services.push(Child::Service(search::client_service(p)));
        statefulsets.push(Child::StatefulSet(
            search::statefulset(p, search, tls_checksum.as_deref()),
            Role::Search,
        ));
        budgets.push(Child::PodDisruptionBudget(pdb::budget(
            p,
            names::ChildNames::new(&p.name).search(),
            Role::Search,
        )));
    }

    let config = runtime::config_map(p);
    // What the pods load at start besides the ConfigMap: the trust bundle (Kafka's,
    // MinIO's and OpenSearch's are the same, one pipeline CA) and the roles' Kafka client
    // certificates.
    let trust_bundle = [
        &credentials.kafka_tls,
        &credentials.minio_tls,
        &credentials.search_tls,
    ]
    .into_iter()
    .flatten()
    .map(|t| t.ca_crt.as_str())
    .next();
    // Both roles' client certificates: one checksum serves the runtime and the ingest.
    let client_certificates = [&credentials.kafka_runtime, &credentials.kafka_ingest]
        .into_iter()
        .flatten()
        .map(|t| t.tls_crt.as_str());
    let loaded: Vec<&str> = trust_bundle
        .into_iter()
        .chain(client_certificates)
        .collect();
    let checksum = runtime::config_checksum(&config, &loaded);
    budgets.push(Child::PodDisruptionBudget(pdb::budget(
        p,
        names::ChildNames::new(&p.name).runtime(),
        Role::Runtime,
    )));

    let mut children = secrets;
    children.push(Child::ConfigMap(config));
    // Before the services' pods exist, so none of them starts unprotected.
    children.extend(policies);
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
            ("Secret", "shop-ca"),
            ("Secret", "shop-kafka-tls"),
            ("Secret", "shop-kafka-admin"),
            ("Secret", "shop-kafka-runtime"),
            ("Secret", "shop-kafka-ingest"),
            ("Secret", "shop-minio-credentials"),
            ("Secret", "shop-minio-tls"),
            ("Secret", "shop-es-elastic-user"),
            ("Secret", "shop-es-transport"),
            ("ConfigMap", "shop-runtime-config"),
            ("NetworkPolicy", "shop-kafka"),
            ("NetworkPolicy", "shop-minio"),
            ("NetworkPolicy", "shop-es"),
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
                ("shop-ca", Some(Role::Kafka)),
                ("shop-kafka-tls", Some(Role::Kafka)),
                ("shop-kafka-admin", Some(Role::Kafka)),
                ("shop-kafka-runtime", Some(Role::Kafka)),
                ("shop-kafka-ingest", Some(Role::Kafka)),
                ("shop-minio-credentials", Some(Role::ObjectStore)),
                ("shop-minio-tls", Some(Role::ObjectStore)),
                ("shop-es-elastic-user", Some(Role::Search)),
                ("shop-es-transport", Some(Role::Search)),
                ("shop-runtime-config", Some(Role::Runtime)),
                ("shop-kafka", Some(Role::Kafka)),
                ("shop-minio", Some(Role::ObjectStore)),
                ("shop-es", Some(Role::Search)),
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
    fn managed_opensearch_has_its_certificate_user_and_security_configuration() {
        let plan = crate::controller::fixtures::opensearch_plan(3);
        let credentials = GeneratedCredentials {
            elastic_password: None,
            search_transport: None,
            search_tls: Some(crate::controller::credentials::TlsBundle {
                ca_crt: "pipeline-ca-pem".into(),
                tls_crt: "search-cert-pem".into(),
                tls_key: "search-key-pem".into(),
            }),
            search_runtime_user: Some(crate::controller::credentials::HashedPassword {
                password: "pw".into(),
                hash: "$2y$12$hash".into(),
            }),
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
                s("Secret", "shop-es-tls"),
                s("Secret", "shop-es-runtime-user"),
                s("Secret", "shop-es-security"),
                s("NetworkPolicy", "shop-es"),
                s("Service", "shop-es-headless"),
                s("Service", "shop-es"),
                s("StatefulSet", "shop-es"),
                s("PodDisruptionBudget", "shop-es"),
            ]
        );
        // Without its user the search cluster cannot be built.
        let missing_user = GeneratedCredentials {
            search_runtime_user: None,
            ..credentials
        };
        assert!(desired_children(&plan, &missing_user).is_err());
    }

    #[test]
    fn a_managed_opensearch_alone_has_the_pipeline_ca() {
        let mut plan = external_pipeline_plan();
        plan.search = crate::controller::fixtures::opensearch_plan(1).search;
        let credentials = GeneratedCredentials {
            pipeline_ca: fixed_credentials().pipeline_ca,
            search_tls: Some(crate::controller::credentials::TlsBundle {
                ca_crt: "pipeline-ca-pem".into(),
                tls_crt: "search-cert-pem".into(),
                tls_key: "search-key-pem".into(),
            }),
            search_runtime_user: Some(crate::controller::credentials::HashedPassword {
                password: "pw".into(),
                hash: "$2y$12$hash".into(),
            }),
            ..GeneratedCredentials::default()
        };
        let children = desired_children(&plan, &credentials).expect("built");
        let secrets: Vec<(String, String)> = summary(&children)
            .into_iter()
            .filter(|(kind, _)| kind == "Secret")
            .collect();
        let s = |kind: &str, name: &str| (kind.to_string(), name.to_string());
        assert_eq!(
            secrets,
            vec![
                s("Secret", "shop-ca"),
                s("Secret", "shop-es-tls"),
                s("Secret", "shop-es-runtime-user"),
                s("Secret", "shop-es-security"),
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
                Child::NetworkPolicy(o) => serde_json::to_value(o),
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
    fn network_policies_can_be_turned_off() {
        let mut dp = crate::controller::fixtures::managed_pipeline();
        dp.spec.network_policies.enabled = false;
        let plan =
            crate::controller::validate::validate(&dp, &crate::controller::fixtures::settings())
                .expect("valid");
        let children = desired_children(&plan, &fixed_credentials()).expect("built");
        assert!(children.iter().all(|c| c.kind() != "NetworkPolicy"));
        assert_eq!(
            children.len() + 3,
            desired_children(&managed_plan(), &fixed_credentials())
                .expect("built")
                .len()
        );
    }

    #[test]
    fn unchanged_input_gives_identical_children() {
        let a = desired_children(&managed_plan(), &fixed_credentials()).expect("built");
        let b = desired_children(&managed_plan(), &fixed_credentials()).expect("built");
        assert_eq!(a, b);
    }

    /// The pod-template annotations of Kafka's StatefulSet and of the runtime Deployment.
    fn roll_checksums(credentials: &GeneratedCredentials) -> (String, String) {
        let children = desired_children(&managed_plan(), credentials).expect("built");
        let annotation = |kind: &str, name: &str, key: &str| {
            let child = children
                .iter()
                .find(|c| c.kind() == kind && c.name() == name)
                .expect("child");
            let json = match child {
                Child::StatefulSet(sts, _) => serde_json::to_value(sts),
                Child::Deployment(deployment, _) => serde_json::to_value(deployment),
                _ => panic!("{kind} has no pod template"),
            }
            .expect("json");
            json["spec"]["template"]["metadata"]["annotations"][key]
                .as_str()
                .expect("annotation")
                .to_string()
        };
        (
            annotation("StatefulSet", "shop-kafka", "checksum/tls"),
            annotation("Deployment", "shop-runtime", "checksum/config"),
        )
    }

    #[test]
    fn a_renewed_certificate_rolls_kafka_and_a_new_trust_bundle_rolls_the_runtime_too() {
        let before = fixed_credentials();
        let (kafka, runtime) = roll_checksums(&before);

        let mut renewed = before.clone();
        if let Some(tls) = renewed.kafka_tls.as_mut() {
            tls.tls_crt = "renewed-kafka-cert-pem".into();
        }
        let (kafka_renewed, runtime_renewed) = roll_checksums(&renewed);
        assert_ne!(kafka_renewed, kafka);
        // The runtime only trusts the CA: a new leaf certificate does not concern it.
        assert_eq!(runtime_renewed, runtime);

        let mut staged = before.clone();
        if let Some(tls) = staged.kafka_tls.as_mut() {
            tls.ca_crt = "pipeline-ca-pem\nnext-ca-pem".into();
        }
        let (kafka_staged, runtime_staged) = roll_checksums(&staged);
        assert_ne!(kafka_staged, kafka);
        assert_ne!(runtime_staged, runtime);
    }
}
