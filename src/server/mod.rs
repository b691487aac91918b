//! loghamsterd: accepts connections on one port, runs the handshake, routes
//! each stream to an output and writes what arrives there.
//!
//! One thread, one [`Reactor`]. Each connection is a [`conn::Conn`] in a
//! generation-tagged slab; its token is its slab key, so an event for a
//! connection that was closed and whose slot was reused is dropped.
//!
//! ## Life of a connection
//! `Handshake` (greeting sent, waiting for INIT, bounded by
//! `handshake_timeout` and [`proto::MAX_LINE`]) → `Streaming` (bytes are
//! written to the output line by line; with `ack:1` the server reports the
//! offset written so far with `ACK <n>` lines) → `Closing` (an error line or
//! the final ACK was sent; the rest of the input is read and discarded for a
//! short while so the peer sees the line instead of a reset).
//!
//! ## Resume
//! A stream that names its file identity (`id:`) and first offset
//! (`offset:`) is tracked in memory by `(host, path, id)`. A reconnecting
//! client is told the offset the server already holds (`200 ... offset:M`)
//! and continues from there, so a broken connection neither loses nor
//! duplicates lines while the server runs. A newer connection for the same
//! stream replaces an older one that is still open.
//!
//! ## Signals
//! SIGTERM/SIGINT: stop accepting, ask every acknowledging client to finish
//! (`421`), write what they send until they close or `shutdown_timeout`
//! passes, then exit. SIGHUP: reopen every output file.

pub mod api;
mod conn;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpListener;
use mio::{Interest, Token};

use crate::config::ServerConfig;
use crate::reactor::sys::signal::{SignalFd, SIGHUP, SIGINT, SIGTERM};
use crate::reactor::{Key, Reactor, Ready, Slots, StopHandle};
use crate::sink::output::Outputs;
use crate::sink::route::Router;
use conn::{Conn, Phase};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);

/// How long a server waits for clients to finish after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of the one read buffer shared by all connections.
const READ_CHUNK: usize = 256 * 1024;
/// Most resume entries kept for streams that are not connected.
const MAX_IDLE_RESUME: usize = 65_536;

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
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServerError::Setup { what, source } => write!(f, "cannot {what}: {source}"),
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

/// What the server knows of a resumable stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resume {
    /// Stream offset up to which bytes are in the output.
    pub offset: u64,
    /// The connection currently writing it, if any.
    pub conn: Option<Key>,
    pub last_seen: Instant,
}

/// The parts of the server that connection handlers borrow together.
pub(crate) struct Shared {
    pub cfg: ServerConfig,
    pub router: Router,
    pub outputs: Outputs,
    pub resume: HashMap<StreamKey, Resume>,
    pub scratch: Vec<u8>,
    pub stopping: bool,
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
}

impl Server {
    /// Starts building a server from flags rather than a config file.
    pub fn builder() -> api::ServerBuilder {
        api::ServerBuilder::default()
    }

