//! `engine`: outputs synced with io_uring (the default where available)
//! or with blocking `fdatasync` deliver the same bytes; `engine =
//! "io_uring"` refuses to start where io_uring is missing.

mod common;

use common::*;

fn ship_with(engine: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = server_with(
        tmp.path(),
        &out,
        &format!("engine = \"{engine}\"\nsync_interval = \"20ms\"\n"),
    );
    append_lines(&log, engine, 0, 20_000);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    for k in 1..5 {
        append_lines(&log, engine, k * 20_000, (k + 1) * 20_000);
    }
    wait_content(&dest, &expected(engine, 0, 100_000));
    // Everything acknowledged: a clean stop needs the server's ACKs.
    assert!(client.stop().success());
    server.proc.log()
}

#[test]
fn blocking_fdatasync_delivers_every_line() {
    let log = ship_with("epoll");
    assert!(!log.contains("io_uring"), "{log}");
}

#[test]
fn io_uring_syncs_deliver_every_line_or_it_refuses_to_start() {
    if loghamster::reactor::sys::uring::Ring::new(8).is_err() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("server.toml");
        std::fs::write(
            &cfg,
            "listen = \"127.0.0.1:0\"\ndirectory = \"/tmp\"\nengine = \"io_uring\"\n",
        )
        .unwrap();
        let out = std::process::Command::new(SERVER_BIN)
            .args(["--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("io_uring"), "{err}");
        return;
    }
    let log = ship_with("io_uring");
    assert!(log.contains("outputs are synced with io_uring"), "{log}");
}

/// Ships two rounds of lines through 300 files, each to its own output,
/// with `engine`; returns the server's log.
fn hundreds_of_outputs(engine: &str) -> String {
    // More outputs to sync than the ring's completion queue holds: syncs
    // are fed to the ring a few dozen at a time; and more on one file
    // system than `syncfs` pays off for: one `syncfs` does.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let server = server_with(
        tmp.path(),
        &out,
        &format!("sync_interval = \"50ms\"\nengine = \"{engine}\"\n"),
    );
    let path = |i: usize| logs.join(format!("f{i}.log"));
    for i in 0..300 {
        append_lines(&path(i), "r", 0, 20);
    }
    let ccfg = client_config(
        tmp.path(),
        &server,
        &format!("[[stream]]\npath = \"{}/*.log\"\n", logs.display()),
    );
    let mut client = client(&["--config", ccfg.to_str().unwrap()]);
    for i in 0..300 {
        wait_content(&routed(&out, "h", &path(i)), &expected("r", 0, 20));
    }
    for i in 0..300 {
        append_lines(&path(i), "r", 20, 40);
    }
    for i in 0..300 {
        wait_content(&routed(&out, "h", &path(i)), &expected("r", 0, 40));
    }
    // A clean stop waits for every file's last ACK, which needs the rounds.
    assert!(client.stop().success());
    assert!(!client.log().contains("server refused"), "{}", client.log());
    server.proc.log()
}

#[test]
fn a_round_syncing_hundreds_of_outputs_completes_with_one_syncfs_on_the_ring() {
    if loghamster::reactor::sys::uring::Ring::new(8).is_err() {
        eprintln!("io_uring is not available here; covered by the epoll test");
        return;
    }
    let log = hundreds_of_outputs("io_uring");
    assert!(log.contains("outputs are synced with io_uring"), "{log}");
    if loghamster::reactor::sys::fs::syncfs_reports_errors() {
        assert!(log.contains("one syncfs for them"), "{log}");
    }
}

#[test]
fn a_round_syncing_hundreds_of_outputs_completes_with_one_syncfs_without_the_ring() {
    let log = hundreds_of_outputs("epoll");
    if loghamster::reactor::sys::fs::syncfs_reports_errors() {
        assert!(log.contains("one syncfs for them"), "{log}");
    }
    assert!(!log.contains("io_uring"), "{log}");
}
