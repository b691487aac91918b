//! Shared harness for the end-to-end tests: real binaries, temp dirs,
//! ephemeral loopback ports, bounded waits (no fixed sleeps where a
//! condition can be waited for), processes killed on drop.

#![allow(dead_code)]

pub mod scrape;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_loghamsterd");
pub const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_loghamsterc");

/// Generous bound for anything to happen on a loaded 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `cond` every few milliseconds until it holds or `PATIENCE` runs
/// out; panics with `what` and the last state on timeout.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running daemon whose stderr is collected; killed on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub log: Arc<Mutex<String>>,
    pub name: &'static str,
    /// The thread copying stderr into `log`; joined once the process
    /// exited, so the log is complete.
    reader: Option<std::thread::JoinHandle<()>>,
    /// Stderr not read yet (see [`Proc::spawn_gated`]).
    held: Option<BufReader<std::process::ChildStderr>>,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: Command) -> Proc {
        let mut p = Proc::spawn_gated(name, cmd, "");
        p.release();
        p
    }

    /// Like [`Proc::spawn`], but its stderr is read here up to the first
    /// line holding `gate` (any line for `""`) and no further until
    /// [`Proc::release`]. Meanwhile the process blocks in its next log
    /// write once the pipe (64 KiB) is full: it cannot get further than
    /// that many bytes of log lines past the gate, however fast it runs.
    pub fn spawn_gated(name: &'static str, mut cmd: Command, gate: &str) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        if !gate.is_empty() {
            let mut line = String::new();
            while !line.contains(gate) {
                line.clear();
                if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                    break; // exited: the log says why
                }
                log.lock().unwrap().push_str(&line);
            }
        }
        Proc {
            child: Some(child),
            log,
            name,
            reader: None,
            held: Some(stderr),
        }
    }

    /// Goes on reading the log of a [`Proc::spawn_gated`] process (in a
    /// thread, into `log`).
    pub fn release(&mut self) {
        let Some(stderr) = self.held.take() else {
            return;
        };
        let (sink, name) = (self.log.clone(), self.name);
        self.reader = Some(std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if std::env::var_os("LOGHAMSTER_TEST_ECHO").is_some() {
                    eprintln!("[{name}] {line}");
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        }));
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_log(&self, needle: &str) {
        wait_for(&format!("{} to log {needle:?}", self.name), || {
            self.log().contains(needle)
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.join_reader();
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        self.release();
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(st) = child.try_wait().expect("wait works") {
                self.child = None;
                self.join_reader();
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log());
        }
    }
}

pub struct Server {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts loghamsterd with `args` (add `--listen 127.0.0.1:0` yourself
    /// or through a config) and waits until it listens.
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(SERVER_BIN);
        cmd.args(args);
        Server::start_command(cmd)
    }

    /// Starts loghamsterd as `cmd` says (arguments, environment) and waits
    /// until it listens.
    pub fn start_command(cmd: Command) -> Server {
        let proc = Proc::spawn("loghamsterd", cmd);
        proc.wait_log("listening on ");
        let log = proc.log();
        let at = log.find("listening on ").expect("logged") + "listening on ".len();
        let addr = log[at..]
            .split_whitespace()
            .next()
            .expect("address")
            .parse()
            .expect("socket address");
        Server { proc, addr }
    }

