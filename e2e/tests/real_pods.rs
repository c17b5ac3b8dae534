//! The first-hour test, on a real node: the Helm chart installed with the project's own
//! images (`e2e/images.sh`), the operator running as a pod, and all-managed DataPipelines
//! whose Kafka, MinIO stand-in, OpenSearch and runtime run as real containers on a real
//! kubelet (`e2e/services.sh up node`: a control plane of its own, containerd, CNI bridge,
//! kube-proxy, CoreDNS). The results are compared field by field with the embedded `run` of
//! the same generated events, also after a process pod is deleted and the OpenSearch node
//! certificate renewed (the node rolling onto it) mid-run; the index is read over HTTPS as
//! the runtime's generated user, which gets 401 with a wrong password and 403 elsewhere.
//!
//! Needs: `NODE_KUBECONFIG` (from `e2e/services.sh env`), the images built and loaded into
//! the node (`e2e/images.sh all && e2e/images.sh load-node`). The host reaches the
//! pipeline's Services through their ClusterIPs (kube-proxy's rules apply to the host's
//! own traffic too), never a pod address directly.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use datapipeline_operator::{controller::build::names::ChildNames, crd::DataPipeline};
use e2e::k8s::{self, helm, kubectl, poll_until, repo_root, TestNamespace};
use e2e::runtime::{expected_from_embedded_run, verify_sinks, Expected};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use pipeline_runtime::config::{S3Credentials, S3Settings, SearchSettings};
use pipeline_runtime::search::SearchIndex;
use pipeline_runtime::store::{ObjectStore, S3Store};

/// The images `e2e/images.sh` builds; the services' are local stand-ins (see its header and
/// `e2e/images/services.sh`).
const OPERATOR_IMAGE: (&str, &str) = ("datapipeline-operator", "dev");
const RUNTIME_IMAGE: (&str, &str) = ("pipeline-runtime", "dev");
const KAFKA_IMAGE: &str = "e2e.local/kafka:4.1.0";
const MINIO_IMAGE: &str = "e2e.local/minio:versitygw";
const MC_IMAGE: &str = "e2e.local/mc:s5cmd";
const OPENSEARCH_IMAGE: &str = "e2e.local/opensearch:2.19.1";

const OPERATOR_NAMESPACE: &str = "datapipeline-system";
const READY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DONE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Points every helper of `e2e::k8s` (client, kubectl, helm) at the real-node cluster.
/// Each test file is its own process, so this does not leak into the kwok tests.
fn use_node_cluster() -> Result<()> {
    let kubeconfig = k8s::service_setting("NODE_KUBECONFIG")
        .context("the real-node cluster is not up: `e2e/services.sh up node`")?;
    std::env::set_var("KUBECONFIG", kubeconfig);
    Ok(())
}

/// `helm upgrade --install` of the chart with the project's images; idempotent, so each
/// test can call it.
async fn install_chart() -> Result<()> {
    let chart = repo_root().join("charts/datapipeline-operator");
    let chart = chart.to_str().context("chart path")?;
    let sets = [
        format!("image.repository={}", OPERATOR_IMAGE.0),
        format!("image.tag={}", OPERATOR_IMAGE.1),
        format!("runtimeImage.repository={}", RUNTIME_IMAGE.0),
        format!("runtimeImage.tag={}", RUNTIME_IMAGE.1),
        // Observe often, so the status follows a short run closely.
        "logging.level=info".to_string(),
    ];
    let mut args = vec![
        "upgrade",
        "--install",
        "datapipeline",
        chart,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
    ];
    for s in &sets {
        args.push("--set");
        args.push(s);
    }
    helm(&args).await?;
    Ok(())
}

