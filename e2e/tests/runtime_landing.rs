//! Ingest from the object-store landing prefix against real Kafka and S3 (versitygw):
//! CSV objects under `landing/` are streamed from S3 and published exactly once; a second
//! run skips them, and a file landing later is picked up on its own.

use anyhow::Result;
use e2e::runtime::{
    expected_from_embedded_run, open_bucket, unique_name, verify_topics, write_fixture, Endpoints,
    Expected,
};
use pipeline_runtime::store::Bytes;

/// The embedded run of a file, with rejected rows named after the object key they were
/// read from (the ingest names a source by its key).
fn expected_for(
    dir: &std::path::Path,
    events: u64,
    seed: u64,
    key: &str,
) -> Result<(Vec<u8>, Expected)> {
    let csv = write_fixture(dir, events, seed)?;
    let mut expected = expected_from_embedded_run(&csv, &dir.join(format!("embedded-{seed}")))?;
    for rejected in &mut expected.rejected {
        rejected.source = key.to_string();
    }
    Ok((std::fs::read(csv)?, expected))
}

fn merge(parts: &[&Expected]) -> Expected {
    let mut all = Expected {
        profiles: Vec::new(),
        events: Vec::new(),
        rejected: Vec::new(),
    };
    for part in parts {
        all.events.extend(part.events.iter().cloned());
        all.rejected.extend(part.rejected.iter().cloned());
    }
    all.events.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landing_objects_are_published_once_each() -> Result<()> {
    e2e::k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let dir = tempfile::tempdir()?;
    let pipeline = unique_name("e2e-landing");
    let store = open_bucket(&endpoints, &pipeline).await?;
    let (a_bytes, a) = expected_for(dir.path(), 40_000, 41, "landing/a.csv")?;
    let (b_bytes, b) = expected_for(dir.path(), 25_000, 42, "landing/b.csv")?;
    let (c_bytes, c) = expected_for(dir.path(), 5_000, 43, "landing/c.csv")?;
    store.put("landing/a.csv", Bytes::from(a_bytes)).await?;
    store.put("landing/b.csv", Bytes::from(b_bytes)).await?;
    // Not CSV: ignored.
    store
        .put("landing/README.txt", Bytes::from_static(b"not data"))
        .await?;

    let credentials = endpoints.s3_credentials();
    let run = || {
        pipeline_runtime::ingest::run_with(
            endpoints.ingest_args(&pipeline, &["--partitions", "3"]),
            credentials,
        )
    };

    let first = run().await?;
    assert_eq!((first.sources, first.sources_skipped), (2, 0));
    assert_eq!(
        first.rows_accepted,
        (a.events.len() + b.events.len()) as u64
    );
    let kafka = endpoints.kafka(&pipeline);
    verify_topics(&kafka, &merge(&[&a, &b])).await?;

    // Nothing new: both are complete.
    let second = run().await?;
    assert_eq!((second.sources, second.sources_skipped), (2, 2));

    // A third file lands: only it is read.
    store.put("landing/c.csv", Bytes::from(c_bytes)).await?;
    let third = run().await?;
    assert_eq!((third.sources, third.sources_skipped), (3, 2));
    assert_eq!(third.rows_accepted, c.events.len() as u64);
    verify_topics(&kafka, &merge(&[&a, &b, &c])).await?;
    Ok(())
}
