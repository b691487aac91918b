//! One client connection on the server: handshake, streaming, closing.
//!
//! While streaming, each turn either reads the socket into the shared
//! buffer and writes whole lines ([`Outputs::write`](crate::sink::output::Outputs::write)),
//! or, for a stream alone on its output, splices the socket into the file
//! without a user-space copy ([`splice`]). Both paths keep the same
//! accounting: [`LineWriter::written`] is the stream offset of what is in
//! the output, every other received byte is pending in user space.
//!
//! The parts: `attach` (INIT to an [`Attachment`]: a stream bound to an
//! output, or a refusal), this file (streaming turns, stalls, the end of a
//! stream), [`splice`] (the zero-copy path), `inflate` (compressed
//! streams), `throttle` (`connection_rate_limit`), `ack` (what a
//! completed checkpoint round lets each connection acknowledge) and `jet`
//! (a stream whose output is JetStream: staged, published, acknowledged
//! on PubAck).

mod ack;
mod attach;
mod hello;
mod idle;
mod inflate;
mod jet;
mod splice;
mod throttle;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::proto::channel::ChannelEnd;
use crate::tls::Transport;

use super::book::Place;
use super::{Shared, StreamKey};
use crate::config::SyncPolicy;
use crate::metrics::server::{HandshakeFailure, LimitHit};
use crate::proto;
use crate::rate::Bucket;
use crate::reactor::sys::{net, retry};
use crate::reactor::Key;
use crate::sink::output::{LineWriter, Outcome, OutputId, Owner};
use ack::RoundMark;
pub(crate) use hello::HELLO_WAIT;
pub(crate) use inflate::Budget;
use inflate::Inflow;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
pub(crate) use splice::Splicer;
use splice::Turn;

/// Most bytes one connection takes from its socket per turn of the loop,
/// on either path, so one fast connection cannot keep the loop from the
/// others.
const QUANTUM: usize = 4 << 20;

/// The first read of a turn that may splice (see [`Conn::sip`]): what
/// arrived in one send of a few lines fits many times over.
const SIP: usize = 64 * 1024;
/// A first read shorter than this that emptied the socket ends the turn
/// (see [`Conn::sip`]): a few lines, not a bulk sender in mid-flow.
const TRICKLE: usize = SIP / 4;

/// How long a closing connection keeps draining input so the peer reads
/// our last line instead of a reset.
const LINGER: Duration = Duration::from_secs(2);

/// Where a server connection is in its life, from the greeting to the
/// close.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ConnPhase {
    Handshake {
        deadline: Instant,
    },
    /// INIT accepted; waiting for the group checkpoint before answering
    /// `200` (nothing is read or written meanwhile).
    Attaching {
        deadline: Instant,
    },
    Streaming,
    /// The client half-closed after its last byte; everything is written
    /// and synced. Waiting for the next checkpoint to answer `250 DONE`.
    Finishing {
        deadline: Instant,
    },
    /// Our last line is being flushed; closed at `deadline`. Until then
    /// input is read and dropped unless `eof` (the peer's side ended, or
    /// is not waited for).
    Closing {
        deadline: Instant,
        eof: bool,
    },
    /// `INIT MUX` was answered: the connection carries channels, each a
    /// connection of its own (see [`super::mux`]); the server serves it
    /// there, never through [`Conn::on_event`].
    Mux,
}

impl ConnPhase {
    /// Closing at once, without waiting for more input: after an error,
    /// or when the peer already closed its side.
    pub(crate) fn close_now(now: Instant) -> ConnPhase {
        ConnPhase::Closing {
            deadline: now,
            eof: true,
        }
    }
}

/// How long a finished stream waits for a checkpoint before giving up on
/// its `250 DONE` (the client then reconnects and asks again).
const DONE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a write that failed (disk full) is retried.
const STALL_RETRY: Duration = Duration::from_secs(1);
/// How often a stream waiting for another stream's open line looks again.
const LINE_POLL: Duration = Duration::from_millis(20);
/// How long another stream may leave a shared output's last line open
/// before the server ends it with a newline.
const OPEN_LINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a stream is not reading from its socket for now.
#[derive(Debug, Clone, Copy)]
enum Stall {
    /// Writing failed (disk full, ...): retry at this time.
    Disk { retry_at: Instant },
    /// Another stream's line is open in the shared output since `since`.
    Line { since: Instant, retry_at: Instant },
    /// A JetStream output holds a whole message of this stream already, or
    /// takes no command now (see `jet`).
    Jet { retry_at: Instant },
}