/// An all-managed pipeline on the local images.
fn pipeline_manifest(
    name: &str,
    namespace: &str,
    kafka_replicas: i32,
    events: u64,
    seed: u64,
    rate_per_second: Option<u64>,
    runtime_image: Option<&str>,
) -> serde_json::Value {
    let mut generator = serde_json::json!({"events": events, "seed": seed});
    if let Some(rate) = rate_per_second {
        generator["ratePerSecond"] = rate.into();
    }
    let mut runtime = serde_json::json!({
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "lagPerReplica": 100000,
                        "scaleDownStabilizationSeconds": 60},
        "checkpointIntervalSeconds": 2,
    });
    if let Some(image) = runtime_image {
        runtime["image"] = image.into();
    }
    serde_json::json!({
        "apiVersion": "datapipeline.io/v1alpha1",
        "kind": "DataPipeline",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"generator": generator},
            "kafka": {
                "managed": {
                    "replicas": kafka_replicas,
                    "image": KAFKA_IMAGE,
                    "storage": {"size": "2Gi"},
                    "resources": {"requests": {"cpu": "100m", "memory": "768Mi"},
                                  "limits": {"memory": "768Mi"}},
                },
                "partitions": 3,
                "retentionHours": 24,
            },
            "objectStore": {
                "managed": {
                    "image": MINIO_IMAGE,
                    "clientImage": MC_IMAGE,
                    "storage": {"size": "2Gi"},
                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                  "limits": {"memory": "512Mi"}},
                },
                "bucket": format!("{name}-lake"),
            },
            "search": {
                "managed": {
                    "engine": "opensearch",
                    "replicas": 1,
                    "image": OPENSEARCH_IMAGE,
                    "storage": {"size": "2Gi"},
                    "resources": {"requests": {"cpu": "100m", "memory": "1536Mi"},
                                  "limits": {"memory": "1536Mi"}},
                },
            },
            "runtime": runtime,
        }
    })
}

async fn apply(manifest: &serde_json::Value) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pipeline.json");
    std::fs::write(&path, serde_json::to_vec_pretty(manifest)?)?;
    kubectl(&["apply", "-f", path.to_str().context("path")?]).await?;
    Ok(())
}

/// What the embedded `run` makes of the generator's events (the generator of the ingest
/// Job writes the same rows: same seed, no broken rows).
fn expected_for(events: u64, seed: u64) -> Result<(tempfile::TempDir, Expected)> {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("events.csv");
    let config = pipeline_runtime::generator::GeneratorConfig {
        events,
        seed,
        bad_rows_per_million: 0,
        shape: pipeline_runtime::generator::Shape::Tidy,
    };
    pipeline_runtime::generator::generate_file(config, &csv)?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("out"))?;
    Ok((dir, expected))
}

/// `http://<ClusterIP>:<port>` of a Service of the pipeline.
async fn service_address(
    client: &kube::Client,
    ns: &str,
    name: &str,
    port: u16,
    scheme: &str,
) -> Result<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service = services.get(name).await?;
    let ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| ip != "None")
        .with_context(|| format!("service {name} has no ClusterIP"))?;
    Ok(format!("{scheme}://{ip}:{port}"))
}

fn secret_value(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("secret has no {key}"))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// An HTTPS client trusting the PEM `trust` bundle only, that accepts a certificate for
/// `server_name` whatever address it connects to.
fn http_client_for(trust: &str, server_name: &str) -> Result<aws_sdk_s3::config::SharedHttpClient> {
    use aws_smithy_http_client::tls::{
        rustls_provider::CryptoMode, Provider, ServerName, TlsContext, TrustStore,
    };
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(trust.as_bytes()))
        .with_additional_server_names(vec![ServerName::try_from(server_name)?])
        .build()?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

