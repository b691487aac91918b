//! One connection's bytes, plain or through TLS, behind `Read`/`Write`.
//!
//! [`Transport`] is what the server's `conn` and the client's `link` hold
//! instead of a bare socket: `read` gives plaintext, `write` takes
//! plaintext, `flush` pushes out what TLS still holds, `shutdown_write`
//! half-closes (with TLS: `close_notify`, then the TCP half-close once the
//! records are out). A plain transport is the socket itself, so the
//! zero-copy paths ([`Transport::as_plain`]) stay as they were.
//!
//! ## The TLS record path ([`Tls`])
//!
//! - **In.** Ciphertext is read from the socket in quanta of up to
//!   [`RX_QUANTUM`] bytes into `rx` (one syscall, not rustls's 4 KiB
//!   reads), fed to rustls, decrypted by `process_new_packets`, and copied
//!   out by `read` until the caller's buffer is full or the socket is
//!   empty. `rx` is given back to the allocator whenever rustls has taken
//!   all of it, so an idle connection holds none of it.
//! - **Out.** `write` first flushes records already made, then lets rustls
//!   take at most what its buffer limit ([`TX_LIMIT`]) allows, encrypts
//!   it, and flushes again (`writev` of the records). With nothing taken
//!   it returns `WouldBlock`: the socket is full and a writable event
//!   follows.
//! - **Edge-triggered.** `read` returns `WouldBlock` only when the socket
//!   did; what rustls decrypted but the caller did not take is still
//!   there on the next call (callers that stop at a quantum come back by
//!   themselves, as on plain sockets).
//! - **End.** A `close_notify` reads as end of input (`Ok(0)`); a TCP end
//!   without one is an error (`UnexpectedEof`), never a clean end, so a
//!   forged FIN cannot make a stream look complete.
//!
//! Memory per TLS connection is bounded: `rx` ≤ [`RX_QUANTUM`], rustls's
//! received plaintext ≤ 16 KiB plus one record, its outgoing plaintext
//! and records ≤ [`TX_LIMIT`] each.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::TlsFailure;
use crate::proto::channel::ChannelEnd;

/// Most ciphertext read from the socket per syscall (and held per
/// connection between reads).
pub const RX_QUANTUM: usize = 64 * 1024;

/// rustls's buffer limit for plaintext waiting for the handshake and for
/// records waiting for the socket.
pub const TX_LIMIT: usize = 256 * 1024;

/// A byte stream TLS can run over: a non-blocking socket that half-closes.
pub trait Socket: Read + Write {
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Socket for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// A TLS session's state over some socket (see the module doc); the
/// socket is passed to each call, so a [`Transport`] can start (and, with
/// kTLS, end) TLS on the socket it already holds.
#[derive(Debug)]
pub struct Tls {
    pub conn: rustls::Connection,
    /// Ciphertext read from the socket not yet given to rustls: `rx[rx_at..]`.
    /// Invariant: `rx_at <= rx.len() <= RX_QUANTUM`.
    rx: Vec<u8>,
    rx_at: usize,
    /// `close_notify` was queued; the TCP write side is shut once every
    /// record is out (`shut`).
    closing: bool,
    shut: bool,
    /// The socket gave end of input.
    eof: bool,
}

impl Tls {
    pub fn new(mut conn: rustls::Connection) -> Tls {
        conn.set_buffer_limit(Some(TX_LIMIT));
        Tls {
            conn,
            rx: Vec::new(),
            rx_at: 0,
            closing: false,
            shut: false,
            eof: false,
        }
    }

    /// Bytes of ciphertext held between reads (for tests and bounds).
    pub fn held(&self) -> usize {
        self.rx.capacity()
    }

