//! Managed search: an Elasticsearch StatefulSet (single-node discovery for one node, seed
//! hosts and initial master nodes for three or more), security on with the generated
//! `elastic` password, transport TLS from the generated certificates, and its Services.
//! Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec},
        core::v1::{
            Container, ContainerPort, ExecAction, PodSpec, PodTemplateSpec, Probe,
            SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};

use super::{
    container_security, data_claim, env, env_from_field, env_from_secret, meta,
    names::{labels, selector_labels, ChildNames, Role},
    pod_security, tmp_volume,
};
use crate::{
    controller::{dereference::keys, validate::ValidatedPipeline},
    crd::ManagedSearch,
};

pub const HTTP_PORT: i32 = 9200;
pub const TRANSPORT_PORT: i32 = 9300;
/// uid of `elasticsearch` in the official image.
const ES_UID: i64 = 1000;
const TRANSPORT_DIR: &str = "/usr/share/elasticsearch/config/transport";
/// The built-in superuser whose password the operator generates.
pub const USERNAME: &str = "elastic";

/// URL of the HTTP API inside the cluster.
pub fn url(p: &ValidatedPipeline) -> String {
    format!(
        "http://{}.{}.svc:{HTTP_PORT}",
        ChildNames::new(&p.name).search(),
        p.namespace
    )
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        ..ServicePort::default()
    }
}

