//! More followed files than `max_open_files`: idle files are parked
//! (closed) and reopened, checked by identity, when they change.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

/// Regular files under `dir` the process holds open.
fn files_held(pid: u32, dir: &Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|p| p.starts_with(dir))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn more_files_than_max_open_files_all_arrive_and_few_stay_open() {
    const FILES: usize = 150;
    const CAP: usize = 40;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let path = |i: usize| logs.join(format!("f{i}.log"));
    for i in 0..FILES {
        append_lines(&path(i), &format!("f{i}"), 0, 5);
    }
    let server = Server::with_directory(&out);
    let cfg = client_config(
        tmp.path(),
        &server,
        &format!(
            "[tuning]\nmax_open_files = {CAP}\n[[stream]]\npath = \"{}/*.log\"\n",
            logs.display()
        ),
    );
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let mut n = 5;
    for round in 0..3 {
        for i in 0..FILES {
            wait_content(
                &routed(&out, "h", &path(i)),
                &expected(&format!("f{i}"), 0, n),
            );
        }
        wait_for("idle files to be parked", || {
            files_held(client.pid(), &logs) <= CAP
        });
        if round == 1 {
            // A parked file is rotated by rename, written through the old
            // descriptor, and a new file starts at its path.
            let old = logs.join("f7.log.1");
            let mut w = std::fs::OpenOptions::new()
                .append(true)
                .open(path(7))
                .unwrap();
            std::fs::rename(path(7), &old).unwrap();
            let tail: String = (n..n + 3).map(|k| line("f7", k)).collect();
            w.write_all(tail.as_bytes()).unwrap();
            assert_ne!(
                std::fs::metadata(&old).unwrap().ino(),
                std::fs::File::create(path(7))
                    .unwrap()
                    .metadata()
                    .unwrap()
                    .ino()
            );
            // The new file continues the numbering after the tail.
            append_lines(&path(7), "f7", n + 3, n + 5);
        }
        for i in 0..FILES {
            if round == 1 && i == 7 {
                continue;
            }
            append_lines(&path(i), &format!("f{i}"), n, n + 5);
        }
        n += 5;
    }
    for i in 0..FILES {
        wait_content(
            &routed(&out, "h", &path(i)),
            &expected(&format!("f{i}"), 0, n),
        );
    }
    assert!(client.log().contains("idle files parked"));
    assert!(client.stop().success());
}
