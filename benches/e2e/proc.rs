//! Child processes: spawning, waiting for conditions, reaping with
//! `wait4(2)` for exact CPU time and peak RSS, and a guard that kills
//! whatever is still running when a scenario returns early or panics.
//!
//! The few raw calls (`wait4`, `kill`, `setrlimit`, `syncfs`) are in
//! [`sys`]; every other function here is safe.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Ctx, Error};

/// CPU and memory a process used over its whole life.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set size (`ru_maxrss`), KiB.
    pub maxrss_kib: u64,
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// Exit code, or `None` when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub usage: Usage,
}

impl Exit {
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "ended".to_string(),
        }
    }
}

/// A running child. Dropping it kills (SIGKILL) and reaps the process if
/// it was not reaped yet, so no daemon outlives a failed scenario.
pub struct Proc {
    pub name: String,
    pid: i32,
    /// Set once reaped; the pid must not be signalled after that.
    exit: Option<Exit>,
}

impl Proc {
    /// Starts `cmd` with standard input and output closed and standard
    /// error to `log` (or closed).
    pub fn spawn(name: &str, cmd: &mut Command, log: Option<&Path>) -> Result<Proc, Error> {
        let stderr = match log {
            Some(p) => Stdio::from(File::create(p).map_err(Error::io(p.display()))?),
            None => Stdio::null(),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(Error::io(format!("start {name} ({:?})", cmd.get_program())))?;
        // The `Child` is dropped: it neither waits nor kills. We reap the
        // pid ourselves with wait4 to get its rusage.
        Ok(Proc {
            name: name.to_string(),
            pid: child.id() as i32,
            exit: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Reaps the process if it has ended (never blocks).
    pub fn try_reap(&mut self) -> Result<Option<Exit>, Error> {
        if self.exit.is_none() {
            self.exit =
                sys::wait4(self.pid, false).map_err(Error::io(format!("wait4 {}", self.name)))?;
        }
        Ok(self.exit)
    }

    /// Fails when the process has ended (for "is it still alive" checks
    /// while waiting on something else).
    pub fn check_alive(&mut self) -> Result<(), Error> {
        match self.try_reap()? {
            None => Ok(()),
            Some(exit) => Err(Error::Failed(format!(
                "{} ended early: {}",
                self.name,
                exit.describe()
            ))),
        }
    }

    /// Waits until the process ends by itself.
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit, Error> {
        let what = format!("{} to exit", self.name);
        wait_until(timeout, &what, || Ok(self.try_reap()?.is_some()))?;
        Ok(self.exit.expect("reaped above"))
    }

    /// SIGTERM, then waits up to `timeout` for the process to end; SIGKILL
    /// after that (an error: the clean stop did not work).
    pub fn terminate(&mut self, timeout: Duration) -> Result<Exit, Error> {
        if self.try_reap()?.is_none() {
            sys::kill(self.pid, libc::SIGTERM)
                .map_err(Error::io(format!("SIGTERM {}", self.name)))?;
        }
        match self.wait(timeout) {
            Ok(exit) => Ok(exit),
            Err(_) => {
                self.kill();
                Err(Error::Failed(format!(
                    "{} did not stop within {timeout:?} of SIGTERM",
                    self.name
                )))
            }
        }
    }

    /// SIGKILL and reap, ignoring errors (used on the error path).
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = sys::kill(self.pid, libc::SIGKILL);
            if let Ok(exit) = sys::wait4(self.pid, true) {
                self.exit = exit;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The daemon binary `name`: from `$LOGHAMSTER_E2E_BIN_DIR` when set (to
/// run the bench against another build, say a copy of the binaries from
/// before a change), else the one cargo built with the bench (`built`).
pub fn daemon(name: &str, built: &str) -> std::path::PathBuf {
    match std::env::var_os("LOGHAMSTER_E2E_BIN_DIR") {
        Some(dir) => Path::new(&dir).join(name),
        None => built.into(),
    }
}

/// Polls `done` every millisecond until it returns true; fails after
/// `timeout` with "timed out waiting for {what}".
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> Result<bool, Error>,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Failed(format!(
                "timed out after {timeout:?} waiting for {what}"
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A started `loghamsterd`, the address it listens on and the address of
/// its metrics endpoint.
pub struct Server {
    pub proc: Proc,
    pub addr: String,
    /// `ip:port` of `/metrics` (`[prometheus]` on a port the kernel picked).
    pub metrics: String,
}

/// Stream bytes the server counted, from its `/metrics`: summed over every
/// label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    /// `loghamster_server_received_bytes_total`: plain stream bytes, every
    /// stream.
    pub received: u64,
    /// `loghamster_server_compressed_received_bytes_total`: what compressed
    /// streams read from their sockets.
    pub compressed: u64,
    /// `loghamster_server_decompressed_bytes_total`: the plain bytes those
    /// decoded to.
    pub decompressed: u64,
}

impl Server {
    /// `loghamsterd -l 127.0.0.1:0 -d RUN_DIR/out --config RUN_DIR/server.toml`,
    /// stderr to `RUN_DIR/server.log`. The config enables `[prometheus]` on
    /// 127.0.0.1:0 (the bytes-on-the-wire counters are read there) and holds
    /// `--sync` and `--engine` when given. Waits for its `listening on ADDR`
    /// and `serving metrics on http://ADDR/metrics` lines.
    pub fn start(ctx: &Ctx, run_dir: &Path) -> Result<Server, Error> {
        Server::start_with(ctx, run_dir, false)
    }

    /// [`Server::start`], with `[tls]` (requiring TLS) when `tls`.
    pub fn start_with(ctx: &Ctx, run_dir: &Path, tls: bool) -> Result<Server, Error> {
        Server::start_extra(ctx, run_dir, tls, "")
    }

    /// [`Server::start_with`] with `extra` TOML at the end of its config
    /// (the JetStream scenarios' output).
    pub fn start_extra(ctx: &Ctx, run_dir: &Path, tls: bool, extra: &str) -> Result<Server, Error> {
        let log = run_dir.join("server.log");
        let mut cmd = Command::new(daemon("loghamsterd", env!("CARGO_BIN_EXE_loghamsterd")));
        cmd.arg("-l")
            .arg("127.0.0.1:0")
            .arg("-d")
            .arg(run_dir.join("out"));
        let mut text = String::new();
        if let Some(sync) = &ctx.sync {
            text += &format!("sync = \"{sync}\"\n");
        }
        if let Some(engine) = &ctx.engine {
            text += &format!("engine = \"{engine}\"\n");
        }
        text += "\n[prometheus]\nlisten = \"127.0.0.1:0\"\n";
        if tls {
            text += &format!(
                "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                ctx.tls.cert.display(),
                ctx.tls.key.display()
            );
        }
        text += extra;
        let config = run_dir.join("server.toml");
        std::fs::write(&config, text).map_err(Error::io(config.display()))?;
        cmd.arg("--config").arg(config);
        let log = log.as_path();
        let mut proc = Proc::spawn("loghamsterd", &mut cmd, Some(log))?;
        let mut addrs = None;
        wait_until(
            Duration::from_secs(10),
            "loghamsterd's `listening on` and `serving metrics on`",
            || {
                proc.check_alive()?;
                let text = std::fs::read_to_string(log).unwrap_or_default();
                // The address up to `end` (so not one cut by a partial write).
                let after = |marker: &str, end: &[char]| {
                    let rest = text.split(marker).nth(1)?;
                    Some(rest.split_once(end)?.0.to_string())
                };
                addrs = after("listening on ", &[' ', '\n'])
                    .zip(after("serving metrics on http://", &['/']));
                Ok(addrs.is_some())
            },
        )?;
        let (addr, metrics) = addrs.expect("found above");
        Ok(Server {
            proc,
            addr,
            metrics,
        })
    }

    /// Scrapes `/metrics` for the stream byte counters.
    pub fn counted(&self) -> Result<Counted, Error> {
        let body = http_get(&self.metrics, "/metrics")
            .map_err(Error::io(format!("GET http://{}/metrics", self.metrics)))?;
        let sum = |name: &str| -> Result<u64, Error> {
            let mut total = 0;
            for line in body.lines().filter(|l| !l.starts_with('#')) {
                let Some(end) = line.find(['{', ' ']) else {
                    continue;
                };
                if &line[..end] != name {
                    continue;
                }
                let value = line.rsplit(' ').next().unwrap_or_default();
                total += match value.parse::<u64>() {
                    Ok(v) => v,
                    Err(_) => value
                        .parse::<f64>()
                        .map(|v| v as u64)
                        .map_err(|_| Error::Failed(format!("/metrics: odd line {line:?}")))?,
                };
            }
            Ok(total)
        };
        let received = "loghamster_server_received_bytes_total";
        if !body.lines().any(|l| l.starts_with(received)) {
            return Err(Error::Failed(format!(
                "/metrics of loghamsterd has no {received}"
            )));
        }
        Ok(Counted {
            received: sum(received)?,
            compressed: sum("loghamster_server_compressed_received_bytes_total")?,
            decompressed: sum("loghamster_server_decompressed_bytes_total")?,
        })
    }
}

/// The body of `GET path` from `addr` (HTTP/1.0, one request); an error
/// unless the status is 200.
fn http_get(addr: &str, path: &str) -> io::Result<String> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(sock, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    sock.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(io::Error::other(format!("answer {status:?}")));
    }
    Ok(body.to_string())
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind 127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(Error::io("local_addr"))?.port())
}

/// Whether something listens on 127.0.0.1:`port` (from /proc/net/tcp, so
/// that the check does not use up a one-shot listener's only accept).
pub fn is_listening(port: u16) -> Result<bool, Error> {
    let table = std::fs::read_to_string("/proc/net/tcp").map_err(Error::io("/proc/net/tcp"))?;
    let ours = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    Ok(table.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1).unwrap_or_default();
        ours.iter().any(|a| a == local) && f.nth(1) == Some("0A")
    }))
}

/// Current and peak RSS (KiB) from /proc/<pid>/status.
pub fn rss_kib(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU seconds so far, from /proc/<pid>/stat (clock ticks).
pub fn cpu_s(pid: i32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces: state is field 3,
    // utime 14, stime 15.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / sys::clock_ticks() as f64
}

/// A process's read- and write-family system calls so far (`syscr` and
/// `syscw` of `/proc/PID/io`: `read`, `pread`, `readv`, `write`, ...; not
/// the `recv` and `send` that sockets get). `(0, 0)` once it is gone.
pub fn rw_calls(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("syscr:"), field("syscw:"))
}

/// Open descriptors of a process.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Writes back the dirty pages of the file system holding `dir`, so that
/// a run does not pay for the previous run's output (`syncfs(2)`).
pub fn sync_fs(dir: &Path) -> io::Result<()> {
    sys::syncfs(&File::open(dir)?)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it).
/// Returns (soft before, soft now).
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    sys::raise_nofile()
}

mod sys {
    use std::io;

    use super::{Exit, Usage};

    /// `wait4(pid)` with rusage; `None` when `block` is false and the
    /// process is still running.
    pub fn wait4(pid: i32, block: bool) -> io::Result<Option<Exit>> {
        let mut status = 0;
        // SAFETY: all-zero is a valid `rusage` (plain integers).
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if block { 0 } else { libc::WNOHANG };
        loop {
            // SAFETY: `status` and `ru` are valid for writes for the call.
            let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
            if r == 0 {
                return Ok(None);
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            break;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Some(Exit {
            code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            usage: Usage {
                cpu_s: secs(ru.ru_utime) + secs(ru.ru_stime),
                maxrss_kib: ru.ru_maxrss as u64,
            },
        }))
    }

    pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
        // SAFETY: kill(2) has no memory arguments; `pid` is our unreaped child.
        if unsafe { libc::kill(pid, signal) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn syncfs(f: &std::fs::File) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the duration of the call.
        if unsafe { libc::syncfs(f.as_raw_fd()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn clock_ticks() -> i64 {
        // SAFETY: sysconf has no memory arguments.
        unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1)
    }

    pub fn raise_nofile() -> io::Result<(u64, u64)> {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is valid for writes.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let before = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((before, lim.rlim_cur))
    }
}
