//! The inotify part of the simulated host: directory watches and one
//! bounded event queue, with the kernel's queueing rules.
//!
//! - A watch belongs to a directory *inode*, not to its path; events carry
//!   the path the watch was registered with (what a real client maps its
//!   watch descriptor back to).
//! - An event identical to the last one still queued (same watch, mask,
//!   cookie and name) is merged into it, as `inotify_merge` does: two
//!   writes in a row make one `IN_MODIFY`.
//! - The queue holds at most `limit` events (the kernel's
//!   `max_queued_events`, 16384 by default). Once full, further events are
//!   dropped and a single `IN_Q_OVERFLOW` (no directory, empty name) is
//!   queued after the last kept one; it is queued again only after it was
//!   read. It counts towards the limit, and once reads made room new
//!   events queue behind it.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use loghamster::reactor::sys::inotify::mask;

/// `IN_ISDIR`: set on events about a subdirectory (not in the crate's
/// `mask` module).
pub const IN_ISDIR: u32 = 0x4000_0000;

/// Every event the simulation produces on a directory watch.
pub const ALL_EVENTS: u32 = mask::MODIFY
    | mask::ATTRIB
    | mask::CLOSE_WRITE
    | mask::MOVED_FROM
    | mask::MOVED_TO
    | mask::CREATE
    | mask::DELETE
    | mask::DELETE_SELF;

/// The kernel's default `fs.inotify.max_queued_events`.
pub const DEFAULT_QUEUE_LIMIT: usize = 16384;

/// One event as a client reading its inotify descriptor would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    /// The path the watch was registered with; empty for `IN_Q_OVERFLOW`.
    pub dir: PathBuf,
    /// The entry's name; empty for events about the directory itself.
    pub name: OsString,
    pub mask: u32,
    /// Nonzero only on `IN_MOVED_FROM`/`IN_MOVED_TO`; the two halves of a
    /// rename share it.
    pub cookie: u32,
}

struct Watch {
    path: PathBuf,
    mask: u32,
}

pub(super) struct Inotify {
    /// Directory inode -> watch.
    watches: BTreeMap<u64, Watch>,
    queue: VecDeque<SimEvent>,
    limit: usize,
    /// An `IN_Q_OVERFLOW` is in `queue` (the last element when queued;
    /// later events can follow it once reads made room).
    overflowed: bool,
    last_cookie: u32,
}

impl Inotify {
    pub(super) fn new() -> Inotify {
        Inotify {
            watches: BTreeMap::new(),
            queue: VecDeque::new(),
            limit: DEFAULT_QUEUE_LIMIT,
            overflowed: false,
            last_cookie: 0,
        }
    }

    /// Adds or replaces the watch on directory `ino`.
    pub(super) fn add(&mut self, ino: u64, path: PathBuf, mask: u32) {
        self.watches.insert(ino, Watch { path, mask });
    }

    /// Drops the watch on `ino`, queueing its `IN_IGNORED`; false if none.
    pub(super) fn remove(&mut self, ino: u64) -> bool {
        let Some(w) = self.watches.remove(&ino) else {
            return false;
        };
        self.push(SimEvent {
            dir: w.path,
            name: OsString::new(),
            mask: mask::IGNORED,
            cookie: 0,
        });
        true
    }

    pub(super) fn watched(&self, ino: u64) -> bool {
        self.watches.contains_key(&ino)
    }

    /// Queues `mask` for entry `name` of directory `dir` if it is watched
    /// for that event.
    pub(super) fn emit(&mut self, dir: u64, name: &OsStr, mask: u32, cookie: u32) {
        let Some(w) = self.watches.get(&dir) else {
            return;
        };
        if w.mask & mask & !IN_ISDIR == 0 {
            return;
        }
        let event = SimEvent {
            dir: w.path.clone(),
            name: name.to_owned(),
            mask,
            cookie,
        };
        self.push(event);
    }

    /// A fresh nonzero cookie for one rename.
    pub(super) fn cookie(&mut self) -> u32 {
        self.last_cookie = self.last_cookie.wrapping_add(1).max(1);
        self.last_cookie
    }

    fn push(&mut self, event: SimEvent) {
        if self.queue.len() >= self.limit {
            if !self.overflowed {
                self.overflowed = true;
                self.queue.push_back(SimEvent {
                    dir: PathBuf::new(),
                    name: OsString::new(),
                    mask: mask::Q_OVERFLOW,
                    cookie: 0,
                });
            }
            return;
        }
        if self.queue.back() == Some(&event) {
            return;
        }
        self.queue.push_back(event);
    }

    pub(super) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Takes up to `max` events from the front of the queue.
    pub(super) fn drain(&mut self, max: usize) -> Vec<SimEvent> {
        let n = max.min(self.queue.len());
        let out: Vec<SimEvent> = self.queue.drain(..n).collect();
        self.overflowed = self.queue.iter().any(|e| e.mask == mask::Q_OVERFLOW);
        out
    }

    pub(super) fn check(&self) -> Result<(), String> {
        let overflows = self
            .queue
            .iter()
            .filter(|e| e.mask == mask::Q_OVERFLOW)
            .count();
        if overflows != usize::from(self.overflowed) {
            return Err(format!("{overflows} overflow events queued"));
        }
        Ok(())
    }
}