/// Stable node names and discovery (seed hosts resolve to every pod, ready or not).
pub fn headless_service(p: &ValidatedPipeline) -> Service {
    Service {
        metadata: meta(p, ChildNames::new(&p.name).search_headless(), Role::Search),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&p.name, Role::Search)),
            ports: Some(vec![
                port("http", HTTP_PORT),
                port("transport", TRANSPORT_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub fn client_service(p: &ValidatedPipeline) -> Service {
    Service {
        metadata: meta(p, ChildNames::new(&p.name).search(), Role::Search),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&p.name, Role::Search)),
            ports: Some(vec![port("http", HTTP_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Settings passed as environment variables (the image maps dotted names to settings).
pub fn settings(p: &ValidatedPipeline, search: &ManagedSearch) -> Vec<(String, String)> {
    let names = ChildNames::new(&p.name);
    let mut settings = vec![
        ("cluster.name".to_string(), p.name.clone()),
        ("node.name".to_string(), "$(POD_NAME)".to_string()),
        ("network.host".to_string(), "0.0.0.0".to_string()),
        // No mmap: works on nodes whose vm.max_map_count was never raised (kind, most laptops).
        ("node.store.allow_mmap".to_string(), "false".to_string()),
        ("xpack.security.enabled".to_string(), "true".to_string()),
        (
            "xpack.security.http.ssl.enabled".to_string(),
            "false".to_string(),
        ),
        (
            "xpack.security.transport.ssl.enabled".to_string(),
            "true".to_string(),
        ),
        // One certificate for every node: verify the CA, not the host name.
        (
            "xpack.security.transport.ssl.verification_mode".to_string(),
            "certificate".to_string(),
        ),
        (
            "xpack.security.transport.ssl.key".to_string(),
            format!("{TRANSPORT_DIR}/{}", keys::TLS_KEY),
        ),
        (
            "xpack.security.transport.ssl.certificate".to_string(),
            format!("{TRANSPORT_DIR}/{}", keys::TLS_CRT),
        ),
        (
            "xpack.security.transport.ssl.certificate_authorities".to_string(),
            format!("{TRANSPORT_DIR}/{}", keys::CA_CRT),
        ),
    ];
    if search.replicas == 1 {
        settings.push(("discovery.type".to_string(), "single-node".to_string()));
    } else {
        settings.push(("discovery.seed_hosts".to_string(), names.search_headless()));
        let masters = (0..search.replicas)
            .map(|i| format!("{}-{i}", names.search()))
            .collect::<Vec<_>>()
            .join(",");
        settings.push(("cluster.initial_master_nodes".to_string(), masters));
    }
    settings
}

/// Ready when the node answers an authenticated health request with a known master.
pub const READINESS_SCRIPT: &str = r#"curl -fsS -o /dev/null -u "elastic:${ELASTIC_PASSWORD}" "http://127.0.0.1:9200/_cluster/health?local=true&timeout=1s""#;

pub fn statefulset(p: &ValidatedPipeline, search: &ManagedSearch) -> StatefulSet {
    let names = ChildNames::new(&p.name);
    let (tmp, tmp_mount) = tmp_volume();
    let mut env_vars = vec![
        env_from_field("POD_NAME", "metadata.name"),
        env_from_secret("ELASTIC_PASSWORD", &names.elastic_user(), keys::ELASTIC),
    ];
    env_vars.extend(settings(p, search).into_iter().map(|(k, v)| env(&k, v)));
    let container = Container {
        name: "elasticsearch".into(),
        image: Some(search.image.clone()),
        env: Some(env_vars),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("transport".into()),
                container_port: TRANSPORT_PORT,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["bash".into(), "-c".into(), READINESS_SCRIPT.into()]),
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        // No liveness probe: restarting a node in a long GC pause makes things worse
        // (the same choice as Elastic's own operator).
        resources: search.resources.clone(),
        // The image writes its keystore (bootstrap password) under config/ at start.
        security_context: Some(container_security(false)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/usr/share/elasticsearch/data".into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "transport-tls".into(),
                mount_path: TRANSPORT_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            tmp_mount,
        ]),
        ..Container::default()
    };
    StatefulSet {
        metadata: meta(p, names.search(), Role::Search),
        spec: Some(StatefulSetSpec {
            service_name: Some(names.search_headless()),
            replicas: Some(search.replicas),
            // Cluster formation waits for the initial masters: start them together.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&p.name, Role::Search)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&p.name, Role::Search)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "transport-tls".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(names.search_transport_tls()),
                                default_mode: Some(0o440),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        tmp,
                    ]),
                    security_context: Some(pod_security(ES_UID, Some(ES_UID))),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(120),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![data_claim(&search.storage)]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// Environment of the runtime for a managed Elasticsearch (the password comes from the
/// Secret).
pub fn runtime_config(p: &ValidatedPipeline) -> BTreeMap<String, String> {
    use pipeline_config::env as e;
    BTreeMap::from([
        (e::SEARCH_URL.to_string(), url(p)),
        (e::SEARCH_USERNAME.to_string(), USERNAME.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::managed_plan;
    use crate::controller::validate::SearchMode;
    use serde_json::json;

    fn plan(replicas: i32) -> (ValidatedPipeline, ManagedSearch) {
        let mut p = managed_plan();
        let SearchMode::Managed(search) = &mut p.search.mode else {
            unreachable!("managed fixture")
        };
        search.replicas = replicas;
        let search = search.clone();
        (p, search)
    }

    fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn one_node_uses_single_node_discovery() {
        let (p, search) = plan(1);
        let s = settings(&p, &search);
        assert_eq!(setting(&s, "discovery.type"), Some("single-node"));
        assert_eq!(setting(&s, "discovery.seed_hosts"), None);
        assert_eq!(setting(&s, "cluster.initial_master_nodes"), None);
        assert_eq!(setting(&s, "xpack.security.enabled"), Some("true"));
        assert_eq!(setting(&s, "cluster.name"), Some("shop"));
    }

    #[test]
    fn three_nodes_form_a_cluster() {
        let (p, search) = plan(3);
        let s = settings(&p, &search);
        assert_eq!(setting(&s, "discovery.type"), None);
        assert_eq!(
            setting(&s, "discovery.seed_hosts"),
            Some("shop-es-headless")
        );
        assert_eq!(
            setting(&s, "cluster.initial_master_nodes"),
            Some("shop-es-0,shop-es-1,shop-es-2")
        );
        assert_eq!(
            setting(&s, "xpack.security.transport.ssl.certificate_authorities"),
            Some("/usr/share/elasticsearch/config/transport/ca.crt")
        );
        let sts = serde_json::to_value(statefulset(&p, &search)).expect("json");
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["serviceName"], "shop-es-headless");
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    }

    #[test]
    fn password_comes_from_the_generated_secret() {
        let (p, search) = plan(1);
        let sts = serde_json::to_value(statefulset(&p, &search)).expect("json");
        let container = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["env"][0],
            json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        );
        assert_eq!(
            container["env"][1],
            json!({"name": "ELASTIC_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "shop-es-elastic-user", "key": "elastic", "optional": false}}})
        );
        assert_eq!(
            container["env"][3],
            json!({"name": "node.name", "value": "$(POD_NAME)"})
        );
        assert_eq!(
            container["readinessProbe"]["exec"]["command"],
            json!(["bash", "-c", READINESS_SCRIPT])
        );
        assert!(container.get("livenessProbe").is_none());
        assert_eq!(
            sts["spec"]["template"]["spec"]["volumes"][0],
            json!({"name": "transport-tls", "secret": {"secretName": "shop-es-transport", "defaultMode": 288}})
        );
        assert_eq!(
            runtime_config(&p),
            BTreeMap::from([
                (
                    "DP_SEARCH_URL".to_string(),
                    "http://shop-es.shops.svc:9200".to_string()
                ),
                ("DP_SEARCH_USERNAME".to_string(), "elastic".to_string()),
            ])
        );
    }

    #[test]
    fn services() {
        let (p, _) = plan(3);
        let headless = serde_json::to_value(headless_service(&p)).expect("json");
        assert_eq!(headless["spec"]["clusterIP"], "None");
        assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
        assert_eq!(
            headless["spec"]["ports"],
            json!([{"name": "http", "port": 9200}, {"name": "transport", "port": 9300}])
        );
        let client = serde_json::to_value(client_service(&p)).expect("json");
        assert_eq!(client["metadata"]["name"], "shop-es");
        assert_eq!(
            client["spec"]["ports"],
            json!([{"name": "http", "port": 9200}])
        );
    }
}