/// The pipeline's lake and index, opened from the host through the Services.
async fn open_sinks(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<(ObjectStore, SearchIndex)> {
    let names = ChildNames::new(name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let credentials = secrets.get(&names.minio_credentials()).await?;
    let settings = S3Settings {
        bucket: format!("{name}-lake"),
        endpoint: Some(service_address(client, ns, &names.minio(), 9000, "https").await?),
        region: "us-east-1".into(),
        path_style: true,
        credentials: Some(S3Credentials {
            access_key_id: secret_value(&credentials, "accessKeyId")?,
            secret_access_key: pipeline_runtime::config::Secret::new(secret_value(
                &credentials,
                "secretAccessKey",
            )?),
        }),
        ca_file: None,
    };
    // MinIO speaks TLS only. The host reaches it by its ClusterIP, which its certificate
    // does not name: trust only the pipeline CA, and accept the Service's name instead.
    let trust = secret_value(&secrets.get(&names.minio_tls()).await?, "ca.crt")?;
    let config = S3Store::config(&settings)
        .await?
        .http_client(http_client_for(
            &trust,
            &format!("{}.{ns}.svc", names.minio()),
        )?);
    let store = S3Store::from_config(config, &settings);
    store.ensure_bucket().await?;
    let store = ObjectStore::S3(store);
    let search = search_index(client, ns, name, None, None).await?;
    Ok((store, search))
}

/// The managed OpenSearch's trust bundle in a file (the runtime's client reads a file).
async fn search_ca_file(client: &kube::Client, ns: &str, name: &str) -> Result<std::path::PathBuf> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let trust = secret_value(
        &secrets.get(&ChildNames::new(name).search_tls()).await?,
        "ca.crt",
    )?;
    let path = std::env::temp_dir().join(format!("{ns}-{name}-search-ca.crt"));
    std::fs::write(&path, trust)?;
    Ok(path)
}

/// Forwards `127.0.0.1:<port>` to `target` for as long as the test's runtime lives: the
/// host reaches the search Service by its ClusterIP, which the node certificate does not
/// name, while `localhost` is among its names (for `kubectl port-forward`), so the client
/// keeps full certificate and host name verification.
async fn forward_local(target: std::net::SocketAddr) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(port)
}

