//! End to end: real loghamsterd and loghamsterc on loopback, real files,
//! every line checked.

mod common;

use common::*;
use std::io::Write;

#[test]
fn an_existing_file_arrives_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    append_lines(&log, "existing", 0, 20_000);
    let server = Server::with_directory(&out);
    let mut client = client_for(&server, &tmp.path().join("state"), "web1", &[&log]);
    wait_content(
        &routed(&out, "web1", &log),
        &expected("existing", 0, 20_000),
    );
    assert!(client.stop().success());
}

#[test]
fn lines_appended_while_running_arrive_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("live.log");
    append_lines(&log, "live", 0, 10);
    let server = Server::with_directory(&out);
    let mut client = client_for(&server, &tmp.path().join("state"), "web1", &[&log]);
    let dest = routed(&out, "web1", &log);
    wait_content(&dest, &expected("live", 0, 10));
    // Small appends one at a time: each must arrive (linger, not batch size).
    for i in 10..30 {
        append_lines(&log, "live", i, i + 1);
        wait_content(&dest, &expected("live", 0, i + 1));
    }
    // And a burst.
    append_lines(&log, "live", 30, 50_000);
    wait_content(&dest, &expected("live", 0, 50_000));
    assert!(client.stop().success());
}

#[test]
fn a_file_created_after_start_is_picked_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("later.log");
    let server = Server::with_directory(&out);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    client.wait_log("started:"); // settled on "does not exist"
    append_lines(&log, "later", 0, 1000);
    wait_content(&routed(&out, "h", &log), &expected("later", 0, 1000));
    assert!(client.stop().success());
}

#[test]
fn client_restart_mid_stream_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let state = tmp.path().join("state");
    let server = Server::with_directory(&out);
    let dest = routed(&out, "web1", &log);
    let mut total = 0;
    for round in 0..5 {
        let mut client = client_for(&server, &state, "web1", &[&log]);
        // A writer appends while the client runs, and while it is down.
        append_lines(&log, "restart", total, total + 30_000);
        total += 30_000;
        if round % 2 == 0 {
            // Stop part-way through: some of the file not sent yet.
            wait_for("some data to arrive", || {
                std::fs::metadata(&dest)
                    .map(|m| m.len() > 0)
                    .unwrap_or(false)
            });
        } else {
            wait_content(&dest, &expected("restart", 0, total));
        }
        assert!(client.stop().success(), "client log:\n{}", client.log());
        append_lines(&log, "restart", total, total + 1000);
        total += 1000;
    }
    let mut client = client_for(&server, &state, "web1", &[&log]);
    wait_content(&dest, &expected("restart", 0, total));
    assert!(client.stop().success());
}

#[test]
fn client_killed_mid_stream_loses_nothing_and_resumes_from_the_server_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let state = tmp.path().join("state");
    let server = Server::with_directory(&out);
    let dest = routed(&out, "web1", &log);
    let mut total = 0;
    for _ in 0..3 {
        let mut client = client_for(&server, &state, "web1", &[&log]);
        append_lines(&log, "kill", total, total + 20_000);
        total += 20_000;
        wait_for("some data to arrive", || {
            std::fs::metadata(&dest)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        });
        client.kill9();
    }
    // The server still knows how far this stream got: no duplicates even
    // though the state file may be behind.
    let mut client = client_for(&server, &state, "web1", &[&log]);
    wait_content(&dest, &expected("kill", 0, total));
    assert!(client.stop().success());
}

#[test]
fn server_restart_mid_stream_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let state = tmp.path().join("state");
    let mut server = Server::with_directory(&out);
    let port = server.port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let dest = routed(&out, "web1", &log);
    let mut client = client_for(&server, &state, "web1", &[&log]);
    let mut total = 0;
    for _ in 0..3 {
        append_lines(&log, "srv", total, total + 30_000);
        total += 30_000;
        wait_for("some data to arrive", || {
            std::fs::metadata(&dest)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        });
        assert!(
            server.proc.stop().success(),
            "server log:\n{}",
            server.proc.log()
        );
        // Lines written while the server is down wait in the file.
        append_lines(&log, "srv", total, total + 5_000);
        total += 5_000;
        server = Server::start(&["--listen", &listen, "--directory", out.to_str().unwrap()]);
    }
    wait_content(&dest, &expected("srv", 0, total));
    assert!(client.stop().success());
    assert!(
        client.log().contains("server is shutting down"),
        "{}",
        client.log()
    );
}

