//! The client's multiplexed connections (`[server] multiplex = true`):
//! one connection per server carries the followed files' streams, each on
//! a channel (see [`crate::proto::mux`] and docs/PROTOCOL.md
//! "Multiplexing").
//!
//! A stream's [`Link`] does not change: its transport is a
//! [`ChannelEnd`] instead of a socket, so the handshake, `ACK`s, the
//! half-close and `250 DONE` run as on a connection of its own. What a
//! carrier adds:
//!
//! - **Opening** ([`Carriers::open`]): the first stream that wants the
//!   server connects the carrier and waits; once the server answered
//!   `INIT MUX` with `200 OK mux`, every waiting stream is told to connect
//!   again ([`Kick`]) and gets a channel. A carrier that cannot be made
//!   (unreachable, refused, an old server) sends streams to connections
//!   of their own: for [`PLAIN_AFTER_REFUSAL`] when the server refused,
//!   for [`PLAIN_AFTER_FAILURE`] otherwise; their own connections meet the
//!   usual back-off and failover.
//! - **Input**: frames go to their channel's end; the streams that got
//!   something are served ([`Kick::Serve`]). `CREDIT` lets a channel send
//!   more.
//! - **Output**: what a stream on a channel wrote is framed when its
//!   turn ends ([`Carriers::frame`]), within its channel's credit, and
//!   goes out once per loop turn in one send for all of them
//!   ([`Carriers::write`]). A stream whose bytes waited (credit, or a
//!   full socket) is served again when room comes; while a carrier has
//!   [`TX_LIMIT`] unsent its streams read nothing more
//!   ([`Carriers::congested`]), so a turn that serves thousands of
//!   channels holds a bounded amount of their files in memory.
//! - **The end**: a link that is dropped leaves its channel id in a shared
//!   list (the [`Ticket`]), and the channel is closed (`CLOSE`) at the
//!   next flush. A carrier whose socket ends or breaks, or whose server
//!   breaks the framing, resets every channel: each stream sees its
//!   connection end and reconnects, from its acknowledged offset.
//!
//! Whole files (`method = "send"`, directory sources) keep connections of
//! their own: they go by `sendfile`, which a channel cannot.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};

use crate::proto::channel::ChannelEnd;
use crate::proto::mux::{self, Frame, Status, WINDOW};
use crate::proto::{self as wire, ServerLine};
use crate::reactor::slots::{low_word, THIRD_BASE};
use crate::reactor::sys::retry;
use crate::reactor::{Key, Slots, Timers};
use crate::tls::{ClientSetup, Transport};

/// How long streams connect on their own after a server refused `INIT
/// MUX` (it predates it, or turned it down).
pub const PLAIN_AFTER_REFUSAL: Duration = Duration::from_secs(600);
/// How long streams connect on their own after a carrier failed
/// otherwise (unreachable, timed out, broke).
pub const PLAIN_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// Longest a carrier may take to connect and hear `200 OK mux`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most carriers (servers) at once; tokens are in
/// `THIRD_BASE..THIRD_BASE + MAX_CARRIERS`.
const MAX_CARRIERS: usize = 1 << 20;
/// Size of one read of a carrier's socket.
const RX_READ: usize = 64 * 1024;
/// Channels' bytes stay in their outboxes while a carrier has this much
/// unsent (and their streams are served again once it is out), so a
/// burst of every file at once is not copied into one large buffer.
const TX_LIMIT: usize = 512 * 1024;

/// A link's hold on its channel: when the link is dropped, its channel is
/// closed at the next flush.
#[derive(Debug)]
pub struct Ticket {
    carrier: Key,
    id: u32,
    closed: Arc<Mutex<Vec<(Key, u32)>>>,
}

impl Ticket {
    pub fn carrier(&self) -> Key {
        self.carrier
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // (A poisoned list still takes the id: nothing panics while
        // holding it.)
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        closed.push((self.carrier, self.id));
    }
}

/// Where a carrier connects: the address, the server's name (for TLS)
/// and the client's TLS setup.
#[derive(Debug, Clone, Copy)]
pub struct Dial<'a> {
    pub addr: SocketAddr,
    pub server: &'a str,
    pub tls: Option<&'a ClientSetup>,
}

