//! The client's side of one TCP connection: the socket shell around
//! [`ClientConn`], the protocol machine in `proto/client.rs`.
//!
//! The machine decides (handshake, which server line means what, when to
//! half-close, why the connection ended); this file does the syscalls:
//! connect, read, write, `sendfile`, `shutdown`. It also owns the one
//! piece of the stream that is not protocol: the compression encoder and
//! the compressed bytes the socket has not taken yet (`wire`). The stream
//! that owns the link decides what data to write; [`Link::poll`] turns
//! what the machine reports into [`Heard`] for it.
//!
//! Compression: a link that asks for a codec (`compression:<codec>` in
//! INIT) compresses only when the machine reports the server's `200`
//! confirmed it; then [`Link::send`] takes plain bytes, counts them as
//! sent, and keeps their compressed form in `wire` until the socket takes
//! it. A server that does not confirm gets plain bytes
//! ([`Heard::CodecIgnored`]); one that refuses (`415`) is reported as
//! [`Heard::CodecRefused`]. Offsets are always plain bytes.
//!
//! Edge-triggered readiness: [`Link::poll`] reads until `WouldBlock` and
//! writes until `WouldBlock` or nothing is left; spurious wake-ups find
//! nothing to do.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::carrier::Ticket;
use crate::codec::{Codec, Encoder};
use crate::config::Compression;
use crate::proto::channel::ChannelEnd;
use crate::proto::client::{ClientConn, Event, Negotiated};
pub use crate::proto::client::{Close, Phase};
use crate::tls::{ClientSetup, Transport};

/// A socket connecting to `addr` (with TLS to `server` when `tls`: the
/// ClientHello goes out once the connect completes), for a link or a
/// multiplexed connection.
pub(crate) fn connect(
    addr: SocketAddr,
    server: &str,
    tls: Option<&ClientSetup>,
) -> io::Result<Transport> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let tcp = TcpStream::connect(addr)?;
    // The client batches its writes itself (linger): what it writes goes
    // out now, not when the server's ACK for the previous segment comes
    // back (which a server may delay).
    tcp.set_nodelay(true)?;
    Ok(match tls {
        None => Transport::plain(tcp),
        Some(t) => {
            let name = t.name_for(server).map_err(|e| invalid(e.to_string()))?;
            let session = rustls::ClientConnection::new(t.config.clone(), name)
                .map_err(|e| invalid(e.to_string()))?;
            Transport::tls(tcp, session)
        }
    })
}

/// Something the server said that the stream must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// `200`: streaming may start at this offset.
    Ready(Option<u64>),
    /// `ACK n`: the server wrote everything before offset n.
    Ack(u64),
    /// The server asks us to finish (`421`): stop sending, half-close.
    /// Its reply text says why (shutting down, idle timeout).
    Finish(String),
    /// `250 DONE n`: after our half-close, the server holds and committed
    /// everything up to n.
    Done(u64),
    /// The connection is over, and why ([`Close::is_clean`] after our
    /// half-close confirmed by `250 DONE`).
    Closed(Close),
    /// The server refused the codec we asked for (`415`); the line.
    CodecRefused(String),
    /// The server's `200` did not confirm the codec we asked for: it
    /// predates compression, and this connection sends plain bytes.
    CodecIgnored(Codec),
}

#[derive(Debug)]
pub struct Link {
    /// The socket, plain or TLS (see [`crate::tls::Transport`]).
    pub sock: Transport,
    /// The machine's phase, copied after every call that may change it
    /// (read it; the machine owns it). A closed link keeps the phase it
    /// closed in (`Connecting` tells an unreachable server), never
    /// `Closed`: the stream drops it on [`Heard::Closed`].
    pub phase: Phase,
    conn: ClientConn,
    /// The codec (and level) asked for in INIT.
    asked: Compression,
    /// Set once the server confirmed `asked`.
    encoder: Option<Encoder>,
    /// Compressed stream bytes the socket has not taken yet.
    wire: Vec<u8>,
    /// Stream bytes written to the socket since [`take_wire_bytes`](Self::take_wire_bytes).
    wire_count: u64,
    /// Set when the transport is a channel of a multiplexed connection
    /// (see `client/carrier.rs`); dropping it closes the channel.
    ticket: Option<Ticket>,
}

impl Link {
    /// Connects to `addr`, the address of `server` (`host:port`); the INIT
    /// will ask for `compression` (when it names a codec). With `tls` the
    /// connection starts with a TLS handshake (the ClientHello goes out
    /// once the connect completes), expecting the certificate of `server`.
    pub fn connect(
        addr: SocketAddr,
        server: &str,
        compression: Compression,
        tls: Option<&ClientSetup>,
    ) -> io::Result<Link> {
        let sock = connect(addr, server, tls)?;
        Ok(Link::over(sock, compression, None))
    }

