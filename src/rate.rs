//! Rate limiting: a token bucket, pure, with time passed in. Both daemons
//! use it: the client for `rate_limit` on streams and on the whole client,
//! the server for `connection_rate_limit`.
//!
//! A bucket holds up to `burst` bytes of credit and refills at `rate`
//! bytes per second. Sending takes credit; with none left the sender waits
//! (a timer in the loop, never a sleep) until enough has refilled. Nothing
//! is dropped: the file is the buffer.

use std::time::{Duration, Instant};

/// A rate in bytes per second and the credit that may build up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub bytes_per_sec: u64,
    pub burst: u64,
}

/// One token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    limit: Limit,
    /// Credit in bytes (fractional: refill is continuous).
    credit: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: Limit, now: Instant) -> Bucket {
        let limit = Limit {
            bytes_per_sec: limit.bytes_per_sec.max(1),
            burst: limit.burst.max(1),
        };
        Bucket {
            limit,
            credit: limit.burst as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.credit =
            (self.credit + dt * self.limit.bytes_per_sec as f64).min(self.limit.burst as f64);
    }

    /// How many of `want` bytes may go now (without taking them).
    pub fn available(&mut self, now: Instant, want: usize) -> usize {
        self.refill(now);
        (self.credit.max(0.0) as usize).min(want)
    }

    /// Takes credit for `n` bytes sent.
    pub fn take(&mut self, now: Instant, n: usize) {
        self.refill(now);
        self.credit -= n as f64;
    }

    /// When `n` bytes (at most `burst`) of credit will be there.
    pub fn ready_at(&mut self, now: Instant, n: usize) -> Instant {
        self.refill(now);
        let need = (n as f64).min(self.limit.burst as f64) - self.credit;
        if need <= 0.0 {
            return now;
        }
        now + Duration::from_secs_f64(need / self.limit.bytes_per_sec as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn bucket(rate: u64, burst: u64, t0: Instant) -> Bucket {
        Bucket::new(
            Limit {
                bytes_per_sec: rate,
                burst,
            },
            t0,
        )
    }

    #[test]
    fn starts_full_and_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = bucket(1000, 500, t0);
        assert_eq!(b.available(t0, 10_000), 500);
        b.take(t0, 500);
        assert_eq!(b.available(t0, 10_000), 0);
        assert_eq!(b.available(t0 + 100 * MS, 10_000), 100);
        assert_eq!(b.ready_at(t0 + 100 * MS, 300), t0 + 300 * MS);
        // Never more than the burst, however long it waited.
        assert_eq!(b.available(t0 + 60_000 * MS, 10_000), 500);
    }

    #[test]
    fn over_a_long_run_the_rate_holds_whatever_the_chunk_sizes() {
        // A sender that sends whatever it may, waking when told to.
        let t0 = Instant::now();
        let mut b = bucket(2 << 20, 256 << 10, t0);
        let (mut now, mut sent) = (t0, 0usize);
        let mut sizes = [4096usize, 65536, 1 << 20, 100, 300_000].iter().cycle();
        while now < t0 + Duration::from_secs(10) {
            let want = *sizes.next().unwrap();
            let n = b.available(now, want);
            if n > 0 {
                b.take(now, n);
                sent += n;
            } else {
                now = b.ready_at(now, want.min(64 << 10));
            }
        }
        let secs = now.duration_since(t0).as_secs_f64();
        let rate = (sent - (256 << 10)) as f64 / secs;
        assert!((rate / (2 << 20) as f64 - 1.0).abs() < 0.01, "{rate}");
    }
}
