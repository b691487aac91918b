//! Directory watches: one inotify watch per directory that holds a
//! followed path or a directory source, never one per file. An event
//! names a file in a watched directory; [`DirWatch`] maps that name to
//! the streams that follow it in one lookup, and offers it to the
//! directory's sources. Streams draining a rotated-away file see every
//! event (their file now has a name nobody watches for). A directory
//! that is missing waits in `unwatched` and is retried every
//! [`DIR_RETRY`] from the daemon's `STATE` timer.
//!
//! A watch follows the directory's inode, not its path. When the watched
//! directory itself goes (deleted: the kernel ends the watch with
//! `IN_IGNORED`; renamed: `IN_MOVE_SELF`, and the watch would go on
//! reporting the renamed directory's files under the configured path),
//! [`rewatch`] decides from what a watch on the configured path gives
//! now: the same watch (renamed and back: nothing changes), another one
//! (a new directory is there: it is listed, so files created before the
//! watch took hold are found), or an error (it waits in `unwatched` like
//! a directory missing at start-up: one WARN now, one INFO when it
//! appears). The old watch is removed, and every stream of the directory
//! looks at its path: files open in the old directory are read to their
//! end by descriptor, as after any rotation.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::Interest;

use super::due::{self, Drain};
use super::{ClientDaemon, INOTIFY, STATE};
use crate::reactor::sys::inotify::{mask, Event, Watch};
use crate::reactor::Key;
use crate::tail::follow::DirChange;

/// Events a directory watch asks for.
/// (`IN_IGNORED` comes unasked when the kernel ends a watch, after the
/// directory's `IN_DELETE_SELF`.)
const DIR_EVENTS: u32 = mask::CREATE
    | mask::MOVED_TO
    | mask::MOVED_FROM
    | mask::DELETE
    | mask::MODIFY
    | mask::CLOSE_WRITE
    | mask::ATTRIB
    | mask::MOVE_SELF
    | mask::ONLYDIR;
/// How often a directory that does not exist yet is looked for again.
pub(super) const DIR_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) struct DirWatch {
    pub(super) dir: PathBuf,
    /// Followed paths in this directory, by file name: an event costs one
    /// lookup, whatever the number of files in the directory.
    pub(super) streams: HashMap<Name, Vec<Key>>,
    /// Directory sources (indices into `sources`) for this directory.
    pub(super) sources: Vec<usize>,
}

/// Longest file name kept inside a [`Name`] (most log file names are
/// shorter): with its length and tag, 32 bytes in the bucket.
const INLINE: usize = 30;

/// A followed file's name as the key of [`DirWatch::streams`]: short ones
/// in the table's own bucket. Every inotify event looks its name up, and at
/// 1,000 busy files a name on the heap was a cache miss of its own on each
/// of them (the comparison, `memcmp`, was 3 % of the client's samples).
#[derive(Debug, Clone)]
pub(super) enum Name {
    Inline(u8, [u8; INLINE]),
    Heap(Box<OsStr>),
}

impl Name {
    pub(super) fn new(name: &OsStr) -> Name {
        let bytes = name.as_bytes();
        if bytes.len() > INLINE {
            return Name::Heap(name.into());
        }
        let mut inline = [0; INLINE];
        inline[..bytes.len()].copy_from_slice(bytes);
        // At most INLINE (30): fits a u8.
        Name::Inline(bytes.len() as u8, inline)
    }

    fn as_os_str(&self) -> &OsStr {
        match self {
            Name::Inline(len, bytes) => OsStr::from_bytes(&bytes[..usize::from(*len)]),
            Name::Heap(name) => name,
        }
    }
}

/// Looked up by `&OsStr`: equality and hash are the name's, whichever way
/// it is kept.
impl std::borrow::Borrow<OsStr> for Name {
    fn borrow(&self) -> &OsStr {
        self.as_os_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_os_str() == other.as_os_str()
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_os_str().hash(state);
    }
}

