//! Directory sources: files matching a pattern in a watched directory are
//! sent whole, once each, after they are closed ("send after close").
//!
//! A file becomes a candidate when inotify reports `IN_CLOSE_WRITE` or
//! `IN_MOVED_TO` for a matching name, or when it is found by the scan at
//! start-up (or after the directory reappears). It is sent only once it is
//! proven closed: [`crate::tail::closed`] decides from a lease probe
//! (`reactor::sys::lease`: nobody holds it open for writing) and, where
//! the probe cannot tell, from the settle rule (length and modification
//! time unchanged for [`SETTLE`]; logged once per directory). A file a
//! writer still holds waits among the `unclosed` files and is looked at
//! again on its next `IN_CLOSE_WRITE`, or after
//! [`REPROBE`](crate::tail::closed::REPROBE) at the latest.
//!
//! Closed files wait in a queue; at most [`MAX_IN_FLIGHT`] files per source
//! are sent at once. A file whose identity is recorded as complete in the
//! state file (confirmed by `250 DONE`) is not sent again, but if it grew
//! since, the growth is: the daemon puts its entry back among the loaded
//! ones ([`take_grown`]), so the whole-file stream claims it and continues
//! the same stream id from the recorded offset. With `delete = true` a
//! file is removed only after the server confirmed it.
//!
//! One file, one stream: a source leaves alone every name that a stream
//! ranked before it takes (its `yields`, from
//! [`crate::config::overlap::claims`]: a literal path wins over a glob,
//! then the first entry in config order), so a file several entries match
//! is read by exactly one of them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::config::overlap::Names;
use crate::reactor::sys::lease;
use crate::reactor::sys::tailfs::RealFs;
use crate::reactor::Key;
use crate::tail::closed::SETTLE;
use crate::tail::closed::{Change, Closure, Look, Verdict};
use crate::tail::fs::{Fs, Kind, Meta};
use crate::tail::state::Entry;
use prometheus_client::metrics::counter::Counter;

/// Files of one source sent at the same time.
pub const MAX_IN_FLIGHT: usize = 4;

/// An offered file not proven closed yet.
#[derive(Debug)]
struct Unclosed {
    path: PathBuf,
    closure: Closure,
    /// When to look again without an event.
    at: Instant,
}

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
    /// A reload removes or replaces this source: it offers and starts no
    /// more files while its files in flight finish.
    pub retiring: bool,
    /// Index of the configured stream's meter (`ClientDaemon::meters`).
    pub meter: usize,
    /// Files to start, with their size when queued.
    queue: VecDeque<(PathBuf, u64)>,
    /// The paths in `queue`: an offer is checked in O(1), not against
    /// every queued file (ten thousand at a start-up).
    queued: HashSet<PathBuf>,
    pub in_flight: HashMap<PathBuf, Key>,
    /// Bytes of every file queued so far (for the progress line).
    pub queued_bytes: u64,
    /// Offered files not proven closed yet; none is also queued or in flight.
    unclosed: Vec<Unclosed>,
    /// It was logged that closure cannot be proven in this directory.
    warned_unprovable: bool,
    /// `follow_symlinks`: a symlink among the files is opened.
    follow_symlinks: bool,
    /// Files refused at open (symlinks not followed, FIFOs, devices,
    /// sockets, directories), by what was there (device, inode, kind):
    /// each is reported once, again only when something else is there.
    refused: HashMap<PathBuf, (u64, u64, Kind)>,
    /// Counts each report (`loghamster_client_refused_files_total`).
    refused_total: Counter,
}

/// Most refused names remembered per source (beyond, the memory starts
/// over: a name may be reported once more).
const REFUSED_MAX: usize = 4096;

