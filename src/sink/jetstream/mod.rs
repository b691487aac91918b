//! The JetStream output: streams written into a NATS JetStream stream
//! instead of files, acknowledged to their clients only once JetStream
//! acknowledged them.
//!
//! ## Two threads
//! The server's loop stays single-threaded and never waits on the
//! network: each JetStream output has a client thread ([`client`]) with
//! its own current-thread tokio runtime and one `async-nats` connection.
//! The loop hands it [`Command`]s through a bounded channel
//! (`max_outstanding` deep) and never blocks on it: a full channel is a
//! stall, like a full disk. The thread answers with [`Event`]s through a
//! channel and a `mio::Waker`, so the loop wakes and hands each event to
//! its connection. At most `max_outstanding` publishes are in flight per
//! output (a semaphore in the thread), and at most one per stream
//! ([`batch`]): the window is bounded twice over.
//!
//! ## Exactly once
//! - A stream's bytes are staged as whole lines ([`batch::Link`]), cut
//!   into messages of at most `max_message` bytes, and published one at a
//!   time. The client gets `ACK n` only after the PubAck for the message
//!   ending at `n`; on an R3 stream that means "stored on a quorum".
//! - A publish that fails or times out is sent again, byte for byte, with
//!   the same `Nats-Msg-Id` (stream identity + byte range): if the first
//!   attempt was stored after all, JetStream's duplicate window drops the
//!   second. Nothing else of the stream is sent meanwhile, so the stream
//!   stays in order.
//! - Every message carries its stream's host, path, svc, meta, identity
//!   and byte range `[offset, end)` in headers ([`headers`]). A gateway
//!   that attaches a stream (after its own restart, or taking over from
//!   another gateway) asks JetStream for the last message on the stream's
//!   subject; when it belongs to the stream, its `Loghamster-End` is where
//!   the stream continues ([`Command::Lookup`]), whatever the gateway's
//!   own checkpoint says. The gateway keeps no state that matters.
//!
//! ## Back-pressure
//! A stream reads its socket only while its staging holds less than one
//! message: a slow or absent JetStream stops the reads, and TCP holds the
//! client, as a full disk does. What one output holds is bounded by
//! `2 × max_outstanding` messages in the thread plus one message (and one
//! read) per stream in the loop.

pub mod batch;
pub mod client;
pub mod subject;

use std::sync::Arc;

use crate::config::jetstream::JetStreamConfig;
use crate::metrics::jetstream::OutputSeries;

/// What headers and lookups say about a stream; shared by its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTag {
    pub subject: String,
    pub host: String,
    pub path: String,
    /// The client's file id (`id:`), or the connection's STREAMID for a
    /// stream that is not resumable.
    pub id: String,
    /// [`batch::identity`] of host, path and id.
    pub identity: String,
    /// Meta values, `svc` included (reserved keys left out).
    pub meta: Vec<(String, String)>,
    /// The stream is resumable (it named an `id:`): its end is looked up.
    pub resumable: bool,
}

/// From the loop to an output's client thread.
#[derive(Debug)]
pub enum Command {
    /// Publish `[offset, end)` of a stream; answered with
    /// [`Event::Acked`] (after as many retries as it takes, unless the
    /// stream is forgotten meanwhile).
    Publish {
        conn: usize,
        tag: Arc<StreamTag>,
        offset: u64,
        end: u64,
        payload: bytes::Bytes,
    },
    /// Where does this stream end in JetStream? Waits until no publish of
    /// the same stream identity is in flight in this thread first.
    Lookup { conn: usize, tag: Arc<StreamTag> },
    /// The stream's connection is gone: stop re-sending its message.
    Forget { identity: String, conn: usize },
}

/// From an output's client thread to the loop.
#[derive(Debug)]
pub enum Event {
    Acked {
        conn: usize,
        end: u64,
    },
    /// The first failure of a publish (it is retried until it works).
    PublishFailed {
        conn: usize,
        error: String,
    },
    /// The answer to a lookup: the stream's end in JetStream (`None`: no
    /// message of this stream is the last on its subject).
    Looked {
        conn: usize,
        end: Result<Option<u64>, String>,
    },
    /// Connected: messages may be up to this many bytes.
    Connected {
        max_message: usize,
    },
    Disconnected,
}

/// The loop's side of one JetStream output.
#[derive(Debug)]
pub struct Handle {
    pub name: String,
    commands: tokio::sync::mpsc::Sender<Command>,
    events: std::sync::mpsc::Receiver<Event>,
    /// Largest payload per message: `max_message`, lowered to what the
    /// servers accept once connected.
    pub max_message: usize,
    pub metrics: OutputSeries,
}

