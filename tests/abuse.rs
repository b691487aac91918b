//! Hostile clients against the real server on loopback (issue 12): each
//! test is one attack from the adversarial review, made with raw TCP, and
//! checks that the server refuses or bounds it with a clear code, a log
//! line and a metric, while a legitimate stream keeps being acknowledged.
//! Nothing here decides by wall-clock time: every wait is for a reply
//! line, a log line or a metric.

#[path = "abuse/auth.rs"]
mod auth;
mod common;
#[path = "abuse/measure.rs"]
mod measure;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;

/// `GET /metrics` from the server's `--metrics-listen` endpoint.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(PATIENCE)).expect("set a timeout");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send the request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the answer");
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of `series` (name and labels exactly as exposed).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Where the server serves metrics (from its log line).
fn metrics_addr(server: &Server) -> SocketAddr {
    const SAYS: &str = "serving metrics on http://";
    server.proc.wait_log(SAYS);
    let log = server.proc.log();
    let at = log.find(SAYS).expect("logged") + SAYS.len();
    let rest = &log[at..];
    rest[..rest.find("/metrics").expect("a URL")]
        .parse()
        .expect("a socket address")
}

/// Waits until the server's `series` reaches at least `want`.
fn wait_metric(server: &Server, series: &str, want: f64) {
    let addr = metrics_addr(server);
    wait_for(&format!("{series} >= {want}"), || {
        value(&scrape(addr), series).is_some_and(|v| v >= want)
    });
}

/// A server writing under `tmp/out` with its metrics on an ephemeral port,
/// plus the TOML lines `extra`.
fn server(tmp: &std::path::Path, extra: &str) -> Server {
    let extra = format!("sync_interval = \"50ms\"\n{extra}\n[prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n");
    server_with(tmp, &tmp.join("out"), &extra)
}

/// Opens a resumable, acknowledged stream with `init_rest` after the
/// target, sends `data`, and returns the connection after the `200` line.
fn stream(server: &Server, target: &str, init_rest: &str, data: &[u8]) -> (Raw, String) {
    let mut raw = Raw::connect(server.addr);
    raw.greeting();
    raw.send(format!("INIT STREAM {target} {init_rest}\n").as_bytes());
    raw.send(data);
    let reply = raw.line();
    (raw, reply)
}

/// A legitimate stream is attached and acknowledged: `200`, then `ACK`
/// for its bytes.
fn legitimate_stream_is_acknowledged(server: &Server, id: &str) {
    let (mut raw, reply) = stream(
        server,
        "good:/ok.log",
        &format!("id:{id} offset:0 ack:1"),
        b"fine\n",
    );
    assert!(
        reply.starts_with("200 "),
        "a legitimate stream got {reply:?}"
    );
    assert_eq!(raw.line(), "ACK 5\n");
}

#[test]
fn an_offset_near_the_checkpoints_limit_is_refused_and_others_are_still_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path(), "");
    let max = i64::MAX;
    let (mut bad, reply) = stream(
        &server,
        "ovf:/x",
        &format!("id:o1 offset:{max} ack:1"),
        b"ab",
    );
    assert!(reply.starts_with("200 "), "{reply:?}");
    let refusal = bad.line();
    assert!(refusal.starts_with("400 "), "{refusal:?}");
    bad.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(bad.closed());
    wait_metric(
        &server,
        "loghamster_server_limit_hits_total{limit=\"stream_offset\"}",
        1.0,
    );
    server.proc.wait_log("the most a checkpoint can record");
    legitimate_stream_is_acknowledged(&server, "g1");
    // One byte fewer fits exactly and is written.
    let below = max - 1;
    let (mut edge, reply) = stream(
        &server,
        "edge:/x",
        &format!("id:e1 offset:{below} ack:1"),
        b"\n",
    );
    assert!(reply.starts_with("200 "), "{reply:?}");
    assert_eq!(edge.line(), format!("ACK {max}\n"));
    legitimate_stream_is_acknowledged(&server, "g2");
}

