//! The state of one assigned partition in the process role: the profiles of its users,
//! the next offset to apply, and what accumulated since the last checkpoint. Events of a
//! user always land in one partition (key = user_id), so partitions never share users and
//! their states are independent. Also the policy deciding which checkpoints are full
//! (snapshot and base) rather than deltas. Pure, no I/O.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::continuity::{fingerprint, RecordMark};
use crate::event::Event;
use crate::profile::{Profile, ProfileBook, ProfileError, StatesCopy};

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Folded into the profile and queued for the lake.
    Applied,
    /// Below the restored offset: the state already counts it (a replay).
    Replayed,
}

#[derive(Debug)]
pub struct PartitionState {
    pub partition: i32,
    book: ProfileBook,
    /// Every offset below this is reflected in `book`.
    next_offset: i64,
    /// Where the accumulating batch starts: the end of the last checkpoint handed out.
    batch_start: i64,
    pending: Vec<Event>,
    changed: HashSet<u64>,
    /// Deltas written (or handed out) since the last base: what the next full
    /// checkpoint folds in.
    deltas_since_base: usize,
    /// The record at `next_offset - 1`, when known (see [`super::continuity`]) and
    /// `unhashed` is empty.
    last_record: Option<RecordMark>,
    /// The last record that moved the state, kept as bytes: only the record a batch ends
    /// at is fingerprinted (hashing every record byte by byte cost more than decoding it).
    unhashed: UnhashedRecord,
    /// The topic's partition count when the partition was assigned.
    topic_partitions: Option<i32>,
}

/// A record's key and value, copied into a buffer reused from record to record.
#[derive(Debug, Default)]
struct UnhashedRecord {
    /// `None`: nothing noted since the mark was last computed.
    offset: Option<i64>,
    key_len: usize,
    bytes: Vec<u8>,
}

impl UnhashedRecord {
    fn mark(&mut self) -> Option<RecordMark> {
        let offset = self.offset.take()?;
        let (key, value) = self.bytes.split_at(self.key_len);
        Some(RecordMark {
            offset,
            fingerprint: fingerprint(Some(key), Some(value)),
        })
    }
}

/// Everything a checkpoint writes for one partition, taken out of the state in one go.
#[derive(Debug, Clone)]
pub struct Batch {
    pub partition: i32,
    /// First offset of the batch (the offset of the state it builds on).
    pub start: i64,
    /// Offset after the batch: the state's offset once written.
    pub end: i64,
    /// Accepted events of the batch, in offset order.
    pub events: Vec<Event>,
    /// Profiles of the users the batch changed.
    pub changed: Vec<Profile>,
    /// A full checkpoint: `state` holds every user of the partition, and the profile
    /// snapshot is derived from it while encoding (off the consumer thread).
    pub full: bool,
    /// The state of every user of the partition (full), or of the users the batch
    /// changed (delta), in user id order; turned into records (and, when full, profiles)
    /// by the encoder.
    pub state: StatesCopy,
    /// The record at `end - 1`, stored with the state.
    pub last_record: Option<RecordMark>,
    /// The topic's partition count, stored with the state.
    pub topic_partitions: Option<i32>,
}

impl PartitionState {
    /// A partition restored from its durable state (`offset`: the state's offset; an
    /// empty book at offset 0 when there is none; `deltas`: how many deltas it applied on
    /// top of its base).
    pub fn restored(partition: i32, book: ProfileBook, offset: i64, deltas: usize) -> Self {
        Self {
            partition,
            book,
            next_offset: offset,
            batch_start: offset,
            pending: Vec::new(),
            changed: HashSet::new(),
            deltas_since_base: deltas,
            last_record: None,
            unhashed: UnhashedRecord::default(),
            topic_partitions: None,
        }
    }

    /// The topic's partition count under which this member reads the partition.
    pub fn with_topic_partitions(mut self, count: Option<i32>) -> Self {
        self.topic_partitions = count;
        self
    }

    /// The restored state's last record (from its state file).
    pub fn with_last_record(mut self, mark: Option<RecordMark>) -> Self {
        self.last_record = mark.filter(|m| m.offset + 1 == self.next_offset);
        self
    }

    /// Remembers the record just consumed (a missing key or value counts as empty), if it
    /// moved the state forward (a replayed record does not).
    pub fn note_record(&mut self, offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        if offset + 1 == self.next_offset {
            let (key, value) = (key.unwrap_or_default(), value.unwrap_or_default());
            let unhashed = &mut self.unhashed;
            unhashed.offset = Some(offset);
            unhashed.key_len = key.len();
            unhashed.bytes.clear();
            unhashed.bytes.extend_from_slice(key);
            unhashed.bytes.extend_from_slice(value);
        }
    }

