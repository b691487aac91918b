//! The names in a directory, read once and shared by every tail that
//! looks there, for as long as nothing can have changed them.
//!
//! A tail looks for its rotations by listing the names in its directory
//! that start with its own (`app.log`, `app.log.1`, ...), and a look that
//! opens a file lists two or three times: it lists, opens what it found,
//! and lists again until two listings agree, and after opening the path
//! it lists once more to see whether a generation was created and renamed
//! away meanwhile (`follow/gather.rs`, `Tail::raced_past`). With ten
//! thousand followed files in one directory, each reading ten thousand
//! names three times, a start-up read three hundred million directory
//! entries. [`DirNames`] keeps the sorted names of each directory it read,
//! so a tail's prefixed names are a binary search away. Only the names
//! are kept; the caller `lstat`s the few that match, so what it learns of
//! each file (inode, birth, length) is as fresh as before.
//!
//! # When kept names may be used
//!
//! The relisting above is a race check: the second listing must show the
//! directory as it is after the open, or a file renamed away between the
//! two goes unseen. A kept listing is therefore used only while the
//! directory cannot have changed since it was read:
//!
//! - the daemon's inotify watches the directory for every name change
//!   (`IN_CREATE`, `IN_MOVED_FROM`, `IN_MOVED_TO`, `IN_DELETE`) and did so
//!   before the listing was read ([`DirNames::watch`] forgets what was
//!   kept of it);
//! - the daemon read no inotify event since the listing was read (it calls
//!   [`DirNames::forget`] whenever it reads some), and
//! - no event is waiting in the inotify queue now: the caller asks the
//!   kernel (`FIONREAD`, through [`EventQueue`]) right before every
//!   listing.
//!
//! Otherwise the directory is read again (and that read is kept). Linux
//! queues the event of a name change before the call that made it
//! releases the directory's lock, so every change completed since the
//! read left an event that is either waiting or was read: neither
//! happened, so the kept names are what a read now would return, but for
//! at most one change still in progress in each directory (a `getdents`
//! would wait for it; a path lookup, the tail's `open`, may already see
//! its result). That is harmless to the race check: a file created and
//! renamed away before the path's current file arrived took two changes
//! that completed before the current file's creation (or rename to the
//! path) began, so their events are queued, and the check reads the
//! directory again. The
//! simulation's scripted race (`tests/sim/scripted.rs`) plays exactly
//! that with the names kept, and fails with the rule switched off.
//!
//! An event of any kind counts, a file's growth too: while files are
//! written, nearly every listing is a read, as without the names kept.
//! The names pay off when a quiet directory is looked at by many tails at
//! once (a start-up, an overflow), which is when listings were quadratic.
//! The daemon also forgets everything at every turn of its loop, which
//! bounds what is kept to the directories listed in one turn.
//!
//! A watch follows the directory's inode. A directory renamed away queues
//! `IN_MOVE_SELF` on its watch (so a listing made after the rename reads
//! again), and the daemon then unwatches it and watches whatever is at
//! the path (`client/watch.rs`). Only a rename of a directory above it
//! makes no event: the path then names a directory nobody watches (its
//! changes make no events, for the daemon's other uses of them either),
//! and its names kept within a turn may be as stale as that turn.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use super::fs::{Fs, Kind, Meta};

/// The sorted names of directories read, and which directories are
/// watched.
#[derive(Debug, Default)]
pub struct DirNames {
    /// Per watched directory, its names in byte order from its last read.
    dirs: HashMap<PathBuf, Vec<OsString>>,
    /// Directories whose name changes queue inotify events.
    watched: HashSet<PathBuf>,
    /// Directory reads made since this was created.
    reads: u64,
}

impl DirNames {
    /// The names in `dir` that start with `prefix`, in byte order: from
    /// the kept names when `quiet` (no inotify event is waiting now) and
    /// `dir` is watched, else from a fresh read by `load`, which is kept
    /// if `dir` is watched (a failed read keeps nothing).
    pub fn prefixed(
        &mut self,
        dir: &Path,
        prefix: &OsStr,
        quiet: bool,
        load: impl FnOnce() -> io::Result<Vec<OsString>>,
    ) -> io::Result<Vec<OsString>> {
        let watched = self.watched.contains(dir);
        if quiet && watched {
            if let Some(names) = self.dirs.get(dir) {
                return Ok(take_prefixed(names, prefix).to_vec());
            }
        }
        let mut names = load()?;
        self.reads += 1;
        names.sort_unstable_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        let found = take_prefixed(&names, prefix).to_vec();
        if watched {
            self.dirs.insert(dir.to_path_buf(), names);
        }
        Ok(found)
    }

