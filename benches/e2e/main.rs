//! End-to-end benchmark: the real `loghamsterc` and `loghamsterd` on
//! loopback, against socat moving the same bytes.
//!
//! ```sh
//! cargo bench --bench e2e                       # 1 GiB: socat, socat_sync, a, b, c
//! cargo bench --bench e2e -- --size 256MiB --repeat 3
//! cargo bench --bench e2e -- --only b,c --rate 0
//! cargo bench --bench e2e -- --scale --size 64MiB
//! cargo bench --bench e2e -- --only many --size 1MiB   # 1,000 files, one writer
//! cargo bench --bench e2e -- --only many --size 1MiB --many-files 10000 --sync none
//! cargo bench --bench e2e -- --only socat,a,b,a_tls,b_tls   # TLS against plain
//! cargo bench --bench e2e -- --only socat,a,b --compression zstd   # or gzip:1, lz4, none
//! ```
//!
//! What it does, in a fresh temp dir (`--dir`, default /tmp; deleted at
//! the end unless `--keep`):
//!
//! 1. Generates the data set (`--size`, default 1 GiB): deterministic
//!    syslog / nginx / application lines of 80–300 bytes, each ending in
//!    ` seq=N` (see `data.rs`).
//! 2. `socat`: the baseline, `socat -b 262144 -u FILE:data TCP:...` into
//!    `socat -b 262144 -u TCP-LISTEN:... OPEN:out,creat`; timed from the
//!    sender's start until the receiver exited. `socat_sync`: the same, then an `fdatasync` of the output inside the
//!    timed interval: the baseline of `a`, whose `250 DONE` waits for one
//!    (the table's notes give the ratio of `a` and `a_tls` to it).
//! 3. Three scenarios with both daemons on 127.0.0.1 (default configs;
//!    the server's `sync = "interval"` fdatasyncs its outputs every second
//!    and before every `250 DONE`):
//!    - `a`, whole file, send after close: a `[[stream]] directory = ...
//!      method = "send"` client; timed until it exited (every byte
//!      confirmed by `250 DONE`) and the output is complete. The data
//!      file's mtime is set a minute back, as a closed log's would be: the
//!      client waits until a file found at start-up has been unchanged for
//!      1 s, which is policy, not throughput;
//!    - `b`, catch-up: `loghamsterc FILE` on the complete file; timed until
//!      the server's output has every byte;
//!    - `c`, live tail: the client follows an empty file that a writer
//!      thread fills at `--rate` MiB/s for `--live-secs` seconds (at most
//!      the data set); per-line write → server output latency, p50 / p99 /
//!      p99.9 (see `live.rs`).
//!    - `a_tls`, `b_tls`: `a` and `b` with `[tls]` on both daemons (a CA
//!      and a server certificate for 127.0.0.1 made with rcgen at start;
//!      the server requires TLS, the client trusts the CA). TLS takes the
//!      copying paths on both sides (no sendfile, no splice).
//! 4. `--scale` instead: `files` (the data set cut into `--files` files on
//!    one client's command line, catch-up) and `idle` (`--idle-files`
//!    one-line files followed by a glob, then `--idle-secs` of idleness),
//!    see `scale.rs`.
//! 5. `--only many`: the busy host: `--many-files` files (1,000) that one
//!    writer process appends to line by line at `--many-rate` MiB/s in
//!    all (15) for `--many-secs` (20), followed by one client through a
//!    glob; CPU per GiB and % of a core in the writing window, lag after
//!    the writer stopped, latency of marker lines, every file verified
//!    (see `many.rs`), and the kernel's floor for the same files and rate:
//!    one `pread` and one output `write` per file per `linger` + 10 ms,
//!    nothing else (see `floor.rs`). It does not use the data set: give
//!    `--size 1MiB`.
//! 6. `--only js1,js3`: the data set into JetStream (R1 on one
//!    `nats-server`, R3 on three), through the daemons and, as the
//!    baseline in the same run, straight from a minimal async-nats
//!    publisher (see `jetstream.rs`); needs `nats-server` in PATH.
//!
//! `--plain` puts `[server] multiplex = false` in every client config
//! file (`a`, `idle`, `many`): one connection per followed file, instead
//! of the client's default, one connection per server that followed files
//! share (`INIT MUX`; whole files keep their own). `--multiplex` sets
//! `multiplex = true` (the default, written out).
//!
//! `--compression CODEC` (`none`, `gzip`, `lz4`, `zstd`, or with a level as
//! `zstd:9`) is given to every `loghamsterc`: as `--compression` on the
//! command line, as `[server] compression` / `compression_level` in the
//! config files of `a` and `idle`. Without it the clients' default (none)
//! applies. The `wire / input` column is the stream bytes the server read
//! from its sockets over the plain bytes moved: every server runs with
//! `[prometheus]` on a free port and is scraped (`GET /metrics`) after the
//! client stopped and before the server does;
//! `loghamster_server_compressed_received_bytes_total` counts compressed
//! streams, `received_bytes_total` minus `decompressed_bytes_total` the
//! uncompressed ones (1.000 without compression). The counters are checked
//! too: the plain bytes must add up to what was sent and, with a codec,
//! every byte must have arrived compressed (a server that declined the
//! codec fails the run). The client's own `wire_bytes` counter is not used:
//! `a`'s client exits by itself, and `[prometheus]` needs a config file,
//! which `b`, `c` and `files` do not use.
//!
//! `LOGHAMSTER_E2E_BIN_DIR=DIR` runs `DIR/loghamsterc` and
//! `DIR/loghamsterd` instead of the binaries built with the bench (a copy
//! of an older build, for before/after figures in one sitting).
//!
//! Every output is compared byte for byte with its source; any difference,
//! timeout or unclean daemon exit fails the scenario and the bench exits
//! non-zero after printing the table. CPU seconds and peak RSS come from
//! `wait4(2)` when each process is reaped (after SIGTERM for the daemons),
//! so they cover the process's whole life: start-up, the transfer, and the
//! clean stop. MiB/s is the data set's size over the timed interval; with
//! `--repeat N` every column is the median of the N runs.
//!
//! Fairness between runs: before the first run as many bytes as the data
//! set are written to a scratch file and deleted (on the development VM
//! the first write into never-used page-cache memory costs several times
//! the CPU of later ones, which made whichever scenario ran first, socat,
//! look 5x slower), and before every run the work dir's file system is
//! synced (`syncfs`), so no run pays for the write-back of the one before.
//! The receivers still write into the page cache of a shared disk, and that
//! cost varies from run to run: use `--repeat`.

