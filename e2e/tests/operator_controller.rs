//! The operator's controller against a real Kubernetes control plane (etcd, kube-apiserver,
//! controller-manager, scheduler and kwok, from `e2e/services.sh up k8s`), run in-process:
//! it creates and keeps the children, a second reconcile changes nothing, garbage
//! collection removes them (volumes included unless kept), a missing Secret blocks until it
//! exists, a failed generator Job is recreated and reported, `kubectl get dp` prints the
//! printer columns, a managed OpenSearch gets its certificate and user once, a generated
//! Secret deleted after a visit read it is not written back. Each test works in a fresh
//! namespace and fails when the API server is unreachable.
//! Run: `e2e/services.sh up k8s && cargo test -p e2e --test operator_controller -- --test-threads=1`.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, Context as _};
use datapipeline_operator::crd::DataPipeline;
use e2e::control_plane::{
    assert_children, assert_owned_by, claim_owners, inventory, is_generated_password, list_kind,
    running_pipeline, secret_text, table_cells, wait_until_measured, wait_until_settled, Listed,
    RunningPipeline, READY_TIMEOUT, SHOP, SHOP_MANAGED_CHILDREN,
};
use e2e::k8s::{self, RunningController, TestNamespace};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, PersistentVolumeClaim, Pod, Secret,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

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
    // Kafka's TLS: the pipeline CA (certificate and key) in its own Secret; the brokers'
    // Secret holds the trust bundle (the one CA so far), their certificate and key, and the
    // PEM keystore Kafka loads (key, then certificate).
    let ca = secrets.get("shop-ca").await?;
    let ca_crt = secret_text(&ca, "ca.crt")?;
    assert!(ca_crt.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(secret_text(&ca, "ca.key")?.starts_with("-----BEGIN PRIVATE KEY-----"));
    let kafka_tls = secrets.get("shop-kafka-tls").await?;
    assert_eq!(kafka_tls.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(secret_text(&kafka_tls, "ca.crt")?, ca_crt);
    let (kafka_crt, kafka_key) = (
        secret_text(&kafka_tls, "tls.crt")?,
        secret_text(&kafka_tls, "tls.key")?,
    );
    assert!(kafka_crt.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        secret_text(&kafka_tls, "keystore.pem")?,
        format!("{}\n{kafka_crt}", kafka_key.trim_end())
    );
    // Kafka's users: a client certificate each, the subject their principal.
    let mut user_keys = Vec::new();
    let (mut runtime_crt, mut ingest_crt) = (String::new(), String::new());
    for user in [
        "shop-kafka-admin",
        "shop-kafka-runtime",
        "shop-kafka-ingest",
    ] {
        let secret = secrets.get(user).await?;
        assert_eq!(secret_text(&secret, "ca.crt")?, ca_crt);
        let (crt, key) = (
            secret_text(&secret, "tls.crt")?,
            secret_text(&secret, "tls.key")?,
        );
        assert_eq!(
            datapipeline_operator::controller::pipeline_ca::facts(&crt)
                .context("a certificate")?
                .subject,
            format!("CN={user}")
        );
        assert_eq!(
            secret_text(&secret, "keystore.pem")?,
            format!("{}\n{crt}", key.trim_end())
        );
        match user {
            "shop-kafka-runtime" => runtime_crt = crt,
            "shop-kafka-ingest" => ingest_crt = crt,
            _ => {}
        }
        user_keys.push(key);
    }
    // MinIO's TLS: the same trust bundle, its own certificate and key.
    let minio_tls = secrets.get("shop-minio-tls").await?;
    assert_eq!(minio_tls.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(secret_text(&minio_tls, "ca.crt")?, ca_crt);
    let (minio_crt, minio_key) = (
        secret_text(&minio_tls, "tls.crt")?,
        secret_text(&minio_tls, "tls.key")?,
    );
    assert!(minio_crt.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(minio_key, kafka_key);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let runtime = deployments.get("shop-runtime").await?;
    let runtime_json = serde_json::to_string(&runtime)?;
    let statefulsets_json = serde_json::to_string(&statefulsets.list(&Default::default()).await?)?;
    let jobs_json = serde_json::to_string(&jobs.list(&Default::default()).await?)?;
    for secret in [&minio_secret, &elastic_password, &kafka_key, &minio_key]
        .into_iter()
        .chain(&user_keys)
    {
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

    // The config checksum annotation is the sha256 of the ConfigMap's `key=value\n` lines
    // followed by the pipeline's trust bundle and the process and ingest roles' Kafka client
    // certificates (a renewed bundle or certificate rolls the runtime).
    let config = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("shop-runtime-config")
        .await?;
    let rendered: String = config
        .data
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let sha256_hex = |text: &str| -> String {
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let checksum = sha256_hex(&format!("{rendered}{ca_crt}{runtime_crt}{ingest_crt}"));
    // Kafka's pods roll with a new certificate or bundle.
    let kafka_template = statefulsets
        .get("shop-kafka")
        .await?
        .spec
        .context("Kafka StatefulSet spec")?
        .template;
    assert_eq!(
        kafka_template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|mut a| a.remove("checksum/tls")),
        Some(sha256_hex(&format!("{ca_crt}\n{kafka_crt}"))),
        "checksum/tls of the Kafka pods"
    );
    // MinIO's pods likewise.
    let minio_template = statefulsets
        .get("shop-minio")
        .await?
        .spec
        .context("MinIO StatefulSet spec")?
        .template;
    assert_eq!(
        minio_template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|mut a| a.remove("checksum/tls")),
        Some(sha256_hex(&format!("{ca_crt}\n{minio_crt}"))),
        "checksum/tls of the MinIO pods"
    );
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

    // NetworkPolicies: each selects exactly its service's pods and admits, on the client
    // port, the pipeline's pods that use the service and (for Kafka and search) the
    // operator by namespace and pod labels; the service's own nodes on their ports.
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let operator = k8s::test_operator_pods();
    let operator_peer = serde_json::json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator.namespace}},
        "podSelector": {"matchLabels": operator.labels},
    });
    let tcp = |ports: &[i32]| -> serde_json::Value {
        ports
            .iter()
            .map(|p| serde_json::json!({"port": p, "protocol": "TCP"}))
            .collect()
    };
    for (name, clients, client_port, operator_admitted, peer_ports) in [
        (
            "shop-kafka",
            &["runtime", "ingest", "kafka-topics"][..],
            9092,
            true,
            &[9092, 9093][..],
        ),
        (
            "shop-minio",
            &["runtime", "ingest", "bucket"][..],
            9000,
            false,
            &[][..],
        ),
        ("shop-es", &["runtime"][..], 9200, true, &[9300][..]),
    ] {
        let pods = statefulsets
            .get(name)
            .await?
            .spec
            .context("StatefulSet spec")?
            .selector;
        let own_pods = serde_json::to_value(&pods)?;
        let mut ingress = vec![serde_json::json!({
            "from": [{"podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/instance": SHOP,
                    "app.kubernetes.io/managed-by": "datapipeline-operator"
                },
                "matchExpressions": [{
                    "key": "app.kubernetes.io/component", "operator": "In", "values": clients
                }]
            }}],
            "ports": tcp(&[client_port]),
        })];
        if operator_admitted {
            ingress.push(
                serde_json::json!({"from": [operator_peer.clone()], "ports": tcp(&[client_port])}),
            );
        }
        if !peer_ports.is_empty() {
            ingress.push(serde_json::json!({"from": [{"podSelector": own_pods.clone()}], "ports": tcp(peer_ports)}));
        }
        let spec = serde_json::to_value(policies.get(name).await?.spec.context("policy spec")?)?;
        assert_eq!(
            spec,
            serde_json::json!({
                "podSelector": own_pods,
                "policyTypes": ["Ingress"],
                "ingress": ingress,
            }),
            "NetworkPolicy {name}"
        );
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

