//! Building the client daemon from its configuration: signal handling,
//! the event loop and inotify instance, the state file, the shared
//! [`Settings`], and one [`Stream`] (a followed path) or [`DirSource`]
//! (a directory, or a `path` glob) per configured `[[stream]]`, each
//! queued for a directory watch that `watch.rs` sets up when `run`
//! starts.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::Interest;

use super::dirsource::DirSource;
use super::failover::Servers;
use super::meter::ServerMeter;
use super::reload::Unit;
use super::stream::{LinkBudget, Settings, Stream};
use super::{meter, ClientDaemon, ClientError, INOTIFY, SIGNALS, WAKER};
use crate::config::client::ServerAddr;
use crate::config::overlap::{self, is_glob, normalize, Names, Reach};
use crate::config::{ClientConfig, Method, OnRotate, Source, StreamConfig};
use crate::metrics::client::StreamLabels;
use crate::metrics::{ClientMetrics, MetricsServer};
use crate::rate::Bucket;
use crate::reactor::sys::inotify::Inotify;
use crate::reactor::sys::signal::{SignalFd, SIGHUP, SIGINT, SIGTERM};
use crate::reactor::{Armed, Key, Reactor, Slots, StopHandle, Supervisor};
use crate::tail::batch::Rules;
use crate::tail::identity::IdKey;
use crate::tail::state::{self, Entry};

impl ClientDaemon {
    /// Loads the state file and sets up watches; `signals` makes SIGTERM and
    /// SIGINT stop the client and tells the service manager named by
    /// `$NOTIFY_SOCKET` ready, stopping and watchdog pings (the binary
    /// wants that; a library user may prefer [`StopHandle`]).
    pub fn new(cfg: ClientConfig, signals: bool) -> Result<ClientDaemon, ClientError> {
        check_streams(&cfg.streams)?;
        let base = open_event_loop(signals)?;
        let loaded = state::load(&cfg.state_file)?;
        let id_key = secret(&cfg.state_file, &loaded)?;
        crate::writable::client(&cfg, crate::writable::Mode::Start)
            .map_err(ClientError::NotWritable)?;
        let (completed, loaded) = loaded.entries.into_iter().partition(|e| e.complete);
        let settings = settings(&cfg, id_key)?;
        let mut daemon = ClientDaemon::assemble(&cfg, base, settings, completed, loaded);
        daemon.serve_metrics(&cfg)?;
        let yields = stream_yields(&cfg.streams, true);
        for (i, (s, yields)) in cfg.streams.iter().zip(yields).enumerate() {
            let unit = daemon.add_stream(i, s, yields)?;
            daemon.units.push(unit);
        }
        daemon.send_only = cfg.streams.iter().all(|s| s.method == Method::Send);
        if signals {
            daemon.supervisor = Supervisor::from_env();
        }
        daemon.config = cfg;
        Ok(daemon)
    }

    /// The daemon with its loop, settings and state, but no streams yet.
    fn assemble(
        cfg: &ClientConfig,
        base: EventLoop,
        settings: Settings,
        completed: Vec<Entry>,
        loaded: Vec<Entry>,
    ) -> ClientDaemon {
        let t = &cfg.tuning;
        let servers = Servers::new(server_names(&cfg.server), cfg.server.failover_after);
        let mut metrics = ClientMetrics::new(&cfg.streams, Instant::now());
        let server_meters = servers
            .names()
            .iter()
            .map(|n| ServerMeter::new(&mut metrics, n))
            .collect();
        ClientDaemon {
            config: cfg.clone(),
            units: Vec::new(),
            reloader: None,
            pending: None,
            hup_again: false,
            nofile: base.nofile,
            servers,
            server_meters,
            reactor: base.reactor,
            signals: base.signals,
            inotify: base.inotify,
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
            inotify_again: false,
            inotify_resting: false,
            inotify_unpolled: false,
            draining: Default::default(),
            loaded,
            sources: Vec::new(),
            completed,
            stopping: false,
            starting: false,
            abandoned_bytes: 0,
            links: LinkBudget {
                open: 0,
                max: t.max_connections,
                waiting: Default::default(),
                plain_until: None,
                outage_since: None,
                cap: None,
                full_said: None,
            },
            carriers: Default::default(),
            granting: false,
            send_only: false,
            sent_files: 0,
            sent_bytes: 0,
            progress: Default::default(),
            pool: Vec::new(),
            open_files: 0,
            max_open_files: max_open_files(t.max_open_files, t.max_connections, base.nofile),
            fd_pressure: false,
            listings: Default::default(),
            park_round: Instant::now(),
            metrics,
            meters: Vec::new(),
            limits: Vec::new(),
            client_limit: t.rate_limit.map(|l| Bucket::new(l, Instant::now())),
            throttled: Duration::ZERO,
            http: None,
            stop: base.stop,
            supervisor: Supervisor::default(),
            saving: Default::default(),
            dir_errors: Default::default(),
        }
    }

