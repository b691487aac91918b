//! What `loghamsterd` counts.
//!
//! Every family is named `loghamster_server_*`. Labels are bounded by the
//! configuration: `output` is the name of an `[output.NAME]` table, or
//! [`DEFAULT_OUTPUT`] for every stream that took the default
//! `directory/<host>/<path>` route (one value however many hosts and paths
//! there are); `reason` is a [`HandshakeFailure`]; `codec` is one of
//! [`Codec::ALL`](crate::codec::Codec::ALL). Nothing a client sends
//! becomes a label value.
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `loghamster_server_connections_open` | gauge | connections now open |
//! | `loghamster_server_connections_accepted_total` | counter | connections accepted |
//! | `loghamster_server_connections_refused_total` | counter | connections closed at once (shutting down, too many open) |
//! | `loghamster_server_handshake_errors_total{reason}` | counter | connections that ended before streaming |
//! | `loghamster_server_received_bytes_total{output}` | counter | stream bytes received |
//! | `loghamster_server_received_lines_total{output}` | counter | lines received through user space (not counted for bytes spliced zero-copy) |
//! | `loghamster_server_spliced_bytes_total{output}` | counter | the part of the received bytes written by `splice(2)`, zero-copy |
//! | `loghamster_server_write_errors_total{output}` | counter | failed writes to an output |
//! | `loghamster_server_fsync_duration_seconds` | histogram | time per `fdatasync` of an output |
//! | `loghamster_server_unacknowledged_bytes` | gauge | bytes in outputs not yet acknowledged to their (`ack:1`) clients |
//! | `loghamster_server_streams_active` | gauge | streams past the handshake |
//! | `loghamster_server_compressed_received_bytes_total{codec}` | counter | compressed bytes received, before decoding |
//! | `loghamster_server_decompressed_bytes_total{codec}` | counter | plain bytes those decoded to |
//! | `loghamster_server_decode_errors_total{codec}` | counter | compressed streams closed because they did not decode |
//! | `loghamster_server_limit_hits_total{limit}` | counter | connections or streams refused or closed at a limit (see [`LimitHit`]) |
//! | `loghamster_server_auth_refusals_total{reason}` | counter | INITs refused by authentication or authorization (see [`AuthRefusal`]) |
//! | `loghamster_server_decoder_memory_bytes` | gauge | memory held by the decoders of compressed streams (against `decoder_memory`) |
//! | `loghamster_server_streams_known` | gauge | resumable streams the server keeps an offset for |
//! | `loghamster_server_streams_expired_total` | counter | resumable streams forgotten after `stream_retention` (or the `max_streams` cap) |
//! | `loghamster_server_checkpoint_bytes` | gauge | bytes the last checkpoint round wrote to the state file or its journal |
//! | `loghamster_server_checkpoint_failures_total` | counter | checkpoint rounds that failed (an output's `fdatasync` or the state file's write; the first of a series is also an ERROR line; nothing is acknowledged meanwhile) |

use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::codec::Codec;
use crate::config::ServerConfig;
use crate::proto::ParseError;
use crate::sink::route::RouteError;

/// The `output` label value of the default directory route. Output names
/// are tokens (`[A-Za-z0-9_.-]+`), so this value, with its parentheses,
/// cannot collide with a configured `[output.default]`.
pub const DEFAULT_OUTPUT: &str = "(default)";

/// Upper bounds of the fsync histogram, in seconds: 100 µs to 1 s in
/// roughly 1-2.5-5 steps (an SSD syncs in well under a millisecond, a busy
/// spinning disk in tens of milliseconds; above 1 s lands in `+Inf`).
pub const FSYNC_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Labels of the per-output families.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutputLabels {
    /// A configured output name, or [`DEFAULT_OUTPUT`].
    pub output: String,
}

impl OutputLabels {
    /// The label of a route's output (`Route::output`): its name, or
    /// [`DEFAULT_OUTPUT`] for the default route.
    pub fn for_route(output: Option<&str>) -> OutputLabels {
        OutputLabels {
            output: output.unwrap_or(DEFAULT_OUTPUT).to_string(),
        }
    }
}

/// Labels of the per-codec families.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CodecLabels {
    /// A [`Codec`] name.
    pub codec: String,
}

impl CodecLabels {
    pub fn of(codec: Codec) -> CodecLabels {
        CodecLabels {
            codec: codec.name().to_string(),
        }
    }
}