/// 3b. `spec.networkPolicies.enabled: false` removes the pipeline's NetworkPolicies (the
///     orphan cleanup deletes them) and the pipeline stays Running; true brings them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_can_be_turned_off_and_on() -> anyhow::Result<()> {
    let run = running_pipeline("e2e-netpol", "examples/shop-events.yaml").await?;
    let policies: Api<NetworkPolicy> = Api::namespaced(run.client.clone(), &run.ns.name);
    let names = || async {
        let mut names: Vec<String> = policies
            .list_metadata(&Default::default())
            .await?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        anyhow::Ok(names)
    };
    assert_eq!(names().await?, ["shop-es", "shop-kafka", "shop-minio"]);
    for (enabled, expected) in [
        (false, Vec::<&str>::new()),
        (true, vec!["shop-es", "shop-kafka", "shop-minio"]),
    ] {
        let patch = serde_json::json!({"spec": {"networkPolicies": {"enabled": enabled}}});
        run.pipelines
            .patch(SHOP, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        k8s::poll_until(
            &format!("NetworkPolicies {expected:?} with enabled={enabled}"),
            Duration::from_secs(60),
            || async {
                run.controller.ensure_running()?;
                Ok((names().await? == expected).then_some(()))
            },
        )
        .await?;
        println!("networkPolicies.enabled={enabled}: {:?}", names().await?);
    }
    k8s::wait_until_running(&run.pipelines, SHOP, READY_TIMEOUT).await?;
    Ok(())
}