mod data;
mod floor;
mod jetstream;
mod live;
mod many;
mod proc;
mod report;
mod scale;
mod scenarios;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use argh::FromArgs;
use loghamster::config::Compression;

use data::{parse_size, MIB};
use proc::Usage;

#[derive(FromArgs)]
/// End-to-end benchmark of loghamsterc + loghamsterd against socat.
struct Args {
    /// data set size, e.g. 256MiB or 1GiB (B, KiB, MiB, GiB; default 1GiB)
    #[argh(option, default = "1 << 30", from_str_fn(parse_size))]
    size: u64,
    /// where to create the temporary work dir (default /tmp)
    #[argh(option)]
    dir: Option<PathBuf>,
    /// write rate of the live-tail scenario c in MiB/s; 0 = full speed
    /// (default 50)
    #[argh(option, default = "50.0")]
    rate: f64,
    /// seconds of writing at --rate in scenario c, at most the data set
    /// (default 10)
    #[argh(option, default = "10")]
    live_secs: u64,
    /// the server's `sync` policy: none, interval or always (default: the
    /// daemon's default, interval)
    #[argh(option)]
    sync: Option<String>,
    /// the server's `engine`: auto, epoll or io_uring (default: the
    /// daemon's default, auto)
    #[argh(option)]
    engine: Option<String>,
    /// wire compression of every loghamsterc: none, gzip, lz4 or zstd,
    /// optionally with a level as zstd:9 (default: the client's default,
    /// none)
    #[argh(option, from_str_fn(parse_compression))]
    compression: Option<Compression>,
    /// every loghamsterc config gets `[server] multiplex = true`: followed
    /// files share one connection (the client's default, written out)
    #[argh(switch)]
    multiplex: bool,
    /// every loghamsterc config gets `[server] multiplex = false`: one
    /// connection per followed file
    #[argh(switch)]
    plain: bool,
    /// comma-separated scenarios out of
    /// socat,socat_sync,a,b,a_tls,b_tls,c,files,idle,many,js1,js3
    /// (default socat,socat_sync,a,b,c; with --scale files,idle)
    #[argh(option)]
    only: Option<String>,
    /// run the scale scenarios (files, idle) instead of socat,socat_sync,a,b,c
    #[argh(switch)]
    scale: bool,
    /// run each scenario N times and report the median (default 1)
    #[argh(option, default = "1")]
    repeat: usize,
    /// number of files in the scale scenario `files` (default 1000)
    #[argh(option, default = "1000")]
    files: usize,
    /// number of one-line files in the scale scenario `idle` (default 10000)
    #[argh(option, default = "10000")]
    idle_files: usize,
    /// idle window of the scale scenario `idle`, seconds (default 10)
    #[argh(option, default = "10")]
    idle_secs: u64,
    /// scenario `many`: number of files one writer appends to (default 1000)
    #[argh(option, default = "1000")]
    many_files: usize,
    /// scenario `many`: total write rate over all files, MiB/s (default 15)
    #[argh(option, default = "15.0")]
    many_rate: f64,
    /// scenario `many`: seconds of writing (default 20)
    #[argh(option, default = "20.0")]
    many_secs: f64,
    /// scenario `many`: files whose outputs are tailed for latencies
    /// (default 20)
    #[argh(option, default = "20")]
    many_sample: usize,
    /// scenario `many`: the client's `max_connections` (default: the
    /// client's default, 4096)
    #[argh(option)]
    many_max_connections: Option<usize>,
    /// keep the work dir (data, outputs, daemon logs)
    #[argh(switch)]
    keep: bool,
    /// ignored (cargo bench passes it)
    #[argh(switch, hidden_help)]
    #[allow(dead_code)]
    bench: bool,
}

