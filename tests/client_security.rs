//! The client opens only what it means to, keeps its state honest, and
//! does not believe a server (or whoever took over a stream) about
//! offsets it never sent (issue 12, client side). Real binaries on
//! loopback in temp dirs; every wait is for a line, a file's content or a
//! process's exit, never a sleep.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;

/// Every file under `dir`, with its content.
fn tree(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(tree(&p));
        } else {
            out.push((p.clone(), String::from_utf8_lossy(&read_bytes(&p)).into()));
        }
    }
    out
}

fn read_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

/// Nothing under `out` holds `needle`.
fn assert_nowhere(out: &Path, needle: &str) {
    for (p, text) in tree(out) {
        assert!(!text.contains(needle), "{} holds {needle:?}", p.display());
    }
}

/// A followed directory (a `path` glob) with a legitimate file and a
/// symlink to a secret next to it, and a followed path that is a symlink.
struct Planted {
    _tmp: tempfile::TempDir,
    logs: PathBuf,
    out: PathBuf,
    server: Server,
    cfg_dir: PathBuf,
}

fn planted() -> Planted {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let logs = tmp.path().join("logs");
    let secret = tmp.path().join("shadow");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(&secret, "root:SECRET-HASH:19000::::::\n").unwrap();
    append_lines(&logs.join("a.log"), "a", 0, 5);
    let secret2 = tmp.path().join("gshadow");
    std::fs::write(&secret2, "root:SECRET-TWO::\n").unwrap();
    std::os::unix::fs::symlink(&secret2, logs.join("app.log")).unwrap();
    std::os::unix::fs::symlink(&secret, logs.join("single")).unwrap();
    let server = server_with(tmp.path(), &out, "");
    Planted {
        cfg_dir: tmp.path().to_path_buf(),
        _tmp: tmp,
        logs,
        out,
        server,
    }
}

impl Planted {
    fn client(&self, top: &str) -> Proc {
        let body = format!(
            "[[stream]]\npath = \"{0}/*.log\"\n[[stream]]\npath = \"{0}/single\"\n",
            self.logs.display()
        );
        let cfg = client_config(&self.cfg_dir, &self.server, &body);
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, format!("{top}{text}")).unwrap();
        client(&["--config", cfg.to_str().unwrap()])
    }
}

#[test]
fn a_symlink_to_a_secret_is_not_shipped_by_default() {
    let p = planted();
    let mut c = p.client("debug = true\n");
    let app = p.logs.join("app.log");
    let single = p.logs.join("single");
    c.wait_log(&format!("{}: not shipped: is a symlink", app.display()));
    c.wait_log(&format!("{}: not shipped: is a symlink", single.display()));
    let a = p.logs.join("a.log");
    wait_content(&routed(&p.out, "h", &a), &expected("a", 0, 5));
    // More lines through the legitimate file prove the client kept going
    // past every retry of the refused paths.
    append_lines(&a, "a", 5, 10);
    wait_content(&routed(&p.out, "h", &a), &expected("a", 0, 10));
    // A retry (every 5 s) found the same link again, quietly.
    c.wait_log(&format!("{}: still not shipped", single.display()));
    assert!(c.stop().success());
    assert_nowhere(&p.out, "SECRET");
    let log = c.log();
    for path in [&app, &single] {
        let said = format!("{}: not shipped", path.display());
        assert_eq!(log.matches(&said).count(), 1, "once per path:\n{log}");
    }
}

#[test]
fn a_symlink_is_shipped_with_follow_symlinks() {
    let p = planted();
    let mut c = p.client("follow_symlinks = true\n");
    let secret_line = "root:SECRET-HASH:19000::::::\n";
    wait_content(&routed(&p.out, "h", &p.logs.join("single")), secret_line);
    let app = routed(&p.out, "h", &p.logs.join("app.log"));
    wait_content(&app, "root:SECRET-TWO::\n");
    assert!(c.stop().success());
}

