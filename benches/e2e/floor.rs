//! The kernel's floor under `many`: what reading every followed file and
//! appending to every output costs in system calls alone, with no shipper
//! around them. Run by `many` after its daemons stopped, in the same work
//! dir (so on the same file system), and printed beside their figures.
//!
//! Any shipper that keeps p99 write→output latency within `linger` +
//! 10 ms has to look at each busy file at least once per that period, and
//! write what it found to the file's output as often: at 1,000 files and
//! the default 20 ms, 33 sends per file per second, 33,000 in all. A file
//! that gets fewer lines than that a second needs a send per line
//! instead (10,000 files at the same rate: 7 lines each a second). The
//! floor is one `pread` and one `O_APPEND` `write` of the resulting send
//! size per send, timed on the process's CPU clock in tight loops over
//! warm files (no inotify, no socket, no bookkeeping):
//! a lower bound, not a model of the daemons. The same reads and writes go
//! once more through io_uring, submitted 1,024 at a time, to show what a
//! ring does to that per-call cost here (on ext4 it raises it: buffered
//! appends are handed to an io_uring worker thread).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::data::GIB;

/// Entries submitted to the ring at a time.
const RING_BATCH: usize = 1024;

/// Calls timed per variant, about (at least 20 rounds over the files).
const CALLS: usize = 200_000;

/// CPU µs per call.
#[derive(Debug, Clone)]
pub struct Floor {
    /// Files the calls were timed over.
    pub files: usize,
    /// Bytes per send.
    pub send: usize,
    /// Sends per second in all.
    pub sends_s: f64,
    pub pread_us: f64,
    pub write_us: f64,
    /// Through io_uring; the error where that failed.
    pub ring: Result<(f64, f64), String>,
}

impl Floor {
    /// CPU seconds per GiB of `us` µs per send.
    pub fn per_gib(&self, us: f64) -> f64 {
        us * 1e-6 * GIB / self.send as f64
    }

    /// The line `many` prints.
    pub fn note(&self, files: usize, period_ms: f64) -> String {
        let per_file = self.sends_s / files.max(1) as f64;
        let ring = match &self.ring {
            Err(e) => format!("io_uring: not measured: {e}"),
            Ok((r, w)) => {
                format!(
                    "through io_uring ({RING_BATCH} a submission) {r:.2} and {w:.2} µs, \
                 {:.2} and {:.2} s/GiB",
                    self.per_gib(*r),
                    self.per_gib(*w)
                )
            }
        };
        format!(
            "kernel floor at this rate (each of {files} files read and its output appended \
             {per_file:.1} times a second, once per {period_ms:.0} ms or once per line where \
             lines come slower: {:.0} sends/s of {} bytes; system calls alone, tight loops \
             over {} files): `pread` {:.2} µs and ext4 `write` {:.2} µs a call, **{:.2} s/GiB for the reads and \
             {:.2} s/GiB for the writes**; {ring}",
            self.sends_s,
            self.send,
            self.files,
            self.pread_us,
            self.write_us,
            self.per_gib(self.pread_us),
            self.per_gib(self.write_us),
        )
    }
}

/// Measures the floor for `files` files at `rate` bytes/s and `lines`
/// lines/s in all, each read once per `period_ms` or once per line where
/// its lines come slower, in a fresh directory `dir` (removed after).
///
/// Each file takes three descriptors; where the open-files limit has no
/// room for them all, the calls are timed over fewer files (the cost of
/// a call, not their number, is what is measured: `Floor::files` says
/// how many).
pub fn measure(
    dir: &Path,
    files: usize,
    rate: f64,
    lines: f64,
    period_ms: f64,
) -> io::Result<Floor> {
    let files = files.max(1);
    let per_file = (1000.0 / period_ms).min(lines / files as f64);
    let sends_s = (files as f64 * per_file).max(1.0);
    let send = ((rate / sends_s) as usize).max(1);
    let timed = files.min(fd_room() / 3).max(1);
    std::fs::create_dir(dir)?;
    let result = Files::open(dir, timed).and_then(|mut f| {
        let rounds = (CALLS / timed).max(20);
        let (pread_us, write_us) = f.syscalls(send, rounds)?;
        let ring = f.ring(send, rounds).map_err(|e| e.to_string());
        Ok(Floor {
            files: timed,
            send,
            sends_s,
            pread_us,
            write_us,
            ring,
        })
    });
    std::fs::remove_dir_all(dir)?;
    result
}

/// Each file's appending and reading descriptor, its output, and how far
/// it was read.
struct Files {
    append: Vec<File>,
    read: Vec<File>,
    out: Vec<File>,
    offset: Vec<u64>,
}

impl Files {
    fn open(dir: &Path, n: usize) -> io::Result<Files> {
        let mut f = Files {
            append: Vec::with_capacity(n),
            read: Vec::with_capacity(n),
            out: Vec::with_capacity(n),
            offset: vec![0; n],
        };
        let append = |p: &Path| OpenOptions::new().create(true).append(true).open(p);
        for i in 0..n {
            let src = dir.join(format!("in{i}.log"));
            f.append.push(append(&src)?);
            f.read.push(File::open(&src)?);
            f.out.push(append(&dir.join(format!("out{i}.log")))?);
        }
        Ok(f)
    }

