//! The metrics endpoint: HTTP/1.1, one response per connection, served from
//! the daemon's own loop.
//!
//! [`MetricsServer`] owns a non-blocking listener and a slab of at most
//! [`Limits::max_connections`] connections. It registers them with the
//! daemon's `mio::Registry` under tokens from [`TOKENS`] and is driven by
//! two calls: [`MetricsServer::on_event`] for an event on one of its tokens
//! and [`MetricsServer::tick`] when its timer ([`TIMER`]) fires. It owns no
//! clock and never sleeps: `now` comes from the loop.
//!
//! ## Tokens
//! The endpoint owns the tokens whose low 32 bits are in [`TOKENS`], which
//! starts at [`crate::reactor::slots::SECOND_BASE`]: no fixed token of a
//! daemon (all below [`crate::reactor::slots::RESERVED`]) and no key of a
//! daemon's own [`Slots`] falls there. Low word `TOKEN_BASE` is the
//! listener, `TOKEN_BASE + 1` the timer (both with generation 0), and the
//! connections live in a [`Slots`] table based at `TOKEN_BASE + 2`, whose
//! generation-tagged keys make an event queued for a closed connection miss
//! the next occupant of its slot.
//!
//! ## A connection
//! `Reading` (bytes are appended to a buffer of at most
//! [`MAX_REQUEST`] bytes until the request head ends; only the request line
//! is parsed, by the pure [`parse_request_line`]) → `Writing` (the whole
//! response is built at once and written as the socket accepts it) →
//! `Draining` (write side shut; what the peer still sends is read and
//! dropped until it closes, so the response is not lost to a reset) →
//! closed. Every connection is closed at its deadline
//! ([`Limits::timeout`] after accept), whatever its phase.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /metrics` (or `HEAD`) | `200`, [`super::CONTENT_TYPE`], the exposition |
//! | `GET /health` (or `HEAD`) | `200`, `text/plain`, `ok\n` |
//! | another method on those paths | `405` with `Allow: GET, HEAD` |
//! | another path | `404` |
//! | a head over [`MAX_REQUEST`] bytes | `431` |
//! | a malformed request line | `400` |
//! | a version other than `HTTP/1.0`/`HTTP/1.1` | `505` |
//!
//! A query string is ignored (`/metrics?x=1` is `/metrics`). Every response
//! carries `Content-Length` and `Connection: close`. A connection beyond
//! the limit is accepted, sent a `503` if the socket takes it at once, and
//! closed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::Scrape;
use crate::proto::Status;
use crate::reactor::slots::{low_word, SECOND_BASE};
use crate::reactor::sys::retry;
use crate::reactor::{Armed, Key, Slots, Timers};

/// First token of the endpoint's range; the listener's token.
pub const TOKEN_BASE: usize = SECOND_BASE;
/// The low words of every token the endpoint uses; see the module docs.
pub const TOKENS: Range<usize> = TOKEN_BASE..CONN_BASE + SLOT_LIMIT;
/// Low word of the first connection slot's keys.
const CONN_BASE: usize = TOKEN_BASE + 2;
/// The listener's token.
pub const LISTENER: Token = Token(TOKEN_BASE);
/// The token of the endpoint's timer in the daemon's [`Timers`].
pub const TIMER: Token = Token(TOKEN_BASE + 1);
/// Longest request head (request line and headers) read; longer is `431`.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Most connections the endpoint takes at once.
const SLOT_LIMIT: usize = 256;

/// How much the endpoint takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; clamped to `1..=256`. Default 64.
    pub max_connections: usize,
    /// A connection is closed this long after accept. Default 5 s.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why the endpoint could not start.
#[derive(Debug)]
pub enum HttpError {
    Bind { addr: SocketAddr, source: io::Error },
    Register { source: io::Error },
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Bind { addr, source } => {
                write!(f, "cannot listen for metrics on {addr}: {source}")
            }
            HttpError::Register { source } => {
                write!(f, "cannot register the metrics listener: {source}")
            }
        }
    }
}

impl std::error::Error for HttpError {}

/// The HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// A parsed request line, borrowing from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// A token, case-sensitive (`GET`).
    pub method: &'a str,
    /// The request target as sent (`/metrics?x=1`).
    pub target: &'a str,
    pub version: Version,
}

impl<'a> RequestLine<'a> {
    /// The target without its query string.
    pub fn path(&self) -> &'a str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }
}

