//! One watched path on the client: the file behind it, the connection that
//! carries it, and the offsets that tie them together.
//!
//! Offsets (all in the current file): `acked <= sent <= sent + unsent`.
//! `acked` is what the server confirmed and what the state file records;
//! `sent` is what went into the socket; `buf[head..end]` holds bytes read
//! from the file at `sent` that are not sent yet. When a connection breaks,
//! `sent` falls back to `acked` and the buffer is dropped: the file itself
//! is the buffer, so nothing is lost and memory stays bounded.
//!
//! The file's life is an explicit state ([`FileState`]): `Missing` (waiting
//! for it to appear), `Following` (the path names the open file) and
//! `Rotated` (the path now names another file; the old one is read through
//! its descriptor to its end, every byte acknowledged, before switching).
//!
//! This file holds the types, the daemon-facing accessors and `tick`, which
//! decides what is due on every turn. The rest is one concern per file:
//! `open.rs` opens the file and claims its state entry, `fill.rs` reads it
//! into the buffer, `send.rs` moves the buffer (or the file, by `sendfile`)
//! into the connection under the batching rules and rate limits,
//! `connection.rs` connects, handles what the server says and reconnects,
//! `rotation.rs` handles the path moving to another file, and `park.rs`
//! closes idle files under descriptor pressure.

mod connection;
mod fill;
mod open;
mod park;
mod rotation;
mod send;

pub(crate) use connection::LinkBudget;

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::link::{Link, Phase};
use super::meter::Meter;
use crate::config::Compression;
use crate::reactor::{Armed, Key, Timers};
use crate::tail::batch;
use crate::tail::identity::{unique_suffix, Identity};
use crate::tail::rate::Bucket;
use crate::tail::state::Entry;

/// How long a rotated-away file must stay quiet at its end before the
/// client switches to the new file.
const ROTATE_GRACE: Duration = Duration::from_millis(500);
/// The quiet period when the next file at the path already has data: the
/// writer has moved on.
const ROTATE_GRACE_MOVED_ON: Duration = Duration::from_millis(50);
/// How often a rotated-away file is re-read while it drains (inotify events
/// for it arrive under its new name, which we may not be watching).
const DRAIN_POLL: Duration = Duration::from_millis(100);
/// How often an unreadable (not missing) file is retried.
const REOPEN_RETRY: Duration = Duration::from_secs(5);
/// Most idle read buffers kept for reuse.
const POOL_MAX: usize = 64;

/// Settings shared by every stream.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub server: String,
    pub hostname: String,
    pub rules: batch::Rules,
    pub max_batch: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Longest a deleted, undelivered file is held open.
    pub deleted_hold: Duration,
    /// A connection idle this long is closed.
    pub idle_close: Duration,
    /// `[server] compression`: what connections ask for.
    pub compression: Compression,
}

/// What a stream handler may touch besides the stream itself.
pub(crate) struct Ctx<'a> {
    pub registry: &'a Registry,
    pub timers: &'a mut Timers<Token>,
    pub settings: &'a Settings,
    pub now: Instant,
    /// Set when an acknowledged offset changed: saved within
    /// `state_interval`.
    pub dirty: &'a mut bool,
    /// Set when the file a path names changed (opened, rotated, truncated):
    /// saved at the end of this turn of the loop, so a crash cannot forget
    /// which file a stream id belongs to.
    pub save_soon: &'a mut bool,
    /// Entries from the state file not yet claimed by an open file.
    pub loaded: &'a mut Vec<Entry>,
    /// Idle read buffers of the initial size, shared by all streams.
    pub pool: &'a mut Vec<Vec<u8>>,
    /// Bytes of deleted files given up (see `deleted_hold`), since start.
    pub abandoned_bytes: &'a mut u64,
    pub links: &'a mut LinkBudget,
    /// Descriptors of followed files held by all streams.
    pub open_files: &'a OpenFiles,
    /// Set when opening failed for lack of descriptors (EMFILE/ENFILE):
    /// the daemon parks idle files.
    pub fd_pressure: &'a mut bool,
    /// The metric handles of this stream's configured `[[stream]]`.
    pub meter: &'a mut Meter,
    /// This stream's `rate_limit` bucket, and the client's.
    pub stream_limit: Option<&'a mut Bucket>,
    pub client_limit: Option<&'a mut Bucket>,
    /// Time spent waiting for rate-limit credit (the daemon counts it).
    pub throttled: &'a mut Duration,
}

