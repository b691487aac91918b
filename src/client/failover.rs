//! Several servers: which one a stream uses now, and when it moves on.
//!
//! Sans-IO: connections report what happened ([`Route::on_ready`],
//! [`Route::on_failure`]) with the time passed in, and the route answers
//! with a [`Decision`]. The stream's shell (`stream/connection.rs`)
//! connects, logs and counts; this file only decides.
//!
//! The rules:
//! - A stream's servers, best first, are its rendezvous order
//!   (`rendezvous.rs`). A new route (a start, a restart) begins at the
//!   first server in that order that is not known to be failing.
//! - A stream stays on its server while that server works. It moves to
//!   the next server in its order when the server answers `503` (it cannot
//!   take streams: a full disk, an output it cannot open, its connection
//!   limit), or when it has been unreachable or refusing (no `200` since
//!   the first failure) for `failover_after`. The shell retries no later
//!   than that deadline ([`Route::deadline`]), so the move happens on time.
//! - The move skips servers that failed within the last `failover_after`
//!   (any stream's connection counts, see [`Servers`]); when every server
//!   is failing it takes the next one anyway, so streams keep cycling
//!   through all servers until one answers.
//! - No flapping: a moved stream returns to its first choice only when it
//!   must reconnect anyway (its file rotated: a new stream id, see
//!   [`Route::on_new_part`]) or the client restarts, and only if the first
//!   choice has not failed within the last `failover_after`.
//!
//! What a move can duplicate: the bytes the stream had sent to the old
//! server but not seen acknowledged when that server's connection broke
//! ([`Route::on_failure`]'s `in_doubt`). The old server may have written
//! them; the new one gets them again, because the stream resumes from its
//! last *acknowledged* offset. That is never more than the unacknowledged
//! window of one connection, and every move reports it ([`Move::in_doubt`]:
//! a log line and `loghamster_client_failover_duplicate_bytes_total`).
//! Nothing is lost: the file is the buffer, and only acknowledged bytes
//! are skipped.

use std::time::{Duration, Instant};

/// Why a connection did not carry the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connect failed, the handshake timed out or broke, or an established
    /// connection broke: counts towards `failover_after`.
    Unreachable,
    /// The server answered `503`: move at once.
    Unavailable,
}

/// What the health of one server looks like from this client.
#[derive(Debug, Clone, Default)]
struct Health {
    /// The latest failure of any connection to it, cleared by a `200`.
    failed_at: Option<Instant>,
}

/// Every server and what this client's connections saw of it.
#[derive(Debug)]
pub struct Servers {
    /// Connect addresses (`host:port`), in configured order; never empty.
    names: Vec<String>,
    health: Vec<Health>,
    failover_after: Duration,
}

impl Servers {
    /// `names` must not be empty (config guarantees it).
    pub fn new(names: Vec<String>, failover_after: Duration) -> Servers {
        let health = vec![Health::default(); names.len()];
        Servers {
            names,
            health,
            failover_after,
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The connect address of server `i` (`?` for an index out of range).
    pub fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("?", String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Never true (a client has at least one server).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn failover_after(&self) -> Duration {
        self.failover_after
    }

    /// False when a connection to server `i` failed within the last
    /// `failover_after` and none succeeded since.
    pub fn healthy(&self, i: usize, now: Instant) -> bool {
        self.health
            .get(i)
            .and_then(|h| h.failed_at)
            .is_none_or(|t| now >= t + self.failover_after)
    }

    fn ok(&mut self, i: usize) {
        if let Some(h) = self.health.get_mut(i) {
            h.failed_at = None;
        }
    }

    fn failed(&mut self, i: usize, now: Instant) {
        if let Some(h) = self.health.get_mut(i) {
            h.failed_at = Some(now);
        }
    }
}

/// A stream's place among the servers.
#[derive(Debug, Clone)]
pub struct Route {
    /// Server indices in the stream's rendezvous order; never empty.
    order: Vec<usize>,
    /// Position in `order` of the server the stream uses now.
    at: usize,
    /// Since when the current server fails this stream (no `200` since).
    failing_since: Option<Instant>,
    /// Bytes sent to the current server and not acknowledged when its
    /// connection broke (it may hold them).
    in_doubt: u64,
}

/// A stream moves from one server to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: usize,
    pub to: usize,
    pub why: Failure,
    /// How long `from` had failed the stream.
    pub failing_for: Duration,
    /// At most this many bytes may now be on both servers.
    pub in_doubt: u64,
}

/// What the stream does after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Retry the same server, no later than `by` (when the failover is
    /// due).
    Stay { by: Option<Instant> },
    /// Use another server from now on.
    Move(Move),
}

impl Route {
    /// A route over `order` (indices into `servers`, best first; an empty
    /// order means server 0), starting at the first server not known to
    /// be failing.
    pub fn new(mut order: Vec<usize>, servers: &Servers, now: Instant) -> Route {
        if order.is_empty() {
            order.push(0);
        }
        let at = (0..order.len())
            .find(|&p| servers.healthy(order[p], now))
            .unwrap_or(0);
        Route {
            order,
            at,
            failing_since: None,
            in_doubt: 0,
        }
    }

