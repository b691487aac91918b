//! Admission: which accepted connections the server keeps.
//!
//! Every connection costs a descriptor (two once its stream has an output
//! of its own), a slot and a little memory, and before this a peer could
//! open as many as it liked: 9,000 idle connections exhausted descriptors,
//! legitimate clients got no greeting and the checkpoint failed with
//! `EMFILE`. The [`Gate`] bounds them:
//!
//! - `max_connections` in total, lowered at start-up to what the
//!   open-files limit allows: three descriptors per connection (socket,
//!   output, and the output's splice descriptor) plus
//!   [`RESERVED_FDS`] for the server's own files (listener, event loop,
//!   signals, io_uring, the splice pipe, the metrics endpoint, and the
//!   checkpoint's temp file, directory and journal). So the server never
//!   runs out of descriptors for a checkpoint commit.
//! - `max_connections_per_address` from one source address, so one host
//!   cannot take every slot.
//! - A refused connection gets one status line instead of the greeting
//!   (`503 Too many connections`, or `... from your address`) and is
//!   closed at once: it holds nothing. Each refusal is counted
//!   (`connections_refused_total` and `limit_hits_total{limit}`) and
//!   logged at most once per address per [`LOG_INTERVAL`].
//! - If `accept` still fails with `EMFILE`/`ENFILE` (other processes,
//!   a limit lowered from outside), the gate gives up the spare
//!   descriptor it holds, accepts and refuses one connection with it, and
//!   takes the spare back: the listener's queue keeps moving, and an
//!   edge-triggered listener is never left with connections it will not
//!   hear about again.
//!
//! The decisions ([`Gate::check`]) are pure; the server does the I/O.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::metrics::server::LimitHit;

/// Descriptors kept for the server's own files, beyond
/// [`FDS_PER_CONNECTION`] per connection.
pub(super) const RESERVED_FDS: u64 = 64;
/// Descriptors one connection may hold: its socket, and for an output of
/// its own the append descriptor and the positional one the splice path
/// writes through.
pub(super) const FDS_PER_CONNECTION: u64 = 3;
/// A refusal is logged at most this often per source address.
pub(super) const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Most addresses remembered for rate-limiting the refusal log.
const MAX_LOGGED: usize = 4096;

/// The connection limits and what counts against them.
#[derive(Debug)]
pub(super) struct Gate {
    /// `max_connections`, lowered to what descriptors allow.
    pub max_total: usize,
    /// Why `max_total` is below `max_connections`, for the start-up log.
    pub lowered: Option<String>,
    max_per_address: usize,
    /// The open-files limit, when known (`max_total` fits within it).
    fd_limit: Option<u64>,
    /// Open connections per source address (entries are removed at 0).
    open: HashMap<IpAddr, usize>,
    /// When a refusal was last logged, per address.
    logged: HashMap<IpAddr, Instant>,
    /// A descriptor held back to accept-and-refuse on `EMFILE`.
    spare: Option<File>,
}

impl Gate {
    /// The limits, with `max_connections` lowered to fit `fd_limit`
    /// descriptors (when known; [`lowered`](Self::lowered) says so).
    pub fn new(limits: &Limits, fd_limit: Option<u64>) -> Gate {
        let mut gate = Gate {
            lowered: None,
            max_total: 0,
            max_per_address: 0,
            fd_limit,
            open: HashMap::new(),
            logged: HashMap::new(),
            spare: open_spare(),
        };
        gate.set_limits(limits);
        gate
    }

    /// Takes new limits (a reload): connections already open stay, new
    /// ones are checked against these.
    pub fn set_limits(&mut self, limits: &Limits) {
        let mut max_total = limits.max_connections;
        self.lowered = None;
        if let Some(fds) = self.fd_limit {
            let fit = usize::try_from(fds.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION)
                .unwrap_or(usize::MAX)
                .max(1);
            if fit < max_total {
                self.lowered = Some(format!(
                    "max_connections is {fit}, not {max_total}: the open-files limit is {fds} ({FDS_PER_CONNECTION} per connection, {RESERVED_FDS} kept for the server's own files)"
                ));
                max_total = fit;
            }
        }
        self.max_total = max_total;
        self.max_per_address = limits.max_connections_per_address;
    }

    /// Whether a new connection from `ip` may be kept while `total` are
    /// open: `None`, or the limit it would pass.
    pub fn check(&self, total: usize, ip: IpAddr) -> Option<LimitHit> {
        if total >= self.max_total {
            return Some(LimitHit::Connections);
        }
        if self.open.get(&ip).copied().unwrap_or(0) >= self.max_per_address {
            return Some(LimitHit::ConnectionsPerAddress);
        }
        None
    }

    /// A connection from `ip` was admitted.
    pub fn opened(&mut self, ip: IpAddr) {
        *self.open.entry(ip).or_default() += 1;
    }