#[test]
fn a_fifo_at_a_followed_path_is_refused_once_and_stalls_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    let fifo = tmp.path().join("fifo.log");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let good = tmp.path().join("good.log");
    append_lines(&good, "g", 0, 3);
    let state = tmp.path().join("state");
    let files = [fifo.to_str().unwrap(), good.to_str().unwrap()];
    let addr = server.addr.to_string();
    let mut args = vec!["--server", &addr, "--hostname", "h", "--debug"];
    args.extend(["--state-file", state.to_str().unwrap()]);
    args.extend(files);
    let mut c = client(&args);
    c.wait_log(&format!("{}: not shipped: is a FIFO", fifo.display()));
    wait_content(&routed(&out, "h", &good), &expected("g", 0, 3));
    append_lines(&good, "g", 3, 6);
    wait_content(&routed(&out, "h", &good), &expected("g", 0, 6));
    c.wait_log(&format!("{}: still not shipped", fifo.display()));
    assert!(c.stop().success(), "SIGTERM is obeyed");
    let said = format!("{}: not shipped", fifo.display());
    assert_eq!(c.log().matches(&said).count(), 1, "{}", c.log());
}

/// Ships `lines` lines of each of `logs` to `server` (writing into
/// `out`) and stops cleanly: the state file then records every file at
/// its end.
fn shipped_and_stopped(server: &Server, out: &Path, state: &Path, logs: &[&Path], lines: usize) {
    for log in logs {
        append_lines(log, "s", 0, lines);
    }
    let mut c = client_for(server, state, "h", logs);
    for log in logs {
        wait_content(&routed(out, "h", log), &expected("s", 0, lines));
    }
    assert!(c.stop().success());
}

/// A damaged state file stops the client with a reason; after the
/// documented recovery (moving it away) nothing is sent twice.
fn refused_then_recovered(damage: impl FnOnce(&str) -> String, says: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let (a, b) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let state = tmp.path().join("state");
    shipped_and_stopped(&server, &out, &state, &[&a, &b], 1000);
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, damage(&text)).unwrap();
    let mut c = client_for(&server, &state, "h", &[&a, &b]);
    let status = c.wait_exit();
    assert!(!status.success());
    let log = c.log();
    assert!(log.contains("is corrupt (") && log.contains(says), "{log}");
    assert!(!log.contains("()"), "an empty reason: {log}");
    // Moved away, the secret beside it still names the same streams: the
    // server's offsets say everything arrived.
    std::fs::rename(&state, tmp.path().join("state.bad")).unwrap();
    append_lines(&a, "s", 1000, 1010);
    let mut c = client_for(&server, &state, "h", &[&a, &b]);
    wait_content(&routed(&out, "h", &a), &expected("s", 0, 1010));
    assert!(c.stop().success());
    assert_eq!(
        read(&routed(&out, "h", &b)),
        expected("s", 0, 1000),
        "no duplicates"
    );
}

#[test]
fn a_state_file_with_a_changed_fingerprint_is_refused() {
    refused_then_recovered(
        |text| {
            let at = text.find("fp = \"").expect("an fp field") + 6;
            let mut t = text.to_string();
            let digit = if &t[at..at + 1] == "0" { "1" } else { "0" };
            t.replace_range(at..at + 1, digit);
            t
        },
        "checksum mismatch",
    );
}

#[test]
fn a_half_truncated_state_file_is_refused() {
    refused_then_recovered(|text| text[..text.len() / 2].to_string(), "truncated");
}

#[test]
fn a_state_file_of_the_previous_version_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let a = tmp.path().join("a.log");
    let state = tmp.path().join("state");
    shipped_and_stopped(&server, &out, &state, &[&a], 100);
    // What the previous version wrote: version 1, no checksum line, and
    // stream ids of the old form (dev-ino-born) the server does not know.
    let text = std::fs::read_to_string(&state).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("# sha256"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut body = body.replace("version = 2", "version = 1");
    while let Some(at) = body.find("~k") {
        body.replace_range(at..at + 34, "");
    }
    std::fs::write(&state, body).unwrap();
    append_lines(&a, "s", 100, 110);
    let mut c = client_for(&server, &state, "h", &[&a]);
    wait_content(&routed(&out, "h", &a), &expected("s", 0, 110));
    assert!(c.stop().success());
    let log = c.log();
    assert_eq!(
        log.matches("written by an earlier version").count(),
        1,
        "{log}"
    );
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(
        text.starts_with("version = 2") && text.contains("# sha256 "),
        "{text}"
    );
}

