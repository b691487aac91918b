//! `log_format = "json"` / `--log-format json`: both daemons write one
//! JSON object per line with `ts`, `level`, `daemon`, `msg` and the
//! event's fields; and the progress of `method = "send"` off a terminal.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Map, Value};

/// Every line of `log` as a JSON object with the four keys every line
/// has; panics naming the first line that is not.
fn json_lines(daemon: &str, log: &str) -> Vec<Map<String, Value>> {
    assert!(!log.is_empty(), "{daemon} logged nothing");
    log.lines()
        .enumerate()
        .map(|(n, line)| {
            let at = format!("{daemon} line {}: {line:?}", n + 1);
            let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) else {
                panic!("not a JSON object: {at}");
            };
            let ts = m["ts"].as_str().unwrap_or_default();
            assert!(is_rfc3339_utc_subsecond(ts), "ts: {at}");
            let level = m["level"].as_str().unwrap_or_default();
            assert!(
                ["DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
                "level: {at}"
            );
            assert_eq!(m["daemon"], daemon, "daemon: {at}");
            assert!(
                m["msg"].as_str().is_some_and(|s| !s.is_empty()),
                "msg: {at}"
            );
            m
        })
        .collect()
}

/// `2026-11-25T14:00:05.123Z`: RFC 3339, UTC, with a fraction of a second.
fn is_rfc3339_utc_subsecond(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() > 21
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..b.len() - 1)
        && b[b.len() - 1] == b'Z'
}

/// The one line whose `msg` contains `needle`.
fn find<'a>(lines: &'a [Map<String, Value>], needle: &str) -> &'a Map<String, Value> {
    lines
        .iter()
        .find(|m| m["msg"].as_str().is_some_and(|s| s.contains(needle)))
        .unwrap_or_else(|| panic!("no line with {needle:?} in {lines:#?}"))
}

/// The first line with these fields (whatever its message says).
fn with<'a>(lines: &'a [Map<String, Value>], fields: &[(&str, Value)]) -> &'a Map<String, Value> {
    lines
        .iter()
        .find(|m| fields.iter().all(|(k, v)| m.get(*k) == Some(v)))
        .unwrap_or_else(|| panic!("no line with {fields:?} in {lines:#?}"))
}

/// loghamsterd from `dir/server.toml` (`log_format = "json"`), its
/// address read from the `listen` field of its JSON `listening on` line.
fn json_server(dir: &Path, out: &Path) -> Server {
    let cfg = dir.join("server.toml");
    let text = format!(
        "log_format = \"json\"\ndebug = true\nlisten = \"127.0.0.1:0\"\ndirectory = \"{}\"\n",
        out.display()
    );
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = Command::new(SERVER_BIN);
    cmd.arg("--config").arg(&cfg);
    let proc = Proc::spawn("loghamsterd", cmd);
    proc.wait_log("listening on ");
    let lines = json_lines("loghamsterd", &proc.log());
    let addr = find(&lines, "listening on ")["listen"]
        .as_str()
        .expect("a listen field")
        .parse()
        .expect("an address");
    Server { proc, addr }
}