/// What can stop a scenario.
#[derive(Debug)]
pub enum Error {
    /// An I/O call failed on our side (not the daemons').
    Io { what: String, source: io::Error },
    /// The scenario's result is wrong, incomplete or late.
    Failed(String),
}

impl Error {
    /// `map_err(Error::io(path.display()))`.
    pub fn io(what: impl fmt::Display) -> impl Fn(io::Error) -> Error {
        let what = what.to_string();
        move |source| Error::Io {
            what: what.clone(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Failed(msg) => f.write_str(msg),
        }
    }
}

/// What every scenario knows.
pub struct Ctx {
    /// The data set file (canonical path: the server's output path is
    /// derived from it).
    pub data: PathBuf,
    pub data_bytes: u64,
    /// `--rate`, MiB/s.
    pub rate_mib: f64,
    pub live_secs: u64,
    pub idle_files: usize,
    pub idle_secs: u64,
    /// `--sync`: the server's `sync` key, if set.
    pub sync: Option<String>,
    /// `--engine`: the server's `engine` key, if set.
    pub engine: Option<String>,
    /// `--compression`: given to every client, if set.
    pub compression: Option<Compression>,
    /// `--multiplex` / `--plain`: `[server] multiplex = true` / `false`
    /// in every client config (`None`: the client's default).
    pub multiplex: Option<bool>,
    /// `--many-*`.
    pub many: many::Many,
    /// Certificates for the `_tls` scenarios (made at start, in the work dir).
    pub tls: TlsFiles,
}

/// A CA and a server certificate for 127.0.0.1, as PEM files.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Makes them in `dir` with rcgen (ECDSA P-256, what rcgen makes by
    /// default).
    fn generate(dir: &Path) -> Result<TlsFiles, Error> {
        let fail = |e: rcgen::Error| Error::Failed(format!("rcgen: {e}"));
        let ca_key = rcgen::KeyPair::generate().map_err(fail)?;
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).map_err(fail)?;
        let key = rcgen::KeyPair::generate().map_err(fail)?;
        let p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).map_err(fail)?;
        let cert = p.signed_by(&key, &ca, &ca_key).map_err(fail)?;
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        for (path, text) in [
            (&files.ca, ca.pem()),
            (&files.cert, cert.pem()),
            (&files.key, key.serialize_pem()),
        ] {
            std::fs::write(path, text).map_err(Error::io(path.display()))?;
        }
        Ok(files)
    }
}

