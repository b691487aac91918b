//! The server's zero-copy path (socket → pipe → output with `splice(2)`)
//! for a stream alone on its output: it is taken, and it keeps every
//! guarantee of the line-aligned path. Offsets, `ACK`, `250 DONE`, the
//! handover to line-aligned writes when a second stream joins the output
//! while bytes flow, a kill -9 of the server, a full disk and SIGHUP are
//! checked byte for byte. The server runs with `--debug`, whose
//! `zero-copy on` / `zero-copy off` lines say which path a stream took.

mod common;

use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;

/// Clients here stream on connections of their own: these tests are about
/// the server's zero-copy path for a plain connection, which a multiplexed
/// client (the default) takes only for a file 1 MiB or more behind
/// (`tests/mux.rs`), a matter of timing for a live stream.
const PLAIN: &[&str] = &["--no-multiplex"];

/// loghamsterd with `--debug` writing `dir/<host>/<path>`.
fn debug_server(dir: &Path) -> Server {
    server_at("127.0.0.1:0", dir)
}

fn server_at(listen: &str, dir: &Path) -> Server {
    Server::start(&[
        "--listen",
        listen,
        "--directory",
        dir.to_str().unwrap(),
        "--debug",
    ])
}

/// loghamsterd with `--debug`, metrics on an ephemeral port, and one
/// output `[output.s]` at `path`, which every stream with `svc:s` shares.
fn shared_output_server(dir: &Path, path: &Path) -> Server {
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndebug = true\nstate_file = \"{}\"\n\
             [prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
             [output.s]\npath = \"{}\"\n",
            dir.join("server.state").display(),
            path.display()
        ),
    )
    .unwrap();
    Server::start(&["--config", cfg.to_str().unwrap()])
}

/// Appends lines `0..total` of `tag` in batches of 100, as a busy
/// application would, in a thread.
fn writer(path: &Path, tag: &'static str, total: usize) -> JoinHandle<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut i = 0;
        while i < total {
            let n = 100.min(total - i);
            append_lines(&path, tag, i, i + n);
            i += n;
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// Like [`writer`] from line `from`, but goes on past line `min` until
/// `stop` is set; returns the number past the last line it wrote.
fn writer_until(
    path: &Path,
    tag: &'static str,
    from: usize,
    min: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<usize> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut i = from;
        while i < min || !stop.load(Ordering::SeqCst) {
            append_lines(&path, tag, i, i + 100);
            i += 100;
            std::thread::sleep(Duration::from_millis(1));
        }
        i
    })
}

/// The numbers right before `what` in the lines of `log` that have it.
fn numbers_before(log: &str, what: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let (head, _) = l.split_once(what)?;
            head.rsplit([' ', '(']).next()?.parse().ok()
        })
        .collect()
}

/// The byte counts of the server's `... bytes by splice)` lines.
fn spliced_counts(log: &str) -> Vec<u64> {
    numbers_before(log, " bytes by splice)")
}

/// Connects, reads the greeting and sends `init` (with whatever follows
/// it in the same write); returns the connection and the `200` line.
fn raw_stream(server: &Server, init: &[u8]) -> (Raw, String) {
    let mut c = Raw::connect(server.addr);
    c.greeting();
    c.send(init);
    let reply = c.line();
    assert!(reply.starts_with("200 "), "{reply:?}");
    (c, reply)
}

#[test]
fn a_lone_stream_is_spliced_and_arrives_byte_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    append_lines(&log, "solo", 0, 60_000);
    let server = debug_server(&out);
    let mut client = client_for_with(&server, &tmp.path().join("state"), "h", &[&log], PLAIN);
    let dest = routed(&out, "h", &log);
    server.proc.wait_log("zero-copy on");
    append_lines(&log, "solo", 60_000, 80_000);
    wait_content(&dest, &expected("solo", 0, 80_000));
    assert!(client.stop().success(), "{}", client.log());
    // The clean stop ends the stream with 250 DONE; the server logs how
    // many of its bytes went through splice.
    server.proc.wait_log("bytes by splice)");
    let spliced: u64 = spliced_counts(&server.proc.log()).iter().sum();
    let total = expected("solo", 0, 80_000).len() as u64;
    assert!(
        spliced > total / 2,
        "only {spliced} of {total} bytes were spliced:\n{}",
        server.proc.log()
    );
}