    /// Server writing `dir/<host>/<path>` on an ephemeral port.
    pub fn with_directory(dir: &Path) -> Server {
        Server::start(&[
            "--listen",
            "127.0.0.1:0",
            "--directory",
            dir.to_str().expect("utf-8 temp dir"),
        ])
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Starts loghamsterd from `dir/server.toml`: an ephemeral port, the
/// default route into `out`, then the TOML lines `extra`.
pub fn server_with(dir: &Path, out: &Path, extra: &str) -> Server {
    let cfg = dir.join("server.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndirectory = \"{}\"\n{extra}",
        out.display()
    );
    std::fs::write(&cfg, text).expect("write server config");
    Server::start(&["--config", cfg.to_str().expect("utf-8 temp dir")])
}

/// Starts loghamsterc with `args`.
pub fn client(args: &[&str]) -> Proc {
    let mut cmd = Command::new(CLIENT_BIN);
    cmd.args(args);
    Proc::spawn("loghamsterc", cmd)
}

/// Starts loghamsterc streaming `files` to `server` under host name `host`.
pub fn client_for(server: &Server, state: &Path, host: &str, files: &[&Path]) -> Proc {
    client_for_with(server, state, host, files, &[])
}

/// [`client_for`] with `extra` options first (e.g. `--no-multiplex`).
pub fn client_for_with(
    server: &Server,
    state: &Path,
    host: &str,
    files: &[&Path],
    extra: &[&str],
) -> Proc {
    let addr = server.addr.to_string();
    let mut args = extra.to_vec();
    args.extend([
        "--server",
        &addr,
        "--state-file",
        state.to_str().unwrap(),
        "--hostname",
        host,
    ]);
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    client(&args)
}

/// Starts loghamsterc streaming `file` as `svc` under host name `host`,
/// with its state file beside `file`.
pub fn client_with_svc(server: &str, svc: &str, host: &str, file: &Path) -> Proc {
    client_with_svc_with(server, svc, host, file, &[])
}

/// [`client_with_svc`] with `extra` options first.
pub fn client_with_svc_with(
    server: &str,
    svc: &str,
    host: &str,
    file: &Path,
    extra: &[&str],
) -> Proc {
    let state = file.with_extension(format!("{host}.state"));
    let mut args = extra.to_vec();
    args.extend([
        "--server",
        server,
        "--svc",
        svc,
        "--hostname",
        host,
        "--state-file",
        state.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    client(&args)
}

/// Writes `dir/client.toml` for a client of `server` with host name `h`
/// and state file `dir/state`, followed by `body` (its `[tuning]` and
/// `[[stream]]` sections); returns its path.
pub fn client_config(dir: &Path, server: &Server, body: &str) -> PathBuf {
    let cfg = dir.join("client.toml");
    let head = format!(
        "state_file = \"{}\"\nhostname = \"h\"\n[server]\nhostname = \"127.0.0.1\"\nport = {}\n",
        dir.join("state").display(),
        server.port()
    );
    std::fs::write(&cfg, head + body).expect("write client config");
    cfg
}

/// One `[[stream]]` table per path, for a client config's body.
pub fn stream_tables<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> String {
    paths
        .into_iter()
        .map(|p| format!("[[stream]]\npath = \"{}\"\n", p.as_ref().display()))
        .collect()
}

/// Where the default route puts `file` from `host` under `dir`.
pub fn routed(dir: &Path, host: &str, file: &Path) -> PathBuf {
    dir.join(host)
        .join(file.strip_prefix("/").expect("absolute"))
}

/// Appends numbered lines `from..to` (each ends in '\n').
pub fn append_lines(path: &Path, tag: &str, from: usize, to: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    let mut buf = String::new();
    for i in from..to {
        buf.push_str(&line(tag, i));
    }
    f.write_all(buf.as_bytes()).expect("append");
}

/// The `i`th test line of `tag`: varied lengths, with spaces.
pub fn line(tag: &str, i: usize) -> String {
    let pad = "x".repeat(i * 7919 % 150);
    format!("{tag} {i:08} {pad}\n")
}

pub fn expected(tag: &str, from: usize, to: usize) -> String {
    (from..to).map(|i| line(tag, i)).collect()
}

pub fn read(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap_or_default()).expect("utf-8 output")
}

/// Waits until `path` holds exactly `want`; on timeout says how it differs.
pub fn wait_content(path: &Path, want: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = read(path);
        if got == want {
            return;
        }
        if Instant::now() >= deadline || got.len() > want.len() {
            panic!("{}: {}", path.display(), describe_difference(&got, want));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Names the first line that differs, counts duplicates and missing lines.
pub fn describe_difference(got: &str, want: &str) -> String {
    let g: Vec<&str> = got.lines().collect();
    let w: Vec<&str> = want.lines().collect();
    let first = g
        .iter()
        .zip(&w)
        .position(|(a, b)| a != b)
        .unwrap_or(g.len().min(w.len()));
    let mut seen = std::collections::HashSet::new();
    let dups = g.iter().filter(|l| !seen.insert(**l)).count();
    let wanted: std::collections::HashSet<&str> = w.iter().copied().collect();
    let have: std::collections::HashSet<&str> = g.iter().copied().collect();
    let missing = wanted.difference(&have).count();
    format!(
        "got {} lines ({} bytes), want {} ({} bytes); {dups} duplicated, {missing} missing; first difference at line {}: got {:?}, want {:?}",
        g.len(),
        got.len(),
        w.len(),
        want.len(),
        first + 1,
        g.get(first),
        w.get(first)
    )
}

/// A raw protocol connection, as a person with `nc` would make.
pub struct Raw {
    pub sock: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        let reader = BufReader::new(sock.try_clone().unwrap());
        Raw { sock, reader }
    }

    pub fn line(&mut self) -> String {
        let mut s = String::new();
        self.reader.read_line(&mut s).expect("read a line");
        s
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("send");
    }

    /// Reads the greeting; returns the STREAMID line.
    pub fn greeting(&mut self) -> String {
        let welcome = self.line();
        assert!(
            welcome.starts_with("### Welcome to LogHamster server v"),
            "{welcome:?}"
        );
        let id = self.line();
        assert!(id.starts_with("STREAMID "), "{id:?}");
        id
    }

    /// True when the server closed the connection (EOF after any data).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok()
    }
}
