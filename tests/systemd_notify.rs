//! `Type=notify` without systemd: the test plays the service manager. It
//! binds the unix datagram socket, hands it to the real daemon in
//! `NOTIFY_SOCKET` (a path for the server, an abstract `@name` for the
//! client, the two forms systemd uses) with a short `WATCHDOG_USEC`, and
//! reads what the daemon says: `READY=1` once it serves, `WATCHDOG=1`
//! again and again from its loop, `STOPPING=1` when SIGTERM arrives.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;

use common::*;

/// The manager's end: every datagram the daemon sent, in order.
struct Manager {
    sock: UnixDatagram,
    said: Vec<String>,
}

impl Manager {
    fn bind(addr: &SocketAddr) -> Manager {
        let sock = UnixDatagram::bind_addr(addr).expect("bind the notify socket");
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        Manager {
            sock,
            said: Vec::new(),
        }
    }

    /// Reads datagrams until `count` of them contain the line `want`.
    fn wait_for(&mut self, want: &str, count: usize) {
        let mut buf = [0u8; 4096];
        while self.lines(want) < count {
            let n = self
                .sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want:?} (so far {:?}): {e}", self.said));
            self.said
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }

    fn lines(&self, want: &str) -> usize {
        self.said
            .iter()
            .filter(|m| m.lines().any(|l| l == want))
            .count()
    }
}

/// The environment systemd gives a `Type=notify` service with
/// `WatchdogSec=`: pings are due every 100 ms here.
fn supervised(cmd: &mut Command, socket: &str) {
    cmd.env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
}

#[test]
fn the_server_says_ready_pings_the_watchdog_and_says_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify");
    let mut manager = Manager::bind(&SocketAddr::from_pathname(&path).unwrap());
    let mut cmd = Command::new(SERVER_BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--directory"])
        .arg(tmp.path().join("out"));
    supervised(&mut cmd, path.to_str().unwrap());
    let mut server = Server::start_command(cmd);
    manager.wait_for("READY=1", 1);
    let ready = &manager.said[0];
    assert!(
        ready.contains(&format!("STATUS=listening on {}", server.addr)),
        "{ready}"
    );
    manager.wait_for("WATCHDOG=1", 3);
    server.proc.signal("TERM");
    manager.wait_for("STOPPING=1", 1);
    assert!(server.proc.wait_exit().success());
    // READY came first: nothing was pinged before the daemon served.
    assert!(manager.said[0].contains("READY=1"), "{:?}", manager.said);
}

#[test]
fn the_client_says_ready_pings_the_watchdog_and_says_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let log = tmp.path().join("app.log");
    append_lines(&log, "n", 0, 10);
    let name = format!("loghamster-test-notify-{}", std::process::id());
    let mut manager = Manager::bind(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap());
    let mut cmd = Command::new(CLIENT_BIN);
    cmd.args(["--server", &server.addr.to_string(), "--hostname", "h"])
        .arg("--state-file")
        .arg(tmp.path().join("state"))
        .arg(&log);
    supervised(&mut cmd, &format!("@{name}"));
    let mut client = Proc::spawn("loghamsterc", cmd);
    manager.wait_for("READY=1", 1);
    assert!(
        manager.said[0].contains("STATUS=following 1 streams"),
        "{:?}",
        manager.said
    );
    wait_content(&routed(&out, "h", &log), &expected("n", 0, 10));
    manager.wait_for("WATCHDOG=1", 3);
    client.signal("TERM");
    manager.wait_for("STOPPING=1", 1);
    assert!(client.wait_exit().success());
}

#[test]
fn an_unusable_notify_socket_is_logged_and_the_daemon_runs_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(SERVER_BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--directory"])
        .arg(tmp.path().join("out"))
        .env("NOTIFY_SOCKET", "relative/notify");
    let mut server = Server::start_command(cmd);
    assert!(
        server
            .proc
            .log()
            .contains("cannot notify the service manager: NOTIFY_SOCKET=\"relative/notify\""),
        "{}",
        server.proc.log()
    );
    assert!(server.proc.stop().success());
}
