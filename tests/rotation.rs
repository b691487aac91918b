//! Files that move under the client's feet: rename rotation and truncation.

mod common;

use common::*;

/// Truncates `path` to 0 bytes.
fn empty(path: &std::path::Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// Freezes the client (SIGSTOP) while `path` is truncated and rewritten
/// with `lines` lines tagged `new`, then lets it go on.
fn rewrite_frozen(client: &Proc, path: &std::path::Path, lines: usize) {
    client.signal("STOP");
    empty(path);
    append_lines(path, "new", 0, lines);
    client.signal("CONT");
}

#[test]
fn rotation_by_rename_loses_nothing_and_keeps_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    append_lines(&log, "rot", 0, 1000);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    let mut n = 1000;
    for r in 0..5 {
        // Rotations spaced out: the client has caught up before each one.
        // (Several rotations while the client is behind are the lifecycle
        // capability's job: it must find the intermediate files by identity.)
        wait_content(&dest, &expected("rot", 0, n));
        // The writer keeps its descriptor across the rename, as an
        // application does until logrotate's postrotate tells it to reopen.
        let mut old = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::fs::rename(&log, tmp.path().join(format!("app.log.{r}"))).unwrap();
        use std::io::Write;
        let tail: String = (n..n + 500).map(|i| line("rot", i)).collect();
        old.write_all(tail.as_bytes()).unwrap();
        n += 500;
        append_lines(&log, "rot", n, n + 1000); // the new file
        n += 1000;
    }
    wait_content(&dest, &expected("rot", 0, n));
    assert!(client.stop().success());
}

#[test]
fn a_truncated_file_is_started_over() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    append_lines(&log, "before", 0, 1000);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("before", 0, 1000));
    empty(&log);
    append_lines(&log, "after", 0, 10);
    let want = expected("before", 0, 1000) + &expected("after", 0, 10);
    wait_content(&dest, &want);
    client.wait_log("truncated");
    assert!(client.stop().success());
}

#[test]
fn onrotate_stop_finishes_the_old_file_and_ignores_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    let body = format!(
        "[[stream]]\npath = \"{}\"\nonrotate = \"stop\"\n",
        log.display()
    );
    let cfg = client_config(tmp.path(), &server, &body);
    append_lines(&log, "stop", 0, 100);
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("stop", 0, 100));
    std::fs::rename(&log, tmp.path().join("app.log.1")).unwrap();
    append_lines(&tmp.path().join("app.log.1"), "stop", 100, 200);
    append_lines(&log, "new", 0, 100);
    client.wait_log("not following the new file");
    assert_eq!(read(&dest), expected("stop", 0, 200));
    assert!(client.stop().success());
}

#[test]
fn a_file_rewritten_in_place_while_the_client_was_stopped_is_sent_from_its_start() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let state = tmp.path().join("state");
    let server = Server::with_directory(&out);
    append_lines(&log, "old", 0, 1000);
    let mut c = client_for(&server, &state, "h", &[&log]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("old", 0, 1000));
    assert!(c.stop().success());
    // Same inode, new content longer than the old: only the first bytes
    // tell that it is another file.
    empty(&log);
    append_lines(&log, "new", 0, 2000);
    let mut c = client_for(&server, &state, "h", &[&log]);
    wait_content(
        &dest,
        &(expected("old", 0, 1000) + &expected("new", 0, 2000)),
    );
    assert!(c.stop().success());
}

#[test]
fn a_file_rewritten_in_place_while_the_server_was_down_is_sent_from_its_start() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let mut server = Server::with_directory(&out);
    let listen = server.addr.to_string();
    append_lines(&log, "old", 0, 1000);
    let mut c = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("old", 0, 1000));
    assert!(server.proc.stop().success());
    empty(&log);
    append_lines(&log, "new", 0, 2000);
    server = Server::start(&["--listen", &listen, "--directory", out.to_str().unwrap()]);
    wait_content(
        &dest,
        &(expected("old", 0, 1000) + &expected("new", 0, 2000)),
    );
    assert!(c.stop().success());
    drop(server);
}

