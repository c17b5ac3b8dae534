//! The checkpoint of one partition and its recovery: what the process role writes, in
//! which order, under which names, and how a new owner of a partition undoes a checkpoint
//! that did not finish. Key naming, the state files, the delta chain and the recovery
//! decision are pure; [`CheckpointJob::write`] and [`recover`] do object-store and search
//! I/O.
//!
//! A partition's durable state is a **base** `_state/process/p<P>.state` (every user of P
//! at some offset B) plus a chain of **deltas** `_state/process/p<P>.deltas/<start>.state`,
//! each holding the users one checkpoint changed, covering `[start, end)` with the first
//! delta starting at B and each next one at the previous one's end. A checkpoint's cost
//! therefore grows with what it changed, not with every user the partition ever saw.
//!
//! A checkpoint of partition P covering offsets `[start, end)`:
//! 1. intent `_state/process/p<P>.intent.json`: the batch's range and the lake objects
//!    about to be written;
//! 2. lake objects `events/dt=<day>/p<P>-o<start>.parquet`, one per UTC day in the batch;
//! 3. changed profiles bulk-indexed with `_id = user_id`; every one must end indexed or
//!    refused for good (see [`crate::search`]). The refused ones are written to the
//!    dead-letter topic and acknowledged (see [`crate::dead_letter`]) before going on, so
//!    the commit point is never reached past a profile that vanished without a trace.
//!    While the index refuses writes for a reason that can pass (a write block, auth,
//!    throttling, a missing index, a server failure), this step fails, the checkpoint is
//!    retried with backoff indefinitely and the process reports itself unready with the
//!    reason (see [`super`]);
//! 4. either a **delta** (the changed users' states; the commit point, one atomic PUT), or
//!    a **full** checkpoint: the profile snapshot `profiles/p<P>.parquet` (every user of
//!    P), then a new base at `end` (the commit point), then the deltas it supersedes are
//!    deleted;
//! 5. (by the caller, after a full checkpoint only) the Kafka offset `end` is committed, so
//!    a committed offset always means the lake, the index and the snapshot include it.
//!
//! Which checkpoints are full is the caller's policy ([`super::partition`]): whenever the
//! snapshot is cheap compared with the time since the last one, and always on revoke,
//! shutdown and when the partition goes idle.
//!
//! Recovery on assign: the base plus its delta chain is the truth. Deltas that start
//! before the base are leftovers of a finished compaction; deltas that do not chain (a
//! writer that lost the partition) are deleted before the replay can reach their offsets.
//! If the intent starts at (or after) the recovered offset, that checkpoint never reached
//! its commit point: its lake objects are deleted, because the replay from the recovered
//! offset rewrites the same range and may cut it into different days or a different end.
//! Lake names derive from (partition, start offset) and a replay starts at the recovered
//! offset, so a replayed batch overwrites instead of duplicating; the index is idempotent
//! by `_id`; the snapshot, base and deltas are overwritten.
//!
//! Fencing, with the object store's conditional writes ([`Precondition`]). A member that
//! lost its assignment without noticing (stalled longer than the session timeout, e.g. a
//! frozen VM or a long GC-like pause of its node) must not overwrite the new owner's work.
//! The intent object is the partition's fencing token:
//! - recovery **claims** the partition by rewriting the intent it found under its owner id
//!   with `If-Match` on the version it read (or `If-None-Match: *`), before it deletes
//!   anything;
//! - every checkpoint writes its intent with `If-Match` on the version this member last
//!   wrote, so a member whose partition was claimed since fails at step 1, before it
//!   writes a lake object or a document;
//! - right before the commit point it checks that the intent is still its own, and the
//!   commit point itself is conditional: a delta is created only if no delta has its start
//!   (`If-None-Match: *`), a base replaces only the base this member last saw (`If-Match`).
//!
//! A member whose write meets another writer's version gets [`Error::Conflict`]: it stops
//! (the process exits and rejoins), and whoever owns the partition recovers it from the
//! durable state. What remains open is a stall of exactly the time between the last
//! intent check and the commit PUT (one request) after which the new owner has claimed the
//! partition and deleted the stale lake objects: the stalled member's delta can then still
//! be created. Closing that needs the commit and the claim in one object.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::continuity::RecordMark;
use super::partition::Batch;
use crate::dead_letter::{search_dead_letters, DeadLetterProducer};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::profile::{Profile, ProfileBook, StateRecord, StatesCopy};
use crate::search::SearchIndex;
use crate::store::{ObjectStore, Precondition};
use pipeline_config::layout;

/// Lake objects written at once.
const PUT_CONCURRENCY: usize = 4;

