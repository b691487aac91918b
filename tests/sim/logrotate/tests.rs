//! Each logrotate mode's calls, events and resulting directory, as
//! recorded from `strace` of the real logrotate.

use std::path::{Path, PathBuf};

use loghamster::reactor::sys::inotify::mask::*;
use loghamster::tail::fs::Fs;

use super::*;
use crate::app::{line, parse_lines, App, Reopen};
use crate::fs::{compressed, SimFs};

const LOG: &str = "/var/log";

fn p(s: &str) -> PathBuf {
    Path::new(LOG).join(s)
}

/// `/var/log` (watched) and `/var/log/old` holding `files`.
fn world(files: &[(&str, &[u8])]) -> SimFs {
    let mut fs = SimFs::new();
    fs.mkdir_all(&p("old")).unwrap();
    for (name, content) in files {
        fs.write_file(&p(name), content).unwrap();
    }
    fs.watch(Path::new(LOG)).unwrap();
    fs
}

/// Every regular file of `dir` with its content.
fn listing(fs: &mut SimFs, dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(LOG).join(dir);
    let files = fs.list(&dir).unwrap();
    files
        .into_iter()
        .map(|(n, _)| {
            (
                n.to_string_lossy().into_owned(),
                fs.read_path(&dir.join(&n)).unwrap(),
            )
        })
        .collect()
}

fn files(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    list.iter()
        .map(|(n, c)| (n.to_string(), c.to_vec()))
        .collect()
}

/// Runs `cfg` on `app.log` to the end; returns the calls made.
fn rotate(fs: &mut SimFs, cfg: Config, stamp: u64) -> (Outcome, Vec<Op>) {
    let mut r = Rotation::new(cfg, &p("app.log"), stamp);
    let mut ops = Vec::new();
    loop {
        match r.step(fs) {
            Step::Did(op) => ops.push(op),
            Step::Postrotate => ops.push(Op::Postrotate),
            Step::Done(outcome) => {
                fs.check().unwrap();
                return (outcome, ops);
            }
        }
    }
}

fn rename(from: &str, to: &str) -> Op {
    Op::Rename {
        from: p(from),
        to: p(to),
        missing_ok: true,
    }
}

fn unlink(name: &str) -> Op {
    Op::Unlink {
        path: p(name),
        missing_ok: true,
    }
}

fn names_and_masks(fs: &mut SimFs) -> Vec<(String, u32)> {
    let evs = fs.drain_events();
    evs.into_iter()
        .map(|e| (e.name.to_string_lossy().into_owned(), e.mask))
        .collect()
}

fn ev(name: &str, mask: u32) -> (String, u32) {
    (name.to_owned(), mask)
}

#[test]
fn create_shifts_old_copies_renames_creates_then_disposes() {
    let initial: &[(&str, &[u8])] = &[
        ("app.log", b"cur\n"),
        ("app.log.1", b"one\n"),
        ("app.log.2", b"two\n"),
        ("app.log.3", b"three\n"),
    ];
    let mut fs = world(initial);
    let before = fs.stat_path(&p("app.log")).unwrap();
    let (outcome, ops) = rotate(&mut fs, Config::default(), 0);
    assert_eq!(outcome, Outcome::Rotated);
    let expected = vec![
        rename("app.log.3", "app.log.4"),
        rename("app.log.2", "app.log.3"),
        rename("app.log.1", "app.log.2"),
        Op::Rename {
            from: p("app.log"),
            to: p("app.log.1"),
            missing_ok: false,
        },
        Op::CreateOut(p("app.log")),
        Op::AttribOut,
        Op::CloseOut,
        Op::Postrotate,
        unlink("app.log.4"),
    ];
    assert_eq!(ops, expected);
    let after = files(&[
        ("app.log", b""),
        ("app.log.1", b"cur\n"),
        ("app.log.2", b"one\n"),
        ("app.log.3", b"two\n"),
    ]);
    assert_eq!(listing(&mut fs, ""), after);
    assert_eq!(fs.stat_path(&p("app.log.1")).unwrap().ino, before.ino);
    assert!(fs.stat_path(&p("app.log")).unwrap().born > before.born);
    let moves = [
        "app.log.3",
        "app.log.4",
        "app.log.2",
        "app.log.3",
        "app.log.1",
        "app.log.2",
        "app.log",
        "app.log.1",
    ];
    let mut want: Vec<(String, u32)> = moves
        .iter()
        .enumerate()
        .map(|(i, n)| ev(n, if i % 2 == 0 { MOVED_FROM } else { MOVED_TO }))
        .collect();
    want.extend([
        ev("app.log", CREATE),
        ev("app.log", ATTRIB),
        ev("app.log", CLOSE_WRITE),
        ev("app.log.4", DELETE),
    ]);
    assert_eq!(names_and_masks(&mut fs), want);
}

