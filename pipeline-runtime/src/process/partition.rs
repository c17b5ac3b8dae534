//! The state of one assigned partition in the process role: the profiles of its users,
//! the next offset to apply, and what accumulated since the last checkpoint. Events of a
//! user always land in one partition (key = user_id), so partitions never share users and
//! their states are independent. Pure, no I/O.

use std::collections::HashSet;

use crate::event::Event;
use crate::profile::{Profile, ProfileBook, StateRecord};

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
    /// Every profile of the partition.
    pub snapshot: Vec<Profile>,
    /// The restorable state of every user of the partition.
    pub state: Vec<StateRecord>,
}

impl PartitionState {
    /// A partition restored from its durable state (`offset`: the state's offset; an
    /// empty book at offset 0 when there is none).
    pub fn restored(partition: i32, book: ProfileBook, offset: i64) -> Self {
        Self {
            partition,
            book,
            next_offset: offset,
            batch_start: offset,
            pending: Vec::new(),
            changed: HashSet::new(),
        }
    }

    /// Applies the event at `offset`, unless the state already holds it.
    pub fn apply(&mut self, offset: i64, event: Event) -> Applied {
        if offset < self.next_offset {
            return Applied::Replayed;
        }
        self.book.apply(&event);
        self.changed.insert(event.user_id);
        self.pending.push(event);
        self.next_offset = offset + 1;
        Applied::Applied
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

    /// Takes the accumulated batch; the next batch starts at its end.
    pub fn take_batch(&mut self) -> Batch {
        let mut changed_ids: Vec<u64> = self.changed.drain().collect();
        changed_ids.sort_unstable();
        let changed = changed_ids
            .iter()
            .filter_map(|&id| self.book.profile(id))
            .collect();
        let ids = self.book.user_ids_sorted();
        let snapshot = ids.iter().filter_map(|&id| self.book.profile(id)).collect();
        let state = ids.iter().filter_map(|&id| self.book.record(id)).collect();
        let batch = Batch {
            partition: self.partition,
            start: self.batch_start,
            end: self.next_offset,
            events: std::mem::take(&mut self.pending),
            changed,
            snapshot,
            state,
        };
        self.batch_start = self.next_offset;
        batch
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
        let mut p = PartitionState::restored(3, ProfileBook::new(), 10);
        assert_eq!(
            p.apply(9, event(1, EventType::View, 100)),
            Applied::Replayed
        );
        assert!(!p.has_pending());
        assert_eq!(
            p.apply(10, event(1, EventType::View, 100)),
            Applied::Applied
        );
        // The same offset again (a re-delivery after a seek) is a replay too.
        assert_eq!(
            p.apply(10, event(1, EventType::View, 100)),
            Applied::Replayed
        );
        assert_eq!(p.next_offset(), 11);
        assert_eq!(p.pending_events(), 1);
    }

    #[test]
    fn batches_cover_consecutive_offset_ranges() {
        let mut p = PartitionState::restored(0, ProfileBook::new(), 0);
        p.apply(0, event(5, EventType::View, 100));
        p.apply(1, event(2, EventType::Purchase, 250));
        p.skip(2);
        let first = p.take_batch();
        assert_eq!((first.start, first.end), (0, 3));
        assert_eq!(first.events.len(), 2);
        assert_eq!(
            first.changed.iter().map(|x| x.user_id).collect::<Vec<_>>(),
            vec![2, 5]
        );
        assert_eq!(first.snapshot.len(), 2);
        assert_eq!(first.state.len(), 2);
        assert!(!p.has_pending());

        p.apply(3, event(5, EventType::Cart, 100));
        let second = p.take_batch();
        assert_eq!((second.start, second.end), (3, 4));
        assert_eq!(
            second.changed.iter().map(|x| x.user_id).collect::<Vec<_>>(),
            vec![5]
        );
        assert_eq!(second.changed[0].total_events, 2);
        assert_eq!(second.snapshot.len(), 2);
    }

    #[test]
    fn a_skip_alone_is_pending_so_the_offset_gets_committed() {
        let mut p = PartitionState::restored(0, ProfileBook::new(), 4);
        p.skip(4);
        assert!(p.has_pending());
        let b = p.take_batch();
        assert_eq!((b.start, b.end, b.events.len()), (4, 5, 0));
    }
}
