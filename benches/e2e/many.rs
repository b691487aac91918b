//! `many`: the busy host of issue 13. `--many-files` files (1,000) in one
//! directory, followed by one client through a `path = "DIR/*.log"` glob
//! (default settings, default `linger`; `--many-max-connections` sets its
//! `max_connections`), one server at default settings
//! (`--sync` and `--engine` apply). ONE writer process, a re-exec of this
//! bench in writer mode (see [`writer_main`]), holds every file open with
//! its own descriptor and appends line by line, round robin over the
//! files, paced to `--many-rate` MiB/s in total for `--many-secs` seconds:
//! at the defaults about 70 lines per file per second, one `write(2)`
//! each.
//!
//! Every line starts with `t=<unix ns>` taken just before its `write`, so
//! any line is a latency marker. A poller thread tails the outputs of
//! `--many-sample` files (20, evenly spread) every millisecond and records
//! `arrival − t` for each of their lines (an HDR histogram in µs): up to
//! about 1 ms too high. Its cost is the bench's, not the daemons'.
//!
//! Sequence:
//! 1. each file gets a warm-up line before the daemons start (so the
//!    client's start-up and first scan are not in the window), and the
//!    bench waits until every warm-up line arrived: that time, and the CPU
//!    of both daemons until then, are reported as the start-up;
//! 2. the writer runs; CPU of both daemons is sampled from
//!    `/proc/<pid>/stat` at its start and once every byte arrived (the
//!    window);
//! 3. lag = the moment the last output was complete (polled every 1 ms)
//!    minus the writer's last `write` (the writer reports it);
//! 4. the daemons are stopped (SIGTERM, whole-life CPU and peak RSS from
//!    `wait4`), the server's byte counter is checked, and every output is
//!    compared byte for byte with its source (exact content and order per
//!    file).
//! 5. the kernel's floor at the same rate and file count is measured in
//!    the same work dir and printed beside the daemons' figures (see
//!    `floor.rs`), with the read- and write-family system calls each
//!    daemon made per second in the window (`/proc/PID/io`).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::data::{LineGen, GIB, MIB};
use crate::proc::{cpu_s, rw_calls, Proc, Server};
use crate::scale::wait_all;
use crate::scenarios::{client_config, output_path, spawn_client, stop, toml_str, verify};
use crate::{floor, Ctx, Error, Run};
use loghamster::config::client::Tuning;

/// The environment variable that turns the bench binary into the writer.
pub const WRITER_ENV: &str = "LOGHAMSTER_E2E_MANY_WRITER";

/// The `many` settings (`--many-*`).
#[derive(Debug, Clone, Copy)]
pub struct Many {
    pub files: usize,
    /// MiB/s over all files.
    pub rate_mib: f64,
    pub secs: f64,
    /// Files whose outputs the poller tails for latencies.
    pub sample: usize,
    /// The client's `max_connections` (`None`: its default).
    pub max_connections: Option<usize>,
}

