//! Open output files and line-aligned writing into them.
//!
//! Every output has one `O_APPEND` descriptor, through which the
//! line-aligned path ([`Outputs::write`]) writes. An output with a single
//! writer may also take bytes from a pipe with [`Outputs::splice`] (the
//! server's zero-copy path): the kernel refuses to splice into an
//! `O_APPEND` descriptor, so those go through a second, positional
//! descriptor of the same inode, at the offset `fstat` reports as the end.
//! Both descriptors always name the same file (the second is reopened from
//! the first, and dropped whenever the first is replaced), so checkpoints,
//! `fdatasync` and crash recovery, which work on the file, see every byte
//! whichever way it came.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::PathBuf;

use slab::Slab;

use super::checkpoint::OutputMark;
use super::route::Route;
use crate::reactor::sys::fs::open_append_beneath;
use crate::reactor::sys::retry;
use crate::reactor::sys::uring::Ring;
use splice::Positional;

mod splice;

/// What [`Outputs::write`] did with a stream's bytes.
#[derive(Debug)]
pub enum Outcome {
    /// Everything that may be written is in the output.
    Written,
    /// Another stream's line is open in the output; the bytes are held.
    Busy,
    /// The write failed (disk full, ...); every unwritten byte is held.
    Failed(io::Error),
}

/// Index of an open output in [`Outputs`].
pub type OutputId = usize;

#[derive(Debug)]
struct Output {
    route: Route,
    /// `route.full_path()`, kept so the per-turn open-line lookup does not
    /// build a path.
    full: PathBuf,
    file: File,
    /// Streams currently writing here; the file is closed when it drops to 0.
    refs: usize,
    /// Written since the last `fdatasync`.
    dirty: bool,
    /// The device of the file system holding `file` (`st_dev`), so a
    /// checkpoint round can sync many outputs with one `syncfs`.
    dev: u64,
    /// The descriptor [`Outputs::splice`] writes through.
    positional: Positional,
}

/// The set of open outputs, shared by all streams routed to the same path.
#[derive(Debug, Default)]
pub struct Outputs {
    open: Slab<Output>,
    by_path: HashMap<PathBuf, OutputId>,
    /// Outputs whose last line is unterminated, by path, with the stream
    /// that owns that line (see [`Owner`]). Kept while the output is
    /// closed too, so a stream that reconnects continues its own line and
    /// nobody else writes into it.
    open_lines: HashMap<PathBuf, Owner>,
    /// `fdatasync` a written output before closing or replacing its
    /// descriptor (every `sync` policy but `none`), so a checkpoint taken
    /// after it closed never vouches for bytes only in the page cache.
    pub sync_on_close: bool,
}

/// Identifies the stream that owns an output's unterminated last line: a
/// hash of `(host, path, id)` for resumable streams (stable across
/// reconnects), a per-connection value otherwise.
pub type Owner = u64;

impl Outputs {
    /// Opens (or shares) the output for `route` and takes a reference.
    pub fn acquire(&mut self, route: &Route) -> io::Result<OutputId> {
        let full = route.full_path();
        if let Some(&id) = self.by_path.get(&full) {
            self.open[id].refs += 1;
            return Ok(id);
        }
        let file = open_append_beneath(&route.base, &route.relative)?;
        let dev = std::os::unix::fs::MetadataExt::dev(&file.metadata()?);
        let id = self.open.insert(Output {
            dev,
            route: route.clone(),
            full: full.clone(),
            file,
            refs: 1,
            dirty: false,
            positional: Positional::Untried,
        });
        self.by_path.insert(full, id);
        Ok(id)
    }

    /// The outputs written since their last sync, with the device of
    /// their file system, counted clean from now on (a sync of each is
    /// about to start; a failure marks it dirty again with
    /// [`mark_dirty`](Self::mark_dirty)).
    pub fn take_dirty(&mut self) -> Vec<(OutputId, u64)> {
        let mut ids = Vec::new();
        for (id, out) in self.open.iter_mut().filter(|(_, o)| o.dirty) {
            out.dirty = false;
            ids.push((id, out.dev));
        }
        ids
    }

    /// A second descriptor of output `id`'s file (for a `syncfs` of its
    /// file system on another thread); `None` when it is closed.
    pub fn clone_file(&self, id: OutputId) -> Option<io::Result<File>> {
        self.open.get(id).map(|o| o.file.try_clone())
    }

