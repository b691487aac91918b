//! One followed path on the client: the shell around its tail.
//!
//! The decisions about files (which generation, where to read, rotation,
//! truncation, copies, when a file is done) are [`Tail`]'s, in
//! `crate::tail::follow`, over the real file system ([`RealFs`]). This
//! shell owns what the tail does not: the connection ([`Link`]) and its
//! slot budget, reconnect back-off, rate limits, the timer, metrics and
//! log lines (from the tail's [`Note`]s), and the shared buffer pool.
//!
//! Offsets (all in the current generation): `acked <= sent <= read`.
//! `acked` is what the server confirmed and what the state file records;
//! `sent` is what went into the socket. When a connection breaks, `sent`
//! falls back to `acked` and the buffer is dropped: the file itself is the
//! buffer, so nothing is lost and memory stays bounded.
//!
//! `connection.rs` connects, handles what the server says and reconnects;
//! `send.rs` moves bytes (or the file, by `sendfile`) into the connection
//! under the batching rules and rate limits.

mod connection;
mod route;
mod send;
mod story;
#[cfg(test)]
mod tests;

pub(crate) use connection::LinkBudget;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use super::carrier::Carriers;
use super::failover::{Route, Servers};
use super::link::{Link, Phase};
use super::meter::{Meter, ServerMeter};
use crate::config::Compression;
use crate::rate::Bucket;
use crate::reactor::sys::inotify::Inotify;
use crate::reactor::sys::tailfs::{self, RealFs};
use crate::reactor::{Armed, Key, Timers};
use crate::tail::batch;
use crate::tail::follow::{self, Env, Note, State, Tail};
use crate::tail::fs::Fs;
use crate::tail::identity::{IdKey, StreamId};
use crate::tail::listing::DirNames;
use crate::tail::state::Entry;

/// Most idle read buffers kept for reuse.
const POOL_MAX: usize = 64;

/// Settings shared by every stream.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
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
    /// `[server] multiplex`: followed files take channels of one
    /// connection per server (see `client/carrier.rs`).
    pub multiplex: bool,
    /// `[server] token_file`: the token every INIT carries.
    pub token: Option<crate::config::client::ClientToken>,
    /// `follow_symlinks`: open the file a symlink leads to.
    pub follow_symlinks: bool,
    /// The client's secret, which keys new stream ids.
    pub id_key: IdKey,
    /// `[tls]`: connections speak TLS with this configuration.
    pub tls: Option<crate::tls::ClientSetup>,
}

