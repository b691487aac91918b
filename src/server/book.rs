//! The book of resumable streams: what the server holds of each
//! `(host, path, id)`, which entries changed since the last checkpoint,
//! and which were forgotten.
//!
//! Every change goes through [`Book`], which notes the key once per round
//! ([`Resume::dirty`] and a list), so a checkpoint round takes only the
//! changed entries ([`Book::take_changes`]) and costs per change, not per
//! known stream (see `crate::sink::journal`).
//!
//! ## Forgetting
//! A stream no connection writes is forgotten once it has not been
//! attached or detached for `stream_retention` (default 30 days), and the
//! least recently seen idle ones are forgotten beyond [`MAX_IDLE`] (so
//! memory stays bounded whatever ids clients make up). A client that comes
//! back with a forgotten id is treated like a new stream: the server
//! takes its `offset:`, which loghamsterc sets to what the server had
//! acknowledged. Nothing is lost; at most bytes the server wrote but never
//! acknowledged before the client went away are written again, and
//! loghamsterc closes idle connections only once everything is
//! acknowledged, so normally none. A client that sends no `offset:`
//! starts at 0: the whole file again. That is why the retention is long.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use slab::Slab;

use super::StreamKey;
use crate::reactor::Key;
use crate::sink::checkpoint::{StreamMark, StreamRef};

/// Most entries kept for streams that are not connected.
pub(super) const MAX_IDLE: usize = 65_536;

/// What the server knows of a resumable stream.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    /// Stream offset up to which bytes are in the output.
    pub offset: u64,
    /// The connection currently writing it, if any.
    pub conn: Option<Key>,
    /// Unix time (seconds) it was last attached or detached.
    pub seen: u64,
    /// The output its bytes go to.
    pub output: PathBuf,
    /// The identity that owns it (its `Display` form; see
    /// `crate::server::auth`); `None` when none is recorded.
    pub owner: Option<String>,
    /// Changed since the last checkpoint round took it (its key is in
    /// [`Book::changed`]).
    dirty: bool,
}

impl Resume {
    pub fn new(offset: u64, output: PathBuf, seen: u64) -> Resume {
        Resume {
            offset,
            conn: None,
            seen,
            output,
            owner: None,
            dirty: true,
        }
    }
}

/// Where a stream's entry sits in the [`Book`], for the connection that
/// writes it: that connection moves the offset after every write
/// ([`Book::set_offset_at`]), and a place saves hashing and comparing the
/// key (host, path and id, often a hundred bytes) each time, which took
/// 5–7% of the server's profile samples with 1,000 streams sending a few
/// lines each.
///
/// A place is valid while its connection writes the entry: an entry with
/// a writer is never expired, and a place whose entry has another writer
/// (taken over) or none (detached) is ignored, so a removed entry's reused
/// slot cannot be written through an old place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    slot: usize,
    conn: Key,
}

#[derive(Debug)]
struct Slot {
    key: StreamKey,
    resume: Resume,
}

/// Every resumable stream, with its changes since the last round.
#[derive(Debug, Default)]
pub(crate) struct Book {
    /// Invariant: `index` maps each key in `slots` to its slot, and
    /// nothing else.
    index: HashMap<StreamKey, usize>,
    slots: Slab<Slot>,
    /// Keys whose entry changed (or was added, or removed and added back).
    changed: Vec<StreamKey>,
    /// Keys removed since the last round.
    gone: Vec<StreamKey>,
}

