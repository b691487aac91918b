//! Reading the current generation into the buffer, proving on each read
//! that the file still holds what was read before, and what to do when it
//! does not: the file was truncated (copytruncate, or `> app.log`) or
//! rewritten in place. Also the server's `200` offset, checked against the
//! file before anything is sent.

use std::path::PathBuf;

use super::buffer::{self, Check};
use super::{Env, Gen, Note, State, Tail};
use crate::tail::fs::{Fs, Kind, Meta};
use crate::tail::identity::Identity;

/// What one [`Tail::fill`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// This many new bytes were read.
    Read(usize),
    /// Nothing new.
    Eof,
    /// The file was truncated or rewritten under the reader; the tail
    /// moved on (to a copy, or the file's new content under a new id).
    Truncated,
}

impl<H> Tail<H> {
    /// True when the open file can have been truncated under the reader: a
    /// followed or rotated file, not a whole file or a copy (a snapshot
    /// that simply ends).
    fn may_shrink(&self) -> bool {
        !self.settings.whole
            && !self.cur.as_ref().is_some_and(|g| g.copy)
            && matches!(self.state, State::Following | State::Draining { .. })
    }

    /// Stream-id generation: changes whenever the current generation's id
    /// does, so the caller knows its connection belongs to another stream.
    pub fn stream_id(&self) -> Option<crate::tail::identity::StreamId> {
        self.cur.as_ref().map(|g| g.id)
    }