impl Ctx {
    /// Scenario c's write rate in bytes/s, 0 for full speed.
    pub fn rate_bytes(&self) -> u64 {
        (self.rate_mib * MIB) as u64
    }

    /// How much of the data set scenario c writes.
    pub fn live_bytes(&self) -> u64 {
        match self.rate_bytes() {
            0 => self.data_bytes,
            r => self.data_bytes.min(r * self.live_secs),
        }
    }
}

/// One run of one scenario.
#[derive(Debug, Clone)]
pub struct Run {
    pub bytes: u64,
    pub secs: f64,
    /// The sending process (loghamsterc, or the sending socat).
    pub client: Usage,
    /// The receiving process (loghamsterd, or the receiving socat).
    pub server: Usage,
    /// Scenario c: p50, p99, p99.9 in ms.
    pub latency_ms: Option<[f64; 3]>,
    /// Stream bytes on the wire, as the server counted them (not socat).
    pub wire: Option<Wire>,
    pub notes: Vec<String>,
}

/// Stream bytes on the wire for `plain` stream bytes (see
/// `scenarios::wire`). Both include anything a scenario sends outside its
/// timed part (scenario c's warm-up line).
#[derive(Debug, Clone, Copy)]
pub struct Wire {
    pub bytes: u64,
    pub plain: u64,
}

impl Wire {
    pub fn ratio(&self) -> f64 {
        self.bytes as f64 / self.plain as f64
    }
}

impl Run {
    pub fn new(bytes: u64, secs: f64, client: Usage, server: Usage) -> Run {
        Run {
            bytes,
            secs,
            client,
            server,
            latency_ms: None,
            wire: None,
            notes: Vec::new(),
        }
    }

    pub fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB / self.secs
    }
}

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Socat,
    /// `socat` plus an `fdatasync` of its output, timed: the baseline of
    /// the confirmed scenarios (`a`).
    SocatSync,
    A,
    B,
    /// `a` and `b` with `[tls]` on both daemons.
    ATls,
    BTls,
    C,
    Files,
    Idle,
    /// Many files, one writer appending line by line (`many.rs`).
    Many,
    /// The data set into JetStream R1, with its baseline (`jetstream.rs`).
    Js1,
    /// The same into JetStream R3 on three local nodes.
    Js3,
}

impl Scenario {
    const ALL: [(Scenario, &'static str); 12] = [
        (Scenario::Socat, "socat"),
        (Scenario::SocatSync, "socat_sync"),
        (Scenario::A, "a"),
        (Scenario::B, "b"),
        (Scenario::ATls, "a_tls"),
        (Scenario::BTls, "b_tls"),
        (Scenario::C, "c"),
        (Scenario::Files, "files"),
        (Scenario::Idle, "idle"),
        (Scenario::Many, "many"),
        (Scenario::Js1, "js1"),
        (Scenario::Js3, "js3"),
    ];

    /// A socat baseline (needs socat installed).
    pub fn is_socat(self) -> bool {
        matches!(self, Scenario::Socat | Scenario::SocatSync)
    }

    pub fn name(self) -> &'static str {
        Scenario::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("?", |(_, n)| n)
    }

    fn parse_list(list: &str) -> Result<Vec<Scenario>, String> {
        let mut out = Vec::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match Scenario::ALL.iter().find(|(_, n)| *n == word) {
                Some((s, _)) => out.push(*s),
                None => {
                    return Err(format!(
                        "--only: unknown scenario `{word}` (socat,socat_sync,a,b,a_tls,b_tls,c,files,idle,many,js1,js3)"
                    ))
                }
            }
        }
        // Run in the canonical order (socat first: the others' ratio needs it).
        out.sort_by_key(|s| Scenario::ALL.iter().position(|(x, _)| x == s));
        out.dedup();
        Ok(out)
    }
}

fn main() {
    if let Some(spec) = std::env::var_os(many::WRITER_ENV) {
        std::process::exit(many::writer_main(&spec));
    }
    let args: Args = argh::from_env();
    let code = match run(&args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("e2e: {e}");
            1
        }
    };
    // Everything (children, the temp dir) was dropped inside `run`.
    std::process::exit(code);
}

