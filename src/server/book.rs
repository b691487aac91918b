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

/// Every resumable stream, with its changes since the last round.
#[derive(Debug, Default)]
pub(crate) struct Book {
    map: HashMap<StreamKey, Resume>,
    /// Keys whose entry changed (or was added, or removed and added back).
    changed: Vec<StreamKey>,
    /// Keys removed since the last round.
    gone: Vec<StreamKey>,
}

impl Book {
    /// A book loaded from a checkpoint: nothing to write yet.
    pub fn loaded(entries: impl IntoIterator<Item = (StreamKey, Resume)>) -> Book {
        let map = entries
            .into_iter()
            .map(|(k, mut r)| {
                r.dirty = false;
                (k, r)
            })
            .collect();
        Book {
            map,
            ..Book::default()
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The recorded owner of `k`, if `k` is known and has one.
    pub fn owner(&self, k: &StreamKey) -> Option<&str> {
        self.map.get(k)?.owner.as_deref()
    }

    /// The entry for `k`, created with `new` when absent; noted as changed
    /// (the caller is about to change it).
    pub fn entry(&mut self, k: &StreamKey, new: impl FnOnce() -> Resume) -> &mut Resume {
        if !self.map.contains_key(k) {
            self.map.insert(k.clone(), new());
            self.changed.push(k.clone());
        }
        let r = self.map.get_mut(k).expect("inserted above");
        if !r.dirty {
            r.dirty = true;
            self.changed.push(k.clone());
        }
        r
    }

    /// Moves `k`'s offset to `offset` (noted when it changed).
    pub fn set_offset(&mut self, k: &StreamKey, offset: u64) {
        let Some(r) = self.map.get_mut(k) else { return };
        if r.offset != offset {
            r.offset = offset;
            if !r.dirty {
                r.dirty = true;
                self.changed.push(k.clone());
            }
        }
    }

    /// Connection `conn` no longer writes `k` (if it was the one).
    pub fn detach(&mut self, k: &StreamKey, conn: Key, now_unix: u64) {
        let Some(r) = self.map.get_mut(k) else { return };
        if r.conn == Some(conn) {
            r.conn = None;
            r.seen = now_unix;
            if !r.dirty {
                r.dirty = true;
                self.changed.push(k.clone());
            }
        }
    }

    /// Forgets idle streams not seen for `retention`, then the least
    /// recently seen idle ones beyond [`MAX_IDLE`]; returns how many.
    pub fn expire(&mut self, now_unix: u64, retention: Duration) -> usize {
        let before = self.map.len();
        let limit = retention.as_secs();
        let gone = &mut self.gone;
        self.map.retain(|k, r| {
            let keep = r.conn.is_some() || now_unix.saturating_sub(r.seen) < limit;
            if !keep {
                gone.push(k.clone());
            }
            keep
        });
        let idle = self.map.values().filter(|r| r.conn.is_none()).count();
        if idle > MAX_IDLE {
            let mut seen: Vec<u64> = self
                .map
                .values()
                .filter(|r| r.conn.is_none())
                .map(|r| r.seen)
                .collect();
            seen.sort_unstable();
            let cutoff = seen[idle - MAX_IDLE];
            self.map.retain(|k, r| {
                let keep = r.conn.is_some() || r.seen >= cutoff;
                if !keep {
                    gone.push(k.clone());
                }
                keep
            });
        }
        before - self.map.len()
    }

    /// True when the idle entries may be well over [`MAX_IDLE`], so an
    /// expiry pass should not wait for its schedule.
    pub fn crowded(&self) -> bool {
        self.map.len() > MAX_IDLE + MAX_IDLE / 8
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
            match self.map.get_mut(&k) {
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
            if !self.map.contains_key(&k) {
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
        self.map
            .iter_mut()
            .filter_map(|(k, r)| {
                r.dirty = false;
                storable(k, r).then(|| mark(k, r))
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