    /// Appends `send` bytes to every source (not timed).
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        self.append.iter_mut().try_for_each(|f| f.write_all(line))
    }

    /// µs per `pread` and per `write`, one system call each.
    fn syscalls(&mut self, send: usize, rounds: usize) -> io::Result<(f64, f64)> {
        let line = line(send);
        let mut buf = vec![0u8; send.max(4096) * 2];
        let (mut reads, mut writes) = (0.0, 0.0);
        for _ in 0..rounds {
            self.append(&line)?;
            let t = cpu::process_s();
            for (f, off) in self.read.iter().zip(&mut self.offset) {
                let n = f.read_at(&mut buf, *off)?;
                expect(n, send, "pread")?;
                *off += n as u64;
            }
            let t1 = cpu::process_s();
            for f in &mut self.out {
                let n = f.write(&line)?;
                expect(n, send, "write")?;
            }
            reads += t1 - t;
            writes += cpu::process_s() - t1;
        }
        let calls = (rounds * self.read.len()) as f64;
        Ok((reads / calls * 1e6, writes / calls * 1e6))
    }

    /// The same through io_uring: µs per read and per write entry.
    fn ring(&mut self, send: usize, rounds: usize) -> io::Result<(f64, f64)> {
        use io_uring::{opcode, types, IoUring};
        let mut ring = IoUring::new(RING_BATCH as u32)?;
        let line = line(send);
        let len = send.max(4096) * 2;
        let mut bufs = vec![0u8; len * RING_BATCH];
        let (mut reads, mut writes) = (0.0, 0.0);
        for _ in 0..rounds {
            self.append(&line)?;
            for chunk in (0..self.read.len()).collect::<Vec<_>>().chunks(RING_BATCH) {
                let t = cpu::process_s();
                let entries = chunk.iter().enumerate().map(|(slot, &i)| {
                    let buf = bufs[slot * len..].as_mut_ptr();
                    opcode::Read::new(types::Fd(self.read[i].as_raw_fd()), buf, len as u32)
                        .offset(self.offset[i])
                        .build()
                        .user_data(i as u64)
                });
                // SAFETY: the buffers and descriptors outlive the entries,
                // which all complete within the call.
                for (i, n) in unsafe { run(&mut ring, entries, send, "io_uring read") }? {
                    self.offset[i as usize] += n as u64;
                }
                let t1 = cpu::process_s();
                let entries = chunk.iter().map(|&i| {
                    let fd = types::Fd(self.out[i].as_raw_fd());
                    opcode::Write::new(fd, line.as_ptr(), send as u32)
                        .offset(u64::MAX)
                        .build()
                });
                // SAFETY: as above; `line` outlives the call.
                unsafe { run(&mut ring, entries, send, "io_uring write") }?;
                reads += t1 - t;
                writes += cpu::process_s() - t1;
            }
        }
        let calls = (rounds * self.read.len()) as f64;
        Ok((reads / calls * 1e6, writes / calls * 1e6))
    }
}

/// Submits `entries` (at most the ring's size), waits for them all, and
/// returns each one's user data and byte count, every count `send`.
///
/// # Safety
///
/// The buffers and descriptors the entries name must stay valid until it
/// returns.
unsafe fn run(
    ring: &mut io_uring::IoUring,
    entries: impl Iterator<Item = io_uring::squeue::Entry>,
    send: usize,
    what: &str,
) -> io::Result<Vec<(u64, usize)>> {
    let mut pushed = 0;
    for e in entries {
        // SAFETY: the caller keeps what the entry names valid until the
        // completions below are reaped.
        unsafe { ring.submission().push(&e) }.map_err(io::Error::other)?;
        pushed += 1;
    }
    ring.submit_and_wait(pushed)?;
    let mut done = Vec::with_capacity(pushed);
    for c in ring.completion() {
        let n =
            usize::try_from(c.result()).map_err(|_| io::Error::from_raw_os_error(-c.result()))?;
        expect(n, send, what)?;
        done.push((c.user_data(), n));
    }
    Ok(done)
}

/// Descriptors this process may still open, less a reserve.
fn fd_room() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is valid for writes for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    usize::try_from(lim.rlim_cur)
        .unwrap_or(usize::MAX)
        .saturating_sub(open + 64)
}

/// `send` bytes ending in a newline.
fn line(send: usize) -> Vec<u8> {
    let mut v = vec![b'x'; send];
    v[send - 1] = b'\n';
    v
}

fn expect(n: usize, send: usize, what: &str) -> io::Result<()> {
    if n == send {
        Ok(())
    } else {
        Err(io::Error::other(format!("{what}: {n} bytes, not {send}")))
    }
}

mod cpu {
    /// This process's CPU time in seconds (every thread, io_uring's
    /// workers included).
    pub fn process_s() -> f64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is valid for writes for the call.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
        t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
    }
}