    /// Reads more of the current file into the buffer (one `pread`).
    pub fn fill<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) -> std::io::Result<Filled> {
        if self.cur.is_none() {
            return Ok(Filled::Eof);
        }
        self.buf
            .prepare(self.settings.initial_buffer, self.settings.max_batch);
        let check = if self.may_shrink() {
            self.buf.check_window()
        } else {
            Check::None
        };
        let (expected, l) = self.buf.expected(check);
        let pos = self.buf.read_pos();
        if check == Check::None
            && self.may_shrink()
            && self.buf.unsent().is_empty()
            && self.changed_before_first_read(env, pos)?
        {
            self.truncated(env);
            return Ok(Filled::Truncated);
        }
        let Some(cur) = &self.cur else {
            return Ok(Filled::Eof);
        };
        let room = self.buf.room(check);
        if room.len() <= l {
            return Ok(Filled::Eof);
        }
        let n = env.fs.read_at(&cur.file, room, pos - l as u64)?;
        if !self.buf.filled(check, &expected[..l], n) {
            self.truncated(env);
            return Ok(Filled::Truncated);
        }
        let new = n.saturating_sub(l);
        self.seen_len = self.seen_len.max(self.buf.read_pos());
        if new == 0 {
            if self.may_shrink() && check == Check::None && env.fs.fstat(&cur.file)?.len < pos {
                self.truncated(env);
                return Ok(Filled::Truncated);
            }
            return Ok(Filled::Eof);
        }
        if let State::Draining { .. } = self.state {
            self.state = State::Draining {
                last_growth: env.now,
            };
        }
        if let Some(cur) = &mut self.cur {
            if cur.prefix.len() < buffer::OVERLAP {
                if let Some(head) = self.buf.file_head(buffer::OVERLAP) {
                    cur.prefix.clear();
                    cur.prefix.extend_from_slice(head);
                }
            }
            let had = cur.identity.fp_len;
            if !cur.copy && cur.identity.refresh(env.fs, &cur.file, pos)? {
                // Rewritten before it was read: record what was read.
                self.save_soon = true;
            } else if cur.identity.fp_len != had {
                // A longer fingerprint: recorded before the server can
                // hold bytes the state file's one does not cover, so a
                // restart tells this content from a rewrite of the file.
                self.save_soon = true;
            }
        }
        Ok(Filled::Read(new))
    }

    /// Nothing was read yet at `pos` (just opened, switched to, or a
    /// connection came up): was the file rewritten since its identity was
    /// taken? Its first bytes tell, or, for content that had none yet, a
    /// copy made since (see `refilled_and_truncated`).
    fn changed_before_first_read<F: Fs<File = H>>(
        &mut self,
        env: &mut Env<'_, F>,
        pos: u64,
    ) -> std::io::Result<bool> {
        let Some(cur) = &self.cur else {
            return Ok(false);
        };
        let meta = env.fs.fstat(&cur.file)?;
        let head_changed = (pos > 0 || cur.identity.fp_len > 0)
            && !cur.identity.matches(env.fs, &cur.file, &meta)?;
        if head_changed || meta.len < pos || self.refilled_and_truncated(env) {
            return Ok(true);
        }
        // Still the same content: keep its first bytes, which recognise a
        // copy that ends before the fingerprinted head.
        if let Some(cur) = self.cur.as_mut().filter(|c| c.prefix.is_empty() && pos > 0) {
            let k = meta.len.min(buffer::OVERLAP as u64) as usize;
            let mut head = vec![0; k];
            if env.fs.read_at(&cur.file, &mut head, 0)? == k {
                cur.prefix = head;
            }
        }
        Ok(false)
    }

    /// `200`: the server holds `offset` bytes of this stream (or, without
    /// one, what was acknowledged). Returns false when the file turned out
    /// truncated or rewritten meanwhile: the tail moved on and the caller
    /// must reconnect for the new stream id.
    pub fn on_ready<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>, offset: Option<u64>) -> bool {
        let at = offset.unwrap_or(self.acked);
        self.verify = false;
        self.done_at = None;
        let Some(cur) = &self.cur else { return true };
        let id = cur.id;
        match self.contact {
            Some((c, high)) if c == id && at > high.max(self.acked) => {
                self.offset_conflict(at, high.max(self.acked));
                return false;
            }
            Some((c, high)) if c == id => self.contact = Some((id, high.max(at))),
            // The first `200` for this stream in this run: the server may
            // hold what an earlier run sent before it could save its state.
            _ => self.contact = Some((id, at)),
        }
        let Some(cur) = &self.cur else { return true };
        let copy = cur.copy;
        let Ok(meta) = env.fs.fstat(&cur.file) else {
            return true;
        };
        let rewritten = self.state == State::Following
            && !self.settings.whole
            && at > 0
            && !cur
                .identity
                .matches(env.fs, &cur.file, &meta)
                .unwrap_or(true);
        if (!copy && !self.settings.whole && at > meta.len) || rewritten {
            // (`meta.len` is the new content's: not seen of the old.)
            self.truncated(env);
            return false;
        }
        if meta.len > self.seen_len && meta.len >= at {
            self.seen_len = meta.len;
        }
        if at != self.acked {
            self.dirty = true;
        }
        self.acked = at;
        self.buf.reset(at);
        self.since = None;
        self.partial_since = None;
        true
    }

    /// The server holds more of the current stream than this run ever
    /// sent or heard of (`high`): another connection wrote to it. The
    /// bytes after `acked` go again under a new stream id, from `acked`:
    /// nothing the client read is skipped, and the file is not sent again
    /// from 0.
    fn offset_conflict(&mut self, server: u64, high: u64) {
        let acked = self.acked;
        let stream = self
            .cur
            .as_ref()
            .map(|g| g.id.to_string())
            .unwrap_or_default();
        self.notes.push(Note::OffsetConflict {
            stream,
            server,
            high,
            acked,
        });
        let nonce = self.next_nonce();
        if let Some(cur) = &self.cur {
            let id = self.keyed(cur.id.rewritten(nonce));
            if let Some(cur) = &mut self.cur {
                cur.id = id;
            }
        }
        let done = self.done_at;
        self.restart_at(acked);
        self.done_at = done;
        self.verify = true;
        self.save_soon = true;
    }

    /// The file at the path no longer holds what was read (shorter than
    /// the read position, or other bytes before it). Whatever it held past
    /// the position is in logrotate's copy if there is one: read it from
    /// there under the same id, then every copy made after it, each a
    /// generation of its own, then the file's new content from 0 under a
    /// new id.
    pub(super) fn truncated<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) {
        let Some(mut cur) = self.cur.take() else {
            return;
        };
        let pos = self.buf.read_pos();
        let sent = self.buf.sent_pos();
        let before = self.buf.before(pos);
        // logrotate's copytruncate truncates the file at the path: a file
        // rotated away and then found shorter was truncated by someone
        // else, and the files next to it are generations, not its copies.
        let at_path = self.at_path(env).map(|m| m.inode());
        let candidates = if at_path == Some(cur.meta.inode()) {
            self.copy_candidates(env, &cur)
        } else {
            Vec::new()
        };
        let known = Known {
            identity: &cur.identity,
            prefix: &cur.prefix,
        };
        let copy = find_copy(env, known, pos, before.as_deref(), candidates.iter());
        let floor = copy
            .as_ref()
            .map_or(cur.copies_after, |(_, _, m)| m.born.max(cur.copies_after));
        let newest = candidates.iter().map(|(_, m)| m.born).max().unwrap_or(0);
        let (mut later, left) = self.open_later_copies(env, &candidates, floor, &copy, &cur.file);
        // The new content's copies: every one born so far is accounted
        // for, except a copy left alone (still being made, or holding what
        // the file still starts with) and those after it: if the file is
        // truncated again before it is read, they hold its content.
        let copies_after = match left {
            Some(born) => later
                .iter()
                .map(|g| g.meta.born)
                .chain(copy.as_ref().map(|(_, _, m)| m.born))
                .fold(floor, u64::max)
                .max(born.saturating_sub(1)),
            None => newest.max(env.fs.clock()),
        };
        self.scan_floor = self.scan_floor.max(newest);
        // The truncated file itself: its new content is a new stream.
        let fresh = match env.fs.fstat(&cur.file) {
            Ok(meta) => Identity::with_prefix(env.fs, &cur.file, &meta, buffer::OVERLAP).ok(),
            Err(_) => None,
        };
        let nonce = self.next_nonce();
        let id = self.keyed(cur.id.rewritten(nonce));
        self.save_soon = true;
        self.notes.push(Note::Truncated {
            at: pos,
            no_copy: copy.is_none(),
        });
        let kept = copy.as_ref().map(|(_, _, m)| m.len);
        if let Some(lost) = destroyed(sent, pos, self.seen_len, kept) {
            self.notes.push(lost);
        }
        match copy {
            Some((name, file, meta)) => {
                self.notes.push(Note::ReadingCopy { name, at: pos });
                let original = std::mem::replace(&mut cur.file, file);
                let original_meta = std::mem::replace(&mut cur.meta, meta);
                // Known by the copy's inode from now on (the state file
                // finds it there after a restart), by the same first bytes.
                cur.identity.dev = meta.dev;
                cur.identity.ino = meta.ino;
                cur.copy = true;
                self.cur = Some(cur);
                if let Some((identity, prefix)) = fresh {
                    later.push(Gen {
                        file: original,
                        meta: original_meta,
                        identity,
                        id,
                        copy: false,
                        refilled: true,
                        prefix,
                        copies_after,
                        order: u64::MAX - 1,
                    });
                }
                for g in later.into_iter().rev() {
                    self.queue.push_front(g);
                }
                self.state = State::Draining {
                    last_growth: env.now,
                };
            }
            None => {
                let at_path = self.state == State::Following;
                if let Some((identity, prefix)) = fresh {
                    cur.identity = identity;
                    cur.id = id;
                    cur.refilled = true;
                    cur.prefix = prefix;
                    cur.copies_after = copies_after;
                    later.push(cur);
                }
                let mut it = later.into_iter();
                self.cur = it.next();
                for g in it.rev() {
                    self.queue.push_front(g);
                }
                self.restart_at(0);
                self.verify = true;
                self.state = if at_path && self.queue.is_empty() {
                    State::Following
                } else {
                    State::Draining {
                        last_growth: env.now,
                    }
                };
            }
        }
    }

    /// For the new content of a truncated file that had no bytes to
    /// recognise it by when it was queued: was it truncated again before
    /// it was read? A copy born since says the file was copied; it was
    /// also truncated (after the copy) when the file no longer starts
    /// with the copy's first bytes. A copy the file still starts with
    /// holds content the file will give too: it is accounted for.
    fn refilled_and_truncated<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) -> bool {
        let Some(cur) = &self.cur else { return false };
        if !cur.refilled || cur.identity.fp_len > 0 || self.buf.read_pos() > 0 {
            return false;
        }
        let floor = cur.copies_after;
        let copies: Vec<_> = self
            .copy_candidates(env, cur)
            .into_iter()
            .filter(|(_, m)| m.born > floor && m.len > 0)
            .collect();
        let mut accounted = floor;
        let mut truncated = false;
        for (p, listed) in copies {
            let Ok((copy, meta)) = env.fs.open(&p, false) else {
                continue;
            };
            if meta.inode() != listed.inode() {
                continue;
            }
            let Ok(head) = Identity::of(env.fs, &copy, &meta) else {
                continue;
            };
            if !head.head_matches(env.fs, &cur.file).unwrap_or(false) {
                truncated = true;
                break;
            }
            accounted = accounted.max(meta.born);
        }
        if let Some(cur) = &mut self.cur {
            cur.copies_after = accounted;
        }
        truncated
    }

    /// Regular files next to the path (and in `olddir`) that may be
    /// copies of `cur`: named after the path, not the path itself, not
    /// held already, not a generation finished in this run (its content
    /// went out under its own id), and not born before `cur` (a copy is
    /// made of a file that exists). Copies are told by birth time, from a
    /// coarse clock: without the last two rules, the generation before
    /// `cur`, born in the tick before `cur` was found, passed for a copy
    /// made since, and was sent a second time.
    fn copy_candidates<F: Fs<File = H>>(
        &self,
        env: &mut Env<'_, F>,
        cur: &Gen<H>,
    ) -> Vec<(PathBuf, Meta)> {
        let mut c: Vec<_> = self
            .listing(env)
            .into_iter()
            .filter(|(p, m)| {
                *p != self.path
                    && m.kind == Kind::File
                    && m.inode() != cur.meta.inode()
                    && !self.known(m)
                    && m.born >= cur.meta.born
            })
            .collect();
        c.sort_by_key(|(_, m)| m.born);
        c
    }

    /// Opens the copies born after `floor` (other than the copy found):
    /// whole generations of their own, in birth order. A copy that the
    /// truncated file `original` still starts like holds what the file
    /// still has (copied, not truncated yet, or still being copied), and an
    /// empty one may still be being made: it and every later copy are left
    /// alone (the birth of the first such copy is returned).
    fn open_later_copies<F: Fs<File = H>>(
        &mut self,
        env: &mut Env<'_, F>,
        candidates: &[(PathBuf, Meta)],
        floor: u64,
        copy: &Option<(PathBuf, H, Meta)>,
        original: &H,
    ) -> (Vec<Gen<H>>, Option<u64>) {
        let mut out = Vec::new();
        let mut empty = None;
        let taken = copy.as_ref().map(|(_, _, m)| m.inode());
        for (p, listed) in candidates {
            if listed.born <= floor || Some(listed.inode()) == taken {
                continue;
            }
            if listed.len == 0 {
                // Still being made, unless a later copy was (one
                // copytruncate runs at a time).
                empty.get_or_insert(listed.born);
                continue;
            }
            let Ok((file, meta)) = env.fs.open(p, false) else {
                continue;
            };
            if meta.inode() != listed.inode() {
                continue;
            }
            if same_start(env, &file, original, meta.len) {
                return (out, Some(listed.born));
            }
            empty = None;
            let Ok(identity) = Identity::of(env.fs, &file, &meta) else {
                continue;
            };
            self.notes.push(Note::FoundRotated { name: p.clone() });
            let copies_after = env.fs.clock();
            let mut g = self.fresh_gen(file, meta, identity, Vec::new(), copies_after);
            g.copy = true;
            out.push(g);
        }
        (out, empty)
    }
}

