//! What a daemon tells its service manager: ready, stopping, and that its
//! loop still turns (see [`sys::notify`](super::sys::notify) for the wire).
//!
//! The watchdog is a timer of the daemon's own loop: the daemon schedules
//! [`Supervisor::first_ping`] under its watchdog token and, each time that
//! fires, calls [`Supervisor::ping`] and schedules what it returns. A loop
//! stuck in one handler runs no timers, sends no `WATCHDOG=1`, and systemd
//! (`WatchdogSec=`) restarts the service. Without a manager every call is a
//! no-op.

use std::time::Instant;

use super::sys::notify::Notifier;

#[derive(Debug, Default)]
pub struct Supervisor {
    notifier: Option<Notifier>,
    /// A send failed once and was logged; later failures are silent.
    failed: bool,
}

impl Supervisor {
    /// The manager named by `$NOTIFY_SOCKET`, if any. A name that cannot be
    /// used is logged (systemd will then time the start out, and the log
    /// says why).
    pub fn from_env() -> Supervisor {
        match Notifier::from_env() {
            Ok(notifier) => Supervisor {
                notifier,
                failed: false,
            },
            Err(e) => {
                crate::warn!("cannot notify the service manager: {e}");
                Supervisor::default()
            }
        }
    }

    /// The daemon serves: `READY=1` with a one-line status.
    pub fn ready(&mut self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A clean stop began.
    pub fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// When the first `WATCHDOG=1` is due (`None`: no watchdog).
    pub fn first_ping(&self, now: Instant) -> Option<Instant> {
        let every = self.notifier.as_ref()?.watchdog_interval()?;
        Some(now + every)
    }

    /// Sends `WATCHDOG=1`; returns when the next one is due.
    pub fn ping(&mut self, now: Instant) -> Option<Instant> {
        self.send("WATCHDOG=1");
        self.first_ping(now)
    }

    fn send(&mut self, message: &str) {
        let Some(n) = &self.notifier else { return };
        if let Err(e) = n.send(message) {
            if !std::mem::replace(&mut self.failed, true) {
                crate::warn!("cannot notify the service manager: {e}");
            }
        }
    }
}