    /// Starts an `fdatasync` of output `id` on `ring` (token: the id). An
    /// output closed meanwhile was synced when it closed: nothing to do.
    pub fn submit_sync(&mut self, ring: &mut Ring, id: OutputId) -> io::Result<()> {
        use std::os::fd::AsFd;
        match self.open.get(id) {
            Some(out) => ring.fdatasync(out.file.as_fd(), id as u64),
            None => Ok(()),
        }
    }

    /// An `fdatasync` started by [`submit_sync`](Self::submit_sync)
    /// failed: the output needs syncing again.
    pub fn mark_dirty(&mut self, id: OutputId) {
        if let Some(out) = self.open.get_mut(id) {
            out.dirty = true;
        }
    }

    /// The path of output `id`, if it is open (for messages).
    pub fn path_of(&self, id: OutputId) -> Option<PathBuf> {
        self.open.get(id).map(|o| o.route.full_path())
    }

    /// `fdatasync`s one output.
    pub fn sync_one(&mut self, id: OutputId) -> io::Result<()> {
        let Some(out) = self.open.get_mut(id) else {
            return Ok(());
        };
        out.file.sync_data()?;
        out.dirty = false;
        Ok(())
    }

    /// Where every open output stands now, for a checkpoint.
    pub fn marks(&self) -> io::Result<Vec<OutputMark>> {
        use std::os::unix::fs::MetadataExt;
        self.open
            .iter()
            .map(|(_, o)| {
                let m = o.file.metadata()?;
                Ok(OutputMark {
                    path: o.route.full_path(),
                    dev: m.dev(),
                    ino: m.ino(),
                    len: m.len(),
                    writers: o.refs as u32,
                })
            })
            .collect()
    }

    /// Drops a reference; closes the file when no stream uses it (synced
    /// first when it was written and `sync_on_close` is set).
    pub fn release(&mut self, id: OutputId) {
        let Some(out) = self.open.get_mut(id) else {
            return;
        };
        out.refs -= 1;
        if out.refs == 0 {
            let out = self.open.remove(id);
            let path = out.route.full_path();
            if out.dirty && self.sync_on_close {
                if let Err(e) = out.file.sync_data() {
                    crate::error!(
                        "fdatasync of {} before closing it failed: {e}",
                        crate::log::esc(&path)
                    );
                }
            }
            self.by_path.remove(&path);
        }
    }

    /// The open output at `path`, if any.
    pub fn id_of(&self, path: &std::path::Path) -> Option<OutputId> {
        self.by_path.get(path).copied()
    }

    /// Who owns the output's unterminated last line, if it has one.
    pub fn open_line(&self, id: OutputId) -> Option<Owner> {
        let out = self.open.get(id)?;
        self.open_lines.get(&out.full).copied()
    }

    /// Records (`Some`) or clears (`None`) the owner of the open last line.
    pub fn set_open_line(&mut self, id: OutputId, owner: Option<Owner>) {
        let Some(out) = self.open.get(id) else { return };
        match owner {
            Some(o) if self.open_lines.get(&out.full) == Some(&o) => None,
            Some(o) => self.open_lines.insert(out.full.clone(), o),
            None => self.open_lines.remove(&out.full),
        };
    }

    /// Ends an open last line that its owner left unterminated for too
    /// long, with a newline, so other streams can write.
    pub fn close_open_line(&mut self, id: OutputId) -> io::Result<()> {
        let Some(out) = self.open.get_mut(id) else {
            return Ok(());
        };
        out.file.write_all(b"\n")?;
        out.dirty = true;
        let path = out.route.full_path();
        self.open_lines.remove(&path);
        Ok(())
    }

