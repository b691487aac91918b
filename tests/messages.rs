//! What the daemons tell an operator: each problem once, at the right
//! level, through the real binaries (issue 14, "say what is wrong,
//! once"). A path the daemon cannot write is refused at start-up and by
//! `--check-config`; a missing followed path is one WARN and one INFO; a
//! cause that persists over retries is one line, not one per retry.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::scrape::*;
use common::*;

/// `bin` as a process without root's privileges: as is when the tests
/// run as an ordinary user, as `nobody` through `setpriv` when they run
/// as root (`None` then when `setpriv` is missing). A directory of mode
/// 0555 is then unwritable for it, as a root-owned state directory is
/// for a daemon run under its own user.
fn unprivileged(bin: &str) -> Option<Command> {
    let uid = Command::new("id").arg("-u").output().expect("id runs");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some(Command::new(bin));
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return None;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
    Some(cmd)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A temp dir others may enter (for a daemon run as `nobody`).
fn open_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o755);
    tmp
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn a_missing_path_is_one_warning_at_start_and_one_info_when_it_appears() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let missing = tmp.path().join("later.log");
    let in_missing_dir = tmp.path().join("later/app.log");
    let ccfg = client_config(
        tmp.path(),
        &server,
        &format!(
            "[tuning]\nstate_interval = \"100ms\"\n[[stream]]\npath = \"{}\"\n[[stream]]\npath = \"{}\"\n",
            missing.display(),
            in_missing_dir.display()
        ),
    );
    let mut c = client(&["--config", ccfg.to_str().unwrap()]);
    c.wait_log("started:");
    let log = c.log();
    let warn_file = format!("WARN {}: does not exist; following it", missing.display());
    let warn_dir = format!(
        "WARN {}: does not exist, nor does its directory; following it",
        in_missing_dir.display()
    );
    assert_eq!(count(&log, &warn_file), 1, "{log}");
    assert_eq!(count(&log, &warn_dir), 1, "{log}");

    let appears = |path: &Path, tag: &str| {
        append_lines(path, tag, 0, 5);
        c.wait_log(&format!(
            "INFO {}: appeared; following from offset 0",
            path.display()
        ));
        wait_content(&routed(&out, "h", path), &expected(tag, 0, 5));
    };
    appears(&missing, "m");
    std::fs::create_dir(tmp.path().join("later")).unwrap();
    appears(&in_missing_dir, "d");

    // The directory was looked for at every state_interval until it
    // appeared: no retry said anything (before, each one was a WARN).
    assert!(c.stop().success());
    let log = c.log();
    assert_eq!(count(&log, &warn_file), 1, "{log}");
    assert_eq!(count(&log, &warn_dir), 1, "{log}");
    assert_eq!(count(&log, "cannot watch directory"), 0, "{log}");
    assert_eq!(count(&log, " WARN "), 2, "{log}");
}

/// A state file whose directory the client may not write: exit 1 with
/// one line naming it, at start-up and from `--check-config`.
#[test]
fn an_unwritable_state_file_stops_the_client_at_start_up() {
    let tmp = open_tempdir();
    let Some(_) = unprivileged(CLIENT_BIN) else {
        eprintln!("SKIPPED: running as root without setpriv");
        return;
    };
    let file = tmp.path().join("app.log");
    append_lines(&file, "a", 0, 3);
    chmod(&file, 0o644);
    let sdir = tmp.path().join("state");
    std::fs::create_dir(&sdir).unwrap();
    // The client's secret is there and readable (a daemon that ran
    // before): only the state file itself cannot be written.
    std::fs::write(sdir.join("st.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    chmod(&sdir.join("st.key"), 0o644);
    chmod(&sdir, 0o555);
    let state = sdir.join("st");
    let args = [
        "--server",
        "127.0.0.1:9",
        "--state-file",
        state.to_str().unwrap(),
        file.to_str().unwrap(),
    ];
    let want = format!(
        "loghamsterc: cannot write state file {} (cannot create files in {}): Permission denied",
        state.display(),
        sdir.display()
    );

    let mut check = unprivileged(CLIENT_BIN).unwrap();
    let out = check.arg("--check-config").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with(&want), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let mut cmd = unprivileged(CLIENT_BIN).unwrap();
    cmd.args(args);
    let mut c = Proc::spawn("loghamsterc", cmd);
    let status = c.wait_exit();
    let log = c.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&want), "{log}");
    assert_eq!(count(&log, "cannot write state file"), 1, "{log}");

    // Writable: OK, and --check-config created nothing.
    chmod(&sdir, 0o777);
    let before = std::fs::read_dir(&sdir).unwrap().count();
    let mut check = unprivileged(CLIENT_BIN).unwrap();
    let out = check.arg("--check-config").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("state file {} (writable)", state.display())),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(&sdir).unwrap().count(), before);
}

