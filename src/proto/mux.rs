//! Frames of a multiplexed connection (`INIT MUX`, see docs/PROTOCOL.md
//! "Multiplexing").
//!
//! A client with many files that each send a few lines at a time pays,
//! per send, the whole TCP path on both sides (a `send`, a `recv`, an
//! ACK) when each file has its own connection. A multiplexed connection
//! carries many streams, each on a *channel* whose bytes are exactly those
//! of a plain connection (the greeting, `INIT STREAM`, data, `ACK` lines,
//! the half-close and `250 DONE`), so the client writes every due stream
//! in one send and the server reads them in one `recv`.
//!
//! This file is the wire format and the receiver's rules, without I/O:
//!
//! - [`parse`] is a pure incremental parser over `&[u8]` ([`Status`]),
//!   with a hard limit ([`MAX_PAYLOAD`]) and no allocation; the `write_*`
//!   functions emit frames.
//! - [`Channels`] is the receiving side's table of open channels: it
//!   checks each frame against the rules (channel ids only grow, a channel
//!   sends no more than its credit, nothing after its `FIN`) and says what
//!   arrived ([`Arrival`]). A broken rule is a [`MuxError`]: the whole
//!   connection is closed, because its framing can no longer be trusted.
//!
//! # Frames
//!
//! ```text
//! frame   = kind(1) length(3, big-endian) channel(4, big-endian) payload(length)
//! OPEN    = 1   length 0      client → server: a new channel, id above every earlier one
//! DATA    = 2   length 1..=65536   the channel's bytes
//! FIN     = 3   length 0      the sender's half-close: no more DATA from it here
//! CLOSE   = 4   length 0      the sender is done with the channel (a reset if
//!                             no FIN came before): no more frames from it here
//! CREDIT  = 5   length 4      u32 big-endian: the receiver took this many more
//!                             of the channel's DATA bytes; the sender may send them
//! ```
//!
//! Channel 0 is never used. Ids are never reused on one connection, so a
//! frame for a channel one side already closed is ignored rather than
//! mistaken for a new one.
//!
//! Flow control: a sender may have at most [`WINDOW`] bytes of a
//! channel's DATA that the receiver has not given back with `CREDIT`.
//! That bounds what a receiver holds per channel whatever the peer sends,
//! and a channel whose output is stalled (a full disk) holds up only
//! itself, not the connection.

use std::collections::HashMap;

pub use super::handshake::Status;

/// Bytes of a frame header: kind, length, channel.
pub const HEADER: usize = 8;
/// Largest DATA payload.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Credit each channel starts with, and the most DATA bytes of one channel
/// a receiver ever holds that it did not give back.
pub const WINDOW: u32 = 64 * 1024;

const OPEN: u8 = 1;
const DATA: u8 = 2;
const FIN: u8 = 3;
const CLOSE: u8 = 4;
const CREDIT: u8 = 5;

/// The client's line that asks for a multiplexed connection, in place of
/// `INIT STREAM` (the server answers `200 OK mux`, then frames follow).
pub const REQUEST: &[u8] = b"INIT MUX\n";

/// `Some(n)` when `buf` starts with the whole `INIT MUX` line (a CR before
/// its LF is accepted, as in every line): `n` is its length.
pub fn parse_request(buf: &[u8]) -> Option<usize> {
    let line = buf.strip_prefix(&REQUEST[..REQUEST.len() - 1])?;
    match line {
        [b'\n', ..] => Some(REQUEST.len()),
        [b'\r', b'\n', ..] => Some(REQUEST.len() + 1),
        _ => None,
    }
}

/// One parsed frame; DATA borrows from the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Open(u32),
    Data(u32, &'a [u8]),
    Fin(u32),
    Close(u32),
    Credit(u32, u32),
}

impl Frame<'_> {
    pub fn channel(&self) -> u32 {
        match *self {
            Frame::Open(c) | Frame::Data(c, _) | Frame::Fin(c) | Frame::Close(c) => c,
            Frame::Credit(c, _) => c,
        }
    }
}

