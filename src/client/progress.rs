//! The progress of `method = "send"`: when to say how far the sending has
//! come, and the words. No I/O and no clock: the daemon passes `now` and
//! what each file has sent, and prints what comes back.
//!
//! Two audiences, one [`Mode`] each:
//!
//! - [`Mode::Terminal`]: a person watching a backfill (every stream is
//!   `send`, stderr is a terminal). One status line for the whole run,
//!   redrawn every second through [`crate::log::status`], which clears it
//!   before any log line and draws it again below, so the two never run
//!   into each other. It is cleared when the run ends.
//! - [`Mode::Log`]: everywhere else (systemd, cron, a pipe). A status line
//!   would be noise in a journal, so each file being sent gets one INFO
//!   line every [`LOG_EVERY`] (10 s) from when it started: bytes sent of
//!   the total, the rate since it started, and the time left at that rate.
//!   A file sent in less time than that gets none; its `sent (N bytes,
//!   confirmed)` line says it all.
//!
//! The INFO interval can be shortened for tests with the environment
//! variable [`EVERY_ENV`] (milliseconds); it is not meant for operators.

use std::time::{Duration, Instant};

use crate::reactor::Armed;

/// How often a file being sent gets its INFO line ([`Mode::Log`]).
pub(super) const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often the terminal's status line is redrawn.
pub(super) const DRAW_EVERY: Duration = Duration::from_secs(1);
/// Test knob: [`LOG_EVERY`] in milliseconds.
pub(super) const EVERY_ENV: &str = "LOGHAMSTER_TEST_PROGRESS_EVERY_MS";

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Mode {
    /// Nowhere (before the run starts).
    #[default]
    Off,
    /// One status line on the terminal, for the whole run.
    Terminal,
    /// One INFO line per file every [`LOG_EVERY`].
    Log,
}

impl Mode {
    /// A status line only for a backfill (the run ends when it is done)
    /// watched on a terminal; INFO lines otherwise.
    pub fn pick(send_only: bool, terminal: bool) -> Mode {
        match send_only && terminal {
            true => Mode::Terminal,
            false => Mode::Log,
        }
    }
}

/// `LOG_EVERY`, or the test override's value; an override that is not a
/// positive number of milliseconds is refused with the reason.
pub(super) fn log_every(var: Option<&str>) -> Result<Duration, String> {
    let Some(text) = var else {
        return Ok(LOG_EVERY);
    };
    match text.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{EVERY_ENV}={text:?} is not a positive number of milliseconds; using {}s",
            LOG_EVERY.as_secs()
        )),
    }
}

/// One file being sent, in [`Mode::Log`].
#[derive(Debug)]
struct Track<K> {
    key: K,
    started: Instant,
    /// Bytes sent before it started (a send resumed after a restart).
    from: u64,
    next: Instant,
}

/// When progress is due, for the whole run and for each file.
#[derive(Debug)]
pub(super) struct Progress<K> {
    mode: Mode,
    /// [`LOG_EVERY`] (or the test override).
    every: Duration,
    /// The next redraw of the status line ([`Mode::Terminal`]).
    draw: Option<Instant>,
    files: Vec<Track<K>>,
    /// The earliest wake-up scheduled for the owner.
    armed: Armed,
}

impl<K> Default for Progress<K> {
    /// No progress ([`Mode::Off`]).
    fn default() -> Self {
        Progress {
            mode: Mode::Off,
            every: LOG_EVERY,
            draw: None,
            files: Vec::new(),
            armed: Armed::default(),
        }
    }
}

impl<K: Copy + PartialEq> Progress<K> {
    /// Progress in `mode` from `now`, files reported every `every`.
    pub fn new(mode: Mode, every: Duration, now: Instant) -> Self {
        Progress {
            mode,
            every,
            draw: (mode == Mode::Terminal).then(|| now + DRAW_EVERY),
            files: Vec::new(),
            armed: Armed::default(),
        }
    }

    /// A file started being sent at `now`, `from` bytes in.
    pub fn watch(&mut self, key: K, now: Instant, from: u64) {
        if self.mode == Mode::Log {
            self.files.retain(|t| t.key != key);
            let next = now + self.every;
            self.files.push(Track {
                key,
                started: now,
                from,
                next,
            });
        }
    }

    /// The file is done (or gone): no more lines for it.
    pub fn forget(&mut self, key: K) {
        self.files.retain(|t| t.key != key);
    }

