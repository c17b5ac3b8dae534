//! The operator against a real Kubernetes control plane (etcd, kube-apiserver,
//! controller-manager, scheduler and kwok, from `e2e/services.sh up k8s`): the CRD installs,
//! the API server refuses every invalid example with its message and every edit that would
//! lose or split data (transition rules), the controller creates and keeps the children,
//! garbage collection removes them (volumes included unless kept), a failed generator Job
//! is recreated and reported, and the Helm chart installs.
//! Each test works in a fresh namespace and fails when the API server is unreachable.
//! Run: `e2e/services.sh up k8s && cargo test -p e2e --test operator_control_plane -- --test-threads=1`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use datapipeline_operator::crd::DataPipeline;
use e2e::k8s::{self, RunningController, TestNamespace};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, Node, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};

// ------------------------------------------------------------------------------ helpers

/// `examples/invalid/*.yaml`, sorted.
fn invalid_examples() -> anyhow::Result<Vec<PathBuf>> {
    let dir = k8s::repo_root().join("examples/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    Ok(files)
}

/// What an invalid example's header announces: the field the API server names (`<root>`
/// for rules on the whole object) and the message.
#[derive(Debug, PartialEq)]
struct Expectation {
    field: String,
    message: String,
}

fn expectation(path: &Path) -> anyhow::Result<Expectation> {
    let text = std::fs::read_to_string(path)?;
    let header = |key: &str| {
        text.lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("{} has no `{key}` line in its top comment", path.display()))
    };
    Ok(Expectation {
        field: header("# expect-field:")?,
        message: header("# expect-message:")?,
    })
}

/// The field path the API server reports for a rule's location: rules on the root object
/// are reported at `<nil>`.
fn server_field(expected_field: &str) -> &str {
    if expected_field == "<root>" {
        "<nil>"
    } else {
        expected_field
    }
}

/// Causes the API server reports besides the CEL rule, from its own validation: the
/// `scale` subresource makes it check `specReplicasPath` (`.spec.runtime.replicas`) itself.
fn built_in_causes(example: &str) -> &'static [(&'static str, &'static str)] {
    match example {
        "runtime-negative-replicas" => &[(
            ".spec.runtime.replicas",
            "Invalid value: -1: should be a non-negative integer",
        )],
        _ => &[],
    }
}

/// `value` with every integral float (`0.0`) written as an integer (`0`), as the API
/// server stores JSON numbers.
fn json_numbers_normalised(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => {
            Value::Array(items.into_iter().map(json_numbers_normalised).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, json_numbers_normalised(v)))
                .collect(),
        ),
        other => other,
    }
}

// -------------------------------------------------------------------------------- tests

/// 1. `crds/datapipeline.yaml` installs by server-side apply, becomes Established, is
///    served with the names, subresources and printer columns it declares, and
///    `kubectl explain` shows its fields.
#[tokio::test]
async fn crd_installs_and_is_established() -> anyhow::Result<()> {
    let client = k8s::client().await?;
    let file: CustomResourceDefinition =
        k8s::read_single(&k8s::repo_root().join("crds/datapipeline.yaml"))?;
    let served = k8s::install_crd(&client).await?;

    assert_eq!(served.spec.group, "datapipeline.io");
    assert_eq!(served.spec.scope, "Namespaced");
    assert_eq!(served.spec.names.kind, "DataPipeline");
    assert_eq!(served.spec.names.plural, "datapipelines");
    assert_eq!(served.spec.names.short_names, Some(vec!["dp".to_string()]));
    let accepted = served
        .status
        .as_ref()
        .and_then(|s| s.accepted_names.as_ref())
        .map(|n| n.short_names.clone());
    assert_eq!(
        accepted,
        Some(Some(vec!["dp".to_string()])),
        "accepted names"
    );
    assert_eq!(served.spec.versions.len(), 1);
    let version = &served.spec.versions[0];
    assert_eq!(
        (version.name.as_str(), version.served, version.storage),
        ("v1alpha1", true, true)
    );
    let subresources = version.subresources.as_ref().context("subresources")?;
    assert!(subresources.status.is_some(), "status subresource");
    let scale = subresources.scale.as_ref().context("scale subresource")?;
    assert_eq!(scale.spec_replicas_path, ".spec.runtime.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    // The server keeps the schema and columns exactly as the file gives them (JSON numbers
    // aside: a default of 0.0 comes back as 0).
    let served_schema = json_numbers_normalised(serde_json::to_value(&version.schema)?);
    let file_schema = json_numbers_normalised(serde_json::to_value(&file.spec.versions[0].schema)?);
    ensure!(
        served_schema == file_schema,
        "the served schema differs from crds/datapipeline.yaml"
    );
    assert_eq!(
        version.additional_printer_columns,
        file.spec.versions[0].additional_printer_columns
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Phase", "Ready", "Events/s", "Lag", "Replicas", "Age"]
    );

    // The published OpenAPI lags Established by a moment; explain reads it.
    let explain = k8s::poll_until(
        "kubectl explain datapipeline.spec",
        Duration::from_secs(30),
        || async { Ok(k8s::kubectl(&["explain", "datapipeline.spec"]).await.ok()) },
    )
    .await?;
    let text = explain.stdout;
    assert!(text.contains("KIND:       DataPipeline"), "{text}");
    assert!(text.contains("VERSION:    v1alpha1"), "{text}");
    let fields: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.contains('\t'))
        .map(str::trim)
        .collect();
    let expected: BTreeSet<&str> = [
        "kafka\t<Object> -required-",
        "objectStore\t<Object> -required-",
        "paused\t<boolean>",
        "runtime\t<Object>",
        "search\t<Object> -required-",
        "source\t<Object> -required-",
    ]
    .into_iter()
    .collect();
    assert_eq!(
        fields, expected,
        "fields in `kubectl explain datapipeline.spec`:\n{text}"
    );
    // Doc comments are the user-facing text.
    assert!(
        text.contains("The pipeline-runtime pods that process events into profiles."),
        "{text}"
    );
    Ok(())
}

