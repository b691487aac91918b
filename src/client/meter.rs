//! The client's metrics as the loop keeps them: one [`Meter`] per
//! configured `[[stream]]`, and the [`View`] a scrape reads.
//!
//! Counters are updated where the event happens, through a [`Meter`] whose
//! handles were looked up once at start-up: the daemon hands each stream
//! handler the meter of its configured stream (`Ctx::meter`), so counting
//! a read, a send or an acknowledgement is one atomic add, with no label
//! hashing, lock or allocation. Every file a configured stream reads (a
//! glob's matches, the files that follow a rotation, whole files of a
//! directory) counts into the same meter: the `stream` label is the
//! configuration's, never a file's.
//!
//! Gauges are not kept up to date at all: a [`View`] of the daemon
//! computes them when a scrape arrives (`files_open` from the open-files
//! count, `behind_bytes` from one `fstat` per followed file), then the
//! registry is encoded. Between scrapes they cost nothing.

use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::dirsource::DirSource;
use super::stream::Stream;
use crate::metrics::client::StreamLabels;
use crate::metrics::{ClientMetrics, Scrape, Tally};
use crate::reactor::Slots;

/// The metric handles of one configured stream (series with its `stream`
/// label, all created by [`ClientMetrics::new`]).
#[derive(Debug)]
pub(crate) struct Meter {
    label: StreamLabels,
    /// Bytes read from files (whole files sent with `sendfile` count here
    /// when they are sent), re-reads after a broken connection included.
    /// (These three are counted on every send: [`Tally`]s, flushed when a
    /// scrape arrives.)
    pub read: Tally,
    /// Bytes handed to the server's socket, re-sends included, counted
    /// before compression.
    pub sent: Tally,
    /// The same bytes as they went on the wire (after compression).
    pub wire: Tally,
    /// Forward moves of the acknowledged offset, in bytes; through
    /// [`Meter::acknowledged`] only.
    acked: Counter,
    /// Files that stopped being the file at the stream's path while read.
    pub rotations: Counter,
    /// Files found shorter than, or rewritten before, the position read:
    /// sent again from 0.
    pub truncations: Counter,
    /// Truncations that destroyed bytes known to the client.
    pub lost: Counter,
    /// The bytes they destroyed.
    pub lost_bytes: Counter,
    /// Connections opened after a connection of the stream failed or broke.
    pub reconnects: Counter,
    /// Files refused at open (the client-wide, unlabelled counter).
    pub refused: Counter,
    /// Server offsets beyond anything sent (client-wide, unlabelled).
    pub offset_conflicts: Counter,
    /// Bytes possibly on two servers after failovers (client-wide).
    pub failover_duplicates: Counter,
    /// Set at scrape time by [`View`].
    behind: Gauge,
    /// When the server last acknowledged new bytes of this stream; `None`
    /// before the first time.
    last_ack: Option<Instant>,
}

impl Meter {
    /// Looks up the handles of `label`'s series in `metrics` (creating
    /// them if they do not exist yet).
    pub fn new(metrics: &ClientMetrics, label: StreamLabels) -> Meter {
        Meter {
            read: Tally::new(metrics.read_bytes.get_or_create_owned(&label)),
            sent: Tally::new(metrics.sent_bytes.get_or_create_owned(&label)),
            wire: Tally::new(metrics.wire_bytes.get_or_create_owned(&label)),
            acked: metrics.acknowledged_bytes.get_or_create_owned(&label),
            rotations: metrics.rotations.get_or_create_owned(&label),
            truncations: metrics.truncations.get_or_create_owned(&label),
            lost: metrics.losses.get_or_create_owned(&label),
            lost_bytes: metrics.lost_bytes.get_or_create_owned(&label),
            reconnects: metrics.reconnects.get_or_create_owned(&label),
            refused: metrics.refused_files.clone(),
            offset_conflicts: metrics.offset_conflicts.clone(),
            failover_duplicates: metrics.failover_duplicate_bytes.clone(),
            behind: metrics.behind_bytes.get_or_create_owned(&label),
            last_ack: None,
            label,
        }
    }

    /// The acknowledged offset of one of the stream's files moved forward
    /// by `bytes` at `now`.
    pub fn acknowledged(&mut self, bytes: u64, now: Instant) {
        if bytes > 0 {
            self.acked.inc_by(bytes);
            self.last_ack = Some(now);
        }
    }
}

/// The metric handles of one server (series with its `server` label).
#[derive(Debug)]
pub(crate) struct ServerMeter {
    /// Streams that moved away from it.
    pub failovers: Counter,
    /// Stream bytes written to its connections, after compression
    /// (flushed at scrape).
    pub wire: Tally,
    /// Set at scrape time by [`View`].
    streams: Gauge,
    connected: Gauge,
}