#[test]
fn bytes_sent_with_init_go_first_and_ack_and_done_count_spliced_bytes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = debug_server(&out);
    let dest = out.join("h/var/log/x.log");
    // The first bytes arrive in the same segment as INIT: user space.
    let (mut c, reply) = raw_stream(
        &server,
        b"INIT STREAM h:/var/log/x.log id:x offset:0 ack:1\nfirst\nsec",
    );
    assert_eq!(reply, "200 OK Ready to accept data offset:0\n");
    wait_content(&dest, "first\nsec");
    // The rest is spliced, the unterminated tail at once (single writer).
    c.send(b"ond\nthird\nfour");
    wait_content(&dest, "first\nsecond\nthird\nfour");
    server.proc.wait_log("zero-copy on");
    c.sock.shutdown(Shutdown::Write).unwrap();
    let mut lines = Vec::new();
    loop {
        let l = c.line();
        let done = l.starts_with("250 ");
        lines.push(l);
        if done {
            break;
        }
    }
    assert_eq!(lines.last().unwrap(), "250 DONE 23\n", "{lines:?}");
    for l in &lines[..lines.len() - 1] {
        let n: u64 = l.trim().strip_prefix("ACK ").unwrap().parse().unwrap();
        assert!(n <= 23, "{l:?}");
    }
    assert_eq!(read(&dest), "first\nsecond\nthird\nfour");
    // Resuming after DONE: the server holds the exact offset.
    let (_c, reply) = raw_stream(
        &server,
        b"INIT STREAM h:/var/log/x.log id:x offset:0 ack:1\n",
    );
    assert_eq!(reply, "200 OK Ready to accept data offset:23\n");
}

#[test]
fn a_second_stream_joining_mid_flow_takes_over_line_aligned_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared.log");
    let server = shared_output_server(tmp.path(), &shared);
    let addr = server.addr.to_string();
    let (a, b) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    // A starts with a backlog, so that its catch-up comes in bulk: the
    // server copies small sends and splices only what a turn finds beyond
    // its first 64 KiB. A then writes on until the server has handed its
    // output over: the handover happens while A's bytes flow.
    const BACKLOG: usize = 20_000;
    append_lines(&a, "A", 0, BACKLOG);
    let mut ca = client_with_svc_with(&addr, "s", "ha", &a, PLAIN);
    let stop = Arc::new(AtomicBool::new(false));
    let wa = writer_until(&a, "A", BACKLOG, BACKLOG + 10_000, stop.clone());
    server.proc.wait_log("ha:/");
    server.proc.wait_log("zero-copy on");
    // B joins only once A has spliced: an event, not a guess at timing.
    let spliced = "loghamster_server_spliced_bytes_total{output=\"s\"}";
    scrape::scrape_until(scrape::metrics_addr(&server.proc), "A to splice", |body| {
        scrape::value(body, spliced).is_some_and(|n| n > 0.0)
    });
    let total_b = 20_000;
    let wb = writer(&b, "B", total_b);
    let mut cb = client_with_svc_with(&addr, "s", "hb", &b, PLAIN);
    server.proc.wait_log("zero-copy off (output shared");
    stop.store(true, Ordering::SeqCst);
    let total_a = wa.join().unwrap();
    wb.join().unwrap();
    let before_handover = numbers_before(&server.proc.log(), " bytes spliced so far");
    assert!(
        before_handover.iter().any(|&n| n > 0),
        "A spliced before the handover: {before_handover:?}"
    );
    let (want_a, want_b) = (expected("A", 0, total_a), expected("B", 0, total_b));
    wait_for("every line of both streams", || {
        read(&shared).len() >= want_a.len() + want_b.len()
    });
    let got = read(&shared);
    assert_eq!(got.len(), want_a.len() + want_b.len(), "no byte twice");
    let (mut got_a, mut got_b) = (String::new(), String::new());
    for l in got.split_inclusive('\n') {
        match l.as_bytes()[0] {
            b'A' => got_a.push_str(l),
            b'B' => got_b.push_str(l),
            _ => panic!("interleaved line: {l:?}"),
        }
    }
    assert!(
        got_a == want_a,
        "A: {}",
        describe_difference(&got_a, &want_a)
    );
    assert!(
        got_b == want_b,
        "B: {}",
        describe_difference(&got_b, &want_b)
    );
    assert!(ca.stop().success());
    assert!(cb.stop().success());
}

#[test]
fn a_spliced_open_line_is_handed_over_only_at_its_newline() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared.log");
    let server = shared_output_server(tmp.path(), &shared);
    let (mut a, _) = raw_stream(&server, b"INIT STREAM ha:/a svc:s id:a offset:0\n");
    a.send(b"A1\nA2 par"); // alone: spliced at once, A owns the open line
    wait_content(&shared, "A1\nA2 par");
    server.proc.wait_log("zero-copy on");
    let (mut b, _) = raw_stream(&server, b"INIT STREAM hb:/b svc:s id:b offset:0\n");
    b.send(b"B1\n");
    server
        .proc
        .wait_log("hb:/b waits for another stream's open line");
    assert_eq!(read(&shared), "A1\nA2 par", "B waits for A's newline");
    a.send(b"t\nA3\n");
    wait_content(&shared, "A1\nA2 part\nA3\nB1\n");
    server.proc.wait_log("zero-copy off (output shared");
    // B leaves; A, alone again, goes back to splicing, open tail included.
    let b_addr = b.sock.local_addr().unwrap();
    b.sock.shutdown(Shutdown::Both).unwrap();
    server.proc.wait_log(&format!("{b_addr}: closed"));
    a.send(b"A4\nA5");
    wait_content(&shared, "A1\nA2 part\nA3\nB1\nA4\nA5");
    assert_eq!(server.proc.log().matches("ha:/a zero-copy on").count(), 2);
}