/// 2. The API server refuses every `examples/invalid/*.yaml` with the field and message its
///    top comment announces (one cause each: the example breaks only that rule), accepts
///    both valid examples with the same defaults the operator's types apply.
#[tokio::test]
async fn invalid_examples_are_refused_and_valid_ones_accepted() -> anyhow::Result<()> {
    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-cel").await?;

    let files = invalid_examples()?;
    ensure!(!files.is_empty(), "no examples/invalid/*.yaml");
    let mut failures = Vec::new();
    for file in &files {
        let expected = expectation(file)?;
        let mut docs = k8s::yaml_documents(file)?;
        ensure!(
            docs.len() == 1,
            "{} holds {} documents",
            file.display(),
            docs.len()
        );
        let outcome = k8s::apply_raw(&client, &ns.name, docs.remove(0)).await?;
        let name = file.display();
        let status = match &outcome {
            Ok(_) => {
                failures.push(format!("{name}: ACCEPTED, expected `{}`", expected.message));
                continue;
            }
            Err(e) => match k8s::api_status(e) {
                Some(status) => status,
                None => bail!("{name}: not an API refusal: {e}"),
            },
        };
        if status.code != 422 || status.reason != "Invalid" {
            failures.push(format!(
                "{name}: {} {} ({})",
                status.code, status.reason, status.message
            ));
            continue;
        }
        if !status.message.contains(&expected.message) {
            failures.push(format!(
                "{name}: message\n    {}\n  does not contain\n    {}",
                status.message, expected.message
            ));
            continue;
        }
        let causes: Vec<(String, String)> = status
            .details
            .iter()
            .flat_map(|d| d.causes.iter())
            .map(|c| (c.field.clone(), c.message.clone()))
            .collect();
        // One cause: the announced rule at the announced field (plus the API server's own
        // checks that the rule duplicates, listed in `built_in_causes`).
        let want_field = server_field(&expected.field);
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let mut cel: Vec<&(String, String)> = causes
            .iter()
            .filter(|c| !built_in_causes(stem).contains(&(c.0.as_str(), c.1.as_str())))
            .collect();
        let matches = cel.len() == 1 && {
            let (field, message) = cel.remove(0);
            // "Invalid value: \"object\": <message>" ("string" for rules on a string).
            field == want_field
                && message.starts_with("Invalid value: ")
                && message.ends_with(&format!("\": {}", expected.message))
        };
        if !matches || causes.len() != 1 + built_in_causes(stem).len() {
            failures.push(format!(
                "{name}: causes {causes:?}, expected the rule's message at {want_field:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid examples not refused as announced:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    // Nothing of them was stored.
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(pipelines.list(&Default::default()).await?.items.len(), 0);

    // Valid examples: accepted, and the server's defaults equal the operator's serde defaults.
    for example in [
        "examples/shop-events.yaml",
        "examples/external-services.yaml",
    ] {
        let path = k8s::repo_root().join(example);
        let applied = k8s::apply_file(&client, &ns.name, &path).await?;
        let raw = k8s::yaml_documents(&path)?
            .into_iter()
            .find(|d| d["kind"] == "DataPipeline")
            .context("a DataPipeline in the example")?;
        let local: DataPipeline = serde_json::from_value(raw)?;
        let name = local.metadata.name.clone().context("example has a name")?;
        ensure!(applied
            .iter()
            .any(|o| o.metadata.name.as_deref() == Some(&name)));
        let served = pipelines.get(&name).await?;
        assert_eq!(
            served.spec, local.spec,
            "{example}: spec as stored by the API server"
        );
        pipelines.delete(&name, &Default::default()).await?;
        k8s::poll_until(
            &format!("{example} deleted"),
            Duration::from_secs(30),
            || async { Ok(pipelines.get_opt(&name).await?.is_none().then_some(())) },
        )
        .await?;
    }

    Ok(())
}

/// One refused edit: the patch, the field the API server names and the rule's message.
struct RefusedEdit {
    what: &'static str,
    patch: serde_json::Value,
    field: &'static str,
    message: String,
}

/// 2b. Transition rules: on a stored pipeline the API server refuses, each with exactly
///     its rule's cause, a change of the partitions (up or down), of the managed Kafka
///     node count, and of the storage size or class of Kafka, MinIO and search; it
///     accepts an edit that changes none of them, and the pipeline is unchanged by the
///     refused ones.
#[tokio::test]
async fn edits_that_would_lose_data_are_refused() -> anyhow::Result<()> {
    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-transition").await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    k8s::apply_file(
        &client,
        &ns.name,
        &k8s::repo_root().join("examples/shop-events.yaml"),
    )
    .await?;
    let stored = pipelines.get(SHOP).await?;

    let partitions_why = "ingest sends each user to partition hash(user_id) modulo the partition count and the runtime keeps each profile with its partition, so another count would split profiles between partitions (and Kafka cannot remove partitions); create a new pipeline for another partition count";
    let size = |field: &str, claims: &str| {
        format!("{field}.storage.size cannot change from 5Gi to 20Gi: it is part of the volumeClaimTemplates of the StatefulSet, which Kubernetes does not let change; to grow the volumes, expand the PersistentVolumeClaims {claims} themselves (if their StorageClass allows expansion), otherwise create a new pipeline")
    };
    let class = |field: &str| {
        format!("{field}.storage.storageClassName cannot change: it is part of the volumeClaimTemplates of the StatefulSet, which Kubernetes does not let change, and existing volumes cannot move to another StorageClass; create a new pipeline")
    };
    let edits = [
        RefusedEdit {
            what: "more partitions",
            patch: serde_json::json!({"spec": {"kafka": {"partitions": 8}}}),
            field: "spec.kafka",
            message: format!(
                "spec.kafka.partitions cannot change (it is 6, requested 8): {partitions_why}"
            ),
        },
        RefusedEdit {
            what: "fewer partitions",
            patch: serde_json::json!({"spec": {"kafka": {"partitions": 3}}}),
            field: "spec.kafka",
            message: format!(
                "spec.kafka.partitions cannot change (it is 6, requested 3): {partitions_why}"
            ),
        },
        RefusedEdit {
            what: "three Kafka nodes instead of one",
            patch: serde_json::json!({"spec": {"kafka": {"managed": {"replicas": 3}}}}),
            field: "spec.kafka.managed",
            message: "spec.kafka.managed.replicas cannot change from 1 to 3: the nodes form a static KRaft controller quorum (controller.quorum.voters names every node and is fixed when their storage is formatted), which Kafka cannot grow or shrink; create a new pipeline with the replicas you want".into(),
        },
        RefusedEdit {
            what: "a bigger Kafka volume",
            patch: serde_json::json!({"spec": {"kafka": {"managed": {"storage": {"size": "20Gi"}}}}}),
            field: "spec.kafka.managed",
            message: size("spec.kafka.managed", "data-<name>-kafka-<n>"),
        },
        RefusedEdit {
            what: "a bigger MinIO volume",
            patch: serde_json::json!({"spec": {"objectStore": {"managed": {"storage": {"size": "20Gi"}}}}}),
            field: "spec.objectStore.managed",
            message: size("spec.objectStore.managed", "data-<name>-minio-0"),
        },
        RefusedEdit {
            what: "a bigger search volume",
            patch: serde_json::json!({"spec": {"search": {"managed": {"storage": {"size": "20Gi"}}}}}),
            field: "spec.search.managed",
            message: size("spec.search.managed", "data-<name>-es-<n>"),
        },
        RefusedEdit {
            what: "another StorageClass for Kafka",
            patch: serde_json::json!({"spec": {"kafka": {"managed": {"storage": {"storageClassName": "fast"}}}}}),
            field: "spec.kafka.managed",
            message: class("spec.kafka.managed"),
        },
        RefusedEdit {
            what: "another StorageClass for MinIO",
            patch: serde_json::json!({"spec": {"objectStore": {"managed": {"storage": {"storageClassName": "fast"}}}}}),
            field: "spec.objectStore.managed",
            message: class("spec.objectStore.managed"),
        },
        RefusedEdit {
            what: "another StorageClass for search",
            patch: serde_json::json!({"spec": {"search": {"managed": {"storage": {"storageClassName": "fast"}}}}}),
            field: "spec.search.managed",
            message: class("spec.search.managed"),
        },
    ];
    let params = PatchParams::default();
    let mut failures = Vec::new();
    for edit in &edits {
        let outcome = pipelines
            .patch(SHOP, &params, &Patch::Merge(&edit.patch))
            .await;
        let refused = match outcome {
            Ok(_) => {
                failures.push(format!("{}: ACCEPTED", edit.what));
                continue;
            }
            Err(e) => e,
        };
        let status = k8s::api_status(&refused).context("an API refusal")?;
        let causes: Vec<(String, String)> = status
            .details
            .iter()
            .flat_map(|d| d.causes.iter())
            .map(|c| (c.field.clone(), c.message.clone()))
            .collect();
        let want = vec![(
            edit.field.to_string(),
            format!("Invalid value: \"object\": {}", edit.message),
        )];
        if status.code != 422 || causes != want {
            failures.push(format!(
                "{}: {} {:?}, expected {want:?}",
                edit.what, status.code, causes
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "edits not refused as expected:\n{}",
        failures.join("\n")
    );
    let after = pipelines.get(SHOP).await?;
    assert_eq!(after.spec, stored.spec, "refused edits changed nothing");
    assert_eq!(after.metadata.generation, stored.metadata.generation);

    // Everything else may change: resources, the image, retention, the runtime.
    let allowed = serde_json::json!({"spec": {
        "kafka": {"retentionHours": 24, "managed": {"image": "apache/kafka:4.1.1",
                  "resources": {"limits": {"memory": "2Gi"}}}},
        "objectStore": {"managed": {"resources": {"limits": {"memory": "1Gi"}}}},
        "runtime": {"checkpointIntervalSeconds": 10}
    }});
    let edited = pipelines
        .patch(SHOP, &params, &Patch::Merge(&allowed))
        .await?;
    assert_eq!(edited.spec.kafka.retention_hours, 24);
    assert_eq!(edited.spec.kafka.partitions, 6);
    Ok(())
}

// --------------------------------------------------------- the controller on a pipeline

const SHOP: &str = "shop";
/// Bound on reaching Running from nothing (kwok makes pods ready within seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// One object of a kind the operator creates, as listed in the test namespace.
#[derive(Clone, Debug, PartialEq)]
struct Listed {
    kind: &'static str,
    name: String,
    uid: String,
    resource_version: String,
    owners: Vec<OwnerReference>,
    managers: Vec<String>,
}

async fn list_kind<K>(client: &Client, namespace: &str) -> anyhow::Result<Vec<Listed>>
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
async fn inventory(client: &Client, namespace: &str) -> anyhow::Result<Vec<Listed>> {
    let mut all = Vec::new();
    all.extend(list_kind::<Secret>(client, namespace).await?);
    all.extend(list_kind::<ConfigMap>(client, namespace).await?);
    all.extend(list_kind::<Service>(client, namespace).await?);
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
fn assert_children(listed: &[Listed], expected: &[(&str, &str)]) {
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
const SHOP_MANAGED_CHILDREN: [(&str, &str); 19] = [
    ("ConfigMap", "shop-runtime-config"),
    ("Deployment", "shop-runtime"),
    ("Job", "shop-generate-"),
    ("Job", "shop-kafka-topics-"),
    ("Job", "shop-minio-bucket-"),
    ("PodDisruptionBudget", "shop-es"),
    ("PodDisruptionBudget", "shop-kafka"),
    ("PodDisruptionBudget", "shop-runtime"),
    ("Secret", "shop-es-elastic-user"),
    ("Secret", "shop-es-transport"),
    ("Secret", "shop-minio-credentials"),
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

fn assert_owned_by(listed: &[Listed], dp: &DataPipeline) {
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
struct RunningPipeline {
    client: Client,
    pipelines: Api<DataPipeline>,
    dp: DataPipeline,
    // Dropped in declaration order: the controller stops before the namespace goes.
    controller: RunningController,
    ns: TestNamespace,
}

async fn running_pipeline(prefix: &str, example: &str) -> anyhow::Result<RunningPipeline> {
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
async fn wait_until_measured(pipelines: &Api<DataPipeline>) -> anyhow::Result<DataPipeline> {
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
async fn wait_until_settled(client: &Client, namespace: &str) -> anyhow::Result<()> {
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

fn secret_text(secret: &Secret, key: &str) -> anyhow::Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret {} has no key {key}", secret.name_any()))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

fn is_generated_password(value: &str) -> bool {
    value.len() == 32 && value.chars().all(|c| c.is_ascii_alphanumeric())
}

/// 3. With the controller running in-process, `examples/shop-events.yaml` gets every child
///    the builders make, each owned (controller=true) by the pipeline; credentials are
///    generated into Secrets and reach pods only by reference; the config checksum
///    annotation matches the ConfigMap; kwok makes the workloads ready and the pipeline
///    reaches Running with every condition True.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_pipeline_gets_owned_children_and_becomes_ready() -> anyhow::Result<()> {
    let run = running_pipeline("e2e-managed", "examples/shop-events.yaml").await?;
    let measured = wait_until_measured(&run.pipelines).await?;
    let (client, ns, dp) = (&run.client, run.ns.name.as_str(), &measured);

    let children = inventory(client, ns).await?;
    assert_children(&children, &SHOP_MANAGED_CHILDREN);
    assert_owned_by(&children, dp);

    // Status: every component ready, in the documented order, with exact reasons.
    let status = dp.status.as_ref().context("status")?;
    let conditions: Vec<(&str, &str, &str)> = status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        conditions,
        [
            ("KafkaReady", "True", "WorkloadReady"),
            ("ObjectStoreReady", "True", "WorkloadReady"),
            ("SearchReady", "True", "WorkloadReady"),
            ("RuntimeReady", "True", "WorkloadReady"),
            ("Ready", "True", "AllComponentsReady"),
            ("ThroughputMeasured", "False", "KafkaUnreachable"),
        ]
    );
    assert_eq!(status.phase.map(|p| p.as_str()), Some("Running"));
    // kwok runs no Kafka: the operator cannot read offsets, and says so without leaving
    // Running (the components themselves are ready).
    let measured =
        k8s::pipeline_condition(dp, "ThroughputMeasured").context("ThroughputMeasured")?;
    let unreachable = format!("cannot reach Kafka at shop-kafka.{ns}.svc:9092: ");
    assert!(
        measured.message.starts_with(&unreachable),
        "{}",
        measured.message
    );
    let ready = k8s::pipeline_condition(dp, "Ready").context("Ready")?;
    assert_eq!(
        ready.message,
        "Kafka, the object store, search and the runtime are ready"
    );
    assert_eq!(status.observed_generation, dp.metadata.generation);
    assert_eq!(status.replicas_summary.as_deref(), Some("1/1"));
    assert_eq!((status.replicas, status.ready_replicas), (Some(1), Some(1)));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/component=runtime,app.kubernetes.io/instance=shop,app.kubernetes.io/name=pipeline-runtime")
    );
    let components = status.components.as_ref().context("components")?;
    for (name, health, replicas) in [
        ("kafka", &components.kafka, Some(1)),
        ("objectStore", &components.object_store, Some(1)),
        ("search", &components.search, Some(1)),
        ("runtime", &components.runtime, Some(1)),
    ] {
        assert_eq!(
            (
                health.mode.as_str(),
                health.ready,
                health.ready_replicas,
                health.desired_replicas
            ),
            ("Managed", true, replicas, replicas),
            "components.{name}: {health:?}"
        );
    }
    assert!(components.ingest.ready, "{:?}", components.ingest);

    // Workloads as kwok left them.
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    for name in ["shop-kafka", "shop-minio", "shop-es"] {
        let sts = statefulsets.get(name).await?;
        let ready = sts.status.as_ref().and_then(|s| s.ready_replicas);
        assert_eq!(ready, Some(1), "{name} ready replicas");
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    for name in ["data-shop-kafka-0", "data-shop-minio-0", "data-shop-es-0"] {
        let pvc = claims.get(name).await?;
        let phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
        let size = pvc
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone());
        assert_eq!(
            (phase.as_deref(), size.as_deref()),
            (Some("Bound"), Some("5Gi")),
            "{name}"
        );
    }
    // kwok completes Job pods; the generator Job is created only once Kafka and MinIO
    // are ready (the reconcile that reached Running), so it may still be running.
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let succeeded = k8s::poll_until(
        "the three Jobs to succeed",
        Duration::from_secs(60),
        || async {
            let succeeded: Vec<(String, Option<i32>)> = jobs
                .list(&Default::default())
                .await?
                .iter()
                .map(|j| (j.name_any(), j.status.as_ref().and_then(|s| s.succeeded)))
                .collect();
            Ok(
                (succeeded.len() == 3 && succeeded.iter().all(|(_, s)| *s == Some(1)))
                    .then_some(succeeded),
            )
        },
    )
    .await?;
    let prefixes: Vec<&str> = succeeded
        .iter()
        .map(|(name, _)| name.rsplit_once('-').map_or(name.as_str(), |(p, _)| p))
        .collect();
    assert_eq!(
        prefixes,
        ["shop-generate", "shop-kafka-topics", "shop-minio-bucket"]
    );

    // Generated credentials: in Secrets, never as literals in a pod spec.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let minio = secrets.get("shop-minio-credentials").await?;
    assert_eq!(secret_text(&minio, "accessKeyId")?, "shop-admin");
    let minio_secret = secret_text(&minio, "secretAccessKey")?;
    assert!(
        is_generated_password(&minio_secret),
        "MinIO secret key is 32 alphanumerics"
    );
    let elastic = secrets.get("shop-es-elastic-user").await?;
    let elastic_password = secret_text(&elastic, "elastic")?;
    assert!(
        is_generated_password(&elastic_password),
        "elastic password is 32 alphanumerics"
    );
    assert_ne!(minio_secret, elastic_password);
    let transport = secrets.get("shop-es-transport").await?;
    assert_eq!(transport.type_.as_deref(), Some("kubernetes.io/tls"));
    for key in ["ca.crt", "tls.crt"] {
        assert!(
            secret_text(&transport, key)?.starts_with("-----BEGIN CERTIFICATE-----"),
            "{key}"
        );
    }
    assert!(secret_text(&transport, "tls.key")?.starts_with("-----BEGIN PRIVATE KEY-----"));

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let runtime = deployments.get("shop-runtime").await?;
    let runtime_json = serde_json::to_string(&runtime)?;
    let statefulsets_json = serde_json::to_string(&statefulsets.list(&Default::default()).await?)?;
    let jobs_json = serde_json::to_string(&jobs.list(&Default::default()).await?)?;
    for secret in [&minio_secret, &elastic_password] {
        for (what, json) in [
            ("runtime Deployment", &runtime_json),
            ("StatefulSets", &statefulsets_json),
            ("Jobs", &jobs_json),
        ] {
            assert!(
                !json.contains(secret.as_str()),
                "a generated credential appears in the {what}"
            );
        }
    }
    let pod = runtime
        .spec
        .as_ref()
        .map(|s| &s.template)
        .context("pod template")?;
    let container = &pod.spec.as_ref().context("pod spec")?.containers[0];
    assert_eq!(container.image.as_deref(), Some(k8s::TEST_RUNTIME_IMAGE));
    let secret_refs: BTreeSet<(String, String)> = container
        .env
        .iter()
        .flatten()
        .filter_map(|v| v.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|r| (r.name.clone(), r.key.clone()))
        .collect();
    let want_refs: BTreeSet<(String, String)> = [
        ("shop-minio-credentials", "accessKeyId"),
        ("shop-minio-credentials", "secretAccessKey"),
        ("shop-es-elastic-user", "elastic"),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_string(), k.to_string()))
    .collect();
    assert_eq!(
        secret_refs, want_refs,
        "secretKeyRefs of the runtime container"
    );

    // The config checksum annotation is the sha256 of the ConfigMap's `key=value\n` lines.
    let config = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("shop-runtime-config")
        .await?;
    let rendered: String = config
        .data
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let checksum: String = Sha256::digest(rendered.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let annotation = pod
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("checksum/config"));
    assert_eq!(
        annotation,
        Some(&checksum),
        "checksum/config of the runtime pods"
    );
    let data = config.data.as_ref().context("ConfigMap data")?;
    assert_eq!(
        data.get(pipeline_config::env::S3_BUCKET)
            .map(String::as_str),
        Some("shop-lake")
    );
    assert_eq!(
        data.get(pipeline_config::env::SEARCH_INDEX)
            .map(String::as_str),
        Some("shop-profiles")
    );
    assert_eq!(
        data.get(pipeline_config::env::TOPIC_PARTITIONS)
            .map(String::as_str),
        Some("6")
    );

    // PodDisruptionBudgets select exactly their workload's pods.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    for (pdb, selector) in [
        (
            "shop-kafka",
            statefulsets
                .get("shop-kafka")
                .await?
                .spec
                .map(|s| s.selector),
        ),
        (
            "shop-es",
            statefulsets.get("shop-es").await?.spec.map(|s| s.selector),
        ),
        ("shop-runtime", runtime.spec.clone().map(|s| s.selector)),
    ] {
        let spec = budgets.get(pdb).await?.spec.context("PDB spec")?;
        assert_eq!(spec.selector, selector, "selector of PDB {pdb}");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)), "PDB {pdb}");
    }

    // The phase change is announced as a Kubernetes Event on the pipeline.
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    let expected_note = "-> Running: Kafka, the object store, search and the runtime are ready";
    k8s::poll_until(
        "a PhaseChanged Event to Running",
        Duration::from_secs(30),
        || async {
            let found = events
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .any(|e| {
                    e.involved_object.name.as_deref() == Some(SHOP)
                        && e.reason.as_deref() == Some("PhaseChanged")
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.ends_with(expected_note))
                });
            Ok(found.then_some(()))
        },
    )
    .await?;
    println!(
        "reconciles to reach Running: applied={} blocked={} failed={}",
        run.controller.reconciles("applied"),
        run.controller.reconciles("blocked"),
        run.controller.reconciles("failed")
    );
    Ok(())
}

/// 4. A second reconcile of a settled pipeline changes nothing: after a reconcile
///    triggered by an annotation, every child keeps its resourceVersion and the status is
///    unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_reconcile_changes_nothing() -> anyhow::Result<()> {
    let run = running_pipeline("e2e-idem", "examples/shop-events.yaml").await?;
    let (client, ns) = (&run.client, run.ns.name.as_str());
    // First-time effects end: the first throughput measurement, the workload controllers'
    // status updates, and one reconcile of the settled state.
    wait_until_measured(&run.pipelines).await?;
    wait_until_settled(client, ns).await?;
    let poke = |round: &str| {
        let annotation =
            serde_json::json!({"metadata": {"annotations": {"e2e.datapipeline.io/poke": round}}});
        let (pipelines, controller) = (&run.pipelines, &run.controller);
        async move {
            let applied_before = controller.reconciles("applied");
            pipelines
                .patch(SHOP, &PatchParams::default(), &Patch::Merge(&annotation))
                .await?;
            // A reconcile's applies and status write come after its Kafka measurement, so
            // the next one to complete wrote after this point.
            k8s::poll_until(
                "a reconcile after the annotation",
                Duration::from_secs(60),
                || async {
                    controller.ensure_running()?;
                    Ok((controller.reconciles("applied") > applied_before).then_some(()))
                },
            )
            .await
        }
    };
    poke("warm-up").await?;

    let before = inventory(client, ns).await?;
    assert_children(&before, &SHOP_MANAGED_CHILDREN);
    let status_before = run.pipelines.get(SHOP).await?.status;
    let applied_before = run.controller.reconciles("applied");
    poke("second").await?;

    let after = inventory(client, ns).await?;
    let changed: Vec<String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| {
            format!(
                "{}/{}: resourceVersion {} -> {}; managers now {:?}",
                b.kind, b.name, b.resource_version, a.resource_version, a.managers
            )
        })
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "children added or removed: {after:?}"
    );
    assert!(
        changed.is_empty(),
        "the second reconcile changed children:\n{}",
        changed.join("\n")
    );
    let status_after = run.pipelines.get(SHOP).await?.status;
    assert_eq!(
        status_after, status_before,
        "status after a no-op reconcile"
    );
    println!(
        "reconciles: applied {} before the annotation, {} after",
        applied_before,
        run.controller.reconciles("applied")
    );
    Ok(())
}

/// Names of the StatefulSets owning a volume claim.
fn claim_owners(claim: &PersistentVolumeClaim) -> Vec<String> {
    claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "StatefulSet")
        .map(|o| o.name.clone())
        .collect()
}

