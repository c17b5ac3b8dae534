//! Lag-driven autoscaling and the status's throughput against a real control plane (the
//! kwok apiserver), real Kafka, S3 (versitygw) and OpenSearch (`e2e/services.sh up`), with
//! real `pipeline-runtime process` children run locally in as many copies as the runtime
//! Deployment asks for (the test's supervisor plays the kubelet; kwok runs no containers).
//!
//! A pipeline on external Kafka with 3 partitions: with an empty topic the in-process
//! controller asks for 1 replica and one process runs; a generated file (with broken rows)
//! is ingested -> the lag raises the replicas to 3, capped at the partitions, and three
//! processes drain the backlog -> the group's commits reach the end of every partition ->
//! after the stabilization window the replicas fall back to 1 and the extra processes are
//! stopped (SIGTERM, final checkpoint). The status's totals equal what the test published
//! (accepted rows in, rejected rows dead-lettered) and what the processes applied; its
//! rates are plausible while events move and 0 once a window passed without any;
//! `kubectl get dp` shows it. Fails when a server is down.
//! Run (after `eval "$(e2e/services.sh env)"`):
//! `cargo test -p e2e --test operator_autoscaling -- --test-threads=1 --nocapture`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use datapipeline_operator::{
    controller::{self, validate::OperatorSettings, RunConfig},
    crd::{DataPipeline, DataPipelineStatus},
    metrics::Metrics,
};
use e2e::k8s::{self, TestNamespace};
use e2e::runtime::{
    committed_offsets, end_offsets, read_topic, runtime_binary, topic_end_total, write_fixture,
    Endpoints,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    api::{Api, PostParams},
    runtime::events::Reporter,
    Client,
};
use pipeline_config::PipelineNames;
use pipeline_runtime::ingest::IngestSummary;
use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    ClientConfig,
};

