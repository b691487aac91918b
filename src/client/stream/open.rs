//! Opening the file at a stream's path: claiming its entry from the state
//! file by identity (resuming at the acknowledged offset), starting over
//! under a new id when the file was rewritten in place, and waiting or
//! retrying when it is missing, unreadable or descriptors run out.
//!
//! `tick` in `mod.rs` calls `open` while the stream is `Missing` and its
//! retry time has come; a file rotated away while the client was not
//! looking is found first by `rotation.rs`.

use std::fs::File;
use std::io;
use std::time::Duration;

use super::{Ctx, FileState, Stream, Tracked, REOPEN_RETRY};
use crate::tail::identity::{stream_id, unique_suffix, Identity};

/// How soon an open that failed for lack of descriptors is retried.
const FD_PRESSURE_RETRY: Duration = Duration::from_millis(100);

impl Stream {
    /// Opens the file at `path` (state `Missing` → `Following`; on
    /// `NotFound` it stays `Missing` with no retry time: the directory watch
    /// calls [`check_path`](Self::check_path) when the name appears), resuming
    /// from the state file when the file there is the one it recorded.
    pub(super) fn open(&mut self, ctx: &mut Ctx<'_>) {
        if self.resume_rotated(ctx) {
            return;
        }
        let Some(file) = self.open_path(ctx) else {
            return;
        };
        let identity = match Identity::of(&file) {
            Ok(i) => i,
            Err(e) => {
                crate::warn!("cannot read {}: {e}; retrying", self.path.display());
                self.state = FileState::Missing {
                    retry_at: Some(ctx.now + REOPEN_RETRY),
                };
                return;
            }
        };
        let was_parked = std::mem::take(&mut self.parked);
        let (id, offset, resumed) = self.claim_entry(ctx, &file, &identity);
        if was_parked && resumed {
            crate::debug!("{}: reopened at offset {offset}", self.path.display());
        } else {
            crate::info!("{}: following from offset {offset}", self.path.display());
        }
        self.file = Some(Tracked {
            file,
            identity,
            id,
            _slot: ctx.open_files.slot(),
        });
        self.state = FileState::Following;
        self.acked = offset;
        // A parked file reopened as itself: its offset is the server's
        // (nothing was lost in between), no need to ask again.
        self.verify = !(was_parked && resumed);
        self.sent = offset;
        self.clear_buf();
        *ctx.save_soon = true;
    }

    /// Opens the file at `path`; on failure sets the `Missing` state with
    /// its retry time (and flags descriptor pressure) and returns `None`.
    fn open_path(&mut self, ctx: &mut Ctx<'_>) -> Option<File> {
        match File::open(&self.path) {
            Ok(f) => Some(f),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                // Out of descriptors: the daemon parks idle files; retry soon.
                *ctx.fd_pressure = true;
                self.state = FileState::Missing {
                    retry_at: Some(ctx.now + FD_PRESSURE_RETRY),
                };
                None
            }
            Err(e) => {
                let retry_at = if e.kind() == io::ErrorKind::NotFound {
                    crate::debug!(
                        "{}: not there yet; waiting for it to appear",
                        self.path.display()
                    );
                    None
                } else {
                    crate::warn!(
                        "cannot open {}: {e}; retrying in {}s",
                        self.path.display(),
                        REOPEN_RETRY.as_secs()
                    );
                    Some(ctx.now + REOPEN_RETRY)
                };
                self.state = FileState::Missing { retry_at };
                None
            }
        }
    }

    /// The id and offset to stream the opened `file` under: its state-file
    /// entry if it is the file recorded there (taken out of `loaded`; the
    /// flag is then true), else a new id from offset 0.
    fn claim_entry(
        &self,
        ctx: &mut Ctx<'_>,
        file: &File,
        identity: &Identity,
    ) -> (String, u64, bool) {
        let claimed = ctx
            .loaded
            .iter()
            .position(|e| e.path == self.path && e.identity.matches(file).unwrap_or(false));
        // The same inode under the same path but other first bytes: the
        // file was truncated and rewritten while we were away. Its derived
        // id is the old file's, whose offset the server still holds: use a
        // fresh id so the new content starts at 0.
        let rewritten = claimed.is_none()
            && ctx.loaded.iter().any(|e| {
                e.path == self.path
                    && (e.identity.dev, e.identity.ino) == (identity.dev, identity.ino)
            });
        let resumed = claimed.is_some();
        let (id, offset) = match claimed.map(|i| ctx.loaded.swap_remove(i)) {
            Some(e) => (e.id, e.offset),
            None if rewritten => {
                ctx.meter.truncations.inc();
                crate::warn!(
                    "{}: rewritten in place since the last run; sending it from the start",
                    self.path.display()
                );
                ctx.loaded.retain(|e| e.path != self.path);
                (
                    format!("{}-t{:x}", stream_id(file, identity), unique_suffix()),
                    0,
                )
            }
            None => (stream_id(file, identity), 0),
        };
        (id, offset, resumed)
    }
}
