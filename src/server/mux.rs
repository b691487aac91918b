//! Multiplexed connections (`INIT MUX`): one socket, many streams.
//!
//! A connection whose first line is `INIT MUX` is answered `200 OK mux`
//! and from then on carries frames ([`proto::mux`]). Each channel the
//! client opens becomes a [`Conn`] of its own in the server's table, with
//! a [`ChannelEnd`](crate::proto::channel::ChannelEnd) as its transport:
//! it gets the greeting, reads `INIT STREAM`, is admitted, authenticated,
//! routed, acknowledged and finished exactly like a plain connection (the
//! connection limits count it too); it only takes the copying path, never
//! splice. The carrying connection (phase `Mux`) holds no stream.
//!
//! One turn of a carrier ([`Server::serve_mux`]): read the socket (at most
//! [`TURN_BUDGET`] bytes, then it is served again after the next poll),
//! check each frame against [`Channels`] and hand its bytes to the
//! channel, serve every channel that got something, and then write what
//! the channels wrote, framed, with the credit their reads earned, in as
//! few sends as the socket takes ([`Server::flush_muxes`], once per loop
//! turn for every carrier with frames to send).
//!
//! Bounds, whatever the client sends: a channel holds at most
//! [`WINDOW`](crate::proto::mux::WINDOW) unread bytes (its credit);
//! `rx` is one read behind the most a cut frame leaves ([`RX_CAP`]); `tx` grows past [`TX_LIMIT`] only by
//! what one channel holds ([`OUT_LIMIT`](crate::proto::channel::OUT_LIMIT)):
//! beyond it, channels keep their lines (and stop writing) until the
//! client reads. A frame that breaks the rules ends the whole connection
//! (its framing can no longer be trusted): every channel on it ends as if
//! its socket was reset, which the resume offsets already survive.
//!
//! The end of the socket's input ends every channel that did not send
//! FIN; those that did finish (their `250 DONE` still goes out), and the
//! carrier closes with its last channel.

use std::io::{self, Read, Write};
use std::time::Instant;

use super::conn::{Conn, ConnPhase};
use super::{Server, MUX_MAX_CHANNELS};
use crate::metrics::server::HandshakeFailure;
use crate::proto::channel::ChannelEnd;
use crate::proto::mux::{self, Arrival, Channels, MuxError, Status};
use crate::reactor::sys::retry;
use crate::reactor::Key;

/// Most bytes a carrier reads from its socket per turn.
const TURN_BUDGET: usize = 1 << 20;
/// Size of one read into `rx` (at least a whole frame).
const RX_READ: usize = 256 * 1024;
/// `rx`'s size: a read behind the most a cut frame leaves.
const RX_CAP: usize = RX_READ + mux::HEADER + mux::MAX_PAYLOAD;
/// Channels stop handing their lines to the carrier while it has this
/// much unsent.
const TX_LIMIT: usize = 256 * 1024;

/// The state of a carrying connection.
#[derive(Debug)]
pub(crate) struct Mux {
    chans: Channels<Key>,
    /// Bytes read and not yet parsed (a frame cut by a read's end):
    /// `rx[..rx_len]`. `rx` is [`RX_CAP`] long once the first read
    /// comes, and `rx_len` stays below a whole frame before a read, so a
    /// read always has [`RX_READ`] bytes of room.
    rx: Vec<u8>,
    rx_len: usize,
    /// Frames not yet written: `tx[tx_at..]`.
    tx: Vec<u8>,
    tx_at: usize,
    /// Channels with lines waiting for room in `tx`.
    blocked: Vec<Key>,
    /// The socket's input ended (or broke, or broke the rules): no more
    /// channels, and the carrier closes with its last one.
    ended: bool,
    /// Since when it carries no channel (`idle_timeout` applies to it
    /// as to a stream that sends nothing).
    empty_since: Option<Instant>,
}

