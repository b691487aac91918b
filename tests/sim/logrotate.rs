//! logrotate's rotation of one file, one file-system call per step.
//!
//! A [`Rotation`] is a state machine: each [`Rotation::step`] performs
//! exactly one call on the [`SimFs`] (or reports the postrotate script,
//! or the end), so the scheduler can run application writes and tailer
//! steps between any two of them. Like the real program it decides as it
//! goes, from what the file system holds at that moment: a rename of an
//! old copy that has meanwhile vanished is skipped, a glob sees the files
//! present when it runs.
//!
//! ## The order of operations (logrotate 3.21/3.22, `logrotate.c`)
//! `rotateLogSet` runs, per log: prerotate script, `prerotateSingleLog`,
//! `rotateSingleLog`, postrotate script, `postrotateSingleLog`. Below, `P`
//! is the log, `D` the directory rotated files go to (`olddir` if set,
//! else `P`'s), `N` the `rotate` count (`max(N, 1)` where logrotate uses
//! `rotateCount ? rotateCount : 1`), `.gz` present only with `compress`.
//! The same orders were seen under `strace` of logrotate 3.21 (Debian 12).
//!
//! 1. Check (`findNeedRotating`): `lstat(P)`. Missing: skipped with
//!    `missingok`, an error without. A symlink is never rotated. Empty
//!    with `notifempty`: skipped. (No file-system change, so no step.)
//! 2. `compress` + `delaycompress` (`prerotateSingleLog`, first thing):
//!    compress the previous rotation, `D/P.1` (with `dateext`: every
//!    uncompressed `D/P-<stamp>`) into `….gz`, see *compressing* below.
//! 3. Old copies (`prerotateSingleLog`): numbered, rename
//!    `D/P.N.gz -> D/P.N+1.gz`, …, `D/P.1.gz -> D/P.2.gz`, each skipped if
//!    missing; `D/P.N+1.gz` is to be disposed of if it then exists. With
//!    `dateext`: glob `D/P-<stamp>.gz`, sorted; of the `n` found, when
//!    `n >= N`, the oldest `n-N` are unlinked now and the next one is to
//!    be disposed of; a rotation whose own target already exists fails.
//! 4. Rotate (`rotateSingleLog`):
//!    - default (`create`/`nocreate`): `rename(P, D/P.1)` (or
//!      `D/P-<stamp>`); with `create`: `open(P, O_CREAT|O_EXCL)`, `fchmod`
//!      (`IN_ATTRIB`), `close`. With `rotate 0` the file just renamed
//!      (plus `.gz` if compressed right away) is the one disposed of.
//!    - `copytruncate` (`copyTruncate`): `open(P, O_RDWR)`,
//!      `open(D/P.1, O_CREAT|O_EXCL)`, `fchmod`, then read/write chunks
//!      until a read returns 0 (it copies what `P` holds as it goes),
//!      `ftruncate(P, 0)`, `close(P)`, `close(D/P.1)`. Lines appended
//!      between the last read and the truncate are lost for good: that is
//!      real. With `rotate 0` the copy is skipped: `P` is only truncated.
//!      (`create` is ignored.)
//! 5. postrotate script: [`Step::Postrotate`]; the harness decides what
//!    the application does about it (see `app::Reopen`).
//! 6. `compress` without `delaycompress` (`postrotateSingleLog`):
//!    compress `D/P.1` (not when copytruncate skipped the copy).
//! 7. Dispose (`postrotateSingleLog`): unlink the file chosen in 3/4.
//!
//! *Compressing* (`compressLogFile`): `open(F, O_RDONLY)`,
//! `open(F.gz, O_CREAT|O_EXCL)`, `fchmod`, the compressor writes in
//! chunks ([`crate::fs::compressed`] bytes), `futimens` (`IN_ATTRIB`),
//! `close(F.gz)`, `unlink(F)`.
//!
//! `dateext` names are `P-<stamp>` with the stamp given by the harness as
//! an 8-digit number (logrotate's `-%Y%m%d`), so they sort by age.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::fs::{CopyJob, SimFile, SimFs, Writer};
use loghamster::tail::fs::{Fs, Kind};

