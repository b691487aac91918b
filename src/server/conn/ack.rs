//! Acknowledging after a checkpoint: a round of output syncs plus the state
//! file covers what each connection had written when the round *began*
//! ([`RoundMark`]); when it completes, exactly that may be acknowledged,
//! new streams waiting for it get `200`, and streams that had finished by
//! then get `250 DONE`. Connections that began or finished later wait for
//! the next round.

use std::time::Instant;

use super::{Conn, ConnPhase, Shared, Step, LINGER};
use crate::config::SyncPolicy;
use crate::proto;

/// A connection's state as a checkpoint round began: only what the round
/// covers may be acknowledged when it completes.
#[derive(Debug, Clone, Copy)]
pub(super) struct RoundMark {
    /// Stream bytes in the output.
    written: u64,
    attaching: bool,
    finishing: bool,
}

impl Conn {
    /// A checkpoint round begins: remembers what it will cover.
    pub fn mark_round(&mut self) {
        self.round = Some(RoundMark {
            written: self.stream.as_ref().map_or(0, |s| s.writer.written()),
            attaching: matches!(self.phase, ConnPhase::Attaching { .. }),
            finishing: matches!(self.phase, ConnPhase::Finishing { .. }),
        });
    }

    /// Called after every successful checkpoint round: what was written
    /// when it began may now be acknowledged, and streams that had finished
    /// by then get `250 DONE`. Connections that began (or finished) later
    /// wait for the next round.
    pub fn after_commit(&mut self, now: Instant, shared: &mut Shared) -> Step {
        let policy = shared.cfg.sync;
        let Some(mark) = self.round.take() else {
            return Step::default();
        };
        if self.stream.as_ref().is_some_and(|s| s.jet.is_some()) {
            // JetStream acknowledges these streams, not checkpoints.
            return Step::default();
        }
        if let ConnPhase::Attaching { .. } = self.phase {
            if !mark.attaching {
                return Step::default();
            }
            return self.attached(now, shared);
        }
        let Some(s) = &mut self.stream else {
            return Step::default();
        };
        let finishing = mark.finishing && matches!(self.phase, ConnPhase::Finishing { .. });
        if policy == SyncPolicy::Interval || finishing {
            s.ackable = s.ackable.max(mark.written);
        }
        if finishing {
            let end = s.writer.written();
            self.answer_done(end, now);
        } else {
            self.queue_ack();
        }
        let mut step = Step::default();
        if let Err(e) = self.flush() {
            crate::debug!("{}: write failed: {e}", self.peer);
            step.close = true;
        }
        if let ConnPhase::Closing { deadline, .. } = self.phase {
            if self.outbuf.is_empty() {
                let _ = self.sock.shutdown_write();
                self.shut_write = true;
                // With TLS the last records may still wait for the socket.
                step.close = self.sock.is_flushed();
            }
            step.wake_at = Some(deadline);
        }
        step
    }

    /// The stream ended at `end`, all of it acknowledged: the last `ACK`
    /// and `250 DONE` (to a client that asked for ACKs), then closing.
    pub(super) fn answer_done(&mut self, end: u64, now: Instant) {
        if let Some(s) = self.stream.as_mut().filter(|s| s.ack) {
            if end > s.acked {
                s.acknowledge(end);
                proto::write_ack(&mut self.outbuf, end);
            }
            proto::write_done(&mut self.outbuf, end);
        }
        self.phase = ConnPhase::Closing {
            deadline: now + LINGER,
            eof: true,
        };
    }

    /// The checkpoint covering this new stream is written: answer `200`,
    /// write what came with INIT, and read what arrived meanwhile.
    pub(super) fn attached(&mut self, now: Instant, shared: &mut Shared) -> Step {
        let s = self.stream.as_ref();
        let ready = proto::Reply {
            code: 200,
            text: "OK Ready to accept data",
            offset: s.and_then(|s| s.reply_offset),
            compression: s.and_then(|s| s.inflow.as_ref()).map(|f| f.codec().name()),
        };
        proto::write_reply_line(&mut self.outbuf, &ready);
        self.phase = ConnPhase::Streaming;
        let mut step = Step::default();
        self.write_data(&[], now, shared);
        self.stream(now, shared, &mut step);
        if let Err(e) = self.flush() {
            crate::debug!("{}: write failed: {e}", self.peer);
            step.close = true;
        }
        if let ConnPhase::Closing { deadline, .. } = self.phase {
            step.wake_at = Some(deadline);
        }
        step
    }

    /// The group checkpoint failed: refuse the stream if it was still
    /// attaching (returns true then).
    pub fn commit_failed(&mut self, now: Instant) -> bool {
        if self.stream.as_ref().is_some_and(|s| s.jet.is_some()) {
            self.round = None;
            return false;
        }
        let marked = self.round.take().is_some_and(|m| m.attaching);
        let attaching = marked && matches!(self.phase, ConnPhase::Attaching { .. });
        if attaching {
            self.fail(503, "Cannot commit server state", now);
        }
        attaching
    }
}