/// The server's state file and output directories: exit 1 at start-up
/// and from `--check-config`, naming the path; the summary names the
/// metrics address and what it writes.
#[test]
fn an_unwritable_server_directory_stops_the_server_at_start_up() {
    let tmp = open_tempdir();
    let Some(_) = unprivileged(SERVER_BIN) else {
        eprintln!("SKIPPED: running as root without setpriv");
        return;
    };
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    chmod(&out, 0o555);
    let writable = tmp.path().join("state");
    std::fs::create_dir(&writable).unwrap();
    chmod(&writable, 0o777);
    let cfg = tmp.path().join("server.toml");
    let cases = [
        (
            String::new(),
            format!(
                "cannot write state file {}/.loghamsterd.state (cannot create files in {})",
                out.display(),
                out.display()
            ),
        ),
        (
            format!("state_file = \"{}/s\"\n", writable.display()),
            format!("cannot write output directory {}", out.display()),
        ),
    ];
    for (extra, want) in cases {
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:0\"\ndirectory = \"{}\"\n{extra}",
                out.display()
            ),
        )
        .unwrap();
        chmod(&cfg, 0o644);
        let config = ["--config", cfg.to_str().unwrap()];
        let mut check = unprivileged(SERVER_BIN).unwrap();
        let res = check.arg("--check-config").args(config).output().unwrap();
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&want), "{stderr}");

        let mut cmd = unprivileged(SERVER_BIN).unwrap();
        cmd.args(config);
        let mut d = Proc::spawn("loghamsterd", cmd);
        let status = d.wait_exit();
        let log = d.log();
        assert_eq!(status.code(), Some(1), "{log}");
        assert!(log.contains(&format!("loghamsterd: {want}")), "{log}");
        assert!(!log.contains("listening on"), "{log}");
    }

    chmod(&out, 0o777);
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndirectory = \"{}\"\n[prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
            out.display()
        ),
    )
    .unwrap();
    let res = Command::new(SERVER_BIN)
        .args(["--check-config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        stdout.contains("metrics: http://127.0.0.1:0/metrics"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "writable: state file {}/.loghamsterd.state, directory {}",
            out.display(),
            out.display()
        )),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "nothing created"
    );
}

/// The state file becomes unwritable while the client runs: one ERROR,
/// a counted failure per attempt (backing off), one INFO when it works
/// again with every position saved; a stop while it fails exits 1.
#[test]
fn a_state_file_failing_at_run_time_is_one_error_and_a_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let file = tmp.path().join("app.log");
    append_lines(&file, "a", 0, 10);
    let ccfg = client_config(
        tmp.path(),
        &server,
        &format!(
            "[tuning]\nstate_interval = \"100ms\"\n[prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n[[stream]]\npath = \"{}\"\n",
            file.display()
        ),
    );
    let mut c = client(&["--config", ccfg.to_str().unwrap()]);
    let metrics = metrics_addr(&c);
    wait_content(&routed(&out, "h", &file), &expected("a", 0, 10));
    let state = tmp.path().join("state");
    wait_for("the state file", || state.exists());

    // Something in the way of the temp file the state is written through.
    let blocker = tmp.path().join("state.tmp");
    std::fs::create_dir(&blocker).unwrap();
    append_lines(&file, "a", 10, 20);
    wait_content(&routed(&out, "h", &file), &expected("a", 0, 20));
    c.wait_log("ERROR cannot write state file");
    let failures = "loghamster_client_state_write_failures_total";
    scrape_until(metrics, "three failed attempts", |b| {
        value(b, failures).is_some_and(|v| v >= 3.0)
    });
    let log = c.log();
    assert_eq!(count(&log, "cannot write state file"), 1, "{log}");

    std::fs::remove_dir(&blocker).unwrap();
    c.wait_log("written again after");
    let size = std::fs::metadata(&file).unwrap().len();
    wait_for("the state file to hold the last offset", || {
        std::fs::read_to_string(&state).is_ok_and(|s| s.contains(&format!("offset = {size}")))
    });

    // Failing again at the stop: the exit says so.
    std::fs::create_dir(&blocker).unwrap();
    append_lines(&file, "a", 20, 30);
    wait_content(&routed(&out, "h", &file), &expected("a", 0, 30));
    let status = c.stop();
    let log = c.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.starts_with("loghamsterc: cannot write state file")),
        "{log}"
    );
}

