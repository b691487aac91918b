//! A slab whose keys carry a generation.
//!
//! A key is `(index, generation)` packed into one `usize` so it can be used
//! directly as a `mio::Token`. When a slot is freed and reused, the new
//! occupant gets a fresh generation, so a late event or timer addressed to
//! the old occupant (a closed connection, a rotated file) finds no match and
//! is dropped instead of reaching the wrong owner.
//!
//! Generation 0 is never handed out, so no key is below `1 << 32`: tokens
//! in `RESERVED..1 << 32` are free for an owner with its own table, which
//! the loop routes by range before looking up a key (the metrics endpoint
//! does this, with `crate::metrics::http::TOKENS`).

use slab::Slab;

/// Keys below this value are reserved for fixed event sources (listener,
/// signals, inotify, ...), so they never collide with slot keys.
pub const RESERVED: usize = 16;

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
    fn index(self) -> usize {
        (self.0 & 0xffff_ffff) - RESERVED
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
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slab: Slab::new(),
            next_gen: 1,
        }
    }
}

impl<T> Slots<T> {
    pub fn insert(&mut self, value: T) -> Key {
        let generation = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let index = self.slab.insert((generation, value));
        Key(((generation as usize) << 32) | (index + RESERVED))
    }

    /// Returns the key the next `insert` will produce, so a value can embed
    /// its own key.
    pub fn vacant_key(&self) -> Key {
        Key(((self.next_gen as usize) << 32) | (self.slab.vacant_key() + RESERVED))
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        match self.slab.get(key.index()) {
            Some((g, v)) if *g == key.generation() => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slab.get_mut(key.index()) {
            Some((g, v)) if *g == key.generation() => Some(v),
            _ => None,
        }
    }

    pub fn remove(&mut self, key: Key) -> Option<T> {
        self.get(key)?;
        Some(self.slab.remove(key.index()).1)
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
            .map(|(i, (g, _))| Key(((*g as usize) << 32) | (i + RESERVED)))
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
            slab: Slab::new(),
            next_gen: u32::MAX,
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
}
