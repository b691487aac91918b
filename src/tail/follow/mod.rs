//! One followed path: which file (generation) is read, where, and when it
//! is done. This is the tailer's logic, apart from sockets and clocks.
//!
//! A followed path names a sequence of files over time: each rotation by
//! rename puts a new inode at the path, each copytruncate replaces the
//! content of the same inode. Each such *generation* is its own stream on
//! the wire (its own [`StreamId`]), read from its first byte to its last,
//! in the order the generations were born. [`Tail`] holds the generation
//! being read (`cur`) and the ones found after it (`queue`), each with its
//! descriptor, so a file rotated away or deleted after it was found is
//! still read whole.
//!
//! | state | means | leaves it |
//! |---|---|---|
//! | `Missing` | nothing open (not there yet, or parked) | `look`/`tick` opens the path, or resumes the state file's generations → `Following`/`Draining` |
//! | `Following` | `cur` is the file at the path | the path names another file or none → `Draining`; a truncation → `Draining` (a copy to read) or stays (new id); a file never held left the path (events) → `Draining` (it first, `cur` queued behind it) |
//! | `Draining` | `cur` left the path | read to its end, no writer left (lease) or quiet, `250 DONE` → next queued (`Following` when it is at the path), `Missing`, or `Stopped` |
//! | `Stopped` | `onrotate = "stop"` after its file ended | never |
//!
//! Every transition has a scripted test in `tests/sim/scripted.rs`, and
//! `tests/sim` plays random histories against all of them.
//!
//! How generations are found (`scan.rs`, `gather.rs`): whenever the path stops naming
//! `cur` (and on the first open after a generation was finished), the
//! directory (and `olddir`s) is listed, and every regular file whose name
//! is the path's name or starts with it (`app.log`, `app.log.1`,
//! `app.log-20261206`; compressed names excepted) that was born since
//! `cur` and is not held or finished yet is a later generation. Birth time
//! orders them; files born in the same tick of the kernel's coarse clock
//! are ordered by the directory's rename history ([`Tail::record`]:
//! inotify's records with their cookies, followed through later renames),
//! which also names files that left the path before anything was opened;
//! files whose departure it did not see go by their rotation numbers (the
//! higher older), else by name (`Tail::generation_order`).
//! The directory can change while it is read (a file created and renamed
//! away between the listing and the opens, or during the listing): the
//! files are opened and the directory listed again, and a result is taken
//! only when both listings agree; the file at the path opened after a
//! listing that found nothing is checked the same way. So the path's first
//! file, created and rotated away in the moment the tail looks, is read,
//! and before the file that followed it.
//! A path without a file keeps a marker in the state file (since when it is
//! followed), so files created and rotated away while the client was
//! stopped are found too. The state file records `cur` and every queued
//! generation, so a restart resumes all of them, wherever they were
//! renamed to.
//!
//! Copytruncate (`read.rs`): when the file at the path shrinks below, or
//! is rewritten before, the read position, the copy holding the rest of
//! the old content is found by its first bytes (a full and a short
//! fingerprint, or the first bytes themselves) and the bytes before the
//! position; copies made after it are whole generations of their own,
//! unless the file still starts like them (copied, not truncated yet); the
//! truncated file follows from 0 under a new id. Its queued new content
//! is checked again before it is read.
//!
//! I/O goes through the [`Fs`] trait, so the same code runs over the
//! kernel and over the simulated host of `tests/sim`, where the scheduler
//! may change the host between any two steps; time is passed in; what the
//! daemon should log or count comes out as [`Note`]s. The socket side
//! (connecting, sending, acknowledgements) belongs to the caller, which
//! tells the tail what the server said (`on_ready`, `on_ack`, `on_done`,
//! `on_link_lost`) and asks it what to send ([`Tail::fill`],
//! [`Tail::sendable`], [`Tail::pending`]). The read itself is split the way
//! a batching executor needs it ([`ReadBuf::check_window`] and `room` give
//! where to read, `filled` takes the result), so an io_uring shell can
//! gather the reads of every file and submit them in one call.

pub mod buffer;
mod gather;
mod read;
mod scan;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::batch;
use super::fs::{Fs, Kind, Meta};
use super::identity::{IdKey, Identity, StreamId};
use super::state::Entry;
pub use buffer::ReadBuf;
pub use read::Filled;
pub use scan::Tick;