/// Runs the selected scenarios; `Ok(false)` when one of them failed.
fn run(args: &Args) -> Result<bool, Error> {
    let mut scenarios = select(args)?;
    let socat = std::process::Command::new("socat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !socat && scenarios.iter().any(|s| s.is_socat()) {
        println!("**socat not found: no baseline, the ratio column stays empty (apt-get install socat)**\n");
        scenarios.retain(|s| !s.is_socat());
    }
    let nofile = proc::raise_nofile().map_err(Error::io("RLIMIT_NOFILE"))?;

    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("/tmp"));
    let tmp = tempfile::Builder::new()
        .prefix("loghamster-e2e.")
        .tempdir_in(&base)
        .map_err(Error::io(format!("temp dir in {}", base.display())))?;
    let work = tmp
        .path()
        .canonicalize()
        .map_err(Error::io(tmp.path().display()))?;
    report::machine_info(&work, nofile, socat, args);
    let ctx = prepare(args, &work)?;

    let mut rows = Vec::new();
    let mut idle = None;
    for &scenario in &scenarios {
        let row = run_scenario(scenario, &ctx, args, &work, &mut idle)?;
        if scenario != Scenario::Idle || row.failure.is_some() {
            rows.push(row);
        }
    }
    let all_ok = rows.iter().all(|r| r.failure.is_none());
    if !rows.is_empty() {
        report::table(&rows, &ctx, args);
    }
    if let Some(idle) = &idle {
        report::idle_table(idle, args.idle_secs);
    }
    if args.keep {
        let kept = tmp.keep();
        println!("\nkept: {}", kept.display());
    }
    Ok(all_ok)
}

/// `--compression`: the client's own parser, so the bench takes what
/// `loghamsterc --compression` takes.
fn parse_compression(text: &str) -> Result<Compression, String> {
    Compression::parse(text)
}

/// `--compression` as `loghamsterc` takes it: `none`, `zstd`, `zstd:9`.
pub fn compression_arg(c: Compression) -> String {
    match (c.codec, c.level) {
        (None, _) => "none".into(),
        (Some(codec), None) => codec.name().into(),
        (Some(codec), Some(level)) => format!("{codec}:{level}"),
    }
}

/// The scenarios to run, after checking the other flags.
fn select(args: &Args) -> Result<Vec<Scenario>, Error> {
    if let Some(sync) = args.sync.as_deref() {
        if !["none", "interval", "always"].contains(&sync) {
            return Err(Error::Failed(format!(
                "--sync {sync}: expected none, interval or always"
            )));
        }
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err(Error::Failed(format!(
            "--rate {}: expected MiB/s >= 0",
            args.rate
        )));
    }
    if args.repeat == 0 || args.files == 0 || args.many_files == 0 {
        return Err(Error::Failed(
            "--repeat, --files and --many-files must be at least 1".into(),
        ));
    }
    if !(args.many_rate > 0.0 && args.many_rate.is_finite() && args.many_secs > 0.0) {
        return Err(Error::Failed(
            "--many-rate and --many-secs must be positive".into(),
        ));
    }
    Ok(match (&args.only, args.scale) {
        (Some(list), _) => Scenario::parse_list(list).map_err(Error::Failed)?,
        (None, false) => vec![
            Scenario::Socat,
            Scenario::SocatSync,
            Scenario::A,
            Scenario::B,
            Scenario::C,
        ],
        (None, true) => vec![Scenario::Files, Scenario::Idle],
    })
}