/// What a truncation at read position `pos` destroyed for good, given the
/// first unsent byte `sent`, the longest the old content was seen
/// (`seen`), and the length of the copy found (`kept`), if any:
///
/// - with a copy, reading goes on in the copy from `pos` (what was read
///   and not sent yet is sent too); lost is what the old content was seen
///   to hold past both the copy's end and `pos` (written between
///   logrotate's copy and its truncate);
/// - without one, the buffer starts over at 0 under a new id: the bytes
///   read and not sent yet are dropped, and what was seen past `pos`
///   exists nowhere.
///
/// Old content the tail never saw cannot be counted: whether there was
/// any is unknown (the [`Note::Truncated`] line says so). The new content
/// is never counted: it is sent whole, from 0.
fn destroyed(sent: u64, pos: u64, seen: u64, kept: Option<u64>) -> Option<Note> {
    let (from, why) = match kept {
        Some(len) => (
            pos.max(len),
            "the file was seen holding them, and its copytruncate copy ends before them",
        ),
        None if sent < pos && seen > pos => (
            sent,
            "read but not sent yet, or seen in the file but not read, when it was truncated, and no copy of it was found",
        ),
        None if sent < pos => (
            sent,
            "read but not sent yet when the file was truncated, and no copy of it was found",
        ),
        None => (
            pos,
            "the file was seen holding them, but was truncated before they were read, and no copy of it was found",
        ),
    };
    let to = seen.max(if kept.is_some() { 0 } else { pos });
    (to > from).then_some(Note::Lost { from, to, why })
}

