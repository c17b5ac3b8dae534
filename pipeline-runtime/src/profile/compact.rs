//! Helpers of the compact per-user state: the string interner, the stable session hash and
//! a fast hasher for ids. Pure, no I/O.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// An interned string: an index into an [`Interner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(u32);

impl Sym {
    pub fn index(self) -> u32 {
        self.0
    }

    pub fn from_index(index: u32) -> Sym {
        Sym(index)
    }
}

/// Maps the distinct category and brand strings of a [`crate::profile::ProfileBook`] to
/// small symbols, so a user's state holds 8 bytes per distinct string instead of a copy.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    ids: HashMap<Arc<str>, u32, IdBuildHasher>,
    names: Vec<Arc<str>>,
}

impl Interner {
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(&id) = self.ids.get(name) {
            return Sym(id);
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        Sym(id)
    }

    pub fn resolve(&self, sym: Sym) -> &str {
        self.names.get(sym.0 as usize).map_or("", |n| n)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A stable 64-bit key of a session string, used only to count a user's *distinct*
/// sessions without storing the strings.
///
/// Stable across builds and platforms (it is persisted in state snapshots), unlike std's
/// `DefaultHasher`. Two different sessions of the same user collide with probability about
/// k²/2⁶⁵ for k sessions: for 10 million users with a few sessions each, the chance that any
/// distinct_sessions is off by one is below 10⁻¹¹. Never returns 0 (the empty marker).
pub fn session_key(session: &str) -> u64 {
    let bytes = session.as_bytes();
    let mut h = 0x243F_6A88_85A3_08D3u64 ^ (bytes.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = fold_mul(h ^ u64::from_le_bytes(word), 0xBF58_476D_1CE4_E5B9);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        h = fold_mul(h ^ u64::from_le_bytes(word), 0x94D0_49BB_1331_11EB);
    }
    let key = mix64(h);
    if key == 0 {
        1
    } else {
        key
    }
}

fn fold_mul(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// SplitMix64's finaliser: a bijective avalanche of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fast hasher for `u64` user ids and short interned strings (neither is a hash key an
/// attacker chooses to collide; the avalanche keeps hashbrown's top and bottom bits spread).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.0 = mix64(self.0 ^ u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        self.0 = mix64(self.0 ^ u64::from_le_bytes(word) ^ ((tail.len() as u64) << 59));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = mix64(self.0 ^ value);
    }
}

pub type IdBuildHasher = BuildHasherDefault<IdHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_key_is_stable() {
        // Pinned: snapshots persist these keys, so the function must never change.
        assert_eq!(session_key(""), session_key(""));
        assert_ne!(session_key("a"), session_key("b"));
        assert_ne!(session_key("abcdefgh"), session_key("abcdefgh\0"));
        assert_eq!(
            session_key("72d76fde-8bb3-4e00-8c23-a032dfb62e92"),
            PINNED_UUID_KEY
        );
    }

    const PINNED_UUID_KEY: u64 = 15_577_260_640_054_057_774;
}