/// `events/dt=YYYY-MM-DD/p<P>-o<start>.parquet`; offsets zero-padded so keys sort in
/// offset order.
pub fn events_key(day: i32, partition: i32, start_offset: i64) -> String {
    format!(
        "{}/p{partition:04}-o{start_offset:020}.parquet",
        crate::parquet::events_partition(day)
    )
}

/// `profiles/p<P>.parquet`.
pub fn profiles_key(partition: i32) -> String {
    format!("{}/p{partition:04}.parquet", layout::PROFILES_PREFIX)
}

pub fn state_key(partition: i32) -> String {
    format!("{}/p{partition:04}.state", layout::PROCESS_STATE_PREFIX)
}

/// The folder of a partition's deltas.
pub fn deltas_prefix(partition: i32) -> String {
    format!("{}/p{partition:04}.deltas/", layout::PROCESS_STATE_PREFIX)
}

/// `_state/process/p<P>.deltas/<start>.state`; zero-padded so keys sort in offset order.
pub fn delta_key(partition: i32, start: i64) -> String {
    format!("{}{start:020}.state", deltas_prefix(partition))
}

/// The start offset a delta key names (`None`: not a delta key of this partition).
pub fn delta_start(partition: i32, key: &str) -> Option<i64> {
    key.strip_prefix(&deltas_prefix(partition))?
        .strip_suffix(".state")?
        .parse()
        .ok()
}

pub fn intent_key(partition: i32) -> String {
    format!(
        "{}/p{partition:04}.intent.json",
        layout::PROCESS_STATE_PREFIX
    )
}

/// What a checkpoint is about to write, and who writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    pub keys: Vec<String>,
    /// The member that wrote it (see [`Fence`]); it makes each member's intents differ in
    /// content, so their version tags (content hashes on most stores) differ too.
    #[serde(default)]
    pub owner: String,
}

/// A member's hold on one partition: the versions of the intent and the base it last wrote
/// or read. Held by the partition's slot and passed to its checkpoints (one at a time).
#[derive(Debug)]
pub struct Fence {
    pub owner: String,
    tags: std::sync::Mutex<FenceTags>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FenceTags {
    intent: String,
    /// `None`: there was no base.
    base: Option<String>,
}

impl Fence {
    fn new(owner: &str, intent: String, base: Option<String>) -> Self {
        Self {
            owner: owner.to_string(),
            tags: std::sync::Mutex::new(FenceTags { intent, base }),
        }
    }

    fn tags(&self) -> FenceTags {
        self.tags.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, change: impl FnOnce(&mut FenceTags)) {
        change(&mut self.tags.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A member's owner id: the host (the pod's name in Kubernetes), the process and the
/// time it started, unique enough that two members never share one.
pub fn owner_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{nanos}", std::process::id())
}

/// The lake objects to delete before replaying a partition whose state is at
/// `state_offset` (`None`: no state yet, i.e. offset 0).
pub fn keys_to_clean(state_offset: Option<i64>, intent: Option<&Intent>) -> Vec<String> {
    match intent {
        Some(intent) if intent.start >= state_offset.unwrap_or(0) => intent.keys.clone(),
        _ => Vec::new(),
    }
}

/// The events of a batch grouped by UTC day, in offset order within each day.
pub fn events_by_day(events: &[Event]) -> BTreeMap<i32, Vec<&Event>> {
    let mut days: BTreeMap<i32, Vec<&Event>> = BTreeMap::new();
    for event in events {
        days.entry(event.utc_day()).or_default().push(event);
    }
    days
}

/// What a state file records about the log it was built from (see [`super::continuity`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Continuity {
    pub last_record: Option<RecordMark>,
    pub topic_partitions: Option<i32>,
}

/// Header of a state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StateHeader {
    version: u32,
    partition: i32,
    /// A delta's first offset; absent in a base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<i64>,
    /// The offset after the last event the file reflects.
    offset: i64,
    users: usize,
    /// The record at `offset - 1` (see [`super::continuity`]); absent in files written
    /// before marks existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_record: Option<RecordMark>,
    /// The topic's partition count when the file was written (see
    /// [`super::continuity::check_partition_count`]); absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic_partitions: Option<i32>,
}

const STATE_MAGIC: &[u8; 8] = b"DPSTATE\0";
const STATE_VERSION: u32 = 1;

/// A decoded base or delta.
#[derive(Debug, Clone, PartialEq)]
pub struct StateFile {
    /// `None` for a base; a delta's first offset.
    pub start: Option<i64>,
    /// The offset after the last event the file reflects.
    pub offset: i64,
    /// The record at `offset - 1`, when the writer recorded it.
    pub last_record: Option<RecordMark>,
    /// The topic's partition count when it was written, when the writer recorded it.
    pub topic_partitions: Option<i32>,
    pub records: Vec<StateRecord>,
}

