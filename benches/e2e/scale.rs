//! Scale scenarios: many files on one client.
//!
//! - `files`: the data set cut into `--files` files (1,000), all named on
//!   one client's command line, all complete before it starts (catch-up).
//!   Aggregate MiB/s, CPU and peak RSS of both daemons.
//! - `idle`: `--idle-files` files (10,000) of one line each, followed
//!   through a `path = "DIR/*.log"` glob. Once every line arrived (and 2 s
//!   more to settle), CPU and RSS of both daemons over `--idle-secs` (10 s)
//!   of nothing happening.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::data::LineGen;
use crate::proc::{cpu_s, fd_count, rss_kib, Proc, Server, Usage};
use crate::scenarios::{
    cli_args, client_config, output_path, spawn_client, stop, timeout_for, toml_str, verify,
};
use crate::{Ctx, Error, Run};

/// `files`: one client catches up on many complete files.
pub fn many_files(ctx: &Ctx, files: &[(PathBuf, u64)], run_dir: &Path) -> Result<Run, Error> {
    let outdir = run_dir.join("out");
    let mut server = Server::start(ctx, run_dir)?;
    let t0 = Instant::now();
    let mut args = cli_args(ctx, run_dir, &server, "s1");
    args.extend(files.iter().map(|(p, _)| p.clone().into()));
    let mut client = spawn_client(run_dir, args)?;
    let outputs: Vec<(PathBuf, u64)> = files
        .iter()
        .map(|(p, len)| (output_path(&outdir, "s1", p), *len))
        .collect();
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    wait_all(
        &outputs,
        timeout_for(total),
        Duration::from_millis(5),
        &mut [&mut server.proc, &mut client],
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let (client_usage, server_usage, wire) = stop(ctx, &mut client, &mut server, total)?;
    for ((src, _), (out, _)) in files.iter().zip(&outputs) {
        verify(src, out)?;
    }
    let mut run = Run::new(total, secs, client_usage, server_usage);
    run.wire = Some(wire);
    run.notes.push(format!(
        "files: {} files of about {} KiB, {:.1} s until the last byte of the last file arrived",
        files.len(),
        total / files.len().max(1) as u64 / 1024,
        secs
    ));
    Ok(run)
}

/// What the `idle` scenario saw.
pub struct Idle {
    pub files: usize,
    /// From the client's start until every file's line arrived.
    pub deliver_secs: f64,
    pub client: IdleSample,
    pub server: IdleSample,
    /// Whole-life usage from wait4.
    pub client_total: Usage,
    pub server_total: Usage,
}

/// One daemon over the idle window.
pub struct IdleSample {
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub fds: usize,
}

/// `idle`: many followed files with nothing to send.
pub fn idle(ctx: &Ctx, run_dir: &Path) -> Result<Idle, Error> {
    let dir = run_dir.join("idle");
    let files = one_line_files(&dir, ctx.idle_files)?;
    let outdir = run_dir.join("out");
    let mut server = Server::start(ctx, run_dir)?;
    let stream = format!("path = {}\n", toml_str(&dir.join("*.log")));
    let config = client_config(ctx, run_dir, &server, "s2", &stream, false)?;
    let t0 = Instant::now();
    let mut client = spawn_client(run_dir, [OsStr::new("--config"), config.as_os_str()])?;
    let outputs: Vec<(PathBuf, u64)> = files
        .iter()
        .map(|(p, len)| (output_path(&outdir, "s2", p), *len))
        .collect();
    wait_all(
        &outputs,
        Duration::from_secs(300),
        Duration::from_millis(5),
        &mut [&mut server.proc, &mut client],
    )?;
    let deliver_secs = t0.elapsed().as_secs_f64();

    std::thread::sleep(Duration::from_secs(2));
    let (c0, s0) = (cpu_s(client.pid()), cpu_s(server.proc.pid()));
    std::thread::sleep(Duration::from_secs(ctx.idle_secs));
    server.proc.check_alive()?;
    client.check_alive()?;
    let sample = |pid: i32, before: f64| {
        let (rss_kib, hwm_kib) = rss_kib(pid);
        IdleSample {
            cpu_s: cpu_s(pid) - before,
            rss_kib,
            hwm_kib,
            fds: fd_count(pid),
        }
    };
    let (client_idle, server_idle) = (sample(client.pid(), c0), sample(server.proc.pid(), s0));
    let total = files.iter().map(|(_, len)| len).sum();
    let (client_total, server_total, _) = stop(ctx, &mut client, &mut server, total)?;
    for ((src, _), (out, _)) in files.iter().zip(&outputs) {
        verify(src, out)?;
    }
    Ok(Idle {
        files: files.len(),
        deliver_secs,
        client: client_idle,
        server: server_idle,
        client_total,
        server_total,
    })
}

/// `n` files `dir/iNNNNN.log` of one data-set line each.
fn one_line_files(dir: &Path, n: usize) -> Result<Vec<(PathBuf, u64)>, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir.display()))?;
    let mut gen = LineGen::new();
    let mut files = Vec::with_capacity(n);
    let mut line = Vec::new();
    for i in 0..n {
        let path = dir.join(format!("i{i:05}.log"));
        line.clear();
        gen.line(i as u64, &mut line);
        std::fs::write(&path, &line).map_err(Error::io(path.display()))?;
        files.push((path, line.len() as u64));
    }
    Ok(files)
}

/// Waits until every output has its length. Checks in order and stops at
/// the first incomplete one, every `poll`, so that waiting costs about one
/// `stat` per tick rather than one per file; the daemons are checked alive
/// every 100 ms.
pub fn wait_all(
    outputs: &[(PathBuf, u64)],
    timeout: Duration,
    poll: Duration,
    alive: &mut [&mut Proc],
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    let mut checked: Option<Instant> = None;
    let mut done = 0;
    while done < outputs.len() {
        if checked.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
            for p in alive.iter_mut() {
                p.check_alive()?;
            }
            checked = Some(Instant::now());
        }
        while let Some((path, len)) = outputs.get(done) {
            let have = std::fs::metadata(path).map_or(0, |m| m.len());
            if have > *len {
                return Err(Error::Failed(format!(
                    "{} has {have} bytes, more than the {len} written",
                    path.display()
                )));
            }
            if have < *len {
                break;
            }
            done += 1;
        }
        if done == outputs.len() {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "timed out after {timeout:?}: {done} of {} files complete (next: {})",
                outputs.len(),
                outputs[done].0.display()
            )));
        }
        std::thread::sleep(poll);
    }
    Ok(())
}
