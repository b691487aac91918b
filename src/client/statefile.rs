//! When the state file cannot be written at run time (disk full,
//! permissions changed, the directory removed).
//!
//! Start-up already proved the file writable (`crate::writable`); this is
//! for what happens later. The positions stay in memory, so nothing is
//! lost while saves fail: the next save that works writes them all. What
//! the operator sees is one ERROR when saving starts to fail (and another
//! only if the reason changes), the `state_write_failures_total` metric
//! for every attempt, and one INFO when a save works again. Attempts back
//! off from `state_interval` to [`MAX_RETRY`], so a full disk costs a
//! rename attempt a minute, not one a second. A clean stop tries once more
//! whatever the back-off, and a failure then is the daemon's exit error.
//!
//! No I/O and no clock here: the daemon passes `now` and each result.

use std::time::{Duration, Instant};

use crate::once::Said;
use crate::tail::state::StateError;

/// Longest wait between two attempts while saving fails.
pub(super) const MAX_RETRY: Duration = Duration::from_secs(60);

/// Whether the state file is being written, and when to try again.
#[derive(Debug, Default)]
pub(super) struct Saving {
    said: Said<String>,
    failing: Option<Failing>,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    delay: Duration,
    next: Instant,
    last: StateError,
}

/// What the daemon should log after an attempt.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Saved, as usual.
    Saved,
    /// Saved after failing for this long (one INFO line).
    Recovered(Duration),
    /// Failed; `say`: the first failure or a new reason (one ERROR line).
    Failed { say: bool, retry_at: Instant },
}

impl Saving {
    /// True when a save may be attempted now (not while backing off).
    pub fn due(&self, now: Instant) -> bool {
        self.failing.as_ref().is_none_or(|f| now >= f.next)
    }

    /// Records the result of an attempt at `now`; `base` is the first
    /// delay (`state_interval`).
    pub fn record(&mut self, now: Instant, base: Duration, r: Result<(), StateError>) -> Verdict {
        match r {
            Ok(()) => {
                self.said.clear();
                match self.failing.take() {
                    Some(f) => Verdict::Recovered(now.saturating_duration_since(f.since)),
                    None => Verdict::Saved,
                }
            }
            Err(e) => {
                let say = self.said.say(e.to_string());
                let (since, delay) = match &self.failing {
                    Some(f) => (f.since, (f.delay * 2).min(MAX_RETRY)),
                    None => (now, base.min(MAX_RETRY)),
                };
                let retry_at = now + delay;
                self.failing = Some(Failing {
                    since,
                    delay,
                    next: retry_at,
                    last: e,
                });
                Verdict::Failed { say, retry_at }
            }
        }
    }

    /// The last failure, if the last attempt failed (for the exit error).
    pub fn take_error(&mut self) -> Option<StateError> {
        self.failing.take().map(|f| f.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(why: &str) -> Result<(), StateError> {
        Err(StateError::Write {
            path: "/s".into(),
            source: std::io::Error::other(why.to_string()),
        })
    }

    #[test]
    fn one_error_per_cause_backing_off_then_one_recovery() {
        let t0 = Instant::now();
        let base = Duration::from_secs(1);
        let mut s = Saving::default();
        assert!(s.due(t0));
        assert_eq!(s.record(t0, base, Ok(())), Verdict::Saved);
        let mut now = t0;
        let mut said = 0;
        let mut delays = Vec::new();
        for _ in 0..10 {
            let Verdict::Failed { say, retry_at } = s.record(now, base, fail("disk full")) else {
                panic!("a failure is a failure");
            };
            said += usize::from(say);
            assert!(!s.due(retry_at - Duration::from_millis(1)));
            assert!(s.due(retry_at));
            delays.push((retry_at - now).as_secs());
            now = retry_at;
        }
        assert_eq!(said, 1, "one ERROR for one cause");
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        let Verdict::Failed { say, .. } = s.record(now, base, fail("permission denied")) else {
            panic!()
        };
        assert!(say, "a new cause is said");
        assert_eq!(
            s.record(now + Duration::from_secs(5), base, Ok(())),
            Verdict::Recovered(now + Duration::from_secs(5) - t0)
        );
        assert!(s.due(now));
        assert!(s.take_error().is_none());
        let Verdict::Failed { say, .. } = s.record(now, base, fail("disk full")) else {
            panic!()
        };
        assert!(say, "after a recovery the same cause is said again");
        assert!(s.take_error().is_some());
    }
}