    /// The mark of the record at `next_offset - 1`, when known.
    fn last_mark(&mut self) -> Option<RecordMark> {
        if let Some(mark) = self.unhashed.mark() {
            self.last_record = Some(mark);
        }
        self.last_record
    }

    /// Applies the event at `offset`, unless the state already holds it.
    ///
    /// An event its user's profile cannot take (a count or the revenue would overflow)
    /// is an error: neither the profile nor the lake gets it, and its offset is consumed
    /// like an undecodable message's, so a replay refuses it again in the same way and
    /// the partition keeps going. The caller reports it.
    pub fn apply(&mut self, offset: i64, event: Event) -> Result<Applied, ProfileError> {
        if offset < self.next_offset {
            return Ok(Applied::Replayed);
        }
        if let Err(e) = self.book.apply(&event) {
            self.skip(offset);
            return Err(e);
        }
        self.changed.insert(event.user_id);
        self.pending.push(event);
        self.next_offset = offset + 1;
        Ok(Applied::Applied)
    }

    /// Moves past a message that is not an event (undecodable): nothing to apply, but the
    /// offset is consumed so the checkpoint commits past it.
    pub fn skip(&mut self, offset: i64) {
        if offset >= self.next_offset {
            self.next_offset = offset + 1;
        }
    }

    /// Whether anything happened since the last batch was taken.
    pub fn has_pending(&self) -> bool {
        self.next_offset > self.batch_start
    }

    pub fn pending_events(&self) -> usize {
        self.pending.len()
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn users(&self) -> usize {
        self.book.len()
    }

    pub fn deltas_since_base(&self) -> usize {
        self.deltas_since_base
    }

    /// Whether a full checkpoint would write anything: pending events, or deltas the
    /// snapshot and the committed offset do not reflect yet.
    pub fn behind_full(&self) -> bool {
        self.has_pending() || self.deltas_since_base > 0
    }

    /// Takes the accumulated batch (possibly empty, to fold deltas into a base); the next
    /// batch starts at its end. A full batch carries every user's profile and state, a
    /// delta only the changed users'.
    pub fn take_batch(&mut self, full: bool) -> Batch {
        let last_record = self.last_mark();
        let mut changed_ids: Vec<u64> = self.changed.drain().collect();
        changed_ids.sort_unstable();
        let changed = changed_ids
            .iter()
            .filter_map(|&id| self.book.profile(id))
            .collect();
        let state = if full {
            self.deltas_since_base = 0;
            self.book.copy_all_states()
        } else {
            self.deltas_since_base += 1;
            self.book.copy_states(&changed_ids)
        };
        let batch = Batch {
            partition: self.partition,
            start: self.batch_start,
            end: self.next_offset,
            events: std::mem::take(&mut self.pending),
            changed,
            full,
            state,
            last_record,
            topic_partitions: self.topic_partitions,
        };
        self.batch_start = self.next_offset;
        batch
    }
}

/// When a checkpoint is full. A full checkpoint encodes and uploads every user of the
/// partition, so its cost grows with the users ever seen; a delta's only with the users
/// changed since the last checkpoint. Fulls are spaced so that each partition spends at
/// most about `1 / cost_factor` of its time on them, and the users materialized for fulls
/// in flight at once are capped (memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullCheckpointPolicy {
    /// A partition's next full waits this many times the duration of its last one.
    pub cost_factor: u32,
    /// A chain this long gets folded regardless (bounds recovery time).
    pub max_deltas: usize,
    /// Users of fulls in flight at once, beyond the first.
    pub max_users_in_flight: usize,
}

pub const FULL_CHECKPOINTS: FullCheckpointPolicy = FullCheckpointPolicy {
    cost_factor: 10,
    max_deltas: 64,
    max_users_in_flight: 1_000_000,
};

/// A partition's last full checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastFull {
    /// When it finished (`None`: none since the partition was assigned).
    pub finished: Option<Instant>,
    /// What it cost: encoding and uploading the snapshot and the base.
    pub cost: Duration,
}

impl FullCheckpointPolicy {
    /// Whether a partition's next checkpoint should be full. `idle`: the partition was
    /// read to its end and no event arrived for a whole checkpoint interval, so nothing
    /// waits for the time a full takes.
    pub fn wants_full(
        &self,
        state: &PartitionState,
        last: LastFull,
        now: Instant,
        idle: bool,
    ) -> bool {
        if !state.behind_full() {
            return false;
        }
        idle || state.deltas_since_base() >= self.max_deltas
            || last
                .finished
                .is_none_or(|at| now.duration_since(at) >= last.cost * self.cost_factor)
    }