    /// Binds the `/metrics` endpoint when `[prometheus]` is enabled.
    fn serve_metrics(&mut self, cfg: &ClientConfig) -> Result<(), ClientError> {
        if cfg.prometheus.enabled {
            let addr = cfg.prometheus.addr().ok_or_else(|| {
                ClientError::Config(format!(
                    "`prometheus.listen` \"{}\": expected ip:port or :port",
                    cfg.prometheus.listen
                ))
            })?;
            let http =
                MetricsServer::bind(addr, self.reactor.registry()).map_err(ClientError::Metrics)?;
            self.http = Some(http);
        }
        Ok(())
    }

    /// Adds configured stream #`i + 1`: a followed [`Stream`], or a
    /// [`DirSource`] that leaves the names `yields` to other streams,
    /// queued for a directory watch.
    pub(super) fn add_stream(
        &mut self,
        i: usize,
        s: &StreamConfig,
        yields: Vec<Names>,
    ) -> Result<Unit, ClientError> {
        check_stream(i, s)?;
        let once = s.method == Method::Send;
        let meter = self.stream_meter(s);
        match &s.source {
            Source::Path(p) if !once && is_glob(p) => {
                self.add_glob(i, s, p, meter, yields)?;
                return Ok(Unit::Source(self.sources.len() - 1));
            }
            Source::Path(p) if !once => return Ok(Unit::Stream(self.add_followed(s, p, meter))),
            // A backfilled `path` (one name) or a `directory` source.
            Source::Path(_) | Source::Directory { .. } => {}
        }
        let Reach { dir, names } = Reach::of(s);
        self.sources.push(
            DirSource::new(
                dir.clone(),
                names,
                once,
                s.svc.clone(),
                s.meta.clone(),
                s.delete,
                meter,
            )
            .yielding(yields)
            .opening(
                self.settings.follow_symlinks,
                self.metrics.refused_files.clone(),
            ),
        );
        self.add_unwatched(dir, None, Some(self.sources.len() - 1));
        Ok(Unit::Source(self.sources.len() - 1))
    }

    /// The meter index for configured stream `s` (shared by streams with
    /// the same labels), with its `rate_limit` bucket set up.
    pub(super) fn stream_meter(&mut self, s: &StreamConfig) -> usize {
        let label = StreamLabels::for_config(s);
        let meter = meter::meter_for(&mut self.meters, &self.metrics, label);
        if self.limits.len() < self.meters.len() {
            self.limits.resize(self.meters.len(), None);
        }
        if let Some(l) = s.rate_limit {
            self.limits[meter] = Some(Bucket::new(l, Instant::now()));
        }
        meter
    }

