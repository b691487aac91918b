//! What `loghamsterc` counts.
//!
//! Every family is named `loghamster_client_*`. The `stream` label is the
//! configured `[[stream]]` as written: its `path` (a glob stays a glob), or
//! `directory/filepattern` for a directory stream (see
//! [`StreamLabels::for_config`]). It is never the name of one rotated or
//! matched file, so the number of series is the number of configured
//! streams however many files they follow over time.
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `loghamster_client_files_watched` | gauge | paths followed (configured, parked or not there yet, glob matches), whole files being sent, queued or waiting to be closed |
//! | `loghamster_client_files_open` | gauge | file descriptors open on followed files |
//! | `loghamster_client_read_bytes_total{stream}` | counter | bytes read from files |
//! | `loghamster_client_sent_bytes_total{stream}` | counter | bytes written to the server (before compression) |
//! | `loghamster_client_wire_bytes_total{stream}` | counter | stream bytes on the wire (after compression) |
//! | `loghamster_client_acknowledged_bytes_total{stream}` | counter | bytes the server acknowledged |
//! | `loghamster_client_behind_bytes{stream}` | gauge | file size − acknowledged offset |
//! | `loghamster_client_rotations_total{stream}` | counter | files rotated away (renamed, deleted, copytruncate) while read |
//! | `loghamster_client_truncations_total{stream}` | counter | files truncated or rewritten in place, sent again from 0 |
//! | `loghamster_client_losses_total{stream}` | counter | truncations that destroyed bytes the client knew of: read but not sent yet, or seen in the file but not read, with no copy holding them (each is also an ERROR line with the offsets); never counts the new content, which is sent |
//! | `loghamster_client_lost_bytes_total{stream}` | counter | the bytes those losses destroyed |
//! | `loghamster_client_reconnects_total{stream}` | counter | connections opened after one failed or broke |
//! | `loghamster_client_last_ack_age_seconds{stream}` | gauge | seconds since the server last acknowledged new bytes (since start before the first) |
//! | `loghamster_client_inotify_overflows_total` | counter | times the kernel's inotify queue overflowed: events were lost, every followed path and directory source was looked at again (each is also a WARN line) |
//! | `loghamster_client_rate_limit_delay_seconds_total` | counter | time sending was held back by a rate limit |
//! | `loghamster_client_refused_files_total` | counter | files not opened because they are not regular files, or symlinks while `follow_symlinks = false` (each is also one WARN line, once per path until something else is put there), or because their path holds a control character the server would refuse (one WARN, no connection) |
//! | `loghamster_client_server_streams{server}` | gauge | streams assigned to the server now (several servers: by rendezvous hashing, or moved there by a failover) |
//! | `loghamster_client_server_connected{server}` | gauge | connections open to the server |
//! | `loghamster_client_server_failovers_total{server}` | counter | streams that moved away from the server (unreachable for `failover_after`, or `503`; each is also one WARN line naming the stream and both servers) |
//! | `loghamster_client_server_wire_bytes_total{server}` | counter | stream bytes written to the server's connections (after compression) |
//! | `loghamster_client_failover_duplicate_bytes_total` | counter | bytes that were sent to a server but not acknowledged when its stream moved away: at most this many may be on both servers |
//! | `loghamster_client_state_write_failures_total` | counter | attempts to write the state file that failed (the first of a run, and each new reason, is also an ERROR line; attempts back off up to a minute, positions stay in memory) |
//! | `loghamster_client_offset_conflicts_total` | counter | times a server's `200` named an offset beyond anything this client sent for the stream (each is also an ERROR line; the rest goes out under a new stream id) |

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::config::{Source, StreamConfig};

/// Labels of the per-stream families.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StreamLabels {
    /// The configured stream: `path` as written, or
    /// `directory/filepattern`. Non-UTF-8 bytes are replaced by U+FFFD.
    pub stream: String,
}

impl StreamLabels {
    /// The label of a configured stream.
    pub fn for_config(cfg: &StreamConfig) -> StreamLabels {
        StreamLabels::for_source(&cfg.source)
    }

    /// The label of a stream's source.
    pub fn for_source(source: &Source) -> StreamLabels {
        let stream = match source {
            Source::Path(p) => p.to_string_lossy().into_owned(),
            Source::Directory {
                dir, pattern_text, ..
            } => dir.join(pattern_text).to_string_lossy().into_owned(),
        };
        StreamLabels { stream }
    }
}

/// Labels of the per-server families.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServerLabels {
    /// The server as the client connects to it: `host:port` as
    /// configured, or `address:port` with `resolve_all`.
    pub server: String,
}

/// A gauge of seconds.
type SecondsGauge = Gauge<f64, AtomicU64>;

