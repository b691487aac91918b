//! loghamsterd: accepts connections on one port, runs the handshake, routes
//! each stream to an output and writes what arrives there.
//!
//! One thread, one [`Reactor`]. Each connection is a `conn::Conn` in a
//! generation-tagged slab; its token is its slab key, so an event for a
//! connection that was closed and whose slot was reused is dropped.
//!
//! ## Life of a connection
//! `Handshake` (greeting sent, waiting for INIT, bounded by
//! `handshake_timeout` and [`crate::proto::MAX_LINE`]) → `Streaming` (bytes are
//! written to the output line by line; with `ack:1` the server reports the
//! offset written so far with `ACK <n>` lines) → `Closing` (an error line or
//! the final ACK was sent; the rest of the input is read and discarded for a
//! short while so the peer sees the line instead of a reset).
//!
//! ## Zero-copy
//! A stream that has its output to itself is moved from the socket into
//! the file with `splice(2)` through one pipe the whole server shares,
//! without a user-space copy (`conn::splice`); it goes back to line-aligned
//! writes as soon as a second stream joins the output. The pipe is empty
//! between turns, so offsets, `ACK`s, checkpoints and `250 DONE` count
//! exactly the bytes in the output on both paths. A splicing connection
//! moves at most a quantum per turn and is then served again after the
//! next poll (`Step::again`), behind whatever else became ready.
//!
//! ## Resume
//! A stream that names its file identity (`id:`) and first offset
//! (`offset:`) is tracked in memory by `(host, path, id)`. A reconnecting
//! client is told the offset the server already holds (`200 ... offset:M`)
//! and continues from there, so a broken connection neither loses nor
//! duplicates lines while the server runs. A newer connection for the same
//! stream replaces an older one that is still open.
//!
//! The book of resumable streams (`book`) notes which entries changed, so
//! a checkpoint round (`commit`) writes a journal record of only those
//! (`crate::sink::journal`); streams not connected for `stream_retention`
//! are forgotten.
//!
//! ## Who may write what
//! Each INIT is identified (certificate names, a named token, or the
//! source address) and checked against the `[[allow]]` rules; a resumable
//! stream belongs to the identity that created it, and only that one may
//! resume it or take it over (`auth`). Without rules the server is open
//! and says so once at start.
//!
//! ## Bounds
//! Nothing one peer sends may cost the others: connections are limited in
//! total (within the descriptors the server has, so a checkpoint never
//! meets `EMFILE`) and per source address (`admit`); a stream idle for
//! `idle_timeout` is asked to finish (`conn::idle`); decoded bytes count
//! against the per-turn quantum and decoders share one memory budget
//! (`conn::inflate`); a stream offset cannot pass what a checkpoint can
//! hold; no route reaches the state files (`crate::sink::route`).
//!
//! ## Signals
//! SIGTERM/SIGINT: stop accepting, ask every acknowledging client to finish
//! (`421`), write what they send until they close or `shutdown_timeout`
//! passes, then exit. SIGHUP: reopen every output file, then load the
//! configuration again and apply routes, limits, `[[allow]]` rules and
//! `[tls]` to new connections without dropping any (`reload`); a bad
//! file is refused and the running configuration stays.
//!
//! ## TLS
//! With `[tls]` a connection's first byte tells a TLS client from a plain
//! one (`conn::hello`); a TLS connection reads and writes through
//! [`crate::tls::Transport`] and never takes the zero-copy path.

mod admit;
pub mod api;
pub mod auth;
mod book;
mod commit;
mod conn;
mod durable;
mod mux;
mod reload;
pub use reload::Reloader;
#[doc(hidden)]
pub mod harness;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpListener;
use mio::{Interest, Token};

