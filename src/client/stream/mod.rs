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

mod fill;
mod park;
mod rotation;

use fill::Fill;

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use super::link::{Heard, Link, Phase};
use super::meter::Meter;
use crate::codec::Codec;
use crate::config::Compression;
use crate::reactor::{Armed, Key, Timers};
use crate::tail::batch::{self, Unsent};
use crate::tail::identity::{stream_id, unique_suffix, Identity};
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
/// Longest a connect + handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon an open that failed for lack of descriptors is retried.
const FD_PRESSURE_RETRY: Duration = Duration::from_millis(100);
/// How often an unreadable (not missing) file is retried.
const REOPEN_RETRY: Duration = Duration::from_secs(5);
/// Most bytes one stream sends per turn of the loop (see `pump`).
const PUMP_QUANTUM: u64 = 1 << 20;
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

/// The client's connection slots (`max_connections`): streams with data
/// but no free slot wait in `waiting`, oldest first.
#[derive(Debug)]
pub(crate) struct LinkBudget {
    pub open: usize,
    pub max: usize,
    pub waiting: std::collections::VecDeque<Key>,
    /// The server refused or ignored the configured codec: connections
    /// send plain bytes until then, and then ask again.
    pub plain_until: Option<Instant>,
}

/// How long a client sends uncompressed after the server refused or
/// ignored its codec, before it asks again (the server may have been
/// upgraded or reconfigured meanwhile).
const CODEC_RETRY: Duration = Duration::from_secs(600);

impl LinkBudget {
    /// What a new connection should ask for: the configured compression,
    /// unless the server turned it down recently.
    fn compression(&self, configured: Compression, now: Instant) -> Compression {
        match self.plain_until {
            Some(t) if now < t => Compression::default(),
            _ => configured,
        }
    }

    /// The server turned the codec down: send plain for a while. True
    /// when this starts a new such period (the caller logs it, once).
    fn fall_back(&mut self, now: Instant) -> bool {
        let new = self.plain_until.is_none_or(|t| now >= t);
        if new {
            self.plain_until = Some(now + CODEC_RETRY);
        }
        new
    }
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

    /// Socket readiness for this stream's connection.
    pub fn on_socket(&mut self, ctx: &mut Ctx<'_>) {
        let mut heard = Vec::new();
        if let Some(link) = &mut self.link {
            let (settings, path, svc, meta) = (ctx.settings, &self.path, &self.svc, &self.meta);
            let (id, offset) = match &self.file {
                Some(t) => (t.id.as_str(), self.acked),
                None => ("", 0),
            };
            let init = Init {
                id,
                offset,
                codec: link.asks_for(),
            };
            link.poll(
                |out| write_init(out, settings, path, svc.as_deref(), meta, &init),
                &mut heard,
            );
        }
        for h in heard {
            self.on_heard(h, ctx);
        }
        self.tick(ctx);
    }