/// Counts the followed files held open by all streams: every [`Tracked`]
/// holds a [`FileSlot`], which counts itself out when dropped, so the
/// count cannot drift whatever path a file leaves by. (Atomic only so the
/// daemon can be moved to another thread; it is used from one.)
#[derive(Debug, Clone, Default)]
pub(crate) struct OpenFiles(Arc<AtomicUsize>);

impl OpenFiles {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn slot(&self) -> FileSlot {
        self.0.fetch_add(1, Ordering::Relaxed);
        FileSlot(self.0.clone())
    }
}

#[derive(Debug)]
struct FileSlot(Arc<AtomicUsize>);

impl Drop for FileSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Tracked {
    file: File,
    identity: Identity,
    /// Counts this descriptor in [`OpenFiles`].
    _slot: FileSlot,
    /// Stream id sent to the server; new for every file (and after a
    /// truncation), kept across reconnects and restarts.
    id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    Missing { retry_at: Option<Instant> },
    Following,
    Rotated { last_growth: Instant },
}

#[derive(Debug)]
pub(crate) struct Stream {
    key: Key,
    /// Index of the configured stream's [`Meter`] in the daemon's meters;
    /// always valid.
    meter: usize,
    pub path: PathBuf,
    /// Last component of `path`, to match inotify events of its directory.
    pub name: OsString,
    svc: Option<String>,
    meta: Vec<(String, String)>,
    /// `onrotate = "follow"`: after a rotation, continue with the new file;
    /// otherwise stop once the old one is done.
    follow: bool,
    state: FileState,
    file: Option<Tracked>,
    /// Files that appeared at the path while the current one was being
    /// drained after a rotation, oldest first, held open until their turn.
    successors: std::collections::VecDeque<Tracked>,
    acked: u64,
    sent: u64,
    /// Read buffer; empty (no allocation) while the file is idle.
    buf: Vec<u8>,
    head: usize,
    end: usize,
    /// The last read filled the buffer: the file is behind, grow it.
    behind: bool,
    /// When the oldest unsent byte was first seen.
    since: Option<Instant>,
    /// When the current unterminated tail was first seen.
    partial_since: Option<Instant>,
    link: Option<Link>,
    link_deadline: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    timer: Armed,
    /// Set by a clean shutdown: finish the connection, then stop.
    stopping: bool,
    /// Sent whole after close: no batching rules, the last partial line
    /// included, ended with a half-close.
    whole: bool,
    /// A whole file the server confirmed (`250 DONE`) to its last byte.
    pub completed: bool,
    /// The offset the server's last `250 DONE` confirmed on this file.
    done_at: Option<u64>,
    /// When the held file was first seen with no link left.
    deleted_since: Option<Instant>,
    /// Started for a `path` glob match; dropped once its file is gone.
    ephemeral: bool,
    /// Queued in [`LinkBudget::waiting`] for a connection slot.
    waiting_link: bool,
    /// The last connection failed or broke and no handshake succeeded
    /// since: a connection opened now is a reconnect.
    reconnecting: bool,
    /// The server's offset for this file must be (re)learned: after the
    /// file was opened, and after a connection ended without `250 DONE`
    /// (the server may have restarted and rolled back), even if the file
    /// has no new data.
    verify: bool,
    /// Last time data moved or was acknowledged (for `idle_close`).
    last_active: Instant,
    jitter: u64,
    /// Since when a rate limit holds this stream back.
    throttled_since: Option<Instant>,
    /// The open file is logrotate's copy, read after a copytruncate.
    reading_copy: bool,
    /// The file was closed while idle (see [`park`](Self::park)); its
    /// position waits in the daemon's loaded entries until it is reopened.
    parked: bool,
    /// The [`fill::OVERLAP`] bytes before file offset `.0`, kept when the
    /// read buffer goes back to the pool, so the next read can check them.
    tail: Option<(u64, [u8; fill::OVERLAP])>,
}