    /// A link on a channel of a multiplexed connection (see
    /// `client/carrier.rs`): connected from the start, the greeting is
    /// the first thing it reads.
    pub fn channel(end: ChannelEnd, ticket: Ticket, compression: Compression) -> Link {
        let mut link = Link::over(Transport::channel(end), compression, Some(ticket));
        link.conn.connected();
        link.sync_phase();
        link
    }

    fn over(sock: Transport, compression: Compression, ticket: Option<Ticket>) -> Link {
        let conn = ClientConn::new(compression.codec);
        Link {
            sock,
            phase: conn.phase(),
            conn,
            asked: compression,
            encoder: None,
            wire: Vec::new(),
            wire_count: 0,
            ticket,
        }
    }

    /// The carrier and channel id, for a link on a channel.
    pub fn channel_of(&self) -> Option<(crate::reactor::Key, u32)> {
        self.ticket.as_ref().map(|t| (t.carrier(), t.id()))
    }

    /// The codec the INIT asks for.
    pub fn asks_for(&self) -> Option<Codec> {
        self.conn.asks_for()
    }

    /// True when file bytes may go out with `sendfile`: uncompressed, on a
    /// plain socket (TLS encrypts in user space).
    pub fn zero_copy(&self) -> bool {
        self.encoder.is_none() && self.sock.as_plain().is_some()
    }