impl Handle {
    /// Starts the output's client thread; events wake `waker`.
    pub fn start(
        name: &str,
        cfg: &JetStreamConfig,
        waker: Arc<mio::Waker>,
        metrics: OutputSeries,
    ) -> std::io::Result<Handle> {
        let (commands, rx) = tokio::sync::mpsc::channel(cfg.max_outstanding);
        let (tx, events) = std::sync::mpsc::channel();
        let link = client::Wire {
            events: tx,
            waker,
            metrics: metrics.clone(),
        };
        client::spawn(name, cfg.clone(), rx, link)?;
        Ok(Handle {
            name: name.to_string(),
            commands,
            events,
            max_message: cfg.max_message,
            metrics,
        })
    }

    /// Hands a command to the thread without waiting; gives it back when
    /// the channel is full (or the thread is gone).
    pub fn send(&self, cmd: Command) -> Result<(), Command> {
        use tokio::sync::mpsc::error::TrySendError;
        self.commands.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(c) | TrySendError::Closed(c) => c,
        })
    }

    /// The next event, if one is waiting.
    pub fn next_event(&mut self) -> Option<Event> {
        let e = self.events.try_recv().ok()?;
        if let Event::Connected { max_message } = e {
            self.max_message = self.max_message.min(max_message);
        }
        Some(e)
    }
}

/// The JetStream outputs of a server, by their place in the
/// configuration's `outputs` (file outputs have none).
#[derive(Debug, Default)]
pub struct JetOutputs {
    by_index: Vec<Option<Handle>>,
}

impl JetOutputs {
    /// Starts a client thread for every JetStream output in `cfg`.
    pub fn start(
        cfg: &crate::config::ServerConfig,
        waker: &Arc<mio::Waker>,
        metrics: &crate::metrics::jetstream::JetStreamMetrics,
    ) -> std::io::Result<JetOutputs> {
        use crate::config::server::OutputKind;
        let mut by_index = Vec::new();
        for o in &cfg.outputs {
            by_index.push(match &o.kind {
                OutputKind::File(_) => None,
                OutputKind::JetStream(js) => {
                    let h = Handle::start(&o.name, js, waker.clone(), metrics.series(&o.name))?;
                    crate::info!(
                        "output {}: JetStream stream {} at {}",
                        o.name,
                        js.stream,
                        js.servers.join(", ")
                    );
                    Some(h)
                }
            });
        }
        Ok(JetOutputs { by_index })
    }

    pub fn get(&self, index: usize) -> Option<&Handle> {
        self.by_index.get(index)?.as_ref()
    }

    /// Every event waiting, from every output, in turn.
    pub fn drain(&mut self, mut each: impl FnMut(Event)) {
        for h in self.by_index.iter_mut().flatten() {
            while let Some(e) = h.next_event() {
                each(e);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.iter().all(Option::is_none)
    }
}

/// The header map of one message (see the module doc).
pub fn headers(tag: &StreamTag, offset: u64, end: u64) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert(
        "Nats-Msg-Id",
        batch::msg_id(&tag.identity, offset, end).as_str(),
    );
    h.insert("Loghamster-Stream", tag.identity.as_str());
    h.insert("Loghamster-Host", header_value(&tag.host).as_str());
    h.insert("Loghamster-Path", header_value(&tag.path).as_str());
    h.insert("Loghamster-Id", header_value(&tag.id).as_str());
    for (k, v) in &tag.meta {
        h.insert(
            format!("Loghamster-Meta-{k}").as_str(),
            header_value(v).as_str(),
        );
    }
    h.insert("Loghamster-Offset", offset.to_string().as_str());
    h.insert("Loghamster-End", end.to_string().as_str());
    h
}

/// A value as a header carries it: `%` and control characters as `%XX`.
pub fn header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '%' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_the_stream_and_its_byte_range() {
        let tag = StreamTag {
            subject: "logs.h".into(),
            host: "h".into(),
            path: "/a\r\nb%".into(),
            id: "x1".into(),
            identity: batch::identity("h", "/a\r\nb%", "x1"),
            meta: vec![("svc".into(), "app".into())],
            resumable: true,
        };
        let h = headers(&tag, 10, 20);
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_string());
        assert_eq!(get("Loghamster-Path").as_deref(), Some("/a%0D%0Ab%25"));
        assert_eq!(get("Loghamster-Meta-svc").as_deref(), Some("app"));
        assert_eq!(get("Loghamster-End").as_deref(), Some("20"));
        assert_eq!(
            get("Nats-Msg-Id"),
            Some(batch::msg_id(&tag.identity, 10, 20))
        );
    }
}
