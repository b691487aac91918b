//! One stream's way into JetStream, without I/O: line-aligned bytes are
//! staged, cut into messages, and acknowledged one message at a time.
//!
//! Invariants (offsets are stream offsets):
//! - `staging` holds the bytes `[staged_end - staging.len(), staged_end)`,
//!   where `staged_end` is the stream's [`LineWriter`] `written()`: the
//!   writer puts only whole lines into it (and the unterminated tail at
//!   the end of the stream, or a line longer than `max_line` in pieces).
//! - At most one message is in flight (`in_flight`); the next one starts
//!   where it ends. So the messages of a stream reach JetStream in order
//!   even when one must be sent again: a retry of `[a, b)` is the only
//!   message of the stream until JetStream acknowledged it, and its
//!   `Nats-Msg-Id` (stream identity, `a` and `b`) lets JetStream's
//!   duplicate window drop it if the first attempt had landed after all.
//! - `acked` only grows, and only to the end of a message JetStream
//!   acknowledged: what the client may be told with `ACK`.
//!
//! [`LineWriter`]: crate::sink::output::LineWriter

use sha2::{Digest, Sha256};

/// A message to publish: the stream bytes `[offset, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub offset: u64,
    pub end: u64,
    pub payload: Vec<u8>,
}

/// The staging state of one stream routed to a JetStream output.
#[derive(Debug, Default)]
pub struct Link {
    /// Line-aligned bytes not yet in a message (see the module doc).
    pub staging: Vec<u8>,
    /// The message published and not yet acknowledged: `(offset, end)`.
    in_flight: Option<(u64, u64)>,
    /// Stream offset up to which JetStream acknowledged.
    acked: u64,
}

impl Link {
    /// A link whose stream starts (and is acknowledged up to) `offset`.
    pub fn new(offset: u64) -> Link {
        Link {
            acked: offset,
            ..Link::default()
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The stream starts at `offset` after all (nothing staged yet).
    pub fn rebase(&mut self, offset: u64) {
        debug_assert!(self.staging.is_empty() && self.in_flight.is_none());
        self.acked = offset;
    }

    /// Nothing staged and nothing in flight: every byte is acknowledged.
    pub fn idle(&self) -> bool {
        self.staging.is_empty() && self.in_flight.is_none()
    }

    /// The message in flight, if any.
    pub fn in_flight(&self) -> Option<(u64, u64)> {
        self.in_flight
    }

    /// The next message, when none is in flight and bytes are staged: the
    /// longest prefix of whole lines up to `max` bytes, or `max` bytes of
    /// a line longer than that. `staged_end` is the writer's `written()`.
    pub fn cut(&mut self, staged_end: u64, max: usize) -> Option<Cut> {
        if self.in_flight.is_some() || self.staging.is_empty() {
            return None;
        }
        let offset = staged_end - self.staging.len() as u64;
        let len = if self.staging.len() <= max {
            self.staging.len()
        } else {
            memchr::memrchr(b'\n', &self.staging[..max]).map_or(max, |i| i + 1)
        };
        let payload = if len == self.staging.len() {
            std::mem::take(&mut self.staging)
        } else {
            let rest = self.staging.split_off(len);
            std::mem::replace(&mut self.staging, rest)
        };
        let end = offset + len as u64;
        self.in_flight = Some((offset, end));
        Some(Cut {
            offset,
            end,
            payload,
        })
    }

    /// The message cut last could not be handed over: its bytes go back
    /// in front of the staging and nothing is in flight.
    pub fn uncut(&mut self, offset: u64, mut payload: Vec<u8>) {
        debug_assert_eq!(self.in_flight.map(|(o, _)| o), Some(offset));
        payload.extend_from_slice(&self.staging);
        self.staging = payload;
        self.in_flight = None;
    }

    /// JetStream acknowledged the message ending at `end`: true when that
    /// is the one in flight (anything else is stale and ignored).
    pub fn ack(&mut self, end: u64) -> bool {
        match self.in_flight {
            Some((_, e)) if e == end => {
                self.in_flight = None;
                self.acked = end;
                true
            }
            _ => false,
        }
    }
}

/// The stream identity in a `Nats-Msg-Id`: 32 hex digits of the SHA-256
/// of host, path and file id (NUL-separated). Fixed length, whatever the
/// path holds.
pub fn identity(host: &str, path: &str, id: &str) -> String {
    let mut h = Sha256::new();
    for part in [host, path, id] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// `Nats-Msg-Id` of the message `[offset, end)` of a stream: equal for a
/// re-sent message, different for any other byte range.
pub fn msg_id(identity: &str, offset: u64, end: u64) -> String {
    format!("{identity}:{offset}-{end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_line_aligned_one_at_a_time_and_in_order() {
        let mut l = Link::new(100);
        l.staging.extend_from_slice(b"aa\nbbbb\ncc\n");
        let end = 111;
        let first = l.cut(end, 9).unwrap();
        assert_eq!(
            (first.offset, first.end, &first.payload[..]),
            (100, 108, &b"aa\nbbbb\n"[..])
        );
        assert_eq!(l.cut(end, 9), None, "one message in flight");
        assert!(!l.ack(107), "a stale end is ignored");
        assert!(l.ack(108));
        assert_eq!(l.acked(), 108);
        let second = l.cut(end, 9).unwrap();
        assert_eq!(
            (second.offset, second.end, &second.payload[..]),
            (108, 111, &b"cc\n"[..])
        );
        assert!(l.ack(111) && l.idle());
        l.staging.extend_from_slice(b"dd\nee\n");
        let third = l.cut(117, 3).unwrap();
        l.uncut(third.offset, third.payload);
        assert_eq!((l.in_flight(), &l.staging[..]), (None, &b"dd\nee\n"[..]));
    }

    #[test]
    fn a_line_longer_than_a_message_is_cut_at_the_limit() {
        let mut l = Link::new(0);
        l.staging.extend_from_slice(b"0123456789\n");
        let a = l.cut(11, 4).unwrap();
        assert_eq!((a.offset, a.end), (0, 4));
        l.ack(4);
        let b = l.cut(11, 4).unwrap();
        assert_eq!((b.offset, b.end), (4, 8));
    }

    #[test]
    fn ids_name_the_stream_and_the_byte_range() {
        let a = identity("web1", "/var/log/app.log", "fe00-1");
        assert_eq!(a.len(), 32);
        assert_ne!(a, identity("web1", "/var/log/app.log", "fe00-2"));
        assert_ne!(identity("a", "b\0c", ""), identity("a", "b", "c"));
        assert_eq!(msg_id(&a, 0, 10), format!("{a}:0-10"));
    }
}
