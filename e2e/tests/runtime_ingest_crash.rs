//! Crash test of the ingest role against real Kafka and S3 (versitygw): the
//! `pipeline-runtime ingest` binary is killed with SIGKILL at random points while it
//! publishes a file (each chosen after observing the topic grow), restarted each time, and
//! at the end the events topic holds every accepted row exactly once and the dead-letter
//! topic exactly the rejected rows.

use std::time::Duration;

use anyhow::{Context, Result};
use e2e::runtime::{
    end_offsets, expected_from_embedded_run, runtime_binary, spawn_ingest, unique_name,
    verify_topics, wait_for, write_fixture, Endpoints,
};

const PARTITIONS: i32 = 3;
const KILLS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_at_random_points_publishes_every_row_once() -> Result<()> {
    let endpoints = Endpoints::from_env()?;
    let binary = runtime_binary()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), 1_000_000, 31)?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("embedded"))?;
    let pipeline = unique_name("e2e-icrash");
    let kafka = endpoints.kafka(&pipeline);
    let env = endpoints.runtime_env(&pipeline, &pipeline);
    let log = std::env::temp_dir().join(format!("{pipeline}-ingest.log"));
    let total_rows = (expected.events.len() + expected.rejected.len()) as u64;

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    println!("kill points seed: {seed}");
    let mut next_random = move |low: u64, high: u64| {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        low + seed.wrapping_mul(0x2545_F491_4F6C_DD1D) % (high - low + 1)
    };
    let start = |log: &std::path::Path| -> Result<std::process::Child> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        spawn_ingest(&binary, &env, &csv, PARTITIONS, log_file)
    };

    let mut published_before = 0u64;
    for round in 1..=KILLS {
        let mut child = start(&log)?;
        // 2-12 % of the file beyond what is published: well inside the run, and with
        // 4 rounds at most about half of the file is published before the last run.
        let target = next_random(
            published_before + total_rows / 50,
            published_before + total_rows * 12 / 100,
        );
        let (bootstrap, topic) = (kafka.bootstrap.clone(), kafka.events_topic.clone());
        let reached = wait_for(
            &format!("{target} messages in the events topic"),
            Duration::from_secs(300),
            || {
                let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
                let exited = child.try_wait().map(|s| s.is_some());
                async move {
                    if exited? {
                        // Finished before the kill point: nothing left to interrupt.
                        return Ok(Some(u64::MAX));
                    }
                    let ends = tokio::task::spawn_blocking(move || {
                        end_offsets(&bootstrap, &topic, PARTITIONS)
                    })
                    .await;
                    // The topic appears once the first run created it.
                    let published: i64 = match ends {
                        Ok(Ok(ends)) => ends.values().sum(),
                        _ => 0,
                    };
                    Ok((published as u64 >= target).then_some(published as u64))
                }
            },
        )
        .await?;
        anyhow::ensure!(
            reached != u64::MAX,
            "round {round}: ingest finished before the kill point; log: {}",
            log.display()
        );
        child.kill()?;
        child.wait()?;
        // What the killed run had published by the time it died: the next kill point
        // lies beyond it, so every round interrupts a run that is publishing.
        let (bootstrap, topic) = (kafka.bootstrap.clone(), kafka.events_topic.clone());
        let ends = tokio::task::spawn_blocking(move || end_offsets(&bootstrap, &topic, PARTITIONS))
            .await??;
        // Offsets, not rows: the aborted messages of killed runs and the transaction
        // markers take offsets too.
        published_before = ends.values().sum::<i64>() as u64;
        println!(
            "round {round}: killed after offset {reached} was reached, {published_before} offsets in the topic"
        );
        anyhow::ensure!(
            !std::fs::read_to_string(&log)?.contains("source published"),
            "round {round}: the whole file was published before the kill"
        );
    }

    let status = start(&log)?.wait()?;
    anyhow::ensure!(
        status.success(),
        "the last ingest run failed: {status}; log: {}",
        log.display()
    );
    verify_topics(&kafka, &expected)
        .await
        .with_context(|| format!("after {KILLS} kills; ingest log: {}", log.display()))?;
    Ok(())
}