const PARTITIONS: i32 = 3;
/// Rows of the generated file: a backlog that one debug-built process takes several
/// seconds to drain, while the controller (observing every second) raises the replicas
/// within one or two observations.
const EVENTS: u64 = 200_000;
/// A lag of more than 3 x 1000 asks for more replicas than there are partitions.
const LAG_PER_REPLICA: i64 = 1_000;
const STABILIZATION_SECONDS: i64 = 4;
const CHECKPOINT_INTERVAL_SECONDS: u64 = 1;
const OBSERVE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the supervisor compares the running processes with the Deployment.
const SUPERVISOR_TICK: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_raises_replicas_capped_at_partitions_and_draining_lowers_them() -> Result<()> {
    k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let binary = runtime_binary()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), EVENTS, 29)?;
    let client = k8s::client().await?;
    k8s::install_crd(&client).await?;
    let namespace = TestNamespace::create(&client, "dp-autoscale").await?;
    let name = k8s::unique_name("scale");
    let names = PipelineNames::new(name.clone());
    create_topics(&endpoints.kafka_bootstrap, &names).await?;

    let _controller = start_controller(&client, &namespace.name);
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &namespace.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace.name);
    pipelines
        .create(&PostParams::default(), &pipeline(&name, &endpoints)?)
        .await?;
    let log_dir = std::env::temp_dir().join(format!("{name}-processes"));
    std::fs::create_dir_all(&log_dir)?;
    println!("runtime process logs: {}", log_dir.display());
    let launcher = Launcher {
        binary,
        env: process_env(&endpoints, &name),
        log_dir,
    };
    let mut supervisor = Supervisor::spawn(deployments.clone(), name.clone(), launcher);
    let fleet = supervisor.fleet.clone();
    let rates = Mutex::new(RatesSeen::default());

    // An empty topic: the minimum of one replica, one process.
    supervisor
        .supervised(k8s::poll_until(
            "one replica and one process for an empty topic",
            Duration::from_secs(60),
            || async {
                let replicas = runtime_replicas(&deployments, &name).await?;
                Ok((replicas == Some(1) && lock(&fleet).running == 1).then_some(()))
            },
        ))
        .await?;

    // The backlog: ingest the file while the one process consumes. The lag asks for more
    // replicas than there are partitions.
    let started = Instant::now();
    let (summary, risen) = supervisor
        .supervised(async {
            tokio::try_join!(
                ingest(&endpoints, &name, &csv),
                k8s::poll_until(
                    "replicas to rise to the partition count",
                    Duration::from_secs(120),
                    || async {
                        let status = current_status(&pipelines, &name, &rates).await?;
                        let replicas = runtime_replicas(&deployments, &name).await?;
                        let capped = status.autoscaler.as_ref().is_some_and(|a| {
                            a.desired_replicas == PARTITIONS
                                && a.reason.contains("capped at 3 partitions")
                        });
                        Ok((capped && replicas == Some(PARTITIONS)).then_some(status))
                    },
                )
            )
        })
        .await?;
    let risen_after = started.elapsed();
    check_capped(&risen)?;
    let accepted = i64::try_from(summary.rows_accepted)?;
    let rejected = i64::try_from(summary.rows_rejected)?;
    ensure!(
        accepted > 0 && rejected > 0 && summary.rows_already_delivered == 0,
        "ingest summary {summary:?}"
    );
    let ends = {
        let (bootstrap, topic) = (endpoints.kafka_bootstrap.clone(), names.events_topic());
        tokio::task::spawn_blocking(move || end_offsets(&bootstrap, &topic, PARTITIONS)).await??
    };
    let (messages, dead_letter_offsets) = {
        let (bootstrap, events, dead_letters) = (
            endpoints.kafka_bootstrap.clone(),
            names.events_topic(),
            names.dead_letter_topic(),
        );
        tokio::task::spawn_blocking(move || -> Result<(usize, i64)> {
            Ok((
                read_topic(&bootstrap, &events)?.len(),
                topic_end_total(&bootstrap, &dead_letters)?,
            ))
        })
        .await??
    };
    ensure!(
        i64::try_from(messages)? == accepted,
        "the events topic holds {messages} events, ingest accepted {accepted}"
    );
    // The status counts offsets: the events plus the ingest's transaction markers.
    let offsets = Offsets {
        events: ends.values().sum(),
        dead_letters: dead_letter_offsets,
    };

    // Three processes drain the backlog: the group's commits reach every partition's end.
    let shown = AtomicBool::new(false);
    supervisor
        .supervised(k8s::poll_until(
            "three processes to commit every partition to its end",
            Duration::from_secs(180),
            || async {
                let status = current_status(&pipelines, &name, &rates).await?;
                let draining = status
                    .throughput
                    .as_ref()
                    .is_some_and(|t| t.consumer_lag > 0 && t.processed_per_second > 0.0);
                if draining && !shown.swap(true, Ordering::SeqCst) {
                    print_table("while draining", &namespace.name, &name).await?;
                }
                let committed = group_commits(&endpoints, &names).await?;
                Ok((committed == ends && lock(&fleet).max_running == 3).then_some(()))
            },
        ))
        .await?;
    let drained_after = started.elapsed();

    // After the stabilization window: one replica, one process; the status's totals equal
    // what was published and dead-lettered, and a window without events has rates of 0.
    let status = supervisor
        .supervised(k8s::poll_until(
            "replicas to fall after the stabilization window and the rates to settle",
            Duration::from_secs(90),
            || async {
                let status = current_status(&pipelines, &name, &rates).await?;
                let replicas = runtime_replicas(&deployments, &name).await?;
                let desired = status.autoscaler.as_ref().map(|a| a.desired_replicas);
                let settled = status
                    .throughput
                    .as_ref()
                    .is_some_and(|t| t.processed_per_second == 0.0 && t.ingested_per_second == 0.0);
                let one = desired == Some(1) && replicas == Some(1) && lock(&fleet).running == 1;
                Ok((one && settled).then_some(status))
            },
        ))
        .await?;
    let fell_after = started.elapsed();
    check_scaled_down(&status)?;
    check_totals(&status, &offsets, rejected)?;
    let seen = lock(&rates).clone();
    ensure!(
        seen.processed > 0.0 && seen.processed <= accepted as f64,
        "processed events/s seen while draining: {seen:?} (accepted {accepted})"
    );
    ensure!(
        seen.ingested > 0.0 && seen.ingested <= accepted as f64,
        "ingested events/s seen while ingesting: {seen:?} (accepted {accepted})"
    );
    let table = print_table("after draining", &namespace.name, &name).await?;
    check_table(&table)?;

    // Every process stops cleanly; together they applied each accepted event exactly once.
    let fleet = supervisor.shutdown().await?;
    println!("{fleet:#?}\nrates seen: {seen:?}");
    check_fleet(&fleet, accepted)?;
    println!(
        "after the ingest started: 3 replicas at {:.1}s, drained at {:.1}s, 1 replica at {:.1}s",
        risen_after.as_secs_f64(),
        drained_after.as_secs_f64(),
        fell_after.as_secs_f64()
    );
    Ok(())
}