/// The metrics of `loghamsterc`: handles to update, and the registry that
/// holds them (read by [`super::Scrape`]).
#[derive(Debug)]
pub struct ClientMetrics {
    registry: Registry,
    /// When each stream was last acknowledged (or registered): the source
    /// of `last_ack_age` at scrape time.
    last_ack: HashMap<StreamLabels, Instant>,
    /// Files the streams currently follow or wait for.
    pub files_watched: Gauge,
    /// File descriptors open on followed files (a draining rotated file
    /// counts until it is closed).
    pub files_open: Gauge,
    /// Wake-ups pending in the event loop's timer queue: a few per stream
    /// at most, whatever the traffic (growth with it would be a leak).
    pub loop_timers: Gauge,
    /// Bytes read from files, by stream.
    pub read_bytes: Family<StreamLabels, Counter>,
    /// Bytes written to the server, by stream, counted before compression.
    pub sent_bytes: Family<StreamLabels, Counter>,
    /// Stream bytes written to sockets, by stream, after compression
    /// (equal to `sent_bytes` for uncompressed streams).
    pub wire_bytes: Family<StreamLabels, Counter>,
    /// Bytes the server acknowledged, by stream. Prefer
    /// [`ClientMetrics::acknowledged`], which also resets the ack age.
    pub acknowledged_bytes: Family<StreamLabels, Counter>,
    /// File size − acknowledged offset, by stream (summed over the files a
    /// pattern or directory stream follows).
    pub behind_bytes: Family<StreamLabels, Gauge>,
    /// Rotations seen, by stream.
    pub rotations: Family<StreamLabels, Counter>,
    /// Truncations seen, by stream.
    pub truncations: Family<StreamLabels, Counter>,
    /// Truncations that destroyed bytes the client knew of, by stream.
    pub losses: Family<StreamLabels, Counter>,
    /// The bytes those truncations destroyed, by stream.
    pub lost_bytes: Family<StreamLabels, Counter>,
    /// Connections opened after a connection failed or broke, by stream.
    pub reconnects: Family<StreamLabels, Counter>,
    /// Seconds since the last acknowledgement, by stream; computed at
    /// scrape time from [`ClientMetrics::acknowledged`] and
    /// [`ClientMetrics::acknowledged_at`] calls.
    pub last_ack_age: Family<StreamLabels, SecondsGauge>,
    /// Seconds sending was held back by a rate limit (for the rate limiter).
    pub rate_limit_delay: Counter<f64, AtomicU64>,
    /// inotify queue overflows.
    pub inotify_overflows: Counter,
    /// Files refused at open (symlinks not followed, not regular files).
    pub refused_files: Counter,
    /// Server offsets beyond anything sent for the stream.
    pub offset_conflicts: Counter,
    /// Failed attempts to write the state file.
    pub state_write_failures: Counter,
    /// Streams assigned to each server (set at scrape time).
    pub server_streams: Family<ServerLabels, Gauge>,
    /// Connections open to each server (set at scrape time).
    pub server_connected: Family<ServerLabels, Gauge>,
    /// Streams that moved away from each server.
    pub server_failovers: Family<ServerLabels, Counter>,
    /// Stream bytes written to each server, after compression.
    pub server_wire_bytes: Family<ServerLabels, Counter>,
    /// Bytes possibly on two servers after failovers.
    pub failover_duplicate_bytes: Counter,
}

impl ClientMetrics {
    /// Registers every family and creates the series of every configured
    /// stream; ack ages count from `now`.
    pub fn new(streams: &[StreamConfig], now: Instant) -> ClientMetrics {
        ClientMetrics::with_streams(streams.iter().map(StreamLabels::for_config), now)
    }

    /// Like [`ClientMetrics::new`], with the labels given directly.
    pub fn with_streams(
        streams: impl IntoIterator<Item = StreamLabels>,
        now: Instant,
    ) -> ClientMetrics {
        let mut m = ClientMetrics {
            registry: Registry::with_prefix("loghamster_client"),
            last_ack: HashMap::new(),
            files_watched: Gauge::default(),
            files_open: Gauge::default(),
            loop_timers: Gauge::default(),
            read_bytes: Family::default(),
            sent_bytes: Family::default(),
            wire_bytes: Family::default(),
            acknowledged_bytes: Family::default(),
            behind_bytes: Family::default(),
            rotations: Family::default(),
            truncations: Family::default(),
            losses: Family::default(),
            lost_bytes: Family::default(),
            reconnects: Family::default(),
            last_ack_age: Family::default(),
            rate_limit_delay: Counter::default(),
            inotify_overflows: Counter::default(),
            refused_files: Counter::default(),
            offset_conflicts: Counter::default(),
            state_write_failures: Counter::default(),
            server_streams: Family::default(),
            server_connected: Family::default(),
            server_failovers: Family::default(),
            server_wire_bytes: Family::default(),
            failover_duplicate_bytes: Counter::default(),
        };
        m.register_all();
        for l in streams {
            m.add_stream(l, now);
        }
        m
    }

