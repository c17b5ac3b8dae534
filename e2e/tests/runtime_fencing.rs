//! A member that lost its partition cannot overwrite the new owner's work, against real
//! S3 (versitygw), OpenSearch and Kafka. Member A recovers partition 0 and prepares a
//! checkpoint, then stalls (as a frozen VM would, past the group's session timeout). The
//! group gives the partition to B, which recovers it (claiming it with a conditional write
//! of the intent) and checkpoints. When A wakes up, its checkpoint is refused at its first
//! write with a conflict, and the lake, the state and the index hold exactly B's work.
//! The same for full checkpoints (the base): a base written by the new owner is never
//! replaced by the stalled member's older one.

use std::collections::BTreeMap;

use anyhow::Result;
use e2e::runtime::{open_bucket, unique_name, Endpoints};
use pipeline_runtime::dead_letter::DeadLetterProducer;
use pipeline_runtime::error::Error;
use pipeline_runtime::event::{Event, EventType};
use pipeline_runtime::process::checkpoint::{self, CheckpointJob};
use pipeline_runtime::process::partition::PartitionState;
use pipeline_runtime::search::SearchIndex;
use pipeline_runtime::store::{Bytes, ObjectStore, Precondition};

/// A view by user `1000 + offset % 7` on 2019-10-01.
fn event(offset: i64) -> Event {
    Event {
        event_time: 1_569_888_000_000_000 + offset * 1_000_000,
        event_type: EventType::View,
        product_id: 5,
        category_id: None,
        category_code: None,
        brand: None,
        price_cents: 100,
        user_id: 1_000 + (offset % 7) as u64,
        user_session: Some("s".into()),
    }
}

/// A member that recovered partition 0: the checkpoint it prepares after applying the
/// events of `offsets`, and its claim on the partition.
fn member(
    recovered: checkpoint::Recovered,
    offsets: std::ops::Range<i64>,
    full: bool,
) -> (CheckpointJob, checkpoint::Fence) {
    let mut state = PartitionState::restored(
        0,
        recovered.book,
        recovered.offset.unwrap_or(0),
        recovered.deltas,
    );
    for offset in offsets {
        state.apply(offset, event(offset)).expect("a view applies");
    }
    (CheckpointJob::new(state.take_batch(full)), recovered.fence)
}

/// Every object of the pipeline's bucket with its content.
async fn contents(store: &ObjectStore) -> Result<BTreeMap<String, Bytes>> {
    let mut all = BTreeMap::new();
    for object in store.list("").await? {
        if let Some(bytes) = store.get(&object.key).await? {
            all.insert(object.key, bytes);
        }
    }
    Ok(all)
}

struct Sinks<'a> {
    store: &'a ObjectStore,
    search: &'a SearchIndex,
    dead_letters: &'a DeadLetterProducer,
}

/// Member A recovers the partition and prepares a checkpoint of `a_offsets`, then stalls;
/// B recovers it (claiming it) and writes `b_offsets`. A's write must then be refused and
/// leave everything as B wrote it.
async fn stalled_member_is_refused(
    sinks: &Sinks<'_>,
    what: &str,
    a_offsets: std::ops::Range<i64>,
    b_offsets: std::ops::Range<i64>,
    full: bool,
) -> Result<()> {
    let Sinks {
        store,
        search,
        dead_letters,
    } = sinks;
    let (job_a, fence_a) = member(
        checkpoint::recover(store, 0, "member-a").await?,
        a_offsets,
        full,
    );
    let (job_b, fence_b) = member(
        checkpoint::recover(store, 0, "member-b").await?,
        b_offsets,
        full,
    );
    job_b.write(store, search, dead_letters, &fence_b).await?;
    let after_b = contents(store).await?;
    let refused = job_a.write(store, search, dead_letters, &fence_a).await;
    assert!(
        matches!(refused, Err(Error::Conflict { .. })),
        "the stalled member's {what} is refused: {refused:?}"
    );
    assert_eq!(
        contents(store).await?,
        after_b,
        "the lake and state are B's"
    );
    println!(
        "case: a stalled member's {what} after the new owner's claim -> {}",
        refused.unwrap_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_partition_cannot_overwrite_the_new_owner() -> Result<()> {
    e2e::k8s::init_logging();
    let endpoints = Endpoints::from_env()?;
    let pipeline = unique_name("e2e-fence");
    let store = open_bucket(&endpoints, &pipeline).await?;
    let search = SearchIndex::connect(&endpoints.search(&format!("{pipeline}-profiles")), None)?;
    search.ensure_index().await?;
    let dead_letters = DeadLetterProducer::new(&endpoints.kafka(&pipeline), None)?;

    // The S3 server's conditional writes, which the fencing stands on.
    let first = store
        .put_if("probe", Bytes::from_static(b"1"), &Precondition::Absent)
        .await?;
    assert!(matches!(
        store
            .put_if("probe", Bytes::from_static(b"2"), &Precondition::Absent)
            .await,
        Err(Error::Conflict { .. })
    ));
    let second = store
        .put_if(
            "probe",
            Bytes::from_static(b"2"),
            &Precondition::Matches(first.clone()),
        )
        .await?;
    assert!(matches!(
        store
            .put_if(
                "probe",
                Bytes::from_static(b"3"),
                &Precondition::Matches(first)
            )
            .await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(store.version("probe").await?, Some(second));
    store.delete("probe").await?;

    let sinks = Sinks {
        store: &store,
        search: &search,
        dead_letters: &dead_letters,
    };
    // A delta: A prepares [0, 100), stalls; B claims the partition and writes [0, 150).
    stalled_member_is_refused(&sinks, "delta", 0..100, 0..150, false).await?;
    // A full checkpoint: A recovers at 150 and prepares a base at 160, stalls; B (again
    // the owner) claims and writes a base at 200. A's older base never replaces it.
    stalled_member_is_refused(&sinks, "base", 150..160, 150..200, true).await?;

    // Whoever gets the partition next resumes from B's base, with every user B counted.
    let next = checkpoint::recover(&store, 0, "member-c").await?;
    assert_eq!((next.offset, next.deltas), (Some(200), 0));
    let views: u64 = (0..7)
        .map(|u| next.book.profile(1_000 + u).map_or(0, |p| p.views))
        .sum();
    assert_eq!(views, 200, "each of the 200 events counted once");
    Ok(())
}
