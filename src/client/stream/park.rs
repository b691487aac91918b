//! Parking: closing the descriptor of an idle followed file when the
//! client holds too many (`max_open_files`, or the kernel said EMFILE),
//! and reopening it, checked by identity, when its directory reports a
//! change.
//!
//! Only a file with nothing to do is parked: followed at its path, every
//! byte read, sent and acknowledged, no connection, no rotated file queued.
//! Its position goes back to the daemon's loaded entries (the ones read from
//! the state file at start-up, saved with every state file), so reopening
//! is exactly a restart of that one file: the same file at the path resumes
//! at its acknowledged offset; a file rotated away meanwhile is found in the
//! directory by inode and finished first; a file rewritten in place starts
//! over under a new id. The only thing parking cannot do is read a file
//! that was appended to and deleted before the client reopened it (the
//! directory's events make that window a turn of the loop).

use super::{Ctx, FileState, Phase, Stream};
use crate::tail::state::Entry;

impl Stream {
    /// True when this stream's file can be closed now without losing its
    /// place.
    pub fn parkable(&self) -> bool {
        let Some(t) = &self.file else { return false };
        self.state == FileState::Following
            && !self.whole
            && !self.stopping
            && !self.verify
            && self.link.is_none()
            && self.successors.is_empty()
            && self.unsent() == 0
            && self.acked == self.sent
            && t.file.metadata().is_ok_and(|m| m.len() == self.acked)
    }

    /// Closes the idle file; its entry waits in `ctx.loaded` until the
    /// directory reports a change of its name. Returns false (and does
    /// nothing) if it is not [`parkable`](Self::parkable).
    pub fn park(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if !self.parkable() {
            return false;
        }
        let Some(t) = self.file.take() else {
            return false;
        };
        crate::debug!(
            "{}: parked at offset {} (too many open files)",
            self.path.display(),
            self.acked
        );
        ctx.loaded.push(Entry {
            id: t.id,
            path: self.path.clone(),
            identity: t.identity,
            offset: self.acked,
            complete: false,
        });
        self.parked = true;
        self.state = FileState::Missing { retry_at: None };
        if !self.buf.is_empty() {
            self.release_buffer(ctx, super::fill::initial_buffer(ctx.settings));
        }
        self.clear_buf();
        true
    }

    /// Under descriptor pressure: parks the file if it is idle, or, if only
    /// its connection keeps it from being idle (everything acknowledged,
    /// quiet for a second), ends that connection so the next round can
    /// park it. Returns true when the file was parked.
    pub fn release_idle(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if self.park(ctx) {
            return true;
        }
        let idle = ctx.now >= self.last_active + std::time::Duration::from_secs(1)
            && self.state == FileState::Following
            && !self.whole
            && !self.stopping
            && self.successors.is_empty()
            && self.unsent() == 0
            && self.acked == self.sent;
        if let Some(link) = self.link.as_mut().filter(|l| l.phase == Phase::Up && idle) {
            link.finish();
        }
        false
    }

    /// A parked stream's name changed in its directory: reopen it now.
    pub(super) fn unpark_on_event(&mut self, ctx: &Ctx<'_>) {
        if self.parked && matches!(self.state, FileState::Missing { .. }) && !self.stopping {
            self.state = FileState::Missing {
                retry_at: Some(ctx.now),
            };
        }
    }
}
