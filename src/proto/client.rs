//! The client's side of one connection, as a state machine without I/O.
//!
//! [`ClientConn`] knows the conversation of the [module docs](super) and
//! nothing about sockets or clocks: the shell (`client/link.rs`) feeds it
//! what happened (`connected`, bytes `received`, `eof`, an I/O error, our
//! own `finish`) and carries out what it asks for (the bytes of
//! [`pending_output`](ClientConn::pending_output), a half-close when
//! [`wants_half_close`](ClientConn::wants_half_close)). What the server
//! said comes out as [`Event`]s from [`poll_event`](ClientConn::poll_event).
//! Stream data itself (plain or compressed) does not pass through here:
//! the shell writes it straight to the socket once the phase is `Up`.
//!
//! # Phases
//!
//! ```text
//! Connecting ──connected──▶ Greeting ──greeting──▶ Replying ──200──▶ Up
//!                                       (Greeted: send INIT)          │
//!                                                           finish()  │
//!                                                                     ▼
//!            Closed ◀──eof (clean only after 250 DONE)──────── Finishing
//! ```
//!
//! Any phase goes to `Closed` on an error: a failed connect, read or write,
//! a refusal, a line that does not parse, an overlong line, an EOF before
//! our half-close. Every way into `Closed` emits exactly one
//! [`Event::Closed`] with its [`Close`] reason, the last event; after it
//! every input is ignored.
//!
//! # Bounds
//!
//! Input is parsed as it arrives, so between calls the buffer holds only an
//! incomplete message: less than [`INPUT_LIMIT`] bytes (two lines for the
//! greeting), else the parser's `LineTooLong` closes the connection
//! ([`Close::Overlong`]). The event queue is bounded too, whatever the
//! server sends: ACKs are cumulative, so an `ACK` that finds the previous
//! event still queued as an `ACK` merges into it (the higher offset wins);
//! `421` is reported once; after `250 DONE` (which only answers our
//! half-close) the server has nothing more to say, and whatever else it
//! sends before it closes is discarded.

use std::collections::VecDeque;
use std::fmt;
use std::io;

use super::{
    parse_greeting, parse_init_answer, parse_server_line, InitAnswer, ParseError, ServerLine,
    Status, MAX_LINE, UNSUPPORTED_CODEC,
};
use crate::codec::Codec;
use crate::log::esc;

/// Most input bytes held between calls: a partial greeting (two lines).
pub const INPUT_LIMIT: usize = 2 * MAX_LINE;

/// Where the conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The TCP connect is under way.
    Connecting,
    /// Waiting for `### Welcome` and `STREAMID`.
    Greeting,
    /// The greeting came; INIT goes out, the answer is awaited.
    Replying,
    /// `200` came: stream data may flow; `ACK`s and `421` may come.
    Up,
    /// We finished (half-close, once our output is out): waiting for the
    /// last `ACK`, `250 DONE` and the server's close.
    Finishing,
    /// Over; see the [`Close`] of the last event.
    Closed,
}

/// What the server's `200` means for compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// We asked for no codec: send plain bytes.
    Plain,
    /// The server confirmed the codec we asked for: send compressed bytes.
    Confirmed(Codec),
    /// We asked for this codec and the server did not confirm it (it
    /// predates compression): send plain bytes.
    Ignored(Codec),
}

/// Something the shell must act on, in the order the server said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The greeting arrived: answer with [`ClientConn::send_init`].
    Greeted,
    /// `200`: streaming starts at `offset` (the server's, when it sent
    /// one), compressed or not as `compression` says.
    Ready {
        offset: Option<u64>,
        compression: Negotiated,
    },
    /// `ACK n`: the server wrote everything before offset n.
    Ack(u64),
    /// `250 DONE n`: the server holds and committed everything before n.
    Done(u64),
    /// `421`: the server asks us to stop sending and finish; its reply
    /// text (`Server shutting down`, `Idle timeout`, ...).
    FinishRequested(String),
    /// The connection is over. Always the last event.
    Closed(Close),
}

/// A failed syscall, kept comparable: its kind and, when the OS gave one,
/// its error number. Displays as the OS says it ("Connection refused (os
/// error 111)").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoError {
    pub kind: io::ErrorKind,
    pub errno: Option<i32>,
}

impl From<&io::Error> for IoError {
    fn from(e: &io::Error) -> IoError {
        IoError {
            kind: e.kind(),
            errno: e.raw_os_error(),
        }
    }
}

