//! The zero-copy side of [`Outputs`]: writing bytes that sit in a pipe
//! into an output with `splice(2)`, for a stream that has the output to
//! itself.
//!
//! The kernel refuses to splice into an `O_APPEND` descriptor, so each
//! output gets a second, positional descriptor of the same inode
//! ([`reopen_positional`]), opened on first use and dropped whenever the
//! `O_APPEND` one is replaced (SIGHUP). Spliced bytes go to the end of the
//! file as `fstat` reports it, so they land exactly where an `O_APPEND`
//! write would have put them, whatever else changed the file's length
//! (a recovery truncation, a reopen, a line-aligned write). Checkpoints,
//! `fdatasync` and crash recovery work on the file, so they see every
//! byte whichever way it came.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::{LineWriter, Outcome, Output, OutputId, Outputs, Owner};
use crate::reactor::sys::fs::reopen_positional;
use crate::reactor::sys::pipe::{self, Pipe};
use crate::reactor::sys::retry;

/// An output's second descriptor, for splicing at explicit offsets.
#[derive(Debug)]
pub(super) enum Positional {
    /// Not opened yet (opened on first use, and again after a reopen).
    Untried,
    /// The same inode as `Output::file`, read-write, without `O_APPEND`.
    Open(File),
    /// Not a regular file, no `/proc`, or splice refused it: this output
    /// is written line-aligned only.
    Refused,
}

impl Outputs {
    /// Whether [`splice`](Self::splice) can write into this output: a
    /// regular file whose positional descriptor could be opened (tried
    /// once per open file; a refusal is logged at debug level).
    pub fn can_splice(&mut self, id: OutputId) -> bool {
        let Some(out) = self.open.get_mut(id) else {
            return false;
        };
        if let Positional::Untried = out.positional {
            let opened = match out.file.metadata() {
                Ok(m) if m.is_file() => reopen_positional(&out.file),
                Ok(_) => Err(io::Error::other("not a regular file")),
                Err(e) => Err(e),
            };
            out.positional = match opened {
                Ok(f) => Positional::Open(f),
                Err(e) => {
                    crate::debug!(
                        "output {}: no zero-copy writes ({e}); writing it line by line",
                        crate::log::esc(&out.route.full_path())
                    );
                    Positional::Refused
                }
            };
        }
        matches!(out.positional, Positional::Open(_))
    }

    /// Moves the `len` bytes the `pipe` holds, all of one stream, to the
    /// end of the output without a user-space copy: the zero-copy
    /// counterpart of [`write`](Self::write) for a stream that has the
    /// output to itself (the caller checks that, that nothing is pending
    /// in `writer`, and [`can_splice`](Self::can_splice)).
    ///
    /// The pipe is empty afterwards. `writer` counts what reached the file
    /// as written; what did not (a full disk) is read back from the pipe
    /// and held in `writer`, exactly as a failed [`write`](Self::write)
    /// holds it, and [`Outcome::Failed`] is returned. A failure with which
    /// splice says it does not apply ([`pipe::is_unsupported`]) also marks
    /// the output as line-aligned only. The last byte written is read back,
    /// so the open-line owner stays exact for a stream that joins later.
    ///
    /// `Err` only if bytes left in the pipe could not be read back: they
    /// are lost to this connection, which must close (its client re-sends
    /// from the stream's offset, which never counted them).
    pub fn splice(
        &mut self,
        id: OutputId,
        writer: &mut LineWriter,
        owner: Owner,
        pipe: &Pipe,
        len: usize,
    ) -> io::Result<Outcome> {
        debug_assert_eq!(writer.pending_len(), 0, "splice only with nothing held");
        let (done, result) = match self.open.get_mut(id) {
            Some(Output {
                positional: Positional::Open(f),
                dirty,
                ..
            }) => {
                let (done, end, result) = splice_all(pipe, f, len);
                if done > 0 {
                    *dirty = true;
                    let mut last = [0u8];
                    // Unknown counts as open: others wait rather than
                    // write into the middle of a line.
                    let open = !matches!(f.read_at(&mut last, end - 1), Ok(1) if last[0] == b'\n');
                    writer.spliced(done as u64, open);
                }
                (done, result)
            }
            _ => (0, Err(io::Error::from_raw_os_error(libc::EINVAL))),
        };
        if done > 0 {
            self.note_line(id, writer, owner);
        }
        let Err(e) = result else {
            return Ok(Outcome::Written);
        };
        if pipe::is_unsupported(&e) {
            if let Some(out) = self.open.get_mut(id) {
                crate::debug!(
                    "output {}: splice refused ({e}); writing it line by line",
                    crate::log::esc(&out.route.full_path())
                );
                out.positional = Positional::Refused;
            }
        }
        spill(pipe, writer, len - done)?;
        Ok(Outcome::Failed(e))
    }
}

/// Splices `len` bytes from `pipe` to the end of `file` (as `fstat` reports
/// it); returns how many made it, the offset after them, and the error
/// that stopped it early.
fn splice_all(pipe: &Pipe, file: &File, len: usize) -> (usize, u64, io::Result<()>) {
    let mut end = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return (0, 0, Err(e)),
    };
    let mut done = 0;
    while done < len {
        match retry(|| pipe.drain_to(file, end, len - done)) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::WriteZero, "output accepted no bytes");
                return (done, end, Err(e));
            }
            Ok(n) => {
                done += n;
                end += n as u64;
            }
            Err(e) => return (done, end, Err(e)),
        }
    }
    (done, end, Ok(()))
}