#[cfg(test)]
mod tests;

/// The logrotate directives the model knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `rotate N`: old copies kept; 0 removes the rotated file.
    pub rotate: u32,
    /// `create` (true) or `nocreate`; ignored with `copytruncate`.
    pub create: bool,
    pub copytruncate: bool,
    pub compress: bool,
    pub delaycompress: bool,
    pub dateext: bool,
    /// `olddir`: absolute, or relative to the log's directory.
    pub olddir: Option<PathBuf>,
    pub missingok: bool,
    /// `ifempty` (true, logrotate's default) or `notifempty`.
    pub ifempty: bool,
    /// Bytes per copy or compression step (logrotate reads `BUFSIZ`).
    pub chunk: usize,
}

impl Default for Config {
    /// `rotate 3`, `create`, `missingok`, `ifempty`, 64-byte copy steps.
    fn default() -> Config {
        Config {
            rotate: 3,
            create: true,
            copytruncate: false,
            compress: false,
            delaycompress: false,
            dateext: false,
            olddir: None,
            missingok: true,
            ifempty: true,
            chunk: 64,
        }
    }
}

/// One file-system call of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `rename(2)`; with `missing_ok` a missing source is skipped.
    Rename {
        from: PathBuf,
        to: PathBuf,
        missing_ok: bool,
    },
    /// `unlink(2)`; with `missing_ok` a missing file is skipped.
    Unlink {
        path: PathBuf,
        missing_ok: bool,
    },
    /// copytruncate's `open(P, O_RDWR)`.
    OpenCurrent(PathBuf),
    /// The compressor's input, `open(F, O_RDONLY)` (no event).
    OpenInput(PathBuf),
    /// `open(F, O_CREAT|O_EXCL)` of the new file, copy or archive.
    CreateOut(PathBuf),
    /// `fchmod`/`futimens` of that output.
    AttribOut,
    /// One read and write of the copy or compression; repeated until a
    /// read returns nothing.
    CopyChunk,
    /// `ftruncate(P, 0)` of copytruncate.
    TruncateCurrent,
    CloseCurrent,
    CloseOut,
    /// The postrotate script runs.
    Postrotate,
}

/// What one [`Rotation::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// One file-system call was made (a skipped `missing_ok` one too).
    Did(Op),
    /// The postrotate script runs now: time to `HUP` the application.
    Postrotate,
    /// The rotation is over; every later call returns this again.
    Done(Outcome),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Rotated,
    /// Nothing to do (`missingok` and missing, `notifempty` and empty, a
    /// symlink).
    Skipped(&'static str),
    /// logrotate would report an error; descriptors it held are closed.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Check,
    DelayCompress,
    Shift,
    Rotate,
    Postrotate,
    Compress,
    Dispose,
    Finished,
}

/// One rotation of one log file in progress.
pub struct Rotation {
    cfg: Config,
    path: PathBuf,
    /// Where rotated files go.
    dir: PathBuf,
    base: OsString,
    stamp: u64,
    phase: Phase,
    queue: VecDeque<Op>,
    /// `D/P.1` or `D/P-<stamp>`.
    final_name: PathBuf,
    dispose: Option<PathBuf>,
    current: Option<Writer>,
    input: Option<SimFile>,
    out: Option<Writer>,
    job: Option<CopyJob>,
    outcome: Option<Outcome>,
}

/// `path` with `ext` appended to its last component.
fn add_ext(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(ext);
    PathBuf::from(name)
}

fn with_suffix(dir: &Path, base: &OsStr, suffix: &str) -> PathBuf {
    dir.join(add_ext(Path::new(base), suffix))
}