/// 5. Deleting the pipeline removes its children: the real garbage collector follows the
///    owner references (and the workloads' own pods and ReplicaSets go with them). The
///    volume claims go too (the StatefulSets' `persistentVolumeClaimRetentionPolicy`),
///    except those of a service whose `storage.retainOnDelete` is true: here Kafka's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_pipeline_garbage_collects_children() -> anyhow::Result<()> {
    let run = running_pipeline("e2e-gc", "examples/shop-events.yaml").await?;
    let (client, ns) = (&run.client, run.ns.name.as_str());
    let children = inventory(client, ns).await?;
    assert_children(&children, &SHOP_MANAGED_CHILDREN);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pipeline_pods = ListParams::default().labels("app.kubernetes.io/instance=shop");
    // kafka, minio, es, runtime, and one pod per Job (3; the generator's is created once
    // Kafka and MinIO are ready, so it may still be on its way).
    k8s::poll_until(
        "the 7 pods of the pipeline",
        Duration::from_secs(60),
        || async { Ok((pods.list(&pipeline_pods).await?.items.len() == 7).then_some(())) },
    )
    .await?;

    // Every claim is owned by its StatefulSet (whenDeleted: Delete), until Kafka's volume
    // is to be kept: the StatefulSet controller then lets go of it.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let owners = || async {
        let mut owners: Vec<(String, Vec<String>)> = claims
            .list(&Default::default())
            .await?
            .iter()
            .map(|c| (c.name_any(), claim_owners(c)))
            .collect();
        owners.sort();
        anyhow::Ok(owners)
    };
    let owned = |kafka_owned: bool| {
        let kafka = if kafka_owned {
            vec!["shop-kafka".to_string()]
        } else {
            vec![]
        };
        vec![
            ("data-shop-es-0".to_string(), vec!["shop-es".to_string()]),
            ("data-shop-kafka-0".to_string(), kafka),
            (
                "data-shop-minio-0".to_string(),
                vec!["shop-minio".to_string()],
            ),
        ]
    };
    let all_owned = owned(true);
    k8s::poll_until(
        "every volume claim owned by its StatefulSet",
        Duration::from_secs(60),
        || async { Ok((owners().await? == all_owned).then_some(())) },
    )
    .await?;
    let keep =
        serde_json::json!({"spec": {"kafka": {"managed": {"storage": {"retainOnDelete": true}}}}});
    run.pipelines
        .patch(SHOP, &PatchParams::default(), &Patch::Merge(&keep))
        .await?;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    k8s::poll_until(
        "shop-kafka to retain its volumes when deleted",
        Duration::from_secs(60),
        || async {
            let policy = statefulsets
                .get("shop-kafka")
                .await?
                .spec
                .and_then(|s| s.persistent_volume_claim_retention_policy);
            Ok(policy
                .is_some_and(|p| {
                    p.when_deleted.as_deref() == Some("Retain")
                        && p.when_scaled.as_deref() == Some("Retain")
                })
                .then_some(()))
        },
    )
    .await?;
    let kafka_kept = owned(false);
    k8s::poll_until(
        "the Kafka volume claim released by its StatefulSet",
        Duration::from_secs(60),
        || async { Ok((owners().await? == kafka_kept).then_some(())) },
    )
    .await?;

    run.pipelines.delete(SHOP, &DeleteParams::default()).await?;
    k8s::poll_until(
        "the DataPipeline to be gone",
        Duration::from_secs(30),
        || async { Ok(run.pipelines.get_opt(SHOP).await?.is_none().then_some(())) },
    )
    .await?;
    let remaining = k8s::poll_until(
        "the garbage collector to delete every child",
        Duration::from_secs(120),
        || async {
            let left = inventory(client, ns).await?;
            let pods_left = pods.list(&pipeline_pods).await?.items.len();
            Ok((left.is_empty() && pods_left == 0).then_some(()))
        },
    )
    .await;
    if let Err(e) = remaining {
        let left: Vec<String> = inventory(client, ns)
            .await?
            .iter()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .collect();
        bail!("{e:#}; still there: {left:?}");
    }
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    assert_eq!(
        replica_sets.list(&Default::default()).await?.items.len(),
        0,
        "ReplicaSets left"
    );
    // The volumes went with their StatefulSets, but for the one asked to be kept.
    let left = k8s::poll_until(
        "the garbage collector to delete the volume claims not kept",
        Duration::from_secs(120),
        || async {
            let left = owners().await?;
            Ok((left.len() == 1).then_some(left))
        },
    )
    .await?;
    assert_eq!(
        left,
        vec![("data-shop-kafka-0".to_string(), vec![])],
        "volume claims left after deleting the pipeline"
    );
    Ok(())
}