/// A stream that passed the handshake and writes to an output.
#[derive(Debug)]
pub(crate) struct Attachment {
    label: String,
    /// `loghamster_server_received_bytes_total` for this stream's output,
    /// and the offset counted into it so far.
    received: Counter,
    counted: u64,
    /// `loghamster_server_received_lines_total` for this stream's output:
    /// newlines in the bytes that pass through user space (the splice
    /// path does not look at them).
    lines: Counter,
    /// `loghamster_server_spliced_bytes_total` for this stream's output.
    spliced_bytes: Counter,
    /// `loghamster_server_unacknowledged_bytes`, shared by all streams;
    /// this stream counts `counted - acked` into it while it asks for ACKs
    /// (a detached gauge otherwise).
    unacked: Gauge,
    /// `loghamster_server_write_errors_total` for this stream's output.
    write_errors: Counter,
    /// The output file (unused for a JetStream output: `jet` is set).
    output: OutputId,
    writer: LineWriter,
    /// Set when the stream's output is a JetStream stream (see `jet`).
    jet: Option<Box<jet::JetLink>>,
    key: Option<StreamKey>,
    /// Where `key`'s entry is in the resume book, for this connection.
    place: Option<Place>,
    /// The client asked for `ACK` lines.
    ack: bool,
    /// Highest offset announced with an `ACK` line.
    acked: u64,
    /// Highest offset that may be acknowledged under the sync policy.
    ackable: u64,
    /// Set while the stream holds data it cannot write yet; it stops
    /// reading the socket meanwhile, so TCP back-pressure holds the client.
    stall: Option<Stall>,
    /// The client half-closed; the tail is written once nothing stalls.
    eof: bool,
    /// Owner of this stream's open line in a shared output (see
    /// [`Owner`]): stable across reconnects for resumable streams.
    owner: Owner,
    /// The offset to announce on the `200` line (resumable streams).
    reply_offset: Option<u64>,
    /// Bytes this connection moved with splice (zero-copy), for the log.
    spliced: u64,
    /// The last streaming turn took the zero-copy path (to log switches).
    splicing: bool,
    /// Set for a compressed stream (`compression:<codec>` in INIT): its
    /// socket bytes are decoded before they are written.
    inflow: Option<Inflow>,
    /// `connection_rate_limit`, when configured (see [`throttle`]).
    rate: Option<Bucket>,
    /// When the socket last gave bytes (for `idle_timeout`, see [`idle`]).
    last_input: Instant,
    /// Set once the stream was asked to finish for being idle: it is
    /// closed if it has not by then.
    idle_deadline: Option<Instant>,
}

/// What one read of a connection's socket came to ([`Conn::read_once`]).
enum Took {
    /// `n` bytes were read and written (or held: the stream closed for
    /// them is seen in its phase); `short`: fewer than asked for, so the
    /// socket was empty then.
    Wrote { n: usize, short: bool },
    /// Nothing to read now.
    Empty,
    /// The client half-closed.
    Eof,
    /// The bytes are held; the stream is stalled until then.
    Stalled(Instant),
    /// The read failed; the connection is closing.
    Closed,
}

/// What the server must do after a connection handled an event.
#[derive(Debug, Default)]
pub(crate) struct Step {
    pub wake_at: Option<Instant>,
    /// Serve this connection again right after the next poll: it stopped
    /// at its per-turn quantum with input possibly left in the socket
    /// (edge-triggered: no new event would come for it).
    pub again: bool,
    pub replaced: Option<Key>,
    pub close: bool,
}