impl Mux {
    /// A carrier that answered `INIT MUX`; `rest` is what came behind
    /// that line in the same read.
    pub fn new(rest: &[u8]) -> Mux {
        let mut tx = Vec::new();
        crate::proto::write_reply(&mut tx, 200, "OK mux", None);
        Mux {
            chans: Channels::server(MUX_MAX_CHANNELS),
            rx_len: rest.len(),
            rx: rest.to_vec(),
            tx,
            tx_at: 0,
            blocked: Vec::new(),
            ended: false,
            empty_since: None,
        }
    }

    /// True when it carried no channel for `timeout` up to `now`.
    pub fn idle(&mut self, now: Instant, timeout: std::time::Duration) -> bool {
        if !self.chans.is_empty() {
            self.empty_since = None;
            return false;
        }
        let since = *self.empty_since.get_or_insert(now);
        now >= since + timeout
    }

    fn unsent(&self) -> usize {
        self.tx.len() - self.tx_at
    }

    /// Writes `tx` until the socket is full. `Ok(true)` when all is out.
    fn write_out(&mut self, sock: &mut impl Write) -> io::Result<bool> {
        while self.tx_at < self.tx.len() {
            match retry(|| sock.write(&self.tx[self.tx_at..])) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.tx_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        sock.flush()?;
        if self.tx_at == self.tx.len() {
            self.tx.clear();
            self.tx_at = 0;
            if self.tx.capacity() > TX_LIMIT {
                self.tx = Vec::new();
            }
            return Ok(true);
        }
        Ok(false)
    }
}

/// How reading a carrier's socket ended.
enum Fill {
    /// Nothing more now (or the turn's budget is spent: `again`).
    Drained { again: bool },
    /// End of input, or a read error (logged).
    Ended,
}

impl Server {
    /// One turn of a carrier (see the module doc).
    pub(super) fn serve_mux(&mut self, key: Key, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(mut mux) = conn.mux.take() else {
            return;
        };
        let peer = conn.peer;
        let mut touched = Vec::new();
        let mut fill = Fill::Drained { again: false };
        let mut read = 0;
        let mut broken = self.demux(key, &mut mux, &mut touched, now).err();
        while broken.is_none() && !mux.ended {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if mux.rx.len() < RX_CAP {
                // Zeroed once per connection, not per read.
                mux.rx.resize(RX_CAP, 0);
            }
            let start = mux.rx_len;
            match retry(|| conn.sock.read(&mut mux.rx[start..])) {
                Ok(0) => fill = Fill::Ended,
                Ok(n) => {
                    mux.rx_len += n;
                    read += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    crate::debug!("{peer}: multiplexed connection: read failed: {e}");
                    fill = Fill::Ended;
                }
            }
            broken = self.demux(key, &mut mux, &mut touched, now).err();
            if matches!(fill, Fill::Ended) {
                break;
            }
            if read >= TURN_BUDGET {
                fill = Fill::Drained { again: true };
                break;
            }
        }
        if let Some(e) = broken {
            crate::warn!(
                "{peer}: multiplexed connection broke the protocol ({e}); closing it and its {} channels",
                mux.chans.len()
            );
            self.shared
                .metrics
                .handshake_failed(HandshakeFailure::Framing);
            fill = Fill::Ended;
        }
        if matches!(fill, Fill::Ended) && !mux.ended {
            mux.ended = true;
            mux.rx = Vec::new();
            mux.rx_len = 0;
            // Channels that did not end by themselves end as if reset.
            for ch in mux.chans.keys() {
                if let Some(end) = self.channel_end(ch) {
                    end.reset();
                }
                touched.push(ch);
            }
        }
        let ended = mux.ended;
        if let Some(conn) = self.conns.get_mut(key) {
            conn.mux = Some(mux);
        }
        touched.sort_unstable();
        touched.dedup();
        for ch in touched {
            self.on_conn_event(ch.token(), now);
        }
        if let Fill::Drained { again: true } = fill {
            self.again.push(key.token());
        }
        self.mux_dirty.push(key);
        if ended {
            self.close_if_done(key);
        }
    }

