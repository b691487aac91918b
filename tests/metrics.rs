//! The client's `[prometheus]` endpoint end to end: the real binaries on
//! loopback, the endpoint on a port the client picks itself (`:0`, read
//! back from its log line, so no port can be taken in between), real
//! HTTP over `std::net::TcpStream`, and `promtool check metrics` on what
//! it serves.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;

use common::scrape::*;
use common::*;

/// A per-stream series name: `loghamster_client_NAME{stream="LABEL"}`.
fn series(name: &str, label: &str) -> String {
    format!("loghamster_client_{name}{{stream=\"{label}\"}}")
}

fn size(path: &Path) -> f64 {
    std::fs::metadata(path).expect("stat").len() as f64
}

/// Runs `promtool check metrics` on `body`: it must accept it without a
/// lint. Skips (saying so) only when promtool is not installed and CI's
/// `LOGHAMSTER_REQUIRE_PROMTOOL` is unset.
fn promtool_accepts(body: &str, test: &str) {
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("LOGHAMSTER_REQUIRE_PROMTOOL").is_none(),
                "promtool is required (LOGHAMSTER_REQUIRE_PROMTOOL) but not in PATH"
            );
            // Past the harness's output capture, so a plain `cargo test`
            // shows the skip.
            let msg = format!(
                "SKIPPED the promtool check of {test}: promtool not found in PATH \
                 (Debian: apt-get install -y prometheus)"
            );
            use std::os::fd::AsFd;
            match std::io::stderr().as_fd().try_clone_to_owned() {
                Ok(fd) => {
                    let _ = writeln!(std::fs::File::from(fd), "{msg}");
                }
                Err(_) => eprintln!("{msg}"),
            }
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(body.as_bytes()).expect("feed promtool");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool runs");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool rejected:\n{said}\n{body}");
    assert!(said.trim().is_empty(), "promtool lint:\n{said}\n{body}");
}

#[test]
fn client_metrics_match_what_was_shipped_across_a_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let server = Server::with_directory(&out);
    let log = dir.join("app.log");
    append_lines(&log, "m", 0, 50);
    let label = log.to_str().expect("utf-8 temp dir");
    let body = format!(
        "[prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n[[stream]]\npath = \"{label}\"\n"
    );
    let cfg = client_config(dir, &server, &body);
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let addr = metrics_addr(&client);

    let (head, body) = get(addr, "/health");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "ok\n");

    append_lines(&log, "m", 50, 200);
    let shipped = routed(&out, "h", &log);
    wait_content(&shipped, &expected("m", 0, 200));
    let rotated = dir.join("app.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    append_lines(&log, "m", 200, 300);
    wait_content(&shipped, &expected("m", 0, 300));

    let total = size(&rotated) + size(&log);
    let acked = series("acknowledged_bytes_total", label);
    let body = scrape_until(addr, "every byte acknowledged, the old file closed", |b| {
        value(b, &acked) == Some(total) && value(b, "loghamster_client_files_open") == Some(1.0)
    });
    for (name, want) in [
        ("read_bytes_total", total),
        ("sent_bytes_total", total),
        ("wire_bytes_total", total),
        ("behind_bytes", 0.0),
        ("rotations_total", 1.0),
        ("truncations_total", 0.0),
        ("reconnects_total", 0.0),
    ] {
        assert_eq!(
            value(&body, &series(name, label)),
            Some(want),
            "{name}\n{body}"
        );
    }
    assert_eq!(value(&body, "loghamster_client_files_watched"), Some(1.0));
    let age = value(&body, &series("last_ack_age_seconds", label)).expect("ack age");
    assert!((0.0..PATIENCE.as_secs_f64()).contains(&age), "{age}");
    assert_eq!(
        value(&body, "loghamster_client_rate_limit_delay_seconds_total"),
        Some(0.0)
    );
    // One series per configured stream, whatever files it read.
    let series_count = body
        .lines()
        .filter(|l| l.starts_with("loghamster_client_acknowledged_bytes_total{"))
        .count();
    assert_eq!(series_count, 1, "{body}");
    promtool_accepts(
        &body,
        "client_metrics_match_what_was_shipped_across_a_rotation",
    );

    assert!(client.stop().success());
}

