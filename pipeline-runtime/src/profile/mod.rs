//! Customer profiles (design brief §4): per-user running state, the output row, the
//! segments, and [`ProfileBook`], the state of a set of users. Pure, no I/O.

mod compact;
mod segment;
mod state;

pub use compact::{session_key, Interner};
pub use segment::Segment;
pub use state::{
    FlatList, Profile, ProfileState, Quantity, StateColumns, StateRecord, PROFILE_COLUMNS,
};

use compact::mix64;

use crate::event::Event;

const CHUNK: usize = 1 << 16;

/// A user's profile cannot take an event or a state: a count or the revenue would no
/// longer fit its integer type. The user's state is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("profile of user_id {user_id}: {quantity} would exceed {}", .quantity.limit())]
    Overflow { user_id: u64, quantity: Quantity },
}

impl ProfileError {
    fn overflow(user_id: u64) -> impl FnOnce(Quantity) -> ProfileError {
        move |quantity| ProfileError::Overflow { user_id, quantity }
    }
}

/// Some users' states copied out of a [`ProfileBook`] with the names they refer to: what a
/// checkpoint encodes. Copying a compact state is a small memcpy; building its record or
/// its profile (vectors, strings, sorting) is not, and the copy lets a checkpoint do that
/// off the thread that consumes events.
#[derive(Debug, Clone, Default)]
pub struct StatesCopy {
    names: Interner,
    users: Vec<(u64, ProfileState)>,
}

impl StatesCopy {
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn user_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.users.iter().map(|&(id, _)| id)
    }

    /// The users' restorable records, `rows` at a time.
    pub fn record_chunks(&self, rows: usize) -> impl Iterator<Item = Vec<StateRecord>> + '_ {
        self.users.chunks(rows.max(1)).map(|chunk| {
            chunk
                .iter()
                .map(|(id, state)| state.to_record(*id, &self.names))
                .collect()
        })
    }

    /// The users' restorable records column by column, `rows` at a time: the same values
    /// as [`Self::record_chunks`], without a record per user.
    pub fn state_columns(&self, rows: usize) -> impl Iterator<Item = StateColumns<'_>> + '_ {
        self.users.chunks(rows.max(1)).map(|chunk| {
            let mut columns = StateColumns::default();
            for (id, state) in chunk {
                state.push_columns(*id, &self.names, &mut columns);
            }
            columns
        })
    }

    /// The users' profiles, `rows` at a time.
    pub fn profile_chunks(&self, rows: usize) -> impl Iterator<Item = Vec<Profile>> + '_ {
        self.users.chunks(rows.max(1)).map(|chunk| {
            chunk
                .iter()
                .map(|(id, state)| state.profile(*id, &self.names))
                .collect()
        })
    }

    /// Every record at once.
    pub fn records(&self) -> Vec<StateRecord> {
        self.record_chunks(usize::MAX).flatten().collect()
    }
}

/// The profile state of many users, with the interner their category and brand symbols
/// refer to.
///
/// Memory is about 145 bytes per user (128 of state, 8 of user id, about 9 of index), plus
/// 8 bytes per further distinct session, product, day, category or brand of a user. The
/// index holds only 4-byte slots (the ids live beside the states), and states live in
/// fixed-size chunks, so growing the book never copies all states at once.
#[derive(Debug, Default, Clone)]
pub struct ProfileBook {
    /// Slots, hashed by the user id stored at that slot.
    index: hashbrown::HashTable<u32>,
    /// User id of each slot, chunked like the states.
    ids: Vec<Vec<u64>>,
    chunks: Vec<Vec<ProfileState>>,
    names: Interner,
}