    /// The daemon read inotify events (or a new turn begins): every kept
    /// listing is forgotten.
    pub fn forget(&mut self) {
        self.dirs.clear();
    }

    /// A watch on `dir` was added: its name changes queue events from now
    /// on (what was kept of it, read before, is forgotten).
    pub fn watch(&mut self, dir: &Path) {
        self.dirs.remove(dir);
        self.watched.insert(dir.to_path_buf());
    }

    /// The watch on `dir` ended: it is read at every listing again.
    pub fn unwatch(&mut self, dir: &Path) {
        self.dirs.remove(dir);
        self.watched.remove(dir);
    }

    /// Directory reads made since this was created.
    pub fn reads(&self) -> u64 {
        self.reads
    }
}

/// The run of `names` (sorted) that start with `prefix`: every such name
/// sorts at or after `prefix`, and they sort together.
fn take_prefixed<'n>(names: &'n [OsString], prefix: &OsStr) -> &'n [OsString] {
    let p = prefix.as_encoded_bytes();
    let from = names.partition_point(|n| n.as_encoded_bytes() < p);
    let len = names[from..].partition_point(|n| n.as_encoded_bytes().starts_with(p));
    &names[from..from + len]
}

/// The daemon's inotify queue, as [`Listed`] asks about it.
pub trait EventQueue<F> {
    /// True when no event is waiting to be read now (on the real side
    /// `FIONREAD` is 0; in the simulation, the simulated queue is empty).
    /// An error asking is an event waiting.
    fn quiet(&mut self, fs: &F) -> bool;
}

/// A file system whose directory listings go through a [`DirNames`],
/// with `queue` asked right before each listing whether an event waits.
/// Every other call goes to `fs` unchanged; each listed name is
/// `lstat`ed afresh, and only regular files and symlinks are listed, as
/// [`Fs::list`] says.
pub struct Listed<'a, F, Q> {
    fs: F,
    names: &'a mut DirNames,
    queue: Q,
}

impl<'a, F: Fs, Q: EventQueue<F>> Listed<'a, F, Q> {
    pub fn new(fs: F, names: &'a mut DirNames, queue: Q) -> Self {
        Listed { fs, names, queue }
    }
}