/// Why a connection ended before it streamed: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeFailure {
    /// No INIT within `handshake_timeout` (`408`).
    Timeout,
    /// INIT longer than the line limit or with too many meta pairs.
    TooLarge,
    /// INIT that does not parse, or a bad `offset:` (`400`).
    Malformed,
    /// Routing refused the host, a value or the path (`400`).
    BadRoute,
    /// No output matches and there is no default directory (`404`).
    NoOutput,
    /// The output could not be opened (`503`).
    OutputUnavailable,
    /// The server state could not be committed in time (`503`).
    StateUnavailable,
    /// The peer closed before sending a whole INIT.
    ClosedEarly,
    /// INIT asked for a codec this server does not accept (`415`).
    Compression,
    /// Its identity may not write the stream (`401`, `403`, `409`; the
    /// details are in `auth_refusals_total`).
    Unauthorized,
    /// A plain connection on a listener that requires TLS (`403`).
    TlsRequired,
    /// The TLS handshake failed (no or an untrusted client certificate,
    /// not TLS after all, ...).
    Tls,
    /// A multiplexed connection sent a frame that breaks the rules (see
    /// `proto::mux`): it is closed with all its channels.
    Framing,
}

impl HandshakeFailure {
    /// Every value, for pre-creating the series.
    pub const ALL: [HandshakeFailure; 13] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::TooLarge,
        HandshakeFailure::Malformed,
        HandshakeFailure::BadRoute,
        HandshakeFailure::NoOutput,
        HandshakeFailure::OutputUnavailable,
        HandshakeFailure::StateUnavailable,
        HandshakeFailure::ClosedEarly,
        HandshakeFailure::Compression,
        HandshakeFailure::Unauthorized,
        HandshakeFailure::TlsRequired,
        HandshakeFailure::Tls,
        HandshakeFailure::Framing,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::TooLarge => "too_large",
            HandshakeFailure::Malformed => "malformed",
            HandshakeFailure::BadRoute => "bad_route",
            HandshakeFailure::NoOutput => "no_output",
            HandshakeFailure::OutputUnavailable => "output_unavailable",
            HandshakeFailure::StateUnavailable => "state_unavailable",
            HandshakeFailure::ClosedEarly => "closed_early",
            HandshakeFailure::Compression => "unsupported_compression",
            HandshakeFailure::Unauthorized => "unauthorized",
            HandshakeFailure::TlsRequired => "tls_required",
            HandshakeFailure::Tls => "tls",
            HandshakeFailure::Framing => "framing",
        }
    }

    /// The failure for a rejected INIT line.
    pub fn from_parse(e: ParseError) -> HandshakeFailure {
        match e {
            ParseError::LineTooLong | ParseError::TooManyMeta => HandshakeFailure::TooLarge,
            _ => HandshakeFailure::Malformed,
        }
    }

    /// The failure for a refused route.
    pub fn from_route(e: &RouteError) -> HandshakeFailure {
        match e {
            RouteError::NoOutput => HandshakeFailure::NoOutput,
            RouteError::BadHost
            | RouteError::BadValue { .. }
            | RouteError::BadPath
            | RouteError::Reserved => HandshakeFailure::BadRoute,
        }
    }
}

impl EncodeLabelValue for HandshakeFailure {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Which limit a connection or stream hit: the `limit` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitHit {
    /// `max_connections`: refused at accept.
    Connections,
    /// `max_connections_per_address`: refused at accept.
    ConnectionsPerAddress,
    /// Descriptors: refused at accept because too few were left.
    Descriptors,
    /// `decoder_memory`: a compressed stream refused (`503`).
    DecoderMemory,
    /// A stream whose offset would pass [`crate::proto::MAX_OFFSET`].
    StreamOffset,
    /// `idle_timeout`: a stream closed after no input for that long.
    IdleTimeout,
}

impl LimitHit {
    /// Every value, for pre-creating the series.
    pub const ALL: [LimitHit; 6] = [
        LimitHit::Connections,
        LimitHit::ConnectionsPerAddress,
        LimitHit::Descriptors,
        LimitHit::DecoderMemory,
        LimitHit::StreamOffset,
        LimitHit::IdleTimeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitHit::Connections => "connections",
            LimitHit::ConnectionsPerAddress => "connections_per_address",
            LimitHit::Descriptors => "descriptors",
            LimitHit::DecoderMemory => "decoder_memory",
            LimitHit::StreamOffset => "stream_offset",
            LimitHit::IdleTimeout => "idle_timeout",
        }
    }
}

