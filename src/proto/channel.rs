//! One end of a multiplexed channel (see [`mux`](super::mux)) as a byte
//! stream: what a [`Transport`](crate::tls::Transport) holds instead of a
//! socket for a stream that came on a multiplexed connection.
//!
//! The connection that owns the socket puts the peer's DATA in with
//! [`deliver`](ChannelEnd::deliver) (and its FIN or CLOSE), and takes out
//! what the stream wrote ([`take_out`](ChannelEnd::take_out)) and the
//! credit its reads earned ([`take_credit`](ChannelEnd::take_credit)).
//! In between, the stream reads and writes it as it would a non-blocking
//! socket: `WouldBlock` when empty or full, `Ok(0)` after the peer's FIN,
//! `ConnectionReset` after a CLOSE without one.
//!
//! Invariants: the unread input `inbox[at..]` is at most
//! [`WINDOW`](super::mux::WINDOW) bytes (the peer's credit holds it
//! there; [`deliver`](ChannelEnd::deliver) refuses more), and `outbox` at
//! most [`OUT_LIMIT`].

use std::io::{self, Read, Write};

use super::mux::WINDOW;

/// Most bytes a stream's writes wait in the channel for the connection to
/// frame them (the server writes lines of a few bytes: status, `ACK`).
pub const OUT_LIMIT: usize = 16 * 1024;

/// Input buffer kept by a channel whose input was all read (a few
/// lines' worth: freed and allocated again at every send it would cost
/// a `malloc` and a `free` per frame).
const KEEP: usize = 4096;

/// Credit is handed back once this many bytes were read, so a sender of
/// a few lines gets no frame back per send, and a bulk sender never waits
/// for a whole window. (No deadlock: a sender out of credit has a whole
/// window here, unread or read; once a step of it is read, credit goes
/// back.)
const CREDIT_STEP: u32 = WINDOW / 4;

#[derive(Debug)]
pub struct ChannelEnd {
    /// The channel's id on its connection.
    id: u32,
    /// The peer's bytes not read yet: `inbox[at..]`.
    inbox: Vec<u8>,
    at: usize,
    /// The peer sent FIN: once `inbox` is read, reads give `Ok(0)`.
    fin: bool,
    /// The channel ended without a FIN (CLOSE, or the connection broke).
    reset: bool,
    /// What the stream wrote, not yet framed by the connection.
    outbox: Vec<u8>,
    /// The stream half-closed; a FIN is due after `outbox`.
    shut: bool,
    /// The FIN went into a frame.
    fin_sent: bool,
    /// Bytes read since credit was last handed back.
    taken: u32,
    /// A write found the outbox full (took less than it was given): the
    /// writer waits to be told there is room again.
    wants_room: bool,
}