/// 6. A pipeline on external services whose Secrets do not exist is blocked with a
///    condition naming the first missing Secret, creates nothing, and proceeds as each
///    Secret appears, to Running once all three exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_blocks_until_it_is_created() -> anyhow::Result<()> {
    k8s::init_logging();
    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-secret").await?;
    let controller = RunningController::start(&client, &ns.name);
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);

    let docs = k8s::yaml_documents(&k8s::repo_root().join("examples/external-services.yaml"))?;
    let (pipeline, secrets): (Vec<_>, Vec<_>) =
        docs.into_iter().partition(|d| d["kind"] == "DataPipeline");
    let secret_names: Vec<String> = secrets
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str().map(String::from))
        .collect();
    assert_eq!(
        secret_names,
        [
            "shop-kafka-user",
            "shop-s3-credentials",
            "shop-opensearch-user"
        ]
    );
    let pipeline = pipeline.into_iter().next().context("the DataPipeline")?;
    k8s::apply_raw(&client, &ns.name, pipeline).await??;

    // Which Secret each step misses, the condition that names it, and the field naming it.
    let steps = [
        (
            "shop-kafka-user",
            "KafkaReady",
            "spec.kafka.external.secretRef",
            "username and password",
        ),
        (
            "shop-s3-credentials",
            "ObjectStoreReady",
            "spec.objectStore.external.secretRef",
            "accessKeyId and secretAccessKey",
        ),
        (
            "shop-opensearch-user",
            "SearchReady",
            "spec.search.external.secretRef",
            "username and password",
        ),
    ];
    for (i, (missing, condition, field, keys)) in steps.iter().enumerate() {
        let message = format!(
            "Secret {}/{missing} (named by {field}) does not exist: create it with the keys {keys} or correct {field}",
            ns.name
        );
        let dp = k8s::wait_for(
            &pipelines,
            SHOP,
            &format!("Ready=False naming {missing}"),
            Duration::from_secs(60),
            |dp: Option<&DataPipeline>| {
                dp.and_then(|dp| k8s::pipeline_condition(dp, "Ready"))
                    .is_some_and(|c| c.status == "False" && c.message == message)
            },
        )
        .await?;
        let status = dp.status.as_ref().context("status")?;
        assert_eq!(status.phase.map(|p| p.as_str()), Some("Pending"));
        for type_ in ["Ready", condition] {
            let c = k8s::pipeline_condition(&dp, type_).context("condition")?;
            assert_eq!(
                (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
                ("False", "SecretNotFound", message.as_str()),
                "{type_}"
            );
        }
        // Blocked before apply: nothing exists but the Secrets the test created.
        let children = inventory(&client, &ns.name).await?;
        let names: Vec<String> = children
            .iter()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .collect();
        let created: Vec<String> = secret_names[..i]
            .iter()
            .map(|n| format!("Secret/{n}"))
            .collect();
        assert_eq!(names, created, "objects while blocked on {missing}");
        // Creating the Secret wakes the controller (it watches referenced Secrets).
        k8s::apply_raw(&client, &ns.name, secrets[i].clone()).await??;
    }
    k8s::wait_until_running(&pipelines, SHOP, READY_TIMEOUT)
        .await
        .map_err(|e| match controller.ensure_running() {
            Ok(()) => e,
            Err(stopped) => e.context(stopped),
        })?;
    // The first Applied reconcile saw KafkaReady=False (blocked) and skipped the
    // measurement; the next one measures.
    let dp = wait_until_measured(&pipelines).await?;
    let conditions: Vec<(&str, &str, &str)> = dp
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        conditions,
        [
            ("KafkaReady", "True", "ExternalService"),
            ("ObjectStoreReady", "True", "ExternalService"),
            ("SearchReady", "True", "ExternalService"),
            ("RuntimeReady", "True", "WorkloadReady"),
            ("Ready", "True", "AllComponentsReady"),
            // The example's Kafka does not exist here.
            ("ThroughputMeasured", "False", "KafkaUnreachable"),
        ]
    );
    let kafka = k8s::pipeline_condition(&dp, "KafkaReady").context("KafkaReady")?;
    assert_eq!(
        kafka.message,
        "external Kafka at my-cluster-kafka-bootstrap.kafka.svc:9093; the operator does not probe external services, the runtime reports connection errors in its logs"
    );
    let status = dp.status.as_ref().context("status")?;
    assert_eq!(status.replicas_summary.as_deref(), Some("3/3"));
    let children = inventory(&client, &ns.name).await?;
    let operator_made: Vec<Listed> = children
        .into_iter()
        .filter(|o| o.kind != "Secret")
        .collect();
    assert_children(
        &operator_made,
        &[
            ("ConfigMap", "shop-runtime-config"),
            ("Deployment", "shop-ingest"),
            ("Deployment", "shop-runtime"),
            ("PodDisruptionBudget", "shop-runtime"),
        ],
    );
    assert_owned_by(&operator_made, &dp);
    // The user's Secrets stay the user's: no owner reference was added to them.
    for secret in list_kind::<Secret>(&client, &ns.name).await? {
        assert!(
            secret.owners.is_empty(),
            "Secret {} got owners {:?}",
            secret.name,
            secret.owners
        );
    }
    Ok(())
}