/// How a watched directory itself went, from an event's mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Went {
    /// The kernel ended the watch (`IN_IGNORED`): the directory was
    /// deleted, or its file system unmounted.
    Deleted,
    /// The directory was renamed (`IN_MOVE_SELF`); the watch follows it
    /// to a name nobody configured.
    Renamed,
}

impl Went {
    pub(super) fn of(m: u32) -> Option<Went> {
        if m & mask::IGNORED != 0 {
            Some(Went::Deleted)
        } else if m & mask::MOVE_SELF != 0 {
            Some(Went::Renamed)
        } else {
            None
        }
    }

    fn says(self) -> &'static str {
        match self {
            Went::Deleted => "was deleted",
            Went::Renamed => "was renamed away (files open in it are read to their end)",
        }
    }
}

/// What becomes of a directory's watch after it [`Went`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rewatch {
    /// The configured path still names the watched directory (renamed
    /// and back before the event was read): nothing changes.
    Keep,
    /// Another directory is at the path and `new` watches it: the old
    /// watch goes, the new directory is listed.
    Replaced { went: Went, new: Watch },
    /// Nothing watchable is at the path (`error`): the old watch goes, and
    /// the directory is looked for again at `retry_at`.
    Wait {
        went: Went,
        error: io::ErrorKind,
        retry_at: Instant,
    },
}

/// Decides what becomes of watch `old` after its directory [`Went`],
/// from `at_path`: what adding a watch on the configured path gave at
/// `now` (the kernel hands back `old` for the same directory, another
/// watch for another one).
pub(super) fn rewatch(
    old: Watch,
    went: Went,
    at_path: Result<Watch, io::ErrorKind>,
    now: Instant,
) -> Rewatch {
    match at_path {
        // A deleted directory's watch is over: a watch numbered the same
        // is a new one.
        Ok(w) if w == old && went == Went::Renamed => Rewatch::Keep,
        Ok(new) => Rewatch::Replaced { went, new },
        Err(error) => Rewatch::Wait {
            went,
            error,
            retry_at: now + DIR_RETRY,
        },
    }
}

/// The tail's view of an inotify record about a name, if it is one it
/// keeps history of.
fn dir_change(m: u32, cookie: u32) -> Option<DirChange> {
    if m & mask::MOVED_FROM != 0 {
        Some(DirChange::MovedFrom(cookie))
    } else if m & mask::MOVED_TO != 0 {
        Some(DirChange::MovedTo(cookie))
    } else if m & mask::DELETE != 0 {
        Some(DirChange::Deleted)
    } else if m & mask::CREATE != 0 {
        Some(DirChange::Created)
    } else {
        None
    }
}

/// Streams whose followed name is `name` or a prefix of it that ends
/// before a `.`, `-` or `_` (`app.log` for `app.log.1` or
/// `app.log-20261206`): a lookup per separator, whatever the number of
/// followed files in the directory.
fn related<'a>(
    streams: &'a HashMap<Name, Vec<Key>>,
    name: &'a OsStr,
) -> impl Iterator<Item = Key> + 'a {
    let bytes = name.as_bytes();
    let cuts = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| matches!(b, b'.' | b'-' | b'_'))
        .map(|(i, _)| i)
        .chain(std::iter::once(bytes.len()));
    cuts.filter_map(move |i| streams.get(OsStr::from_bytes(&bytes[..i])))
        .flatten()
        .copied()
}

impl ClientDaemon {
    pub(super) fn add_unwatched(&mut self, dir: PathBuf, key: Option<Key>, source: Option<usize>) {
        let i = match self.unwatched.iter().position(|(d, _, _)| *d == dir) {
            Some(i) => i,
            None => {
                self.unwatched.push((dir, Vec::new(), Vec::new()));
                self.unwatched.len() - 1
            }
        };
        self.unwatched[i].1.extend(key);
        self.unwatched[i].2.extend(source);
    }