/// How long a rotated-away file must stay quiet at its end before the
/// tail moves on, when it cannot be told whether a writer still holds it.
pub const ROTATE_GRACE: Duration = Duration::from_millis(500);
/// The quiet period once the next generation already has data.
pub const ROTATE_GRACE_MOVED_ON: Duration = Duration::from_millis(50);
/// How often a draining file is looked at again (its events arrive under
/// a name nobody may watch).
pub const DRAIN_POLL: Duration = Duration::from_millis(100);
/// How often an unreadable (not missing) file is retried.
pub const REOPEN_RETRY: Duration = Duration::from_secs(5);

/// Settings of one followed path.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rules: batch::Rules,
    /// Size of a file's first read buffer (it grows up to `max_batch`
    /// while the file is behind; see [`ReadBuf`]).
    pub initial_buffer: usize,
    pub max_batch: usize,
    /// Longest a deleted, undelivered file is held open.
    pub deleted_hold: Duration,
    /// `onrotate = "follow"`: go on with the next file after a rotation.
    pub follow_rotations: bool,
    /// Sent whole after close: everything to the end, last partial line
    /// included, no rotation handling.
    pub whole: bool,
    /// A symlink at the path is followed (and the file it names is
    /// checked again on every look, so re-pointing it is a rotation);
    /// otherwise it is refused like any other non-regular file.
    pub follow_symlinks: bool,
    /// More directories rotated files go to (logrotate's `olddir`).
    pub olddirs: Vec<PathBuf>,
    /// The client's secret: new stream ids are keyed with it (see
    /// [`StreamId`]); without one they are `dev-ino-born` as before.
    pub id_key: Option<IdKey>,
}

/// The life of the followed path (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing open; look again at `retry_at` (or on the next event).
    Missing {
        retry_at: Option<Instant>,
    },
    Following,
    /// `cur` left the path; `last_growth`: when it last grew.
    Draining {
        last_growth: Instant,
    },
    Stopped,
}

/// One generation of the path: one file, one stream.
#[derive(Debug)]
pub struct Gen<H> {
    pub file: H,
    /// `fstat` when it was opened (device, inode, birth).
    pub meta: Meta,
    pub identity: Identity,
    pub id: StreamId,
    /// A copy read in place of the original (copytruncate): a snapshot
    /// that simply ends, never "truncated".
    pub copy: bool,
    /// The new content of a file truncated in place: until it is read, a
    /// copy made after it was queued means it was truncated again.
    pub refilled: bool,
    /// The first bytes (up to [`buffer::OVERLAP`]) as read in this run:
    /// recognise a copy shorter than the fingerprinted head.
    pub prefix: Vec<u8>,
    /// Copies (copytruncate) born up to here hold nothing of this
    /// generation's content that it will not give itself: the file
    /// system's clock when it was opened, or the newest copy accounted
    /// for since. Kept in the state file.
    pub copies_after: u64,
    /// Among files born in the same clock tick, the order they left the
    /// path in (see [`Tail::record`]).
    pub order: u64,
}

/// A change of a name in the path's directory, as inotify reports it
/// (the shell translates its records; renames carry their cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirChange {
    Created,
    MovedFrom(u32),
    MovedTo(u32),
    Deleted,
}

/// The id of a state-file entry that holds no file, only since when its
/// path is followed (its `copies_after`): see [`Tail::entries`].
pub const SINCE_MARKER: &str = "-";

/// The id of a state-file entry that holds no file, only a generation
/// finished in its run (device and inode in `identity`, birth in
/// `copies_after`) that was born in the same clock tick as one still
/// held: a later run must not take it for a copy or a later generation
/// of what it resumes (see [`Tail::entries`]). An older loghamsterc
/// cannot parse the id and ignores the entry.
pub const FINISHED_MARKER: &str = "+";

/// Most times the directory is listed again in one look while renames
/// race the listing (see `Tail::gather`).
const RELIST_MAX: u32 = 4;

/// Most departures remembered (see [`Tail::record`]).
const DEPARTED_MAX: usize = 64;

