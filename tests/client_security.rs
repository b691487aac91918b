//! The client opens only what it means to, keeps its state honest, and
//! does not believe a server (or whoever took over a stream) about
//! offsets it never sent (issue 12, client side). Real binaries on
//! loopback in temp dirs; every wait is for a line, a file's content or a
//! process's exit, never a sleep.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Every file under `dir`, with its content.
fn tree(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(tree(&p));
        } else {
            out.push((p.clone(), String::from_utf8_lossy(&read_bytes(&p)).into()));
        }
    }
    out
}

fn read_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

/// Nothing under `out` holds `needle`.
fn assert_nowhere(out: &Path, needle: &str) {
    for (p, text) in tree(out) {
        assert!(!text.contains(needle), "{} holds {needle:?}", p.display());
    }
}

/// A followed directory (a `path` glob) with a legitimate file and a
/// symlink to a secret next to it, and a followed path that is a symlink.
struct Planted {
    _tmp: tempfile::TempDir,
    logs: PathBuf,
    out: PathBuf,
    server: Server,
    cfg_dir: PathBuf,
}

fn planted() -> Planted {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let logs = tmp.path().join("logs");
    let secret = tmp.path().join("shadow");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(&secret, "root:SECRET-HASH:19000::::::\n").unwrap();
    append_lines(&logs.join("a.log"), "a", 0, 5);
    let secret2 = tmp.path().join("gshadow");
    std::fs::write(&secret2, "root:SECRET-TWO::\n").unwrap();
    std::os::unix::fs::symlink(&secret2, logs.join("app.log")).unwrap();
    std::os::unix::fs::symlink(&secret, logs.join("single")).unwrap();
    let server = server_with(tmp.path(), &out, "");
    Planted {
        cfg_dir: tmp.path().to_path_buf(),
        _tmp: tmp,
        logs,
        out,
        server,
    }
}

impl Planted {
    fn client(&self, top: &str) -> Proc {
        let body = format!(
            "[[stream]]\npath = \"{0}/*.log\"\n[[stream]]\npath = \"{0}/single\"\n",
            self.logs.display()
        );
        let cfg = client_config(&self.cfg_dir, &self.server, &body);
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, format!("{top}{text}")).unwrap();
        client(&["--config", cfg.to_str().unwrap()])
    }
}

#[test]
fn a_symlink_to_a_secret_is_not_shipped_by_default() {
    let p = planted();
    let mut c = p.client("debug = true\n");
    let app = p.logs.join("app.log");
    let single = p.logs.join("single");
    c.wait_log(&format!("{}: not shipped: is a symlink", app.display()));
    c.wait_log(&format!("{}: not shipped: is a symlink", single.display()));
    let a = p.logs.join("a.log");
    wait_content(&routed(&p.out, "h", &a), &expected("a", 0, 5));
    // More lines through the legitimate file prove the client kept going
    // past every retry of the refused paths.
    append_lines(&a, "a", 5, 10);
    wait_content(&routed(&p.out, "h", &a), &expected("a", 0, 10));
    // A retry (every 5 s) found the same link again, quietly.
    c.wait_log(&format!("{}: still not shipped", single.display()));
    assert!(c.stop().success());
    assert_nowhere(&p.out, "SECRET");
    let log = c.log();
    for path in [&app, &single] {
        let said = format!("{}: not shipped", path.display());
        assert_eq!(log.matches(&said).count(), 1, "once per path:\n{log}");
    }
}

#[test]
fn a_symlink_is_shipped_with_follow_symlinks() {
    let p = planted();
    let mut c = p.client("follow_symlinks = true\n");
    let secret_line = "root:SECRET-HASH:19000::::::\n";
    wait_content(&routed(&p.out, "h", &p.logs.join("single")), secret_line);
    let app = routed(&p.out, "h", &p.logs.join("app.log"));
    wait_content(&app, "root:SECRET-TWO::\n");
    assert!(c.stop().success());
}

#[test]
fn a_fifo_at_a_followed_path_is_refused_once_and_stalls_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    let fifo = tmp.path().join("fifo.log");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let good = tmp.path().join("good.log");
    append_lines(&good, "g", 0, 3);
    let state = tmp.path().join("state");
    let files = [fifo.to_str().unwrap(), good.to_str().unwrap()];
    let addr = server.addr.to_string();
    let mut args = vec!["--server", &addr, "--hostname", "h", "--debug"];
    args.extend(["--state-file", state.to_str().unwrap()]);
    args.extend(files);
    let mut c = client(&args);
    c.wait_log(&format!("{}: not shipped: is a FIFO", fifo.display()));
    wait_content(&routed(&out, "h", &good), &expected("g", 0, 3));
    append_lines(&good, "g", 3, 6);
    wait_content(&routed(&out, "h", &good), &expected("g", 0, 6));
    c.wait_log(&format!("{}: still not shipped", fifo.display()));
    assert!(c.stop().success(), "SIGTERM is obeyed");
    let said = format!("{}: not shipped", fifo.display());
    assert_eq!(c.log().matches(&said).count(), 1, "{}", c.log());
}
