//! loghamsterc: follows files and streams what is appended to a server.
//!
//! One thread, one [`Reactor`]. Every configured path is a
//! `stream::Stream` in a generation-tagged slab; its key is the token of
//! its connection and of its timer. Files are not polled: one inotify watch
//! per *directory* reports creations, renames, deletions and writes by
//! name, and the loop hands each event to the streams with that name (and
//! kicks streams that are draining a rotated-away file).
//!
//! The state file ([`crate::tail::state`]) is rewritten at most every
//! `state_interval` when an acknowledged offset changed, and once more at a
//! clean stop. SIGTERM/SIGINT stop cleanly: every connection is
//! half-closed, the server writes and acknowledges what it received, then
//! the state is saved. A second signal stops at once (state still saved).
//! One that arrives during start-up (which opens every file before the
//! loop runs) stops it before the next file: see `stop_waiting`.
//! SIGHUP reloads the configuration file: streams added, removed or
//! changed take effect, every other stream carries on untouched, and no
//! position is lost (`reload.rs`).
//!
//! With `[prometheus]` enabled, the metrics endpoint
//! ([`crate::metrics::MetricsServer`]) is one more event source in the same
//! loop: its tokens are routed by range before the streams' catch-all, and
//! what it serves is counted and derived as `meter.rs` describes.
//!
//! This file holds the daemon's fields and its loop (`run`): routing each
//! event to one handler, handing a stream its `Ctx` (`with_stream`),
//! connection slots, parking and state saving. Around it, one concern per
//! file: `setup.rs` builds the daemon from the configuration, `watch.rs`
//! keeps the directory watches and turns inotify events into stream and
//! source events, `sources.rs` starts and retires the streams of directory
//! sources (`dirsource.rs` is one source's queue of files), `stream/` is one
//! followed file and its connection, `link.rs` the wire side of that
//! connection, `meter.rs` the metrics, `reload.rs` SIGHUP, and `api.rs`
//! the library face.

pub mod api;
mod carrier;
mod dirsource;
mod due;
pub mod failover;
mod link;
mod meter;
mod progress;
mod reload;
pub mod rendezvous;
mod setup;
mod sources;
mod statefile;
mod stream;
mod watch;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::Token;

use crate::metrics::http::HttpError;
use crate::metrics::{ClientMetrics, MetricsServer};
use crate::rate::Bucket;
use crate::reactor::sys::inotify::{Inotify, Watch};
use crate::reactor::sys::signal::{SignalFd, SIGHUP, SIGINT, SIGTERM};
use crate::reactor::{Armed, Key, Reactor, Slots, StopHandle, Supervisor};
use crate::tail::listing::DirNames;
use crate::tail::state::{self, Entry, StateError};
use carrier::{Carriers, Kick};
use dirsource::DirSource;
use meter::{Meter, View};
use stream::{Ctx, LinkBudget, Settings, Stream};
use watch::DirWatch;

pub use reload::Reloader;

const SIGNALS: Token = Token(1);
const INOTIFY: Token = Token(2);
const STATE: Token = Token(3);
const WAKER: Token = Token(4);
const PROGRESS: Token = Token(5);
/// The next parking round while more files are open than `max_open_files`.
const PARK: Token = Token(6);
/// Timer: tell systemd's watchdog the loop still turns.
const WATCHDOG: Token = Token(7);
/// Least time between two parking rounds (connections being ended for
/// parking need a moment).
const PARK_ROUND: Duration = Duration::from_millis(500);

