//! A stream routed to a JetStream output, on the connection's side (see
//! [`crate::sink::jetstream`] for the design).
//!
//! The stream's [`LineWriter`](crate::sink::output::LineWriter) writes
//! whole lines into its [`Link`]'s staging instead of a file; `written()`
//! is then the end of what is staged, and only `Link::acked()` (the end
//! of the last message JetStream acknowledged) is ever acknowledged to
//! the client or recorded for resume. Checkpoint rounds do not concern
//! these streams: an attaching stream waits for the lookup of its end in
//! JetStream instead ([`Conn::jet_looked`]), and a finished one gets
//! `250 DONE` once its last message is acknowledged.
//!
//! The stream stops reading its socket (a [`Stall::Jet`]) while its
//! staging holds a whole message (the one in flight is not acknowledged
//! yet) or while the output's command channel is full; an acknowledgement
//! resumes it at once, a full channel is looked at again every
//! [`LINE_POLL`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Conn, ConnPhase, Shared, Stall, Step, LINE_POLL};
use crate::metrics::server::HandshakeFailure;
use crate::proto;
use crate::reactor::Key;
use crate::server::StreamKey;
use crate::sink::jetstream::batch::Link;
use crate::sink::jetstream::{batch, Command, Event, StreamTag};
use crate::sink::route::{StreamInfo, SubjectRoute};

/// How long a stream whose message is in flight waits before it looks
/// again by itself (an acknowledgement wakes it sooner).
const ACK_WAIT: Duration = Duration::from_secs(1);

/// A stream's JetStream state, beside its writer.
#[derive(Debug)]
pub(crate) struct JetLink {
    /// The output's place in `Shared::jet`.
    pub out: usize,
    /// The connection's token, to which the output's events come back.
    pub conn: usize,
    pub tag: Arc<StreamTag>,
    pub link: Link,
    /// A publish failed and is being retried (logged once until it works).
    pub failing: bool,
}

