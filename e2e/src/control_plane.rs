//! What the operator's control-plane tests (`tests/operator_controller.rs`,
//! `tests/operator_helm_chart.rs`) share: a namespace with the in-process controller and a
//! Running pipeline, the inventory of the children it made and the checks on them (the
//! builders' list, the owner references), waits for measured and settled pipelines, and
//! readers of Secrets, `kubectl get` tables and `helm lint` output. Talks to the API server
//! of `e2e/services.sh up k8s`.

use std::time::Duration;

use anyhow::Context as _;
use datapipeline_operator::crd::DataPipeline;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::k8s::{self, RunningController, TestNamespace};

/// The name of the pipelines in `examples/` (`metadata.name: shop`).
pub const SHOP: &str = "shop";
/// Bound on reaching Running from nothing (kwok makes pods ready within seconds).
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// One object of a kind the operator creates, as listed in the test namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub kind: &'static str,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub owners: Vec<OwnerReference>,
    pub managers: Vec<String>,
}

pub async fn list_kind<K>(client: &Client, namespace: &str) -> anyhow::Result<Vec<Listed>>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let kind = <K as k8s_openapi::Resource>::KIND;
    let listed = api
        .list_metadata(&Default::default())
        .await
        .with_context(|| format!("listing {kind} in {namespace}"))?;
    Ok(listed
        .items
        .into_iter()
        // Published into every namespace by the controller-manager, not by the operator.
        .filter(|o| {
            !(kind == "ConfigMap" && o.metadata.name.as_deref() == Some("kube-root-ca.crt"))
        })
        .map(|o| {
            let meta = o.metadata;
            Listed {
                kind,
                name: meta.name.unwrap_or_default(),
                uid: meta.uid.unwrap_or_default(),
                resource_version: meta.resource_version.unwrap_or_default(),
                owners: meta.owner_references.unwrap_or_default(),
                managers: meta
                    .managed_fields
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| {
                        format!(
                            "{}/{}@{}",
                            m.manager.unwrap_or_default(),
                            m.operation.unwrap_or_default(),
                            m.time.map(|t| t.0.to_string()).unwrap_or_default()
                        )
                    })
                    .collect(),
            }
        })
        .collect())
}

/// Every object of the kinds the operator creates in `namespace`, sorted by kind and name.
pub async fn inventory(client: &Client, namespace: &str) -> anyhow::Result<Vec<Listed>> {
    let mut all = Vec::new();
    all.extend(list_kind::<Secret>(client, namespace).await?);
    all.extend(list_kind::<ConfigMap>(client, namespace).await?);
    all.extend(list_kind::<Service>(client, namespace).await?);
    all.extend(list_kind::<NetworkPolicy>(client, namespace).await?);
    all.extend(list_kind::<StatefulSet>(client, namespace).await?);
    all.extend(list_kind::<PodDisruptionBudget>(client, namespace).await?);
    all.extend(list_kind::<Job>(client, namespace).await?);
    all.extend(list_kind::<Deployment>(client, namespace).await?);
    all.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Ok(all)
}

/// Whether `name` is `expected`, or, for an `expected` ending in `-`, that prefix followed
/// by the 8 hex digits of a spec hash (Job names).
fn name_matches(name: &str, expected: &str) -> bool {
    match expected.strip_suffix('-') {
        Some(_) => name.strip_prefix(expected).is_some_and(|hash| {
            hash.len() == 8
                && hash
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        }),
        None => name == expected,
    }
}

/// Checks the listed objects are exactly `expected` (kind, name or Job-name prefix).
pub fn assert_children(listed: &[Listed], expected: &[(&str, &str)]) {
    let mut unmatched: Vec<(&str, &str)> = expected.to_vec();
    let mut unexpected = Vec::new();
    for object in listed {
        match unmatched
            .iter()
            .position(|(kind, name)| *kind == object.kind && name_matches(&object.name, name))
        {
            Some(i) => {
                unmatched.remove(i);
            }
            None => unexpected.push(format!("{}/{}", object.kind, object.name)),
        }
    }
    assert!(
        unmatched.is_empty() && unexpected.is_empty(),
        "children differ from the builders' list:\n  missing: {unmatched:?}\n  unexpected: {unexpected:?}"
    );
}