/// A state file: magic, the JSON header's length (u32 little endian), the JSON header
/// (partition, a delta's start, offset, users), then the users' states as Parquet. One
/// object, so the offset and the profiles it describes are always written together.
/// `start: None` makes a base (every user), `Some` a delta (the users changed in
/// `[start, offset)`).
pub fn encode_state(
    partition: i32,
    start: Option<i64>,
    offset: i64,
    records: &[StateRecord],
) -> Result<Vec<u8>> {
    frame_state(
        partition,
        start,
        offset,
        Continuity::default(),
        records.len(),
        crate::parquet::encode_states(records)?,
    )
}

/// [`encode_state`] of copied states, turned into records a chunk at a time.
fn encode_state_copy(
    partition: i32,
    start: Option<i64>,
    offset: i64,
    continuity: Continuity,
    states: &StatesCopy,
) -> Result<Vec<u8>> {
    frame_state(
        partition,
        start,
        offset,
        continuity,
        states.len(),
        crate::parquet::encode_state_columns(
            states.state_columns(crate::parquet::ENCODE_CHUNK_ROWS),
        )?,
    )
}

/// Magic, header length, header, Parquet.
fn frame_state(
    partition: i32,
    start: Option<i64>,
    offset: i64,
    continuity: Continuity,
    users: usize,
    parquet: Vec<u8>,
) -> Result<Vec<u8>> {
    let header = serde_json::to_vec(&StateHeader {
        version: STATE_VERSION,
        partition,
        start,
        offset,
        users,
        last_record: continuity.last_record,
        topic_partitions: continuity.topic_partitions,
    })?;
    let mut out = Vec::with_capacity(12 + header.len() + parquet.len());
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&parquet);
    Ok(out)
}

/// Decodes a base or delta. A file of another partition, or whose user count differs
/// from its header, is refused.
pub fn decode_state(key: &str, partition: i32, bytes: &[u8]) -> Result<StateFile> {
    let bad = |reason: String| Error::State {
        key: key.to_string(),
        reason,
    };
    if bytes.len() < 12 || &bytes[..8] != STATE_MAGIC {
        return Err(bad("not a state file".into()));
    }
    let header_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let header_bytes = bytes
        .get(12..12 + header_len)
        .ok_or_else(|| bad("truncated header".into()))?;
    let header: StateHeader =
        serde_json::from_slice(header_bytes).map_err(|e| bad(format!("header: {e}")))?;
    if header.version != STATE_VERSION {
        return Err(bad(format!("unknown state version {}", header.version)));
    }
    if header.partition != partition {
        return Err(bad(format!(
            "state of partition {} found under partition {partition}",
            header.partition
        )));
    }
    if header.start.is_some_and(|start| start > header.offset) {
        return Err(bad(format!(
            "delta starts at {:?} after its end {}",
            header.start, header.offset
        )));
    }
    let records = crate::parquet::decode_states(Bytes::copy_from_slice(&bytes[12 + header_len..]))
        .map_err(|e| bad(format!("records: {e}")))?;
    if records.len() != header.users {
        return Err(bad(format!(
            "{} records, header says {}",
            records.len(),
            header.users
        )));
    }
    Ok(StateFile {
        start: header.start,
        offset: header.offset,
        last_record: header.last_record,
        topic_partitions: header.topic_partitions,
        records,
    })
}

/// How a partition's deltas relate to its base.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeltaPlan {
    /// Indices of the deltas to apply, in order: the first starts at the base's offset,
    /// each next one where the previous one ends.
    pub chain: Vec<usize>,
    /// Indices of deltas to delete: superseded by the base, or not on the chain.
    pub discard: Vec<usize>,
    /// The offset the chain reaches: where processing resumes.
    pub offset: i64,
}

/// Orders the deltas `(start, end)` found next to a base at `base_offset` into the chain
/// that continues it. A delta off the chain was written by a member that had lost the
/// partition, or belongs to a range the base already covers; either way it must go
/// before the replay reaches its offsets.
pub fn plan_deltas(base_offset: i64, deltas: &[(i64, i64)]) -> DeltaPlan {
    let mut by_start: BTreeMap<i64, usize> = BTreeMap::new();
    for (index, &(start, _)) in deltas.iter().enumerate() {
        by_start.insert(start, index);
    }
    let mut plan = DeltaPlan {
        offset: base_offset,
        ..DeltaPlan::default()
    };
    while let Some(&index) = by_start.get(&plan.offset) {
        let end = deltas[index].1;
        if end <= plan.offset {
            break;
        }
        plan.chain.push(index);
        plan.offset = end;
    }
    plan.discard = (0..deltas.len())
        .filter(|index| !plan.chain.contains(index))
        .collect();
    plan
}

