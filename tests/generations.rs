//! Every generation of a followed path arrives, in order, whatever the
//! client was doing while the files moved: these reproduce, with the
//! client frozen (SIGSTOP) or stopped, the races that lost whole
//! generations (issue 11, failures 1 and 2). The same histories, and
//! thousands more, are in the simulation (`tests/sim`); these prove the
//! real binaries and syscalls.

mod common;

use std::path::Path;

use common::*;

/// logrotate's `create` with numbered names: shifts `app.log.N` to
/// `app.log.N+1`, renames `app.log` to `app.log.1`.
fn rotate_by_rename(log: &Path, keep: usize) {
    let name = |n: usize| log.with_file_name(format!("app.log.{n}"));
    for n in (1..keep).rev() {
        if name(n).exists() {
            std::fs::rename(name(n), name(n + 1)).unwrap();
        }
    }
    std::fs::rename(log, name(1)).unwrap();
}

/// logrotate's `copytruncate`: shifts the old copies, copies the file to
/// `app.log.1` (a new inode), truncates the file.
fn copytruncate(log: &Path, keep: usize) {
    let name = |n: usize| log.with_file_name(format!("app.log.{n}"));
    for n in (1..keep).rev() {
        if name(n).exists() {
            std::fs::rename(name(n), name(n + 1)).unwrap();
        }
    }
    std::fs::copy(log, name(1)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)
        .unwrap()
        .set_len(0)
        .unwrap();
}

#[test]
fn generations_created_and_rotated_away_while_the_client_was_frozen_arrive_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    append_lines(&log, "gen", 0, 100);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("gen", 0, 100));
    client.signal("STOP");
    // Lines the client has not read, then three generations that are
    // created and rotated away before it looks again.
    append_lines(&log, "gen", 100, 150);
    let mut n = 150;
    for _ in 0..3 {
        rotate_by_rename(&log, 5);
        append_lines(&log, "gen", n, n + 100);
        n += 100;
    }
    client.signal("CONT");
    wait_content(&dest, &expected("gen", 0, n));
    client.wait_log("rotated away before it was read");
    assert!(client.stop().success());
}

#[test]
fn rename_rotations_while_the_client_was_stopped_arrive_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let state = tmp.path().join("state");
    let server = Server::with_directory(&out);
    append_lines(&log, "gen", 0, 100);
    let mut client = client_for(&server, &state, "h", &[&log]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("gen", 0, 100));
    assert!(client.stop().success());
    append_lines(&log, "gen", 100, 150);
    let mut n = 150;
    for _ in 0..4 {
        rotate_by_rename(&log, 9);
        append_lines(&log, "gen", n, n + 100);
        n += 100;
    }
    let mut client = client_for(&server, &state, "h", &[&log]);
    wait_content(&dest, &expected("gen", 0, n));
    client.wait_log("while not held open");
    assert!(client.stop().success());
}

#[test]
fn copytruncate_twice_while_the_client_was_frozen_loses_no_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    append_lines(&log, "ct", 0, 100);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("ct", 0, 100));
    client.signal("STOP");
    append_lines(&log, "ct", 100, 150); // not read yet: only in the first copy
    copytruncate(&log, 5);
    append_lines(&log, "ct", 150, 250); // a whole generation: only in the second copy
    copytruncate(&log, 5);
    append_lines(&log, "ct", 250, 300);
    client.signal("CONT");
    wait_content(&dest, &expected("ct", 0, 300));
    client.wait_log("from its copy");
    assert!(client.stop().success());
}
