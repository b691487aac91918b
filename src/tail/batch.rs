//! When to send: the batching rule, as a pure function of time.
//!
//! The client reads a file into a buffer and asks [`decide`] how many of the
//! buffered bytes to send now. The rule:
//! 1. Only whole lines are sent, unless the bytes after the last newline
//!    have waited `partial_line_timeout` (then everything goes), or the
//!    buffer is full without a newline (a line longer than the buffer).
//! 2. Whole lines are sent at once when there are at least `batch` bytes of
//!    them or when the oldest of them has waited `linger`; otherwise the
//!    caller is told when to ask again.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub batch: usize,
    pub linger: Duration,
    pub partial_line_timeout: Duration,
}

/// What the caller knows about its unsent bytes.
#[derive(Debug, Clone, Copy)]
pub struct Unsent {
    /// Bytes buffered and not yet sent.
    pub len: usize,
    /// Bytes up to and including the last newline among them (0 if none).
    pub whole: usize,
    /// The buffer cannot take more bytes.
    pub full: bool,
    /// When the oldest unsent byte was first seen.
    pub since: Instant,
    /// When the current unterminated tail was first seen, if there is one.
    pub partial_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Send this many bytes now (may be 0).
    pub send: usize,
    /// Ask again at this time if nothing else happens first.
    pub wake_at: Option<Instant>,
}

pub fn decide(r: &Rules, u: &Unsent, now: Instant) -> Decision {
    if u.len == 0 {
        return Decision {
            send: 0,
            wake_at: None,
        };
    }
    let partial_due = u.partial_since.map(|t| t + r.partial_line_timeout);
    let partial_ready = u.full && u.whole == 0 || partial_due.is_some_and(|t| t <= now);
    let sendable = if partial_ready { u.len } else { u.whole };
    let linger_due = u.since + r.linger;
    if sendable > 0 && (sendable >= r.batch || u.full || linger_due <= now) {
        return Decision {
            send: sendable,
            wake_at: None,
        };
    }
    let wake_at = if sendable > 0 {
        Some(linger_due)
    } else {
        partial_due
    };
    Decision { send: 0, wake_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rules() -> Rules {
        Rules {
            batch: 4096,
            linger: 20 * MS,
            partial_line_timeout: 5000 * MS,
        }
    }

    fn unsent(t0: Instant, len: usize, whole: usize) -> Unsent {
        let partial_since = (whole < len).then_some(t0);
        Unsent {
            len,
            whole,
            full: false,
            since: t0,
            partial_since,
        }
    }

    #[test]
    fn small_batch_waits_for_linger_then_goes() {
        let t0 = Instant::now();
        let u = unsent(t0, 100, 100);
        assert_eq!(
            decide(&rules(), &u, t0),
            Decision {
                send: 0,
                wake_at: Some(t0 + 20 * MS)
            }
        );
        assert_eq!(decide(&rules(), &u, t0 + 20 * MS).send, 100);
    }

    #[test]
    fn big_batch_goes_at_once_without_its_partial_tail() {
        let t0 = Instant::now();
        assert_eq!(decide(&rules(), &unsent(t0, 5000, 4500), t0).send, 4500);
    }

    #[test]
    fn partial_line_waits_for_its_timeout() {
        let t0 = Instant::now();
        let u = unsent(t0, 10, 0);
        assert_eq!(
            decide(&rules(), &u, t0 + 100 * MS),
            Decision {
                send: 0,
                wake_at: Some(t0 + 5000 * MS)
            }
        );
        assert_eq!(decide(&rules(), &u, t0 + 5000 * MS).send, 10);
    }

    #[test]
    fn full_buffer_without_newline_is_sent_whole() {
        let t0 = Instant::now();
        let u = Unsent {
            full: true,
            ..unsent(t0, 64, 0)
        };
        assert_eq!(decide(&rules(), &u, t0).send, 64);
    }

    #[test]
    fn nothing_unsent_needs_no_wakeup() {
        let t0 = Instant::now();
        assert_eq!(
            decide(&rules(), &unsent(t0, 0, 0), t0),
            Decision {
                send: 0,
                wake_at: None
            }
        );
    }
}