    /// The server the stream uses now.
    pub fn server(&self) -> usize {
        self.order[self.at]
    }

    /// True while the stream is on another server than its first choice.
    pub fn moved(&self) -> bool {
        self.at != 0
    }

    /// The server answered `200`: it works.
    pub fn on_ready(&mut self, servers: &mut Servers) {
        servers.ok(self.server());
        self.failing_since = None;
        self.in_doubt = 0;
    }

    /// A connection to the current server failed (`why`), with `in_doubt`
    /// bytes sent on it and not acknowledged.
    pub fn on_failure(
        &mut self,
        servers: &mut Servers,
        why: Failure,
        in_doubt: u64,
        now: Instant,
    ) -> Decision {
        let from = self.server();
        servers.failed(from, now);
        self.in_doubt = self.in_doubt.max(in_doubt);
        let since = *self.failing_since.get_or_insert(now);
        let due = since + servers.failover_after;
        if self.order.len() < 2 || (why != Failure::Unavailable && now < due) {
            return Decision::Stay {
                by: (self.order.len() > 1).then_some(due),
            };
        }
        let n = self.order.len();
        let next = (1..n)
            .map(|k| (self.at + k) % n)
            .find(|&p| servers.healthy(self.order[p], now))
            .unwrap_or((self.at + 1) % n);
        self.at = next;
        let m = Move {
            from,
            to: self.server(),
            why,
            failing_for: now.saturating_duration_since(since),
            in_doubt: std::mem::take(&mut self.in_doubt),
        };
        self.failing_since = None;
        Decision::Move(m)
    }

    /// When a failover is due if the current server keeps failing.
    pub fn deadline(&self, failover_after: Duration) -> Option<Instant> {
        (self.order.len() > 1)
            .then_some(self.failing_since?)
            .map(|t| t + failover_after)
    }