#[test]
fn create_without_old_copies_skips_their_renames() {
    let mut fs = world(&[("app.log", b"cur\n")]);
    let (outcome, ops) = rotate(&mut fs, Config::default(), 0);
    assert_eq!(outcome, Outcome::Rotated);
    assert_eq!(ops.len(), 8, "three skipped renames, no dispose: {ops:?}");
    assert_eq!(
        listing(&mut fs, ""),
        files(&[("app.log", b""), ("app.log.1", b"cur\n")])
    );
}

#[test]
fn nocreate_leaves_no_log_until_the_application_reopens_it() {
    let mut fs = world(&[]);
    let mut app = App::new("a", &p("app.log"), Reopen::Immediate);
    app.write_lines(&mut fs, 2).unwrap();
    let cfg = Config {
        create: false,
        ..Config::default()
    };
    let mut r = Rotation::new(cfg, &p("app.log"), 0);
    let mut saw_no_log = false;
    let outcome = r.run(&mut fs, |fs| {
        saw_no_log = fs.stat_path(&p("app.log")).is_none();
        app.hup(fs).unwrap();
    });
    assert_eq!(outcome, Outcome::Rotated);
    assert!(saw_no_log);
    app.write_lines(&mut fs, 1).unwrap();
    let expected = format!("{}{}", line("a", 1, 0), line("a", 1, 1));
    assert_eq!(
        listing(&mut fs, ""),
        files(&[("app.log", b"a 2 2\n"), ("app.log.1", expected.as_bytes())])
    );
    app.close(&mut fs);
}

#[test]
fn copytruncate_copies_what_the_file_holds_as_it_goes_and_loses_the_rest() {
    let mut fs = world(&[("app.log.1", b"one\n")]);
    let mut app = App::new("a", &p("app.log"), Reopen::Immediate);
    app.write_lines(&mut fs, 4).unwrap();
    let cfg = Config {
        copytruncate: true,
        chunk: 8,
        ..Config::default()
    };
    let mut r = Rotation::new(cfg, &p("app.log"), 0);
    let mut ops = Vec::new();
    for _ in 0..1000 {
        let op = match r.step(&mut fs) {
            Step::Did(op) => op,
            Step::Postrotate => Op::Postrotate,
            Step::Done(_) => break,
        };
        // Lines while the copy goes on (they are copied), and one between
        // the copy's last read and the truncate (it is lost).
        let chunks = ops.iter().filter(|op| **op == Op::CopyChunk).count();
        match r.next_op() {
            Some(Op::CopyChunk) if op == Op::CopyChunk && chunks < 3 => {
                app.write_lines(&mut fs, 1).unwrap()
            }
            Some(Op::TruncateCurrent) => app.write_lines(&mut fs, 1).unwrap(),
            _ => {}
        }
        ops.push(op);
    }
    assert!(r.is_done());
    let copied = parse_lines(&fs.read_path(&p("app.log.1")).unwrap()).unwrap();
    let last_copied = copied.last().unwrap().seq;
    assert!(last_copied > 3, "lines written during the copy are copied");
    assert_eq!(
        copied.iter().map(|l| l.seq).collect::<Vec<_>>(),
        (0..=last_copied).collect::<Vec<_>>()
    );
    assert_eq!(
        app.lines_started(),
        last_copied + 2,
        "one line fell between copy and truncate"
    );
    assert_eq!(fs.read_path(&p("app.log")).unwrap(), b"");
    assert_eq!(fs.read_path(&p("app.log.2")).unwrap(), b"one\n");
    let tail: Vec<&Op> = ops.iter().rev().take(4).collect();
    assert_eq!(
        tail,
        [
            &Op::Postrotate,
            &Op::CloseOut,
            &Op::CloseCurrent,
            &Op::TruncateCurrent
        ]
    );
    app.write_lines(&mut fs, 1).unwrap();
    let next = line("a", 1, last_copied + 2);
    assert_eq!(
        fs.read_path(&p("app.log")).unwrap(),
        next.as_bytes(),
        "O_APPEND writes at the truncated end"
    );
    app.close(&mut fs);
}