    /// Writes a stream's bytes through its [`LineWriter`], keeping lines of
    /// different streams apart:
    /// - while another stream owns the output's unterminated last line,
    ///   nothing is written: the data is held and [`Outcome::Busy`]
    ///   returned (the caller stops reading, retries, and after a timeout
    ///   ends that line with [`close_open_line`](Self::close_open_line));
    /// - whole lines are written at once; the unterminated tail too when
    ///   the stream is alone on the output or at its end (`eof`), and the
    ///   stream then owns the open line until it writes the newline.
    pub fn write(
        &mut self,
        id: OutputId,
        writer: &mut LineWriter,
        owner: Owner,
        data: &[u8],
        eof: bool,
    ) -> Outcome {
        if self.open_line(id).is_some_and(|o| o != owner) {
            writer.hold(data);
            return Outcome::Busy;
        }
        let Some(out) = self.open.get_mut(id) else {
            return Outcome::Failed(io::Error::new(io::ErrorKind::NotFound, "output is closed"));
        };
        out.dirty = true;
        let before = writer.written();
        let mut result = writer.push(&mut out.file, data);
        if result.is_ok() && writer.pending_len() > 0 && (out.refs == 1 || eof) {
            result = writer.finish(&mut out.file);
        }
        if writer.written() != before {
            self.note_line(id, writer, owner);
        }
        match result {
            Ok(()) => Outcome::Written,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Records whether `owner` left the output's last line open.
    fn note_line(&mut self, id: OutputId, writer: &LineWriter, owner: Owner) {
        let owned = self.open_line(id) == Some(owner);
        if writer.line_open && !owned {
            self.set_open_line(id, Some(owner));
        } else if !writer.line_open && owned {
            self.set_open_line(id, None);
        }
    }

    /// Streams currently attached to the output.
    pub fn writers(&self, id: OutputId) -> usize {
        self.open.get(id).map_or(0, |o| o.refs)
    }

    pub fn path(&self, id: OutputId) -> PathBuf {
        self.open
            .get(id)
            .map(|o| o.route.full_path())
            .unwrap_or_default()
    }

    /// Reopens every open output (after logrotate moved them away).
    /// Returns the outputs that could not be reopened; they keep writing to
    /// their old descriptor.
    pub fn reopen_all(&mut self) -> Vec<(PathBuf, io::Error)> {
        let mut failed = Vec::new();
        for (_, out) in self.open.iter_mut() {
            if out.dirty && self.sync_on_close {
                if let Err(e) = out.file.sync_data() {
                    failed.push((out.route.full_path(), e));
                    continue;
                }
                out.dirty = false;
            }
            match open_append_beneath(&out.route.base, &out.route.relative) {
                Ok(f) => {
                    if let Ok(m) = f.metadata() {
                        out.dev = std::os::unix::fs::MetadataExt::dev(&m);
                    }
                    out.file = f;
                    out.positional = Positional::Untried;
                }
                Err(e) => failed.push((out.route.full_path(), e)),
            }
        }
        failed
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Turns one stream's byte chunks into whole-line writes.
///
/// Invariants: `pending` holds the bytes after the last newline written,
/// never more than `max_line` of them; `written` is the stream offset of the
/// first byte of `pending` (everything before it is in the output).
#[derive(Debug)]
pub struct LineWriter {
    pending: Vec<u8>,
    written: u64,
    max_line: usize,
    /// Lines longer than `max_line` that had to be written in pieces.
    pub split_lines: u64,
    /// The last byte this writer put in the output was not a newline.
    line_open: bool,
}

impl LineWriter {
    pub fn new(offset: u64, max_line: usize) -> Self {
        LineWriter {
            pending: Vec::new(),
            written: offset,
            max_line: max_line.max(1),
            split_lines: 0,
            line_open: false,
        }
    }

    /// Stream offset up to which bytes are in the output.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The stream starts at `offset` after all: bytes already held (sent
    /// right behind INIT) follow it. Only before anything was written.
    pub fn rebase(&mut self, offset: u64) {
        self.written = offset;
    }

    /// Accounts for `n` bytes of the stream that reached the output without
    /// passing through this writer ([`Outputs::splice`]); `line_open`: the
    /// last of them was not a newline. Only while nothing is pending, so
    /// the order of the stream's bytes is kept.
    pub fn spliced(&mut self, n: u64, line_open: bool) {
        debug_assert!(self.pending.is_empty());
        self.written += n;
        self.line_open = line_open;
    }

    /// Stream offset of the next byte expected from the peer.
    pub fn received(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// Writes every complete line of `pending + data` with one `writev` and
    /// keeps the unterminated tail. A tail longer than `max_line` is written
    /// as it is (the line is split; counted in `split_lines`).
    ///
    /// On a write error (a full disk) nothing is lost: every byte not
    /// written stays in `pending`, and [`retry`](Self::retry) writes it
    /// later. The caller stops reading from the peer meanwhile, so
    /// `pending` is bounded by one read chunk plus `max_line`.
    pub fn push<W: Write>(&mut self, out: &mut W, data: &[u8]) -> io::Result<()> {
        if self.has_complete_lines() {
            // An earlier write failed: keep the order, write it first.
            self.pending.extend_from_slice(data);
            return self.retry(out);
        }
        let cut = match memchr::memrchr(b'\n', data) {
            Some(i) => i + 1,
            None if self.pending.len() + data.len() > self.max_line => {
                self.split_lines += 1;
                data.len()
            }
            None => {
                self.pending.extend_from_slice(data);
                return Ok(());
            }
        };
        let (lines, tail) = data.split_at(cut);
        match write_all_vectored(out, &self.pending, lines) {
            Ok(done) => {
                self.written += done as u64;
                if let Some(&last) = lines.last().or(self.pending.last()) {
                    self.line_open = last != b'\n';
                }
                self.pending.clear();
                self.pending.extend_from_slice(tail);
                if tail.len() > self.max_line {
                    self.split_lines += 1;
                    return self.retry(out);
                }
                Ok(())
            }
            Err((done, e)) => {
                self.written += done as u64;
                let mut rest = Vec::with_capacity(self.pending.len() + data.len() - done);
                let both = [self.pending.as_slice(), data];
                let mut skip = done;
                for part in both {
                    let k = skip.min(part.len());
                    rest.extend_from_slice(&part[k..]);
                    skip -= k;
                }
                self.pending = rest;
                Err(e)
            }
        }
    }

    /// Writes the complete lines held in `pending` (after an earlier
    /// failure), or all of it when it exceeds `max_line`.
    pub fn retry<W: Write>(&mut self, out: &mut W) -> io::Result<()> {
        let cut = match memchr::memrchr(b'\n', &self.pending) {
            _ if self.pending.len() > self.max_line => self.pending.len(),
            Some(i) => i + 1,
            None => return Ok(()),
        };
        self.write_front(out, cut)
    }

    /// Keeps `data` without writing anything (the output is busy).
    pub fn hold(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// Bytes received and not yet in the output.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// True when `pending` holds more than an unterminated tail (a write
    /// failed and must be retried before anything else).
    pub fn has_complete_lines(&self) -> bool {
        self.pending.len() > self.max_line || memchr::memchr(b'\n', &self.pending).is_some()
    }

    /// Writes whatever is pending, even without a final newline (end of stream).
    pub fn finish<W: Write>(&mut self, out: &mut W) -> io::Result<()> {
        self.write_front(out, self.pending.len())
    }

    /// Writes `pending[..cut]`, accounting for whatever made it even on error.
    fn write_front<W: Write>(&mut self, out: &mut W, cut: usize) -> io::Result<()> {
        let r = write_all_vectored(out, &self.pending[..cut], &[]);
        let done = match &r {
            Ok(n) => *n,
            Err((n, _)) => *n,
        };
        if done > 0 {
            self.line_open = self.pending[done - 1] != b'\n';
        }
        self.written += done as u64;
        self.pending.drain(..done);
        r.map(drop).map_err(|(_, e)| e)
    }
}

/// Writes `a` then `b` completely; on error returns how many bytes made it.
fn write_all_vectored<W: Write>(
    out: &mut W,
    a: &[u8],
    b: &[u8],
) -> Result<usize, (usize, io::Error)> {
    let total = a.len() + b.len();
    let mut done = 0;
    while done < total {
        let res = retry(|| {
            if done < a.len() {
                out.write_vectored(&[IoSlice::new(&a[done..]), IoSlice::new(b)])
            } else {
                out.write(&b[done - a.len()..])
            }
        });
        match res {
            Ok(0) => {
                return Err((
                    done,
                    io::Error::new(io::ErrorKind::WriteZero, "output accepted no bytes"),
                ))
            }
            Ok(n) => done += n,
            Err(e) => return Err((done, e)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `input` into chunks of `size` and checks that the output only
    /// ever grows by whole lines, ending identical after `finish`.
    fn run(input: &[u8], size: usize, max_line: usize) -> (Vec<u8>, LineWriter) {
        let mut out = Vec::new();
        let mut w = LineWriter::new(0, max_line);
        for chunk in input.chunks(size.max(1)) {
            w.push(&mut out, chunk).unwrap();
            assert!(out.is_empty() || out.ends_with(b"\n") || w.split_lines > 0);
            assert_eq!(w.written(), out.len() as u64);
        }
        assert_eq!(w.received(), input.len() as u64);
        w.finish(&mut out).unwrap();
        (out, w)
    }

    #[test]
    fn every_chunking_writes_whole_lines_and_everything() {
        let input = b"alpha\nbe\n\ngamma delta\nno newline at end";
        for size in [1, 2, 3, 5, 7, 64] {
            let (out, w) = run(input, size, 1 << 20);
            assert_eq!(out, input, "chunk size {size}");
            assert_eq!(w.split_lines, 0);
        }
    }

    #[test]
    fn overlong_lines_are_split_and_counted() {
        let input = b"0123456789abcdef\nxy\n";
        let (out, w) = run(input, 3, 4);
        assert_eq!(out, input);
        assert!(w.split_lines > 0);
    }

    fn route(dir: &std::path::Path) -> Route {
        Route {
            output: None,
            base: dir.to_path_buf(),
            relative: "out.log".into(),
        }
    }

    #[test]
    fn an_open_line_in_a_shared_output_is_its_owners_until_the_newline() {
        let tmp = tempfile::tempdir().unwrap();
        let r = route(tmp.path());
        let mut outs = Outputs::default();
        let id = outs.acquire(&r).unwrap();
        let (mut a, mut b) = (LineWriter::new(0, 1024), LineWriter::new(0, 1024));
        // Alone on the output, A's unterminated tail is written at once.
        assert!(matches!(
            outs.write(id, &mut a, 1, b"a1\nhalf", false),
            Outcome::Written
        ));
        assert_eq!(outs.open_line(id), Some(1));
        // B arrives: its bytes wait while A's line is open.
        assert_eq!(outs.acquire(&r).unwrap(), id);
        assert!(matches!(
            outs.write(id, &mut b, 2, b"b1\nb2", false),
            Outcome::Busy
        ));
        assert!(matches!(
            outs.write(id, &mut a, 1, b"-done\na2", false),
            Outcome::Written
        ));
        assert_eq!(
            outs.open_line(id),
            None,
            "A's newline closed its line; its new tail is held (not alone)"
        );
        assert!(matches!(
            outs.write(id, &mut b, 2, b"", false),
            Outcome::Written
        ));
        // At its end, B's tail is written and B owns the open line.
        assert!(matches!(
            outs.write(id, &mut b, 2, b"", true),
            Outcome::Written
        ));
        assert_eq!(outs.open_line(id), Some(2));
        assert!(matches!(
            outs.write(id, &mut a, 1, b"\n", false),
            Outcome::Busy
        ));
        outs.close_open_line(id).unwrap();
        assert!(matches!(
            outs.write(id, &mut a, 1, b"", false),
            Outcome::Written
        ));
        let got = std::fs::read_to_string(tmp.path().join("out.log")).unwrap();
        assert_eq!(got, "a1\nhalf-done\nb1\nb2\na2\n");
        assert_eq!(
            a.written() + b.written(),
            got.len() as u64 - 1,
            "only the closing newline is not a stream byte"
        );
    }

    /// A writer that accepts a few bytes then fails, like a full disk.
    struct Full(usize, Vec<u8>);
    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = b.len().min(self.0);
            self.0 -= n;
            self.1.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failed_write_keeps_every_unwritten_byte_for_retry() {
        let mut out = Full(5, Vec::new());
        let mut w = LineWriter::new(100, 1024);
        w.push(&mut out, b"abc").unwrap();
        assert!(w.push(&mut out, b"def\nghi\nj").is_err());
        assert_eq!(w.written(), 105);
        assert_eq!(out.1, b"abcde");
        assert_eq!(w.received(), 112, "nothing dropped");
        assert!(w.has_complete_lines());
        assert!(w.retry(&mut out).is_err(), "still full");
        out.0 = 1000; // space again
        w.retry(&mut out).unwrap();
        assert_eq!(out.1, b"abcdef\nghi\n");
        w.push(&mut out, b"k\n").unwrap();
        assert_eq!(out.1, b"abcdef\nghi\njk\n");
        assert_eq!(w.written(), 100 + 14);
    }
}
