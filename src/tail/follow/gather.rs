//! Finding the generations of a path in its directory (and `olddir`s):
//! which files named after it were born since a floor or were seen
//! leaving it, in what order, and how a listing that raced renames is
//! told from one that did not (list, open, list again). `scan.rs` decides
//! when to look; this file says what is there.

use std::path::PathBuf;

use super::{Env, Gen, Note, State, Tail, RELIST_MAX};
use crate::tail::fs::{Fs, Kind, Meta};
use crate::tail::identity::Identity;

/// Names of compressed rotations: their bytes are not the log's.
const COMPRESSED: &[&str] = &[".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z", ".zip", ".lzma"];

impl<H> Tail<H> {
    /// While following the file at the path: the directory's events say
    /// a file left the path that this tail never held nor finished (the
    /// directory changed under every listing of a look, or the events came
    /// late). It was at the path before the file followed now, so it is a
    /// generation to send, and before that file: it becomes the current
    /// one (draining), and the followed file waits behind it, resumed at
    /// the server's offset for its id (what it sent already stays sent:
    /// those bytes go out of order, but nothing is skipped and nothing
    /// sent twice).
    pub(super) fn adopt_missed<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) {
        if !self.settings.follow_rotations {
            return;
        }
        // Only what the events saw leave the path (no birth time is late
        // enough for `u64::MAX`).
        let missed = self.gather(env, u64::MAX);
        if missed.is_empty() {
            return;
        }
        let Some(followed) = self.cur.take() else {
            return;
        };
        let mut gens = missed.into_iter();
        self.cur = gens.next();
        self.queue = gens.chain(std::iter::once(followed)).collect();
        self.restart_at(0);
        self.verify = true;
        self.save_soon = true;
        self.state = State::Draining {
            last_growth: env.now,
        };
    }

    /// Where [`Tail::open_generations`] looks from: files born since the
    /// last generation finished in this run, or since the path is
    /// followed (an earlier run's start, from the state file); before
    /// anything of the kind, only what the directory's events saw leave
    /// the path. `None`: nothing to look for.
    pub(super) fn generations_floor(&self) -> Option<u64> {
        match self.finished.back() {
            Some(&(_, _, born)) => Some(born),
            None if self.followed_since > 0 => Some(self.followed_since),
            None if !self.departed.is_empty() => Some(u64::MAX),
            None => None,
        }
    }

    /// After [`Tail::open_generations`] found nothing and the file at the
    /// path was opened directly (`meta`): true when the directory now
    /// holds a generation that listing should have seen, other than that
    /// file (the path's first file created and renamed away meanwhile, or
    /// this file itself born since the floor): the caller lists again.
    pub(super) fn raced_past<F: Fs<File = H>>(
        &mut self,
        env: &mut Env<'_, F>,
        meta: &Meta,
    ) -> bool {
        let Some(floor) = self.generations_floor() else {
            return false;
        };
        self.candidates(env, floor)
            .iter()
            .any(|(p, m, _)| *p != self.path || m.inode() == meta.inode())
    }

    /// Files in the path's directory and the `olddir`s whose names are the
    /// path's name or start with it, compressed ones excepted.
    pub(super) fn listing<F: Fs<File = H>>(&self, env: &mut Env<'_, F>) -> Vec<(PathBuf, Meta)> {
        let mut out = Vec::new();
        let dir = self.path.parent().map(PathBuf::from).unwrap_or_default();
        let own = self.name.as_encoded_bytes();
        for d in std::iter::once(&dir).chain(self.settings.olddirs.iter()) {
            let Ok(entries) = env.fs.list_prefixed(d, &self.name) else {
                continue;
            };
            for (name, meta) in entries {
                let n = name.as_encoded_bytes();
                let compressed = COMPRESSED.iter().any(|s| n.ends_with(s.as_bytes()));
                if n.starts_with(own) && !compressed {
                    out.push((d.join(&name), meta));
                }
            }
        }
        out
    }

    /// Finds the generations born after the current one that are not held
    /// yet (at the path, or rotated away before anyone looked) and queues
    /// them in birth order.
    pub(super) fn scan<F: Fs<File = H>>(&mut self, env: &mut Env<'_, F>) {
        if !self.settings.follow_rotations {
            return;
        }
        // Born after the current file, and after every copy a
        // copytruncate left (those hold content already read).
        let Some(floor) = self.cur.as_ref().map(|g| g.meta.born.max(self.scan_floor)) else {
            return;
        };
        for g in self.gather(env, floor) {
            let seq = g.order;
            self.enqueue(g, seq);
        }
    }

    /// The generations of the path this tail does not hold or know yet:
    /// files named after it that were born at `floor` or later, or that
    /// the directory's events saw leave the path, opened, in birth order.
    /// Birth times come from a coarse clock: a file born in the same tick
    /// as the floor may still be a later generation (one born earlier was
    /// shipped under its own id already, so the server's offset keeps it
    /// from being sent twice), and files born in the same tick are put in
    /// the order they left the path; the file at the path is the newest.
    ///
    /// The directory may change while it is read (a rename between the
    /// listing and an open, or during the listing itself, which can then
    /// miss the renamed name): the files are opened, the directory is
    /// listed again, and only when both listings agree (and every file
    /// opened is the one listed) is the result taken; otherwise it lists
    /// again, at most [`RELIST_MAX`] times (then what the last listing
    /// showed is taken, and the next event looks again). A file opened
    /// once stays in the result, even if it was deleted meanwhile: its
    /// descriptor still reads it.
    pub(super) fn gather<F: Fs<File = H>>(
        &mut self,
        env: &mut Env<'_, F>,
        floor: u64,
    ) -> Vec<Gen<H>> {
        let mut listed = self.candidates(env, floor);
        // Kept across attempts: a file opened once is never let go (it may
        // be deleted before the next attempt, and its descriptor still
        // reads it).
        let mut opened = Vec::new();
        for _ in 1..RELIST_MAX {
            let exact = self.open_listed(env, &listed, &mut opened);
            let again = self.candidates(env, floor);
            let same = again.len() == listed.len()
                && again
                    .iter()
                    .zip(&listed)
                    .all(|((p, m, _), (q, n, _))| p == q && m.inode() == n.inode());
            listed = again;
            if exact && same {
                break;
            }
        }
        self.open_listed(env, &listed, &mut opened);
        opened.sort_by(|(p, _, m, seq), (q, _, n, tie)| {
            self.generation_order((p, m.born, *seq), (q, n.born, *tie))
        });
        self.take_opened(env, opened)
    }

    /// Files named after the path that are generations not held or known
    /// yet (see [`Tail::gather`]), in birth order, each with its place
    /// among files born in the same tick.
    pub(super) fn candidates<F: Fs<File = H>>(
        &self,
        env: &mut Env<'_, F>,
        floor: u64,
    ) -> Vec<(PathBuf, Meta, u64)> {
        let mut found: Vec<(PathBuf, Meta, u64)> = self
            .listing(env)
            .into_iter()
            .filter(|(p, m)| {
                let at_path = *p == self.path;
                let newer =
                    m.born >= floor || (m.born == 0 && at_path) || self.departed_seq(p).is_some();
                m.kind == Kind::File && newer && !self.known(m)
            })
            .map(|(p, m)| {
                let seq = self.order_of(&p);
                (p, m, seq)
            })
            .collect();
        found.sort_by(|(p, m, seq), (q, n, tie)| {
            self.generation_order((p, m.born, *seq), (q, n.born, *tie))
        });
        found
    }

    /// The order of two found generations, each its name, birth time and
    /// place among files born in the same tick (see `order_of`): by birth,
    /// then by place; two files born in the same tick whose departures
    /// were not seen (renamed while the client was away) go by their
    /// rotation numbers, the higher older (`app.log.3` before `app.log.2`,
    /// logrotate's numbering), and otherwise by name (`-20261206` before
    /// `-20261207`).
    fn generation_order(
        &self,
        (p, born, seq): (&std::path::Path, u64, u64),
        (q, born_q, seq_q): (&std::path::Path, u64, u64),
    ) -> std::cmp::Ordering {
        (born, seq).cmp(&(born_q, seq_q)).then_with(|| {
            match (self.rotation_number(p), self.rotation_number(q)) {
                (Some(a), Some(b)) => b.cmp(&a),
                _ => p.cmp(q),
            }
        })
    }

    /// `N` when `p` is the followed path's name with `.N` appended.
    fn rotation_number(&self, p: &std::path::Path) -> Option<u64> {
        let name = self.path.file_name()?.as_encoded_bytes();
        let rest = p.file_name()?.as_encoded_bytes().strip_prefix(name)?;
        let digits = rest.strip_prefix(b".")?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    /// Opens the listed files not opened yet into `opened` (one opened
    /// before under another name takes the listed name and place); false
    /// when one of them is not the file listed any more (renamed or
    /// replaced meanwhile).
    #[allow(clippy::type_complexity)]
    fn open_listed<F: Fs<File = H>>(
        &mut self,
        env: &mut Env<'_, F>,
        listed: &[(PathBuf, Meta, u64)],
        opened: &mut Vec<(PathBuf, H, Meta, u64)>,
    ) -> bool {
        let mut exact = true;
        for (p, m, seq) in listed {
            if let Some(o) = opened.iter_mut().find(|o| o.2.inode() == m.inode()) {
                (o.0, o.3) = (p.clone(), *seq);
                continue;
            }
            match env.fs.open(p, false) {
                Ok((file, meta)) if meta.inode() == m.inode() && !self.known(&meta) => {
                    opened.push((p.clone(), file, meta, *seq));
                }
                // Renamed or replaced meanwhile: the next listing tells.
                _ => exact = false,
            }
        }
        exact
    }

    /// The opened files as generations (identity read, notes made).
    fn take_opened<F: Fs<File = H>>(
        &mut self,
        env: &mut Env<'_, F>,
        opened: Vec<(PathBuf, H, Meta, u64)>,
    ) -> Vec<Gen<H>> {
        let mut gens = Vec::new();
        for (p, file, meta, seq) in opened {
            let Ok((identity, prefix)) =
                Identity::with_prefix(env.fs, &file, &meta, super::buffer::OVERLAP)
            else {
                continue;
            };
            if p != self.path {
                self.notes.push(Note::FoundRotated { name: p.clone() });
            }
            self.departed.retain(|(_, s)| *s != seq);
            let copies_after = env.fs.clock();
            let mut g = self.fresh_gen(file, meta, identity, prefix, copies_after);
            g.order = seq;
            gens.push(g);
        }
        gens
    }

    /// Queues a generation found by a scan before the first queued one
    /// born after it (or in the same tick, having left the path later).
    fn enqueue(&mut self, g: Gen<H>, seq: u64) {
        let key = (g.meta.born, seq);
        let at = self
            .queue
            .iter()
            .position(|q| !q.copy && (q.meta.born, q.order) > key)
            .unwrap_or(self.queue.len());
        let mut g = g;
        g.order = seq;
        self.queue.insert(at, g);
    }

    /// Where a file found by a scan stands among files born in the same
    /// clock tick: its departure number if the directory's events said
    /// it left the path; after every departed one if it is at the path;
    /// in between (unknown) otherwise.
    fn order_of(&self, p: &std::path::Path) -> u64 {
        if p == self.path {
            return u64::MAX;
        }
        self.departed_seq(p).unwrap_or(u64::MAX - 1)
    }
}