    /// Drains the inotify queue (at most [`due::MAX_READS`] buffers per
    /// turn; past that it comes back through a timer due at once): offers
    /// new files to directory sources and hands the streams their news,
    /// once per stream, unless it is only growth that can wait for the
    /// stream's linger (see `due.rs`).
    pub(super) fn on_inotify(&mut self, now: Instant) {
        let mut buf = std::mem::take(&mut self.inotify_buf);
        // Reused across calls: no allocation per event in steady state.
        let mut hits = std::mem::take(&mut self.inotify_hits);
        hits.clear();
        let mut drain = Drain::default();
        loop {
            let cap = buf.len();
            let events = match self.inotify.read(&mut buf) {
                Ok(ev) => ev,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    crate::error!("reading inotify events failed: {e}");
                    break;
                }
            };
            // What was listed before these events may have changed.
            self.listings.forget();
            // The queue was empty after these: the next event brings a
            // readiness event of its own (edge-triggered), so no read
            // that would only find it empty.
            let emptied = events.emptied(cap);
            for ev in events {
                self.on_dir_event(ev, &mut hits, now);
            }
            if emptied {
                break;
            }
            if !drain.another() {
                // More may be queued: come back after the rest of the turn.
                if !self.inotify_again {
                    self.inotify_again = true;
                    self.reactor.timers.schedule(now, INOTIFY);
                }
                break;
            }
        }
        self.inotify_buf = buf;
        // Starts what was queued; arms the timer for files still open.
        self.recheck_sources(now);
        due::coalesce(&mut hits);
        let mut looked = 0;
        for &(key, m) in &hits {
            let Some(s) = self.streams.get_mut(key) else {
                continue;
            };
            if due::names_changed(m) {
                looked += 1;
                self.with_stream(key, now, |s, ctx| s.on_file_event(ctx));
            } else if due::look_now(m, s.growth_waits(now), s.deferred(), now) {
                looked += 1;
                self.with_stream(key, now, |s, ctx| {
                    s.note_growth(false);
                    s.tick(ctx)
                });
            } else if let Some(at) = s.defer_growth(now) {
                // Noted; its timer reads the growth at its linger.
                self.reactor.timers.schedule(at, key.token());
            }
        }
        let rest = due::rest(hits.len(), looked, self.settings.rules.linger, now);
        self.inotify_hits = hits;
        if let Some(until) = rest.filter(|_| !self.inotify_again && !self.inotify_resting) {
            self.rest_inotify(until);
        }
        if !self.unwatched.is_empty() && self.state_timer.arm(now + DIR_RETRY) {
            self.reactor.timers.schedule(now + DIR_RETRY, STATE);
        }
    }

    /// Takes the inotify descriptor out of the poll until `until` (see
    /// `due::rest`); the `INOTIFY` timer puts it back and drains it.
    fn rest_inotify(&mut self, until: Instant) {
        let fd = self.inotify.as_raw_fd();
        match self.reactor.registry().deregister(&mut SourceFd(&fd)) {
            Ok(()) => {
                self.inotify_resting = true;
                self.reactor.timers.schedule(until, INOTIFY);
            }
            Err(e) => crate::debug!("inotify stays in the poll: {e}"),
        }
    }

    /// The `INOTIFY` timer: back in the poll after a rest, then a drain.
    pub(super) fn on_inotify_timer(&mut self, now: Instant) {
        self.inotify_again = false;
        if self.inotify_resting {
            let fd = self.inotify.as_raw_fd();
            match self
                .reactor
                .registry()
                .register(&mut SourceFd(&fd), INOTIFY, Interest::READABLE)
            {
                Ok(()) => {
                    self.inotify_resting = false;
                    if std::mem::take(&mut self.inotify_unpolled) {
                        crate::info!("inotify is back in the event loop");
                    }
                }
                Err(e) => {
                    // Not watched by the poll: drained on this timer until
                    // registering works (said once).
                    if !std::mem::replace(&mut self.inotify_unpolled, true) {
                        crate::error!(
                            "cannot put inotify back in the event loop: {e}; reading it every {:?} until that works",
                            due::REST_MAX
                        );
                    }
                    self.reactor.timers.schedule(now + due::REST_MAX, INOTIFY);
                }
            }
        }
        self.on_inotify(now);
    }

    /// One inotify event: offers a new file to its directory's sources and
    /// adds the streams it concerns, with its mask, to `hits`.
    fn on_dir_event(&mut self, ev: Event<'_>, hits: &mut Vec<(Key, u32)>, now: Instant) {
        if ev.mask & mask::Q_OVERFLOW != 0 {
            self.on_overflow(hits, now);
            return;
        }
        let Some(dw) = self.dirs.get(&ev.watch) else {
            return;
        };
        if let Some(name) = ev.name {
            for &i in &dw.sources {
                let src = &mut self.sources[i];
                // Whole files when a writer closed them (the source then
                // proves nobody else still writes); followed files when
                // they appear.
                let wanted = if src.follow {
                    mask::CREATE | mask::MOVED_TO
                } else {
                    mask::CLOSE_WRITE | mask::MOVED_TO
                };
                if ev.mask & wanted != 0 && !src.once && !src.retiring && src.matches(name) {
                    let path = src.dir.join(name);
                    src.offer(path, now, &self.completed);
                }
            }
        }
        if let Some(keys) = ev.name.and_then(|n| dw.streams.get(n)) {
            hits.extend(keys.iter().map(|&k| (k, ev.mask)));
        }
        if let (Some(name), Some(change)) = (ev.name, dir_change(ev.mask, ev.cookie)) {
            // Renames, creations and deletions of names derived from a
            // followed path (`app.log` -> `app.log.1`): the history that
            // orders generations born in the same clock tick.
            let path = dw.dir.join(name);
            for key in related(&dw.streams, name) {
                if let Some(s) = self.streams.get_mut(key) {
                    s.record(&path, change);
                }
            }
        }
        // A file being drained after a rotation has events under
        // its new name: let draining streams look at every event.
        hits.extend(self.draining.iter().map(|&k| (k, ev.mask)));
        if let Some(went) = Went::of(ev.mask) {
            self.on_dir_went(ev.watch, went, hits, now);
        }
    }

    /// The inotify queue overflowed (events were lost): rescans every
    /// directory source and adds every stream to `hits`.
    fn on_overflow(&mut self, hits: &mut Vec<(Key, u32)>, now: Instant) {
        self.metrics.inotify_overflows.inc();
        crate::warn!(
            "inotify queue overflowed: events were lost; looking at every followed file and directory again (files created and rotated away meanwhile are found by birth time)"
        );
        for src in &mut self.sources {
            if let Err(e) = src.scan(now, &mut self.completed) {
                crate::warn!("cannot list directory {}: {e}", crate::log::esc(&src.dir));
            }
        }
        hits.extend(
            self.streams
                .keys()
                .into_iter()
                .map(|k| (k, mask::Q_OVERFLOW)),
        );
    }

    /// The watched directory itself went (see the module doc): whatever
    /// is at its path now is watched and listed, or waited for; the old
    /// watch goes, and every stream of the directory looks at its path
    /// (at once, or through `hits` while nothing is there).
    fn on_dir_went(&mut self, old: Watch, went: Went, hits: &mut Vec<(Key, u32)>, now: Instant) {
        let Some(dir) = self.dirs.get(&old).map(|dw| dw.dir.clone()) else {
            return;
        };
        let probe = self.inotify.add_watch(&dir, DIR_EVENTS);
        let at_path = probe.as_ref().map(|w| *w).map_err(io::Error::kind);
        let decision = rewatch(old, went, at_path, now);
        if decision == Rewatch::Keep {
            return;
        }
        let Some(dw) = self.dirs.remove(&old) else {
            return;
        };
        if went == Went::Renamed {
            // Left in place, it would report the renamed directory's
            // files under the configured path.
            if let Err(e) = self.inotify.rm_watch(old) {
                crate::debug!("removing the watch on {}: {e}", crate::log::esc(&dir));
            }
        }
        self.listings.unwatch(&dir);
        let keys: Vec<Key> = dw.streams.into_values().flatten().collect();
        match decision {
            Rewatch::Replaced { new, .. } => {
                crate::info!(
                    "directory {} {}; watching the new one at its path",
                    crate::log::esc(&dir),
                    went.says()
                );
                self.watching(new, dir, keys, dw.sources, now);
            }
            Rewatch::Wait {
                error, retry_at, ..
            } => {
                if self.dir_errors.say(dir.clone(), error) {
                    let then = match probe {
                        Err(e) if error != io::ErrorKind::NotFound => format!(
                            "cannot watch what is there now ({e}); trying again every {}s",
                            DIR_RETRY.as_secs()
                        ),
                        _ => "watching for it to come back".to_string(),
                    };
                    crate::warn!(
                        "directory {} went away: it {}; {then}",
                        crate::log::esc(&dir),
                        went.says()
                    );
                }
                // (A new watch has them look in `watching`.)
                hits.extend(keys.iter().map(|&k| (k, mask::MOVE_SELF)));
                self.unwatched.push((dir, keys, dw.sources));
                if self.state_timer.arm(retry_at) {
                    self.reactor.timers.schedule(retry_at, STATE);
                }
            }
            Rewatch::Keep => {}
        }
    }

    /// Adds directory watches that are still missing; kicks their streams.
    /// At start-up, a stop waiting leaves the rest unwatched and unlisted
    /// (see `ClientDaemon::stop_waiting`).
    pub(super) fn watch_dirs(&mut self, now: Instant) {
        let mut dirs = std::mem::take(&mut self.unwatched).into_iter();
        for (dir, keys, sources) in dirs.by_ref() {
            if self.stop_waiting() {
                self.unwatched.push((dir, keys, sources));
                break;
            }
            match self.inotify.add_watch(&dir, DIR_EVENTS) {
                Ok(w) => self.watching(w, dir, keys, sources, now),
                Err(e) => {
                    // A missing directory of followed paths: each path
                    // says so once (see `stream/story.rs`). Anything else
                    // once per directory and error, not at every retry.
                    let streams_say_it = e.kind() == io::ErrorKind::NotFound && sources.is_empty();
                    if !streams_say_it && self.dir_errors.say(dir.clone(), e.kind()) {
                        crate::warn!(
                            "cannot watch directory {}: {e}; trying again every {}s (said again only if the error changes)",
                            crate::log::esc(&dir),
                            DIR_RETRY.as_secs()
                        );
                    }
                    self.unwatched.push((dir, keys, sources));
                }
            }
        }
        self.unwatched.extend(dirs);
        self.recheck_sources(now);
        if !self.unwatched.is_empty() && self.state_timer.arm(now + DIR_RETRY) {
            self.reactor.timers.schedule(now + DIR_RETRY, STATE);
        }
    }

    /// Directory `dir` is watched by `w` now: says so if it was said to be
    /// missing, has the streams `keys` look at their paths, lists it for
    /// its `sources`, and routes the watch's events to both.
    fn watching(
        &mut self,
        w: Watch,
        dir: PathBuf,
        keys: Vec<Key>,
        sources: Vec<usize>,
        now: Instant,
    ) {
        self.listings.watch(&dir);
        if self.dir_errors.clear(&dir) {
            crate::info!("directory {}: watching it now", crate::log::esc(&dir));
        }
        for &key in &keys {
            if !self.stop_waiting() {
                self.with_stream(key, now, |s, ctx| s.on_file_event(ctx));
            }
        }
        for &i in &sources {
            if self.stop_waiting() {
                break;
            }
            if let Err(e) = self.sources[i].scan(now, &mut self.completed) {
                crate::warn!("cannot list directory {}: {e}", crate::log::esc(&dir));
            }
        }
        let dw = self.dirs.entry(w).or_insert_with(|| DirWatch {
            dir,
            streams: HashMap::new(),
            sources: Vec::new(),
        });
        for key in keys {
            if let Some(s) = self.streams.get(key) {
                dw.streams.entry(Name::new(s.name())).or_default().push(key);
            }
        }
        dw.sources.extend(sources);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: Watch = Watch(3);

    fn key(n: usize) -> Key {
        Key::from_token(mio::Token(crate::reactor::slots::RESERVED + n)).expect("a key")
    }

    #[test]
    fn names_short_and_long_are_found_by_their_name_and_nothing_else() {
        assert_eq!(std::mem::size_of::<Name>(), 32);
        let fits = "a".repeat(INLINE);
        let over = "b".repeat(INLINE + 1);
        let names = ["", "app.log", fits.as_str(), over.as_str(), "caf\u{e9}.log"];
        let mut map: HashMap<Name, Vec<Key>> = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            map.entry(Name::new(OsStr::new(n)))
                .or_default()
                .push(key(i));
        }
        assert!(matches!(Name::new(OsStr::new(&fits)), Name::Inline(..)));
        assert!(matches!(Name::new(OsStr::new(&over)), Name::Heap(_)));
        for (i, n) in names.iter().enumerate() {
            assert_eq!(map.get(OsStr::new(n)), Some(&vec![key(i)]), "{n:?}");
        }
        // Not a prefix, not a longer name, not bytes past the length.
        for miss in ["app.lo", "app.log.1", &fits[1..], &over[1..], "app.log\0"] {
            assert_eq!(map.get(OsStr::new(miss)), None, "{miss:?}");
        }
        // Bytes that are not UTF-8 are names like any other.
        let raw = OsStr::from_bytes(b"x\xff.log");
        map.insert(Name::new(raw), vec![key(9)]);
        assert_eq!(map.get(raw), Some(&vec![key(9)]));
        // A rotated name finds the stream of the name it derives from.
        let found: Vec<Key> = related(&map, OsStr::new("app.log.1")).collect();
        assert_eq!(found, vec![key(1)]);
    }

    #[test]
    fn only_the_end_or_the_rename_of_the_watched_directory_is_news_about_it() {
        assert_eq!(Went::of(mask::IGNORED), Some(Went::Deleted));
        assert_eq!(Went::of(mask::MOVE_SELF), Some(Went::Renamed));
        // Named events are about files in it; DELETE_SELF is followed by
        // the IGNORED that ends the watch.
        for m in [
            mask::CREATE,
            mask::DELETE,
            mask::MOVED_FROM,
            mask::MODIFY,
            mask::DELETE_SELF,
        ] {
            assert_eq!(Went::of(m), None, "{m:#x}");
        }
    }

    #[test]
    fn a_directory_renamed_away_and_back_keeps_its_watch() {
        let now = Instant::now();
        assert_eq!(rewatch(OLD, Went::Renamed, Ok(OLD), now), Rewatch::Keep);
    }

    #[test]
    fn a_directory_replaced_at_its_path_is_watched_anew() {
        let now = Instant::now();
        for went in [Went::Deleted, Went::Renamed] {
            assert_eq!(
                rewatch(OLD, went, Ok(Watch(4)), now),
                Rewatch::Replaced {
                    went,
                    new: Watch(4)
                }
            );
        }
        // A deleted directory's watch is over: the same number again is a
        // new watch on whatever is there now.
        assert_eq!(
            rewatch(OLD, Went::Deleted, Ok(OLD), now),
            Rewatch::Replaced {
                went: Went::Deleted,
                new: OLD
            }
        );
    }

    #[test]
    fn a_directory_gone_from_its_path_is_looked_for_again_after_the_retry() {
        let now = Instant::now();
        for went in [Went::Deleted, Went::Renamed] {
            for error in [io::ErrorKind::NotFound, io::ErrorKind::PermissionDenied] {
                assert_eq!(
                    rewatch(OLD, went, Err(error), now),
                    Rewatch::Wait {
                        went,
                        error,
                        retry_at: now + DIR_RETRY
                    }
                );
            }
        }
    }
}