#[test]
fn no_stream_can_reach_the_servers_state_file_or_its_temp_files() {
    let tmp = tempfile::tempdir().unwrap();
    // A template that takes the client's path as it is, relative to
    // `directory`, where the state file lives by default.
    let server = server(
        tmp.path(),
        "[output.evil]\npath = \"{path}\"\nmatch = { host = \"evil\" }\n",
    );
    for path in [
        "/.loghamsterd.state.tmp/x",
        "/.loghamsterd.state",
        "/.loghamsterd.state.journal",
        "/.loghamsterd.statefoo/y",
    ] {
        let (mut raw, reply) = stream(
            &server,
            &format!("evil:{path}"),
            "id:e offset:0 ack:1",
            b"x\n",
        );
        assert!(reply.starts_with("403 "), "{path}: {reply:?}");
        raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(raw.closed());
    }
    server.proc.wait_log("reserved for the server's state");
    legitimate_stream_is_acknowledged(&server, "g1");
    let names: Vec<_> = std::fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".loghamsterd"))
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == ".loghamsterd.state" || n == ".loghamsterd.state.journal"),
        "only the state file and its journal are there: {names:?}"
    );
    // The same template still writes everything else.
    let (mut ok, reply) = stream(
        &server,
        "evil:/var/log/fine.log",
        "id:f offset:0 ack:1",
        b"ok\n",
    );
    assert!(reply.starts_with("200 "), "{reply:?}");
    assert_eq!(ok.line(), "ACK 3\n");
}

/// A zstd stream of `n` zero bytes, as one frame (it compresses about
/// 30,000 to 1).
fn zstd_zeros(n: usize) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..n >> 20 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap()
}

#[test]
fn a_compression_bomb_is_decoded_a_quantum_at_a_time_while_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path(), "sync = \"none\"");
    const BOMB: usize = 256 << 20;
    let bomb = zstd_zeros(BOMB);
    let (mut raw, reply) = stream(&server, "bomb:/zeros", "compression:zstd", b"");
    assert!(reply.starts_with("200 "), "{reply:?}");
    raw.send(&bomb);
    wait_metric(
        &server,
        "loghamster_server_decompressed_bytes_total{codec=\"zstd\"}",
        1.0,
    );
    legitimate_stream_is_acknowledged(&server, "g1");
    let decoded = value(
        &scrape(metrics_addr(&server)),
        "loghamster_server_decompressed_bytes_total{codec=\"zstd\"}",
    )
    .unwrap();
    assert!(
        decoded < BOMB as f64,
        "the legitimate stream waited for all {decoded} bytes of the bomb"
    );
    eprintln!("the legitimate stream was acknowledged after {decoded} of {BOMB} bytes of the bomb");
}

/// An unfinished zstd frame that asks for an 8 MiB window and, in well
/// under 1 KiB, decodes to 16 MiB of zeros: the decoder must allocate the
/// window and fill it, then waits for the rest of the frame.
fn zstd_big_window_prefix() -> Vec<u8> {
    use zstd::stream::raw::{CParameter, Encoder, InBuffer, Operation, OutBuffer};
    let mut enc = Encoder::new(3).unwrap();
    enc.set_parameter(CParameter::WindowLog(23)).unwrap();
    let data = vec![0u8; 16 << 20];
    let mut out = vec![0u8; 1 << 20];
    let mut o = OutBuffer::around(&mut out[..]);
    let mut i = InBuffer::around(&data);
    while i.pos() < data.len() {
        enc.run(&mut i, &mut o).unwrap();
    }
    while enc.flush(&mut o).unwrap() > 0 {}
    let n = o.pos();
    assert!(n < 1024, "{n} bytes");
    out.truncate(n);
    out
}

