//! Every call of the simulated host and the events it queues, compared
//! with what Linux does (the sequences were recorded on a real kernel).

use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use loghamster::reactor::sys::inotify::mask::*;
use loghamster::tail::fs::{Fs, Kind};

use super::*;

const LOG: &str = "/var/log";

fn p(s: &str) -> PathBuf {
    Path::new(LOG).join(s)
}

/// A host with `/var/log` watched.
fn host() -> SimFs {
    let mut fs = SimFs::new();
    fs.mkdir_all(Path::new(LOG)).unwrap();
    fs.watch(Path::new(LOG)).unwrap();
    fs
}

/// The queued events as `(dir, name, mask, cookie != 0)`, drained.
fn events(fs: &mut SimFs) -> Vec<(String, String, u32, bool)> {
    fs.drain_events()
        .into_iter()
        .map(|e| {
            let dir = e.dir.display().to_string();
            (
                dir,
                e.name.to_string_lossy().into_owned(),
                e.mask,
                e.cookie != 0,
            )
        })
        .collect()
}

fn ev(name: &str, mask: u32) -> (String, String, u32, bool) {
    let cookie = mask & (MOVED_FROM | MOVED_TO) != 0;
    (LOG.to_owned(), name.to_owned(), mask, cookie)
}

fn read_all(fs: &mut SimFs, f: &SimFile) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let n = fs.read_at(f, &mut buf, 0).unwrap();
    buf[..n].to_vec()
}

#[test]
fn create_write_close_and_consecutive_writes_merge() {
    let mut fs = host();
    let w = fs.create(&p("a")).unwrap();
    fs.write(&w, b"x\n");
    fs.write(&w, b"y\n");
    fs.write(&w, b"");
    fs.close(w);
    assert_eq!(
        events(&mut fs),
        [ev("a", CREATE), ev("a", MODIFY), ev("a", CLOSE_WRITE)]
    );
    assert_eq!(fs.read_path(&p("a")).unwrap(), b"x\ny\n");
}

#[test]
fn interleaved_writes_to_two_files_do_not_merge() {
    let mut fs = host();
    let a = fs.create(&p("a")).unwrap();
    let b = fs.create(&p("b")).unwrap();
    fs.drain_events();
    fs.write(&a, b"1");
    fs.write(&b, b"1");
    fs.write(&a, b"2");
    assert_eq!(
        events(&mut fs),
        [ev("a", MODIFY), ev("b", MODIFY), ev("a", MODIFY)]
    );
    fs.close(a);
    fs.close(b);
}

