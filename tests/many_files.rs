//! The busy host in small: 200 files followed through one glob, one writer
//! that holds every file open and appends line by line, round robin, so
//! that every `write(2)` is an inotify event about a different file.
//! Every line of every file arrives, in order (the client coalesces these
//! events and reads a lingering file once per linger: nothing may be left
//! behind by that).

mod common;

use std::io::Write;

use common::*;

const FILES: usize = 200;
const ROUNDS: usize = 60;

#[test]
fn two_hundred_files_appended_line_by_line_arrive_whole_and_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let dir = tmp.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let paths: Vec<_> = (0..FILES)
        .map(|i| dir.join(format!("f{i:03}.log")))
        .collect();
    // The files exist, with a first line, before the client starts.
    for (i, p) in paths.iter().enumerate() {
        append_lines(p, &format!("f{i}"), 0, 1);
    }
    let server = Server::with_directory(&out);
    let cfg = client_config(
        tmp.path(),
        &server,
        &format!("[[stream]]\npath = \"{}/*.log\"\n", dir.display()),
    );
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let dests: Vec<_> = paths.iter().map(|p| routed(&out, "h", p)).collect();
    for (i, d) in dests.iter().enumerate() {
        wait_content(d, &expected(&format!("f{i}"), 0, 1));
    }
    let mut held: Vec<_> = paths
        .iter()
        .map(|p| std::fs::OpenOptions::new().append(true).open(p).unwrap())
        .collect();
    for k in 1..=ROUNDS {
        for (i, f) in held.iter_mut().enumerate() {
            f.write_all(line(&format!("f{i}"), k).as_bytes()).unwrap();
        }
        if k % 10 == 0 {
            // A pause now and then, so some rounds find the files quiet
            // (the first bytes after a pause start a linger afresh).
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
    }
    for (i, d) in dests.iter().enumerate() {
        wait_content(d, &expected(&format!("f{i}"), 0, ROUNDS + 1));
    }
    assert!(client.stop().success());
}