/// What the daemon should log or count, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Opened at the path; `resumed`: at the state file's offset.
    Opened { offset: u64, resumed: bool },
    /// A file that was there the last time, found rotated away under
    /// `name`; read on from `offset`.
    ResumedRotated { name: PathBuf, offset: u64 },
    /// The path no longer names the file being read.
    Rotated,
    /// A later generation found by the scan, not at the path any more.
    FoundRotated { name: PathBuf },
    /// The file was truncated or rewritten under the reader at `at`;
    /// `no_copy`: no copy of the old content was found (its new content is
    /// sent from 0 under a new id; old content past what the tail saw, if
    /// there was any, is in no file it can see, and nobody can tell how
    /// much). Known losses follow as a [`Note::Lost`].
    Truncated { at: u64, no_copy: bool },
    /// The rest of the old content is read from its copytruncate copy.
    ReadingCopy { name: PathBuf, at: u64 },
    /// Bytes `[from, to)` of a generation's old content that a truncation
    /// destroyed and that will never be sent: read but not sent yet
    /// (without a copy, the buffer starts over at 0), or seen in the file
    /// (its length, verified to be the old content's) and not read. Never
    /// bytes of the new content, which is sent whole.
    Lost {
        from: u64,
        to: u64,
        why: &'static str,
    },
    /// The generation was finished at `offset`; the next one starts.
    Done { offset: u64 },
    /// `onrotate = "stop"`: not following the new file.
    StoppedAfterRotation,
    /// A deleted file held `deleted_hold` without being delivered.
    Abandoned { bytes: u64 },
    /// Opening or reading failed (not "missing").
    Failed { what: &'static str, error: String },
    /// What is at the path is not shipped: a symlink (unless
    /// `follow_symlinks`), a FIFO, a device, a socket or a directory.
    /// Noted once; again only when something else is put there.
    Refused { kind: Kind, error: String },
    /// The same thing is still there (a quiet retry: a debug line).
    StillRefused,
    /// The server's `200` named an offset beyond anything this run sent
    /// (or learned from the server) for the stream: someone else wrote to
    /// it. Not skipped to, not re-sent from 0: the rest goes from `acked`
    /// under a new stream id.
    OffsetConflict {
        /// The stream's id on the wire.
        stream: String,
        server: u64,
        high: u64,
        acked: u64,
    },
    /// Not there (yet); waiting for it to appear.
    Absent,
}

/// What the tail needs from the daemon besides the file system.
pub struct Env<'a, F: Fs> {
    pub fs: &'a mut F,
    pub now: Instant,
    /// Entries of the state file not claimed by an open file yet.
    pub loaded: &'a mut Vec<Entry>,
}

