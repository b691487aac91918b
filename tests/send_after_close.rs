//! `[[stream]] directory = ... filepattern = ...`: matching files are sent
//! whole once closed, exactly once each, compressed ones verbatim, and
//! deleted only after the server confirmed them.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;

fn dir_config(
    tmp: &Path,
    server: &Server,
    dir: &Path,
    pattern: &str,
    delete: bool,
) -> std::path::PathBuf {
    let body = format!(
        "[[stream]]\ndirectory = \"{}\"\nfilepattern = '{pattern}'\ndelete = {delete}\n",
        dir.display()
    );
    client_config(tmp, server, &body)
}

/// Pseudo-random bytes, like a compressed file (no line structure).
fn binary(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn closed_files_are_sent_whole_exactly_once_and_verbatim() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let dir = tmp.path().join("backup");
    std::fs::create_dir_all(&dir).unwrap();
    let server = Server::with_directory(&out);
    // There before the client starts (old enough to count as closed).
    let old = dir.join("app.log.1.gz");
    std::fs::write(&old, binary(300_000, 1)).unwrap();
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(past)
        .unwrap();
    std::fs::write(dir.join("notes.txt"), "not matching\n").unwrap();
    let cfg = dir_config(tmp.path(), &server, &dir, "*.log.*.gz", false);
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    wait_for("the existing file", || {
        std::fs::read(routed(&out, "h", &old)).ok() == std::fs::read(&old).ok()
    });
    // Written and closed while the client runs.
    let new = dir.join("app.log.2.gz");
    let mut f = std::fs::File::create(&new).unwrap();
    f.write_all(&binary(100_000, 2)).unwrap();
    f.write_all(&binary(100_000, 3)).unwrap();
    drop(f);
    // Moved in whole (as logrotate's compress does via a temp name).
    let staged = tmp.path().join("staged");
    std::fs::write(&staged, b"last line without newline").unwrap();
    let moved = dir.join("app.log.3.gz");
    std::fs::rename(&staged, &moved).unwrap();
    for p in [&new, &moved] {
        wait_for("a new file", || {
            std::fs::read(routed(&out, "h", p)).ok() == std::fs::read(p).ok()
        });
    }
    for p in [&old, &new, &moved] {
        c.wait_log(&format!("{}: sent", p.display()));
    }
    assert!(c.stop().success());
    assert!(
        !routed(&out, "h", &dir.join("notes.txt")).exists(),
        "pattern filters"
    );
    // Restarted, the client remembers what it sent: nothing again.
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    let more = dir.join("app.log.4.gz");
    std::fs::write(&more, binary(5000, 4)).unwrap();
    wait_for("the file written after restart", || {
        std::fs::read(routed(&out, "h", &more)).ok() == std::fs::read(&more).ok()
    });
    assert!(c.stop().success());
    for p in [&old, &new, &moved, &more] {
        assert_eq!(
            std::fs::read(routed(&out, "h", p)).unwrap(),
            std::fs::read(p).unwrap(),
            "{}",
            p.display()
        );
    }
    assert!(
        !c.log().contains("app.log.1.gz: following"),
        "not sent twice: {}",
        c.log()
    );
}

#[test]
fn delete_true_removes_files_only_after_the_server_confirmed_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let dir = tmp.path().join("spool");
    std::fs::create_dir_all(&dir).unwrap();
    let server = Server::with_directory(&out);
    let cfg = dir_config(tmp.path(), &server, &dir, "*.log", true);
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    let mut want = Vec::new();
    for i in 0..10 {
        let p = dir.join(format!("batch{i}.log"));
        let body = expected(&format!("f{i}"), 0, 2000);
        std::fs::write(&p, &body).unwrap();
        want.push((p, body));
    }
    for (p, body) in &want {
        wait_for("the file to be deleted", || !p.exists());
        // Deleted means the server had every byte before.
        assert_eq!(&read(&routed(&out, "h", p)), body);
    }
    assert!(c.stop().success());
}

#[test]
fn method_send_ships_what_exists_once_and_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let dir = tmp.path().join("archive");
    std::fs::create_dir_all(&dir).unwrap();
    let server = Server::with_directory(&out);
    let single = tmp.path().join("big.log");
    std::fs::write(
        &single,
        expected("single", 0, 20_000) + "no newline at the end",
    )
    .unwrap();
    let files: Vec<_> = (0..3).map(|i| dir.join(format!("old{i}.log"))).collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(f, expected(&format!("old{i}"), 0, 3000)).unwrap();
    }
    std::fs::write(dir.join("skip.txt"), "not matching\n").unwrap();
    let body = format!(
        "[[stream]]\npath = \"{}\"\nmethod = \"send\"\n[[stream]]\ndirectory = \"{}\"\nfilepattern = '*.log'\nmethod = \"send\"\n",
        single.display(),
        dir.display()
    );
    let cfg = client_config(tmp.path(), &server, &body);
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    assert!(c.wait_exit().success(), "{}", c.log());
    assert!(c.log().contains("4 files"), "{}", c.log());
    for f in files.iter().chain([&single]) {
        assert_eq!(
            std::fs::read(routed(&out, "h", f)).unwrap(),
            std::fs::read(f).unwrap(),
            "{}",
            f.display()
        );
    }
    assert!(!routed(&out, "h", &dir.join("skip.txt")).exists());
    // Again: everything is known complete; nothing is sent, it just exits.
    let mut c = client(&["--config", cfg.to_str().unwrap()]);
    assert!(c.wait_exit().success(), "{}", c.log());
    assert!(c.log().contains("0 files"), "{}", c.log());
}

