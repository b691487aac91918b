//! The command line as operators use it: `-h`, `--version`, exit 2 for
//! every usage error, ports checked with their own message, and `${VAR}`
//! in configs filled from the environment of the real daemons.

mod common;

use std::process::Command;

use common::*;

/// Runs a binary to completion; returns (exit code, stdout, stderr).
fn run(bin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BINS: [(&str, &str); 2] = [(CLIENT_BIN, "loghamsterc"), (SERVER_BIN, "loghamsterd")];

#[test]
fn help_short_and_long_print_usage_and_exit_0() {
    for (bin, name) in BINS {
        for flag in ["-h", "--help"] {
            let (code, out, err) = run(bin, &[flag]);
            assert_eq!(code, 0, "{name} {flag}: {err}");
            assert!(out.starts_with(&format!("Usage: {name}")), "{out}");
            assert!(out.contains("--config"), "{out}");
        }
    }
}

#[test]
fn version_names_the_release_and_the_commit() {
    for (bin, name) in BINS {
        for flag in ["-V", "--version"] {
            let (code, out, err) = run(bin, &[flag]);
            assert_eq!(code, 0, "{name} {flag}: {err}");
            let want = format!("{name} {} (commit ", env!("CARGO_PKG_VERSION"));
            assert!(out.starts_with(&want), "{out}");
            assert_eq!(out.lines().count(), 1, "{out}");
            let commit = out.trim_end().trim_end_matches(')').rsplit(' ').next();
            let commit = commit.unwrap();
            assert!(
                commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
                "{out}"
            );
        }
    }
}

#[test]
fn every_usage_error_exits_2() {
    let cases: [(&str, &[&str], &str); 8] = [
        (CLIENT_BIN, &["--bogus"], "Unrecognized argument: --bogus"),
        (SERVER_BIN, &["--bogus"], "Unrecognized argument: --bogus"),
        (CLIENT_BIN, &["--state-file"], "--state-file"),
        (CLIENT_BIN, &[], "nothing to do"),
        (
            SERVER_BIN,
            &["--listen", "localhost:8901"],
            "\"localhost\" is not an IP address",
        ),
        (
            SERVER_BIN,
            &["--listen", "127.0.0.1:99999"],
            "port 99999 is out of range (0 to 65535)",
        ),
        (
            SERVER_BIN,
            &["--metrics-listen", "bogus"],
            "--metrics-listen \"bogus\": expected ip:port or :port",
        ),
        (
            CLIENT_BIN,
            &["--metrics-listen", "bogus", "--server", "127.0.0.1:1", "/x"],
            "--metrics-listen \"bogus\": expected ip:port or :port",
        ),
    ];
    for (bin, args, want) in cases {
        let (code, _, err) = run(bin, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn ports_are_range_checked_with_their_own_message() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("a.log");
    std::fs::write(&f, "x\n").unwrap();
    let (code, _, err) = run(
        CLIENT_BIN,
        &["--server", "127.0.0.1:99999", f.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.trim_end(),
        "loghamsterc: server \"127.0.0.1:99999\": port 99999 is out of range (1 to 65535)"
    );
    let cfg = tmp.path().join("c.toml");
    let text = "[server]\nhostname = \"h\"\nport = 70000\n[[stream]]\npath = \"/x\"\n";
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = run(CLIENT_BIN, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("c.toml:3:"), "{err}");
    assert!(
        err.contains("port 70000 is out of range (1 to 65535)"),
        "{err}"
    );
}

#[test]
fn an_unset_variable_names_its_line_and_check_config_sees_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    let text =
        "[server]\nhostname = \"h\"\n\n[[stream]]\npath = \"/var/log/${LH_TEST_UNSET_X}.log\"\n";
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(CLIENT_BIN)
        .args(["--check-config", "--config", cfg.to_str().unwrap()])
        .env_remove("LH_TEST_UNSET_X")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("c.toml:5:"), "{err}");
    assert!(
        err.contains("environment variable LH_TEST_UNSET_X is not set"),
        "{err}"
    );
}

/// Both daemons' configs are templates: the server's output directory
/// and the client's host name, state file and followed file come from
/// the environment; `$$` stays a literal `$`.
#[test]
fn configs_are_filled_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let scfg = tmp.path().join("server.toml");
    std::fs::write(
        &scfg,
        "listen = \"127.0.0.1:0\"\ndirectory = \"${LH_OUT}\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(SERVER_BIN);
    cmd.args(["--config", scfg.to_str().unwrap()])
        .env("LH_OUT", &out);
    let server = Server::start_command(cmd);

    let log = tmp.path().join("app$1.log");
    append_lines(&log, "env", 0, 100);
    let ccfg = tmp.path().join("client.toml");
    let text = format!(
        "hostname = \"${{LH_HOST:-fallback}}\"\nstate_file = \"${{LH_DIR}}/state\"\n\
         [server]\nhostname = \"127.0.0.1\"\nport = {}\n\
         [[stream]]\npath = \"${{LH_DIR}}/app$$1.log\"\n",
        server.port()
    );
    std::fs::write(&ccfg, text).unwrap();
    let mut cmd = Command::new(CLIENT_BIN);
    cmd.args(["--config", ccfg.to_str().unwrap()])
        .env("LH_HOST", "web7")
        .env("LH_DIR", tmp.path());
    let _client = Proc::spawn("loghamsterc", cmd);
    wait_content(&routed(&out, "web7", &log), &expected("env", 0, 100));
}

#[test]
fn several_servers_are_checked_and_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("a.log");
    std::fs::write(&f, "x\n").unwrap();
    let file = f.to_str().unwrap();
    let (code, _, err) = run(CLIENT_BIN, &["--server", "a:1", "--server", "a:1", file]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("server a:1 is named twice"), "{err}");
    let cfg = tmp.path().join("c.toml");
    let body = format!("[[stream]]\npath = \"{file}\"\n");
    let cases = [
        ("hostnames = [\"log1:8901\", \"log2\", \"[::1]:7\"]\nport = 9\nfailover_after = \"3s\"\n", ""),
        ("hostnames = []\n", "the list of servers is empty"),
        ("hostnames = [\"log1:0\"]\n", "`server.hostnames`: server \"log1:0\""),
        ("hostname = \"a\"\nhostnames = [\"b\"]\n", "not both"),
        ("port = 1\n", "[server] names no server"),
        ("hostname = \"a\"\nfailover_after = \"0s\"\n", "must be above zero"),
    ];
    for (server, want) in cases {
        std::fs::write(&cfg, format!("[server]\n{server}{body}")).unwrap();
        let (code, out, err) = run(CLIENT_BIN, &["--check-config", "-c", cfg.to_str().unwrap()]);
        if want.is_empty() {
            assert_eq!(code, 0, "{err}");
            assert!(
                out.contains("servers log1:8901, log2:9, [::1]:7")
                    && out.contains("failover after 3s"),
                "{out}"
            );
        } else {
            assert_eq!(code, 2, "{server}: {out}");
            assert!(err.contains(want), "{server}: {err}");
        }
    }
}