/// `many`: see the module doc.
pub fn many(ctx: &Ctx, m: Many, run_dir: &Path) -> Result<Run, Error> {
    let dir = run_dir.join("many");
    let files = warm_up_files(&dir, m.files)?;
    let warm_bytes: u64 = files.iter().map(|(_, len)| len).sum();
    let outdir = run_dir.join("out");
    let mut server = Server::start(ctx, run_dir)?;
    let stream = format!("path = {}\n", toml_str(&dir.join("*.log")));
    let config = client_config(ctx, run_dir, &server, "m", &stream, false)?;
    if let Some(n) = m.max_connections {
        let tuning = format!("\n[tuning]\nmax_connections = {n}\n");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .map_err(Error::io(config.display()))?;
        f.write_all(tuning.as_bytes())
            .map_err(Error::io(config.display()))?;
    }
    let mut client = spawn_client(run_dir, [OsStr::new("--config"), config.as_os_str()])?;
    let outputs: Vec<PathBuf> = files
        .iter()
        .map(|(p, _)| output_path(&outdir, "m", p))
        .collect();
    let warm: Vec<u64> = files.iter().map(|(_, len)| *len).collect();
    let t = Instant::now();
    wait_complete(
        &outputs,
        &warm,
        warm_up_timeout(m.files),
        &mut [&mut server.proc, &mut client],
    )?;
    let warm_secs = t.elapsed().as_secs_f64();

    let result = run_dir.join(RESULT);
    let (c0, s0) = (cpu_s(client.pid()), cpu_s(server.proc.pid()));
    let calls0 = (rw_calls(client.pid()), rw_calls(server.proc.pid()));
    let t0 = SystemTime::now();
    let mut writer = spawn_writer(m, run_dir)?;
    let stop_poll = AtomicBool::new(false);
    let sample = sample_outputs(&outputs, m.sample);
    let (waited, polled) = std::thread::scope(|s| {
        let poller = s.spawn(|| poll_latencies(&sample, &stop_poll));
        let waited = (|| {
            let deadline = Duration::from_secs_f64(m.secs) + Duration::from_secs(60);
            wait_writer(&mut writer, deadline, &mut [&mut server.proc, &mut client])?;
            let w = Written::read(&result)?;
            let lens = source_lens(&files)?;
            wait_complete(
                &outputs,
                &lens,
                Duration::from_secs(120),
                &mut [&mut server.proc, &mut client],
            )?;
            let done = SystemTime::now();
            let window = (cpu_s(client.pid()) - c0, cpu_s(server.proc.pid()) - s0);
            let calls = (rw_calls(client.pid()), rw_calls(server.proc.pid()));
            Ok::<_, Error>((w, done, window, calls, writer.try_reap()?))
        })();
        stop_poll.store(true, Ordering::Relaxed);
        (waited, poller.join().expect("poller thread panicked"))
    });
    let (w, done, (client_cpu, server_cpu), calls, writer_exit) = waited?;
    let hist = polled?;
    let (client_usage, server_usage, wire) =
        stop(ctx, &mut client, &mut server, warm_bytes + w.bytes)?;
    for ((src, _), out) in files.iter().zip(&outputs) {
        verify(src, out)?;
    }
    let period_ms = Tuning::default().linger.as_secs_f64() * 1e3 + 10.0;
    // Not the daemons' run: a failure here is said, not fatal.
    let write_secs = since(w.first_write, w.last_write).max(1e-9);
    let (rate, lines) = (w.bytes as f64 / write_secs, w.lines as f64 / write_secs);
    let floor = floor::measure(&run_dir.join("floor"), m.files, rate, lines, period_ms)
        .map_or_else(
            |e| format!("kernel floor: not measured: {e}"),
            |f| f.note(m.files, period_ms),
        );
    let secs = since(t0, done);
    let lag_ms = since(w.last_write, done) * 1e3;
    let mut run = Run::new(w.bytes, secs, client_usage, server_usage);
    run.wire = Some(wire);
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    run.latency_ms = Some([q(0.5), q(0.99), q(0.999)]);
    let gib = w.bytes as f64 / GIB;
    let writer_cpu = writer_exit.map_or(f64::NAN, |e| e.usage.cpu_s);
    run.notes.push(format!(
        "many: {} files, {:.1} MiB in {} lines written at {:.1} MiB/s by one writer \
         ({writer_cpu:.1} CPU s); warm-up lines arrived in {warm_secs:.1} s (client {c0:.2}, \
         server {s0:.2} CPU s since their start); \
         **lag after the writer stopped {lag_ms:.0} ms**; in the window ({secs:.1} s from the \
         writer's start until every byte arrived): client {client_cpu:.2} CPU s \
         ({:.0}% of a core, {:.2} s/GiB), server {server_cpu:.2} CPU s ({:.0}%, {:.2} s/GiB); \
         latency from {} lines of {} sampled files, max {:.1} ms",
        m.files,
        w.bytes as f64 / MIB,
        w.lines,
        w.bytes as f64 / MIB / since(w.first_write, w.last_write).max(1e-9),
        client_cpu * 100.0 / secs,
        client_cpu / gib,
        server_cpu * 100.0 / secs,
        server_cpu / gib,
        hist.len(),
        sample.len(),
        hist.max() as f64 / 1000.0,
    ));
    let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
    run.notes.push(format!(
        "read/write-family system calls in the window (`/proc/PID/io`; sockets' `recv` and \
         `send` are not counted): client {:.0} reads/s and {:.0} writes/s, server {:.0} and \
         {:.0}",
        per_s(calls.0 .0, calls0.0 .0),
        per_s(calls.0 .1, calls0.0 .1),
        per_s(calls.1 .0, calls0.1 .0),
        per_s(calls.1 .1, calls0.1 .1),
    ));
    run.notes.push(floor);
    Ok(run)
}

