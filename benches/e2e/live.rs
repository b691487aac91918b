//! (c) Live tail: the client follows an empty file; a writer thread appends
//! the data set's first lines at a fixed rate, in chunks of whole lines; a
//! reader thread tails the server's output file and notes when each line
//! arrived. Latency of a line = arrival time − time its chunk's `write(2)`
//! started.
//!
//! Both threads log in bulk, not per line: the writer a `(lines written so
//! far, write start)` per chunk, the reader a `(lines seen so far, read
//! return)` per read. Merging the two lists afterwards gives every line's
//! latency (recorded in microseconds in an HDR histogram). The reader polls
//! with 1 ms sleeps when it is at the end of the output, so a latency is
//! up to about 1 ms too high. The reader also checks every line's ` seq=N`:
//! lines must arrive in order, each once.
//!
//! Line 0 is a warm-up: it is written first, and the timed writing starts
//! once it arrived (so the client's start-up is not in the latencies).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::data::{seq_of, MIB};
use crate::proc::{Server, Usage};
use crate::scenarios::{cli_args, output_path, spawn_client, stop, timeout_for, verify};
use crate::{Ctx, Error, Run};

/// Largest single write of the writer.
const MAX_CHUNK: usize = 1 << 20;

pub fn live_tail(ctx: &Ctx, run_dir: &Path) -> Result<Run, Error> {
    let limit = ctx.live_bytes();
    let src = run_dir.join("live.log");
    File::create(&src).map_err(Error::io(src.display()))?;
    let outdir = run_dir.join("out");
    let mut server = Server::start(ctx, run_dir)?;
    let mut args = cli_args(ctx, run_dir, &server, "c");
    args.push(src.clone().into());
    let mut client = spawn_client(run_dir, args)?;
    let out = output_path(&outdir, "c", &src);
    let shared = Shared {
        seen: AtomicU64::new(0),
        total: AtomicU64::new(u64::MAX),
        stop: AtomicBool::new(false),
    };
    let deadline = Instant::now() + timeout_for(limit) + Duration::from_secs(ctx.live_secs);

    // Writer and reader run on their own threads; this one watches the
    // daemons, so that a crash fails the run at once rather than at the
    // reader's deadline.
    let (written, read, died) = std::thread::scope(|s| {
        let reader = s.spawn(|| shared.fail_on_err(read_lines(&out, &shared, deadline)));
        let writer = s.spawn(|| {
            let w = write_lines(&ctx.data, &src, limit, ctx.rate_bytes(), &shared);
            shared.fail_on_err(w)
        });
        let mut died = None;
        while !(reader.is_finished() && writer.is_finished()) {
            if died.is_none() {
                if let Err(e) = server
                    .proc
                    .check_alive()
                    .and_then(|()| client.check_alive())
                {
                    died = Some(e);
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let w = writer.join().expect("writer thread panicked");
        let r = reader.join().expect("reader thread panicked");
        (w, r, died)
    });
    if let Some(e) = died {
        return Err(e);
    }
    let (w, r) = match (written, read) {
        (Ok(w), Ok(r)) => (w, r),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(we), Err(re)) => return Err(Error::Failed(format!("{we}; {re}"))),
    };
    let (client, server, wire) = stop(ctx, &mut client, &mut server, w.bytes)?;
    verify(&src, &out)?;
    let mut run = summarize(ctx, &w, &r, client, server)?;
    run.wire = Some(wire);
    Ok(run)
}

/// MiB/s (from the first write after the warm-up to the last arrival),
/// latency percentiles, and whether the pipeline kept up with the writer.
fn summarize(
    ctx: &Ctx,
    w: &Written,
    r: &[(u64, Instant)],
    client_usage: Usage,
    server_usage: Usage,
) -> Result<Run, Error> {
    let Some(&(_, t0)) = w.chunks.get(1) else {
        return Err(Error::Failed(
            "live tail: the data set has only one line".into(),
        ));
    };
    let bytes = w.bytes - w.warmup_bytes;
    let last_write = w.chunks.last().expect("two chunks").1;
    let last_arrival = r.last().expect("lines arrived").1;
    let secs = (last_arrival - t0).as_secs_f64();
    let hist = latencies(&w.chunks, r)?;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let mut run = Run::new(bytes, secs, client_usage, server_usage);
    run.latency_ms = Some([q(0.5), q(0.99), q(0.999)]);
    let write_rate = bytes as f64 / MIB / (last_write - t0).as_secs_f64().max(1e-9);
    let delivered = bytes as f64 / MIB / secs;
    let target = ctx.rate_bytes() as f64 / MIB;
    let kept_up = if ctx.rate_bytes() == 0 {
        "full speed (no target)".to_string()
    } else if delivered >= 0.95 * target {
        format!("kept up: {delivered:.1} of {target:.0} MiB/s target")
    } else {
        format!("FELL BEHIND: {delivered:.1} of {target:.0} MiB/s target")
    };
    run.notes.push(format!(
        "c: {:.0} MiB ({} lines) written at {write_rate:.1} MiB/s; {kept_up}; \
         last line arrived {:.1} ms after its write; max latency {:.1} ms",
        bytes as f64 / MIB,
        w.lines - 1,
        (last_arrival - last_write).as_secs_f64() * 1e3,
        hist.max() as f64 / 1000.0,
    ));
    Ok(run)
}

struct Shared {
    /// Lines the reader has seen (in order).
    seen: AtomicU64,
    /// Lines the writer wrote in all, once it is done.
    total: AtomicU64,
    /// Either side failed: the other stops.
    stop: AtomicBool,
}

impl Shared {
    /// Passes `r` on; an error stops the other thread.
    fn fail_on_err<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        if r.is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
        r
    }
}

struct Written {
    /// Line 0's bytes (not timed).
    warmup_bytes: u64,
    /// All bytes written, line 0's included.
    bytes: u64,
    lines: u64,
    /// `(lines written after this chunk, when its write started)`.
    chunks: Vec<(u64, Instant)>,
}

/// Appends whole lines of `data` to `dst`, at most `limit` bytes, paced to
/// `rate` bytes/s (0: as fast as possible).
fn write_lines(
    data: &Path,
    dst: &Path,
    limit: u64,
    rate: u64,
    shared: &Shared,
) -> Result<Written, Error> {
    let mut input = File::open(data).map_err(Error::io(data.display()))?;
    let mut out = OpenOptions::new()
        .append(true)
        .open(dst)
        .map_err(Error::io(dst.display()))?;
    let io_err = Error::io(format!("write {}", dst.display()));
    // `buf[start..end]` is read from `data` and not written yet.
    let mut buf = vec![0u8; 4 * MAX_CHUNK];
    let (mut start, mut end) = (0, 0);
    let mut w = Written {
        warmup_bytes: 0,
        bytes: 0,
        lines: 0,
        chunks: Vec::new(),
    };
    let mut t0 = Instant::now();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return Err(Error::Failed("live tail: writer stopped".into()));
        }
        if end - start < MAX_CHUNK {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
            end += read_some(&mut input, &mut buf[end..]).map_err(Error::io(data.display()))?;
        }
        let pending = &buf[start..end];
        let cut = next_cut(pending, &w, rate, limit, t0.elapsed());
        if cut == 0 {
            // Done when the data ends or its next line passes the limit.
            let next = memchr::memchr(b'\n', pending).map(|i| i as u64 + 1);
            if next.is_none_or(|n| w.bytes + n > limit) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let chunk = &buf[start..start + cut];
        let t = Instant::now();
        out.write_all(chunk).map_err(&io_err)?;
        w.lines += memchr::memchr_iter(b'\n', chunk).count() as u64;
        w.bytes += cut as u64;
        w.chunks.push((w.lines, t));
        start += cut;
        if w.lines == 1 {
            w.warmup_bytes = w.bytes;
            wait_seen(shared, 1)?;
            t0 = Instant::now();
        }
    }
    shared.total.store(w.lines, Ordering::Relaxed);
    Ok(w)
}