impl EncodeLabelValue for LimitHit {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Why authentication or authorization refused an INIT: the `reason`
/// label of `auth_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthRefusal {
    /// A malformed token, an unknown token name or a wrong secret (`401`).
    Token,
    /// No `[[allow]]` rule names the identity (`403`).
    Identity,
    /// No rule lets it claim the host (`403`).
    Host,
    /// No rule lets it write the output (`403`).
    Output,
    /// No rule's `svc`/`match` globs match the stream (`403`).
    Match,
    /// Another identity owns the stream (`409`).
    Owner,
}

impl AuthRefusal {
    /// Every value, for pre-creating the series.
    pub const ALL: [AuthRefusal; 6] = [
        AuthRefusal::Token,
        AuthRefusal::Identity,
        AuthRefusal::Host,
        AuthRefusal::Output,
        AuthRefusal::Match,
        AuthRefusal::Owner,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthRefusal::Token => "token",
            AuthRefusal::Identity => "identity",
            AuthRefusal::Host => "host",
            AuthRefusal::Output => "output",
            AuthRefusal::Match => "match",
            AuthRefusal::Owner => "owner",
        }
    }
}

impl EncodeLabelValue for AuthRefusal {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Labels of the auth refusal family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthLabels {
    pub reason: AuthRefusal,
}

/// Labels of the limit family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: LimitHit,
}

/// Labels of the handshake error family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub reason: HandshakeFailure,
}

/// The metrics of `loghamsterd`: handles to update, and the registry that
/// holds them (read by [`super::Scrape`]).
#[derive(Debug)]
pub struct ServerMetrics {
    registry: Registry,
    /// Connections now open (inc on accept, dec on close).
    pub connections_open: Gauge,
    /// Connections accepted since start.
    pub connections_accepted: Counter,
    /// Connections closed right after `accept` (shutting down, limits).
    pub connections_refused: Counter,
    /// Connections that ended before streaming, by reason.
    pub handshake_errors: Family<HandshakeLabels, Counter>,
    /// Stream bytes received, by output.
    pub received_bytes: Family<OutputLabels, Counter>,
    /// Newlines in the stream bytes that went through user space, by
    /// output. A stream alone on its output is spliced socket → file
    /// without the server looking at its bytes: those lines are not
    /// counted (its bytes are).
    pub received_lines: Family<OutputLabels, Counter>,
    /// The part of `received_bytes` that went socket → pipe → output by
    /// `splice(2)`, by output.
    pub spliced_bytes: Family<OutputLabels, Counter>,
    /// Failed writes to an output, by output.
    pub write_errors: Family<OutputLabels, Counter>,
    /// Seconds per `fdatasync` of an output; see [`FSYNC_BUCKETS`].
    pub fsync_duration: Histogram,
    /// Bytes written to outputs but not yet acknowledged to their clients,
    /// over all streams that asked for ACKs (inc on write, dec on `ACK`,
    /// dec the rest on close): the acknowledgement lag.
    pub unacknowledged_bytes: Gauge,
    /// Streams past the handshake.
    pub streams_active: Gauge,
    /// Compressed bytes received, by codec.
    pub compressed_received: Family<CodecLabels, Counter>,
    /// Plain bytes decoded from them, by codec.
    pub decompressed: Family<CodecLabels, Counter>,
    /// Compressed streams that failed to decode, by codec.
    pub decode_errors: Family<CodecLabels, Counter>,
    /// Connections or streams refused or closed at a limit, by limit.
    pub limit_hits: Family<LimitLabels, Counter>,
    /// INITs refused by authentication or authorization, by reason.
    pub auth_refusals: Family<AuthLabels, Counter>,
    /// Bytes the decoders of compressed streams hold, together.
    pub decoder_memory: Gauge,
    /// Resumable streams with a recorded offset.
    pub streams_known: Gauge,
    /// Resumable streams forgotten (retention or cap).
    pub streams_expired: Counter,
    /// Bytes the last checkpoint round wrote.
    pub checkpoint_bytes: Gauge,
    /// Checkpoint rounds that failed.
    pub checkpoint_failures: Counter,
    /// The JetStream outputs' families (see [`super::jetstream`]).
    pub jetstream: super::jetstream::JetStreamMetrics,
}