#[test]
fn both_daemons_log_one_json_object_per_line_with_their_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut server = json_server(tmp.path(), &out);
    // A file name with what JSON must escape: quotes and a backslash (no
    // braces: a name with `{` is a glob).
    let file = tmp.path().join("a \"quoted\" \\ file.log");
    append_lines(&file, "j", 0, 50);
    let addr = server.addr.to_string();
    let state = tmp.path().join("state");
    let mut c = client(&[
        "--log-format",
        "json",
        "--debug",
        "--server",
        &addr,
        "--state-file",
        state.to_str().unwrap(),
        "--hostname",
        "web1",
        file.to_str().unwrap(),
    ]);
    wait_content(&routed(&out, "web1", &file), &expected("j", 0, 50));
    // A peer's path with a quote, a backslash and a brace, sent by hand.
    let mut raw = Raw::connect(server.addr);
    raw.greeting();
    raw.send(b"INIT STREAM \"raw:/p\\\"}{ \\\\x\"\n");
    assert!(raw.line().starts_with("200 "));
    drop(raw);
    server.proc.wait_log("closed (");
    assert!(c.stop().success());
    assert!(server.proc.stop().success());

    let client_lines = json_lines("loghamsterc", &c.log());
    let path = Value::from(file.to_str().unwrap());
    // Opened at offset 0, and connected to the server from there.
    with(
        &client_lines,
        &[("path", path.clone()), ("offset", 0.into())],
    );
    with(
        &client_lines,
        &[("path", path.clone()), ("server", addr.as_str().into())],
    );
    let server_lines = json_lines("loghamsterd", &server.proc.log());
    let attached = with(&server_lines, &[("host", "web1".into()), ("path", path)]);
    assert_eq!(attached["offset"], 0);
    assert!(attached["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let output = routed(&out, "web1", &file);
    assert_eq!(attached["output"], output.to_str().unwrap());
    with(
        &server_lines,
        &[("host", "raw".into()), ("path", "/p\"}{ \\x".into())],
    );
}

#[test]
fn the_command_line_format_wins_over_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    let file = tmp.path().join("a.log");
    append_lines(&file, "t", 0, 3);
    let body = format!("[[stream]]\npath = \"{}\"\n", file.display());
    let cfg = client_config(tmp.path(), &server, &body);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("log_format = \"json\"\n{text}")).unwrap();
    let check = Command::new(CLIENT_BIN)
        .args(["--check-config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("logs: json"));
    let mut c = client(&["--config", cfg.to_str().unwrap(), "--log-format", "text"]);
    wait_content(&routed(&out, "h", &file), &expected("t", 0, 3));
    assert!(c.stop().success());
    let log = c.log();
    assert!(log.lines().all(|l| !l.starts_with('{')), "{log}");
    assert!(log.contains(" loghamsterc INFO "), "{log}");
}

#[test]
fn a_bad_log_format_is_a_usage_error_naming_the_value() {
    let tmp = tempfile::tempdir().unwrap();
    for bin in [CLIENT_BIN, SERVER_BIN] {
        let o = Command::new(bin)
            .args(["--log-format", "xml"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("xml") && err.contains("expected text or json"),
            "{err}"
        );
    }
    let cfg = tmp.path().join("server.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nlog_format = \"JSON\"\n").unwrap();
    let o = Command::new(SERVER_BIN)
        .args(["--check-config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(":2: `log_format` \"JSON\": expected \"text\" or \"json\""),
        "{err}"
    );
}

/// Off a terminal (stderr is a pipe here), each file `method = "send"`
/// sends gets an INFO line with bytes, rate and ETA every interval (10 s;
/// shortened through the test-only environment variable), and its start
/// is logged as a send, not as following.
#[test]
fn a_send_off_a_terminal_logs_its_progress_per_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    let dir = tmp.path().join("backfill");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("big.log");
    append_lines(&file, "p", 0, 12_000); // about 1 MiB
    let len = std::fs::metadata(&file).unwrap().len();
    // The rate limit keeps the file in flight for seconds, whatever the
    // machine's speed, so progress lines 100 ms apart must appear.
    let body = format!(
        "[[stream]]\ndirectory = \"{}\"\nmethod = \"send\"\nrate_limit = \"256KiB/s\"\nburst = \"64KiB\"\n",
        dir.display()
    );
    let cfg = client_config(tmp.path(), &server, &body);
    let mut cmd = Command::new(CLIENT_BIN);
    cmd.args(["--config", cfg.to_str().unwrap(), "--log-format", "json"])
        .env("LOGHAMSTER_TEST_PROGRESS_EVERY_MS", "100");
    let mut c = Proc::spawn("loghamsterc", cmd);
    assert!(c.wait_exit().success(), "{}", c.log());
    assert_eq!(
        std::fs::read(routed(&out, "h", &file)).unwrap(),
        std::fs::read(&file).unwrap()
    );
    let lines = json_lines("loghamsterc", &c.log());
    let path = file.to_str().unwrap();
    let start = find(&lines, "sending ");
    assert_eq!(start["msg"], format!("sending {path} whole ({len} bytes)"));
    assert_eq!(start["bytes"], len);
    assert!(!c.log().contains("following from offset"), "{}", c.log());
    let progress: Vec<_> = lines
        .iter()
        .filter(|m| {
            m["msg"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{path}: sent "))
        })
        .filter(|m| m.contains_key("rate"))
        .collect();
    assert!(!progress.is_empty(), "no progress line in {lines:#?}");
    for p in &progress {
        assert_eq!(p["level"], "INFO");
        assert_eq!(p["path"], path);
        assert_eq!(p["total"], len);
        let sent = p["sent"].as_u64().unwrap();
        assert!(sent <= len);
        let msg = p["msg"].as_str().unwrap();
        assert!(
            msg.contains(&format!("sent {sent} of {len} bytes (")),
            "{msg}"
        );
        assert!(msg.contains(" MiB/s, ETA "), "{msg}");
    }
}

/// On a terminal (`script` gives the client one), the status line of a
/// backfill never runs into a log line: each log line starts a line of
/// its own (after `\r` and erase-line when a status line was shown), and
/// the status line is gone when the client exits.
#[test]
fn a_send_on_a_terminal_clears_its_status_line_before_each_log_line() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("no `script` (util-linux) here; nothing to test");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    let dir = tmp.path().join("backfill");
    std::fs::create_dir(&dir).unwrap();
    for name in ["a.log", "b.log"] {
        append_lines(&dir.join(name), "q", 0, 6_000); // about 0.5 MiB each
    }
    // In flight for seconds: the status line (drawn every second) shows.
    let body = format!(
        "[[stream]]\ndirectory = \"{}\"\nmethod = \"send\"\nrate_limit = \"256KiB/s\"\nburst = \"64KiB\"\n",
        dir.display()
    );
    let cfg = client_config(tmp.path(), &server, &body);
    let run = format!("{CLIENT_BIN} --config {}", cfg.display());
    let o = Command::new("script")
        .args(["-qec", &run, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        screen.contains("\r\x1b[Ksent "),
        "no status line: {screen:?}"
    );
    assert!(screen.contains(" files confirmed), "), "{screen:?}");
    let mut logged = 0;
    for (at, _) in screen.match_indices(" loghamsterc INFO ") {
        logged += 1;
        let start = at - "2026-11-25T14:00:05.123Z".len();
        let before = &screen[..start];
        assert!(
            before.is_empty() || before.ends_with('\n') || before.ends_with("\r\x1b[K"),
            "a log line runs on from {:?}",
            &before[before.len().saturating_sub(80)..]
        );
    }
    assert!(logged >= 4, "{screen:?}");
    assert!(screen.ends_with("INFO stopped\r\n"), "{screen:?}");
}
