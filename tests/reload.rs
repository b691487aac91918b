//! SIGHUP reloads both daemons' configuration files through the real
//! binaries: streams added, removed and changed on the client with every
//! line arriving exactly once and positions kept; routes, limits and
//! `[[allow]]` rules on the server for new connections while open ones
//! keep flowing; a bad file refused with one line while the running
//! configuration carries on.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Writes `dir/client.toml` for a client of `server` (host name `h`,
/// state file `dir/state`) with one `[[stream]]` per entry of `streams`:
/// a path and the extra lines of its table.
fn write_client_config(
    dir: &Path,
    server: &Server,
    top: &str,
    streams: &[(&Path, &str)],
) -> PathBuf {
    let mut body = String::new();
    for (path, extra) in streams {
        body += &format!("[[stream]]\npath = \"{}\"\n{extra}\n", path.display());
    }
    let cfg = client_config(dir, server, &body);
    if !top.is_empty() {
        let text = format!("{top}\n{}", read(&cfg));
        std::fs::write(&cfg, text).unwrap();
    }
    cfg
}

fn client_from(cfg: &Path) -> Proc {
    client(&["--config", cfg.to_str().unwrap()])
}

/// How many log lines contain `needle`.
fn count(p: &Proc, needle: &str) -> usize {
    p.log().lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_reload_adds_removes_and_changes_streams_and_every_line_arrives_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let [a, b, c, d] = ["a.log", "b.log", "c.log", "d.log"].map(|n| tmp.path().join(n));
    for f in [&a, &b, &c] {
        append_lines(f, "x", 0, 100);
    }
    let cfg = write_client_config(
        tmp.path(),
        &server,
        "",
        &[(&a, ""), (&b, ""), (&c, "svc = \"one\"")],
    );
    let mut client = client_from(&cfg);
    for f in [&a, &b, &c] {
        wait_content(&routed(&out, "h", f), &expected("x", 0, 100));
    }
    // a unchanged, b removed, c changed (svc), d added.
    append_lines(&d, "x", 0, 100);
    write_client_config(
        tmp.path(),
        &server,
        "",
        &[(&a, ""), (&c, "svc = \"two\""), (&d, "")],
    );
    client.signal("HUP");
    client.wait_log("reload: 1 streams added, 1 removed, 1 changed, 1 unchanged");
    for f in [&a, &b, &c] {
        append_lines(f, "x", 100, 200);
    }
    wait_content(&routed(&out, "h", &a), &expected("x", 0, 200));
    wait_content(&routed(&out, "h", &c), &expected("x", 0, 200));
    wait_content(&routed(&out, "h", &d), &expected("x", 0, 100));
    let a_opened = format!("{}: following from offset", a.display());
    assert_eq!(
        count(&client, &a_opened),
        1,
        "the unchanged stream was not touched"
    );
    // b comes back: what was written while it was removed arrives once,
    // from the position its removal saved.
    write_client_config(
        tmp.path(),
        &server,
        "",
        &[(&a, ""), (&b, ""), (&c, "svc = \"two\""), (&d, "")],
    );
    client.signal("HUP");
    client.wait_log("reload: 1 streams added, 0 removed, 0 changed, 3 unchanged");
    wait_content(&routed(&out, "h", &b), &expected("x", 0, 200));
    let b_opened = format!("{}: following from offset", b.display());
    client.wait_log(&format!("{b_opened} {}", expected("x", 0, 100).len()));
    assert!(client.stop().success());
}