impl Stream {
    /// A stream of `path`, counting into the meter with index `meter`.
    pub fn new(
        key: Key,
        meter: usize,
        path: PathBuf,
        svc: Option<String>,
        meta: Vec<(String, String)>,
        follow: bool,
    ) -> Stream {
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        let seed = key.token().0 as u64 ^ unique_suffix();
        Stream {
            key,
            meter,
            path,
            name,
            svc,
            meta,
            follow,
            state: FileState::Missing { retry_at: None },
            file: None,
            successors: Default::default(),
            acked: 0,
            sent: 0,
            buf: Vec::new(),
            head: 0,
            end: 0,
            behind: false,
            since: None,
            partial_since: None,
            link: None,
            link_deadline: None,
            retry_at: None,
            backoff: Duration::ZERO,
            timer: Armed::default(),
            stopping: false,
            whole: false,
            completed: false,
            done_at: None,
            deleted_since: None,
            ephemeral: false,
            waiting_link: false,
            reconnecting: false,
            verify: true,
            last_active: Instant::now(),
            jitter: seed | 1,
            tail: None,
            reading_copy: false,
            throttled_since: None,
            parked: false,
        }
    }

    /// True once a stopping stream has no connection left.
    pub fn finished(&self) -> bool {
        self.stopping && self.link.is_none()
    }

    pub fn is_draining(&self) -> bool {
        matches!(self.state, FileState::Rotated { .. })
    }

    /// The state-file entry for the open file, if any.
    pub fn entry(&self) -> Option<Entry> {
        let t = self.file.as_ref()?;
        Some(Entry {
            id: t.id.clone(),
            path: self.path.clone(),
            identity: t.identity,
            offset: self.acked,
            complete: self.completed,
        })
    }

    /// A stream for one file sent whole after close (directory sources):
    /// it sends everything to the end, half-closes, and is
    /// [`completed`](Self::completed) once the server answers `250 DONE`
    /// for every byte.
    pub fn new_whole(
        key: Key,
        meter: usize,
        path: PathBuf,
        svc: Option<String>,
        meta: Vec<(String, String)>,
        now: Instant,
    ) -> Stream {
        let mut s = Stream::new(key, meter, path, svc, meta, false);
        s.whole = true;
        s.state = FileState::Missing {
            retry_at: Some(now),
        };
        s
    }

    /// True when this stream reads the file with this device and inode
    /// (its current file or one queued after a rotation).
    pub fn holds(&self, dev: u64, ino: u64) -> bool {
        let same = |t: &Tracked| (t.identity.dev, t.identity.ino) == (dev, ino);
        self.file.as_ref().is_some_and(same) || self.successors.iter().any(same)
    }

    /// A stream started for a file matched by a `path` glob, whose file is
    /// gone and fully handled: the daemon drops it.
    pub fn gone(&self) -> bool {
        self.ephemeral
            && !self.parked
            && self.file.is_none()
            && self.successors.is_empty()
            && self.link.is_none()
            && matches!(self.state, FileState::Missing { .. })
    }

    /// Marks a stream started for a `path` glob match (see [`gone`](Self::gone)).
    pub fn set_ephemeral(&mut self) {
        self.ephemeral = true;
    }

    /// Bytes of the current file handed to the connection so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// When data last moved or was acknowledged.
    pub fn last_active(&self) -> Instant {
        self.last_active
    }

    /// Index of the configured stream's meter.
    pub fn meter(&self) -> usize {
        self.meter
    }

    /// Bytes of this stream's files the server has not acknowledged: the
    /// file being read past the acknowledged offset, and every file queued
    /// after a rotation whole. One `fstat` per file (for a scrape, not for
    /// the event path).
    pub fn behind(&self) -> u64 {
        let len = |t: &Tracked| t.file.metadata().map_or(0, |m| m.len());
        let current = self
            .file
            .as_ref()
            .map_or(0, |t| len(t).saturating_sub(self.acked));
        current + self.successors.iter().map(len).sum::<u64>()
    }

    /// The whole file's length, if it is open.
    pub fn file_len(&self) -> Option<u64> {
        self.file
            .as_ref()
            .and_then(|t| t.file.metadata().ok())
            .map(|m| m.len())
    }

