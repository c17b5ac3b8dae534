//! Server outages in the middle of a run, against real Kafka, S3 (versitygw) and
//! OpenSearch: the servers are stopped and restarted on their kept data with
//! `e2e/services.sh stop|start`, as a broker restart or an object-store outage would.
//!
//! - The Kafka broker restarts while ingest publishes and process consumes: both ride
//!   it out, and everything equals the embedded run.
//! - The object store goes down while a new process member loads its partitions' state
//!   (after the previous member was killed): the member waits, loads the state once the
//!   store is back, and everything equals the embedded run.
//!
//! The tests restart the shared servers, so they run one at a time (as CI runs every
//! test) and put a stopped server back up even when they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e::runtime::{
    end_offsets, expected_from_embedded_run, free_port, http_get, metric_value, open_bucket,
    runtime_binary, unique_name, verify_distributed, wait_for, wait_until_committed, write_fixture,
    Endpoints,
};
use pipeline_runtime::search::SearchIndex;

const PARTITIONS: i32 = 3;

/// `e2e/services.sh stop NAME` now and `start NAME` when dropped, unless started already.
struct Outage {
    service: &'static str,
    over: bool,
}

impl Outage {
    fn begin(service: &'static str) -> Result<Self> {
        services(&["stop", service])?;
        Ok(Self {
            service,
            over: false,
        })
    }

    fn end(mut self) -> Result<()> {
        self.over = true;
        services(&["start", self.service])
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.over {
            let _ = services(&["start", self.service]);
        }
    }
}

fn services(args: &[&str]) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("services.sh");
    let status = Command::new(&script)
        .args(args)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        status.success(),
        "e2e/services.sh {args:?} failed: {status}"
    );
    Ok(())
}

/// A `pipeline-runtime` child with its log file; killed when dropped.
struct Role {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Role {
    fn start(binary: &Path, env: &[(String, String)], log: PathBuf, args: &[&str]) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(pipeline_config::env::HTTP_PORT, port.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting pipeline-runtime")?;
        Ok(Self { child, log, port })
    }