/// A stream that sends line after line keeps a few wake-ups in the
/// client's timer queue, however many sends it makes. (Each send used to
/// leave an entry behind for its idle close, 5 minutes away: at 1,000
/// busy files some 37,000 a second, so millions within the 5 minutes.)
#[test]
fn the_loop_timers_stay_few_however_many_sends_a_stream_makes() {
    const SENDS: usize = 200;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let server = Server::with_directory(&out);
    let log = dir.join("app.log");
    append_lines(&log, "t", 0, 1);
    let label = log.to_str().expect("utf-8 temp dir");
    let body = format!(
        "[prometheus]\nlisten = \"127.0.0.1:0\"\n[[stream]]\npath = \"{label}\"\n\
         [tuning]\nlinger = \"1ms\"\n"
    );
    let cfg = client_config(dir, &server, &body);
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let addr = metrics_addr(&client);
    let shipped = routed(&out, "h", &log);
    // One line at a time, each arrived before the next: a send each.
    for i in 1..=SENDS {
        append_lines(&log, "t", i, i + 1);
        wait_content(&shipped, &expected("t", 0, i + 1));
    }
    let acked = series("acknowledged_bytes_total", label);
    let body = scrape_until(addr, "every byte acknowledged", |b| {
        value(b, &acked) == Some(size(&log))
    });
    let timers = value(&body, "loghamster_client_loop_timers").expect("the gauge");
    assert!(
        (1.0..=16.0).contains(&timers),
        "{timers} wake-ups pending after {SENDS} sends\n{body}"
    );
    promtool_accepts(
        &body,
        "the_loop_timers_stay_few_however_many_sends_a_stream_makes",
    );
    assert!(client.stop().success(), "{}", client.log());
}

#[test]
fn a_glob_stream_is_one_series_whatever_files_match() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let server = Server::with_directory(&out);
    let logs = dir.join("logs");
    std::fs::create_dir(&logs).unwrap();
    let (a, b) = (logs.join("a.log"), logs.join("b.log"));
    append_lines(&a, "a", 0, 40);
    let pattern = format!("{}/*.log", logs.to_str().expect("utf-8 temp dir"));
    let body =
        format!("[prometheus]\nlisten = \"127.0.0.1:0\"\n[[stream]]\npath = \"{pattern}\"\n");
    let cfg = client_config(dir, &server, &body);
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let addr = metrics_addr(&client);

    append_lines(&b, "b", 0, 60);
    append_lines(&a, "a", 40, 80);
    wait_content(&routed(&out, "h", &a), &expected("a", 0, 80));
    wait_content(&routed(&out, "h", &b), &expected("b", 0, 60));

    let total = size(&a) + size(&b);
    let acked = series("acknowledged_bytes_total", &pattern);
    let body = scrape_until(addr, "both files acknowledged", |body| {
        value(body, &acked) == Some(total)
    });
    assert_eq!(
        value(&body, &series("sent_bytes_total", &pattern)),
        Some(total)
    );
    assert_eq!(value(&body, &series("behind_bytes", &pattern)), Some(0.0));
    assert_eq!(value(&body, "loghamster_client_files_watched"), Some(2.0));
    assert_eq!(value(&body, "loghamster_client_files_open"), Some(2.0));
    assert!(!body.contains("a.log\""), "a file became a label:\n{body}");
    promtool_accepts(&body, "a_glob_stream_is_one_series_whatever_files_match");

    assert!(client.stop().success());
}