#[test]
fn two_clients_into_one_output_never_interleave_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let shared = tmp.path().join("shared.log");
    let server = server_with(
        tmp.path(),
        &out,
        &format!("[output.shared]\npath = \"{}\"\n", shared.display()),
    );
    let (a, b) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let addr = server.addr.to_string();
    let mut ca = client_with_svc(&addr, "shared", "ha", &a);
    let mut cb = client_with_svc(&addr, "shared", "hb", &b);
    for round in 0..10 {
        append_lines(&a, "A", round * 5_000, (round + 1) * 5_000);
        append_lines(&b, "B", round * 5_000, (round + 1) * 5_000);
    }
    let want_len = expected("A", 0, 50_000).len() + expected("B", 0, 50_000).len();
    wait_for("both files in the shared output", || {
        std::fs::metadata(&shared)
            .map(|m| m.len() as usize >= want_len)
            .unwrap_or(false)
    });
    let got = read(&shared);
    assert_eq!(got.len(), want_len);
    // Every line intact; each source's lines complete and in order.
    let (mut from_a, mut from_b) = (String::new(), String::new());
    for l in got.split_inclusive('\n') {
        match l.as_bytes()[0] {
            b'A' => from_a.push_str(l),
            b'B' => from_b.push_str(l),
            _ => panic!("interleaved or foreign line: {l:?}"),
        }
    }
    assert!(
        from_a == expected("A", 0, 50_000),
        "A: {}",
        describe_difference(&from_a, &expected("A", 0, 50_000))
    );
    assert!(
        from_b == expected("B", 0, 50_000),
        "B: {}",
        describe_difference(&from_b, &expected("B", 0, 50_000))
    );
    assert!(ca.stop().success());
    assert!(cb.stop().success());
}

#[test]
fn a_person_with_nc_can_ship_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let mut raw = Raw::connect(server.addr);
    raw.greeting();
    raw.send(b"INIT STREAM laptop:/var/log/by-hand.log svc:manual\r\n");
    assert_eq!(raw.line(), "200 OK Ready to accept data\n");
    raw.send(b"first line\nsecond line\n");
    raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(raw.closed());
    wait_content(
        &out.join("laptop/var/log/by-hand.log"),
        "first line\nsecond line\n",
    );
}

#[test]
fn sighup_makes_the_server_reopen_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    append_lines(&log, "hup", 0, 100);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, &expected("hup", 0, 100));
    // logrotate on the server: rename the output, then SIGHUP.
    let rotated = dest.with_extension("log.1");
    std::fs::rename(&dest, &rotated).unwrap();
    server.proc.signal("HUP");
    server.proc.wait_log("SIGHUP: reopened 1 outputs");
    append_lines(&log, "hup", 100, 200);
    wait_content(&dest, &expected("hup", 100, 200));
    assert_eq!(read(&rotated), expected("hup", 0, 100));
    assert!(client.stop().success());
}

#[test]
fn a_quiet_files_last_line_without_newline_arrives_after_the_partial_line_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let server = Server::with_directory(&out);
    let body = format!(
        "[tuning]\npartial_line_timeout = \"300ms\"\n[[stream]]\npath = \"{}\"\n",
        log.display()
    );
    let cfg = client_config(tmp.path(), &server, &body);
    std::fs::write(&log, "complete\nhalf a li").unwrap();
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    let dest = routed(&out, "h", &log);
    wait_content(&dest, "complete\nhalf a li");
    // The writer finishes the line later: it lands exactly once.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"ne\nnext\n")
        .unwrap();
    wait_content(&dest, "complete\nhalf a line\nnext\n");
    assert!(c.stop().success());
}