/// Annotates the pipeline and waits until the controller completed a reconcile after it.
async fn poke(run: &RunningPipeline, round: &str) -> anyhow::Result<()> {
    let annotation =
        serde_json::json!({"metadata": {"annotations": {"e2e.datapipeline.io/poke": round}}});
    let applied_before = run.controller.reconciles("applied");
    run.pipelines
        .patch(SHOP, &PatchParams::default(), &Patch::Merge(&annotation))
        .await?;
    // A reconcile's applies and status write come after its Kafka measurement, so the next
    // one to complete wrote after this point.
    k8s::poll_until(
        "a reconcile after the annotation",
        Duration::from_secs(60),
        || async {
            run.controller.ensure_running()?;
            Ok((run.controller.reconciles("applied") > applied_before).then_some(()))
        },
    )
    .await
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
    poke(&run, "warm-up").await?;

    let before = inventory(client, ns).await?;
    assert_children(&before, &SHOP_MANAGED_CHILDREN);
    let status_before = run.pipelines.get(SHOP).await?.status;
    let applied_before = run.controller.reconciles("applied");
    poke(&run, "second").await?;

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

/// 6b. Secrets that exist but did not opt in (no label `datapipeline.io/use: "true"`) are
///     refused: the pipeline stays Pending with `SecretNotOptedIn` naming the first one
///     and how to label it, and nothing is applied. Labelling them is the only change,
///     and it wakes the pipeline (the controller watches labelled Secrets and resyncs
///     hourly here), which then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_without_the_opt_in_label_is_refused_until_labelled() -> anyhow::Result<()> {
    k8s::init_logging();
    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-opt-in").await?;
    let controller = RunningController::start(&client, &ns.name);
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);

    let docs = k8s::yaml_documents(&k8s::repo_root().join("examples/external-services.yaml"))?;
    let (pipeline, examples): (Vec<_>, Vec<_>) =
        docs.into_iter().partition(|d| d["kind"] == "DataPipeline");
    let mut names = Vec::new();
    for mut secret in examples {
        let labels = secret["metadata"]["labels"]
            .as_object_mut()
            .context("the example's Secrets carry labels")?;
        assert_eq!(
            labels.remove("datapipeline.io/use"),
            Some(serde_json::json!("true")),
            "the example opts in"
        );
        names.push(
            secret["metadata"]["name"]
                .as_str()
                .context("name")?
                .to_string(),
        );
        k8s::apply_raw(&client, &ns.name, secret).await??;
    }
    let pipeline = pipeline.into_iter().next().context("the DataPipeline")?;
    k8s::apply_raw(&client, &ns.name, pipeline).await??;

    let message = format!(
        "Secret {0}/shop-kafka-user (named by spec.kafka.external.secretRef) is not used: it lacks the label datapipeline.io/use=true by which a Secret opts in to DataPipeline use; if this pipeline may read it, run `kubectl label secret shop-kafka-user -n {0} datapipeline.io/use=true`",
        ns.name
    );
    let dp = k8s::wait_for(
        &pipelines,
        SHOP,
        "Ready=False with SecretNotOptedIn",
        Duration::from_secs(60),
        |dp: Option<&DataPipeline>| {
            dp.and_then(|dp| k8s::pipeline_condition(dp, "Ready"))
                .is_some_and(|c| c.status == "False" && c.message == message)
        },
    )
    .await?;
    let status = dp.status.as_ref().context("status")?;
    assert_eq!(status.phase.map(|p| p.as_str()), Some("Pending"));
    for type_ in ["Ready", "KafkaReady"] {
        let c = k8s::pipeline_condition(&dp, type_).context("condition")?;
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("False", "SecretNotOptedIn", message.as_str()),
            "{type_}"
        );
    }
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), &ns.name);
    k8s::poll_until(
        "a SecretNotOptedIn Warning Event",
        Duration::from_secs(30),
        || async {
            let found = events
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("SecretNotOptedIn")
                        && e.type_.as_deref() == Some("Warning")
                });
            Ok(found.then_some(()))
        },
    )
    .await?;
    // Blocked before apply: nothing but the test's Secrets.
    let objects: Vec<String> = inventory(&client, &ns.name)
        .await?
        .iter()
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    let mut expected: Vec<String> = names.iter().map(|n| format!("Secret/{n}")).collect();
    expected.sort();
    assert_eq!(objects, expected, "objects while the Secrets are refused");

    // Opting in is the only change; it wakes the pipeline.
    let opt_in = serde_json::json!({"metadata": {"labels": {"datapipeline.io/use": "true"}}});
    for name in &names {
        secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&opt_in))
            .await?;
    }
    k8s::wait_until_running(&pipelines, SHOP, READY_TIMEOUT)
        .await
        .map_err(|e| match controller.ensure_running() {
            Ok(()) => e,
            Err(stopped) => e.context(stopped),
        })?;
    let dp = pipelines.get(SHOP).await?;
    for type_ in ["KafkaReady", "ObjectStoreReady", "SearchReady"] {
        let c = k8s::pipeline_condition(&dp, type_).context("condition")?;
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "ExternalService"),
            "{type_}"
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

