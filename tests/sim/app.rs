//! A simulated application writing its log, and the line format the
//! simulation's checker recognises.
//!
//! Every line is `"<tag> <generation> <seq>\n"`: `tag` names the
//! application (one per followed path), `seq` counts its lines from 0 and
//! never repeats, `generation` counts how often it (re)opened its log. A
//! line is identified by `(tag, seq)`; the generation only helps reading a
//! failing history.
//!
//! The application opens its log like real ones do (`O_CREAT|O_APPEND`,
//! without truncating) and keeps writing through that descriptor: after a
//! `create`-mode rotation renamed the file, its lines keep going into the
//! renamed file until it reopens the path. Its postrotate `HUP` makes it
//! reopen at once ([`Reopen::Immediate`]) or only when the scheduler says
//! so ([`Reopen::Lazy`], an application that takes its time). With
//! `nocreate` the reopen is what creates the new file.
//!
//! [`App::history`] records where every line landed (inode and offset), so
//! a checker can tell a line the tailer lost from one the file system lost
//! (copytruncate truncating lines written after the copy ended).

#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};

use crate::fs::{SimFs, Writer};

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Line {
    pub tag: String,
    pub generation: u64,
    pub seq: u64,
}

/// The text of one line, newline included. `tag` must hold no space or
/// newline.
pub fn line(tag: &str, generation: u64, seq: u64) -> String {
    debug_assert!(
        !tag.contains([' ', '\n']) && !tag.is_empty(),
        "bad tag {tag:?}"
    );
    format!("{tag} {generation} {seq}\n")
}

/// Parses one line, with or without its newline; `None` if it is not one
/// [`line`] wrote.
pub fn parse_line(bytes: &[u8]) -> Option<Line> {
    let text = std::str::from_utf8(bytes.strip_suffix(b"\n").unwrap_or(bytes)).ok()?;
    let mut fields = text.split(' ');
    let tag = fields.next().filter(|t| !t.is_empty())?;
    let generation = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    if fields.next().is_some() || text.contains('\n') {
        return None;
    }
    Some(Line {
        tag: tag.to_owned(),
        generation,
        seq,
    })
}

/// Parses every complete line of `bytes` (a trailing partial line is left
/// out); the error names the first line that is not one of ours.
pub fn parse_lines(bytes: &[u8]) -> Result<Vec<Line>, String> {
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => return Ok(Vec::new()),
    };
    complete
        .split_inclusive(|&b| b == b'\n')
        .map(|l| {
            parse_line(l)
                .ok_or_else(|| format!("not a simulated line: {:?}", String::from_utf8_lossy(l)))
        })
        .collect()
}

/// When the application reacts to its postrotate `HUP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reopen {
    /// Reopens its log inside [`App::hup`].
    Immediate,
    /// Only notes it; [`App::reopen`] comes later, when scheduled.
    Lazy,
}

/// Where one line (or the start of one) was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub seq: u64,
    pub generation: u64,
    pub ino: u64,
    pub born: u64,
    /// Offset of the line's first byte in that inode.
    pub offset: u64,
}

/// A simulated application logging to `path`.
pub struct App {
    tag: String,
    path: PathBuf,
    policy: Reopen,
    writer: Option<Writer>,
    /// Opens so far; the generation of the lines now written.
    generation: u64,
    /// The next line's number.
    seq: u64,
    /// The rest of a line whose start was already written.
    partial: Vec<u8>,
    hup_pending: bool,
    history: Vec<Written>,
}