impl Settings {
    /// The tail settings of one path.
    pub fn tail(&self, follow_rotations: bool, whole: bool) -> follow::Settings {
        follow::Settings {
            rules: self.rules,
            initial_buffer: initial_buffer(self),
            max_batch: self.max_batch.max(1),
            deleted_hold: self.deleted_hold,
            follow_rotations,
            whole,
            follow_symlinks: self.follow_symlinks,
            olddirs: Vec::new(),
            id_key: Some(self.id_key),
        }
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
    ///
    /// It is also what persists a newly minted stream id (a truncated
    /// file's `-t<nonce>`, an offset conflict's, a new generation's) before
    /// the first byte goes out under it, so a `kill -9` cannot make the
    /// next run re-send those bytes under another id: an id change ends
    /// the connection (`link_id` no longer matches), and sending under the
    /// new id waits for a new connection's `200`, read in a later turn,
    /// after this save. Whoever batches or defers saves must keep that
    /// order.
    pub save_soon: &'a mut bool,
    /// Entries from the state file not yet claimed by an open file.
    pub loaded: &'a mut Vec<Entry>,
    /// Idle read buffers of the initial size, shared by all streams.
    pub pool: &'a mut Vec<Vec<u8>>,
    /// Bytes of deleted files given up (see `deleted_hold`), since start.
    pub abandoned_bytes: &'a mut u64,
    pub links: &'a mut LinkBudget,
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
    /// The servers, and what connections saw of them.
    pub servers: &'a mut Servers,
    /// Metric handles per server (same order as `servers`).
    pub server_meters: &'a [ServerMeter],
    /// Directory names kept between the streams' listings while `inotify`
    /// has no event waiting (see `crate::tail::listing`).
    pub listings: &'a mut DirNames,
    pub inotify: &'a Inotify,
    /// The multiplexed connections (`[server] multiplex`).
    pub carriers: &'a mut Carriers,
}

#[derive(Debug)]
pub(crate) struct Stream {
    key: Key,
    /// Index of the configured stream's [`Meter`] in the daemon's meters;
    /// always valid.
    meter: usize,
    tail: Tail<File>,
    svc: Option<String>,
    meta: Vec<(String, String)>,
    link: Option<Link>,
    /// The stream id the connection was opened for: a connection left
    /// over from another generation is ended.
    link_id: Option<StreamId>,
    link_deadline: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    timer: Armed,
    /// Set by a clean shutdown: finish the connection, then stop.
    stopping: bool,
    /// Started for a `path` glob match; dropped once its file is gone.
    ephemeral: bool,
    /// Queued in [`LinkBudget::waiting`] for a connection slot.
    waiting_link: bool,
    /// The last connection failed or broke and no handshake succeeded
    /// since: a connection opened now is a reconnect.
    reconnecting: bool,
    /// Last time data moved or was acknowledged (for `idle_close`).
    last_active: Instant,
    jitter: u64,
    /// Since when a rate limit holds this stream back.
    throttled_since: Option<Instant>,
    /// Where a read of the followed file last came back short (its end
    /// then), with no news from inotify since: reading there again would
    /// only find the same end, so a wake-up for another reason (an ACK, a
    /// linger due) sends what is buffered without a `pread`. Valid only
    /// for that generation at that read position; any news clears it.
    at_end: Option<(StreamId, u64)>,
    /// Growth notes let wait for the linger since the last read (see
    /// `client::due`).
    deferred: u32,
    /// The last read that found bytes found fewer than `batch` and the
    /// file's end: a file appended a few lines at a time, whose next
    /// growth may wait unread for its linger (see `growth_waits`).
    trickle: bool,
    /// Until when announced growth waits unread, its linger counted from
    /// the first announcement since the last read (nothing was read to
    /// start the clock; see [`Tail::grew`]). Cleared by a read.
    growth_due: Option<Instant>,
    /// Which server the stream uses (made at its first connect).
    route: Option<Route>,
    /// The stream id the route last connected for: a new one is a new
    /// part, where a moved stream may return to its first choice.
    route_part: Option<StreamId>,
    /// What was told about this path (see `story.rs`).
    told: story::Told,
    /// The path holds a control character: the server would refuse its
    /// INIT (`400`), so the file is neither opened nor sent (see
    /// [`Stream::refuse_unsendable`]); `Some(true)` once that was said.
    unsendable: Option<bool>,
}

impl Stream {
    /// A stream of `path`, counting into the meter with index `meter`.
    pub fn new(
        key: Key,
        meter: usize,
        path: PathBuf,
        svc: Option<String>,
        meta: Vec<(String, String)>,
        tail: follow::Settings,
    ) -> Stream {
        let seed = key.token().0 as u64 ^ RealFs.clock();
        let unsendable = has_control(&path).then_some(false);
        Stream {
            key,
            meter,
            tail: Tail::new(path, tail, seed),
            svc,
            meta,
            link: None,
            link_id: None,
            link_deadline: None,
            retry_at: None,
            backoff: Duration::ZERO,
            timer: Armed::default(),
            stopping: false,
            ephemeral: false,
            waiting_link: false,
            reconnecting: false,
            last_active: Instant::now(),
            jitter: seed | 1,
            throttled_since: None,
            at_end: None,
            deferred: 0,
            trickle: false,
            growth_due: None,
            route: None,
            route_part: None,
            told: story::Told::default(),
            unsendable,
        }
    }

    pub fn path(&self) -> &Path {
        self.tail.path()
    }

    /// Last component of the path, to match inotify events of its directory.
    pub fn name(&self) -> &std::ffi::OsStr {
        self.tail.name()
    }

    /// The carrier and channel of its link, when that is a channel.
    pub fn channel_of(&self) -> Option<(Key, u32)> {
        self.link.as_ref().and_then(Link::channel_of)
    }

    /// Its link's channel end, when the link is channel `id`.
    pub fn channel_end(&mut self, id: u32) -> Option<&mut crate::proto::channel::ChannelEnd> {
        let link = self.link.as_mut()?;
        match link.channel_of() {
            Some((_, i)) if i == id => link.sock.as_channel(),
            _ => None,
        }
    }

    fn whole(&self) -> bool {
        self.tail.settings().whole
    }

    /// True once a stopping stream has no connection left.
    pub fn finished(&self) -> bool {
        self.stopping && self.link.is_none()
    }

    pub fn is_draining(&self) -> bool {
        matches!(self.tail.state(), State::Draining { .. })
    }

