//! A slab whose keys carry a generation.
//!
//! A key is `(index, generation)` packed into one `usize` so it can be used
//! directly as a `mio::Token`. When a slot is freed and reused, the new
//! occupant gets a fresh generation, so a late event or timer addressed to
//! the old occupant (a closed connection, a rotated file) finds no match and
//! is dropped instead of reaching the wrong owner.
//!
//! The low 32 bits are the slot index plus the table's *base*: [`RESERVED`]
//! for a daemon's own tables ([`Slots::default`]). Such a table stays far
//! below `2^31` entries (that many slots would need more memory than any
//! host has), so low words from [`SECOND_BASE`] on are free for one more
//! table in the same token space ([`Slots::with_base`]), which the loop
//! routes by the low word before its catch-all arm: the metrics endpoint
//! does this (`crate::metrics::http::TOKENS`).
//!
//! Generation 0 is never handed out, so no key is below `1 << 32`: tokens
//! below that are fixed tokens, never a stale key.

use slab::Slab;

/// Keys below this value are reserved for fixed event sources (listener,
/// signals, inotify, ...), so they never collide with slot keys.
pub const RESERVED: usize = 16;

/// Where the low words of a second table's keys may start (see the module
/// doc): a daemon's own tables never reach it.
pub const SECOND_BASE: usize = 1 << 31;
/// Where a third table's low words start: the metrics endpoint's table
/// (at [`SECOND_BASE`]) stays far below it; the client's multiplexed
/// connections use it.
pub const THIRD_BASE: usize = SECOND_BASE + (1 << 30);

/// The low 32 bits of a token: a key's slot index plus its table's base.
pub fn low_word(token: mio::Token) -> usize {
    token.0 & 0xffff_ffff
}

/// A generation-tagged key into [`Slots`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(usize);

impl Key {
    pub fn from_token(token: mio::Token) -> Option<Key> {
        (token.0 >= RESERVED).then_some(Key(token.0))
    }
    pub fn token(self) -> mio::Token {
        mio::Token(self.0)
    }
    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// Slab of `T` addressed by [`Key`].
#[derive(Debug)]
pub struct Slots<T> {
    slab: Slab<(u32, T)>,
    /// Next generation to hand out; wraps after 2^32 insertions, by which
    /// time no event for the old occupant can still be queued.
    next_gen: u32,
    /// Low word of slot 0's keys: [`RESERVED`], or a second table's base.
    base: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots::with_base(RESERVED)
    }
}

impl<T> Slots<T> {
    /// A table whose keys' low words start at `base` (at least
    /// [`SECOND_BASE`] for a second table beside a daemon's own).
    pub fn with_base(base: usize) -> Self {
        Slots {
            slab: Slab::new(),
            next_gen: 1,
            base,
        }
    }

    fn key(&self, generation: u32, index: usize) -> Key {
        Key(((generation as usize) << 32) | (index + self.base))
    }

    /// The slot index `key` names in this table, if it is one of its keys.
    fn index(&self, key: Key) -> Option<usize> {
        low_word(key.token()).checked_sub(self.base)
    }

    pub fn insert(&mut self, value: T) -> Key {
        let generation = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let index = self.slab.insert((generation, value));
        self.key(generation, index)
    }

    /// Returns the key the next `insert` will produce, so a value can embed
    /// its own key.
    pub fn vacant_key(&self) -> Key {
        self.key(self.next_gen, self.slab.vacant_key())
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        match self.slab.get(self.index(key)?) {
            Some((g, v)) if *g == key.generation() => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let index = self.index(key)?;
        match self.slab.get_mut(index) {
            Some((g, v)) if *g == key.generation() => Some(v),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: Key) -> Option<T> {
        self.get(key)?;
        Some(self.slab.remove(self.index(key)?).1)
    }

    /// Keeps only the values for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        self.slab.retain(|_, (_, v)| keep(v));
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub fn keys(&self) -> Vec<Key> {
        self.slab
            .iter()
            .map(|(i, (g, _))| self.key(*g, i))
            .collect()
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slab.iter().map(|(_, (_, v))| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slab.iter_mut().map(|(_, (_, v))| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_key_does_not_reach_new_occupant() {
        let mut s = Slots::default();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_ne!(a, b);
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&"b"));
    }

    #[test]
    fn generation_zero_is_never_issued() {
        let mut s = Slots {
            next_gen: u32::MAX,
            ..Slots::default()
        };
        assert_eq!(s.insert(1).generation(), u32::MAX);
        let wrapped = s.insert(2);
        assert_eq!(wrapped.generation(), 1);
        assert!(wrapped.token().0 >= 1 << 32);
    }

    #[test]
    fn vacant_key_predicts_insert_and_tokens_round_trip() {
        let mut s = Slots::default();
        let k = s.vacant_key();
        assert_eq!(s.insert(1), k);
        assert_eq!(Key::from_token(k.token()), Some(k));
        assert_eq!(Key::from_token(mio::Token(3)), None);
        assert_eq!(s.keys(), vec![k]);
    }

    #[test]
    fn a_second_table_has_its_own_low_words() {
        let mut own = Slots::default();
        let mut second = Slots::with_base(SECOND_BASE);
        let (a, b) = (own.insert(1), second.insert(2));
        assert_eq!(low_word(a.token()), RESERVED);
        assert_eq!(low_word(b.token()), SECOND_BASE);
        assert_eq!(own.get(b), None);
        assert_eq!(second.get(a), None);
        assert_eq!(second.get(b), Some(&2));
        second.retain(|v| *v != 2);
        assert!(second.is_empty());
    }
}