#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket, plain or TLS (see [`crate::tls::Transport`]).
    pub sock: Transport,
    pub peer: SocketAddr,
    pub stream_id: String,
    pub phase: ConnPhase,
    /// Set once the handshake succeeded; kept through `Closing` until the
    /// connection is dropped, so its output and resume slot are released once.
    stream: Option<Box<Attachment>>,
    /// Handshake bytes received so far (at most [`proto::MAX_LINE`]).
    inbuf: Vec<u8>,
    /// Lines for the client not yet written to the socket.
    outbuf: Vec<u8>,
    shut_write: bool,
    /// Where this connection stood when the checkpoint round in progress
    /// began (see [`mark_round`](Self::mark_round)).
    round: Option<RoundMark>,
    /// The names of the peer's verified TLS client certificate (SAN, then
    /// CN); empty without one. Its strongest identity (see
    /// [`auth`](super::auth)).
    pub cert_names: Vec<String>,
    /// On a `[tls]` listener: until when the first byte is awaited to tell
    /// a TLS client from a plain one (see `hello`); `None` once decided.
    hello: Option<Instant>,
    /// An event said the client closed its side (see
    /// [`peer_closed`](Self::peer_closed)): reads go on to the end of
    /// input even after a short one.
    peer_closed: bool,
    /// Set in phase `Mux`: the channels this connection carries.
    pub mux: Option<Box<super::mux::Mux>>,
    /// Set for a channel: the connection that carries it.
    pub carrier: Option<Key>,
}

impl Conn {
    pub fn new(sock: TcpStream, peer: SocketAddr, stream_id: String, deadline: Instant) -> Self {
        Conn::over(Transport::plain(sock), peer, stream_id, deadline)
    }

    /// A stream on channel `end` of the multiplexed connection `carrier`
    /// (whose peer and certificate names it shares).
    pub fn channel(
        end: ChannelEnd,
        carrier: (Key, &Conn),
        stream_id: String,
        deadline: Instant,
    ) -> Self {
        let (key, conn) = carrier;
        let mut c = Conn::over(Transport::channel(end), conn.peer, stream_id, deadline);
        c.cert_names = conn.cert_names.clone();
        c.carrier = Some(key);
        c
    }

    fn over(sock: Transport, peer: SocketAddr, stream_id: String, deadline: Instant) -> Self {
        Conn {
            sock,
            peer,
            stream_id,
            phase: ConnPhase::Handshake { deadline },
            stream: None,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            shut_write: false,
            round: None,
            cert_names: Vec::new(),
            hello: None,
            peer_closed: false,
            mux: None,
            carrier: None,
        }
    }

    /// The event being handed over said the client closed its side
    /// ([`Reactor::read_closed`](crate::reactor::Reactor::read_closed)).
    pub fn peer_closed(&mut self) {
        self.peer_closed = true;
    }

    pub fn send_greeting(&mut self) {
        proto::write_greeting(&mut self.outbuf, env!("CARGO_PKG_VERSION"), &self.stream_id);
    }

    /// Server shutdown: ask an acknowledging client to stop sending.
    pub fn ask_to_finish(&mut self) {
        if let (ConnPhase::Streaming, Some(s)) = (self.phase, &self.stream) {
            if s.ack {
                proto::write_reply(&mut self.outbuf, 421, "Server shutting down", None);
            }
        }
    }

    pub fn on_event(&mut self, key: Key, now: Instant, shared: &mut Shared) -> Step {
        let mut step = Step::default();
        match &mut self.phase {
            ConnPhase::Handshake { deadline } => {
                if now >= *deadline {
                    crate::debug!("{}: handshake timed out", self.peer);
                    shared.metrics.handshake_failed(HandshakeFailure::Timeout);
                    self.fail(408, "Handshake timeout", now);
                } else if self.hello.is_some() {
                    if self.hello(now, shared, &mut step) {
                        self.handshake(key, now, shared, &mut step);
                    }
                } else {
                    self.handshake(key, now, shared, &mut step);
                }
            }
            ConnPhase::Streaming => self.stream(now, shared, &mut step),
            ConnPhase::Attaching { deadline } => {
                if now >= *deadline {
                    shared
                        .metrics
                        .handshake_failed(HandshakeFailure::StateUnavailable);
                    self.fail(503, "Cannot commit server state", now);
                }
            }
            ConnPhase::Finishing { deadline } => {
                let deadline = *deadline;
                if now >= deadline {
                    crate::warn!(
                        "{}: no checkpoint in time; closing without 250 DONE",
                        self.peer
                    );
                    self.phase = ConnPhase::close_now(now);
                } else {
                    step.wake_at = Some(deadline);
                }
            }
            // Served by `Server::serve_mux`, never here.
            ConnPhase::Mux => {}
            ConnPhase::Closing { deadline, eof } => {
                if !*eof {
                    *eof = crate::reactor::discard_input(&mut self.sock);
                }
                if now >= *deadline {
                    step.close = true;
                }
            }
        }
        if let Err(e) = self.flush() {
            self.log_io("write", &e);
            step.close = true;
        }
        if let ConnPhase::Closing { deadline, eof } = self.phase {
            if self.outbuf.is_empty() && !self.shut_write {
                let _ = self.sock.shutdown_write();
                self.shut_write = true;
            }
            if eof && self.outbuf.is_empty() && self.sock.is_flushed() {
                step.close = true;
            }
            step.wake_at = Some(deadline);
        }
        step
    }

