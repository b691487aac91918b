//! The client's side of one TCP connection: connect, handshake, then the
//! server's lines (ACKs and status) while data flows the other way.
//!
//! `Link` is a state machine over a non-blocking socket; the stream that
//! owns it decides what data to write. Phases:
//! `Connecting` → `Greeting` (waiting for `### Welcome` + `STREAMID`) →
//! `Replying` (INIT sent, waiting for `200`) → `Up` → `Finishing` (our side
//! half-closed; reading the last ACK and `250 DONE` until the server closes).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::TcpStream;

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
}

#[derive(Debug)]
pub struct Link {
    pub sock: TcpStream,
    pub phase: Phase,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// The server answered `250 DONE`.
    done: bool,
}

impl Link {
    pub fn connect(addr: SocketAddr) -> io::Result<Link> {
        let sock = TcpStream::connect(addr)?;
        Ok(Link {
            sock,
            phase: Phase::Connecting,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            done: false,
        })
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
                        heard.push(Heard::Ready(r.offset));
                        self.phase = Phase::Up;
                        used
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
        Ok(())
    }

    /// Writes stream data; returns how much the socket took (0 on WouldBlock).
    pub fn send(&mut self, data: &[u8]) -> io::Result<usize> {
        loop {
            match self.sock.write(data) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
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
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Half-closes our side: the server writes what it has, ACKs, closes.
    pub fn finish(&mut self) {
        if self.phase != Phase::Finishing {
            let _ = self.sock.shutdown(Shutdown::Write);
            self.phase = Phase::Finishing;
        }
    }
}