#[test]
fn decoder_memory_is_bounded_and_compressed_streams_beyond_it_get_503() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path(), "decoder_memory = \"20MiB\"");
    let prefix = zstd_big_window_prefix();
    let addr = metrics_addr(&server);
    let hits = "loghamster_server_limit_hits_total{limit=\"decoder_memory\"}";
    let memory = "loghamster_server_decoder_memory_bytes";
    let mut held = Vec::new();
    let mut refused = None;
    for i in 0..6 {
        let (mut raw, reply) = stream(&server, &format!("big:/w{i}"), "compression:zstd", b"");
        assert!(reply.starts_with("200 "), "{reply:?}");
        raw.send(&prefix);
        // Either the decoder took its window, or it was refused.
        let mut refused_now = false;
        wait_for("the decoder to take its window or be refused", || {
            let b = scrape(addr);
            refused_now = value(&b, hits).unwrap_or(0.0) >= 1.0;
            refused_now || value(&b, memory).unwrap_or(0.0) > ((i + 1) * (8 << 20)) as f64
        });
        if refused_now {
            refused = Some((i, raw.line()));
            break;
        }
        held.push(raw);
    }
    let (at, line) = refused.expect("some stream is refused");
    assert_eq!(at, 2, "two 8 MiB windows fit in 20 MiB, the third does not");
    assert_eq!(line, "503 Decoder memory exhausted\n");
    let body = scrape(metrics_addr(&server));
    let used = value(&body, "loghamster_server_decoder_memory_bytes").unwrap();
    assert!(used <= (20 << 20) as f64, "decoders hold {used} bytes");
    server.proc.wait_log("would pass decoder_memory");
    legitimate_stream_is_acknowledged(&server, "g1");
    // A legitimate compressed stream (loghamsterc's 128 KiB window) fits.
    let mut enc = loghamster::codec::Encoder::new(loghamster::codec::Codec::Zstd, None).unwrap();
    let mut wire = Vec::new();
    enc.compress(b"small window\n", &mut wire).unwrap();
    let (mut ok, reply) = stream(
        &server,
        "good:/z.log",
        "id:z offset:0 ack:1 compression:zstd",
        b"",
    );
    assert!(reply.starts_with("200 "), "{reply:?}");
    ok.send(&wire);
    assert_eq!(ok.line(), "ACK 13\n");
}

/// A TCP connection to `to` from the local address `from` (another
/// loopback address stands for another host).
fn connect_from(from: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns, with
    // sockaddr_in values that live across each call; the descriptor is
    // handed to TcpStream (which closes it) only once it is connected.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let src = sockaddr(from, 0);
        let dst = sockaddr(*to.ip(), to.port());
        let bound = libc::bind(fd, (&raw const src).cast(), len);
        let connected = bound == 0 && libc::connect(fd, (&raw const dst).cast(), len) == 0;
        if !connected {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            panic!("connect from {from} to {to}: {e}");
        }
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    }
}

/// Reads one line from a raw socket (byte by byte: no buffering ahead).
fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap_or(0) == 1 {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

#[test]
fn connections_are_limited_per_address_and_in_total_and_refused_politely() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(
        tmp.path(),
        "max_connections = 12\nmax_connections_per_address = 5",
    );
    let other = std::net::Ipv4Addr::new(127, 0, 0, 2);
    // One host takes its five, the sixth is refused before the greeting.
    let mut hostile: Vec<TcpStream> = (0..5).map(|_| connect_from(other, server.addr)).collect();
    for s in &mut hostile {
        assert!(read_line(s).starts_with("### Welcome"));
    }
    for _ in 0..3 {
        let mut extra = connect_from(other, server.addr);
        assert_eq!(
            read_line(&mut extra),
            "503 Too many connections from your address\n"
        );
        assert_eq!(read_line(&mut extra), "", "then closed");
    }
    let per = "loghamster_server_limit_hits_total{limit=\"connections_per_address\"}";
    wait_metric(&server, per, 3.0);
    // Logged once for the address, not once per refusal.
    server.proc.wait_log("(max_connections_per_address)");
    assert_eq!(
        server
            .proc
            .log()
            .matches("(max_connections_per_address)")
            .count(),
        1
    );
    // Another host still gets in.
    legitimate_stream_is_acknowledged(&server, "g1");
    // Fill the rest from more addresses; the total holds.
    let open = |n: f64| {
        wait_for(&format!("{n} connections open"), || {
            value(
                &scrape(metrics_addr(&server)),
                "loghamster_server_connections_open",
            ) == Some(n)
        })
    };
    open(5.0);
    for (i, n) in [(3, 5), (4, 2)] {
        let ip = std::net::Ipv4Addr::new(127, 0, 0, i);
        for _ in 0..n {
            let mut s = connect_from(ip, server.addr);
            assert!(read_line(&mut s).starts_with("### Welcome"));
            hostile.push(s);
        }
    }
    let mut over = connect_from(std::net::Ipv4Addr::new(127, 0, 0, 9), server.addr);
    assert_eq!(read_line(&mut over), "503 Too many connections\n");
    wait_metric(
        &server,
        "loghamster_server_limit_hits_total{limit=\"connections\"}",
        1.0,
    );
    open(12.0);
    // Slots come back as connections close.
    hostile.truncate(5);
    open(5.0);
    legitimate_stream_is_acknowledged(&server, "g2");
}