/// How long the warm-up lines may take to arrive: 5 minutes, or 100 ms
/// per file where that is longer (a client of before the shared directory
/// listings needed 158 s and more to follow 10,000 files).
fn warm_up_timeout(files: usize) -> Duration {
    Duration::from_secs(300).max(Duration::from_millis(100) * files as u32)
}

/// Seconds from `a` to `b` (0 when `b` is earlier).
fn since(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map_or(0.0, |d| d.as_secs_f64())
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The files `dir/fNNNNN.log`, each with one warm-up line (`t=0`: not a
/// latency marker).
fn warm_up_files(dir: &Path, n: usize) -> Result<Vec<(PathBuf, u64)>, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir.display()))?;
    (0..n)
        .map(|i| {
            let path = file_name(dir, i);
            let line = format!("t={:019} f{i} warm-up\n", 0);
            std::fs::write(&path, &line).map_err(Error::io(path.display()))?;
            Ok((path, line.len() as u64))
        })
        .collect()
}

fn file_name(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("f{i:05}.log"))
}

fn source_lens(files: &[(PathBuf, u64)]) -> Result<Vec<u64>, Error> {
    files
        .iter()
        .map(|(p, _)| {
            std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(Error::io(p.display()))
        })
        .collect()
}

/// Every `n / sample`th output.
fn sample_outputs(outputs: &[PathBuf], sample: usize) -> Vec<PathBuf> {
    let step = (outputs.len() / sample.max(1)).max(1);
    outputs.iter().step_by(step).take(sample).cloned().collect()
}

/// Waits until each output has exactly its length, polling every 1 ms in
/// order (one `stat` per tick for the first incomplete file).
fn wait_complete(
    outputs: &[PathBuf],
    lens: &[u64],
    timeout: Duration,
    alive: &mut [&mut Proc],
) -> Result<(), Error> {
    let want: Vec<(PathBuf, u64)> = outputs.iter().cloned().zip(lens.iter().copied()).collect();
    wait_all(&want, timeout, Duration::from_millis(1), alive)
}

/// Tails `outputs` until `stop` (then one last pass) and records each
/// marker line's latency in µs.
fn poll_latencies(outputs: &[PathBuf], stop: &AtomicBool) -> Result<Histogram<u64>, Error> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| Error::Failed(format!("histogram: {e}")))?;
    let mut tails: Vec<Tail> = outputs.iter().map(|p| Tail::new(p.clone())).collect();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let last = stop.load(Ordering::Relaxed);
        for tail in &mut tails {
            tail.poll(&mut buf, &mut hist)?;
        }
        if last {
            return Ok(hist);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One tailed output: opened once it exists, the unfinished last line kept.
struct Tail {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            file: None,
            partial: Vec::new(),
        }
    }

    fn poll(&mut self, buf: &mut [u8], hist: &mut Histogram<u64>) -> Result<(), Error> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        loop {
            let n = file.read(buf).map_err(Error::io(self.path.display()))?;
            if n == 0 {
                return Ok(());
            }
            let now = unix_ns(SystemTime::now());
            self.partial.extend_from_slice(&buf[..n]);
            let complete = self.partial.iter().rposition(|&b| b == b'\n');
            let Some(end) = complete else { continue };
            for line in self.partial[..end].split(|&b| b == b'\n') {
                let t = marker(line).ok_or_else(|| {
                    Error::Failed(format!(
                        "{}: a line without its t= marker: {:?}",
                        self.path.display(),
                        String::from_utf8_lossy(line)
                    ))
                })?;
                if t > 0 {
                    let _ = hist.record((now.saturating_sub(t) / 1000).max(1));
                }
            }
            self.partial.drain(..=end);
        }
    }
}