/// 9. A managed OpenSearch: the node certificate from the pipeline CA, the runtime's user
///    (a generated password and its bcrypt hash) and the security configuration holding
///    that hash, instead of Elasticsearch's Secrets; they are generated once: another
///    reconcile leaves every one of them, and the StatefulSet, as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_opensearch_gets_its_certificate_and_user_once() -> anyhow::Result<()> {
    let mut docs = k8s::yaml_documents(&k8s::repo_root().join("examples/shop-events.yaml"))?;
    for doc in &mut docs {
        if doc["kind"] == "DataPipeline" {
            doc["spec"]["search"]["managed"]["engine"] = "opensearch".into();
        }
    }
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("shop-opensearch.yaml");
    let text: Vec<String> = docs
        .iter()
        .map(serde_yaml::to_string)
        .collect::<Result<_, _>>()?;
    std::fs::write(&manifest, text.join("---\n"))?;
    let run = running_pipeline("e2e-os", manifest.to_str().context("utf-8 path")?).await?;
    let (client, ns) = (&run.client, run.ns.name.as_str());

    let mut expected: Vec<(&str, &str)> = SHOP_MANAGED_CHILDREN
        .into_iter()
        .filter(|(_, name)| !["shop-es-elastic-user", "shop-es-transport"].contains(name))
        .collect();
    expected.extend([
        ("Secret", "shop-es-runtime-user"),
        ("Secret", "shop-es-security"),
        ("Secret", "shop-es-tls"),
    ]);
    assert_children(&inventory(client, ns).await?, &expected);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let user = secrets.get("shop-es-runtime-user").await?;
    assert_eq!(secret_text(&user, "username")?, "shop-runtime");
    let password = secret_text(&user, "password")?;
    assert!(is_generated_password(&password), "{password:?}");
    let hash = secret_text(&user, "passwordHash")?;
    assert!(hash.starts_with("$2y$12$"), "{hash}");
    assert!(
        bcrypt::verify(&password, &hash)?,
        "the hash is of the password"
    );
    let security = secrets.get("shop-es-security").await?;
    let users: serde_json::Value =
        serde_yaml::from_str(&secret_text(&security, "internal_users.yml")?)?;
    assert_eq!(users["shop-runtime"]["hash"], hash.as_str());
    let tls = secrets.get("shop-es-tls").await?;
    let ca = secrets.get("shop-ca").await?;
    assert_eq!(secret_text(&tls, "ca.crt")?, secret_text(&ca, "ca.crt")?);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let template = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .and_then(|spec| spec.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
    };
    let node = sts.get("shop-es").await?;
    assert_eq!(
        template(&node).get("checksum/tls").map(String::len),
        Some(64),
        "the nodes roll when their certificate is renewed"
    );

    // Another reconcile: same Secrets, same StatefulSet.
    let versions = |listed: &[Listed]| -> Vec<(String, String)> {
        listed
            .iter()
            .filter(|o| o.name.starts_with("shop-es") || o.name == "shop-ca")
            .filter(|o| o.kind == "Secret" || o.kind == "StatefulSet")
            .map(|o| (o.name.clone(), o.resource_version.clone()))
            .collect()
    };
    wait_until_settled(client, ns).await?;
    let before = versions(&inventory(client, ns).await?);
    assert_eq!(before.len(), 5, "{before:?}");
    poke(&run, "1").await?;
    assert_eq!(versions(&inventory(client, ns).await?), before);
    Ok(())
}