#[test]
fn a_connection_splicing_at_full_speed_cannot_starve_another() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = debug_server(&out);
    let (hot, _) = raw_stream(&server, b"INIT STREAM h:/hot.log\n");
    server.proc.wait_log("h:/hot.log zero-copy on");
    // The hot stream's client writes as fast as loopback takes it (at most
    // 256 MiB), until the quiet stream's line has arrived.
    let stop = Arc::new(AtomicBool::new(false));
    let blaster = {
        let stop = stop.clone();
        let mut sock = hot.sock.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let chunk = "hot line of a busy stream\n".repeat(2500);
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) && sent < 256 << 20 {
                sock.write_all(chunk.as_bytes()).unwrap();
                sent += chunk.len();
            }
            sent
        })
    };
    wait_for("the hot stream to flow", || {
        std::fs::metadata(out.join("h/hot.log")).is_ok_and(|m| m.len() > 1 << 20)
    });
    let (mut quiet, _) = raw_stream(&server, b"INIT STREAM h:/quiet.log\n");
    quiet.send(b"still heard\n");
    wait_content(&out.join("h/quiet.log"), "still heard\n");
    stop.store(true, Ordering::SeqCst);
    let sent = blaster.join().unwrap();
    hot.sock.shutdown(Shutdown::Write).unwrap();
    wait_for("every hot byte", || {
        std::fs::metadata(out.join("h/hot.log")).is_ok_and(|m| m.len() == sent as u64)
    });
}

#[test]
fn server_killed_mid_splice_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let mut server = debug_server(&out);
    let listen = server.addr.to_string();
    let total = 60_000;
    let w = writer(&log, "k", total);
    let mut c = client_for_with(&server, &tmp.path().join("state"), "h", &[&log], PLAIN);
    for pause in [150, 60, 240, 110, 30] {
        // Killed while the stream is on the zero-copy path.
        server.proc.wait_log("zero-copy on");
        std::thread::sleep(Duration::from_millis(pause));
        server.proc.kill9();
        server = server_at(&listen, &out);
    }
    w.join().unwrap();
    wait_content(&routed(&out, "h", &log), &expected("k", 0, total));
    assert!(c.stop().success());
}

#[test]
fn sighup_while_splicing_moves_on_to_the_new_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = debug_server(&out);
    let dest = out.join("h/l.log");
    let (mut c, _) = raw_stream(&server, b"INIT STREAM h:/l.log id:l offset:0 ack:1\n");
    c.send(b"l1\nl2\nl3 half");
    wait_content(&dest, "l1\nl2\nl3 half");
    server.proc.wait_log("zero-copy on");
    let rotated = out.join("h/l.log.1");
    std::fs::rename(&dest, &rotated).unwrap();
    server.proc.signal("HUP");
    server.proc.wait_log("SIGHUP: reopened 1 outputs");
    c.send(b"\nl4\n");
    wait_content(&dest, "\nl4\n");
    assert_eq!(read(&rotated), "l1\nl2\nl3 half");
    c.sock.shutdown(Shutdown::Write).unwrap();
    loop {
        let l = c.line();
        if l.starts_with("250 ") {
            assert_eq!(l, "250 DONE 17\n");
            break;
        }
    }
}

/// A tmpfs mounted for the test's lifetime (needs root, as CI has).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| SmallDisk(at.to_path_buf()))
    }

    fn free(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_under_splice_holds_the_stream_and_everything_flows_when_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let Some(disk) = SmallDisk::mount(&out, "2m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the disk-full behaviour is not exercised");
        return;
    };
    let filler = out.join("filler");
    std::fs::write(&filler, vec![b'x'; (disk.free() - 300 * 1024) as usize]).unwrap();
    let log = tmp.path().join("app.log");
    let total = 12_000; // ~1 MiB: much more than fits
    append_lines(&log, "full", 0, total);
    let server = debug_server(&out);
    let mut c = client_for_with(&server, &tmp.path().join("state"), "h", &[&log], PLAIN);
    server.proc.wait_log("zero-copy on");
    server.proc.wait_log("holding the stream");
    let dest = routed(&out, "h", &log);
    let want = expected("full", 0, total);
    let landed = read(&dest);
    assert!(want.starts_with(&landed), "what landed is a prefix");
    assert!(landed.len() < want.len());
    std::fs::remove_file(&filler).unwrap();
    wait_content(&dest, &want);
    server.proc.wait_log("writable again");
    assert!(c.stop().success());
    drop(disk);
}