/// Why bytes are not a frame, or a frame breaks the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxError {
    /// A kind byte that names no frame.
    UnknownKind(u8),
    /// A length the kind does not allow (DATA: 1..=[`MAX_PAYLOAD`];
    /// CREDIT: 4; the others: 0).
    BadLength { kind: u8, len: usize },
    /// Channel 0.
    ZeroChannel,
    /// OPEN for an id not above every earlier one.
    ReusedChannel(u32),
    /// A frame for a channel that was never opened.
    UnknownChannel(u32),
    /// More DATA than the channel's credit.
    OverCredit(u32),
    /// DATA after the channel's FIN.
    DataAfterFin(u32),
    /// CREDIT that would take a channel's credit past 2^32 - 1.
    CreditOverflow(u32),
    /// OPEN beyond the table's limit of open channels.
    TooManyChannels,
    /// A frame kind this side never receives (CREDIT to a server).
    WrongDirection(u8),
}

impl std::fmt::Display for MuxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            MuxError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            MuxError::BadLength { kind, len } => {
                write!(f, "frame kind {kind} with a length of {len} bytes")
            }
            MuxError::ZeroChannel => f.write_str("a frame for channel 0"),
            MuxError::ReusedChannel(c) => write!(f, "channel {c} opened again or out of order"),
            MuxError::UnknownChannel(c) => write!(f, "a frame for channel {c}, never opened"),
            MuxError::OverCredit(c) => write!(f, "channel {c} sent more than its credit"),
            MuxError::DataAfterFin(c) => write!(f, "channel {c} sent data after its end"),
            MuxError::CreditOverflow(c) => write!(f, "credit for channel {c} past 2^32-1"),
            MuxError::TooManyChannels => f.write_str("too many open channels"),
            MuxError::WrongDirection(k) => write!(f, "frame kind {k} in the wrong direction"),
        }
    }
}

/// Parses one frame at the start of `buf`.
///
/// Invariants: `Complete(_, n)` has `HEADER <= n <= buf.len()` and looked
/// at nothing past `n`; every proper prefix of a frame is `Partial`; a
/// header is judged as soon as its 8 bytes are there, so a peer cannot
/// make a caller buffer more than `HEADER + MAX_PAYLOAD` bytes for one
/// frame.
pub fn parse(buf: &[u8]) -> Result<Status<Frame<'_>>, MuxError> {
    let Some(head) = buf.get(..HEADER) else {
        return Ok(Status::Partial);
    };
    let kind = head[0];
    let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
    let channel = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let allowed = match kind {
        OPEN | FIN | CLOSE => len == 0,
        DATA => (1..=MAX_PAYLOAD).contains(&len),
        CREDIT => len == 4,
        other => return Err(MuxError::UnknownKind(other)),
    };
    if !allowed {
        return Err(MuxError::BadLength { kind, len });
    }
    if channel == 0 {
        return Err(MuxError::ZeroChannel);
    }
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Ok(Status::Partial);
    };
    let frame = match kind {
        OPEN => Frame::Open(channel),
        DATA => Frame::Data(channel, payload),
        FIN => Frame::Fin(channel),
        CLOSE => Frame::Close(channel),
        _ => {
            let n = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            Frame::Credit(channel, n)
        }
    };
    Ok(Status::Complete(frame, HEADER + len))
}

fn header(out: &mut Vec<u8>, kind: u8, len: usize, channel: u32) {
    debug_assert!(channel != 0 && len <= MAX_PAYLOAD);
    out.push(kind);
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&channel.to_be_bytes());
}

pub fn write_open(out: &mut Vec<u8>, channel: u32) {
    header(out, OPEN, 0, channel);
}

/// DATA frames for `data` (as many as [`MAX_PAYLOAD`] needs; none for no
/// bytes).
pub fn write_data(out: &mut Vec<u8>, channel: u32, data: &[u8]) {
    for chunk in data.chunks(MAX_PAYLOAD) {
        header(out, DATA, chunk.len(), channel);
        out.extend_from_slice(chunk);
    }
}

pub fn write_fin(out: &mut Vec<u8>, channel: u32) {
    header(out, FIN, 0, channel);
}

pub fn write_close(out: &mut Vec<u8>, channel: u32) {
    header(out, CLOSE, 0, channel);
}

pub fn write_credit(out: &mut Vec<u8>, channel: u32, n: u32) {
    header(out, CREDIT, 4, channel);
    out.extend_from_slice(&n.to_be_bytes());
}

/// What a frame brought, for the owner of channel `K` (the receiver's
/// handle for it: a connection key on the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival<'a, K> {
    /// OPEN: the caller makes the channel and calls [`Channels::insert`]
    /// (or [`Channels::skip`] to refuse it).
    Open(u32),
    Data(K, &'a [u8]),
    Fin(K),
    /// CLOSE: the channel is gone from the table.
    Close(K),
    Credit(K, u32),
    /// A frame for a channel this side closed already.
    Ignored,
}

