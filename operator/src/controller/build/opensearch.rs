//! The OpenSearch node of a managed search cluster, following the official
//! `opensearchproject/opensearch` image: dotted settings as environment variables (its
//! entrypoint passes them on as `-E` options), data under `/usr/share/opensearch/data`,
//! uid 1000, the heap in `OPENSEARCH_JAVA_OPTS`. The security plugin is switched off
//! (`DISABLE_SECURITY_PLUGIN`, and no demo configuration): plain HTTP without
//! authentication, so nothing here needs a Secret. `search` builds the StatefulSet and
//! Services around it. Pure.

use k8s_openapi::api::core::v1::ResourceRequirements;

use super::{
    engine::{common_settings, Node, Settings},
    pieces::{env, env_from_field, memory_bytes},
};
use crate::controller::validate::{ManagedSearchPlan, ValidatedPipeline};

/// uid of `opensearch` in the official image.
const OPENSEARCH_UID: i64 = 1000;
const HOME: &str = "/usr/share/opensearch";
const DATA_DIR: &str = "/usr/share/opensearch/data";
/// The image's own heap (its `jvm.options`) when the spec gives no memory.
const DEFAULT_JAVA_OPTS: &str = "-Xms1g -Xmx1g";
const MIB: f64 = 1024.0 * 1024.0;

/// Settings passed as environment variables (the entrypoint maps dotted names to `-E`).
pub fn settings(p: &ValidatedPipeline, search: &ManagedSearchPlan) -> Settings {
    let (mut settings, discovery) =
        common_settings(p, search, "cluster.initial_cluster_manager_nodes");
    settings.extend(discovery);
    settings
}

/// Heap of half the memory limit (else of the request): `-Xms` = `-Xmx`, in MiB. The
/// image's `jvm.options` fixes `-Xmx1g`, which a percentage of the container's memory
/// would not override; options given here come later and win.
pub fn java_opts(resources: Option<&ResourceRequirements>) -> String {
    let memory = |list: Option<&std::collections::BTreeMap<String, _>>| {
        list.and_then(|l| l.get("memory")).and_then(memory_bytes)
    };
    let bytes = resources.and_then(|r| memory(r.limits.as_ref()).or(memory(r.requests.as_ref())));
    match bytes {
        Some(bytes) if bytes >= 2.0 * MIB => {
            // Whole MiB, far below u64::MAX for any real memory size.
            let heap_mib = (bytes / 2.0 / MIB).floor() as u64;
            format!("-Xms{heap_mib}m -Xmx{heap_mib}m")
        }
        _ => DEFAULT_JAVA_OPTS.to_string(),
    }
}

/// Ready when the node answers a health request with a known cluster manager; no
/// credentials, since the security plugin is off.
pub const READINESS_SCRIPT: &str =
    r#"curl -fsS -o /dev/null "http://127.0.0.1:9200/_cluster/health?local=true&timeout=1s""#;

