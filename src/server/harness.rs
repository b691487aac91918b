//! A scripted conversation with a real server, for the `server` fuzz
//! target (`fuzz/fuzz_targets/server.rs`) and `tests/fuzz_corpus.rs`.
//!
//! [`run`] decodes the fuzzer's bytes into a script of [`Op`]s (connect,
//! a well-formed INIT, raw bytes, compressed bytes, the end of a
//! compressed stream, half-close, close, time passing, a restart) and
//! plays it against a [`Server`] bound on 127.0.0.1 with a scratch output
//! tree. Nothing is faked below the loop: the listener, admission, the
//! handshake, routing, the line writer and the zero-copy path, decoders,
//! checkpoint rounds, ACKs and crash recovery are the daemon's own. Only
//! the clock is the script's: the loop runs one turn at a time with
//! [`Server::dispatch`] at the script's `now`, after a poll that never
//! sleeps, so timeouts (handshake, idle, linger, `250 DONE`) cost no
//! wall-clock time.
//!
//! After every step it checks what a client or an operator relies on:
//! - everything the server sends parses: the greeting, then reply, `ACK`
//!   and `250 DONE` lines;
//! - a connection's `ACK` offsets never decrease, and `250 DONE n` is not
//!   below its last `ACK`;
//! - no output file shrinks while the server runs (only recovery at a
//!   restart may cut uncommitted bytes);
//! - checkpoints keep working whatever a client sent, and the state they
//!   leave loads again at a restart.
//!
//! Panics and unbounded memory are the fuzzer's to notice (libFuzzer's
//! `-rss_limit_mb` and `-malloc_limit_mb`).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::Token;

use super::{admit, Server, IDLE};
use crate::codec::{Codec, Encoder};
use crate::config::ServerConfig;
use crate::proto::{self, ServerLine, Status};

/// Most client connections a script opens at once.
const MAX_CONNS: usize = 4;
/// Most operations played from one input.
const MAX_OPS: usize = 96;
/// Most loop turns after one operation (a loop that keeps finding work
/// past this is left for the next operation).
const MAX_TURNS: usize = 64;

/// The server under test: a shared output (`s*` hosts), a template with
/// `{svc}` and `{file}` (`t*` hosts), and the default route; short
/// timeouts so a script reaches them.
const CONFIG: &str = r#"
engine = "epoll"
sync = "interval"
sync_interval = "1s"
handshake_timeout = "10s"
idle_timeout = "30s"
max_line = "4KiB"
decoder_memory = "32MiB"
[output.shared]
path = "shared.log"
match = { host = "s*" }
[output.bysvc]
path = "bysvc/{svc}/{file}"
match = { host = "t*" }
"#;

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Opens a client connection (when fewer than `MAX_CONNS` are open).
    Connect,
    /// Sends a well-formed INIT built from `shape` (see [`init_line`]).
    Init { conn: usize, shape: u8, extra: u8 },
    /// Sends raw bytes.
    Send { conn: usize, data: Vec<u8> },
    /// Compresses bytes with the codec the connection's INIT asked for
    /// (plain when none) and sends them.
    Compressed { conn: usize, data: Vec<u8> },
    /// Ends the connection's compressed stream.
    Finish { conn: usize },
    /// `shutdown(SHUT_WR)`: the client is done sending.
    HalfClose { conn: usize },
    /// Drops the connection.
    Close { conn: usize },
    /// Lets `ms` milliseconds pass.
    Tick { ms: u64 },
    /// Drops the server (as a crash would) and starts another over the
    /// same state and outputs.
    Restart,
}

/// Decodes a script: one byte picks the operation, the next ones its
/// arguments; a data length is one byte. Ends with the input or at
/// `MAX_OPS`.
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut bytes = data.iter().copied();
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        let Some(op) = bytes.next() else { break };
        let mut arg = || bytes.next().unwrap_or(0);
        let conn = usize::from(arg()) % MAX_CONNS;
        let op = match op % 10 {
            0 => Op::Connect,
            1 => Op::Init {
                conn,
                shape: arg(),
                extra: arg(),
            },
            2 | 3 => {
                let len = usize::from(arg());
                let data = (0..len).map(|_| arg()).collect();
                match op % 10 {
                    2 => Op::Send { conn, data },
                    _ => Op::Compressed { conn, data },
                }
            }
            4 => Op::Finish { conn },
            5 => Op::HalfClose { conn },
            6 => Op::Close { conn },
            7 => Op::Tick {
                ms: u64::from(u16::from_le_bytes([arg(), arg()])) * 4,
            },
            8 => Op::Restart,
            _ => Op::Tick {
                ms: u64::from(arg()) * 10,
            },
        };
        ops.push(op);
    }
    ops
}

