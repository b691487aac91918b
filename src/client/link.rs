//! The client's side of one TCP connection: connect, handshake, then the
//! server's lines (ACKs and status) while data flows the other way.
//!
//! `Link` is a state machine over a non-blocking socket; the stream that
//! owns it decides what data to write. Phases:
//! `Connecting` → `Greeting` (waiting for `### Welcome` + `STREAMID`) →
//! `Replying` (INIT sent, waiting for `200`) → `Up` → `Finishing` (our side
//! half-closed; reading the last ACK and `250 DONE` until the server closes).
//!
//! Compression: a link that asks for a codec (`compression:<codec>` in
//! INIT) compresses only when the server's `200` confirms it with the same
//! word; then [`Link::send`] takes plain bytes, counts them as sent, and
//! keeps their compressed form in `wire` until the socket takes it. A
//! server that does not confirm (one that predates compression and
//! ignores the key) gets plain bytes; one that refuses (`415`) is
//! reported as [`Heard::CodecRefused`]. Offsets are always plain bytes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;

use crate::codec::{Codec, Encoder};
use crate::config::Compression;
use crate::proto::{self, ServerLine, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Greeting,
    Replying,
    Up,
    Finishing,
}

/// Something the server said that the stream must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// `200`: streaming may start at this offset.
    Ready(Option<u64>),
    /// `ACK n`: the server wrote everything before offset n.
    Ack(u64),
    /// The server asks us to finish (`421`): stop sending, half-close.
    Finish,
    /// `250 DONE n`: after our half-close, the server holds and committed
    /// everything up to n.
    Done(u64),
    /// The connection is over: a refusal, an error line, EOF or an I/O error.
    Closed(String),
    /// The server refused the codec we asked for (`415`); the line.
    CodecRefused(String),
    /// The server's `200` did not confirm the codec we asked for: it
    /// predates compression, and this connection sends plain bytes.
    CodecIgnored(Codec),
}

#[derive(Debug)]
pub struct Link {
    pub sock: TcpStream,
    pub phase: Phase,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// The server answered `250 DONE`.
    done: bool,
    /// The codec (and level) asked for in INIT.
    asked: Compression,
    /// Set once the server confirmed `asked`.
    encoder: Option<Encoder>,
    /// Compressed stream bytes the socket has not taken yet.
    wire: Vec<u8>,
    /// Stream bytes written to the socket since [`take_wire_bytes`](Self::take_wire_bytes).
    wire_count: u64,
    /// `finish` was asked while `wire` still held bytes: half-close once
    /// they are out.
    shut_pending: bool,
}

impl Link {
    /// Connects to `addr`; the INIT will ask for `compression` (when it
    /// names a codec).
    pub fn connect(addr: SocketAddr, compression: Compression) -> io::Result<Link> {
        let sock = TcpStream::connect(addr)?;
        Ok(Link {
            sock,
            phase: Phase::Connecting,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            done: false,
            asked: compression,
            encoder: None,
            wire: Vec::new(),
            wire_count: 0,
            shut_pending: false,
        })
    }

    /// The codec the INIT asks for.
    pub fn asks_for(&self) -> Option<Codec> {
        self.asked.codec
    }

    /// True when stream bytes are compressed on this connection (so they
    /// cannot go out with `sendfile`).
    pub fn compresses(&self) -> bool {
        self.encoder.is_some()
    }