use crate::config::server::Engine;
use crate::config::{ServerConfig, SyncPolicy};
use crate::metrics::server::LimitHit;
use crate::metrics::{MetricsServer, ServerMetrics};
use crate::reactor::sys::retry;
use crate::reactor::sys::signal::{SignalFd, SIGHUP, SIGINT, SIGTERM};
use crate::reactor::sys::uring::Ring;
use crate::reactor::{Armed, Key, Reactor, Slots, StopHandle, Supervisor};
use crate::sink::checkpoint;
use crate::sink::jetstream::{Event as JetEvent, JetOutputs};
use crate::sink::journal::Store;
use crate::sink::output::Outputs;
use crate::sink::route::Router;
use crate::tls::Acceptor;
use admit::Gate;
use book::Book;
use commit::{recover, Round};
use conn::{Conn, ConnPhase, Splicer};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
const SYNC: Token = Token(3);
/// The io_uring's descriptor: output syncs completed.
const RING: Token = Token(4);
/// Timer: look for idle connections (`idle_timeout`).
const IDLE: Token = Token(5);
/// Timer: tell systemd's watchdog the loop still turns.
const WATCHDOG: Token = Token(6);

/// How long a server waits for clients to finish after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of the one read buffer shared by all connections.
/// Accept queue length asked for (the kernel caps it at somaxconn): a
/// client with thousands of files reconnects them all at once.
const LISTEN_BACKLOG: i32 = 4096;
const READ_CHUNK: usize = 256 * 1024;
/// Most channels one multiplexed connection may hold open (the
/// connection limits apply to them as well).
const MUX_MAX_CHANNELS: usize = 1 << 16;

/// Why the server could not start or had to stop.
#[derive(Debug)]
pub enum ServerError {
    Bind {
        addr: SocketAddr,
        source: io::Error,
    },
    Setup {
        what: &'static str,
        source: io::Error,
    },
    State(checkpoint::CheckpointError),
    Recovery {
        source: io::Error,
    },
    /// `[tls]`'s files could not be loaded.
    Tls(crate::tls::TlsError),
    /// The state file or an output directory cannot be written (found
    /// at start-up).
    NotWritable(crate::writable::NotWritable),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServerError::Setup { what, source } => write!(f, "cannot {what}: {source}"),
            ServerError::State(e) => e.fmt(f),
            ServerError::Recovery { source } => write!(f, "crash recovery failed: {source}"),
            ServerError::Tls(e) => e.fmt(f),
            ServerError::NotWritable(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ServerError {}

/// Identity of a resumable stream: host, path and the client's file id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StreamKey {
    pub host: String,
    pub path: String,
    pub id: String,
}

/// The parts of the server that connection handlers borrow together.
pub(crate) struct Shared {
    pub cfg: ServerConfig,
    pub router: Router,
    pub outputs: Outputs,
    pub resume: Book,
    pub scratch: Vec<u8>,
    /// The decode buffer of compressed streams (one [`crate::codec::DECODE_CHUNK`],
    /// shared: a stream's decoded bytes go to its writer at once).
    pub plain: Vec<u8>,
    /// `decoder_memory`: what all decoders may hold together.
    pub decoders: conn::Budget,
    /// The zero-copy path's pipe and state (see `conn::splice`).
    pub splice: Splicer,
    pub stopping: bool,
    /// Where checkpoints go (`None`: offsets live in memory only).
    store: Option<Store>,
    /// When idle streams are next looked at for `stream_retention`.
    next_expiry: Instant,
    /// A connection asks for a checkpoint as soon as possible.
    pub commit_requested: bool,
    /// Some stream offset moved since the last checkpoint.
    pub dirty: bool,
    /// Output writes that failed (disk full, ...), since start.
    pub write_errors: u64,
    /// Connections replaced by a newer one for the same stream whose output
    /// reference was already dropped (see `Conn::release`).
    pub evicted: std::collections::HashSet<Key>,
    /// The last checkpoint attempt failed (logged once until it works).
    commit_failing: bool,
    /// Outputs that could not be opened, by the error last logged: one
    /// ERROR per output and cause, not one per connection attempt.
    pub unopenable: crate::once::SaidBy<std::path::PathBuf, io::ErrorKind>,
    /// `engine`: the ring that syncs outputs without stalling the loop
    /// (`None`: blocking `fdatasync`).
    ring: Option<Ring>,
    /// The thread that makes a whole file system durable with one
    /// `syncfs` when many of its outputs are dirty (`None`: `sync =
    /// "none"`, or a kernel whose `syncfs` does not report errors).
    syncer: Option<durable::Syncer>,
    /// The checkpoint round waiting for its syncs, if any.
    round: Option<Round>,
    /// What the server counts (served when `[prometheus]` is enabled).
    pub metrics: ServerMetrics,
    /// `[tls]`: what new connections start TLS with (reloaded on SIGHUP).
    pub tls: Option<Acceptor>,
    /// The JetStream outputs (`[output.NAME.jetstream]`), by output index.
    pub jet: JetOutputs,
}

pub struct Server {
    reactor: Reactor,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Option<SignalFd>,
    stop: StopHandle,
    conns: Slots<Conn>,
    shared: Shared,
    id_prefix: String,
    next_id: u64,
    deadline: Option<Instant>,
    sync_timer: Armed,
    /// Connections to serve again right after the next poll (they stopped
    /// at their quantum; see `conn::Step::again`).
    again: Vec<Token>,
    /// Multiplexed connections with frames to write this turn (see `mux`).
    mux_dirty: Vec<Key>,
    /// One channel's frames on their way to its carrier (reused).
    frames: Vec<u8>,
    /// The `/metrics` endpoint (`[prometheus]`).
    http: Option<MetricsServer>,
    /// Connection limits (see `admit`).
    gate: Gate,
    /// systemd's notification socket (`Type=notify`, `WatchdogSec=`).
    supervisor: Supervisor,
    /// Loads the configuration again on SIGHUP (see `reload`).
    reloader: Option<reload::Reloader>,
    /// The error `accept` last logged (once until it changes or an
    /// accept works, not once per connection attempt).
    accept_error: crate::once::Said<io::ErrorKind>,
}

impl Server {
    /// Starts building a server from flags rather than a config file.
    pub fn builder() -> api::ServerBuilder {
        api::ServerBuilder::default()
    }

