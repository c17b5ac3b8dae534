//! The Elasticsearch node of a managed search cluster: security on with the generated
//! `elastic` password, transport TLS from the generated certificates, settings as the
//! official image takes them (dotted environment variables). `search` builds the
//! StatefulSet and Services around it. Pure.

use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};

use super::{
    engine::{common_settings, BasicAuth, Node, Settings, Username},
    names::{keys, ChildNames},
    pieces::{env, env_from_field, env_from_secret},
};
use crate::controller::validate::{ManagedSearchPlan, ValidatedPipeline};

/// uid of `elasticsearch` in the official image.
const ES_UID: i64 = 1000;
const HOME: &str = "/usr/share/elasticsearch";
const DATA_DIR: &str = "/usr/share/elasticsearch/data";
const TRANSPORT_DIR: &str = "/usr/share/elasticsearch/config/transport";
/// The built-in superuser whose password the operator generates.
pub const USERNAME: &str = "elastic";

/// The `elastic` user and its generated password.
pub fn basic_auth(p: &ValidatedPipeline) -> BasicAuth {
    BasicAuth {
        secret: ChildNames::new(&p.name).elastic_user(),
        username: Username::Fixed(USERNAME.into()),
        password_key: keys::ELASTIC.into(),
    }
}

/// Settings passed as environment variables (the image maps dotted names to settings).
pub fn settings(p: &ValidatedPipeline, search: &ManagedSearchPlan) -> Settings {
    let (mut settings, discovery) = common_settings(p, search, "cluster.initial_master_nodes");
    settings.extend([
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
    ]);
    settings.extend(discovery);
    settings
}

/// Ready when the node answers an authenticated health request with a known master. The
/// credentials reach curl as a config on its stdin, written by bash's builtin `printf`:
/// never on a command line (readable by every process of the node in /proc).
pub const READINESS_SCRIPT: &str = r#"printf 'user = "elastic:%s"\n' "$ELASTIC_PASSWORD" | curl -fsS -o /dev/null -K - "http://127.0.0.1:9200/_cluster/health?local=true&timeout=1s""#;

/// The node: its password from the generated Secret, the transport certificates mounted.
pub fn node(p: &ValidatedPipeline, search: &ManagedSearchPlan) -> Node {
    let names = ChildNames::new(&p.name);
    let mut env_vars = vec![
        env_from_field("POD_NAME", "metadata.name"),
        env_from_secret("ELASTIC_PASSWORD", &names.elastic_user(), keys::ELASTIC),
    ];
    env_vars.extend(settings(p, search).into_iter().map(|(k, v)| env(&k, v)));
    Node {
        container: "elasticsearch",
        uid: ES_UID,
        home: HOME,
        data_dir: DATA_DIR,
        env: env_vars,
        readiness_script: READINESS_SCRIPT,
        volumes: vec![Volume {
            name: "transport-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.search_transport_tls()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }],
        mounts: vec![VolumeMount {
            name: "transport-tls".into(),
            mount_path: TRANSPORT_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::search::statefulset;
    use crate::controller::fixtures::{managed_plan, search_plan};
    use serde_json::json;

    fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn one_node_uses_single_node_discovery() {
        let p = managed_plan();
        let s = settings(&p, search_plan(&p));
        assert_eq!(setting(&s, "discovery.type"), Some("single-node"));
        assert_eq!(setting(&s, "discovery.seed_hosts"), None);
        assert_eq!(setting(&s, "cluster.initial_master_nodes"), None);
        assert_eq!(setting(&s, "xpack.security.enabled"), Some("true"));
        assert_eq!(setting(&s, "cluster.name"), Some("shop"));
    }

    #[test]
    fn three_nodes_form_a_cluster() {
        let mut p = managed_plan();
        crate::controller::fixtures::set_search_replicas(&mut p, 3);
        let s = settings(&p, search_plan(&p));
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
        let sts = serde_json::to_value(statefulset(&p, search_plan(&p), None)).expect("json");
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["serviceName"], "shop-es-headless");
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    }

    #[test]
    fn the_statefulset_of_a_single_node() {
        let p = managed_plan();
        let sts = serde_json::to_value(statefulset(&p, search_plan(&p), None)).expect("json");
        assert_eq!(sts["metadata"]["name"], "shop-es");
        assert_eq!(sts["spec"]["replicas"], 1);
        let pod = &sts["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["name"], "elasticsearch");
        assert_eq!(
            container["image"],
            "docker.elastic.co/elasticsearch/elasticsearch:8.18.0"
        );
        let tls = "/usr/share/elasticsearch/config/transport";
        assert_eq!(
            container["env"],
            json!([
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "ELASTIC_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "shop-es-elastic-user", "key": "elastic", "optional": false}}},
                {"name": "cluster.name", "value": "shop"},
                {"name": "node.name", "value": "$(POD_NAME)"},
                {"name": "network.host", "value": "0.0.0.0"},
                {"name": "node.store.allow_mmap", "value": "false"},
                {"name": "xpack.security.enabled", "value": "true"},
                {"name": "xpack.security.http.ssl.enabled", "value": "false"},
                {"name": "xpack.security.transport.ssl.enabled", "value": "true"},
                {"name": "xpack.security.transport.ssl.verification_mode", "value": "certificate"},
                {"name": "xpack.security.transport.ssl.key", "value": format!("{tls}/tls.key")},
                {"name": "xpack.security.transport.ssl.certificate", "value": format!("{tls}/tls.crt")},
                {"name": "xpack.security.transport.ssl.certificate_authorities", "value": format!("{tls}/ca.crt")},
                {"name": "discovery.type", "value": "single-node"},
            ])
        );
        assert_eq!(
            container["readinessProbe"],
            json!({
                "exec": {"command": ["bash", "-c", "printf 'user = \"elastic:%s\"\\n' \"$ELASTIC_PASSWORD\" | curl -fsS -o /dev/null -K - \"http://127.0.0.1:9200/_cluster/health?local=true&timeout=1s\""]},
                "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3
            })
        );
        assert!(container.get("livenessProbe").is_none());
        assert_eq!(
            container["volumeMounts"],
            json!([
                {"name": "data", "mountPath": "/usr/share/elasticsearch/data"},
                {"name": "config", "mountPath": "/usr/share/elasticsearch/config"},
                {"name": "logs", "mountPath": "/usr/share/elasticsearch/logs"},
                {"name": "transport-tls", "mountPath": tls, "readOnly": true},
                {"name": "tmp", "mountPath": "/tmp"}
            ])
        );
        assert_eq!(
            pod["volumes"],
            json!([
                {"name": "config", "emptyDir": {}},
                {"name": "logs", "emptyDir": {}},
                {"name": "transport-tls", "secret": {"secretName": "shop-es-transport", "defaultMode": 288}},
                {"name": "tmp", "emptyDir": {}}
            ])
        );
        let read_only = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                               "readOnlyRootFilesystem": true, "runAsNonRoot": true});
        assert_eq!(container["securityContext"], read_only);
        assert_eq!(
            pod["initContainers"],
            json!([{
                "name": "seed-config",
                "image": container["image"],
                "command": ["cp", "-R", "/usr/share/elasticsearch/config/.", "/seed/"],
                "securityContext": read_only,
                "volumeMounts": [{"name": "config", "mountPath": "/seed"}]
            }])
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
    }
}
