//! Leader election of the real `datapipeline-operator` binary against the control plane of
//! `e2e/services.sh up k8s`: two candidates run as child processes with the kubeconfig;
//! exactly one holds the Lease and reconciles while the other only campaigns (its /healthz
//! answers, its leader gauge is 0, it reconciles nothing); after SIGKILL of the leader the
//! other takes the Lease once it expired and reconciles a change; a leader stopped with
//! SIGTERM releases the Lease, so a waiting candidate leads within a retry period; a
//! leader that finds another holder in the Lease exits non-zero. The chart's
//! leader-election Role (`charts/.../templates/leader-election.yaml`) is enough to
//! campaign, lead and release as the operator's ServiceAccount, and nothing more; with
//! `replicaCount=2` the chart renders two replicas, a rolling update and a
//! PodDisruptionBudget.
//! Run: `e2e/services.sh up k8s && cargo test -p e2e --test operator_leader_election -- --test-threads=1`.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use datapipeline_operator::crd::DataPipeline;
use datapipeline_operator::leader::{Elector, Timing};
use e2e::control_plane::{lint_problems, CHART, SHOP};
use e2e::k8s::{self, TestNamespace};
use e2e::runtime::{free_port, http_get, workspace_binary};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};

/// The Lease's default name (`--leader-election-lease-name`).
const LEASE: &str = "datapipeline-operator";
/// Short enough for a test, long enough that an expiry is told apart from a release.
const LEASE_SECONDS: u64 = 10;
const RENEW_SECONDS: u64 = 3;
const RETRY_SECONDS: u64 = 1;