impl Book {
    /// A book loaded from a checkpoint: nothing to write yet.
    pub fn loaded(entries: impl IntoIterator<Item = (StreamKey, Resume)>) -> Book {
        let mut b = Book::default();
        for (key, mut resume) in entries {
            resume.dirty = false;
            match b.index.get(&key) {
                Some(&i) => b.slots[i].resume = resume,
                None => {
                    let i = b.slots.insert(Slot {
                        key: key.clone(),
                        resume,
                    });
                    b.index.insert(key, i);
                }
            }
        }
        b
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    fn get(&self, k: &StreamKey) -> Option<&Resume> {
        self.index.get(k).map(|&i| &self.slots[i].resume)
    }

    fn get_mut(&mut self, k: &StreamKey) -> Option<&mut Resume> {
        self.index.get(k).map(|&i| &mut self.slots[i].resume)
    }

    /// The recorded owner of `k`, if `k` is known and has one.
    pub fn owner(&self, k: &StreamKey) -> Option<&str> {
        self.get(k)?.owner.as_deref()
    }

    /// The entry for `k`, created with `new` when absent; noted as changed
    /// (the caller is about to change it).
    pub fn entry(&mut self, k: &StreamKey, new: impl FnOnce() -> Resume) -> &mut Resume {
        let i = match self.index.get(k) {
            Some(&i) => i,
            None => {
                let i = self.slots.insert(Slot {
                    key: k.clone(),
                    resume: new(),
                });
                self.index.insert(k.clone(), i);
                self.changed.push(k.clone());
                i
            }
        };
        self.note_change(i);
        &mut self.slots[i].resume
    }

    /// Notes slot `i`'s entry as changed (its key listed once per round).
    fn note_change(&mut self, i: usize) {
        let s = &mut self.slots[i];
        if !s.resume.dirty {
            s.resume.dirty = true;
            self.changed.push(s.key.clone());
        }
    }

    /// Where `k`'s entry is, for connection `conn`, its writer.
    pub fn place(&self, k: &StreamKey, conn: Key) -> Option<Place> {
        let &slot = self.index.get(k)?;
        (self.slots[slot].resume.conn == Some(conn)).then_some(Place { slot, conn })
    }

    /// Moves `k`'s offset to `offset` (noted when it changed).
    pub fn set_offset(&mut self, k: &StreamKey, offset: u64) {
        if let Some(&i) = self.index.get(k) {
            self.move_offset(i, offset);
        }
    }

    /// [`set_offset`](Self::set_offset) through a [`Place`]; nothing when
    /// the place's connection no longer writes the entry.
    pub fn set_offset_at(&mut self, place: Place, offset: u64) {
        match self.slots.get(place.slot) {
            Some(s) if s.resume.conn == Some(place.conn) => self.move_offset(place.slot, offset),
            _ => {}
        }
    }

    fn move_offset(&mut self, i: usize, offset: u64) {
        let r = &mut self.slots[i].resume;
        if r.offset != offset {
            r.offset = offset;
            self.note_change(i);
        }
    }

    /// Connection `conn` no longer writes `k` (if it was the one).
    pub fn detach(&mut self, k: &StreamKey, conn: Key, now_unix: u64) {
        let Some(&i) = self.index.get(k) else { return };
        let r = &mut self.slots[i].resume;
        if r.conn == Some(conn) {
            r.conn = None;
            r.seen = now_unix;
            self.note_change(i);
        }
    }

    /// Removes the entries `drop` picks, noting their keys as gone.
    fn remove_where(&mut self, mut drop: impl FnMut(&Resume) -> bool) {
        let doomed: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, s)| drop(&s.resume))
            .map(|(i, _)| i)
            .collect();
        for i in doomed {
            let s = self.slots.remove(i);
            self.index.remove(&s.key);
            self.gone.push(s.key);
        }
    }

    /// Forgets idle streams not seen for `retention`, then the least
    /// recently seen idle ones beyond [`MAX_IDLE`]; returns how many.
    pub fn expire(&mut self, now_unix: u64, retention: Duration) -> usize {
        let before = self.len();
        let limit = retention.as_secs();
        self.remove_where(|r| r.conn.is_none() && now_unix.saturating_sub(r.seen) >= limit);
        let idle = self
            .slots
            .iter()
            .filter(|(_, s)| s.resume.conn.is_none())
            .count();
        if idle > MAX_IDLE {
            let mut seen: Vec<u64> = self
                .slots
                .iter()
                .filter(|(_, s)| s.resume.conn.is_none())
                .map(|(_, s)| s.resume.seen)
                .collect();
            seen.sort_unstable();
            let cutoff = seen[idle - MAX_IDLE];
            self.remove_where(|r| r.conn.is_none() && r.seen < cutoff);
        }
        before - self.len()
    }

    /// True when the idle entries may be well over [`MAX_IDLE`], so an
    /// expiry pass should not wait for its schedule.
    pub fn crowded(&self) -> bool {
        self.len() > MAX_IDLE + MAX_IDLE / 8
    }

    /// The changes since the last call: marks of the changed entries
    /// (`storable` filters offsets a checkpoint cannot hold) and the keys
    /// forgotten.
    pub fn take_changes(
        &mut self,
        storable: impl Fn(&StreamKey, &Resume) -> bool,
    ) -> (Vec<StreamMark>, Vec<StreamRef>) {
        let mut marks = Vec::new();
        let mut gone = Vec::new();
        for k in std::mem::take(&mut self.changed) {
            match self.get_mut(&k) {
                Some(r) if r.dirty => {
                    r.dirty = false;
                    if storable(&k, r) {
                        marks.push(mark(&k, r));
                    }
                }
                // Listed twice (removed and added back): taken already.
                Some(_) => {}
                None => gone.push(reference(&k)),
            }
        }
        for k in std::mem::take(&mut self.gone) {
            if !self.index.contains_key(&k) {
                gone.push(reference(&k));
            }
        }
        gone.sort_by(|a, b| (&a.host, &a.path, &a.id).cmp(&(&b.host, &b.path, &b.id)));
        gone.dedup();
        (marks, gone)
    }

    /// Marks of every entry (for a snapshot); clears the changes.
    pub fn take_all(&mut self, storable: impl Fn(&StreamKey, &Resume) -> bool) -> Vec<StreamMark> {
        self.changed.clear();
        self.gone.clear();
        self.slots
            .iter_mut()
            .filter_map(|(_, s)| {
                s.resume.dirty = false;
                storable(&s.key, &s.resume).then(|| mark(&s.key, &s.resume))
            })
            .collect()
    }
}