/// One followed path. See the module doc.
#[derive(Debug)]
pub struct Tail<H> {
    path: PathBuf,
    name: OsString,
    settings: Settings,
    state: State,
    cur: Option<Gen<H>>,
    /// Later generations, oldest (birth) first, held open.
    queue: VecDeque<Gen<H>>,
    buf: ReadBuf,
    acked: u64,
    /// The offset the server's last `250 DONE` confirmed.
    done_at: Option<u64>,
    /// The server's offset must be learned again before sending.
    verify: bool,
    /// The stream this run has spoken to the server about, and the
    /// highest offset known for it in this run (the server's `200`s, what
    /// was sent, what was acknowledged): a later `200` beyond it is an
    /// offset conflict.
    contact: Option<(StreamId, u64)>,
    /// When the oldest unsent byte and the current partial line were
    /// first seen (batching rules).
    since: Option<Instant>,
    partial_since: Option<Instant>,
    /// When growth of the file was announced and not read yet (see
    /// [`Tail::grew`]): the bytes read later are taken as seen then.
    grown_at: Option<Instant>,
    /// The longest the current file's old content was seen: the read
    /// position (reads are checked), a `200`'s `fstat` once the file's
    /// first bytes proved it the same file, a drained file's `fstat`.
    /// Bytes past the read position that a truncation destroyed are known
    /// lost. A length seen when the file turned out rewritten is the new
    /// content's, never taken here.
    seen_len: u64,
    /// When the held file was first seen with no link left.
    deleted_since: Option<Instant>,
    /// Files born up to here are not later generations (the newest copy
    /// a copytruncate left).
    scan_floor: u64,
    /// Files that left the path (renamed away), under their current
    /// names, with the sequence number of their departure: orders
    /// generations born in the same clock tick (birth times are coarse).
    departed: VecDeque<(PathBuf, u64)>,
    departures: u64,
    /// Since when the path is followed (file-system clock): files born
    /// since are its generations, even those rotated away while the
    /// client was stopped. Kept in the state file while no file is open.
    followed_since: u64,
    /// Files whose generation was finished (device, inode, birth): never
    /// taken again as a later generation or a copy. Those of an earlier
    /// run come from the state file (see [`FINISHED_MARKER`]).
    finished: VecDeque<(u64, u64, u64)>,
    /// The first half of a rename of the path (`None`) or of a departed
    /// file (`Some(seq)`), waiting for its `MovedTo`.
    moving: Option<(u32, Option<u64>)>,
    /// A file left the path since the last look: while following the
    /// file at the path, one this tail never held is a generation it
    /// missed (see `Tail::adopt_missed`).
    departed_unseen: bool,
    /// A closed file confirmed whole (`Settings::whole`).
    complete: bool,
    /// The file was closed while idle (parked); its entry waits in the
    /// daemon's loaded entries.
    parked: bool,
    notes: Vec<Note>,
    /// What was at the path when opening it was last refused (device,
    /// inode, kind): the refusal is noted again only when that changes.
    refused: Option<(u64, u64, Kind)>,
    /// The file a path names changed: save the state file soon.
    save_soon: bool,
    /// An acknowledged offset changed.
    dirty: bool,
    nonce: u64,
}

