//! What one followed path has told the operator, so that each thing is
//! told once and at the right level.
//!
//! - A configured path missing at its first look is one WARN (it may be
//!   a typo); when it appears, one INFO says so. A file that goes away
//!   later (a rotation without `create`) is a debug line, and the wait
//!   for it is silent.
//! - An open that keeps failing for the same reason, or a server that
//!   refuses the stream with the same words on every reconnect, is one
//!   WARN; the retries are debug lines until the reason changes or the
//!   open (the handshake) works.
//! - With `--debug`, progress is one "sent up to" line per
//!   [`PROGRESS_EVERY`] per file while acknowledgements arrive, never one
//!   per append.
//!
//! No I/O and no clock: the stream passes `now` and asks before logging.

use std::time::{Duration, Instant};

use crate::once::Said;

/// Least time between two "sent up to" debug lines of one file.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Whether the path was there when last looked at, as told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Presence {
    /// Not looked at yet.
    #[default]
    Unknown,
    /// Open (or opened once since the last absence).
    Present,
    /// Missing at the first look: a WARN said so.
    Warned,
    /// Gone later: a debug line said so.
    Gone,
}

/// How to tell that the path is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Absence {
    /// First look: one WARN.
    Warn,
    /// It went away: one debug line.
    Debug,
    /// Said already.
    Quiet,
}

#[derive(Debug, Default)]
pub(super) struct Told {
    presence: Presence,
    /// Open or read failures, by what failed and the error.
    failed: Said<(&'static str, String)>,
    /// Why the last connections ended.
    link: Said<String>,
    /// When progress was last told, and the offset it named.
    progress: Option<(Instant, u64)>,
    /// The file was parked when last looked at.
    parked: bool,
}

impl Told {
    /// The path is not there. `expected`: a configured path (a glob match
    /// or a whole file that vanished is not worth a WARN).
    pub fn absent(&mut self, expected: bool) -> Absence {
        let how = match self.presence {
            Presence::Unknown if expected => Absence::Warn,
            Presence::Unknown | Presence::Present => Absence::Debug,
            Presence::Warned | Presence::Gone => Absence::Quiet,
        };
        self.presence = match how {
            Absence::Warn => Presence::Warned,
            Absence::Debug => Presence::Gone,
            Absence::Quiet => self.presence,
        };
        how
    }

    /// A file was opened at the path; true when it appeared after the
    /// WARN that it was missing.
    pub fn opened(&mut self) -> bool {
        self.failed.clear();
        std::mem::replace(&mut self.presence, Presence::Present) == Presence::Warned
    }

    /// Opening or reading failed; true when this reason is new.
    pub fn failed(&mut self, what: &'static str, error: &str) -> bool {
        self.failed.say((what, error.to_string()))
    }

    /// A connection ended for `why`; true when the reason is new.
    pub fn link_ended(&mut self, why: &str) -> bool {
        self.link.say(why.to_string())
    }

    /// The file was parked (closed while idle).
    pub fn park(&mut self) {
        self.parked = true;
    }

    /// Whether the file is parked now; true when it was and no longer is
    /// (reopened: a debug line, as its parking was).
    pub fn unparked(&mut self, parked: bool) -> bool {
        std::mem::replace(&mut self.parked, parked) && !parked
    }

    /// The server accepted the stream from `offset` at `now`.
    pub fn streaming(&mut self, now: Instant, offset: u64) {
        self.link.clear();
        self.progress = Some((now, offset));
    }

    /// The server acknowledged up to `offset`; true when a progress line
    /// is due (none for [`PROGRESS_EVERY`], and the offset moved).
    pub fn acknowledged(&mut self, now: Instant, offset: u64) -> bool {
        let due = match self.progress {
            Some((at, was)) => now >= at + PROGRESS_EVERY && offset != was,
            None => true,
        };
        if due {
            self.progress = Some((now, offset));
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_at_start_is_one_warning_then_one_appearance() {
        let mut t = Told::default();
        assert_eq!(t.absent(true), Absence::Warn);
        assert_eq!(t.absent(true), Absence::Quiet);
        assert!(t.opened(), "appeared after the warning");
        assert_eq!(t.absent(true), Absence::Debug, "gone later: rotation");
        assert_eq!(t.absent(true), Absence::Quiet);
        assert!(!t.opened(), "back after a rotation is not news");
        let mut glob = Told::default();
        assert_eq!(glob.absent(false), Absence::Debug);
        assert!(!glob.opened());
    }

    #[test]
    fn failures_and_refusals_once_per_reason() {
        let mut t = Told::default();
        assert!(t.failed("open", "Permission denied"));
        assert!(!t.failed("open", "Permission denied"));
        assert!(t.failed("read", "Input/output error"));
        t.opened();
        assert!(
            t.failed("read", "Input/output error"),
            "again after an open"
        );
        let now = Instant::now();
        assert!(t.link_ended("server refused the stream: 503 Output unavailable"));
        assert!(!t.link_ended("server refused the stream: 503 Output unavailable"));
        assert!(t.link_ended("connection reset"));
        t.streaming(now, 0);
        assert!(t.link_ended("connection reset"), "again after a handshake");
        assert!(!t.unparked(false));
        assert!(!t.unparked(true));
        assert!(!t.unparked(true));
        assert!(t.unparked(false), "reopened");
        assert!(!t.unparked(false));
    }

    #[test]
    fn progress_at_most_once_per_period() {
        let t0 = Instant::now();
        let mut t = Told::default();
        t.streaming(t0, 0);
        let lines = (1..=300u64)
            .filter(|&i| t.acknowledged(t0 + Duration::from_millis(i * 100), i))
            .count();
        assert_eq!(lines, 3, "30 s of ACKs every 100 ms: one line per 10 s");
        let quiet = t0 + Duration::from_secs(100);
        assert!(!t.acknowledged(quiet, 300), "no line without progress");
    }
}