// ------------------------------------------------------------------ checks

/// The decision that raised the replicas: the lag asks for more than 3, capped at the 3
/// partitions. The poll may see the decision that scaled up or a later one that holds.
fn check_capped(status: &DataPipelineStatus) -> Result<()> {
    let autoscaler = status.autoscaler.as_ref().context("autoscaler block")?;
    let inputs = &autoscaler.inputs;
    ensure!(
        (
            inputs.partitions,
            inputs.partitions_with_lag,
            inputs.lag_per_replica
        ) == (PARTITIONS, PARTITIONS, LAG_PER_REPLICA),
        "inputs {inputs:?}"
    );
    let lag = inputs.total_lag;
    let asks = (lag + LAG_PER_REPLICA - 1) / LAG_PER_REPLICA;
    ensure!(asks > 3, "lag {lag} asks for {asks}");
    let why = format!(
        "lag {lag} at {LAG_PER_REPLICA} per replica asks for {asks}, capped at 3 partitions"
    );
    ensure!(
        [
            format!("{why}: scale up at 3"),
            format!("{why}: steady at 3")
        ]
        .contains(&autoscaler.reason),
        "reason {:?}",
        autoscaler.reason
    );
    Ok(())
}

/// The decision that lowered the replicas, or a later one that holds at 1.
fn check_scaled_down(status: &DataPipelineStatus) -> Result<()> {
    let autoscaler = status.autoscaler.as_ref().context("autoscaler block")?;
    let why = format!("lag 0 at {LAG_PER_REPLICA} per replica asks for 0, raised to minReplicas 1");
    ensure!(
        [
            format!(
                "{why}: scale down to 1, the highest recommendation of the last {STABILIZATION_SECONDS}s"
            ),
            format!("{why}: steady at 1"),
        ]
        .contains(&autoscaler.reason),
        "reason {:?}",
        autoscaler.reason
    );
    ensure!(autoscaler.last_scale_time.is_some(), "{autoscaler:?}");
    Ok(())
}

/// The topics' end offsets after the ingest: the status's totals count offsets.
struct Offsets {
    events: i64,
    dead_letters: i64,
}

/// The status's totals: the events topic ingested and processed to its end, the
/// dead-letter topic's end (at least one offset per rejected row), no lag, a checkpoint
/// seen, ThroughputMeasured True.
fn check_totals(status: &DataPipelineStatus, offsets: &Offsets, rejected: i64) -> Result<()> {
    let throughput = status.throughput.as_ref().context("throughput block")?;
    ensure!(
        (
            throughput.events_ingested,
            throughput.events_processed,
            throughput.consumer_lag,
            throughput.dead_letters
        ) == (offsets.events, offsets.events, 0, offsets.dead_letters),
        "throughput {throughput:?}, expected {} event offsets and {} dead-letter offsets",
        offsets.events,
        offsets.dead_letters
    );
    ensure!(
        offsets.dead_letters >= rejected,
        "{} dead-letter offsets for {rejected} rejected rows",
        offsets.dead_letters
    );
    ensure!(
        throughput.last_checkpoint_time.is_some(),
        "no checkpoint time: {throughput:?}"
    );
    let measured = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ThroughputMeasured")
        .context("ThroughputMeasured condition")?;
    ensure!(measured.status == "True", "{measured:?}");
    Ok(())
}

