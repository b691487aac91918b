//! Bad config, bad command lines, busy ports, absent servers, corrupt
//! state: one clear line, the right exit code, and nothing lost.

mod common;

use std::process::Command;

use common::*;

/// Runs a binary to completion; returns (exit code, stderr).
fn run(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin).args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SEED_SKETCH: &str = "[server]
hostname=log.mgmt.neotel.at
port=8901
compression=none     # gzip, lz4

[[stream]
path=/var/log/messages
method=watch
onrotate=follow
";

#[test]
fn the_seed_client_sketch_names_the_line_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("client.toml");
    std::fs::write(&cfg, SEED_SKETCH).unwrap();
    let (code, err) = run(CLIENT_BIN, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("client.toml:2:"), "{err}");
    assert!(
        err.contains("quotes") && err.contains("hostname = \"log.mgmt.neotel.at\""),
        "{err}"
    );
}

#[test]
fn config_mistakes_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    let cases = [
        (
            CLIENT_BIN,
            "[server]\nhostname = \"x\"\nbogus = 1\n[[stream]]\npath = \"/x\"\n",
            "bogus",
        ),
        (
            CLIENT_BIN,
            "[server]\nhostname = \"x\"\nport = \"eighty\"\n[[stream]]\npath = \"/x\"\n",
            "port",
        ),
        (CLIENT_BIN, "[server]\nhostname = \"x\"\n", "stream"),
        (SERVER_BIN, "listen = \"nowhere\"\n", "listen"),
        (
            SERVER_BIN,
            "[output.a]\npath = \"/tmp/{nope}.log\"\n",
            "output.a",
        ),
    ];
    for (bin, text, key) in cases {
        std::fs::write(&cfg, text).unwrap();
        let (code, err) = run(bin, &["--config", cfg.to_str().unwrap()]);
        assert_eq!(code, 2, "{text}: {err}");
        assert_eq!(err.lines().count(), 1, "{text}: {err}");
        assert!(err.contains(key) && err.contains("c.toml"), "{text}: {err}");
    }
    let (code, err) = run(SERVER_BIN, &["--config", "/nonexistent/server.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/server.toml"), "{err}");
    let (code, err) = run(CLIENT_BIN, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--config") || err.contains("--server"),
        "{err}"
    );
}

#[test]
fn check_config_validates_without_running() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("server.toml");
    std::fs::write(&cfg, "debug = true\nlisten = \"127.0.0.1:8000\"\ndirectory = \"/tmp/out\"\n[prometheus]\nlisten = \":8091\"\nenabled = true\n[output.message]\n    path = \"/var/log/messages\"\n[output.test]\n    path = \"/tmp/log/test.log\"\n").unwrap();
    let out = Command::new(SERVER_BIN)
        .args(["--check-config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 outputs"));
}

/// Issue 11, bug 4: the same file in two `[[stream]]`s passed
/// `--check-config` and then made its two streams take over each other's
/// server side forever.
#[test]
fn the_same_file_twice_fails_the_config_check() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("client.toml");
    let text = "[server]\nhostname = \"x\"\n[[stream]]\npath = \"/var/log/a.log\"\n[[stream]]\npath = \"/var/log//a.log\"\n";
    std::fs::write(&cfg, text).unwrap();
    let (code, err) = run(
        CLIENT_BIN,
        &["--check-config", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("client.toml:6:") && err.contains("(line 4)"),
        "{err}"
    );
    // The same file twice on the command line.
    let (code, err) = run(
        CLIENT_BIN,
        &[
            "--check-config",
            "--server",
            "127.0.0.1:9",
            "/tmp/x.log",
            "/tmp/./x.log",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/tmp/./x.log") && err.contains("twice"),
        "{err}"
    );
}

#[test]
fn the_shipped_example_configs_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (bin, file) in [
        (CLIENT_BIN, "etc/client.toml"),
        (SERVER_BIN, "etc/server.toml"),
        (CLIENT_BIN, "docs/examples/seed-client.toml"),
        (SERVER_BIN, "docs/examples/seed-server.toml"),
    ] {
        let path = format!("{root}/{file}");
        let out = Command::new(bin)
            .args(["--check-config", "--config", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Server::with_directory(tmp.path());
    let addr = first.addr.to_string();
    let (code, err) = run(
        SERVER_BIN,
        &[
            "--listen",
            &addr,
            "--directory",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
}

#[test]
fn an_absent_server_is_retried_until_it_comes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    append_lines(&log, "wait", 0, 500);
    // A port that nobody listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let state = tmp.path().join("state");
    let mut client = client(&[
        "--server",
        &listen,
        "--state-file",
        state.to_str().unwrap(),
        "--hostname",
        "h",
        log.to_str().unwrap(),
    ]);
    client.wait_log("connect");
    append_lines(&log, "wait", 500, 1000);
    let server = Server::start(&["--listen", &listen, "--directory", out.to_str().unwrap()]);
    wait_content(&routed(&out, "h", &log), &expected("wait", 0, 1000));
    assert!(client.stop().success());
    drop(server);
}

#[test]
fn a_corrupt_state_file_stops_the_client_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::write(
        &state,
        "version = 1\n[[file]]\nid = \"x\"\npath = \"/x\"\ndev = 1\nino =",
    )
    .unwrap();
    let log = tmp.path().join("a.log");
    std::fs::write(&log, "x\n").unwrap();
    let (code, err) = run(
        CLIENT_BIN,
        &[
            "--server",
            "127.0.0.1:9",
            "--state-file",
            state.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(state.to_str().unwrap()) && err.contains("corrupt"),
        "{err}"
    );
}