    /// The stream must reconnect anyway (its file rotated: a new part
    /// starts): a moved stream returns to its first choice if that server
    /// has not failed lately. Returns the `(from, to)` of such a return.
    pub fn on_new_part(&mut self, servers: &Servers, now: Instant) -> Option<(usize, usize)> {
        if self.at == 0 || !servers.healthy(self.order[0], now) {
            return None;
        }
        let from = self.server();
        self.at = 0;
        self.failing_since = None;
        self.in_doubt = 0;
        Some((from, self.server()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(10);

    fn servers(n: usize) -> Servers {
        Servers::new((0..n).map(|i| format!("log{i}:8901")).collect(), AFTER)
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    /// Scripted: a server that refuses connections is kept until
    /// `failover_after` passed since the first failure, then the stream
    /// moves to its next server, carrying the bytes in doubt.
    #[test]
    fn unreachable_moves_after_failover_after() {
        let t0 = Instant::now();
        let mut s = servers(3);
        let mut r = Route::new(vec![2, 0, 1], &s, t0);
        assert_eq!(r.server(), 2);
        r.on_ready(&mut s);
        // The connection breaks with 700 bytes unacknowledged.
        let d = r.on_failure(&mut s, Failure::Unreachable, 700, t0);
        assert_eq!(
            d,
            Decision::Stay {
                by: Some(secs(t0, 10))
            }
        );
        assert_eq!(r.deadline(AFTER), Some(secs(t0, 10)));
        let d = r.on_failure(&mut s, Failure::Unreachable, 0, secs(t0, 4));
        assert_eq!(
            d,
            Decision::Stay {
                by: Some(secs(t0, 10))
            }
        );
        let d = r.on_failure(&mut s, Failure::Unreachable, 0, secs(t0, 10));
        let want = Move {
            from: 2,
            to: 0,
            why: Failure::Unreachable,
            failing_for: AFTER,
            in_doubt: 700,
        };
        assert_eq!(d, Decision::Move(want));
        assert_eq!((r.server(), r.moved(), r.deadline(AFTER)), (0, true, None));
    }

    /// A `200` in between resets the clock: short outages never move.
    #[test]
    fn a_success_resets_the_failover_clock() {
        let t0 = Instant::now();
        let mut s = servers(2);
        let mut r = Route::new(vec![0, 1], &s, t0);
        for k in 0..5 {
            let d = r.on_failure(&mut s, Failure::Unreachable, 10, secs(t0, 9 * k));
            assert!(matches!(d, Decision::Stay { .. }), "{d:?}");
            r.on_ready(&mut s);
        }
        assert_eq!(r.server(), 0);
    }

    #[test]
    fn a_503_moves_at_once_and_skips_failing_servers() {
        let t0 = Instant::now();
        let mut s = servers(3);
        let mut other = Route::new(vec![1, 2, 0], &s, t0);
        // Server 1 just failed for another stream.
        other.on_failure(&mut s, Failure::Unreachable, 0, t0);
        let mut r = Route::new(vec![0, 1, 2], &s, t0);
        let d = r.on_failure(&mut s, Failure::Unavailable, 0, secs(t0, 1));
        assert!(
            matches!(d, Decision::Move(Move { from: 0, to: 2, .. })),
            "{d:?}"
        );
        // A new route does not start on a failing server either.
        let fresh = Route::new(vec![0, 1, 2], &s, secs(t0, 2));
        assert_eq!(fresh.server(), 2);
    }

    /// All servers down: the stream keeps cycling through them, one
    /// `failover_after` each, until one answers.
    #[test]
    fn all_down_cycles_through_every_server() {
        let t0 = Instant::now();
        let mut s = servers(3);
        let mut r = Route::new(vec![1, 0, 2], &s, t0);
        let mut seen = vec![r.server()];
        let mut now = t0;
        for _ in 0..6 {
            loop {
                now += Duration::from_secs(3);
                if let Decision::Move(m) = r.on_failure(&mut s, Failure::Unreachable, 0, now) {
                    seen.push(m.to);
                    break;
                }
            }
        }
        assert_eq!(seen, vec![1, 0, 2, 1, 0, 2, 1]);
        r.on_ready(&mut s);
        assert!(s.healthy(r.server(), now));
    }

    /// A moved stream does not flap back when its first choice recovers;
    /// it returns only at a new part, and only to a healthy server.
    #[test]
    fn returns_to_the_first_choice_only_at_a_new_part_when_healthy() {
        let t0 = Instant::now();
        let mut s = servers(2);
        let mut r = Route::new(vec![0, 1], &s, t0);
        r.on_failure(&mut s, Failure::Unavailable, 0, t0);
        assert_eq!(r.server(), 1);
        r.on_ready(&mut s);
        // Server 0 failed just now: a rotation keeps the stream where it is.
        assert_eq!(r.on_new_part(&s, secs(t0, 1)), None);
        // Later, and with no failure since: the rotation brings it home.
        assert_eq!(r.on_new_part(&s, secs(t0, 11)), Some((1, 0)));
        assert!(!r.moved());
        assert_eq!(r.on_new_part(&s, secs(t0, 12)), None);
    }

    #[test]
    fn one_server_never_moves() {
        let t0 = Instant::now();
        let mut s = servers(1);
        let mut r = Route::new(vec![0], &s, t0);
        for why in [Failure::Unavailable, Failure::Unreachable] {
            let d = r.on_failure(&mut s, why, 5, secs(t0, 100));
            assert_eq!(d, Decision::Stay { by: None });
        }
        assert_eq!(r.deadline(AFTER), None);
        let empty = Route::new(Vec::new(), &s, t0);
        assert_eq!(empty.server(), 0);
    }
}