    /// Stream bytes written to the socket since the last call (after
    /// compression), for the `wire_bytes` counter.
    pub fn take_wire_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.wire_count)
    }

    /// Advances the handshake and reads server lines. `init` builds the
    /// INIT line when the greeting has arrived. Returns what was heard, in
    /// order, into `heard`.
    pub fn poll(&mut self, init: impl FnOnce(&mut Vec<u8>), heard: &mut Vec<Heard>) {
        if self.phase == Phase::Connecting {
            match self.sock.take_error() {
                Ok(Some(e)) | Err(e) => {
                    return heard.push(Heard::Closed(format!("connect failed: {e}")))
                }
                Ok(None) => {}
            }
            match self.sock.peer_addr() {
                Ok(_) => self.phase = Phase::Greeting,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return heard.push(Heard::Closed(format!("connect failed: {e}"))),
            }
        }
        let eof = match self.read_in() {
            Ok(eof) => eof,
            Err(e) => return heard.push(Heard::Closed(format!("read failed: {e}"))),
        };
        let mut init = Some(init);
        loop {
            let used = match self.phase {
                Phase::Connecting => 0,
                Phase::Greeting => match proto::parse_greeting(&self.inbuf) {
                    Ok(Status::Complete(_, used)) => {
                        if let Some(f) = init.take() {
                            f(&mut self.outbuf);
                        }
                        self.phase = Phase::Replying;
                        used
                    }
                    Ok(Status::Partial) => 0,
                    Err(e) => {
                        return heard.push(Heard::Closed(format!("bad greeting from server: {e}")))
                    }
                },
                Phase::Replying => match proto::parse_reply(&self.inbuf) {
                    Ok(Status::Complete(r, used)) if r.code == 200 => {
                        if let Some(codec) = self.asked.codec {
                            if r.compression == Some(codec.name()) {
                                match Encoder::new(codec, self.asked.level) {
                                    Ok(e) => self.encoder = Some(e),
                                    Err(e) => {
                                        return heard.push(Heard::Closed(format!(
                                            "cannot start the {codec} encoder: {e}"
                                        )))
                                    }
                                }
                            } else {
                                heard.push(Heard::CodecIgnored(codec));
                            }
                        }
                        heard.push(Heard::Ready(r.offset));
                        self.phase = Phase::Up;
                        used
                    }
                    Ok(Status::Complete(r, _)) if r.code == 415 && self.asked.codec.is_some() => {
                        return heard.push(Heard::CodecRefused(format!("{} {}", r.code, r.text)))
                    }
                    Ok(Status::Complete(r, _)) => {
                        return heard.push(Heard::Closed(format!(
                            "server refused the stream: {} {}",
                            r.code, r.text
                        )))
                    }
                    Ok(Status::Partial) => 0,
                    Err(e) => {
                        return heard.push(Heard::Closed(format!("bad reply from server: {e}")))
                    }
                },
                Phase::Up | Phase::Finishing => match proto::parse_server_line(&self.inbuf) {
                    Ok(Status::Complete(ServerLine::Ack(n), used)) => {
                        heard.push(Heard::Ack(n));
                        used
                    }
                    Ok(Status::Complete(ServerLine::Reply(r), used)) if r.code == 421 => {
                        heard.push(Heard::Finish);
                        used
                    }
                    Ok(Status::Complete(ServerLine::Reply(r), used)) if r.code == 250 => {
                        // `250 DONE <n>`: everything up to n is written, synced and committed.
                        match r
                            .text
                            .strip_prefix("DONE ")
                            .and_then(|n| n.trim().parse().ok())
                        {
                            Some(n) => {
                                self.done = true;
                                heard.push(Heard::Done(n))
                            }
                            None => {
                                return heard.push(Heard::Closed(format!(
                                    "bad line from server: 250 {}",
                                    r.text
                                )))
                            }
                        }
                        used
                    }
                    Ok(Status::Complete(ServerLine::Reply(r), _)) => {
                        return heard.push(Heard::Closed(format!(
                            "server ended the stream: {} {}",
                            r.code, r.text
                        )))
                    }
                    Ok(Status::Partial) => 0,
                    Err(e) => {
                        return heard.push(Heard::Closed(format!("bad line from server: {e}")))
                    }
                },
            };
            if used == 0 {
                break;
            }
            self.inbuf.drain(..used);
        }
        if let Err(e) = self.flush() {
            return heard.push(Heard::Closed(format!("write failed: {e}")));
        }
        if eof {
            let why = if self.phase == Phase::Finishing {
                "finished"
            } else {
                "server closed the connection"
            };
            heard.push(Heard::Closed(why.into()));
        }
    }

    /// Reads what the socket has; returns true at end of stream.
    fn read_in(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 1024];
        loop {
            if self.inbuf.len() > proto::MAX_LINE * 4 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "server sent an overlong line",
                ));
            }
            match self.sock.read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.phase == Phase::Connecting => return Err(e),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes our protocol lines, then compressed bytes still waiting,
    /// then a half-close that waited for them.
    fn flush(&mut self) -> io::Result<()> {
        while !self.outbuf.is_empty() {
            match self.sock.write(&self.outbuf) {
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.flush_wire()?;
        if self.shut_pending && self.wire.is_empty() {
            self.shut_pending = false;
            let _ = self.sock.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// Writes what it can of `wire`.
    fn flush_wire(&mut self) -> io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == self.wire.len() {
                break Ok(());
            }
            match write_counted(&mut self.sock, &self.wire[done..], &mut self.wire_count) {
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
            match crate::reactor::sys::fs::sendfile(&self.sock, file, offset, count) {
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

    /// Half-closes our side: the server writes what it has, ACKs, closes.
    /// A compressing link first ends its compressed stream, and
    /// half-closes once the socket has taken all of it.
    pub fn finish(&mut self) {
        if self.phase == Phase::Finishing {
            return;
        }
        self.phase = Phase::Finishing;
        if let Some(enc) = &mut self.encoder {
            if let Err(e) = enc.finish(&mut self.wire) {
                // Without its end the server will not take the stream's
                // last partial line; it closes without `250 DONE`.
                crate::warn!("ending the compressed stream failed: {e}");
            }
            self.shut_pending = true;
            if let Err(e) = self.flush() {
                crate::debug!("write failed while finishing: {e}");
            }
            return;
        }
        let _ = self.sock.shutdown(Shutdown::Write);
    }
}

/// One `write` of stream bytes, counted into `count`; 0 when the socket is
/// full.
fn write_counted(sock: &mut TcpStream, data: &[u8], count: &mut u64) -> io::Result<usize> {
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
