//! The checkpoint of one partition and its recovery: what the process role writes, in
//! which order, under which names, and how a new owner of a partition undoes a checkpoint
//! that did not finish. Key naming, the intent record and the recovery decision are pure;
//! [`CheckpointJob::write`] and [`recover`] do object-store and search I/O.
//!
//! A checkpoint of partition P covering offsets `[start, end)`:
//! 1. intent `_state/process/p<P>.intent.json`: the batch's range and the lake objects
//!    about to be written;
//! 2. lake objects `events/dt=<day>/p<P>-o<start>.parquet`, one per UTC day in the batch;
//! 3. changed profiles bulk-indexed with `_id = user_id`;
//! 4. profile snapshot `profiles/p<P>.parquet` (every user of P);
//! 5. state `_state/process/p<P>.state` (offset `end` + every user's state, see
//!    [`encode_state`]): the commit point, one atomic PUT;
//! 6. (by the caller) the Kafka offset `end` is committed.
//!
//! Recovery on assign: the state is the truth. If the intent starts at (or after) the
//! state's offset, that checkpoint never reached step 5: its lake objects are deleted,
//! because the replay from the state's offset rewrites the same range and may cut it into
//! different days or a different end. Lake names derive from (partition, start offset) and
//! a replay starts at the state's offset, so a replayed batch overwrites instead of
//! duplicating; the index is idempotent by `_id`; the snapshot and state are overwritten.
//!
//! Zombie writers: this relies on a member finishing (or abandoning) its checkpoint inside
//! the revoke callback before the group moves the partition. A member that lost its
//! assignment without noticing (stalled longer than the session timeout, e.g. a frozen
//! VM) and then resumes writing can overwrite objects of the new owner; the window is
//! narrowed by abandoning on `assignment_lost`, but object stores offer no fencing token
//! to close it completely.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::partition::Batch;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::profile::{Profile, ProfileBook, StateRecord};
use crate::search::SearchIndex;
use crate::store::ObjectStore;
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

pub fn intent_key(partition: i32) -> String {
    format!(
        "{}/p{partition:04}.intent.json",
        layout::PROCESS_STATE_PREFIX
    )
}

/// What a checkpoint is about to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    pub keys: Vec<String>,
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

/// Header of a state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StateHeader {
    version: u32,
    partition: i32,
    offset: i64,
    users: usize,
}

const STATE_MAGIC: &[u8; 8] = b"DPSTATE\0";
const STATE_VERSION: u32 = 1;

/// A state file: magic, the JSON header's length (u32 little endian), the JSON header
/// (partition, offset, users), then the users' states as Parquet. One object, so the
/// offset and the profiles it describes are always written together.
pub fn encode_state(partition: i32, offset: i64, records: &[StateRecord]) -> Result<Vec<u8>> {
    let header = serde_json::to_vec(&StateHeader {
        version: STATE_VERSION,
        partition,
        offset,
        users: records.len(),
    })?;
    let parquet = crate::parquet::encode_states(records)?;
    let mut out = Vec::with_capacity(12 + header.len() + parquet.len());
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&parquet);
    Ok(out)
}

/// The state's offset and records. A file of another partition, or whose user count
/// differs from its header, is refused.
pub fn decode_state(key: &str, partition: i32, bytes: &[u8]) -> Result<(i64, Vec<StateRecord>)> {
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
    let records = crate::parquet::decode_states(Bytes::copy_from_slice(&bytes[12 + header_len..]))
        .map_err(|e| bad(format!("records: {e}")))?;
    if records.len() != header.users {
        return Err(bad(format!(
            "{} records, header says {}",
            records.len(),
            header.users
        )));
    }
    Ok((header.offset, records))
}

/// The encoded objects of a batch (CPU work, done off the consumer thread).
struct EncodedBatch {
    intent: Intent,
    lake: Vec<(String, Bytes)>,
    snapshot: Bytes,
    state: Bytes,
}

