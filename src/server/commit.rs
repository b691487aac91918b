//! Checkpoint rounds: making outputs durable, recording every stream's
//! offset and every output's length in the state file, and only then
//! letting connections acknowledge.
//!
//! A round marks every connection (what each had written when it began),
//! syncs the dirty outputs (on the io_uring, at most [`RING_DEPTH`] in
//! flight, or with blocking `fdatasync`), writes the checkpoint taken when
//! it began, and hands each connection `after_commit`. At start-up,
//! [`recover`] loads the last checkpoint and repairs the outputs a crash
//! left longer than it says.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use super::{Resume, Server, ServerError, Shared, StreamKey, MAX_IDLE_RESUME};
use crate::config::{ServerConfig, SyncPolicy};
use crate::sink::checkpoint::{self, Checkpoint, StreamMark};

/// A checkpoint round whose output syncs run on the ring: the checkpoint
/// was taken when it began, and is written (and acknowledged) once every
/// sync completed.
pub(super) struct Round {
    started: Instant,
    /// Outputs whose sync has not been submitted yet.
    queue: Vec<usize>,
    failed: Option<String>,
    checkpoint: Option<Checkpoint>,
}

/// Most syncs in flight on the ring at once: well inside its completion
/// queue (twice its 64 entries), so no completion ever overflows.
pub(super) const RING_DEPTH: usize = 32;

impl Shared {
    /// Makes outputs durable (per the sync policy) and writes a checkpoint
    /// of every stream's offset and every open output's length. Returns
    /// false (and logs) when that failed; nothing may be acknowledged then.
    pub fn commit(&mut self) -> bool {
        self.commit_requested = false;
        if self.cfg.sync != SyncPolicy::None {
            let t0 = Instant::now();
            let failed = self.outputs.sync_dirty();
            self.metrics.observe_fsync(t0.elapsed());
            if let Some((path, e)) = failed.first() {
                self.commit_failed(&format!("fdatasync of {} failed: {e}", path.display()));
                return false;
            }
        }
        match self.take_checkpoint() {
            Ok(cp) => self.write_checkpoint(cp),
            Err(why) => {
                self.commit_failed(&why);
                false
            }
        }
    }

    /// Every stream's offset and every open output's length, now (`None`
    /// without a state file).
    fn take_checkpoint(&self) -> Result<Option<Checkpoint>, String> {
        if self.checkpoint.is_none() {
            return Ok(None);
        }
        let outputs = self
            .outputs
            .marks()
            .map_err(|e| format!("cannot stat outputs: {e}"))?;
        let streams = self
            .resume
            .iter()
            .map(|(k, r)| StreamMark {
                host: k.host.clone(),
                path: k.path.clone(),
                id: k.id.clone(),
                offset: r.offset,
                output: r.output.clone(),
                attached: r.conn.is_some(),
            })
            .collect();
        Ok(Some(Checkpoint { outputs, streams }))
    }

    /// Writes a checkpoint taken earlier; false (and logged) on failure.
    fn write_checkpoint(&mut self, cp: Option<Checkpoint>) -> bool {
        let (Some(path), Some(cp)) = (&self.checkpoint, cp) else {
            return true;
        };
        match checkpoint::save(path, &cp) {
            Ok(()) => {
                if self.commit_failing {
                    crate::info!("state file {} written again", path.display());
                    self.commit_failing = false;
                }
                true
            }
            Err(e) => {
                self.commit_failed(&e.to_string());
                false
            }
        }
    }

    fn commit_failed(&mut self, why: &str) {
        if !self.commit_failing {
            crate::error!("checkpoint failed: {why}; not acknowledging until it works");
            self.commit_failing = true;
        }
    }
}

impl Server {
    /// Checkpoints, then lets every connection acknowledge what the
    /// checkpoint covers (and answer `250 DONE` to finished streams).
    pub(super) fn commit_and_ack(&mut self, now: Instant) {
        if self.shared.round.is_some() {
            // One round at a time: this request waits for the next.
            self.shared.commit_requested = true;
            return;
        }
        for conn in self.conns.values_mut() {
            conn.mark_round();
        }
        if self.shared.ring.is_some() && self.shared.cfg.sync != SyncPolicy::None {
            self.begin_round(now);
            return;
        }
        let ok = self.shared.commit();
        if ok {
            self.shared.dirty = false;
        }
        self.finish_commit(ok, now);
    }

    /// Starts a round on the ring: takes the checkpoint now, queues an
    /// `fdatasync` of every dirty output (at most [`RING_DEPTH`] in flight),
    /// and returns to the loop; [`on_ring`](Self::on_ring) finishes it.
    fn begin_round(&mut self, now: Instant) {
        let sh = &mut self.shared;
        sh.commit_requested = false;
        let checkpoint = match sh.take_checkpoint() {
            Ok(cp) => cp,
            Err(why) => {
                sh.commit_failed(&why);
                return self.finish_commit(false, now);
            }
        };
        // What is written from now on belongs to the next round.
        sh.dirty = false;
        sh.round = Some(Round {
            started: Instant::now(),
            queue: sh.outputs.take_dirty(),
            failed: None,
            checkpoint,
        });
        self.feed_ring(now);
    }