/// Why the client could not start or had to stop.
#[derive(Debug)]
pub enum ClientError {
    Setup {
        what: &'static str,
        source: io::Error,
    },
    State(StateError),
    Unsupported {
        stream: usize,
        what: &'static str,
    },
    Config(String),
    /// The metrics endpoint could not start (names the address).
    Metrics(HttpError),
    /// `[tls]`'s files could not be loaded.
    Tls(crate::tls::TlsError),
    /// The state file cannot be written (found at start-up).
    NotWritable(crate::writable::NotWritable),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Setup { what, source } => write!(f, "cannot {what}: {source}"),
            ClientError::Metrics(e) => e.fmt(f),
            ClientError::Tls(e) => e.fmt(f),
            ClientError::State(e) => e.fmt(f),
            ClientError::Config(e) => f.write_str(e),
            ClientError::NotWritable(e) => e.fmt(f),
            ClientError::Unsupported { stream, what } => {
                write!(
                    f,
                    "stream #{stream}: {what} is not supported by this version yet"
                )
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl From<StateError> for ClientError {
    fn from(e: StateError) -> Self {
        ClientError::State(e)
    }
}

/// The client daemon. Build it with [`ClientDaemon::new`], run it with
/// [`ClientDaemon::run`].
pub struct ClientDaemon {
    /// The running configuration (what a reload is compared with).
    config: crate::config::ClientConfig,
    /// What each of `config.streams` runs as (same index).
    units: Vec<reload::Unit>,
    /// Loads the configuration again on SIGHUP (see `reload`).
    reloader: Option<Reloader>,
    /// A reload waiting for the streams it retires to finish.
    pending: Option<reload::Pending>,
    /// SIGHUP arrived while a reload was pending: reload again after it.
    hup_again: bool,
    /// The open-files limit (for `max_open_files = 0`).
    nofile: u64,
    reactor: Reactor,
    signals: Option<SignalFd>,
    inotify: Inotify,
    inotify_buf: Vec<u8>,
    streams: Slots<Stream>,
    dirs: HashMap<Watch, DirWatch>,
    /// Directories that could not be watched yet, retried every
    /// [`DIR_RETRY`](watch::DIR_RETRY), with the followed paths and
    /// sources they serve.
    unwatched: Vec<(PathBuf, Vec<Key>, Vec<usize>)>,
    /// `[[stream]] directory = ...`: files sent whole after close.
    sources: Vec<DirSource>,
    /// Files sent whole and confirmed; kept in the state file.
    completed: Vec<Entry>,
    /// A clean stop began: start no new whole-file sends.
    stopping: bool,
    /// Start-up runs (see [`ClientDaemon::stop_waiting`]).
    starting: bool,
    /// Bytes of deleted files abandoned after `deleted_hold`, since start.
    abandoned_bytes: u64,
    /// Connection slots (`max_connections`) and the streams waiting for one.
    links: LinkBudget,
    /// The multiplexed connections (`[server] multiplex`).
    carriers: Carriers,
    granting: bool,
    /// Every stream is `method = "send"`: exit once everything was sent.
    send_only: bool,
    /// Files and bytes confirmed by `250 DONE` since start.
    sent_files: u64,
    sent_bytes: u64,
    /// When to show how far `method = "send"` has come (see `progress.rs`).
    progress: progress::Progress<Key>,
    settings: Settings,
    state_file: PathBuf,
    state_interval: Duration,
    state_timer: Armed,
    shutdown_timeout: Duration,
    dirty: bool,
    /// See [`Ctx::save_soon`].
    save_soon: bool,
    /// Streams an inotify read concerns (kept to reuse its allocation).
    inotify_hits: Vec<(Key, u32)>,
    /// A drain stopped at its budget: the `INOTIFY` timer is armed to
    /// read the rest.
    inotify_again: bool,
    /// The inotify descriptor is out of the poll until the `INOTIFY`
    /// timer (see `due::rest`).
    inotify_resting: bool,
    /// Putting the descriptor back failed (said once; read on the timer).
    inotify_unpolled: bool,
    /// Followed files held open, and how many may be (`max_open_files`).
    open_files: usize,
    max_open_files: usize,
    /// See [`Ctx::fd_pressure`].
    fd_pressure: bool,
    /// See [`Ctx::listings`]: forgotten at every turn and whenever inotify
    /// events are read; knows which directories are watched.
    listings: DirNames,
    /// Earliest time for the next parking round while over the cap.
    park_round: Instant,
    /// Streams reading a file rotated away from their path.
    draining: std::collections::HashSet<Key>,
    loaded: Vec<Entry>,
    /// Idle read buffers shared by the streams.
    pool: Vec<Vec<u8>>,
    /// What the client counts; served by `http` when `[prometheus]` is
    /// enabled, updated either way (an atomic add per event).
    metrics: ClientMetrics,
    /// One per distinct configured stream; [`Stream`]s and [`DirSource`]s
    /// hold an index into it.
    meters: Vec<Meter>,
    /// `rate_limit` buckets by configured stream (same index as `meters`).
    limits: Vec<Option<Bucket>>,
    /// `[tuning] rate_limit`: one bucket for the whole client.
    client_limit: Option<Bucket>,
    /// Time streams waited for rate-limit credit, not yet counted.
    throttled: Duration,
    /// The `/metrics` endpoint, when enabled.
    http: Option<MetricsServer>,
    /// The servers and their health as connections saw it.
    servers: failover::Servers,
    /// Metric handles per server (same order as `servers`).
    server_meters: Vec<meter::ServerMeter>,
    stop: StopHandle,
    /// systemd's notification socket (`Type=notify`, `WatchdogSec=`).
    supervisor: Supervisor,
    /// Whether state saves work, and when to try again if not.
    saving: statefile::Saving,
    /// Directories that cannot be watched, by the error last reported.
    dir_errors: crate::once::SaidBy<PathBuf, io::ErrorKind>,
}

impl ClientDaemon {
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs until stopped by a signal or a [`StopHandle`].
    pub fn run(mut self) -> Result<(), ClientError> {
        let mut ready = Vec::with_capacity(1024);
        let mut now = Instant::now();
        self.start_progress(now);
        self.start(now);
        self.supervisor
            .ready(&format!("following {} streams", self.streams.len()));
        if let Some(at) = self.supervisor.first_ping(now) {
            self.reactor.timers.schedule(at, WATCHDOG);
        }
        let mut deadline: Option<Instant> = None;
        let started = now;
        loop {
            if self.send_only
                && deadline.is_none()
                && self.streams.is_empty()
                && self.sources.iter().all(DirSource::idle)
            {
                crate::log::clear_status();
                crate::info!(
                    "method = \"send\": {} files ({} bytes) sent and confirmed in {:.1}s; exiting",
                    self.sent_files,
                    self.sent_bytes,
                    now.duration_since(started).as_secs_f64()
                );
                deadline = Some(self.begin_stop(now));
            }
            if let Some(d) = deadline {
                if now >= d || self.streams.values().all(Stream::finished) {
                    break;
                }
            }
            self.reactor
                .wait(&mut ready, now)
                .map_err(|source| ClientError::Setup {
                    what: "wait for events",
                    source,
                })?;
            now = Instant::now();
            self.listings.forget();
            for &token in &ready {
                self.on_event(token, &mut deadline, now);
            }
            self.on_timers(deadline, started, now);
            self.flush_carriers(now);
            self.after_events(now);
        }
        self.finish_run();
        // The last save failed: the positions since the last good one
        // are not on disk (the files are sent again from there).
        match self.saving.take_error() {
            Some(e) => Err(ClientError::State(e)),
            None => Ok(()),
        }
    }

    /// Picks where the progress of `method = "send"` goes: a status line
    /// for a backfill on a terminal, INFO lines otherwise.
    fn start_progress(&mut self, now: Instant) {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mode = progress::Mode::pick(self.send_only, terminal);
        let every = std::env::var(progress::EVERY_ENV).ok();
        let every = progress::log_every(every.as_deref()).unwrap_or_else(|e| {
            crate::warn!("{e}");
            progress::LOG_EVERY
        });
        self.progress = progress::Progress::new(mode, every, now);
        self.arm_progress();
    }

    /// Sets up the directory watches, gives every followed path its first
    /// look, saves what the looks found (or since when each path is
    /// followed) and only then logs the start: a client killed at any time
    /// after it said `started:` finds on restart every generation of a
    /// path born since, even one created and rotated away before this run
    /// saw it.
    fn start(&mut self, now: Instant) {
        self.starting = true;
        self.first_looks(now);
        self.starting = false;
        self.after_events(now);
        if self.stopping {
            return;
        }
        crate::info!(
            "started: {} streams and {} directory sources, {} {}, state file {}",
            self.streams.len(),
            self.sources.len(),
            if self.servers.len() == 1 {
                "server"
            } else {
                "servers"
            },
            self.servers.names().join(", "),
            crate::log::esc(&self.state_file)
        );
        if let Some(http) = &self.http {
            crate::info!("serving metrics on http://{}/metrics", http.local_addr());
        }
    }

    /// Watches the directories and gives every followed path its first
    /// look (a stop asked for meanwhile cuts it short).
    fn first_looks(&mut self, now: Instant) {
        crate::info!(
            "starting: {} followed paths and {} directory sources to open and list",
            self.streams.len(),
            self.sources.len()
        );
        self.watch_dirs(now);
        for key in self.streams.keys() {
            if self.stop_waiting() {
                break;
            }
            self.with_stream(key, now, |s, ctx| s.on_file_event(ctx));
        }
    }

    /// True once a stop waits while the client starts: SIGTERM or SIGINT
    /// pending (looked at, not taken: the loop reads it first thing and
    /// stops as usual, finishing connections and saving the state), or a
    /// [`StopHandle`] request. Start-up opens and positions every followed
    /// file and lists every directory before the loop runs, seconds with
    /// thousands of files; it asks before each file and directory and
    /// starts nothing more once this holds. What was not started keeps
    /// its saved position (the state file keeps entries nobody claimed),
    /// and new files are found again next time.
    fn stop_waiting(&mut self) -> bool {
        if self.stopping || !self.starting {
            return self.stopping;
        }
        let stop = [SIGTERM, SIGINT];
        let signalled = self
            .signals
            .as_ref()
            .is_some_and(|s| s.pending(&stop).unwrap_or(false));
        if signalled || self.stop.requested() {
            self.stopping = true;
            crate::info!(
                "stop requested during start-up: starting nothing more ({} files opened); the rest start from their saved positions next time",
                self.open_files
            );
        }
        self.stopping
    }

    /// Hands one ready event to its handler; a stop signal or request sets
    /// `deadline`.
    fn on_event(&mut self, token: Token, deadline: &mut Option<Instant>, now: Instant) {
        match token {
            SIGNALS => self.on_signals(deadline, now),
            WAKER if self.stop.requested() && deadline.is_none() => {
                *deadline = Some(self.begin_stop(now));
            }
            INOTIFY => self.on_inotify(now),
            t if MetricsServer::owns(t) => self.on_metrics_event(t, now),
            t if Carriers::owns(t) => self.on_carrier(t, now),
            token => self.on_stream_event(token, now),
        }
    }

    /// Reads the pending signals: SIGHUP reloads the configuration (see
    /// `reload`); the first other one begins a clean stop (sets
    /// `deadline`), another one stops at once.
    fn on_signals(&mut self, deadline: &mut Option<Instant>, now: Instant) {
        while let Some(sig) = self.signals.as_ref().and_then(|s| s.read().ok().flatten()) {
            if sig == SIGHUP {
                self.on_hup(now);
                continue;
            }
            if deadline.is_some() {
                crate::info!("signal {sig} again: stopping now");
                *deadline = Some(now);
            } else {
                crate::info!("signal {sig}: finishing connections, then stopping");
                *deadline = Some(self.begin_stop(now));
            }
        }
    }

    /// Runs the timers expired by `now`; progress lines stop once a
    /// `deadline` is set.
    fn on_timers(&mut self, deadline: Option<Instant>, started: Instant, now: Instant) {
        while let Some(token) = self.reactor.timers.pop_expired(now) {
            match token {
                PROGRESS if deadline.is_none() => self.on_progress(started, now),
                PROGRESS => {}
                PARK | reload::RELOAD => {}
                INOTIFY => self.on_inotify_timer(now),
                WATCHDOG => {
                    if let Some(next) = self.supervisor.ping(now) {
                        self.reactor.timers.schedule(next, WATCHDOG);
                    }
                }
                t if MetricsServer::owns(t) => {
                    if let Some(http) = &mut self.http {
                        let (registry, timers) = self.reactor.parts();
                        http.tick(registry, timers, now);
                    }
                }
                t if Carriers::owns(t) => self.on_carrier(t, now),
                STATE => {
                    self.state_timer.fired(now);
                    if self.saving.due(now) {
                        self.save_state_if_dirty();
                    }
                    if !self.unwatched.is_empty() {
                        self.watch_dirs(now);
                    }
                    self.recheck_sources(now);
                }
                token => self.on_stream_timer(token, now),
            }
        }
    }

    /// After a turn's events and timers: parks idle files while too many
    /// are open, and saves the state soon or arms the state timer.
    fn after_events(&mut self, now: Instant) {
        self.reload_if_ready(now);
        let over = self.open_files > self.max_open_files;
        if self.fd_pressure || (over && self.park_round <= now) {
            self.park_round = now + PARK_ROUND;
            self.park_idle_files(now);
            if self.open_files > self.max_open_files {
                self.reactor.timers.schedule(self.park_round, PARK);
            }
        }
        if std::mem::take(&mut self.save_soon) {
            match self.saving.due(now) {
                true => self.save_state(state::Durability::ProcessCrash),
                false => self.dirty = true,
            }
        }
        if self.dirty && self.state_timer.arm(now + self.state_interval) {
            self.reactor
                .timers
                .schedule(now + self.state_interval, STATE);
        }
    }

    /// The loop ended: saves the state one last time and logs the stop.
    fn finish_run(&mut self) {
        self.dirty = true;
        self.save_state_if_dirty();
        if self.abandoned_bytes > 0 {
            crate::warn!(
                "{} bytes of deleted files were abandoned after deleted_hold",
                self.abandoned_bytes
            );
        }
        crate::info!("stopped");
    }

    fn begin_stop(&mut self, now: Instant) -> Instant {
        self.stopping = true;
        crate::log::clear_status();
        self.supervisor.stopping();
        for key in self.streams.keys() {
            self.with_stream(key, now, |s, ctx| s.stop(ctx));
        }
        let deadline = now + self.shutdown_timeout;
        self.reactor.timers.schedule(deadline, STATE);
        deadline
    }

    /// An event for the metrics endpoint; a `/metrics` request reads the
    /// daemon through a [`View`].
    fn on_metrics_event(&mut self, token: Token, now: Instant) {
        let Some(http) = &mut self.http else {
            return;
        };
        let pending = self.reactor.timers.len();
        let (registry, timers) = self.reactor.parts();
        let mut view = View {
            metrics: &mut self.metrics,
            meters: &self.meters,
            streams: &self.streams,
            sources: &self.sources,
            servers: &self.server_meters,
            open_files: self.open_files,
            timers: pending,
        };
        http.on_event(registry, timers, token, now, &mut view);
    }

    fn with_stream(&mut self, key: Key, now: Instant, f: impl FnOnce(&mut Stream, &mut Ctx<'_>)) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        // Every line this stream's handlers log names its path.
        let _log = crate::log_scope!(path = stream.path());
        // In range: a stream's meter index comes from `meters`.
        let meter = &mut self.meters[stream.meter()];
        let stream_limit = self.limits.get_mut(stream.meter()).and_then(Option::as_mut);
        let (registry, timers) = self.reactor.parts();
        let mut ctx = Ctx {
            registry,
            timers,
            settings: &self.settings,
            now,
            dirty: &mut self.dirty,
            save_soon: &mut self.save_soon,
            loaded: &mut self.loaded,
            pool: &mut self.pool,
            abandoned_bytes: &mut self.abandoned_bytes,
            links: &mut self.links,
            fd_pressure: &mut self.fd_pressure,
            listings: &mut self.listings,
            inotify: &self.inotify,
            carriers: &mut self.carriers,
            meter,
            stream_limit,
            client_limit: self.client_limit.as_mut(),
            throttled: &mut self.throttled,
            servers: &mut self.servers,
            server_meters: &self.server_meters,
        };
        let held = stream.open_files();
        f(stream, &mut ctx);
        if let Some((carrier, id)) = stream.channel_of() {
            // Framed now rather than at the flush, so the streams served
            // after it in this turn see how full the carrier is (see
            // `Carriers::congested`).
            if let Some(end) = stream.channel_end(id).filter(|e| e.has_output()) {
                self.carriers.frame(carrier, id, end);
            }
        }
        self.open_files = self.open_files + stream.open_files() - held;
        if !self.throttled.is_zero() {
            self.metrics
                .rate_limited(std::mem::take(&mut self.throttled));
        }
        if stream.is_draining() {
            self.draining.insert(key);
        } else {
            self.draining.remove(&key);
        }
        if stream.completed() {
            self.finish_whole(key, now);
        } else if stream.gone() {
            self.drop_gone(key);
        }
        self.grant_slots(now);
    }

    /// An event or timer of a multiplexed connection: what arrived goes
    /// to the streams' channels, and those streams are served.
    fn on_carrier(&mut self, token: Token, now: Instant) {
        let (mut out, mut kicks) = (Vec::new(), Vec::new());
        let registry = self.reactor.registry();
        self.carriers
            .on_event(token, now, registry, &mut out, &mut kicks);
        self.deliver(out, kicks, now);
    }

    /// Hands what carriers received to the streams' channels, then serves
    /// the streams they concern.
    fn deliver(&mut self, out: Vec<carrier::Delivery>, mut kicks: Vec<Kick>, now: Instant) {
        for d in out {
            let stream = d.stream;
            if let Some(end) = self
                .streams
                .get_mut(stream)
                .and_then(|s| s.channel_end(d.id))
            {
                d.apply(end);
                kicks.push(Kick::Serve(stream));
            }
        }
        kicks.sort_unstable();
        kicks.dedup();
        for k in kicks {
            match k {
                Kick::Connect(s) => self.with_stream(s, now, |s, ctx| s.on_slot_free(ctx)),
                Kick::Serve(s) => self.with_stream(s, now, |s, ctx| s.on_socket(ctx)),
            }
        }
    }

    /// Once per loop turn: what channels that got CREDIT still held is
    /// framed (what streams wrote was framed when their turns ended), and
    /// every carrier's frames go out, one send per multiplexed connection;
    /// streams that waited for room are served (and what they write goes
    /// out in the same turn).
    fn flush_carriers(&mut self, now: Instant) {
        while self.carriers.has_work() {
            for (carrier, id, stream) in self.carriers.take_served() {
                let end = self.streams.get_mut(stream).and_then(|s| s.channel_end(id));
                if let Some(end) = end.filter(|e| e.has_output()) {
                    self.carriers.frame(carrier, id, end);
                }
            }
            let (mut out, mut kicks) = (Vec::new(), Vec::new());
            let registry = self.reactor.registry();
            self.carriers.write(now, registry, &mut out, &mut kicks);
            self.deliver(out, kicks, now);
        }
    }

    /// Hands free connection slots to streams waiting for one, oldest first.
    fn grant_slots(&mut self, now: Instant) {
        if self.granting {
            return; // called again from inside the loop below
        }
        self.granting = true;
        while self.links.room(now) {
            let Some(key) = self.links.waiting.pop_front() else {
                break;
            };
            self.with_stream(key, now, |s, ctx| s.on_slot_free(ctx));
        }
        self.granting = false;
    }

    /// Readiness of a stream's socket: what the server said, then
    /// whatever is due.
    fn on_stream_event(&mut self, token: Token, now: Instant) {
        let Some(key) = Key::from_token(token) else {
            return;
        };
        self.with_stream(key, now, |s, ctx| s.on_socket(ctx));
    }

    /// A stream's timer (its linger, a retry, a deadline): whatever is
    /// due, without reading its socket. The socket is edge-triggered, so
    /// what the server sends comes as an event of its own; reading it on
    /// every linger found nothing (a `recv` ending in `EAGAIN` per send
    /// with 1,000 busy files).
    fn on_stream_timer(&mut self, token: Token, now: Instant) {
        let Some(key) = Key::from_token(token) else {
            return;
        };
        self.with_stream(key, now, Stream::tick);
    }

    /// Closes idle followed files, least recently active first, until 90%
    /// of `max_open_files` (or, after EMFILE, 90% of what is open) remain.
    fn park_idle_files(&mut self, now: Instant) {
        let open = self.open_files;
        let cap = if std::mem::take(&mut self.fd_pressure) {
            open.min(self.max_open_files)
        } else {
            self.max_open_files
        };
        let target = cap - cap / 10;
        if open <= target {
            return;
        }
        let mut idle: Vec<(Instant, Key)> = self
            .streams
            .keys()
            .into_iter()
            .filter_map(|k| Some((self.streams.get(k)?.last_active(), k)))
            .collect();
        idle.sort_unstable_by_key(|(at, _)| *at);
        let mut parked = 0;
        for (_, key) in idle {
            if self.open_files <= target {
                break;
            }
            let mut done = false;
            self.with_stream(key, now, |s, ctx| done = s.release_idle(ctx));
            parked += usize::from(done);
        }
        if parked > 0 {
            crate::info!(
                "{parked} idle files parked; {} of at most {} followed files open",
                self.open_files,
                self.max_open_files
            );
            self.save_soon = true;
        }
    }

    fn save_state_if_dirty(&mut self) {
        if self.dirty {
            self.save_state(state::Durability::Synced);
        }
    }

    /// Writes every stream's entry. A quick ([`state::Durability::ProcessCrash`])
    /// save leaves `dirty` set, so the next timed save makes it durable.
    fn save_state(&mut self, durability: state::Durability) {
        let mut entries: Vec<Entry> = self.streams.values().flat_map(Stream::entries).collect();
        entries.extend(self.loaded.iter().cloned());
        entries.extend(self.completed.iter().cloned());
        let result = state::save(&self.state_file, &entries, durability);
        self.dirty = result.is_err() || durability != state::Durability::Synced;
        let shown = result.as_ref().err().map(ToString::to_string);
        if shown.is_some() {
            self.metrics.state_write_failures.inc();
        }
        // (The shell reads the clock here: saves come from signals,
        // timers and the end of the loop alike.)
        let now = Instant::now();
        match self.saving.record(now, self.state_interval, result) {
            statefile::Verdict::Saved => {}
            statefile::Verdict::Recovered(after) => crate::info!(
                "state file {} written again after {:.0}s of failures",
                crate::log::esc(&self.state_file),
                after.as_secs_f64()
            ),
            statefile::Verdict::Failed { say, retry_at } => {
                if say {
                    crate::error!(
                        "{}; the positions are kept in memory and saved once it works again (retrying with back-off up to {}s)",
                        shown.unwrap_or_default(),
                        statefile::MAX_RETRY.as_secs()
                    );
                }
                if self.state_timer.arm(retry_at) {
                    self.reactor.timers.schedule(retry_at, STATE);
                }
            }
        }
    }
}

#[cfg(test)]
mod start_tests {
    use super::*;
    use crate::config::ClientConfig;

    /// `started:` is logged at the end of [`ClientDaemon::start`]: by then
    /// the state file must say since when each path is followed, or a
    /// `kill -9` right after the log line loses every generation created
    /// and rotated away before the next run (found by `tests/model.rs`
    /// under load: the save came one loop turn after the log line).
    #[test]
    fn since_when_a_path_is_followed_is_on_disk_when_the_start_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let log = dir.path().join("app.log");
        let text = format!(
            "state_file = {state:?}\n[server]\nhostname = \"127.0.0.1\"\nport = 9\n\
             [[stream]]\npath = {log:?}\n"
        );
        let cfg = ClientConfig::from_toml_str(&text, "test.toml").unwrap();
        let mut daemon = ClientDaemon::new(cfg, false).unwrap();
        assert!(!state.exists());
        daemon.start(Instant::now());
        let saved = crate::tail::state::load(&state).unwrap();
        let marker = saved
            .entries
            .iter()
            .find(|e| e.path == log && e.id == crate::tail::follow::SINCE_MARKER)
            .expect("the path's since-marker is saved");
        assert!(marker.copies_after > 0, "{marker:?}");
    }
}
