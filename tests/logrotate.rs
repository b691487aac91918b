//! The real logrotate (Debian's package; .ci/run installs it) rotating a
//! file 50 times while an application writes numbered lines at full speed
//! and reopens its log after each rotation, as its postrotate would make
//! it. The server's output must hold every line exactly once, in order.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn logrotate_bin() -> PathBuf {
    [
        "/usr/sbin/logrotate",
        "/sbin/logrotate",
        "/usr/bin/logrotate",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("logrotate is not installed (apt-get install logrotate; .ci/run does this)")
}

/// An application logging numbered lines; it reopens its log file when
/// `reopen` is set (its postrotate signal) and stops at `stop`.
struct App {
    reopen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl App {
    fn start(path: &Path, tag: &'static str) -> App {
        let (reopen, stop, written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (r, s, w, path) = (
            reopen.clone(),
            stop.clone(),
            written.clone(),
            path.to_path_buf(),
        );
        let thread = std::thread::spawn(move || {
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .expect("open log")
            };
            let mut f = open();
            let mut i = 0;
            while !s.load(Ordering::SeqCst) {
                let batch: String = (i..i + 100).map(|k| line(tag, k)).collect();
                f.write_all(batch.as_bytes()).expect("write log");
                i += 100;
                w.store(i, Ordering::SeqCst);
                if r.swap(false, Ordering::SeqCst) {
                    f = open();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        App {
            reopen,
            stop,
            written,
            thread: Some(thread),
        }
    }

    /// Stops the application (it never reopens: copytruncate); returns how
    /// many lines were written.
    fn finish_without_reopen(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("writer thread");
        self.written.load(Ordering::SeqCst)
    }

    /// Waits until the application reopened its log and wrote to the new
    /// file, then stops it; returns how many lines were written.
    fn finish(mut self) -> usize {
        wait_for("the application to reopen its log", || {
            !self.reopen.load(Ordering::SeqCst)
        });
        let after = self.written.load(Ordering::SeqCst) + 200;
        wait_for("lines in the newest file", || {
            self.written.load(Ordering::SeqCst) >= after
        });
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("writer thread");
        self.written.load(Ordering::SeqCst)
    }
}

/// Runs `logrotate -f` once with its own state file; fails the test if
/// logrotate fails.
fn force_rotation(conf: &Path, status_file: &Path) {
    let st = std::process::Command::new(logrotate_bin())
        .arg("-f")
        .arg("-s")
        .arg(status_file)
        .arg(conf)
        .output()
        .expect("logrotate runs");
    let listing = || {
        let dir = conf.parent().expect("in a directory");
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    assert!(
        st.status.success(),
        "logrotate: {}\nfiles now: {:?}",
        String::from_utf8_lossy(&st.stderr),
        listing()
    );
}

fn rotate_50_times(options: &str) {
    rotate_50_times_paced(options, || std::thread::sleep(Duration::from_millis(20)));
}

/// Like [`rotate_50_times`], calling `pace` before each rotation.
fn rotate_50_times_paced(options: &str, pace: impl Fn()) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let conf = tmp.path().join("logrotate.conf");
    std::fs::write(&conf, format!("{} {{\n{options}\n}}\n", log.display())).unwrap();
    let server = Server::with_directory(&out);
    let app = App::start(&log, "lr");
    wait_for("the first lines", || log.exists());
    let mut c = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    // A file rotated away before the client first looked was never its
    // to read: the rotations start once it follows the path.
    c.wait_log("started: ");
    let status_file = tmp.path().join("logrotate.status");
    for i in 0..50 {
        // Each rotation comes once the client has switched to the file the
        // one before it created: a generation that was rotated away (and,
        // with `rotate 0`, deleted) before anything was written to it or
        // the client looked holds nothing to ship and would not be a
        // switch to count, so the count must not depend on the scheduler.
        wait_for("the client to follow the previous rotation", || {
            c.log().matches("switching to the new file").count() >= i
        });
        pace();
        force_rotation(&conf, &status_file);
        app.reopen.store(true, Ordering::SeqCst);
    }
    let total = app.finish();
    wait_content(&routed(&out, "h", &log), &expected("lr", 0, total));
    assert!(c.stop().success());
    let switches = c.log().matches("switching to the new file").count();
    assert_eq!(
        switches,
        50,
        "the client followed every rotation:\n{}",
        c.log()
    );
}

#[test]
fn logrotate_create_50_times_loses_and_duplicates_nothing() {
    rotate_50_times("    rotate 5\n    create\n    missingok");
}

#[test]
fn logrotate_compress_delaycompress_50_times_loses_and_duplicates_nothing() {
    rotate_50_times("    rotate 3\n    compress\n    delaycompress\n    create\n    missingok");
}

#[test]
fn logrotate_rotate_0_deletes_each_file_at_once_and_loses_nothing() {
    // `rotate 0`: the rotated file is removed right away, usually before
    // the client has read its end. The client drains it through its open
    // descriptor.
    rotate_50_times("    rotate 0\n    create\n    missingok");
}

#[test]
fn logrotate_dateext_50_times_loses_and_duplicates_nothing() {
    // dateext names have a one-second resolution: one rotation per
    // second, so this scenario takes about 50 s. `rotate 2` makes
    // logrotate delete the older dated files as it goes.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    };
    rotate_50_times_paced(
        "    rotate 2\n    create\n    missingok\n    dateext\n    dateformat -%Y%m%d-%H%M%S",
        || {
            // Rotate 20 ms into the next second (logrotate's time(2) reads
            // a coarse clock that may lag a few ms); it is done long before
            // the second after.
            let was = now().as_secs();
            wait_for("the next second", || {
                let t = now();
                t.as_secs() > was && t.subsec_millis() >= 20
            });
        },
    );
}

#[test]
fn logrotate_nocreate_50_times_loses_and_duplicates_nothing() {
    // The application creates the new file itself when it reopens.
    rotate_50_times("    rotate 4\n    nocreate\n    missingok");
}

#[test]
fn logrotate_copytruncate_recovers_the_unread_tail_from_the_copy() {
    // The application keeps its descriptor (copytruncate is for programs
    // that cannot reopen). Lines written between logrotate's copy and its
    // truncate exist in neither file afterwards: logrotate's own window.
    // Everything else must arrive exactly once, in order.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let log = tmp.path().join("app.log");
    let conf = tmp.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n    rotate 3\n    copytruncate\n    missingok\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    let server = Server::with_directory(&out);
    let app = App::start(&log, "ct");
    wait_for("the first lines", || log.exists());
    let mut c = client_for(&server, &tmp.path().join("state"), "h", &[&log]);
    let status_file = tmp.path().join("logrotate.status");
    for _ in 0..50 {
        // Spaced so the client drains each copy before the next rotation
        // (back-to-back copytruncates while the client is behind are not
        // recovered yet: see the README).
        std::thread::sleep(Duration::from_millis(150));
        force_rotation(&conf, &status_file);
    }
    let total = app.finish_without_reopen();
    let dest = routed(&out, "h", &log);
    let want = expected("ct", 0, total);
    // Wait until the last line arrived, then compare.
    let last = line("ct", total - 1);
    wait_for("the last line", || read(&dest).ends_with(&last));
    let got = read(&dest);
    let lines: Vec<&str> = got.lines().collect();
    let mut seen = std::collections::HashSet::new();
    assert!(lines.iter().all(|l| seen.insert(*l)), "duplicated lines");
    let numbers: Vec<usize> = lines
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "out of order");
    let lost = want.lines().count() - lines.len();
    eprintln!("copytruncate: {lost} of {total} lines lost in logrotate's copy-to-truncate window over 50 rotations");
    assert!(
        c.log().contains("from its copy"),
        "the copy was used: {}",
        c.log()
    );
    assert!(c.stop().success());
}