#[test]
fn fifty_fast_rotations_while_the_client_is_behind_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    append_lines(&log, "fast", 0, 100);
    let mut c = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("fast", 0, 100));
    // The application writes on; every 2000 lines the file is renamed
    // away (keeping numbered backups), the application writes a last few
    // lines through its old descriptor, then reopens the path. Nobody
    // waits for the client.
    let mut n = 100;
    for r in 0..50 {
        append_lines(&log, "fast", n, n + 2000);
        n += 2000;
        let mut old = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::fs::rename(&log, tmp.path().join(format!("app.log.{r}"))).unwrap();
        let tail: String = (n..n + 10).map(|i| line("fast", i)).collect();
        use std::io::Write;
        old.write_all(tail.as_bytes()).unwrap();
        n += 10;
        std::fs::File::create(&log).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5)); // the application's reopen
    }
    append_lines(&log, "fast", n, n + 100);
    n += 100;
    wait_content(&dest, &expected("fast", 0, n));
    assert!(c.stop().success());
}

#[test]
fn a_deleted_file_that_cannot_be_delivered_is_released_after_deleted_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("app.log");
    append_lines(&log, "gone", 0, 1000);
    // Nobody listens: the file cannot be delivered.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = tmp.path().join("client.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_file = \"{}\"\nhostname = \"h\"\n[server]\nhostname = \"127.0.0.1\"\nport = {port}\n[tuning]\ndeleted_hold = \"300ms\"\n[[stream]]\npath = \"{}\"\n",
            tmp.path().join("state").display(),
            log.display()
        ),
    )
    .unwrap();
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    c.wait_log("following from offset 0");
    std::fs::remove_file(&log).unwrap();
    c.wait_log(&format!(
        "abandoning its last {} bytes",
        expected("gone", 0, 1000).len()
    ));
    // Its descriptor is closed: the disk space is free again.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", c.pid())).unwrap();
    for fd in fds.flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert!(
            !target.to_string_lossy().contains("app.log"),
            "still open: {}",
            target.display()
        );
    }
    assert!(c.stop().success());
    assert!(
        c.log().contains("bytes of deleted files were abandoned"),
        "{}",
        c.log()
    );
}

#[test]
fn a_file_rotated_while_the_client_was_away_is_finished_first() {
    // The client stops with 1000 lines acknowledged. While it is away the
    // application writes 500 more to the old file, which is then renamed,
    // and starts a new file. On restart the client finds the old file by
    // its identity, sends the 500 lines, then the new file.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let state = tmp.path().join("state");
    let server = Server::with_directory(&out);
    append_lines(&log, "away", 0, 1000);
    let dest = routed(&out, "h", &log);
    let mut client = client_for(&server, &state, "h", &[&log]);
    wait_content(&dest, &expected("away", 0, 1000));
    assert!(client.stop().success());
    append_lines(&log, "away", 1000, 1500);
    std::fs::rename(&log, tmp.path().join("app.log.1")).unwrap();
    append_lines(&log, "away", 1500, 2000);
    let mut client = client_for(&server, &state, "h", &[&log]);
    wait_content(&dest, &expected("away", 0, 2000));
    client.wait_log("while not held open (client restart or parked file); finishing it");
    assert!(client.stop().success());
}

#[test]
fn a_client_killed_while_draining_a_rotated_file_finishes_it_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let state = tmp.path().join("state");
    let server = Server::with_directory(&out);
    append_lines(&log, "k", 0, 1000);
    let dest = routed(&out, "h", &log);
    let mut client = client_for(&server, &state, "h", &[&log]);
    wait_content(&dest, &expected("k", 0, 1000));
    // The old file keeps growing after the rename (the writer has not
    // reopened yet), so the client is still draining it when killed.
    let mut old = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(&log, tmp.path().join("app.log.1")).unwrap();
    client.wait_log("rotated; reading the old file");
    client.kill9();
    use std::io::Write;
    let tail: String = (1000..3000).map(|i| line("k", i)).collect();
    old.write_all(tail.as_bytes()).unwrap();
    append_lines(&log, "k", 3000, 3100);
    let mut client = client_for(&server, &state, "h", &[&log]);
    wait_content(&dest, &expected("k", 0, 3100));
    assert!(client.stop().success());
}