#[test]
fn an_idle_stream_is_asked_to_finish_and_a_silent_raw_one_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path(), "idle_timeout = \"200ms\"");
    let (mut raw, reply) = stream(&server, "idle:/x", "", b"one line\n");
    assert!(reply.starts_with("200 "), "{reply:?}");
    assert_eq!(raw.line(), "421 Idle timeout\n");
    assert!(raw.closed());
    let (mut acked, reply) = stream(&server, "idle:/y", "id:y offset:0 ack:1", b"line\n");
    assert!(reply.starts_with("200 "), "{reply:?}");
    assert_eq!(acked.line(), "ACK 5\n");
    assert_eq!(acked.line(), "421 Idle timeout\n");
    acked.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(acked.line(), "250 DONE 5\n");
    assert!(acked.closed());
    wait_metric(
        &server,
        "loghamster_server_limit_hits_total{limit=\"idle_timeout\"}",
        2.0,
    );
    wait_content(&tmp.path().join("out/idle/x"), "one line\n");
}

#[test]
fn a_client_whose_idle_stream_the_server_closed_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server(tmp.path(), "idle_timeout = \"200ms\"");
    let log = tmp.path().join("app.log");
    append_lines(&log, "a", 0, 500);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("a", 0, 500));
    let hits = "loghamster_server_limit_hits_total{limit=\"idle_timeout\"}";
    wait_metric(&server, hits, 1.0);
    append_lines(&log, "a", 500, 1000);
    wait_content(&dest, &expected("a", 0, 1000));
    wait_metric(&server, hits, 2.0);
    append_lines(&log, "a", 1000, 1500);
    wait_content(&dest, &expected("a", 0, 1500));
    assert!(client.stop().success());
    wait_content(&dest, &expected("a", 0, 1500));
}

/// loghamsterd started by `sh` under `ulimit -n fds`, from `dir/server.toml`
/// written like [`server`]'s; killed on drop.
struct Limited {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Limited {
    fn start(dir: &std::path::Path, fds: u32, extra: &str) -> Limited {
        Limited::launch(
            SERVER_BIN,
            dir,
            Some(fds),
            &format!("sync_interval = \"50ms\"\n{extra}"),
        )
    }

    /// `bin` from `dir/server.toml` (the default route into `dir/out`,
    /// metrics on an ephemeral port, then `extra`), under `ulimit -n fds`
    /// when given.
    fn launch(bin: &str, dir: &std::path::Path, fds: Option<u32>, extra: &str) -> Limited {
        use std::io::BufRead;
        let cfg = dir.join("server.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndirectory = \"{}\"\n{extra}\n[prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
            dir.join("out").display()
        );
        std::fs::write(&cfg, text).unwrap();
        let ulimit = fds.map_or(String::new(), |n| format!("ulimit -n {n} && "));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{ulimit}exec \"$0\" --config \"$1\""))
            .arg(bin)
            .arg(&cfg)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let after = |says: &str| -> SocketAddr {
            let mut found = None;
            wait_for(says, || {
                let l = log.lock().unwrap();
                found = l.find(says).map(|at| {
                    let rest = &l[at + says.len()..];
                    let end = rest.find(['/', ' ', '\n']).unwrap();
                    rest[..end].parse().unwrap()
                });
                found.is_some()
            });
            found.unwrap()
        };
        let addr = after("listening on ");
        let metrics = after("serving metrics on http://");
        Limited {
            child,
            log,
            addr,
            metrics,
        }
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- loghamsterd log ----\n{}", self.log.lock().unwrap());
        }
    }
}