    /// Sends an error line and moves to `Closing`.
    fn fail(&mut self, code: u16, reason: &str, now: Instant) {
        proto::write_reply(&mut self.outbuf, code, reason, None);
        self.phase = ConnPhase::Closing {
            deadline: now + LINGER,
            eof: false,
        };
    }

    /// One streaming turn: moves what the socket has into the output and
    /// says in `step` when to look again. While the stream is stalled
    /// (disk full, or another stream's line open in a shared output) it
    /// retries the held data first and reads nothing, so TCP back-pressure
    /// holds the client. A stream alone on its output takes the zero-copy
    /// path (at most a quantum per turn); otherwise, or when that path
    /// falls back, the socket is read until it is empty.
    fn stream(&mut self, now: Instant, shared: &mut Shared, step: &mut Step) {
        self.new_turn();
        if let Some(stall) = self.stream.as_ref().and_then(|s| s.stall) {
            let retry_at = match stall {
                Stall::Disk { retry_at }
                | Stall::Line { retry_at, .. }
                | Stall::Jet { retry_at } => retry_at,
            };
            if now < retry_at {
                step.wake_at = Some(retry_at);
                return;
            }
            if let Some(at) = self.write_data(&[], now, shared) {
                step.wake_at = Some(at);
                return;
            }
        }
        if self.stream.as_ref().is_some_and(|s| s.eof) {
            self.end_of_stream(now, shared);
            return;
        }
        if let Some(at) = self.rate_wait(now) {
            step.wake_at = Some(at);
            return;
        }
        if self.splice_ready(shared) {
            if !self.sip(now, shared, step) {
                return;
            }
            match self.splice_turn(now, shared) {
                Turn::Drained => {}
                Turn::Quantum => step.again = true,
                Turn::Eof => {
                    step.wake_at = self.at_eof(now, shared);
                    return;
                }
                Turn::Stalled(at) => {
                    step.wake_at = Some(at);
                    return;
                }
                Turn::Throttled(at) => step.wake_at = Some(at),
                Turn::Closed => return,
                Turn::Fallback => {
                    // What splice could not write is pending: write it
                    // first, then read the line-aligned way.
                    if let Some(at) = self.write_data(&[], now, shared) {
                        step.wake_at = Some(at);
                        return;
                    }
                    step.wake_at = self.read_and_write(now, shared, &mut step.again);
                    return;
                }
            }
            self.queue_ack();
            return;
        }
        step.wake_at = self.read_and_write(now, shared, &mut step.again);
    }

    /// The first read of a turn that may take the zero-copy path. A few
    /// lines (a host with many files: each sends what its linger gathered)
    /// cost fewer calls copied than spliced: a `read` and a `write`,
    /// against a splice in, an `fstat`, a splice out and a read-back of the
    /// last byte. So up to [`SIP`] bytes are read and written the
    /// line-aligned way (alone on its output, the stream's tail is written
    /// too, so nothing stays held), and true is returned when the rest of
    /// the turn may be spliced (a bulk stream copies only its first 64 KiB
    /// a turn). A short read of fewer than [`TRICKLE`] bytes ends the turn
    /// with an ACK queued: the socket was empty then, and what arrives
    /// later brings an event of its own; unless an event said the client
    /// closed its side (no later event would repeat that), and the turn
    /// goes on to find the end. When the rest may not be spliced, the
    /// turn ends here, line-aligned, with `step` set.
    fn sip(&mut self, now: Instant, shared: &mut Shared, step: &mut Step) -> bool {
        match self.read_once(SIP, now, shared) {
            Took::Wrote { n, short } => {
                if short && n < TRICKLE && !self.peer_closed {
                    // The socket was empty after these few bytes: what
                    // comes next comes with an event of its own
                    // (edge-triggered), so the splice that would find it
                    // empty is skipped. (A bulk sender's larger short read
                    // still goes on to splice what arrived meanwhile.)
                    // Such a peer's next segment may share one TCP ACK
                    // with this one (see `net::set_quickack`); a failure
                    // costs only that ACK.
                    if let Some(tcp) = self.sock.as_plain() {
                        let _ = net::set_quickack(tcp, false);
                    }
                    self.queue_ack();
                    return false;
                }
                if self.splice_ready(shared) {
                    return true;
                }
            }
            Took::Empty => {
                self.queue_ack();
                return false;
            }
            Took::Eof => {
                step.wake_at = self.at_eof(now, shared);
                step.again |= self.holds_input() && matches!(self.phase, ConnPhase::Streaming);
                return false;
            }
            Took::Stalled(at) => {
                step.wake_at = Some(at);
                return false;
            }
            Took::Closed => return false,
        }
        step.wake_at = self.read_and_write(now, shared, &mut step.again);
        false
    }