    /// A whole file the server confirmed (`250 DONE`) to its last byte,
    /// with its connection closed.
    pub fn completed(&self) -> bool {
        self.tail.is_complete() && self.link.is_none()
    }

    /// The state-file entry for the open file, if any.
    pub fn entry(&self) -> Option<Entry> {
        self.tail.entry()
    }

    /// The state-file entries of every file this stream holds, in order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.tail.entries()
    }

    /// The device and inode of every file this stream reads.
    pub fn held(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.tail.held()
    }

    /// Followed-file descriptors held.
    pub fn open_files(&self) -> usize {
        self.tail.open_files()
    }

    /// A stream started for a `path` glob match, whose file is gone and
    /// fully handled: the daemon drops it.
    pub fn gone(&self) -> bool {
        if self.unsendable.is_some() {
            return self.ephemeral;
        }
        self.ephemeral
            && !self.tail.is_parked()
            && self.tail.current().is_none()
            && self.link.is_none()
            && matches!(self.tail.state(), State::Missing { .. } | State::Stopped)
    }

    /// Marks a stream started for a `path` glob match (see [`gone`](Self::gone)).
    pub fn set_ephemeral(&mut self) {
        self.ephemeral = true;
    }

    /// The server the stream is assigned to (once it connected).
    pub fn server(&self) -> Option<usize> {
        self.route.as_ref().map(Route::server)
    }

    /// inotify says the file grew (and nothing else): the next pump reads
    /// it (see `at_end`). `deferred`: the read waits for the linger.
    pub fn note_growth(&mut self, deferred: bool) {
        self.at_end = None;
        self.deferred = if deferred { self.deferred + 1 } else { 0 };
    }

    /// Growth notes let wait since the last read.
    pub fn deferred(&self) -> u32 {
        self.deferred
    }

    /// Until when growth of the file announced at `now` may wait unread,
    /// with the stream's timer armed by then (see `client::due`): the
    /// linger of whole lines already waiting ([`lingering`](Self::lingering)),
    /// of growth already waiting, or, for a trickling file read to its end,
    /// of the bytes just announced. `None`: read now.
    pub fn growth_waits(&self, now: Instant) -> Option<Instant> {
        if let Some(due) = self.lingering() {
            return Some(due);
        }
        let up = matches!(&self.link, Some(l) if l.phase == Phase::Up);
        if !up || self.stopping || self.whole() {
            return None;
        }
        if let Some(due) = self.growth_due {
            return self.timer.at().is_some_and(|at| at <= due).then_some(due);
        }
        let quiet = self.trickle && self.known_at_end() && self.tail.state() == State::Following;
        quiet.then(|| now + self.tail.settings().rules.linger)
    }

    /// Notes growth announced at `now` that waits unread until
    /// `growth_waits(now)` said; returns when the stream's timer must now
    /// fire, if earlier than it was armed for (the caller schedules it).
    pub fn defer_growth(&mut self, now: Instant) -> Option<Instant> {
        let first = self.lingering().is_none() && self.growth_due.is_none();
        self.note_growth(true);
        if !first {
            return None;
        }
        let due = now + self.tail.settings().rules.linger;
        self.growth_due = Some(due);
        self.tail.grew(now);
        self.timer.arm(due).then_some(due)
    }

    /// True when the file is known to end at the read position (see
    /// `at_end`).
    fn known_at_end(&self) -> bool {
        self.at_end.is_some()
            && self.at_end == self.tail.stream_id().map(|id| (id, self.tail.read_pos()))
    }

    /// Until when this stream's whole lines wait for their linger, with
    /// its timer armed for that moment and its connection up: growth of
    /// its file before then need not be read (see `client::due`).
    pub fn lingering(&self) -> Option<Instant> {
        let due = self.tail.linger_due()?;
        let up = matches!(&self.link, Some(l) if l.phase == Phase::Up);
        (up && !self.stopping && self.timer.at().is_some_and(|at| at <= due)).then_some(due)
    }

    /// True while the stream has a connection (in any phase).
    pub fn connected(&self) -> bool {
        self.link.is_some()
    }

