//! The DataPipeline CRD against a real Kubernetes control plane (etcd, kube-apiserver,
//! controller-manager, scheduler and kwok, from `e2e/services.sh up k8s`): the CRD installs
//! and is served as declared, the API server refuses every invalid example with its
//! message and every edit that would lose or split data (transition rules), and accepts
//! the valid examples. No controller runs. Each test works in a fresh namespace and fails
//! when the API server is unreachable.
//! Run: `e2e/services.sh up k8s && cargo test -p e2e --test operator_crd_schema -- --test-threads=1`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use datapipeline_operator::crd::DataPipeline;
use e2e::control_plane::SHOP;
use e2e::crd_examples::{
    built_in_causes, expectation, invalid_examples, json_numbers_normalised, server_field,
};
use e2e::k8s::{self, TestNamespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

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
        "networkPolicies\t<Object>",
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
        let causes = causes(status);
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

/// (field, message) of each cause of an API refusal.
fn causes(status: &kube::core::Status) -> Vec<(String, String)> {
    status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .map(|c| (c.field.clone(), c.message.clone()))
        .collect()
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
        let causes = causes(status);
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

    // The index of a managed Elasticsearch may change (its `elastic` user reaches every
    // index); that of a managed OpenSearch may not (its runtime user's role names it).
    let rename = serde_json::json!({"spec": {"search": {"index": "shop-profiles-v2"}}});
    let renamed = pipelines
        .patch(SHOP, &params, &Patch::Merge(&rename))
        .await?;
    assert_eq!(
        renamed.spec.search.index.as_deref(),
        Some("shop-profiles-v2")
    );
    let mut spec = serde_json::to_value(&stored.spec)?;
    spec["search"]["managed"]["engine"] = "opensearch".into();
    spec["search"]["index"] = "shop-os-profiles".into();
    let opensearch = DataPipeline::new("shop-os", serde_json::from_value(spec)?);
    pipelines.create(&Default::default(), &opensearch).await?;
    let refused = pipelines
        .patch("shop-os", &params, &Patch::Merge(&rename))
        .await
        .err()
        .context("renaming the index of a managed OpenSearch was accepted")?;
    let status = k8s::api_status(&refused).context("an API refusal")?;
    let causes = causes(status);
    assert_eq!(
        (status.code, causes),
        (
            422,
            vec![(
                "spec.search".to_string(),
                "Invalid value: \"object\": spec.search.index cannot change while the operator manages an OpenSearch: the runtime's OpenSearch user may use only the index its role was created for, and OpenSearch loads that role when the cluster first starts; create a new pipeline for another index".to_string()
            )]
        )
    );
    Ok(())
}
