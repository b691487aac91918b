//! Bad handshakes get one error line and a closed connection, while other
//! streams keep flowing; nothing a client sends escapes the output tree.

mod common;

use common::*;

/// Sends `init` on a fresh connection and returns the server's reply line,
/// checking that the server then closes the connection.
fn refused(server: &Server, init: &[u8]) -> String {
    let mut raw = Raw::connect(server.addr);
    raw.greeting();
    raw.send(init);
    let reply = raw.line();
    assert!(raw.closed(), "connection stays open after {reply:?}");
    reply
}

#[test]
fn malformed_handshakes_get_an_error_line_while_other_streams_keep_flowing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("busy.log");
    let server = Server::with_directory(&out);
    let mut client = client_for(&server, &tmp.path().join("state"), "good", &[&log]);
    let dest = routed(&out, "good", &log);
    let cases: &[(&[u8], &str)] = &[
        (b"HELLO THERE\n", "400 "),
        (b"INIT STREAM nocolon\n", "400 "),
        (b"INIT STREAM host:/p key:\"unterminated\n", "400 "),
        (b"INIT STREAM host:/p a:1 a:2\n", "400 "),
        (b"INIT STREAM ho\0st:/p\n", "400 "),
        (b"INIT STREAM :/p\n", "400 "),
    ];
    let mut n = 0;
    for (i, (init, code)) in cases.iter().enumerate() {
        append_lines(&log, "busy", n, n + 2000);
        n += 2000;
        let reply = refused(&server, init);
        assert!(reply.starts_with(code), "case {i}: {init:?} got {reply:?}");
    }
    // An overlong line is refused as soon as the limit is passed.
    let mut long = b"INIT STREAM h:/".to_vec();
    long.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let reply = refused(&server, &long);
    assert!(reply.starts_with("4"), "{reply:?}");
    append_lines(&log, "busy", n, n + 2000);
    n += 2000;
    wait_content(&dest, &expected("busy", 0, n));
    assert!(client.stop().success());
    assert!(
        server.proc.log().contains("bad handshake"),
        "the server logs refusals"
    );
}

#[test]
fn path_escape_attempts_are_refused_and_write_nothing_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("linkhost")).unwrap();
    let server = Server::with_directory(&out);
    let attempts: &[&[u8]] = &[
        b"INIT STREAM ..:/etc/passwd\n",
        b"INIT STREAM host:/../../outside/x\n",
        b"INIT STREAM host:/var/../../../outside/x\n",
        b"INIT STREAM a/b:/x\n",
        b"INIT STREAM host:/\n",
        b"INIT STREAM \"host:/a\\x00b\"\n",
    ];
    for a in attempts {
        let reply = refused(&server, a);
        assert!(reply.starts_with('4'), "{a:?} got {reply:?}");
    }
    // A symlink planted inside the output tree is not followed either.
    let reply = refused(&server, b"INIT STREAM linkhost:/x.log\n");
    assert!(
        reply.starts_with('5') || reply.starts_with('4'),
        "{reply:?}"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
}

#[test]
fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server_with(
        tmp.path(),
        &tmp.path().join("out"),
        "handshake_timeout = \"300ms\"\n",
    );
    let mut raw = Raw::connect(server.addr);
    raw.greeting();
    raw.send(b"INIT STREAM h:/partial"); // never finished
    assert!(raw.line().starts_with("408 "));
    assert!(raw.closed());
}

#[test]
fn streams_without_a_route_are_refused_with_404() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\n[output.only]\npath = \"{}\"\nmatch = {{ svc = \"web\" }}\n",
            tmp.path().join("only.log").display()
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", cfg.to_str().unwrap()]);
    assert!(refused(&server, b"INIT STREAM h:/x svc:db\n").starts_with("404 "));
    let mut raw = Raw::connect(server.addr);
    raw.greeting();
    raw.send(b"INIT STREAM h:/x svc:web\nhello\n");
    assert_eq!(raw.line(), "200 OK Ready to accept data\n");
    raw.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(raw.closed());
    wait_content(&tmp.path().join("only.log"), "hello\n");
}

/// Whether `line` starts like every line the daemons log:
/// `2026-11-25T14:00:05.123Z loghamsterd LEVEL ...`.
fn has_log_prefix(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 25
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && b[23] == b'Z'
        && line[24..].starts_with(" loghamsterd ")
}

/// Every name below `dir`, recursively.
fn names_below(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        names.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            names.extend(names_below(&e.path()));
        }
    }
    names
}

#[test]
fn control_characters_are_refused_and_never_forge_log_lines_or_file_names() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let by_svc = "[output.bysvc]\npath = \"bysvc/{svc}.log\"\nmatch = { host = \"m*\" }\n";
    let server = server_with(tmp.path(), &out, &format!("debug = true\n{by_svc}"));
    let attempts: &[(&[u8], &str)] = &[
        (b"INIT STREAM \"h:/x\\nFORGED line\"\n", "path"),
        (
            b"INIT STREAM \"h:/x\\x0d2026-01-01T00:00:00.000Z loghamsterd ERROR forged\"\n",
            "path",
        ),
        (b"INIT STREAM \"h:/\\x1b[2Jx\"\n", "path"),
        (b"INIT STREAM \"h:/tab\\there\"\n", "path"),
        (b"INIT STREAM \"h:/raw\ttab\"\n", "path"),
        (b"INIT STREAM \"h\\nFORGED:/x\"\n", "host"),
        (b"INIT STREAM m1:/x svc:\"a\\nFORGED\"\n", "meta value"),
        (b"INIT STREAM m1:/x svc:ok note:\"\\x7f\"\n", "meta value"),
    ];
    for (init, what) in attempts {
        let reply = refused(&server, init);
        let want = format!("400 Bad request: control character in {what}\n");
        assert_eq!(reply, want, "{:?}", String::from_utf8_lossy(init));
    }
    // Raw C1 controls and Unicode line separators are refused anywhere.
    for raw in [
        "h:/a\u{2028}FORGED",
        "h:/a\u{85}FORGED",
        "\"h:/a\u{2029}b\"",
    ] {
        let reply = refused(&server, format!("INIT STREAM {raw}\n").as_bytes());
        assert_eq!(reply, "400 Bad request: control character\n", "{raw:?}");
    }
    // A stream that is fine still flows, and its log line marks the end of
    // the refusals' lines.
    let mut good = Raw::connect(server.addr);
    good.greeting();
    good.send(b"INIT STREAM m1:/x svc:fine\nhello\n");
    assert!(good.line().starts_with("200 "));
    good.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(good.closed());
    wait_content(&out.join("bysvc/fine.log"), "hello\n");
    server.proc.wait_log("m1:/x -> ");
    let log = server.proc.log();
    assert_eq!(log.matches("control character in").count(), 8, "{log}");
    for line in log.lines() {
        assert!(has_log_prefix(line), "forged or broken log line {line:?}");
    }
    for name in names_below(&out) {
        assert!(
            !name.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "output name with a control character: {name:?}"
        );
    }
}
