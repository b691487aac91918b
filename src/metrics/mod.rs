//! Metrics: what each daemon counts, and the tiny HTTP endpoint that
//! serves it to Prometheus (`[prometheus]` in the config).
//!
//! ## Three parts
//! - [`server::ServerMetrics`] and [`client::ClientMetrics`]: the metric
//!   families of `loghamsterd` and `loghamsterc`, registered in a
//!   `prometheus_client` [`Registry`] they own, with typed handles as plain
//!   `pub` fields. The daemon updates a handle where the event happens
//!   (`m.connections_accepted.inc()`); a handle is an `Arc` around atomics,
//!   so an update is a few instructions and never allocates once its label
//!   set exists. Label values are bounded by the configuration (output
//!   names, configured stream paths or patterns, small fixed enums), never
//!   by what a peer sends or by rotated file names.
//! - [`http::MetricsServer`]: an HTTP/1.1 endpoint answering `GET /metrics`
//!   and `GET /health`, one response per connection.
//! - [`Scrape`]: how the endpoint asks the daemon's metrics for a body at
//!   the moment a scrape arrives (so values derived from the clock, such as
//!   "seconds since the last acknowledgement", are computed from the loop's
//!   `now` rather than refreshed on a timer).
//!
//! ## How the endpoint fits the one-thread loop
//! There is no thread and no runtime: the endpoint is one more event source
//! in the daemon's [`crate::reactor::Reactor`]. Its listener, its timer and
//! its connections use tokens whose low 32 bits lie in a fixed range,
//! [`http::TOKENS`], that no fixed token (all below
//! [`crate::reactor::slots::RESERVED`]) and no key of the daemon's own
//! [`crate::reactor::Slots`] can fall into; the connections themselves are
//! a second `Slots` table based in that range. The loop routes by range,
//! before its catch-all arm, in both places it dispatches tokens:
//!
//! ```text
//! // events
//! t if MetricsServer::owns(t) => {
//!     let (registry, timers) = self.reactor.parts();
//!     http.on_event(registry, timers, t, now, &mut self.metrics);
//! }
//! // expired timers
//! t if MetricsServer::owns(t) => {
//!     let (registry, timers) = self.reactor.parts();
//!     http.tick(registry, timers, now);
//! }
//! ```
//!
//! Each connection has a deadline; the endpoint arms [`http::TIMER`] in the
//! daemon's timers itself (through an [`crate::reactor::Armed`], so the
//! heap gets an entry only for an earlier deadline), and a stale or early
//! wake-up is harmless. Handlers follow the reactor's edge-triggered
//! rules: every event is a hint, and each handler drains until
//! `WouldBlock`. A scrape costs one encode of the registry (a few
//! kilobytes, a few allocations) on the loop thread.
//!
//! ## Updating handles on a hot path
//! `Family::get_or_create` hashes the label set and takes a read lock, and
//! returns a guard: use it within one expression and never hold it across
//! another `get_or_create` on the same family (creating a series takes the
//! write lock, and the lock is not reentrant). Where a stream's bytes are
//! counted per read, look the handle up once when the stream starts
//! (`family.get_or_create_owned(&labels)` returns a `Counter`, an `Arc`)
//! and keep it in the stream's state; then each update is one atomic add.
//! Where even that add is too dear (several per send, on every send), a
//! [`Tally`] counts in a plain cell and the counter catches up at scrape.

//! ## Format
//! Bodies are the Prometheus text format 0.0.4 ([`CONTENT_TYPE`] =
//! `text/plain; version=0.0.4; charset=utf-8`), written by
//! `prometheus_client::encoding::prometheus_text`. Every Prometheus
//! version scrapes it, and `promtool check metrics` (which parses this
//! format only) accepts it without a lint warning; the same registry
//! encoded as OpenMetrics fails that check with "no help text" for every
//! counter, because OpenMetrics names a counter family without `_total`.
//! Counters end in `_total`; units are part of the name (`_bytes`,
//! `_seconds`).