impl ChannelEnd {
    pub fn new(id: u32) -> ChannelEnd {
        ChannelEnd {
            id,
            inbox: Vec::new(),
            at: 0,
            fin: false,
            reset: false,
            outbox: Vec::new(),
            shut: false,
            fin_sent: false,
            taken: 0,
            wants_room: false,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The peer's DATA. False (and nothing taken) when it would hold more
    /// than [`WINDOW`] unread bytes: the peer broke its credit (the
    /// connection's [`Channels`](super::mux::Channels) already refuses
    /// that, so this is a second fence).
    pub fn deliver(&mut self, data: &[u8]) -> bool {
        if self.unread() + data.len() > WINDOW as usize {
            return false;
        }
        if self.at == self.inbox.len() {
            self.inbox.clear();
            self.at = 0;
        }
        self.inbox.extend_from_slice(data);
        true
    }

    /// The peer's FIN.
    pub fn end(&mut self) {
        self.fin = true;
    }

    /// The channel is gone without a FIN: the peer's CLOSE, or the
    /// connection broke.
    pub fn reset(&mut self) {
        self.reset = true;
    }

    /// Unread input bytes.
    pub fn unread(&self) -> usize {
        self.inbox.len() - self.at
    }

    /// Credit to hand back now: the bytes read since last time, once they
    /// are [`CREDIT_STEP`].
    pub fn take_credit(&mut self) -> u32 {
        if self.taken >= CREDIT_STEP {
            std::mem::take(&mut self.taken)
        } else {
            0
        }
    }

    /// Moves what the stream wrote into DATA frames on `out` (and the FIN
    /// once it half-closed and all is out). True when a write of the
    /// stream found no room and there is room now: it waits to be served
    /// again (as a socket's writer waits for a writable event).
    pub fn take_out(&mut self, out: &mut Vec<u8>) -> bool {
        self.take_out_within(out, usize::MAX).0
    }

    /// [`take_out`](Self::take_out) of at most `max` bytes (a sender's
    /// credit); also says how many went.
    ///
    /// While more of the stream's bytes wait (beyond `max`, or a writer
    /// that was given less room than it had), the frame ends at the last
    /// line end it holds, if it holds one. The frames not yet written die
    /// with the process that holds them, unlike what a process `send`s on
    /// a socket of its own (the kernel delivers that after a `kill -9`):
    /// so a client killed between two frames leaves whole lines in the
    /// output, not one cut in two that a later stream's bytes would end.
    pub fn take_out_within(&mut self, out: &mut Vec<u8>, max: usize) -> (bool, usize) {
        let mut n = self.outbox.len().min(max);
        if n < self.outbox.len() || self.wants_room {
            n = match memchr::memrchr(b'\n', &self.outbox[..n]) {
                Some(end) => end + 1,
                // Not even one line within the credit: wait for more if
                // the line ends in the outbox (at most OUT_LIMIT, so the
                // peer holds at least a credit step of the window and
                // sends credit back). A longer line has to be cut.
                None if memchr::memchr(b'\n', &self.outbox[n..]).is_some() => 0,
                None => n,
            };
        }
        super::mux::write_data(out, self.id, &self.outbox[..n]);
        self.outbox.drain(..n);
        if self.outbox.is_empty() && self.outbox.capacity() > KEEP {
            // After a burst, an idle channel holds little.
            self.outbox = Vec::new();
        }
        if self.outbox.is_empty() && self.shut && !self.fin_sent {
            super::mux::write_fin(out, self.id);
            self.fin_sent = true;
        }
        let room = self.wants_room && self.outbox.len() < OUT_LIMIT;
        if room {
            self.wants_room = false;
        }
        (room, n)
    }

    /// Bytes written and not yet framed.
    pub fn unsent(&self) -> usize {
        self.outbox.len()
    }

    /// Something waits to be framed: bytes, or the FIN.
    pub fn has_output(&self) -> bool {
        !self.outbox.is_empty() || (self.shut && !self.fin_sent)
    }

    /// The stream's half-close.
    pub fn shutdown_write(&mut self) {
        self.shut = true;
    }
}

impl Read for ChannelEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.inbox.len() {
            let n = buf.len().min(self.inbox.len() - self.at);
            buf[..n].copy_from_slice(&self.inbox[self.at..self.at + n]);
            self.at += n;
            self.taken += n as u32;
            if self.at == self.inbox.len() {
                self.inbox.clear();
                self.at = 0;
                if self.inbox.capacity() > KEEP {
                    // After a burst, an idle channel holds little.
                    self.inbox = Vec::new();
                }
            }
            return Ok(n);
        }
        if self.fin || buf.is_empty() {
            return Ok(0);
        }
        if self.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for ChannelEnd {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.shut || self.reset {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = data.len().min(OUT_LIMIT - self.outbox.len());
        if n < data.len() {
            self.wants_room = true;
        }
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.outbox.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mux::{parse, Frame, Status};

    fn read_all(ch: &mut ChannelEnd, size: usize) -> (Vec<u8>, io::ErrorKind) {
        let mut got = Vec::new();
        let mut buf = vec![0u8; size];
        loop {
            match ch.read(&mut buf) {
                Ok(0) => return (got, io::ErrorKind::UnexpectedEof),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, e.kind()),
            }
        }
    }

    /// The DATA payloads `take_out_within` puts in frames.
    fn payloads(out: &[u8]) -> Vec<Vec<u8>> {
        let mut at = 0;
        let mut got = Vec::new();
        while at < out.len() {
            let Ok(Status::Complete(Frame::Data(_, d), n)) = parse(&out[at..]) else {
                panic!("not a DATA frame at {at}");
            };
            got.push(d.to_vec());
            at += n;
        }
        got
    }

    #[test]
    fn frames_end_at_a_line_end_while_more_waits() {
        // Credit for 9 of 11 bytes: the frame ends after "bbb\n".
        let mut ch = ChannelEnd::new(1);
        assert_eq!(ch.write(b"aaa\nbbb\nccc").unwrap(), 11);
        let mut out = Vec::new();
        assert_eq!(ch.take_out_within(&mut out, 9), (false, 8));
        assert_eq!(payloads(&out), [b"aaa\nbbb\n".to_vec()]);
        assert_eq!(ch.unsent(), 3);
        // Nothing else waits: the unterminated rest goes (a partial line
        // the stream chose to send, or the end of a file).
        out.clear();
        assert_eq!(ch.take_out_within(&mut out, 100), (false, 3));
        assert_eq!(payloads(&out), [b"ccc".to_vec()]);
        // A writer given less room than it had: whole lines go, the rest
        // waits for the rest of its line; the writer is told of room.
        let mut ch = ChannelEnd::new(2);
        let line = [b"x".repeat(99), b"\n".to_vec()].concat();
        let big = line.repeat(OUT_LIMIT / 100 + 1);
        let took = ch.write(&big).unwrap();
        assert!(took < big.len());
        out.clear();
        let (room, n) = ch.take_out_within(&mut out, usize::MAX);
        assert!(room);
        assert_eq!(n % 100, 0, "{n} bytes: whole lines only");
        assert_eq!(ch.unsent(), took - n);
        // Credit for less than the next line: nothing goes until more
        // credit comes.
        let mut ch = ChannelEnd::new(3);
        assert_eq!(ch.write(b"aaa\nbbbbbb\n").unwrap(), 11);
        out.clear();
        assert_eq!(ch.take_out_within(&mut out, 6), (false, 4));
        assert_eq!(ch.take_out_within(&mut out, 2), (false, 0));
        assert_eq!(ch.take_out_within(&mut out, 7), (false, 7));
        assert_eq!(payloads(&out), [b"aaa\n".to_vec(), b"bbbbbb\n".to_vec()]);
        // A line that does not end in the outbox (longer than it) has to
        // be cut: it is.
        let mut ch = ChannelEnd::new(4);
        assert_eq!(ch.write(b"no line end in sight").unwrap(), 20);
        out.clear();
        assert_eq!(ch.take_out_within(&mut out, 5), (false, 5));
        assert_eq!(payloads(&out), [b"no li".to_vec()]);
    }

    #[test]
    fn input_reads_like_a_socket_in_any_buffer_size() {
        for size in [1, 3, 7, 4096] {
            let mut ch = ChannelEnd::new(4);
            assert!(ch.deliver(b"one\ntw"));
            let (got, end) = read_all(&mut ch, size);
            assert_eq!(
                (&got[..], end),
                (&b"one\ntw"[..], io::ErrorKind::WouldBlock)
            );
            assert!(ch.deliver(b"o\n"));
            ch.end();
            let (got, end) = read_all(&mut ch, size);
            assert_eq!((&got[..], end), (&b"o\n"[..], io::ErrorKind::UnexpectedEof));
        }
    }

    #[test]
    fn a_reset_reads_as_connection_reset_after_the_data() {
        let mut ch = ChannelEnd::new(4);
        assert!(ch.deliver(b"x"));
        ch.reset();
        let (got, end) = read_all(&mut ch, 16);
        assert_eq!((&got[..], end), (&b"x"[..], io::ErrorKind::ConnectionReset));
        assert_eq!(
            ch.write(b"y").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn input_beyond_the_window_is_refused() {
        let mut ch = ChannelEnd::new(4);
        assert!(ch.deliver(&vec![0; WINDOW as usize - 1]));
        assert!(!ch.deliver(b"ab"));
        assert!(ch.deliver(b"a"));
        let mut buf = [0u8; 10];
        assert_eq!(ch.read(&mut buf).unwrap(), 10);
        assert!(ch.deliver(&[1; 10]));
        assert!(!ch.deliver(&[1]));
    }

    #[test]
    fn credit_comes_back_in_steps() {
        let mut ch = ChannelEnd::new(4);
        assert!(ch.deliver(&vec![0; CREDIT_STEP as usize + 10]));
        let mut buf = vec![0u8; CREDIT_STEP as usize - 1];
        assert_eq!(ch.read(&mut buf).unwrap(), buf.len());
        assert_eq!(ch.take_credit(), 0, "below a step");
        assert_eq!(ch.read(&mut buf[..1]).unwrap(), 1);
        assert_eq!(ch.take_credit(), CREDIT_STEP);
        assert_eq!(ch.take_credit(), 0);
        let (got, _) = read_all(&mut ch, 3);
        assert_eq!(got.len(), 10);
        assert_eq!(
            ch.take_credit(),
            0,
            "a sender of a few lines has plenty left"
        );
    }

    #[test]
    fn a_sender_out_of_credit_always_gets_some_back_once_the_stream_reads() {
        // Any split of a window into deliveries and reads: once all is
        // read, at least a window's worth minus less than a step is back.
        for chunk in [1, 700, 4096, WINDOW as usize] {
            let mut ch = ChannelEnd::new(4);
            let (mut sent, mut back) = (0usize, 0usize);
            while sent < WINDOW as usize {
                let n = chunk.min(WINDOW as usize - sent);
                assert!(ch.deliver(&vec![1; n]));
                sent += n;
                read_all(&mut ch, 999);
                back += ch.take_credit() as usize;
            }
            assert!(
                sent - back < CREDIT_STEP as usize,
                "chunk {chunk}: {back} of {sent}"
            );
        }
    }

    #[test]
    fn a_writer_that_found_no_room_is_told_when_there_is_some() {
        let mut ch = ChannelEnd::new(4);
        let mut out = Vec::new();
        assert_eq!(ch.write(b"abc").unwrap(), 3);
        assert_eq!(
            ch.take_out_within(&mut out, 1),
            (false, 1),
            "it never waited"
        );
        assert_eq!(ch.write(&vec![0; OUT_LIMIT]).unwrap(), OUT_LIMIT - 2);
        // No credit: nothing goes, no room.
        assert_eq!(ch.take_out_within(&mut out, 0), (false, 0));
        // Some credit: part goes, and that is room.
        assert_eq!(ch.take_out_within(&mut out, 100), (true, 100));
        assert_eq!(ch.take_out_within(&mut out, 100), (false, 100), "told once");
    }

    #[test]
    fn writes_become_frames_and_the_half_close_one_fin() {
        let mut ch = ChannelEnd::new(4);
        assert_eq!(ch.write(b"200 OK\n").unwrap(), 7);
        let big = vec![b'a'; OUT_LIMIT];
        assert_eq!(ch.write(&big).unwrap(), OUT_LIMIT - 7);
        assert_eq!(
            ch.write(b"b").unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        ch.shutdown_write();
        let mut out = Vec::new();
        assert!(ch.take_out(&mut out), "it was full");
        assert!(!ch.take_out(&mut out));
        assert!(!ch.has_output());
        let (mut at, mut data, mut fins) = (0, 0, 0);
        while at < out.len() {
            let Ok(Status::Complete(f, n)) = parse(&out[at..]) else {
                panic!("bad frame at {at}");
            };
            match f {
                Frame::Data(4, d) => data += d.len(),
                Frame::Fin(4) => fins += 1,
                other => panic!("{other:?}"),
            }
            at += n;
        }
        assert_eq!((data, fins), (OUT_LIMIT, 1));
    }
}