/// Builds the INIT line `shape` describes: host (bits 0-1), path (bits
/// 2-3), an `id:` (bit 4, which one: bit 5), an `offset:` (bit 6, from
/// `extra`), `ack:1` (bit 7), and a codec (from `extra`).
pub fn init_line(shape: u8, extra: u8) -> (Vec<u8>, Option<Codec>) {
    let host = ["web1", "s1", "t1", "web2"][usize::from(shape & 3)];
    let path = ["/a.log", "/var/log/b.log", "/a.log.1", "/c"][usize::from(shape >> 2 & 3)];
    let id = ["i1", "i2"][usize::from(shape >> 5 & 1)];
    let codec =
        [None, Some(Codec::Gzip), Some(Codec::Lz4), Some(Codec::Zstd)][usize::from(extra >> 6)];
    let offset = (u64::from(extra & 0x3f) * 37).to_string();
    let mut meta = vec![("svc", "app")];
    if shape & 0x10 != 0 {
        meta.push(("id", id));
    }
    if shape & 0x40 != 0 {
        meta.push(("offset", &offset));
    }
    if shape & 0x80 != 0 {
        meta.push(("ack", "1"));
    }
    if let Some(c) = codec {
        meta.push(("compression", c.name()));
    }
    let mut out = Vec::new();
    proto::write_init(&mut out, host, path, &meta);
    (out, codec)
}

/// Plays the script `data` decodes to against a fresh server whose files
/// live in `dir` (emptied first). Panics when an invariant breaks.
pub fn run(dir: &Path, data: &[u8]) {
    let ops = decode(data);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("scratch directory");
    let mut world = World::new(dir);
    for op in ops {
        world.play(op);
        world.turns();
        world.check();
    }
    world.end();
}

/// A client connection of the script.
struct Client {
    sock: TcpStream,
    /// What the server sent and is not parsed yet.
    inbuf: Vec<u8>,
    greeted: bool,
    last_ack: u64,
    /// The offset of its `250 DONE`, once received.
    done: Option<u64>,
    /// The codec its INIT asked for, and the encoder of its stream.
    encoder: Option<Encoder>,
}

struct World {
    dir: PathBuf,
    cfg: ServerConfig,
    server: Server,
    now: Instant,
    ready: Vec<Token>,
    clients: Vec<Client>,
    /// Output file lengths seen so far.
    lengths: HashMap<PathBuf, u64>,
}

impl World {
    fn new(dir: &Path) -> World {
        let out = dir.join("out");
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndirectory = {:?}\n{CONFIG}",
            out.to_str().expect("UTF-8 scratch directory")
        );
        let cfg = ServerConfig::from_toml_str(&text, "harness.toml").expect("harness config");
        let now = Instant::now();
        let server = start(&cfg, now);
        World {
            dir: dir.to_path_buf(),
            cfg,
            server,
            now,
            ready: Vec::new(),
            clients: Vec::new(),
            lengths: HashMap::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr
    }

    fn play(&mut self, op: Op) {
        let n = self.clients.len();
        let pick = |conn: usize| (n > 0).then(|| conn % n);
        match op {
            Op::Connect if n < MAX_CONNS => {
                if let Ok(sock) = TcpStream::connect(self.addr()) {
                    let _ = sock.set_nonblocking(true);
                    self.clients.push(Client {
                        sock,
                        inbuf: Vec::new(),
                        greeted: false,
                        last_ack: 0,
                        done: None,
                        encoder: None,
                    });
                }
            }
            Op::Connect => {}
            Op::Init { conn, shape, extra } => {
                if let Some(c) = pick(conn).and_then(|i| self.clients.get_mut(i)) {
                    let (line, codec) = init_line(shape, extra);
                    c.encoder = codec.and_then(|c| Encoder::new(c, None).ok());
                    send(&mut c.sock, &line);
                }
            }
            Op::Send { conn, data } => {
                if let Some(c) = pick(conn).and_then(|i| self.clients.get_mut(i)) {
                    send(&mut c.sock, &data);
                }
            }
            Op::Compressed { conn, data } => {
                if let Some(c) = pick(conn).and_then(|i| self.clients.get_mut(i)) {
                    let mut out = Vec::new();
                    match &mut c.encoder {
                        Some(e) => e.compress(&data, &mut out).expect("compress"),
                        None => out = data,
                    }
                    send(&mut c.sock, &out);
                }
            }
            Op::Finish { conn } => {
                if let Some(c) = pick(conn).and_then(|i| self.clients.get_mut(i)) {
                    if let Some(mut e) = c.encoder.take() {
                        let mut out = Vec::new();
                        e.finish(&mut out).expect("finish");
                        send(&mut c.sock, &out);
                    }
                }
            }
            Op::HalfClose { conn } => {
                if let Some(c) = pick(conn).and_then(|i| self.clients.get_mut(i)) {
                    let _ = c.sock.shutdown(Shutdown::Write);
                }
            }
            Op::Close { conn } => {
                if let Some(i) = pick(conn) {
                    self.clients.remove(i);
                }
            }
            Op::Tick { ms } => self.now += Duration::from_millis(ms),
            Op::Restart => self.restart(),
        }
    }

