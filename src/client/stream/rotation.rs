//! What happens when the path stops naming the file being read: rotation
//! by rename (drain the old file, then the files that appeared since, in
//! order), `onrotate = "stop"`, and deleted files held too long.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use super::{Ctx, FileState, Stream, Tracked};
use crate::tail::identity::{stream_id, unique_suffix, Identity};

impl Stream {
    /// The directory changed under our name: has the path become another file?
    pub fn check_path(&mut self, ctx: &mut Ctx<'_>) {
        match self.state {
            FileState::Missing { .. } if !self.stopping => {
                self.state = FileState::Missing {
                    retry_at: Some(ctx.now),
                }
            }
            FileState::Missing { .. } => {}
            FileState::Following => {
                let Some(t) = &self.file else { return };
                let moved = match std::fs::metadata(&self.path) {
                    Ok(m) => m.dev() != t.identity.dev || m.ino() != t.identity.ino,
                    Err(_) => true,
                };
                if moved {
                    ctx.meter.rotations.inc();
                    crate::info!(
                        "{}: rotated; reading the old file to its end",
                        self.path.display()
                    );
                    self.state = FileState::Rotated {
                        last_growth: ctx.now,
                    };
                    self.adopt_successor(ctx);
                }
            }
            FileState::Rotated { .. } => self.adopt_successor(ctx),
        }
    }

    /// At start-up: the state file records a file for this path that is no
    /// longer the one at the path. It was rotated while the client was away
    /// (or the client was killed while draining it). If it is still in the
    /// same directory under another name (found by device and inode, checked
    /// by fingerprint), its unacknowledged tail is read first, as if the
    /// rotation had just happened; the file at the path follows. Returns
    /// false when there is no such file to finish.
    pub(super) fn resume_rotated(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if self.whole || self.file.is_some() {
            return false;
        }
        let Some(i) = ctx
            .loaded
            .iter()
            .position(|e| e.path == self.path && !e.complete)
        else {
            return false;
        };
        let want = (ctx.loaded[i].identity.dev, ctx.loaded[i].identity.ino);
        let at_path = std::fs::metadata(&self.path).map(|m| (m.dev(), m.ino()));
        if at_path.as_ref().is_ok_and(|k| *k == want) {
            return false;
        }
        let Some((old_path, file)) = find_in_dir(&self.path, want) else {
            return false;
        };
        let Ok(now_identity) = Identity::of(&file) else {
            return false;
        };
        let mut e = ctx.loaded.swap_remove(i);
        ctx.meter.rotations.inc();
        if !e.identity.matches(&file).unwrap_or(false) {
            // Other first bytes. The same file (same birth time, which the
            // id was derived from) truncated and rewritten before it was
            // rotated: its new content is sent from 0 under a new id. An
            // inode reused by some other file is left alone.
            let born = stream_id(&file, &now_identity);
            if born.contains("-t") || !e.id.starts_with(&born) {
                ctx.loaded.push(e);
                return false;
            }
            crate::warn!(
                "{}: rewritten and rotated to {} while not held open; sending it from the start",
                self.path.display(),
                old_path.display()
            );
            ctx.meter.truncations.inc();
            e.id = format!("{born}-t{:x}", unique_suffix());
            e.offset = 0;
            e.identity = now_identity;
        } else {
            crate::info!(
                "{}: rotated to {} while not held open (client restart or parked file); finishing it from offset {} first",
                self.path.display(),
                old_path.display(),
                e.offset
            );
        }
        self.file = Some(Tracked {
            file,
            identity: e.identity,
            id: e.id,
            _slot: ctx.open_files.slot(),
        });
        self.parked = false;
        self.state = FileState::Rotated {
            last_growth: ctx.now,
        };
        self.acked = e.offset;
        self.sent = e.offset;
        self.verify = true;
        self.clear_buf();
        self.adopt_successor(ctx);
        *ctx.save_soon = true;
        true
    }

