//! Identities and authorization (issue 12, item 2): named tokens,
//! `[[allow]]` rules, stream ownership, and the hijack of the review (a
//! second peer's INIT for the victim's stream id kicked the victim,
//! injected forged lines and made it skip 68 genuine ones). Real server,
//! real client where it matters, hostile raw TCP peers; every wait is for
//! a line, a log line or a metric.

use std::net::{Ipv4Addr, Shutdown};
use std::path::Path;
use std::process::{Command, Stdio};

use super::common::*;
use super::{connect_from, read_line, server, stream, wait_metric};

const WEB_SECRET: &str = "web-secret-0123456789abcdef";

/// The `[[token]]` entry for `name:secret`, from `loghamsterd --hash-token`.
fn token_entry(name_secret: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(SERVER_BIN)
        .arg("--hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run loghamsterd --hash-token");
    let mut stdin = child.stdin.take().expect("piped");
    writeln!(stdin, "{name_secret}").expect("write the token");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "--hash-token failed");
    let entry = String::from_utf8(out.stdout).expect("utf-8");
    assert!(!entry.contains(name_secret.split(':').nth(1).unwrap()));
    entry
}

/// Token `web` may write hosts `h*` anywhere; with `local`, every
/// loopback address may write any host too (the hijacker's credentials).
fn rules(local: bool) -> String {
    let mut r = token_entry(&format!("web:{WEB_SECRET}"));
    r.push_str("[output.audit]\npath = \"audit/{host}.log\"\n");
    r.push_str("[[allow]]\ntoken = \"web\"\nhosts = [\"h*\"]\noutputs = [\"(default)\"]\n");
    if local {
        r.push_str("[[allow]]\naddress = \"127.0.0.0/8\"\nhosts = [\"*\"]\noutputs = [\"*\"]\n");
    }
    r
}