/// How many bytes at the front of `pending` to write now (0: none yet):
/// line 0 alone first (the warm-up), then whole lines up to what `rate`
/// allows `elapsed` after the warm-up, never past `limit` in all.
fn next_cut(pending: &[u8], w: &Written, rate: u64, limit: u64, elapsed: Duration) -> usize {
    if w.lines == 0 {
        return memchr::memchr(b'\n', pending).map_or(0, |i| i + 1);
    }
    let allowed = match rate {
        0 => limit,
        r => ((r as f64 * elapsed.as_secs_f64()) as u64).min(limit),
    };
    let want = allowed
        .saturating_sub(w.bytes)
        .min(pending.len().min(MAX_CHUNK) as u64) as usize;
    memchr::memrchr(b'\n', &pending[..want]).map_or(0, |i| i + 1)
}

/// Waits until the reader saw `n` lines (or stopped).
fn wait_seen(shared: &Shared, n: u64) -> Result<(), Error> {
    while shared.seen.load(Ordering::Relaxed) < n {
        if shared.stop.load(Ordering::Relaxed) {
            return Err(Error::Failed("live tail: reader stopped".into()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn read_some(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

/// Tails `path` until the writer's total number of lines arrived. Returns
/// `(lines seen so far, when the read returned)` per read.
fn read_lines(
    path: &Path,
    shared: &Shared,
    deadline: Instant,
) -> Result<Vec<(u64, Instant)>, Error> {
    let timed_out = || Error::Failed(format!("live tail: timed out reading {}", path.display()));
    let mut file = loop {
        match File::open(path) {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(path.display())(e)),
        }
        if shared.stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return Err(timed_out());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut buf = vec![0u8; 4 << 20];
    let mut filled = 0; // bytes of an unfinished line at the front
    let mut seen = 0u64;
    let mut batches = Vec::new();
    while seen < shared.total.load(Ordering::Relaxed) {
        let n = file
            .read(&mut buf[filled..])
            .map_err(Error::io(path.display()))?;
        if n == 0 {
            if shared.stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                return Err(timed_out());
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let t = Instant::now();
        filled += n;
        let mut line_start = 0;
        for nl in memchr::memchr_iter(b'\n', &buf[..filled]) {
            let line = &buf[line_start..nl];
            if seq_of(line) != Some(seen) {
                return Err(Error::Failed(format!(
                    "live tail: expected line seq={seen} in the output, got {:?}",
                    String::from_utf8_lossy(line)
                )));
            }
            seen += 1;
            line_start = nl + 1;
        }
        buf.copy_within(line_start..filled, 0);
        filled -= line_start;
        if filled == buf.len() {
            return Err(Error::Failed("live tail: a line longer than 4 MiB".into()));
        }
        batches.push((seen, t));
        shared.seen.store(seen, Ordering::Relaxed);
    }
    Ok(batches)
}

/// Every line's latency but line 0's, from the writer's chunks and the
/// reader's batches (both cumulative line counts, increasing).
fn latencies(writes: &[(u64, Instant)], reads: &[(u64, Instant)]) -> Result<Histogram<u64>, Error> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| Error::Failed(format!("histogram: {e}")))?;
    let (mut wi, mut ri, mut line) = (0, 0, 1u64);
    while wi < writes.len() && ri < reads.len() {
        let end = writes[wi].0.min(reads[ri].0);
        if end > line {
            let us = reads[ri]
                .1
                .saturating_duration_since(writes[wi].1)
                .as_micros() as u64;
            hist.saturating_record_n(us, end - line);
            line = end;
        }
        if writes[wi].0 == end {
            wi += 1;
        }
        if reads[ri].0 == end {
            ri += 1;
        }
    }
    Ok(hist)
}