#[test]
fn copytruncate_events_and_the_writer_it_holds() {
    let mut fs = world(&[("app.log", b"0123456789")]);
    let cfg = Config {
        copytruncate: true,
        chunk: 6,
        ..Config::default()
    };
    let mut r = Rotation::new(cfg, &p("app.log"), 0);
    let (f, _) = fs.open(&p("app.log"), false).unwrap();
    r.step(&mut fs); // app.log.1 -> app.log.2, missing
    r.step(&mut fs); // app.log.2 ...
    r.step(&mut fs);
    assert_eq!(r.step(&mut fs), Step::Did(Op::OpenCurrent(p("app.log"))));
    assert_eq!(
        fs.writers(&f).unwrap(),
        Some(true),
        "logrotate opens the log O_RDWR"
    );
    assert_eq!(r.run(&mut fs, |_| {}), Outcome::Rotated);
    assert_eq!(fs.writers(&f).unwrap(), Some(false));
    let want = [
        ev("app.log.1", CREATE),
        ev("app.log.1", ATTRIB),
        ev("app.log.1", MODIFY),
        ev("app.log", MODIFY),
        ev("app.log", CLOSE_WRITE),
        ev("app.log.1", CLOSE_WRITE),
    ];
    assert_eq!(names_and_masks(&mut fs), want);
    assert_eq!(fs.read_path(&p("app.log.1")).unwrap(), b"0123456789");
}

#[test]
fn copytruncate_rotate_0_only_truncates_and_disposes_the_shifted_copy() {
    let mut fs = world(&[("app.log", b"cur\n"), ("app.log.1", b"one\n")]);
    let cfg = Config {
        copytruncate: true,
        rotate: 0,
        ..Config::default()
    };
    let (outcome, ops) = rotate(&mut fs, cfg, 0);
    assert_eq!(outcome, Outcome::Rotated);
    assert!(!ops
        .iter()
        .any(|op| matches!(op, Op::CreateOut(_) | Op::CopyChunk)));
    assert_eq!(listing(&mut fs, ""), files(&[("app.log", b"")]));
}

#[test]
fn rotate_0_renames_then_removes_the_rotated_file() {
    let mut fs = world(&[("app.log", b"cur\n"), ("app.log.1", b"one\n")]);
    let cfg = Config {
        rotate: 0,
        ..Config::default()
    };
    let (outcome, ops) = rotate(&mut fs, cfg, 0);
    assert_eq!(outcome, Outcome::Rotated);
    assert_eq!(ops.last(), Some(&unlink("app.log.1")));
    // logrotate still shifts as if `rotate 1`: an older copy survives.
    assert_eq!(
        listing(&mut fs, ""),
        files(&[("app.log", b""), ("app.log.2", b"one\n")])
    );
}