/// The children the builders (operator/src/controller/build/) make for the all-managed
/// `examples/shop-events.yaml`; Job names end with a hash of their spec.
pub const SHOP_MANAGED_CHILDREN: [(&str, &str); 28] = [
    ("ConfigMap", "shop-runtime-config"),
    ("Deployment", "shop-runtime"),
    ("Job", "shop-generate-"),
    ("Job", "shop-kafka-topics-"),
    ("Job", "shop-minio-bucket-"),
    ("NetworkPolicy", "shop-es"),
    ("NetworkPolicy", "shop-kafka"),
    ("NetworkPolicy", "shop-minio"),
    ("PodDisruptionBudget", "shop-es"),
    ("PodDisruptionBudget", "shop-kafka"),
    ("PodDisruptionBudget", "shop-runtime"),
    ("Secret", "shop-ca"),
    ("Secret", "shop-es-elastic-user"),
    ("Secret", "shop-es-transport"),
    ("Secret", "shop-kafka-admin"),
    ("Secret", "shop-kafka-ingest"),
    ("Secret", "shop-kafka-runtime"),
    ("Secret", "shop-kafka-tls"),
    ("Secret", "shop-minio-credentials"),
    ("Secret", "shop-minio-tls"),
    ("Service", "shop-es"),
    ("Service", "shop-es-headless"),
    ("Service", "shop-kafka"),
    ("Service", "shop-kafka-headless"),
    ("Service", "shop-minio"),
    ("StatefulSet", "shop-es"),
    ("StatefulSet", "shop-kafka"),
    ("StatefulSet", "shop-minio"),
];