/// `dir/token` holding `web:<secret>`, private to its owner.
fn token_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("token");
    std::fs::write(&path, format!("web:{WEB_SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A loghamsterc with the `web` token following `file` as host `h`.
fn client_with_token(dir: &Path, server: &Server, file: &Path) -> Proc {
    let body = format!(
        "token_file = \"{}\"\n[[stream]]\npath = \"{}\"\n",
        token_file(dir).display(),
        file.display()
    );
    let cfg = client_config(dir, server, &body);
    client(&["--config", cfg.to_str().unwrap()])
}

/// The server's state as text: its snapshot, then its journal.
fn state_text(out: &Path) -> String {
    [".loghamsterd.state", ".loghamsterd.state.journal"]
        .iter()
        .map(|name| std::fs::read_to_string(out.join(name)).unwrap_or_default())
        .collect()
}

/// The stream ids in the server's state.
fn known_ids(out: &Path) -> Vec<String> {
    let mut ids: Vec<String> = state_text(out)
        .lines()
        .filter_map(|l| l.strip_prefix("id = \"")?.strip_suffix('"'))
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Sends INIT from `from` and returns the connection and its answer.
fn init_from(from: Ipv4Addr, server: &Server, init: &str) -> (std::net::TcpStream, String) {
    use std::io::Write;
    let mut s = connect_from(from, server.addr);
    read_line(&mut s);
    read_line(&mut s);
    s.write_all(format!("INIT STREAM {init}\n").as_bytes())
        .unwrap();
    let reply = read_line(&mut s);
    (s, reply)
}

#[test]
fn a_client_with_the_right_token_ships_every_line_and_no_log_shows_its_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server(tmp.path(), &rules(false));
    let file = tmp.path().join("app.log");
    append_lines(&file, "t", 0, 500);
    let mut client = client_with_token(tmp.path(), &server, &file);
    wait_content(&routed(&out, "h", &file), &expected("t", 0, 500));
    append_lines(&file, "t", 500, 1000);
    wait_content(&routed(&out, "h", &file), &expected("t", 0, 1000));
    server.proc.wait_log(", token:web): h:");
    assert!(client.stop().success());
    for log in [server.proc.log(), client.log()] {
        assert!(!log.contains(WEB_SECRET), "a log shows the secret:\n{log}");
    }
}

#[test]
fn a_wrong_or_missing_token_is_refused_and_the_legitimate_stream_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path(), &rules(false));
    let good = format!("id:g1 offset:0 ack:1 token:web:{WEB_SECRET}");
    let (mut legit, reply) = stream(&server, "h1:/app.log", &good, b"one\n");
    assert!(reply.starts_with("200 "), "{reply:?}");
    assert_eq!(legit.line(), "ACK 4\n");
    let wrong = "token:web:not-the-secret-at-all";
    for (target, rest, want) in [
        (
            "h1:/app.log",
            wrong,
            "401 Unauthorized: unknown token or wrong secret\n",
        ),
        (
            "h1:/app.log",
            "token:nobody:whatever-it-is-123",
            "401 Unauthorized: unknown token or wrong secret\n",
        ),
        (
            "h1:/app.log",
            "token:web",
            "401 Unauthorized: malformed token (expected token:<name>:<secret>)\n",
        ),
        (
            "h1:/app.log",
            "id:x ack:1",
            "403 Forbidden: address:127.0.0.1 may not write to this server\n",
        ),
        (
            "db1:/app.log",
            &good,
            "403 Forbidden: token:web may not write host db1\n",
        ),
        (
            "h1:/app.log",
            &format!("{good} svc:audit"),
            "403 Forbidden: token:web may not write output audit\n",
        ),
    ] {
        let (mut raw, reply) = stream(&server, target, rest, b"forged\n");
        assert_eq!(reply, want, "{target} {rest}");
        raw.sock.shutdown(Shutdown::Write).unwrap();
        assert!(raw.closed());
    }
    // The legitimate stream goes on, on the same connection.
    legit.send(b"two\n");
    assert_eq!(legit.line(), "ACK 8\n");
    let reason = |r: &str| format!("loghamster_server_auth_refusals_total{{reason=\"{r}\"}}");
    wait_metric(&server, &reason("token"), 3.0);
    wait_metric(&server, &reason("identity"), 1.0);
    wait_metric(&server, &reason("host"), 1.0);
    wait_metric(
        &server,
        "loghamster_server_handshake_errors_total{reason=\"unauthorized\"}",
        6.0,
    );
    server
        .proc
        .wait_log("refused stream h1:/app.log: wrong secret for token \"web\"");
    server
        .proc
        .wait_log("refused stream h1:/app.log: token:web may not write output audit");
    let log = server.proc.log();
    assert!(
        !log.contains("not-the-secret") && !log.contains(WEB_SECRET),
        "{log}"
    );
    assert_eq!(
        log.matches("refused stream").count(),
        6,
        "one line per refusal:\n{log}"
    );
}

#[test]
fn the_hijack_of_a_known_stream_is_refused_and_the_owner_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // The hijacker may write any host from its address: only ownership
    // stands between it and the victim's stream.
    let server = server(tmp.path(), &rules(true));
    let file = tmp.path().join("app.log");
    append_lines(&file, "v", 0, 100);
    let _victim = client_with_token(tmp.path(), &server, &file);
    let output = routed(&out, "h", &file);
    wait_content(&output, &expected("v", 0, 100));
    let ids = known_ids(&out);
    assert_eq!(ids.len(), 1, "{ids:?}");
    // The review's attack: INIT for the victim's stream, an offset past
    // what it sent, and forged lines.
    let far = std::fs::metadata(&file).unwrap().len() + 1000;
    let init = format!("h:{} id:{} offset:{far} ack:1", file.display(), ids[0]);
    let (mut evil, reply) = init_from(OTHER, &server, &init);
    assert_eq!(reply, "409 Conflict: stream owned by another identity\n");
    use std::io::Write;
    let _ = evil.write_all(b"forged line\n");
    let _ = evil.shutdown(Shutdown::Write);
    wait_metric(
        &server,
        "loghamster_server_auth_refusals_total{reason=\"owner\"}",
        1.0,
    );
    server
        .proc
        .wait_log("address:127.0.0.2 may not take over a stream owned by token:web");
    // The victim keeps its connection and ships every line once.
    append_lines(&file, "v", 100, 200);
    wait_content(&output, &expected("v", 0, 200));
    let log = server.proc.log();
    assert!(!log.contains("takes the stream over"), "{log}");
    assert_eq!(
        log.matches(", token:web): h:").count(),
        1,
        "the victim reconnected:\n{log}"
    );
}

