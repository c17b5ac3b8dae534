//! A failing sink turns the `process` role unready, and its recovery ready again, against
//! real Kafka, S3 (versitygw) and OpenSearch: the profiles index is write-blocked
//! (`index.blocks.read_only_allow_delete`, which OpenSearch answers with 429, the same as
//! a flood-stage disk) before the `pipeline-runtime process` binary starts, so its
//! checkpoints fail at the index step and are retried. `/readyz` then answers 503 naming the
//! failing checkpoints (the operator sees the unready pod and reports the pipeline
//! Degraded) while `/healthz` answers 200 (alive and retrying: no restart wanted) and the
//! failures are counted in `datapipeline_process_sink_errors_total`. Lifting the block lets the
//! retried checkpoint through: `/readyz` answers 200 and every event gets committed.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::runtime::{
    end_offsets, free_port, http_get, runtime_binary, unique_name, wait_for, wait_until_committed,
    write_fixture, Endpoints,
};
use pipeline_runtime::search::SearchIndex;

const PARTITIONS: i32 = 2;

/// Kills the child when the test ends, whatever happened.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checkpoints_make_the_process_unready_but_alive() -> Result<()> {
    e2e::k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let binary = runtime_binary()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), 5_000, 31)?;
    let pipeline = unique_name("e2e-unready");
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
    let index = format!("{pipeline}-profiles");
    SearchIndex::connect(&endpoints.search(&index), None)?
        .ensure_index()
        .await?;
    set_write_block(&endpoints.opensearch_url, &index, true)?;

    let port = free_port()?;
    let log = std::env::temp_dir().join(format!("{pipeline}-process.log"));
    let mut child = KillOnDrop(
        Command::new(&binary)
            .args(["process", "--checkpoint-interval-ms", "200"])
            .envs(endpoints.runtime_env(&pipeline, &pipeline))
            .env(pipeline_config::env::HTTP_PORT, port.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting pipeline-runtime process")?,
    );

    let body = wait_for(
        "/readyz to report failing checkpoints",
        Duration::from_secs(240),
        || {
            let exited = child.0.try_wait();
            async move {
                if let Some(status) = exited? {
                    anyhow::bail!("the processor exited with {status}");
                }
                let Ok((status, body)) = http_get(port, "/readyz").await else {
                    return Ok(None); // not listening yet
                };
                Ok((status == 503 && body.starts_with("checkpoints failing")).then_some(body))
            }
        },
    )
    .await
    .with_context(|| format!("process log: {}", log.display()))?;
    println!("/readyz: {body}");

    let (status, _) = http_get(port, "/healthz").await?;
    assert_eq!(status, 200, "a process retrying its sinks is alive");
    let (_, metrics) = http_get(port, "/metrics").await?;
    let retried = metrics
        .lines()
        .find(|l| {
            l.starts_with("datapipeline_process_sink_errors_total")
                && l.contains("sink=\"search\"")
                && l.contains("kind=\"retried\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        retried >= 1.0,
        "search failures are counted as retried sink errors: {metrics}"
    );
    assert!(child.0.try_wait()?.is_none(), "the processor keeps running");

    set_write_block(&endpoints.opensearch_url, &index, false)?;
    wait_for(
        "/readyz to answer 200 again",
        Duration::from_secs(180),
        || {
            let exited = child.0.try_wait();
            async move {
                if let Some(status) = exited? {
                    anyhow::bail!("the processor exited with {status}");
                }
                let (status, _) = http_get(port, "/readyz").await?;
                Ok((status == 200).then_some(()))
            }
        },
    )
    .await
    .with_context(|| format!("process log: {}", log.display()))?;
    wait_until_committed(&kafka, PARTITIONS, &ends, Duration::from_secs(120)).await?;
    Ok(())
}

/// Sets or lifts `index.blocks.read_only_allow_delete` on `index` (curl: the e2e crate has
/// no HTTP client of its own).
fn set_write_block(search_url: &str, index: &str, blocked: bool) -> Result<()> {
    let body = if blocked {
        r#"{"index.blocks.read_only_allow_delete": true}"#
    } else {
        r#"{"index.blocks.read_only_allow_delete": null}"#
    };
    let output = Command::new("curl")
        .args([
            "-sS",
            "-f",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
        ])
        .arg(format!("{search_url}/{index}/_settings"))
        .args(["-d", body])
        .output()
        .context("running curl")?;
    anyhow::ensure!(
        output.status.success(),
        "setting the write block on {index}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