    /// Runs loop turns at `now` until nothing is ready or due.
    fn turns(&mut self) {
        for _ in 0..MAX_TURNS {
            let s = &mut self.server;
            if let Err(e) = s
                .reactor
                .wait_at_most(&mut self.ready, Some(Duration::ZERO))
            {
                panic!("poll failed: {e}");
            }
            let due = s.reactor.timers.timeout(self.now) == Some(Duration::ZERO);
            if self.ready.is_empty() && !due && !s.shared.commit_requested {
                return;
            }
            s.dispatch(&self.ready, self.now);
        }
    }

    fn check(&mut self) {
        assert!(
            !self.server.shared.commit_failing,
            "checkpoints fail after what clients sent"
        );
        for c in &mut self.clients {
            c.read_lines();
        }
        let mut files = Vec::new();
        list_files(&self.dir.join("out"), &mut files);
        for (path, len) in files {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with(".loghamsterd.state") {
                continue;
            }
            let before = self.lengths.insert(path.clone(), len).unwrap_or(0);
            assert!(
                len >= before,
                "{} shrank from {before} to {len}",
                path.display()
            );
        }
    }

    /// Drops the server with its connections (as a crash would, minus the
    /// page cache) and starts another over the same files: the state the
    /// first left must load.
    fn restart(&mut self) {
        self.clients.clear();
        let replacement = start(&self.cfg, self.now);
        drop(std::mem::replace(&mut self.server, replacement));
        // Recovery may cut what no checkpoint covered.
        self.lengths.clear();
    }

    /// Closes every client, lets the server finish, and restarts it once
    /// over what it left.
    fn end(&mut self) {
        self.clients.clear();
        self.now += Duration::from_secs(15);
        self.turns();
        self.check();
        self.restart();
    }
}

impl Client {
    /// Reads what the server sent and checks every complete line.
    fn read_lines(&mut self) {
        let mut buf = [0; 4096];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if !self.greeted {
            match proto::parse_greeting(&self.inbuf) {
                Ok(Status::Complete(_, n)) => {
                    self.inbuf.drain(..n);
                    self.greeted = true;
                }
                Ok(Status::Partial) => return,
                Err(e) => panic!("bad greeting ({e}): {:?}", self.inbuf),
            }
        }
        loop {
            let (line, n) = match proto::parse_server_line(&self.inbuf) {
                Ok(Status::Complete(line, n)) => (line, n),
                Ok(Status::Partial) => return,
                Err(e) => panic!("bad server line ({e}): {:?}", self.inbuf),
            };
            match line {
                ServerLine::Ack(at) => {
                    assert!(at >= self.last_ack, "ACK {at} after ACK {}", self.last_ack);
                    self.last_ack = at;
                }
                ServerLine::Done(at) => {
                    assert!(
                        at >= self.last_ack,
                        "250 DONE {at} after ACK {}",
                        self.last_ack
                    );
                    self.done = Some(at);
                }
                ServerLine::FinishRequest(_) | ServerLine::Reply(_) => {}
            }
            self.inbuf.drain(..n);
        }
    }
}

/// Binds a server for `cfg` with its loop's timers set as `run` sets them.
fn start(cfg: &ServerConfig, now: Instant) -> Server {
    let mut server = match Server::bind(cfg.clone(), false) {
        Ok(s) => s,
        Err(e) => panic!("the server does not start over its own state: {e}"),
    };
    let first_sweep = now + admit::sweep_interval(cfg.limits.idle_timeout);
    server.reactor.timers.schedule(first_sweep, IDLE);
    server.shared.next_expiry = now;
    server
}

/// Writes what the socket takes now; the rest is dropped (a full socket
/// buffer means the server holds the client back).
fn send(sock: &mut TcpStream, data: &[u8]) {
    let _ = sock.write(data);
}