/// The encoded objects of a batch (CPU work, done off the consumer thread).
struct EncodedBatch {
    intent: Intent,
    lake: Vec<(String, Bytes)>,
    /// Full checkpoints only.
    snapshot: Option<Bytes>,
    state_key: String,
    state: Bytes,
    /// Time spent encoding the snapshot and the state.
    state_encode: std::time::Duration,
}

/// Encodes a batch; on failure returns the batch too when it is still whole (the lake
/// failed), so the checkpoint can be tried again.
fn encode_batch(
    mut batch: Batch,
) -> std::result::Result<EncodedBatch, (Error, Option<Box<Batch>>)> {
    match encode_lake(&batch) {
        Ok(lake) => encode_state_and_snapshot(&mut batch, lake).map_err(|e| (e, None)),
        Err(e) => Err((e, Some(Box::new(batch)))),
    }
}

fn encode_lake(batch: &Batch) -> Result<Vec<(String, Bytes)>> {
    let mut lake = Vec::new();
    let days = events_by_day(&batch.events);
    if days.len() == 1 {
        // The common case: no copy.
        if let Some(&day) = days.keys().next() {
            let bytes = crate::parquet::encode_events(&batch.events)?;
            lake.push((
                events_key(day, batch.partition, batch.start),
                Bytes::from(bytes),
            ));
        }
    } else {
        for (day, events) in days {
            let owned: Vec<Event> = events.into_iter().cloned().collect();
            let bytes = crate::parquet::encode_events(&owned)?;
            lake.push((
                events_key(day, batch.partition, batch.start),
                Bytes::from(bytes),
            ));
        }
    }
    Ok(lake)
}

/// The profile snapshot (Parquet) of every user in `states`, in their order, a chunk of
/// profiles at a time.
fn snapshot_of(states: &StatesCopy) -> Result<Vec<u8>> {
    crate::parquet::encode_profile_chunks(states.profile_chunks(crate::parquet::ENCODE_CHUNK_ROWS))
}

/// Encodes the snapshot and the state, consuming them (a full checkpoint's are every user
/// of the partition: freed chunk by chunk as they are encoded). On failure the batch has
/// lost them, so it must not be retried.
fn encode_state_and_snapshot(
    batch: &mut Batch,
    lake: Vec<(String, Bytes)>,
) -> Result<EncodedBatch> {
    let state_started = std::time::Instant::now();
    let (snapshot, state_key, delta_start) = if batch.full {
        (
            Some(Bytes::from(snapshot_of(&batch.state)?)),
            state_key(batch.partition),
            None,
        )
    } else {
        (
            None,
            delta_key(batch.partition, batch.start),
            Some(batch.start),
        )
    };
    let states = std::mem::take(&mut batch.state);
    let state = Bytes::from(encode_state_copy(
        batch.partition,
        delta_start,
        batch.end,
        Continuity {
            last_record: batch.last_record,
            topic_partitions: batch.topic_partitions,
        },
        &states,
    )?);
    Ok(EncodedBatch {
        intent: Intent {
            partition: batch.partition,
            start: batch.start,
            end: batch.end,
            keys: lake.iter().map(|(k, _)| k.clone()).collect(),
            owner: String::new(),
        },
        lake,
        snapshot,
        state_key,
        state,
        state_encode: state_started.elapsed(),
    })
}

/// One partition's checkpoint: written by [`CheckpointJob::write`], and rewritten
/// unchanged when a write fails. The batch's events, snapshot and state are encoded once,
/// after which only their bytes are kept.
pub struct CheckpointJob {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    pub events: usize,
    /// Users whose states it writes: all of the partition's when full.
    pub users: usize,
    /// Writes the snapshot and a new base (instead of a delta).
    pub full: bool,
    changed: Vec<Profile>,
    raw: std::sync::Mutex<Option<Batch>>,
    encoded: tokio::sync::OnceCell<EncodedBatch>,
    /// Microseconds the last successful write spent on the snapshot and the state.
    state_cost_micros: std::sync::atomic::AtomicU64,
    /// Step 3 finished (profiles indexed, refused ones dead-lettered): a retry of a later
    /// step does not index (and dead-letter) them again.
    search_done: std::sync::atomic::AtomicBool,
}

