//! Reading a stream's file into its buffer: adaptive buffer sizes from a
//! shared pool, and truncation detected while reading.

use std::io;
use std::os::unix::fs::FileExt;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::{Ctx, FileState, Settings, Stream, Tracked, POOL_MAX};
use crate::tail::identity::{stream_id, unique_suffix, Identity};

/// Bytes before the read position that every first read of a followed
/// file reads again and compares: a file truncated and rewritten past our
/// position between two looks (so it never looked shorter) has other bytes
/// there. This costs no extra syscall: the overlap comes with the read.
pub(super) const OVERLAP: usize = 256;

impl Stream {
    /// Reads from the file into the free part of the buffer.
    ///
    /// The buffer starts at `initial_buffer` bytes, doubles (up to
    /// `max_batch`) while reads keep filling it (the file is behind), and
    /// goes back to the shared pool once everything read was sent, so an
    /// idle file holds no buffer at all.
    pub(super) fn fill(&mut self, ctx: &mut Ctx<'_>) -> io::Result<Fill> {
        if self.file.is_none() {
            return Ok(Fill::Eof);
        }
        let initial = initial_buffer(ctx.settings);
        if self.buf.is_empty() {
            self.buf = ctx.pool.pop().unwrap_or_else(|| vec![0; initial]);
        } else if self.head > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.head..self.end, 0);
            self.end -= self.head;
            self.head = 0;
        }
        if self.behind && self.buf.len() < ctx.settings.max_batch {
            let grown = (self.buf.len() * 2).min(ctx.settings.max_batch);
            self.buf.resize(grown, 0);
        }
        // One `pread` per call in the common case (an append to a followed
        // file): the overlap check below comes with the read, proves the
        // file still holds everything before `pos`, and a short read means
        // the end of the file. Only a read that finds nothing, without
        // that proof, asks the file's length (it may have shrunk below us).
        let pos = self.sent + self.unsent() as u64;
        let mut result = Fill::Eof;
        let (verified, mut at_end) = match self.read_checked(pos)? {
            Checked::Unchecked => (false, false),
            Checked::Read { new, eof } => {
                if new > 0 {
                    ctx.meter.read.inc_by(new as u64);
                    result = Fill::Read;
                }
                (true, eof)
            }
            Checked::Changed => {
                let len = self.file_len().unwrap_or(0);
                if len >= pos {
                    crate::warn!(
                        "{}: the bytes before offset {pos} changed: truncated and rewritten",
                        self.path.display()
                    );
                }
                return Ok(Fill::Truncated(len));
            }
        };
        let Some(t) = &self.file else {
            return Ok(Fill::Eof);
        };
        while !at_end && self.end < self.buf.len() {
            let pos = self.sent + self.unsent() as u64;
            let want = self.buf.len() - self.end;
            match t.file.read_at(&mut self.buf[self.end..], pos) {
                Ok(0) => {
                    // A file being drained after a rotation (or a copy
                    // being read after a copytruncate) simply ends.
                    if !verified && self.may_be_truncated() {
                        let len = t.file.metadata()?.len();
                        if len < pos {
                            return Ok(Fill::Truncated(len));
                        }
                    }
                    break;
                }
                Ok(n) => {
                    ctx.meter.read.inc_by(n as u64);
                    self.end += n;
                    result = Fill::Read;
                    // A short read of a regular file: its end, for now.
                    at_end = n < want;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.behind = self.end == self.buf.len();
        if result == Fill::Read {
            if let Some(t) = &mut self.file {
                if t.identity.refresh(&t.file, pos)? {
                    // Rewritten before we read it: record what we read.
                    *ctx.save_soon = true;
                }
            }
        } else if self.unsent() == 0 {
            self.release_buffer(ctx, initial);
        }
        Ok(result)
    }

    /// Gives an empty buffer back to the pool (only the common size is
    /// pooled; a grown one is freed).
    pub(super) fn release_buffer(&mut self, ctx: &mut Ctx<'_>, initial: usize) {
        self.keep_tail();
        let buf = std::mem::take(&mut self.buf);
        if buf.len() == initial && ctx.pool.len() < POOL_MAX {
            ctx.pool.push(buf);
        }
        self.head = 0;
        self.end = 0;
    }

    /// The file shrank below what we read: start it over at 0 under a new
    /// stream id (the server must not resume the old content's offset).
    pub(super) fn truncated(&mut self, len: u64, ctx: &mut Ctx<'_>) {
        if self.state == FileState::Following && self.recover_from_copy(ctx) {
            return;
        }
        let Some(t) = &mut self.file else { return };
        ctx.meter.truncations.inc();
        crate::warn!(
            "{}: truncated (now {len} bytes, we were at {}); starting over from 0",
            self.path.display(),
            self.sent
        );
        if let Ok(identity) = Identity::of(&t.file) {
            t.identity = identity;
        }
        t.id = format!("{}-t{:x}", stream_id(&t.file, &t.identity), unique_suffix());
        self.drop_link(ctx, None);
        self.retry_at = None;
        self.acked = 0;
        self.sent = 0;
        self.clear_buf();
        *ctx.save_soon = true;
    }
}

impl Stream {
    /// copytruncate: logrotate copied the file, then truncated it. If the
    /// copy is in the same directory (recognised by the fingerprint of the
    /// first bytes), the rest of the old content is read from the copy
    /// under the old stream id, as if the file had been renamed, and the
    /// truncated file follows under a new id. Returns false when there is
    /// no copy to recover from.
    fn recover_from_copy(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let Some((copy_path, copy)) = self.find_copy() else {
            return false;
        };
        let Ok(copy_identity) = Identity::of(&copy) else {
            return false;
        };
        let Some(mut t) = self.file.take() else {
            return false;
        };
        // Read on as if the file had been renamed: a rotation.
        ctx.meter.rotations.inc();
        crate::warn!(
            "{}: truncated (copytruncate); reading the rest of the old content from its copy {}, then the file from 0",
            self.path.display(),
            copy_path.display()
        );
        let original = std::mem::replace(&mut t.file, copy);
        t.identity = Identity {
            fp: t.identity.fp,
            fp_len: t.identity.fp_len,
            ..copy_identity
        };
        self.file = Some(t);
        if let Ok(identity) = Identity::of(&original) {
            let id = format!("{}-t{:x}", stream_id(&original, &identity), unique_suffix());
            self.successors.push_front(Tracked {
                file: original,
                identity,
                id,
                _slot: ctx.open_files.slot(),
            });
        }
        self.state = FileState::Rotated {
            last_growth: ctx.now,
        };
        self.reading_copy = true;
        *ctx.save_soon = true;
        true
    }
}

impl Stream {
    /// Finds logrotate's copy of the open file in its directory: another
    /// regular file with the same first bytes (fingerprint), at least as
    /// long as what was read, and, when the bytes just before the read
    /// position are known, holding them at the same offset. Several files
    /// can share their first bytes (logs that open with the same banner),
    /// so of the candidates it prefers a name that starts with the file's
    /// own (`app.log.1`, `app.log-20261125`), then the newest.
    fn find_copy(&self) -> Option<(PathBuf, File)> {
        let t = self.file.as_ref()?;
        let dir = self.path.parent()?;
        if t.identity.fp_len == 0 {
            return None;
        }
        let pos = self.sent + self.unsent() as u64;
        let before = self.expected_before(pos);
        let own = self.name.to_string_lossy();
        let mut best: Option<((bool, i64), PathBuf, File)> = None;
        let mut matches = 0;
        for p in std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
        {
            if p == self.path {
                continue;
            }
            let Ok(f) = File::open(&p) else { continue };
            let Ok(m) = f.metadata() else { continue };
            let same = (m.dev(), m.ino()) == (t.identity.dev, t.identity.ino);
            if !m.is_file()
                || same
                || m.len() < pos
                || !t.identity.head_matches(&f).unwrap_or(false)
            {
                continue;
            }
            if let Some((l, expect)) = &before {
                let mut got = [0; OVERLAP];
                let ok = f.read_exact_at(&mut got[..*l], pos - *l as u64).is_ok();
                if !ok || got[..*l] != expect[..*l] {
                    continue;
                }
            }
            matches += 1;
            let named = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(own.as_ref()));
            let rank = (named, m.mtime());
            if best.as_ref().is_none_or(|(r, _, _)| rank > *r) {
                best = Some((rank, p, f));
            }
        }
        if matches > 1 {
            crate::warn!(
                "{}: {matches} files look like its copytruncate copy; taking the best named and newest",
                self.path.display()
            );
        }
        best.map(|(_, p, f)| (p, f))
    }

    /// The bytes just before file offset `pos` that were read already (at
    /// most [`OVERLAP`]), from the buffer or the saved tail: their length
    /// and the bytes.
    fn expected_before(&self, pos: u64) -> Option<(usize, [u8; OVERLAP])> {
        let l = overlap(pos);
        if l == 0 {
            return None;
        }
        if self.end >= l && self.sent + self.unsent() as u64 == pos {
            let mut e = [0; OVERLAP];
            e[..l].copy_from_slice(&self.buf[self.end - l..self.end]);
            return Some((l, e));
        }
        match self.tail {
            Some((p, e)) if self.end == 0 && p == pos => Some((l, e)),
            _ => None,
        }
    }
}