    fn on_heard(&mut self, h: Heard, ctx: &mut Ctx<'_>) {
        match h {
            Heard::Ready(offset) => {
                let at = offset.unwrap_or(self.acked);
                self.verify = false;
                self.reconnecting = false;
                self.done_at = None;
                if let Some(len) = self
                    .file_len()
                    .filter(|len| at > *len && !self.reading_copy)
                {
                    // The server holds more than the file has: it was
                    // truncated. Start over under a new id.
                    self.truncated(len, ctx);
                    return;
                }
                let rewritten = self.state == FileState::Following
                    && !self.whole
                    && at > 0
                    && self
                        .file
                        .as_ref()
                        .is_some_and(|t| !t.identity.matches(&t.file).unwrap_or(true));
                if rewritten {
                    // Same inode, other first bytes: truncated and rewritten
                    // while the connection was down.
                    self.truncated(self.file_len().unwrap_or(0), ctx);
                    return;
                }
                if at != self.acked {
                    crate::info!(
                        "{}: server holds {} bytes, continuing from there (state had {})",
                        self.path.display(),
                        at,
                        self.acked
                    );
                    *ctx.dirty = true;
                }
                // The server holds more than we knew: bytes whose ACK was
                // lost with a broken connection (or with the last run).
                ctx.meter
                    .acknowledged(at.saturating_sub(self.acked), ctx.now);
                self.acked = at;
                self.sent = at;
                self.clear_buf();
                self.link_deadline = None;
                self.backoff = Duration::ZERO;
                crate::debug!("{}: streaming from offset {at}", self.path.display());
            }
            Heard::Ack(n) if n > self.acked && n <= self.sent => {
                ctx.meter.acknowledged(n - self.acked, ctx.now);
                self.acked = n;
                self.last_active = ctx.now;
                *ctx.dirty = true;
            }
            Heard::Ack(n) if n > self.sent => {
                let why = format!(
                    "server acknowledged {n} bytes but only {} were sent",
                    self.sent
                );
                self.drop_link(ctx, Some(why));
            }
            Heard::Ack(_) => {}
            Heard::Done(n) => {
                self.done_at = Some(n);
                if n != self.sent {
                    crate::warn!(
                        "{}: server confirmed {n} bytes, {} were sent",
                        self.path.display(),
                        self.sent
                    );
                }
                if n <= self.sent && n > self.acked {
                    ctx.meter.acknowledged(n - self.acked, ctx.now);
                    self.acked = n;
                    *ctx.dirty = true;
                }
            }
            Heard::CodecRefused(line) => {
                let codec = self.link.as_ref().and_then(|l| l.asks_for());
                if ctx.links.fall_back(ctx.now) {
                    crate::warn!(
                        "server {} refused compression {} ({line}); sending uncompressed, asking again in {} min",
                        ctx.settings.server,
                        codec.map_or("?", |c| c.name()),
                        CODEC_RETRY.as_secs() / 60
                    );
                }
                self.drop_link(ctx, None);
            }
            Heard::CodecIgnored(codec) => {
                if ctx.links.fall_back(ctx.now) {
                    crate::warn!(
                        "server {} did not confirm compression {codec} (it predates compression); sending uncompressed, asking again in {} min",
                        ctx.settings.server,
                        CODEC_RETRY.as_secs() / 60
                    );
                }
            }
            Heard::Finish => {
                crate::info!(
                    "{}: server is shutting down; finishing the connection",
                    self.path.display()
                );
                if let Some(l) = &mut self.link {
                    l.finish();
                }
            }
            Heard::Closed(why) => {
                let finished = why == "finished";
                self.drop_link(ctx, (!(self.stopping || finished)).then_some(why));
                if finished {
                    // A clean end (idle close, rotation): reconnect at once
                    // when there is something to send.
                    self.retry_at = None;
                    self.backoff = Duration::ZERO;
                }
            }
        }
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

    /// Opens the file at `path` (state `Missing` → `Following`; on
    /// `NotFound` it stays `Missing` with no retry time: the directory watch
    /// calls [`check_path`](Self::check_path) when the name appears), resuming
    /// from the state file when the file there is the one it recorded.
    fn open(&mut self, ctx: &mut Ctx<'_>) {
        if self.resume_rotated(ctx) {
            return;
        }
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                // Out of descriptors: the daemon parks idle files; retry soon.
                *ctx.fd_pressure = true;
                self.state = FileState::Missing {
                    retry_at: Some(ctx.now + FD_PRESSURE_RETRY),
                };
                return;
            }
            Err(e) => {
                let retry_at = if e.kind() == io::ErrorKind::NotFound {
                    crate::debug!(
                        "{}: not there yet; waiting for it to appear",
                        self.path.display()
                    );
                    None
                } else {
                    crate::warn!(
                        "cannot open {}: {e}; retrying in {}s",
                        self.path.display(),
                        REOPEN_RETRY.as_secs()
                    );
                    Some(ctx.now + REOPEN_RETRY)
                };
                self.state = FileState::Missing { retry_at };
                return;
            }
        };
        let identity = match Identity::of(&file) {
            Ok(i) => i,
            Err(e) => {
                crate::warn!("cannot read {}: {e}; retrying", self.path.display());
                self.state = FileState::Missing {
                    retry_at: Some(ctx.now + REOPEN_RETRY),
                };
                return;
            }
        };
        let claimed = ctx
            .loaded
            .iter()
            .position(|e| e.path == self.path && e.identity.matches(&file).unwrap_or(false));
        // The same inode under the same path but other first bytes: the
        // file was truncated and rewritten while we were away. Its derived
        // id is the old file's, whose offset the server still holds: use a
        // fresh id so the new content starts at 0.
        let rewritten = claimed.is_none()
            && ctx.loaded.iter().any(|e| {
                e.path == self.path
                    && (e.identity.dev, e.identity.ino) == (identity.dev, identity.ino)
            });
        let was_parked = std::mem::take(&mut self.parked);
        let resumed = claimed.is_some();
        let (id, offset) = match claimed.map(|i| ctx.loaded.swap_remove(i)) {
            Some(e) => (e.id, e.offset),
            None if rewritten => {
                ctx.meter.truncations.inc();
                crate::warn!(
                    "{}: rewritten in place since the last run; sending it from the start",
                    self.path.display()
                );
                ctx.loaded.retain(|e| e.path != self.path);
                (
                    format!("{}-t{:x}", stream_id(&file, &identity), unique_suffix()),
                    0,
                )
            }
            None => (stream_id(&file, &identity), 0),
        };
        if was_parked && resumed {
            crate::debug!("{}: reopened at offset {offset}", self.path.display());
        } else {
            crate::info!("{}: following from offset {offset}", self.path.display());
        }
        self.file = Some(Tracked {
            file,
            identity,
            id,
            _slot: ctx.open_files.slot(),
        });
        self.state = FileState::Following;
        self.acked = offset;
        // A parked file reopened as itself: its offset is the server's
        // (nothing was lost in between), no need to ask again.
        self.verify = !(was_parked && resumed);
        self.sent = offset;
        self.clear_buf();
        *ctx.save_soon = true;
    }

    /// A connection is needed: data to send, a whole file to finish, or a
    /// rotated file to end with `250 DONE`. An idle followed file holds no
    /// connection.
    fn wants_link(&self) -> bool {
        self.verify
            || self.whole
            || matches!(self.state, FileState::Rotated { .. })
            || self.file_len().is_some_and(|len| len > self.acked)
    }

    /// Ends an idle connection (all sent and acknowledged, nothing new)
    /// after `idle_close`, or after 1 s when other streams wait for a slot.
    /// Returns when to look again.
    fn close_if_idle(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
        let link = self.link.as_ref().filter(|l| l.phase == Phase::Up)?;
        let _ = link;
        if self.whole || self.state != FileState::Following || self.stopping {
            return None;
        }
        let idle = if ctx.links.waiting.is_empty() {
            ctx.settings.idle_close
        } else {
            ctx.settings.idle_close.min(Duration::from_secs(1))
        };
        let at = self.last_active + idle;
        if ctx.now < at {
            return Some(at);
        }
        if self.unsent() == 0 && self.acked == self.sent && self.at_eof() {
            crate::debug!("{}: idle; closing its connection", self.path.display());
            if let Some(link) = &mut self.link {
                link.finish();
            }
            return None;
        }
        Some(ctx.now + idle)
    }

    /// A connection slot may be free: connect now if one is wanted.
    pub fn on_slot_free(&mut self, ctx: &mut Ctx<'_>) {
        self.waiting_link = false;
        self.retry_at = None;
        self.tick(ctx);
    }

    fn connect(&mut self, ctx: &mut Ctx<'_>) {
        if ctx.links.open >= ctx.links.max {
            if !self.waiting_link {
                self.waiting_link = true;
                ctx.links.waiting.push_back(self.key);
            }
            return;
        }
        // Truncated (and maybe regrown past our offset) while disconnected?
        // The first bytes tell: resuming the old id would skip new content.
        if let Some(t) = &self.file {
            if !t.identity.matches(&t.file).unwrap_or(true) {
                let len = t.file.metadata().map(|m| m.len()).unwrap_or(0);
                self.truncated(len, ctx);
            }
        }
        let now = ctx.now;
        let compression = if self.precompressed() {
            Compression::default()
        } else {
            ctx.links.compression(ctx.settings.compression, now)
        };
        let result = resolve(&ctx.settings.server).and_then(|addr| {
            let mut link = Link::connect(addr, compression)?;
            ctx.registry.register(
                &mut link.sock,
                self.key.token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(link)
        });
        match result {
            Ok(link) => {
                if self.reconnecting {
                    ctx.meter.reconnects.inc();
                }
                ctx.links.open += 1;
                self.link = Some(link);
                self.link_deadline = Some(now + HANDSHAKE_TIMEOUT);
            }
            Err(e) => {
                self.reconnecting = true;
                crate::warn!(
                    "{}: cannot connect to {}: {e}",
                    self.path.display(),
                    ctx.settings.server
                );
                self.schedule_retry(ctx);
            }
        }
    }

    /// Closes the connection (logging `why` if given) and schedules a retry.
    fn drop_link(&mut self, ctx: &mut Ctx<'_>, why: Option<String>) {
        if let Some(mut link) = self.link.take() {
            ctx.meter.wire.inc_by(link.take_wire_bytes());
            let _ = ctx.registry.deregister(&mut link.sock);
            ctx.links.open = ctx.links.open.saturating_sub(1);
        }
        if let Some(why) = why {
            self.verify = true;
            self.reconnecting = true;
            crate::warn!(
                "{}: {why}; {} of {} sent bytes acknowledged",
                self.path.display(),
                self.acked,
                self.sent
            );
        }
        self.link_deadline = None;
        self.sent = self.acked;
        self.clear_buf();
        if !self.stopping {
            self.schedule_retry(ctx);
        }
    }

    fn schedule_retry(&mut self, ctx: &mut Ctx<'_>) {
        let s = ctx.settings;
        self.backoff = if self.backoff.is_zero() {
            s.reconnect_min
        } else {
            (self.backoff * 2).min(s.reconnect_max)
        };
        // xorshift jitter: wait between 75% and 125% of the backoff.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let factor = 0.75 + (self.jitter % 1000) as f64 / 2000.0;
        self.retry_at = Some(ctx.now + self.backoff.mul_f64(factor));
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

    /// Everything read was sent: the buffer starts over empty at the same
    /// position, keeping its last bytes for the next read's overlap check.
    fn all_sent(&mut self) {
        self.keep_tail();
        let tail = self.tail.take();
        self.clear_buf();
        self.tail = tail;
    }

    fn at_eof(&self) -> bool {
        let Some(t) = &self.file else { return true };
        t.file
            .metadata()
            .map(|m| m.len() <= self.sent)
            .unwrap_or(true)
    }

    /// Moves file bytes into the socket under the batching rules. Returns
    /// when it wants to be called again (linger or partial-line timeout).
    ///
    /// Fairness: one call moves at most [`PUMP_QUANTUM`] bytes, then asks
    /// to be called again at once (through the timer heap, after the loop
    /// has served other ready events), so a file far behind cannot starve
    /// the others.
    fn pump(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
        let now = ctx.now;
        let start = self.sent;
        loop {
            if !matches!(&self.link, Some(l) if l.phase == Phase::Up) || self.stopping {
                return None;
            }
            if self.sent.saturating_sub(start) >= PUMP_QUANTUM {
                return Some(now);
            }
            let compresses = self.link.as_ref().is_some_and(Link::compresses);
            if self.whole && self.unsent() == 0 && !compresses {
                // A closed file goes out whole: sendfile, no user-space copy.
                let Some(t) = &self.file else {
                    return None;
                };
                let left = t
                    .file
                    .metadata()
                    .map(|m| m.len())
                    .unwrap_or(0)
                    .saturating_sub(self.sent);
                if left == 0 {
                    // All handed over: come back at once to half-close
                    // (nothing else would wake this stream before the
                    // server's next ACK).
                    return (self.sent > start).then_some(now);
                }
                let chunk = match self.throttle(ctx, left.min(PUMP_QUANTUM) as usize) {
                    Ok(n) => n,
                    Err(at) => return Some(at),
                };
                let (Some(t), Some(link)) = (&self.file, &mut self.link) else {
                    return None;
                };
                match link.send_file(&t.file, self.sent, chunk) {
                    Ok(0) => return None, // socket full (or the file ended): wait
                    Ok(n) => {
                        charge(ctx, n);
                        // The kernel read the file for us: read and sent.
                        ctx.meter.read.inc_by(n as u64);
                        ctx.meter.sent.inc_by(n as u64);
                        self.sent += n as u64;
                        self.last_active = now;
                        continue;
                    }
                    Err(e) => {
                        self.drop_link(ctx, Some(format!("sendfile failed: {e}")));
                        return None;
                    }
                }
            }
            match self.fill(ctx) {
                Ok(Fill::Read) => {
                    if let FileState::Rotated { .. } = self.state {
                        self.state = FileState::Rotated { last_growth: now };
                    }
                }
                Ok(Fill::Eof) => {}
                Ok(Fill::Truncated(len)) => {
                    self.truncated(len, ctx);
                    return Some(now);
                }
                Err(e) => {
                    crate::error!("reading {} failed: {e}", self.path.display());
                    return Some(now + REOPEN_RETRY);
                }
            }
            let unsent = &self.buf[self.head..self.end];
            if unsent.is_empty() {
                self.since = None;
                self.partial_since = None;
                return None;
            }
            let whole = memchr::memrchr(b'\n', unsent).map_or(0, |i| i + 1);
            let since = *self.since.get_or_insert(now);
            if whole < unsent.len() {
                self.partial_since.get_or_insert(now);
            } else {
                self.partial_since = None;
            }
            let u = Unsent {
                len: unsent.len(),
                whole,
                // No room left to read into (the first bytes may be the
                // overlap check's, not data): send even without a newline.
                full: self.end >= self.buf.len(),
                since,
                partial_since: self.partial_since,
            };
            let d = if self.whole {
                // A closed file: every byte is final, send it all now.
                batch::Decision {
                    send: u.len,
                    wake_at: None,
                }
            } else {
                batch::decide(&ctx.settings.rules, &u, now)
            };
            if d.send == 0 {
                return d.wake_at;
            }
            let send = match self.throttle(ctx, d.send) {
                Ok(n) => n,
                Err(at) => return Some(at),
            };
            let link = self.link.as_mut()?;
            match link.send(&self.buf[self.head..self.head + send]) {
                Ok(0) => return None, // socket full: wait for writable
                Ok(n) => {
                    charge(ctx, n);
                    ctx.meter.sent.inc_by(n as u64);
                    self.head += n;
                    self.sent += n as u64;
                    self.last_active = now;
                    if self.head == self.end {
                        self.all_sent();
                    } else if n >= whole {
                        self.since = self.partial_since;
                    }
                }
                Err(e) => {
                    self.drop_link(ctx, Some(format!("send failed: {e}")));
                    return None;
                }
            }
        }
    }
}

/// Least credit a throttled stream waits for before sending again, so a
/// limited stream sends in chunks, not a byte at a time.
const THROTTLE_CHUNK: usize = 16 * 1024;

impl Stream {
    /// How many of `want` bytes the rate limits let go now; or, with none,
    /// when to try again (and the wait starts counting as throttled).
    fn throttle(&mut self, ctx: &mut Ctx<'_>, want: usize) -> Result<usize, Instant> {
        let now = ctx.now;
        let mut n = want;
        for b in [
            ctx.stream_limit.as_deref_mut(),
            ctx.client_limit.as_deref_mut(),
        ]
        .into_iter()
        .flatten()
        {
            n = n.min(b.available(now, n));
        }
        if n > 0 {
            if let Some(since) = self.throttled_since.take() {
                *ctx.throttled += now.saturating_duration_since(since);
            }
            return Ok(n);
        }
        let wake = want.min(THROTTLE_CHUNK);
        let at = [
            ctx.stream_limit.as_deref_mut(),
            ctx.client_limit.as_deref_mut(),
        ]
        .into_iter()
        .flatten()
        .map(|b| b.ready_at(now, wake))
        .max()
        .unwrap_or(now);
        self.throttled_since.get_or_insert(now);
        Err(at)
    }
}

/// Takes credit for `n` bytes sent from the stream's and the client's
/// buckets.
fn charge(ctx: &mut Ctx<'_>, n: usize) {
    let now = ctx.now;
    for b in [
        ctx.stream_limit.as_deref_mut(),
        ctx.client_limit.as_deref_mut(),
    ]
    .into_iter()
    .flatten()
    {
        b.take(now, n);
    }
}

/// The per-connection words of an INIT line.
struct Init<'a> {
    id: &'a str,
    offset: u64,
    codec: Option<Codec>,
}

