//! When a file counts as closed, for send after close.
//!
//! A file sent whole must be finished: bytes appended after it was sent
//! would never leave the host. A guess from the modification time is not
//! enough (an empty file an application opened at start and has not
//! written to yet looks idle for hours), so the decision rests on proof:
//!
//! - **Lease probe** (Linux, `reactor::sys::lease`): the kernel grants a
//!   read lease only while nobody holds the file open for writing. A probe
//!   that says "no writer" makes the file [`Verdict::Closed`] at once.
//! - **A writer holds it**: the file waits ([`State::Writer`]) for its
//!   writer to close it. `IN_CLOSE_WRITE` makes the caller look again at
//!   once; [`REPROBE`] is only the safety net for a missed event.
//! - **No proof possible** (leases unsupported or not permitted there):
//!   the settle rule stands in ([`State::Settling`]): the file counts as
//!   closed once its length and modification time stayed the same for
//!   [`SETTLE`]. The caller says so once per directory; this is a guess,
//!   and the README says what it can miss.
//!
//! This module does no I/O and reads no clock: the caller probes, stats,
//! passes the results and `now`, and gets back either `Closed` or when to
//! look again. Every look is a fresh decision from the probe's answer;
//! the state only remembers what the settle rule needs and what changed
//! (so a writer is reported once, not at every re-probe).

use std::time::{Duration, Instant, SystemTime};

/// How long length and modification time must stay unchanged before a
/// file whose writers cannot be known counts as closed.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How often a file with a writer is probed again when no
/// `IN_CLOSE_WRITE` came (a safety net, not the normal path).
pub const REPROBE: Duration = Duration::from_secs(30);

/// What the caller saw of the file at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// The lease probe: `Some(false)` no writer, `Some(true)` a writer,
    /// `None` cannot be told (see `tail::fs::Fs::writers`).
    pub writers: Option<bool>,
    pub len: u64,
    pub mtime: SystemTime,
}

/// Where a candidate file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not looked at yet.
    New,
    /// A writer held it at the last look.
    Writer,
    /// Writers cannot be known; its length and mtime were `len`/`mtime`,
    /// unchanged since `since`.
    Settling {
        len: u64,
        mtime: SystemTime,
        since: Instant,
    },
}

/// The decision after one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Proven closed (or, without proof, settled): send it.
    Closed,
    /// Look again at this time, or sooner on `IN_CLOSE_WRITE`.
    Wait(Instant),
}

/// What changed at a look that the caller may want to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// It went from anything else to having a writer.
    WriterFound,
    /// It went from anything else to "cannot be told".
    Unprovable,
}

/// One candidate file's closure, decided look by look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closure {
    pub state: State,
}

impl Default for Closure {
    fn default() -> Self {
        Closure { state: State::New }
    }
}

impl Closure {
    /// Decides from one look taken at `now`.
    pub fn look(&mut self, now: Instant, seen: Look) -> (Verdict, Change) {
        match seen.writers {
            Some(false) => {
                self.state = State::New;
                (Verdict::Closed, Change::None)
            }
            Some(true) => {
                let change = if self.state == State::Writer {
                    Change::None
                } else {
                    Change::WriterFound
                };
                self.state = State::Writer;
                (Verdict::Wait(now + REPROBE), change)
            }
            None => self.settle(now, seen),
        }
    }

    /// The settle rule, where writers cannot be known.
    fn settle(&mut self, now: Instant, seen: Look) -> (Verdict, Change) {
        match self.state {
            State::Settling { len, mtime, since } if (len, mtime) == (seen.len, seen.mtime) => {
                if now >= since + SETTLE {
                    self.state = State::New;
                    (Verdict::Closed, Change::None)
                } else {
                    (Verdict::Wait(since + SETTLE), Change::None)
                }
            }
            State::Settling { .. } => {
                self.start_settling(now, seen);
                (Verdict::Wait(now + SETTLE), Change::None)
            }
            State::New | State::Writer => {
                self.start_settling(now, seen);
                (Verdict::Wait(now + SETTLE), Change::Unprovable)
            }
        }
    }