    fn register_all(&mut self) {
        let r = &mut self.registry;
        r.register(
            "files_watched",
            "Files the streams currently follow or wait for",
            self.files_watched.clone(),
        );
        r.register(
            "files_open",
            "File descriptors open on followed files",
            self.files_open.clone(),
        );
        r.register(
            "loop_timers",
            "Wake-ups pending in the event loop's timer queue (a few per stream at most)",
            self.loop_timers.clone(),
        );
        let bytes = [
            ("read", "Bytes read from files", &self.read_bytes),
            (
                "sent",
                "Bytes written to the server, before compression",
                &self.sent_bytes,
            ),
            (
                "wire",
                "Stream bytes on the wire, after compression",
                &self.wire_bytes,
            ),
            (
                "acknowledged",
                "Bytes the server acknowledged",
                &self.acknowledged_bytes,
            ),
            (
                "lost",
                "Bytes a truncation destroyed before they were sent (read and not sent, or seen and not read; no copy)",
                &self.lost_bytes,
            ),
        ];
        for (name, help, family) in bytes {
            r.register_with_unit(name, help, Unit::Bytes, family.clone());
        }
        r.register_with_unit(
            "behind",
            "File size minus acknowledged offset",
            Unit::Bytes,
            self.behind_bytes.clone(),
        );
        let counts = [
            ("rotations", "Rotations seen", &self.rotations),
            ("truncations", "Truncations seen", &self.truncations),
            (
                "losses",
                "Truncations that destroyed bytes read but not sent, or seen but not read (no copy)",
                &self.losses,
            ),
            (
                "reconnects",
                "Connections opened after a connection failed or broke",
                &self.reconnects,
            ),
        ];
        for (name, help, family) in counts {
            r.register(name, help, family.clone());
        }
        r.register_with_unit(
            "last_ack_age",
            "Seconds since the server last acknowledged bytes of the stream (since start before the first)",
            Unit::Seconds,
            self.last_ack_age.clone(),
        );
        r.register_with_unit(
            "rate_limit_delay",
            "Time sending was held back by a rate limit",
            Unit::Seconds,
            self.rate_limit_delay.clone(),
        );
        r.register(
            "inotify_overflows",
            "Times the inotify queue overflowed (events lost; every file looked at again)",
            self.inotify_overflows.clone(),
        );
        r.register(
            "refused_files",
            "Files not opened: symlinks (follow_symlinks = false) or not regular files",
            self.refused_files.clone(),
        );
        r.register(
            "offset_conflicts",
            "Server offsets beyond anything this client sent for the stream",
            self.offset_conflicts.clone(),
        );
        r.register(
            "state_write_failures",
            "Attempts to write the state file that failed (positions stay in memory)",
            self.state_write_failures.clone(),
        );
        self.register_servers();
    }

    fn register_servers(&mut self) {
        let r = &mut self.registry;
        r.register(
            "server_streams",
            "Streams assigned to the server",
            self.server_streams.clone(),
        );
        r.register(
            "server_connected",
            "Connections open to the server",
            self.server_connected.clone(),
        );
        r.register(
            "server_failovers",
            "Streams that moved away from the server (unreachable for failover_after, or 503)",
            self.server_failovers.clone(),
        );
        r.register_with_unit(
            "server_wire",
            "Stream bytes written to the server, after compression",
            Unit::Bytes,
            self.server_wire_bytes.clone(),
        );
        r.register_with_unit(
            "failover_duplicate",
            "Bytes sent but not acknowledged when a stream moved to another server (at most this many are on both)",
            Unit::Bytes,
            self.failover_duplicate_bytes.clone(),
        );
    }

    /// Creates the series of server `name` (all 0).
    pub fn add_server(&mut self, name: &str) {
        let l = ServerLabels {
            server: name.to_string(),
        };
        drop(self.server_streams.get_or_create(&l));
        drop(self.server_connected.get_or_create(&l));
        drop(self.server_failovers.get_or_create(&l));
        drop(self.server_wire_bytes.get_or_create(&l));
    }

    /// Creates a stream's series (all 0) and starts its ack age at `now`.
    /// Idempotent; the daemon calls it for streams added at run time.
    pub fn add_stream(&mut self, l: StreamLabels, now: Instant) {
        // A family creates a series on first use; the guard is dropped at
        // once (holding it would block the family's next insert).
        drop(self.read_bytes.get_or_create(&l));
        drop(self.sent_bytes.get_or_create(&l));
        drop(self.wire_bytes.get_or_create(&l));
        drop(self.acknowledged_bytes.get_or_create(&l));
        drop(self.behind_bytes.get_or_create(&l));
        drop(self.rotations.get_or_create(&l));
        drop(self.truncations.get_or_create(&l));
        drop(self.losses.get_or_create(&l));
        drop(self.lost_bytes.get_or_create(&l));
        drop(self.reconnects.get_or_create(&l));
        drop(self.last_ack_age.get_or_create(&l));
        self.last_ack.entry(l).or_insert(now);
    }