/// The `t=NANOS` at the start of a line.
fn marker(line: &[u8]) -> Option<u64> {
    let digits = line.strip_prefix(b"t=")?.get(..19)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Where the writer writes its report, in the run dir.
const RESULT: &str = "writer.result";

/// Starts this bench binary as the writer (see [`writer_main`]).
fn spawn_writer(m: Many, run_dir: &Path) -> Result<Proc, Error> {
    let exe = std::env::current_exe().map_err(Error::io("the bench's own path"))?;
    let mut spec = OsString::from(format!(
        "{} {} {} ",
        m.files,
        (m.rate_mib * MIB) as u64,
        m.secs
    ));
    spec.push(run_dir.as_os_str());
    Proc::spawn(
        "writer",
        Command::new(exe).env(WRITER_ENV, spec),
        Some(&run_dir.join("writer.log")),
    )
}

/// Waits for the writer to exit 0, watching the daemons.
fn wait_writer(writer: &mut Proc, timeout: Duration, alive: &mut [&mut Proc]) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(exit) = writer.try_reap()? {
            return match exit.code {
                Some(0) => Ok(()),
                _ => Err(Error::Failed(format!("the writer: {}", exit.describe()))),
            };
        }
        for p in alive.iter_mut() {
            p.check_alive()?;
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "the writer did not finish within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the writer reports in its result file.
struct Written {
    bytes: u64,
    lines: u64,
    first_write: SystemTime,
    last_write: SystemTime,
}

impl Written {
    fn read(path: &Path) -> Result<Written, Error> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path.display()))?;
        let v: Vec<u64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let &[bytes, lines, first, last] = v.as_slice() else {
            return Err(Error::Failed(format!("{}: odd: {text:?}", path.display())));
        };
        let at = |ns| UNIX_EPOCH + Duration::from_nanos(ns);
        Ok(Written {
            bytes,
            lines,
            first_write: at(first),
            last_write: at(last),
        })
    }
}

/// Writer mode: `spec` is `FILES RATE_BYTES SECS RUN_DIR` (the run dir
/// last, so it may hold spaces). Appends to `RUN_DIR/many/fNNNNN.log`
/// (opened once, kept open) round robin, one line per `write(2)`, paced to
/// RATE bytes/s (checked every millisecond) for SECS seconds; then writes
/// `BYTES LINES FIRST_NS LAST_NS` to `RUN_DIR/writer.result`.
pub fn writer_main(spec: &OsStr) -> i32 {
    match writer(spec) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("e2e writer: {e}");
            1
        }
    }
}

fn writer(spec: &OsStr) -> io::Result<()> {
    let bad = || io::Error::other(format!("odd {WRITER_ENV}: {spec:?}"));
    let text = spec.to_str().ok_or_else(bad)?;
    let mut words = text.splitn(4, ' ');
    let mut next = || words.next().ok_or_else(bad);
    let n: usize = next()?.parse().map_err(|_| bad())?;
    let rate: u64 = next()?.parse().map_err(|_| bad())?;
    let secs: f64 = next()?.parse().map_err(|_| bad())?;
    let run_dir = PathBuf::from(next()?);
    let (dir, result) = (run_dir.join("many"), run_dir.join(RESULT));
    let mut files = (0..n)
        .map(|i| {
            std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(file_name(&dir, i))
        })
        .collect::<io::Result<Vec<File>>>()?;
    let mut seqs = vec![0u64; n];
    let mut gen = LineGen::new();
    let (mut line, mut body) = (Vec::with_capacity(512), Vec::with_capacity(512));
    let (mut bytes, mut lines, mut cursor) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    let first = SystemTime::now();
    let mut last = first;
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        let due = (rate as f64 * elapsed.min(secs)) as u64;
        while bytes < due {
            body.clear();
            gen.line(seqs[cursor], &mut body);
            seqs[cursor] += 1;
            line.clear();
            last = SystemTime::now();
            write!(line, "t={:019} f{cursor} ", unix_ns(last))?;
            line.extend_from_slice(&body);
            files[cursor].write_all(&line)?;
            bytes += line.len() as u64;
            lines += 1;
            cursor = (cursor + 1) % n;
        }
        if elapsed >= secs {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let report = format!("{bytes} {lines} {} {}\n", unix_ns(first), unix_ns(last));
    std::fs::write(&result, report)
}
