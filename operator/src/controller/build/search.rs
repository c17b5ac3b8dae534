//! Search, whichever the engine. `endpoint` says how the runtime and the operator reach the
//! pipeline's search engine, managed or external (URL, engine, basic-authentication Secret,
//! CA): the one place the runtime's configuration and the operator's own count read it
//! from. A managed OpenSearch is reached over TLS (the pipeline CA) as the runtime's user;
//! a managed Elasticsearch over HTTP as `elastic`. For a managed cluster: its headless and
//! client Services, and the StatefulSet around the node (`engine::Node`) that
//! `elasticsearch::node` or `opensearch::node` describes. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec},
        core::v1::{
            Container, ContainerPort, ExecAction, PodSpec, PodTemplateSpec, Probe, Service,
            ServicePort, ServiceSpec, VolumeMount,
        },
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};

use super::{
    elasticsearch,
    engine::{BasicAuth, Node, Username},
    names::{keys, labels, selector_labels, ChildNames, Role},
    opensearch,
    pieces::{
        claim_retention, container_security, data_claim, meta, pod_security, scratch_volume,
        seeded_dir, tmp_volume, TLS_CHECKSUM_ANNOTATION,
    },
};
use crate::{
    controller::validate::{ManagedSearchPlan, SearchMode, ValidatedPipeline},
    crd::{CaSecretRef, SearchEngine},
};

pub const HTTP_PORT: i32 = 9200;
pub const TRANSPORT_PORT: i32 = 9300;

/// URL of a managed cluster's HTTP API inside the Kubernetes cluster (OpenSearch serves
/// TLS only, with a certificate naming this host).
pub fn url(p: &ValidatedPipeline, engine: SearchEngine) -> String {
    let scheme = match engine {
        SearchEngine::Elasticsearch => "http",
        SearchEngine::Opensearch => "https",
    };
    format!(
        "{scheme}://{}.{}.svc:{HTTP_PORT}",
        ChildNames::new(&p.name).search(),
        p.namespace
    )
}

/// How to reach the pipeline's search engine.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchEndpoint {
    pub url: String,
    pub engine: SearchEngine,
    /// `None`: no authentication.
    pub auth: Option<BasicAuth>,
    /// CA certificate of an `https://` URL signed by a private CA.
    pub ca: Option<CaSecretRef>,
}