/// Of the candidates, the copy of the file whose identity is `identity`,
/// read up to `pos`: same first bytes and, when it is that long, the same
/// `before` bytes just before `pos`. Several files can share their first
/// bytes (logs that open with the same banner); the newest that also
/// holds the bytes before `pos` wins, else the newest with the same head
/// (the copy may end before `pos`: the reader got further than the copy).
/// Candidates come oldest first.
fn find_copy<'a, F: Fs>(
    env: &mut Env<'_, F>,
    known: Known<'_>,
    pos: u64,
    before: Option<&[u8]>,
    candidates: impl Iterator<Item = &'a (PathBuf, Meta)>,
) -> Option<(PathBuf, F::File, Meta)> {
    let (mut strong, mut weak) = (None, None);
    for (p, listed) in candidates {
        let Ok((file, meta)) = env.fs.open(p, false) else {
            continue;
        };
        if meta.inode() != listed.inode() || !known.starts(env, &file, meta.len) {
            continue;
        }
        let holds_before = match before {
            Some(b) if meta.len >= pos => {
                let mut got = vec![0; b.len()];
                let at = pos - b.len() as u64;
                env.fs.read_at(&file, &mut got, at).ok() == Some(b.len()) && got == b
            }
            _ => meta.len >= pos,
        };
        if holds_before {
            strong = Some((p.clone(), file, meta));
        } else {
            weak = Some((p.clone(), file, meta));
        }
    }
    strong.or(weak)
}

