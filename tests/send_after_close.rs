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