/// Why a request line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// [`MAX_REQUEST`] bytes without a line end.
    TooLarge,
    /// The line is not UTF-8.
    NotUtf8,
    /// Not `method SP target SP HTTP/x.y`, or a control character.
    Malformed,
    /// `HTTP/x.y` other than 1.0 and 1.1.
    UnsupportedVersion,
}

impl RequestError {
    /// Status code and reason phrase of the answer.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            RequestError::TooLarge => (431, "Request Header Fields Too Large"),
            RequestError::NotUtf8 | RequestError::Malformed => (400, "Bad Request"),
            RequestError::UnsupportedVersion => (505, "HTTP Version Not Supported"),
        }
    }
}

/// Parses the request line at the start of `buf`:
/// `method SP target SP HTTP/1.x (CR)LF`. `Complete` carries the line and
/// the bytes it used, LF included; `Partial` means read more. A control
/// byte fails at once, even before the line is complete; [`MAX_REQUEST`]
/// bytes without LF are [`RequestError::TooLarge`]. Pure: no allocation.
pub fn parse_request_line(buf: &[u8]) -> Result<Status<RequestLine<'_>>, RequestError> {
    let window = buf.get(..MAX_REQUEST).unwrap_or(buf);
    let Some(lf) = memchr::memchr(b'\n', window) else {
        if window.iter().any(|&b| is_control(b) && b != b'\r') {
            return Err(RequestError::Malformed);
        }
        return match buf.len() >= MAX_REQUEST {
            true => Err(RequestError::TooLarge),
            false => Ok(Status::Partial),
        };
    };
    let raw = &window[..lf];
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let line = std::str::from_utf8(raw).map_err(|_| RequestError::NotUtf8)?;
    if line.bytes().any(is_control) {
        return Err(RequestError::Malformed);
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(RequestError::Malformed);
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::Malformed);
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        v if is_http_version(v) => return Err(RequestError::UnsupportedVersion),
        _ => return Err(RequestError::Malformed),
    };
    let line = RequestLine {
        method,
        target,
        version,
    };
    Ok(Status::Complete(line, lf + 1))
}