    /// The server acknowledged `bytes` more of stream `l` at `now`.
    pub fn acknowledged(&mut self, l: &StreamLabels, bytes: u64, now: Instant) {
        self.acknowledged_bytes.get_or_create(l).inc_by(bytes);
        match self.last_ack.get_mut(l) {
            Some(at) => *at = now,
            None => {
                self.last_ack.insert(l.clone(), now);
            }
        }
    }

    /// Records that the server last acknowledged bytes of stream `l` at
    /// `at`, without counting them: for a daemon that counts through a
    /// handle of its own (`acknowledged_bytes.get_or_create_owned`, one
    /// atomic add per ACK, no lookup) and reports the time at scrape time.
    /// An `at` earlier than the one recorded is ignored.
    pub fn acknowledged_at(&mut self, l: &StreamLabels, at: Instant) {
        match self.last_ack.get_mut(l) {
            Some(t) => *t = (*t).max(at),
            None => {
                self.last_ack.insert(l.clone(), at);
            }
        }
    }

    /// Adds time a rate limit held sending back.
    pub fn rate_limited(&self, delay: Duration) {
        self.rate_limit_delay.inc_by(delay.as_secs_f64());
    }

    /// Sets the derived gauges for `now`.
    pub fn refresh(&self, now: Instant) {
        for (l, at) in &self.last_ack {
            let age = now.saturating_duration_since(*at).as_secs_f64();
            self.last_ack_age.get_or_create(l).set(age);
        }
    }

    /// The exposition in the Prometheus text format, derived values as of
    /// `now`.
    pub fn encode(&self, now: Instant) -> String {
        self.refresh(now);
        super::encode(&self.registry)
    }
}

impl super::Scrape for ClientMetrics {
    fn scrape(&mut self, now: Instant, out: &mut String) {
        self.refresh(now);
        super::encode_into(&self.registry, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn label(s: &str) -> StreamLabels {
        StreamLabels {
            stream: s.to_string(),
        }
    }

    #[test]
    fn per_stream_series_and_ack_age() {
        let t0 = Instant::now();
        let app = label("/var/log/app/*.log");
        let mut m = ClientMetrics::with_streams([app.clone()], t0);
        m.read_bytes.get_or_create(&app).inc_by(100);
        m.sent_bytes.get_or_create(&app).inc_by(90);
        m.behind_bytes.get_or_create(&app).set(30);
        m.acknowledged(&app, 70, t0 + Duration::from_secs(2));
        m.rate_limited(Duration::from_millis(1500));
        let text = m.encode(t0 + Duration::from_millis(4500));
        for want in [
            "loghamster_client_read_bytes_total{stream=\"/var/log/app/*.log\"} 100\n",
            "loghamster_client_sent_bytes_total{stream=\"/var/log/app/*.log\"} 90\n",
            "loghamster_client_acknowledged_bytes_total{stream=\"/var/log/app/*.log\"} 70\n",
            "loghamster_client_behind_bytes{stream=\"/var/log/app/*.log\"} 30\n",
            "loghamster_client_rotations_total{stream=\"/var/log/app/*.log\"} 0\n",
            "loghamster_client_last_ack_age_seconds{stream=\"/var/log/app/*.log\"} 2.5\n",
            "loghamster_client_rate_limit_delay_seconds_total 1.5\n",
            "loghamster_client_files_open 0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn ack_age_counts_from_start_before_the_first_ack() {
        let t0 = Instant::now();
        let l = label("/var/log/messages");
        let m = ClientMetrics::with_streams([l.clone()], t0);
        let text = m.encode(t0 + Duration::from_secs(3));
        assert!(text.contains(
            "loghamster_client_last_ack_age_seconds{stream=\"/var/log/messages\"} 3.0\n"
        ));
    }

    #[test]
    fn directory_streams_are_labelled_by_pattern() {
        let source = Source::Directory {
            dir: PathBuf::from("/var/log/backup"),
            pattern: globset::Glob::new("*.gz").unwrap().compile_matcher(),
            pattern_text: "*.gz".to_string(),
        };
        assert_eq!(
            StreamLabels::for_source(&source),
            label("/var/log/backup/*.gz")
        );
        let path = Source::Path(PathBuf::from("/var/log/app/*.log"));
        assert_eq!(StreamLabels::for_source(&path), label("/var/log/app/*.log"));
    }
}
