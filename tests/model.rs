//! Model-based test: random sequences of what happens to a log file on a
//! real host (writes, rename rotations with a last write through the old
//! descriptor, truncation, deletion of the file and of rotated copies,
//! client stops, `kill -9` and restarts), run against the real daemons.
//!
//! An explicit model says, for every line written, whether it **must**
//! arrive or only **may** arrive. A line may be lost only where the
//! README's guarantees say so:
//! - its bytes were destroyed before the client read them: truncation, or
//!   deletion while no client held the file open. (While the client runs,
//!   the test waits until it holds a file, or read it whole, before it
//!   truncates or deletes it.)
//!
//! Rename rotations need no such rule: any number of them, while the
//! client runs, lags or is stopped, lose nothing as long as the rotated
//! files are still in the directory. Before a file is truncated or deleted
//! while the client runs, the test waits until the client holds it open
//! (`/proc/<pid>/fd`): destroying bytes the client never saw is the one
//! loss no shipper can prevent.
//!
//! Each random sequence also picks the client's wire compression (none,
//! lz4, zstd or gzip): offsets count plain bytes, so the model is the same.
//!
//! What is checked at the end: the output holds only lines that were
//! written, in strictly increasing order (so none twice, and per-file
//! order kept), and every **must** line is there.

mod common;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append this many lines at the path (creating the file).
    Write(u16),
    /// Rename the file at the path to `app.log.<k>`, then write this many
    /// lines through the writer's old descriptor (it has not reopened yet).
    Rotate(u8),
    /// Truncate the file at the path to 0 bytes.
    Truncate,
    /// Unlink the file at the path.
    Delete,
    /// Unlink the oldest rotated file still there.
    DeleteRotated,
    /// Stop the client: SIGTERM, or `kill -9` when true.
    Stop(bool),
    /// Start the client if it is stopped.
    Start,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u16..300).prop_map(Op::Write),
        3 => (0u8..50).prop_map(Op::Rotate),
        1 => Just(Op::Truncate),
        1 => Just(Op::Delete),
        1 => Just(Op::DeleteRotated),
        2 => any::<bool>().prop_map(Op::Stop),
        2 => Just(Op::Start),
    ]
}

/// One file the writer created.
struct Tracked {
    /// Where it is now; `None` once deleted.
    name: Option<PathBuf>,
    ino: u64,
    /// The writer's descriptor.
    fd: File,
    /// Lines in it, in order (a truncation empties it).
    lines: Vec<u64>,
}

struct Model {
    /// The client's `--compression` (`none` or a codec).
    compression: &'static str,
    dir: PathBuf,
    log: PathBuf,
    out: PathBuf,
    state: PathBuf,
    server: Server,
    client: Option<Proc>,
    files: Vec<Tracked>,
    /// Index in `files` of the file at the path.
    at_path: Option<usize>,
    next_line: u64,
    rotations: u32,
    /// Lines allowed to be missing.
    may: BTreeSet<u64>,
}

fn text(n: u64) -> String {
    line("m", n as usize)
}

impl Model {
    fn new(dir: &Path, compression: &'static str) -> Model {
        let out = dir.join("out");
        let log = dir.join("app.log");
        Model {
            compression,
            dir: dir.to_path_buf(),
            out: routed(&out, "h", &log),
            server: Server::with_directory(&out),
            log,
            state: dir.join("state"),
            client: None,
            files: Vec::new(),
            at_path: None,
            next_line: 0,
            rotations: 0,
            may: BTreeSet::new(),
        }
    }

    /// Line numbers in the output now, in output order.
    fn arrived(&self) -> Vec<u64> {
        let Ok(bytes) = std::fs::read(&self.out) else {
            return Vec::new();
        };
        String::from_utf8_lossy(&bytes)
            .split_inclusive('\n')
            .filter_map(|l| l.get(2..10)?.parse().ok())
            .collect()
    }

    /// Lines of file `i` not in the output yet become "may".
    fn unarrived_may_be_lost(&mut self, i: usize) {
        let arrived: BTreeSet<u64> = self.arrived().into_iter().collect();
        let lost = self.files[i].lines.iter().filter(|n| !arrived.contains(n));
        self.may.extend(lost);
    }