#[test]
fn a_server_restart_counts_as_a_reconnect() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let mut server = Server::with_directory(&out);
    let listen = server.addr.to_string();
    let log = dir.join("app.log");
    let label = log.to_str().expect("utf-8 temp dir");
    let body = format!("[prometheus]\nlisten = \"127.0.0.1:0\"\n[[stream]]\npath = \"{label}\"\n");
    let cfg = client_config(dir, &server, &body);
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let addr = metrics_addr(&client);
    append_lines(&log, "r", 0, 100);
    let shipped = routed(&out, "h", &log);
    wait_content(&shipped, &expected("r", 0, 100));

    server.proc.kill9();
    let _server = Server::start(&["--listen", &listen, "--directory", out.to_str().unwrap()]);
    append_lines(&log, "r", 100, 200);
    wait_content(&shipped, &expected("r", 0, 200));

    let reconnects = series("reconnects_total", label);
    let behind = series("behind_bytes", label);
    let body = scrape_until(addr, "a reconnect, nothing behind", |b| {
        value(b, &reconnects).is_some_and(|n| n >= 1.0) && value(b, &behind) == Some(0.0)
    });
    // A server killed before it committed may take bytes again: at least
    // the file, never less.
    let total = size(&log);
    for name in [
        "read_bytes_total",
        "sent_bytes_total",
        "acknowledged_bytes_total",
    ] {
        let got = value(&body, &series(name, label)).expect(name);
        assert!(got >= total, "{name} {got} < {total}\n{body}");
    }
    assert!(client.stop().success());
}

#[test]
fn a_taken_metrics_port_stops_the_client_naming_the_address() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = tmp.path().join("client.toml");
    let text = format!(
        "state_file = \"{}\"\n[server]\nhostname = \"127.0.0.1\"\n\
         [prometheus]\nlisten = \"{addr}\"\n[[stream]]\npath = \"{}\"\n",
        tmp.path().join("state").display(),
        tmp.path().join("app.log").display()
    );
    std::fs::write(&cfg, text).unwrap();
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let status = client.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", client.log());
    let want = format!("loghamsterc: cannot listen for metrics on {addr}: ");
    assert!(client.log().contains(&want), "{}", client.log());
}

#[test]
fn server_metrics_count_connections_and_received_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let server = server_with(dir, &out, "[prometheus]\nlisten = \"127.0.0.1:0\"\n");
    let addr = metrics_addr(&server.proc);
    let (head, body) = get(addr, "/health");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "ok\n");
    // A client that sends garbage for INIT is counted by reason.
    let mut raw = Raw::connect(server.addr);
    raw.greeting();
    raw.send(b"HELLO there\n");
    assert!(raw.line().starts_with("400"), "a bad INIT gets 400");
    drop(raw);
    let log = dir.join("app.log");
    append_lines(&log, "s", 0, 500);
    // Compressed, so the bytes pass through user space and lines count
    // (a spliced stream's lines are not scanned).
    let mut client = client(&[
        "--server",
        &server.addr.to_string(),
        "--state-file",
        dir.join("state").to_str().unwrap(),
        "--hostname",
        "h",
        "--compression",
        "lz4",
        log.to_str().unwrap(),
    ]);
    wait_content(&routed(&out, "h", &log), &expected("s", 0, 500));
    let total = size(&log);
    let received = "loghamster_server_received_bytes_total{output=\"(default)\"}";
    let lines = "loghamster_server_received_lines_total{output=\"(default)\"}";
    let decoded = "loghamster_server_decompressed_bytes_total{codec=\"lz4\"}";
    let wire = "loghamster_server_compressed_received_bytes_total{codec=\"lz4\"}";
    // The client multiplexes (the default): its connection and the file's
    // channel on it are two connections open, three accepted with the
    // garbage one.
    let body = scrape_until(addr, "every byte counted, synced and acknowledged", |b| {
        value(b, received) == Some(total)
            && value(b, "loghamster_server_connections_open") == Some(2.0)
            && value(b, "loghamster_server_fsync_duration_seconds_count").is_some_and(|n| n >= 1.0)
            && value(b, "loghamster_server_unacknowledged_bytes") == Some(0.0)
    });
    assert_eq!(value(&body, lines), Some(500.0));
    assert_eq!(value(&body, decoded), Some(total));
    assert!(
        value(&body, wire).is_some_and(|w| w > 0.0 && w < total),
        "{body}"
    );
    assert_eq!(
        value(&body, "loghamster_server_connections_accepted_total"),
        Some(3.0)
    );
    assert_eq!(
        value(
            &body,
            "loghamster_server_handshake_errors_total{reason=\"malformed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&body, "loghamster_server_connections_open"),
        Some(2.0)
    );
    assert_eq!(value(&body, "loghamster_server_streams_active"), Some(1.0));
    promtool_accepts(&body, "server_metrics_count_connections_and_received_bytes");
    assert!(client.stop().success());
    scrape_until(addr, "the connection closed", |b| {
        value(b, "loghamster_server_connections_open") == Some(0.0)
            && value(b, "loghamster_server_streams_active") == Some(0.0)
    });
}