impl CheckpointJob {
    pub fn new(mut batch: Batch) -> Self {
        Self {
            partition: batch.partition,
            start: batch.start,
            end: batch.end,
            events: batch.events.len(),
            users: batch.state.len(),
            full: batch.full,
            changed: std::mem::take(&mut batch.changed),
            raw: std::sync::Mutex::new(Some(batch)),
            encoded: tokio::sync::OnceCell::new(),
            state_cost_micros: std::sync::atomic::AtomicU64::new(0),
            search_done: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// What encoding and uploading the snapshot and state cost (once written): for a
    /// full checkpoint, the cost that grows with the partition's users.
    pub fn state_cost(&self) -> std::time::Duration {
        std::time::Duration::from_micros(
            self.state_cost_micros
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Whether writing it again is impossible: its encoding failed after consuming the
    /// batch. Its partition must then be replayed from the durable state.
    pub fn is_spent(&self) -> bool {
        self.encoded.get().is_none() && self.raw.lock().map_or(true, |raw| raw.is_none())
    }

    /// Profiles this checkpoint indexes.
    pub fn changed_profiles(&self) -> usize {
        self.changed.len()
    }

    async fn encoded(&self) -> Result<&EncodedBatch> {
        self.encoded
            .get_or_try_init(|| async {
                let batch = self
                    .raw
                    .lock()
                    .ok()
                    .and_then(|mut raw| raw.take())
                    .ok_or_else(|| Error::Worker("checkpoint batch already consumed".into()))?;
                // The batch comes back only if encoding failed before it consumed the
                // snapshot and states (to try again); otherwise its events and states are
                // dropped as they are encoded, leaving only their bytes.
                let result = tokio::task::spawn_blocking(move || encode_batch(batch))
                    .await
                    .map_err(|e| Error::Worker(format!("checkpoint encoder: {e}")))?;
                match result {
                    Ok(encoded) => Ok(encoded),
                    Err((error, Some(batch))) => {
                        if let Ok(mut raw) = self.raw.lock() {
                            *raw = Some(*batch);
                        }
                        Err(error)
                    }
                    Err((error, None)) => Err(error),
                }
            })
            .await
    }

    /// Writes the checkpoint (steps 1-4 above). Idempotent: running it again writes the
    /// same objects and documents (and skips step 3 once it finished).
    pub async fn write(
        &self,
        store: &ObjectStore,
        search: &SearchIndex,
        dead_letters: &DeadLetterProducer,
        fence: &Fence,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let encoded = self.encoded().await?;
        let encoded_at = started.elapsed();
        let partition = self.partition;
        let intent = Intent {
            owner: fence.owner.clone(),
            ..encoded.intent.clone()
        };
        let intent_tag = store
            .put_if(
                &intent_key(partition),
                Bytes::from(serde_json::to_vec(&intent)?),
                &Precondition::Matches(fence.tags().intent),
            )
            .await?;
        fence.update(|t| t.intent = intent_tag);
        futures::stream::iter(encoded.lake.iter().map(Ok::<_, Error>))
            .try_for_each_concurrent(PUT_CONCURRENCY, |(key, bytes)| async move {
                store.put(key, bytes.clone()).await
            })
            .await?;
        let lake_at = started.elapsed();
        if !self.changed.is_empty() && !self.search_done.load(std::sync::atomic::Ordering::Acquire)
        {
            let report = search.index_profiles(&self.changed).await?;
            if !report.dead_letters.is_empty() {
                let letters = search_dead_letters(
                    search.index_name(),
                    partition,
                    self.start,
                    self.end,
                    &report.dead_letters,
                    &self.changed,
                );
                dead_letters.record_search(&letters).await?;
            }
            self.search_done
                .store(true, std::sync::atomic::Ordering::Release);
        }
        let search_at = started.elapsed();
        let tags = fence.tags();
        if store.version(&intent_key(partition)).await?.as_ref() != Some(&tags.intent) {
            return Err(Error::Conflict {
                key: intent_key(partition),
                detail: "another member claimed the partition during the checkpoint".into(),
            });
        }
        if let Some(snapshot) = &encoded.snapshot {
            store
                .put(&profiles_key(partition), snapshot.clone())
                .await?;
        }
        if self.full {
            let condition = match tags.base {
                Some(tag) => Precondition::Matches(tag),
                None => Precondition::Absent,
            };
            let base_tag = store
                .put_if(&encoded.state_key, encoded.state.clone(), &condition)
                .await?;
            fence.update(|t| t.base = Some(base_tag));
        } else {
            store
                .put_if(
                    &encoded.state_key,
                    encoded.state.clone(),
                    &Precondition::Absent,
                )
                .await?;
        }
        let state_put = started.elapsed() - search_at;
        self.state_cost_micros.store(
            (encoded.state_encode + state_put).as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if self.full {
            remove_superseded_deltas(store, partition, self.end).await;
        }
        tracing::debug!(
            partition,
            full = self.full,
            start = self.start,
            end = self.end,
            indexed = self.changed.len(),
            encode_ms = encoded_at.as_millis() as u64,
            lake_ms = (lake_at - encoded_at).as_millis() as u64,
            search_ms = (search_at - lake_at).as_millis() as u64,
            state_ms = (started.elapsed() - search_at).as_millis() as u64,
            "checkpoint steps"
        );
        Ok(())
    }
}

/// Deletes the deltas a base at `base_offset` supersedes. Best effort: the checkpoint is
/// already committed, and recovery discards whatever is left.
async fn remove_superseded_deltas(store: &ObjectStore, partition: i32, base_offset: i64) {
    let listed = match store.list(&deltas_prefix(partition)).await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!(partition, error = %e, "cannot list superseded deltas; recovery removes them");
            return;
        }
    };
    let superseded = listed
        .into_iter()
        .filter(|object| delta_start(partition, &object.key).is_some_and(|s| s < base_offset));
    let deleted = futures::stream::iter(superseded)
        .map(|object| async move { store.delete(&object.key).await })
        .buffer_unordered(PUT_CONCURRENCY)
        .collect::<Vec<Result<()>>>()
        .await;
    if let Some(Err(e)) = deleted.into_iter().find(|r| r.is_err()) {
        tracing::warn!(partition, error = %e, "cannot delete a superseded delta; recovery removes it");
    }
}

/// A partition as its durable state left it.
#[derive(Debug)]
pub struct Recovered {
    pub book: ProfileBook,
    /// Where processing resumes (`None`: no state, start from the beginning).
    pub offset: Option<i64>,
    /// Deltas applied on top of the base: the next full checkpoint folds them in.
    pub deltas: usize,
    /// The last record the state counts (see [`super::continuity`]), when its last file
    /// recorded it.
    pub last_record: Option<RecordMark>,
    /// The topic's partition count its last file was written under, when recorded.
    pub topic_partitions: Option<i32>,
    /// This member's claim on the partition, for its checkpoints.
    pub fence: Fence,
}

async fn decode_in_background(key: String, partition: i32, bytes: Bytes) -> Result<StateFile> {
    tokio::task::spawn_blocking(move || decode_state(&key, partition, &bytes))
        .await
        .map_err(|e| Error::Worker(format!("state decoder: {e}")))?
}

/// Restores a partition for `owner`: loads the base and its delta chain, claims the
/// partition (see [`Fence`]), removes deltas off the chain, cleans up an unfinished
/// checkpoint.
pub async fn recover(store: &ObjectStore, partition: i32, owner: &str) -> Result<Recovered> {
    let key = state_key(partition);
    let (base, base_tag) = match store.get_versioned(&key).await? {
        Some((bytes, tag)) => (
            Some(decode_in_background(key.clone(), partition, bytes).await?),
            Some(tag),
        ),
        None => (None, None),
    };
    if let Some(base) = &base {
        if base.start.is_some() {
            return Err(Error::State {
                key,
                reason: "a delta stored as the base".into(),
            });
        }
    }
    let base_offset = base.as_ref().map_or(0, |b| b.offset);

    let mut superseded = Vec::new();
    let mut deltas = Vec::new();
    for object in store.list(&deltas_prefix(partition)).await? {
        match delta_start(partition, &object.key) {
            Some(start) if start >= base_offset => {
                let bytes = store.get(&object.key).await?.ok_or_else(|| Error::State {
                    key: object.key.clone(),
                    reason: "listed delta vanished".into(),
                })?;
                let file = decode_in_background(object.key.clone(), partition, bytes).await?;
                if file.start != Some(start) {
                    return Err(Error::State {
                        key: object.key,
                        reason: format!("its header says it starts at {:?}", file.start),
                    });
                }
                deltas.push((object.key, file));
            }
            _ => superseded.push(object.key),
        }
    }
    let ranges: Vec<(i64, i64)> = deltas
        .iter()
        .map(|(_, file)| (file.start.unwrap_or(0), file.offset))
        .collect();
    let plan = plan_deltas(base_offset, &ranges);
    superseded.extend(plan.discard.iter().map(|&i| deltas[i].0.clone()));

    let offset = (base.is_some() || !plan.chain.is_empty()).then_some(plan.offset);
    let intent_key = intent_key(partition);
    let (intent, intent_tag): (Option<Intent>, Option<String>) =
        match store.get_versioned(&intent_key).await? {
            Some((bytes, tag)) => (
                Some(serde_json::from_slice(&bytes).map_err(|e| Error::State {
                    key: intent_key.clone(),
                    reason: format!("unreadable intent: {e}"),
                })?),
                Some(tag),
            ),
            None => (None, None),
        };
    // The claim keeps what the intent says (a crash right after it still cleans up the
    // same objects) under this member's name.
    let claim = match &intent {
        Some(found) => Intent {
            owner: owner.to_string(),
            ..found.clone()
        },
        None => Intent {
            partition,
            start: offset.unwrap_or(0),
            end: offset.unwrap_or(0),
            keys: Vec::new(),
            owner: owner.to_string(),
        },
    };
    let condition = match intent_tag {
        Some(tag) => Precondition::Matches(tag),
        None => Precondition::Absent,
    };
    let claimed = store
        .put_if(
            &intent_key,
            Bytes::from(serde_json::to_vec(&claim)?),
            &condition,
        )
        .await
        .map_err(|e| match e {
            // Another writer is at work on the partition (a member that has not noticed
            // it lost it): read everything again.
            Error::Conflict { key, detail } => Error::Store {
                op: "claim",
                key,
                retryable: true,
                message: format!("the intent changed while recovering: {detail}"),
            },
            other => other,
        })?;
    let stale = keys_to_clean(offset, intent.as_ref());
    futures::stream::iter(stale.iter().chain(superseded.iter()))
        .map(|k| store.delete(k))
        .buffer_unordered(PUT_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    if !stale.is_empty() {
        tracing::info!(
            partition,
            objects = stale.len(),
            "removed lake objects of an unfinished checkpoint"
        );
    }
    if !superseded.is_empty() {
        tracing::info!(
            partition,
            deltas = superseded.len(),
            "removed state deltas superseded by the base or off its chain"
        );
    }
    let mut book = ProfileBook::new();
    let unusable = |key: &str, e: crate::profile::ProfileError| Error::State {
        key: key.to_string(),
        reason: e.to_string(),
    };
    for record in base.iter().flat_map(|b| b.records.iter()) {
        book.restore_record(record)
            .map_err(|e| unusable(&state_key(partition), e))?;
    }
    for &index in &plan.chain {
        let (key, file) = &deltas[index];
        for record in &file.records {
            book.restore_record(record).map_err(|e| unusable(key, e))?;
        }
    }
    let last_file = match plan.chain.last() {
        Some(&index) => Some(&deltas[index].1),
        None => base.as_ref(),
    };
    let last_record = last_file.and_then(|f| f.last_record);
    let topic_partitions = last_file.and_then(|f| f.topic_partitions);
    Ok(Recovered {
        book,
        offset,
        deltas: plan.chain.len(),
        last_record,
        topic_partitions,
        fence: Fence::new(owner, claimed, base_tag),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys() {
        // 2019-10-01 is day 18170.
        assert_eq!(
            events_key(18_170, 3, 1234),
            "events/dt=2019-10-01/p0003-o00000000000000001234.parquet"
        );
        assert_eq!(profiles_key(12), "profiles/p0012.parquet");
        assert_eq!(state_key(0), "_state/process/p0000.state");
        assert_eq!(intent_key(7), "_state/process/p0007.intent.json");
    }

    fn intent(start: i64) -> Intent {
        Intent {
            owner: "m".into(),
            partition: 1,
            start,
            end: start + 10,
            keys: vec!["events/dt=2019-10-01/p0001-o1.parquet".into()],
        }
    }

    #[test]
    fn unfinished_checkpoint_is_cleaned_finished_one_is_not() {
        // Crash between the intent and the state write: the state is still at the
        // intent's start.
        assert_eq!(
            keys_to_clean(Some(100), Some(&intent(100))),
            intent(100).keys
        );
        // The checkpoint completed: the state moved past the intent's start.
        assert_eq!(
            keys_to_clean(Some(110), Some(&intent(100))),
            Vec::<String>::new()
        );
        // The very first checkpoint crashed: no state at all.
        assert_eq!(keys_to_clean(None, Some(&intent(0))), intent(0).keys);
        assert_eq!(keys_to_clean(Some(5), None), Vec::<String>::new());
    }

    fn record(user_id: u64) -> StateRecord {
        StateRecord {
            user_id,
            views: 2,
            carts: 1,
            removals: 0,
            purchases: 1,
            revenue_cents: 1999,
            max_purchase_cents: Some(1999),
            first_seen: 1,
            last_seen: 2,
            session_keys: vec![9],
            products: vec![3, 4],
            days: vec![18_170],
            categories: vec![("a.b".into(), 2)],
            brands: vec![],
        }
    }

    #[test]
    fn state_round_trips() {
        let records = vec![record(1), record(2)];
        let base = encode_state(4, None, 77, &records).unwrap();
        assert_eq!(
            decode_state("k", 4, &base).unwrap(),
            StateFile {
                start: None,
                offset: 77,
                last_record: None,
                topic_partitions: None,
                records: records.clone()
            }
        );
        let delta = encode_state(4, Some(70), 77, &records[1..]).unwrap();
        assert_eq!(
            decode_state("k", 4, &delta).unwrap(),
            StateFile {
                start: Some(70),
                offset: 77,
                last_record: None,
                topic_partitions: None,
                records: records[1..].to_vec()
            }
        );
        assert_eq!(
            decode_state("k", 4, &encode_state(4, None, 0, &[]).unwrap()).unwrap(),
            StateFile {
                start: None,
                offset: 0,
                last_record: None,
                topic_partitions: None,
                records: vec![]
            }
        );
    }

    #[test]
    fn a_state_keeps_the_mark_of_its_last_record() {
        let mark = RecordMark {
            offset: 76,
            fingerprint: 0xabc,
        };
        let continuity = Continuity {
            last_record: Some(mark),
            topic_partitions: Some(6),
        };
        let mut book = ProfileBook::new();
        book.restore_record(&record(1)).unwrap();
        let states = book.copy_all_states();
        let bytes = encode_state_copy(4, Some(70), 77, continuity, &states).unwrap();
        let file = decode_state("k", 4, &bytes).unwrap();
        assert_eq!(
            (file.last_record, file.topic_partitions),
            (Some(mark), Some(6))
        );
        assert_eq!(file.records, vec![record(1)]);
    }

    #[test]
    fn a_base_written_before_deltas_existed_still_decodes() {
        // The version-1 header as the first releases wrote it: no `start`.
        let header = br#"{"version":1,"partition":2,"offset":9,"users":0}"#;
        let mut bytes = STATE_MAGIC.to_vec();
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&crate::parquet::encode_states(&[]).unwrap());
        let file = decode_state("k", 2, &bytes).unwrap();
        assert_eq!((file.start, file.offset, file.records.len()), (None, 9, 0));
    }

    #[test]
    fn truncated_or_misplaced_state_is_refused() {
        let bytes = encode_state(4, None, 77, &[record(1), record(2)]).unwrap();
        let cut = &bytes[..bytes.len() - 20];
        assert!(decode_state("k", 4, cut).is_err());
        assert!(decode_state("k", 4, &bytes[..20]).is_err());
        let err = decode_state("k", 5, &bytes).unwrap_err().to_string();
        assert!(err.contains("partition 4"), "{err}");
        assert!(decode_state("k", 4, b"").is_err());
        let backwards = encode_state(4, Some(80), 77, &[]).unwrap();
        assert!(decode_state("k", 4, &backwards).is_err());
    }

    #[test]
    fn delta_keys_sort_by_offset_and_name_their_start() {
        assert_eq!(
            delta_key(3, 1234),
            "_state/process/p0003.deltas/00000000000000001234.state"
        );
        assert!(delta_key(3, 99) < delta_key(3, 100));
        assert_eq!(delta_start(3, &delta_key(3, 1234)), Some(1234));
        assert_eq!(delta_start(4, &delta_key(3, 1234)), None);
        assert_eq!(delta_start(3, "_state/process/p0003.deltas/x.state"), None);
        assert_eq!(delta_start(3, &state_key(3)), None);
    }

    #[test]
    fn deltas_chain_from_the_base_and_the_rest_is_discarded() {
        // Base at 100; deltas [100,150), [150,180), then one off the chain at 200 (a
        // member that lost the partition) and one the base already covers.
        let deltas = [(150, 180), (200, 220), (100, 150), (40, 100)];
        assert_eq!(
            plan_deltas(100, &deltas),
            DeltaPlan {
                chain: vec![2, 0],
                discard: vec![1, 3],
                offset: 180
            }
        );
        // No deltas: the base's offset.
        assert_eq!(
            plan_deltas(7, &[]),
            DeltaPlan {
                chain: vec![],
                discard: vec![],
                offset: 7
            }
        );
        // A delta covering nothing cannot extend the chain (and cannot loop it).
        assert_eq!(plan_deltas(5, &[(5, 5)]).chain, Vec::<usize>::new());
    }

    #[test]
    fn events_group_by_utc_day_in_order() {
        let at = |micros: i64, user_id: u64| Event {
            event_time: micros,
            event_type: crate::event::EventType::View,
            product_id: 1,
            category_id: None,
            category_code: None,
            brand: None,
            price_cents: 0,
            user_id,
            user_session: None,
        };
        let day = crate::time::MICROS_PER_DAY;
        let events = vec![
            at(day * 18_170 + 5, 1),
            at(day * 18_171, 2),
            at(day * 18_170 + 1, 3),
        ];
        let grouped = events_by_day(&events);
        let shape: Vec<(i32, Vec<u64>)> = grouped
            .iter()
            .map(|(d, es)| (*d, es.iter().map(|e| e.user_id).collect()))
            .collect();
        assert_eq!(shape, vec![(18_170, vec![1, 3]), (18_171, vec![2])]);
    }
}