/// The length of the request head (through the empty line that ends it),
/// if `buf` holds all of it. Accepts CRLF and bare LF line ends.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|i| {
        let rest = &buf[i + 1..];
        if rest.starts_with(b"\n") {
            Some(i + 2)
        } else if rest.starts_with(b"\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_http_version(v: &str) -> bool {
    matches!(v.as_bytes(), [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

/// Where a connection is in its one request/response exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    Reading,
    Writing,
    Draining,
}

#[derive(Debug)]
struct Conn {
    sock: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    exchange: Exchange,
    /// The request head so far; never longer than [`MAX_REQUEST`].
    request: Vec<u8>,
    /// The response; `out[sent..]` is still to be written.
    out: Vec<u8>,
    sent: usize,
}

/// What a handler decided about a connection.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Wait,
    Close,
}

/// The `/metrics` and `/health` endpoint of one daemon; see the module docs.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    conns: Slots<Conn>,
    limits: Limits,
    /// The earliest wake-up pushed to the daemon's timers.
    timer: Armed,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) with default [`Limits`] and
    /// registers the listener under [`LISTENER`].
    pub fn bind(addr: SocketAddr, registry: &Registry) -> Result<MetricsServer, HttpError> {
        MetricsServer::bind_with(addr, registry, Limits::default())
    }

    /// [`MetricsServer::bind`] with explicit limits.
    pub fn bind_with(
        addr: SocketAddr,
        registry: &Registry,
        limits: Limits,
    ) -> Result<MetricsServer, HttpError> {
        let bind = |source| HttpError::Bind { addr, source };
        let mut listener = TcpListener::bind(addr).map_err(bind)?;
        let local_addr = listener.local_addr().map_err(bind)?;
        registry
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|source| HttpError::Register { source })?;
        let limits = Limits {
            max_connections: limits.max_connections.clamp(1, SLOT_LIMIT),
            ..limits
        };
        Ok(MetricsServer {
            listener,
            local_addr,
            conns: Slots::with_base(CONN_BASE),
            limits,
            timer: Armed::default(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether `token` is one of the endpoint's ([`TOKENS`]): the loop
    /// routes such events to [`MetricsServer::on_event`] and such timers to
    /// [`MetricsServer::tick`].
    pub fn owns(token: Token) -> bool {
        TOKENS.contains(&low_word(token))
    }

    /// Connections now open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Handles an event for one of the endpoint's tokens: accepts, reads,
    /// answers (asking `metrics` for the body of `/metrics`), writes. Also
    /// closes connections past their deadline and arms [`TIMER`] in
    /// `timers` for the next one. Stale and spurious events are ignored,
    /// and [`TIMER`] passed here instead of to [`MetricsServer::tick`]
    /// does the same as `tick`.
    pub fn on_event(
        &mut self,
        registry: &Registry,
        timers: &mut Timers<Token>,
        token: Token,
        now: Instant,
        metrics: &mut impl Scrape,
    ) {
        if token == LISTENER {
            self.accept(registry, now, metrics);
        } else if let Some(key) = self.slot_of(token) {
            if self.drive(key, now, metrics) == Next::Close {
                self.close(registry, key, "done");
            }
        }
        self.tick(registry, timers, now);
    }

    /// Closes connections whose deadline passed and arms [`TIMER`] for the
    /// next deadline. The loop calls it when [`TIMER`] fires; calling it
    /// more often is harmless.
    pub fn tick(&mut self, registry: &Registry, timers: &mut Timers<Token>, now: Instant) {
        self.timer.fired(now);
        self.conns.retain(|c| {
            if c.deadline > now {
                return true;
            }
            let _ = registry.deregister(&mut c.sock);
            crate::debug!("metrics: {}: closed (timed out)", c.peer);
            false
        });
        if let Some(at) = self.conns.values().map(|c| c.deadline).min() {
            if self.timer.arm(at) {
                timers.schedule(at, TIMER);
            }
        }
    }

    /// The live connection `token` names; `None` for a stale token.
    fn slot_of(&self, token: Token) -> Option<Key> {
        Key::from_token(token).filter(|&k| self.conns.get(k).is_some())
    }

    fn accept(&mut self, registry: &Registry, now: Instant, metrics: &mut impl Scrape) {
        loop {
            let (sock, peer) = match retry(|| self.listener.accept()) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: retried on the next connection.
                    crate::warn!("metrics: accept failed: {e}");
                    return;
                }
            };
            if self.conns.len() >= self.limits.max_connections {
                crate::debug!("metrics: {peer}: too many connections, refused");
                refuse(sock);
                continue;
            }
            if let Some(key) = self.admit(registry, sock, peer, now) {
                if self.drive(key, now, metrics) == Next::Close {
                    self.close(registry, key, "done");
                }
            }
        }
    }

    fn admit(
        &mut self,
        registry: &Registry,
        mut sock: TcpStream,
        peer: SocketAddr,
        now: Instant,
    ) -> Option<Key> {
        let key = self.conns.vacant_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = registry.register(&mut sock, key.token(), interest) {
            crate::warn!("metrics: cannot register connection from {peer}: {e}");
            return None;
        }
        let inserted = self.conns.insert(Conn {
            sock,
            peer,
            deadline: now + self.limits.timeout,
            exchange: Exchange::Reading,
            request: Vec::new(),
            out: Vec::new(),
            sent: 0,
        });
        debug_assert_eq!(inserted, key);
        Some(key)
    }

    /// Runs one connection as far as its socket allows.
    fn drive(&mut self, key: Key, now: Instant, metrics: &mut impl Scrape) -> Next {
        let Some(conn) = self.conns.get_mut(key) else {
            return Next::Close;
        };
        if conn.exchange == Exchange::Reading {
            match conn.read_request() {
                Ok(eof) => match respond(&conn.request, eof, now, metrics) {
                    Answer::Wait => return Next::Wait,
                    Answer::Close => return Next::Close,
                    Answer::Send(status, out) => {
                        crate::debug!(
                            "metrics: {}: {status} for {:?}",
                            conn.peer,
                            request_line_text(&conn.request)
                        );
                        conn.out = out;
                        conn.exchange = Exchange::Writing;
                    }
                },
                Err(e) => {
                    crate::debug!("metrics: {}: read failed: {e}", conn.peer);
                    return Next::Close;
                }
            }
        }
        if conn.exchange == Exchange::Writing {
            match conn.write_response() {
                Ok(true) => {
                    let _ = conn.sock.shutdown(Shutdown::Write);
                    conn.exchange = Exchange::Draining;
                }
                Ok(false) => return Next::Wait,
                Err(e) => {
                    crate::debug!("metrics: {}: write failed: {e}", conn.peer);
                    return Next::Close;
                }
            }
        }
        match crate::reactor::discard_input(&mut conn.sock) {
            true => Next::Close,
            false => Next::Wait,
        }
    }

    fn close(&mut self, registry: &Registry, key: Key, why: &str) {
        if let Some(mut conn) = self.conns.remove(key) {
            let _ = registry.deregister(&mut conn.sock);
            // A request answered is one line (above); only say why
            // when a connection ends otherwise.
            if why != "done" {
                crate::debug!("metrics: {}: closed ({why})", conn.peer);
            }
        }
    }
}