    /// Parses and applies the whole frames in `rx`; the keys of channels
    /// that got something go to `touched`.
    fn demux(
        &mut self,
        key: Key,
        mux: &mut Mux,
        touched: &mut Vec<Key>,
        now: Instant,
    ) -> Result<(), MuxError> {
        let mut at = 0;
        let result = loop {
            let frame = match mux::parse(&mux.rx[at..mux.rx_len]) {
                Ok(Status::Complete(frame, n)) => {
                    at += n;
                    frame
                }
                Ok(Status::Partial) => break Ok(()),
                Err(e) => break Err(e),
            };
            match mux.chans.on_frame(frame) {
                Ok(Arrival::Open(id)) => match self.open_channel(key, mux, id, now) {
                    Some(ch) => touched.push(ch),
                    None => mux.chans.skip(id),
                },
                Ok(Arrival::Data(ch, data)) => {
                    if let Some(end) = self.channel_end(ch) {
                        // Channels checked the credit; the end checks it too.
                        if !end.deliver(data) {
                            break Err(MuxError::OverCredit(frame.channel()));
                        }
                    }
                    touched.push(ch);
                }
                Ok(Arrival::Fin(ch)) => {
                    if let Some(end) = self.channel_end(ch) {
                        end.end();
                    }
                    touched.push(ch);
                }
                Ok(Arrival::Close(ch)) => {
                    if let Some(end) = self.channel_end(ch) {
                        end.reset();
                    }
                    touched.push(ch);
                }
                Ok(Arrival::Credit(..) | Arrival::Ignored) => {}
                Err(e) => break Err(e),
            }
        };
        mux.rx.copy_within(at..mux.rx_len, 0);
        mux.rx_len -= at;
        result
    }

    /// A new channel `id` on carrier `key`, as a connection of its own
    /// (greeted, with a handshake deadline); `None` when the connection
    /// limits refuse it (its refusal line, FIN and CLOSE are queued).
    fn open_channel(&mut self, key: Key, mux: &mut Mux, id: u32, now: Instant) -> Option<Key> {
        let carrier = self.conns.get(key)?;
        let peer = carrier.peer;
        if self.shared.stopping {
            mux::write_data(&mut mux.tx, id, b"503 Server shutting down\n");
            mux::write_fin(&mut mux.tx, id);
            mux::write_close(&mut mux.tx, id);
            return None;
        }
        if let Some(hit) = self.gate.check(self.conns.len(), peer.ip()) {
            mux::write_data(&mut mux.tx, id, super::admit::refusal(hit).as_bytes());
            mux::write_fin(&mut mux.tx, id);
            mux::write_close(&mut mux.tx, id);
            self.shared.metrics.connections_refused.inc();
            self.shared.metrics.limit_hit(hit);
            if self.gate.should_log(peer.ip(), now) {
                crate::warn!(peer = peer; "{} (a channel of a multiplexed connection)", super::admit::describe(hit, peer, &self.gate));
            }
            return None;
        }
        self.next_id += 1;
        let stream_id = format!("{}-{}", self.id_prefix, self.next_id);
        let deadline = now + self.shared.cfg.handshake_timeout;
        let mut conn = Conn::channel(ChannelEnd::new(id), (key, carrier), stream_id, deadline);
        conn.send_greeting();
        crate::debug!(peer = peer; "{peer}: channel {id} opened (STREAMID {})", conn.stream_id);
        self.gate.opened(peer.ip());
        self.shared.metrics.connections_accepted.inc();
        self.shared.metrics.connections_open.inc();
        let ch = self.conns.insert(conn);
        mux.chans.insert(id, ch);
        self.reactor.timers.schedule(deadline, ch.token());
        Some(ch)
    }

    fn channel_end(&mut self, ch: Key) -> Option<&mut ChannelEnd> {
        self.conns.get_mut(ch)?.sock.as_channel()
    }

