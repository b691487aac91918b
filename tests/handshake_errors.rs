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