    /// Binds the listener and prepares the loop; nothing runs until
    /// [`run`](Self::run). With `signals`, SIGTERM/SIGINT stop the server,
    /// SIGHUP reopens its outputs, and the service manager named by
    /// `$NOTIFY_SOCKET` is told ready, stopping and watchdog pings (the
    /// binary wants that; a library user may prefer [`StopHandle`]).
    pub fn bind(cfg: ServerConfig, signals: bool) -> Result<Server, ServerError> {
        let setup = |what| move |source| ServerError::Setup { what, source };
        let signals_wanted = signals;
        let signals = if signals {
            Some(
                SignalFd::new(&[SIGINT, SIGTERM, SIGHUP])
                    .map_err(setup("set up signal handling"))?,
            )
        } else {
            None
        };
        // A connection per stream.
        let fd_limit = match crate::reactor::sys::host::raise_nofile_limit() {
            Ok(n) => Some(n),
            Err(e) => {
                crate::warn!("cannot raise the open files limit: {e}");
                None
            }
        };
        let gate = Gate::new(&cfg.limits, fd_limit);
        let tls = cfg
            .tls
            .as_ref()
            .map(Acceptor::load)
            .transpose()
            .map_err(ServerError::Tls)?;
        let reactor = Reactor::new(1024).map_err(setup("create the event loop"))?;
        let addr = cfg.listen;
        let mut listener =
            TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        if let Err(e) = crate::reactor::sys::net::set_listen_backlog(&listener, LISTEN_BACKLOG) {
            crate::warn!("cannot raise the listen backlog: {e}");
        }
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let reg = reactor.registry();
        reg.register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(setup("register the listener"))?;
        if let Some(s) = &signals {
            reg.register(
                &mut mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd(s)),
                SIGNALS,
                Interest::READABLE,
            )
            .map_err(setup("register the signal descriptor"))?;
        }
        let stop = StopHandle::new(reg, WAKER).map_err(setup("create a waker"))?;
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let ring = match (cfg.engine, cfg.sync) {
            (_, SyncPolicy::None) | (Engine::Epoll, _) => None,
            (engine, _) => {
                match Ring::new(64) {
                    Ok(ring) => {
                        reg.register(
                            &mut mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&ring)),
                            RING,
                            Interest::READABLE,
                        )
                        .map_err(setup("register the io_uring"))?;
                        crate::info!("outputs are synced with io_uring (engine = {engine:?})");
                        Some(ring)
                    }
                    Err(e) if engine == Engine::IoUring => {
                        return Err(ServerError::Setup {
                            what: "set up io_uring (engine = \"io_uring\")",
                            source: e,
                        })
                    }
                    Err(e) => {
                        crate::info!("io_uring unavailable ({e}); outputs are synced with blocking fdatasync");
                        None
                    }
                }
            }
        };
        let metrics = ServerMetrics::new(&cfg);
        let http = if cfg.prometheus.enabled {
            let listen = &cfg.prometheus.listen;
            let addr = cfg.prometheus.addr().ok_or_else(|| ServerError::Setup {
                what: "parse prometheus.listen",
                source: io::Error::new(io::ErrorKind::InvalidInput, listen.clone()),
            })?;
            Some(
                MetricsServer::bind(addr, reactor.registry()).map_err(|e| match e {
                    crate::metrics::http::HttpError::Bind { addr, source } => {
                        ServerError::Bind { addr, source }
                    }
                    crate::metrics::http::HttpError::Register { source } => ServerError::Setup {
                        what: "register the metrics listener",
                        source,
                    },
                })?,
            )
        } else {
            None
        };
        crate::writable::server(&cfg, crate::writable::Mode::Start)
            .map_err(ServerError::NotWritable)?;
        let (store, resume) = recover(&cfg)?;
        // The JetStream client threads wake the loop through its one waker.
        let jet = JetOutputs::start(&cfg, &stop.waker(), &metrics.jetstream)
            .map_err(setup("start a JetStream client thread"))?;
        let syncer = start_syncer(&cfg, &stop);
        let mut outputs = Outputs::default();
        outputs.sync_on_close = cfg.sync != SyncPolicy::None;
        let decoders = conn::Budget::new(cfg.limits.decoder_memory, metrics.decoder_memory.clone());
        let shared = Shared {
            decoders,
            router: Router::new(&cfg),
            cfg,
            outputs,
            resume,
            scratch: vec![0; READ_CHUNK],
            plain: Vec::with_capacity(crate::codec::DECODE_CHUNK),
            splice: Splicer::new(),
            stopping: false,
            store,
            next_expiry: Instant::now(),
            commit_requested: false,
            dirty: false,
            write_errors: 0,
            evicted: Default::default(),
            commit_failing: false,
            unopenable: Default::default(),
            ring,
            syncer,
            round: None,
            metrics,
            tls,
            jet,
        };
        Ok(Server {
            reactor,
            listener: Some(listener),
            local_addr,
            signals,
            stop,
            conns: Slots::default(),
            shared,
            id_prefix: format!("{started:x}"),
            next_id: 0,
            deadline: None,
            sync_timer: Armed::default(),
            gate,
            http,
            again: Vec::new(),
            mux_dirty: Vec::new(),
            frames: Vec::new(),
            accept_error: Default::default(),
            supervisor: match signals_wanted {
                true => Supervisor::from_env(),
                false => Supervisor::default(),
            },
            reloader: None,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs until SIGTERM/SIGINT and the following drain are done.
    pub fn run(mut self) -> Result<(), ServerError> {
        crate::info!(listen = self.local_addr; "listening on {}", self.local_addr);
        if self.shared.cfg.auth.is_open() {
            crate::warn!(
                "open server: no [[allow]] rules, so anyone who can reach {} may write any host's streams to any output (see the README, \"Security\")",
                self.local_addr
            );
        }
        if let Some(tls) = &self.shared.tls {
            crate::info!(
                "TLS: certificate {} ({}); {}; {}",
                tls.settings.cert.display(),
                tls.describes,
                match &tls.settings.client_ca {
                    Some(ca) => format!("client certificates required (CA {})", ca.display()),
                    None => "no client certificates".into(),
                },
                if tls.require {
                    "plain TCP refused"
                } else {
                    "plain TCP accepted too"
                }
            );
        }
        if let Some(why) = &self.gate.lowered {
            crate::info!("{why}");
        }
        if let Some(http) = &self.http {
            crate::info!("serving metrics on http://{}/metrics", http.local_addr());
        }

        let mut ready = Vec::with_capacity(1024);
        let first_sweep =
            Instant::now() + admit::sweep_interval(self.shared.cfg.limits.idle_timeout);
        self.reactor.timers.schedule(first_sweep, IDLE);
        self.supervisor
            .ready(&format!("listening on {}", self.local_addr));
        if let Some(at) = self.supervisor.first_ping(Instant::now()) {
            self.reactor.timers.schedule(at, WATCHDOG);
        }
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.deadline {
                if self.conns.is_empty() || now >= deadline {
                    break;
                }
            }
            self.reactor
                .wait(&mut ready, now)
                .map_err(|source| ServerError::Setup {
                    what: "wait for events",
                    source,
                })?;
            self.dispatch(&ready, Instant::now());
        }
        let left = self.conns.len();
        for key in self.conns.keys() {
            self.close(key);
        }
        if self.shared.dirty || self.shared.store.is_some() {
            self.shared.commit();
        }
        match left {
            0 => crate::info!("stopped"),
            n => crate::warn!("stopped; {n} connections were cut off at the deadline"),
        }
        Ok(())
    }

    /// One turn of the loop after a poll: hands each ready token to its
    /// owner, runs the timers due at `now`, the checkpoint a connection
    /// asked for, and arranges the next sync and the connections to serve
    /// again. The only clock it knows is `now`.
    fn dispatch(&mut self, ready: &[Token], now: Instant) {
        for &token in ready {
            match token {
                LISTENER => self.accept(now),
                SIGNALS => self.on_signals(now),
                WAKER => {
                    if self.stop.requested() {
                        self.begin_stop("stop requested", now);
                    }
                    self.on_jet(now);
                    self.on_syncfs(now);
                }
                RING => self.on_ring(now),
                t if MetricsServer::owns(t) => {
                    if let Some(http) = &mut self.http {
                        let (registry, timers) = self.reactor.parts();
                        http.on_event(registry, timers, t, now, &mut self.shared.metrics);
                    }
                }
                token => self.on_conn_event(token, now),
            }
        }
        while let Some(token) = self.reactor.timers.pop_expired(now) {
            if MetricsServer::owns(token) {
                if let Some(http) = &mut self.http {
                    let (registry, timers) = self.reactor.parts();
                    http.tick(registry, timers, now);
                }
                continue;
            }
            if token == WATCHDOG {
                if let Some(next) = self.supervisor.ping(now) {
                    self.reactor.timers.schedule(next, WATCHDOG);
                }
                continue;
            }
            if token == IDLE {
                self.shared.expire_streams(now);
                let next = self.sweep_idle(now);
                self.reactor.timers.schedule(next, IDLE);
                continue;
            }
            if token == SYNC {
                self.sync_timer.fired(now);
                if self.shared.dirty {
                    self.commit_and_ack(now);
                }
                continue;
            }
            self.on_conn_event(token, now);
        }
        if self.shared.commit_requested {
            self.commit_and_ack(now);
        }
        let next = now + self.shared.cfg.sync_interval;
        if self.shared.dirty && self.sync_timer.arm(next) {
            self.reactor.timers.schedule(next, SYNC);
        }
        self.flush_muxes(now);
        // Due now: the next poll does not sleep, serves whatever else is
        // ready first, then these connections through the timer loop.
        for token in self.again.drain(..) {
            self.reactor.timers.schedule(now, token);
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match retry(|| listener.accept()) {
                Ok((sock, peer)) => {
                    if self.accept_error.clear() {
                        crate::info!("accepting connections again");
                    }
                    match self.gate.check(self.conns.len(), peer.ip()) {
                        None => self.admit(sock, peer, now),
                        Some(hit) => self.refuse(sock, peer, hit, now),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if admit::out_of_descriptors(&e) && self.gate.release_spare() => {
                    // Accept one with the spare descriptor and refuse it, so
                    // the queue moves (see `admit`).
                    let taken = self.listener.as_ref().map(|l| retry(|| l.accept()));
                    if let Some(Ok((sock, peer))) = taken {
                        self.refuse(sock, peer, LimitHit::Descriptors, now);
                    }
                    self.gate.restore_spare();
                }
                Err(e) => {
                    // EMFILE without a spare, and friends: log and retry on
                    // the next event (said once per error).
                    match self.accept_error.say(e.kind()) {
                        true => crate::warn!("accept failed: {e}; retrying at every connection attempt (said again only if the error changes)"),
                        false => crate::debug!("accept failed again: {e}"),
                    }
                    return;
                }
            }
        }
    }

    /// Closes a connection the limits do not allow, after one status line.
    fn refuse(
        &mut self,
        mut sock: mio::net::TcpStream,
        peer: SocketAddr,
        hit: LimitHit,
        now: Instant,
    ) {
        admit::refuse(&mut sock, admit::refusal(hit));
        self.shared.metrics.connections_refused.inc();
        self.shared.metrics.limit_hit(hit);
        if self.gate.should_log(peer.ip(), now) {
            crate::warn!(peer = peer; "{}", admit::describe(hit, peer, &self.gate));
        }
    }

    fn admit(&mut self, mut sock: mio::net::TcpStream, peer: SocketAddr, now: Instant) {
        self.next_id += 1;
        let stream_id = format!("{}-{}", self.id_prefix, self.next_id);
        let key = self.conns.vacant_key();
        if let Err(e) = self.reactor.registry().register(
            &mut sock,
            key.token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            crate::warn!(peer = peer; "cannot register connection from {peer}: {e}");
            self.shared.metrics.connections_refused.inc();
            return;
        }
        self.gate.opened(peer.ip());
        self.shared.metrics.connections_accepted.inc();
        self.shared.metrics.connections_open.inc();
        let deadline = now + self.shared.cfg.handshake_timeout;
        let mut conn = Conn::new(sock, peer, stream_id, deadline);
        crate::debug!(peer = peer; "{peer}: connected (STREAMID {})", conn.stream_id);
        if self.shared.tls.is_some() {
            // TLS or plain: the first byte decides (see `conn::hello`).
            conn.expect_hello(now + conn::HELLO_WAIT);
        } else {
            conn.send_greeting();
        }
        self.reactor.timers.schedule(deadline, key.token());
        let inserted = self.conns.insert(conn);
        debug_assert_eq!(inserted, key);
        self.on_conn_event(key.token(), now);
    }

    fn on_conn_event(&mut self, token: Token, now: Instant) {
        let Some(key) = Key::from_token(token) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // Every line this connection's handlers log names its peer.
        let _log = crate::log_scope!(peer = conn.peer);
        if conn.mux.is_some() {
            return self.serve_mux(key, now);
        }
        if self.reactor.read_closed(token) {
            conn.peer_closed();
        }
        let step = conn.on_event(key, now, &mut self.shared);
        let carrier = conn.mux.is_some();
        self.apply(key, step);
        if carrier {
            // It just answered INIT MUX: frames may have come behind it.
            self.serve_mux(key, now);
        }
    }

    /// Events from the JetStream outputs, each to its connection.
    fn on_jet(&mut self, now: Instant) {
        let mut events = Vec::new();
        self.shared.jet.drain(|e| events.push(e));
        for e in events {
            let conn = match &e {
                JetEvent::Acked { conn, .. }
                | JetEvent::PublishFailed { conn, .. }
                | JetEvent::Looked { conn, .. } => *conn,
                JetEvent::Connected { .. } | JetEvent::Disconnected => continue,
            };
            let Some(key) = Key::from_token(Token(conn)) else {
                continue;
            };
            let Some(c) = self.conns.get_mut(key) else {
                continue; // closed meanwhile
            };
            let _log = crate::log_scope!(peer = c.peer);
            let step = c.on_jet_event(e, now, &mut self.shared);
            self.apply(key, step);
        }
    }

    /// Does what a connection's handler asked for (and for a channel,
    /// hands what it wrote to its carrier: see `mux`).
    fn apply(&mut self, key: Key, step: conn::Step) {
        self.pump(key);
        let token = key.token();
        if let Some(at) = step.wake_at {
            self.reactor.timers.schedule(at, token);
        }
        if step.again {
            self.again.push(token);
        }
        if let Some(old) = step.replaced {
            self.close(old);
        }
        if step.close {
            self.close(key);
        }
    }

    fn close(&mut self, key: Key) {
        let Some(mut conn) = self.conns.remove(key) else {
            return;
        };
        self.shared.metrics.connections_open.dec();
        self.gate.closed(conn.peer.ip());
        let _ = self.reactor.registry().deregister(&mut conn.sock);
        crate::debug!(peer = conn.peer; "{}: closed ({})", conn.peer, conn.summary());
        conn.release(key, &mut self.shared);
        if let Some(carrier) = conn.carrier {
            self.channel_closed(carrier, key, &mut conn);
        }
        self.carrier_closed(&mut conn);
    }

    fn on_signals(&mut self, now: Instant) {
        loop {
            let Some(signals) = &self.signals else { return };
            match signals.read() {
                Ok(Some(SIGHUP)) => self.on_hup(),
                Ok(Some(sig)) => {
                    self.begin_stop(if sig == SIGINT { "SIGINT" } else { "SIGTERM" }, now)
                }
                Ok(None) => return,
                Err(e) => {
                    crate::error!("reading signals failed: {e}");
                    return;
                }
            }
        }
    }

    fn begin_stop(&mut self, why: &str, now: Instant) {
        if self.deadline.is_some() {
            return;
        }
        match self.conns.len() {
            0 => crate::info!("{why}: stopping"),
            n => crate::info!("{why}: stopping; letting {n} connections finish"),
        }
        self.supervisor.stopping();
        if let Some(mut l) = self.listener.take() {
            let _ = self.reactor.registry().deregister(&mut l);
        }
        self.shared.stopping = true;
        let deadline = now + SHUTDOWN_TIMEOUT;
        self.deadline = Some(deadline);
        self.reactor.timers.schedule(deadline, SIGNALS);
        for key in self.conns.keys() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match conn.phase {
                ConnPhase::Streaming => {
                    conn.ask_to_finish();
                    self.on_conn_event(key.token(), now);
                }
                ConnPhase::Finishing { .. } | ConnPhase::Attaching { .. } => {}
                // Closed with its last channel (see `mux`).
                ConnPhase::Mux => self.mux_dirty.push(key),
                ConnPhase::Handshake { .. } | ConnPhase::Closing { .. } => self.close(key),
            }
        }
    }
}

/// The `syncfs` thread (see [`durable`]), where it can stand in for
/// `fdatasync`: any sync policy but `none`, on a kernel whose `syncfs`
/// reports writeback errors.
fn start_syncer(cfg: &ServerConfig, stop: &StopHandle) -> Option<durable::Syncer> {
    if cfg.sync == SyncPolicy::None {
        return None;
    }
    if !crate::reactor::sys::fs::syncfs_reports_errors() {
        crate::info!("syncfs does not report errors on this kernel (before 5.8); outputs are synced one by one");
        return None;
    }
    match durable::Syncer::start(stop.waker()) {
        Ok(s) => Some(s),
        Err(e) => {
            crate::warn!("cannot start the syncfs thread ({e}); outputs are synced one by one");
            None
        }
    }
}