/// A spool directory `*.log` files are sent from, its server and output.
struct Spool {
    tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    out: std::path::PathBuf,
    server: Server,
}

impl Spool {
    fn new() -> Spool {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let dir = tmp.path().join("spool");
        std::fs::create_dir_all(&dir).unwrap();
        let server = Server::with_directory(&out);
        Spool {
            tmp,
            dir,
            out,
            server,
        }
    }

    fn client(&self) -> Proc {
        let cfg = dir_config(self.tmp.path(), &self.server, &self.dir, "*.log", false);
        client(&["--config", cfg.to_str().unwrap()])
    }

    /// Waits for `path` to arrive as `want` and be confirmed; stops the
    /// client and checks nothing more arrived.
    fn arrives(&self, c: &mut Proc, path: &Path, want: &str) {
        let at = routed(&self.out, "h", path);
        wait_content(&at, want);
        c.wait_log(&format!("{}: sent (", path.display()));
        assert!(c.stop().success());
        assert_eq!(read(&at), want);
    }
}

/// Waits until the client has looked at `path` at start-up: it either
/// logged that a writer still holds it, or (the bug this guards against)
/// that it sent it.
fn wait_looked_at(c: &Proc, path: &Path) {
    let open = format!("{}: open for writing", path.display());
    let sent = format!("{}: sent (", path.display());
    wait_for("the client to look at the file", || {
        let log = c.log();
        log.contains(&open) || log.contains(&sent)
    });
}

/// Creates `path` for writing, with `body` and a modification time a
/// minute back: long idle, but still open.
fn idle_writer(path: &Path, body: &str) -> std::fs::File {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(body.as_bytes()).unwrap();
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    f.set_modified(past).unwrap();
    f
}

#[test]
fn an_idle_file_a_writer_still_holds_at_start_up_waits_for_its_close() {
    let spool = Spool::new();
    // Empty, idle for a minute, but its writer has not closed it.
    let p = spool.dir.join("a.log");
    let mut writer = idle_writer(&p, "");
    let mut c = spool.client();
    wait_looked_at(&c, &p);
    assert!(
        !c.log().contains(&format!("{}: sent (", p.display())),
        "sent while a writer held it open: {}",
        c.log()
    );
    writer.write_all(expected("a", 0, 100).as_bytes()).unwrap();
    drop(writer);
    spool.arrives(&mut c, &p, &expected("a", 0, 100));
}

#[test]
fn a_file_with_content_still_open_at_start_up_is_sent_whole_once_closed() {
    let spool = Spool::new();
    let p = spool.dir.join("b.log");
    let mut writer = idle_writer(&p, &expected("b", 0, 50));
    let mut c = spool.client();
    wait_looked_at(&c, &p);
    writer.write_all(expected("b", 50, 120).as_bytes()).unwrap();
    drop(writer);
    spool.arrives(&mut c, &p, &expected("b", 0, 120));
    assert_eq!(
        c.log().matches(&format!("{}: sent (", p.display())).count(),
        1,
        "sent once: {}",
        c.log()
    );
}

#[test]
fn a_file_moved_in_while_its_writer_still_holds_it_is_sent_once_closed() {
    let spool = Spool::new();
    let mut c = spool.client();
    c.wait_log("started:");
    // As logrotate renames a file its application still writes to.
    let staged = spool.dir.join("d.tmp");
    let mut writer = std::fs::File::create(&staged).unwrap();
    writer.write_all(expected("d", 0, 30).as_bytes()).unwrap();
    let p = spool.dir.join("d.log");
    std::fs::rename(&staged, &p).unwrap();
    c.wait_log(&format!("{}: open for writing", p.display()));
    writer.write_all(expected("d", 30, 80).as_bytes()).unwrap();
    drop(writer);
    spool.arrives(&mut c, &p, &expected("d", 0, 80));
}

#[test]
fn a_sent_file_that_grows_later_has_its_growth_sent_as_a_continuation() {
    let spool = Spool::new();
    let mut c = spool.client();
    let p = spool.dir.join("c.log");
    append_lines(&p, "c", 0, 40);
    let sent = format!("{}: sent (", p.display());
    c.wait_log(&sent);
    let at = routed(&spool.out, "h", &p);
    wait_content(&at, &expected("c", 0, 40));
    // Opened again, appended to and closed: only the new lines follow
    // (a resend from 0 would show as duplicates).
    append_lines(&p, "c", 40, 140);
    wait_content(&at, &expected("c", 0, 140));
    wait_for("the growth to be confirmed", || {
        c.log().matches(&sent).count() == 2
    });
    assert!(c.stop().success());
    // Grown while the client was not running: found by the start-up scan.
    append_lines(&p, "c", 140, 200);
    let mut c = spool.client();
    spool.arrives(&mut c, &p, &expected("c", 0, 200));
    assert!(
        c.log().contains(&format!(
            "{}: grew from {} to",
            p.display(),
            expected("c", 0, 140).len()
        )),
        "{}",
        c.log()
    );
}