impl From<io::ErrorKind> for IoError {
    fn from(kind: io::ErrorKind) -> IoError {
        IoError { kind, errno: None }
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(n) => io::Error::from_raw_os_error(n).fmt(f),
            None => self.kind.fmt(f),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// We half-closed, the server answered `250 DONE` and closed: the one
    /// clean end ([`Close::is_clean`]).
    Finished,
    /// We half-closed and the server closed without `250 DONE` (it could
    /// not commit in time, or a compressed stream ended mid-frame).
    Unconfirmed,
    /// The server closed before we finished, in this phase.
    ServerClosed(Phase),
    /// The TCP connect failed.
    ConnectFailed(IoError),
    /// Reading the socket failed.
    ReadFailed(IoError),
    /// Writing the socket failed.
    WriteFailed(IoError),
    /// The server answered INIT with this status line instead of `200`.
    Refused { code: u16, text: String },
    /// The server sent this status line instead of its greeting (e.g.
    /// `503 Too many connections from your address`) and closes.
    Turned { code: u16, text: String },
    /// `415` to the codec we asked for (its reply text).
    CodecRefused { codec: Codec, text: String },
    /// A status line other than `250 DONE` and `421` while streaming.
    Ended { code: u16, text: String },
    /// `250 DONE n` before we finished: the server confirms a stream we
    /// have not ended.
    EarlyDone(u64),
    /// The greeting did not parse.
    BadGreeting(ParseError),
    /// A later line did not parse.
    BadLine(ParseError),
    /// The server sent a line of [`MAX_LINE`] bytes or more.
    Overlong,
    /// We gave up before the handshake completed ([`ClientConn::finish`]
    /// before `Up`).
    Abandoned,
    /// The shell could not start the encoder for the confirmed codec.
    EncoderFailed { codec: Codec, error: IoError },
    /// TLS failed (a certificate refused by either side, not TLS at all);
    /// the shell's description.
    Tls(String),
}

impl Close {
    /// True for the one clean end: our half-close confirmed by `250 DONE`.
    pub fn is_clean(&self) -> bool {
        *self == Close::Finished
    }
}

/// A parse error for the client's log: its reason without the
/// server-side `Bad request:` prefix.
fn what(e: ParseError) -> &'static str {
    let reason = e.reason();
    reason.split_once(": ").map_or(reason, |(_, what)| what)
}

/// The text of the server's refusals at its connection limits, sent
/// instead of the greeting: `503 Too many connections` in all, or `503 Too
/// many connections from your address`.
pub const CONNECTION_LIMIT: &str = "Too many connections";

impl Close {
    /// The server turned the connection away at one of its connection
    /// limits (not a fault of the stream or of the server: a slot frees
    /// when another connection ends).
    pub fn at_connection_limit(&self) -> bool {
        matches!(self, Close::Turned { code: 503, text } if text.starts_with(CONNECTION_LIMIT))
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Close::Finished => f.write_str("finished"),
            Close::Unconfirmed => f.write_str("server closed the connection without 250 DONE"),
            Close::ServerClosed(Phase::Up) => f.write_str("server closed the connection"),
            Close::ServerClosed(_) => {
                f.write_str("server closed the connection during the handshake")
            }
            Close::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            Close::ReadFailed(e) => write!(f, "read failed: {e}"),
            Close::WriteFailed(e) => write!(f, "write failed: {e}"),
            // The server's text goes to the client's log: escaped.
            Close::Refused { code, text } => {
                write!(f, "server refused the stream: {code} {}", esc(text))
            }
            Close::Turned { code, text } => {
                write!(f, "server refused the connection: {code} {}", esc(text))
            }
            Close::CodecRefused { codec, text } => write!(
                f,
                "server refused compression {codec}: {UNSUPPORTED_CODEC} {}",
                esc(text)
            ),
            Close::Ended { code, text } => {
                write!(f, "server ended the stream: {code} {}", esc(text))
            }
            Close::EarlyDone(n) => write!(f, "server sent 250 DONE {n} before the stream ended"),
            Close::BadGreeting(e) => write!(f, "bad greeting from server: {}", what(*e)),
            Close::BadLine(e) => write!(f, "bad line from server: {}", what(*e)),
            Close::Overlong => write!(f, "server sent a line of {MAX_LINE} bytes or more"),
            Close::Abandoned => f.write_str("closed before the handshake completed"),
            Close::EncoderFailed { codec, error } => {
                write!(f, "cannot start the {codec} encoder: {error}")
            }
            Close::Tls(why) => f.write_str(why),
        }
    }
}

/// Our half-close: not asked yet, asked (waiting for the output queue to
/// empty and the shell to do it), done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HalfClose {
    No,
    Wanted,
    Done,
}