/// The pipeline's index (or `index`) over TLS, trusting the pipeline CA only, as the
/// runtime's generated user (or with `password` instead of its own).
async fn search_index(
    client: &kube::Client,
    ns: &str,
    name: &str,
    index: Option<&str>,
    password: Option<&str>,
) -> Result<SearchIndex> {
    let names = ChildNames::new(name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let user = secrets.get(&names.search_runtime_user()).await?;
    let address = service_address(client, ns, &names.search(), 9200, "tcp").await?;
    let target: std::net::SocketAddr = address.trim_start_matches("tcp://").parse()?;
    let port = forward_local(target).await?;
    let password = match password {
        Some(p) => p.to_string(),
        None => secret_value(&user, "password")?,
    };
    Ok(SearchIndex::connect(
        &SearchSettings {
            url: format!("https://localhost:{port}"),
            index: index.map_or_else(
                || pipeline_config::PipelineNames::new(name).profiles_index(),
                str::to_string,
            ),
            credentials: Some((
                secret_value(&user, "username")?,
                pipeline_runtime::config::Secret::new(password),
            )),
            ca_file: Some(search_ca_file(client, ns, name).await?),
        },
        None,
    )?)
}

/// The managed OpenSearch refuses a wrong password (401) and the runtime's user on any
/// index but the pipeline's (403).
async fn check_search_is_locked_down(client: &kube::Client, ns: &str, name: &str) -> Result<()> {
    let wrong = search_index(client, ns, name, None, Some("not-the-password")).await?;
    let refused = wrong
        .count()
        .await
        .err()
        .context("a wrong password was accepted")?;
    ensure!(
        refused.to_string().contains("401"),
        "wrong password: {refused}"
    );
    let other = search_index(client, ns, name, Some("not-the-pipelines-index"), None).await?;
    let refused = other
        .ensure_index()
        .await
        .err()
        .context("the runtime's user created another index")?;
    ensure!(
        refused.to_string().contains("403"),
        "another index: {refused}"
    );
    eprintln!("OpenSearch: HTTPS only, a wrong password gets 401, another index 403");
    Ok(())
}

/// Waits until the status says every event is processed: profiles in the index = expected,
/// the committed offsets at the topic's end with at least one offset per accepted event
/// (offsets also count the ingest's transaction markers), no lag.
async fn wait_until_done(api: &Api<DataPipeline>, name: &str, expected: &Expected) -> Result<()> {
    let profiles = expected.profiles.len() as i64;
    let events = expected.events.len() as i64;
    poll_until("every event processed", DONE_TIMEOUT, || async {
        let dp = api.get(name).await?;
        let t = dp.status.as_ref().and_then(|s| s.throughput.as_ref());
        Ok(t.filter(|t| {
            t.profiles == profiles
                && t.events_processed >= events
                && t.events_processed == t.events_ingested
                && t.consumer_lag == 0
        })
        .map(|_| ()))
    })
    .await
}

fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// The pod's Ready condition is True: its containers run and pass their readiness probes.
fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn pods(client: &kube::Client, ns: &str, selector: &str) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

/// Every child the operator made for `name` is gone (or going) after the pipeline is.
async fn wait_until_children_gone(ns: &str, name: &str) -> Result<()> {
    let selector = format!("app.kubernetes.io/instance={name}");
    poll_until("every child deleted", Duration::from_secs(180), || async {
        let out = kubectl(&[
            "get",
            "statefulsets,deployments,jobs,services,configmaps,secrets,pods,poddisruptionbudgets,networkpolicies",
            "-n",
            ns,
            "-l",
            &selector,
            "-o",
            "name",
        ])
        .await?;
        Ok(out.stdout.trim().is_empty().then_some(()))
    })
    .await
}

/// The node cluster, the chart installed, a fresh namespace, and what the embedded run
/// makes of the generator's events.
async fn set_up(
    prefix: &str,
    events: u64,
    seed: u64,
) -> Result<(kube::Client, TestNamespace, tempfile::TempDir, Expected)> {
    k8s::init_logging();
    use_node_cluster()?;
    let client = k8s::client().await?;
    install_chart().await?;
    let ns = TestNamespace::create(&client, prefix).await?;
    let (dir, expected) = expected_for(events, seed)?;
    Ok((client, ns, dir, expected))
}

/// Waits until every event is processed, then compares the index, the snapshot and the
/// lake with the embedded run.
async fn check_results(
    client: &kube::Client,
    ns: &str,
    name: &str,
    expected: &Expected,
    started: Instant,
) -> Result<()> {
    let api: Api<DataPipeline> = Api::namespaced(client.clone(), ns);
    wait_until_done(&api, name, expected).await?;
    eprintln!(
        "kubectl apply -> last profile: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let (store, search) = open_sinks(client, ns, name).await?;
    verify_sinks(&store, &search, expected).await?;
    check_search_is_locked_down(client, ns, name).await?;
    eprintln!(
        "{} profiles and {} events equal the embedded run",
        expected.profiles.len(),
        expected.events.len()
    );
    Ok(())
}

/// Forces a renewal of the managed OpenSearch's node certificate as a user would: deletes
/// its Secret and annotates the pipeline (the operator would otherwise notice at its next
/// resync). A new certificate from the same CA comes back, and the node's StatefulSet
/// rolls it: `checksum/tls` changes, the node pod is replaced and Ready again.
async fn renew_search_certificate(client: &kube::Client, ns: &str, name: &str) -> Result<()> {
    let names = ChildNames::new(name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let checksum = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .and_then(|spec| spec.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("checksum/tls").cloned())
    };
    let old = secrets.get(&names.search_tls()).await?;
    let (old_crt, ca) = (
        secret_value(&old, "tls.crt")?,
        secret_value(&old, "ca.crt")?,
    );
    let before = checksum(&statefulsets.get(&names.search()).await?);
    let node = format!("{}-0", names.search());
    let old_uid = pod_api.get(&node).await?.metadata.uid;
    let pipelines = Api::<DataPipeline>::namespaced(client.clone(), ns);
    let ingested = || async {
        anyhow::Ok(
            pipelines
                .get(name)
                .await?
                .status
                .and_then(|s| s.throughput)
                .map_or(0, |t| t.events_ingested),
        )
    };
    let ingested_before = ingested().await?;
    let t0 = Instant::now();
    secrets
        .delete(&names.search_tls(), &DeleteParams::default())
        .await?;
    let poke =
        serde_json::json!({"metadata": {"annotations": {"e2e.datapipeline.io/renew": "search"}}});
    pipelines
        .patch(name, &PatchParams::default(), &Patch::Merge(&poke))
        .await?;
    poll_until(
        "a new search certificate",
        Duration::from_secs(120),
        || async {
            Ok(secrets
                .get_opt(&names.search_tls())
                .await?
                .filter(|s| secret_value(s, "tls.crt").is_ok_and(|crt| crt != old_crt)))
        },
    )
    .await
    .and_then(|renewed| {
        ensure!(
            secret_value(&renewed, "ca.crt")? == ca,
            "the renewal changed the trust bundle"
        );
        Ok(())
    })?;
    poll_until(
        "the search node rolled onto the new certificate",
        READY_TIMEOUT,
        || async {
            let sts = statefulsets.get(&names.search()).await?;
            let pod = pod_api.get_opt(&node).await?;
            let rolled = checksum(&sts) != before
                && pod
                    .as_ref()
                    .is_some_and(|p| p.metadata.uid != old_uid && pod_ready(p));
            Ok(rolled.then_some(()))
        },
    )
    .await?;
    eprintln!(
        "search certificate renewed and {node} rolled onto it in {:.0} s (events ingested: {ingested_before} before, {} after)",
        t0.elapsed().as_secs_f64(),
        ingested().await?
    );
    Ok(())
}

/// What a failed test leaves for its reader: the pipeline's status, the namespace's pods
/// and Events, and the operator's log. The node's pod logs go with the node, so this is
/// the only record of why a CI run failed.
async fn explain_failure(ns: &str) {
    let operator = format!("--namespace={OPERATOR_NAMESPACE}");
    let views: [(&str, Vec<&str>); 4] = [
        ("pipelines", vec!["get", "dp", "-n", ns, "-o", "yaml"]),
        ("pods", vec!["get", "pods", "-n", ns, "-o", "wide"]),
        (
            "events",
            vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
        ),
        (
            "operator log",
            vec![
                "logs",
                &operator,
                "-l",
                "app.kubernetes.io/name=datapipeline-operator",
                "--tail=300",
                "--prefix",
            ],
        ),
    ];
    for (what, args) in views {
        match kubectl(&args).await {
            Ok(out) => eprintln!("--- {what} ---\n{}{}", out.stdout, out.stderr),
            Err(error) => eprintln!("--- {what}: not read: {error:#}"),
        }
    }
}

/// Runs a test body; when it fails, `explain_failure` prints what led there first.
async fn explained<F>(ns: &str, body: F) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    let result = body.await;
    if result.is_err() {
        explain_failure(ns).await;
    }
    result
}

/// `kubectl delete dp`, and every child goes with it.
async fn delete_pipeline(ns: &str, name: &str) -> Result<()> {
    kubectl(&["delete", "dp", name, "-n", ns, "--wait=true"]).await?;
    wait_until_children_gone(ns, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_pipeline_with_three_kafka_nodes_runs_in_real_containers() -> Result<()> {
    let (name, events, seed) = ("shop", 200_000, 7);
    let (client, ns, _dir, expected) = set_up("pods", events, seed).await?;
    explained(&ns.name, async {
    let started = Instant::now();
    // A bounded rate (about 200 s of publishing), so the process pod can be deleted while
    // events still flow.
    apply(&pipeline_manifest(
        name,
        &ns.name,
        3,
        events,
        seed,
        Some(1_000),
        None,
    ))
    .await?;
    let api: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    // Ready needs every component, the topic Job included, while the generator starts as
    // soon as Kafka answers: the time to Ready is watched on the side, so the deletion below
    // can happen while events still flow.
    let first_ready = tokio::spawn({
        let api = api.clone();
        async move {
            k8s::wait_until_running(&api, name, READY_TIMEOUT).await?;
            anyhow::Ok(started.elapsed())
        }
    });

    // Mid-run: the generator publishing, the process pod serving. Delete it.
    let process = format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=runtime");
    let ingest = format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=ingest");
    let victims = poll_until(
        "the generator publishing while a process pod is ready",
        READY_TIMEOUT,
        || async {
            let generators = pods(&client, &ns.name, &ingest).await?;
            if generators.iter().any(|p| pod_phase(p) == Some("Succeeded")) {
                return Ok(Some(Vec::new())); // too late: refused below
            }
            let publishing = generators.iter().any(pod_ready);
            let serving: Vec<Pod> = pods(&client, &ns.name, &process)
                .await?
                .into_iter()
                .filter(pod_ready)
                .collect();
            Ok((publishing && !serving.is_empty()).then_some(serving))
        },
    )
    .await?;
    ensure!(
        !victims.is_empty(),
        "the generator finished before a process pod was ready: nothing to delete mid-run"
    );
    let processed = api
        .get(name)
        .await?
        .status
        .and_then(|s| s.throughput)
        .map_or(0, |t| t.events_processed);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    for pod in &victims {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        eprintln!(
            "deleting process pod {pod_name} mid-run ({processed} of {events} events processed, the generator publishing)"
        );
        pod_api.delete(&pod_name, &DeleteParams::default()).await?;
    }

    // Mid-run too: the search engine's certificate is renewed; its nodes roll onto it while
    // events flow.
    renew_search_certificate(&client, &ns.name, name).await?;

    // While it runs: what a user sees.
    let during = kubectl(&["get", "dp", "-n", &ns.name]).await?.stdout;
    eprintln!("$ kubectl get dp\n{during}");

    let to_ready = first_ready.await??;
    eprintln!("kubectl apply -> Ready: {:.0} s", to_ready.as_secs_f64());
    check_results(&client, &ns.name, name, &expected, started).await?;

    let wide = kubectl(&["get", "pods", "-n", &ns.name, "-o", "wide"])
        .await?
        .stdout;
    eprintln!("$ kubectl get pods -o wide\n{wide}");
    let dp = kubectl(&["get", "dp", "-n", &ns.name]).await?.stdout;
    eprintln!("$ kubectl get dp\n{dp}");
    let line = dp.lines().nth(1).context("no pipeline row")?;
    let columns: Vec<&str> = line.split_whitespace().collect();
    // NAME PHASE READY EVENTS/S LAG REPLICAS AGE
    ensure!(columns.len() == 7, "printer columns missing: {line:?}");
    ensure!(columns[1] == "Running", "phase is {}", columns[1]);
    ensure!(columns[4] == "0", "LAG is {} after the run", columns[4]);
    ensure!(
        columns[3].parse::<f64>().is_ok(),
        "EVENTS/S is {:?}",
        columns[3]
    );

    delete_pipeline(&ns.name, name).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_pipeline_with_one_kafka_node_runs_in_real_containers() -> Result<()> {
    let (name, events, seed) = ("small", 20_000, 11);
    let (client, ns, _dir, expected) = set_up("pods1", events, seed).await?;
    explained(&ns.name, async {
        let started = Instant::now();
        apply(&pipeline_manifest(
            name, &ns.name, 1, events, seed, None, None,
        ))
        .await?;
        let api: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
        k8s::wait_until_running(&api, name, READY_TIMEOUT).await?;
        eprintln!(
            "kubectl apply -> Ready: {:.0} s",
            started.elapsed().as_secs_f64()
        );
        check_results(&client, &ns.name, name, &expected, started).await?;
        delete_pipeline(&ns.name, name).await
    })
    .await
}

/// A runtime image that cannot run the runtime (a plain Debian image: `process` is no
/// command there) crash-loops; the pipeline's RuntimeReady condition says so, with the
/// container's message, and `kubectl describe dp` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_cannot_start_says_why() -> Result<()> {
    k8s::init_logging();
    use_node_cluster()?;
    let client = k8s::client().await?;
    install_chart().await?;
    let ns = TestNamespace::create(&client, "broken").await?;
    let name = "broken";
    explained(&ns.name, async {
        apply(&pipeline_manifest(
            name,
            &ns.name,
            1,
            1_000,
            1,
            None,
            Some("debian:bookworm"),
        ))
        .await?;
        let api: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
        let dp = poll_until(
            "RuntimeReady=False with the container's failure",
            READY_TIMEOUT,
            || async {
                let dp = api.get(name).await?;
                let failing = k8s::pipeline_condition(&dp, "RuntimeReady").is_some_and(|c| {
                    c.status == "False"
                        && ["CrashLoopBackOff", "RunContainerError", "StartError"]
                            .contains(&c.reason.as_str())
                });
                Ok(failing.then_some(dp))
            },
        )
        .await?;
        let condition = k8s::pipeline_condition(&dp, "RuntimeReady").context("no condition")?;
        eprintln!(
            "RuntimeReady: {} {}: {}",
            condition.status, condition.reason, condition.message
        );
        // runc's own words for a command the image does not have ("ingest" or "process",
        // whichever of the pipeline's containers failed first).
        ensure!(
            condition.message.contains("executable file not found"),
            "the message does not carry the container's failure: {}",
            condition.message
        );
        let described = kubectl(&["describe", "dp", name, "-n", &ns.name])
            .await?
            .stdout;
        ensure!(
            described.contains(&condition.reason),
            "kubectl describe dp does not show {}:\n{described}",
            condition.reason
        );
        delete_pipeline(&ns.name, name).await
    })
    .await
}