    /// True when the open file is still the one at `path` (for deleting it).
    pub fn path_is_same_file(&self) -> bool {
        let Some(t) = &self.file else { return false };
        std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == t.identity.dev && m.ino() == t.identity.ino)
    }

    /// Begins a clean stop: no more data; the server writes what it got,
    /// acknowledges and closes.
    pub fn stop(&mut self, ctx: &mut Ctx<'_>) {
        self.stopping = true;
        match &mut self.link {
            Some(link) if link.phase == Phase::Up || link.phase == Phase::Finishing => {
                link.finish()
            }
            Some(_) => self.drop_link(ctx, None),
            None => {}
        }
    }

    /// An inotify event about this stream's name in its directory.
    pub fn on_file_event(&mut self, mask: u32, ctx: &mut Ctx<'_>) {
        use crate::reactor::sys::inotify::mask as m;
        if !self.whole
            && mask
                & (m::CREATE | m::MOVED_TO | m::MOVED_FROM | m::DELETE | m::ATTRIB | m::Q_OVERFLOW)
                != 0
        {
            self.check_path(ctx);
        }
        self.unpark_on_event(ctx);
        self.tick(ctx);
    }

    /// Does whatever is due: (re)open, connect, send, switch after rotation,
    /// and arms the timer for the next thing.
    pub fn tick(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        self.timer.fired(now);
        if let FileState::Missing { retry_at: Some(t) } = self.state {
            if !self.stopping && t <= now {
                self.open(ctx);
            }
        }
        if self.link_deadline.is_some_and(|t| t <= now) {
            self.drop_link(ctx, Some("connect or handshake timed out".into()));
        }
        let mut wake = None;
        if self.whole && self.state == FileState::Following {
            let read_all = self.unsent() == 0 && self.at_eof();
            let confirmed = self.done_at == Some(self.sent) && Some(self.sent) == self.file_len();
            match &mut self.link {
                Some(link) if read_all && link.phase == Phase::Up && !self.stopping => {
                    link.finish()
                }
                None if read_all && confirmed => {
                    self.completed = true;
                    return;
                }
                _ => {}
            }
        }
        if let FileState::Rotated { .. } = self.state {
            if self.deleted_too_long(now, ctx) {
                self.abandon(ctx);
                return self.tick(ctx);
            }
        }
        if let FileState::Rotated { last_growth } = self.state {
            // The old file is read to its end and quiet: end its stream with
            // a half-close; the server answers `250 DONE` once it holds and
            // committed every byte. Then switch to the new file.
            let read_all = self.file.is_some() && self.unsent() == 0 && self.at_eof();
            // Once the writer has moved on to the next file, the old one
            // needs only a short quiet period.
            let moved_on = self
                .successors
                .front()
                .is_some_and(|t| t.file.metadata().is_ok_and(|m| m.len() > 0));
            let grace = if moved_on {
                ROTATE_GRACE_MOVED_ON
            } else {
                ROTATE_GRACE
            };
            if read_all && now >= last_growth + grace {
                match &mut self.link {
                    None if self.done_at == Some(self.sent) && self.acked == self.sent => {
                        self.switch_after_rotation(ctx);
                        return self.tick(ctx);
                    }
                    Some(link) if link.phase == Phase::Up => link.finish(),
                    _ => {}
                }
            }
            wake = Some(now + DRAIN_POLL);
        }
        if self.link.is_none()
            && self.file.is_some()
            && !self.stopping
            && self.retry_at.is_none_or(|t| t <= now)
            && self.wants_link()
        {
            self.connect(ctx);
        }
        wake = earliest(wake, self.pump(ctx));
        if let Some(link) = &mut self.link {
            ctx.meter.wire.inc_by(link.take_wire_bytes());
        }
        wake = earliest(wake, self.close_if_idle(ctx));
        wake = earliest(wake, self.link_deadline);
        if self.link.is_none() && self.file.is_some() && !self.stopping && self.wants_link() {
            // (Due retries were attempted above; only a future one is armed.)
            wake = earliest(wake, self.retry_at.filter(|t| *t > now));
        }
        if let FileState::Missing { retry_at } = self.state {
            if !self.stopping {
                wake = earliest(wake, retry_at);
            }
        }
        if let Some(at) = wake {
            if self.timer.arm(at) {
                ctx.timers.schedule(at, self.key.token());
            }
        }
    }

    fn unsent(&self) -> usize {
        self.end - self.head
    }

    fn clear_buf(&mut self) {
        self.tail = None;
        self.head = 0;
        self.end = 0;
        self.since = None;
        self.partial_since = None;
    }

    fn at_eof(&self) -> bool {
        let Some(t) = &self.file else { return true };
        t.file
            .metadata()
            .map(|m| m.len() <= self.sent)
            .unwrap_or(true)
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