#[test]
fn a_path_glob_follows_existing_and_new_matching_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let server = Server::with_directory(&out);
    let (a, b, skip) = (logs.join("a.log"), logs.join("b.log"), logs.join("c.txt"));
    append_lines(&a, "a", 0, 100);
    append_lines(&b, "b", 0, 100);
    append_lines(&skip, "c", 0, 10);
    // More matches than whole-file sends run at once: all are followed.
    let many: Vec<_> = (0..20).map(|i| logs.join(format!("m{i}.log"))).collect();
    for (i, m) in many.iter().enumerate() {
        append_lines(m, &format!("m{i}"), 0, 5);
    }
    let body = format!("[[stream]]\npath = \"{}/*.log\"\n", logs.display());
    let cfg = client_config(tmp.path(), &server, &body);
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    wait_content(&routed(&out, "h", &a), &expected("a", 0, 100));
    wait_content(&routed(&out, "h", &b), &expected("b", 0, 100));
    for (i, m) in many.iter().enumerate() {
        wait_content(&routed(&out, "h", m), &expected(&format!("m{i}"), 0, 5));
    }
    // A file created later is followed too, and appends keep flowing.
    let d = logs.join("d.log");
    append_lines(&d, "d", 0, 50);
    append_lines(&a, "a", 100, 200);
    wait_content(&routed(&out, "h", &d), &expected("d", 0, 50));
    wait_content(&routed(&out, "h", &a), &expected("a", 0, 200));
    append_lines(&d, "d", 50, 60);
    wait_content(&routed(&out, "h", &d), &expected("d", 0, 60));
    assert!(!routed(&out, "h", &skip).exists());
    // Deleted and created again: the old one is finished, the new followed.
    std::fs::remove_file(&b).unwrap();
    append_lines(&b, "b2", 0, 10);
    wait_content(
        &routed(&out, "h", &b),
        &(expected("b", 0, 100) + &expected("b2", 0, 10)),
    );
    assert!(c.stop().success());
}

#[test]
fn more_files_than_max_connections_all_arrive_through_idle_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let server = Server::with_directory(&out);
    let files: Vec<_> = (0..6).map(|i| logs.join(format!("f{i}.log"))).collect();
    for (i, f) in files.iter().enumerate() {
        append_lines(f, &format!("f{i}"), 0, 100);
    }
    let body = format!(
        "[tuning]\nmax_connections = 2\nidle_close = \"300ms\"\n[[stream]]\npath = \"{}/*.log\"\n",
        logs.display()
    );
    let cfg = client_config(tmp.path(), &server, &body);
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    for (i, f) in files.iter().enumerate() {
        wait_content(&routed(&out, "h", f), &expected(&format!("f{i}"), 0, 100));
    }
    // Idle connections were closed; new lines reconnect their files.
    for (i, f) in files.iter().enumerate() {
        append_lines(f, &format!("f{i}"), 100, 150);
    }
    for (i, f) in files.iter().enumerate() {
        wait_content(&routed(&out, "h", f), &expected(&format!("f{i}"), 0, 150));
    }
    assert!(c.stop().success());
}

#[test]
fn a_hot_file_written_at_full_speed_does_not_starve_a_quiet_one() {
    // A writer appends to the hot file as fast as the page cache takes it
    // (faster than loopback shipping, so that stream is always behind)
    // while lines are appended to a quiet file one at a time, each waited
    // for. The client serves every stream at most 1 MiB per turn of its
    // loop, so each quiet line arrives while the hot backlog is still
    // being shipped. Then everything must have arrived exactly.
    use std::sync::atomic::{AtomicBool, Ordering};
    const CAP: u64 = 512 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let hot = tmp.path().join("hot.log");
    let quiet = tmp.path().join("quiet.log");
    std::fs::File::create(&hot).unwrap();
    append_lines(&quiet, "q", 0, 1);
    let server = Server::with_directory(&out);
    let (hot_dest, quiet_dest) = (routed(&out, "h", &hot), routed(&out, "h", &quiet));
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&hot, &quiet]);
    wait_content(&quiet_dest, &expected("q", 0, 1));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, hot) = (stop.clone(), hot.clone());
        std::thread::spawn(move || {
            let chunk = expected("hot", 0, 3_000); // about 256 KiB
            let mut f = std::fs::OpenOptions::new().append(true).open(hot).unwrap();
            let mut written = 0;
            while written < CAP && !stop.load(Ordering::SeqCst) {
                f.write_all(chunk.as_bytes()).unwrap();
                written += chunk.len() as u64;
            }
        })
    };
    let mut lags = Vec::new();
    for k in 1..6 {
        append_lines(&quiet, "q", k, k + 1);
        wait_for("the quiet file's new line", || {
            read(&quiet_dest) == expected("q", 0, k + 1)
        });
        lags.push(size(&hot).saturating_sub(size(&hot_dest)) >> 20);
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    eprintln!("hot backlog (MiB) when each quiet line arrived: {lags:?}");
    let total = size(&hot);
    wait_for("the whole hot file", || size(&hot_dest) == total);
    assert!(std::fs::read(&hot).unwrap() == std::fs::read(&hot_dest).unwrap());
    assert!(client.stop().success());
}