    /// Submits queued syncs while fewer than [`RING_DEPTH`] are in flight;
    /// ends the round when nothing is queued or in flight.
    fn feed_ring(&mut self, now: Instant) {
        let sh = &mut self.shared;
        let (Some(ring), Some(round)) = (sh.ring.as_mut(), sh.round.as_mut()) else {
            return;
        };
        while ring.in_flight() < RING_DEPTH {
            let Some(id) = round.queue.pop() else { break };
            if let Err(e) = sh.outputs.submit_sync(ring, id) {
                sh.outputs.mark_dirty(id);
                round
                    .failed
                    .get_or_insert_with(|| format!("cannot submit fdatasync: {e}"));
            }
        }
        if round.queue.is_empty() && ring.in_flight() == 0 {
            self.end_round(now);
        }
    }

    /// Output syncs completed: when the round has none left, write its
    /// checkpoint and acknowledge what it covers.
    pub(super) fn on_ring(&mut self, now: Instant) {
        let mut done = Vec::new();
        if let Some(ring) = self.shared.ring.as_mut() {
            ring.reap(&mut done);
        }
        for (token, result) in done {
            if let Err(e) = result {
                let id = token as usize;
                self.shared.outputs.mark_dirty(id);
                let path = self.shared.outputs.path_of(id).unwrap_or_default();
                if let Some(r) = self.shared.round.as_mut() {
                    r.failed.get_or_insert_with(|| {
                        format!("fdatasync of {} failed: {e}", path.display())
                    });
                }
            }
        }
        self.feed_ring(now);
    }

    fn end_round(&mut self, now: Instant) {
        let Some(round) = self.shared.round.take() else {
            return;
        };
        self.shared.metrics.observe_fsync(round.started.elapsed());
        let ok = match round.failed {
            Some(why) => {
                self.shared.commit_failed(&why);
                false
            }
            None => self.shared.write_checkpoint(round.checkpoint),
        };
        if !ok {
            self.shared.dirty = true;
        }
        self.finish_commit(ok, now);
        if self.shared.commit_requested {
            self.commit_and_ack(now);
        }
    }

    /// After a checkpoint (`ok`) or a failed one: acknowledge, or refuse
    /// the streams that were waiting to attach.
    fn finish_commit(&mut self, ok: bool, now: Instant) {
        if !ok {
            for key in self.conns.keys() {
                if self
                    .conns
                    .get_mut(key)
                    .is_some_and(|c| c.commit_failed(now))
                {
                    self.shared.metrics.handshake_failed(
                        crate::metrics::server::HandshakeFailure::StateUnavailable,
                    );
                    self.on_conn_event(key.token(), now);
                }
            }
            return;
        }
        for key in self.conns.keys() {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let step = conn.after_commit(now, &mut self.shared);
            if let Some(at) = step.wake_at {
                self.reactor.timers.schedule(at, key.token());
            }
            if step.again {
                self.again.push(key.token());
            }
            if step.close {
                self.close(key);
            }
        }
    }
}

/// Loads the checkpoint and repairs outputs after a crash (see
/// [`checkpoint`]); returns where to write checkpoints and the offsets of
/// every known stream.
pub(super) fn recover(
    cfg: &ServerConfig,
) -> Result<(Option<PathBuf>, HashMap<StreamKey, Resume>), ServerError> {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = cfg.state_path() else {
        crate::warn!("no `directory` and no `state_file`: stream offsets are kept in memory only");
        return Ok((None, HashMap::new()));
    };
    let mut cp = checkpoint::load(&path).map_err(ServerError::State)?;
    let stat = |p: &std::path::Path| {
        std::fs::symlink_metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| (m.dev(), m.ino(), m.len()))
    };
    let plan = checkpoint::plan_recovery(&cp, stat);
    for line in checkpoint::apply_recovery(&mut cp, &plan)
        .map_err(|source| ServerError::Recovery { source })?
    {
        crate::warn!("recovery: {line}");
    }
    let now = Instant::now();
    let resume = cp
        .streams
        .into_iter()
        .map(|s| {
            let key = StreamKey {
                host: s.host,
                path: s.path,
                id: s.id,
            };
            (
                key,
                Resume {
                    offset: s.offset,
                    conn: None,
                    last_seen: now,
                    output: s.output,
                },
            )
        })
        .collect();
    Ok((Some(path), resume))
}

/// Bounds the memory held for disconnected streams: drops the least
/// recently seen ones beyond [`MAX_IDLE_RESUME`].
pub(super) fn prune_resume(resume: &mut HashMap<StreamKey, Resume>) {
    if resume.len() <= MAX_IDLE_RESUME {
        return;
    }
    let idle = resume.values().filter(|r| r.conn.is_none()).count();
    if idle <= MAX_IDLE_RESUME {
        return;
    }
    let mut seen: Vec<Instant> = resume
        .values()
        .filter(|r| r.conn.is_none())
        .map(|r| r.last_seen)
        .collect();
    seen.sort_unstable();
    let cutoff = seen[idle - MAX_IDLE_RESUME];
    resume.retain(|_, r| r.conn.is_some() || r.last_seen >= cutoff);
}
