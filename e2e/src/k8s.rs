//! Helpers for the operator's tests against the real Kubernetes control plane started by
//! `e2e/services.sh up k8s`: a kube Client from its kubeconfig (failing, never skipping,
//! when the API server is down), throwaway namespaces, server-side apply of YAML files,
//! bounded waits, and the kubectl/helm binaries the harness built. Does I/O.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use datapipeline_operator::controller::{self, validate::OperatorSettings, RunConfig};
use datapipeline_operator::crd::DataPipeline;
use datapipeline_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition as StatusCondition;
use kube::api::{DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::Status;
use kube::discovery::Scope;
use kube::runtime::events::Reporter;
use kube::runtime::wait::{await_condition, conditions, Condition};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Field manager of everything the tests apply (the operator uses its own).
pub const FIELD_MANAGER: &str = "datapipeline-e2e";

/// Name of the DataPipeline CRD.
pub const CRD_NAME: &str = "datapipelines.datapipeline.io";

/// The e2e crate's directory. Read when the test runs (cargo sets it for test binaries)
/// rather than compiled in: the build cache is shared between clones, and a library built
/// in another clone would otherwise point the tests at that clone's files.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The repository root (the e2e crate's parent directory).
pub fn repo_root() -> PathBuf {
    manifest_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The exports of `e2e/services.sh env` (KUBECONFIG, KUBECTL, HELM, ...), read once; the
/// process environment overrides them, so `eval "$(e2e/services.sh env)"` is optional.
fn services_env() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let output = Command::new("bash")
            .arg(repo_root().join("e2e/services.sh"))
            .arg("env")
            .output();
        let text = match output {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => String::new(),
        };
        parse_exports(&text)
    })
}

/// `export A=1 B=2` lines -> {A: 1, B: 2}. Values never contain spaces here.
fn parse_exports(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .flat_map(str::split_whitespace)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A setting from the environment, else from `e2e/services.sh env`.
pub fn service_setting(key: &str) -> anyhow::Result<String> {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| services_env().get(key).cloned())
        .ok_or_else(|| anyhow!("{key} is not set and `e2e/services.sh env` does not give it"))
}

/// The kubeconfig written by `e2e/services.sh up k8s`.
pub fn kubeconfig_path() -> anyhow::Result<PathBuf> {
    service_setting("KUBECONFIG").map(PathBuf::from)
}

/// A client for the test control plane. Fails (the test fails, it is never skipped) when
/// the kubeconfig is missing or the API server does not answer within 10 s.
pub async fn client() -> anyhow::Result<Client> {
    client_as(None).await
}

