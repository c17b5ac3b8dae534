//! The distributed roles end to end against real Kafka, S3 (versitygw) and OpenSearch:
//! ingest a generated file with broken rows, process it, and compare everything written
//! with the embedded `run` of the same file. Start the servers with
//! `e2e/services.sh up kafka opensearch s3` and export `e2e/services.sh env`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use e2e::runtime::{
    end_offsets, expected_from_embedded_run, free_port, http_get, metric_value, open_bucket,
    unique_name, verify_distributed, wait_for, wait_until_committed, write_fixture, Endpoints,
};
use pipeline_runtime::config::{IngestArgs, ProcessArgs};
use pipeline_runtime::search::SearchIndex;

#[derive(Parser)]
struct IngestCli {
    #[command(flatten)]
    args: IngestArgs,
}

#[derive(Parser)]
struct ProcessCli {
    #[command(flatten)]
    args: ProcessArgs,
}

const PARTITIONS: i32 = 4;

fn common_flags(endpoints: &Endpoints, pipeline: &str, http_port: u16) -> Vec<String> {
    let port = http_port.to_string();
    [
        "--http-port",
        &port,
        "--pipeline",
        pipeline,
        "--kafka-bootstrap",
        &endpoints.kafka_bootstrap,
        "--s3-bucket",
        pipeline,
        "--s3-endpoint",
        &endpoints.s3_endpoint,
        "--s3-region",
        &endpoints.s3_region,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_process_equal_the_embedded_run() -> Result<()> {
    e2e::k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), 60_000, 11)?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("embedded"))?;
    assert!(expected.rejected.len() > 100, "the fixture has broken rows");
    let pipeline = unique_name("e2e-pipe");
    let lookup = endpoints.s3_credentials();

    // Ingest the file.
    let mut argv = vec!["ingest".to_string()];
    argv.extend(common_flags(&endpoints, &pipeline, 0));
    argv.extend([
        "--input".into(),
        csv.display().to_string(),
        "--partitions".into(),
        PARTITIONS.to_string(),
    ]);
    let summary =
        pipeline_runtime::ingest::run_with(IngestCli::parse_from(&argv).args, lookup).await?;
    assert_eq!(summary.rows_accepted, expected.events.len() as u64);
    assert_eq!(summary.rows_rejected, expected.rejected.len() as u64);
    assert_eq!(summary.rows_already_delivered, 0);

    // Ingesting the same file again publishes nothing: its progress record says complete.
    let again =
        pipeline_runtime::ingest::run_with(IngestCli::parse_from(&argv).args, lookup).await?;
    assert_eq!((again.sources, again.sources_skipped), (1, 1));

    // Process until every partition's committed offset reaches its end.
    let mut argv = vec!["process".to_string()];
    argv.extend(common_flags(&endpoints, &pipeline, 0));
    argv.extend([
        "--search-url".into(),
        endpoints.opensearch_url.clone(),
        "--checkpoint-interval-ms".into(),
        "300".into(),
    ]);
    let shutdown = Arc::new(AtomicBool::new(false));
    let process = tokio::spawn(pipeline_runtime::process::run_with(
        ProcessCli::parse_from(&argv).args,
        lookup,
        shutdown.clone(),
    ));
    let kafka = endpoints.kafka(&pipeline);
    let ends = end_offsets(&kafka.bootstrap, &kafka.events_topic, PARTITIONS)?;
    wait_until_committed(&kafka, PARTITIONS, &ends, Duration::from_secs(300)).await?;
    shutdown.store(true, Ordering::SeqCst);
    let processed = process.await??;
    assert_eq!(processed.events_applied, expected.events.len() as u64);
    assert_eq!(processed.events_replayed, 0);

    let store = open_bucket(&endpoints, &pipeline).await?;
    let search = SearchIndex::connect(&endpoints.search(&format!("{pipeline}-profiles")), None)?;
    verify_distributed(&kafka, &store, &search, &expected).await?;

    // The distributed report equals the embedded one on everything the index holds.
    let from_search =
        pipeline_runtime::report::Report::from_profiles(&search.read_all().await?, None);
    let embedded = pipeline_runtime::report::Report::from_profiles(&expected.profiles, None);
    assert_eq!(from_search, embedded);
    Ok(())
}

/// Two members of the group with rebalances while they work: B joins while A is
/// mid-stream (partitions move from A to B with a final checkpoint on A), then B stops
/// (they move back). Each event is applied exactly once across both members, and the
/// result equals the embedded run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_and_rebalances_equal_the_embedded_run() -> Result<()> {
    e2e::k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), 300_000, 12)?;
    let expected = expected_from_embedded_run(&csv, &dir.path().join("embedded"))?;
    let pipeline = unique_name("e2e-rebal");
    let lookup = endpoints.s3_credentials();

    let mut argv = vec!["ingest".to_string()];
    argv.extend(common_flags(&endpoints, &pipeline, 0));
    argv.extend([
        "--input".into(),
        csv.display().to_string(),
        "--partitions".into(),
        PARTITIONS.to_string(),
    ]);
    pipeline_runtime::ingest::run_with(IngestCli::parse_from(&argv).args, lookup).await?;
    let kafka = endpoints.kafka(&pipeline);
    let ends = end_offsets(&kafka.bootstrap, &kafka.events_topic, PARTITIONS)?;

    let member = |port: u16| {
        let mut argv = vec!["process".to_string()];
        argv.extend(common_flags(&endpoints, &pipeline, port));
        argv.extend([
            "--search-url".into(),
            endpoints.opensearch_url.clone(),
            "--checkpoint-interval-ms".into(),
            "200".into(),
            "--max-pending-events".into(),
            "20000".into(),
        ]);
        ProcessCli::parse_from(&argv).args
    };
    let (port_a, port_b) = (free_port()?, free_port()?);
    let stop_a = Arc::new(AtomicBool::new(false));
    let stop_b = Arc::new(AtomicBool::new(false));
    let a = tokio::spawn(pipeline_runtime::process::run_with(
        member(port_a),
        lookup,
        stop_a.clone(),
    ));
    let events_in = |port: u16| async move {
        let (_, text) = http_get(port, "/metrics").await?;
        Ok::<_, anyhow::Error>(
            metric_value(&text, "datapipeline_process_events_in_total").unwrap_or(0.0),
        )
    };
    wait_for("member A consuming", Duration::from_secs(120), || async {
        Ok((events_in(port_a).await? >= 5_000.0).then_some(()))
    })
    .await?;

    let b = tokio::spawn(pipeline_runtime::process::run_with(
        member(port_b),
        lookup,
        stop_b.clone(),
    ));
    wait_for("member B consuming", Duration::from_secs(120), || async {
        Ok((events_in(port_b).await? >= 5_000.0).then_some(()))
    })
    .await?;
    stop_b.store(true, Ordering::SeqCst);
    let summary_b = b.await??;

    wait_until_committed(&kafka, PARTITIONS, &ends, Duration::from_secs(300)).await?;
    stop_a.store(true, Ordering::SeqCst);
    let summary_a = a.await??;

    assert!(summary_b.events_applied > 0, "member B got no work");
    assert_eq!(
        summary_a.events_applied + summary_b.events_applied,
        expected.events.len() as u64,
        "handovers checkpoint on revoke, so no event is applied twice"
    );
    let store = open_bucket(&endpoints, &pipeline).await?;
    let search = SearchIndex::connect(&endpoints.search(&format!("{pipeline}-profiles")), None)?;
    verify_distributed(&kafka, &store, &search, &expected).await
}