pub fn endpoint(p: &ValidatedPipeline) -> SearchEndpoint {
    match &p.search.mode {
        SearchMode::Managed(search) => {
            let names = ChildNames::new(&p.name);
            let (auth, ca) = match search.engine {
                SearchEngine::Elasticsearch => (Some(elasticsearch::basic_auth(p)), None),
                SearchEngine::Opensearch => (
                    Some(BasicAuth {
                        secret: names.search_runtime_user(),
                        username: Username::SecretKey(keys::USERNAME.into()),
                        password_key: keys::PASSWORD.into(),
                    }),
                    Some(CaSecretRef {
                        name: names.search_tls(),
                        key: keys::CA_CRT.into(),
                    }),
                ),
            };
            SearchEndpoint {
                url: url(p, search.engine),
                engine: search.engine,
                auth,
                ca,
            }
        }
        SearchMode::External(s) => SearchEndpoint {
            url: s.url.clone(),
            engine: s.engine,
            auth: s.secret_ref.as_ref().map(|r| BasicAuth {
                secret: r.name.clone(),
                username: Username::SecretKey(r.username_key.clone()),
                password_key: r.password_key.clone(),
            }),
            ca: s.ca_secret_ref.clone(),
        },
    }
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

fn node(p: &ValidatedPipeline, search: &ManagedSearchPlan) -> Node {
    match search.engine {
        SearchEngine::Elasticsearch => elasticsearch::node(p, search),
        SearchEngine::Opensearch => opensearch::node(p, search),
    }
}

/// `tls_checksum`: `pieces::tls_checksum` of the node certificate the pipeline CA issued
/// (a managed OpenSearch), so that a renewal rolls the nodes.
pub fn statefulset(
    p: &ValidatedPipeline,
    search: &ManagedSearchPlan,
    tls_checksum: Option<&str>,
) -> StatefulSet {
    let names = ChildNames::new(&p.name);
    let node = node(p, search);
    let (tmp, tmp_mount) = tmp_volume();
    let config = seeded_dir(
        "config",
        &search.image,
        &format!("{}/config", node.home),
        search.resources.clone(),
    );
    let (logs, logs_mount) = scratch_volume("logs", &format!("{}/logs", node.home));
    let mut mounts = vec![
        VolumeMount {
            name: "data".into(),
            mount_path: node.data_dir.into(),
            ..VolumeMount::default()
        },
        config.mount,
        logs_mount,
    ];
    mounts.extend(node.mounts);
    mounts.push(tmp_mount);
    let mut volumes = vec![config.volume, logs];
    volumes.extend(node.volumes);
    volumes.push(tmp);
    let container = Container {
        name: node.container.into(),
        image: Some(search.image.clone()),
        env: Some(node.env),
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
                command: Some(vec![
                    "bash".into(),
                    "-c".into(),
                    node.readiness_script.into(),
                ]),
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
        // Read-only root. Writable: config/ (a copy of the image's: Elasticsearch's
        // entrypoint adds the bootstrap password to config/elasticsearch.keystore, and the
        // node may create its keystore there), logs/ (jvm.options' GC log and error
        // files), data/ (the volume; heap dumps) and /tmp (the launchers' mktemp -d temp
        // directory, the JVM's files).
        security_context: Some(container_security(true)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    StatefulSet {
        metadata: meta(p, names.search(), Role::Search),
        spec: Some(StatefulSetSpec {
            service_name: Some(names.search_headless()),
            replicas: Some(search.replicas),
            // Cluster formation waits for the initial voting nodes: start them together.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&p.name, Role::Search)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&p.name, Role::Search)),
                    annotations: tls_checksum.map(|sum| {
                        BTreeMap::from([(TLS_CHECKSUM_ANNOTATION.to_string(), sum.to_string())])
                    }),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: Some(vec![config.init_container]),
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(pod_security(node.uid, Some(node.uid))),
                    enable_service_links: Some(false),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(120),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![data_claim(&search.storage)]),
            persistent_volume_claim_retention_policy: Some(claim_retention(&search.storage)),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{external_pipeline_plan, managed_plan, opensearch_plan};
    use serde_json::json;

    #[test]
    fn endpoints_of_each_kind_of_search() {
        assert_eq!(
            endpoint(&managed_plan()),
            SearchEndpoint {
                url: "http://shop-es.shops.svc:9200".into(),
                engine: SearchEngine::Elasticsearch,
                auth: Some(BasicAuth {
                    secret: "shop-es-elastic-user".into(),
                    username: Username::Fixed("elastic".into()),
                    password_key: "elastic".into(),
                }),
                ca: None,
            }
        );
        assert_eq!(
            endpoint(&opensearch_plan(1)),
            SearchEndpoint {
                url: "https://shop-es.shops.svc:9200".into(),
                engine: SearchEngine::Opensearch,
                auth: Some(BasicAuth {
                    secret: "shop-es-runtime-user".into(),
                    username: Username::SecretKey("username".into()),
                    password_key: "password".into(),
                }),
                ca: Some(CaSecretRef {
                    name: "shop-es-tls".into(),
                    key: "ca.crt".into(),
                }),
            }
        );
        assert_eq!(
            endpoint(&external_pipeline_plan()),
            SearchEndpoint {
                url: "https://opensearch.search.svc:9200".into(),
                engine: SearchEngine::Opensearch,
                auth: Some(BasicAuth {
                    secret: "shop-search-user".into(),
                    username: Username::SecretKey("username".into()),
                    password_key: "password".into(),
                }),
                ca: None,
            }
        );
    }

    #[test]
    fn services() {
        let p = managed_plan();
        let headless = serde_json::to_value(headless_service(&p)).expect("json");
        assert_eq!(headless["metadata"]["name"], "shop-es-headless");
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