    /// While the client runs: waits until it holds file `i` open.
    fn wait_until_held(&self, i: usize) {
        let Some(c) = &self.client else { return };
        let (pid, ino) = (c.pid(), self.files[i].ino);
        wait_for("the client to open the file", || {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
                d.filter_map(Result::ok)
                    .any(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == ino))
            })
        });
    }

    /// While the client runs: waits until it holds file `i` open or every
    /// line of it arrived.
    fn wait_until_held_or_done(&self, i: usize) {
        let Some(c) = &self.client else { return };
        let (pid, ino) = (c.pid(), self.files[i].ino);
        wait_for("the client to open or finish the file", || {
            let arrived: BTreeSet<u64> = self.arrived().into_iter().collect();
            self.files[i].lines.iter().all(|n| arrived.contains(n))
                || std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
                    d.filter_map(Result::ok)
                        .any(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == ino))
                })
        });
    }

    fn write(&mut self, i: usize, n: u64) {
        let from = self.next_line;
        self.next_line += n;
        let chunk: String = (from..from + n).map(text).collect();
        let f = &mut self.files[i];
        f.fd.write_all(chunk.as_bytes()).expect("append");
        f.lines.extend(from..from + n);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write(n) => {
                let i = match self.at_path {
                    Some(i) => i,
                    None => {
                        let fd = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&self.log)
                            .expect("create log");
                        let ino = fd.metadata().expect("stat").ino();
                        self.files.push(Tracked {
                            name: Some(self.log.clone()),
                            ino,
                            fd,
                            lines: Vec::new(),
                        });
                        self.at_path = Some(self.files.len() - 1);
                        self.files.len() - 1
                    }
                };
                self.write(i, n.into());
            }
            Op::Rotate(tail) => {
                let Some(i) = self.at_path.take() else { return };
                self.rotations += 1;
                let to = self.dir.join(format!("app.log.{}", self.rotations));
                std::fs::rename(&self.log, &to).expect("rename");
                self.files[i].name = Some(to);
                self.write(i, tail.into());
            }
            Op::Truncate => {
                let Some(i) = self.at_path else { return };
                self.wait_until_held(i);
                self.files[i].fd.set_len(0).expect("truncate");
                self.unarrived_may_be_lost(i);
                self.files[i].lines.clear();
            }
            Op::Delete => {
                let Some(i) = self.at_path.take() else { return };
                self.wait_until_held(i);
                self.delete(i);
            }
            Op::DeleteRotated => {
                let oldest = (0..self.files.len())
                    .find(|&i| self.files[i].name.is_some() && Some(i) != self.at_path);
                if let Some(i) = oldest {
                    // The client holds it, or has read it whole (and let
                    // it go): deleting a file it never saw is the loss
                    // nobody can prevent, and what `delete` counts.
                    self.wait_until_held_or_done(i);
                    self.delete(i);
                }
            }
            Op::Stop(kill) => {
                let Some(mut c) = self.client.take() else {
                    return;
                };
                if kill {
                    c.kill9();
                } else {
                    assert!(c.stop().success(), "client stopped cleanly");
                }
            }
            Op::Start => self.start(),
        }
    }

    fn delete(&mut self, i: usize) {
        let name = self.files[i].name.take().expect("named");
        std::fs::remove_file(name).expect("unlink");
        if self.client.is_none() {
            // Nobody holds it: what was not read is gone.
            self.unarrived_may_be_lost(i);
        }
    }

    /// Starts the client. It will read every file still in the directory
    /// (the path's and every rotated one); what is left unread in a file
    /// deleted meanwhile cannot arrive.
    fn start(&mut self) {
        if self.client.is_some() {
            return;
        }
        for i in 0..self.files.len() {
            let f = &self.files[i];
            let kept = Some(i) == self.at_path || f.name.is_some();
            if !kept {
                self.unarrived_may_be_lost(i);
            }
        }
        let c = client(&[
            "--server",
            &self.server.addr.to_string(),
            "--state-file",
            self.state.to_str().unwrap(),
            "--hostname",
            "h",
            "--compression",
            self.compression,
            self.log.to_str().unwrap(),
        ]);
        // (A signal before the client has set up its signal handling
        // would simply kill it.) `started:` comes once the state file
        // says since when the path is followed: a `kill -9` from then on
        // loses no generation born since.
        c.wait_log("started:");
        self.client = Some(c);
    }

    fn must(&self) -> Vec<u64> {
        (0..self.next_line)
            .filter(|n| !self.may.contains(n))
            .collect()
    }

    fn check(mut self) {
        if std::env::var_os("MODEL_DEBUG").is_some() {
            eprintln!(
                "STATE FILE:\n{}",
                std::fs::read_to_string(&self.state).unwrap_or_default()
            );
            for f in &self.files {
                eprintln!(
                    "FILE {:?} ino {} lines {:?}..{:?}",
                    f.name,
                    f.ino,
                    f.lines.first(),
                    f.lines.last()
                );
            }
        }
        self.start();
        let must = self.must();
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let got: BTreeSet<u64> = self.arrived().into_iter().collect();
            let missing: Vec<u64> = must.iter().filter(|n| !got.contains(n)).copied().collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {} lines that must arrive, first {:?}; arrived {} lines, may-be-lost {:?}",
                missing.len(),
                &missing[..missing.len().min(10)],
                got.len(),
                self.may
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut c = self.client.take().expect("running");
        assert!(c.stop().success(), "client stopped cleanly");
        let bytes = std::fs::read(&self.out).unwrap_or_default();
        let text_out = String::from_utf8_lossy(&bytes);
        let mut last = None;
        for l in text_out.split_inclusive('\n') {
            let n: u64 = l
                .get(2..10)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not a written line: {l:?}"));
            assert_eq!(l, text(n), "line {n} arrived damaged");
            assert!(n < self.next_line, "line {n} was never written");
            assert!(
                last.is_none_or(|p| n > p),
                "line {n} after line {last:?}: duplicated or out of order"
            );
            last = Some(n);
        }
    }
}