    /// A followed `path` whose file name is a glob (stream #`i + 1`): a
    /// following [`DirSource`] over its directory.
    fn add_glob(
        &mut self,
        i: usize,
        s: &StreamConfig,
        p: &Path,
        meter: usize,
        yields: Vec<Names>,
    ) -> Result<(), ClientError> {
        let path = normalize(p);
        let dir = parent_dir(&path);
        let (name, glob) = path_glob(i, &path)?;
        let mut src = DirSource::new(
            dir.clone(),
            Names::Glob {
                matcher: glob.compile_matcher(),
                text: name,
            },
            false,
            s.svc.clone(),
            s.meta.clone(),
            false,
            meter,
        )
        .yielding(yields)
        .opening(
            self.settings.follow_symlinks,
            self.metrics.refused_files.clone(),
        );
        src.follow = true;
        self.sources.push(src);
        self.add_unwatched(dir, None, Some(self.sources.len() - 1));
        Ok(())
    }

    /// A followed `path`: one [`Stream`], queued for a watch on its
    /// directory.
    fn add_followed(&mut self, s: &StreamConfig, p: &Path, meter: usize) -> Key {
        let path = normalize(p);
        let key = self.streams.vacant_key();
        let follow = s.onrotate == OnRotate::Follow;
        self.streams.insert(Stream::new(
            key,
            meter,
            path.clone(),
            s.svc.clone(),
            s.meta.clone(),
            self.settings.tail(follow, false),
        ));
        let dir = parent_dir(&path);
        self.add_unwatched(dir, Some(key), None);
        key
    }
}

/// What the client refuses in a configuration before it starts (or
/// reloads) anything: a file named by two streams, and what this version
/// does not support.
pub(super) fn check_streams(streams: &[StreamConfig]) -> Result<(), ClientError> {
    if let Some((first, second)) = overlap::duplicate(streams) {
        return Err(ClientError::Config(format!(
            "streams #{} and #{} read the same file {}; a file can belong to only one stream",
            first + 1,
            second + 1,
            Reach::of(&streams[second])
        )));
    }
    streams
        .iter()
        .enumerate()
        .try_for_each(|(i, s)| check_stream(i, s))
}

/// Configured stream #`i + 1` is one this version can run.
fn check_stream(i: usize, s: &StreamConfig) -> Result<(), ClientError> {
    match &s.source {
        Source::Path(_) if s.delete && s.method != Method::Send => Err(ClientError::Unsupported {
            stream: i + 1,
            what: "`delete = true` on a followed `path`",
        }),
        Source::Path(p) if s.method != Method::Send && is_glob(p) => {
            path_glob(i, &normalize(p)).map(drop)
        }
        _ => Ok(()),
    }
}

/// The file-name glob of a followed `path` (stream #`i + 1`), normalized;
/// a pattern in its directory is not supported.
fn path_glob(i: usize, path: &Path) -> Result<(String, globset::Glob), ClientError> {
    if is_glob(&parent_dir(path)) {
        return Err(ClientError::Unsupported {
            stream: i + 1,
            what: "a glob in a directory of `path` (only the file name may be a pattern)",
        });
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
            ClientError::Config(format!("stream #{}: `path` pattern {name:?}: {e}", i + 1))
        })?;
    Ok((name, glob))
}

/// For each configured stream, the names it leaves to streams ranked
/// before it (see [`overlap::claims`]); with `log`, each overlap is
/// logged once.
pub(super) fn stream_yields(streams: &[StreamConfig], log: bool) -> Vec<Vec<Names>> {
    let reaches: Vec<Reach> = streams.iter().map(Reach::of).collect();
    let claims = overlap::claims(&reaches);
    if log {
        for o in &claims.overlaps {
            crate::info!("{}", o.describe(&reaches));
        }
    }
    let each = claims.yields.iter();
    each.map(|ys| ys.iter().map(|&j| reaches[j].names.clone()).collect())
        .collect()
}

/// The event loop and the event sources every client has. (Fields drop in
/// the reverse order of their creation, as the locals they were.)
struct EventLoop {
    stop: StopHandle,
    inotify: Inotify,
    reactor: Reactor,
    signals: Option<SignalFd>,
    /// The open-files limit, raised as far as allowed (1024 if that failed).
    nofile: u64,
}