#[test]
fn address_rules_tell_loopback_addresses_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = "[[allow]]\naddress = \"127.0.0.2\"\nhosts = [\"a*\"]\noutputs = [\"*\"]\n";
    let server = server(tmp.path(), extra);
    let (_ok, reply) = init_from(OTHER, &server, "a1:/x ack:1");
    assert!(reply.starts_with("200 "), "{reply:?}");
    let (_no, reply) = init_from(LOCAL, &server, "a1:/x ack:1");
    assert_eq!(
        reply,
        "403 Forbidden: address:127.0.0.1 may not write to this server\n"
    );
    let (_no, reply) = init_from(OTHER, &server, "b1:/x ack:1");
    assert_eq!(
        reply,
        "403 Forbidden: address:127.0.0.2 may not write host b1\n"
    );
    // Nothing was created for the refused streams.
    assert!(!tmp.path().join("out/b1").exists());
    assert!(tmp.path().join("out/a1/x").exists());
}

#[test]
fn ownership_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let owner = format!("token:web:{WEB_SECRET}");
    let mut first = server(tmp.path(), &rules(true));
    let (mut raw, reply) = stream(
        &first,
        "h1:/k",
        &format!("id:k1 offset:0 ack:1 {owner}"),
        b"one\n",
    );
    assert!(reply.starts_with("200 "), "{reply:?}");
    assert_eq!(raw.line(), "ACK 4\n");
    raw.sock.shutdown(Shutdown::Write).unwrap();
    assert_eq!(raw.line(), "250 DONE 4\n");
    assert!(first.proc.stop().success());
    let state = state_text(&tmp.path().join("out"));
    assert!(state.contains("owner = \"token:web\""), "{state}");
    let second = server(tmp.path(), &rules(true));
    let (_evil, reply) = init_from(LOCAL, &second, "h1:/k id:k1 offset:0 ack:1");
    assert_eq!(reply, "409 Conflict: stream owned by another identity\n");
    let (_raw, reply) = stream(
        &second,
        "h1:/k",
        &format!("id:k1 offset:0 ack:1 {owner}"),
        b"",
    );
    assert_eq!(reply, "200 OK Ready to accept data offset:4\n");
}

#[test]
fn an_open_server_warns_once_and_records_owners_without_enforcing_them() {
    const WARNING: &str = "open server: no [[allow]] rules";
    let tmp = tempfile::tempdir().unwrap();
    let mut open = server(tmp.path(), "");
    let (_a, reply) = init_from(LOCAL, &open, "h1:/k id:k1 offset:0 ack:1");
    assert!(reply.starts_with("200 "), "{reply:?}");
    // Another address takes the stream over, as before identities.
    let (_b, reply) = init_from(OTHER, &open, "h1:/k id:k1 offset:0 ack:1");
    assert!(reply.starts_with("200 "), "{reply:?}");
    open.proc
        .wait_log("a new connection (address:127.0.0.2) takes the stream over");
    assert!(open.proc.stop().success());
    assert_eq!(
        open.proc.log().matches(WARNING).count(),
        1,
        "{}",
        open.proc.log()
    );
    let state = state_text(&tmp.path().join("out"));
    assert!(state.contains("owner = \"address:127.0.0.2\""), "{state}");

    let closed = tmp.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    let mut guarded = server(&closed, &rules(false));
    assert!(guarded.proc.stop().success());
    assert!(!guarded.proc.log().contains(WARNING));
}

#[test]
fn a_token_file_others_may_read_stops_the_client_with_one_clear_line() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path(), "");
    let file = tmp.path().join("app.log");
    let body = format!(
        "token_file = \"{}\"\n[[stream]]\npath = \"{}\"\n",
        token_file(tmp.path()).display(),
        file.display()
    );
    let cfg = client_config(tmp.path(), &server, &body);
    let token = tmp.path().join("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(c.wait_exit().code(), Some(2));
    let log = c.log();
    assert!(
        log.contains("`server.token_file`")
            && log.contains("mode 644")
            && log.contains("chmod 600"),
        "{log}"
    );
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(!log.contains(WEB_SECRET));
}
