//! The busy host in small: 200 files followed through one glob, one writer
//! that holds every file open and appends line by line, round robin, so
//! that every `write(2)` is an inotify event about a different file.
//! Every line of every file arrives, in order (the client coalesces these
//! events and reads a lingering file once per linger: nothing may be left
//! behind by that). And a stop during the start-up of a directory of many
//! files: prompt, clean, and nothing lost or sent twice after a restart.

mod common;

use std::io::Write;

use common::*;

const FILES: usize = 200;
const ROUNDS: usize = 60;

#[test]
fn two_hundred_files_appended_line_by_line_arrive_whole_and_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let dir = tmp.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let paths: Vec<_> = (0..FILES)
        .map(|i| dir.join(format!("f{i:03}.log")))
        .collect();
    // The files exist, with a first line, before the client starts.
    for (i, p) in paths.iter().enumerate() {
        append_lines(p, &format!("f{i}"), 0, 1);
    }
    let server = Server::with_directory(&out);
    let cfg = client_config(
        tmp.path(),
        &server,
        &format!("[[stream]]\npath = \"{}/*.log\"\n", dir.display()),
    );
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let dests: Vec<_> = paths.iter().map(|p| routed(&out, "h", p)).collect();
    for (i, d) in dests.iter().enumerate() {
        wait_content(d, &expected(&format!("f{i}"), 0, 1));
    }
    let mut held: Vec<_> = paths
        .iter()
        .map(|p| std::fs::OpenOptions::new().append(true).open(p).unwrap())
        .collect();
    for k in 1..=ROUNDS {
        for (i, f) in held.iter_mut().enumerate() {
            f.write_all(line(&format!("f{i}"), k).as_bytes()).unwrap();
        }
        if k % 10 == 0 {
            // A pause now and then, so some rounds find the files quiet
            // (the first bytes after a pause start a linger afresh).
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
    }
    for (i, d) in dests.iter().enumerate() {
        wait_content(d, &expected(&format!("f{i}"), 0, ROUNDS + 1));
    }
    assert!(client.stop().success());
}

/// Files in the followed directory of the start-up test: enough that
/// their start-up log lines (one per file opened) are several times what
/// a pipe holds.
const STARTING: usize = 800;

#[test]
fn sigterm_during_start_up_stops_it_and_a_restart_ships_every_line_once() {
    // Start-up opens and positions every file of the followed directory
    // before the loop runs (seconds for thousands of files). The client's
    // log is held from the first file it opens: its stderr is not read
    // while SIGTERM is sent, so it blocks in a log write long before its
    // start-up could end (each file opened is a ~220-byte INFO line,
    // 170 KiB in all; the pipe holds 64 KiB). It must then stop without
    // opening the rest, cleanly, and a restart ships every line once.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let dir = tmp.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let paths: Vec<_> = (0..STARTING)
        .map(|i| {
            dir.join(format!(
                "{}-{i:04}.log",
                "a-service-with-a-long-name".repeat(5)
            ))
        })
        .collect();
    for (i, p) in paths.iter().enumerate() {
        append_lines(p, &format!("s{i}"), 0, 3);
    }
    let server = Server::with_directory(&out);
    let cfg = client_config(
        tmp.path(),
        &server,
        &format!(
            "[tuning]\nidle_close = \"100ms\"\n[[stream]]\npath = \"{}/*.log\"\n",
            dir.display()
        ),
    );
    let mut cmd = std::process::Command::new(CLIENT_BIN);
    cmd.args(["--config", cfg.to_str().unwrap()]);
    let mut first = Proc::spawn_gated("loghamsterc", cmd, "following from offset");
    first.signal("TERM");
    let status = first.wait_exit();
    let log = first.log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("stop requested during start-up"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    let opened = log.matches("following from offset").count();
    assert!(
        opened < STARTING,
        "{opened} files opened: start-up ran on\n{log}"
    );

    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let dests: Vec<_> = paths.iter().map(|p| routed(&out, "h", p)).collect();
    for (i, d) in dests.iter().enumerate() {
        wait_content(d, &expected(&format!("s{i}"), 0, 3));
    }
    assert!(client.stop().success());
    for (i, d) in dests.iter().enumerate() {
        assert_eq!(read(d), expected(&format!("s{i}"), 0, 3), "{}", d.display());
    }
}

/// More files with data than the server lets this host connect at once
/// (`max_connections_per_address = 3`, the client's `max_connections` at
/// its default of 4096): the files the server turns away wait for a slot
/// (so connections idle for 1 s make room) and every line arrives, with
/// one warning for the client rather than one per file. Before, each file
/// turned away retried on its own back-off, nothing told idle connections
/// to close before `idle_close` (5 minutes), and with a multiplexed
/// connection, which takes one of the host's slots itself, 10,000 files
/// stalled at the client's 4,096th channel.
fn files_beyond_the_servers_limit_wait_their_turn(multiplex: bool) {
    const N: usize = 9;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(
        tmp.path(),
        &out,
        "max_connections_per_address = 3\nsync = \"none\"\n",
    );
    let paths: Vec<_> = (0..N)
        .map(|i| tmp.path().join(format!("f{i}.log")))
        .collect();
    for (i, p) in paths.iter().enumerate() {
        append_lines(p, &format!("f{i}"), 0, 20);
    }
    let streams = stream_tables(&paths);
    let cfg = client_config(
        tmp.path(),
        &server,
        &format!("multiplex = {multiplex}\n{streams}"),
    );
    let c = client(&["--config", cfg.to_str().unwrap()]);
    for (i, p) in paths.iter().enumerate() {
        wait_content(&routed(&out, "h", p), &expected(&format!("f{i}"), 0, 20));
    }
    let log = c.log();
    // Said once a minute at most (twice only on a machine so loaded that
    // this took over a minute), not once per file turned away.
    let said = log.matches("connections open from here: at most ").count();
    assert!((1..=2).contains(&said), "{log}");
    assert!(
        !log.contains(".log: server refused the connection"),
        "{log}"
    );
}

#[test]
fn files_beyond_the_servers_connection_limit_wait_their_turn() {
    files_beyond_the_servers_limit_wait_their_turn(false);
}

#[test]
fn files_beyond_the_servers_connection_limit_wait_their_turn_multiplexed() {
    files_beyond_the_servers_limit_wait_their_turn(true);
}