/// The processes followed the Deployment (1 -> 3 -> 1, at most 3 at once), every stopped
/// one exited cleanly, and together they applied each accepted event exactly once.
fn check_fleet(fleet: &Fleet, accepted: i64) -> Result<()> {
    ensure!(
        fleet.replicas_seen.first() == Some(&1)
            && fleet.replicas_seen.iter().max() == Some(&PARTITIONS)
            && fleet.replicas_seen.last() == Some(&1),
        "Deployment replicas seen: {:?}",
        fleet.replicas_seen
    );
    ensure!(fleet.max_running == 3, "at most {} ran", fleet.max_running);
    ensure!(
        fleet.stopped.len() == fleet.started,
        "started {}, stopped {}",
        fleet.started,
        fleet.stopped.len()
    );
    let applied: u64 = fleet.stopped.iter().map(|t| t.applied).sum();
    let replayed: u64 = fleet.stopped.iter().map(|t| t.replayed).sum();
    println!("the processes applied {applied} events and skipped {replayed} replayed ones");
    ensure!(
        i64::try_from(applied)? == accepted,
        "the processes applied {applied} events, ingest accepted {accepted}"
    );
    Ok(())
}

/// The largest rates the status showed.
#[derive(Clone, Debug, Default)]
struct RatesSeen {
    ingested: f64,
    processed: f64,
}

/// The pipeline's status, recording the rates it shows.
async fn current_status(
    pipelines: &Api<DataPipeline>,
    name: &str,
    rates: &Mutex<RatesSeen>,
) -> Result<DataPipelineStatus> {
    let status = pipelines.get(name).await?.status.unwrap_or_default();
    if let Some(t) = &status.throughput {
        let mut seen = lock(rates);
        seen.ingested = seen.ingested.max(t.ingested_per_second);
        seen.processed = seen.processed.max(t.processed_per_second);
    }
    Ok(status)
}

/// Prints `kubectl get dp` and returns its output.
async fn print_table(when: &str, namespace: &str, name: &str) -> Result<String> {
    let table = k8s::kubectl(&["get", "dp", "-n", namespace, name]).await?;
    println!("kubectl get dp ({when}):\n{}", table.stdout);
    ensure!(table.stdout.contains(name), "{table:?}");
    Ok(table.stdout)
}

/// The table's row after draining: no lag, no events moving, one runtime replica.
fn check_table(table: &str) -> Result<()> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .context("no header")?
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines.next().context("no row")?.split_whitespace().collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| row.get(i).copied())
            .with_context(|| format!("no {name} column in {table:?}"))
    };
    ensure!(
        (column("EVENTS/S")?, column("LAG")?) == ("0", "0") && column("REPLICAS")?.ends_with("/1"),
        "{table}"
    );
    Ok(())
}

// ------------------------------------------------------------------ setup

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The events topic with the pipeline's partitions and the dead-letter topic, before the
/// pipeline exists: the controller's first measurement sees an empty topic.
async fn create_topics(bootstrap: &str, names: &PipelineNames) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("Kafka admin client")?;
    let (events, dlq) = (names.events_topic(), names.dead_letter_topic());
    let topics = [
        NewTopic::new(&events, PARTITIONS, TopicReplication::Fixed(1)),
        NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)),
    ];
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("creating topics at {bootstrap}"))?;
    for result in results {
        result.map_err(|(topic, e)| anyhow::anyhow!("creating topic {topic}: {e}"))?;
    }
    Ok(())
}

/// Publishes the file with the runtime's ingest role (in process).
async fn ingest(endpoints: &Endpoints, pipeline: &str, csv: &Path) -> Result<IngestSummary> {
    endpoints.ingest_file(pipeline, csv, PARTITIONS).await
}