/// Every regular file below `dir` with its length.
fn list_files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => list_files(&e.path(), out),
            Ok(m) if m.is_file() => out.push((e.path(), m.len())),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::sys::net;

    /// A resumable plain INIT on the first connection (`web1:/a.log`).
    fn init_plain() -> Op {
        Op::Init {
            conn: 0,
            shape: 0x80,
            extra: 0,
        }
    }

    impl World {
        /// Plays each op, then runs the loop and checks, op by op.
        fn steps(&mut self, ops: impl IntoIterator<Item = Op>) {
            for op in ops {
                self.play(op);
                self.turns();
                self.check();
            }
        }
    }

    #[test]
    fn scripts_decode_from_bytes() {
        let ops = decode(&[0, 0, 1, 5, 0x92, 0x80, 2, 1, 2, b'h', b'\n', 7, 0, 0xe8, 3]);
        assert_eq!(
            ops,
            vec![
                Op::Connect,
                Op::Init {
                    conn: 1,
                    shape: 0x92,
                    extra: 0x80
                },
                Op::Send {
                    conn: 1,
                    data: b"h\n".to_vec()
                },
                Op::Tick { ms: 4000 },
            ]
        );
        let (line, codec) = init_line(0x92, 0x80);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "INIT STREAM t1:/a.log svc:app id:i1 ack:1 compression:lz4\n"
        );
        assert_eq!(codec, Some(Codec::Lz4));
    }

    #[test]
    fn a_plain_stream_is_written_and_acknowledged() {
        let tmp = tempfile::tempdir().unwrap();
        // Connect, INIT web1:/a.log with ack:1, two lines, a second, half-close.
        let mut script = vec![0, 0, 1, 0, 0x80, 0];
        script.extend([2, 0, 4]);
        script.extend(b"x\ny\n");
        script.extend([7, 0, 0xfa, 0, 5, 0, 7, 0, 0xfa, 0]);
        run(tmp.path(), &script);
        let out = tmp.path().join("out/web1/a.log");
        assert_eq!(std::fs::read(out).unwrap(), b"x\ny\n");
    }

    #[test]
    fn the_last_bytes_and_the_half_close_in_one_poll_end_the_stream() {
        // A short read ends a zero-copy turn (what arrives later brings an
        // event of its own), unless the event said the client closed its
        // side: then no later event would come, and only a timer of the
        // connection's (its attach deadline, 10 s on) would find the end.
        let tmp = tempfile::tempdir().unwrap();
        let mut w = World::new(tmp.path());
        w.steps([
            Op::Connect,
            init_plain(),
            Op::Send {
                conn: 0,
                data: b"one\n".to_vec(),
            },
            Op::Tick { ms: 1000 },
        ]);
        // Both before the next poll: one event for the bytes and the end.
        w.play(Op::Send {
            conn: 0,
            data: b"two\n".to_vec(),
        });
        w.play(Op::HalfClose { conn: 0 });
        for _ in 0..3 {
            w.turns();
            w.check();
            w.play(Op::Tick { ms: 1000 });
        }
        assert_eq!(w.clients[0].done, Some(8));
        let out = tmp.path().join("out/web1/a.log");
        assert_eq!(std::fs::read(out).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn a_few_lines_read_leave_the_socket_delaying_its_ack() {
        // A trickle read (a few lines that emptied the socket) switches the
        // socket to delayed ACKs, so the client's next segment can share
        // one ACK with these.
        let tmp = tempfile::tempdir().unwrap();
        let mut w = World::new(tmp.path());
        w.steps([Op::Connect, init_plain()]);
        let socks = |w: &World| -> Vec<bool> {
            w.server
                .conns
                .values()
                .filter_map(|c| c.sock.as_plain())
                .map(|s| net::quickack(s).unwrap())
                .collect()
        };
        for c in w.server.conns.values() {
            net::set_quickack(c.sock.as_plain().unwrap(), true).unwrap();
        }
        assert_eq!(socks(&w), [true]);
        w.steps([Op::Send {
            conn: 0,
            data: b"one\n".to_vec(),
        }]);
        assert_eq!(socks(&w), [false]);
        let out = tmp.path().join("out/web1/a.log");
        assert_eq!(std::fs::read(out).unwrap(), b"one\n");
    }

    #[test]
    fn compressed_streams_are_decoded() {
        for (extra, codec) in [(0x40, "gzip"), (0x80, "lz4"), (0xc0, "zstd")] {
            let tmp = tempfile::tempdir().unwrap();
            // Connect, INIT with the codec, compressed bytes, end of stream,
            // half-close, a second.
            let mut script = vec![0, 0, 1, 0, 0x80, extra, 3, 0, 7];
            script.extend(b"zipped\n");
            script.extend([4, 0, 5, 0, 7, 0, 0xfa, 0]);
            run(tmp.path(), &script);
            let out = tmp.path().join("out/web1/a.log");
            assert_eq!(std::fs::read(out).unwrap(), b"zipped\n", "{codec}");
        }
    }
}
