//! loghamsterc: follows files and streams what is appended to a server.
//!
//! One thread, one [`Reactor`]. Every configured path is a
//! [`stream::Stream`] in a generation-tagged slab; its key is the token of
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
//!
//! With `[prometheus]` enabled, the metrics endpoint
//! ([`crate::metrics::MetricsServer`]) is one more event source in the same
//! loop: its tokens are routed by range before the streams' catch-all, and
//! what it serves is counted and derived as `meter.rs` describes.

pub mod api;
mod dirsource;
mod link;
mod meter;
mod stream;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::config::{ClientConfig, Method, OnRotate, Source};
use crate::metrics::client::StreamLabels;
use crate::metrics::http::HttpError;
use crate::metrics::{ClientMetrics, MetricsServer};
use crate::reactor::sys::inotify::{mask, Inotify, Watch};
use crate::reactor::sys::signal::{SignalFd, SIGINT, SIGTERM};
use crate::reactor::{Armed, Key, Reactor, Ready, Slots, StopHandle};
use crate::tail::batch::Rules;
use crate::tail::rate::Bucket;
use crate::tail::state::{self, Entry, StateError};
use dirsource::{DirSource, Filter};
use meter::{Meter, View};
use stream::{Ctx, LinkBudget, OpenFiles, Settings, Stream};

const SIGNALS: Token = Token(1);
const INOTIFY: Token = Token(2);
const STATE: Token = Token(3);
const WAKER: Token = Token(4);
const PROGRESS: Token = Token(5);
/// The next parking round while more files are open than `max_open_files`.
const PARK: Token = Token(6);
/// Least time between two parking rounds (connections being ended for
/// parking need a moment).
const PARK_ROUND: Duration = Duration::from_millis(500);

/// Events a directory watch asks for.
const DIR_EVENTS: u32 = mask::CREATE
    | mask::MOVED_TO
    | mask::MOVED_FROM
    | mask::DELETE
    | mask::MODIFY
    | mask::CLOSE_WRITE
    | mask::ATTRIB
    | mask::ONLYDIR;
/// How often a directory that does not exist yet is looked for again.
const DIR_RETRY: Duration = Duration::from_secs(5);

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
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Setup { what, source } => write!(f, "cannot {what}: {source}"),
            ClientError::Metrics(e) => e.fmt(f),
            ClientError::State(e) => e.fmt(f),
            ClientError::Config(e) => f.write_str(e),
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

#[derive(Debug)]
struct DirWatch {
    dir: PathBuf,
    /// Followed paths in this directory, by file name: an event costs one
    /// lookup, whatever the number of files in the directory.
    streams: HashMap<OsString, Vec<Key>>,
    /// Directory sources (indices into `sources`) for this directory.
    sources: Vec<usize>,
}

/// The client daemon. Build it with [`ClientDaemon::new`], run it with
/// [`ClientDaemon::run`].
pub struct ClientDaemon {
    reactor: Reactor,
    signals: Option<SignalFd>,
    inotify: Inotify,
    inotify_buf: Vec<u8>,
    streams: Slots<Stream>,
    dirs: HashMap<Watch, DirWatch>,
    /// Directories that could not be watched yet, retried every
    /// [`DIR_RETRY`], with the followed paths and sources they serve.
    unwatched: Vec<(PathBuf, Vec<Key>, Vec<usize>)>,
    /// `[[stream]] directory = ...`: files sent whole after close.
    sources: Vec<DirSource>,
    /// Files sent whole and confirmed; kept in the state file.
    completed: Vec<Entry>,
    /// A clean stop began: start no new whole-file sends.
    stopping: bool,
    /// Bytes of deleted files abandoned after `deleted_hold`, since start.
    abandoned_bytes: u64,
    /// Connection slots (`max_connections`) and the streams waiting for one.
    links: LinkBudget,
    granting: bool,
    /// Every stream is `method = "send"`: exit once everything was sent.
    send_only: bool,
    /// Files and bytes confirmed by `250 DONE` since start.
    sent_files: u64,
    sent_bytes: u64,
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
    /// Followed files held open, and how many may be (`max_open_files`).
    open_files: OpenFiles,
    max_open_files: usize,
    /// See [`Ctx::fd_pressure`].
    fd_pressure: bool,
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
    stop: StopHandle,
}