impl Stream {
    /// True when the open file can have been truncated under us: a
    /// followed file, or one rotated away by rename. Not a whole file, and
    /// not logrotate's copy being read after a copytruncate (it is a
    /// snapshot that may simply end before our position).
    fn may_be_truncated(&self) -> bool {
        !self.whole
            && !self.reading_copy
            && matches!(self.state, FileState::Following | FileState::Rotated { .. })
    }

    /// Saves the last bytes read (up to [`OVERLAP`]), when everything read
    /// was sent and the buffer is about to be emptied.
    pub(super) fn keep_tail(&mut self) {
        let l = overlap(self.sent);
        if l > 0 && self.end >= l && self.unsent() == 0 {
            let mut last = [0; OVERLAP];
            last[..l].copy_from_slice(&self.buf[self.end - l..self.end]);
            self.tail = Some((self.sent, last));
        }
    }

    /// The first read of a fill: for a followed (or rotated) file whose buffer (or
    /// saved [`tail`](Stream::tail)) holds the bytes just before `pos` (up
    /// to [`OVERLAP`] of them), reads from that far back instead and checks
    /// they are the same. The buffer keeps mirroring the file: `buf[..end]`
    /// is the file just before `pos` plus the new bytes.
    fn read_checked(&mut self, pos: u64) -> io::Result<Checked> {
        let l = overlap(pos);
        // Also while draining a rotated file: it may have been truncated
        // and rewritten before it was renamed.
        if !self.may_be_truncated() || l == 0 {
            return Ok(Checked::Unchecked);
        }
        let (at, expect) = if self.end >= l {
            let mut e = [0; OVERLAP];
            e[..l].copy_from_slice(&self.buf[self.end - l..self.end]);
            (self.end - l, e)
        } else {
            match self.tail {
                Some((p, e)) if self.end == 0 && p == pos => (0, e),
                _ => {
                    // Nothing read yet at this position (just opened, or
                    // a connection just came up): check the first bytes
                    // instead, once, so a file rewritten since is caught.
                    let rewritten = self.end == 0
                        && self
                            .file
                            .as_ref()
                            .is_some_and(|t| !t.identity.matches(&t.file).unwrap_or(true));
                    return Ok(if rewritten {
                        Checked::Changed
                    } else {
                        Checked::Unchecked
                    });
                }
            }
        };
        let Some(t) = &self.file else {
            return Ok(Checked::Unchecked);
        };
        if at + l >= self.buf.len() {
            return Ok(Checked::Unchecked);
        }
        let want = self.buf.len() - at;
        let n = loop {
            match t.file.read_at(&mut self.buf[at..], pos - l as u64) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        if n < l || self.buf[at..at + l] != expect[..l] {
            // Put back what was there (unsent bytes of the old content may
            // still be read from a copytruncate copy).
            self.buf[at..at + l].copy_from_slice(&expect[..l]);
            return Ok(Checked::Changed);
        }
        if self.end == 0 {
            // A fresh buffer: the overlap is not data to send.
            self.head = l;
        }
        self.end = at + n;
        self.tail = None;
        Ok(Checked::Read {
            new: n - l,
            eof: n < want,
        })
    }
}

/// How many bytes before `pos` a read re-checks.
fn overlap(pos: u64) -> usize {
    pos.min(OVERLAP as u64) as usize
}

/// What [`Stream::read_checked`] did.
enum Checked {
    /// Nothing to check against (or not a followed file): nothing read.
    Unchecked,
    /// `new` bytes read after the overlap, which matched; `eof`: the read
    /// came back short (the end of the file).
    Read { new: usize, eof: bool },
    /// The overlap differs: the file was rewritten under us.
    Changed,
}

/// What one [`Stream::fill`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fill {
    /// Some bytes were read.
    Read,
    /// Nothing new in the file.
    Eof,
    /// The file is now shorter (this many bytes) than what was read.
    Truncated(u64),
}

/// Size of a fresh read buffer: four batches, within `[batch, max_batch]`.
pub(super) fn initial_buffer(s: &Settings) -> usize {
    (s.rules.batch.saturating_mul(4)).clamp(s.rules.batch.max(1), s.max_batch.max(1))
}