#[test]
fn a_bad_client_config_is_refused_and_the_running_one_keeps_shipping() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let a = tmp.path().join("a.log");
    append_lines(&a, "y", 0, 50);
    let cfg = write_client_config(tmp.path(), &server, "", &[(&a, "")]);
    let mut client = client_from(&cfg);
    let dest = routed(&out, "h", &a);
    wait_content(&dest, &expected("y", 0, 50));
    let good = read(&cfg);
    // A syntax error, a file named twice, and what this version cannot
    // run (refused by the daemon, not the loader).
    for (i, bad) in [
        format!("{good}[[stream]\n"),
        format!("{good}[[stream]]\npath = \"{}\"\n", a.display()),
        format!("{good}delete = true\n"),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(&cfg, bad).unwrap();
        client.signal("HUP");
        wait_for("the refusal", || {
            count(
                &client,
                "SIGHUP: configuration refused, the running one stays",
            ) == i + 1
        });
    }
    let refusals: Vec<String> = client
        .log()
        .lines()
        .filter(|l| l.contains("refused"))
        .map(String::from)
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(refusals[1].contains("reads the same file"), "{refusals:?}");
    assert!(refusals[2].contains("`delete = true`"), "{refusals:?}");
    append_lines(&a, "y", 50, 100);
    wait_content(&dest, &expected("y", 0, 100));
    // A key that needs a restart: one WARN, the rest applies.
    std::fs::write(&cfg, good.replace("state\"", "elsewhere\"")).unwrap();
    client.signal("HUP");
    client.wait_log("reload: 0 streams added, 0 removed, 0 changed, 1 unchanged");
    assert_eq!(
        count(&client, "state_file cannot change while loghamsterc runs"),
        1
    );
    assert!(client.stop().success());
    assert!(
        tmp.path().join("state").exists(),
        "the running state file is kept"
    );
}

/// Writes `dir/server.toml` (an ephemeral port, the default route into
/// `out`) with `extra` lines.
fn write_server_config(dir: &Path, out: &Path, extra: &str) {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndirectory = \"{}\"\n{extra}",
        out.display()
    );
    std::fs::write(dir.join("server.toml"), text).unwrap();
}

#[test]
fn a_route_added_by_reload_takes_new_connections_while_open_ones_keep_flowing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    let (one, two) = (tmp.path().join("one.log"), tmp.path().join("two.log"));
    append_lines(&one, "o", 0, 100);
    let _c1 = client_for(&server, &tmp.path().join("s1"), "one", &[&one]);
    let old_dest = routed(&out, "one", &one);
    wait_content(&old_dest, &expected("o", 0, 100));
    let new_dir = tmp.path().join("new");
    write_server_config(
        tmp.path(),
        &out,
        &format!(
            "[output.new]\npath = \"{}/{{host}}.log\"\nmatch = {{ host = \"*\" }}\n",
            new_dir.display()
        ),
    );
    server.proc.signal("HUP");
    server.proc.wait_log(
        "reload: 1 outputs added, 0 removed, 0 changed, 0 unchanged; nothing else changed",
    );
    // The open connection keeps its output; a new one takes the route.
    append_lines(&one, "o", 100, 200);
    append_lines(&two, "t", 0, 100);
    let _c2 = client_for(&server, &tmp.path().join("s2"), "two", &[&two]);
    wait_content(&old_dest, &expected("o", 0, 200));
    wait_content(&new_dir.join("two.log"), &expected("t", 0, 100));
    assert!(server.proc.log().contains("SIGHUP: reopened"));
}

#[test]
fn a_bad_server_config_is_refused_and_the_running_one_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    let cfg = tmp.path().join("server.toml");
    let good = read(&cfg);
    std::fs::write(&cfg, format!("{good}max_connections = 0\n")).unwrap();
    server.proc.signal("HUP");
    server
        .proc
        .wait_log("SIGHUP: configuration refused, the running one stays");
    let said = server.proc.log();
    let refused: Vec<&str> = said.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(refused.len(), 1, "{said}");
    assert!(refused[0].contains("max_connections"), "{said}");
    let f = tmp.path().join("f.log");
    append_lines(&f, "f", 0, 50);
    let _c = client_for(&server, &tmp.path().join("s"), "h", &[&f]);
    wait_content(&routed(&out, "h", &f), &expected("f", 0, 50));
    // A new listen address needs a restart: named once, the rest applies.
    std::fs::write(
        &cfg,
        good.replace("127.0.0.1:0", "127.0.0.1:1") + "max_line = \"64KiB\"\n",
    )
    .unwrap();
    server.proc.signal("HUP");
    server.proc.wait_log("changed: max_line");
    assert_eq!(
        count(&server.proc, "listen cannot change while loghamsterd runs"),
        1
    );
}