    /// Reads ciphertext from the socket into `rx` (one syscall) unless it
    /// still holds some. `Ok(false)` at end of input.
    fn fill_rx(&mut self, sock: &mut impl Socket) -> io::Result<bool> {
        if self.rx_at < self.rx.len() {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        self.rx.clear();
        self.rx_at = 0;
        self.rx.resize(RX_QUANTUM, 0);
        let got = loop {
            match sock.read(&mut self.rx) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match got {
            Ok(n) => {
                self.rx.truncate(n);
                self.eof = n == 0;
                if n == 0 {
                    self.rx = Vec::new();
                }
                Ok(n > 0)
            }
            Err(e) => {
                // Drained (or broken): an idle connection holds no buffer.
                self.rx = Vec::new();
                Err(e)
            }
        }
    }

    /// Gives rustls what `rx` holds (or the end of input) and processes it.
    fn feed(&mut self, sock: &mut impl Socket) -> io::Result<()> {
        if self.fill_rx(sock)? {
            let mut rest = &self.rx[self.rx_at..];
            let n = self.conn.read_tls(&mut rest)?;
            self.rx_at += n;
            if self.rx_at == self.rx.len() {
                // All with rustls: hold nothing between reads.
                self.rx = Vec::new();
                self.rx_at = 0;
            }
        } else {
            // rustls notes the end of input from an empty read.
            self.conn.read_tls(&mut io::empty())?;
        }
        if let Err(e) = self.conn.process_new_packets() {
            // Send the alert that says why, if the socket takes it.
            let _ = self.flush(sock);
            return Err(io::Error::new(io::ErrorKind::InvalidData, TlsFailure(e)));
        }
        // Handshake messages (or a key update) rustls wants to answer.
        self.flush(sock)
    }

    /// Writes the records rustls holds until the socket is full; shuts the
    /// write side once `close_notify` is out.
    pub fn flush(&mut self, sock: &mut impl Socket) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.closing && !self.shut {
            self.shut = true;
            sock.shutdown_write()?;
        }
        Ok(())
    }

    /// True when no record waits for the socket.
    pub fn is_flushed(&self) -> bool {
        !self.conn.wants_write()
    }

    /// Queues `close_notify` and half-closes once it is out.
    pub fn shutdown_write(&mut self, sock: &mut impl Socket) -> io::Result<()> {
        if !self.closing {
            self.closing = true;
            self.conn.send_close_notify();
        }
        self.flush(sock)
    }

    /// Fills `buf` with plaintext as far as the socket allows without
    /// blocking (see the module doc for the end-of-input rules).
    pub fn read(&mut self, sock: &mut impl Socket, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            match self.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled), // close_notify, or `buf` is full
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The end (or error) is reported again on the next call.
                Err(_) if filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
            match self.feed(sock) {
                Ok(()) => {}
                // `WouldBlock`, an error or the end: the next call sees it
                // again (a TLS error is kept by rustls, the end by `eof`).
                Err(_) if filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes what plaintext rustls's buffer limit allows, after and
    /// before flushing records; `WouldBlock` when it took none.
    pub fn write(&mut self, sock: &mut impl Socket, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        self.flush(sock)?;
        let n = self.conn.writer().write(data)?;
        self.flush(sock)?;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

/// A connection's byte stream: a socket with TLS over it or not, or a
/// channel of a multiplexed connection ([`ChannelEnd`]).
#[derive(Debug)]
pub struct Transport {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Tcp {
        sock: TcpStream,
        /// `None`: plain TCP (the zero-copy paths apply).
        tls: Option<Box<Tls>>,
    },
    /// A channel: no socket of its own, so it registers with no poll, takes
    /// no zero-copy path, and its events come from the connection that
    /// carries it.
    Channel(Box<ChannelEnd>),
}

impl Transport {
    pub fn plain(sock: TcpStream) -> Transport {
        Transport {
            inner: Inner::Tcp { sock, tls: None },
        }
    }

    /// A TLS session over `sock` (the handshake runs as the connection
    /// reads and writes).
    pub fn tls(sock: TcpStream, conn: impl Into<rustls::Connection>) -> Transport {
        let mut t = Transport::plain(sock);
        t.start_tls(conn);
        t
    }

    /// A channel of a multiplexed connection.
    pub fn channel(end: ChannelEnd) -> Transport {
        Transport {
            inner: Inner::Channel(Box::new(end)),
        }
    }

    /// Starts TLS on the socket held (the server does this once the first
    /// byte shows a ClientHello); nothing on a channel.
    pub fn start_tls(&mut self, conn: impl Into<rustls::Connection>) {
        if let Inner::Tcp { tls, .. } = &mut self.inner {
            *tls = Some(Box::new(Tls::new(conn.into())));
        }
    }

    /// The socket, when the connection is plain: the zero-copy paths
    /// (splice, sendfile) apply only then.
    ///
    /// kTLS would make a TLS connection plain again here: after the
    /// handshake, `dangerous_extract_secrets` gives the traffic keys,
    /// `setsockopt(TCP_ULP, "tls")` with `TLS_TX`/`TLS_RX` hands them to
    /// the kernel, and `tls` becomes `None` (see the module doc of
    /// [`crate::tls`]).
    pub fn as_plain(&self) -> Option<&TcpStream> {
        match &self.inner {
            Inner::Tcp { sock, tls: None } => Some(sock),
            _ => None,
        }
    }

    /// The TCP socket underneath (for addresses, `peek` and errors); none
    /// for a channel.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match &self.inner {
            Inner::Tcp { sock, .. } => Some(sock),
            Inner::Channel(_) => None,
        }
    }

    /// The channel, for a stream on a multiplexed connection.
    pub fn as_channel(&mut self) -> Option<&mut ChannelEnd> {
        match &mut self.inner {
            Inner::Channel(c) => Some(c),
            Inner::Tcp { .. } => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tcp { tls: Some(_), .. })
    }

    /// True when nothing waits in user space for the socket (always, when
    /// plain). A connection is closed only once this holds, or at its
    /// deadline. Always on a channel too: what it holds is framed by its
    /// connection right after each turn, and when it closes.
    pub fn is_flushed(&self) -> bool {
        match &self.inner {
            Inner::Tcp { tls, .. } => tls.as_ref().is_none_or(|t| t.is_flushed()),
            Inner::Channel(_) => true,
        }
    }

    /// Half-closes the write side (with TLS after `close_notify`; see
    /// [`Tls::shutdown_write`]; on a channel, a FIN follows what was
    /// written).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Tcp { sock, tls: None } => sock.shutdown(Shutdown::Write),
            Inner::Tcp { sock, tls: Some(t) } => t.shutdown_write(sock),
            Inner::Channel(c) => {
                c.shutdown_write();
                Ok(())
            }
        }
    }