#[test]
fn compress_compresses_the_new_copy_after_postrotate() {
    let gz1 = compressed(b"one\n");
    let mut fs = world(&[("app.log", b"cur\n"), ("app.log.1.gz", &gz1)]);
    let cfg = Config {
        compress: true,
        ..Config::default()
    };
    let (outcome, ops) = rotate(&mut fs, cfg, 0);
    assert_eq!(outcome, Outcome::Rotated);
    let after_hook: Vec<Op> = ops
        .iter()
        .skip_while(|op| **op != Op::Postrotate)
        .skip(1)
        .cloned()
        .collect();
    let expected = vec![
        Op::OpenInput(p("app.log.1")),
        Op::CreateOut(p("app.log.1.gz")),
        Op::AttribOut,
        Op::CopyChunk,
        Op::CopyChunk,
        Op::AttribOut,
        Op::CloseOut,
        unlink("app.log.1"),
    ];
    assert_eq!(after_hook, expected);
    let after = files(&[
        ("app.log", b""),
        ("app.log.1.gz", &compressed(b"cur\n")),
        ("app.log.2.gz", &gz1),
    ]);
    assert_eq!(listing(&mut fs, ""), after);
    let evs = names_and_masks(&mut fs);
    let tail = &evs[evs.len() - 6..];
    let want = [
        ev("app.log.1.gz", CREATE),
        ev("app.log.1.gz", ATTRIB),
        ev("app.log.1.gz", MODIFY),
        ev("app.log.1.gz", ATTRIB),
        ev("app.log.1.gz", CLOSE_WRITE),
        ev("app.log.1", DELETE),
    ];
    assert_eq!(tail, want);
}

#[test]
fn delaycompress_compresses_the_previous_copy_before_shifting() {
    let gz2 = compressed(b"two\n");
    let mut fs = world(&[
        ("app.log", b"cur\n"),
        ("app.log.1", b"one\n"),
        ("app.log.2.gz", &gz2),
    ]);
    let cfg = Config {
        compress: true,
        delaycompress: true,
        ..Config::default()
    };
    let (outcome, ops) = rotate(&mut fs, cfg, 0);
    assert_eq!(outcome, Outcome::Rotated);
    assert_eq!(ops[0], Op::OpenInput(p("app.log.1")));
    let after = files(&[
        ("app.log", b""),
        ("app.log.1", b"cur\n"),
        ("app.log.2.gz", &compressed(b"one\n")),
        ("app.log.3.gz", &gz2),
    ]);
    assert_eq!(listing(&mut fs, ""), after);
}

#[test]
fn dateext_keeps_the_newest_and_removes_the_oldest() {
    let olds: Vec<(String, Vec<u8>)> = (1..=4)
        .map(|i| (format!("app.log-{i:08}"), format!("{i}\n").into_bytes()))
        .collect();
    let initial: Vec<(&str, &[u8])> = olds
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let mut all = vec![("app.log", &b"cur\n"[..])];
    all.extend(initial);
    let mut fs = world(&all);
    let cfg = Config {
        dateext: true,
        rotate: 2,
        ..Config::default()
    };
    let (outcome, ops) = rotate(&mut fs, cfg.clone(), 5);
    assert_eq!(outcome, Outcome::Rotated);
    assert_eq!(
        ops[..2],
        [1, 2].map(|i| Op::Unlink {
            path: p(&format!("app.log-{i:08}")),
            missing_ok: true
        })
    );
    let after = files(&[
        ("app.log", b""),
        ("app.log-00000004", b"4\n"),
        ("app.log-00000005", b"cur\n"),
    ]);
    assert_eq!(listing(&mut fs, ""), after);
    let (again, _) = rotate(&mut fs, cfg, 5);
    assert!(matches!(again, Outcome::Failed(why) if why.contains("already exists")));
}