    /// Binds the listener and prepares the loop; nothing runs until
    /// [`run`](Self::run). With `signals`, SIGTERM/SIGINT stop the server
    /// and SIGHUP reopens its outputs (the binary wants that; a library
    /// user may prefer [`StopHandle`]).
    pub fn bind(cfg: ServerConfig, signals: bool) -> Result<Server, ServerError> {
        let setup = |what| move |source| ServerError::Setup { what, source };
        let signals = if signals {
            Some(
                SignalFd::new(&[SIGINT, SIGTERM, SIGHUP])
                    .map_err(setup("set up signal handling"))?,
            )
        } else {
            None
        };
        let reactor = Reactor::new(1024).map_err(setup("create the event loop"))?;
        let addr = cfg.listen;
        let mut listener =
            TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
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
        let shared = Shared {
            router: Router::new(&cfg),
            cfg,
            outputs: Outputs::default(),
            resume: HashMap::new(),
            scratch: vec![0; READ_CHUNK],
            stopping: false,
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
        crate::info!("listening on {}", self.local_addr);
        if self.shared.cfg.prometheus.enabled {
            crate::warn!(
                "[prometheus] is enabled, but this version does not serve metrics yet; ignoring it"
            );
        }
        if let Some(p) = &self.shared.cfg.state_file {
            crate::warn!(
                "state_file = {:?}: this version keeps stream offsets in memory only; ignoring it",
                p.display()
            );
        }
        let mut ready = Vec::with_capacity(1024);
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
            let now = Instant::now();
            for r in &ready {
                match r.token {
                    LISTENER => self.accept(now),
                    SIGNALS => self.on_signals(now),
                    WAKER if self.stop.requested() => self.begin_stop("stop requested", now),
                    token => self.on_conn_event(token, *r, now),
                }
            }
            while let Some(token) = self.reactor.timers.pop_expired(now) {
                let r = Ready {
                    token,
                    readable: false,
                    writable: false,
                    closed: false,
                };
                self.on_conn_event(token, r, now);
            }
        }
        let left = self.conns.len();
        for key in self.conns.keys() {
            self.close(key);
        }
        crate::info!("stopped ({left} connections were still open at the deadline)");
        Ok(())
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((sock, peer)) => self.admit(sock, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log and retry on the next event.
                    crate::warn!("accept failed: {e}");
                    return;
                }
            }
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
            crate::warn!("cannot register connection from {peer}: {e}");
            return;
        }
        let deadline = now + self.shared.cfg.handshake_timeout;
        let mut conn = Conn::new(sock, peer, stream_id, deadline);
        crate::debug!("{peer}: connected, stream id {}", conn.stream_id);
        conn.send_greeting();
        self.reactor.timers.schedule(deadline, key.token());
        let inserted = self.conns.insert(conn);
        debug_assert_eq!(inserted, key);
        self.on_conn_event(
            key.token(),
            Ready {
                token: key.token(),
                readable: true,
                writable: true,
                closed: false,
            },
            now,
        );
    }

    fn on_conn_event(&mut self, token: Token, r: Ready, now: Instant) {
        let Some(key) = Key::from_token(token) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let step = conn.on_event(key, r, now, &mut self.shared);
        if let Some(at) = step.wake_at {
            self.reactor.timers.schedule(at, token);
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
        let _ = self.reactor.registry().deregister(&mut conn.sock);
        conn.release(key, &mut self.shared);
        crate::debug!("{}: closed", conn.peer);
        prune_resume(&mut self.shared.resume);
    }

    fn on_signals(&mut self, now: Instant) {
        loop {
            let Some(signals) = &self.signals else { return };
            match signals.read() {
                Ok(Some(SIGHUP)) => {
                    let failed = self.shared.outputs.reopen_all();
                    crate::info!(
                        "SIGHUP: reopened {} outputs",
                        self.shared.outputs.len() - failed.len()
                    );
                    for (path, e) in failed {
                        crate::error!("cannot reopen output {}: {e}", path.display());
                    }
                }
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
        crate::info!(
            "{why}: stopping; letting {} connections finish",
            self.conns.len()
        );
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
                Phase::Streaming => {
                    conn.ask_to_finish();
                    let r = Ready {
                        token: key.token(),
                        readable: true,
                        writable: true,
                        closed: false,
                    };
                    self.on_conn_event(key.token(), r, now);
                }
                Phase::Handshake { .. } | Phase::Closing { .. } => self.close(key),
            }
        }
    }
}

/// Bounds the memory held for disconnected streams: drops the least
/// recently seen ones beyond [`MAX_IDLE_RESUME`].
fn prune_resume(resume: &mut HashMap<StreamKey, Resume>) {
    if resume.len() <= MAX_IDLE_RESUME {
        return;
    }
    let idle = resume.values().filter(|r| r.conn.is_none()).count();
    if idle <= MAX_IDLE_RESUME {
        return;
    }
    let mut seen: Vec<Instant> = resume
        .values()
        .filter(|r| r.conn.is_none())
        .map(|r| r.last_seen)
        .collect();
    seen.sort_unstable();
    let cutoff = seen[idle - MAX_IDLE_RESUME];
    resume.retain(|_, r| r.conn.is_some() || r.last_seen >= cutoff);
}