    /// True when the status line is due at `now` (then the next redraw is
    /// a second later).
    pub fn status_due(&mut self, now: Instant) -> bool {
        match self.draw {
            Some(at) if at <= now => {
                self.draw = Some(now + DRAW_EVERY);
                true
            }
            _ => false,
        }
    }

    /// The files whose line is due at `now`, with their reports. `look`
    /// says what a file has sent and its size, or `None` once it is gone
    /// (then it is forgotten).
    pub fn due_files(
        &mut self,
        now: Instant,
        mut look: impl FnMut(K) -> Option<(u64, u64)>,
    ) -> Vec<(K, FileReport)> {
        let mut due = Vec::new();
        self.files.retain_mut(|t| {
            if t.next > now {
                return true;
            }
            let Some((sent, total)) = look(t.key) else {
                return false;
            };
            t.next = now + self.every;
            let elapsed = now.saturating_duration_since(t.started);
            due.push((t.key, FileReport::new(sent, total, t.from, elapsed)));
            true
        });
        due
    }

    /// The time the owner should wake for progress, if it is earlier than
    /// the wake-up it already has (call after every change).
    pub fn arm(&mut self) -> Option<Instant> {
        let next = self.files.iter().map(|t| t.next).chain(self.draw).min()?;
        self.armed.arm(next).then_some(next)
    }

    /// The wake-up scheduled for `now` fired.
    pub fn fired(&mut self, now: Instant) {
        self.armed.fired(now);
    }
}

/// How far one file has come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct FileReport {
    pub sent: u64,
    pub total: u64,
    /// Bytes per second since the file started.
    pub rate: u64,
    /// At that rate; `None` while nothing moved.
    pub eta: Option<Duration>,
}

impl FileReport {
    /// `sent` of `total` bytes, `from` of them before the start, `elapsed`
    /// since it.
    pub fn new(sent: u64, total: u64, from: u64, elapsed: Duration) -> Self {
        let total = total.max(sent);
        let moved = sent.saturating_sub(from);
        let rate = match elapsed.as_millis() {
            0 => 0,
            ms => (u128::from(moved) * 1000 / ms).min(u128::from(u64::MAX)) as u64,
        };
        let eta = (rate > 0).then(|| Duration::from_secs((total - sent).div_ceil(rate)));
        FileReport {
            sent,
            total,
            rate,
            eta,
        }
    }

    /// `sent 1048576 of 4194304 bytes (25%), 1.0 MiB/s, ETA 3s`.
    pub fn text(&self) -> String {
        let pct = match self.total {
            0 => 100,
            t => u128::from(self.sent) * 100 / u128::from(t),
        };
        format!(
            "sent {} of {} bytes ({pct}%), {}, ETA {}",
            self.sent,
            self.total,
            rate(self.rate as f64),
            eta(self.eta)
        )
    }
}