/// The runtime's environment for these servers, with the pipeline's checkpoint interval.
fn process_env(endpoints: &Endpoints, pipeline: &str) -> Vec<(String, String)> {
    let mut env = endpoints.runtime_env(pipeline, pipeline);
    env.extend(
        [
            (pipeline_config::env::HTTP_PORT, "0".to_string()),
            (
                pipeline_config::env::CHECKPOINT_INTERVAL_MS,
                (CHECKPOINT_INTERVAL_SECONDS * 1000).to_string(),
            ),
            ("RUST_LOG", "info".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    env
}

fn pipeline(name: &str, endpoints: &Endpoints) -> Result<DataPipeline> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "datapipeline.io/v1alpha1",
        "kind": "DataPipeline",
        "metadata": {"name": name},
        "spec": {
            "source": {"landingPrefix": "landing/"},
            "kafka": {"external": {"bootstrapServers": endpoints.kafka_bootstrap},
                      "partitions": PARTITIONS},
            "objectStore": {"external": {"endpoint": endpoints.s3_endpoint,
                                         "region": endpoints.s3_region},
                            "bucket": name},
            "search": {"external": {"url": endpoints.opensearch_url, "engine": "opensearch"}},
            "runtime": {
                "autoscaling": {
                    "minReplicas": 1,
                    "maxReplicas": 5,
                    "lagPerReplica": LAG_PER_REPLICA,
                    "scaleDownStabilizationSeconds": STABILIZATION_SECONDS
                },
                "checkpointIntervalSeconds": CHECKPOINT_INTERVAL_SECONDS
            }
        }
    }))?)
}

/// The operator's controller in this process, watching the test's namespace.
fn start_controller(client: &Client, namespace: &str) -> AbortOnDrop<Result<(), kube::Error>> {
    let config = RunConfig {
        settings: OperatorSettings {
            runtime_image: k8s::TEST_RUNTIME_IMAGE.into(),
            // Outside the cluster: no pod of the operator for a NetworkPolicy to name.
            operator_pods: None,
        },
        namespaces: vec![namespace.to_string()],
        resync: Duration::from_secs(3600),
        reporter: Reporter {
            controller: "datapipeline-operator".into(),
            instance: Some("e2e-autoscaling".into()),
        },
        observe_interval: OBSERVE_INTERVAL,
    };
    AbortOnDrop(tokio::spawn(controller::run(
        client.clone(),
        config,
        Arc::new(Metrics::new()),
    )))
}

async fn runtime_replicas(deployments: &Api<Deployment>, name: &str) -> Result<Option<i32>> {
    Ok(deployments
        .get_opt(&format!("{name}-runtime"))
        .await?
        .and_then(|d| d.spec.and_then(|s| s.replicas)))
}

async fn group_commits(endpoints: &Endpoints, names: &PipelineNames) -> Result<BTreeMap<i32, i64>> {
    let (bootstrap, group, topic) = (
        endpoints.kafka_bootstrap.clone(),
        names.consumer_group(),
        names.events_topic(),
    );
    tokio::task::spawn_blocking(move || committed_offsets(&bootstrap, &group, &topic, PARTITIONS))
        .await?
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ------------------------------------------------------------------ local runtime processes

/// Starts `pipeline-runtime process` children.
struct Launcher {
    binary: PathBuf,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
}

/// One running child. Killed (SIGKILL) if dropped while running: a failing test leaves no
/// process behind.
struct Member {
    index: usize,
    child: tokio::process::Child,
    log: PathBuf,
}

/// What one process reported when it stopped.
#[derive(Clone, Copy, Debug)]
struct ProcessTotals {
    applied: u64,
    replayed: u64,
}

impl Launcher {
    fn start(&self, index: usize) -> Result<Member> {
        let log = self.log_dir.join(format!("process-{index}.log"));
        let stderr = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(&self.binary)
            .arg("process")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("starting pipeline-runtime process")?;
        Ok(Member { index, child, log })
    }
}

impl Member {
    /// SIGTERM, then waits for the exit (after the final checkpoint) and reads the summary
    /// the process prints on stdout.
    async fn terminate(self) -> Result<ProcessTotals> {
        let Member { index, child, log } = self;
        let pid = child.id().context("the process was already reaped")?;
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        ensure!(sent.success(), "kill -TERM {pid} failed");
        let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .with_context(|| format!("process {index} did not stop; log: {}", log.display()))??;
        ensure!(
            output.status.success(),
            "process {index} stopped with {}; log: {}",
            output.status,
            log.display()
        );
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("summary of process {index}"))?;
        let count = |field: &str| {
            summary[field]
                .as_u64()
                .with_context(|| format!("{field} in {summary}"))
        };
        Ok(ProcessTotals {
            applied: count("events_applied")?,
            replayed: count("events_replayed")?,
        })
    }
}