#[test]
fn allow_rules_added_and_removed_by_reload_apply_to_new_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    let rule = "[[allow]]\naddress = \"127.0.0.1/32\"\nhosts = [\"good*\"]\noutputs = [\"*\"]\n";
    write_server_config(tmp.path(), &out, rule);
    server.proc.signal("HUP");
    server.proc.wait_log("changed: [[allow]]");
    let f = tmp.path().join("f.log");
    append_lines(&f, "a", 0, 20);
    let _bad = client_for(&server, &tmp.path().join("s1"), "bad1", &[&f]);
    server.proc.wait_log("refused stream bad1:");
    let _good = client_for(&server, &tmp.path().join("s2"), "good1", &[&f]);
    wait_content(&routed(&out, "good1", &f), &expected("a", 0, 20));
    // Without the rule the server is open again.
    write_server_config(tmp.path(), &out, "");
    server.proc.signal("HUP");
    wait_for("the second reload", || {
        count(&server.proc, "changed: [[allow]]") == 2
    });
    server
        .proc
        .wait_log("open server: the new configuration has no [[allow]] rules");
    let _bad2 = client_for(&server, &tmp.path().join("s3"), "bad2", &[&f]);
    wait_content(&routed(&out, "bad2", &f), &expected("a", 0, 20));
}

/// A `path` glob is a directory source: changing it finishes the files it
/// follows and starts them again from their positions; removing and
/// adding it back resumes too.
#[test]
fn a_changed_glob_stream_continues_every_file_from_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let server = Server::with_directory(&out);
    let files = [logs.join("p.log"), logs.join("q.log")];
    for f in &files {
        append_lines(f, "g", 0, 100);
    }
    let glob = logs.join("*.log");
    let other = tmp.path().join("other.log");
    let cfg = write_client_config(tmp.path(), &server, "", &[(&glob, "")]);
    let mut client = client_from(&cfg);
    for f in &files {
        wait_content(&routed(&out, "h", f), &expected("g", 0, 100));
    }
    write_client_config(
        tmp.path(),
        &server,
        "",
        &[(&glob, "svc = \"s\""), (&other, "")],
    );
    client.signal("HUP");
    client.wait_log("reload: 1 streams added, 0 removed, 1 changed, 0 unchanged");
    for f in &files {
        append_lines(f, "g", 100, 200);
        wait_content(&routed(&out, "h", f), &expected("g", 0, 200));
    }
    write_client_config(tmp.path(), &server, "", &[(&other, "")]);
    client.signal("HUP");
    client.wait_log("reload: 0 streams added, 1 removed, 0 changed, 1 unchanged");
    for f in &files {
        append_lines(f, "g", 200, 300);
    }
    write_client_config(tmp.path(), &server, "", &[(&glob, ""), (&other, "")]);
    client.signal("HUP");
    client.wait_log("reload: 1 streams added, 0 removed, 0 changed, 1 unchanged");
    for f in &files {
        wait_content(&routed(&out, "h", f), &expected("g", 0, 300));
    }
    assert!(client.stop().success());
}

/// A lower connection limit applies to the next connection; the one
/// already open keeps streaming.
#[test]
fn a_connection_limit_lowered_by_reload_refuses_the_next_connection_only() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    let f = tmp.path().join("f.log");
    append_lines(&f, "l", 0, 50);
    let _c = client_for(&server, &tmp.path().join("s"), "h", &[&f]);
    let dest = routed(&out, "h", &f);
    wait_content(&dest, &expected("l", 0, 50));
    write_server_config(tmp.path(), &out, "max_connections_per_address = 1\n");
    server.proc.signal("HUP");
    server.proc.wait_log("changed: max_connections_per_address");
    let mut raw = Raw::connect(server.addr);
    assert_eq!(raw.line(), "503 Too many connections from your address\n");
    append_lines(&f, "l", 50, 100);
    wait_content(&dest, &expected("l", 0, 100));
}