#[test]
fn command_line_daemons_serve_metrics_with_metrics_listen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--directory",
        out.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let server_metrics = metrics_addr(&server.proc);
    let log = dir.join("app.log");
    append_lines(&log, "z", 0, 2_000);
    let mut client = client(&[
        "--server",
        &server.addr.to_string(),
        "--state-file",
        dir.join("state").to_str().unwrap(),
        "--hostname",
        "h",
        "--compression",
        "zstd",
        "--metrics-listen",
        "127.0.0.1:0",
        log.to_str().unwrap(),
    ]);
    let client_metrics = metrics_addr(&client);
    wait_content(&routed(&out, "h", &log), &expected("z", 0, 2_000));
    let total = size(&log);
    let label = log.to_str().unwrap();
    let body = scrape_until(client_metrics, "every byte acknowledged", |b| {
        value(b, &series("acknowledged_bytes_total", label)) == Some(total)
    });
    let wire = value(&body, &series("wire_bytes_total", label)).expect("wire bytes");
    assert!(
        wire > 0.0 && wire < total / 2.0,
        "zstd on the wire: {wire} of {total}"
    );
    let decoded = "loghamster_server_decompressed_bytes_total{codec=\"zstd\"}";
    scrape_until(server_metrics, "the server decoded every byte", |b| {
        value(b, decoded) == Some(total)
    });
    assert!(client.stop().success());
    // A bad address is one clear error, before anything starts.
    let bad = std::process::Command::new(CLIENT_BIN)
        .args([
            "--server",
            "127.0.0.1:1",
            "--metrics-listen",
            "nowhere",
            "/x",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(said.contains("--metrics-listen \"nowhere\""), "{said}");
}

/// A followed file whose name holds a control character would be refused
/// by the server in every INIT (`400 ... control character in path`):
/// the client refuses it itself, once (one WARN with the name escaped,
/// `loghamster_client_refused_files_total`), never connects for it and
/// keeps shipping the other files.
#[test]
fn a_file_name_with_a_control_character_is_refused_once_without_connecting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let server = Server::with_directory(&out);
    let bad = dir.join("evil\u{1b}name.log");
    append_lines(&bad, "b", 0, 3);
    let good = dir.join("good.log");
    append_lines(&good, "g", 0, 3);
    let (b, g) = (bad.to_str().unwrap(), good.to_str().unwrap());
    let body = format!(
        "[prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n[[stream]]\npath = \"{}\"\n[[stream]]\npath = \"{g}\"\n",
        b.replace('\u{1b}', "\\u001b")
    );
    let cfg = client_config(dir, &server, &body);
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let addr = metrics_addr(&client);
    let said = format!(
        "{}: not shipped: the file name holds a control character",
        b.replace('\u{1b}', "\\u{1b}")
    );
    client.wait_log(&said);
    scrape_until(addr, "the refusal counted", |body| {
        value(body, "loghamster_client_refused_files_total") == Some(1.0)
    });
    wait_content(&routed(&out, "h", &good), &expected("g", 0, 3));
    // Its file grows, and the other one too: still not a connection for it.
    append_lines(&bad, "b", 3, 6);
    append_lines(&good, "g", 3, 6);
    wait_content(&routed(&out, "h", &good), &expected("g", 0, 6));
    assert!(client.stop().success(), "SIGTERM is obeyed");
    let log = client.log();
    assert_eq!(log.matches(&said).count(), 1, "{log}");
    assert!(!log.contains("400"), "never asked the server: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "the name is escaped in the log: {log}"
    );
}