#[test]
fn dateext_with_delaycompress_compresses_every_plain_dated_copy() {
    let mut fs = world(&[("app.log", b"cur\n"), ("app.log-00000001", b"one\n")]);
    let cfg = Config {
        dateext: true,
        compress: true,
        delaycompress: true,
        ..Config::default()
    };
    assert_eq!(rotate(&mut fs, cfg, 2).0, Outcome::Rotated);
    let after = files(&[
        ("app.log", b""),
        ("app.log-00000001.gz", &compressed(b"one\n")),
        ("app.log-00000002", b"cur\n"),
    ]);
    assert_eq!(listing(&mut fs, ""), after);
}

#[test]
fn olddir_moves_rotated_files_to_another_directory() {
    let mut fs = world(&[("app.log", b"cur\n"), ("old/app.log.1", b"one\n")]);
    let cfg = Config {
        olddir: Some("old".into()),
        ..Config::default()
    };
    assert_eq!(rotate(&mut fs, cfg, 0).0, Outcome::Rotated);
    assert_eq!(listing(&mut fs, ""), files(&[("app.log", b"")]));
    assert_eq!(
        listing(&mut fs, "old"),
        files(&[("app.log.1", b"cur\n"), ("app.log.2", b"one\n")])
    );
    let evs = names_and_masks(&mut fs);
    assert_eq!(evs[..2], [ev("app.log", MOVED_FROM), ev("app.log", CREATE)]);
}

#[test]
fn a_missing_olddir_fails_the_rotation_before_anything_is_created() {
    let mut fs = world(&[("app.log", b"cur\n")]);
    let cfg = Config {
        olddir: Some("/nowhere".into()),
        ..Config::default()
    };
    let (outcome, _) = rotate(&mut fs, cfg, 0);
    assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
    assert_eq!(listing(&mut fs, ""), files(&[("app.log", b"cur\n")]));
}

#[test]
fn missing_empty_and_symlinked_logs_are_skipped_or_fail_without_a_call() {
    let mut fs = world(&[]);
    assert_eq!(
        rotate(&mut fs, Config::default(), 0),
        (Outcome::Skipped("missing"), vec![])
    );
    let strict = Config {
        missingok: false,
        ..Config::default()
    };
    assert!(matches!(rotate(&mut fs, strict, 0).0, Outcome::Failed(_)));
    fs.write_file(&p("app.log"), b"").unwrap();
    let notifempty = Config {
        ifempty: false,
        ..Config::default()
    };
    assert_eq!(
        rotate(&mut fs, notifempty, 0),
        (Outcome::Skipped("empty"), vec![])
    );
    fs.unlink(&p("app.log")).unwrap();
    fs.symlink(Path::new("elsewhere"), &p("app.log")).unwrap();
    assert_eq!(
        rotate(&mut fs, Config::default(), 0),
        (Outcome::Skipped("symlink"), vec![])
    );
}

#[test]
fn a_lazy_application_writes_into_the_rotated_file_until_it_reopens() {
    let mut fs = world(&[]);
    let mut app = App::new("a", &p("app.log"), Reopen::Lazy);
    app.write_lines(&mut fs, 1).unwrap();
    let mut r = Rotation::new(Config::default(), &p("app.log"), 0);
    loop {
        match r.step(&mut fs) {
            Step::Did(_) => app.write_lines(&mut fs, 1).unwrap(),
            Step::Postrotate => app.hup(&mut fs).unwrap(),
            Step::Done(outcome) => break assert_eq!(outcome, Outcome::Rotated),
        }
    }
    app.write_lines(&mut fs, 1).unwrap();
    assert_eq!(fs.read_path(&p("app.log")).unwrap(), b"");
    let rotated = parse_lines(&fs.read_path(&p("app.log.1")).unwrap()).unwrap();
    assert_eq!(rotated.len() as u64, app.lines_started());
    app.reopen(&mut fs).unwrap();
    app.write_lines(&mut fs, 1).unwrap();
    assert_eq!(
        parse_lines(&fs.read_path(&p("app.log")).unwrap()).unwrap()[0].generation,
        2
    );
    app.close(&mut fs);
    fs.check().unwrap();
}
