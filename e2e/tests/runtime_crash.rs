//! Crash test of the process role against real Kafka, S3 (versitygw) and OpenSearch: the
//! `pipeline-runtime process` binary is killed with SIGKILL at random points of one run
//! (each chosen after observing progress on its /metrics), restarted each time, and at
//! the end everything it wrote equals the embedded `run` of the same file: every profile
//! counted exactly once, every event exactly once in the lake. Every other round makes
//! full checkpoints rare, so the kills land while partitions stand on a base plus a chain
//! of deltas, and the next round must recover from that chain.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use e2e::runtime::{
    end_offsets, expected_from_embedded_run, free_port, http_get, metric_value, open_bucket,
    runtime_binary, unique_name, verify_distributed, wait_for, wait_until_committed, write_fixture,
    Endpoints,
};
use pipeline_runtime::search::SearchIndex;

const PARTITIONS: i32 = 3;
const KILLS: usize = 4;

/// xorshift64*: enough randomness for kill points; the seed is printed, and
/// `E2E_CRASH_SEED` replays it.
struct Random(u64);

impl Random {
    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        low + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % (high - low + 1)
    }
}

struct Processor {
    child: Child,
    port: u16,
}

/// A failing test must not leave its processor running (and consuming) after it.
impl Drop for Processor {
    fn drop(&mut self) {
        // Both are no-ops for a child already waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Processor {
    /// `full_checkpoint_cost_factor`: see `pipeline-runtime process --help`; large values
    /// leave partitions on deltas until the 64th, or until idle.
    fn start(
        binary: &std::path::Path,
        env: &[(String, String)],
        log: &std::path::Path,
        full_checkpoint_cost_factor: u32,
    ) -> Result<Self> {
        let port = free_port()?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(binary)
            .arg("process")
            .args([
                "--checkpoint-interval-ms",
                "150",
                "--max-pending-events",
                "20000",
                "--full-checkpoint-cost-factor",
                &full_checkpoint_cost_factor.to_string(),
            ])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(pipeline_config::env::HTTP_PORT, port.to_string())
            // The same static member id on every restart: the new process gets the
            // partitions at once instead of after the killed one's session timeout.
            .env(
                pipeline_config::env::KAFKA_GROUP_INSTANCE_ID,
                "crash-test-member",
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting pipeline-runtime process")?;
        Ok(Self { child, port })
    }

    /// Waits until the process has consumed at least `events` events and completed at
    /// least one checkpoint (with `delta`: at least one delta checkpoint), or until it
    /// stopped consuming because it caught up: the earlier rounds may have left fewer
    /// events than the target, and an idle process is a kill point too.
    async fn wait_for_progress(&mut self, events: u64, delta: bool) -> Result<()> {
        let port = self.port;
        let child = &mut self.child;
        // The last count of consumed events and since when it has not changed.
        let seen = std::sync::Arc::new(std::sync::Mutex::new((-1.0_f64, Instant::now())));
        wait_for(
            &format!("{events} events consumed, or the process caught up"),
            Duration::from_secs(300),
            || {
                let exited = child.try_wait();
                let seen = seen.clone();
                async move {
                    if let Some(status) = exited? {
                        anyhow::bail!("the processor exited early with {status}");
                    }
                    let (status, text) = http_get(port, "/metrics").await?;
                    anyhow::ensure!(status == 200, "/metrics answered {status}");
                    let consumed =
                        metric_value(&text, "datapipeline_process_events_in_total").unwrap_or(0.0);
                    let checkpoints = metric_value(&text, "datapipeline_process_checkpoints_total")
                        .unwrap_or(0.0);
                    let fulls = metric_value(&text, "datapipeline_process_full_checkpoints_total")
                        .unwrap_or(0.0);
                    let deltas_done = !delta || checkpoints > fulls;
                    let reached = consumed >= events as f64 && checkpoints >= 1.0 && deltas_done;
                    let caught_up = {
                        let mut seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                        if seen.0 != consumed {
                            *seen = (consumed, Instant::now());
                        }
                        // Before its first event the process may still be joining the
                        // group: only a long silence counts then.
                        let quiet_for = seen.1.elapsed();
                        quiet_for >= Duration::from_secs(3)
                            && (consumed > 0.0 || quiet_for >= Duration::from_secs(20))
                    };
                    Ok((reached || caught_up).then_some(()))
                }
            },
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_killed_at_random_points_still_equals_the_embedded_run() -> Result<()> {
    let endpoints = Endpoints::from_env()?;
    let binary = runtime_binary()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), 150_000, 23)?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("embedded"))?;
    let pipeline = unique_name("e2e-crash");
    let credentials = endpoints.s3_credentials();

    let args = endpoints.ingest_args(
        &pipeline,
        &[
            "--input",
            &csv.display().to_string(),
            "--partitions",
            &PARTITIONS.to_string(),
        ],
    );
    pipeline_runtime::ingest::run_with(args, credentials).await?;
    let kafka = endpoints.kafka(&pipeline);
    let ends = end_offsets(&kafka.bootstrap, &kafka.events_topic, PARTITIONS)?;
    let total: i64 = ends.values().sum();

    // E2E_CRASH_SEED replays the kill points of a printed seed.
    let seed = match std::env::var("E2E_CRASH_SEED") {
        Ok(seed) => seed.parse::<u64>().context("E2E_CRASH_SEED")? | 1,
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos() as u64
                | 1
        }
    };
    println!("kill points seed: {seed} (E2E_CRASH_SEED={seed} replays them)");
    let mut random = Random(seed);
    let env = endpoints.runtime_env(&pipeline, &pipeline);
    let log = std::env::temp_dir().join(format!("{pipeline}-process.log"));
    for round in 1..=KILLS {
        let factor = if round % 2 == 1 { 100_000 } else { 10 };
        let mut processor = Processor::start(&binary, &env, &log, factor)?;
        // Consumed events count replays too; aim somewhere in the first half of the work so
        // each round kills mid-stream, at an arbitrary point relative to its checkpoints.
        let target = random.between(2_000, (total as u64) / 2);
        processor.wait_for_progress(target, round % 2 == 1).await?;
        processor.child.kill()?;
        let status = processor.child.wait()?;
        println!(
            "round {round}: killed after >= {target} consumed events or catching up ({status}; full checkpoint cost factor {factor})"
        );
    }

    // The last run goes to the end and stops gracefully.
    let mut processor = Processor::start(&binary, &env, &log, 10)?;
    wait_until_committed(&kafka, PARTITIONS, &ends, Duration::from_secs(600)).await?;
    let status = Command::new("kill")
        .args(["-TERM", &processor.child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "sending SIGTERM failed");
    let exit = processor.child.wait()?;
    anyhow::ensure!(
        exit.success(),
        "the processor did not shut down cleanly: {exit}; log: {}",
        log.display()
    );

    // The rounds after a deltas-only round started from a base plus a delta chain.
    let log_text = std::fs::read_to_string(&log)?;
    let recovered_chains = log_text
        .lines()
        .filter(|l| l.contains("partition assigned") && !l.contains("deltas=0"))
        .count();
    anyhow::ensure!(
        recovered_chains > 0,
        "no partition was ever recovered from deltas; log: {}",
        log.display()
    );
    println!("{recovered_chains} partition assignments recovered a delta chain");

    let store = open_bucket(&endpoints, &pipeline).await?;
    let search = SearchIndex::connect(&endpoints.search(&format!("{pipeline}-profiles")), None)?;
    verify_distributed(&kafka, &store, &search, &expected)
        .await
        .with_context(|| {
            format!(
                "after {KILLS} kills (seed {seed}); processor log: {}",
                log.display()
            )
        })?;
    Ok(())
}
