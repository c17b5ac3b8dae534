//! The OpenSearch node of a managed search cluster, following the official
//! `opensearchproject/opensearch` image: dotted settings as environment variables (its
//! entrypoint passes them on as `-E` options), data under `/usr/share/opensearch/data`,
//! uid 1000, the heap in `OPENSEARCH_JAVA_OPTS`. Its security plugin is on: HTTP and
//! transport serve TLS from the node certificate the pipeline CA issues
//! (`<pipeline>-es-tls`, mounted in `config/certs`), and the plugin's configuration
//! (`security_config`, the `<pipeline>-es-security` Secret mounted over
//! `config/opensearch-security`) knows one user, the runtime's, whose role reaches the
//! pipeline's index only, and no demo users. The configuration is loaded into the
//! security index when the cluster first starts (`allow_default_init_securityindex`).
//! `search` builds the StatefulSet and Services around it. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use serde_json::json;

use super::{
    engine::{common_settings, Node, Settings},
    names::{keys, ChildNames},
    pieces::{env, env_from_field, env_from_secret, memory_bytes, secret_files},
};
use crate::controller::validate::{ManagedSearchPlan, ValidatedPipeline};

/// uid of `opensearch` in the official image.
const OPENSEARCH_UID: i64 = 1000;
const HOME: &str = "/usr/share/opensearch";
const DATA_DIR: &str = "/usr/share/opensearch/data";
/// The node certificate, its key and the trust bundle (paths in settings are relative to
/// the config directory).
const CERTS_DIR: &str = "/usr/share/opensearch/config/certs";
/// Where the security plugin reads its configuration files.
const SECURITY_DIR: &str = "/usr/share/opensearch/config/opensearch-security";
/// The image's own heap (its `jvm.options`) when the spec gives no memory.
const DEFAULT_JAVA_OPTS: &str = "-Xms1g -Xmx1g";
const MIB: f64 = 1024.0 * 1024.0;
/// The runtime's role in the security configuration.
const RUNTIME_ROLE: &str = "pipeline_runtime";
/// The security plugin's configuration files (`security_config` makes each): without any
/// of them the plugin never initialises its security index.
pub const SECURITY_FILES: [&str; 9] = [
    "action_groups.yml",
    "allowlist.yml",
    "audit.yml",
    "config.yml",
    "internal_users.yml",
    "nodes_dn.yml",
    "roles.yml",
    "roles_mapping.yml",
    "tenants.yml",
];

/// The runtime user's name (also stored in `<pipeline>-es-runtime-user`).
pub fn runtime_username(p: &ValidatedPipeline) -> String {
    format!("{}-runtime", p.name)
}