fn write_init(
    out: &mut Vec<u8>,
    s: &Settings,
    path: &std::path::Path,
    svc: Option<&str>,
    meta: &[(String, String)],
    init: &Init<'_>,
) {
    let offset = init.offset.to_string();
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(meta.len() + 5);
    if let Some(svc) = svc {
        pairs.push(("svc", svc));
    }
    pairs.extend(meta.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    pairs.extend([("id", init.id), ("offset", offset.as_str()), ("ack", "1")]);
    if let Some(codec) = init.codec {
        pairs.push(("compression", codec.name()));
    }
    crate::proto::write_init(out, &s.hostname, &path.to_string_lossy(), &pairs);
}

/// File name endings of data that is compressed already: such files go
/// out as they are, never compressed a second time.
const COMPRESSED_SUFFIXES: &[&str] = &[
    ".gz", ".tgz", ".zst", ".lz4", ".xz", ".bz2", ".br", ".zip", ".7z", ".lzma",
];

impl Stream {
    /// True when the file is compressed already (by its name, e.g. a
    /// rotated `app.log.2.gz`).
    fn precompressed(&self) -> bool {
        let name = self.name.to_string_lossy();
        COMPRESSED_SUFFIXES.iter().any(|s| name.ends_with(s))
    }
}

fn resolve(server: &str) -> io::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    server
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address"))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