    /// Stream bytes written to the socket since the last call (after
    /// compression), for the `wire_bytes` counter.
    pub fn take_wire_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.wire_count)
    }

    /// Advances the handshake and reads server lines. `init` builds the
    /// INIT line when the greeting has arrived. Returns what was heard, in
    /// order, into `heard`; [`Heard::Closed`] (or `CodecRefused`) is last.
    pub fn poll(&mut self, init: impl FnOnce(&mut Vec<u8>), heard: &mut Vec<Heard>) {
        if self.conn.phase() == Phase::Connecting {
            self.check_connected();
        }
        if self.conn.is_open() && self.conn.phase() != Phase::Connecting {
            self.read_in();
        }
        let mut init = Some(init);
        self.take_events(&mut init, heard);
        if let Err(e) = self.flush() {
            self.failed(&e, |c, e| c.write_failed(e));
            self.take_events(&mut init, heard);
        }
        self.sync_phase();
    }

    /// Tells the machine an I/O error ended the connection: a TLS failure
    /// with its own words, anything else through `io_failed`.
    fn failed(&mut self, e: &io::Error, io_failed: fn(&mut ClientConn, &io::Error)) {
        match crate::tls::failure(e) {
            Some(f) => self.conn.abort(Close::Tls(f.to_string())),
            None => io_failed(&mut self.conn, e),
        }
    }

    /// Copies the machine's phase while it is open (see [`Link::phase`]).
    fn sync_phase(&mut self) {
        if self.conn.is_open() {
            self.phase = self.conn.phase();
        }
    }

    /// Tells the machine whether the non-blocking connect completed.
    fn check_connected(&mut self) {
        // A channel is connected from the start (see `Link::channel`).
        let Some(tcp) = self.sock.tcp() else {
            return;
        };
        match tcp.take_error() {
            Ok(Some(e)) | Err(e) => return self.conn.connect_failed(&e),
            Ok(None) => {}
        }
        match tcp.peer_addr() {
            Ok(_) => {
                self.conn.connected();
                // With TLS the ClientHello goes out now.
                if let Err(e) = self.sock.flush() {
                    self.failed(&e, |c, e| c.write_failed(e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => self.conn.connect_failed(&e),
        }
    }

    /// Feeds the machine what the socket has, until `WouldBlock`, EOF or
    /// the machine closes.
    fn read_in(&mut self) {
        let mut chunk = [0u8; 4096];
        while self.conn.is_open() {
            match self.sock.read(&mut chunk) {
                Ok(0) => self.conn.eof(),
                Ok(n) => self.conn.received(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => self.failed(&e, |c, e| c.read_failed(e)),
            }
        }
    }

    /// Turns the machine's events into `heard`, answering the greeting
    /// with INIT and starting the encoder when the codec is confirmed.
    fn take_events<F>(&mut self, init: &mut Option<F>, heard: &mut Vec<Heard>)
    where
        F: FnOnce(&mut Vec<u8>),
    {
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::Greeted => {
                    if let Some(f) = init.take() {
                        self.conn.send_init(f);
                    }
                }
                Event::Ready {
                    offset,
                    compression,
                } => {
                    if self.start_encoder(compression, heard) {
                        heard.push(Heard::Ready(offset));
                    }
                }
                Event::Ack(n) => heard.push(Heard::Ack(n)),
                Event::Done(n) => heard.push(Heard::Done(n)),
                Event::FinishRequested(text) => heard.push(Heard::Finish(text)),
                Event::Closed(Close::CodecRefused { text, .. }) => {
                    let code = crate::proto::UNSUPPORTED_CODEC;
                    heard.push(Heard::CodecRefused(format!("{code} {text}")));
                }
                Event::Closed(why) => heard.push(Heard::Closed(why)),
            }
        }
    }

    /// Acts on the compression the `200` settled; false when the encoder
    /// could not start (the machine then reports the close).
    fn start_encoder(&mut self, compression: Negotiated, heard: &mut Vec<Heard>) -> bool {
        match compression {
            Negotiated::Plain => {}
            Negotiated::Ignored(codec) => heard.push(Heard::CodecIgnored(codec)),
            Negotiated::Confirmed(codec) => match Encoder::new(codec, self.asked.level) {
                Ok(e) => self.encoder = Some(e),
                Err(e) => {
                    let error = (&e).into();
                    self.conn.abort(Close::EncoderFailed { codec, error });
                    return false;
                }
            },
        }
        true
    }

    /// Writes the machine's protocol lines, then compressed bytes still
    /// waiting, then the half-close the machine wants once they are out.
    fn flush(&mut self) -> io::Result<()> {
        // Records TLS made earlier go first (nothing to do when plain).
        self.sock.flush()?;
        while !self.conn.pending_output().is_empty() {
            match self.sock.write(self.conn.pending_output()) {
                Ok(n) => self.conn.consumed(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.flush_wire()?;
        if self.wire.is_empty() && self.conn.wants_half_close() {
            // An error here (the peer is gone) shows up as the next read's.
            // With TLS: `close_notify`, and the TCP half-close once it is out.
            let _ = self.sock.shutdown_write();
            self.conn.half_closed();
        }
        Ok(())
    }

    /// Writes what it can of `wire`.
    fn flush_wire(&mut self) -> io::Result<()> {
        let mut done = 0;
        let result = loop {
            let Some(rest) = self.wire.get(done..).filter(|r| !r.is_empty()) else {
                break Ok(());
            };
            match write_counted(&mut self.sock, rest, &mut self.wire_count) {
                Ok(0) => break Ok(()),
                Ok(n) => done += n,
                Err(e) => break Err(e),
            }
        };
        self.wire.drain(..done);
        result
    }

    /// Sends stream data; returns how many of its bytes are taken (0 when
    /// the socket is full). A compressing link takes all of `data` once
    /// the previous send's compressed bytes are out, and keeps what the
    /// socket does not take yet.
    pub fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.encoder.is_none() {
            return write_counted(&mut self.sock, data, &mut self.wire_count);
        }
        if !self.wire.is_empty() {
            self.flush_wire()?;
            if !self.wire.is_empty() {
                return Ok(0);
            }
        }
        if let Some(enc) = &mut self.encoder {
            enc.compress(data, &mut self.wire)?;
        }
        self.flush_wire()?;
        Ok(data.len())
    }

    /// Sends `count` bytes of `file` from `offset` with `sendfile(2)`, no
    /// copy through user space; returns what the socket took (0 when full).
    pub fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        count: usize,
    ) -> io::Result<usize> {
        loop {
            let Some(sock) = self.sock.as_plain() else {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "sendfile on a TLS connection",
                ));
            };
            match crate::reactor::sys::fs::sendfile(sock, file, offset, count) {
                Ok(n) => {
                    self.wire_count += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Half-closes our side: the server writes what it has, ACKs, answers
    /// `250 DONE`, closes. A compressing link first ends its compressed
    /// stream, and half-closes once the socket has taken all of it. Before
    /// `Up` the connection is given up (the next poll hears
    /// [`Close::Abandoned`]).
    pub fn finish(&mut self) {
        let up = self.conn.phase() == Phase::Up;
        self.conn.finish();
        if up {
            if let Some(enc) = &mut self.encoder {
                if let Err(e) = enc.finish(&mut self.wire) {
                    // Without its end the server will not take the stream's
                    // last partial line; it closes without `250 DONE`.
                    crate::warn!("ending the compressed stream failed: {e}");
                }
            }
            if let Err(e) = self.flush() {
                crate::debug!("write failed while finishing: {e}");
                self.failed(&e, |c, e| c.write_failed(e));
            }
        }
        self.sync_phase();
    }
}

/// One `write` of stream bytes, counted into `count`; 0 when the socket is
/// full.
fn write_counted(sock: &mut Transport, data: &[u8], count: &mut u64) -> io::Result<usize> {
    loop {
        match sock.write(data) {
            Ok(n) => {
                *count += n as u64;
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_sends_without_waiting_for_acks() {
        // Nagle off: the stream's linger batches, and a server that delays
        // its ACKs must not hold our next write back.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let link = Link::connect(
            l.local_addr().unwrap(),
            "127.0.0.1",
            Compression::default(),
            None,
        )
        .unwrap();
        assert!(link.sock.tcp().unwrap().nodelay().unwrap());
    }
}