fn encode_batch(batch: &Batch) -> Result<EncodedBatch> {
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
    let snapshot = Bytes::from(crate::parquet::encode_profiles(&batch.snapshot)?);
    let state = Bytes::from(encode_state(batch.partition, batch.end, &batch.state)?);
    Ok(EncodedBatch {
        intent: Intent {
            partition: batch.partition,
            start: batch.start,
            end: batch.end,
            keys: lake.iter().map(|(k, _)| k.clone()).collect(),
        },
        lake,
        snapshot,
        state,
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
    changed: Vec<Profile>,
    raw: std::sync::Mutex<Option<Batch>>,
    encoded: tokio::sync::OnceCell<EncodedBatch>,
}

impl CheckpointJob {
    pub fn new(mut batch: Batch) -> Self {
        Self {
            partition: batch.partition,
            start: batch.start,
            end: batch.end,
            events: batch.events.len(),
            changed: std::mem::take(&mut batch.changed),
            raw: std::sync::Mutex::new(Some(batch)),
            encoded: tokio::sync::OnceCell::new(),
        }
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
                let (result, batch) = tokio::task::spawn_blocking(move || {
                    let result = encode_batch(&batch);
                    // Keep the batch only if encoding failed (to try again); otherwise its
                    // events and states are dropped here, leaving only their bytes.
                    let keep = result.is_err().then_some(batch);
                    (result, keep)
                })
                .await
                .map_err(|e| Error::Worker(format!("checkpoint encoder: {e}")))?;
                if let (Err(_), Some(batch)) = (&result, batch) {
                    if let Ok(mut raw) = self.raw.lock() {
                        *raw = Some(batch);
                    }
                }
                result
            })
            .await
    }

    /// Writes the checkpoint (steps 1-5 above). Idempotent: running it again writes the
    /// same objects and documents.
    pub async fn write(&self, store: &ObjectStore, search: &SearchIndex) -> Result<()> {
        let started = std::time::Instant::now();
        let encoded = self.encoded().await?;
        let encoded_at = started.elapsed();
        let partition = self.partition;
        store
            .put(
                &intent_key(partition),
                Bytes::from(serde_json::to_vec(&encoded.intent)?),
            )
            .await?;
        futures::stream::iter(encoded.lake.iter().map(Ok::<_, Error>))
            .try_for_each_concurrent(PUT_CONCURRENCY, |(key, bytes)| async move {
                store.put(key, bytes.clone()).await
            })
            .await?;
        let lake_at = started.elapsed();
        if !self.changed.is_empty() {
            search.index_profiles(&self.changed).await?;
        }
        let search_at = started.elapsed();
        store
            .put(&profiles_key(partition), encoded.snapshot.clone())
            .await?;
        store
            .put(&state_key(partition), encoded.state.clone())
            .await?;
        tracing::debug!(
            partition,
            encode_ms = encoded_at.as_millis() as u64,
            lake_ms = (lake_at - encoded_at).as_millis() as u64,
            search_ms = (search_at - lake_at).as_millis() as u64,
            snapshot_ms = (started.elapsed() - search_at).as_millis() as u64,
            "checkpoint steps"
        );
        Ok(())
    }
}

/// Restores a partition: cleans up an unfinished checkpoint, loads the state. Returns the
/// book and the offset to resume from (`None`: no state, start from the beginning).
pub async fn recover(store: &ObjectStore, partition: i32) -> Result<(ProfileBook, Option<i64>)> {
    let key = state_key(partition);
    let state = match store.get(&key).await? {
        Some(bytes) => {
            let bytes_for_decode = bytes.clone();
            let key_for_decode = key.clone();
            Some(
                tokio::task::spawn_blocking(move || {
                    decode_state(&key_for_decode, partition, &bytes_for_decode)
                })
                .await
                .map_err(|e| Error::Worker(format!("state decoder: {e}")))??,
            )
        }
        None => None,
    };
    let intent_key = intent_key(partition);
    let intent: Option<Intent> = match store.get(&intent_key).await? {
        Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| Error::State {
            key: intent_key.clone(),
            reason: format!("unreadable intent: {e}"),
        })?),
        None => None,
    };
    let offset = state.as_ref().map(|(offset, _)| *offset);
    let stale = keys_to_clean(offset, intent.as_ref());
    futures::stream::iter(stale.iter())
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
    let mut book = ProfileBook::new();
    if let Some((_, records)) = &state {
        for record in records {
            book.restore_record(record);
        }
    }
    Ok((book, offset))
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
        let bytes = encode_state(4, 77, &records).unwrap();
        assert_eq!(decode_state("k", 4, &bytes).unwrap(), (77, records));
        assert_eq!(
            decode_state("k", 4, &encode_state(4, 0, &[]).unwrap()).unwrap(),
            (0, vec![])
        );
    }

    #[test]
    fn truncated_or_misplaced_state_is_refused() {
        let bytes = encode_state(4, 77, &[record(1), record(2)]).unwrap();
        let cut = &bytes[..bytes.len() - 20];
        assert!(decode_state("k", 4, cut).is_err());
        assert!(decode_state("k", 4, &bytes[..20]).is_err());
        let err = decode_state("k", 5, &bytes).unwrap_err().to_string();
        assert!(err.contains("partition 4"), "{err}");
        assert!(decode_state("k", 4, b"").is_err());
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
