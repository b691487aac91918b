//! The generations of a path: opening the file at the path (resuming the
//! state file's entry), noticing that the path moved on, finding every
//! later generation in the directory by birth time (`gather.rs` lists
//! them), draining the current one, and switching to the next.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{
    Env, Gen, Note, State, Tail, DEPARTED_MAX, DRAIN_POLL, RELIST_MAX, REOPEN_RETRY, ROTATE_GRACE,
    ROTATE_GRACE_MOVED_ON,
};
use crate::tail::fs::{Fs, Kind, Meta};
use crate::tail::identity::{Born, Identity, StreamId};
use crate::tail::state::Entry;

/// A state-file entry's file, found again.
struct Located<H> {
    name: PathBuf,
    offset: u64,
    /// Same inode, other first bytes: truncated and rewritten meanwhile.
    rewritten: bool,
    gen: Gen<H>,
}

/// How soon an open that failed for lack of descriptors is retried.
const FD_PRESSURE_RETRY: Duration = Duration::from_millis(100);

/// What one [`Tail::tick`] wants from the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tick {
    /// Everything of this generation was read and the file is done:
    /// half-close the connection so the server confirms with `250 DONE`.
    pub finish: bool,
    /// Look again at this time.
    pub wake: Option<Instant>,
}

impl<H> Tail<H> {
    /// Something happened to the path's name in its directory (or the
    /// daemon starts, or the inotify queue overflowed): look at it.
    pub fn look<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) {
        if self.followed_since == 0 {
            // Recorded at once (the marker, or the file opened now), so a
            // crash right after start-up still knows since when.
            self.followed_since = env.fs.clock().max(1);
            self.save_soon = true;
        }
        match self.state {
            State::Missing { .. } => self.open(env),
            State::Following if !self.settings.whole => {
                let Some(cur) = &self.cur else { return };
                let at_path = self.at_path(env);
                if at_path.map(|m| m.inode()) != Some(cur.meta.inode()) {
                    self.notes.push(Note::Rotated);
                    self.state = State::Draining {
                        last_growth: env.now,
                    };
                    if self.path_moved_on(env) {
                        self.scan(env);
                    }
                } else if std::mem::take(&mut self.departed_unseen) {
                    self.adopt_missed(env);
                }
            }
            State::Draining { .. } => {
                if self.path_moved_on(env) {
                    self.scan(env);
                }
            }
            State::Following | State::Stopped => {}
        }
    }

    /// True when the path names no file this tail holds (it is missing,
    /// or a file born since): a rename rotation, so later generations may
    /// exist. While a copytruncate's copies are read, the path still names
    /// the held original, and the copies are not generations of the path.
    fn path_moved_on<F: Fs<File = H>>(&self, env: &mut Env<'_, F>) -> bool {
        let at_path = self.at_path(env);
        !at_path.is_some_and(|m| self.holds(m.inode()))
    }

    /// Does what is due: opens a missing file whose retry time came,
    /// decides whether a drained generation is done, and switches to the
    /// next one once the server confirmed it. `link_open`: a connection
    /// exists (the switch waits for it to end).
    pub fn tick<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>, link_open: bool) -> Tick {
        for _ in 0..64 {
            match self.state {
                State::Missing {
                    retry_at: Some(t), ..
                } if t <= env.now => self.open(env),
                State::Missing { retry_at } => {
                    return Tick {
                        finish: false,
                        wake: retry_at,
                    }
                }
                State::Stopped => return Tick::default(),
                State::Following if self.settings.whole => {
                    let finish = self.read_all(env);
                    return Tick { finish, wake: None };
                }
                State::Following => return Tick::default(),
                State::Draining { last_growth } => {
                    if self.deleted_too_long(env) {
                        self.abandon(env);
                        continue;
                    }
                    if !self.read_all(env) || !self.quiet(env, last_growth) {
                        let wake = Some(env.now + DRAIN_POLL);
                        return Tick {
                            finish: false,
                            wake,
                        };
                    }
                    let confirmed = self.done_at == Some(self.sent()) && self.acked == self.sent();
                    if link_open || !confirmed {
                        let wake = Some(env.now + DRAIN_POLL);
                        return Tick { finish: true, wake };
                    }
                    self.switch(env);
                }
            }
        }
        Tick {
            finish: false,
            wake: Some(env.now),
        }
    }

    /// True when every byte of the current file was read and sent.
    fn read_all<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) -> bool {
        let Some(cur) = &self.cur else { return true };
        if !self.buf.unsent().is_empty() {
            return false;
        }
        let Ok(m) = env.fs.fstat(&cur.file) else {
            return true;
        };
        self.seen_len = self.seen_len.max(m.len);
        m.len <= self.buf.sent_pos()
    }

    /// True when a drained file will not grow any more: no writer holds it
    /// (proven by a lease), or, where that cannot be told, it has been
    /// quiet for a grace period (short once the next file has data).
    fn quiet<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>, last_growth: Instant) -> bool {
        let Some(cur) = &self.cur else { return true };
        // Any later generation with data: the front one may have been
        // truncated (or deleted) empty while lines go to one after it.
        let moved_on = self
            .queue
            .iter()
            .any(|g| env.fs.fstat(&g.file).is_ok_and(|m| m.len > 0));
        match env.fs.writers(&cur.file) {
            Ok(Some(false)) => true,
            // A writer still holds it: wait for it while it is the only
            // place lines go; once the next file has data, a quiet old
            // descriptor is a leftover.
            Ok(Some(true)) => moved_on && env.now >= last_growth + ROTATE_GRACE,
            _ => {
                let grace = if moved_on {
                    ROTATE_GRACE_MOVED_ON
                } else {
                    ROTATE_GRACE
                };
                env.now >= last_growth + grace
            }
        }
    }

    /// Opens the file at the path (`Missing` → `Following`), or resumes
    /// the generations the state file recorded for the path, wherever they
    /// are now.
    pub(super) fn open<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) {
        if self.cur.is_none() && self.resume(env) {
            return;
        }
        let rotations = !self.settings.whole && self.settings.follow_rotations;
        let mut opened = None;
        for attempt in 1..=RELIST_MAX {
            if rotations && self.open_generations(env) {
                return;
            }
            let (file, meta) = match env.fs.open(&self.path, self.settings.follow_symlinks) {
                Ok(x) => x,
                Err(e) => return self.open_failed(env, e),
            };
            // Files can be created and renamed away between the listing
            // and this open: the file found at the path may have a
            // predecessor the listing did not see. Then list again (it
            // now sees both, in order).
            if rotations && attempt < RELIST_MAX && self.raced_past(env, &meta) {
                continue;
            }
            opened = Some((file, meta));
            break;
        }
        let Some((file, meta)) = opened else { return };
        let identity = match Identity::of(env.fs, &file, &meta) {
            Ok(i) => i,
            Err(e) => return self.open_failed(env, e),
        };
        self.parked = false;
        self.refused = None;
        let copies_after = env.fs.clock();
        self.cur = Some(self.fresh_gen(file, meta, identity, Vec::new(), copies_after));
        self.state = State::Following;
        self.restart_at(0);
        self.verify = true;
        self.save_soon = true;
        self.notes.push(Note::Opened {
            offset: 0,
            resumed: false,
        });
    }

    /// Opening the path again after a generation was finished, or when
    /// the directory's events saw files leave the path before anything was
    /// opened: every generation born since the last finished one (or seen
    /// leaving) is read first, in order, then the file at the path. A file
    /// created and rotated away before the tail looked is not skipped.
    /// Returns false when there is nothing of the kind (the caller opens
    /// the path).
    fn open_generations<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) -> bool {
        // Born since the last generation finished in this run, or since
        // the path is followed (an earlier run's start, from the state
        // file); before anything of the kind, only what the directory's
        // events saw leave the path.
        let Some(floor) = self.generations_floor() else {
            return false;
        };
        let mut gens = self.gather(env, floor).into_iter();
        let Some(first) = gens.next() else {
            return false;
        };
        let at_path = self.at_path(env).map(|m| m.inode());
        let here = at_path == Some(first.meta.inode());
        self.parked = false;
        self.cur = Some(first);
        self.queue = gens.collect();
        self.restart_at(0);
        self.verify = true;
        self.save_soon = true;
        self.state = if here && self.queue.is_empty() {
            State::Following
        } else {
            State::Draining {
                last_growth: env.now,
            }
        };
        if here {
            self.notes.push(Note::Opened {
                offset: 0,
                resumed: false,
            });
        } else if self.path_moved_on(env) {
            self.scan(env);
        }
        true
    }

    /// Takes the state file's entries for this path (the generation being
    /// read, then the ones queued after it) and opens each where it is
    /// now: at the path, or rotated away under another name in the
    /// directory or an `olddir` (found by inode, checked by its first
    /// bytes). Returns false when none of them is there any more.
    fn resume<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) -> bool {
        let path = self.path.clone();
        let mut mine: Vec<Entry> = {
            let (mine, rest) = std::mem::take(env.loaded)
                .into_iter()
                .partition(|e| e.path == path && !e.complete);
            *env.loaded = rest;
            mine
        };
        let finished = self.take_markers(&mut mine);
        let at_path = self.at_path(env).map(|m| m.inode());
        let mut listing = None;
        let mut found = Vec::new();
        // The oldest birth among the recorded files: if none of them is
        // left (deleted since), every file born since is still to read.
        let mut oldest = None;
        for e in mine {
            if let Ok(StreamId {
                born: Born::At(ns), ..
            }) = e.id.parse::<StreamId>()
            {
                oldest = Some(oldest.map_or(ns, |o: u64| o.min(ns)));
            }
            if let Some(r) = self.locate(env, &e, at_path, &mut listing) {
                found.push(r);
            }
        }
        if found.is_empty() {
            if let Some(born) = oldest.filter(|b| *b > 0) {
                self.followed_since = self.followed_since.min(born);
            }
            return false;
        }
        self.remember_finished(finished);
        let was_parked = std::mem::take(&mut self.parked);
        let mut first = found.remove(0);
        let (name, offset, rewritten) = (first.name, first.offset, first.rewritten);
        let here = at_path == Some(first.gen.meta.inode());
        if first.gen.copies_after == 0 && !rewritten {
            // A state file from before copies were counted: the copies
            // there now are older than the content still to read.
            first.gen.copies_after = env.fs.clock();
        }
        self.cur = Some(first.gen);
        self.queue = found.into_iter().map(|r| r.gen).collect();
        self.restart_at(offset);
        self.state = if here && self.queue.is_empty() {
            State::Following
        } else {
            State::Draining {
                last_growth: env.now,
            }
        };
        // A parked file reopened as itself: its offset is the server's.
        self.verify = !(was_parked && here && !rewritten);
        self.save_soon = true;
        // (A parked file reopened as itself is no news.)
        let reopened = was_parked && !rewritten;
        if here && !reopened {
            self.notes.push(Note::Opened {
                offset,
                resumed: true,
            });
        } else if !here {
            self.notes.push(Note::ResumedRotated { name, offset });
        }
        if rewritten {
            self.truncated(env);
        }
        if !self.settings.whole && self.path_moved_on(env) {
            self.scan(env);
        }
        true
    }

    /// Takes the entries that hold no file out of `mine`: since when the
    /// path is followed (an earlier run's start: the floor from now on),
    /// and the generations finished in an earlier run, born in a tick a
    /// recorded one shares (returned: remembered once a recorded file is
    /// found again).
    fn take_markers(&mut self, mine: &mut Vec<Entry>) -> Vec<(u64, u64, u64)> {
        if let Some(m) = mine.iter().find(|e| e.id == super::SINCE_MARKER) {
            if m.copies_after > 0 {
                self.followed_since = self.followed_since.min(m.copies_after).max(1);
            }
        }
        let finished = mine
            .iter()
            .filter(|e| e.id == super::FINISHED_MARKER)
            .map(|m| (m.identity.dev, m.identity.ino, m.copies_after))
            .collect();
        mine.retain(|e| e.id != super::SINCE_MARKER && e.id != super::FINISHED_MARKER);
        finished
    }

    /// Takes generations finished in an earlier run as finished in this
    /// one (see [`super::FINISHED_MARKER`]).
    fn remember_finished(&mut self, finished: Vec<(u64, u64, u64)>) {
        for done in finished {
            if !self.finished.contains(&done) {
                self.finished.push_back(done);
            }
        }
        while self.finished.len() > DEPARTED_MAX {
            self.finished.pop_front();
        }
    }

    /// Opens the file of a state-file entry: at the path, or (unless sent
    /// whole) found by inode next to it. An inode that now holds another
    /// file (other first bytes and another birth time) is not it.
    fn locate<F: Fs<File = H>>(
        &mut self,
        env: &mut Env<'_, F>,
        e: &Entry,
        at_path: Option<(u64, u64)>,
        listing: &mut Option<Vec<(PathBuf, Meta)>>,
    ) -> Option<Located<H>> {
        let id = e.id.parse::<StreamId>().ok()?;
        let want = (e.identity.dev, e.identity.ino);
        let (name, (file, meta)) = if at_path == Some(want) {
            let opened = env
                .fs
                .open(&self.path, self.settings.follow_symlinks)
                .ok()?;
            (self.path.clone(), opened)
        } else if self.settings.whole {
            return None;
        } else {
            let listed = listing.get_or_insert_with(|| self.listing(env));
            let (p, _) = listed
                .iter()
                .find(|(_, m)| m.inode() == want && m.kind == Kind::File)?;
            (p.clone(), env.fs.open(p, false).ok()?)
        };
        if meta.inode() != want {
            return None;
        }
        // (A copy may end before the fingerprinted length: its short
        // fingerprint, or the whole one, tells it.) The first bytes of a
        // file that still holds what was read are kept: a copytruncate's
        // copy made while the client was away can end before the short
        // fingerprint, and once the file is truncated, before anything
        // was read in this run, only these bytes recognise it.
        let (same, prefix) = if e.copy {
            let same = e.identity.copy_matches(env.fs, &file, meta.len);
            (same.unwrap_or(false), Vec::new())
        } else {
            match e
                .identity
                .verified_prefix(env.fs, &file, &meta, super::buffer::OVERLAP)
            {
                Ok(Some(prefix)) => (true, prefix),
                _ => (false, Vec::new()),
            }
        };
        // The same inode born at the same time: the same file, its content
        // rewritten. (Not for a copy: its id names the original's inode and
        // birth, and a copy born in the same clock tick as its original
        // would pass for it.)
        let own = (id.dev, id.ino) == meta.inode() && !e.copy;
        let born_same = own
            && match id.born {
                Born::At(ns) => ns == meta.born,
                Born::Unknown(_) => name == self.path,
            };
        if !same && !born_same {
            return None;
        }
        Some(Located {
            name,
            offset: e.offset,
            rewritten: !same,
            gen: Gen {
                file,
                meta,
                identity: e.identity,
                id,
                copy: e.copy,
                refilled: id.rewrite.is_some(),
                prefix,
                copies_after: e.copies_after,
                order: u64::MAX - 1,
            },
        })
    }

    fn open_failed<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>, e: io::Error) {
        let retry_at = match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => {
                self.notes.push(Note::Failed {
                    what: "open (out of descriptors)",
                    error: e.to_string(),
                });
                Some(env.now + FD_PRESSURE_RETRY)
            }
            _ if e.kind() == io::ErrorKind::NotFound => {
                if !self.parked {
                    self.notes.push(Note::Absent);
                }
                self.refused = None;
                None
            }
            _ if e.kind() == io::ErrorKind::InvalidInput => {
                // Not a regular file (or a symlink not to follow): noted
                // once, retried quietly, noted again if it is replaced.
                let there = env.fs.lstat(&self.path).ok().flatten();
                let seen = there.map(|m| (m.dev, m.ino, m.kind));
                if seen.is_some() && seen != self.refused {
                    let kind = there.map_or(Kind::Other, |m| m.kind);
                    self.notes.push(Note::Refused {
                        kind,
                        error: e.to_string(),
                    });
                } else {
                    self.notes.push(Note::StillRefused);
                }
                self.refused = seen;
                Some(env.now + REOPEN_RETRY)
            }
            _ => {
                self.notes.push(Note::Failed {
                    what: "open",
                    error: e.to_string(),
                });
                Some(env.now + REOPEN_RETRY)
            }
        };
        self.state = State::Missing { retry_at };
    }

    /// The current generation is done (confirmed to its end): the next
    /// queued one starts, or the path is looked at again.
    pub(super) fn switch<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) {
        self.notes.push(Note::Done { offset: self.acked });
        if let Some(done) = self.cur.take() {
            let m = done.meta;
            self.finished.push_back((m.dev, m.ino, m.born));
            if self.finished.len() > DEPARTED_MAX {
                self.finished.pop_front();
            }
        }
        self.save_soon = true;
        if !self.settings.follow_rotations {
            self.notes.push(Note::StoppedAfterRotation);
            self.queue.clear();
            self.state = State::Stopped;
            return;
        }
        let Some(next) = self.queue.pop_front() else {
            self.state = State::Missing {
                retry_at: Some(env.now),
            };
            return;
        };
        let at_path = self.at_path(env).map(|m| m.inode());
        let at_path = at_path == Some(next.meta.inode());
        self.state = if at_path && self.queue.is_empty() {
            State::Following
        } else {
            State::Draining {
                last_growth: env.now,
            }
        };
        self.cur = Some(next);
        self.restart_at(0);
        self.verify = true;
        if !at_path && self.path_moved_on(env) {
            self.scan(env);
        }
    }

    /// True when the drained file was deleted more than `deleted_hold` ago.
    fn deleted_too_long<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) -> bool {
        let nlink = self
            .cur
            .as_ref()
            .and_then(|g| env.fs.fstat(&g.file).ok())
            .map_or(1, |m| m.nlink);
        if nlink > 0 {
            self.deleted_since = None;
            return false;
        }
        let since = *self.deleted_since.get_or_insert(env.now);
        env.now >= since + self.settings.deleted_hold
    }

    /// Gives up a deleted file that could not be delivered in time.
    fn abandon<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) {
        let len = self
            .cur
            .as_ref()
            .and_then(|g| env.fs.fstat(&g.file).ok())
            .map_or(0, |m| m.len);
        self.notes.push(Note::Abandoned {
            bytes: len.saturating_sub(self.acked),
        });
        self.deleted_since = None;
        self.switch(env);
    }

    /// True when the file can be closed now without losing its place:
    /// followed at its path, everything read, sent and acknowledged.
    pub fn parkable<F: Fs<File = H>>(&mut self, fs: &mut F) -> bool {
        let Some(cur) = &self.cur else { return false };
        self.state == State::Following
            && !self.settings.whole
            && !self.verify
            && self.queue.is_empty()
            && self.buf.unsent().is_empty()
            && self.acked == self.sent()
            && fs.fstat(&cur.file).is_ok_and(|m| m.len == self.acked)
    }

    /// Closes the idle file; its entry (returned) waits in the daemon's
    /// loaded entries until the directory reports a change of its name.
    pub fn park<F: Fs<File = H>>(&mut self, fs: &mut F) -> Option<Entry> {
        if !self.parkable(fs) {
            return None;
        }
        let entry = self.entry()?;
        self.cur = None;
        self.parked = true;
        self.state = State::Missing { retry_at: None };
        self.buf.release();
        Some(entry)
    }
}