impl ServerMeter {
    /// The handles of server `name` (its series created at 0).
    pub fn new(metrics: &mut ClientMetrics, name: &str) -> ServerMeter {
        metrics.add_server(name);
        let l = crate::metrics::client::ServerLabels {
            server: name.to_string(),
        };
        ServerMeter {
            failovers: metrics.server_failovers.get_or_create_owned(&l),
            wire: Tally::new(metrics.server_wire_bytes.get_or_create_owned(&l)),
            streams: metrics.server_streams.get_or_create_owned(&l),
            connected: metrics.server_connected.get_or_create_owned(&l),
        }
    }
}

/// The index of the meter labelled `label` in `meters`, added if missing
/// (two `[[stream]]`s with the same path share one series and one meter).
pub(crate) fn meter_for(
    meters: &mut Vec<Meter>,
    metrics: &ClientMetrics,
    label: StreamLabels,
) -> usize {
    match meters.iter().position(|m| m.label == label) {
        Some(i) => i,
        None => {
            meters.push(Meter::new(metrics, label));
            meters.len() - 1
        }
    }
}

/// What a scrape reads: the daemon's metrics and the state the gauges are
/// derived from, borrowed for the one call.
pub(crate) struct View<'a> {
    pub metrics: &'a mut ClientMetrics,
    pub meters: &'a [Meter],
    pub streams: &'a Slots<Stream>,
    pub sources: &'a [DirSource],
    /// One per server, in the order of [`super::failover::Servers`].
    pub servers: &'a [ServerMeter],
    /// Descriptors of followed files held now.
    pub open_files: usize,
    /// Entries in the loop's timer queue now.
    pub timers: usize,
}

impl Scrape for View<'_> {
    fn scrape(&mut self, now: Instant, out: &mut String) {
        // A scrape may allocate (the encoding does); events never do.
        let mut behind = vec![0u64; self.meters.len()];
        let mut watched = self.streams.len();
        for s in self.streams.values() {
            if let Some(b) = behind.get_mut(s.meter()) {
                *b += s.behind();
            }
        }
        for src in self.sources {
            let (files, bytes) = src.waiting();
            watched += files;
            if let Some(b) = behind.get_mut(src.meter) {
                *b += bytes;
            }
        }
        for (m, bytes) in self.meters.iter().zip(behind) {
            for t in [&m.read, &m.sent, &m.wire] {
                t.flush();
            }
            m.behind.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            if let Some(at) = m.last_ack {
                self.metrics.acknowledged_at(&m.label, at);
            }
        }
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let mut per_server = vec![(0usize, 0usize); self.servers.len()];
        for s in self.streams.values() {
            if let Some((n, c)) = s.server().and_then(|i| per_server.get_mut(i)) {
                *n += 1;
                *c += usize::from(s.connected());
            }
        }
        for (m, (n, c)) in self.servers.iter().zip(per_server) {
            m.wire.flush();
            m.streams.set(gauge(n));
            m.connected.set(gauge(c));
        }
        self.metrics.files_open.set(gauge(self.open_files));
        self.metrics.loop_timers.set(gauge(self.timers));
        self.metrics.files_watched.set(gauge(watched));
        self.metrics.scrape(now, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(s: &str) -> StreamLabels {
        StreamLabels {
            stream: s.to_string(),
        }
    }

    #[test]
    fn meters_count_into_their_streams_series() {
        let t0 = Instant::now();
        let mut metrics = ClientMetrics::with_streams([label("/a"), label("/b/*.log")], t0);
        let mut meters = Vec::new();
        let a = meter_for(&mut meters, &metrics, label("/a"));
        let b = meter_for(&mut meters, &metrics, label("/b/*.log"));
        assert_eq!(meter_for(&mut meters, &metrics, label("/a")), a);
        assert_eq!(meters.len(), 2);
        meters[a].read.add(10);
        meters[a].sent.add(10);
        meters[a].acknowledged(0, t0 + std::time::Duration::from_secs(9));
        meters[a].acknowledged(6, t0 + std::time::Duration::from_secs(1));
        meters[b].rotations.inc();
        let streams = Slots::default();
        let mut view = View {
            metrics: &mut metrics,
            meters: &meters,
            streams: &streams,
            sources: &[],
            servers: &[],
            open_files: 3,
            timers: 5,
        };
        let mut text = String::new();
        view.scrape(t0 + std::time::Duration::from_secs(4), &mut text);
        for want in [
            "loghamster_client_read_bytes_total{stream=\"/a\"} 10\n",
            "loghamster_client_sent_bytes_total{stream=\"/a\"} 10\n",
            "loghamster_client_acknowledged_bytes_total{stream=\"/a\"} 6\n",
            "loghamster_client_rotations_total{stream=\"/b/*.log\"} 1\n",
            "loghamster_client_behind_bytes{stream=\"/a\"} 0\n",
            // The last acknowledgement that moved the offset, not the empty one.
            "loghamster_client_last_ack_age_seconds{stream=\"/a\"} 3.0\n",
            "loghamster_client_last_ack_age_seconds{stream=\"/b/*.log\"} 4.0\n",
            "loghamster_client_files_open 3\n",
            "loghamster_client_loop_timers 5\n",
            "loghamster_client_files_watched 0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