    /// One read of at most `limit` bytes from the socket into the shared
    /// buffer, written (or held) at once.
    fn read_once(&mut self, limit: usize, now: Instant, shared: &mut Shared) -> Took {
        let allowed = self.allowance(now, limit);
        let n = match retry(|| self.sock.read(&mut shared.scratch[..allowed])) {
            Ok(0) => return Took::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Took::Empty,
            Err(e) => {
                self.log_io("read", &e);
                self.phase = ConnPhase::close_now(now);
                return Took::Closed;
            }
        };
        self.charge(now, n);
        let data = std::mem::take(&mut shared.scratch);
        let stalled = self.write_input(&data[..n], now, shared);
        shared.scratch = data;
        match stalled {
            Some(at) => Took::Stalled(at),
            None => Took::Wrote {
                n,
                short: n < allowed,
            },
        }
    }

    /// The client half-closed: writes the tail, then finishes the stream
    /// (or returns the retry time of a stall).
    fn at_eof(&mut self, now: Instant, shared: &mut Shared) -> Option<Instant> {
        if self.holds_input() {
            if let Some(at) = self.write_input(&[], now, shared) {
                return Some(at);
            }
            if self.holds_input() {
                // The quantum is used up: the caller serves it again, and
                // the next read finds the end of input again.
                return None;
            }
        }
        if !matches!(self.phase, ConnPhase::Streaming) {
            return None;
        }
        if let Some(codec) = self.cut_short() {
            crate::warn!(
                "{}: the {codec} stream ended in the middle of a frame; closing without 250 DONE",
                self.peer
            );
            self.phase = ConnPhase::close_now(now);
            return None;
        }
        if let Some(s) = &mut self.stream {
            s.eof = true;
        }
        if let Some(at) = self.write_data(&[], now, shared) {
            return Some(at);
        }
        self.end_of_stream(now, shared);
        None
    }

    /// The line-aligned path: reads what the socket has into the shared
    /// buffer and writes it to the output, until the socket is empty or
    /// [`QUANTUM`] bytes were read (then it sets `again`: the connection is
    /// served again after the next poll, so others get their turn).
    /// Returns when to look again.
    fn read_and_write(
        &mut self,
        now: Instant,
        shared: &mut Shared,
        again: &mut bool,
    ) -> Option<Instant> {
        let mut moved = 0;
        if self.holds_input() {
            // Compressed input held while the writer stalled (or after the
            // last turn's quantum) goes first.
            if let Some(at) = self.write_input(&[], now, shared) {
                return Some(at);
            }
        }
        loop {
            if self.holds_input() {
                // A compressed stream decoded its quantum.
                *again = true;
                break;
            }
            if !matches!(self.phase, ConnPhase::Streaming) {
                return None;
            }
            if let Some(at) = self.rate_wait(now) {
                self.queue_ack();
                return Some(at);
            }
            let n = match self.read_once(shared.scratch.len(), now, shared) {
                Took::Wrote { n, .. } => n,
                Took::Empty => break,
                Took::Eof => {
                    let at = self.at_eof(now, shared);
                    *again |= self.holds_input() && matches!(self.phase, ConnPhase::Streaming);
                    return at;
                }
                Took::Stalled(at) => return Some(at),
                Took::Closed => return None,
            };
            moved += n;
            if moved >= QUANTUM {
                *again = true;
                break;
            }
        }
        self.queue_ack();
        None
    }