impl<H> Tail<H> {
    /// A tail of `path`; `nonce` seeds the ids of files without a birth
    /// time (differs per tail and run).
    pub fn new(path: PathBuf, settings: Settings, nonce: u64) -> Tail<H> {
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        let retry_at = None;
        Tail {
            path,
            name,
            settings,
            state: State::Missing { retry_at },
            cur: None,
            queue: VecDeque::new(),
            buf: ReadBuf::default(),
            acked: 0,
            done_at: None,
            verify: true,
            contact: None,
            since: None,
            partial_since: None,
            grown_at: None,
            deleted_since: None,
            seen_len: 0,
            scan_floor: 0,
            departed: VecDeque::new(),
            departures: 0,
            finished: VecDeque::new(),
            followed_since: 0,
            moving: None,
            departed_unseen: false,
            complete: false,
            parked: false,
            notes: Vec::new(),
            refused: None,
            save_soon: false,
            dirty: false,
            nonce: nonce | 1,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last component of the path (to match directory events).
    pub fn name(&self) -> &std::ffi::OsStr {
        &self.name
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The generation being read.
    pub fn current(&self) -> Option<&Gen<H>> {
        self.cur.as_ref()
    }

    /// Generations waiting after the current one.
    pub fn queued(&self) -> impl Iterator<Item = &Gen<H>> {
        self.queue.iter()
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes of the current generation handed to the connection.
    pub fn sent(&self) -> u64 {
        self.buf.sent_pos()
    }

    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// The server's offset must be asked before data flows.
    pub fn needs_verify(&self) -> bool {
        self.verify
    }

    /// True when there are notes to take.
    pub fn has_notes(&self) -> bool {
        !self.notes.is_empty()
    }

    /// Takes what happened since the last call, to log and count.
    pub fn take_notes(&mut self) -> std::vec::Drain<'_, Note> {
        self.notes.drain(..)
    }

    /// True (once) when the file a stream id belongs to changed: the state
    /// file should be written at the end of this turn.
    pub fn take_save_soon(&mut self) -> bool {
        std::mem::take(&mut self.save_soon)
    }

    /// True (once) when an acknowledged offset changed.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// What the path names now: `lstat`, or with `follow_symlinks` the
    /// file a symlink there leads to; `None` when there is nothing (or an
    /// error).
    pub(super) fn at_path<F: Fs<File = H>>(&self, env: &mut Env<'_, F>) -> Option<Meta> {
        let m = env.fs.lstat(&self.path).ok().flatten()?;
        if m.kind == Kind::Symlink && self.settings.follow_symlinks {
            return env.fs.stat(&self.path).ok().flatten();
        }
        Some(m)
    }

    /// True when `meta` is a file this tail holds, or finished in this
    /// run: not a generation to take again.
    fn known(&self, meta: &Meta) -> bool {
        self.holds(meta.inode())
            || self
                .finished
                .iter()
                .any(|&(d, i, b)| (d, i) == meta.inode() && b == meta.born)
    }

    /// True when this tail reads the file with this device and inode.
    pub fn holds(&self, inode: (u64, u64)) -> bool {
        self.cur
            .iter()
            .chain(self.queue.iter())
            .any(|g| g.meta.inode() == inode)
    }

    /// The device and inode of every file this tail reads.
    pub fn held(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.cur
            .iter()
            .chain(self.queue.iter())
            .map(|g| g.meta.inode())
    }

    /// Descriptors held.
    pub fn open_files(&self) -> usize {
        self.cur.iter().count() + self.queue.len()
    }

    /// The state-file entry of the current generation.
    pub fn entry(&self) -> Option<Entry> {
        self.cur.as_ref().map(|g| self.entry_of(g, self.acked))
    }

    /// The state-file entries of every generation held: the current one at
    /// its acknowledged offset, then the queued ones (offset 0), in order.
    /// Without a file, one marker entry (id [`SINCE_MARKER`]) records
    /// since when the path is followed: files created at it and rotated
    /// away while the client is stopped are found after a restart. With
    /// one, a marker (id [`FINISHED_MARKER`]) follows for each finished
    /// generation born no earlier than the oldest held one: birth times
    /// are coarse, and without it a later run could take such a file for
    /// a copy of the one it resumes (its content went out under its own
    /// id already).
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        let cur = self.cur.iter().map(|g| self.entry_of(g, self.acked));
        let oldest = self
            .cur
            .iter()
            .chain(self.queue.iter())
            .map(|g| g.meta.born)
            .min();
        let finished = self
            .finished
            .iter()
            .filter(move |&&(_, _, born)| born > 0 && oldest.is_some_and(|o| born >= o))
            .map(|&(dev, ino, born)| self.marker(FINISHED_MARKER, dev, ino, born));
        let since = self.followed_since;
        let marker = (self.cur.is_none() && !self.settings.whole && since > 0)
            .then(|| self.marker(SINCE_MARKER, 0, 0, since));
        cur.chain(self.queue.iter().map(|g| self.entry_of(g, 0)))
            .chain(finished)
            .chain(marker)
    }

    /// A state-file entry that holds no file (`id` says what it records).
    fn marker(&self, id: &str, dev: u64, ino: u64, time: u64) -> Entry {
        Entry {
            id: id.to_string(),
            path: self.path.clone(),
            identity: Identity {
                dev,
                ino,
                fp: 0,
                fp_len: 0,
                head: 0,
                head_len: 0,
            },
            offset: 0,
            complete: false,
            copy: false,
            copies_after: time,
        }
    }

    fn entry_of(&self, g: &Gen<H>, offset: u64) -> Entry {
        Entry {
            id: g.id.record(),
            path: self.path.clone(),
            identity: g.identity,
            offset,
            complete: self.complete,
            copy: g.copy,
            copies_after: g.copies_after,
        }
    }

    /// The bytes read and not sent yet.
    pub fn pending(&self) -> &[u8] {
        self.buf.unsent()
    }

    /// File offset where the next read starts.
    pub fn read_pos(&self) -> u64 {
        self.buf.read_pos()
    }

    /// True when the last read filled the buffer: the file may hold more.
    /// False after a short read: the file ended there (what is appended
    /// later is announced by inotify).
    pub fn behind(&self) -> bool {
        self.buf.behind()
    }

    /// The file grew at `at` and the caller reads it later (at most
    /// `linger` later: the caller's timer): the bytes that read finds are
    /// taken as seen at `at`, so their linger runs from the announcement,
    /// not from the read. The earliest unread announcement counts.
    pub fn grew(&mut self, at: Instant) {
        self.grown_at.get_or_insert(at);
    }

    /// When the oldest unsent whole line is due to go (its `linger`), if
    /// whole lines wait: until then, growth of the file need not be read
    /// (see `client::due`).
    pub fn linger_due(&self) -> Option<Instant> {
        let since = self.since?;
        memchr::memchr(b'\n', self.buf.unsent())?;
        Some(since + self.settings.rules.linger)
    }

    /// Gives the read buffer's allocation up when everything read was
    /// sent (an idle file holds none).
    pub fn release_buffer(&mut self) -> Option<Vec<u8>> {
        self.buf.release()
    }

    /// Offers a pooled allocation to the read buffer; returns it when not
    /// taken (the buffer holds one, or its file needs a bigger one).
    pub fn adopt_buffer(&mut self, data: Vec<u8>) -> Option<Vec<u8>> {
        self.buf.adopt(data)
    }

    /// Records a change of a name next to the path (in its directory or
    /// an `olddir`) that starts with the path's name: which files left
    /// the path, in what order, and what they are called now (followed
    /// through later renames). `path` is the name's full path.
    pub fn record(&mut self, path: &Path, change: DirChange) {
        let pending = self.moving.take();
        match change {
            DirChange::MovedFrom(cookie) if path == self.path => {
                self.moving = Some((cookie, None));
            }
            DirChange::MovedFrom(cookie) => {
                if let Some(seq) = self.departed_seq(path) {
                    self.moving = Some((cookie, Some(seq)));
                }
            }
            DirChange::MovedTo(cookie) => {
                // Whatever had this name before is replaced.
                self.departed.retain(|(n, _)| n != path);
                match pending {
                    Some((c, None)) if c == cookie => {
                        self.departed_unseen = true;
                        self.departures += 1;
                        self.departed
                            .push_back((path.to_path_buf(), self.departures));
                        if self.departed.len() > DEPARTED_MAX {
                            self.departed.pop_front();
                        }
                    }
                    Some((c, Some(seq))) if c == cookie => {
                        self.departed.retain(|(_, s)| *s != seq);
                        self.departed.push_back((path.to_path_buf(), seq));
                    }
                    _ => {}
                }
            }
            DirChange::Deleted => self.departed.retain(|(n, _)| n != path),
            DirChange::Created => {}
        }
        if let Some((_, Some(seq))) = pending.filter(|_| !matches!(change, DirChange::MovedTo(_))) {
            // Moved out of sight (the other half never came).
            self.departed.retain(|(_, s)| *s != seq);
        }
    }

    /// The departure sequence number of the file now at `path`.
    fn departed_seq(&self, path: &Path) -> Option<u64> {
        self.departed
            .iter()
            .find(|(n, _)| n == path)
            .map(|(_, s)| *s)
    }

    /// A generation first seen now: a new stream id, nothing queued
    /// before it known, no copy accounted for yet.
    fn fresh_gen(
        &mut self,
        file: H,
        meta: Meta,
        identity: Identity,
        prefix: Vec<u8>,
        copies_after: u64,
    ) -> Gen<H> {
        let id = StreamId::new(&meta, self.next_nonce());
        Gen {
            file,
            id: self.keyed(id),
            meta,
            identity,
            copy: false,
            refilled: false,
            prefix,
            copies_after,
            order: u64::MAX - 1,
        }
    }

    /// `id` keyed with the client's secret, when there is one.
    fn keyed(&self, id: StreamId) -> StreamId {
        match &self.settings.id_key {
            Some(k) => id.keyed(k),
            None => id,
        }
    }

    fn next_nonce(&mut self) -> u64 {
        // xorshift: distinct per call, deterministic per seed.
        self.nonce ^= self.nonce << 13;
        self.nonce ^= self.nonce >> 7;
        self.nonce ^= self.nonce << 17;
        self.nonce
    }

    /// Starts the current generation over at `offset` (nothing buffered).
    fn restart_at(&mut self, offset: u64) {
        self.seen_len = offset;
        self.acked = offset;
        self.buf.reset(offset);
        self.since = None;
        self.partial_since = None;
        self.grown_at = None;
        self.done_at = None;
    }
}

/// Connection events and send decisions.
impl<H> Tail<H> {
    /// A connection is needed: the server's offset to learn, data to send,
    /// a whole file to finish, or a drained file to end with `250 DONE`.
    pub fn wants_link(&self, len: u64) -> bool {
        self.cur.is_some()
            && (self.verify
                || self.settings.whole
                || matches!(self.state, State::Draining { .. })
                || len > self.acked)
    }

    /// Raises the highest offset known for the current stream to `at`.
    fn known_to(&mut self, at: u64) {
        let Some(id) = self.cur.as_ref().map(|g| g.id) else {
            return;
        };
        match &mut self.contact {
            Some((c, high)) if *c == id => *high = (*high).max(at),
            _ => {}
        }
    }

    /// `ACK n`. Returns the newly acknowledged byte count, or `Err` when
    /// the server acknowledged more than was sent (a protocol error: the
    /// caller drops the connection).
    pub fn on_ack(&mut self, n: u64) -> Result<u64, u64> {
        let sent = self.sent();
        if n > sent {
            return Err(sent);
        }
        if n <= self.acked {
            return Ok(0);
        }
        let new = n - self.acked;
        self.acked = n;
        self.dirty = true;
        Ok(new)
    }

    /// `250 DONE n`: the server committed everything up to `n`. Returns
    /// the newly acknowledged byte count.
    pub fn on_done(&mut self, n: u64) -> u64 {
        self.done_at = Some(n);
        let new = if n <= self.sent() && n > self.acked {
            let new = n - self.acked;
            self.acked = n;
            self.dirty = true;
            new
        } else {
            0
        };
        if self.settings.whole && n == self.sent() {
            self.complete_if_whole();
        }
        new
    }

    /// The connection ended without confirming what was sent: unsent
    /// bytes fall back to the acknowledged offset; the file is the buffer.
    pub fn on_link_lost(&mut self) {
        self.verify = true;
        let acked = self.acked;
        let done = self.done_at;
        self.restart_at(acked);
        self.done_at = done;
    }

    /// A clean end of a connection (after `250 DONE`): nothing to verify
    /// unless more data comes.
    pub fn on_link_finished(&mut self) {
        let done = self.done_at;
        let acked = self.acked;
        if self.sent() != acked {
            self.restart_at(acked);
        }
        self.done_at = done;
    }

    /// How many pending bytes the batching rules let go now, and when to
    /// look again otherwise.
    pub fn sendable(&mut self, now: Instant) -> batch::Decision {
        let unsent = self.buf.unsent();
        if unsent.is_empty() {
            self.since = None;
            self.partial_since = None;
            return batch::Decision {
                send: 0,
                wake_at: None,
            };
        }
        if self.settings.whole {
            return batch::Decision {
                send: unsent.len(),
                wake_at: None,
            };
        }
        let whole = memchr::memrchr(b'\n', unsent).map_or(0, |i| i + 1);
        // Bytes read after their growth was announced count from then.
        let seen = self.grown_at.take().map_or(now, |at| at.min(now));
        let since = *self.since.get_or_insert(seen);
        if whole < unsent.len() {
            self.partial_since.get_or_insert(now);
        } else {
            self.partial_since = None;
        }
        let u = batch::Unsent {
            len: unsent.len(),
            whole,
            full: self.buf.full(),
            since,
            partial_since: self.partial_since,
        };
        batch::decide(&self.settings.rules, &u, now)
    }

    /// `n` pending bytes were taken by the connection.
    pub fn on_sent(&mut self, n: usize) {
        let whole = memchr::memrchr(b'\n', self.buf.unsent()).map_or(0, |i| i + 1);
        self.buf.consume(n);
        self.known_to(self.buf.sent_pos());
        if self.buf.unsent().is_empty() {
            self.since = None;
            self.partial_since = None;
        } else if n >= whole {
            self.since = self.partial_since;
        }
    }

    /// `n` bytes went out straight from the file (`sendfile`, nothing
    /// buffered).
    pub fn on_sent_from_file(&mut self, n: u64) {
        debug_assert!(self.buf.unsent().is_empty());
        let pos = self.sent() + n;
        self.buf.reset(pos);
        self.known_to(pos);
    }

    fn complete_if_whole(&mut self) {
        if self.settings.whole && self.done_at == Some(self.sent()) && self.acked == self.sent() {
            self.complete = true;
        }
    }
}