/// 9. A generator Job that fails is recreated, and the status and an Event say so. kwok
///    completes every Job pod it runs, so the test makes this one fail for real: the
///    pipeline starts paused, so the operator creates its generator Job suspended (once
///    Kafka and MinIO are ready), and the test gives that never-started Job a node
///    selector no node has and a one-second deadline (both may change while a Job is
///    suspended). Resumed, the Job's pod cannot be scheduled and the Job controller fails
///    it with DeadlineExceeded; the operator deletes it and the next apply creates it as
///    built, which kwok completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_generator_job_is_recreated_and_reported() -> anyhow::Result<()> {
    k8s::init_logging();
    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-ingest-retry").await?;
    let controller = RunningController::start(&client, &ns.name);
    let mut pipeline = k8s::yaml_documents(&k8s::repo_root().join("examples/shop-events.yaml"))?
        .into_iter()
        .find(|d| d["kind"] == "DataPipeline")
        .context("the DataPipeline")?;
    pipeline["spec"]["paused"] = serde_json::json!(true);
    k8s::apply_raw(&client, &ns.name, pipeline).await??;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let generator_of = |list: Vec<Job>| {
        list.into_iter()
            .find(|j| j.name_any().starts_with("shop-generate-"))
    };

    let suspended = k8s::poll_until(
        "the suspended generator Job",
        Duration::from_secs(120),
        || async {
            controller.ensure_running()?;
            Ok(generator_of(jobs.list(&Default::default()).await?.items))
        },
    )
    .await?;
    let name = suspended.name_any();
    let first_uid = suspended.metadata.uid.clone().context("uid")?;
    assert_eq!(
        suspended.spec.as_ref().and_then(|s| s.suspend),
        Some(true),
        "a paused pipeline's generator Job is suspended"
    );
    let unschedulable = serde_json::json!({"spec": {
        "activeDeadlineSeconds": 1,
        "template": {"spec": {"nodeSelector": {"e2e.datapipeline.io/nowhere": "true"}}}
    }});
    jobs.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&unschedulable),
    )
    .await?;
    let resume = serde_json::json!({"spec": {"paused": false}});
    pipelines
        .patch(SHOP, &PatchParams::default(), &Patch::Merge(&resume))
        .await?;

    let failure = "DeadlineExceeded: Job was active longer than specified deadline";
    let dp = k8s::wait_for(
        &pipelines,
        SHOP,
        "status.ingestJob to record a recreation",
        Duration::from_secs(120),
        |dp: Option<&DataPipeline>| {
            dp.and_then(|dp| dp.status.as_ref())
                .and_then(|s| s.ingest_job.as_ref())
                .is_some_and(|r| r.recreations == 1)
        },
    )
    .await
    .map_err(|e| match controller.ensure_running() {
        Ok(()) => e,
        Err(stopped) => e.context(stopped),
    })?;
    let record = dp
        .status
        .as_ref()
        .and_then(|s| s.ingest_job.clone())
        .context("status.ingestJob")?;
    assert_eq!(
        (record.name.as_str(), record.last_failure.as_str()),
        (name.as_str(), failure)
    );
    assert!(record.last_recreation_time.is_some());

    // The Job is back under the same name, as built (no node selector, no deadline), and
    // kwok completes it; the pipeline runs, and says what happened.
    let recreated = k8s::wait_for(
        &jobs,
        &name,
        "the recreated generator Job to complete",
        Duration::from_secs(120),
        |job: Option<&Job>| {
            job.is_some_and(|j| {
                j.metadata.uid.as_deref() != Some(first_uid.as_str())
                    && j.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Complete" && c.status == "True")
                    })
            })
        },
    )
    .await?;
    let spec = recreated.spec.as_ref().context("Job spec")?;
    assert_eq!(spec.active_deadline_seconds, None);
    assert_eq!(
        spec.template
            .spec
            .as_ref()
            .and_then(|p| p.node_selector.clone()),
        None
    );
    let dp = k8s::wait_for(
        &pipelines,
        SHOP,
        "RuntimeReady to report the completed, recreated Job",
        Duration::from_secs(120),
        |dp: Option<&DataPipeline>| {
            dp.and_then(|dp| k8s::pipeline_condition(dp, "RuntimeReady"))
                .is_some_and(|c| c.status == "True" && c.message.contains("completed"))
        },
    )
    .await?;
    let runtime = k8s::pipeline_condition(&dp, "RuntimeReady").context("RuntimeReady")?;
    assert_eq!(
        runtime.message,
        format!("1/1 runtime pods ready; generator Job {name} completed, recreated 1 time after failures (last: {failure})")
    );
    let status = dp.status.as_ref().context("status")?;
    assert_eq!(
        status.ingest_job.as_ref(),
        Some(&record),
        "the record stays"
    );

    // The recreation is an Event on the pipeline.
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), &ns.name);
    let note = format!("generator Job {name} failed ({failure}); deleted it to run it again (recreation 1 of 3): the new run resumes from its progress record and publishes no event twice");
    let recreations: Vec<(Option<String>, Option<String>)> = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("IngestJobRecreated"))
        .map(|e| (e.type_, e.message))
        .collect();
    assert_eq!(recreations, vec![(Some("Warning".to_string()), Some(note))]);
    drop(controller);
    Ok(())
}