/// One `datapipeline-operator` process; SIGKILLed if dropped while running.
struct Candidate {
    name: String,
    port: u16,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Candidate {
    fn start(binary: &Path, namespace: &str, name: &str, logs: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = logs.join(format!("{name}.log"));
        let output = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(binary)
            .args(["run", "--log-format", "text", "--runtime-image"])
            .arg(k8s::TEST_RUNTIME_IMAGE)
            .args(["--watch-namespace", namespace])
            .arg(format!("--http-address=127.0.0.1:{port}"))
            .arg(format!("--leader-election-lease-duration={LEASE_SECONDS}"))
            .arg(format!("--leader-election-renew-period={RENEW_SECONDS}"))
            .arg(format!("--leader-election-retry-period={RETRY_SECONDS}"))
            .env("KUBECONFIG", k8s::kubeconfig_path()?)
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", namespace)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            name: name.into(),
            port,
            child,
            log,
        })
    }

    /// `(datapipeline_operator_leader, reconciles of any result)` from its /metrics.
    async fn leader_and_reconciles(&self) -> anyhow::Result<(i64, u64)> {
        let (status, text) = http_get(self.port, "/metrics").await?;
        ensure!(status == 200, "GET /metrics of {}: {status}", self.name);
        let leader = text
            .lines()
            .find_map(|l| l.strip_prefix("datapipeline_operator_leader "))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no leader gauge in\n{text}"))?;
        let reconciles = text
            .lines()
            .filter(|l| l.starts_with("datapipeline_operator_reconciles_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        Ok((leader, reconciles))
    }

    /// Waits until its /metrics say `(leader, reconciled at all)`.
    async fn wait_until(&self, leader: i64, reconciled: bool) -> anyhow::Result<()> {
        let what = format!(
            "{} to report leader={leader}, reconciled={reconciled}",
            self.name
        );
        k8s::poll_until(&what, Duration::from_secs(60), || async {
            let (l, r) = self.leader_and_reconciles().await?;
            Ok((l == leader && (r > 0) == reconciled).then_some(()))
        })
        .await
        .with_context(|| self.log_text())
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("already exited")?;
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()?;
        ensure!(sent.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => anyhow::bail!(
                "{} did not exit within {timeout:?}\n{}",
                self.name,
                self.log_text()
            ),
        }
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("log of {}:\n{text}", self.name)
    }
}

fn holder(lease: Option<&Lease>) -> Option<&str> {
    lease?.spec.as_ref()?.holder_identity.as_deref()
}

fn transitions(lease: &Lease) -> Option<i32> {
    lease.spec.as_ref()?.lease_transitions
}

async fn wait_for_holder(
    leases: &Api<Lease>,
    who: &str,
    timeout: Duration,
) -> anyhow::Result<Lease> {
    k8s::wait_for(
        leases,
        LEASE,
        &format!("{who} to hold the Lease"),
        timeout,
        move |l: Option<&Lease>| holder(l) == Some(who),
    )
    .await
}

/// Waits until the pipeline's status describes its current generation.
async fn wait_until_observed(pipelines: &Api<DataPipeline>) -> anyhow::Result<DataPipeline> {
    k8s::wait_for(
        pipelines,
        SHOP,
        "status.observedGeneration to reach metadata.generation",
        Duration::from_secs(120),
        |dp: Option<&DataPipeline>| {
            dp.is_some_and(|dp| {
                dp.status.as_ref().and_then(|s| s.observed_generation) == dp.metadata.generation
            })
        },
    )
    .await
}

async fn set_paused(pipelines: &Api<DataPipeline>, paused: bool) -> anyhow::Result<i64> {
    let patch = serde_json::json!({"spec": {"paused": paused}});
    let dp = pipelines
        .patch(SHOP, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    dp.metadata.generation.context("generation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_another_takes_over() -> anyhow::Result<()> {
    k8s::init_logging();
    let binary =
        tokio::task::spawn_blocking(|| workspace_binary("operator", "datapipeline-operator"))
            .await??;
    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let ns = TestNamespace::create(&client, "e2e-leader").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let logs = tempfile::tempdir()?;

    // Two candidates: exactly one holds the Lease, created with no transition.
    let a = Candidate::start(&binary, &ns.name, "candidate-a", logs.path())?;
    let b = Candidate::start(&binary, &ns.name, "candidate-b", logs.path())?;
    let lease = k8s::wait_for(
        &leases,
        LEASE,
        "a holder of the Lease",
        Duration::from_secs(60),
        |l: Option<&Lease>| holder(l).is_some(),
    )
    .await?;
    assert_eq!(transitions(&lease), Some(0));
    let (mut leader, follower) = if holder(Some(&lease)) == Some("candidate-a") {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(holder(Some(&lease)), Some(leader.name.as_str()));
    assert_eq!(
        lease.spec.as_ref().and_then(|s| s.lease_duration_seconds),
        Some(10)
    );

    // Only the leader reconciles; the other campaigns, healthy.
    k8s::apply_file(
        &client,
        &ns.name,
        &k8s::repo_root().join("examples/shop-events.yaml"),
    )
    .await?;
    wait_until_observed(&pipelines)
        .await
        .with_context(|| leader.log_text())?;
    leader.wait_until(1, true).await?;
    assert_eq!(follower.leader_and_reconciles().await?, (0, 0));
    assert_eq!(http_get(follower.port, "/healthz").await?.0, 200);

    // SIGKILL: nothing releases the Lease; the other candidate takes it once it has seen
    // it unchanged for the lease duration, counts the transition and reconciles a change.
    let killed = Instant::now();
    leader.signal("KILL")?;
    leader.wait_exit(Duration::from_secs(10)).await?;
    let lease = wait_for_holder(&leases, &follower.name, Duration::from_secs(60)).await?;
    let took = killed.elapsed();
    println!(
        "after SIGKILL of the leader, {} led in {took:?}",
        follower.name
    );
    // The last renewal was at most a renew period before the kill.
    assert!(
        took >= Duration::from_secs(LEASE_SECONDS - RENEW_SECONDS - 1),
        "taken over after {took:?}, before the Lease expired"
    );
    assert_eq!(transitions(&lease), Some(1));
    let mut leader = follower;
    let generation = set_paused(&pipelines, true).await?;
    let dp = wait_until_observed(&pipelines)
        .await
        .with_context(|| leader.log_text())?;
    assert_eq!(dp.metadata.generation, Some(generation));
    leader.wait_until(1, true).await?;

    // A replacement campaigns; SIGTERM of the leader releases the Lease and exits 0, and
    // the replacement leads within a retry period, well before the lease would expire.
    let mut replacement = Candidate::start(&binary, &ns.name, "candidate-c", logs.path())?;
    replacement.wait_until(0, false).await?;
    let terminated = Instant::now();
    leader.signal("TERM")?;
    let status = leader.wait_exit(Duration::from_secs(30)).await?;
    assert!(status.success(), "{status}\n{}", leader.log_text());
    let lease = wait_for_holder(
        &leases,
        &replacement.name,
        Duration::from_secs(LEASE_SECONDS),
    )
    .await?;
    let took = terminated.elapsed();
    println!(
        "after SIGTERM of the leader, {} led in {took:?}",
        replacement.name
    );
    assert!(
        took < Duration::from_secs(RETRY_SECONDS + 3),
        "took over {took:?} after SIGTERM: the Lease was not released"
    );
    assert_eq!(transitions(&lease), Some(2));
    let generation = set_paused(&pipelines, false).await?;
    let dp = wait_until_observed(&pipelines)
        .await
        .with_context(|| replacement.log_text())?;
    assert_eq!(dp.metadata.generation, Some(generation));
    replacement.wait_until(1, true).await?;

    // A leader that finds someone else in the Lease stops and exits non-zero.
    let intruder = serde_json::json!({"spec": {
        "holderIdentity": "intruder",
        "renewTime": MicroTime(Timestamp::now()),
        "leaseDurationSeconds": 3600,
    }});
    leases
        .patch(LEASE, &PatchParams::default(), &Patch::Merge(&intruder))
        .await?;
    let status = replacement
        .wait_exit(Duration::from_secs(RENEW_SECONDS + 10))
        .await?;
    assert!(!status.success(), "{status}");
    let log = replacement.log_text();
    assert!(
        log.contains("lost the leader-election Lease (the Lease names intruder as its holder)"),
        "{log}"
    );
    Ok(())
}

/// The YAML documents of `helm template` output.
fn documents(rendered: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(rendered) {
        let value: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn of_kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_lease_role_is_enough_and_two_replicas_get_a_budget() -> anyhow::Result<()> {
    k8s::init_logging();
    let client = k8s::client().await?;
    let ns = TestNamespace::create(&client, "e2e-leader-rbac").await?;
    let template = |set: &str| {
        let ns = ns.name.clone();
        let set = set.to_string();
        async move {
            let mut args = vec!["template", "r", CHART, "--kube-version", "v1.34.4"];
            args.extend(["--namespace", &ns, "--set", &set]);
            documents(&k8s::helm(&args).await?.stdout)
        }
    };

    // One replica by default: no budget, but leader election on.
    let single = template("crds.enabled=false").await?;
    assert_eq!(of_kind(&single, "PodDisruptionBudget").len(), 0);
    let lint = k8s::helm(&["lint", "--strict", CHART, "--set", "replicaCount=2"]).await?;
    assert_eq!(
        lint_problems(&lint.stdout),
        Vec::<&str>::new(),
        "{}",
        lint.stdout
    );
    let ha = template("crds.enabled=false,replicaCount=2").await?;
    let deployment = of_kind(&ha, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["strategy"],
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        value("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(value("DATAPIPELINE_LEADER_ELECTION")["value"], "true");
    assert_eq!(
        value("DATAPIPELINE_LEADER_ELECTION_LEASE_NAME")["value"],
        "r-datapipeline-operator"
    );
    assert_eq!(
        value("DATAPIPELINE_LEADER_ELECTION_LEASE_DURATION_SECONDS")["value"],
        "15"
    );
    let budgets = of_kind(&ha, "PodDisruptionBudget");
    assert_eq!(budgets.len(), 1);
    assert_eq!(budgets[0]["spec"]["maxUnavailable"], 1);
    assert_eq!(
        budgets[0]["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let refused = k8s::helm(&[
        "template",
        "r",
        CHART,
        "--kube-version",
        "v1.34.4",
        "--set",
        "replicaCount=2,leaderElection.enabled=false",
    ])
    .await
    .expect_err("two replicas without leader election");
    assert!(
        format!("{refused:#}").contains(
            "replicaCount > 1 needs leaderElection.enabled: without it every replica would reconcile"
        ),
        "{refused:#}"
    );

    // The Role: leases in the release namespace only, get/create/update.
    let roles = of_kind(&ha, "Role");
    let role = roles
        .iter()
        .find(|r| r["metadata"]["name"] == "r-datapipeline-operator-leader-election")
        .context("the leader-election Role")?;
    assert_eq!(role["metadata"]["namespace"], ns.name.as_str());
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}])
    );
    for kind in ["Role", "RoleBinding"] {
        for doc in of_kind(&ha, kind) {
            if doc["metadata"]["name"] == "r-datapipeline-operator-leader-election" {
                k8s::apply_raw(&client, &ns.name, doc.clone()).await??;
            }
        }
    }

    // As the chart's ServiceAccount: campaign (create), lead, renew (update), release.
    let account = format!("system:serviceaccount:{}:r-datapipeline-operator", ns.name);
    let as_operator = k8s::client_as(Some(&account)).await?;
    let timing = Timing::new(
        Duration::from_secs(3),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )?;
    let mut elector = Elector::new(
        as_operator.clone(),
        &ns.name,
        "r-datapipeline-operator",
        "r-datapipeline-operator-0".into(),
        timing,
    );
    // The RoleBinding may take a moment to reach the authorizer: acquire retries.
    tokio::time::timeout(Duration::from_secs(30), elector.acquire())
        .await
        .context("acquiring the Lease as the chart's ServiceAccount")?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    wait_for_lease_holder(
        &leases,
        "r-datapipeline-operator",
        Some("r-datapipeline-operator-0"),
    )
    .await?;
    let renewed = tokio::time::timeout(Duration::from_secs(3), elector.hold()).await;
    assert!(
        renewed.is_err(),
        "renewing as the ServiceAccount: {renewed:?}"
    );
    elector.release().await?;
    wait_for_lease_holder(&leases, "r-datapipeline-operator", None).await?;

    // Nothing more: no listing, no Lease of another namespace.
    let own: Api<Lease> = Api::namespaced(as_operator.clone(), &ns.name);
    k8s::assert_forbidden(own.list(&Default::default()).await, "list leases");
    let elsewhere: Api<Lease> = Api::namespaced(as_operator, "kube-system");
    k8s::assert_forbidden(
        elsewhere.get_opt("kube-controller-manager").await,
        "get a Lease of kube-system",
    );
    Ok(())
}

async fn wait_for_lease_holder(
    leases: &Api<Lease>,
    name: &str,
    who: Option<&'static str>,
) -> anyhow::Result<Lease> {
    k8s::wait_for(
        leases,
        name,
        &format!("the Lease's holder to be {who:?}"),
        Duration::from_secs(30),
        move |l: Option<&Lease>| l.is_some() && holder(l) == who,
    )
    .await
}