impl App {
    pub fn new(tag: &str, path: &Path, policy: Reopen) -> App {
        App {
            tag: tag.to_owned(),
            path: path.to_owned(),
            policy,
            writer: None,
            generation: 0,
            seq: 0,
            partial: Vec::new(),
            hup_pending: false,
            history: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Lines started so far (the next line's `seq`).
    pub fn lines_started(&self) -> u64 {
        self.seq
    }

    pub fn history(&self) -> &[Written] {
        &self.history
    }

    pub fn writer(&self) -> Option<&Writer> {
        self.writer.as_ref()
    }

    /// A `HUP` is waiting for a lazy application's [`App::reopen`].
    pub fn reopen_pending(&self) -> bool {
        self.hup_pending
    }

    fn ensure_open(&mut self, fs: &mut SimFs) -> io::Result<()> {
        if self.writer.is_none() {
            self.writer = Some(fs.open_or_create(&self.path)?);
            self.generation += 1;
        }
        Ok(())
    }

    /// Writes the rest of a started line, then `n` whole lines, in one
    /// `write` (opening the log first if it is not open).
    pub fn write_lines(&mut self, fs: &mut SimFs, n: u64) -> io::Result<()> {
        self.ensure_open(fs)?;
        let mut buf = std::mem::take(&mut self.partial);
        for _ in 0..n {
            self.record(fs, buf.len());
            buf.extend_from_slice(line(&self.tag, self.generation, self.seq).as_bytes());
            self.seq += 1;
        }
        fs.write(self.writer.as_ref().expect("open"), &buf);
        Ok(())
    }

    /// Writes the first half of the next line (nothing if a line is
    /// already half written): the tailer sees a partial line.
    pub fn write_partial(&mut self, fs: &mut SimFs) -> io::Result<()> {
        self.ensure_open(fs)?;
        if !self.partial.is_empty() {
            return Ok(());
        }
        let text = line(&self.tag, self.generation, self.seq).into_bytes();
        self.record(fs, 0);
        self.seq += 1;
        let (head, tail) = text.split_at(text.len() / 2);
        fs.write(self.writer.as_ref().expect("open"), head);
        self.partial = tail.to_vec();
        Ok(())
    }

    fn record(&mut self, fs: &SimFs, ahead: usize) {
        let meta = fs.writer_meta(self.writer.as_ref().expect("open"));
        self.history.push(Written {
            seq: self.seq,
            generation: self.generation,
            ino: meta.ino,
            born: meta.born,
            offset: meta.len + ahead as u64,
        });
    }

    /// The postrotate script's signal.
    pub fn hup(&mut self, fs: &mut SimFs) -> io::Result<()> {
        match self.policy {
            Reopen::Immediate => self.reopen(fs),
            Reopen::Lazy => {
                self.hup_pending = true;
                Ok(())
            }
        }
    }

    /// Finishes a half-written line, closes the log and opens the path
    /// again (creating it if missing).
    pub fn reopen(&mut self, fs: &mut SimFs) -> io::Result<()> {
        self.close(fs);
        self.hup_pending = false;
        self.ensure_open(fs)
    }

    /// Finishes a half-written line and closes the log; the next write
    /// opens it again.
    pub fn close(&mut self, fs: &mut SimFs) {
        if let Some(w) = self.writer.take() {
            fs.write(&w, &std::mem::take(&mut self.partial));
            fs.close(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;

    #[test]
    fn lines_round_trip_and_reject_garbage() {
        let l = line("a", 3, 17);
        assert_eq!(l, "a 3 17\n");
        let want = Line {
            tag: "a".into(),
            generation: 3,
            seq: 17,
        };
        assert_eq!(parse_line(l.as_bytes()), Some(want.clone()));
        assert_eq!(parse_line(b"a 3 17"), Some(want));
        for bad in [
            &b""[..],
            b"a 3",
            b"a 3 x\n",
            b" 3 4\n",
            b"a 3 4 5\n",
            b"a 3 4\n\n",
            b"\xff 1 2",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
        let text = format!("{}{}b 1", line("a", 1, 0), line("a", 1, 1));
        assert_eq!(parse_lines(text.as_bytes()).unwrap().len(), 2);
        assert!(parse_lines(b"a 1 0\nzzz\n").unwrap_err().contains("zzz"));
    }

    #[test]
    fn partial_lines_complete_before_the_next_and_history_tracks_offsets() {
        let mut fs = SimFs::new();
        let p = Path::new("/app.log");
        let mut app = App::new("t", p, Reopen::Immediate);
        app.write_partial(&mut fs).unwrap();
        assert_eq!(fs.read_path(p).unwrap(), b"t 1");
        app.write_lines(&mut fs, 1).unwrap();
        assert_eq!(fs.read_path(p).unwrap(), b"t 1 0\nt 1 1\n");
        let offsets: Vec<u64> = app.history().iter().map(|w| w.offset).collect();
        assert_eq!(offsets, [0, 6]);
    }

    #[test]
    fn lazy_app_keeps_writing_into_the_renamed_file_until_it_reopens() {
        let mut fs = SimFs::new();
        let (p, p1) = (Path::new("/app.log"), Path::new("/app.log.1"));
        let mut app = App::new("t", p, Reopen::Lazy);
        app.write_lines(&mut fs, 1).unwrap();
        fs.rename(p, p1).unwrap();
        app.hup(&mut fs).unwrap();
        assert!(app.reopen_pending());
        app.write_lines(&mut fs, 1).unwrap();
        assert_eq!(fs.read_path(p1).unwrap(), b"t 1 0\nt 1 1\n");
        assert!(
            fs.stat_path(p).is_none(),
            "nothing created the new file yet"
        );
        app.reopen(&mut fs).unwrap();
        app.write_lines(&mut fs, 1).unwrap();
        assert_eq!(fs.read_path(p).unwrap(), b"t 2 2\n");
        let inos: Vec<u64> = app.history().iter().map(|w| w.ino).collect();
        assert_eq!(inos[0], inos[1]);
        assert_ne!(inos[1], inos[2]);
        app.close(&mut fs);
        fs.check().unwrap();
    }
}
