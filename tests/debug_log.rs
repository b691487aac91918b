//! `--debug` logging an operator can read: one timestamped line per event,
//! and no line per read, send or ACK while data flows steadily.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// Most lines one daemon may log during a steady phase in which nothing
/// but appends happens (room for a one-off event such as zero-copy being
/// switched on or found unsupported; far below one line per append).
const STEADY_SLACK: usize = 4;

/// Most lines one daemon may log for one rename rotation (today: 3 from
/// the client, 5 from the server).
const ROTATION_SLACK: usize = 10;

/// Checks that `log` (all of one daemon's stderr) is made of lines
/// `<RFC 3339 UTC timestamp with ms> <program> <LEVEL> <message>`.
fn assert_readable(program: &str, log: &str) {
    assert!(!log.is_empty(), "{program} logged nothing");
    for (n, line) in log.lines().enumerate() {
        let at = format!("{program} log line {}: {line:?}", n + 1);
        assert!(!line.trim().is_empty(), "empty line: {at}");
        assert!(!line.contains('\r'), "carriage return: {at}");
        let mut parts = line.splitn(4, ' ');
        let ts = parts.next().unwrap_or_default();
        assert!(is_rfc3339_utc_ms(ts), "no RFC 3339 UTC timestamp: {at}");
        assert_eq!(parts.next(), Some(program), "no program name: {at}");
        let level = parts.next().unwrap_or_default();
        assert!(
            ["DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "no level: {at}"
        );
        let msg = parts.next().unwrap_or_default();
        assert!(
            !msg.trim().is_empty() && msg == msg.trim_start(),
            "no message: {at}"
        );
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` with fields in range.
fn is_rfc3339_utc_ms(ts: &str) -> bool {
    let b = ts.as_bytes();
    if b.len() != 24 {
        return false;
    }
    let shape = b.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        10 => *c == b'T',
        13 | 16 => *c == b':',
        19 => *c == b'.',
        23 => *c == b'Z',
        _ => c.is_ascii_digit(),
    });
    let num = |r: std::ops::Range<usize>| ts[r].parse::<u32>().unwrap_or(u32::MAX);
    shape
        && num(0..4) >= 2000
        && (1..=12).contains(&num(5..7))
        && (1..=31).contains(&num(8..10))
        && num(11..13) < 24
        && num(14..16) < 60
        && num(17..19) < 61
}

fn line_count(p: &Proc) -> usize {
    p.log().lines().count()
}

fn debug_lines(p: &Proc) -> usize {
    p.log().lines().filter(|l| l.contains(" DEBUG ")).count()
}

/// Appends lines `from..to` to each file one at a time, a few ms apart,
/// so that (with `linger = "1ms"`) nearly every append is its own read and
/// send, and with `sync_interval = "20ms"` ACKs flow all along.
fn append_paced(files: &[&Path], from: usize, to: usize) {
    for i in from..to {
        for f in files {
            append_lines(f, tag(f), i, i + 1);
        }
        std::thread::sleep(Duration::from_millis(4));
    }
}

fn tag(f: &Path) -> &str {
    f.file_stem().unwrap().to_str().unwrap()
}

fn wait_delivered(out: &Path, files: &[&Path], to: usize) {
    for f in files {
        wait_content(&routed(out, "h", f), &expected(tag(f), 0, to));
    }
}

#[test]
fn debug_log_is_one_timestamped_line_per_event_and_quiet_at_steady_state() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let a = tmp.path().join("a.log");
    let b = tmp.path().join("b.log");
    let files = [a.as_path(), b.as_path()];
    let scfg = tmp.path().join("server.toml");
    std::fs::write(&scfg, "sync_interval = \"20ms\"\n").unwrap();
    let mut server = Server::start(&[
        "--config",
        scfg.to_str().unwrap(),
        "--debug",
        "--listen",
        "127.0.0.1:0",
        "--directory",
        out.to_str().unwrap(),
    ]);
    for f in files {
        append_lines(f, tag(f), 0, 10);
    }
    let ccfg = client_config(
        tmp.path(),
        &server,
        &format!(
            "[tuning]\nlinger = \"1ms\"\n[[stream]]\npath = \"{}\"\n[[stream]]\npath = \"{}\"\n",
            a.display(),
            b.display()
        ),
    );
    let mut client = client(&["--config", ccfg.to_str().unwrap(), "--debug"]);
    wait_delivered(&out, &files, 10);
    // Debug output is on in both daemons, and the start-up events are
    // logged, before the steady phases are counted.
    wait_for("the client to log both streams starting", || {
        client.log().matches("streaming from offset").count() == 2
    });
    wait_for("the server to log debug lines", || {
        debug_lines(&server.proc) > 0
    });

    // Two steady phases, the second with ten times the appends (and so
    // ten times the reads, sends and ACKs): neither may log more than a
    // handful of lines.
    let mut counts = Vec::new();
    let mut end = 10;
    for appends in [30, 300] {
        let before = (line_count(&client), line_count(&server.proc));
        append_paced(&files, end, end + appends);
        end += appends;
        wait_delivered(&out, &files, end);
        let after = (line_count(&client), line_count(&server.proc));
        counts.push((appends, after.0 - before.0, after.1 - before.1));
    }
    for &(appends, c, s) in &counts {
        assert!(
            c <= STEADY_SLACK && s <= STEADY_SLACK,
            "{appends} appends per file at steady state logged {c} client and {s} server lines \
             (at most {STEADY_SLACK} each); phases (appends, client, server): {counts:?}"
        );
    }

    // One rename rotation is one event: a few lines, not one per line sent.
    let before = (line_count(&client), line_count(&server.proc));
    let mut old = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
    std::fs::rename(&a, tmp.path().join("a.log.1")).unwrap();
    use std::io::Write;
    let tail: String = (end..end + 20).map(|i| line("a", i)).collect();
    old.write_all(tail.as_bytes()).unwrap();
    drop(old);
    append_lines(&a, "new", 0, 20);
    let mut want = expected("a", 0, end + 20);
    want.push_str(&expected("new", 0, 20));
    wait_content(&routed(&out, "h", &a), &want);
    client.wait_log("switching to the new file");
    let (c, s) = (
        line_count(&client) - before.0,
        line_count(&server.proc) - before.1,
    );
    assert!(
        c <= ROTATION_SLACK && s <= ROTATION_SLACK,
        "one rotation logged {c} client and {s} server lines (at most {ROTATION_SLACK} each)"
    );

    assert!(client.stop().success());
    assert!(server.proc.stop().success());
    // Complete logs (both exited): every line, start to stop, is readable.
    let (clog, slog) = (client.log(), server.proc.log());
    assert_readable("loghamsterc", &clog);
    assert_readable("loghamsterd", &slog);
    assert!(
        clog.contains(" DEBUG "),
        "client logged no debug line:\n{clog}"
    );
    assert!(
        slog.contains(" DEBUG "),
        "server logged no debug line:\n{slog}"
    );
}

#[test]
fn a_server_outage_is_one_warning_not_one_per_file_and_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let files: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("f{i}.log")))
        .collect();
    let refs: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    for f in &refs {
        append_lines(f, tag(f), 0, 20);
    }
    // A port nobody listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let streams = stream_tables(&refs);
    let cfg = tmp.path().join("client.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_file = \"{}\"\nhostname = \"h\"\n[server]\nhostname = \"127.0.0.1\"\nport = {port}\n\
             [tuning]\nreconnect_min = \"20ms\"\nreconnect_max = \"50ms\"\n{streams}",
            tmp.path().join("state").display()
        ),
    )
    .unwrap();
    let mut c = client(&["--config", cfg.to_str().unwrap(), "--debug"]);
    // Every file retries many times...
    wait_for("30 failed attempts", || {
        c.log().matches("Connection refused").count() >= 30
    });
    // ...and the outage is one warning for them all.
    let log = c.log();
    assert_eq!(log.matches(" WARN ").count(), 1, "{log}");
    assert!(log.contains("is unreachable"), "{log}");
    let server = Server::start(&[
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--directory",
        out.to_str().unwrap(),
    ]);
    wait_delivered(&out, &refs, 20);
    c.wait_log("is reachable again after");
    assert!(c.stop().success());
    let log = c.log();
    assert_eq!(log.matches("is reachable again").count(), 1, "{log}");
    assert_eq!(log.matches(" WARN ").count(), 1, "{log}");
    drop(server);
}
