//! NetworkPolicies around the managed services: each of Kafka, the object store (MinIO)
//! and the search engine admits ingress only from this pipeline's own pods that use it
//! (runtime, ingest, the setup Jobs), from its own peers where nodes talk to each other
//! (Kafka's controller and replication listeners, the search cluster's transport), and
//! from the operator where it reads (Kafka offsets, the search `_count`). Egress is not
//! restricted. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
        NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement},
        util::intstr::IntOrString,
    },
};

use super::{
    kafka, minio,
    names::{
        selector_labels, ChildNames, Role, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY,
        MANAGER,
    },
    pieces::meta,
    search,
};
use crate::controller::validate::{OperatorPods, ValidatedPipeline};

/// The label every namespace carries with its own name (Kubernetes 1.21+).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The pipeline's pods of these roles (created by the operator for this pipeline).
fn pipeline_pods(p: &ValidatedPipeline, roles: &[Role]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([
                (LABEL_INSTANCE.to_string(), p.name.clone()),
                (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
            ])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: LABEL_COMPONENT.to_string(),
                operator: "In".to_string(),
                values: Some(roles.iter().map(|r| r.component().to_string()).collect()),
            }]),
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The pods of the service itself (its other nodes).
fn peers(p: &ValidatedPipeline, role: Role) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(&p.name, role)),
            match_expressions: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The operator's pods, in its own namespace.
fn operator(pods: &OperatorPods) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                pods.namespace.clone(),
            )])),
            match_expressions: None,
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(pods.labels.clone()),
            match_expressions: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn tcp(ports: &[i32]) -> Option<Vec<NetworkPolicyPort>> {
    Some(
        ports
            .iter()
            .map(|port| NetworkPolicyPort {
                port: Some(IntOrString::Int(*port)),
                protocol: Some("TCP".into()),
                end_port: None,
            })
            .collect(),
    )
}

fn rule(from: Vec<NetworkPolicyPeer>, ports: &[i32]) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(from),
        ports: tcp(ports),
    }
}

fn policy(
    p: &ValidatedPipeline,
    name: String,
    role: Role,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(p, name, role),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&p.name, role)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Clients (and the operator, when known) on `client_ports`; the service's own nodes on
/// `peer_ports`.
fn service_policy(
    p: &ValidatedPipeline,
    name: String,
    role: Role,
    clients: &[Role],
    client_ports: &[i32],
    operator_pods: Option<&OperatorPods>,
    peer_ports: &[i32],
) -> NetworkPolicy {
    let mut ingress = vec![rule(vec![pipeline_pods(p, clients)], client_ports)];
    if let Some(pods) = operator_pods {
        ingress.push(rule(vec![operator(pods)], client_ports));
    }
    if !peer_ports.is_empty() {
        ingress.push(rule(vec![peers(p, role)], peer_ports));
    }
    policy(p, name, role, ingress)
}

/// Kafka: the runtime, ingest (and generator Job) and topic Job on the client port, the
/// operator on the client port (offsets), the other nodes on both listeners (replication
/// uses the client listener, the KRaft quorum the controller listener).
pub fn kafka(p: &ValidatedPipeline, operator_pods: Option<&OperatorPods>) -> NetworkPolicy {
    service_policy(
        p,
        ChildNames::new(&p.name).kafka(),
        Role::Kafka,
        &[Role::Runtime, Role::Ingest, Role::KafkaTopics],
        &[kafka::CLIENT_PORT],
        operator_pods,
        &[kafka::CLIENT_PORT, kafka::CONTROLLER_PORT],
    )
}

/// MinIO: the runtime, ingest (and generator Job) and bucket Job on the S3 port; a single
/// node, no peers; the operator does not read the object store. The console port admits
/// nobody from the network.
pub fn minio(p: &ValidatedPipeline) -> NetworkPolicy {
    service_policy(
        p,
        ChildNames::new(&p.name).minio(),
        Role::ObjectStore,
        &[Role::Runtime, Role::Ingest, Role::Bucket],
        &[minio::API_PORT],
        None,
        &[],
    )
}