/// What a stream that asked for a channel does now.
#[derive(Debug)]
pub enum Opened {
    /// Its channel: the link's transport.
    Channel(ChannelEnd, Ticket),
    /// The carrier is on its way: wait for a [`Kick::Connect`].
    Wait,
    /// Connect on its own.
    Plain,
}

/// What the daemon must do for a stream after a carrier's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kick {
    /// Ask for a connection again (the carrier is ready, or failed).
    Connect(Key),
    /// Its channel got something, or room: serve its link.
    Serve(Key),
}

/// Something for channel `id` of `stream`, for the daemon to hand to the
/// stream's [`ChannelEnd`] (when its link is still that channel).
#[derive(Debug)]
pub struct Delivery {
    pub stream: Key,
    pub id: u32,
    pub what: Arrived,
}

#[derive(Debug)]
pub enum Arrived {
    Data(Vec<u8>),
    Fin,
    /// `CLOSE`, or the carrier ended.
    Reset,
}

impl Delivery {
    /// Applies it to the channel's end.
    pub fn apply(self, end: &mut ChannelEnd) {
        match self.what {
            Arrived::Data(d) => {
                // A server's lines are few; one that floods a channel is
                // cut off from it.
                if !end.deliver(&d) {
                    end.reset();
                }
            }
            Arrived::Fin => end.end(),
            Arrived::Reset => end.reset(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    /// Waiting for the greeting, then for the answer to `INIT MUX`.
    Greeting,
    Asked,
    Ready,
}

#[derive(Debug)]
struct Chan {
    stream: Key,
    /// DATA bytes this side may still send.
    credit: u32,
}

#[derive(Debug)]
struct Carrier {
    addr: SocketAddr,
    sock: Transport,
    phase: Phase,
    /// Until when it may take to be ready.
    deadline: Instant,
    /// Bytes read and not yet used (lines before `Ready`, then at most
    /// one frame cut by a read's end).
    rx: Vec<u8>,
    /// Frames (and `INIT MUX`) not yet written: `tx[tx_at..]`.
    tx: Vec<u8>,
    tx_at: usize,
    chans: HashMap<u32, Chan>,
    /// Last channel id opened (ids only grow).
    last_id: u32,
    /// Streams waiting for the carrier to be ready.
    waiting: Vec<Key>,
    /// Streams that filled their channel's outbox, or read nothing while
    /// `tx` was full ([`Carriers::congested`]): served again once `tx` is
    /// out (so `tx` never holds more than every channel's outbox once).
    /// A set: a stream served again and again while the carrier stays
    /// full (a server that stopped reading) is in it once.
    room: HashSet<Key>,
    /// Channels (id, stream) that got CREDIT: their outboxes are framed
    /// again at the flush.
    credited: Vec<(u32, Key)>,
}

/// Why a carrier ends.
#[derive(Debug)]
struct Failure {
    /// The server answered `INIT MUX` with a refusal.
    refused: bool,
    why: String,
}

fn broke(why: impl Into<String>) -> Failure {
    Failure {
        refused: false,
        why: why.into(),
    }
}

/// Every carrier, by server address.
#[derive(Debug)]
pub(crate) struct Carriers {
    slots: Slots<Carrier>,
    by_addr: HashMap<SocketAddr, Key>,
    /// Servers streams connect to on their own until then.
    plain_until: HashMap<SocketAddr, Instant>,
    /// Channels whose links were dropped (see [`Ticket`]).
    closed: Arc<Mutex<Vec<(Key, u32)>>>,
    /// Channels (carrier, id, stream) that got CREDIT: what waits in
    /// their outboxes is framed at the flush. (What a stream writes is
    /// framed when its turn ends, by the daemon.)
    served: Vec<(Key, u32, Key)>,
    /// Carriers with bytes to write.
    dirty: Vec<Key>,
    /// Failures said once per server and kind, until one works.
    said: crate::once::SaidBy<SocketAddr, bool>,
}

impl Default for Carriers {
    fn default() -> Self {
        Carriers {
            slots: Slots::with_base(THIRD_BASE),
            by_addr: HashMap::new(),
            plain_until: HashMap::new(),
            closed: Arc::default(),
            served: Vec::new(),
            dirty: Vec::new(),
            said: Default::default(),
        }
    }
}

impl Carriers {
    /// Whether `token` is a carrier's.
    pub fn owns(token: Token) -> bool {
        (THIRD_BASE..THIRD_BASE + MAX_CARRIERS).contains(&low_word(token))
    }

    /// A channel to the server `to` names for `stream`, or what to do
    /// instead (see [`Opened`]).
    pub fn open(
        &mut self,
        to: Dial<'_>,
        registry: &Registry,
        timers: &mut Timers<Token>,
        stream: Key,
        now: Instant,
    ) -> Opened {
        let addr = to.addr;
        if self.plain_until.get(&addr).is_some_and(|&t| now < t) {
            return Opened::Plain;
        }
        let key = match self.by_addr.get(&addr) {
            Some(&k) => k,
            None => match self.connect(to, registry, timers, now) {
                Some(k) => k,
                None => return Opened::Plain,
            },
        };
        let Some(c) = self.slots.get_mut(key) else {
            return Opened::Plain;
        };
        if c.phase != Phase::Ready {
            if !c.waiting.contains(&stream) {
                c.waiting.push(stream);
            }
            return Opened::Wait;
        }
        let Some(id) = c.last_id.checked_add(1) else {
            // 2^32 channels on one connection: the next is a new one.
            return Opened::Plain;
        };
        c.last_id = id;
        mux::write_open(&mut c.tx, id);
        c.chans.insert(
            id,
            Chan {
                stream,
                credit: WINDOW,
            },
        );
        self.dirty.push(key);
        let ticket = Ticket {
            carrier: key,
            id,
            closed: self.closed.clone(),
        };
        Opened::Channel(ChannelEnd::new(id), ticket)
    }

    /// Starts a carrier to `addr`; `None` (streams go plain for a while)
    /// when the connect fails at once.
    fn connect(
        &mut self,
        to: Dial<'_>,
        registry: &Registry,
        timers: &mut Timers<Token>,
        now: Instant,
    ) -> Option<Key> {
        let addr = to.addr;
        let key = self.slots.vacant_key();
        let made = super::link::connect(addr, to.server, to.tls).and_then(|mut sock| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            registry.register(&mut sock, key.token(), interest)?;
            Ok(sock)
        });
        let sock = match made {
            Ok(s) => s,
            Err(e) => {
                self.give_up(addr, false, &format!("cannot connect: {e}"), now);
                return None;
            }
        };
        let deadline = now + HANDSHAKE_TIMEOUT;
        let inserted = self.slots.insert(Carrier {
            addr,
            sock,
            phase: Phase::Connecting,
            deadline,
            rx: Vec::new(),
            tx: Vec::new(),
            tx_at: 0,
            chans: HashMap::new(),
            last_id: 0,
            waiting: Vec::new(),
            room: HashSet::new(),
            credited: Vec::new(),
        });
        debug_assert_eq!(inserted, key);
        self.by_addr.insert(addr, key);
        timers.schedule(deadline, key.token());
        crate::debug!("{addr}: connecting a multiplexed connection");
        Some(key)
    }

    /// Streams connect on their own to `addr` for a while (see the module
    /// doc); said once per server and kind until a carrier works.
    fn give_up(&mut self, addr: SocketAddr, refused: bool, why: &str, now: Instant) {
        let (wait, then) = match refused {
            true => (
                PLAIN_AFTER_REFUSAL,
                "each file connects on its own for 10 minutes",
            ),
            false => (
                PLAIN_AFTER_FAILURE,
                "each file connects on its own for 10 s",
            ),
        };
        self.plain_until.insert(addr, now + wait);
        // A refusal is news; an unreachable server is the streams' to say
        // (once for the outage, see `LinkBudget::outage_since`).
        if refused && self.said.say(addr, refused) {
            crate::warn!("{addr}: no multiplexed connection ({why}); {then}");
        } else {
            crate::debug!("{addr}: no multiplexed connection ({why}); {then}");
        }
    }

    /// A carrier's socket event or timer: what arrived goes to `out`, and
    /// what to do for which streams to `kicks`.
    pub fn on_event(
        &mut self,
        token: Token,
        now: Instant,
        registry: &Registry,
        out: &mut Vec<Delivery>,
        kicks: &mut Vec<Kick>,
    ) {
        let Some(key) = Key::from_token(token) else {
            return;
        };
        let Some(c) = self.slots.get_mut(key) else {
            return;
        };
        let was_ready = c.phase == Phase::Ready;
        let result = c.serve(out).and_then(|()| {
            if c.phase != Phase::Ready && now >= c.deadline {
                return Err(broke("no answer to INIT MUX in time"));
            }
            Ok(())
        });
        if let Err(f) = result {
            return self.fail(key, f, now, registry, out, kicks);
        }
        if !was_ready && c.phase == Phase::Ready {
            kicks.extend(c.waiting.drain(..).map(Kick::Connect));
            self.said.clear(&c.addr);
            crate::info!("{}: multiplexed connection ready", c.addr);
        }
        // What waited for CREDIT is framed at the flush.
        self.served
            .extend(c.credited.drain(..).map(|(id, stream)| (key, id, stream)));
        self.dirty.push(key);
    }

    /// Ends carrier `key`: its channels are reset, waiting streams connect
    /// again (on their own, for a while).
    fn fail(
        &mut self,
        key: Key,
        f: Failure,
        now: Instant,
        registry: &Registry,
        out: &mut Vec<Delivery>,
        kicks: &mut Vec<Kick>,
    ) {
        let Some(mut c) = self.slots.remove(key) else {
            return;
        };
        let _ = registry.deregister(&mut c.sock);
        self.by_addr.remove(&c.addr);
        if c.phase == Phase::Ready {
            crate::info!(
                "{}: multiplexed connection ended ({}); its {} streams reconnect",
                c.addr,
                f.why,
                c.chans.len()
            );
            self.plain_until.insert(c.addr, now + PLAIN_AFTER_FAILURE);
        } else {
            self.give_up(c.addr, f.refused, &f.why, now);
        }
        kicks.extend(c.waiting.drain(..).map(Kick::Connect));
        for (id, ch) in c.chans.drain() {
            out.push(Delivery {
                stream: ch.stream,
                id,
                what: Arrived::Reset,
            });
        }
        self.closed_list().retain(|&(k, _)| k != key);
    }

    /// True when `carrier` has [`TX_LIMIT`] or more unsent: a stream on
    /// one of its channels reads no more of its file until it is served
    /// again ([`Carriers::wait_room`]). Otherwise a turn that serves
    /// thousands of channels at once (files that waited for a slot, each
    /// with a backlog) reads every backlog into memory before the first
    /// byte goes out.
    pub fn congested(&self, carrier: Key) -> bool {
        self.slots
            .get(carrier)
            .is_some_and(|c| c.tx.len() - c.tx_at >= TX_LIMIT)
    }

    /// `stream` did not read because `carrier` was [`congested`]: it is
    /// served again once the carrier's bytes are out.
    ///
    /// [`congested`]: Carriers::congested
    pub fn wait_room(&mut self, carrier: Key, stream: Key) {
        if let Some(c) = self.slots.get_mut(carrier) {
            c.room.insert(stream);
        }
    }

    /// The channels that got CREDIT since the last call, with their
    /// streams.
    pub fn take_served(&mut self) -> Vec<(Key, u32, Key)> {
        std::mem::take(&mut self.served)
    }

    /// Frames what channel `id` of `carrier` wrote (`end`), within its
    /// credit; a stream whose bytes wait is served again when credit or
    /// room comes.
    pub fn frame(&mut self, carrier: Key, id: u32, end: &mut ChannelEnd) {
        let Some(c) = self.slots.get_mut(carrier) else {
            return;
        };
        let Some(chan) = c.chans.get_mut(&id) else {
            return;
        };
        if c.tx.len() - c.tx_at >= TX_LIMIT {
            c.room.insert(chan.stream);
            self.dirty.push(carrier);
            return;
        }
        let (room, n) = end.take_out_within(&mut c.tx, chan.credit as usize);
        chan.credit -= n as u32;
        // Bytes left wait for CREDIT (which frames them); a stream whose
        // write found no room may write more once `tx` is out.
        if room {
            c.room.insert(chan.stream);
        }
        self.dirty.push(carrier);
    }

    /// Closes the channels of dropped links, then writes every carrier's
    /// frames (one send each, as far as the socket takes them).
    pub fn write(
        &mut self,
        now: Instant,
        registry: &Registry,
        out: &mut Vec<Delivery>,
        kicks: &mut Vec<Kick>,
    ) {
        let closed = std::mem::take(&mut *self.closed_list());
        for (key, id) in closed {
            if let Some(c) = self.slots.get_mut(key) {
                if c.chans.remove(&id).is_some() {
                    mux::write_close(&mut c.tx, id);
                    self.dirty.push(key);
                }
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for key in dirty {
            let Some(c) = self.slots.get_mut(key) else {
                continue;
            };
            match c.write_out() {
                Ok(true) => kicks.extend(c.room.drain().map(Kick::Serve)),
                Ok(false) => {}
                Err(e) => {
                    let f = broke(format!("write failed: {e}"));
                    self.fail(key, f, now, registry, out, kicks);
                }
            }
        }
    }

    /// True when frames wait to be written this turn.
    pub fn has_work(&self) -> bool {
        !self.served.is_empty() || !self.dirty.is_empty() || !self.closed_list().is_empty()
    }

    /// The channels of dropped links. (A `Mutex` only so the daemon
    /// stays `Send`; one thread ever takes it.)
    fn closed_list(&self) -> std::sync::MutexGuard<'_, Vec<(Key, u32)>> {
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Carrier {
    /// Moves the carrier on: the connect, the greeting and `INIT MUX`,
    /// then frames, into `out`.
    fn serve(&mut self, out: &mut Vec<Delivery>) -> Result<(), Failure> {
        if self.phase == Phase::Connecting {
            let Some(tcp) = self.sock.tcp() else {
                return Err(broke("no socket"));
            };
            match tcp.take_error() {
                Ok(Some(e)) | Err(e) => return Err(broke(format!("cannot connect: {e}"))),
                Ok(None) => {}
            }
            match tcp.peer_addr() {
                Ok(_) => self.phase = Phase::Greeting,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(broke(format!("cannot connect: {e}"))),
            }
            // With TLS the ClientHello goes out now.
            self.sock
                .flush()
                .map_err(|e| broke(format!("write failed: {e}")))?;
        }
        let mut eof = false;
        loop {
            let start = self.rx.len();
            self.rx.resize(start + RX_READ, 0);
            let got = retry(|| self.sock.read(&mut self.rx[start..]));
            self.rx.truncate(start + *got.as_ref().unwrap_or(&0));
            let more = match got {
                Ok(0) => {
                    eof = true;
                    false
                }
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) => return Err(broke(format!("read failed: {e}"))),
            };
            self.take_lines()?;
            if self.phase == Phase::Ready {
                self.take_frames(out)?;
            }
            if eof {
                return Err(broke("the server closed it"));
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// The greeting and the answer to `INIT MUX`, from `rx`.
    fn take_lines(&mut self) -> Result<(), Failure> {
        if self.phase == Phase::Greeting {
            match wire::parse_greeting(&self.rx) {
                // A server at a limit says so instead of greeting.
                Err(_) if matches!(wire::parse_reply(&self.rx), Ok(Status::Complete(..))) => {
                    let line = String::from_utf8_lossy(&self.rx);
                    let line = line.lines().next().unwrap_or_default();
                    return Err(broke(format!(
                        "the server refused the connection: {}",
                        crate::log::esc(line)
                    )));
                }
                Ok(Status::Complete(_, used)) => {
                    self.rx.drain(..used);
                    let mut line = mux::REQUEST.to_vec();
                    line.append(&mut self.tx);
                    self.tx = line;
                    self.phase = Phase::Asked;
                }
                Ok(Status::Partial) => return Ok(()),
                Err(e) => return Err(broke(format!("not a loghamster server: {e}"))),
            }
        }
        if self.phase == Phase::Asked {
            match wire::parse_server_line(&self.rx) {
                Ok(Status::Complete(ServerLine::Reply(r), used)) if r.code == 200 => {
                    self.rx.drain(..used);
                    self.phase = Phase::Ready;
                }
                Ok(Status::Complete(ServerLine::Reply(r), _)) => {
                    return Err(Failure {
                        refused: true,
                        why: format!(
                            "the server answered INIT MUX with {} {}",
                            r.code,
                            crate::log::esc(r.text)
                        ),
                    })
                }
                Ok(Status::Complete(..)) => return Err(broke("an unexpected answer to INIT MUX")),
                Ok(Status::Partial) => {}
                Err(e) => return Err(broke(format!("a bad answer to INIT MUX: {e}"))),
            }
        }
        Ok(())
    }

    /// The whole frames in `rx`, into `out` (CREDIT is applied here).
    fn take_frames(&mut self, out: &mut Vec<Delivery>) -> Result<(), Failure> {
        let mut at = 0;
        let result = loop {
            let (frame, n) = match mux::parse(&self.rx[at..]) {
                Ok(Status::Complete(f, n)) => (f, n),
                Ok(Status::Partial) => break Ok(()),
                Err(e) => break Err(broke(format!("the server broke the framing: {e}"))),
            };
            at += n;
            let id = frame.channel();
            let Some(chan) = self.chans.get_mut(&id) else {
                if id <= self.last_id {
                    continue; // a channel this side closed
                }
                break Err(broke(format!(
                    "the server sent a frame for channel {id}, never opened"
                )));
            };
            let what = match frame {
                Frame::Data(_, d) => Arrived::Data(d.to_vec()),
                Frame::Fin(_) => Arrived::Fin,
                Frame::Close(_) => {
                    let stream = chan.stream;
                    self.chans.remove(&id);
                    out.push(Delivery {
                        stream,
                        id,
                        what: Arrived::Reset,
                    });
                    continue;
                }
                Frame::Credit(_, k) => {
                    chan.credit = chan.credit.saturating_add(k);
                    self.credited.push((id, chan.stream));
                    continue;
                }
                Frame::Open(_) => break Err(broke("the server sent OPEN")),
            };
            out.push(Delivery {
                stream: chan.stream,
                id,
                what,
            });
        };
        self.rx.drain(..at);
        result
    }

    /// Writes `tx` until the socket is full; `Ok(true)` when all is out.
    fn write_out(&mut self) -> io::Result<bool> {
        if self.phase == Phase::Connecting || self.phase == Phase::Greeting {
            return Ok(false); // INIT MUX goes first, once greeted
        }
        while self.tx_at < self.tx.len() {
            match retry(|| self.sock.write(&self.tx[self.tx_at..])) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.tx_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        self.sock.flush()?;
        if self.tx_at < self.tx.len() {
            return Ok(false);
        }
        self.tx.clear();
        self.tx_at = 0;
        if self.tx.capacity() > 2 * TX_LIMIT {
            self.tx = Vec::new();
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    /// A carrier of `Carriers` talking to a scripted server on loopback.
    struct Scene {
        poll: mio::Poll,
        timers: Timers<Token>,
        carriers: Carriers,
        addr: SocketAddr,
        server: std::net::TcpStream,
        now: Instant,
    }

    fn dial(addr: SocketAddr) -> Dial<'static> {
        Dial {
            addr,
            server: "127.0.0.1",
            tls: None,
        }
    }

    /// The key of the `i`th stream of a stream table.
    #[allow(non_snake_case)]
    fn STREAM(i: usize) -> Key {
        let mut s: Slots<()> = Slots::default();
        (0..=i).map(|_| s.insert(())).last().expect("one")
    }

    impl Scene {
        /// A carrier asked for by one stream, its connection accepted.
        fn new() -> Scene {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let poll = mio::Poll::new().unwrap();
            let mut timers = Timers::default();
            let mut carriers = Carriers::default();
            let now = Instant::now();
            let opened = carriers.open(dial(addr), poll.registry(), &mut timers, STREAM(0), now);
            assert!(matches!(opened, Opened::Wait), "{opened:?}");
            let (server, _) = listener.accept().unwrap();
            server
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            Scene {
                poll,
                timers,
                carriers,
                addr,
                server,
                now,
            }
        }

        /// Serves the carrier's events until `done` (with what arrived).
        fn turn(&mut self) -> (Vec<Delivery>, Vec<Kick>) {
            let (mut out, mut kicks) = (Vec::new(), Vec::new());
            let mut events = mio::Events::with_capacity(8);
            self.poll
                .poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            let key = self.carriers.by_addr.get(&self.addr).copied();
            if let Some(key) = key {
                let registry = self.poll.registry();
                self.carriers
                    .on_event(key.token(), self.now, registry, &mut out, &mut kicks);
                self.carriers
                    .write(self.now, registry, &mut out, &mut kicks);
            }
            (out, kicks)
        }

        /// Turns until `f` says the outcome is there.
        fn until(
            &mut self,
            mut f: impl FnMut(&[Delivery], &[Kick]) -> bool,
        ) -> (Vec<Delivery>, Vec<Kick>) {
            for _ in 0..300 {
                let (out, kicks) = self.turn();
                if f(&out, &kicks) {
                    return (out, kicks);
                }
            }
            panic!("no outcome after 300 turns");
        }

        /// Reads exactly `n` bytes the carrier sent.
        fn read(&mut self, n: usize) -> Vec<u8> {
            let mut buf = vec![0u8; n];
            self.server.read_exact(&mut buf).unwrap();
            buf
        }

        fn ready(&mut self) {
            self.server
                .write_all(b"### Welcome to LogHamster server v9\nSTREAMID x-1\n")
                .unwrap();
            // The carrier's turns send INIT MUX once greeted.
            let mut got = Vec::new();
            while got.len() < mux::REQUEST.len() {
                self.turn();
                let mut b = [0u8; 1];
                self.server.set_nonblocking(true).unwrap();
                while let Ok(1) = self.server.read(&mut b) {
                    got.push(b[0]);
                }
                self.server.set_nonblocking(false).unwrap();
            }
            assert_eq!(got, mux::REQUEST);
            self.server.write_all(b"200 OK mux\n").unwrap();
            let (_, kicks) = self.until(|_, k| !k.is_empty());
            assert_eq!(kicks, [Kick::Connect(STREAM(0))]);
        }

        /// The carrier failed: its waiting stream is told to connect,
        /// and streams connect on their own for `wait`, then try a
        /// carrier again.
        fn plain_for(&mut self, wait: Duration) {
            let (_, kicks) = self.until(|_, k| !k.is_empty());
            assert_eq!(kicks, [Kick::Connect(STREAM(0))]);
            let registry = self.poll.registry();
            for (at, plain) in [(wait - Duration::from_millis(1), true), (wait, false)] {
                let now = self.now + at;
                let got =
                    self.carriers
                        .open(dial(self.addr), registry, &mut self.timers, STREAM(0), now);
                assert_eq!(matches!(got, Opened::Plain), plain, "{got:?} after {at:?}");
            }
        }

        fn open(&mut self, stream: Key) -> (ChannelEnd, Ticket) {
            let registry = self.poll.registry();
            match self.carriers.open(
                dial(self.addr),
                registry,
                &mut self.timers,
                stream,
                self.now,
            ) {
                Opened::Channel(end, ticket) => (end, ticket),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_refusal_of_init_mux_sends_the_streams_on_their_own() {
        let mut s = Scene::new();
        s.server
            .write_all(b"### Welcome to LogHamster server v0.0\nSTREAMID x-1\n")
            .unwrap();
        s.server
            .write_all(b"400 Bad request: expected INIT STREAM\n")
            .unwrap();
        // ... for ten minutes, then a carrier is tried again.
        s.plain_for(PLAIN_AFTER_REFUSAL);
    }

    #[test]
    fn a_server_at_its_limit_sends_the_streams_on_their_own_for_a_while() {
        let mut s = Scene::new();
        s.server.write_all(b"503 Too many connections\n").unwrap();
        s.plain_for(PLAIN_AFTER_FAILURE);
    }

    #[test]
    fn a_full_send_buffer_is_congested_until_it_is_out_and_then_wakes_who_waited() {
        let mut s = Scene::new();
        s.ready();
        let mut ends: Vec<(ChannelEnd, Ticket)> = (0..10).map(|i| s.open(STREAM(i))).collect();
        let carrier = ends[0].1.carrier();
        assert!(!s.carriers.congested(carrier));
        // Each channel frames its whole credit in one turn, before the
        // turn's send: the carrier is congested once TX_LIMIT is unsent.
        let chunk = vec![b'y'; 16 * 1024];
        for (end, ticket) in &mut ends {
            while !s.carriers.congested(carrier) && end.write(&chunk).is_ok() {
                s.carriers.frame(carrier, ticket.id(), end);
            }
        }
        assert!(s.carriers.congested(carrier));
        // Streams that did not read wait; they are served once it is out.
        for _ in 0..1000 {
            s.carriers.wait_room(carrier, STREAM(20));
        }
        s.carriers.wait_room(carrier, STREAM(21));
        // Each once, however often it was turned away.
        let waiting = &s.carriers.slots.get(carrier).unwrap().room;
        assert!(waiting.len() <= 2 + ends.len(), "{waiting:?}");
        assert!(s.carriers.has_work());
        let registry = s.poll.registry();
        let (mut out, mut kicks) = (Vec::new(), Vec::new());
        s.carriers.write(s.now, registry, &mut out, &mut kicks);
        // The server reads; once the carrier's bytes are all out (this
        // write, or the turns of its writable events), who waited is served.
        let served = |k: &[Kick]| {
            k.contains(&Kick::Serve(STREAM(20))) && k.contains(&Kick::Serve(STREAM(21)))
        };
        let mut sink = vec![0u8; 1 << 16];
        s.server.set_nonblocking(true).unwrap();
        for _ in 0..300 {
            if served(&kicks) {
                break;
            }
            while let Ok(n) = s.server.read(&mut sink) {
                if n == 0 {
                    break;
                }
            }
            kicks.extend(s.turn().1);
        }
        s.server.set_nonblocking(false).unwrap();
        assert!(served(&kicks), "{kicks:?}");
        assert!(!s.carriers.congested(carrier));
    }

    #[test]
    fn frames_reach_their_channels_within_credit_and_a_dropped_link_closes_its_own() {
        let mut s = Scene::new();
        s.ready();
        let (mut a, ticket_a) = s.open(STREAM(0));
        let (b, ticket_b) = s.open(STREAM(1));
        assert_eq!((a.id(), b.id()), (1, 2));
        let mut want = Vec::new();
        mux::write_open(&mut want, 1);
        mux::write_open(&mut want, 2);
        // A stream writes more than its credit: the rest waits for CREDIT.
        let big = vec![b'x'; WINDOW as usize + 10];
        let mut written = 0;
        while written < big.len() {
            written += a.write(&big[written..]).unwrap_or(0);
            s.carriers.frame(ticket_a.carrier(), 1, &mut a);
        }
        let registry = s.poll.registry();
        let (mut out, mut kicks) = (Vec::new(), Vec::new());
        s.carriers.write(s.now, registry, &mut out, &mut kicks);
        let sent = s.read(want.len() + WINDOW as usize + 8 * (WINDOW as usize / 16384));
        let mut at = 0;
        let mut data = 0;
        while at < sent.len() {
            let Ok(Status::Complete(f, n)) = mux::parse(&sent[at..]) else {
                panic!("bad frame at {at}");
            };
            if let Frame::Data(1, d) = f {
                data += d.len();
            }
            at += n;
        }
        assert_eq!(data, WINDOW as usize, "no more than the credit");
        assert_eq!(a.unsent(), 10);
        // The server answers: a line for b, credit for a, then b ends.
        let mut frames = Vec::new();
        mux::write_data(&mut frames, 2, b"ACK 5\n");
        mux::write_credit(&mut frames, 1, 100);
        mux::write_fin(&mut frames, 2);
        mux::write_close(&mut frames, 2);
        mux::write_data(&mut frames, 2, b"after close: ignored\n");
        s.server.write_all(&frames).unwrap();
        let (out, _) = s.until(|o, _| o.len() >= 3);
        let what: Vec<String> = out
            .iter()
            .map(|d| format!("{}:{:?}", d.id, d.what))
            .collect();
        assert_eq!(
            what,
            ["2:Data([65, 67, 75, 32, 53, 10])", "2:Fin", "2:Reset"]
        );
        // The credit frames the rest of a at the next flush.
        let served = s.carriers.take_served();
        assert_eq!(served, [(ticket_a.carrier(), 1, STREAM(0))]);
        s.carriers.frame(ticket_a.carrier(), 1, &mut a);
        assert_eq!((written, a.unsent()), (WINDOW as usize + 10, 0));
        // A dropped link's channel is closed.
        drop(ticket_a);
        drop(ticket_b);
        let registry = s.poll.registry();
        let (mut out, mut kicks) = (Vec::new(), Vec::new());
        s.carriers.write(s.now, registry, &mut out, &mut kicks);
        let mut close = Vec::new();
        mux::write_data(&mut close, 1, &big[..written - WINDOW as usize]);
        mux::write_close(&mut close, 1);
        assert_eq!(s.read(close.len()), close);
    }
}