/// Reads the `left` bytes still in `pipe` into `writer`'s pending bytes.
fn spill(pipe: &Pipe, writer: &mut LineWriter, mut left: usize) -> io::Result<()> {
    let mut buf = vec![0u8; left.min(64 * 1024)];
    while left > 0 {
        let want = left.min(buf.len());
        match retry(|| pipe.read(&mut buf[..want])) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                writer.hold(&buf[..n]);
                left -= n;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::route::Route;

    fn route(dir: &std::path::Path) -> Route {
        Route {
            output: None,
            base: dir.to_path_buf(),
            relative: "out.log".into(),
        }
    }

    /// A pipe holding `bytes` (spliced in from a scratch file).
    fn pipe_with(dir: &std::path::Path, bytes: &[u8]) -> Pipe {
        let src = dir.join("src");
        std::fs::write(&src, bytes).unwrap();
        let pipe = Pipe::new(1 << 16).unwrap();
        let n = pipe
            .fill_from(&File::open(&src).unwrap(), bytes.len())
            .unwrap();
        assert_eq!(n, bytes.len());
        pipe
    }

    #[test]
    fn spliced_bytes_land_at_the_end_and_keep_the_open_line_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let r = route(tmp.path());
        let mut outs = Outputs::default();
        let id = outs.acquire(&r).unwrap();
        let mut a = LineWriter::new(0, 1024);
        assert!(matches!(
            outs.write(id, &mut a, 1, b"a1\n", false),
            Outcome::Written
        ));
        assert!(outs.can_splice(id));
        let p = pipe_with(tmp.path(), b"a2\na3 par");
        assert!(matches!(
            outs.splice(id, &mut a, 1, &p, 9).unwrap(),
            Outcome::Written
        ));
        assert_eq!(a.written(), 12);
        assert_eq!(outs.open_line(id), Some(1), "a3 is unterminated");
        // A second stream joins: it waits for A's newline, which A then
        // writes the line-aligned way.
        assert_eq!(outs.acquire(&r).unwrap(), id);
        let mut b = LineWriter::new(0, 1024);
        assert!(matches!(
            outs.write(id, &mut b, 2, b"b1\n", false),
            Outcome::Busy
        ));
        assert!(matches!(
            outs.write(id, &mut a, 1, b"t\n", false),
            Outcome::Written
        ));
        assert!(matches!(
            outs.write(id, &mut b, 2, b"", false),
            Outcome::Written
        ));
        let got = std::fs::read_to_string(tmp.path().join("out.log")).unwrap();
        assert_eq!(got, "a1\na2\na3 part\nb1\n");
        let marks = outs.marks().unwrap();
        assert_eq!(marks[0].len, got.len() as u64);
    }

    #[test]
    fn an_output_that_refuses_splice_keeps_the_bytes_for_the_line_aligned_path() {
        let tmp = tempfile::tempdir().unwrap();
        let r = route(tmp.path());
        let mut outs = Outputs::default();
        let id = outs.acquire(&r).unwrap();
        // As if the positional descriptor had O_APPEND: splice says EINVAL.
        let append = File::options()
            .append(true)
            .open(tmp.path().join("out.log"))
            .unwrap();
        outs.open[id].positional = Positional::Open(append);
        let mut a = LineWriter::new(7, 1024);
        let p = pipe_with(tmp.path(), b"x1\nx2");
        let Outcome::Failed(e) = outs.splice(id, &mut a, 1, &p, 5).unwrap() else {
            panic!("splice into O_APPEND must fail");
        };
        assert!(pipe::is_unsupported(&e), "{e}");
        assert_eq!((a.written(), a.received()), (7, 12), "all five bytes held");
        assert!(
            !outs.can_splice(id),
            "the output is line-aligned from now on"
        );
        assert!(matches!(
            outs.write(id, &mut a, 1, b"", false),
            Outcome::Written
        ));
        assert_eq!(
            std::fs::read(tmp.path().join("out.log")).unwrap(),
            b"x1\nx2"
        );
    }

    #[test]
    fn a_reopen_drops_the_positional_descriptor_with_the_old_file() {
        let tmp = tempfile::tempdir().unwrap();
        let r = route(tmp.path());
        let mut outs = Outputs::default();
        let id = outs.acquire(&r).unwrap();
        let mut a = LineWriter::new(0, 1024);
        assert!(outs.can_splice(id));
        let p = pipe_with(tmp.path(), b"old\n");
        outs.splice(id, &mut a, 1, &p, 4).unwrap();
        std::fs::rename(tmp.path().join("out.log"), tmp.path().join("out.log.1")).unwrap();
        assert!(outs.reopen_all().is_empty());
        assert!(outs.can_splice(id));
        let p = pipe_with(tmp.path(), b"new\n");
        outs.splice(id, &mut a, 1, &p, 4).unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("out.log.1")).unwrap(),
            b"old\n"
        );
        assert_eq!(std::fs::read(tmp.path().join("out.log")).unwrap(), b"new\n");
        assert_eq!(a.written(), 8);
    }
}