#[test]
fn create_truncates_an_existing_file_with_modify_and_create_new_refuses_it() {
    let mut fs = host();
    let w = fs.create(&p("a")).unwrap();
    fs.write(&w, b"old");
    fs.close(w);
    fs.drain_events();
    let w = fs.create(&p("a")).unwrap();
    assert_eq!(events(&mut fs), [ev("a", MODIFY)]);
    assert_eq!(fs.read_path(&p("a")).unwrap(), b"");
    let e = fs.create_new(&p("a")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    fs.close(w);
    let w = fs.open_or_create(&p("a")).unwrap();
    fs.write(&w, b"kept");
    fs.close(w);
    let w = fs.open_or_create(&p("a")).unwrap();
    fs.write(&w, b"+");
    fs.close(w);
    assert_eq!(fs.read_path(&p("a")).unwrap(), b"kept+");
    assert!(fs.open_append(&p("missing")).is_none());
}

#[test]
fn rename_pairs_share_a_fresh_nonzero_cookie_within_and_across_dirs() {
    let mut fs = host();
    fs.mkdir(&p("old")).unwrap();
    fs.watch(&p("old")).unwrap();
    fs.write_file(&p("a"), b"").unwrap();
    fs.drain_events();
    fs.rename(&p("a"), &p("a.1")).unwrap();
    fs.rename(&p("a.1"), &p("old/a.1")).unwrap();
    let evs = fs.drain_events();
    let masks: Vec<u32> = evs.iter().map(|e| e.mask).collect();
    assert_eq!(masks, [MOVED_FROM, MOVED_TO, MOVED_FROM, MOVED_TO]);
    assert_eq!(
        (evs[1].dir.as_path(), evs[1].name.as_os_str()),
        (Path::new(LOG), "a.1".as_ref())
    );
    assert_eq!(
        (evs[3].dir.as_path(), evs[3].name.as_os_str()),
        (p("old").as_path(), "a.1".as_ref())
    );
    assert!(evs.iter().all(|e| e.cookie != 0));
    assert_eq!(evs[0].cookie, evs[1].cookie);
    assert_eq!(evs[2].cookie, evs[3].cookie);
    assert_ne!(evs[0].cookie, evs[2].cookie);
}

#[test]
fn rename_into_an_unwatched_dir_shows_only_moved_from() {
    let mut fs = host();
    fs.mkdir(Path::new("/elsewhere")).unwrap();
    fs.write_file(&p("a"), b"").unwrap();
    fs.drain_events();
    fs.rename(&p("a"), Path::new("/elsewhere/a")).unwrap();
    assert_eq!(events(&mut fs), [ev("a", MOVED_FROM)]);
}

#[test]
fn rename_over_a_target_replaces_it_silently_and_its_writer_keeps_the_old_name() {
    let mut fs = host();
    let a = fs.create(&p("a")).unwrap();
    let b = fs.create(&p("b")).unwrap();
    let b_ino = fs.writer_meta(&b).ino;
    let (reader, _) = fs.open(&p("b"), false).unwrap();
    fs.drain_events();
    fs.rename(&p("a"), &p("b")).unwrap();
    assert_eq!(events(&mut fs), [ev("a", MOVED_FROM), ev("b", MOVED_TO)]);
    assert_eq!(fs.fstat(&reader).unwrap().nlink, 0);
    fs.write(&b, b"into the replaced file");
    fs.close(b);
    assert_eq!(events(&mut fs), [ev("b", MODIFY), ev("b", CLOSE_WRITE)]);
    assert_eq!(fs.read_path(&p("b")).unwrap(), b"");
    assert_eq!(read_all(&mut fs, &reader), b"into the replaced file");
    assert_eq!(reader.ino(), b_ino);
    fs.close(a);
}

#[test]
fn rename_onto_another_name_of_the_same_inode_does_nothing() {
    let mut fs = host();
    fs.write_file(&p("a"), b"").unwrap();
    fs.link(&p("a"), &p("b")).unwrap();
    fs.drain_events();
    fs.rename(&p("a"), &p("b")).unwrap();
    assert!(fs.drain_events().is_empty());
    assert_eq!(fs.names(Path::new(LOG)).unwrap(), ["a", "b"]);
}

#[test]
fn an_append_writer_follows_its_file_through_a_rename() {
    let mut fs = host();
    let w = fs.create(&p("app.log")).unwrap();
    fs.write(&w, b"1\n");
    fs.rename(&p("app.log"), &p("app.log.1")).unwrap();
    let new = fs.create(&p("app.log")).unwrap();
    fs.drain_events();
    fs.write(&w, b"2\n");
    fs.write(&new, b"3\n");
    assert_eq!(
        events(&mut fs),
        [ev("app.log.1", MODIFY), ev("app.log", MODIFY)]
    );
    assert_eq!(fs.read_path(&p("app.log.1")).unwrap(), b"1\n2\n");
    assert_eq!(fs.read_path(&p("app.log")).unwrap(), b"3\n");
    fs.close(w);
    fs.close(new);
}

#[test]
fn unlink_while_a_reader_holds_the_file_keeps_it_readable_and_its_number_taken() {
    let mut fs = host();
    let w = fs.create(&p("a")).unwrap();
    fs.write(&w, b"data");
    fs.close(w);
    let (reader, meta) = fs.open(&p("a"), false).unwrap();
    fs.drain_events();
    fs.unlink(&p("a")).unwrap();
    assert_eq!(events(&mut fs), [ev("a", DELETE)]);
    assert!(fs.lstat(&p("a")).unwrap().is_none());
    assert_eq!(fs.fstat(&reader).unwrap().nlink, 0);
    assert_eq!(read_all(&mut fs, &reader), b"data");
    fs.write_file(&p("b"), b"").unwrap();
    let b = fs.stat_path(&p("b")).unwrap();
    assert_ne!(b.ino, meta.ino, "a held inode is not reused");
    drop(reader);
    fs.write_file(&p("c"), b"").unwrap();
    let c = fs.stat_path(&p("c")).unwrap();
    assert_eq!(c.ino, meta.ino, "the freed number comes back");
    assert!(c.born > b.born && b.born > meta.born);
    fs.check().unwrap();
}

#[test]
fn writes_into_an_unlinked_file_are_reported_under_its_old_name() {
    let mut fs = host();
    let w = fs.create(&p("a")).unwrap();
    fs.unlink(&p("a")).unwrap();
    fs.write_file(&p("a"), b"").unwrap();
    fs.drain_events();
    fs.write(&w, b"lost");
    fs.close(w);
    assert_eq!(events(&mut fs), [ev("a", MODIFY), ev("a", CLOSE_WRITE)]);
    assert_eq!(fs.read_path(&p("a")).unwrap(), b"");
}

#[test]
fn links_raise_create_and_delete_per_name_and_no_attrib_on_the_dir_watch() {
    let mut fs = host();
    let w = fs.create(&p("h")).unwrap();
    fs.link(&p("h"), &p("h2")).unwrap();
    assert_eq!(fs.stat_path(&p("h")).unwrap().nlink, 2);
    fs.unlink(&p("h")).unwrap();
    fs.write(&w, b"1");
    assert_eq!(
        events(&mut fs),
        [
            ev("h", CREATE),
            ev("h2", CREATE),
            ev("h", DELETE),
            ev("h", MODIFY)
        ]
    );
    assert_eq!(fs.stat_path(&p("h2")).unwrap().nlink, 1);
    assert_eq!(
        fs.link(&p("h2"), &p("h2")).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    fs.close(w);
}

#[test]
fn truncate_by_path_and_by_descriptor_modify() {
    let mut fs = host();
    let w = fs.create(&p("a")).unwrap();
    fs.write(&w, b"0123456789");
    fs.drain_events();
    fs.truncate(&p("a"), 4).unwrap();
    assert_eq!(fs.read_path(&p("a")).unwrap(), b"0123");
    fs.truncate(&p("a"), 6).unwrap();
    assert_eq!(fs.read_path(&p("a")).unwrap(), b"0123\0\0");
    fs.truncate_fd(&w, 0);
    fs.touch_attr(&w);
    fs.write(&w, b"x");
    assert_eq!(
        fs.read_path(&p("a")).unwrap(),
        b"x",
        "O_APPEND writes at the new end"
    );
    assert_eq!(
        events(&mut fs),
        [ev("a", MODIFY), ev("a", ATTRIB), ev("a", MODIFY)]
    );
    assert_eq!(
        fs.truncate(&p("none"), 0).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    fs.close(w);
}

#[test]
fn a_copy_reads_the_source_as_it_grows_until_a_read_returns_nothing() {
    let mut fs = host();
    let w = fs.create(&p("a")).unwrap();
    fs.write(&w, b"abcdef");
    fs.drain_events();
    let mut job = fs.copy_start(&p("a"), &p("a.1")).unwrap();
    assert!(!fs.copy_step(&mut job, 4));
    fs.write(&w, b"gh");
    assert!(!fs.copy_step(&mut job, 4));
    fs.unlink(&p("a")).unwrap();
    fs.write(&w, b"ij");
    assert!(
        !fs.copy_step(&mut job, 4),
        "the source is read through its descriptor"
    );
    assert!(fs.copy_step(&mut job, 4));
    fs.write(&w, b"kl");
    assert!(fs.copy_step(&mut job, 4), "done stays done");
    assert_eq!(job.copied(), 10);
    fs.copy_finish(job);
    assert_eq!(fs.read_path(&p("a.1")).unwrap(), b"abcdefghij");
    let expected = [
        ev("a.1", CREATE),
        ev("a.1", MODIFY),
        ev("a", MODIFY),
        ev("a.1", MODIFY),
        ev("a", DELETE),
        ev("a", MODIFY),
        ev("a.1", MODIFY),
        ev("a", MODIFY),
        ev("a.1", CLOSE_WRITE),
    ];
    assert_eq!(events(&mut fs), expected);
    fs.close(w);
}

#[test]
fn a_compressing_copy_writes_different_bytes() {
    let mut fs = host();
    let w = fs.create(&p("a")).unwrap();
    fs.write(&w, b"line 1\nline 2\n");
    let out = fs.create_new(&p("a.gz")).unwrap();
    let mut job = CopyJob::new(fs.reader_of(&w), out, true);
    while !fs.copy_step(&mut job, 5) {}
    fs.copy_finish(job);
    let gz = fs.read_path(&p("a.gz")).unwrap();
    assert_eq!(gz, compressed(b"line 1\nline 2\n"));
    assert!(gz.starts_with(&GZIP_MAGIC) && !gz.contains(&b'\n'));
    fs.close(w);
}

#[test]
fn the_queue_overflows_into_one_overflow_event() {
    let mut fs = host();
    fs.set_queue_limit(3);
    for name in ["a", "b", "c", "d", "e"] {
        fs.mkfifo(&p(name)).unwrap();
    }
    let evs = fs.drain_events();
    assert_eq!(evs.len(), 4);
    let overflow = &evs[3];
    assert_eq!(
        (
            overflow.mask,
            overflow.dir.as_os_str(),
            overflow.name.as_os_str()
        ),
        (Q_OVERFLOW, "".as_ref(), "".as_ref())
    );
    fs.mkfifo(&p("f")).unwrap();
    assert_eq!(events(&mut fs), [ev("f", CREATE)]);
    for name in ["g", "h", "i", "j"] {
        fs.mkfifo(&p(name)).unwrap();
    }
    assert_eq!(fs.drain_some_events(2).len(), 2);
    fs.mkfifo(&p("k")).unwrap();
    let rest = fs.drain_events();
    assert_eq!(
        rest.iter().map(|e| e.mask).collect::<Vec<_>>(),
        [CREATE, Q_OVERFLOW, CREATE]
    );
}

#[test]
fn watch_masks_filter_and_unwatched_directories_are_silent() {
    let mut fs = host();
    fs.mkdir_all(&p("sub/deeper")).unwrap();
    fs.drain_events();
    fs.write_file(&p("sub/x"), b"").unwrap();
    assert!(fs.drain_events().is_empty());
    fs.watch_mask(Path::new(LOG), CREATE).unwrap();
    let w = fs.create(&p("y")).unwrap();
    fs.write(&w, b"1");
    fs.close(w);
    assert_eq!(events(&mut fs), [ev("y", CREATE)]);
    fs.unwatch(Path::new(LOG)).unwrap();
    assert_eq!(
        events(&mut fs),
        [ev("", IGNORED)].map(|(_, _, m, c)| (LOG.to_owned(), String::new(), m, c))
    );
    assert_eq!(
        fs.unwatch(Path::new(LOG)).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        fs.watch(&p("y")).unwrap_err().kind(),
        ErrorKind::NotADirectory
    );
}

#[test]
fn mkdir_and_rmdir_of_a_watched_directory() {
    let mut fs = host();
    fs.mkdir(&p("old")).unwrap();
    fs.watch(&p("old")).unwrap();
    fs.write_file(&p("old/f"), b"").unwrap();
    assert_eq!(
        fs.rmdir(&p("old")).unwrap_err().kind(),
        ErrorKind::DirectoryNotEmpty
    );
    fs.unlink(&p("old/f")).unwrap();
    fs.drain_events();
    fs.rmdir(&p("old")).unwrap();
    let got: Vec<(PathBuf, OsString, u32)> = fs
        .drain_events()
        .into_iter()
        .map(|e| (e.dir, e.name, e.mask))
        .collect();
    let expected = [
        (p("old"), OsString::new(), DELETE_SELF),
        (p("old"), OsString::new(), IGNORED),
        (p(""), "old".into(), DELETE | IN_ISDIR),
    ];
    assert_eq!(
        got,
        expected.map(|(d, n, m)| (d.components().collect(), n, m))
    );
    assert_eq!(
        fs.mkdir(Path::new(LOG)).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
}

#[test]
fn open_refuses_what_is_not_a_regular_file_and_follows_symlinks_only_when_asked() {
    let mut fs = host();
    let w = fs.create(&p("real")).unwrap();
    fs.write(&w, b"r");
    fs.close(w);
    fs.mkfifo(&p("fifo")).unwrap();
    fs.symlink(Path::new("real"), &p("rel")).unwrap();
    fs.symlink(&p("real"), &p("abs")).unwrap();
    fs.symlink(Path::new("loop"), &p("loop")).unwrap();
    let refused = |fs: &mut SimFs, name: &str, follow: bool| {
        fs.open(&p(name), follow).err().map(|e| e.kind())
    };
    assert_eq!(
        refused(&mut fs, "fifo", true),
        Some(ErrorKind::InvalidInput)
    );
    assert_eq!(refused(&mut fs, "", true), Some(ErrorKind::InvalidInput));
    assert_eq!(
        refused(&mut fs, "rel", false),
        Some(ErrorKind::InvalidInput)
    );
    assert_eq!(refused(&mut fs, "missing", true), Some(ErrorKind::NotFound));
    assert_eq!(
        refused(&mut fs, "loop", true),
        Some(ErrorKind::InvalidInput)
    );
    assert_eq!(
        refused(&mut fs, "real/x", true),
        Some(ErrorKind::NotADirectory)
    );
    let real = fs.stat_path(&p("real")).unwrap().ino;
    for link in ["rel", "abs"] {
        let (f, meta) = fs.open(&p(link), true).unwrap();
        assert_eq!(
            (meta.ino, meta.kind, read_all(&mut fs, &f)),
            (real, Kind::File, b"r".to_vec())
        );
    }
    assert_eq!(fs.lstat(&p("rel")).unwrap().unwrap().kind, Kind::Symlink);
    assert_eq!(fs.lstat(&p("missing/deeper")).unwrap(), None);
    assert_eq!(
        fs.open(Path::new("relative"), true).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let via_parent = fs.stat_path(&p("../log/./real")).unwrap();
    assert_eq!(via_parent.ino, real);
}

#[test]
fn list_shows_files_and_symlinks_with_their_lstat() {
    let mut fs = host();
    fs.write_file(&p("b.log"), b"").unwrap();
    fs.symlink(Path::new("b.log"), &p("a.log")).unwrap();
    fs.mkfifo(&p("c.fifo")).unwrap();
    fs.mkdir(&p("d")).unwrap();
    let listed: Vec<(String, Kind)> = fs
        .list(Path::new(LOG))
        .unwrap()
        .into_iter()
        .map(|(n, m)| (n.to_string_lossy().into_owned(), m.kind))
        .collect();
    assert_eq!(
        listed,
        [
            ("a.log".to_owned(), Kind::Symlink),
            ("b.log".to_owned(), Kind::File)
        ]
    );
    assert_eq!(
        fs.names(Path::new(LOG)).unwrap(),
        ["a.log", "b.log", "c.fifo", "d"]
    );
    assert_eq!(
        fs.list(&p("b.log")).unwrap_err().kind(),
        ErrorKind::NotADirectory
    );
}

#[test]
fn writers_tells_whether_any_writer_is_open_and_remove_unlinks() {
    let mut fs = host();
    let w = fs.create(&p("a")).unwrap();
    let (f, _) = fs.open(&p("a"), false).unwrap();
    assert_eq!(fs.writers(&f).unwrap(), Some(true));
    let second = fs.open_append(&p("a")).unwrap();
    fs.close(w);
    assert_eq!(fs.writers(&f).unwrap(), Some(true));
    fs.close(second);
    assert_eq!(fs.writers(&f).unwrap(), Some(false));
    fs.remove(&p("a")).unwrap();
    assert_eq!(fs.remove(&p("a")).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        fs.remove(&p("")).unwrap_err().kind(),
        ErrorKind::IsADirectory
    );
}

#[test]
fn birth_times_follow_the_clock_and_strictly_increase() {
    let mut fs = host();
    let t0 = fs.now();
    fs.mkfifo(&p("a")).unwrap();
    fs.mkfifo(&p("b")).unwrap();
    fs.advance(5_000);
    fs.mkfifo(&p("c")).unwrap();
    let born = |fs: &SimFs, n: &str| fs.stat_path(&p(n)).unwrap().born;
    assert!(born(&fs, "a") >= t0 && born(&fs, "b") > born(&fs, "a"));
    assert_eq!(born(&fs, "c"), t0 + 5_000 + 1, "after the clock's reading");
    assert!(born(&fs, "a") > fs.clock() - 5_000);
    assert_eq!(fs.stat_path(&p("c")).unwrap().dev, DEV);
}

/// splitmix64: the tests' own seeded randomness.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn random_histories_keep_the_invariants_and_replay_identically() {
    fn history(seed: u64) -> Vec<SimEvent> {
        let mut fs = host();
        fs.set_queue_limit(64);
        let (mut rng, mut writers, mut readers, mut all) =
            (seed, Vec::new(), Vec::new(), Vec::new());
        let names = ["a", "b", "c", "d"];
        for _ in 0..400 {
            let r = next(&mut rng);
            let (x, y) = (
                p(names[(r >> 8) as usize % 4]),
                p(names[(r >> 16) as usize % 4]),
            );
            match r % 10 {
                0 => writers.extend(fs.create(&x).ok()),
                1 if !writers.is_empty() => {
                    fs.close(writers.swap_remove((r >> 24) as usize % writers.len()))
                }
                2 => drop(fs.rename(&x, &y)),
                3 => drop(fs.unlink(&x)),
                4 => drop(fs.link(&x, &y)),
                5 => readers.extend(fs.open(&x, true).ok()),
                6 if !readers.is_empty() => {
                    drop(readers.swap_remove((r >> 24) as usize % readers.len()))
                }
                7 => drop(fs.truncate(&x, r >> 60)),
                _ => {
                    if let Some(w) = writers.last() {
                        fs.write(w, b"line\n");
                    }
                }
            }
            fs.check().unwrap();
            all.extend(fs.drain_some_events((r >> 32) as usize % 8));
        }
        all
    }
    for seed in 0..20 {
        assert_eq!(history(seed), history(seed), "seed {seed}");
    }
}