impl<F: Fs, Q: EventQueue<F>> Fs for Listed<'_, F, Q> {
    type File = F::File;

    fn open(&mut self, path: &Path, follow_symlinks: bool) -> io::Result<(F::File, Meta)> {
        self.fs.open(path, follow_symlinks)
    }

    fn fstat(&mut self, file: &F::File) -> io::Result<Meta> {
        self.fs.fstat(file)
    }

    fn lstat(&mut self, path: &Path) -> io::Result<Option<Meta>> {
        self.fs.lstat(path)
    }

    fn stat(&mut self, path: &Path) -> io::Result<Option<Meta>> {
        self.fs.stat(path)
    }

    fn read_at(&mut self, file: &F::File, buf: &mut [u8], at: u64) -> io::Result<usize> {
        self.fs.read_at(file, buf, at)
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<(OsString, Meta)>> {
        self.list_prefixed(dir, OsStr::new(""))
    }

    fn list_prefixed(&mut self, dir: &Path, prefix: &OsStr) -> io::Result<Vec<(OsString, Meta)>> {
        let quiet = self.queue.quiet(&self.fs);
        let fs = &mut self.fs;
        let named = self.names.prefixed(dir, prefix, quiet, || fs.names(dir))?;
        let mut out = Vec::with_capacity(named.len());
        for name in named {
            // Gone since the names were read: not listed.
            let Ok(Some(meta)) = self.fs.lstat(&dir.join(&name)) else {
                continue;
            };
            if matches!(meta.kind, Kind::File | Kind::Symlink) {
                out.push((name, meta));
            }
        }
        Ok(out)
    }

    fn names(&mut self, dir: &Path) -> io::Result<Vec<OsString>> {
        self.fs.names(dir)
    }

    fn writers(&mut self, file: &F::File) -> io::Result<Option<bool>> {
        self.fs.writers(file)
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.fs.remove(path)
    }

    fn clock(&mut self) -> u64 {
        self.fs.clock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &[
        "b.log",
        "app.log.1",
        "app.log",
        "app.lo",
        "app.logx",
        "z",
        "app.log.2.gz",
    ];

    /// A directory `/d` (watched unless said otherwise) and a count of
    /// its reads.
    struct Dir {
        names: DirNames,
        loads: u32,
    }

    impl Dir {
        fn watched() -> Dir {
            let mut names = DirNames::default();
            names.watch(Path::new("/d"));
            Dir { names, loads: 0 }
        }

        fn list(&mut self, dir: &str, prefix: &str, quiet: bool) -> Vec<String> {
            let loads = &mut self.loads;
            let got = self
                .names
                .prefixed(Path::new(dir), OsStr::new(prefix), quiet, || {
                    *loads += 1;
                    Ok(NAMES.iter().map(OsString::from).collect())
                });
            got.unwrap()
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()
        }
    }

    #[test]
    fn a_quiet_watched_directory_is_read_once_for_every_prefix() {
        let mut d = Dir::watched();
        let got = d.list("/d", "app.log", true);
        assert_eq!(got, ["app.log", "app.log.1", "app.log.2.gz", "app.logx"]);
        assert_eq!(d.list("/d", "b.log", true), ["b.log"]);
        assert!(d.list("/d", "c", true).is_empty());
        assert_eq!(d.list("/d", "", true).len(), NAMES.len());
        assert_eq!(d.list("/d", "zz", true), Vec::<String>::new());
        assert_eq!(d.loads, 1, "one directory, one read");
        assert_eq!(d.names.reads(), 1);
    }

    #[test]
    fn an_event_waiting_means_a_fresh_read_which_is_kept() {
        let mut d = Dir::watched();
        d.list("/d", "app.log", true);
        d.list("/d", "app.log", false);
        d.list("/d", "app.log", false);
        assert_eq!(d.loads, 3, "every listing while an event waits reads");
        d.list("/d", "app.log", true);
        assert_eq!(d.loads, 3, "the last read is kept");
    }

    #[test]
    fn events_read_or_a_new_turn_forget_everything() {
        let mut d = Dir::watched();
        d.names.watch(Path::new("/e"));
        d.list("/d", "app.log", true);
        d.list("/e", "app.log", true);
        d.names.forget();
        d.list("/d", "app.log", true);
        d.list("/e", "app.log", true);
        d.list("/e", "b", true);
        assert_eq!(d.loads, 4);
    }

    #[test]
    fn an_unwatched_directory_is_read_at_every_listing() {
        let mut d = Dir::watched();
        d.list("/other", "app.log", true);
        d.list("/other", "app.log", true);
        assert_eq!(d.loads, 2, "no event would say it changed");
        // Watched from now on: what was read before the watch is not used.
        d.list("/d", "app.log", true);
        d.names.watch(Path::new("/d"));
        d.list("/d", "app.log", true);
        assert_eq!(d.loads, 4);
        d.list("/d", "app.log", true);
        assert_eq!(d.loads, 4);
        // Its watch gone (the directory went away): read every time.
        d.names.unwatch(Path::new("/d"));
        d.list("/d", "app.log", true);
        d.list("/d", "app.log", true);
        assert_eq!(d.loads, 6);
    }

    #[test]
    fn a_failed_read_keeps_nothing() {
        let mut names = DirNames::default();
        let dir = Path::new("/d");
        names.watch(dir);
        let err = names.prefixed(dir, OsStr::new("a"), true, || {
            Err(io::ErrorKind::NotFound.into())
        });
        assert!(err.is_err());
        let ok = names.prefixed(dir, OsStr::new("a"), true, || Ok(vec!["a".into()]));
        assert_eq!(ok.unwrap(), ["a"]);
        assert_eq!(names.reads(), 1);
    }
}
