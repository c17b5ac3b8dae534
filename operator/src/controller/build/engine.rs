//! What the two search engines (Elasticsearch, OpenSearch) share: the description of a
//! node pod that `elasticsearch::node` and `opensearch::node` fill in (`Node`), the
//! settings both take the same way (`common_settings`), and basic authentication
//! (`BasicAuth`, `Username`). `search` builds the cluster around a `Node`. Pure.

use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};

use super::names::ChildNames;
use crate::controller::validate::{ManagedSearchPlan, ValidatedPipeline};

/// Where the basic-authentication username comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Username {
    /// A fixed name (the managed Elasticsearch's `elastic` user).
    Fixed(String),
    /// This key of the credentials Secret.
    SecretKey(String),
}

/// Basic authentication: a Secret holding the password, and the username.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    pub secret: String,
    pub username: Username,
    pub password_key: String,
}

/// Engine settings as (dotted name, value) pairs, in the order they are passed.
pub type Settings = Vec<(String, String)>;

/// Settings both engines take the same way: the node's (cluster and node names, no mmap)
/// and discovery (single-node for one node; seed hosts and the initial voting nodes, under
/// the engine's name `initial_nodes_setting`, for three or more).
pub fn common_settings(
    p: &ValidatedPipeline,
    search: &ManagedSearchPlan,
    initial_nodes_setting: &str,
) -> (Settings, Settings) {
    let names = ChildNames::new(&p.name);
    let node = vec![
        ("cluster.name".to_string(), p.name.clone()),
        ("node.name".to_string(), "$(POD_NAME)".to_string()),
        ("network.host".to_string(), "0.0.0.0".to_string()),
        // No mmap: works on nodes whose vm.max_map_count was never raised (kind, most laptops).
        ("node.store.allow_mmap".to_string(), "false".to_string()),
    ];
    let discovery = if search.replicas == 1 {
        vec![("discovery.type".to_string(), "single-node".to_string())]
    } else {
        let initial = (0..search.replicas)
            .map(|i| format!("{}-{i}", names.search()))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            ("discovery.seed_hosts".to_string(), names.search_headless()),
            (initial_nodes_setting.to_string(), initial),
        ]
    };
    (node, discovery)
}

/// What differs between the engines' node pods.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub container: &'static str,
    /// uid (and gid) of the image's user.
    pub uid: i64,
    /// The image's installation: its `config/` and `logs/` are made writable.
    pub home: &'static str,
    pub data_dir: &'static str,
    pub env: Vec<EnvVar>,
    /// Run by `bash -c`; exit 0 = ready.
    pub readiness_script: &'static str,
    /// Volumes and mounts besides the data volume and `/tmp`.
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
}