/// What the state file says about a file offered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Not recorded as complete: a new file.
    No,
    /// Recorded complete, and no longer than then.
    Complete,
    /// Recorded complete at `offset`; now `len` bytes long.
    Grown { offset: u64, len: u64 },
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
            retiring: false,
            meter,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: HashMap::new(),
            queued_bytes: 0,
            unclosed: Vec::new(),
            warned_unprovable: false,
            follow_symlinks: false,
            refused: HashMap::new(),
            refused_total: Counter::default(),
        }
    }

    /// Opens symlinks among the files only when `follow`; counts refused
    /// files into `total`.
    pub fn opening(mut self, follow: bool, total: Counter) -> Self {
        self.follow_symlinks = follow;
        self.refused_total = total;
        self
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

    /// Nothing waiting to be closed, queued or being sent.
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty() && self.unclosed.is_empty()
    }

    /// Files not started yet (queued, or waiting to be closed), and the
    /// bytes of those queued when they were queued.
    pub fn waiting(&self) -> (usize, u64) {
        (
            self.queue.len() + self.unclosed.len(),
            self.queue.iter().map(|(_, len)| len).sum(),
        )
    }

    /// Offers every matching regular file in the directory; drops complete
    /// entries of this directory whose file is gone.
    pub fn scan(&mut self, now: Instant, completed: &mut Vec<Entry>) -> std::io::Result<()> {
        completed.retain(|e| e.path.parent() != Some(self.dir.as_path()) || e.path.exists());
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter(|d| self.matches(&d.file_name()))
            .map(|d| d.path())
            .collect();
        names.sort();
        for path in names {
            self.offer(path, now, completed);
        }
        Ok(())
    }

    /// A matching file may be ready (found by a scan, or inotify said a
    /// writer closed it or it was moved in): queues it once it is proven
    /// closed, else keeps it among the unclosed files. A backfill
    /// (`once`) sends what is there now and a followed file is not sent
    /// whole: both are queued at once.
    pub fn offer(&mut self, path: PathBuf, now: Instant, completed: &[Entry]) {
        if self.in_flight.contains_key(&path) || self.queued.contains(&path) {
            return;
        }
        let i = self.unclosed.iter().position(|u| u.path == path);
        let Some((file, meta)) = self.open_candidate(&path) else {
            self.unclosed.retain(|u| u.path != path);
            return;
        };
        match sent_before(&path, &file, &meta, completed).0 {
            Sent::Complete => {
                crate::debug!("{}: already sent", crate::log::esc(&path));
                self.unclosed.retain(|u| u.path != path);
                return;
            }
            Sent::Grown { offset, len } if i.is_none() => crate::info!(
                "{}: grew from {offset} to {len} bytes since it was sent; sending the rest",
                crate::log::esc(&path)
            ),
            Sent::Grown { .. } | Sent::No => {}
        }
        if self.once || self.follow {
            self.enqueue(path, meta.len);
            return;
        }
        let look = Look {
            writers: RealFs.writers(&file).unwrap_or(None),
            len: meta.len,
            mtime: file
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH),
        };
        let mut closure = i.map_or_else(Closure::default, |i| self.unclosed[i].closure);
        let (verdict, change) = closure.look(now, look);
        self.report(&path, &file, change);
        match (verdict, i) {
            (Verdict::Closed, _) => {
                self.unclosed.retain(|u| u.path != path);
                self.enqueue(path, meta.len);
            }
            (Verdict::Wait(at), Some(i)) => self.unclosed[i] = Unclosed { path, closure, at },
            (Verdict::Wait(at), None) => self.unclosed.push(Unclosed { path, closure, at }),
        }
    }

    fn enqueue(&mut self, path: PathBuf, len: u64) {
        self.queued_bytes += len;
        self.queued.insert(path.clone());
        self.queue.push_back((path, len));
    }

    /// Logs what a look found out: a writer (per file), or that closure
    /// cannot be proven (once per directory).
    fn report(&mut self, path: &Path, file: &File, change: Change) {
        match change {
            Change::None => {}
            Change::WriterFound => crate::info!(
                path = path;
                "{}: open for writing; sending it once it is closed",
                crate::log::esc(&path)
            ),
            Change::Unprovable if !self.warned_unprovable => {
                self.warned_unprovable = true;
                let why = unprovable(file);
                crate::warn!(
                    path = self.dir;
                    "{}: cannot prove that files here are closed ({why}); a file counts as closed once its size and modification time stayed the same for {}s",
                    crate::log::esc(&self.dir),
                    SETTLE.as_secs()
                );
            }
            Change::Unprovable => {}
        }
    }

    /// Looks again at unclosed files whose time has come; returns the next
    /// time to look, if any are still unclosed.
    pub fn recheck(&mut self, now: Instant, completed: &[Entry]) -> Option<Instant> {
        let due: Vec<PathBuf> = self
            .unclosed
            .iter()
            .filter(|u| u.at <= now)
            .map(|u| u.path.clone())
            .collect();
        for path in due {
            self.offer(path, now, completed);
        }
        self.unclosed.iter().map(|u| u.at).min()
    }

    /// The next file to start sending (or following), if a slot is free.
    pub fn next_to_start(&mut self) -> Option<PathBuf> {
        // Followed files are not limited: each is a long-lived stream.
        (self.follow || self.in_flight.len() < MAX_IN_FLIGHT)
            .then(|| self.queue.pop_front())
            .flatten()
            .map(|(path, _)| {
                self.queued.remove(&path);
                path
            })
    }
}

impl DirSource {
    /// Opens a regular file at `path` read-only and without blocking (as
    /// the lease probe needs; a symlink only with `follow_symlinks`), with
    /// its metadata; `None` when there is none. Anything else is reported
    /// once (see `refused`).
    fn open_candidate(&mut self, path: &Path) -> Option<(File, Meta)> {
        let e = match RealFs.open(path, self.follow_symlinks) {
            Ok(opened) => {
                self.refused.remove(path);
                return Some(opened);
            }
            Err(e) => e,
        };
        if e.kind() != std::io::ErrorKind::InvalidInput {
            return None;
        }
        let there = RealFs.lstat(path).ok().flatten()?;
        let seen = (there.dev, there.ino, there.kind);
        if self.refused.get(path) != Some(&seen) {
            if self.refused.len() >= REFUSED_MAX {
                self.refused.clear();
            }
            self.refused.insert(path.to_path_buf(), seen);
            self.refused_total.inc();
            crate::warn!(
                "{}: not shipped: {e}; saying so again only if something else is put there",
                crate::log::esc(&path)
            );
        }
        None
    }
}

