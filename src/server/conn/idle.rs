//! `idle_timeout`: a stream that sends nothing for that long gives its
//! slot back.
//!
//! Before this, a connection past INIT could stay open for ever, so idle
//! connections piled up until descriptors ran out. The server sweeps its
//! connections periodically (`Server::sweep_idle`) and asks each stream
//! that received nothing for `idle_timeout` to finish, the way it does at
//! shutdown: `421 Idle timeout` to a client that asked for `ack:1` (it
//! half-closes, the server writes what arrived, answers `250 DONE`, and
//! the client reconnects when its file grows), or the same line and a
//! close to one that did not. A client that ignores the `421` is closed
//! [`DONE_TIMEOUT`] later. Nothing is lost: only what was written counts
//! in the stream's offset, and a reconnecting client resumes from there.
//!
//! A stream that stalls on its output (disk full, another stream's open
//! line) or holds compressed input is busy, not idle.

use std::time::{Duration, Instant};

use super::{Conn, ConnPhase, Shared, DONE_TIMEOUT};
use crate::metrics::server::LimitHit;
use crate::proto;

impl Conn {
    /// Applies `idle_timeout` at `now`; true when the connection must be
    /// served (a line to flush, or closing).
    pub fn idle(&mut self, now: Instant, timeout: Duration, shared: &mut Shared) -> bool {
        if !matches!(self.phase, ConnPhase::Streaming) || self.holds_input() {
            return false;
        }
        let Some(s) = self.stream.as_mut() else {
            return false;
        };
        if let Some(deadline) = s.idle_deadline {
            if now < deadline {
                return false;
            }
            crate::debug!(
                "{}: {} did not finish after 421 Idle timeout; closing",
                self.peer,
                s.label
            );
            self.phase = ConnPhase::close_now(now);
            return true;
        }
        if s.stall.is_some() || now < s.last_input + timeout {
            return false;
        }
        crate::debug!(
            "{}: {} sent nothing for {:.1}s (idle_timeout); asking it to finish",
            self.peer,
            s.label,
            timeout.as_secs_f64()
        );
        shared.metrics.limit_hit(LimitHit::IdleTimeout);
        if s.ack {
            proto::write_reply(&mut self.outbuf, 421, "Idle timeout", None);
            s.idle_deadline = Some(now + DONE_TIMEOUT);
        } else {
            self.fail(421, "Idle timeout", now);
        }
        true
    }
}