/// The cells of kubectl's table output, cut at the header's column starts (cells may be
/// empty, so splitting on whitespace would shift them).
fn table_cells(output: &str) -> Vec<Vec<String>> {
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

/// 8. `kubectl get dp` on a Running pipeline prints the printer columns; the output is
///    printed for the README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_dp_prints_the_printer_columns() -> anyhow::Result<()> {
    let run = running_pipeline("e2e-getdp", "examples/shop-events.yaml").await?;
    let ns = run.ns.name.as_str();
    let output = k8s::kubectl(&["-n", ns, "get", "dp"]).await?.stdout;
    println!("$ kubectl get dp\n{output}");
    let table = table_cells(&output);
    assert_eq!(table.len(), 2, "{output}");
    assert_eq!(
        table[0],
        ["NAME", "PHASE", "READY", "EVENTS/S", "LAG", "REPLICAS", "AGE"]
    );
    let status = run.dp.status.as_ref().context("status")?;
    // No throughput is measured (no Kafka behind kwok): those cells are empty.
    let (events, lag) = match &status.throughput {
        Some(t) => (
            t.processed_per_second.to_string(),
            t.consumer_lag.to_string(),
        ),
        None => (String::new(), String::new()),
    };
    assert_eq!(
        table[1][..6],
        [
            "shop",
            "Running",
            "True",
            events.as_str(),
            lag.as_str(),
            "1/1"
        ],
        "{output}"
    );
    let age = &table[1][6];
    assert!(age.ends_with('s') || age.ends_with('m'), "AGE {age:?}");
    let wide = k8s::kubectl(&[
        "-n",
        ns,
        "get",
        "datapipelines.datapipeline.io",
        "shop",
        "-o",
        "wide",
    ])
    .await?
    .stdout;
    println!("$ kubectl get datapipelines.datapipeline.io shop -o wide\n{wide}");
    Ok(())
}