/// What the supervisor did, shared with the test.
#[derive(Clone, Debug, Default)]
struct Fleet {
    running: usize,
    max_running: usize,
    started: usize,
    /// The Deployment's replicas as the supervisor saw them, consecutive repeats dropped.
    replicas_seen: Vec<i32>,
    /// Totals of every stopped process, in stop order.
    stopped: Vec<ProcessTotals>,
}

/// Keeps the number of running processes equal to the runtime Deployment's replicas.
struct Supervisor {
    fleet: Arc<Mutex<Fleet>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Supervisor {
    fn spawn(deployments: Api<Deployment>, name: String, launcher: Launcher) -> Self {
        let fleet = Arc::new(Mutex::new(Fleet::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(supervise(
            deployments,
            name,
            launcher,
            fleet.clone(),
            stop.clone(),
        ));
        Self { fleet, stop, task }
    }

    /// Runs `what`, failing at once if the supervisor fails (a process exited by itself).
    async fn supervised<T>(
        &mut self,
        what: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::select! {
            result = what => result,
            ended = &mut self.task => match ended {
                Ok(Ok(())) => bail!("the supervisor stopped early"),
                Ok(Err(e)) => Err(e.context("supervising the runtime processes")),
                Err(e) => bail!("the supervisor panicked: {e}"),
            },
        }
    }

    /// Stops every process (SIGTERM) and returns what the supervisor did.
    async fn shutdown(&mut self) -> Result<Fleet> {
        self.stop.store(true, Ordering::SeqCst);
        (&mut self.task).await??;
        Ok(lock(&self.fleet).clone())
    }
}

impl Drop for Supervisor {
    /// Dropping the task drops its members, which kills them.
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn supervise(
    deployments: Api<Deployment>,
    name: String,
    launcher: Launcher,
    fleet: Arc<Mutex<Fleet>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut members: Vec<Member> = Vec::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        for member in &mut members {
            if let Some(status) = member.child.try_wait()? {
                bail!(
                    "process {} exited by itself with {status}; log: {}",
                    member.index,
                    member.log.display()
                );
            }
        }
        let wanted = if stopping {
            0
        } else {
            match runtime_replicas(&deployments, &name).await {
                Ok(replicas) => {
                    let replicas = replicas.unwrap_or(0);
                    let mut fleet = lock(&fleet);
                    if replicas > 0 && fleet.replicas_seen.last() != Some(&replicas) {
                        fleet.replicas_seen.push(replicas);
                    }
                    usize::try_from(replicas).unwrap_or(0)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the runtime Deployment; keeping the processes");
                    members.len()
                }
            }
        };
        while members.len() < wanted {
            let index = lock(&fleet).started;
            members.push(launcher.start(index)?);
            lock(&fleet).started += 1;
        }
        while members.len() > wanted {
            let Some(member) = members.pop() else { break };
            let totals = member.terminate().await?;
            lock(&fleet).stopped.push(totals);
        }
        {
            let mut fleet = lock(&fleet);
            fleet.running = members.len();
            fleet.max_running = fleet.max_running.max(members.len());
        }
        if stopping {
            return Ok(());
        }
        tokio::time::sleep(SUPERVISOR_TICK).await;
    }
}
