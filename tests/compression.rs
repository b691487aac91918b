//! Wire compression end to end: every codec delivers byte-identical
//! outputs, a reconnect in the middle of a compressed stream loses and
//! duplicates nothing, compressed files go verbatim, a server that refuses
//! a codec gets plain bytes after one log line, and a broken compressed
//! stream is closed without writing its undecoded tail.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;

/// Starts a client of the server on `port` with `dir/state`, `[server]`
/// lines `server_extra` (its compression) and `streams` (TOML).
fn client_of(dir: &Path, port: u16, server_extra: &str, streams: &str) -> Proc {
    let cfg = dir.join("client.toml");
    let body = format!(
        "state_file = \"{}\"\nhostname = \"h\"\n[server]\nhostname = \"127.0.0.1\"\nport = {port}\n{server_extra}\n{streams}",
        dir.join("state").display(),
    );
    std::fs::write(&cfg, body).unwrap();
    client(&["--config", cfg.to_str().unwrap()])
}

/// `[[stream]]` following `log`.
fn follow(log: &Path) -> String {
    format!("[[stream]]\npath = \"{}\"\n", log.display())
}

#[test]
fn every_codec_delivers_byte_identical_output() {
    for (codec, setting) in [
        ("gzip", "compression = \"gzip\"\ncompression_level = 1"),
        ("lz4", "compression = \"lz4\""),
        ("zstd", "compression = \"zstd\"\ncompression_level = 19"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let log = tmp.path().join("app.log");
        let server = Server::with_directory(&out);
        // Some before the client starts (a catch-up), some while it
        // follows (small flushed sends), and a last line without newline.
        append_lines(&log, codec, 0, 20_000);
        // (The unterminated last line goes out after partial_line_timeout.)
        let streams = format!(
            "[tuning]\npartial_line_timeout = \"50ms\"\n{}",
            follow(&log)
        );
        let mut c = client_of(tmp.path(), server.port(), setting, &streams);
        let shipped = routed(&out, "h", &log);
        wait_content(&shipped, &expected(codec, 0, 20_000));
        for i in 0..50 {
            append_lines(&log, codec, 20_000 + i * 10, 20_010 + i * 10);
        }
        let mut want = expected(codec, 0, 20_500);
        wait_content(&shipped, &want);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"no newline at the end")
            .unwrap();
        want.push_str("no newline at the end");
        wait_content(&shipped, &want);
        assert!(c.stop().success());
        assert!(
            server.proc.log().contains(&format!("(offset 0, {codec})")),
            "{codec}: the server did not decode a {codec} stream:\n{}",
            server.proc.log()
        );
    }
}

#[test]
fn cuts_in_the_middle_of_compressed_streams_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    let net = proxy::Proxy::start(server.addr);
    let zstd = "compression = \"zstd\"";
    let mut c = client_of(tmp.path(), net.addr().port(), zstd, &follow(&log));
    let total = 60_000;
    let mut written = 0;
    for round in 0..15 {
        let n = total / 15;
        append_lines(&log, "cut", written, written + n);
        written += n;
        // Cut while data flows, or crawl a few bytes at a time so a frame
        // is split across many reads, then cut.
        if round % 2 == 1 {
            net.set_slow(Some(1 + round * 37));
            std::thread::sleep(Duration::from_millis(80));
            net.set_slow(None);
        }
        std::thread::sleep(Duration::from_millis(30));
        net.cut();
    }
    wait_content(&routed(&out, "h", &log), &expected("cut", 0, total));
    assert!(c.stop().success());
    assert!(net.accepted() > 1, "the client reconnected after cuts");
}

#[test]
fn compressed_files_go_verbatim_and_others_compressed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let dir = tmp.path().join("backup");
    std::fs::create_dir(&dir).unwrap();
    // A rotated backup compressed by logrotate: its bytes are the data.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(expected("gz", 0, 5_000).as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(dir.join("app.log.2.gz"), &gz).unwrap();
    std::fs::write(dir.join("app.log.1"), expected("plain", 0, 5_000)).unwrap();
    let server = Server::with_directory(&out);
    let streams = format!(
        "[[stream]]\ndirectory = \"{}\"\nfilepattern = \"app.log.*\"\n",
        dir.display()
    );
    let mut c = client_of(
        tmp.path(),
        server.port(),
        "compression = \"zstd\"",
        &streams,
    );
    let gz_out = routed(&out, "h", &dir.join("app.log.2.gz"));
    wait_for("the .gz file", || {
        std::fs::read(&gz_out).ok().as_ref() == Some(&gz)
    });
    wait_content(
        &routed(&out, "h", &dir.join("app.log.1")),
        &expected("plain", 0, 5_000),
    );
    assert!(c.stop().success());
    let log = server.proc.log();
    let gz_line = log.lines().find(|l| l.contains("app.log.2.gz ->")).unwrap();
    assert!(gz_line.ends_with("(offset 0)"), "sent verbatim: {gz_line}");
    let plain_line = log.lines().find(|l| l.contains("app.log.1 ->")).unwrap();
    assert!(
        plain_line.ends_with("(offset 0, zstd)"),
        "compressed: {plain_line}"
    );
}