    /// Writes (or holds) stream bytes; returns the retry time when the
    /// stream is stalled afterwards.
    fn write_data(&mut self, data: &[u8], now: Instant, shared: &mut Shared) -> Option<Instant> {
        if self.passes_max_offset(data.len()) {
            self.refuse_offset(now, shared);
            return None;
        }
        let s = self.stream.as_mut()?;
        if !data.is_empty() {
            s.lines
                .inc_by(memchr::memchr_iter(b'\n', data).count() as u64);
        }
        if s.jet.is_some() {
            return self.jet_write(data, now, shared);
        }
        let outcome = shared
            .outputs
            .write(s.output, &mut s.writer, s.owner, data, s.eof);
        self.settle(outcome, now, shared)
    }

    /// True when `more` bytes after what the stream received (written or
    /// held) would take its offset past [`proto::MAX_OFFSET`], the most a
    /// checkpoint can record.
    fn passes_max_offset(&self, more: usize) -> bool {
        self.stream
            .as_ref()
            .is_some_and(|s| s.writer.received().saturating_add(more as u64) > proto::MAX_OFFSET)
    }

    /// The peer sent more than its stream's offset can grow: nothing more
    /// of it is written (what is in the output stays, and its offset is
    /// still one a checkpoint can hold), the connection is refused with a
    /// `400`, logged and counted, and no other stream notices.
    fn refuse_offset(&mut self, now: Instant, shared: &mut Shared) {
        let Some(s) = self.stream.as_ref() else {
            return;
        };
        crate::warn!(
            "{}: {}: the stream would pass offset {} (the most a checkpoint can record) at offset {}; refusing it",
            self.peer,
            s.label,
            proto::MAX_OFFSET,
            s.writer.written()
        );
        shared.metrics.limit_hit(LimitHit::StreamOffset);
        self.fail(400, "Bad request: stream offset would pass 2^63-1", now);
    }

    /// Records where the stream stands after a write (or splice) and acts
    /// on its outcome: clears a stall, makes the bytes acknowledgeable
    /// under the sync policy, or stalls. Returns the retry time when the
    /// stream is stalled afterwards.
    fn settle(&mut self, outcome: Outcome, now: Instant, shared: &mut Shared) -> Option<Instant> {
        let s = self.stream.as_mut()?;
        note_offset(shared, s);
        match outcome {
            Outcome::Written => {
                if let Some(Stall::Disk { .. }) = s.stall {
                    crate::info!(
                        "{}: output {} is writable again; resuming {}",
                        self.peer,
                        crate::log::esc(&shared.outputs.path(s.output)),
                        s.label
                    );
                }
                s.stall = None;
                match shared.cfg.sync {
                    SyncPolicy::None => s.ackable = s.writer.written(),
                    SyncPolicy::Always => match shared.outputs.sync_one(s.output) {
                        Ok(()) => s.ackable = s.writer.written(),
                        Err(e) => crate::error!(
                            "{}: fdatasync of {} failed: {e}",
                            self.peer,
                            crate::log::esc(&shared.outputs.path(s.output))
                        ),
                    },
                    SyncPolicy::Interval => {}
                }
                None
            }
            Outcome::Busy => {
                let since = match s.stall {
                    Some(Stall::Line { since, .. }) => since,
                    _ => {
                        crate::debug!(
                            "{}: {} waits for another stream's open line in {}",
                            self.peer,
                            s.label,
                            crate::log::esc(&shared.outputs.path(s.output))
                        );
                        now
                    }
                };
                if now >= since + OPEN_LINE_TIMEOUT {
                    crate::warn!(
                        "{}: another stream left the last line of {} unterminated for {}s; ending it with a newline",
                        self.peer,
                        crate::log::esc(&shared.outputs.path(s.output)),
                        OPEN_LINE_TIMEOUT.as_secs()
                    );
                    if let Err(e) = shared.outputs.close_open_line(s.output) {
                        crate::error!(
                            "{}: writing to {} failed: {e}",
                            self.peer,
                            crate::log::esc(&shared.outputs.path(s.output))
                        );
                    }
                    s.stall = None;
                    return self.write_data(&[], now, shared);
                }
                let retry_at = now + LINE_POLL;
                s.stall = Some(Stall::Line { since, retry_at });
                Some(retry_at)
            }
            Outcome::Failed(e) => {
                if !matches!(s.stall, Some(Stall::Disk { .. })) {
                    crate::error!(
                        "{}: writing {} to {} failed: {e}; holding the stream (the client waits) and retrying every {}s",
                        self.peer,
                        s.label,
                        crate::log::esc(&shared.outputs.path(s.output)),
                        STALL_RETRY.as_secs()
                    );
                    shared.write_errors += 1;
                    s.write_errors.inc();
                }
                let retry_at = now + STALL_RETRY;
                s.stall = Some(Stall::Disk { retry_at });
                Some(retry_at)
            }
        }
    }