    /// The TLS session, once there is one.
    pub fn session(&self) -> Option<&rustls::Connection> {
        match &self.inner {
            Inner::Tcp { tls: Some(t), .. } => Some(&t.conn),
            _ => None,
        }
    }

    /// The names of the verified client certificate on a server-side TLS
    /// connection ([`super::peer_names`]); empty when plain, without a
    /// client certificate, or before the handshake is done.
    pub fn peer_names(&self) -> Vec<String> {
        match self.session() {
            Some(rustls::Connection::Server(s)) => super::peer_names(s),
            _ => Vec::new(),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Tcp { sock, tls: None } => sock.read(buf),
            Inner::Tcp { sock, tls: Some(t) } => t.read(sock, buf),
            Inner::Channel(c) => c.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Tcp { sock, tls: None } => sock.write(data),
            Inner::Tcp { sock, tls: Some(t) } => t.write(sock, data),
            Inner::Channel(c) => c.write(data),
        }
    }

    /// Writes the records TLS still holds (nothing to do when plain; a
    /// channel's bytes are framed by its connection).
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Tcp { sock, tls: Some(t) } => t.flush(sock),
            _ => Ok(()),
        }
    }
}

/// A channel is in no poll: registering it does nothing.
impl Source for Transport {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match &mut self.inner {
            Inner::Tcp { sock, .. } => sock.register(r, t, i),
            Inner::Channel(_) => Ok(()),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match &mut self.inner {
            Inner::Tcp { sock, .. } => sock.reregister(r, t, i),
            Inner::Channel(_) => Ok(()),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match &mut self.inner {
            Inner::Tcp { sock, .. } => sock.deregister(r),
            Inner::Channel(_) => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