    /// Whether a full of `users` users may start while fulls of `users_in_flight` users
    /// are being written. One is always allowed.
    pub fn fits(&self, users_in_flight: usize, users: usize) -> bool {
        users_in_flight == 0 || users_in_flight + users <= self.max_users_in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    fn event(user_id: u64, event_type: EventType, price_cents: i64) -> Event {
        Event {
            event_time: 1_569_888_000_000_000,
            event_type,
            product_id: 7,
            category_id: None,
            category_code: None,
            brand: None,
            price_cents,
            user_id,
            user_session: Some("s".into()),
        }
    }

    #[test]
    fn events_below_the_restored_offset_are_replays() {
        let mut p = PartitionState::restored(3, ProfileBook::new(), 10, 0);
        assert_eq!(
            p.apply(9, event(1, EventType::View, 100)),
            Ok(Applied::Replayed)
        );
        assert!(!p.has_pending());
        assert_eq!(
            p.apply(10, event(1, EventType::View, 100)),
            Ok(Applied::Applied)
        );
        // The same offset again (a re-delivery after a seek) is a replay too.
        assert_eq!(
            p.apply(10, event(1, EventType::View, 100)),
            Ok(Applied::Replayed)
        );
        assert_eq!(p.next_offset(), 11);
        assert_eq!(p.pending_events(), 1);
    }

    #[test]
    fn batches_cover_consecutive_offset_ranges() {
        let mut p = PartitionState::restored(0, ProfileBook::new(), 0, 0);
        p.apply(0, event(5, EventType::View, 100)).unwrap();
        p.apply(1, event(2, EventType::Purchase, 250)).unwrap();
        p.skip(2);
        let first = p.take_batch(true);
        assert_eq!((first.start, first.end), (0, 3));
        assert_eq!(first.events.len(), 2);
        assert_eq!(
            first.changed.iter().map(|x| x.user_id).collect::<Vec<_>>(),
            vec![2, 5]
        );
        assert!(first.full);
        assert_eq!(first.state.len(), 2);
        assert!(!p.has_pending());
        assert!(!p.behind_full());

        p.apply(3, event(5, EventType::Cart, 100)).unwrap();
        let second = p.take_batch(true);
        assert_eq!((second.start, second.end), (3, 4));
        assert_eq!(
            second.changed.iter().map(|x| x.user_id).collect::<Vec<_>>(),
            vec![5]
        );
        assert_eq!(second.changed[0].total_events, 2);
        assert_eq!(second.state.len(), 2);
    }

    #[test]
    fn a_delta_carries_only_the_changed_users_and_a_full_folds_the_deltas() {
        let mut p = PartitionState::restored(0, ProfileBook::new(), 0, 0);
        p.apply(0, event(5, EventType::View, 100)).unwrap();
        p.apply(1, event(2, EventType::View, 100)).unwrap();
        let full = p.take_batch(true);
        assert_eq!(full.state.len(), 2);

        p.apply(2, event(2, EventType::Purchase, 250)).unwrap();
        let delta = p.take_batch(false);
        assert_eq!((delta.start, delta.end), (2, 3));
        assert!(!delta.full);
        assert_eq!(
            delta
                .state
                .records()
                .iter()
                .map(|r| (r.user_id, r.purchases))
                .collect::<Vec<_>>(),
            vec![(2, 1)]
        );
        assert_eq!(p.deltas_since_base(), 1);
        // Nothing new, but the delta is not in a base or snapshot yet.
        assert!(!p.has_pending());
        assert!(p.behind_full());

        let fold = p.take_batch(true);
        assert_eq!((fold.start, fold.end, fold.events.len()), (3, 3, 0));
        assert_eq!(fold.changed.len(), 0);
        assert_eq!(fold.state.len(), 2);
        assert!(fold.full);
        assert_eq!(p.deltas_since_base(), 0);
        assert!(!p.behind_full());
    }

    #[test]
    fn fulls_wait_ten_times_their_cost_unless_idle_or_the_chain_is_long() {
        let policy = FULL_CHECKPOINTS;
        let t0 = Instant::now();
        let mut p = PartitionState::restored(0, ProfileBook::new(), 0, 0);
        let never = LastFull::default();
        // Nothing to write: no full, even for a partition that never had one.
        assert!(!policy.wants_full(&p, never, t0, true));
        p.apply(0, event(1, EventType::View, 100)).unwrap();
        // The first checkpoint after an assign is full.
        assert!(policy.wants_full(&p, never, t0, false));
        let last = LastFull {
            finished: Some(t0),
            cost: Duration::from_millis(300),
        };
        assert!(!policy.wants_full(&p, last, t0 + Duration::from_millis(2_999), false));
        assert!(policy.wants_full(&p, last, t0 + Duration::from_secs(3), false));
        // Idle with deltas behind: full at once.
        p.take_batch(false);
        assert!(policy.wants_full(&p, last, t0 + Duration::from_millis(1), true));
        // A long chain: full at once.
        let long = PartitionState::restored(1, ProfileBook::new(), 9, policy.max_deltas);
        assert!(policy.wants_full(&long, last, t0, false));
    }

    #[test]
    fn fulls_in_flight_are_capped_by_users_but_one_always_fits() {
        let policy = FULL_CHECKPOINTS;
        assert!(policy.fits(0, 5_000_000));
        assert!(policy.fits(400_000, 600_000));
        assert!(!policy.fits(400_000, 600_001));
    }

    #[test]
    fn a_skip_alone_is_pending_so_the_offset_gets_committed() {
        let mut p = PartitionState::restored(0, ProfileBook::new(), 4, 0);
        p.skip(4);
        assert!(p.has_pending());
        let b = p.take_batch(false);
        assert_eq!((b.start, b.end, b.events.len()), (4, 5, 0));
    }

    #[test]
    fn an_event_its_profile_cannot_take_is_refused_and_its_offset_consumed() {
        let mut book = ProfileBook::new();
        let mut record = {
            let mut scratch = ProfileBook::new();
            scratch.apply(&event(7, EventType::Purchase, 100)).unwrap();
            scratch.record(7).unwrap()
        };
        record.revenue_cents = i64::MAX - 99;
        book.restore_record(&record).unwrap();
        let mut p = PartitionState::restored(0, book, 5, 0);
        let err = p.apply(5, event(7, EventType::Purchase, 100)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "profile of user_id 7: revenue would exceed 92233720368547758.07 (the largest sum of cents a 64-bit integer holds)"
        );
        // Not in the profile, not in the lake; the offset is consumed.
        assert_eq!(p.next_offset(), 6);
        assert_eq!(p.pending_events(), 0);
        assert!(p.has_pending());
        p.apply(6, event(8, EventType::View, 100)).unwrap();
        let batch = p.take_batch(true);
        assert_eq!((batch.start, batch.end), (5, 7));
        assert_eq!(batch.events.len(), 1);
        assert_eq!(
            batch.changed.iter().map(|x| x.user_id).collect::<Vec<_>>(),
            vec![8]
        );
        let user7 = batch
            .state
            .records()
            .into_iter()
            .find(|r| r.user_id == 7)
            .unwrap();
        assert_eq!((user7.purchases, user7.revenue_cents), (1, i64::MAX - 99));
        // A replay of the refused offset is a replay, not a second refusal.
        assert_eq!(
            p.apply(5, event(7, EventType::Purchase, 100)),
            Ok(Applied::Replayed)
        );
    }

    #[test]
    fn a_batch_carries_the_mark_of_the_last_record_that_moved_the_state() {
        let mark = |offset, fingerprint| RecordMark {
            offset,
            fingerprint,
        };
        let mut p = PartitionState::restored(0, ProfileBook::new(), 5, 0)
            .with_last_record(Some(mark(4, 40)));
        // A replayed record (below the restored offset) does not move the mark.
        assert_eq!(
            p.apply(3, crate::event::test_view(1)),
            Ok(Applied::Replayed)
        );
        p.note_record(3, Some(b"1"), Some(b"three"));
        p.apply(5, crate::event::test_view(1)).unwrap();
        p.note_record(5, Some(b"1"), Some(b"five"));
        p.skip(6);
        p.note_record(6, None, Some(b"six"));
        let six = mark(6, fingerprint(None, Some(b"six")));
        assert_eq!(p.take_batch(false).last_record, Some(six));
        // An empty full batch (folding deltas) keeps the mark.
        assert_eq!(p.take_batch(true).last_record, Some(six));
        // The mark of a record noted in a batch is that record's, not an earlier one's.
        p.apply(7, crate::event::test_view(1)).unwrap();
        p.note_record(7, Some(b"1"), None);
        assert_eq!(
            p.take_batch(false).last_record,
            Some(mark(7, fingerprint(Some(b"1"), None)))
        );
        // A mark that is not the restored state's last record is not trusted.
        let p = PartitionState::restored(0, ProfileBook::new(), 5, 0)
            .with_last_record(Some(mark(3, 30)));
        assert_eq!(p.last_record, None);
    }
}