/// True when `a` (of `len` bytes) and `b` start with the same bytes, over
/// `a`'s first [`buffer::OVERLAP`] bytes at most.
fn same_start<F: Fs>(env: &mut Env<'_, F>, a: &F::File, b: &F::File, len: u64) -> bool {
    let k = len.min(buffer::OVERLAP as u64) as usize;
    let (mut x, mut y) = (vec![0; k], vec![0; k]);
    k > 0
        && env.fs.read_at(a, &mut x, 0).ok() == Some(k)
        && env.fs.read_at(b, &mut y, 0).ok() == Some(k)
        && x == y
}

/// What is known of a file's first bytes: its fingerprint, and the first
/// bytes themselves when they were read in this run.
#[derive(Clone, Copy)]
struct Known<'a> {
    identity: &'a Identity,
    prefix: &'a [u8],
}

impl Known<'_> {
    /// True when a file of `len` bytes starts like the known file: the
    /// same fingerprinted head, or, for a copy shorter than that head (it
    /// ended before the reader's position), the same first bytes.
    fn starts<F: Fs>(&self, env: &mut Env<'_, F>, file: &F::File, len: u64) -> bool {
        if self.identity.fp_len > 0
            && self
                .identity
                .copy_matches(env.fs, file, len)
                .unwrap_or(false)
        {
            return true;
        }
        if len >= u64::from(self.identity.fp_len) || len >= u64::from(self.identity.head_len) {
            // The fingerprints decided (the copy is long enough for one).
            return false;
        }
        let k = (len as usize).min(self.prefix.len());
        if k == 0 {
            return false;
        }
        let mut got = vec![0; k];
        env.fs.read_at(file, &mut got, 0).ok() == Some(k) && got == self.prefix[..k]
    }
}
