//! `connection_rate_limit`: a token bucket per connection, charged with
//! the bytes taken from its socket (compressed bytes for a compressed
//! stream, before they are decoded).
//!
//! A connection out of credit reads nothing and wakes on a timer when
//! enough has refilled; meanwhile its bytes wait in the kernel's socket
//! buffers and, once those fill, in the client's file (TCP back-pressure).
//! Nothing is dropped. One read may overshoot the credit (the bucket goes
//! negative and the next wait is longer), so the average holds.

use std::time::Instant;

use super::Conn;

/// Credit a throttled connection waits for before it reads again, so it
/// reads in chunks, not a few bytes at a time.
const WAKE_CHUNK: usize = 64 * 1024;

impl Conn {
    /// When to read again, if the connection's credit is spent.
    pub(super) fn rate_wait(&mut self, now: Instant) -> Option<Instant> {
        let b = self.stream.as_mut()?.rate.as_mut()?;
        (b.available(now, 1) == 0).then(|| b.ready_at(now, WAKE_CHUNK))
    }

    /// How many of `want` bytes the next read may take (at least 1).
    pub(super) fn allowance(&mut self, now: Instant, want: usize) -> usize {
        match self.stream.as_mut().and_then(|s| s.rate.as_mut()) {
            Some(b) => b.available(now, want).max(1),
            None => want,
        }
    }

    /// Takes credit for `n` bytes read from the socket (and notes the
    /// input for `idle_timeout`).
    pub(super) fn charge(&mut self, now: Instant, n: usize) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        s.last_input = now;
        if let Some(b) = s.rate.as_mut() {
            b.take(now, n);
        }
    }
}
