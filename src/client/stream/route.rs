//! The stream's side of several servers: which server it connects to,
//! what a failed connection means for that choice, and the log line and
//! metrics of a move. The decisions are [`Route`]'s (`client/failover.rs`,
//! sans-IO); the order is `client/rendezvous.rs`.
//!
//! With several servers every INIT carries `part_offset:<acked>`: the
//! stream's bytes before it are acknowledged, by this server or another,
//! so a server that holds less of the stream (it was elsewhere meanwhile)
//! starts it there instead of asking for them again (docs/PROTOCOL.md).

use std::time::Duration;

use super::{Ctx, Stream};
use crate::client::failover::{Decision, Failure, Route};
use crate::client::link::{Close, Phase};
use crate::client::rendezvous;

impl Stream {
    /// The server (index into `ctx.servers`) the next connection goes to.
    /// The route is made at the first connect; a new part (a new stream
    /// id: rotation, truncation) may bring a moved stream home.
    pub(super) fn choose_server(&mut self, ctx: &mut Ctx<'_>) -> usize {
        let part = self.tail.stream_id();
        let tail = &self.tail;
        let route = self.route.get_or_insert_with(|| {
            let path = tail.path().as_os_str().as_encoded_bytes();
            let order = rendezvous::order(ctx.servers.names(), &ctx.settings.hostname, path);
            Route::new(order, ctx.servers, ctx.now)
        });
        if self.route_part.is_some() && self.route_part != part {
            if let Some((from, to)) = route.on_new_part(ctx.servers, ctx.now) {
                crate::info!(
                    "{}: a new part starts; back from server {} on its first choice {}",
                    tail.path().display(),
                    ctx.servers.name(from),
                    ctx.servers.name(to)
                );
            }
        }
        self.route_part = part;
        route.server()
    }

    /// The connect address of the stream's server (the first server before
    /// its first connect).
    pub(super) fn server_name<'c>(&self, ctx: &'c Ctx<'_>) -> &'c str {
        ctx.servers.name(self.server().unwrap_or(0))
    }

    /// `part_offset` for the INIT: the acknowledged offset, with several
    /// servers only.
    pub(super) fn part_offset(&self, ctx: &Ctx<'_>) -> Option<u64> {
        (ctx.servers.len() > 1).then(|| self.tail.acked())
    }

    /// The connection failed (`why`, logged); with several servers,
    /// `failure` may move the stream.
    pub(super) fn link_failed(&mut self, ctx: &mut Ctx<'_>, why: String, failure: Option<Failure>) {
        let in_doubt = match self.link.as_ref().map(|l| l.phase) {
            Some(Phase::Up | Phase::Finishing) => {
                self.tail.sent().saturating_sub(self.tail.acked())
            }
            _ => 0,
        };
        self.drop_link(ctx, Some(why));
        if let Some(f) = failure.filter(|_| !self.stopping) {
            self.after_failure(ctx, f, in_doubt);
        }
    }

    /// Tells the route a connection failed; on a move, logs it, counts it,
    /// and connects to the new server at once.
    pub(super) fn after_failure(&mut self, ctx: &mut Ctx<'_>, why: Failure, in_doubt: u64) {
        let Some(route) = &mut self.route else {
            return;
        };
        match route.on_failure(ctx.servers, why, in_doubt, ctx.now) {
            Decision::Stay { by: None } => {}
            Decision::Stay { by: Some(by) } => {
                self.retry_at = Some(self.retry_at.map_or(by, |t| t.min(by)));
            }
            Decision::Move(m) => {
                if let Some(sm) = ctx.server_meters.get(m.from) {
                    sm.failovers.inc();
                }
                ctx.meter.failover_duplicates.inc_by(m.in_doubt);
                let what = match m.why {
                    Failure::Unavailable => "answered 503".to_string(),
                    Failure::Unreachable => format!(
                        "unreachable or refusing for {:.1}s",
                        m.failing_for.as_secs_f64()
                    ),
                };
                crate::warn!(
                    "{}: stream moves from server {} to server {} ({} {what}); resuming from the acknowledged offset {}; at most {} bytes sent to {} but not acknowledged may be on both",
                    self.path().display(),
                    ctx.servers.name(m.from),
                    ctx.servers.name(m.to),
                    ctx.servers.name(m.from),
                    self.tail.acked(),
                    m.in_doubt,
                    ctx.servers.name(m.from),
                );
                self.retry_at = None;
                self.backoff = Duration::ZERO;
            }
        }
    }

    /// Counts the stream bytes the connection wrote since the last call,
    /// for the stream and for its server.
    pub(super) fn count_wire(&mut self, ctx: &mut Ctx<'_>) {
        let Some(link) = &mut self.link else {
            return;
        };
        let n = link.take_wire_bytes();
        ctx.meter.wire.add(n);
        if let Some(sm) = self
            .route
            .as_ref()
            .and_then(|r| ctx.server_meters.get(r.server()))
        {
            sm.wire.add(n);
        }
    }
}

/// What a closed connection means for the stream's server: `503` moves at
/// once, a server-side failure counts towards `failover_after`, the
/// client's own faults (`4xx`) and clean ends do not count.
pub(super) fn failure_of(close: &Close) -> Option<Failure> {
    match close {
        Close::Refused { code, .. } | Close::Turned { code, .. } | Close::Ended { code, .. } => {
            match code {
                503 => Some(Failure::Unavailable),
                500.. => Some(Failure::Unreachable),
                _ => None,
            }
        }
        Close::Finished
        | Close::Abandoned
        | Close::CodecRefused { .. }
        | Close::EncoderFailed { .. } => None,
        _ => Some(Failure::Unreachable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_map_to_failures() {
        let refused = |code| Close::Refused {
            code,
            text: String::new(),
        };
        assert_eq!(failure_of(&refused(503)), Some(Failure::Unavailable));
        assert_eq!(failure_of(&refused(500)), Some(Failure::Unreachable));
        assert_eq!(failure_of(&refused(403)), None);
        let turned = Close::Turned {
            code: 503,
            text: "Too many connections".into(),
        };
        assert_eq!(failure_of(&turned), Some(Failure::Unavailable));
        assert_eq!(
            failure_of(&Close::ServerClosed(Phase::Up)),
            Some(Failure::Unreachable)
        );
        assert_eq!(failure_of(&Close::Finished), None);
        assert_eq!(failure_of(&Close::Abandoned), None);
    }
}