/// An output the server cannot open: the client's every reconnect gets
/// `503`, but each side says so once; when it can be opened, one INFO.
#[test]
fn a_refusal_repeated_at_every_reconnect_is_said_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let scfg = tmp.path().join("server.toml");
    std::fs::write(
        &scfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndirectory = \"{}\"\n[prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
            out.display()
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", scfg.to_str().unwrap()]);
    let metrics = metrics_addr(&server.proc);
    let file = tmp.path().join("app.log");
    append_lines(&file, "a", 0, 10);
    // A symlink where the output goes: the server never follows one.
    let target = routed(&out, "h", &file);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/dev/null", &target).unwrap();
    let ccfg = client_config(
        tmp.path(),
        &server,
        &format!(
            "[tuning]\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"\n[[stream]]\npath = \"{}\"\n",
            file.display()
        ),
    );
    let mut c = client(&["--config", ccfg.to_str().unwrap()]);
    let refused = "loghamster_server_handshake_errors_total{reason=\"output_unavailable\"}";
    scrape_until(metrics, "five refusals", |b| {
        value(b, refused).is_some_and(|v| v >= 5.0)
    });
    let (slog, clog) = (server.proc.log(), c.log());
    assert_eq!(count(&slog, "cannot open output"), 1, "{slog}");
    assert_eq!(count(&clog, "503 Output unavailable"), 1, "{clog}");

    std::fs::remove_file(&target).unwrap();
    wait_content(&target, &expected("a", 0, 10));
    server.proc.wait_log("opened again");
    assert!(c.stop().success());
}