/// One open channel on the receiving side.
#[derive(Debug)]
struct Chan<K> {
    key: K,
    /// DATA bytes the peer may still send (see [`WINDOW`]).
    credit: u32,
    /// The peer sent FIN.
    fin: bool,
}

/// The server's open channels of one connection, and the rules the
/// client's frames must keep (the client, which sends OPEN and takes
/// CREDIT, keeps its own).
///
/// Invariants: every open id is at most `highest`; `open.len() <= max`.
#[derive(Debug)]
pub struct Channels<K> {
    open: HashMap<u32, Chan<K>>,
    /// Highest id ever opened (or skipped); 0 before the first.
    highest: u32,
    max: usize,
}

impl<K: Copy> Channels<K> {
    /// The server's table, holding at most `max` open channels.
    pub fn server(max: usize) -> Self {
        Channels {
            open: HashMap::new(),
            highest: 0,
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Checks `frame` against the rules and applies it.
    pub fn on_frame<'a>(&mut self, frame: Frame<'a>) -> Result<Arrival<'a, K>, MuxError> {
        let id = frame.channel();
        if let Frame::Open(_) = frame {
            if id <= self.highest {
                return Err(MuxError::ReusedChannel(id));
            }
            if self.open.len() >= self.max {
                return Err(MuxError::TooManyChannels);
            }
            return Ok(Arrival::Open(id));
        }
        if matches!(frame, Frame::Credit(..)) {
            return Err(MuxError::WrongDirection(CREDIT));
        }
        let Some(chan) = self.open.get_mut(&id) else {
            return match id <= self.highest {
                true => Ok(Arrival::Ignored),
                false => Err(MuxError::UnknownChannel(id)),
            };
        };
        Ok(match frame {
            Frame::Data(_, data) => {
                if chan.fin {
                    return Err(MuxError::DataAfterFin(id));
                }
                let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
                chan.credit = chan.credit.checked_sub(n).ok_or(MuxError::OverCredit(id))?;
                Arrival::Data(chan.key, data)
            }
            Frame::Fin(_) => {
                chan.fin = true;
                Arrival::Fin(chan.key)
            }
            Frame::Close(_) => {
                let key = chan.key;
                self.open.remove(&id);
                Arrival::Close(key)
            }
            Frame::Credit(_, n) => {
                chan.credit = chan
                    .credit
                    .checked_add(n)
                    .ok_or(MuxError::CreditOverflow(id))?;
                Arrival::Credit(chan.key, n)
            }
            Frame::Open(_) => unreachable!("handled above"),
        })
    }

    /// Opens channel `id` (just announced by [`Arrival::Open`]) for `key`,
    /// with [`WINDOW`] of credit.
    pub fn insert(&mut self, id: u32, key: K) {
        self.highest = self.highest.max(id);
        self.open.insert(
            id,
            Chan {
                key,
                credit: WINDOW,
                fin: false,
            },
        );
    }

    /// Refuses channel `id`: its later frames are ignored.
    pub fn skip(&mut self, id: u32) {
        self.highest = self.highest.max(id);
    }

    /// This side took `n` more of the channel's bytes and sends CREDIT
    /// for them: the peer may send that much more.
    pub fn grant(&mut self, id: u32, n: u32) {
        if let Some(chan) = self.open.get_mut(&id) {
            chan.credit = chan.credit.saturating_add(n);
        }
    }

    /// This side closed channel `id`: its later frames are ignored.
    pub fn remove(&mut self, id: u32) -> Option<K> {
        self.open.remove(&id).map(|c| c.key)
    }

    /// Every open channel's key.
    pub fn keys(&self) -> Vec<K> {
        self.open.values().map(|c| c.key).collect()
    }

    /// Every open channel's key, closing them (with the connection).
    pub fn drain(&mut self) -> Vec<K> {
        self.open.drain().map(|(_, c)| c.key).collect()
    }
}