/// Settings passed as environment variables (the entrypoint maps dotted names to `-E`).
pub fn settings(p: &ValidatedPipeline, search: &ManagedSearchPlan) -> Settings {
    let (mut settings, discovery) =
        common_settings(p, search, "cluster.initial_cluster_manager_nodes");
    let cert = |key: &str| format!("certs/{key}");
    let tls = |layer: &str| {
        [
            ("pemcert_filepath", cert(keys::TLS_CRT)),
            ("pemkey_filepath", cert(keys::TLS_KEY)),
            ("pemtrustedcas_filepath", cert(keys::CA_CRT)),
        ]
        .map(|(k, v)| (format!("plugins.security.ssl.{layer}.{k}"), v))
    };
    settings.extend(tls("transport"));
    settings.extend(tls("http"));
    settings.extend(
        [
            ("plugins.security.ssl.http.enabled", "true".to_string()),
            // Nodes are recognised by their certificate's subject (below), which every node
            // shares; pod host names are not in it one by one.
            (
                "plugins.security.ssl.transport.enforce_hostname_verification",
                "false".to_string(),
            ),
            (
                "plugins.security.nodes_dn",
                format!("CN={}", ChildNames::new(&p.name).search()),
            ),
            // Loads `config/opensearch-security` into the security index when the cluster
            // first forms: no admin certificate or `securityadmin` run needed.
            (
                "plugins.security.allow_default_init_securityindex",
                "true".to_string(),
            ),
            ("plugins.security.audit.type", "noop".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    settings.extend(discovery);
    settings
}

/// The security plugin's nine configuration files (file name -> YAML): HTTP basic
/// authentication against the internal user database, no anonymous access; one user, the
/// runtime's (`password_hash`: bcrypt), whose role may check the cluster's health, send
/// bulk requests, and do anything to the pipeline's index, nothing to any other index.
pub fn security_config(p: &ValidatedPipeline, password_hash: &str) -> BTreeMap<String, String> {
    let meta = |kind: &str| json!({"type": kind, "config_version": 2});
    let files = [
        (
            "config.yml",
            json!({
                "_meta": meta("config"),
                "config": {"dynamic": {
                    "http": {"anonymous_auth_enabled": false},
                    "authc": {"basic_internal_auth_domain": {
                        "http_enabled": true,
                        "transport_enabled": true,
                        "order": 0,
                        "http_authenticator": {"type": "basic", "challenge": true},
                        "authentication_backend": {"type": "intern"},
                    }},
                }},
            }),
        ),
        (
            "internal_users.yml",
            json!({
                "_meta": meta("internalusers"),
                runtime_username(p): {
                    "hash": password_hash,
                    "opendistro_security_roles": [RUNTIME_ROLE],
                    "description": "pipeline-runtime pods and the operator's index count",
                },
            }),
        ),
        (
            "roles.yml",
            json!({
                "_meta": meta("roles"),
                RUNTIME_ROLE: {
                    "cluster_permissions": ["cluster_monitor", "cluster_composite_ops"],
                    "index_permissions": [{
                        "index_patterns": [p.search.index],
                        "allowed_actions": ["indices_all"],
                    }],
                },
            }),
        ),
        ("roles_mapping.yml", json!({"_meta": meta("rolesmapping")})),
        ("action_groups.yml", json!({"_meta": meta("actiongroups")})),
        ("tenants.yml", json!({"_meta": meta("tenants")})),
        ("nodes_dn.yml", json!({"_meta": meta("nodesdn")})),
        (
            "allowlist.yml",
            json!({"_meta": meta("allowlist"), "config": {"enabled": false}}),
        ),
        (
            "audit.yml",
            json!({"_meta": meta("audit"), "config": {"enabled": false}}),
        ),
    ];
    files
        .into_iter()
        .map(|(name, value)| {
            // A JSON value always serialises to YAML.
            let yaml = serde_yaml::to_string(&value).unwrap_or_default();
            (name.to_string(), yaml)
        })
        .collect()
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

/// Ready when the node answers an authenticated health request over TLS with a known
/// cluster manager, as the runtime's user, trusting the pipeline CA only and checking the
/// certificate names the client Service (`SEARCH_HOST`, resolved to this pod). The
/// credentials reach curl as a config on its stdin, written by bash's builtin `printf`:
/// never on a command line.
pub const READINESS_SCRIPT: &str = r#"printf 'user = "%s:%s"\n' "$SEARCH_USERNAME" "$SEARCH_PASSWORD" | curl -fsS -o /dev/null -K - --cacert /usr/share/opensearch/config/certs/ca.crt --resolve "$SEARCH_HOST:9200:127.0.0.1" "https://$SEARCH_HOST:9200/_cluster/health?local=true&timeout=1s""#;

pub fn node(p: &ValidatedPipeline, search: &ManagedSearchPlan) -> Node {
    let names = ChildNames::new(&p.name);
    let user = names.search_runtime_user();
    let mut env_vars = vec![env_from_field("POD_NAME", "metadata.name")];
    env_vars.extend(settings(p, search).into_iter().map(|(k, v)| env(&k, v)));
    env_vars.extend([
        // The configuration is ours (mounted), not the demo one with its known passwords.
        env("DISABLE_INSTALL_DEMO_CONFIG", "true"),
        // The performance-analyzer agent is a second JVM in the container: not started.
        env("DISABLE_PERFORMANCE_ANALYZER_AGENT_CLI", "true"),
        env("OPENSEARCH_JAVA_OPTS", java_opts(search.resources.as_ref())),
        // For the readiness probe.
        env(
            "SEARCH_HOST",
            format!("{}.{}.svc", names.search(), p.namespace),
        ),
        env_from_secret("SEARCH_USERNAME", &user, keys::USERNAME),
        env_from_secret("SEARCH_PASSWORD", &user, keys::PASSWORD),
    ]);
    let (certs, certs_mount) = secret_files(
        "certs",
        &names.search_tls(),
        &[keys::TLS_CRT, keys::TLS_KEY, keys::CA_CRT],
        CERTS_DIR,
    );
    let (security, security_mount) = secret_files(
        "security-config",
        &names.search_security(),
        &SECURITY_FILES,
        SECURITY_DIR,
    );
    Node {
        container: "opensearch",
        uid: OPENSEARCH_UID,
        home: HOME,
        data_dir: DATA_DIR,
        env: env_vars,
        readiness_script: READINESS_SCRIPT,
        volumes: vec![certs, security],
        mounts: vec![certs_mount, security_mount],
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
        let sts =
            serde_json::to_value(statefulset(&p, search_plan(&p), Some("tls-sum"))).expect("json");
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
                {"name": "plugins.security.ssl.transport.pemcert_filepath", "value": "certs/tls.crt"},
                {"name": "plugins.security.ssl.transport.pemkey_filepath", "value": "certs/tls.key"},
                {"name": "plugins.security.ssl.transport.pemtrustedcas_filepath", "value": "certs/ca.crt"},
                {"name": "plugins.security.ssl.http.pemcert_filepath", "value": "certs/tls.crt"},
                {"name": "plugins.security.ssl.http.pemkey_filepath", "value": "certs/tls.key"},
                {"name": "plugins.security.ssl.http.pemtrustedcas_filepath", "value": "certs/ca.crt"},
                {"name": "plugins.security.ssl.http.enabled", "value": "true"},
                {"name": "plugins.security.ssl.transport.enforce_hostname_verification", "value": "false"},
                {"name": "plugins.security.nodes_dn", "value": "CN=shop-es"},
                {"name": "plugins.security.allow_default_init_securityindex", "value": "true"},
                {"name": "plugins.security.audit.type", "value": "noop"},
                {"name": "discovery.type", "value": "single-node"},
                {"name": "DISABLE_INSTALL_DEMO_CONFIG", "value": "true"},
                {"name": "DISABLE_PERFORMANCE_ANALYZER_AGENT_CLI", "value": "true"},
                {"name": "OPENSEARCH_JAVA_OPTS", "value": "-Xms1024m -Xmx1024m"},
                {"name": "SEARCH_HOST", "value": "shop-es.shops.svc"},
                {"name": "SEARCH_USERNAME", "valueFrom": {"secretKeyRef": {"name": "shop-es-runtime-user", "key": "username", "optional": false}}},
                {"name": "SEARCH_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "shop-es-runtime-user", "key": "password", "optional": false}}},
            ])
        );
        // No DISABLE_SECURITY_PLUGIN: the image's default, the plugin on.
        assert!(!container["env"]
            .to_string()
            .contains("DISABLE_SECURITY_PLUGIN"));
        assert_eq!(
            container["readinessProbe"],
            json!({
                "exec": {"command": ["bash", "-c", READINESS_SCRIPT]},
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
                {"name": "certs", "mountPath": "/usr/share/opensearch/config/certs", "readOnly": true},
                {"name": "security-config", "mountPath": "/usr/share/opensearch/config/opensearch-security", "readOnly": true},
                {"name": "tmp", "mountPath": "/tmp"}
            ])
        );
        let files = SECURITY_FILES.map(|f| json!({"key": f, "path": f}));
        assert_eq!(
            pod["volumes"],
            json!([{"name": "config", "emptyDir": {}}, {"name": "logs", "emptyDir": {}},
                   {"name": "certs", "secret": {"secretName": "shop-es-tls", "defaultMode": 0o440,
                     "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"},
                               {"key": "ca.crt", "path": "ca.crt"}]}},
                   {"name": "security-config", "secret": {"secretName": "shop-es-security", "defaultMode": 0o440,
                     "items": files}},
                   {"name": "tmp", "emptyDir": {}}])
        );
        // A renewed certificate rolls the nodes.
        assert_eq!(
            sts["spec"]["template"]["metadata"]["annotations"],
            json!({"checksum/tls": "tls-sum"})
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
        // No Elasticsearch security settings.
        let text = container.to_string();
        assert!(!text.contains("xpack"), "{text}");
    }

    #[test]
    fn the_readiness_probe_authenticates_over_tls_without_a_password_on_a_command_line() {
        assert_eq!(
            READINESS_SCRIPT,
            concat!(
                r#"printf 'user = "%s:%s"\n' "$SEARCH_USERNAME" "$SEARCH_PASSWORD" | "#,
                r#"curl -fsS -o /dev/null -K - --cacert /usr/share/opensearch/config/certs/ca.crt "#,
                r#"--resolve "$SEARCH_HOST:9200:127.0.0.1" "#,
                r#""https://$SEARCH_HOST:9200/_cluster/health?local=true&timeout=1s""#
            )
        );
    }

    #[test]
    fn the_security_configuration_knows_the_runtime_user_and_its_index_only() {
        let p = opensearch_plan(1);
        let files = security_config(&p, "$2y$12$abc");
        let yaml =
            |name: &str| -> serde_json::Value { serde_yaml::from_str(&files[name]).expect("yaml") };
        assert_eq!(
            yaml("internal_users.yml"),
            json!({
                "_meta": {"type": "internalusers", "config_version": 2},
                "shop-runtime": {
                    "hash": "$2y$12$abc",
                    "opendistro_security_roles": ["pipeline_runtime"],
                    "description": "pipeline-runtime pods and the operator's index count",
                },
            })
        );
        assert_eq!(
            yaml("roles.yml"),
            json!({
                "_meta": {"type": "roles", "config_version": 2},
                "pipeline_runtime": {
                    "cluster_permissions": ["cluster_monitor", "cluster_composite_ops"],
                    "index_permissions": [{
                        "index_patterns": [p.search.index],
                        "allowed_actions": ["indices_all"],
                    }],
                },
            })
        );
        // Basic authentication against the internal users, nobody anonymous.
        let config = yaml("config.yml");
        assert_eq!(
            config["config"]["dynamic"]["http"]["anonymous_auth_enabled"],
            false
        );
        let domain = &config["config"]["dynamic"]["authc"]["basic_internal_auth_domain"];
        assert_eq!(domain["http_authenticator"]["type"], "basic");
        assert_eq!(domain["authentication_backend"]["type"], "intern");
        // No role mapped to anyone else (no demo users, no all_access mapping).
        assert_eq!(
            yaml("roles_mapping.yml"),
            json!({"_meta": {"type": "rolesmapping", "config_version": 2}})
        );
        for (name, kind) in [
            ("action_groups.yml", "actiongroups"),
            ("tenants.yml", "tenants"),
            ("nodes_dn.yml", "nodesdn"),
            ("allowlist.yml", "allowlist"),
            ("audit.yml", "audit"),
        ] {
            assert_eq!(yaml(name)["_meta"]["type"], kind, "{name}");
        }
        assert_eq!(
            files.keys().map(String::as_str).collect::<Vec<_>>(),
            SECURITY_FILES
        );
    }

    #[test]
    fn three_nodes_name_the_initial_cluster_managers() {
        let p = opensearch_plan(3);
        let sts =
            serde_json::to_value(statefulset(&p, search_plan(&p), Some("tls-sum"))).expect("json");
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        let env = &sts["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(
            env[16],
            json!({"name": "discovery.seed_hosts", "value": "shop-es-headless"})
        );
        assert_eq!(
            env[17],
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