/// The sequences are drawn from a fixed seed, so every run (and CI) plays
/// the same histories and a failure can be played again; `MODEL_SEED=N`
/// picks other ones, `MODEL_SEED=random` new ones each run (to explore:
/// `MODEL_SEED=random MODEL_CASES=200 cargo test --test model`).
const MODEL_SEED: u64 = 0x6c6f_6768_616d_7374;

fn config() -> ProptestConfig {
    let rng_seed = match std::env::var("MODEL_SEED").ok().as_deref() {
        Some("random") => proptest::test_runner::RngSeed::Random,
        Some(n) => proptest::test_runner::RngSeed::Fixed(
            n.parse().expect("MODEL_SEED: a number or \"random\""),
        ),
        None => proptest::test_runner::RngSeed::Fixed(MODEL_SEED),
    };
    ProptestConfig {
        rng_seed,
        cases: std::env::var("MODEL_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(12),
        max_shrink_iters: std::env::var("MODEL_SHRINK")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(32),
        ..ProptestConfig::default()
    }
}

/// Runs one sequence of operations and checks the outcome.
fn run(ops: &[Op]) {
    run_with(ops, "none");
}

/// Runs one sequence with the client's `--compression` set to `codec`.
fn run_with(ops: &[Op], codec: &'static str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Model::new(tmp.path(), codec);
    m.start();
    for op in ops {
        m.apply(op);
    }
    m.check();
}

/// Sequences proptest found, kept as plain tests.
#[test]
fn truncated_then_killed_then_written_and_rotated_while_away() {
    run(&[
        Op::Write(214),
        Op::Truncate,
        Op::Stop(true),
        Op::Write(51),
        Op::Rotate(35),
    ]);
}

#[test]
fn truncated_and_rewritten_before_the_client_read_it_then_killed() {
    run(&[
        Op::Write(145),
        Op::Write(237),
        Op::Write(267),
        Op::Truncate,
        Op::Write(73),
        Op::Stop(true),
    ]);
}

#[test]
fn rotated_then_written_many_times_while_running() {
    run(&[
        Op::Write(15),
        Op::Rotate(13),
        Op::Truncate,
        Op::Write(29),
        Op::Rotate(35),
        Op::Rotate(10),
        Op::Write(161),
        Op::Write(165),
        Op::Rotate(30),
    ]);
}

#[test]
fn killed_restarted_then_truncated_written_and_rotated() {
    run(&[
        Op::Stop(true),
        Op::Start,
        Op::Write(41),
        Op::Truncate,
        Op::Write(149),
        Op::Write(43),
        Op::Write(68),
        Op::Write(229),
        Op::Write(5),
        Op::Write(247),
        Op::Write(212),
        Op::Rotate(48),
    ]);
}

#[test]
fn rotated_then_rewritten_truncated_deleted_and_recreated() {
    use Op::*;
    run(&[
        Write(1),
        Rotate(1),
        Write(131),
        Truncate,
        Delete,
        Write(173),
    ]);
}

#[test]
fn truncated_after_restarts_and_rotations_with_a_shorter_rewrite() {
    use Op::*;
    run(&[
        Truncate,
        Stop(true),
        DeleteRotated,
        Write(35),
        Write(122),
        Write(10),
        Start,
        Write(94),
        Delete,
        Rotate(46),
        Start,
        Write(272),
        Rotate(33),
        Truncate,
        Write(159),
        Start,
        Stop(false),
        Rotate(46),
        Rotate(29),
        Write(247),
        Start,
        Stop(false),
        Start,
        Write(132),
        Write(96),
        Truncate,
        Write(149),
        Write(160),
    ]);
}

/// A file truncated and rotated away, its successor truncated and
/// rewritten, `kill -9`: after the restart the successor's truncation took
/// the finished predecessor for a copytruncate copy and sent it again.
#[test]
fn truncated_and_rotated_then_the_successor_truncated_and_killed() {
    use Op::*;
    run_with(
        &[
            Write(260),
            Write(169),
            Truncate,
            Rotate(2),
            Start,
            Start,
            Write(15),
            Truncate,
            Write(9),
            Write(244),
            Stop(true),
        ],
        "zstd",
    );
}

/// The path's first file created and rotated away while the client
/// looked: never read (missed between listing the directory and opening
/// the path).
#[test]
fn created_and_rotated_away_while_the_client_looked_then_stopped() {
    use Op::*;
    run(&[
        Write(261),
        Rotate(34),
        Start,
        Write(296),
        Truncate,
        Truncate,
        Stop(false),
        Truncate,
        Rotate(4),
    ]);
}

/// As above, found only at the next rotation and read after the file that
/// followed it.
#[test]
fn truncated_twice_rotated_then_started_written_rotated_and_deleted() {
    use Op::*;
    run(&[
        Write(203),
        Rotate(37),
        Write(119),
        Truncate,
        Truncate,
        Write(45),
        Rotate(3),
        Start,
        Write(283),
        Rotate(0),
        Rotate(39),
        Delete,
    ]);
}

/// The first file rotated away while the client was listing, then
/// deleted once the client had it open (for one attempt of the listing,
/// which then let it go): its lines were lost.
#[test]
fn rotated_while_listed_then_deleted_once_opened() {
    use Op::*;
    run_with(
        &[
            Write(15),
            Rotate(44),
            Truncate,
            Delete,
            DeleteRotated,
            Write(35),
            Start,
            Write(74),
            Write(234),
            Write(235),
            Truncate,
        ],
        "zstd",
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_line_the_model_requires_arrives_once_and_in_order(
        codec in prop_oneof![Just("none"), Just("lz4"), Just("zstd"), Just("gzip")],
        ops in proptest::collection::vec(op(), 1..30)
    ) {
        run_with(&ops, codec);
    }
}

/// Found by the property test under load: the first file written and
/// rotated away, then `kill -9` before the client had saved since when it
/// followed the path (it logged `started:` one loop turn before that
/// save), so the restart never read the rotated file.
#[test]
fn stopped_then_rotated_truncated_and_deleted_with_lz4() {
    use Op::*;
    run_with(
        &[
            Truncate,
            Write(181),
            Write(258),
            Rotate(23),
            Delete,
            Stop(true),
            Rotate(11),
            Truncate,
            Delete,
            Rotate(12),
            Write(67),
            Write(33),
            Write(38),
            Write(127),
            Write(62),
            Rotate(37),
            Write(181),
            Truncate,
            Truncate,
            Write(254),
            Rotate(46),
            Write(160),
            Write(152),
        ],
        "lz4",
    );
}

/// Found by the property test (in CI), the same loss as above: the file
/// rotated while the client was stopped by a `kill -9` that came before
/// its first save.
#[test]
fn stopped_then_rotated_and_written_with_gzip() {
    use Op::*;
    run_with(
        &[
            Write(260),
            Stop(true),
            Rotate(33),
            Write(264),
            Write(134),
            Write(188),
            Write(182),
        ],
        "gzip",
    );
}

/// Found by the property test (in CI), the same loss once more: two
/// generations rotated away, `kill -9` before the first save, and after
/// the restart neither rotated file was opened (the test timed out
/// waiting for the client to hold the older one).
#[test]
fn rotated_twice_killed_then_the_oldest_deleted_after_the_restart() {
    use Op::*;
    run_with(
        &[
            Truncate,
            Rotate(38),
            Write(39),
            DeleteRotated,
            Write(244),
            Write(222),
            Write(254),
            Write(249),
            Write(79),
            Start,
            Rotate(40),
            Delete,
            Write(78),
            Rotate(13),
            Stop(true),
            Write(67),
            Start,
            DeleteRotated,
            Write(198),
            Rotate(47),
        ],
        "zstd",
    );
}