impl Conn {
    /// Reads until `WouldBlock`, EOF or a full buffer; returns whether the
    /// peer closed its side.
    fn read_request(&mut self) -> io::Result<bool> {
        const CHUNK: usize = 2048;
        let mut chunk = [0u8; CHUNK];
        loop {
            let room = MAX_REQUEST - self.request.len();
            if room == 0 {
                return Ok(false);
            }
            match retry(|| self.sock.read(&mut chunk[..room.min(CHUNK)])) {
                Ok(0) => return Ok(true),
                Ok(n) => self.request.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes what the socket takes; returns whether all of it is out.
    fn write_response(&mut self) -> io::Result<bool> {
        while self.sent < self.out.len() {
            match retry(|| self.sock.write(&self.out[self.sent..])) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// What to do with the request bytes read so far.
enum Answer {
    Wait,
    Close,
    /// Status code (for the log) and the whole response.
    Send(u16, Vec<u8>),
}

/// Decides on a request head (`eof`: the peer will send nothing more).
fn respond(request: &[u8], eof: bool, now: Instant, metrics: &mut impl Scrape) -> Answer {
    let full = request.len() >= MAX_REQUEST;
    let line = match parse_request_line(request) {
        Err(e) => return error(e),
        Ok(Status::Partial) if full => return error(RequestError::TooLarge),
        Ok(Status::Partial) if eof => return Answer::Close,
        Ok(Status::Partial) => return Answer::Wait,
        Ok(Status::Complete(line, _)) => line,
    };
    if head_len(request).is_none() && !eof {
        return match full {
            true => error(RequestError::TooLarge),
            false => Answer::Wait,
        };
    }
    let head_only = line.method == "HEAD";
    let get = line.method == "GET" || head_only;
    match line.path() {
        "/metrics" | "/health" if !get => Answer::Send(
            405,
            response(
                (405, "Method Not Allowed"),
                "Allow: GET, HEAD\r\nContent-Type: text/plain; charset=utf-8",
                b"method not allowed\n",
                false,
            ),
        ),
        "/metrics" => {
            let mut body = String::with_capacity(8192);
            metrics.scrape(now, &mut body);
            let ct = format!("Content-Type: {}", super::CONTENT_TYPE);
            Answer::Send(200, response((200, "OK"), &ct, body.as_bytes(), head_only))
        }
        "/health" => Answer::Send(200, response((200, "OK"), TEXT, b"ok\n", head_only)),
        _ => Answer::Send(
            404,
            response((404, "Not Found"), TEXT, b"not found\n", head_only),
        ),
    }
}

const TEXT: &str = "Content-Type: text/plain; charset=utf-8";

fn error(e: RequestError) -> Answer {
    let status = e.status();
    let body = format!("{}\n", status.1.to_ascii_lowercase());
    Answer::Send(status.0, response(status, TEXT, body.as_bytes(), false))
}

/// A whole response: status line, `headers` (CRLF-separated, without the
/// last CRLF), `Content-Length`, `Connection: close`, then `body` unless
/// `head_only`.
fn response((code, reason): (u16, &str), headers: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\n{headers}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// A best-effort `503` to a connection over the limit, then close.
fn refuse(mut sock: TcpStream) {
    let out = response(
        (503, "Service Unavailable"),
        TEXT,
        b"too many connections\n",
        false,
    );
    let _ = sock.write(&out);
    let _ = sock.shutdown(Shutdown::Write);
}

/// The first line of a request, for the log (lossy, at most 200 bytes).
fn request_line_text(request: &[u8]) -> String {
    let end = memchr::memchr(b'\n', request)
        .unwrap_or(request.len())
        .min(200);
    String::from_utf8_lossy(&request[..end])
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests;