    /// A connection from `ip` was closed.
    pub fn closed(&mut self, ip: IpAddr) {
        if let Some(n) = self.open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&ip);
            }
        }
    }

    /// Open connections from `ip`.
    pub fn from(&self, ip: IpAddr) -> usize {
        self.open.get(&ip).copied().unwrap_or(0)
    }

    /// True when a refusal for `ip` should be logged now (at most once
    /// per [`LOG_INTERVAL`] per address).
    pub fn should_log(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self
            .logged
            .get(&ip)
            .is_some_and(|&at| now < at + LOG_INTERVAL)
        {
            return false;
        }
        if self.logged.len() >= MAX_LOGGED {
            self.logged.retain(|_, at| now < *at + LOG_INTERVAL);
        }
        if self.logged.len() < MAX_LOGGED {
            self.logged.insert(ip, now);
        }
        true
    }

    /// Gives up the spare descriptor for one `accept` (`EMFILE`); false
    /// when there is none to give.
    pub fn release_spare(&mut self) -> bool {
        self.spare.take().is_some()
    }

    /// Takes a spare descriptor back after [`release_spare`](Self::release_spare).
    pub fn restore_spare(&mut self) {
        if self.spare.is_none() {
            self.spare = open_spare();
        }
    }
}

impl super::Server {
    /// Applies `idle_timeout` to every connection (see `conn::idle`) and
    /// says when to sweep again.
    pub(super) fn sweep_idle(&mut self, now: Instant) -> Instant {
        let timeout = self.shared.cfg.limits.idle_timeout;
        for key in self.conns.keys() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let _log = crate::log_scope!(peer = conn.peer);
            if let Some(mux) = &mut conn.mux {
                if mux.idle(now, timeout) {
                    crate::debug!(
                        "{}: multiplexed connection without channels for {:.1}s (idle_timeout); closing",
                        conn.peer,
                        timeout.as_secs_f64()
                    );
                    self.close(key);
                }
                continue;
            }
            if conn.idle(now, timeout, &mut self.shared) {
                self.on_conn_event(key.token(), now);
            }
        }
        now + sweep_interval(timeout)
    }
}

/// How often idle connections are looked for: a quarter of the timeout,
/// between 10 ms and 1 s (a sweep is a pass over the connections, no I/O).
pub(super) fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

/// The line a refused connection gets instead of the greeting.
pub(super) fn refusal(hit: LimitHit) -> &'static str {
    match hit {
        LimitHit::ConnectionsPerAddress => "503 Too many connections from your address\n",
        _ => "503 Too many connections\n",
    }
}

/// Sends `line` to a connection that is about to be dropped: one
/// non-blocking write into an empty socket buffer, so it goes out whole or
/// not at all; nothing is read from the peer.
pub(super) fn refuse(sock: &mut impl Write, line: &str) {
    let _ = sock.write(line.as_bytes());
}

/// True for `accept` errors that mean "out of descriptors".
pub(super) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The log line of a refusal.
pub(super) fn describe(hit: LimitHit, peer: SocketAddr, gate: &Gate) -> String {
    match hit {
        LimitHit::ConnectionsPerAddress => format!(
            "{peer}: refused: {} connections open from {} (max_connections_per_address); not logged again for this address for {}s",
            gate.from(peer.ip()),
            peer.ip(),
            LOG_INTERVAL.as_secs()
        ),
        LimitHit::Descriptors => format!(
            "{peer}: refused: out of descriptors; not logged again for this address for {}s",
            LOG_INTERVAL.as_secs()
        ),
        _ => format!(
            "{peer}: refused: {} connections open (max_connections); not logged again for this address for {}s",
            gate.max_total,
            LOG_INTERVAL.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client tells these lines from other refusals by their text
    /// (and then waits for a slot instead of retrying on its own).
    #[test]
    fn every_refusal_line_is_one_the_client_knows_as_the_connection_limit() {
        use crate::proto::client::{Close, CONNECTION_LIMIT};
        for hit in [LimitHit::Connections, LimitHit::ConnectionsPerAddress] {
            let line = refusal(hit);
            let text = line.strip_prefix("503 ").expect("a 503").trim_end();
            assert!(text.starts_with(CONNECTION_LIMIT), "{line:?}");
            let close = Close::Turned {
                code: 503,
                text: text.into(),
            };
            assert!(close.at_connection_limit(), "{line:?}");
        }
    }

    fn limits(total: usize, per: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_address: per,
            ..Limits::default()
        }
    }

    #[test]
    fn total_and_per_address_limits() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut g = Gate::new(&limits(3, 2), None);
        assert_eq!(g.check(0, a), None);
        g.opened(a);
        g.opened(a);
        assert_eq!(g.check(2, a), Some(LimitHit::ConnectionsPerAddress));
        assert_eq!(g.check(2, b), None);
        g.opened(b);
        assert_eq!(g.check(3, b), Some(LimitHit::Connections));
        g.closed(a);
        assert_eq!(g.check(2, a), None);
        g.closed(a);
        g.closed(b);
        assert!(g.open.is_empty(), "counts go back to nothing");
    }

    #[test]
    fn descriptors_lower_the_total() {
        let g = Gate::new(&limits(16_384, 4096), Some(1024));
        assert_eq!(g.max_total, (1024 - 64) / 3);
        let g = Gate::new(&limits(100, 4096), Some(1 << 20));
        assert_eq!(g.max_total, 100);
        let g = Gate::new(&limits(100, 4096), Some(10));
        assert_eq!(g.max_total, 1, "always at least one");
    }

    #[test]
    fn refusals_are_logged_once_per_address_per_interval() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let mut g = Gate::new(&limits(1, 1), None);
        assert!(g.should_log(a, t0));
        assert!(!g.should_log(a, t0 + Duration::from_secs(59)));
        assert!(g.should_log(a, t0 + LOG_INTERVAL));
        assert!(g.should_log("10.0.0.2".parse().unwrap(), t0));
    }
}
