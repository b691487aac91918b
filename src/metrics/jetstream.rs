//! What the JetStream outputs count (`[output.NAME.jetstream]`), in the
//! server's registry; `output` is the output's name.
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `loghamster_server_jetstream_published_messages_total{output}` | counter | publish attempts sent to JetStream (a re-sent message counts again) |
//! | `loghamster_server_jetstream_acked_messages_total{output}` | counter | messages JetStream acknowledged (PubAck) |
//! | `loghamster_server_jetstream_acked_bytes_total{output}` | counter | payload bytes of those messages |
//! | `loghamster_server_jetstream_duplicates_total{output}` | counter | acknowledged messages JetStream had already (dropped by its duplicate window) |
//! | `loghamster_server_jetstream_outstanding_messages{output}` | gauge | messages handed to the JetStream client and not yet acknowledged |
//! | `loghamster_server_jetstream_outstanding_bytes{output}` | gauge | their payload bytes |
//! | `loghamster_server_jetstream_errors_total{output}` | counter | publishes and lookups that failed (each is retried or refused, nothing is lost) |
//! | `loghamster_server_jetstream_connected{output}` | gauge | 1 while the output's NATS connection is up |

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::server::OutputLabels;

/// The JetStream families (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct JetStreamMetrics {
    pub published: Family<OutputLabels, Counter>,
    pub acked: Family<OutputLabels, Counter>,
    pub acked_bytes: Family<OutputLabels, Counter>,
    pub duplicates: Family<OutputLabels, Counter>,
    pub outstanding: Family<OutputLabels, Gauge>,
    pub outstanding_bytes: Family<OutputLabels, Gauge>,
    pub errors: Family<OutputLabels, Counter>,
    pub connected: Family<OutputLabels, Gauge>,
}

/// One output's series, handed to its client thread.
#[derive(Debug, Clone, Default)]
pub struct OutputSeries {
    pub published: Counter,
    pub acked: Counter,
    pub acked_bytes: Counter,
    pub duplicates: Counter,
    pub outstanding: Gauge,
    pub outstanding_bytes: Gauge,
    pub errors: Counter,
    pub connected: Gauge,
}

impl JetStreamMetrics {
    /// Registers the families under `jetstream_` and creates the series
    /// of every JetStream output, so they show as 0 from the start.
    pub fn register<'a>(
        registry: &mut Registry,
        outputs: impl IntoIterator<Item = &'a str>,
    ) -> JetStreamMetrics {
        let m = JetStreamMetrics::default();
        let r = registry.sub_registry_with_prefix("jetstream");
        r.register(
            "published_messages",
            "Publish attempts sent to JetStream, by output",
            m.published.clone(),
        );
        r.register(
            "acked_messages",
            "Messages JetStream acknowledged, by output",
            m.acked.clone(),
        );
        r.register_with_unit(
            "acked",
            "Payload bytes of messages JetStream acknowledged, by output",
            Unit::Bytes,
            m.acked_bytes.clone(),
        );
        r.register(
            "duplicates",
            "Acknowledged messages JetStream already had (duplicate window), by output",
            m.duplicates.clone(),
        );
        r.register(
            "outstanding_messages",
            "Messages handed to the JetStream client and not yet acknowledged, by output",
            m.outstanding.clone(),
        );
        r.register_with_unit(
            "outstanding",
            "Payload bytes handed to the JetStream client and not yet acknowledged, by output",
            Unit::Bytes,
            m.outstanding_bytes.clone(),
        );
        r.register(
            "errors",
            "JetStream publishes and lookups that failed, by output",
            m.errors.clone(),
        );
        r.register(
            "connected",
            "1 while the output's NATS connection is up, by output",
            m.connected.clone(),
        );
        for name in outputs {
            drop(m.series(name));
        }
        m
    }

    /// The series of output `name`.
    pub fn series(&self, name: &str) -> OutputSeries {
        let l = OutputLabels {
            output: name.to_string(),
        };
        OutputSeries {
            published: self.published.get_or_create_owned(&l),
            acked: self.acked.get_or_create_owned(&l),
            acked_bytes: self.acked_bytes.get_or_create_owned(&l),
            duplicates: self.duplicates.get_or_create_owned(&l),
            outstanding: self.outstanding.get_or_create_owned(&l),
            outstanding_bytes: self.outstanding_bytes.get_or_create_owned(&l),
            errors: self.errors.get_or_create_owned(&l),
            connected: self.connected.get_or_create_owned(&l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_shows_for_every_jetstream_output_from_the_start() {
        let mut registry = Registry::with_prefix("loghamster_server");
        let m = JetStreamMetrics::register(&mut registry, ["logs"]);
        m.series("logs").acked_bytes.inc_by(5);
        let text = crate::metrics::encode(&registry);
        for line in [
            "loghamster_server_jetstream_published_messages_total{output=\"logs\"} 0",
            "loghamster_server_jetstream_acked_messages_total{output=\"logs\"} 0",
            "loghamster_server_jetstream_acked_bytes_total{output=\"logs\"} 5",
            "loghamster_server_jetstream_duplicates_total{output=\"logs\"} 0",
            "loghamster_server_jetstream_outstanding_messages{output=\"logs\"} 0",
            "loghamster_server_jetstream_outstanding_bytes{output=\"logs\"} 0",
            "loghamster_server_jetstream_errors_total{output=\"logs\"} 0",
            "loghamster_server_jetstream_connected{output=\"logs\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }
}
