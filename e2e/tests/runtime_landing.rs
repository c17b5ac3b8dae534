//! Ingest from the object-store landing prefix against real Kafka and S3 (versitygw):
//! CSV objects under `landing/` are streamed from S3 and published exactly once; a second
//! run skips them, and a file landing later is picked up on its own. An object that is not
//! a CSV file the pipeline reads is dead-lettered as a file (one record on the dead-letter
//! topic, its progress record marked with the reason) and the objects after it proceed.

use anyhow::{Context, Result};
use e2e::runtime::{
    expected_from_embedded_run, open_bucket, unique_name, verify_topics, write_fixture, Endpoints,
    Expected,
};
use pipeline_runtime::event::{RejectKind, Rejected};
use pipeline_runtime::ingest::{progress_key, source_id, IngestProgress};
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

/// The dead letter of a landing object that is not CSV.
fn bad_file(key: &str, reason: &str) -> Rejected {
    Rejected {
        source: key.to_string(),
        line: 1,
        field: None,
        kind: RejectKind::BadFile,
        reason: reason.to_string(),
        raw: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_that_are_not_csv_are_dead_lettered_and_the_files_after_them_proceed() -> Result<()>
{
    e2e::k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let dir = tempfile::tempdir()?;
    let pipeline = unique_name("e2e-poison");
    let store = open_bucket(&endpoints, &pipeline).await?;
    let (a_bytes, a) = expected_for(dir.path(), 20_000, 51, "landing/a.csv")?;
    let (d_bytes, d) = expected_for(dir.path(), 10_000, 52, "landing/d.csv")?;
    store.put("landing/a.csv", Bytes::from(a_bytes)).await?;
    // The start of a gzip stream (a compressed file named .csv): not UTF-8, no header.
    store
        .put(
            "landing/b-binary.csv",
            Bytes::from_static(b"\x1f\x8b\x08\x00\xff\x00"),
        )
        .await?;
    // Another CSV: a header without the pipeline's columns.
    store
        .put(
            "landing/c-other.csv",
            Bytes::from_static(b"id,name\n1,x\n2,y\n"),
        )
        .await?;
    store.put("landing/d.csv", Bytes::from(d_bytes)).await?;
    let missing = "not a CSV file this pipeline reads: bad header: required column(s) \
                   event_time, event_type, product_id, price, user_id not found in header";
    let poison = [
        (
            "landing/b-binary.csv",
            format!("{missing} \"\\u{{1f}}\u{fffd}\\u{{8}}\\0\u{fffd}\\0\""),
        ),
        ("landing/c-other.csv", format!("{missing} \"id,name\"")),
    ];

    let credentials = endpoints.s3_credentials();
    let run = || {
        pipeline_runtime::ingest::run_with(
            endpoints.ingest_args(&pipeline, &["--partitions", "3"]),
            credentials,
        )
    };
    let first = run().await?;
    assert_eq!(
        (
            first.sources,
            first.sources_skipped,
            first.sources_dead_lettered
        ),
        (4, 0, 2)
    );
    assert_eq!(
        first.rows_accepted,
        (a.events.len() + d.events.len()) as u64
    );
    assert_eq!(
        first.rows_rejected,
        (a.rejected.len() + d.rejected.len()) as u64
    );
    // Every row of a and d, and one dead letter per poison object, each exactly once.
    let mut expected = merge(&[&a, &d]);
    for (key, reason) in &poison {
        expected.rejected.push(bad_file(key, reason));
    }
    let kafka = endpoints.kafka(&pipeline);
    verify_topics(&kafka, &expected).await?;

    // Where a user finds why: the dead letter above, and the object's progress record.
    for (key, reason) in &poison {
        let listed = store.list(key).await?;
        let object = listed.first().context("the poison object is still there")?;
        let record = store
            .get(&progress_key(&source_id(key, &object.version_tag)))
            .await?
            .context("a progress record for the poison object")?;
        let progress: IngestProgress = serde_json::from_slice(&record)?;
        assert!(progress.complete, "{progress:?}");
        assert_eq!(progress.dead_letter.as_deref(), Some(reason.as_str()));
        assert_eq!((progress.accepted, progress.rejected), (0, 0));
    }

    // A restart re-processes nothing: every object is complete, the topics are unchanged.
    let second = run().await?;
    assert_eq!(
        (
            second.sources,
            second.sources_skipped,
            second.sources_dead_lettered,
            second.rows_accepted,
            second.rows_rejected,
            second.rows_already_delivered
        ),
        (4, 4, 0, 0, 0, 0)
    );
    verify_topics(&kafka, &expected).await?;
    Ok(())
}