/// `base-<8 digits><ext>`: the stamp, if `name` is a dateext name of `base`.
fn dated(name: &OsStr, base: &OsStr, ext: &str) -> Option<u64> {
    let rest = name
        .as_encoded_bytes()
        .strip_prefix(base.as_encoded_bytes())?;
    let digits = rest.strip_prefix(b"-")?.strip_suffix(ext.as_bytes())?;
    if digits.len() != 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Rotation {
    /// A rotation of `path` under `cfg`; `stamp` names a `dateext` copy.
    pub fn new(cfg: Config, path: &Path, stamp: u64) -> Rotation {
        let parent = path.parent().unwrap_or(Path::new("/"));
        let dir = match &cfg.olddir {
            Some(old) => parent.join(old),
            None => parent.to_owned(),
        };
        let base = path.file_name().unwrap_or_default().to_owned();
        Rotation {
            cfg,
            path: path.to_owned(),
            dir,
            base,
            stamp,
            phase: Phase::Check,
            queue: VecDeque::new(),
            final_name: PathBuf::new(),
            dispose: None,
            current: None,
            input: None,
            out: None,
            job: None,
            outcome: None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.outcome.is_some()
    }

    /// The call the next step makes, if already planned (a phase is
    /// planned when the previous one is through, so this can be `None`
    /// with calls still to come).
    pub fn next_op(&self) -> Option<&Op> {
        self.queue.front()
    }

    /// Performs the next call (planning the next phase first when the
    /// previous one is through).
    pub fn step(&mut self, fs: &mut SimFs) -> Step {
        loop {
            if let Some(outcome) = &self.outcome {
                return Step::Done(outcome.clone());
            }
            let Some(op) = self.queue.pop_front() else {
                self.plan(fs);
                continue;
            };
            return match self.exec(fs, &op) {
                Ok(()) if op == Op::Postrotate => Step::Postrotate,
                Ok(()) => Step::Did(op),
                Err(why) => {
                    self.abort(fs);
                    self.outcome = Some(Outcome::Failed(format!("{op:?}: {why}")));
                    Step::Done(Outcome::Failed(format!("{op:?}: {why}")))
                }
            };
        }
    }

    /// Steps to the end; `on_postrotate` runs at the postrotate script.
    pub fn run(&mut self, fs: &mut SimFs, mut on_postrotate: impl FnMut(&mut SimFs)) -> Outcome {
        loop {
            match self.step(fs) {
                Step::Done(outcome) => return outcome,
                Step::Postrotate => on_postrotate(fs),
                Step::Did(_) => {}
            }
        }
    }

    fn compext(&self) -> &'static str {
        if self.cfg.compress {
            ".gz"
        } else {
            ""
        }
    }

    /// `max(rotate, 1)`: what logrotate shifts and globs with.
    fn count(&self) -> u32 {
        self.cfg.rotate.max(1)
    }

    /// Moves to the next phase and queues its calls, decided from what the
    /// file system holds now.
    fn plan(&mut self, fs: &mut SimFs) {
        let (next, result) = match self.phase {
            Phase::Check => (Phase::DelayCompress, self.plan_check(fs)),
            Phase::DelayCompress => (Phase::Shift, Ok(self.plan_delaycompress(fs))),
            Phase::Shift => (Phase::Rotate, self.plan_shift(fs)),
            Phase::Rotate => (Phase::Postrotate, Ok(self.plan_rotate(fs))),
            Phase::Postrotate => (Phase::Compress, Ok(vec![Op::Postrotate])),
            Phase::Compress => (Phase::Dispose, Ok(self.plan_compress())),
            Phase::Dispose => (Phase::Finished, Ok(self.plan_dispose())),
            Phase::Finished => (Phase::Finished, Err(Outcome::Rotated)),
        };
        self.phase = next;
        match result {
            Ok(ops) => self.queue.extend(ops),
            Err(outcome) => self.outcome = Some(outcome),
        }
    }

    fn plan_check(&self, fs: &mut SimFs) -> Result<Vec<Op>, Outcome> {
        match fs.stat_path(&self.path) {
            None if self.cfg.missingok => Err(Outcome::Skipped("missing")),
            None => Err(Outcome::Failed(format!(
                "stat of {} failed",
                self.path.display()
            ))),
            Some(m) if m.kind == Kind::Symlink => Err(Outcome::Skipped("symlink")),
            Some(m) if m.len == 0 && !self.cfg.ifempty => Err(Outcome::Skipped("empty")),
            Some(_) => Ok(Vec::new()),
        }
    }

    fn plan_delaycompress(&self, fs: &mut SimFs) -> Vec<Op> {
        if !(self.cfg.compress && self.cfg.delaycompress) {
            return Vec::new();
        }
        let olds = if self.cfg.dateext {
            self.dated_names(fs, "")
        } else {
            let one = with_suffix(&self.dir, &self.base, ".1");
            fs.stat_path(&one).map(|_| one).into_iter().collect()
        };
        olds.iter().flat_map(|f| compress_ops(f)).collect()
    }

    /// The `dateext` copies in `D` ending in `ext`, oldest first.
    fn dated_names(&self, fs: &mut SimFs, ext: &str) -> Vec<PathBuf> {
        let mut found: Vec<(u64, PathBuf)> = fs
            .list(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, _)| Some((dated(&name, &self.base, ext)?, self.dir.join(name))))
            .collect();
        found.sort();
        found.into_iter().map(|(_, p)| p).collect()
    }

    fn plan_shift(&mut self, fs: &mut SimFs) -> Result<Vec<Op>, Outcome> {
        let ext = self.compext();
        if self.cfg.dateext {
            self.final_name = with_suffix(&self.dir, &self.base, &format!("-{:08}", self.stamp));
            let target = add_ext(&self.final_name, ext);
            if fs.stat_path(&target).is_some() {
                return Err(Outcome::Failed(format!(
                    "destination {} already exists",
                    target.display()
                )));
            }
            let mut old = self.dated_names(fs, ext);
            let keep = self.count() as usize;
            if old.len() < keep {
                return Ok(Vec::new());
            }
            old.truncate(old.len() - keep + 1);
            self.dispose = old.pop();
            return Ok(old
                .into_iter()
                .map(|path| Op::Unlink {
                    path,
                    missing_ok: true,
                })
                .collect());
        }
        self.final_name = with_suffix(&self.dir, &self.base, ".1");
        let n = self.count();
        self.dispose = Some(with_suffix(
            &self.dir,
            &self.base,
            &format!(".{}{ext}", n + 1),
        ));
        Ok((1..=n)
            .rev()
            .map(|i| Op::Rename {
                from: with_suffix(&self.dir, &self.base, &format!(".{i}{ext}")),
                to: with_suffix(&self.dir, &self.base, &format!(".{}{ext}", i + 1)),
                missing_ok: true,
            })
            .collect())
    }

    fn plan_rotate(&mut self, fs: &mut SimFs) -> Vec<Op> {
        if self
            .dispose
            .as_ref()
            .is_some_and(|d| fs.stat_path(d).is_none())
        {
            self.dispose = None;
        }
        let (p, fin) = (self.path.clone(), self.final_name.clone());
        if self.cfg.copytruncate {
            let mut ops = vec![Op::OpenCurrent(p)];
            let copy = self.cfg.rotate > 0;
            if copy {
                ops.extend([Op::CreateOut(fin), Op::AttribOut, Op::CopyChunk]);
            }
            ops.extend([Op::TruncateCurrent, Op::CloseCurrent]);
            if copy {
                ops.push(Op::CloseOut);
            }
            return ops;
        }
        if self.cfg.rotate == 0 {
            let now = self.cfg.compress && !self.cfg.delaycompress;
            self.dispose = Some(add_ext(&fin, if now { ".gz" } else { "" }));
        }
        let mut ops = vec![Op::Rename {
            from: p.clone(),
            to: fin,
            missing_ok: false,
        }];
        if self.cfg.create {
            ops.extend([Op::CreateOut(p), Op::AttribOut, Op::CloseOut]);
        }
        ops
    }

    fn plan_compress(&self) -> Vec<Op> {
        let skipped_copy = self.cfg.copytruncate && self.cfg.rotate == 0;
        if !self.cfg.compress || self.cfg.delaycompress || skipped_copy {
            return Vec::new();
        }
        compress_ops(&self.final_name)
    }

    fn plan_dispose(&mut self) -> Vec<Op> {
        let dispose = self.dispose.take();
        dispose
            .map(|path| Op::Unlink {
                path,
                missing_ok: true,
            })
            .into_iter()
            .collect()
    }

    /// Carries out one call.
    fn exec(&mut self, fs: &mut SimFs, op: &Op) -> Result<(), String> {
        let missing = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        match op {
            Op::Rename {
                from,
                to,
                missing_ok,
            } => match fs.rename(from, to) {
                Err(e) if !(*missing_ok && missing(&e)) => return Err(e.to_string()),
                _ => {}
            },
            Op::Unlink { path, missing_ok } => match fs.unlink(path) {
                Err(e) if !(*missing_ok && missing(&e)) => return Err(e.to_string()),
                _ => {}
            },
            Op::OpenCurrent(p) => {
                self.current = Some(fs.open_append(p).ok_or("cannot open the log")?);
            }
            Op::OpenInput(p) => self.input = Some(fs.open(p, false).map_err(|e| e.to_string())?.0),
            Op::CreateOut(p) => self.out = Some(fs.create_new(p).map_err(|e| e.to_string())?),
            Op::AttribOut => fs.touch_attr(self.out.as_ref().expect("output open")),
            Op::CopyChunk => self.copy_chunk(fs),
            Op::TruncateCurrent => fs.truncate_fd(self.current.as_ref().expect("log open"), 0),
            Op::CloseCurrent => fs.close(self.current.take().expect("log open")),
            Op::CloseOut => {
                self.input = None;
                fs.close(self.out.take().expect("output open"));
            }
            Op::Postrotate => {}
        }
        Ok(())
    }

    /// One step of the copy (from copytruncate's descriptor) or of the
    /// compression (from the input); queues the next until a read returns
    /// nothing, then hands the output back for its `fchmod`/`close`.
    fn copy_chunk(&mut self, fs: &mut SimFs) {
        let mut job = match self.job.take() {
            Some(job) => job,
            None => {
                let out = self.out.take().expect("output open");
                match (self.input.take(), &self.current) {
                    (Some(input), _) => CopyJob::new(input, out, true),
                    (None, Some(current)) => CopyJob::new(fs.reader_of(current), out, false),
                    (None, None) => unreachable!("a copy needs a source"),
                }
            }
        };
        if fs.copy_step(&mut job, self.cfg.chunk) {
            self.out = Some(job.into_target());
        } else {
            self.job = Some(job);
            self.queue.push_front(Op::CopyChunk);
        }
    }

    /// Closes what a failed rotation held open (logrotate's `goto fail`).
    fn abort(&mut self, fs: &mut SimFs) {
        self.queue.clear();
        self.input = None;
        if let Some(job) = self.job.take() {
            self.out = Some(job.into_target());
        }
        for w in [self.current.take(), self.out.take()].into_iter().flatten() {
            fs.close(w);
        }
    }
}

/// `compressLogFile(f)`: the calls that turn `f` into `f.gz`.
fn compress_ops(f: &Path) -> Vec<Op> {
    vec![
        Op::OpenInput(f.to_owned()),
        Op::CreateOut(add_ext(f, ".gz")),
        Op::AttribOut,
        Op::CopyChunk,
        Op::AttribOut,
        Op::CloseOut,
        Op::Unlink {
            path: f.to_owned(),
            missing_ok: true,
        },
    ]
}