#[test]
fn descriptors_are_reserved_so_a_flood_cannot_block_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Limited::start(tmp.path(), 128, "");
    assert!(
        server.log.lock().unwrap().contains("max_connections is 21"),
        "the limit follows the descriptors"
    );
    let mut good = Raw::connect(server.addr);
    good.greeting();
    good.send(b"INIT STREAM good:/ok.log id:g offset:0 ack:1\nfirst\n");
    assert!(good.line().starts_with("200 "));
    assert_eq!(good.line(), "ACK 6\n");
    // A flood from another host: each stream opens an output of its own.
    let other = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let mut flood = Vec::new();
    let mut refused = 0;
    for i in 0..60 {
        let mut s = connect_from(other, server.addr);
        let first = read_line(&mut s);
        if first.starts_with("503 ") {
            refused += 1;
            continue;
        }
        read_line(&mut s);
        write!(s, "INIT STREAM flood:/f{i} id:f{i} offset:0 ack:1\nx\n").unwrap();
        assert!(read_line(&mut s).starts_with("200 "), "stream {i}");
        flood.push(s);
    }
    assert_eq!((flood.len(), refused), (20, 40));
    // The checkpoint still commits: the first stream is acknowledged.
    good.send(b"second\n");
    assert_eq!(good.line(), "ACK 13\n");
    let body = scrape(server.metrics);
    assert_eq!(
        value(
            &body,
            "loghamster_server_limit_hits_total{limit=\"connections\"}"
        ),
        Some(40.0)
    );
    let log = server.log.lock().unwrap().clone();
    assert!(!log.contains("checkpoint failed"), "{log}");
    assert!(!log.contains("accept failed"), "{log}");
}

/// Opens `n` resumable streams with ids `{tag}{i}`, each one byte, in
/// batches of concurrent connections, and closes them.
fn many_stream_ids(server: &Server, tag: &str, n: usize) {
    for batch in (0..n).collect::<Vec<_>>().chunks(250) {
        let mut conns = Vec::new();
        for &i in batch {
            let mut raw = Raw::connect(server.addr);
            raw.greeting();
            raw.send(format!("INIT STREAM many:/ids id:{tag}{i} offset:0 ack:1\nx\n").as_bytes());
            conns.push(raw);
        }
        for raw in &mut conns {
            assert!(raw.line().starts_with("200 "));
            assert_eq!(raw.line(), "ACK 2\n");
        }
    }
}

#[test]
fn a_checkpoint_round_costs_what_changed_not_how_many_streams_are_known() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path(), "");
    many_stream_ids(&server, "id", 1000);
    wait_metric(&server, "loghamster_server_streams_known", 1000.0);
    // One legitimate delivery: the round that acknowledges it writes a
    // record of what changed, not the 1,000 streams.
    let (mut raw, reply) = stream(&server, "good:/ok.log", "id:g offset:0 ack:1", b"");
    assert!(reply.starts_with("200 "), "{reply:?}");
    raw.send(b"fine\n");
    assert_eq!(raw.line(), "ACK 5\n");
    let written = value(
        &scrape(metrics_addr(&server)),
        "loghamster_server_checkpoint_bytes",
    )
    .unwrap();
    assert!(
        written < 2048.0,
        "the round wrote {written} bytes for one stream's change"
    );
    let state = std::fs::metadata(tmp.path().join("out/.loghamsterd.state")).map_or(0, |m| m.len());
    eprintln!("with 1000 streams known: {written} bytes per round; snapshot {state} bytes");
}

#[test]
fn offsets_survive_a_restart_through_the_journal_and_idle_streams_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let mut first = server(tmp.path(), "");
    let (mut raw, reply) = stream(&first, "keep:/k", "id:k offset:0 ack:1", b"");
    assert!(reply.starts_with("200 "), "{reply:?}");
    for line in ["one\n", "two\n", "three\n"] {
        raw.send(line.as_bytes());
        raw.line();
    }
    drop(raw);
    assert!(first.proc.stop().success());
    // The journal, replayed over the snapshot, has the last offset.
    let second = server(tmp.path(), "stream_retention = \"1s\"");
    let (_raw, reply) = stream(&second, "keep:/k", "id:k offset:0 ack:1", b"");
    assert_eq!(reply, "200 OK Ready to accept data offset:14\n");
    drop(_raw);
    // Not connected for the retention: forgotten; the client's own offset
    // counts again.
    wait_metric(&second, "loghamster_server_streams_expired_total", 1.0);
    second.proc.wait_log("forgot 1 streams");
    let (_raw, reply) = stream(&second, "keep:/k", "id:k offset:9 ack:1", b"");
    assert_eq!(reply, "200 OK Ready to accept data offset:9\n");
}