/// Maps an I/O error to a [`ClientError::Setup`] saying what failed.
fn setup(what: &'static str) -> impl FnOnce(std::io::Error) -> ClientError {
    move |source| ClientError::Setup { what, source }
}

/// Creates the signal fd (if `signals`), raises the open-files limit, and
/// creates the event loop with inotify, signals and the waker registered.
fn open_event_loop(signals: bool) -> Result<EventLoop, ClientError> {
    let signals = if signals {
        Some(SignalFd::new(&[SIGINT, SIGTERM, SIGHUP]).map_err(setup("set up signal handling"))?)
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
    Ok(EventLoop {
        stop,
        inotify,
        reactor,
        signals,
        nofile,
    })
}

/// The shared [`Settings`] from the configuration (and the host name, if
/// not configured).
pub(super) fn settings(cfg: &ClientConfig, id_key: IdKey) -> Result<Settings, ClientError> {
    let hostname = match &cfg.hostname {
        Some(h) => h.clone(),
        None => crate::reactor::sys::host::hostname().map_err(setup("read the host name"))?,
    };
    let t = &cfg.tuning;
    Ok(Settings {
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
        multiplex: cfg.server.multiplex,
        token: cfg.server.token.clone(),
        follow_symlinks: cfg.follow_symlinks,
        id_key,
        tls: cfg
            .tls
            .as_ref()
            .map(|tls| crate::tls::client_config(tls, &cfg.server.hostname))
            .transpose()
            .map_err(ClientError::Tls)?,
    })
}

/// The servers to connect to: each configured `host:port`, or with
/// `resolve_all` each address a name resolves to (a name that does not
/// resolve now stays one server, resolved at every connect).
pub(super) fn server_names(cfg: &ServerAddr) -> Vec<String> {
    use std::net::ToSocketAddrs;
    let mut names: Vec<String> = Vec::new();
    for ep in &cfg.servers {
        let text = ep.to_string();
        let addrs: Vec<String> = match cfg.resolve_all {
            false => Vec::new(),
            true => match (ep.host.as_str(), ep.port).to_socket_addrs() {
                Ok(a) => a.map(|a| a.to_string()).collect(),
                Err(e) => {
                    crate::warn!("server {text}: cannot resolve it now ({e}); using the name, resolved at every connect");
                    Vec::new()
                }
            },
        };
        let found = addrs.len();
        for n in if addrs.is_empty() {
            vec![text.clone()]
        } else {
            addrs
        } {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if found > 1 {
            crate::info!("server {text}: {found} addresses, each one a server (resolve_all)");
        }
    }
    names
}

/// The client's secret, kept beside the state file; on first start (or
/// after an upgrade) a new one from the kernel, saved before any id is
/// keyed with it, so a crash right after still finds the same secret.
fn secret(path: &Path, state: &state::State) -> Result<IdKey, ClientError> {
    if state.legacy {
        crate::info!(
            "state file {}: written by an earlier version (no checksum); loaded as it is, and written with one from now on",
            crate::log::esc(&path)
        );
    }
    if let Some(k) = state::load_key(path)? {
        return Ok(k);
    }
    let mut k = IdKey([0; 32]);
    crate::reactor::sys::random::fill(&mut k.0)
        .map_err(setup("read random bytes for the client's secret"))?;
    state::save_key(path, &k)?;
    Ok(k)
}

/// The directory holding `path` (`/` when it has none).
fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `max_open_files`: as configured, or (0) the open-files limit minus
/// what connections and the daemon itself need.
pub(super) fn max_open_files(configured: usize, max_connections: usize, nofile: u64) -> usize {
    if configured > 0 {
        return configured;
    }
    let limit = usize::try_from(nofile).unwrap_or(usize::MAX);
    limit
        .saturating_sub(max_connections)
        .saturating_sub(64)
        .max(64)
}