/// Generates the data set in `work/data/data.log` and warms the page cache.
fn prepare(args: &Args, work: &Path) -> Result<Ctx, Error> {
    let data_dir = work.join("data");
    std::fs::create_dir(&data_dir).map_err(Error::io(data_dir.display()))?;
    let data = data_dir.join("data.log");
    let t = Instant::now();
    let (data_bytes, lines) =
        data::generate(&data, args.size).map_err(Error::io(data.display()))?;
    // Scenario a's client sends a file found at start-up once it has not
    // changed for 1 s; a data set made a moment ago would add that wait.
    let age = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&data)
        .and_then(|f| f.set_modified(age))
        .map_err(Error::io(data.display()))?;
    println!(
        "data set: {data_bytes} bytes ({:.1} MiB), {lines} lines, generated in {:.1} s: {}",
        data_bytes as f64 / MIB,
        t.elapsed().as_secs_f64(),
        data.display()
    );
    let t = Instant::now();
    let scratch = work.join("warm-up");
    data::warm_up(&scratch, data_bytes).map_err(Error::io(scratch.display()))?;
    println!(
        "warm-up: wrote and deleted {:.0} MiB in {:.1} s (the first run must not be the one \
         that pays for page cache memory touched for the first time)",
        data_bytes as f64 / MIB,
        t.elapsed().as_secs_f64()
    );
    Ok(Ctx {
        data,
        data_bytes,
        rate_mib: args.rate,
        live_secs: args.live_secs,
        idle_files: args.idle_files,
        idle_secs: args.idle_secs,
        sync: args.sync.clone(),
        engine: args.engine.clone(),
        compression: args.compression,
        multiplex: match (args.multiplex, args.plain) {
            (true, true) => {
                return Err(Error::Failed(
                    "--multiplex and --plain exclude each other".into(),
                ))
            }
            (true, false) => Some(true),
            (false, true) => Some(false),
            (false, false) => None,
        },
        many: many::Many {
            files: args.many_files,
            rate_mib: args.many_rate,
            secs: args.many_secs,
            sample: args.many_sample,
            max_connections: args.many_max_connections,
        },
        tls: TlsFiles::generate(work)?,
    })
}

/// Runs one scenario `--repeat` times (`idle` once, its result in `idle`);
/// stops at the first failed run. `Err` only for our own I/O failures.
fn run_scenario(
    scenario: Scenario,
    ctx: &Ctx,
    args: &Args,
    work: &Path,
    idle: &mut Option<scale::Idle>,
) -> Result<report::Row, Error> {
    let split_files = if scenario == Scenario::Files {
        let dir = work.join("files");
        std::fs::create_dir_all(&dir).map_err(Error::io(dir.display()))?;
        data::split(&ctx.data, &dir, args.files).map_err(Error::io(dir.display()))?
    } else {
        Vec::new()
    };
    let repeat = match scenario {
        Scenario::Idle => 1,
        _ => args.repeat,
    };
    let mut row = report::Row {
        scenario,
        runs: Vec::new(),
        failure: None,
    };
    for rep in 0..repeat {
        let run_dir = work.join(format!("run-{}-{rep}", scenario.name()));
        std::fs::create_dir(&run_dir).map_err(Error::io(run_dir.display()))?;
        eprintln!(
            "e2e: running {} ({}/{repeat}) ...",
            scenario.name(),
            rep + 1
        );
        proc::sync_fs(work).map_err(Error::io(format!("syncfs {}", work.display())))?;
        let result = match scenario {
            Scenario::Socat => scenarios::socat(ctx, &run_dir, false),
            Scenario::SocatSync => scenarios::socat(ctx, &run_dir, true),
            Scenario::A => scenarios::send_whole(ctx, &run_dir, false),
            Scenario::B => scenarios::catch_up(ctx, &run_dir, false),
            Scenario::ATls => scenarios::send_whole(ctx, &run_dir, true),
            Scenario::BTls => scenarios::catch_up(ctx, &run_dir, true),
            Scenario::C => live::live_tail(ctx, &run_dir),
            Scenario::Files => scale::many_files(ctx, &split_files, &run_dir),
            Scenario::Many => many::many(ctx, ctx.many, &run_dir),
            Scenario::Js1 => jetstream::run(ctx, &run_dir, 1),
            Scenario::Js3 => jetstream::run(ctx, &run_dir, 3),
            Scenario::Idle => scale::idle(ctx, &run_dir).map(|i| {
                *idle = Some(i);
                Run::new(0, 0.0, Usage::default(), Usage::default())
            }),
        };
        match result {
            Ok(run) => row.runs.push(run),
            Err(e) => {
                report::failure(scenario, &e, &run_dir);
                row.failure = Some(e.to_string());
                break;
            }
        }
        if !args.keep {
            remove_outputs(&run_dir);
        }
    }
    Ok(row)
}

/// The output trees and copies are as large as the data set: gone once
/// verified (the daemons' logs stay until the work dir goes).
fn remove_outputs(run_dir: &Path) {
    for sub in ["out", "idle", "many", "live.log"] {
        let path = run_dir.join(sub);
        let _ = match path.is_dir() {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        };
    }
}