impl ClientDaemon {
    /// Loads the state file and sets up watches; `signals` makes SIGTERM and
    /// SIGINT stop the client (the binary wants that; a library user may
    /// prefer [`StopHandle`]).
    pub fn new(cfg: ClientConfig, signals: bool) -> Result<ClientDaemon, ClientError> {
        let setup = |what| move |source| ClientError::Setup { what, source };
        let signals = if signals {
            Some(SignalFd::new(&[SIGINT, SIGTERM]).map_err(setup("set up signal handling"))?)
        } else {
            None
        };
        // Many followed files and a connection per active one.
        let nofile = match crate::reactor::sys::host::raise_nofile_limit() {
            Ok(n) => n,
            Err(e) => {
                crate::warn!("cannot raise the open files limit: {e}");
                1024
            }
        };
        let reactor = Reactor::new(1024).map_err(setup("create the event loop"))?;
        let inotify = Inotify::new().map_err(setup("create an inotify instance"))?;
        let reg = reactor.registry();
        reg.register(
            &mut SourceFd(&inotify.as_raw_fd()),
            INOTIFY,
            Interest::READABLE,
        )
        .map_err(setup("register inotify"))?;
        if let Some(s) = &signals {
            reg.register(&mut SourceFd(&s.as_raw_fd()), SIGNALS, Interest::READABLE)
                .map_err(setup("register signals"))?;
        }
        let stop = StopHandle::new(reg, WAKER).map_err(setup("create a waker"))?;
        let (completed, loaded) = state::load(&cfg.state_file)?
            .into_iter()
            .partition(|e| e.complete);
        let hostname = match &cfg.hostname {
            Some(h) => h.clone(),
            None => crate::reactor::sys::host::hostname().map_err(setup("read the host name"))?,
        };
        let t = &cfg.tuning;
        let settings = Settings {
            server: format!("{}:{}", cfg.server.hostname, cfg.server.port),
            hostname,
            rules: Rules {
                batch: t.batch_bytes,
                linger: t.linger,
                partial_line_timeout: t.partial_line_timeout,
            },
            max_batch: t.max_batch_bytes,
            reconnect_min: t.reconnect_min,
            reconnect_max: t.reconnect_max,
            deleted_hold: t.deleted_hold,
            idle_close: t.idle_close,
            compression: cfg.server.compression,
        };
        let mut daemon = ClientDaemon {
            reactor,
            signals,
            inotify,
            inotify_buf: vec![0; 64 * 1024],
            streams: Slots::default(),
            dirs: HashMap::new(),
            unwatched: Vec::new(),
            settings,
            state_file: cfg.state_file.clone(),
            state_interval: t.state_interval,
            state_timer: Armed::default(),
            shutdown_timeout: t.shutdown_timeout,
            dirty: false,
            save_soon: false,
            inotify_hits: Vec::new(),
            draining: Default::default(),
            loaded,
            sources: Vec::new(),
            completed,
            stopping: false,
            abandoned_bytes: 0,
            links: LinkBudget {
                open: 0,
                max: t.max_connections,
                waiting: Default::default(),
                plain_until: None,
            },
            granting: false,
            send_only: false,
            sent_files: 0,
            sent_bytes: 0,
            pool: Vec::new(),
            open_files: OpenFiles::default(),
            max_open_files: max_open_files(t.max_open_files, t.max_connections, nofile),
            fd_pressure: false,
            park_round: Instant::now(),
            metrics: ClientMetrics::new(&cfg.streams, Instant::now()),
            meters: Vec::new(),
            limits: Vec::new(),
            client_limit: t.rate_limit.map(|l| Bucket::new(l, Instant::now())),
            throttled: Duration::ZERO,
            http: None,
            stop,
        };
        if cfg.prometheus.enabled {
            let addr = cfg.prometheus.addr().ok_or_else(|| {
                ClientError::Config(format!(
                    "`prometheus.listen` \"{}\": expected ip:port or :port",
                    cfg.prometheus.listen
                ))
            })?;
            let http = MetricsServer::bind(addr, daemon.reactor.registry())
                .map_err(ClientError::Metrics)?;
            daemon.http = Some(http);
        }
        for (i, s) in cfg.streams.iter().enumerate() {
            let once = s.method == Method::Send;
            let label = StreamLabels::for_config(s);
            let meter = meter::meter_for(&mut daemon.meters, &daemon.metrics, label);
            if daemon.limits.len() < daemon.meters.len() {
                daemon.limits.resize(daemon.meters.len(), None);
            }
            if let Some(l) = s.rate_limit {
                daemon.limits[meter] = Some(Bucket::new(l, Instant::now()));
            }
            let (dir, filter) = match &s.source {
                Source::Path(_) if s.delete && !once => {
                    return Err(ClientError::Unsupported {
                        stream: i + 1,
                        what: "`delete = true` on a followed `path`",
                    });
                }
                Source::Path(p) if !once && is_glob(p) => {
                    let path = absolute(p);
                    let dir = path
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from("/"));
                    if is_glob(&dir) {
                        return Err(ClientError::Unsupported { stream: i + 1, what: "a glob in a directory of `path` (only the file name may be a pattern)" });
                    }
                    let name = path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    let glob = globset::GlobBuilder::new(&name)
                        .literal_separator(true)
                        .build()
                        .map_err(|e| {
                            ClientError::Config(format!(
                                "stream #{}: `path` pattern {name:?}: {e}",
                                i + 1
                            ))
                        })?;
                    let mut src = DirSource::new(
                        dir.clone(),
                        Filter::Glob(glob.compile_matcher()),
                        false,
                        s.svc.clone(),
                        s.meta.clone(),
                        false,
                        meter,
                    );
                    src.follow = true;
                    daemon.sources.push(src);
                    daemon.add_unwatched(dir, None, Some(daemon.sources.len() - 1));
                    continue;
                }
                Source::Path(p) if !once => {
                    let path = absolute(p);
                    let key = daemon.streams.vacant_key();
                    let follow = s.onrotate == OnRotate::Follow;
                    daemon.streams.insert(Stream::new(
                        key,
                        meter,
                        path.clone(),
                        s.svc.clone(),
                        s.meta.clone(),
                        follow,
                    ));
                    let dir = path
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from("/"));
                    daemon.add_unwatched(dir, Some(key), None);
                    continue;
                }
                Source::Path(p) => {
                    let path = absolute(p);
                    let dir = path
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from("/"));
                    (
                        dir,
                        Filter::Name(path.file_name().unwrap_or_default().to_os_string()),
                    )
                }
                Source::Directory { dir, pattern, .. } => {
                    (absolute(dir), Filter::Glob(pattern.clone()))
                }
            };
            daemon.sources.push(DirSource::new(
                dir.clone(),
                filter,
                once,
                s.svc.clone(),
                s.meta.clone(),
                s.delete,
                meter,
            ));
            daemon.add_unwatched(dir, None, Some(daemon.sources.len() - 1));
        }
        daemon.send_only = cfg.streams.iter().all(|s| s.method == Method::Send);
        Ok(daemon)
    }

    fn add_unwatched(&mut self, dir: PathBuf, key: Option<Key>, source: Option<usize>) {
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

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs until stopped by a signal or a [`StopHandle`].
    pub fn run(mut self) -> Result<(), ClientError> {
        let mut ready = Vec::with_capacity(1024);
        let mut now = Instant::now();
        self.watch_dirs(now);
        for key in self.streams.keys() {
            self.with_stream(key, now, |s, ctx| {
                s.check_path(ctx);
                s.tick(ctx);
            });
        }
        crate::info!(
            "started: {} streams and {} directory sources, server {}, state file {}",
            self.streams.len(),
            self.sources.len(),
            self.settings.server,
            self.state_file.display()
        );
        if let Some(http) = &self.http {
            crate::info!("serving metrics on http://{}/metrics", http.local_addr());
        }
        let mut deadline: Option<Instant> = None;
        let started = now;
        let progress = self.send_only && std::io::IsTerminal::is_terminal(&std::io::stderr());
        if progress {
            self.reactor
                .timers
                .schedule(now + Duration::from_secs(1), PROGRESS);
        }
        loop {
            if self.send_only
                && deadline.is_none()
                && self.streams.is_empty()
                && self.sources.iter().all(DirSource::idle)
            {
                if progress {
                    eprintln!();
                }
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
            for r in &ready {
                match r.token {
                    SIGNALS => {
                        while let Some(sig) =
                            self.signals.as_ref().and_then(|s| s.read().ok().flatten())
                        {
                            if deadline.is_some() {
                                crate::info!("signal {sig} again: stopping now");
                                deadline = Some(now);
                            } else {
                                crate::info!("signal {sig}: finishing connections, then stopping");
                                deadline = Some(self.begin_stop(now));
                            }
                        }
                    }
                    WAKER if self.stop.requested() && deadline.is_none() => {
                        deadline = Some(self.begin_stop(now));
                    }
                    INOTIFY => self.on_inotify(now),
                    t if MetricsServer::owns(t) => self.on_metrics_event(t, now),
                    token => self.on_stream_event(token, *r, now),
                }
            }
            while let Some(token) = self.reactor.timers.pop_expired(now) {
                match token {
                    PROGRESS if deadline.is_none() => {
                        self.print_progress(now.duration_since(started));
                        self.reactor
                            .timers
                            .schedule(now + Duration::from_secs(1), PROGRESS);
                    }
                    PROGRESS => {}
                    PARK => {}
                    t if MetricsServer::owns(t) => {
                        if let Some(http) = &mut self.http {
                            let (registry, timers) = self.reactor.parts();
                            http.tick(registry, timers, now);
                        }
                    }
                    STATE => {
                        self.state_timer.fired(now);
                        self.save_state_if_dirty();
                        if !self.unwatched.is_empty() {
                            self.watch_dirs(now);
                        }
                        self.recheck_sources(now);
                    }
                    token => self.on_stream_event(
                        token,
                        Ready {
                            token,
                            readable: false,
                            writable: false,
                            closed: false,
                        },
                        now,
                    ),
                }
            }
            let over = self.open_files.count() > self.max_open_files;
            if self.fd_pressure || (over && self.park_round <= now) {
                self.park_round = now + PARK_ROUND;
                self.park_idle_files(now);
                if self.open_files.count() > self.max_open_files {
                    self.reactor.timers.schedule(self.park_round, PARK);
                }
            }
            if std::mem::take(&mut self.save_soon) {
                self.save_state(state::Durability::ProcessCrash);
            }
            if self.dirty && self.state_timer.arm(now + self.state_interval) {
                self.reactor
                    .timers
                    .schedule(now + self.state_interval, STATE);
            }
        }
        self.dirty = true;
        self.save_state_if_dirty();
        if self.abandoned_bytes > 0 {
            crate::warn!(
                "{} bytes of deleted files were abandoned after deleted_hold",
                self.abandoned_bytes
            );
        }
        crate::info!("stopped");
        Ok(())
    }

    fn begin_stop(&mut self, now: Instant) -> Instant {
        self.stopping = true;
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
        let (registry, timers) = self.reactor.parts();
        let mut view = View {
            metrics: &mut self.metrics,
            meters: &self.meters,
            streams: &self.streams,
            sources: &self.sources,
            open_files: self.open_files.count(),
        };
        http.on_event(registry, timers, token, now, &mut view);
    }

    fn with_stream(&mut self, key: Key, now: Instant, f: impl FnOnce(&mut Stream, &mut Ctx<'_>)) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
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
            open_files: &self.open_files,
            fd_pressure: &mut self.fd_pressure,
            meter,
            stream_limit,
            client_limit: self.client_limit.as_mut(),
            throttled: &mut self.throttled,
        };
        f(stream, &mut ctx);
        if !self.throttled.is_zero() {
            self.metrics
                .rate_limited(std::mem::take(&mut self.throttled));
        }
        if stream.is_draining() {
            self.draining.insert(key);
        } else {
            self.draining.remove(&key);
        }
        if stream.completed {
            self.finish_whole(key, now);
        } else if stream.gone() {
            self.drop_gone(key);
        }
        self.grant_slots(now);
    }

    /// One status line for a backfill on a terminal: bytes, rate, ETA.
    fn print_progress(&self, elapsed: Duration) {
        use std::io::Write;
        let in_flight: u64 = self.streams.values().map(Stream::sent).sum();
        let done = self.sent_bytes + in_flight;
        let total = self
            .sources
            .iter()
            .map(|s| s.queued_bytes)
            .sum::<u64>()
            .max(done);
        let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
        let eta = if rate > 0.0 {
            (total - done) as f64 / rate
        } else {
            0.0
        };
        let mib = |b: f64| b / (1024.0 * 1024.0);
        let line = format!(
            "\rsent {:.1} of {:.1} MiB ({} files confirmed), {:.1} MiB/s, ETA {:.0}s   ",
            mib(done as f64),
            mib(total as f64),
            self.sent_files,
            mib(rate),
            eta
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    /// A whole file was confirmed by `250 DONE`: record it as complete,
    /// delete it if configured (only if the path is still that file), and
    /// start the next queued file.
    fn finish_whole(&mut self, key: Key, now: Instant) {
        let Some(stream) = self.streams.remove(key) else {
            return;
        };
        let Some(src) = self
            .sources
            .iter_mut()
            .find(|s| s.in_flight.get(&stream.path) == Some(&key))
        else {
            return;
        };
        src.in_flight.remove(&stream.path);
        let len = stream.file_len().unwrap_or(0);
        if src.delete && stream.path_is_same_file() {
            match std::fs::remove_file(&stream.path) {
                Ok(()) => crate::info!(
                    "{}: sent ({len} bytes, confirmed); deleted",
                    stream.path.display()
                ),
                Err(e) => crate::warn!(
                    "{}: sent ({len} bytes, confirmed) but cannot delete it: {e}",
                    stream.path.display()
                ),
            }
        } else {
            crate::info!("{}: sent ({len} bytes, confirmed)", stream.path.display());
        }
        self.completed.extend(stream.entry());
        self.sent_files += 1;
        self.sent_bytes += len;
        self.dirty = true;
        self.start_sources(now);
    }

    /// Hands free connection slots to streams waiting for one, oldest first.
    fn grant_slots(&mut self, now: Instant) {
        if self.granting {
            return; // called again from inside the loop below
        }
        self.granting = true;
        while self.links.open < self.links.max {
            let Some(key) = self.links.waiting.pop_front() else {
                break;
            };
            self.with_stream(key, now, |s, ctx| s.on_slot_free(ctx));
        }
        self.granting = false;
    }

    /// Forgets a stream started for a `path` glob match whose file is gone.
    fn drop_gone(&mut self, key: Key) {
        let Some(stream) = self.streams.remove(key) else {
            return;
        };
        crate::debug!("{}: gone; no longer followed", stream.path.display());
        self.draining.remove(&key);
        for dw in self.dirs.values_mut() {
            if let Some(keys) = dw.streams.get_mut(&stream.name) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    dw.streams.remove(&stream.name);
                }
            }
        }
        for src in &mut self.sources {
            if src.in_flight.get(&stream.path) == Some(&key) {
                src.in_flight.remove(&stream.path);
            }
        }
    }

    /// Starts queued whole-file sends while slots are free.
    fn start_sources(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        for i in 0..self.sources.len() {
            while let Some(path) = self.sources[i].next_to_start() {
                let src = &self.sources[i];
                let key = self.streams.vacant_key();
                if src.follow {
                    // Not if a stream already reads this file (a configured
                    // path, or one draining it after a rename).
                    let meta = std::fs::metadata(&path);
                    let held = meta
                        .is_ok_and(|m| self.streams.values().any(|s| s.holds(m.dev(), m.ino())));
                    if held || self.streams.values().any(|s| s.path == path) {
                        continue;
                    }
                    let mut stream = Stream::new(
                        key,
                        src.meter,
                        path.clone(),
                        src.svc.clone(),
                        src.meta.clone(),
                        true,
                    );
                    stream.set_ephemeral();
                    let name = stream.name.clone();
                    self.streams.insert(stream);
                    let dir = &self.sources[i].dir;
                    if let Some(dw) = self.dirs.values_mut().find(|d| d.dir == *dir) {
                        dw.streams.entry(name).or_default().push(key);
                    }
                    self.sources[i].in_flight.insert(path, key);
                    self.with_stream(key, now, |s, ctx| {
                        s.check_path(ctx);
                        s.tick(ctx);
                    });
                    continue;
                }
                let stream = Stream::new_whole(
                    key,
                    src.meter,
                    path.clone(),
                    src.svc.clone(),
                    src.meta.clone(),
                    now,
                );
                self.streams.insert(stream);
                self.sources[i].in_flight.insert(path, key);
                self.with_stream(key, now, |s, ctx| s.tick(ctx));
            }
        }
    }

    /// Queues files that finished settling; arms the timer for the rest.
    fn recheck_sources(&mut self, now: Instant) {
        let mut next: Option<Instant> = None;
        for src in &mut self.sources {
            if let Some(at) = src.recheck(now, &self.completed) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.start_sources(now);
        if let Some(at) = next {
            if self.state_timer.arm(at) {
                self.reactor.timers.schedule(at, STATE);
            }
        }
    }

    fn on_stream_event(&mut self, token: Token, _r: Ready, now: Instant) {
        let Some(key) = Key::from_token(token) else {
            return;
        };
        self.with_stream(key, now, |s, ctx| s.on_socket(ctx));
    }

    fn on_inotify(&mut self, now: Instant) {
        let mut buf = std::mem::take(&mut self.inotify_buf);
        // Reused across calls: no allocation per event in steady state.
        let mut hits = std::mem::take(&mut self.inotify_hits);
        hits.clear();
        loop {
            let events = match self.inotify.read(&mut buf) {
                Ok(ev) => ev,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::error!("reading inotify events failed: {e}");
                    break;
                }
            };
            for ev in events {
                if ev.mask & mask::Q_OVERFLOW != 0 {
                    crate::warn!("inotify queue overflowed; re-checking every file");
                    for src in &mut self.sources {
                        if let Err(e) = src.scan(now, &mut self.completed) {
                            crate::warn!("cannot list directory {}: {e}", src.dir.display());
                        }
                    }
                    hits.extend(
                        self.streams
                            .keys()
                            .into_iter()
                            .map(|k| (k, mask::Q_OVERFLOW)),
                    );
                    continue;
                }
                let Some(dw) = self.dirs.get(&ev.watch) else {
                    continue;
                };
                if let Some(name) = ev.name {
                    for &i in &dw.sources {
                        let src = &mut self.sources[i];
                        // Whole files when closed; followed files when they appear.
                        let wanted = if src.follow {
                            mask::CREATE | mask::MOVED_TO
                        } else {
                            mask::CLOSE_WRITE | mask::MOVED_TO
                        };
                        if ev.mask & wanted != 0 && !src.once && src.matches(name) {
                            let path = src.dir.join(name);
                            src.offer(path, true, now, &self.completed);
                        }
                    }
                }
                if let Some(keys) = ev.name.and_then(|n| dw.streams.get(n)) {
                    hits.extend(keys.iter().map(|&k| (k, ev.mask)));
                }
                // A file being drained after a rotation has events under
                // its new name: let draining streams look at every event.
                hits.extend(self.draining.iter().map(|&k| (k, ev.mask)));
                if ev.mask & mask::IGNORED != 0 {
                    if let Some(dw) = self.dirs.remove(&ev.watch) {
                        crate::warn!(
                            "directory {} went away; watching for it to come back",
                            dw.dir.display()
                        );
                        let keys = dw.streams.into_values().flatten().collect();
                        self.unwatched.push((dw.dir, keys, dw.sources));
                    }
                }
            }
        }
        self.inotify_buf = buf;
        self.start_sources(now);
        hits.dedup();
        for &(key, m) in &hits {
            self.with_stream(key, now, |s, ctx| s.on_file_event(m, ctx));
        }
        self.inotify_hits = hits;
        if !self.unwatched.is_empty() && self.state_timer.arm(now + DIR_RETRY) {
            self.reactor.timers.schedule(now + DIR_RETRY, STATE);
        }
    }

    /// Adds directory watches that are still missing; kicks their streams.
    fn watch_dirs(&mut self, now: Instant) {
        for (dir, keys, sources) in std::mem::take(&mut self.unwatched) {
            match self.inotify.add_watch(&dir, DIR_EVENTS) {
                Ok(w) => {
                    for &key in &keys {
                        self.with_stream(key, now, |s, ctx| {
                            s.check_path(ctx);
                            s.tick(ctx);
                        });
                    }
                    for &i in &sources {
                        if let Err(e) = self.sources[i].scan(now, &mut self.completed) {
                            crate::warn!("cannot list directory {}: {e}", dir.display());
                        }
                    }
                    let dw = self.dirs.entry(w).or_insert_with(|| DirWatch {
                        dir,
                        streams: HashMap::new(),
                        sources: Vec::new(),
                    });
                    for key in keys {
                        if let Some(s) = self.streams.get(key) {
                            dw.streams.entry(s.name.clone()).or_default().push(key);
                        }
                    }
                    dw.sources.extend(sources);
                }
                Err(e) => {
                    crate::warn!(
                        "cannot watch directory {}: {e}; retrying every {}s",
                        dir.display(),
                        DIR_RETRY.as_secs()
                    );
                    self.unwatched.push((dir, keys, sources));
                }
            }
        }
        self.recheck_sources(now);
        if !self.unwatched.is_empty() && self.state_timer.arm(now + DIR_RETRY) {
            self.reactor.timers.schedule(now + DIR_RETRY, STATE);
        }
    }

    /// Closes idle followed files, least recently active first, until 90%
    /// of `max_open_files` (or, after EMFILE, 90% of what is open) remain.
    fn park_idle_files(&mut self, now: Instant) {
        let open = self.open_files.count();
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
            if self.open_files.count() <= target {
                break;
            }
            let mut done = false;
            self.with_stream(key, now, |s, ctx| done = s.release_idle(ctx));
            parked += usize::from(done);
        }
        if parked > 0 {
            crate::info!(
                "{parked} idle files parked; {} of at most {} followed files open",
                self.open_files.count(),
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
        let mut entries: Vec<Entry> = self.streams.values().filter_map(Stream::entry).collect();
        entries.extend(self.loaded.iter().cloned());
        entries.extend(self.completed.iter().cloned());
        match state::save(&self.state_file, &entries, durability) {
            Ok(()) if durability == state::Durability::Synced => self.dirty = false,
            Ok(()) => self.dirty = true,
            Err(e) => crate::error!("{e}"),
        }
    }
}

/// `max_open_files`: as configured, or (0) the open-files limit minus
/// what connections and the daemon itself need.
fn max_open_files(configured: usize, max_connections: usize, nofile: u64) -> usize {
    if configured > 0 {
        return configured;
    }
    let limit = usize::try_from(nofile).unwrap_or(usize::MAX);
    limit
        .saturating_sub(max_connections)
        .saturating_sub(64)
        .max(64)
}

/// True when the last component of `p` is a glob pattern.
fn is_glob(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().contains(['*', '?', '[', '{']))
}

/// Makes a configured path absolute against the working directory, so the
/// state file and INIT carry the same path whatever the cwd later is.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