/// What the `mux` fuzz target checks on any bytes: frames parse the
/// same from any prefix and emit back to the same bytes, and a server's
/// [`Channels`] with a [`ChannelEnd`](super::channel::ChannelEnd) per open
/// channel never holds more than [`WINDOW`] unread bytes of one channel,
/// whatever order of frames arrives (the ends read every other frame, and
/// give the credit back). Panics when an invariant breaks.
pub fn check_invariants(data: &[u8]) {
    use super::channel::ChannelEnd;
    use std::io::Read;

    let mut chans = Channels::server(4);
    let mut ends: HashMap<u32, ChannelEnd> = HashMap::new();
    let mut at = 0;
    let mut sink = [0u8; 4096];
    for turn in 0.. {
        let rest = &data[at..];
        let (frame, n) = match parse(rest) {
            Ok(Status::Complete(f, n)) => (f, n),
            Ok(Status::Partial) => {
                assert!(
                    rest.len() < HEADER + MAX_PAYLOAD,
                    "partial with a whole frame's bytes"
                );
                return;
            }
            Err(_) => {
                assert!(rest.len() >= HEADER, "refused before the header was in");
                return;
            }
        };
        assert!((HEADER..=rest.len()).contains(&n));
        assert_eq!(parse(&rest[..n]), Ok(Status::Complete(frame, n)));
        for cut in [0, 1, HEADER - 1, HEADER, n - 1] {
            if cut < n {
                assert_eq!(parse(&rest[..cut]), Ok(Status::Partial), "prefix {cut}");
            }
        }
        let mut again = Vec::new();
        match frame {
            Frame::Open(c) => write_open(&mut again, c),
            Frame::Data(c, d) => write_data(&mut again, c, d),
            Frame::Fin(c) => write_fin(&mut again, c),
            Frame::Close(c) => write_close(&mut again, c),
            Frame::Credit(c, k) => write_credit(&mut again, c, k),
        }
        assert_eq!(again, &rest[..n]);
        at += n;
        match chans.on_frame(frame) {
            Ok(Arrival::Open(id)) => {
                chans.insert(id, id);
                ends.insert(id, ChannelEnd::new(id));
            }
            Ok(Arrival::Data(id, d)) => {
                let end = ends.get_mut(&id).expect("an end per open channel");
                assert!(end.deliver(d), "channel {id} over its window");
            }
            Ok(Arrival::Close(id)) => {
                ends.remove(&id);
            }
            Ok(_) => {}
            Err(_) => return,
        }
        if turn % 2 == 1 {
            for (id, end) in ends.iter_mut() {
                while end.read(&mut sink).is_ok_and(|k| k > 0) {}
                let credit = end.take_credit();
                chans.grant(*id, credit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_is_only_the_whole_line() {
        assert_eq!(parse_request(b"INIT MUX\n\x01"), Some(9));
        assert_eq!(parse_request(b"INIT MUX\r\n"), Some(10));
        for no in [
            &b"INIT MUX"[..],
            b"INIT MUX \n",
            b"INIT MUXX\n",
            b"INIT STREAM h:/p\n",
            b"",
        ] {
            assert_eq!(parse_request(no), None, "{no:?}");
        }
    }

    fn frames() -> Vec<u8> {
        let mut out = Vec::new();
        write_open(&mut out, 1);
        write_data(&mut out, 1, b"INIT STREAM h:/p\n");
        write_fin(&mut out, 1);
        write_close(&mut out, 1);
        write_credit(&mut out, 7, 70_000);
        out
    }

    #[test]
    fn the_fuzz_checks_hold_for_the_seed_frames() {
        check_invariants(&frames());
        let mut over = Vec::new();
        write_open(&mut over, 2);
        for _ in 0..3 {
            write_data(&mut over, 2, &vec![b'x'; MAX_PAYLOAD]);
        }
        check_invariants(&over);
    }

    #[test]
    fn frames_round_trip_and_every_prefix_is_partial() {
        let buf = frames();
        let mut at = 0;
        let mut got = Vec::new();
        while at < buf.len() {
            let rest = &buf[at..];
            let Status::Complete(frame, n) = parse(rest).unwrap() else {
                panic!("partial at {at}");
            };
            for cut in 0..n {
                assert_eq!(parse(&rest[..cut]), Ok(Status::Partial), "prefix {cut}");
            }
            got.push(frame);
            at += n;
        }
        assert_eq!(
            got,
            [
                Frame::Open(1),
                Frame::Data(1, b"INIT STREAM h:/p\n"),
                Frame::Fin(1),
                Frame::Close(1),
                Frame::Credit(7, 70_000),
            ]
        );
    }

    #[test]
    fn data_longer_than_a_frame_is_split_and_empty_data_is_no_frame() {
        let data = vec![b'x'; MAX_PAYLOAD * 2 + 3];
        let mut out = Vec::new();
        write_data(&mut out, 9, &[]);
        assert!(out.is_empty());
        write_data(&mut out, 9, &data);
        let mut lens = Vec::new();
        let mut at = 0;
        while let Ok(Status::Complete(Frame::Data(9, d), n)) = parse(&out[at..]) {
            lens.push(d.len());
            at += n;
        }
        assert_eq!(lens, [MAX_PAYLOAD, MAX_PAYLOAD, 3]);
        assert_eq!(at, out.len());
    }

    #[test]
    fn bad_headers_are_refused_as_soon_as_the_header_is_in() {
        let cases: &[(&[u8], MuxError)] = &[
            (&[9, 0, 0, 0, 0, 0, 0, 1], MuxError::UnknownKind(9)),
            (&[0, 0, 0, 0, 0, 0, 0, 1], MuxError::UnknownKind(0)),
            (
                &[2, 0, 0, 0, 0, 0, 0, 1],
                MuxError::BadLength { kind: 2, len: 0 },
            ),
            (
                &[2, 1, 0, 1, 0, 0, 0, 1],
                MuxError::BadLength {
                    kind: 2,
                    len: MAX_PAYLOAD + 1,
                },
            ),
            (
                &[2, 0xff, 0xff, 0xff, 0, 0, 0, 1],
                MuxError::BadLength {
                    kind: 2,
                    len: 0xff_ffff,
                },
            ),
            (
                &[1, 0, 0, 1, 0, 0, 0, 1],
                MuxError::BadLength { kind: 1, len: 1 },
            ),
            (
                &[5, 0, 0, 3, 0, 0, 0, 1],
                MuxError::BadLength { kind: 5, len: 3 },
            ),
            (&[3, 0, 0, 0, 0, 0, 0, 0], MuxError::ZeroChannel),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), Err(*want), "{bytes:?}");
        }
    }

    fn table() -> Channels<usize> {
        let mut t = Channels::server(2);
        assert_eq!(t.on_frame(Frame::Open(3)), Ok(Arrival::Open(3)));
        t.insert(3, 30);
        t
    }

    #[test]
    fn channels_take_only_growing_ids_up_to_the_limit() {
        let mut t = table();
        assert_eq!(t.on_frame(Frame::Open(3)), Err(MuxError::ReusedChannel(3)));
        assert_eq!(t.on_frame(Frame::Open(2)), Err(MuxError::ReusedChannel(2)));
        assert_eq!(t.on_frame(Frame::Open(5)), Ok(Arrival::Open(5)));
        t.skip(5);
        assert_eq!(t.on_frame(Frame::Data(5, b"x")), Ok(Arrival::Ignored));
        assert_eq!(t.on_frame(Frame::Open(6)), Ok(Arrival::Open(6)));
        t.insert(6, 60);
        assert_eq!(t.on_frame(Frame::Open(7)), Err(MuxError::TooManyChannels));
        assert_eq!(t.on_frame(Frame::Fin(8)), Err(MuxError::UnknownChannel(8)));
        assert_eq!(t.on_frame(Frame::Close(6)), Ok(Arrival::Close(60)));
        assert_eq!(t.on_frame(Frame::Data(6, b"late")), Ok(Arrival::Ignored));
        assert_eq!(t.on_frame(Frame::Open(7)), Ok(Arrival::Open(7)));
        assert_eq!(
            t.on_frame(Frame::Credit(3, 1)),
            Err(MuxError::WrongDirection(5))
        );
    }

    #[test]
    fn data_is_held_to_the_credit_and_ends_with_fin() {
        let mut t = table();
        let big = vec![0u8; WINDOW as usize - 1];
        assert_eq!(
            t.on_frame(Frame::Data(3, &big)),
            Ok(Arrival::Data(30, &big[..]))
        );
        assert_eq!(
            t.on_frame(Frame::Data(3, b"a")),
            Ok(Arrival::Data(30, &b"a"[..]))
        );
        assert_eq!(
            t.on_frame(Frame::Data(3, b"b")),
            Err(MuxError::OverCredit(3))
        );
        t.grant(3, 2);
        assert_eq!(
            t.on_frame(Frame::Data(3, b"bc")),
            Ok(Arrival::Data(30, &b"bc"[..]))
        );
        assert_eq!(t.on_frame(Frame::Fin(3)), Ok(Arrival::Fin(30)));
        t.grant(3, 5);
        assert_eq!(
            t.on_frame(Frame::Data(3, b"d")),
            Err(MuxError::DataAfterFin(3))
        );
        assert_eq!(t.remove(3), Some(30));
        assert_eq!(t.on_frame(Frame::Fin(3)), Ok(Arrival::Ignored));
        assert!(t.is_empty());
    }
}