/// The terminal's status line: `done` of `total` bytes over every file,
/// `files` of them confirmed, `elapsed` since the run started.
pub(super) fn status_line(done: u64, total: u64, files: u64, elapsed: Duration) -> String {
    let total = total.max(done);
    let per_s = done as f64 / elapsed.as_secs_f64().max(0.001);
    let left = (per_s > 0.0).then(|| Duration::from_secs_f64((total - done) as f64 / per_s));
    format!(
        "sent {:.1} of {:.1} MiB ({files} files confirmed), {}, ETA {}",
        mib(done as f64),
        mib(total as f64),
        rate(per_s),
        eta(left)
    )
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn rate(bytes_per_s: f64) -> String {
    format!("{:.1} MiB/s", mib(bytes_per_s))
}

/// `45s`, `12m05s`, `3h07m`; `unknown` while nothing moved.
fn eta(left: Option<Duration>) -> String {
    let Some(left) = left else {
        return "unknown".into();
    };
    let s = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_mode_follows_the_audience() {
        assert_eq!(Mode::pick(true, true), Mode::Terminal);
        assert_eq!(Mode::pick(true, false), Mode::Log);
        assert_eq!(Mode::pick(false, true), Mode::Log);
        assert_eq!(Mode::pick(false, false), Mode::Log);
    }

    #[test]
    fn the_interval_is_ten_seconds_unless_a_test_says_otherwise() {
        assert_eq!(log_every(None), Ok(LOG_EVERY));
        assert_eq!(log_every(Some("250")), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "1s", ""] {
            let e = log_every(Some(bad)).unwrap_err();
            assert!(e.contains(EVERY_ENV) && e.contains("using 10s"), "{e}");
        }
    }

    #[test]
    fn each_file_gets_a_line_every_interval_from_its_start() {
        let t0 = Instant::now();
        let mut p = Progress::new(Mode::Log, LOG_EVERY, t0);
        p.watch(1u32, t0, 0);
        p.watch(2, t0 + 4 * S, 100);
        assert_eq!(p.arm(), Some(t0 + 10 * S));
        assert_eq!(p.arm(), None, "already armed for then");
        let look = |k: u32| Some((k as u64 * 1000, 10_000));
        assert!(p.due_files(t0 + 9 * S, look).is_empty());
        p.fired(t0 + 10 * S);
        let due = p.due_files(t0 + 10 * S, look);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, 1);
        assert_eq!(due[0].1.rate, 100, "1000 bytes in 10 s");
        assert_eq!(p.arm(), Some(t0 + 14 * S));
        p.fired(t0 + 14 * S);
        let due = p.due_files(t0 + 14 * S, look);
        assert_eq!(due.iter().map(|d| d.0).collect::<Vec<_>>(), [2]);
        assert_eq!(due[0].1.rate, 190, "(2000 - 100) bytes in 10 s");
        assert_eq!(p.arm(), Some(t0 + 20 * S));
    }

    #[test]
    fn a_gone_or_finished_file_is_forgotten() {
        let t0 = Instant::now();
        let mut p = Progress::new(Mode::Log, LOG_EVERY, t0);
        p.watch(1u32, t0, 0);
        p.watch(2, t0, 0);
        p.forget(2);
        assert!(p.due_files(t0 + 10 * S, |_| None).is_empty());
        assert_eq!(p.arm(), None, "nothing left to wake for");
    }

    #[test]
    fn the_terminal_redraws_every_second_and_logs_no_files() {
        let t0 = Instant::now();
        let mut p = Progress::new(Mode::Terminal, LOG_EVERY, t0);
        p.watch(1u32, t0, 0);
        assert_eq!(p.arm(), Some(t0 + S));
        assert!(!p.status_due(t0));
        assert!(p.status_due(t0 + S));
        assert!(!p.status_due(t0 + S));
        p.fired(t0 + S);
        assert_eq!(p.arm(), Some(t0 + 2 * S));
        assert!(p.due_files(t0 + 60 * S, |_| Some((1, 1))).is_empty());
        let mut off = Progress::<u32>::default();
        off.watch(1, t0, 0);
        assert_eq!(off.arm(), None);
        assert!(!off.status_due(t0 + 60 * S));
    }

    #[test]
    fn a_report_says_bytes_rate_and_time_left() {
        let r = FileReport::new(1 << 20, 4 << 20, 0, S);
        assert_eq!(
            r.text(),
            "sent 1048576 of 4194304 bytes (25%), 1.0 MiB/s, ETA 3s"
        );
        let stalled = FileReport::new(0, 100, 0, 10 * S);
        assert_eq!(stalled.eta, None);
        assert_eq!(
            stalled.text(),
            "sent 0 of 100 bytes (0%), 0.0 MiB/s, ETA unknown"
        );
        let empty = FileReport::new(0, 0, 0, Duration::ZERO);
        assert_eq!(
            empty.text(),
            "sent 0 of 0 bytes (100%), 0.0 MiB/s, ETA unknown"
        );
        let grew = FileReport::new(200, 100, 0, S);
        assert_eq!((grew.total, grew.eta), (200, Some(Duration::ZERO)));
        let slow = FileReport::new(10, 10 + 100 * 3725, 0, 10 * S);
        assert_eq!(slow.eta, Some(Duration::from_secs(372_500)));
        assert!(slow.text().ends_with("ETA 103h28m"), "{}", slow.text());
    }

    #[test]
    fn times_left_read_as_a_clock() {
        assert_eq!(eta(Some(Duration::from_secs(45))), "45s");
        assert_eq!(eta(Some(Duration::from_millis(44_200))), "45s");
        assert_eq!(eta(Some(Duration::from_secs(725))), "12m05s");
        assert_eq!(eta(Some(Duration::from_secs(11_220))), "3h07m");
        assert_eq!(eta(None), "unknown");
    }

    #[test]
    fn the_status_line_sums_the_run() {
        assert_eq!(
            status_line(3 << 20, 6 << 20, 2, 3 * S),
            "sent 3.0 of 6.0 MiB (2 files confirmed), 1.0 MiB/s, ETA 3s"
        );
        assert_eq!(
            status_line(0, 1 << 20, 0, Duration::ZERO),
            "sent 0.0 of 1.0 MiB (0 files confirmed), 0.0 MiB/s, ETA unknown"
        );
    }
}