/// Why the lease probe cannot tell for `file`, for the log.
fn unprovable(file: &File) -> String {
    match lease::probe(file.as_fd()) {
        Ok(lease::Writers::Unknown(why)) => why.to_string(),
        Ok(_) => "the lease probe's answer changed".into(),
        Err(e) => format!("the lease probe failed: {e}"),
    }
}

/// Whether `file` (at `path`) is recorded complete, and whether it grew
/// since; with the index of its entry in `completed`.
fn sent_before(
    path: &Path,
    file: &File,
    meta: &Meta,
    completed: &[Entry],
) -> (Sent, Option<usize>) {
    let i = completed.iter().position(|e| {
        e.path == path && e.identity.matches(&mut RealFs, file, meta).unwrap_or(false)
    });
    let sent = match i.map(|i| &completed[i]) {
        None => Sent::No,
        Some(e) if meta.len > e.offset => Sent::Grown {
            offset: e.offset,
            len: meta.len,
        },
        Some(_) => Sent::Complete,
    };
    (sent, i)
}

/// Takes the complete entry of the file at `path` out of `completed` if
/// the file grew since it was sent, as an entry to resume (not complete):
/// the whole-file stream then claims it and sends only the growth, under
/// the same stream id.
pub(crate) fn take_grown(path: &Path, completed: &mut Vec<Entry>) -> Option<Entry> {
    // (Only looks: the send itself opens the file as `follow_symlinks` says.)
    let (file, meta) = RealFs.open(path, true).ok()?;
    let (Sent::Grown { .. }, Some(i)) = sent_before(path, &file, &meta, completed) else {
        return None;
    };
    let mut e = completed.swap_remove(i);
    e.complete = false;
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::closed::REPROBE;
    use crate::tail::identity::Identity;
    use std::io::Write;

    fn source(dir: &Path) -> DirSource {
        let glob = globset::Glob::new("*.log").unwrap().compile_matcher();
        DirSource::new(
            dir.into(),
            Names::Glob {
                matcher: glob,
                text: "*.log".into(),
            },
            false,
            None,
            vec![],
            false,
            0,
        )
    }

    fn complete(path: &Path, offset: u64) -> Entry {
        Entry {
            id: "s".into(),
            path: path.into(),
            identity: {
                let (f, m) = RealFs.open(path, false).unwrap();
                Identity::of(&mut RealFs, &f, &m).unwrap()
            },
            offset,
            complete: true,
            copy: false,
            copies_after: 0,
        }
    }

    #[test]
    fn a_followed_file_offered_again_while_queued_is_queued_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
        std::fs::write(&a, b"x\n").unwrap();
        std::fs::write(&b, b"x\n").unwrap();
        let mut src = source(tmp.path());
        src.follow = true;
        let now = Instant::now();
        src.scan(now, &mut Vec::new()).unwrap();
        src.offer(a.clone(), now, &[]);
        assert_eq!(src.next_to_start(), Some(a.clone()));
        assert_eq!(src.next_to_start(), Some(b));
        assert_eq!(src.next_to_start(), None);
        // Started and gone from the queue: a later offer queues it again.
        src.offer(a.clone(), now, &[]);
        assert_eq!(src.next_to_start(), Some(a));
    }

    #[test]
    fn a_file_is_queued_only_once_its_writer_closed_it() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.log");
        let mut writer = File::create(&p).unwrap();
        let mut src = source(tmp.path());
        let now = Instant::now();
        src.scan(now, &mut Vec::new()).unwrap();
        assert_eq!(src.next_to_start(), None);
        assert_eq!(src.waiting(), (1, 0));
        // The safety net looks again later: still open.
        assert_eq!(src.recheck(now, &[]), Some(now + REPROBE));
        writer.write_all(b"line\n").unwrap();
        drop(writer);
        src.offer(p.clone(), now, &[]);
        assert_eq!(src.next_to_start(), Some(p));
        assert!(src.recheck(now, &[]).is_none());
    }

    #[test]
    fn a_complete_file_is_skipped_until_it_grows_and_then_resumes_its_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.log");
        std::fs::write(&p, b"one\n").unwrap();
        let mut completed = vec![complete(&p, 4)];
        let mut src = source(tmp.path());
        let now = Instant::now();
        src.offer(p.clone(), now, &completed);
        assert!(src.idle());
        assert!(take_grown(&p, &mut completed).is_none());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        src.offer(p.clone(), now, &completed);
        assert_eq!(src.next_to_start(), Some(p.clone()));
        let resumed = take_grown(&p, &mut completed).unwrap();
        assert_eq!((resumed.id.as_str(), resumed.offset), ("s", 4));
        assert!(!resumed.complete);
        assert!(completed.is_empty());
    }
}