    /// True when the drained file was deleted (no link left) more than
    /// `deleted_hold` ago; notes when it was first seen deleted.
    pub(super) fn deleted_too_long(&mut self, now: Instant, ctx: &Ctx<'_>) -> bool {
        let nlink = self
            .file
            .as_ref()
            .and_then(|t| t.file.metadata().ok())
            .map_or(1, |m| m.nlink());
        if nlink > 0 {
            self.deleted_since = None;
            return false;
        }
        let since = *self.deleted_since.get_or_insert(now);
        now >= since + ctx.settings.deleted_hold
    }

    /// Gives up a deleted file that could not be delivered in time, so its
    /// disk space comes back; what is lost is logged and counted.
    pub(super) fn abandon(&mut self, ctx: &mut Ctx<'_>) {
        let len = self.file_len().unwrap_or(0);
        let lost = len.saturating_sub(self.acked);
        crate::error!(
            "{}: a deleted file was held {}s without being delivered; abandoning its last {lost} bytes to free the disk space",
            self.path.display(),
            ctx.settings.deleted_hold.as_secs()
        );
        *ctx.abandoned_bytes += lost;
        self.deleted_since = None;
        self.acked = self.sent;
        self.done_at = Some(self.sent);
        self.switch_after_rotation(ctx);
    }

    /// Opens the file now at the path, if it is one we do not hold yet, and
    /// queues it behind the file being drained. Holding its descriptor at
    /// once means that if it is rotated away too before its turn, it is
    /// still read whole: rotations faster than the client drains lose
    /// nothing, as long as each new file is seen (inotify) before it is
    /// itself rotated.
    pub(super) fn adopt_successor(&mut self, ctx: &Ctx<'_>) {
        if !self.follow {
            return;
        }
        let Ok(file) = File::open(&self.path) else {
            return;
        };
        let Ok(identity) = Identity::of(&file) else {
            return;
        };
        let known = |t: &Tracked| (t.identity.dev, t.identity.ino) == (identity.dev, identity.ino);
        if self.file.as_ref().is_some_and(known) || self.successors.iter().any(known) {
            return;
        }
        let id = stream_id(&file, &identity);
        self.successors.push_back(Tracked {
            file,
            identity,
            id,
            _slot: ctx.open_files.slot(),
        });
    }

    pub(super) fn switch_after_rotation(&mut self, ctx: &mut Ctx<'_>) {
        crate::info!(
            "{}: old file done at offset {}; switching to the new file",
            self.path.display(),
            self.acked
        );
        self.drop_link(ctx, None);
        self.retry_at = None;
        self.file = None;
        self.reading_copy = false;
        if let Some(next) = self.successors.pop_front().filter(|_| self.follow) {
            // The next file, held since it appeared: it may itself have been
            // rotated away meanwhile, then it is drained the same way.
            let at_path = std::fs::metadata(&self.path)
                .is_ok_and(|m| (m.dev(), m.ino()) == (next.identity.dev, next.identity.ino));
            if !at_path {
                // Rotated away too while it waited for its turn.
                ctx.meter.rotations.inc();
            }
            self.state = if at_path && self.successors.is_empty() {
                FileState::Following
            } else {
                FileState::Rotated {
                    last_growth: ctx.now,
                }
            };
            self.file = Some(next);
            self.acked = 0;
            self.sent = 0;
            self.done_at = None;
            self.clear_buf();
            if !at_path {
                self.adopt_successor(ctx);
            }
        } else if self.follow {
            self.state = FileState::Missing {
                retry_at: Some(ctx.now),
            };
        } else {
            crate::info!(
                "{}: onrotate = \"stop\": not following the new file",
                self.path.display()
            );
            self.state = FileState::Missing { retry_at: None };
            self.stopping = true;
        }
        *ctx.save_soon = true;
    }
}

/// A regular file in `path`'s directory, other than `path`, with this
/// device and inode.
fn find_in_dir(path: &std::path::Path, (dev, ino): (u64, u64)) -> Option<(PathBuf, File)> {
    let dir = path.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p != path)
        .find(|p| {
            std::fs::symlink_metadata(p)
                .is_ok_and(|m| m.is_file() && (m.dev(), m.ino()) == (dev, ino))
        })
        .and_then(|p| File::open(&p).ok().map(|f| (p, f)))
}