/// Peak resident memory of a running process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[test]
fn a_100_mib_line_arrives_whole_with_bounded_memory() {
    // Neither daemon holds a line in memory: the client sends a buffer
    // with no newline as it is, the server writes a single writer's bytes
    // as they come (and splits lines longer than max_line in shared
    // outputs). Memory stays far below the line's size.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    append_lines(&log, "before", 0, 10);
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let chunk = vec![b'y'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\n").unwrap();
    }
    append_lines(&log, "after", 0, 10);
    let server = Server::with_directory(&out);
    let mut client = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let dest = routed(&out, "h", &log);
    let total = std::fs::metadata(&log).unwrap().len();
    wait_for("the whole file", || {
        std::fs::metadata(&dest).is_ok_and(|m| m.len() == total)
    });
    assert!(std::fs::read(&log).unwrap() == std::fs::read(&dest).unwrap());
    let (c, s) = (peak_rss_kib(client.pid()), peak_rss_kib(server.proc.pid()));
    eprintln!("peak RSS: client {c} KiB, server {s} KiB");
    assert!(
        c < 32 << 10 && s < 32 << 10,
        "client {c} KiB, server {s} KiB"
    );
    assert!(client.stop().success());
}

/// One file, one stream (issue 11): two overlapping globs and a literal
/// path over the same directory, and a `directory` source (sent whole
/// after close) over all of it. A literal path wins over any glob; among
/// globs the first in config order wins. Every line arrives once, in the
/// output of the stream the rule names (routed by `svc`).
#[test]
fn overlapping_streams_give_each_file_to_exactly_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let server = server_with(
        tmp.path(),
        &out,
        "[output.by_svc]\npath = \"{svc}/{file}\"\nmatch = { svc = \"*\" }\n",
    );
    for name in ["app1", "app2", "x"] {
        append_lines(&logs.join(format!("{name}.log")), name, 0, 100);
    }
    let d = logs.display();
    let body = format!(
        "[[stream]]\npath = \"{d}/app*.log\"\nsvc = \"app\"\n\
         [[stream]]\npath = \"{d}/*.log\"\nsvc = \"all\"\n\
         [[stream]]\npath = \"{d}//app2.log\"\nsvc = \"lit\"\n\
         [[stream]]\ndirectory = \"{d}\"\nsvc = \"whole\"\n"
    );
    // Only the directory source (sent whole after close) matches this one.
    std::fs::write(logs.join("z.txt"), expected("z", 0, 150)).unwrap();
    let cfg = client_config(tmp.path(), &server, &body);
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    c.wait_log("(a literal path wins over a glob)");
    c.wait_log("(the first in config order)");
    // Files created later follow the same rule.
    for name in ["app3", "y"] {
        append_lines(&logs.join(format!("{name}.log")), name, 0, 100);
    }
    let owner = [
        ("app1", "app"),
        ("app2", "lit"),
        ("x", "all"),
        ("app3", "app"),
        ("y", "all"),
    ];
    wait_content(&out.join("whole/z.txt"), &expected("z", 0, 150));
    for (name, svc) in owner {
        append_lines(&logs.join(format!("{name}.log")), name, 100, 150);
        let file = format!("{name}.log");
        wait_content(&out.join(svc).join(&file), &expected(name, 0, 150));
    }
    for (name, svc) in owner {
        for other in ["app", "all", "lit", "whole"]
            .into_iter()
            .filter(|o| *o != svc)
        {
            let wrong = out.join(other).join(format!("{name}.log"));
            assert!(!wrong.exists(), "{name}.log also went to svc {other}");
        }
    }
    assert!(c.stop().success());
}