/// The one owner reference every child must carry: the pipeline, as controller.
fn controller_owner(dp: &DataPipeline) -> OwnerReference {
    OwnerReference {
        api_version: "datapipeline.io/v1alpha1".into(),
        kind: "DataPipeline".into(),
        name: dp.name_any(),
        uid: dp.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Checks every listed object is owned by `dp`, as controller, and by nothing else.
pub fn assert_owned_by(listed: &[Listed], dp: &DataPipeline) {
    let want = controller_owner(dp);
    for object in listed {
        let owners: Vec<OwnerReference> = object
            .owners
            .iter()
            .cloned()
            // blockOwnerDeletion only matters to foreground deletion; not asserted.
            .map(|o| OwnerReference {
                block_owner_deletion: None,
                ..o
            })
            .collect();
        assert_eq!(
            owners,
            vec![want.clone()],
            "ownerReferences of {}/{}",
            object.kind,
            object.name
        );
    }
}

/// A namespace with the in-process controller and a pipeline from `example` that reached
/// Running (Ready=True).
pub struct RunningPipeline {
    pub client: Client,
    pub pipelines: Api<DataPipeline>,
    pub dp: DataPipeline,
    // Dropped in declaration order: the controller stops before the namespace goes.
    pub controller: RunningController,
    pub ns: TestNamespace,
}

/// Starts the in-process controller in a fresh namespace `prefix-...`, applies `example`
/// there and waits until the pipeline is Running.
pub async fn running_pipeline(prefix: &str, example: &str) -> anyhow::Result<RunningPipeline> {
    k8s::init_logging();
    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let ns = TestNamespace::create(&client, prefix).await?;
    let controller = RunningController::start(&client, &ns.name);
    k8s::apply_file(&client, &ns.name, &k8s::repo_root().join(example)).await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let dp = k8s::wait_until_running(&pipelines, SHOP, READY_TIMEOUT)
        .await
        .map_err(|e| match controller.ensure_running() {
            Ok(()) => e,
            Err(stopped) => e.context(stopped),
        })?;
    Ok(RunningPipeline {
        client,
        pipelines,
        dp,
        controller,
        ns,
    })
}

/// Waits until the controller has attempted its first throughput measurement, which it
/// does once Kafka was seen ready. Nothing listens behind kwok's pods, so the attempt
/// fails: ThroughputMeasured=False, KafkaUnreachable.
pub async fn wait_until_measured(pipelines: &Api<DataPipeline>) -> anyhow::Result<DataPipeline> {
    k8s::wait_for(
        pipelines,
        SHOP,
        "a ThroughputMeasured condition",
        Duration::from_secs(60),
        |dp: Option<&DataPipeline>| {
            dp.and_then(|dp| k8s::pipeline_condition(dp, "ThroughputMeasured"))
                .is_some()
        },
    )
    .await
}

/// Waits until the workload controllers have nothing left to write: StatefulSets and
/// Deployments fully rolled out and available, Jobs complete, PDBs observed with their
/// pods healthy. Before that, their status (and resourceVersion) still moves.
pub async fn wait_until_settled(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    k8s::poll_until(
        "workloads, Jobs and PDBs to settle",
        Duration::from_secs(120),
        || async {
            for sts in statefulsets.list(&Default::default()).await? {
                let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let s = sts.status.clone().unwrap_or_default();
                let settled = s.observed_generation == sts.metadata.generation
                    && s.ready_replicas.unwrap_or(0) == want
                    && s.available_replicas.unwrap_or(0) == want
                    && s.updated_replicas.unwrap_or(0) == want
                    && s.current_revision.is_some()
                    && s.current_revision == s.update_revision;
                if !settled {
                    return Ok(None);
                }
            }
            for deployment in deployments.list(&Default::default()).await? {
                let want = deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(1);
                let s = deployment.status.clone().unwrap_or_default();
                let progressed = s.conditions.iter().flatten().any(|c| {
                    c.type_ == "Progressing"
                        && c.reason.as_deref() == Some("NewReplicaSetAvailable")
                });
                let settled = s.observed_generation == deployment.metadata.generation
                    && s.ready_replicas.unwrap_or(0) == want
                    && s.available_replicas.unwrap_or(0) == want
                    && s.updated_replicas.unwrap_or(0) == want
                    && s.replicas.unwrap_or(0) == want
                    && progressed;
                if !settled {
                    return Ok(None);
                }
            }
            for job in jobs.list(&Default::default()).await? {
                let s = job.status.clone().unwrap_or_default();
                let complete = s
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Complete" && c.status == "True");
                if !complete || s.active.unwrap_or(0) != 0 {
                    return Ok(None);
                }
            }
            for pdb in budgets.list(&Default::default()).await? {
                let s = pdb.status.clone().unwrap_or_default();
                if s.observed_generation != pdb.metadata.generation
                    || s.expected_pods == 0
                    || s.current_healthy != s.expected_pods
                {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await
}

/// The text of a Secret's key; an error naming the Secret when it has no such key.
pub fn secret_text(secret: &Secret, key: &str) -> anyhow::Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret {} has no key {key}", secret.name_any()))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// Whether a value looks like the operator's generated passwords (32 letters and digits).
pub fn is_generated_password(value: &str) -> bool {
    value.len() == 32 && value.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Names of the StatefulSets owning a volume claim.
pub fn claim_owners(claim: &PersistentVolumeClaim) -> Vec<String> {
    claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "StatefulSet")
        .map(|o| o.name.clone())
        .collect()
}

/// The cells of kubectl's table output, cut at the header's column starts (cells may be
/// empty, so splitting on whitespace would shift them).
pub fn table_cells(output: &str) -> Vec<Vec<String>> {
    let mut lines = output.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let mut starts = vec![0];
    let bytes = header.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] != b' ' && bytes[i - 1] == b' ' {
            starts.push(i);
        }
    }
    std::iter::once(header)
        .chain(lines)
        .map(|line| {
            starts
                .iter()
                .enumerate()
                .map(|(n, &start)| {
                    let end = starts
                        .get(n + 1)
                        .copied()
                        .unwrap_or(line.len())
                        .min(line.len());
                    line.get(start.min(end)..end)
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .collect()
        })
        .collect()
}

/// The operator's Helm chart, relative to the repository root.
pub const CHART: &str = "charts/datapipeline-operator";

/// `[WARNING]`/`[ERROR]` lines of `helm lint` output.
pub fn lint_problems(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.contains("[WARNING]") || l.contains("[ERROR]"))
        .collect()
}
