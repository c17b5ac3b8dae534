//! Two ingests of one pipeline at once, against real Kafka and S3 (versitygw): a second
//! `pipeline-runtime ingest` of the same file starts while the first is publishing (a
//! rollout that overlapped, or a second start by hand). The second fences the first
//! (Kafka transactions, one transactional id per pipeline): the first stops with
//! "fenced", what it left uncommitted is aborted, the second resumes from the first's
//! progress, and the topics hold every row exactly once.

use std::process::Child;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e::runtime::{
    end_offsets, expected_from_embedded_run, runtime_binary, spawn_ingest, unique_name,
    verify_topics, wait_for, write_fixture, Endpoints,
};

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ingest_fences_the_first_and_every_row_lands_once() -> Result<()> {
    let endpoints = Endpoints::from_env()?;
    let binary = runtime_binary()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), 600_000, 77)?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("embedded"))?;
    let pipeline = unique_name("e2e-two-ingest");
    let kafka = endpoints.kafka(&pipeline);
    let env = endpoints.runtime_env(&pipeline, &pipeline);
    let total_rows = (expected.events.len() + expected.rejected.len()) as i64;

    let start = |name: &str| -> Result<(Child, std::path::PathBuf)> {
        let log = std::env::temp_dir().join(format!("{pipeline}-{name}.log"));
        let child = spawn_ingest(
            &binary,
            &env,
            &csv,
            PARTITIONS,
            std::fs::File::create(&log)?,
        )?;
        Ok((child, log))
    };

    let (mut first, first_log) = start("first")?;
    // The first is well into the file: a tenth of the rows reached the events topic.
    let (bootstrap, topic) = (kafka.bootstrap.clone(), kafka.events_topic.clone());
    wait_for(
        "a tenth of the file in the events topic",
        Duration::from_secs(300),
        || {
            let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
            async move {
                let ends = tokio::task::spawn_blocking(move || {
                    end_offsets(&bootstrap, &topic, PARTITIONS)
                })
                .await;
                let published: i64 = match ends {
                    Ok(Ok(ends)) => ends.values().sum(),
                    _ => 0,
                };
                Ok((published >= total_rows / 10).then_some(()))
            }
        },
    )
    .await?;
    ensure!(
        first.try_wait()?.is_none(),
        "the first ingest finished before the second started; log: {}",
        first_log.display()
    );

    let (mut second, second_log) = start("second")?;
    let second_status = tokio::task::spawn_blocking(move || second.wait()).await??;
    ensure!(
        second_status.success(),
        "the second ingest failed: {second_status}; log: {}",
        second_log.display()
    );
    let first_status = tokio::task::spawn_blocking(move || first.wait()).await??;
    let first_text = std::fs::read_to_string(&first_log)?;
    ensure!(
        !first_status.success(),
        "the first ingest was not stopped by the second; log: {}",
        first_log.display()
    );
    ensure!(
        first_text.contains(
            "another ingest of this pipeline started with the same transactional id and took over"
        ),
        "the first ingest stopped, but not because it was fenced; log: {}",
        first_log.display()
    );
    println!(
        "first ingest: {first_status}, {}",
        first_text
            .lines()
            .rev()
            .find(|l| l.contains("fenced"))
            .unwrap_or_default()
    );

    verify_topics(&kafka, &expected)
        .await
        .with_context(|| format!("logs: {} {}", first_log.display(), second_log.display()))?;
    Ok(())
}