/// `--debug` tells a file's story (opened, streaming, sent up to N) in a
/// few lines however many appends there are.
#[test]
fn debug_tells_progress_without_a_line_per_append() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let file = tmp.path().join("app.log");
    append_lines(&file, "a", 0, 1);
    let state = tmp.path().join("state");
    let addr = server.addr.to_string();
    let mut c = client(&[
        "--debug",
        "--server",
        &addr,
        "--hostname",
        "h",
        "--state-file",
        state.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    c.wait_log("streaming from offset 0");
    // Appends until a progress line comes (one per 10 s per file).
    let mut n = 1;
    let deadline = std::time::Instant::now() + PATIENCE;
    while !c.log().contains(": sent up to offset ") {
        assert!(std::time::Instant::now() < deadline, "{}", c.log());
        append_lines(&file, "a", n, n + 1);
        n += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    wait_content(&routed(&out, "h", &file), &expected("a", 0, n));
    assert!(c.stop().success());
    let log = c.log();
    let debug = count(&log, " DEBUG ");
    assert!(n > 100, "{n} appends");
    assert!(
        debug <= 6,
        "{debug} debug lines for {n} appends (want a handful):\n{log}"
    );
    assert!(count(&log, ": sent up to offset ") <= 2, "{log}");
}

/// A followed file the client may not read: one WARN, the retries are
/// debug lines, and it is followed once it can be opened.
#[test]
fn a_file_that_cannot_be_opened_is_one_warning_not_one_per_retry() {
    let tmp = open_tempdir();
    let Some(mut cmd) = unprivileged(CLIENT_BIN) else {
        eprintln!("SKIPPED: running as root without setpriv");
        return;
    };
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let file = tmp.path().join("secret.log");
    append_lines(&file, "s", 0, 5);
    chmod(&file, 0o000);
    let sdir = tmp.path().join("state");
    std::fs::create_dir(&sdir).unwrap();
    chmod(&sdir, 0o777);
    let addr = server.addr.to_string();
    cmd.args([
        "--debug",
        "--server",
        &addr,
        "--hostname",
        "h",
        "--state-file",
        sdir.join("st").to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    let mut c = Proc::spawn("loghamsterc", cmd);
    c.wait_log("open failed again: Permission denied");
    let log = c.log();
    assert_eq!(count(&log, "WARN"), 1, "{log}");
    assert_eq!(count(&log, "open failed: Permission denied"), 1, "{log}");
    chmod(&file, 0o644);
    wait_content(&routed(&out, "h", &file), &expected("s", 0, 5));
    assert!(c.stop().success());
}

/// `--debug` with more files than `max_open_files`: a parked file says
/// so, and says so again when an append reopens it.
#[test]
fn debug_tells_when_a_file_is_parked_and_reopened() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let server = Server::with_directory(&out);
    let path = |i: usize| logs.join(format!("f{i}.log"));
    for i in 0..4 {
        append_lines(&path(i), "f", 0, 3);
    }
    let cfg = client_config(
        tmp.path(),
        &server,
        &format!(
            "[tuning]\nmax_open_files = 2\n[[stream]]\npath = \"{}/*.log\"\n",
            logs.display()
        ),
    );
    let mut c = client(&["--config", cfg.to_str().unwrap(), "--debug"]);
    c.wait_log(": parked at offset ");
    let log = c.log();
    let at = log.find(": parked at offset ").unwrap();
    let start = log[..at].rfind(" DEBUG ").unwrap() + " DEBUG ".len();
    let parked = std::path::PathBuf::from(&log[start..at]);
    append_lines(&parked, "f", 3, 6);
    c.wait_log(&format!(
        "{}: reopened after parking, at offset",
        parked.display()
    ));
    wait_content(&routed(&out, "h", &parked), &expected("f", 0, 6));
    assert!(c.stop().success());
}

/// The server's checkpoint cannot be written while it runs: one ERROR
/// and a counted failure per round, nothing acknowledged meanwhile; one
/// INFO when it works again, and the client's lines arrive.
/// Undoes `chattr +i` on drop, so that the temp dir can be removed
/// whatever the test's outcome.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    /// `chattr +i` on each path; `None` where that is not possible here
    /// (not root, or a file system without the attribute).
    fn set(paths: &[&Path]) -> Option<Immutable> {
        let mut done = Immutable(Vec::new());
        for p in paths {
            let ok = Command::new("chattr").arg("+i").arg(p).status();
            if !ok.is_ok_and(|s| s.success()) {
                return None;
            }
            done.0.push(p.to_path_buf());
        }
        Some(done)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(p).status();
        }
    }
}

#[test]
fn a_checkpoint_failing_at_run_time_is_one_error_and_a_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let scfg = tmp.path().join("server.toml");
    std::fs::write(
        &scfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndirectory = \"{}\"\nsync_interval = \"50ms\"\n[prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
            out.display()
        ),
    )
    .unwrap();
    let mut server = Server::start(&["--config", scfg.to_str().unwrap()]);
    let metrics = metrics_addr(&server.proc);
    let file = tmp.path().join("app.log");
    append_lines(&file, "a", 0, 10);
    let state = tmp.path().join("state");
    let mut c = client_for(&server, &state, "h", &[&file]);
    wait_content(&routed(&out, "h", &file), &expected("a", 0, 10));
    // The server writes its snapshot and starts its journal at start-up;
    // each round then appends to the journal, and after a failure writes a
    // snapshot through a temp file beside it. An immutable journal and
    // directory make both fail (the output's own directory stays writable).
    let journal = out.join(".loghamsterd.state.journal");
    let Some(blocked) = Immutable::set(&[&journal, &out]) else {
        eprintln!("SKIPPED: chattr +i is not possible here (needs root and ext4 or alike)");
        return;
    };
    append_lines(&file, "a", 10, 20);
    let failures = "loghamster_server_checkpoint_failures_total";
    scrape_until(metrics, "three failed rounds", |b| {
        value(b, failures).is_some_and(|v| v >= 3.0)
    });
    let log = server.proc.log();
    assert_eq!(count(&log, "checkpoint failed"), 1, "{log}");

    drop(blocked);
    server.proc.wait_log("state file written again");
    wait_content(&routed(&out, "h", &file), &expected("a", 0, 20));
    assert!(c.stop().success());
    assert!(server.proc.stop().success());
    assert_eq!(count(&server.proc.log(), "checkpoint failed"), 1);
}