const CHART: &str = "charts/datapipeline-operator";

/// `[WARNING]`/`[ERROR]` lines of `helm lint` output.
fn lint_problems(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.contains("[WARNING]") || l.contains("[ERROR]"))
        .collect()
}

/// 7. `helm lint` is clean; `helm install` of the chart (crds.enabled=true) into the
///    control plane works: the operator Deployment becomes ready through kwok, the CRD is
///    the chart's (kept on uninstall), and the chart's RBAC is enough for the operator: the
///    in-process controller, impersonating the chart's ServiceAccount, brings a pipeline to
///    Running and publishes its Events. `helm uninstall` leaves the CRD in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_chart_lints_installs_and_keeps_the_crd() -> anyhow::Result<()> {
    k8s::init_logging();
    let client = k8s::client().await?;

    for values in [
        &[][..],
        &[
            "--set",
            "crds.enabled=false,watchNamespace=team-a,serviceMonitor.enabled=true",
        ][..],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend_from_slice(values);
        let lint = k8s::helm(&args).await?;
        assert!(
            lint.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{}",
            lint.stdout
        );
        assert_eq!(
            lint_problems(&lint.stdout),
            Vec::<&str>::new(),
            "helm lint {values:?}"
        );
        println!("$ helm {}\n{}", args.join(" "), lint.stdout);
    }
    // The CRD is a template behind crds.enabled.
    let kinds = |rendered: &str| -> Vec<String> {
        rendered
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .map(str::to_string)
            .collect()
    };
    // Offline, helm assumes Kubernetes v1.20, below the chart's kubeVersion: name the real one.
    let with_crd = k8s::helm(&["template", "r", CHART, "--kube-version", "v1.34.4"])
        .await?
        .stdout;
    let without_crd = k8s::helm(&[
        "template",
        "r",
        CHART,
        "--kube-version",
        "v1.34.4",
        "--set",
        "crds.enabled=false",
    ])
    .await?
    .stdout;
    assert!(kinds(&with_crd).contains(&"CustomResourceDefinition".to_string()));
    assert!(!kinds(&without_crd).contains(&"CustomResourceDefinition".to_string()));

    // The CRD is cluster-wide and other tests (or people) may have DataPipelines: an existing
    // CRD is handed to the release (Helm's ownership metadata) instead of being deleted, so
    // `helm install` applies the chart's CRD over it.
    let ns = TestNamespace::create(&client, "e2e-helm").await?;
    let release = k8s::unique_name("dpo");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if crds.get_opt(k8s::CRD_NAME).await?.is_some() {
        let adopt = serde_json::json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": ns.name},
        }});
        crds.patch(
            k8s::CRD_NAME,
            &PatchParams::default(),
            &Patch::Merge(&adopt),
        )
        .await?;
    }
    let installed = k8s::helm(&[
        "install",
        &release,
        CHART,
        "--namespace",
        &ns.name,
        "--set",
        "crds.enabled=true",
        "--timeout",
        "120s",
    ])
    .await;
    // Never leave a release behind, whatever failed.
    let outcome = async {
        let installed = installed?;
        println!(
            "$ helm install {release} {CHART} -n {} --set crds.enabled=true\n{}",
            ns.name, installed.stdout
        );
        let fullname = format!("{release}-datapipeline-operator");

        let crd = k8s::wait_for(
            &crds,
            k8s::CRD_NAME,
            "the chart's CRD to be Established",
            Duration::from_secs(30),
            kube::runtime::wait::conditions::is_crd_established(),
        )
        .await?;
        let annotations = crd.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get("helm.sh/resource-policy")
                .map(String::as_str),
            Some("keep")
        );
        assert_eq!(annotations.get("meta.helm.sh/release-name"), Some(&release));
        let crd_uid = crd.metadata.uid.clone();

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
        let deployment = k8s::wait_for(
            &deployments,
            &fullname,
            "the operator Deployment to be Available",
            Duration::from_secs(120),
            |d: Option<&Deployment>| {
                d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
                    s.ready_replicas == Some(1)
                        && s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Available" && c.status == "True")
                })
            },
        )
        .await?;
        let pod = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .context("pod spec")?;
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("datapipeline-operator:0.1.0")
        );
        assert_eq!(container.args, Some(vec!["run".to_string()]));
        let runtime_image = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "DATAPIPELINE_RUNTIME_IMAGE")
            .and_then(|e| e.value.clone());
        assert_eq!(runtime_image.as_deref(), Some("pipeline-runtime:0.1.0"));
        assert_eq!(pod.service_account_name.as_deref(), Some(fullname.as_str()));
        let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
        let metrics = services.get(&format!("{fullname}-metrics")).await?;
        let ports: Vec<(Option<String>, i32)> = metrics
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .map(|p| (p.name.clone(), p.port))
            .collect();
        assert_eq!(ports, [(Some("http".to_string()), 8080)]);

        // The chart's RBAC suffices: the controller as the chart's ServiceAccount.
        let account = format!("system:serviceaccount:{}:{fullname}", ns.name);
        let as_operator = k8s::client_as(Some(&account)).await?;
        // Impersonation is in effect: what the chart does not grant is refused.
        let nodes: Api<Node> = Api::all(as_operator.clone());
        let refused = nodes
            .list(&Default::default())
            .await
            .expect_err("the operator may not list Nodes");
        assert_eq!(
            k8s::api_status(&refused).map(|s| s.code),
            Some(403),
            "{refused}"
        );
        let workload_ns = TestNamespace::create(&client, "e2e-helm-rbac").await?;
        let controller = RunningController::start(&as_operator, &workload_ns.name);
        k8s::apply_file(
            &client,
            &workload_ns.name,
            &k8s::repo_root().join("examples/shop-events.yaml"),
        )
        .await?;
        let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &workload_ns.name);
        k8s::wait_until_running(&pipelines, SHOP, READY_TIMEOUT)
            .await
            .map_err(|e| match controller.ensure_running() {
                Ok(()) => e.context(format!(
                    "as {account}: see the operator's log for Forbidden errors"
                )),
                Err(stopped) => e.context(stopped),
            })?;
        assert_children(
            &inventory(&client, &workload_ns.name).await?,
            &SHOP_MANAGED_CHILDREN,
        );
        let events: Api<CoreEvent> = Api::namespaced(client.clone(), &workload_ns.name);
        k8s::poll_until(
            "a PhaseChanged Event written as the ServiceAccount",
            Duration::from_secs(30),
            || async {
                let found = events
                    .list(&Default::default())
                    .await?
                    .items
                    .into_iter()
                    .any(|e| e.reason.as_deref() == Some("PhaseChanged"));
                Ok(found.then_some(()))
            },
        )
        .await?;
        assert_eq!(
            controller.reconciles("failed"),
            0,
            "reconciles failed as {account}"
        );
        drop(controller);
        drop(workload_ns);

        let uninstalled = k8s::helm(&[
            "uninstall",
            &release,
            "--namespace",
            &ns.name,
            "--wait",
            "--timeout",
            "120s",
        ])
        .await?;
        println!("$ helm uninstall {release}\n{}", uninstalled.stdout);
        assert!(
            uninstalled
                .stdout
                .contains(&format!("release \"{release}\" uninstalled")),
            "{}",
            uninstalled.stdout
        );
        assert!(
            uninstalled
                .stdout
                .contains("These resources were kept due to the resource policy")
                && uninstalled
                    .stdout
                    .contains(&format!("[CustomResourceDefinition] {}", k8s::CRD_NAME)),
            "{}",
            uninstalled.stdout
        );
        k8s::poll_until(
            "the operator Deployment to be removed",
            Duration::from_secs(60),
            || async {
                Ok(deployments
                    .get_opt(&fullname)
                    .await?
                    .is_none()
                    .then_some(()))
            },
        )
        .await?;
        let kept = crds.get(k8s::CRD_NAME).await?;
        assert_eq!(
            kept.metadata.uid, crd_uid,
            "the CRD survived helm uninstall unchanged"
        );
        assert!(kept.metadata.deletion_timestamp.is_none());
        anyhow::Ok(())
    }
    .await;
    if outcome.is_err() {
        let _ = k8s::helm(&["uninstall", &release, "--namespace", &ns.name]).await;
    }
    outcome
}
