//! The service manager's notification protocol (`sd_notify(3)`), in the few
//! lines it takes: one datagram of `KEY=VALUE` lines to the unix socket
//! named by `$NOTIFY_SOCKET`, a path or, when it starts with `@`, a name in
//! the abstract namespace.
//!
//! A daemon started by systemd with `Type=notify` says `READY=1` once it
//! serves, `STOPPING=1` when a clean stop begins, and, with `WatchdogSec=`,
//! `WATCHDOG=1` at least every `$WATCHDOG_USEC` microseconds (we send at
//! half of it, from a timer of the daemon's loop, so a loop that hangs stops
//! pinging and systemd restarts it). Without `$NOTIFY_SOCKET` nothing is
//! sent and nothing fails: the same binary runs by hand, under another
//! supervisor, or as `Type=exec`.
//!
//! Sending never blocks the loop (the socket is non-blocking) and never
//! stops the daemon: a manager that is gone or whose queue is full costs a
//! lost notification, which the next one replaces.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go; `None` from [`Notifier::from_env`] when the
/// daemon was not started by a manager that listens.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// Half of `$WATCHDOG_USEC` when the watchdog is on for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    /// `Ok(None)`: no socket named. An unusable name (relative, empty) is
    /// an error, so the daemon can say why systemd will not see it ready.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let addr = socket_addr(name)?;
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Ok(Some(Notifier {
            sock,
            addr,
            watchdog,
        }))
    }

    /// How often to send `WATCHDOG=1` (`None`: the watchdog is off).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification, e.g. `"READY=1\nSTATUS=listening"`.
    pub fn send(&self, message: &str) -> io::Result<()> {
        match super::retry(|| self.sock.send_to_addr(message.as_bytes(), &self.addr)) {
            Ok(_) => Ok(()),
            // The manager is busy: this one is lost, the next replaces it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `$NOTIFY_SOCKET` as an address: `@name` is abstract, anything else must
/// be an absolute path.
fn socket_addr(name: OsString) -> io::Result<SocketAddr> {
    let bytes = name.as_encoded_bytes();
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={name:?}: {why}"),
        )
    };
    match bytes.first() {
        Some(b'@') if bytes.len() > 1 => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(&name)),
        _ => Err(invalid("expected an absolute path or @name")),
    }
}

/// Half of `WATCHDOG_USEC`, when it is a positive number and
/// `WATCHDOG_PID` (if set) names this process.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_runs_at_half_its_timeout_for_this_process_only() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
        assert_eq!(watchdog_interval(Some("30000000"), Some("x"), 7), None);
    }

    #[test]
    fn socket_names_are_paths_or_abstract() {
        let a = socket_addr("@sd/notify".into()).unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"sd/notify"[..]));
        let p = socket_addr("/run/systemd/notify".into()).unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        for bad in ["", "@", "relative/sock"] {
            let e = socket_addr(bad.into()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn a_notification_arrives_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: SocketAddr::from_pathname(&path).unwrap(),
            watchdog: None,
        };
        n.send("READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 64];
        let got = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"READY=1\nSTATUS=up");
    }
}
