//! Customer profiles (design brief §4): per-user running state, the output row, the
//! segments, and [`ProfileBook`], the state of a set of users. Pure, no I/O.

mod compact;
mod segment;
mod state;

use std::collections::HashMap;

pub use compact::{session_key, Interner};
pub use segment::Segment;
pub use state::{Profile, ProfileState, StateRecord, PROFILE_COLUMNS};

use compact::IdBuildHasher;

use crate::event::Event;

const CHUNK: usize = 1 << 16;

/// The profile state of many users, with the interner their category and brand symbols
/// refer to.
///
/// Memory is about 160 bytes per user for the common one to three event users (128 of
/// state, the rest index), plus 8 bytes per further distinct session, product, day,
/// category or brand. States live in fixed-size chunks so growing the book never copies
/// (and never doubles) all states at once.
#[derive(Debug, Default, Clone)]
pub struct ProfileBook {
    index: HashMap<u64, u32, IdBuildHasher>,
    chunks: Vec<Vec<ProfileState>>,
    names: Interner,
}

impl ProfileBook {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The slot of a user, created empty when new.
    fn slot_of(&mut self, user_id: u64) -> usize {
        let next = self.index.len() as u32;
        let slot = *self.index.entry(user_id).or_insert(next);
        if slot == next {
            if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                self.chunks.push(Vec::with_capacity(CHUNK));
            }
            if let Some(chunk) = self.chunks.last_mut() {
                chunk.push(ProfileState::default());
            }
        }
        slot as usize
    }

    fn slot_mut(&mut self, user_id: u64) -> &mut ProfileState {
        let slot = self.slot_of(user_id);
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    fn state_at(&self, slot: u32) -> &ProfileState {
        let slot = slot as usize;
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }

    /// Folds one event into its user's state.
    pub fn apply(&mut self, event: &Event) {
        let slot = self.slot_of(event.user_id);
        self.chunks[slot / CHUNK][slot % CHUNK].apply(event, &mut self.names);
    }

    pub fn get(&self, user_id: u64) -> Option<&ProfileState> {
        self.index.get(&user_id).map(|&slot| self.state_at(slot))
    }

    pub fn contains(&self, user_id: u64) -> bool {
        self.index.contains_key(&user_id)
    }

    /// The profile of one user, if it has any event.
    pub fn profile(&self, user_id: u64) -> Option<Profile> {
        self.get(user_id).map(|s| s.profile(user_id, &self.names))
    }

    /// User ids in ascending order.
    pub fn user_ids_sorted(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.index.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Every profile, ordered by user_id.
    pub fn profiles(&self) -> Vec<Profile> {
        self.profiles_of(&self.slots_by_user_id())
    }

    /// (user_id, slot) of every user, ordered by user_id: walk it in chunks with
    /// [`ProfileBook::profiles_of`] to produce sorted profiles without holding them all.
    pub fn slots_by_user_id(&self) -> Vec<(u64, u32)> {
        let mut order: Vec<(u64, u32)> = self.index.iter().map(|(&id, &slot)| (id, slot)).collect();
        order.sort_unstable();
        order
    }

    /// The profiles of the given (user_id, slot) pairs, in that order.
    pub fn profiles_of(&self, slots: &[(u64, u32)]) -> Vec<Profile> {
        slots
            .iter()
            .map(|&(id, slot)| self.state_at(slot).profile(id, &self.names))
            .collect()
    }

    /// The serializable state of one user.
    pub fn record(&self, user_id: u64) -> Option<StateRecord> {
        self.get(user_id).map(|s| s.to_record(user_id, &self.names))
    }

    /// Merges a persisted record into the book (restoring after a crash, or combining
    /// partial states of the same user).
    pub fn merge_record(&mut self, record: &StateRecord) {
        let restored = ProfileState::from_record(record, &mut self.names);
        self.slot_mut(record.user_id).merge(&restored);
    }

    /// Replaces whatever state a user has with the record's.
    pub fn restore_record(&mut self, record: &StateRecord) {
        let restored = ProfileState::from_record(record, &mut self.names);
        *self.slot_mut(record.user_id) = restored;
    }

    /// Keeps only the users for which `keep(user_id)` holds (e.g. the users of the Kafka
    /// partitions still assigned). Rebuilds the book; strings no longer used stay interned.
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let mut kept = ProfileBook {
            names: std::mem::take(&mut self.names),
            ..ProfileBook::default()
        };
        for (user_id, slot) in self.slots_by_user_id() {
            if keep(user_id) {
                let state = self.state_at(slot).clone();
                *kept.slot_mut(user_id) = state;
            }
        }
        *self = kept;
    }

    /// The interner that resolves this book's symbols.
    pub fn names(&self) -> &Interner {
        &self.names
    }

    /// Iterates (user_id, state) in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &ProfileState)> + '_ {
        self.index
            .iter()
            .map(|(&id, &slot)| (id, self.state_at(slot)))
    }

    /// Approximate bytes held: states, spilled elements and the index.
    pub fn approximate_bytes(&self) -> usize {
        let states = self.chunks.len() * CHUNK * std::mem::size_of::<ProfileState>();
        let spills: usize = self.iter().map(|(_, s)| s.heap_bytes()).sum();
        states + spills + self.index.capacity() * 17
    }
}

#[cfg(test)]
mod tests;
