//! Checkpoint rounds: making outputs durable, recording every stream's
//! offset and every output's length in the state file, and only then
//! letting connections acknowledge.
//!
//! A round marks every connection (what each had written when it began),
//! syncs the dirty outputs (a file system with many of them with one
//! `syncfs` on the syncer thread, see [`super::durable`]; the others on the
//! io_uring, at most [`RING_DEPTH`] in flight, or with blocking
//! `fdatasync`), writes the checkpoint taken when it began, and hands each
//! connection `after_commit`. At start-up,
//! [`recover`] loads the last checkpoint and repairs the outputs a crash
//! left longer than it says.

use std::time::{Duration, Instant};

use super::book::{Book, Resume};
use super::durable::{self, SYNCFS_AT};
use super::{Server, ServerError, Shared, StreamKey};
use crate::config::{ServerConfig, SyncPolicy};
use crate::reactor::sys::fs::syncfs;
use crate::sink::checkpoint::{self, Checkpoint, Delta};
use crate::sink::journal::{unix_now, RoundWrite, Store};

/// A checkpoint round whose output syncs run on the ring: the checkpoint
/// was taken when it began, and is written (and acknowledged) once every
/// sync completed.
pub(super) struct Round {
    started: Instant,
    /// Every output the round syncs (marked dirty again if the server
    /// stops before the round ends).
    all: Vec<usize>,
    /// Outputs whose sync has not been submitted yet.
    queue: Vec<usize>,
    /// `syncfs` jobs on the syncer thread, by token, with the outputs
    /// each one makes durable.
    filesystems: Vec<(u64, Vec<usize>)>,
    failed: Option<String>,
    checkpoint: Option<RoundWrite>,
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
        if let Some(cut) = self.round.take() {
            // The server stops with a round's syncs in flight: sync its
            // outputs here, so this checkpoint never vouches for bytes
            // only a killed `syncfs` thread would have written back.
            for id in cut.all {
                self.outputs.mark_dirty(id);
            }
        }
        if self.cfg.sync != SyncPolicy::None {
            let t0 = Instant::now();
            let failed = self.sync_dirty_here();
            self.metrics.observe_fsync(t0.elapsed());
            if let Some(why) = failed {
                self.commit_failed(&why);
                return false;
            }
        }
        match self.take_checkpoint() {
            Ok(w) => self.write_checkpoint(w),
            Err(why) => {
                self.commit_failed(&why);
                false
            }
        }
    }

    /// What this round writes (`None` without a state file): what changed
    /// since the last round, or everything when a snapshot is due (see
    /// [`crate::sink::journal`]).
    fn take_checkpoint(&mut self) -> Result<Option<RoundWrite>, String> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let outputs = self
            .outputs
            .marks()
            .map_err(|e| format!("cannot stat outputs: {e}"))?;
        if store.wants_full() {
            let streams = self.resume.take_all(storable);
            return Ok(Some(RoundWrite::Full(Checkpoint { outputs, streams })));
        }
        let (changed, closed) = store.output_changes(&outputs);
        let (streams, gone) = self.resume.take_changes(storable);
        Ok(Some(RoundWrite::Delta(Delta {
            outputs: changed,
            closed,
            streams,
            gone,
        })))
    }

    /// Writes a round taken earlier; false (and logged) on failure.
    fn write_checkpoint(&mut self, w: Option<RoundWrite>) -> bool {
        let (Some(store), Some(w)) = (self.store.as_mut(), w) else {
            return true;
        };
        match store.write(&w) {
            Ok(bytes) => {
                self.metrics.checkpoint_bytes.set(bytes as i64);
                self.metrics.streams_known.set(self.resume.len() as i64);
                if self.commit_failing {
                    crate::info!("state file written again");
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

    /// Forgets streams past `stream_retention` (or over the cap), at most
    /// every [`expiry_interval`] unless the book is crowded; the next round
    /// records them as gone.
    pub(super) fn expire_streams(&mut self, now: Instant) {
        if now < self.next_expiry && !self.resume.crowded() {
            return;
        }
        let retention = self.cfg.limits.stream_retention;
        self.next_expiry = now + expiry_interval(retention);
        let n = self.resume.expire(unix_now(), retention);
        self.metrics.streams_known.set(self.resume.len() as i64);
        if n > 0 {
            crate::info!(
                "forgot {n} streams not connected for {}h (stream_retention) or beyond the {} idle streams kept",
                retention.as_secs() / 3600,
                super::book::MAX_IDLE
            );
            self.metrics.streams_expired.inc_by(n as u64);
            self.dirty = true;
        }
    }

    /// Syncs every dirty output in the loop, blocking (no ring and no
    /// syncer thread, or at the last checkpoint): one `syncfs` for a file
    /// system with many of them, as a round does. Returns why it failed;
    /// what failed stays dirty.
    fn sync_dirty_here(&mut self) -> Option<String> {
        let dirty = self.outputs.take_dirty();
        let plan = durable::plan(&dirty, self.syncer.is_some(), SYNCFS_AT);
        let mut failed = None;
        for ids in plan.filesystems {
            let synced = self
                .outputs
                .clone_file(ids[0])
                .map(|f| f.and_then(|f| syncfs(&f)));
            if let Some(Err(e)) = synced {
                let path = self.outputs.path(ids[0]);
                failed.get_or_insert_with(|| {
                    format!(
                        "syncfs of the file system of {} failed: {e}",
                        crate::log::esc(&path)
                    )
                });
                ids.iter().for_each(|&id| self.outputs.mark_dirty(id));
            }
        }
        for id in plan.per_file {
            if let Err(e) = self.outputs.sync_one(id) {
                self.outputs.mark_dirty(id);
                let path = self.outputs.path(id);
                failed.get_or_insert_with(|| {
                    format!("fdatasync of {} failed: {e}", crate::log::esc(&path))
                });
            }
        }
        failed
    }

    /// Hands a `syncfs` of the file system of `ids` (outputs on one file
    /// system) to the syncer thread; false when it could not (no thread,
    /// no open descriptor): the caller syncs them one by one.
    fn submit_syncfs(&mut self, token: u64, ids: &[usize]) -> bool {
        let Some(syncer) = self.syncer.as_mut() else {
            return false;
        };
        let Some(file) = ids
            .iter()
            .find_map(|&id| self.outputs.clone_file(id).and_then(Result::ok))
        else {
            return false;
        };
        match syncer.submit(token, file) {
            Ok(()) => true,
            Err(e) => {
                crate::warn!("{e}; syncing outputs one by one");
                self.syncer = None;
                false
            }
        }
    }

    fn commit_failed(&mut self, why: &str) {
        self.metrics.checkpoint_failures.inc();
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
        let offloaded = self.shared.ring.is_some() || self.shared.syncer.is_some();
        if offloaded && self.shared.cfg.sync != SyncPolicy::None {
            self.begin_round(now);
            return;
        }
        let ok = self.shared.commit();
        if ok {
            self.shared.dirty = false;
        }
        self.finish_commit(ok, now);
    }

    /// Starts a round off the loop: takes the checkpoint now, plans the
    /// syncs of the dirty outputs ([`durable::plan`]), hands each file
    /// system with many of them to the syncer thread, queues an
    /// `fdatasync` of every other one (on the ring, at most [`RING_DEPTH`]
    /// in flight), and returns to the loop; [`on_ring`](Self::on_ring) and
    /// [`on_syncfs`](Self::on_syncfs) finish it.
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
        let dirty = sh.outputs.take_dirty();
        let plan = durable::plan(&dirty, sh.syncer.is_some(), SYNCFS_AT);
        let mut round = Round {
            started: Instant::now(),
            all: dirty.into_iter().map(|(id, _)| id).collect(),
            queue: plan.per_file,
            filesystems: Vec::new(),
            failed: None,
            checkpoint,
        };
        for (token, ids) in (0u64..).zip(plan.filesystems) {
            if sh.submit_syncfs(token, &ids) {
                round.filesystems.push((token, ids));
            } else {
                round.queue.extend(ids);
            }
        }
        sh.round = Some(round);
        self.feed_ring(now);
    }

    /// Submits queued syncs while fewer than [`RING_DEPTH`] are in flight
    /// (without a ring: runs them here, blocking); ends the round when
    /// nothing is queued or in flight.
    fn feed_ring(&mut self, now: Instant) {
        let sh = &mut self.shared;
        let Some(round) = sh.round.as_mut() else {
            return;
        };
        match sh.ring.as_mut() {
            Some(ring) => {
                while ring.in_flight() < RING_DEPTH {
                    let Some(id) = round.queue.pop() else { break };
                    if let Err(e) = sh.outputs.submit_sync(ring, id) {
                        sh.outputs.mark_dirty(id);
                        round
                            .failed
                            .get_or_insert_with(|| format!("cannot submit fdatasync: {e}"));
                    }
                }
            }
            None => {
                while let Some(id) = round.queue.pop() {
                    if let Err(e) = sh.outputs.sync_one(id) {
                        sh.outputs.mark_dirty(id);
                        let path = sh.outputs.path(id);
                        round.failed.get_or_insert_with(|| {
                            format!("fdatasync of {} failed: {e}", crate::log::esc(&path))
                        });
                    }
                }
            }
        }
        let in_flight = sh.ring.as_ref().map_or(0, |r| r.in_flight());
        if round.queue.is_empty() && in_flight == 0 && round.filesystems.is_empty() {
            self.end_round(now);
        }
    }

    /// `syncfs` jobs completed: a failed one leaves its outputs dirty and
    /// the round failed; the round ends once nothing else is pending.
    pub(super) fn on_syncfs(&mut self, now: Instant) {
        let mut done = Vec::new();
        if let Some(s) = self.shared.syncer.as_mut() {
            s.reap(&mut done);
        }
        if done.is_empty() {
            return;
        }
        let sh = &mut self.shared;
        if let Some(round) = sh.round.as_mut() {
            for (token, result) in done {
                let Some(at) = round.filesystems.iter().position(|f| f.0 == token) else {
                    continue;
                };
                let (_, ids) = round.filesystems.swap_remove(at);
                if let Err(e) = result {
                    let path = sh.outputs.path(ids[0]);
                    for id in ids {
                        sh.outputs.mark_dirty(id);
                    }
                    round.failed.get_or_insert_with(|| {
                        format!(
                            "syncfs of the file system of {} failed: {e}",
                            crate::log::esc(&path)
                        )
                    });
                }
            }
        }
        self.feed_ring(now);
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
                        format!("fdatasync of {} failed: {e}", crate::log::esc(&path))
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
            let _log = crate::log_scope!(peer = conn.peer);
            let step = conn.after_commit(now, &mut self.shared);
            self.apply(key, step);
        }
    }
}

/// Wire input is bounded before it is written (`MAX_OFFSET`), so this
/// drops nothing; if a bug let one through, it costs that stream its
/// record instead of every stream its checkpoint.
fn storable(k: &StreamKey, r: &Resume) -> bool {
    let ok = r.offset <= crate::proto::MAX_OFFSET;
    if !ok {
        crate::error!(
            "{}:{} (id {}): offset {} cannot be recorded; leaving it out of the checkpoint",
            crate::log::esc(&k.host),
            crate::log::esc(&k.path),
            crate::log::esc(&k.id),
            r.offset
        );
    }
    ok
}

/// How often streams are looked at for expiry: a quarter of the
/// retention, between 100 ms and a minute.
fn expiry_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Loads the checkpoint and repairs outputs after a crash (see
/// [`checkpoint`]); returns the store to write checkpoints to and the
/// offsets of every known stream.
pub(super) fn recover(cfg: &ServerConfig) -> Result<(Option<Store>, Book), ServerError> {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = cfg.state_path() else {
        crate::warn!("no `directory` and no `state_file`: stream offsets are kept in memory only");
        return Ok((None, Book::default()));
    };
    let (mut store, mut cp) = Store::open(&path).map_err(ServerError::State)?;
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
    // Off the confirm path: the first stream's `200` and `250 DONE` then
    // wait for one journal append each (a failure here is retried by the
    // first round, which writes the snapshot then).
    if let Err(e) = store.prepare(&cp) {
        crate::warn!("{e}; writing it again at the first checkpoint");
    }
    let book = Book::loaded(cp.streams.into_iter().map(|s| {
        let key = StreamKey {
            host: s.host,
            path: s.path,
            id: s.id,
        };
        let mut resume = Resume::new(s.offset, s.output, s.seen);
        resume.owner = s.owner;
        (key, resume)
    }));
    Ok((Some(store), book))
}