/// The client's side of one connection. See the [module docs](self).
#[derive(Debug)]
pub struct ClientConn {
    phase: Phase,
    /// The codec the INIT asks for.
    asked: Option<Codec>,
    /// Received bytes not parsed yet. Invariant between calls: an
    /// incomplete message, shorter than [`INPUT_LIMIT`]; empty once closed.
    inbuf: Vec<u8>,
    /// Protocol bytes (INIT) the shell has not written yet.
    out: Vec<u8>,
    /// Events not taken yet; bounded as the module docs say.
    events: VecDeque<Event>,
    /// INIT was queued (once per connection).
    init_sent: bool,
    /// `421` was reported.
    finish_requested: bool,
    /// `250 DONE` came: the offset it named.
    done: Option<u64>,
    half_close: HalfClose,
}

impl ClientConn {
    /// A connection whose TCP connect is under way and whose INIT will ask
    /// for `asked` (when it names a codec).
    pub fn new(asked: Option<Codec>) -> ClientConn {
        ClientConn {
            phase: Phase::Connecting,
            asked,
            inbuf: Vec::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            init_sent: false,
            finish_requested: false,
            done: None,
            half_close: HalfClose::No,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The codec the INIT asks for.
    pub fn asks_for(&self) -> Option<Codec> {
        self.asked
    }

    /// The offset `250 DONE` named, once it came.
    pub fn done(&self) -> Option<u64> {
        self.done
    }

    /// True until the connection is closed.
    pub fn is_open(&self) -> bool {
        self.phase != Phase::Closed
    }

    // Inputs

    /// The TCP connect completed.
    pub fn connected(&mut self) {
        if self.phase == Phase::Connecting {
            self.phase = Phase::Greeting;
        }
    }

    /// The TCP connect failed.
    pub fn connect_failed(&mut self, error: impl Into<IoError>) {
        self.close(Close::ConnectFailed(error.into()));
    }

    /// Reading the socket failed.
    pub fn read_failed(&mut self, error: impl Into<IoError>) {
        self.close(Close::ReadFailed(error.into()));
    }

    /// Writing the socket failed.
    pub fn write_failed(&mut self, error: impl Into<IoError>) {
        self.close(Close::WriteFailed(error.into()));
    }

    /// The shell ends the connection for a reason of its own.
    pub fn abort(&mut self, why: Close) {
        self.close(why);
    }

    /// Bytes from the server, any amount. Bytes while `Connecting` mean the
    /// connect completed.
    pub fn received(&mut self, mut data: &[u8]) {
        self.connected();
        while !data.is_empty() && self.is_open() {
            if self.done.is_some() {
                // After `250 DONE` only the close matters.
                return;
            }
            let room = INPUT_LIMIT.saturating_sub(self.inbuf.len()).max(1);
            let (now, rest) = data.split_at(room.min(data.len()));
            self.inbuf.extend_from_slice(now);
            data = rest;
            self.parse();
        }
    }

    /// The server closed its side.
    pub fn eof(&mut self) {
        let why = match (self.phase, self.done) {
            (Phase::Finishing, Some(_)) => Close::Finished,
            (Phase::Finishing, None) => Close::Unconfirmed,
            (phase, _) => Close::ServerClosed(phase),
        };
        self.close(why);
    }

    /// We are done sending: half-close once our output is out, then wait
    /// for `250 DONE` and the server's close. Before `Up` there is nothing
    /// to finish: the connection is given up ([`Close::Abandoned`]).
    pub fn finish(&mut self) {
        match self.phase {
            Phase::Up => {
                self.phase = Phase::Finishing;
                self.half_close = HalfClose::Wanted;
            }
            Phase::Finishing | Phase::Closed => {}
            Phase::Connecting | Phase::Greeting | Phase::Replying => self.close(Close::Abandoned),
        }
    }

    /// Answers [`Event::Greeted`]: `write` appends the INIT line to the
    /// output. Only the first call after the greeting writes anything.
    pub fn send_init(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.phase == Phase::Replying && !self.init_sent {
            self.init_sent = true;
            write(&mut self.out);
        }
    }

    // Outputs

    /// The next thing the server said, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Protocol bytes to write, in order.
    pub fn pending_output(&self) -> &[u8] {
        &self.out
    }

    /// The shell wrote the first `n` bytes of [`pending_output`](Self::pending_output).
    pub fn consumed(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// True when the shell should half-close now (our output is out; the
    /// shell also waits for stream bytes it still holds).
    pub fn wants_half_close(&self) -> bool {
        self.half_close == HalfClose::Wanted && self.out.is_empty() && self.is_open()
    }

    /// The shell half-closed.
    pub fn half_closed(&mut self) {
        if self.half_close == HalfClose::Wanted {
            self.half_close = HalfClose::Done;
        }
    }

    // Transitions

    fn close(&mut self, why: Close) {
        if !self.is_open() {
            return;
        }
        self.phase = Phase::Closed;
        self.inbuf = Vec::new();
        self.out = Vec::new();
        self.events.push_back(Event::Closed(why));
    }

    fn push(&mut self, event: Event) {
        if let (Event::Ack(n), Some(Event::Ack(last))) = (&event, self.events.back_mut()) {
            *last = (*last).max(*n);
            return;
        }
        self.events.push_back(event);
    }

    /// Handles every complete message in `inbuf`.
    fn parse(&mut self) {
        let inbuf = std::mem::take(&mut self.inbuf);
        let mut at = 0;
        while self.is_open() && self.done.is_none() {
            match self.step(inbuf.get(at..).unwrap_or_default()) {
                0 => break,
                used => at += used,
            }
        }
        if self.is_open() && self.done.is_none() {
            self.inbuf = inbuf;
            self.inbuf.drain(..at);
        }
    }

    /// Handles the message at the start of `buf`; returns the bytes it
    /// used (0: incomplete, or the connection closed).
    fn step(&mut self, buf: &[u8]) -> usize {
        let result = match self.phase {
            Phase::Connecting | Phase::Closed => return 0,
            Phase::Greeting => match parse_greeting(buf) {
                Ok(Status::Complete(_, used)) => {
                    self.phase = Phase::Replying;
                    self.push(Event::Greeted);
                    Ok(used)
                }
                Ok(Status::Partial) => Ok(0),
                Err(e) => Err(turned_away(buf).unwrap_or(Close::BadGreeting(e))),
            },
            Phase::Replying => match parse_init_answer(buf) {
                Ok(Status::Complete(answer, used)) => self.answered(answer).map(|()| used),
                Ok(Status::Partial) => Ok(0),
                Err(e) => Err(Close::BadLine(e)),
            },
            Phase::Up | Phase::Finishing => match parse_server_line(buf) {
                Ok(Status::Complete(line, used)) => self.heard(line).map(|()| used),
                Ok(Status::Partial) => Ok(0),
                Err(e) => Err(Close::BadLine(e)),
            },
        };
        match result {
            Ok(used) => used,
            Err(
                Close::BadGreeting(ParseError::LineTooLong)
                | Close::BadLine(ParseError::LineTooLong),
            ) => {
                self.close(Close::Overlong);
                0
            }
            Err(why) => {
                self.close(why);
                0
            }
        }
    }

    /// The answer to INIT: `Up`, or why not.
    fn answered(&mut self, answer: InitAnswer<'_>) -> Result<(), Close> {
        match (answer, self.asked) {
            (
                InitAnswer::Ready {
                    offset,
                    compression,
                },
                asked,
            ) => {
                let compression = match asked {
                    None => Negotiated::Plain,
                    Some(c) if compression == Some(c.name()) => Negotiated::Confirmed(c),
                    Some(c) => Negotiated::Ignored(c),
                };
                self.phase = Phase::Up;
                self.push(Event::Ready {
                    offset,
                    compression,
                });
                Ok(())
            }
            (InitAnswer::UnsupportedCodec(r), Some(codec)) => Err(Close::CodecRefused {
                codec,
                text: r.text.to_owned(),
            }),
            (InitAnswer::UnsupportedCodec(r) | InitAnswer::Refused(r), _) => Err(Close::Refused {
                code: r.code,
                text: r.text.to_owned(),
            }),
        }
    }

    /// A line while streaming or finishing.
    fn heard(&mut self, line: ServerLine<'_>) -> Result<(), Close> {
        match line {
            ServerLine::Ack(n) => self.push(Event::Ack(n)),
            ServerLine::Done(n) if self.phase == Phase::Finishing => {
                self.done = Some(n);
                self.push(Event::Done(n));
            }
            ServerLine::Done(n) => return Err(Close::EarlyDone(n)),
            ServerLine::FinishRequest(r) if self.phase == Phase::Up && !self.finish_requested => {
                self.finish_requested = true;
                self.push(Event::FinishRequested(r.text.to_owned()));
            }
            ServerLine::FinishRequest(_) => {}
            ServerLine::Reply(r) => {
                return Err(Close::Ended {
                    code: r.code,
                    text: r.text.to_owned(),
                })
            }
        }
        Ok(())
    }
}

/// A status line where the greeting should be: a server at a connection
/// limit (or otherwise unwilling) says why instead of greeting, then
/// closes. `None` when `buf` does not start with a whole status line.
fn turned_away(buf: &[u8]) -> Option<Close> {
    match parse_server_line(buf) {
        Ok(Status::Complete(ServerLine::Reply(r) | ServerLine::FinishRequest(r), _)) => {
            Some(Close::Turned {
                code: r.code,
                text: r.text.to_owned(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