#[test]
fn a_file_truncated_and_rewritten_past_the_read_position_is_started_over() {
    // The client is frozen (SIGSTOP) while the file is truncated and
    // rewritten with more bytes than it had: it never looks shorter. The
    // bytes just before the client's position changed, which it checks
    // with every read.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    append_lines(&log, "old", 0, 100);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("old", 0, 100));
    rewrite_frozen(&client, &log, 300);
    wait_content(&dest, &(expected("old", 0, 100) + &expected("new", 0, 300)));
    client.wait_log("truncated and rewritten");
    assert!(client.stop().success());
}

#[test]
fn copytruncate_takes_the_real_copy_among_files_with_the_same_first_bytes() {
    // Logs that open with the same banner share their fingerprint. The
    // client is frozen while lines it has not read are written, the file
    // is copied (the real copy, app.log.1), truncated and written again;
    // decoys with the same first bytes, newer and long enough, sit beside
    // it. Only the real copy holds the bytes just before the client's
    // position, and its name starts with the file's.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let banner: String = (0..40)
        .map(|i| format!("=== service started, config line {i:02} ===\n"))
        .collect();
    std::fs::write(&log, &banner).unwrap();
    append_lines(&log, "old", 0, 100);
    let server = Server::with_directory(&out);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    let before = banner.clone() + &expected("old", 0, 100);
    wait_content(&dest, &before);
    client.signal("STOP");
    append_lines(&log, "old", 100, 150);
    std::fs::copy(&log, tmp.path().join("app.log.1")).unwrap();
    empty(&log);
    for d in 0..4 {
        let decoy = tmp.path().join(format!("decoy{d}.log"));
        std::fs::write(&decoy, &banner).unwrap();
        append_lines(&decoy, &format!("decoy{d}"), 0, 300);
    }
    append_lines(&log, "new", 0, 20);
    client.signal("CONT");
    let want = banner + &expected("old", 0, 150) + &expected("new", 0, 20);
    wait_content(&dest, &want);
    client.wait_log("from its copy");
    assert!(client.log().contains("app.log.1"), "{}", client.log());
    assert!(client.stop().success());
}

#[test]
fn a_file_rewritten_past_the_position_while_no_connection_is_open_counts_nothing_lost() {
    // The idle connection is closed; the client is frozen while the file
    // is truncated and rewritten longer than it was. The reconnect's
    // `200` finds the file rewritten: the file's length then is the new
    // content's, all of which is sent, so nothing is lost (before: an
    // ERROR "N bytes lost" counting the new content, and losses_total 1).
    use common::scrape::*;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let log = dir.join("app.log");
    let server = Server::with_directory(&out);
    append_lines(&log, "old", 0, 100);
    let label = log.to_str().expect("utf-8 temp dir");
    let body = format!(
        "[tuning]\nidle_close = \"200ms\"\n[prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n[[stream]]\npath = \"{label}\"\n"
    );
    let cfg = client_config(dir, &server, &body);
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let addr = metrics_addr(&client);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("old", 0, 100));
    let connected = format!(
        "loghamster_client_server_connected{{server=\"127.0.0.1:{}\"}}",
        server.port()
    );
    scrape_until(addr, "the idle connection closed", |b| {
        value(b, &connected) == Some(0.0)
    });
    rewrite_frozen(&client, &log, 300);
    wait_content(&dest, &(expected("old", 0, 100) + &expected("new", 0, 300)));
    client.wait_log("no copy of the old content found");
    let series = |name: &str| format!("loghamster_client_{name}{{stream=\"{label}\"}}");
    let body = scrape_until(addr, "the truncation counted", |b| {
        value(b, &series("truncations_total")) == Some(1.0)
    });
    assert_eq!(value(&body, &series("losses_total")), Some(0.0), "{body}");
    assert_eq!(
        value(&body, &series("lost_bytes_total")),
        Some(0.0),
        "{body}"
    );
    assert!(client.stop().success());
    assert!(!client.log().contains("bytes lost"), "{}", client.log());
}