fn mark(k: &StreamKey, r: &Resume) -> StreamMark {
    StreamMark {
        host: k.host.clone(),
        path: k.path.clone(),
        id: k.id.clone(),
        offset: r.offset,
        output: r.output.clone(),
        attached: r.conn.is_some(),
        seen: r.seen,
        owner: r.owner.clone(),
    }
}

fn reference(k: &StreamKey) -> StreamRef {
    StreamRef {
        host: k.host.clone(),
        path: k.path.clone(),
        id: k.id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> StreamKey {
        StreamKey {
            host: "h".into(),
            path: "/p".into(),
            id: id.into(),
        }
    }

    fn all(_: &StreamKey, _: &Resume) -> bool {
        true
    }

    #[test]
    fn a_round_takes_only_what_changed() {
        let mut b =
            Book::loaded((0..1000).map(|i| (key(&i.to_string()), Resume::new(0, "/o".into(), 5))));
        assert_eq!(b.take_changes(all), (vec![], vec![]));
        b.set_offset(&key("7"), 70);
        b.set_offset(&key("7"), 71);
        b.set_offset(&key("8"), 0); // unchanged
        let (marks, gone) = b.take_changes(all);
        assert_eq!(marks.len(), 1);
        assert_eq!((marks[0].id.as_str(), marks[0].offset), ("7", 71));
        assert!(gone.is_empty());
        assert_eq!(b.take_changes(all), (vec![], vec![]));
    }

    #[test]
    fn idle_streams_expire_after_the_retention_and_attached_ones_never() {
        let mut b = Book::default();
        b.entry(&key("idle"), || Resume::new(1, "/o".into(), 100));
        b.entry(&key("busy"), || Resume::new(1, "/o".into(), 100))
            .conn = Key::from_token(mio::Token(100));
        b.take_changes(all);
        let day = Duration::from_secs(86_400);
        assert_eq!(b.expire(100 + 86_399, day), 0);
        assert_eq!(b.expire(100 + 86_400, day), 1);
        let (marks, gone) = b.take_changes(all);
        assert!(marks.is_empty());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, "idle");
        // Removed and added back in one round: written as present.
        b.entry(&key("again"), || Resume::new(1, "/o".into(), 100));
        b.expire(100 + 86_400, day);
        b.entry(&key("again"), || Resume::new(2, "/o".into(), 200_000));
        let (marks, gone) = b.take_changes(all);
        assert_eq!((marks.len(), gone.len()), (1, 0));
        assert_eq!(marks[0].offset, 2);
    }

    #[test]
    fn a_place_moves_its_writers_offset_and_nothing_else() {
        let day = Duration::from_secs(86_400);
        let (c1, c2) = (
            Key::from_token(mio::Token(100)).unwrap(),
            Key::from_token(mio::Token(101)).unwrap(),
        );
        let mut b = Book::default();
        b.entry(&key("a"), || Resume::new(0, "/o".into(), 100)).conn = Some(c1);
        assert_eq!(b.place(&key("a"), c2), None, "only the writer gets a place");
        assert_eq!(b.place(&key("b"), c1), None);
        let p = b.place(&key("a"), c1).unwrap();
        b.take_changes(all);
        b.set_offset_at(p, 10);
        let (marks, _) = b.take_changes(all);
        assert_eq!((marks.len(), marks[0].offset), (1, 10));

        // Taken over by c2: c1's place writes nothing.
        b.entry(&key("a"), || unreachable!()).conn = Some(c2);
        b.take_changes(all);
        b.set_offset_at(p, 99);
        assert_eq!(b.take_changes(all), (vec![], vec![]));

        // Detached, expired, and its slot reused by another stream that
        // c1 does not write: the old place still writes nothing.
        b.detach(&key("a"), c2, 100);
        assert_eq!(b.expire(100 + 86_400, day), 1);
        b.entry(&key("b"), || Resume::new(5, "/o".into(), 200_000));
        b.take_changes(all);
        b.set_offset_at(p, 77);
        assert_eq!(b.take_changes(all), (vec![], vec![]));
        b.set_offset(&key("b"), 6);
        let (marks, _) = b.take_changes(all);
        assert_eq!((marks[0].id.as_str(), marks[0].offset), ("b", 6));
    }

    #[test]
    fn idle_entries_beyond_the_cap_go_oldest_first() {
        let n = MAX_IDLE + 10;
        let mut b = Book::loaded(
            (0..n).map(|i| (key(&i.to_string()), Resume::new(0, "/o".into(), i as u64))),
        );
        assert_eq!(b.expire(n as u64, Duration::from_secs(u64::MAX >> 1)), 10);
        let (_, gone) = b.take_changes(all);
        let mut ids: Vec<usize> = gone.iter().map(|g| g.id.parse().unwrap()).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
    }
}