    /// Bytes of the current file handed to the connection so far.
    pub fn sent(&self) -> u64 {
        self.tail.sent()
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
    /// file being read past the acknowledged offset, and every queued
    /// generation whole. One `fstat` per file (for a scrape).
    pub fn behind(&self) -> u64 {
        let len = |f: &File| f.metadata().map_or(0, |m| m.len());
        let current = self
            .tail
            .current()
            .map_or(0, |g| len(&g.file).saturating_sub(self.tail.acked()));
        current + self.tail.queued().map(|g| len(&g.file)).sum::<u64>()
    }

    /// The current file's length, if it is open.
    pub fn file_len(&self) -> Option<u64> {
        let g = self.tail.current()?;
        g.file.metadata().ok().map(|m| m.len())
    }

    /// True when the open file is still the one at `path` (for deleting it).
    pub fn path_is_same_file(&self) -> bool {
        let Some(g) = self.tail.current() else {
            return false;
        };
        RealFs
            .lstat(self.path())
            .ok()
            .flatten()
            .is_some_and(|m| m.inode() == g.meta.inode())
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

    /// Ends the stream for good (a reload retired it): a connection still
    /// open is cut; what it did not acknowledge is sent again by the
    /// stream that takes the file next, from the acknowledged offset.
    pub fn end(&mut self, ctx: &mut Ctx<'_>) {
        self.stopping = true;
        if self.link.is_some() {
            self.drop_link(ctx, None);
        }
    }

    /// An inotify event about this stream's name in its directory (or a
    /// start-up look, or an overflow).
    pub fn on_file_event(&mut self, ctx: &mut Ctx<'_>) {
        self.at_end = None;
        if self.refuse_unsendable(ctx) {
            return;
        }
        if !self.stopping {
            let mut env = Env {
                fs: &mut tailfs::listed(ctx.listings, ctx.inotify),
                now: ctx.now,
                loaded: ctx.loaded,
            };
            self.tail.look(&mut env);
        }
        self.after_tail(ctx);
        self.tick(ctx);
    }

    /// Does whatever is due: (re)open, connect, send, switch after rotation,
    /// and arms the timer for the next thing.
    pub fn tick(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        self.timer.fired(now);
        if self.refuse_unsendable(ctx) {
            return;
        }
        if self.link_deadline.is_some_and(|t| t <= now) {
            let why = "connect or handshake timed out".to_string();
            self.link_failed(ctx, why, Some(super::failover::Failure::Unreachable));
        }
        let mut wake = None;
        if !self.stopping {
            let mut env = Env {
                fs: &mut tailfs::listed(ctx.listings, ctx.inotify),
                now,
                loaded: ctx.loaded,
            };
            let t = self.tail.tick(&mut env, self.link.is_some());
            wake = t.wake;
            self.after_tail(ctx);
            if t.finish {
                if let Some(link) = self.link.as_mut().filter(|l| l.phase == Phase::Up) {
                    link.finish();
                }
            }
            if self.tail.is_complete() && self.link.is_none() {
                return;
            }
        }
        if self.link.is_none()
            && self.tail.current().is_some()
            && !self.stopping
            && self.retry_at.is_none_or(|t| t <= now)
            && self.wants_link()
        {
            self.connect(ctx);
        }
        wake = earliest(wake, self.pump(ctx));
        self.count_wire(ctx);
        wake = earliest(wake, self.close_if_idle(ctx));
        wake = earliest(wake, self.link_deadline);
        if self.link.is_none() && self.tail.current().is_some() && !self.stopping {
            // (Due retries were attempted above; only a future one is armed.)
            wake = earliest(wake, self.retry_at.filter(|t| *t > now));
        }
        if let Some(at) = wake {
            if self.timer.arm(at) {
                ctx.timers.schedule(at, self.key.token());
            }
        }
    }

    /// After the tail ran: logs and counts its notes, passes its save
    /// requests on, and ends a connection that belongs to a generation the
    /// tail has left.
    fn after_tail(&mut self, ctx: &mut Ctx<'_>) {
        if self.tail.has_notes() {
            // (Only when there is something to say: this runs on every
            // read, and the path's text is an allocation.)
            let path = crate::log::esc(self.tail.path()).to_string();
            // A whole file (`method = "send"`, a directory source) is
            // sent, not followed: its opening says so, with its size.
            let send = self.whole().then(|| self.file_len().unwrap_or(0));
            let mut abandoned = 0;
            let mut told = Telling {
                told: &mut self.told,
                configured: !self.ephemeral && send.is_none(),
                path: self.tail.path().to_path_buf(),
            };
            for note in self.tail.take_notes() {
                match (&note, send) {
                    (Note::Opened { offset, .. }, Some(len)) => log_send(&path, *offset, len),
                    _ => log_note(&path, &note, ctx, &mut abandoned, &mut told),
                }
            }
            *ctx.abandoned_bytes += abandoned;
        }
        if self.told.unparked(self.tail.is_parked()) {
            crate::debug!(
                "{}: reopened after parking, at offset {}",
                crate::log::esc(&self.tail.path()),
                self.tail.acked()
            );
        }
        *ctx.save_soon |= self.tail.take_save_soon();
        *ctx.dirty |= self.tail.take_dirty();
        if self.link.is_some() && self.link_id != self.tail.stream_id() {
            self.drop_link(ctx, None);
            self.retry_at = None;
        }
    }

    /// True when the path cannot be sent: it holds a control character,
    /// which the server refuses in an INIT (`400 Bad request: control
    /// character in path`), so retrying would never end. Nothing is opened
    /// or connected; the first call says so in one WARN (the name
    /// escaped) and counts it in `loghamster_client_refused_files_total`.
    fn refuse_unsendable(&mut self, ctx: &mut Ctx<'_>) -> bool {
        match self.unsendable {
            None => false,
            Some(true) => true,
            Some(false) => {
                self.unsendable = Some(true);
                ctx.meter.refused.inc();
                crate::warn!(
                    "{}: not shipped: the file name holds a control character, which the server refuses; rename the file to ship it",
                    crate::log::esc(&self.path())
                );
                true
            }
        }
    }

    /// A rename, creation or deletion of a name derived from this path
    /// (see [`Tail::record`]).
    pub fn record(&mut self, path: &Path, change: crate::tail::follow::DirChange) {
        self.tail.record(path, change);
    }

    /// Under descriptor pressure: parks the file if it is idle (its entry
    /// goes back to the loaded entries until its name changes), or, if
    /// only its connection keeps it from being idle (everything
    /// acknowledged, quiet for a second), ends that connection so the next
    /// round can park it. Returns true when the file was parked.
    pub fn release_idle(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if self.link.is_none() && !self.stopping {
            if let Some(entry) = self.tail.park(&mut RealFs) {
                self.told.park();
                crate::debug!(
                    "{}: parked at offset {} (too many open files)",
                    crate::log::esc(&self.path()),
                    entry.offset
                );
                ctx.loaded.push(entry);
                return true;
            }
        }
        let idle = ctx.now >= self.last_active + Duration::from_secs(1)
            && self.tail.state() == State::Following
            && !self.whole()
            && !self.stopping
            && self.tail.queued().next().is_none()
            && self.tail.pending().is_empty()
            && self.tail.acked() == self.tail.sent();
        if let Some(link) = self.link.as_mut().filter(|l| l.phase == Phase::Up && idle) {
            link.finish();
        }
        false
    }

    /// Gives the read buffer back to the pool once everything read was
    /// sent (only the initial size is pooled; a grown one is freed).
    fn release_buffer(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(buf) = self.tail.release_buffer() {
            if buf.len() == initial_buffer(ctx.settings) && ctx.pool.len() < POOL_MAX {
                ctx.pool.push(buf);
            }
        }
    }
}

/// The opening of a file sent whole: `sending PATH whole (N bytes)`.
fn log_send(path: &str, offset: u64, len: u64) {
    match offset {
        0 => crate::info!(offset = offset, bytes = len; "sending {path} whole ({len} bytes)"),
        _ => crate::info!(
            offset = offset, bytes = len;
            "sending {path} whole ({len} bytes), from offset {offset} (the rest was sent before)"
        ),
    }
}

/// A stream's [`story::Told`] while its notes are logged.
struct Telling<'a> {
    told: &'a mut story::Told,
    /// A configured path (not a glob match or a whole file).
    configured: bool,
    path: PathBuf,
}

/// One log line (and metric) for something the tail did.
fn log_note(path: &str, note: &Note, ctx: &mut Ctx<'_>, abandoned: &mut u64, t: &mut Telling<'_>) {
    match note {
        Note::Opened { offset, .. } if t.told.opened() => {
            crate::info!(offset = *offset; "{path}: appeared; following from offset {offset}")
        }
        Note::Opened { offset, .. } => {
            crate::info!(offset = *offset; "{path}: following from offset {offset}")
        }
        Note::ResumedRotated { name, offset } => {
            ctx.meter.rotations.inc();
            crate::info!(
                file = name, offset = *offset;
                "{path}: rotated to {} while not held open (client restart or parked file); finishing it from offset {offset} first",
                crate::log::esc(&name)
            );
        }
        Note::Rotated => {
            ctx.meter.rotations.inc();
            crate::info!("{path}: rotated; reading the old file to its end");
        }
        Note::FoundRotated { name } => {
            ctx.meter.rotations.inc();
            crate::info!(
                file = name;
                "{path}: found a later file rotated away before it was read: {}; reading it whole, in order",
                crate::log::esc(&name)
            );
        }
        Note::Truncated { at, no_copy: false } => {
            ctx.meter.truncations.inc();
            crate::info!(
                offset = *at;
                "{path}: truncated and rewritten (or shortened) under the reader at offset {at}"
            );
        }
        Note::Truncated { at, no_copy: true } => {
            ctx.meter.truncations.inc();
            crate::warn!(
                offset = *at;
                "{path}: truncated and rewritten (or shortened) under the reader at offset {at}, and no copy of the old content found: the file's new content is sent whole from 0 under a new stream id; old content the client never saw (written past what it last saw of the file), if there was any, is in no file it can see"
            );
        }
        Note::ReadingCopy { name, at } => {
            ctx.meter.rotations.inc();
            crate::info!(
                file = name, offset = *at;
                "{path}: copytruncate: reading the rest of the old content from its copy {} from offset {at}, then the file from 0",
                crate::log::esc(&name)
            );
        }
        Note::Lost { from, to, why } => {
            let bytes = to - from;
            ctx.meter.lost.inc();
            ctx.meter.lost_bytes.inc_by(bytes);
            crate::error!(
                bytes = bytes, offset = *from;
                "{path}: {bytes} bytes lost (offsets {from} to {to} of the old content): {why}"
            );
        }
        Note::Done { offset } => {
            crate::info!(offset = *offset; "{path}: old file done at offset {offset}; switching to the new file")
        }
        Note::StoppedAfterRotation => {
            crate::info!("{path}: onrotate = \"stop\": not following the new file")
        }
        Note::Abandoned { bytes } => {
            *abandoned += bytes;
            crate::error!(
                bytes = *bytes;
                "{path}: a deleted file was held {}s without being delivered; abandoning its last {bytes} bytes to free the disk space",
                ctx.settings.deleted_hold.as_secs()
            );
        }
        Note::Failed { what, error } => {
            if what.contains("descriptors") {
                *ctx.fd_pressure = true;
            } else if t.told.failed(what, error) {
                crate::warn!("{path}: {what} failed: {error}; retrying (said again only if the error changes)");
            } else {
                crate::debug!("{path}: {what} failed again: {error}");
            }
        }
        Note::Absent => match t.told.absent(t.configured) {
            story::Absence::Warn => {
                let dir = t.path.parent().filter(|d| !d.as_os_str().is_empty());
                let no_dir = dir.is_some_and(|d| std::fs::symlink_metadata(d).is_err());
                crate::warn!(
                    "{path}: does not exist{}; following it from when it appears",
                    if no_dir {
                        ", nor does its directory"
                    } else {
                        ""
                    }
                )
            }
            story::Absence::Debug => {
                crate::debug!("{path}: not there; waiting for it to appear")
            }
            story::Absence::Quiet => {}
        },
        Note::Refused { error, .. } => {
            ctx.meter.refused.inc();
            crate::warn!("{path}: not shipped: {error}; looking again quietly, and saying so again only if something else is put there");
        }
        Note::OffsetConflict {
            stream,
            server,
            high,
            acked,
        } => {
            ctx.meter.offset_conflicts.inc();
            crate::error!(stream = stream, offset = *acked; "{path}: stream {stream}: the server holds {server} bytes, but this client sent at most {high}: another connection wrote to it. Not skipping ahead and not sending the file again: the rest goes from the acknowledged offset {acked} under a new stream id");
        }
        Note::StillRefused => crate::debug!("{path}: still not shipped (the same object is there)"),
    }
}

/// True when `path` (as sent in an INIT) holds a character the server
/// refuses in a path: see [`crate::proto::is_control`].
fn has_control(path: &Path) -> bool {
    path.to_string_lossy().chars().any(crate::proto::is_control)
}

/// Size of a file's first read buffer: a quarter of a batch (1 KiB by
/// default), at least twice [`follow::buffer::OVERLAP`]. A followed file
/// appending a line or two per linger needs no more, and a client may hold
/// thousands of them at once; a file with more to read grows its buffer
/// up to `max_batch` and is given that size again next time (see
/// [`follow::ReadBuf`]).
pub(super) fn initial_buffer(s: &Settings) -> usize {
    let floor = 2 * follow::buffer::OVERLAP;
    (s.rules.batch / 4).clamp(floor, s.max_batch.max(floor))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