/// The search engine: the runtime (it indexes profiles) and the operator (`_count`) on the
/// HTTP port, the other nodes on the transport port.
pub fn search(p: &ValidatedPipeline, operator_pods: Option<&OperatorPods>) -> NetworkPolicy {
    service_policy(
        p,
        ChildNames::new(&p.name).search(),
        Role::Search,
        &[Role::Runtime],
        &[search::HTTP_PORT],
        operator_pods,
        &[search::TRANSPORT_PORT],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::managed_plan;
    use serde_json::{json, Value};

    fn operator_pods() -> OperatorPods {
        managed_plan()
            .network_policies
            .and_then(|n| n.operator)
            .expect("the fixture knows the operator's pods")
    }

    fn pipeline_pods_json(components: &[&str]) -> Value {
        json!({"podSelector": {
            "matchLabels": {
                "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/managed-by": "datapipeline-operator"
            },
            "matchExpressions": [{
                "key": "app.kubernetes.io/component",
                "operator": "In",
                "values": components
            }]
        }})
    }

    fn operator_json() -> Value {
        json!({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "datapipeline-system"}},
            "podSelector": {"matchLabels": {
                "app.kubernetes.io/instance": "datapipeline",
                "app.kubernetes.io/name": "datapipeline-operator"
            }}
        })
    }

    fn ports(ports: &[i32]) -> Value {
        Value::Array(
            ports
                .iter()
                .map(|p| json!({"port": p, "protocol": "TCP"}))
                .collect(),
        )
    }

    #[test]
    fn kafka_admits_its_clients_the_operator_and_its_nodes() {
        let pods = operator_pods();
        let np = serde_json::to_value(kafka(&managed_plan(), Some(&pods))).expect("json");
        assert_eq!(np["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(np["kind"], "NetworkPolicy");
        assert_eq!(np["metadata"]["name"], "shop-kafka");
        assert_eq!(np["metadata"]["namespace"], "shops");
        assert_eq!(
            np["metadata"]["labels"]["app.kubernetes.io/component"],
            "kafka"
        );
        assert_eq!(
            np["spec"],
            json!({
                "podSelector": {"matchLabels": {
                    "app.kubernetes.io/component": "kafka",
                    "app.kubernetes.io/instance": "shop",
                    "app.kubernetes.io/name": "kafka"
                }},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [pipeline_pods_json(&["runtime", "ingest", "kafka-topics"])],
                     "ports": ports(&[9092])},
                    {"from": [operator_json()], "ports": ports(&[9092])},
                    {"from": [{"podSelector": {"matchLabels": {
                        "app.kubernetes.io/component": "kafka",
                        "app.kubernetes.io/instance": "shop",
                        "app.kubernetes.io/name": "kafka"
                     }}}],
                     "ports": ports(&[9092, 9093])}
                ]
            })
        );
    }

    #[test]
    fn minio_admits_only_its_clients_on_the_s3_port() {
        let np = serde_json::to_value(minio(&managed_plan())).expect("json");
        assert_eq!(np["metadata"]["name"], "shop-minio");
        assert_eq!(
            np["spec"],
            json!({
                "podSelector": {"matchLabels": {
                    "app.kubernetes.io/component": "object-store",
                    "app.kubernetes.io/instance": "shop",
                    "app.kubernetes.io/name": "minio"
                }},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [pipeline_pods_json(&["runtime", "ingest", "bucket"])],
                     "ports": ports(&[9000])}
                ]
            })
        );
    }

    #[test]
    fn search_admits_the_runtime_the_operator_and_its_nodes_on_transport() {
        let pods = operator_pods();
        let np = serde_json::to_value(search(&managed_plan(), Some(&pods))).expect("json");
        assert_eq!(np["metadata"]["name"], "shop-es");
        assert_eq!(
            np["spec"],
            json!({
                "podSelector": {"matchLabels": {
                    "app.kubernetes.io/component": "search",
                    "app.kubernetes.io/instance": "shop",
                    "app.kubernetes.io/name": "elasticsearch"
                }},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [pipeline_pods_json(&["runtime"])], "ports": ports(&[9200])},
                    {"from": [operator_json()], "ports": ports(&[9200])},
                    {"from": [{"podSelector": {"matchLabels": {
                        "app.kubernetes.io/component": "search",
                        "app.kubernetes.io/instance": "shop",
                        "app.kubernetes.io/name": "elasticsearch"
                     }}}],
                     "ports": ports(&[9300])}
                ]
            })
        );
    }

    #[test]
    fn an_operator_of_unknown_whereabouts_is_not_named() {
        let np = serde_json::to_value(kafka(&managed_plan(), None)).expect("json");
        let ingress = np["spec"]["ingress"].as_array().expect("rules");
        assert_eq!(ingress.len(), 2);
        assert!(!np.to_string().contains("namespaceSelector"));
    }
}
