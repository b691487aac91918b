//! Directory sources: files matching a pattern in a watched directory are
//! sent whole, once each, after they are closed ("send after close").
//!
//! A file becomes a candidate when inotify reports `IN_CLOSE_WRITE` or
//! `IN_MOVED_TO` for a matching name, or when it is found by the scan at
//! start-up (or after the directory reappears). A scanned file whose
//! modification time is younger than [`SETTLE`] may still be written; it
//! is looked at again after [`SETTLE`] and queued once it stopped changing.
//! Candidates wait in a queue; at most [`MAX_IN_FLIGHT`] files per source
//! are sent at once. A file whose identity is recorded as complete in the
//! state file (confirmed by `250 DONE`) is never sent again; with
//! `delete = true` it is removed only after that confirmation.
//!
//! One file, one stream: a source leaves alone every name that a stream
//! ranked before it takes (its `yields`, from
//! [`crate::config::overlap::claims`]: a literal path wins over a glob,
//! then the first entry in config order), so a file several entries match
//! is read by exactly one of them.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::overlap::Names;
use crate::reactor::Key;
use crate::tail::state::Entry;

/// How long a file found by a scan must have been left alone before it is
/// considered closed.
pub const SETTLE: Duration = Duration::from_secs(1);
/// Files of one source sent at the same time.
pub const MAX_IN_FLIGHT: usize = 4;

#[derive(Debug)]
pub(crate) struct DirSource {
    pub dir: PathBuf,
    /// The names this source takes: `filepattern`, a `path` glob, or one
    /// file (`path` with `method = "send"`).
    names: Names,
    /// Names it leaves to other streams (see the module doc).
    yields: Vec<Names>,
    /// `method = "send"`: only what is there at start-up, sent at once
    /// (a backfill); later files are ignored.
    pub once: bool,
    /// A `path` glob such as `/var/log/*.log`: each matching file is
    /// followed like a configured path (not sent whole), those there at
    /// start-up and those created later.
    pub follow: bool,
    pub svc: Option<String>,
    pub meta: Vec<(String, String)>,
    pub delete: bool,
    /// Index of the configured stream's meter (`ClientDaemon::meters`).
    pub meter: usize,
    /// Files to start, with their size when queued.
    queue: VecDeque<(PathBuf, u64)>,
    pub in_flight: HashMap<PathBuf, Key>,
    /// Bytes of every file queued so far (for the progress line).
    pub queued_bytes: u64,
    /// Scanned files that changed recently: (path, mtime seen, look again at).
    settling: Vec<(PathBuf, SystemTime, Instant)>,
}

impl DirSource {
    pub fn new(
        dir: PathBuf,
        names: Names,
        once: bool,
        svc: Option<String>,
        meta: Vec<(String, String)>,
        delete: bool,
        meter: usize,
    ) -> Self {
        DirSource {
            dir,
            names,
            yields: Vec::new(),
            once,
            follow: false,
            svc,
            meta,
            delete,
            meter,
            queue: VecDeque::new(),
            in_flight: HashMap::new(),
            queued_bytes: 0,
            settling: Vec::new(),
        }
    }

    /// Leaves the names `yields` to streams ranked before this one.
    pub fn yielding(mut self, yields: Vec<Names>) -> Self {
        self.yields = yields;
        self
    }

    /// Whether this source takes the file `name`: it matches, and no
    /// stream ranked before this one takes it.
    pub fn matches(&self, name: &OsStr) -> bool {
        self.names.matches(name) && !self.yields.iter().any(|y| y.matches(name))
    }

    /// Nothing queued, settling or being sent.
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty() && self.settling.is_empty()
    }

    /// Files queued but not started yet, and their bytes when queued.
    pub fn waiting(&self) -> (usize, u64) {
        (
            self.queue.len(),
            self.queue.iter().map(|(_, len)| len).sum(),
        )
    }

    /// Offers every matching regular file in the directory; drops complete
    /// entries of this directory whose file is gone.
    pub fn scan(&mut self, now: Instant, completed: &mut Vec<Entry>) -> io::Result<()> {
        completed.retain(|e| e.path.parent() != Some(self.dir.as_path()) || e.path.exists());
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter(|d| self.matches(&d.file_name()))
            .map(|d| d.path())
            .collect();
        names.sort();
        // A backfill sends what is there now; a followed file needs no settling.
        let closed = self.once || self.follow;
        for path in names {
            self.offer(path, closed, now, completed);
        }
        Ok(())
    }

    /// A matching file may be ready. `closed`: inotify said its writer
    /// closed it (or it was moved in), so it need not settle.
    pub fn offer(&mut self, path: PathBuf, closed: bool, now: Instant, completed: &[Entry]) {
        if self.in_flight.contains_key(&path) || self.queue.iter().any(|(p, _)| *p == path) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        if is_complete(&path, completed) {
            crate::debug!("{}: already sent", path.display());
            return;
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let young = SystemTime::now()
            .duration_since(mtime)
            .map_or(true, |age| age < SETTLE);
        self.settling.retain(|(p, _, _)| *p != path);
        if closed || !young {
            self.queued_bytes += meta.len();
            self.queue.push_back((path, meta.len()));
        } else {
            self.settling.push((path, mtime, now + SETTLE));
        }
    }

    /// Queues settling files that stopped changing; returns the next time
    /// to look again, if any are still settling.
    pub fn recheck(&mut self, now: Instant, completed: &[Entry]) -> Option<Instant> {
        let due: Vec<(PathBuf, SystemTime)> = self
            .settling
            .iter()
            .filter(|(_, _, at)| *at <= now)
            .map(|(p, m, _)| (p.clone(), *m))
            .collect();
        self.settling.retain(|(_, _, at)| *at > now);
        for (path, seen) in due {
            let still = std::fs::symlink_metadata(&path)
                .ok()
                .and_then(|m| m.modified().ok());
            match still {
                Some(m) if m == seen => self.offer(path, true, now, completed),
                Some(m) => self.settling.push((path, m, now + SETTLE)),
                None => {}
            }
        }
        self.settling.iter().map(|(_, _, at)| *at).min()
    }

    /// The next file to start sending (or following), if a slot is free.
    pub fn next_to_start(&mut self) -> Option<PathBuf> {
        // Followed files are not limited: each is a long-lived stream.
        (self.follow || self.in_flight.len() < MAX_IN_FLIGHT)
            .then(|| self.queue.pop_front())
            .flatten()
            .map(|(path, _)| path)
    }
}

/// True when `path` holds a file recorded as completely sent.
fn is_complete(path: &Path, completed: &[Entry]) -> bool {
    use crate::tail::fs::Fs;
    let fs = &mut crate::reactor::sys::tailfs::RealFs;
    let Ok((file, meta)) = fs.open(path, true) else {
        return false;
    };
    completed
        .iter()
        .any(|e| e.path == path && e.identity.matches(fs, &file, &meta).unwrap_or(false))
}