    fn start_settling(&mut self, now: Instant, seen: Look) {
        self.state = State::Settling {
            len: seen.len,
            mtime: seen.mtime,
            since: now,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn seen(writers: Option<bool>, len: u64, mtime: u64) -> Look {
        Look {
            writers,
            len,
            mtime: at(mtime),
        }
    }

    #[test]
    fn no_writer_is_closed_at_the_first_look_however_young_or_empty() {
        let now = t0();
        let mut c = Closure::default();
        assert_eq!(
            c.look(now, seen(Some(false), 0, 0)),
            (Verdict::Closed, Change::None)
        );
    }

    #[test]
    fn a_writer_waits_however_old_the_file_and_is_reported_once() {
        let now = t0();
        let mut c = Closure::default();
        // Empty and idle for ages: still not closed while written to.
        let first = c.look(now, seen(Some(true), 0, 0));
        assert_eq!(first, (Verdict::Wait(now + REPROBE), Change::WriterFound));
        assert_eq!(c.state, State::Writer);
        // The safety-net re-probe finds the writer still there: no new report.
        let later = now + REPROBE;
        let again = c.look(later, seen(Some(true), 0, 0));
        assert_eq!(again, (Verdict::Wait(later + REPROBE), Change::None));
        // IN_CLOSE_WRITE of one of two writers: the other still holds it.
        let soon = later + Duration::from_millis(5);
        let (v, _) = c.look(soon, seen(Some(true), 100, 9));
        assert_eq!(v, Verdict::Wait(soon + REPROBE));
        // The last writer closed it.
        assert_eq!(
            c.look(soon, seen(Some(false), 200, 9)),
            (Verdict::Closed, Change::None)
        );
        assert_eq!(c.state, State::New);
    }

    #[test]
    fn a_writer_found_again_after_a_close_is_reported_again() {
        let now = t0();
        let mut c = Closure::default();
        c.look(now, seen(Some(true), 0, 0));
        assert_eq!(c.look(now, seen(Some(false), 0, 0)).0, Verdict::Closed);
        assert_eq!(c.look(now, seen(Some(true), 5, 1)).1, Change::WriterFound);
    }

    #[test]
    fn without_proof_an_unchanged_file_is_closed_after_settle() {
        let now = t0();
        let mut c = Closure::default();
        let first = c.look(now, seen(None, 10, 5));
        assert_eq!(first, (Verdict::Wait(now + SETTLE), Change::Unprovable));
        // Looked at early (an event): still waits for the same moment.
        let early = now + SETTLE / 2;
        assert_eq!(
            c.look(early, seen(None, 10, 5)),
            (Verdict::Wait(now + SETTLE), Change::None)
        );
        assert_eq!(
            c.look(now + SETTLE, seen(None, 10, 5)),
            (Verdict::Closed, Change::None)
        );
    }

    #[test]
    fn without_proof_a_change_in_length_or_mtime_starts_settling_over() {
        let now = t0();
        let mut c = Closure::default();
        c.look(now, seen(None, 10, 5));
        let t1 = now + SETTLE;
        assert_eq!(
            c.look(t1, seen(None, 20, 5)),
            (Verdict::Wait(t1 + SETTLE), Change::None)
        );
        let t2 = t1 + SETTLE;
        // Same length, rewritten: the mtime moved.
        assert_eq!(
            c.look(t2, seen(None, 20, 6)),
            (Verdict::Wait(t2 + SETTLE), Change::None)
        );
        assert_eq!(c.look(t2 + SETTLE, seen(None, 20, 6)).0, Verdict::Closed);
    }

    #[test]
    fn the_probe_answering_again_overrides_settling_either_way() {
        let now = t0();
        let mut c = Closure::default();
        c.look(now, seen(None, 10, 5));
        assert_eq!(
            c.look(now, seen(Some(true), 10, 5)),
            (Verdict::Wait(now + REPROBE), Change::WriterFound)
        );
        assert_eq!(
            c.look(now, seen(None, 10, 5)),
            (Verdict::Wait(now + SETTLE), Change::Unprovable)
        );
        assert_eq!(c.look(now, seen(Some(false), 10, 5)).0, Verdict::Closed);
    }
}