/// Like [`client`], acting as `user` (impersonation, e.g.
/// `system:serviceaccount:NS:NAME`) when given: the API server then authorizes every
/// request with that user's RBAC.
pub async fn client_as(user: Option<&str>) -> anyhow::Result<Client> {
    // aws-sdk (aws-lc-rs) and kube (ring) both enable a rustls provider in this crate, so
    // rustls cannot pick one itself; the first installed wins, later calls are no-ops.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = kubeconfig_path()?;
    let hint = "start the control plane with `e2e/services.sh up k8s`";
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("reading kubeconfig {} ({hint})", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    let mut config = config;
    config.auth_info.impersonate = user.map(str::to_string);
    let url = config.cluster_url.clone();
    let client = Client::try_from(config).context("building the kube client")?;
    let version = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .map_err(|_| anyhow!("kube-apiserver at {url} did not answer within 10 s ({hint})"))?
        .with_context(|| format!("kube-apiserver at {url} is unreachable ({hint})"))?;
    tracing::info!(%url, version = %version.git_version, "connected to the test control plane");
    Ok(client)
}

/// A path to an executable the harness built (`KUBECTL`, `HELM`).
fn tool(key: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(service_setting(key)?);
    if !path.is_file() {
        bail!(
            "{key}={} does not exist: run `e2e/services.sh install k8s`",
            path.display()
        );
    }
    Ok(path)
}

/// Output of a command that succeeded.
#[derive(Debug)]
pub struct CommandOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tool` (KUBECTL or HELM) with `args` against the test control plane, in a
/// blocking thread; an error carries the exit status and both outputs.
pub async fn run_tool(key: &str, args: &[&str]) -> anyhow::Result<CommandOutput> {
    let program = tool(key)?;
    let kubeconfig = kubeconfig_path()?;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let shown = format!("{} {}", program.display(), args.join(" "));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .current_dir(repo_root())
            .output()
    })
    .await
    .context("joining the command thread")?
    .with_context(|| format!("running {shown}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
    }
    Ok(CommandOutput { stdout, stderr })
}

/// `kubectl ARGS...`
pub async fn kubectl(args: &[&str]) -> anyhow::Result<CommandOutput> {
    run_tool("KUBECTL", args).await
}

/// `helm ARGS...`
pub async fn helm(args: &[&str]) -> anyhow::Result<CommandOutput> {
    run_tool("HELM", args).await
}

/// A name no other test run uses: `<prefix>-<8 hex digits>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mixed = (nanos as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{prefix}-{:08x}", (mixed ^ (mixed >> 32)) as u32)
}

/// A namespace of its own for one test, deleted when dropped (also when the test panics).
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>` and labels it as an e2e namespace.
    pub async fn create(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"datapipeline.io/e2e": "true"}},
        }))?;
        namespaces
            .create(&Default::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(Self { name })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await and may run inside the test's runtime (also while a panic
        // unwinds): delete from a thread with a runtime and a client of its own. A clone of
        // the test's client would deadlock: its request buffer is a task of the blocked
        // runtime. The namespace controller removes the contents.
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let namespaces: Api<Namespace> = Api::all(client().await?);
                match namespaces.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                    Err(e) => Err(anyhow::Error::from(e)),
                }
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = deleted.map_err(|_| anyhow!("cleanup thread panicked")) {
            eprintln!("could not delete test namespace {}: {e:#}", self.name);
        }
    }
}

/// The YAML documents of a file (comments and empty documents dropped).
pub fn yaml_documents(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc)
            .with_context(|| format!("parsing {}", path.display()))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The only YAML document of a file, as `K`.
pub fn read_single<K: DeserializeOwned>(path: &Path) -> anyhow::Result<K> {
    let mut docs = yaml_documents(path)?;
    if docs.len() != 1 {
        bail!(
            "{} holds {} documents, expected 1",
            path.display(),
            docs.len()
        );
    }
    serde_json::from_value(docs.remove(0)).with_context(|| format!("decoding {}", path.display()))
}

/// The dynamic API of `object`'s kind, in `namespace` when the kind is namespaced.
pub async fn dynamic_api(
    client: &Client,
    object: &DynamicObject,
    namespace: &str,
) -> anyhow::Result<Api<DynamicObject>> {
    let types = object
        .types
        .as_ref()
        .ok_or_else(|| anyhow!("object {:?} has no apiVersion/kind", object.metadata.name))?;
    let gvk = GroupVersionKind::try_from(types)?;
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("discovering {gvk:?}"))?;
    Ok(match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    })
}

/// Server-side applies one raw object (as written in a YAML file) in `namespace`. The
/// outer error is for discovery/decoding; the inner one is the API server's answer.
pub async fn apply_raw(
    client: &Client,
    namespace: &str,
    raw: serde_json::Value,
) -> anyhow::Result<Result<DynamicObject, kube::Error>> {
    let object: DynamicObject = serde_json::from_value(raw.clone()).context("decoding object")?;
    let api = dynamic_api(client, &object, namespace).await?;
    let name = object.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(raw)).await)
}

/// Server-side applies every document of a YAML file in `namespace`.
pub async fn apply_file(
    client: &Client,
    namespace: &str,
    path: &Path,
) -> anyhow::Result<Vec<DynamicObject>> {
    let mut applied = Vec::new();
    for raw in yaml_documents(path)? {
        let object = apply_raw(client, namespace, raw)
            .await?
            .with_context(|| format!("applying {}", path.display()))?;
        applied.push(object);
    }
    Ok(applied)
}

/// The API server's refusal inside a kube error, if that is what it is.
pub fn api_status(error: &kube::Error) -> Option<&Status> {
    match error {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

/// Asserts that the API server refused a request with 403 Forbidden; `what` names it.
pub fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    let refused = result.expect_err(what);
    assert_eq!(
        api_status(&refused).map(|s| s.code),
        Some(403),
        "{what}: {refused}"
    );
}

/// Installs (server-side apply, forced) `crds/datapipeline.yaml` and waits until the CRD is
/// Established and its resource is served.
pub async fn install_crd(client: &Client) -> anyhow::Result<CustomResourceDefinition> {
    let crd: CustomResourceDefinition = read_single(&repo_root().join("crds/datapipeline.yaml"))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        CRD_NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("applying crds/datapipeline.yaml")?;
    let established = wait_for(
        &crds,
        CRD_NAME,
        "the DataPipeline CRD to be Established",
        Duration::from_secs(30),
        conditions::is_crd_established(),
    )
    .await?;
    // Established comes before discovery serves the resource; wait for that too.
    let gvk = GroupVersionKind::gvk("datapipeline.io", "v1alpha1", "DataPipeline");
    poll_until(
        "discovery to serve datapipelines",
        Duration::from_secs(30),
        || async { Ok(kube::discovery::pinned_kind(client, &gvk).await.ok()) },
    )
    .await?;
    Ok(established)
}

/// Waits (with a watch) until `name` matches `condition`; on timeout the error shows the
/// object's last state.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    condition: impl Condition<K>,
) -> anyhow::Result<K>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + serde::Serialize + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(object))) => Ok(object),
        Ok(Ok(None)) => bail!("waiting for {what}: {name} does not exist"),
        Ok(Err(e)) => Err(anyhow!(e).context(format!("watching {name} for {what}"))),
        Err(_) => {
            let last = match api.get_opt(name).await {
                Ok(Some(o)) => serde_yaml::to_string(&o).unwrap_or_default(),
                Ok(None) => "<absent>".into(),
                Err(e) => format!("<get failed: {e}>"),
            };
            bail!("timed out after {timeout:?} waiting for {what}; last state of {name}:\n{last}")
        }
    }
}

/// Calls `probe` until it returns `Some`, at most `timeout` long (probing every 250 ms).
/// For states a single-object watch cannot express (lists, discovery, absence of many).
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            let detail = last_error
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {what}{detail}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Logs of the code under test (the operator's `tracing` output) in the test's captured
/// output; `RUST_LOG` filters (default: info for the operator, warn otherwise).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,datapipeline_operator=info,pipeline_runtime=info,e2e=info",
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Runtime image the in-process controller puts into pipelines that name none. kwok runs
/// no containers, so it is never pulled.
pub const TEST_RUNTIME_IMAGE: &str = "pipeline-runtime:e2e";

/// Where the in-process operator of the control-plane tests says it runs, for the
/// NetworkPolicies it builds (no pod of it exists: the tests only read the policies).
pub fn test_operator_pods() -> controller::validate::OperatorPods {
    controller::validate::OperatorPods {
        namespace: "datapipeline-system".into(),
        labels: BTreeMap::from([
            (
                "app.kubernetes.io/name".to_string(),
                "datapipeline-operator".to_string(),
            ),
            (
                "app.kubernetes.io/instance".to_string(),
                "datapipeline".to_string(),
            ),
        ]),
    }
}

/// The operator's controller running in this process (a tokio task) on its namespaces,
/// stopped when dropped. Its metrics tell how many reconciles ran.
pub struct RunningController {
    pub metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<Result<(), kube::Error>>,
}

impl RunningController {
    /// Starts `datapipeline_operator::controller::run` watching only `namespace`.
    pub fn start(client: &Client, namespace: &str) -> Self {
        Self::start_in(client, &[namespace])
    }

    /// Starts it watching these namespaces (one controller each).
    pub fn start_in(client: &Client, namespaces: &[&str]) -> Self {
        let metrics = Arc::new(Metrics::new());
        let config = RunConfig {
            settings: OperatorSettings {
                runtime_image: TEST_RUNTIME_IMAGE.into(),
                operator_pods: Some(test_operator_pods()),
            },
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            // Long enough that no periodic resync interferes with the idempotence check.
            resync: Duration::from_secs(3600),
            reporter: Reporter {
                controller: "datapipeline-operator".into(),
                instance: Some("e2e".into()),
            },
            observe_interval: controller::DEFAULT_OBSERVE_INTERVAL,
        };
        let task = tokio::spawn(controller::run(client.clone(), config, metrics.clone()));
        Self { metrics, task }
    }

    /// Reconciles that ended with `result` (`applied`, `blocked` or `failed`) so far.
    pub fn reconciles(&self, result: &str) -> u64 {
        reconcile_count(&self.metrics.render(), result)
    }

    /// An error when the controller task has ended (it should run until dropped).
    pub fn ensure_running(&self) -> anyhow::Result<()> {
        if self.task.is_finished() {
            bail!("the in-process controller stopped (see the captured log)");
        }
        Ok(())
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `datapipeline_operator_reconciles_total{result="<result>"} N` from the metrics text.
fn reconcile_count(metrics: &str, result: &str) -> u64 {
    let prefix = format!("datapipeline_operator_reconciles_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A condition of a DataPipeline's status by type.
pub fn pipeline_condition<'a>(dp: &'a DataPipeline, type_: &str) -> Option<&'a StatusCondition> {
    dp.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// `(phase, Ready status)` of a pipeline, e.g. `(Some("Running"), Some("True"))`.
pub fn phase_and_ready(dp: &DataPipeline) -> (Option<&'static str>, Option<&str>) {
    let phase = dp.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str());
    let ready = pipeline_condition(dp, "Ready").map(|c| c.status.as_str());
    (phase, ready)
}

/// Waits until the pipeline's status says Running with Ready=True for its current
/// generation.
pub async fn wait_until_running(
    api: &Api<DataPipeline>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<DataPipeline> {
    wait_for(
        api,
        name,
        "phase Running and Ready=True",
        timeout,
        |dp: Option<&DataPipeline>| {
            dp.is_some_and(|dp| {
                let current = dp.status.as_ref().and_then(|s| s.observed_generation)
                    == dp.metadata.generation;
                current && phase_and_ready(dp) == (Some("Running"), Some("True"))
            })
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_parsed() {
        let env = parse_exports(
            "export KUBECONFIG=/k/config\nexport KUBECTL=/b/kubectl HELM=/b/helm\nnoise\n",
        );
        let expected: BTreeMap<String, String> = [
            ("HELM", "/b/helm"),
            ("KUBECONFIG", "/k/config"),
            ("KUBECTL", "/b/kubectl"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn reconcile_counts_are_read_from_the_metrics() {
        let text = "# HELP x\ndatapipeline_operator_reconciles_total{result=\"applied\"} 7\n\
                    datapipeline_operator_reconciles_total{result=\"blocked\"} 2\n";
        assert_eq!(reconcile_count(text, "applied"), 7);
        assert_eq!(reconcile_count(text, "blocked"), 2);
        assert_eq!(reconcile_count(text, "failed"), 0);
    }

    #[test]
    fn unique_names_are_dns_labels_and_differ() {
        let a = unique_name("e2e-x");
        let b = unique_name("e2e-x");
        assert_ne!(a, b);
        assert_eq!(a.len(), "e2e-x-".len() + 8);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }
}