    /// After channel `ch` was served: moves the lines it wrote, its FIN
    /// and the credit its reads earned into its carrier's frames (unless
    /// the carrier has [`TX_LIMIT`] unsent: then it waits in `blocked`).
    pub(super) fn pump(&mut self, ch: Key) {
        let Some(carrier) = self.conns.get(ch).and_then(|c| c.carrier) else {
            return;
        };
        let Some(mux) = self.conns.get_mut(carrier).and_then(|c| c.mux.as_mut()) else {
            return;
        };
        if mux.unsent() >= TX_LIMIT {
            if !mux.blocked.contains(&ch) {
                mux.blocked.push(ch);
            }
            return;
        }
        let mut frames = std::mem::take(&mut self.frames);
        let Some(end) = self.channel_end(ch) else {
            return;
        };
        let id = end.id();
        let credit = end.take_credit();
        if credit > 0 {
            mux::write_credit(&mut frames, id, credit);
        }
        if end.take_out(&mut frames) {
            // It may have waited for room to write more: serve it again.
            self.again.push(ch.token());
        }
        if let Some(mux) = self.conns.get_mut(carrier).and_then(|c| c.mux.as_mut()) {
            mux.tx.extend_from_slice(&frames);
            mux.chans.grant(id, credit);
        }
        frames.clear();
        self.frames = frames;
        self.mux_dirty.push(carrier);
    }

    /// Channel `ch`, closed: its last lines, FIN and CLOSE go to its
    /// carrier, which closes too if it ended and this was its last.
    pub(super) fn channel_closed(&mut self, carrier: Key, ch: Key, conn: &mut Conn) {
        let Some(end) = conn.sock.as_channel() else {
            return;
        };
        let Some(mux) = self.conns.get_mut(carrier).and_then(|c| c.mux.as_mut()) else {
            return;
        };
        let id = end.id();
        if mux.chans.remove(id).is_some() {
            end.shutdown_write();
            end.take_out(&mut mux.tx);
            mux::write_close(&mut mux.tx, id);
        }
        mux.blocked.retain(|&k| k != ch);
        self.mux_dirty.push(carrier);
    }

    /// A carrier's channels, closed with it.
    pub(super) fn carrier_closed(&mut self, conn: &mut Conn) {
        let Some(mut mux) = conn.mux.take() else {
            return;
        };
        for ch in mux.chans.drain() {
            if let Some(end) = self.channel_end(ch) {
                end.reset();
            }
            self.close(ch);
        }
    }

    /// Closes carrier `key` once its input ended and its last channel
    /// closed.
    fn close_if_done(&mut self, key: Key) {
        let done = self
            .conns
            .get(key)
            .and_then(|c| c.mux.as_ref())
            .is_some_and(|m| (m.ended || self.shared.stopping) && m.chans.is_empty());
        if done {
            self.flush_mux(key);
            self.close(key);
        }
    }

    /// Writes every dirty carrier's frames (once per loop turn), and
    /// serves the channels that waited for room.
    pub(super) fn flush_muxes(&mut self, now: Instant) {
        while !self.mux_dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.mux_dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for key in dirty {
                let blocked = self.flush_mux(key);
                for ch in blocked {
                    self.on_conn_event(ch.token(), now);
                }
                self.close_if_done(key);
            }
        }
    }

    /// Writes carrier `key`'s frames; the channels that waited for room,
    /// once all went out. A write error closes the carrier.
    fn flush_mux(&mut self, key: Key) -> Vec<Key> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Vec::new();
        };
        let Some(mux) = conn.mux.as_mut() else {
            return Vec::new();
        };
        match mux.write_out(&mut conn.sock) {
            Ok(true) => std::mem::take(&mut mux.blocked),
            Ok(false) => Vec::new(),
            Err(e) => {
                crate::debug!("{}: multiplexed connection: write failed: {e}", conn.peer);
                mux.ended = true;
                self.close(key);
                Vec::new()
            }
        }
    }
}

impl Conn {
    /// `INIT MUX` on a plain or TLS connection: answers `200 OK mux` and
    /// carries channels from now on (`rest` came behind the line).
    pub(super) fn become_mux(&mut self, rest: &[u8]) {
        crate::debug!("{}: multiplexed connection", self.peer);
        // INIT MUX came inside TLS: the client certificate is verified,
        // and its channels are identified by it.
        self.cert_names = self.sock.peer_names();
        self.mux = Some(Box::new(Mux::new(rest)));
        self.phase = ConnPhase::Mux;
    }
}