pub fn node(p: &ValidatedPipeline, search: &ManagedSearchPlan) -> Node {
    let mut env_vars = vec![env_from_field("POD_NAME", "metadata.name")];
    env_vars.extend(settings(p, search).into_iter().map(|(k, v)| env(&k, v)));
    env_vars.extend([
        env("DISABLE_SECURITY_PLUGIN", "true"),
        env("DISABLE_INSTALL_DEMO_CONFIG", "true"),
        // The performance-analyzer agent is a second JVM in the container: not started.
        env("DISABLE_PERFORMANCE_ANALYZER_AGENT_CLI", "true"),
        env("OPENSEARCH_JAVA_OPTS", java_opts(search.resources.as_ref())),
    ]);
    Node {
        container: "opensearch",
        uid: OPENSEARCH_UID,
        home: HOME,
        data_dir: DATA_DIR,
        env: env_vars,
        readiness_script: READINESS_SCRIPT,
        volumes: vec![],
        mounts: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::search::statefulset;
    use crate::controller::fixtures::{opensearch_plan, search_plan};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn memory(limit: Option<&str>, request: Option<&str>) -> ResourceRequirements {
        let list = |q: Option<&str>| {
            q.map(|q| BTreeMap::from([("memory".to_string(), Quantity(q.to_string()))]))
        };
        ResourceRequirements {
            limits: list(limit),
            requests: list(request),
            ..ResourceRequirements::default()
        }
    }

    #[test]
    fn the_statefulset_of_a_single_node() {
        let p = opensearch_plan(1);
        let sts = serde_json::to_value(statefulset(&p, search_plan(&p))).expect("json");
        assert_eq!(sts["metadata"]["name"], "shop-es");
        assert_eq!(sts["spec"]["replicas"], 1);
        assert_eq!(sts["spec"]["serviceName"], "shop-es-headless");
        let pod = &sts["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["name"], "opensearch");
        assert_eq!(container["image"], "opensearchproject/opensearch:2.19.1");
        assert_eq!(
            container["env"],
            json!([
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "cluster.name", "value": "shop"},
                {"name": "node.name", "value": "$(POD_NAME)"},
                {"name": "network.host", "value": "0.0.0.0"},
                {"name": "node.store.allow_mmap", "value": "false"},
                {"name": "discovery.type", "value": "single-node"},
                {"name": "DISABLE_SECURITY_PLUGIN", "value": "true"},
                {"name": "DISABLE_INSTALL_DEMO_CONFIG", "value": "true"},
                {"name": "DISABLE_PERFORMANCE_ANALYZER_AGENT_CLI", "value": "true"},
                {"name": "OPENSEARCH_JAVA_OPTS", "value": "-Xms1024m -Xmx1024m"},
            ])
        );
        assert_eq!(
            container["readinessProbe"],
            json!({
                "exec": {"command": ["bash", "-c", "curl -fsS -o /dev/null \"http://127.0.0.1:9200/_cluster/health?local=true&timeout=1s\""]},
                "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3
            })
        );
        assert!(container.get("livenessProbe").is_none());
        assert_eq!(
            container["ports"],
            json!([{"name": "http", "containerPort": 9200}, {"name": "transport", "containerPort": 9300}])
        );
        assert_eq!(
            container["resources"],
            json!({"requests": {"cpu": "250m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}})
        );
        assert_eq!(
            container["volumeMounts"],
            json!([
                {"name": "data", "mountPath": "/usr/share/opensearch/data"},
                {"name": "config", "mountPath": "/usr/share/opensearch/config"},
                {"name": "logs", "mountPath": "/usr/share/opensearch/logs"},
                {"name": "tmp", "mountPath": "/tmp"}
            ])
        );
        assert_eq!(
            pod["volumes"],
            json!([{"name": "config", "emptyDir": {}}, {"name": "logs", "emptyDir": {}},
                   {"name": "tmp", "emptyDir": {}}])
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            pod["initContainers"][0]["command"],
            json!(["cp", "-R", "/usr/share/opensearch/config/.", "/seed/"])
        );
        assert_eq!(
            pod["initContainers"][0]["resources"],
            container["resources"]
        );
        assert_eq!(
            pod["securityContext"],
            json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                   "seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"],
            json!({"requests": {"storage": "10Gi"}})
        );
        // No Elasticsearch security settings, no credentials anywhere.
        let text = container.to_string();
        assert!(!text.contains("xpack"), "{text}");
        assert!(!text.contains("secretKeyRef"), "{text}");
    }

    #[test]
    fn three_nodes_name_the_initial_cluster_managers() {
        let p = opensearch_plan(3);
        let sts = serde_json::to_value(statefulset(&p, search_plan(&p))).expect("json");
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        let env = &sts["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(
            env[5],
            json!({"name": "discovery.seed_hosts", "value": "shop-es-headless"})
        );
        assert_eq!(
            env[6],
            json!({"name": "cluster.initial_cluster_manager_nodes", "value": "shop-es-0,shop-es-1,shop-es-2"})
        );
        assert!(!env.to_string().contains("discovery.type"));
        assert!(!env.to_string().contains("initial_master_nodes"));
    }

    #[test]
    fn the_heap_is_half_the_memory() {
        assert_eq!(
            java_opts(Some(&memory(Some("2Gi"), Some("1Gi")))),
            "-Xms1024m -Xmx1024m"
        );
        assert_eq!(
            java_opts(Some(&memory(None, Some("1536Mi")))),
            "-Xms768m -Xmx768m"
        );
        assert_eq!(
            java_opts(Some(&memory(Some("3G"), None))),
            "-Xms1430m -Xmx1430m"
        );
        assert_eq!(java_opts(None), "-Xms1g -Xmx1g");
        assert_eq!(
            java_opts(Some(&memory(Some("lots"), None))),
            "-Xms1g -Xmx1g"
        );
    }
}