/// A generated Secret deleted (or replaced) while a visit that read it is in flight is not
/// written back from the stale read: a user deleting `<name>-es-tls` to renew it must get
/// a new certificate, not the old one resurrected. The apply step is driven directly, so
/// the race is exact: read, delete, apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_deleted_after_it_was_read_is_not_written_back() -> anyhow::Result<()> {
    use datapipeline_operator::controller::apply::patch::{apply_children, stamp_read_uids};
    use datapipeline_operator::controller::build::Child;
    use std::collections::BTreeMap;

    k8s::init_logging();
    let client = k8s::client().await?;
    let ns = TestNamespace::create(&client, "e2e-stale").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret = |value: &str| -> anyhow::Result<Secret> {
        Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "shop-es-tls", "namespace": ns.name},
            "stringData": {"tls.crt": value},
        }))?)
    };
    let read = secrets.create(&Default::default(), &secret("old")?).await?;
    let read_uids = BTreeMap::from([(
        "shop-es-tls".to_string(),
        read.metadata.uid.clone().context("uid")?,
    )]);
    let apply_stale = || async {
        let mut children = vec![Child::Secret(secret("old, from the stale read")?)];
        stamp_read_uids(&mut children, &read_uids);
        anyhow::Ok(apply_children(&client, &ns.name, &children).await)
    };

    // Deleted after the read: the apply leaves it deleted.
    secrets
        .delete("shop-es-tls", &DeleteParams::default())
        .await?;
    let outcome = apply_stale().await?;
    assert_eq!(outcome.stale, ["shop-es-tls"]);
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failures());
    assert!(secrets.get_opt("shop-es-tls").await?.is_none());

    // Replaced after the read (the next visit issued a new one): the apply leaves the new one.
    secrets.create(&Default::default(), &secret("new")?).await?;
    let outcome = apply_stale().await?;
    assert_eq!(outcome.stale, ["shop-es-tls"]);
    assert_eq!(
        secret_text(&secrets.get("shop-es-tls").await?, "tls.crt")?,
        "new"
    );

    // Read and written back with no change in between: applied as usual.
    let current = secrets.get("shop-es-tls").await?;
    let mut children = vec![Child::Secret(secret("renewed")?)];
    stamp_read_uids(
        &mut children,
        &BTreeMap::from([(
            "shop-es-tls".to_string(),
            current.metadata.uid.clone().context("uid")?,
        )]),
    );
    let outcome = apply_children(&client, &ns.name, &children).await;
    assert!(outcome.stale.is_empty() && outcome.failed.is_empty());
    assert_eq!(
        secret_text(&secrets.get("shop-es-tls").await?, "tls.crt")?,
        "renewed"
    );
    Ok(())
}