    fn process(binary: &Path, env: &[(String, String)], log: PathBuf) -> Result<Self> {
        Self::start(
            binary,
            env,
            log,
            &["process", "--checkpoint-interval-ms", "300"],
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the role's /metrics shows at least `events` consumed events and one
    /// checkpoint; fails if it exits first.
    async fn wait_for_consumed(&mut self, events: f64) -> Result<()> {
        let port = self.port;
        let log = self.log.clone();
        let child = &mut self.child;
        wait_for(
            &format!("{events} events consumed and a checkpoint"),
            Duration::from_secs(300),
            || {
                let exited = child.try_wait();
                let log = log.clone();
                async move {
                    if let Some(status) = exited? {
                        anyhow::bail!("exited early with {status}; log: {}", log.display());
                    }
                    let Ok((200, text)) = http_get(port, "/metrics").await else {
                        return Ok(None);
                    };
                    let consumed =
                        metric_value(&text, "datapipeline_process_events_in_total").unwrap_or(0.0);
                    let checkpoints = metric_value(&text, "datapipeline_process_checkpoints_total")
                        .unwrap_or(0.0);
                    Ok((consumed >= events && checkpoints >= 1.0).then_some(()))
                }
            },
        )
        .await
    }

    /// Waits until the log has at least `count` lines containing every one of `parts`.
    async fn wait_for_log(&mut self, what: &str, parts: &[&str], count: usize) -> Result<()> {
        let log = self.log.clone();
        let child = &mut self.child;
        wait_for(what, Duration::from_secs(300), || {
            let exited = child.try_wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let log = log.clone();
            async move {
                if let Some(status) = exited? {
                    anyhow::bail!("exited early with {status}; log: {}", log.display());
                }
                let lines = text
                    .lines()
                    .filter(|l| parts.iter().all(|p| l.contains(p)))
                    .count();
                Ok((lines >= count).then_some(()))
            }
        })
        .await
    }

    /// SIGTERM, and a clean exit.
    fn stop(mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "sending SIGTERM failed");
        let exit = self.child.wait()?;
        ensure!(
            exit.success(),
            "did not shut down cleanly: {exit}; log: {}",
            self.log.display()
        );
        Ok(())
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces the file `csv` with a named pipe (same path, so rejected rows name the same
/// source as the embedded run's) that serves its bytes as a slow source would: at about 2.5 MB/s up
/// to `hold_at` (a share of its bytes, cut at a line end), then nothing until the returned
/// sender sends or is dropped, then the rest at once. The thread ends when the whole file
/// is written and the pipe closed. Rows keep arriving while it feeds, so the ingest keeps
/// committing its transactions (it commits between rows) and the process role sees them.
fn feed_through_fifo(
    csv: &Path,
    hold_at: f64,
) -> Result<(
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<std::io::Result<()>>,
)> {
    use std::io::Write;
    const CHUNK: usize = 128 * 1024;
    const CHUNK_EVERY: Duration = Duration::from_millis(50);
    let bytes = std::fs::read(csv)?;
    std::fs::remove_file(csv)?;
    let status = Command::new("mkfifo").arg(csv).status()?;
    ensure!(
        status.success(),
        "mkfifo {} failed: {status}",
        csv.display()
    );
    let cut = (bytes.len() as f64 * hold_at) as usize;
    let cut = cut
        + bytes[cut..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len() - cut, |i| i + 1);
    let (send_rest, rest_wanted) = std::sync::mpsc::channel::<()>();
    let path = csv.to_path_buf();
    let feeder = std::thread::spawn(move || {
        // Opening blocks until the ingest opens the pipe for reading.
        let mut pipe = std::fs::OpenOptions::new().write(true).open(&path)?;
        for chunk in bytes[..cut].chunks(CHUNK) {
            pipe.write_all(chunk)?;
            std::thread::sleep(CHUNK_EVERY);
        }
        let _ = rest_wanted.recv();
        pipe.write_all(&bytes[cut..])
    });
    Ok((send_rest, feeder))
}

fn log_path(pipeline: &str, role: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{pipeline}-{role}.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_and_duplicates_nothing() -> Result<()> {
    let endpoints = Endpoints::from_env()?;
    let binary = runtime_binary()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), 300_000, 81)?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("embedded"))?;
    let pipeline = unique_name("e2e-broker-restart");
    let kafka = endpoints.kafka(&pipeline);
    let env = endpoints.runtime_env(&pipeline, &pipeline);

    // The ingest reads the file through a pipe that feeds it slowly and holds back its last
    // third until the broker is down, so the restart always lands in the middle of
    // publishing (the file alone publishes in about 2 s, sooner than process gets going).
    let (rest_of_file, feeder) = feed_through_fifo(&csv, 2.0 / 3.0)?;
    let mut ingest = Role::start(
        &binary,
        &env,
        log_path(&pipeline, "ingest"),
        &[
            "ingest",
            "--input",
            &csv.display().to_string(),
            "--partitions",
            &PARTITIONS.to_string(),
        ],
    )?;
    let mut process = Role::process(&binary, &env, log_path(&pipeline, "process"))?;
    // Both are in the middle of the run: a sixth of the events consumed and checkpointed.
    process
        .wait_for_consumed(expected.events.len() as f64 / 6.0)
        .await?;
    ensure!(
        ingest.child.try_wait()?.is_none(),
        "the ingest finished before the broker restart; log: {}",
        ingest.log.display()
    );

    let outage = Outage::begin("kafka")?;
    rest_of_file.send(()).ok();
    outage.end()?;
    println!("broker restarted");

    let ingest_exit = tokio::task::spawn_blocking(move || {
        let status = ingest.child.wait();
        (status, ingest)
    })
    .await?;
    let (status, ingest) = ingest_exit;
    let status = status?;
    ensure!(
        status.success(),
        "the ingest did not ride out the broker restart: {status}; log: {}",
        ingest.log.display()
    );
    // The ingest read the whole file, so the feeder has written it all and ended.
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the pipe feeder panicked"))?
        .context("feeding the input pipe")?;
    let ends = end_offsets(&kafka.bootstrap, &kafka.events_topic, PARTITIONS)?;
    wait_until_committed(&kafka, PARTITIONS, &ends, Duration::from_secs(300)).await?;
    let process_log = process.log.clone();
    process.stop()?;

    let store = open_bucket(&endpoints, &pipeline).await?;
    let search = SearchIndex::connect(&endpoints.search(&format!("{pipeline}-profiles")), None)?;
    verify_distributed(&kafka, &store, &search, &expected)
        .await
        .with_context(|| {
            format!(
                "after a broker restart; logs: {} {}",
                ingest.log.display(),
                process_log.display()
            )
        })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_while_partitions_load_is_waited_out() -> Result<()> {
    let endpoints = Endpoints::from_env()?;
    let binary = runtime_binary()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), 120_000, 82)?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("embedded"))?;
    let pipeline = unique_name("e2e-store-outage");
    let kafka = endpoints.kafka(&pipeline);
    let env = endpoints.runtime_env(&pipeline, &pipeline);
    endpoints.ingest_file(&pipeline, &csv, PARTITIONS).await?;
    let ends = end_offsets(&kafka.bootstrap, &kafka.events_topic, PARTITIONS)?;

    // A first member writes some state and is killed.
    let mut first = Role::process(&binary, &env, log_path(&pipeline, "process-1"))?;
    first
        .wait_for_consumed(expected.events.len() as f64 / 4.0)
        .await?;
    first.child.kill()?;
    first.child.wait()?;

    // The next member is up (it reached the store and the index) and joins the group; the
    // group assigns it the partitions only when the killed member's session has expired
    // (no static membership here), and by then the store is down.
    let mut second = Role::process(&binary, &env, log_path(&pipeline, "process-2"))?;
    second
        .wait_for_log("the second member to start", &["process started"], 1)
        .await?;
    let outage = Outage::begin("s3")?;
    // Longer than the 10 attempts (about 21 s) loading a partition used to get: nine
    // waits of one partition, about 25 s.
    second
        .wait_for_log(
            "loading a partition's state to wait for the store nine times",
            &["to load the state of partition", "waiting"],
            9,
        )
        .await?;
    outage.end()?;
    println!("object store restarted");

    wait_until_committed(&kafka, PARTITIONS, &ends, Duration::from_secs(300)).await?;
    let text = second.log_text();
    ensure!(
        text.contains("available"),
        "the member never reported the store available again; log: {}",
        second.log.display()
    );
    let second_log = second.log.clone();
    second.stop()?;

    let store = open_bucket(&endpoints, &pipeline).await?;
    let search = SearchIndex::connect(&endpoints.search(&format!("{pipeline}-profiles")), None)?;
    verify_distributed(&kafka, &store, &search, &expected)
        .await
        .with_context(|| {
            format!(
                "after an object-store outage; log: {}",
                second_log.display()
            )
        })?;
    Ok(())
}