fn id_at(ids: &[Vec<u64>], slot: u32) -> u64 {
    let slot = slot as usize;
    ids[slot / CHUNK][slot % CHUNK]
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

    fn find(&self, user_id: u64) -> Option<u32> {
        self.index
            .find(mix64(user_id), |&slot| id_at(&self.ids, slot) == user_id)
            .copied()
    }

    /// The slot of a user, created empty when new.
    fn slot_of(&mut self, user_id: u64) -> usize {
        if let Some(slot) = self.find(user_id) {
            return slot as usize;
        }
        let slot = self.index.len();
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
            self.ids.push(Vec::with_capacity(CHUNK));
        }
        if let (Some(states), Some(ids)) = (self.chunks.last_mut(), self.ids.last_mut()) {
            states.push(ProfileState::default());
            ids.push(user_id);
        }
        let ids = &self.ids;
        self.index
            .insert_unique(mix64(user_id), slot as u32, |&s| mix64(id_at(ids, s)));
        slot
    }

    fn slot_mut(&mut self, user_id: u64) -> &mut ProfileState {
        let slot = self.slot_of(user_id);
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    fn state_at(&self, slot: u32) -> &ProfileState {
        let slot = slot as usize;
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }

    /// (user_id, slot) of every user, in slot order.
    fn entries(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.ids
            .iter()
            .flatten()
            .enumerate()
            .map(|(slot, &id)| (id, slot as u32))
    }

    /// Folds one event into its user's state; on overflow the state is unchanged.
    pub fn apply(&mut self, event: &Event) -> Result<(), ProfileError> {
        let slot = self.slot_of(event.user_id);
        self.chunks[slot / CHUNK][slot % CHUNK]
            .apply(event, &mut self.names)
            .map_err(ProfileError::overflow(event.user_id))
    }

    pub fn get(&self, user_id: u64) -> Option<&ProfileState> {
        self.find(user_id).map(|slot| self.state_at(slot))
    }

    pub fn contains(&self, user_id: u64) -> bool {
        self.find(user_id).is_some()
    }

    /// The states of the given users that the book knows, copied out in the given order.
    pub fn copy_states(&self, user_ids: &[u64]) -> StatesCopy {
        StatesCopy {
            names: self.names.clone(),
            users: user_ids
                .iter()
                .filter_map(|&id| self.get(id).map(|state| (id, state.clone())))
                .collect(),
        }
    }

    /// Every user's state, copied out in user id order.
    pub fn copy_all_states(&self) -> StatesCopy {
        let mut entries: Vec<(u64, u32)> = self.entries().collect();
        entries.sort_unstable();
        StatesCopy {
            names: self.names.clone(),
            users: entries
                .into_iter()
                .map(|(id, slot)| (id, self.state_at(slot).clone()))
                .collect(),
        }
    }

    /// The profile of one user, if it has any event.
    pub fn profile(&self, user_id: u64) -> Option<Profile> {
        self.get(user_id).map(|s| s.profile(user_id, &self.names))
    }

    /// User ids in ascending order.
    pub fn user_ids_sorted(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.ids.iter().flatten().copied().collect();
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
        let mut order: Vec<(u64, u32)> = self.entries().collect();
        order.sort_unstable();
        order
    }

    /// Consumes the book into its profiles in user_id order, `chunk` at a time, freeing the
    /// index and the id table before the sort so the peak stays at the aggregation's.
    pub fn into_sorted_profiles(mut self, chunk: usize) -> SortedProfiles {
        self.index = hashbrown::HashTable::new();
        let mut order: Vec<(u64, u32)> = self.entries().collect();
        self.ids = Vec::new();
        order.sort_unstable();
        SortedProfiles {
            book: self,
            order,
            next: 0,
            chunk: chunk.max(1),
        }
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
    /// partial states of the same user); on overflow the user's state is unchanged.
    pub fn merge_record(&mut self, record: &StateRecord) -> Result<(), ProfileError> {
        let overflow = ProfileError::overflow(record.user_id);
        let restored = ProfileState::from_record(record, &mut self.names).map_err(overflow)?;
        self.slot_mut(record.user_id)
            .merge(&restored)
            .map_err(ProfileError::overflow(record.user_id))
    }

    /// Replaces whatever state a user has with the record's.
    pub fn restore_record(&mut self, record: &StateRecord) -> Result<(), ProfileError> {
        let restored = ProfileState::from_record(record, &mut self.names)
            .map_err(ProfileError::overflow(record.user_id))?;
        *self.slot_mut(record.user_id) = restored;
        Ok(())
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

    /// Iterates (user_id, state) in the order users were first seen.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &ProfileState)> + '_ {
        self.entries().map(|(id, slot)| (id, self.state_at(slot)))
    }

    /// Approximate bytes held: states, spilled elements and the index.
    pub fn approximate_bytes(&self) -> usize {
        let states = self.chunks.len() * CHUNK * std::mem::size_of::<ProfileState>();
        let spills: usize = self.iter().map(|(_, s)| s.heap_bytes()).sum();
        states + spills + self.index.capacity() * 5 + self.len() * 8
    }
}

/// See [`ProfileBook::into_sorted_profiles`].
#[derive(Debug)]
pub struct SortedProfiles {
    book: ProfileBook,
    order: Vec<(u64, u32)>,
    next: usize,
    chunk: usize,
}

impl SortedProfiles {
    /// Number of profiles in all.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Iterator for SortedProfiles {
    type Item = Vec<Profile>;

    fn next(&mut self) -> Option<Vec<Profile>> {
        let end = (self.next + self.chunk).min(self.order.len());
        if self.next == end {
            return None;
        }
        let profiles = self.book.profiles_of(&self.order[self.next..end]);
        self.next = end;
        Some(profiles)
    }
}

#[cfg(test)]
mod tests;