    /// The client half-closed and every byte is written: sync the output
    /// and wait for the next checkpoint to answer `250 DONE`.
    fn end_of_stream(&mut self, now: Instant, shared: &mut Shared) {
        let Some(s) = &mut self.stream else { return };
        if s.jet.is_some() {
            return self.jet_end(now);
        }
        if let Err(e) = shared.outputs.sync_one(s.output) {
            crate::error!(
                "{}: fdatasync of {} failed: {e}",
                self.peer,
                crate::log::esc(&shared.outputs.path(s.output))
            );
            self.phase = ConnPhase::close_now(now);
            return;
        }
        crate::debug!(
            "{}: {} ended at offset {} ({} bytes by splice)",
            self.peer,
            s.label,
            s.writer.written(),
            s.spliced
        );
        shared.commit_requested = true;
        self.phase = ConnPhase::Finishing {
            deadline: now + DONE_TIMEOUT,
        };
    }

    /// Queues an `ACK` for what was written, unless an older line is still
    /// waiting for the socket (then the next flush brings the newest one).
    fn queue_ack(&mut self) {
        let (ConnPhase::Streaming, Some(s)) = (self.phase, &mut self.stream) else {
            return;
        };
        if s.ack && s.ackable > s.acked && self.outbuf.is_empty() {
            s.acknowledge(s.ackable);
            proto::write_ack(&mut self.outbuf, s.acked);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // Records TLS made earlier go first (nothing to do when plain).
        self.sock.flush()?;
        while !self.outbuf.is_empty() {
            match retry(|| self.sock.write(&self.outbuf)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.outbuf.drain(..n);
                    if self.outbuf.is_empty() {
                        self.queue_ack();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// What the connection carried, for its closing log line: the stream
    /// and how far it got, or that it never got past the handshake.
    pub fn summary(&self) -> String {
        match &self.stream {
            Some(s) => format!("{} at offset {}", s.label, s.writer.written()),
            None => "no stream".into(),
        }
    }

    /// Gives up the output and the resume slot (the connection is closing).
    pub fn release(&mut self, key: Key, shared: &mut Shared) {
        let evicted = shared.evicted.remove(&key);
        if let Some(s) = self.stream.take() {
            shared.metrics.streams_active.dec();
            // What was never acknowledged leaves the gauge with it.
            s.unacked.dec_by(s.counted.saturating_sub(s.acked) as i64);
            if let Some(j) = &s.jet {
                jet::forget(j, shared);
            } else if !evicted {
                shared.outputs.release(s.output);
            }
            release_resume(shared, s.key.as_ref(), key);
        }
    }
}

impl Attachment {
    /// An `ACK` for `offset` goes out: moves `acked` and the
    /// `unacknowledged_bytes` gauge.
    fn acknowledge(&mut self, offset: u64) {
        let newly = offset.min(self.counted).saturating_sub(self.acked);
        self.unacked.dec_by(newly as i64);
        self.acked = offset;
    }
}

/// Records how far a stream's bytes are in the output.
fn note_offset(shared: &mut Shared, s: &mut Attachment) {
    shared.dirty = true;
    let written = s.writer.written();
    if written > s.counted {
        let new = written - s.counted;
        s.received.inc_by(new);
        s.unacked.inc_by(new as i64);
        s.counted = written;
    }
    if let Some(p) = s.place {
        shared.resume.set_offset_at(p, written);
    }
}

fn release_resume(shared: &mut Shared, key: Option<&StreamKey>, conn: Key) {
    if let Some(k) = key {
        shared
            .resume
            .detach(k, conn, crate::sink::journal::unix_now());
    }
}
