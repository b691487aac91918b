//! End to end: a followed directory (a `path` glob, a followed path's
//! directory, a `directory` source of files sent whole) that is deleted and
//! created again, renamed away and replaced, or missing for a while is
//! watched again at its configured path; files open in the old directory
//! are read to their end. Every line is checked at the server.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;

/// A server writing into `out`, and `logs`, a directory to follow.
struct Scene {
    tmp: tempfile::TempDir,
    out: PathBuf,
    logs: PathBuf,
    server: Server,
}

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let (out, logs) = (tmp.path().join("out"), tmp.path().join("logs"));
        std::fs::create_dir_all(&logs).unwrap();
        let server = Server::with_directory(&out);
        Scene {
            tmp,
            out,
            logs,
            server,
        }
    }

    /// A client following `path` (a glob or one file).
    fn client(&self, path: &Path) -> Proc {
        self.client_with(&format!("[[stream]]\npath = \"{}\"\n", path.display()))
    }

    /// A client configured with the `[[stream]]` sections `body`.
    fn client_with(&self, body: &str) -> Proc {
        let cfg = client_config(self.tmp.path(), &self.server, body);
        client(&["--config", cfg.to_str().unwrap()])
    }

    /// A client following `logs/*.log`.
    fn follow_glob(&self) -> Proc {
        self.client(&self.logs.join("*.log"))
    }

    /// Waits until the server holds exactly `want` for `file`.
    fn arrived(&self, file: &Path, want: &str) {
        wait_content(&routed(&self.out, "h", file), want);
    }

    /// Renames `logs` away.
    fn rename_away(&self) {
        std::fs::rename(&self.logs, self.tmp.path().join("logs.old")).unwrap();
    }
}

/// Lines of the client's log that mention `dir` and hold `what`.
fn said(c: &Proc, dir: &Path, what: &str) -> usize {
    let dir = dir.display().to_string();
    c.log()
        .lines()
        .filter(|l| l.contains(&dir) && l.contains(what))
        .count()
}

#[test]
fn a_followed_directory_deleted_and_created_again_is_watched_again() {
    let s = Scene::new();
    let a = s.logs.join("a.log");
    append_lines(&a, "a", 0, 50);
    let mut c = s.follow_glob();
    s.arrived(&a, &expected("a", 0, 50));
    // A redeploy: the directory goes, a new one takes its place at once.
    std::fs::remove_dir_all(&s.logs).unwrap();
    std::fs::create_dir(&s.logs).unwrap();
    let b = s.logs.join("b.log");
    append_lines(&b, "b", 0, 50);
    s.arrived(&b, &expected("b", 0, 50));
    // b.log was found, so the new directory is watched (before it was
    // listed): a file created now arrives through the watch.
    let d = s.logs.join("d.log");
    append_lines(&d, "d", 0, 20);
    s.arrived(&d, &expected("d", 0, 20));
    s.arrived(&a, &expected("a", 0, 50));
    assert!(c.stop().success());
}

#[test]
fn a_followed_directory_renamed_away_is_finished_and_its_replacement_followed() {
    let s = Scene::new();
    let a = s.logs.join("a.log");
    let mut writer = std::fs::File::create(&a).unwrap();
    writer.write_all(expected("a", 0, 50).as_bytes()).unwrap();
    let mut c = s.follow_glob();
    s.arrived(&a, &expected("a", 0, 50));
    // Renamed away while its writer still holds a.log, which it goes on
    // writing; a new directory appears at the path.
    s.rename_away();
    writer.write_all(expected("a", 50, 100).as_bytes()).unwrap();
    std::fs::create_dir(&s.logs).unwrap();
    let b = s.logs.join("b.log");
    append_lines(&b, "b", 0, 50);
    s.arrived(&b, &expected("b", 0, 50));
    s.arrived(&a, &expected("a", 0, 100));
    // The old a.log is finished once its writer is done; a new a.log in
    // the new directory follows it under the same path.
    writer
        .write_all(expected("a", 100, 120).as_bytes())
        .unwrap();
    drop(writer);
    append_lines(&a, "a2", 0, 20);
    s.arrived(&a, &(expected("a", 0, 120) + &expected("a2", 0, 20)));
    assert!(c.stop().success());
}

#[test]
fn a_followed_directory_missing_for_a_while_is_watched_once_it_appears() {
    let s = Scene::new();
    let a = s.logs.join("a.log");
    append_lines(&a, "a", 0, 10);
    let mut c = s.follow_glob();
    s.arrived(&a, &expected("a", 0, 10));
    std::fs::remove_dir_all(&s.logs).unwrap();
    // The client saw it go (and found nothing at the path).
    c.wait_log("went away");
    std::fs::create_dir(&s.logs).unwrap();
    let b = s.logs.join("b.log");
    append_lines(&b, "b", 0, 30);
    s.arrived(&b, &expected("b", 0, 30));
    c.wait_log("watching it now");
    // One WARN when it went, one INFO when it came back: the retries in
    // between are silent.
    assert_eq!(said(&c, &s.logs, "WARN"), 1, "{}", c.log());
    assert_eq!(said(&c, &s.logs, "watching it now"), 1, "{}", c.log());
    assert!(c.stop().success());
}

#[test]
fn a_followed_path_whose_directory_is_renamed_away_goes_on_with_the_new_file() {
    let s = Scene::new();
    let app = s.logs.join("app.log");
    let mut writer = std::fs::File::create(&app).unwrap();
    writer.write_all(expected("old", 0, 50).as_bytes()).unwrap();
    let mut c = s.client(&app);
    s.arrived(&app, &expected("old", 0, 50));
    // The old file is written to its end in the renamed directory and
    // read to its end; then nothing is at the path for a while.
    s.rename_away();
    writer
        .write_all(expected("old", 50, 80).as_bytes())
        .unwrap();
    drop(writer);
    s.arrived(&app, &expected("old", 0, 80));
    c.wait_log("old file done");
    // A new directory's app.log follows it.
    std::fs::create_dir(&s.logs).unwrap();
    append_lines(&app, "new", 0, 30);
    s.arrived(&app, &(expected("old", 0, 80) + &expected("new", 0, 30)));
    assert!(c.stop().success());
}

#[test]
fn a_directory_source_renamed_away_sends_the_closed_files_of_its_replacement() {
    let s = Scene::new();
    let first = s.logs.join("first.log");
    std::fs::write(&first, expected("first", 0, 10)).unwrap();
    let body = format!(
        "[[stream]]\ndirectory = \"{}\"\nfilepattern = '*.log'\n",
        s.logs.display()
    );
    let mut c = s.client_with(&body);
    s.arrived(&first, &expected("first", 0, 10));
    s.rename_away();
    std::fs::create_dir(&s.logs).unwrap();
    // Closed before or after the new directory is watched: sent either way.
    let second = s.logs.join("second.log");
    std::fs::write(&second, expected("second", 0, 10)).unwrap();
    s.arrived(&second, &expected("second", 0, 10));
    assert!(c.stop().success());
}
