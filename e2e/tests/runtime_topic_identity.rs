//! A recreated events topic is detected, not skipped, against real Kafka, S3 (versitygw)
//! and OpenSearch. A pipeline processes a file; its topic is then deleted and created
//! again with other events, as after a lost single-broker volume or a switch to another
//! Kafka. Before this check the process role resumed at the old offsets and dropped every
//! new event below them as a replay. Now it stops with an error that names the topic and
//! the partition, says what happened and how to resume, and writes nothing: the state and
//! the lake stay as they were.
//!
//! Cases: a restart on the unchanged topic resumes silently (the state's last record
//! matches); the topic recreated with more events (the record at the state's last offset
//! differs); recreated with fewer events (the log now ends before the state's offset);
//! partitions added to the topic (users would be split across two partitions).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::runtime::{
    end_offsets, open_bucket, unique_name, wait_for, wait_until_committed, write_fixture, Endpoints,
};
use pipeline_runtime::process::ProcessSummary;
use pipeline_runtime::store::ObjectStore;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

const PARTITIONS: i32 = 2;

async fn ingest(endpoints: &Endpoints, pipeline: &str, csv: &std::path::Path) -> Result<u64> {
    Ok(endpoints
        .ingest_file(pipeline, csv, PARTITIONS)
        .await?
        .rows_accepted)
}

/// Runs `process --exit-when-idle` to its end (at most five minutes).
async fn process_until_idle(
    endpoints: &Endpoints,
    pipeline: &str,
) -> Result<pipeline_runtime::error::Result<ProcessSummary>> {
    let args = endpoints.process_args(
        pipeline,
        &["--exit-when-idle", "--checkpoint-interval-ms", "300"],
    );
    let run = pipeline_runtime::process::run_with(
        args,
        endpoints.s3_credentials(),
        Arc::new(AtomicBool::new(false)),
    );
    tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .context("the process role neither finished nor stopped within 5 minutes")
}

/// Deletes the topic and waits until the brokers no longer list it.
async fn delete_topic(bootstrap: &str, topic: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    for result in admin.delete_topics(&[topic], &AdminOptions::new()).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("deleting {topic}: {code}"))?;
    }
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    wait_for(
        "the deleted topic to disappear from the metadata",
        Duration::from_secs(60),
        || {
            let metadata = probe.fetch_metadata(Some(topic), Duration::from_secs(5));
            async move {
                let gone = metadata.is_ok_and(|m| {
                    m.topics()
                        .iter()
                        .all(|t| t.name() != topic || t.partitions().is_empty())
                });
                Ok(gone.then_some(()))
            }
        },
    )
    .await
}

/// What a stopped process must leave untouched: every object's key and size under the
/// state and lake prefixes.
async fn objects(store: &ObjectStore) -> Result<BTreeMap<String, u64>> {
    let mut all = BTreeMap::new();
    for prefix in ["_state/process/", "events/", "profiles/"] {
        for object in store.list(prefix).await? {
            all.insert(object.key, object.size);
        }
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_stops_the_process_role_instead_of_being_skipped() -> Result<()> {
    e2e::k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let dir = tempfile::tempdir()?;
    let first = write_fixture(dir.path(), 2_000, 61)?;
    let more = write_fixture(dir.path(), 6_000, 62)?;
    let fewer = write_fixture(dir.path(), 300, 63)?;
    let pipeline = unique_name("e2e-topic-id");
    let kafka = endpoints.kafka(&pipeline);

    let accepted = ingest(&endpoints, &pipeline, &first).await?;
    let ends = end_offsets(&kafka.bootstrap, &kafka.events_topic, PARTITIONS)?;
    let processed = process_until_idle(&endpoints, &pipeline).await??;
    assert_eq!(processed.events_applied, accepted);
    wait_until_committed(&kafka, PARTITIONS, &ends, Duration::from_secs(60)).await?;

    // The same topic: the restart reads each partition's last counted record again,
    // finds it unchanged and goes on without applying or replaying anything.
    let restarted = process_until_idle(&endpoints, &pipeline).await??;
    assert_eq!(
        (restarted.events_applied, restarted.events_replayed),
        (0, 0)
    );
    println!("case: restart on the unchanged topic -> resumes, nothing applied twice");

    let store = open_bucket(&endpoints, &pipeline).await?;
    let before = objects(&store).await?;
    assert!(
        before.keys().any(|k| k.starts_with("events/")),
        "the lake holds the first file's events: {before:?}"
    );

    for (case, csv) in [
        ("recreated with more events", &more),
        ("recreated with fewer events", &fewer),
    ] {
        delete_topic(&kafka.bootstrap, &kafka.events_topic).await?;
        ingest(&endpoints, &pipeline, csv).await?;
        let error = match process_until_idle(&endpoints, &pipeline).await? {
            Ok(summary) => {
                anyhow::bail!("{case}: the process role went on over another log: {summary:?}")
            }
            Err(error) => error.to_string(),
        };
        println!("case: topic {case} -> {error}");
        assert!(
            error.starts_with(&format!("topic {} partition ", kafka.events_topic))
                && error.contains("is not the log this pipeline's state was built from")
                && error.contains("To resume, either restore the old topic"),
            "{case}: {error}"
        );
        let expected_cause = if csv == &more {
            "is not the one the state counted"
        } else {
            "its log now ends before offset"
        };
        assert!(error.contains(expected_cause), "{case}: {error}");
        assert_eq!(
            objects(&store).await?,
            before,
            "{case}: the state and the lake are untouched"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_to_the_topic_stop_the_process_role() -> Result<()> {
    e2e::k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let dir = tempfile::tempdir()?;
    let csv = write_fixture(dir.path(), 1_000, 64)?;
    let pipeline = unique_name("e2e-grown");
    let kafka = endpoints.kafka(&pipeline);
    let accepted = ingest(&endpoints, &pipeline, &csv).await?;
    let processed = process_until_idle(&endpoints, &pipeline).await??;
    assert_eq!(processed.events_applied, accepted);
    let store = open_bucket(&endpoints, &pipeline).await?;
    let before = objects(&store).await?;

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .create()?;
    for result in admin
        .create_partitions(
            &[NewPartitions::new(&kafka.events_topic, 3)],
            &AdminOptions::new(),
        )
        .await?
    {
        result.map_err(|(topic, code)| anyhow::anyhow!("adding partitions to {topic}: {code}"))?;
    }
    let error = match process_until_idle(&endpoints, &pipeline).await? {
        Ok(summary) => anyhow::bail!("the process role went on with 3 partitions: {summary:?}"),
        Err(error) => error.to_string(),
    };
    println!("case: partitions added to the topic (2 -> 3) -> {error}");
    assert!(
        error.contains(&format!(
            "topic {} has 3 partitions, but the state of its partition",
            kafka.events_topic
        )) && error.contains("was built when it had 2"),
        "{error}"
    );
    assert_eq!(
        objects(&store).await?,
        before,
        "the state and the lake are untouched"
    );
    Ok(())
}