/// The wire id of the first stream recorded in the state file (what a
/// stream's id leaked to an attacker would give them).
fn recorded_wire_id(state: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state).ok()?;
    let line = text.lines().find(|l| l.starts_with("id = \""))?;
    let id = line.trim_start_matches("id = \"").trim_end_matches('"');
    Some(id.split_once('~')?.1.to_string())
}

#[test]
fn a_stream_taken_over_is_neither_skipped_nor_sent_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let log = tmp.path().join("app.log");
    append_lines(&log, "g", 0, 100);
    let body = format!(
        "[tuning]\nidle_close = \"1s\"\n[[stream]]\npath = \"{}\"\n",
        log.display()
    );
    let cfg = client_config(tmp.path(), &server, &body);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("debug = true\n{}", text.replace("debug = true\n", "")),
    )
    .unwrap();
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("g", 0, 100));
    // Everything acknowledged and the connection closed as idle.
    c.wait_log("idle; closing its connection");
    let state = tmp.path().join("state");
    let mut id = None;
    wait_for("the stream id in the state file", || {
        id = recorded_wire_id(&state);
        id.is_some()
    });
    let id = id.unwrap();
    assert!(id.starts_with('k') && id.len() == 33, "{id}");
    // The attacker appends forged lines to the stream.
    let held = std::fs::metadata(&log).unwrap().len();
    let mut raw = Raw::connect(server.addr);
    raw.greeting();
    let mut forged = format!(
        "INIT STREAM h:{} id:{id} offset:{held} ack:1\n",
        log.display()
    );
    let lines: String = (0..50).map(|i| format!("FORGED {i}\n")).collect();
    forged.push_str(&lines);
    raw.send(forged.as_bytes());
    assert!(raw.line().starts_with("200 "));
    raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
    loop {
        let l = raw.line();
        assert!(!l.is_empty(), "closed before 250 DONE");
        if l.starts_with("250 DONE") {
            break;
        }
    }
    // The victim's next lines: not after a skip, not the whole file again.
    append_lines(&log, "g", 100, 200);
    c.wait_log("another connection wrote to it");
    let genuine = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("FORGED"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let want = expected("g", 0, 200);
    wait_for("every genuine line once", || genuine(&read(&dest)) == want);
    assert!(c.stop().success());
    let got = read(&dest);
    assert_eq!(
        genuine(&got),
        want,
        "{}",
        describe_difference(&genuine(&got), &want)
    );
    let log_text = c.log();
    let said = format!(
        "stream {id}: the server holds {} bytes, but this client sent at most {held}",
        held + lines.len() as u64
    );
    assert!(log_text.contains(&said), "{log_text}");
}

#[test]
fn a_connection_refused_before_the_greeting_says_why() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let busy = std::thread::spawn(move || {
        // Two refusals: the client says so each time, then backs off.
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.write_all(b"503 Too many connections from your address\n");
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("a.log");
    append_lines(&log, "x", 0, 1);
    let state = tmp.path().join("state");
    let mut c = client(&[
        "--server",
        &addr,
        "--state-file",
        state.to_str().unwrap(),
        log.to_str().unwrap(),
    ]);
    c.wait_log("server refused the connection: 503 Too many connections from your address");
    busy.join().unwrap();
    assert!(c.stop().success());
    assert!(!c.log().contains("bad greeting"), "{}", c.log());
}

#[test]
fn an_idle_timeout_is_not_called_a_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "idle_timeout = \"200ms\"\n");
    let log = tmp.path().join("a.log");
    append_lines(&log, "i", 0, 3);
    let mut c = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    c.wait_log("server closed the idle connection (421 Idle timeout)");
    append_lines(&log, "i", 3, 6);
    wait_content(&routed(&out, "h", &log), &expected("i", 0, 6));
    assert!(c.stop().success());
    assert!(!c.log().contains("shutting down"), "{}", c.log());
}