#[test]
fn a_server_that_refuses_the_codec_gets_plain_bytes_after_one_log_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "accept_compression = [\"gzip\"]\n");
    let logs: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("app{i}.log")))
        .collect();
    let mut streams = String::new();
    for (i, log) in logs.iter().enumerate() {
        append_lines(log, &format!("r{i}"), 0, 2_000);
        streams.push_str(&follow(log));
    }
    let mut c = client_of(
        tmp.path(),
        server.port(),
        "compression = \"zstd\"",
        &streams,
    );
    for (i, log) in logs.iter().enumerate() {
        wait_content(
            &routed(&out, "h", log),
            &expected(&format!("r{i}"), 0, 2_000),
        );
    }
    // More data later still flows (plain), with no further complaint.
    append_lines(&logs[0], "r0", 2_000, 3_000);
    wait_content(&routed(&out, "h", &logs[0]), &expected("r0", 0, 3_000));
    assert!(c.stop().success());
    let clog = c.log();
    let complaints = clog.matches("refused compression zstd").count();
    assert_eq!(complaints, 1, "one line for all streams:\n{clog}");
    assert!(
        clog.contains("415 Unsupported compression: zstd (this server accepts gzip)"),
        "{clog}"
    );
    // Each stream asked once at most: no hot loop.
    let refusals = server.proc.log().matches("Unsupported compression").count();
    assert!((1..=3).contains(&refusals), "{refusals} refusals");
}

/// A raw client: greeting, INIT with `meta`, then the server's answer.
fn raw_init(server: &Server, path: &str, meta: &str) -> (Raw, String) {
    let mut raw = Raw::connect(server.addr);
    raw.greeting();
    raw.send(format!("INIT STREAM raw:{path} ack:1 id:r1 offset:0 {meta}\n").as_bytes());
    let reply = raw.line();
    (raw, reply)
}

#[test]
fn hand_made_compressed_streams_from_standard_encoders_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let text = expected("std", 0, 3_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes()).unwrap();
    let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
    lz.write_all(text.as_bytes()).unwrap();
    let streams = [
        ("gzip", gz.finish().unwrap()),
        ("lz4", lz.finish().unwrap()),
        ("zstd", zstd::encode_all(text.as_bytes(), 5).unwrap()),
    ];
    for (codec, wire) in streams {
        let path = format!("/{codec}.log");
        let (mut raw, reply) = raw_init(&server, &path, &format!("compression:{codec}"));
        assert_eq!(
            reply,
            format!("200 OK Ready to accept data offset:0 compression:{codec}\n")
        );
        // Split across writes at odd places.
        for piece in wire.chunks(777) {
            raw.send(piece);
        }
        raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let mut last = String::new();
        while !last.starts_with("250 ") {
            last = raw.line();
        }
        assert_eq!(last, format!("250 DONE {}\n", text.len()), "{codec}");
        let shipped = out.join("raw").join(format!("{codec}.log"));
        assert_eq!(read(&shipped), text, "{codec}");
    }
}

#[test]
fn an_unknown_codec_is_refused_with_415() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::with_directory(&tmp.path().join("out"));
    let (mut raw, reply) = raw_init(&server, "/b.log", "compression:brotli");
    assert_eq!(
        reply,
        "415 Unsupported compression: brotli (this server accepts gzip, lz4, zstd)\n"
    );
    assert!(raw.closed());
}

#[test]
fn a_broken_or_cut_compressed_stream_keeps_only_what_decoded() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let text = "first line\nsecond line\nunfinished";
    let wire = zstd::encode_all(text.as_bytes(), 3).unwrap();

    // Cut: the client half-closes before the frame's end. What decoded
    // is written as for a plain stream (never more), and there is no
    // `250 DONE`: the stream did not end cleanly.
    let (mut raw, reply) = raw_init(&server, "/cut.log", "compression:zstd");
    assert!(reply.starts_with("200 "), "{reply}");
    raw.send(&wire[..wire.len() - 4]);
    raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut raw.sock, &mut rest).unwrap();
    assert!(!rest.contains("250"), "{rest:?}");
    server
        .proc
        .wait_log("ended in the middle of a frame; closing without 250 DONE");
    let cut = read(&out.join("raw").join("cut.log"));
    assert!(text.starts_with(&cut) && cut.len() < text.len(), "{cut:?}");

    // Garbage: closed, counted, nothing written.
    let (mut raw, reply) = raw_init(&server, "/bad.log", "compression:gzip");
    assert!(reply.starts_with("200 "), "{reply}");
    raw.send(b"this is not gzip\n");
    assert!(raw.closed());
    server.proc.wait_log("invalid gzip stream");
    assert_eq!(read(&out.join("raw").join("bad.log")), "");
}