impl ServerMetrics {
    /// Registers every family and creates the series of every configured
    /// output, [`DEFAULT_OUTPUT`] (when `directory` is set) and every
    /// handshake failure, so they show as 0 before the first event.
    pub fn new(cfg: &ServerConfig) -> ServerMetrics {
        let mut outputs: Vec<Option<&str>> =
            cfg.outputs.iter().map(|o| Some(o.name.as_str())).collect();
        if cfg.directory.is_some() {
            outputs.push(None);
        }
        let mut m = ServerMetrics::with_outputs(outputs);
        let jet = cfg.outputs.iter().filter(|o| o.template().is_none());
        m.jetstream = super::jetstream::JetStreamMetrics::register(
            &mut m.registry,
            jet.map(|o| o.name.as_str()),
        );
        m
    }

    /// Like [`ServerMetrics::new`], with the outputs given directly
    /// (`None` is the default route).
    pub fn with_outputs<'a>(outputs: impl IntoIterator<Item = Option<&'a str>>) -> ServerMetrics {
        let mut registry = Registry::with_prefix("loghamster_server");
        let m = ServerMetrics {
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_refused: Counter::default(),
            handshake_errors: Family::default(),
            received_bytes: Family::default(),
            received_lines: Family::default(),
            spliced_bytes: Family::default(),
            write_errors: Family::default(),
            fsync_duration: Histogram::new(FSYNC_BUCKETS),
            unacknowledged_bytes: Gauge::default(),
            streams_active: Gauge::default(),
            compressed_received: Family::default(),
            decompressed: Family::default(),
            decode_errors: Family::default(),
            limit_hits: Family::default(),
            auth_refusals: Family::default(),
            decoder_memory: Gauge::default(),
            streams_known: Gauge::default(),
            streams_expired: Counter::default(),
            checkpoint_bytes: Gauge::default(),
            checkpoint_failures: Counter::default(),
            jetstream: Default::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "connections_open",
            "Connections now open",
            m.connections_open.clone(),
        );
        r.register(
            "connections_accepted",
            "Connections accepted",
            m.connections_accepted.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed right after accept (shutting down or at a limit)",
            m.connections_refused.clone(),
        );
        r.register(
            "handshake_errors",
            "Connections that ended before streaming, by reason",
            m.handshake_errors.clone(),
        );
        r.register_with_unit(
            "received",
            "Stream bytes received, by output",
            Unit::Bytes,
            m.received_bytes.clone(),
        );
        r.register(
            "received_lines",
            "Lines received through user space, by output (bytes spliced zero-copy are not scanned)",
            m.received_lines.clone(),
        );
        r.register_with_unit(
            "spliced",
            "Stream bytes written to outputs zero-copy by splice, by output (a part of received_bytes)",
            Unit::Bytes,
            m.spliced_bytes.clone(),
        );
        r.register(
            "write_errors",
            "Failed writes to an output, by output",
            m.write_errors.clone(),
        );
        r.register_with_unit(
            "fsync_duration",
            "Time per fdatasync of an output",
            Unit::Seconds,
            m.fsync_duration.clone(),
        );
        r.register_with_unit(
            "unacknowledged",
            "Bytes written to outputs but not yet acknowledged to their clients",
            Unit::Bytes,
            m.unacknowledged_bytes.clone(),
        );
        r.register(
            "streams_active",
            "Streams past the handshake",
            m.streams_active.clone(),
        );
        r.register_with_unit(
            "compressed_received",
            "Compressed bytes received, before decoding, by codec",
            Unit::Bytes,
            m.compressed_received.clone(),
        );
        r.register_with_unit(
            "decompressed",
            "Plain bytes decoded from compressed streams, by codec",
            Unit::Bytes,
            m.decompressed.clone(),
        );
        r.register(
            "decode_errors",
            "Compressed streams closed because they did not decode, by codec",
            m.decode_errors.clone(),
        );
        r.register(
            "limit_hits",
            "Connections or streams refused or closed at a limit, by limit",
            m.limit_hits.clone(),
        );
        r.register(
            "auth_refusals",
            "INITs refused by authentication or authorization, by reason",
            m.auth_refusals.clone(),
        );
        r.register_with_unit(
            "decoder_memory",
            "Memory held by the decoders of compressed streams",
            Unit::Bytes,
            m.decoder_memory.clone(),
        );
        r.register(
            "streams_known",
            "Resumable streams the server keeps an offset for",
            m.streams_known.clone(),
        );
        r.register(
            "streams_expired",
            "Resumable streams forgotten after stream_retention or at max_streams",
            m.streams_expired.clone(),
        );
        r.register_with_unit(
            "checkpoint",
            "Bytes the last checkpoint round wrote to the state file or its journal",
            Unit::Bytes,
            m.checkpoint_bytes.clone(),
        );
        r.register(
            "checkpoint_failures",
            "Checkpoint rounds that failed (fdatasync or state file write); nothing is acknowledged meanwhile",
            m.checkpoint_failures.clone(),
        );
        for limit in LimitHit::ALL {
            drop(m.limit_hits.get_or_create(&LimitLabels { limit }));
        }
        for reason in AuthRefusal::ALL {
            drop(m.auth_refusals.get_or_create(&AuthLabels { reason }));
        }
        for codec in Codec::ALL {
            let l = CodecLabels::of(codec);
            drop(m.compressed_received.get_or_create(&l));
            drop(m.decompressed.get_or_create(&l));
            drop(m.decode_errors.get_or_create(&l));
        }
        for reason in HandshakeFailure::ALL {
            drop(
                m.handshake_errors
                    .get_or_create(&HandshakeLabels { reason }),
            );
        }
        for output in outputs {
            let l = OutputLabels::for_route(output);
            // Dropping the guard at once: holding it blocks the next insert.
            drop(m.received_bytes.get_or_create(&l));
            drop(m.received_lines.get_or_create(&l));
            drop(m.spliced_bytes.get_or_create(&l));
            drop(m.write_errors.get_or_create(&l));
        }
        ServerMetrics { registry, ..m }
    }

    /// Counts a connection that ended before streaming.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_errors
            .get_or_create(&HandshakeLabels { reason })
            .inc();
    }

    /// Counts a connection or stream stopped at `limit`.
    pub fn limit_hit(&self, limit: LimitHit) {
        self.limit_hits.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Counts an INIT refused by authentication or authorization (also a
    /// handshake error, `unauthorized`).
    pub fn auth_refused(&self, reason: AuthRefusal) {
        self.auth_refusals
            .get_or_create(&AuthLabels { reason })
            .inc();
        self.handshake_failed(HandshakeFailure::Unauthorized);
    }

    /// Records one `fdatasync` that took `took`.
    pub fn observe_fsync(&self, took: Duration) {
        self.fsync_duration.observe(took.as_secs_f64());
    }

    /// The exposition in the Prometheus text format.
    pub fn encode(&self) -> String {
        super::encode(&self.registry)
    }
}

impl super::Scrape for ServerMetrics {
    fn scrape(&mut self, _now: Instant, out: &mut String) {
        super::encode_into(&self.registry, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_labels_follow_conventions() {
        let m = ServerMetrics::with_outputs([Some("nginx"), None]);
        m.connections_accepted.inc();
        m.received_bytes
            .get_or_create(&OutputLabels::for_route(Some("nginx")))
            .inc_by(42);
        m.received_bytes
            .get_or_create(&OutputLabels::for_route(None))
            .inc_by(7);
        m.handshake_failed(HandshakeFailure::from_parse(ParseError::LineTooLong));
        m.observe_fsync(Duration::from_micros(300));
        let text = m.encode();
        for want in [
            "loghamster_server_connections_accepted_total 1\n",
            "loghamster_server_received_bytes_total{output=\"nginx\"} 42\n",
            "loghamster_server_received_bytes_total{output=\"(default)\"} 7\n",
            "loghamster_server_received_lines_total{output=\"nginx\"} 0\n",
            "loghamster_server_spliced_bytes_total{output=\"nginx\"} 0\n",
            "loghamster_server_handshake_errors_total{reason=\"too_large\"} 1\n",
            "loghamster_server_handshake_errors_total{reason=\"closed_early\"} 0\n",
            "# TYPE loghamster_server_fsync_duration_seconds histogram\n",
            "loghamster_server_fsync_duration_seconds_bucket{le=\"0.0005\"} 1\n",
            "loghamster_server_fsync_duration_seconds_count 1\n",
            "loghamster_server_unacknowledged_bytes 0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn default_route_is_one_label_value() {
        assert_eq!(OutputLabels::for_route(None).output, DEFAULT_OUTPUT);
        assert!(!crate::config::is_token(DEFAULT_OUTPUT));
        assert_eq!(OutputLabels::for_route(Some("default")).output, "default");
    }

    #[test]
    fn route_errors_map_to_reasons() {
        assert_eq!(
            HandshakeFailure::from_route(&RouteError::NoOutput),
            HandshakeFailure::NoOutput
        );
        assert_eq!(
            HandshakeFailure::from_route(&RouteError::BadPath),
            HandshakeFailure::BadRoute
        );
        assert_eq!(
            HandshakeFailure::from_parse(ParseError::NotUtf8),
            HandshakeFailure::Malformed
        );
    }
}