impl JetLink {
    /// The JetStream state of a stream starting at `start`.
    pub(super) fn new(
        sr: &SubjectRoute,
        info: &StreamInfo<'_>,
        key: Option<&StreamKey>,
        stream_id: &str,
        conn: Key,
        start: u64,
    ) -> JetLink {
        let id = key.map_or(stream_id, |k| k.id.as_str());
        let meta = info
            .meta
            .iter()
            .filter(|(k, _)| !matches!(*k, "id" | "offset" | "ack" | "compression"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let tag = StreamTag {
            subject: sr.subject.clone(),
            host: info.host.to_string(),
            path: info.path.to_string(),
            id: id.to_string(),
            identity: batch::identity(info.host, info.path, id),
            meta,
            resumable: key.is_some(),
        };
        JetLink {
            out: sr.index,
            conn: conn.token().0,
            tag: std::sync::Arc::new(tag),
            link: crate::sink::jetstream::batch::Link::new(start),
            failing: false,
        }
    }
}

impl Conn {
    /// Asks the output where the stream ends in JetStream; the answer
    /// ([`Conn::jet_looked`]) lets it attach. False when the output's
    /// channel is full (the stream is refused then).
    pub(super) fn jet_lookup(j: &JetLink, shared: &Shared) -> bool {
        let Some(h) = shared.jet.get(j.out) else {
            return false;
        };
        let cmd = Command::Lookup {
            conn: j.conn,
            tag: j.tag.clone(),
        };
        h.send(cmd).is_ok()
    }

    /// An event from the stream's output.
    pub fn on_jet_event(&mut self, event: Event, now: Instant, shared: &mut Shared) -> Step {
        let mut step = Step::default();
        match event {
            Event::Looked { end, .. } => self.jet_looked(end, now, shared, &mut step),
            Event::Acked { end, .. } => self.jet_acked(end, now, shared, &mut step),
            Event::PublishFailed { error, .. } => {
                if let Some(s) = self.stream.as_mut() {
                    if let Some(j) = s.jet.as_mut().filter(|j| !j.failing) {
                        j.failing = true;
                        crate::warn!(
                            "{}: {}: publishing to JetStream subject {} failed: {error}; holding the stream (the client waits) and sending again",
                            self.peer,
                            s.label,
                            j.tag.subject
                        );
                    }
                }
            }
            Event::Connected { .. } | Event::Disconnected => {}
        }
        if let Err(e) = self.flush() {
            crate::debug!("{}: write failed: {e}", self.peer);
            step.close = true;
        }
        if let ConnPhase::Closing { deadline, eof } = self.phase {
            if eof && self.outbuf.is_empty() {
                step.close = true;
            }
            step.wake_at = Some(deadline);
        }
        step
    }

    /// The lookup answered: the stream continues at its end in JetStream
    /// (or where it stood, when JetStream has nothing of it), and `200`
    /// goes out.
    fn jet_looked(
        &mut self,
        end: Result<Option<u64>, String>,
        now: Instant,
        shared: &mut Shared,
        step: &mut Step,
    ) {
        if !matches!(self.phase, ConnPhase::Attaching { .. }) {
            return;
        }
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        let found = match end {
            Ok(found) => found,
            Err(e) => {
                crate::warn!(
                    "{}: refused stream {}: cannot learn its end from JetStream: {e}",
                    self.peer,
                    s.label
                );
                shared
                    .metrics
                    .handshake_failed(HandshakeFailure::OutputUnavailable);
                self.fail(503, "JetStream unavailable", now);
                return;
            }
        };
        if let Some(at) = found.filter(|&e| e != s.writer.written() && e <= proto::MAX_OFFSET) {
            crate::info!(
                "{}: {} continues at offset {at}, its end in JetStream (the client offered {})",
                self.peer,
                s.label,
                s.writer.written()
            );
            s.writer.rebase(at);
            if let Some(j) = s.jet.as_mut() {
                j.link.rebase(at);
            }
            s.counted = at;
            s.acked = at;
            s.ackable = at;
            if s.reply_offset.is_some() {
                s.reply_offset = Some(at);
            }
            if let Some(k) = &s.key {
                shared.resume.set_offset(k, at);
            }
        }
        *step = self.attached(now, shared);
    }

    /// JetStream acknowledged the stream's message ending at `end`.
    fn jet_acked(&mut self, end: u64, now: Instant, shared: &mut Shared, step: &mut Step) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        let Some(j) = s.jet.as_mut() else { return };
        if !j.link.ack(end) {
            return;
        }
        if j.failing {
            j.failing = false;
            crate::info!("{}: {}: JetStream takes messages again", self.peer, s.label);
        }
        s.ackable = end;
        shared.dirty = true;
        if end > s.counted {
            let new = end - s.counted;
            s.received.inc_by(new);
            s.unacked.inc_by(new as i64);
            s.counted = end;
        }
        if let Some(k) = &s.key {
            shared.resume.set_offset(k, end);
        }
        match self.phase {
            ConnPhase::Streaming => {
                // What was staged meanwhile goes out now; the socket is
                // read again unless that still fills the staging.
                match self.write_data(&[], now, shared) {
                    Some(at) => step.wake_at = Some(at),
                    None => self.stream(now, shared, step),
                }
                self.queue_ack();
            }
            ConnPhase::Finishing { .. } => {
                let stalled = self.write_data(&[], now, shared);
                if stalled.is_none() {
                    self.jet_end(now);
                }
            }
            _ => {}
        }
    }

    /// Stream bytes into the staging (whole lines; the tail too at the
    /// end of the stream), then the next message out. Returns the retry
    /// time when the stream must stop reading.
    pub(super) fn jet_write(
        &mut self,
        data: &[u8],
        now: Instant,
        shared: &mut Shared,
    ) -> Option<Instant> {
        let s = self.stream.as_mut()?;
        let j = s.jet.as_mut()?;
        // Writing into a Vec cannot fail.
        let _ = s.writer.push(&mut j.link.staging, data);
        if s.eof && s.writer.pending_len() > 0 {
            let _ = s.writer.finish(&mut j.link.staging);
        }
        let h = shared.jet.get(j.out)?;
        let mut channel_full = false;
        if let Some(cut) = j.link.cut(s.writer.written(), h.max_message) {
            let (offset, end) = (cut.offset, cut.end);
            let cmd = Command::Publish {
                conn: j.conn,
                tag: j.tag.clone(),
                offset,
                end,
                payload: bytes::Bytes::from(cut.payload),
            };
            if let Err(Command::Publish { payload, .. }) = h.send(cmd) {
                j.link.uncut(offset, Vec::from(payload));
                channel_full = true;
            }
        }
        let full = j.link.staging.len() >= h.max_message;
        if !(channel_full || full) {
            s.stall = None;
            return None;
        }
        let retry_at = now + if channel_full { LINE_POLL } else { ACK_WAIT };
        s.stall = Some(Stall::Jet { retry_at });
        Some(retry_at)
    }

    /// The client half-closed and every byte is staged: `250 DONE` once
    /// JetStream acknowledged the last message, else wait for it.
    pub(super) fn jet_end(&mut self, now: Instant) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        let Some(j) = s.jet.as_ref() else { return };
        if !j.link.idle() || s.writer.pending_len() > 0 {
            if !matches!(self.phase, ConnPhase::Finishing { .. }) {
                self.phase = ConnPhase::Finishing {
                    deadline: now + super::DONE_TIMEOUT,
                };
            }
            return;
        }
        let end = j.link.acked();
        crate::debug!(
            "{}: {} ended at offset {end} (JetStream)",
            self.peer,
            s.label
        );
        self.answer_done(end, now);
    }
}

/// The connection is gone: its output stops re-sending the message it may
/// have in flight.
pub(super) fn forget(j: &JetLink, shared: &Shared) {
    if let Some(h) = shared.jet.get(j.out) {
        let _ = h.send(Command::Forget {
            identity: j.tag.identity.clone(),
            conn: j.conn,
        });
    }
}