pub mod client;
pub mod http;
pub mod jetstream;
pub mod server;

use std::cell::Cell;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

pub use client::ClientMetrics;
pub use http::MetricsServer;
pub use server::ServerMetrics;

/// `Content-Type` of what [`encode`] produces.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Something the endpoint can ask for a metrics body.
pub trait Scrape {
    /// Appends the complete exposition to `out`. `now` is the loop's clock,
    /// for values derived from it.
    fn scrape(&mut self, now: Instant, out: &mut String);
}

impl Scrape for Registry {
    fn scrape(&mut self, _now: Instant, out: &mut String) {
        encode_into(self, out);
    }
}

/// The registry in the Prometheus text format (see [`CONTENT_TYPE`]).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    encode_into(registry, &mut out);
    out
}

/// Appends the registry in the Prometheus text format to `out`.
pub fn encode_into(registry: &Registry, out: &mut String) {
    // Writing into a String cannot fail; an encoder error would be a bug in
    // a metric's encode impl, and a scrape must not take the daemon down.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(out, registry) {
        crate::warn!("encoding metrics failed: {e}");
    }
}

/// A counter that the loop thread bumps without an atomic operation: it
/// adds to a plain cell, and [`Tally::flush`] (at each scrape) hands the
/// sum to the Prometheus counter.
///
/// For the counts made on every send. A `lock add` on x86 is a full
/// barrier: it waits for the loads before it, so in a loop that touches a
/// thousand streams' state it pays for their cache misses. At 1,000 busy
/// files two thirds of `Stream::tick`'s own samples sat on the byte
/// counters' adds.
#[derive(Debug)]
pub struct Tally {
    counter: Counter,
    pending: Cell<u64>,
}

impl Tally {
    pub fn new(counter: Counter) -> Tally {
        Tally {
            counter,
            pending: Cell::new(0),
        }
    }

    /// Counts `n` (seen by the counter at the next [`Tally::flush`]).
    pub fn add(&self, n: u64) {
        self.pending.set(self.pending.get().saturating_add(n));
    }

    /// Adds what was counted since the last flush to the counter.
    pub fn flush(&self) {
        let n = self.pending.take();
        if n > 0 {
            self.counter.inc_by(n);
        }
    }
}

/// The series outlives its handle (a reload that drops a stream's meter):
/// what was counted still reaches it.
impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Parses `[prometheus] listen` (`ip:port`, or `:port` for every IPv4
/// interface): the config's own parser, so what the config accepts is what
/// the endpoint binds.
pub use crate::config::parse_listen;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_reaches_its_counter_at_each_flush_and_only_then() {
        let c = Counter::<u64>::default();
        let t = Tally::new(c.clone());
        t.add(5);
        t.add(0);
        t.add(7);
        assert_eq!(c.get(), 0, "not before the flush");
        t.flush();
        assert_eq!(c.get(), 12);
        t.flush();
        assert_eq!(c.get(), 12, "a second flush adds nothing");
        t.add(1);
        t.flush();
        assert_eq!(c.get(), 13);
        t.add(2);
        drop(t);
        assert_eq!(c.get(), 15, "dropped, it flushes");
    }

    #[test]
    fn listen_accepts_both_config_forms() {
        assert_eq!(parse_listen(":8091"), Some("0.0.0.0:8091".parse().unwrap()));
        assert_eq!(
            parse_listen("127.0.0.1:8091"),
            Some("127.0.0.1:8091".parse().unwrap())
        );
        assert_eq!(parse_listen("[::1]:9"), Some("[::1]:9".parse().unwrap()));
        for bad in ["", ":", ":x", "8091", "localhost:8091", ":70000"] {
            assert_eq!(parse_listen(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encode_writes_prometheus_text() {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        r.register("loghamster_test", "A test counter", c.clone());
        c.inc_by(3);
        let text = encode(&r);
        let want = "# HELP loghamster_test_total A test counter.\n\
                    # TYPE loghamster_test_total counter\n\
                    loghamster_test_total 3\n";
        assert_eq!(text, want);
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }
}
