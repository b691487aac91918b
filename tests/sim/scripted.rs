//! Scripted tests of the tail's state machine: one history each, written
//! out step by step on a simulated host with a fake clock, checking the
//! state and the notes after every step. Together they take every
//! transition of `follow::State` (see the table in `follow/mod.rs`).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loghamster::tail::follow::{Env, Filled, Note, State, Tail};
use loghamster::tail::fs::{Fs, Kind, Meta};
use loghamster::tail::listing::{DirNames, EventQueue, Listed};
use loghamster::tail::state::Entry;

use crate::fs::{SimFile, SimFs, Writer};
use crate::world::{tail_settings, DIR, LOG};

mod copies;
mod restarts;

/// A host with `/var/log`, a tail of `/var/log/app.log`, and a clock.
pub(crate) struct Script {
    pub(crate) fs: SimFs,
    pub(crate) tail: Tail<SimFile>,
    loaded: Vec<Entry>,
    now: Instant,
    pub(crate) notes: Vec<Note>,
}

impl Script {
    pub(crate) fn new() -> Script {
        Script::with(tail_settings(false), Vec::new())
    }

    pub(crate) fn with(settings: loghamster::tail::follow::Settings, loaded: Vec<Entry>) -> Script {
        let mut fs = SimFs::new();
        fs.mkdir_all(Path::new(DIR)).unwrap();
        Script {
            fs,
            tail: Tail::new(PathBuf::from(LOG), settings, 7),
            loaded,
            now: Instant::now(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn env(&mut self) -> (&mut Tail<SimFile>, Env<'_, SimFs>) {
        let env = Env {
            fs: &mut self.fs,
            now: self.now,
            loaded: &mut self.loaded,
        };
        (&mut self.tail, env)
    }

    pub(crate) fn take_notes(&mut self) -> Vec<Note> {
        let notes: Vec<Note> = self.tail.take_notes().collect();
        self.notes.extend(notes.iter().cloned());
        notes
    }

    pub(crate) fn look(&mut self) -> Vec<Note> {
        let (tail, mut env) = self.env();
        tail.look(&mut env);
        self.take_notes()
    }

    pub(crate) fn tick(&mut self, link_open: bool) -> loghamster::tail::follow::Tick {
        let (tail, mut env) = self.env();
        let t = tail.tick(&mut env, link_open);
        self.take_notes();
        t
    }

    pub(crate) fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.fs.advance(ms * 1_000_000);
    }

    /// Connects at the server's `held` offset and sends everything there
    /// is; returns the bytes sent. (When the tail finds the file rewritten
    /// on `200`, it reconnects: the same stream, or a new one from 0.)
    pub(crate) fn ship(&mut self, held: u64) -> Vec<u8> {
        let (tail, mut env) = self.env();
        let id = tail.stream_id();
        if !tail.on_ready(&mut env, Some(held)) {
            let held = if tail.stream_id() == id { held } else { 0 };
            assert!(tail.on_ready(&mut env, Some(held)), "ready");
        }
        let mut out = Vec::new();
        loop {
            let (tail, mut env) = self.env();
            let filled = tail.fill(&mut env).unwrap();
            let pending = tail.pending().to_vec();
            tail.on_sent(pending.len());
            out.extend_from_slice(&pending);
            if filled == Filled::Eof && pending.is_empty() {
                break;
            }
            if filled == Filled::Truncated {
                break;
            }
        }
        self.take_notes();
        out
    }

    /// The server confirms everything sent and the connection ends.
    pub(crate) fn confirm(&mut self) {
        let sent = self.tail.sent();
        self.tail.on_done(sent);
        self.tail.on_link_finished();
    }

    pub(crate) fn write(&mut self, w: &Writer, text: &str) {
        self.fs.write(w, text.as_bytes());
    }

    /// logrotate's copy of the file at the path to `to`, whole.
    pub(crate) fn copy_to(&mut self, to: &str) {
        let mut job = self.fs.copy_start(Path::new(LOG), Path::new(to)).unwrap();
        while !self.fs.copy_step(&mut job, 4096) {}
        self.fs.copy_finish(job);
    }

    /// A crash and a restart: a new tail on the same host, with `saved`
    /// as its state file's entries.
    pub(crate) fn restarted(self, saved: Vec<Entry>) -> Script {
        self.restarted_as(tail_settings(false), saved)
    }

    /// [`Script::restarted`] with other settings.
    pub(crate) fn restarted_as(
        self,
        settings: loghamster::tail::follow::Settings,
        saved: Vec<Entry>,
    ) -> Script {
        Script {
            fs: self.fs,
            tail: Tail::new(PathBuf::from(LOG), settings, 9),
            loaded: saved,
            now: self.now,
            notes: Vec::new(),
        }
    }
}

#[test]
fn missing_then_created_is_followed_from_zero() {
    let mut s = Script::new();
    assert_eq!(s.look(), vec![Note::Absent]);
    assert_eq!(s.tail.state(), State::Missing { retry_at: None });
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "a\nb\n");
    assert_eq!(
        s.look(),
        vec![Note::Opened {
            offset: 0,
            resumed: false
        }]
    );
    assert_eq!(s.tail.state(), State::Following);
    assert!(s.tail.needs_verify());
    assert_eq!(s.ship(0), b"a\nb\n");
    assert!(s.tail.take_save_soon(), "a new file is recorded at once");
}

#[test]
fn rename_rotation_drains_the_old_file_then_switches() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "one\n");
    s.look();
    assert_eq!(s.ship(0), b"one\n");
    s.fs.rename(Path::new(LOG), Path::new("/var/log/app.log.1"))
        .unwrap();
    s.advance(1);
    let w2 = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "two\n"); // the writer still holds the old file
    s.write(&w2, "three\n");
    assert_eq!(s.look(), vec![Note::Rotated]);
    assert!(matches!(s.tail.state(), State::Draining { .. }));
    assert_eq!(s.tail.queued().count(), 1, "the new file is held at once");
    assert_eq!(s.ship(4), b"two\n");
    // A writer holds the old file and the new one has data: wait for it
    // to be quiet, then finish.
    assert!(!s.tick(true).finish);
    s.fs.close(w);
    let t = s.tick(true);
    assert!(t.finish, "no writer left: finish at once");
    s.confirm();
    s.tick(false);
    assert_eq!(s.tail.state(), State::Following);
    assert!(s.notes.contains(&Note::Done { offset: 8 }));
    assert_eq!(s.ship(0), b"three\n");
    s.fs.close(w2);
}

/// An application that never reopens keeps writing into nothing but its
/// rotated-away file's descriptor, which stays open for good. Once a later
/// generation has data the old one is a leftover, also when the next one
/// in line was emptied (truncated, then deleted) and the data went to the
/// one after it (found by the model test, `tests/model.rs`).
#[test]
fn a_writer_left_on_a_rotated_file_does_not_hold_back_a_generation_behind_an_emptied_one() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "a0\n");
    s.look();
    assert_eq!(s.ship(0), b"a0\n");
    s.fs.rename(Path::new(LOG), Path::new("/var/log/app.log.1"))
        .unwrap();
    s.advance(1);
    let w2 = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w2, "b0\n");
    assert_eq!(s.look(), vec![Note::Rotated]);
    // The second file is emptied and deleted before it was read; a third
    // one gets the lines. `w` stays open on the first file for good.
    s.fs.truncate_fd(&w2, 0);
    s.fs.unlink(Path::new(LOG)).unwrap();
    s.advance(1);
    let w3 = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w3, "c0\n");
    s.look();
    let mut got = Vec::new();
    let mut held = 3;
    for _ in 0..4 {
        if s.tail.state() == State::Following {
            break;
        }
        got.extend(s.ship(held));
        held = 0;
        s.confirm();
        s.advance(1000);
        s.tick(false);
    }
    assert_eq!(s.tail.state(), State::Following, "{:?}", s.notes);
    got.extend(s.ship(0));
    assert_eq!(got, b"c0\n", "{:?}", s.notes);
    s.fs.close(w);
    s.fs.close(w2);
    s.fs.close(w3);
}

/// `g0` at the path, shipped; then `rotations` numbered rotations
/// (logrotate's `app.log.N`, the higher older) that the tail does not see,
/// each leaving `gN` at the path; `tick_ms` passes before each.
fn rotated_unseen(s: &mut Script, rotations: usize, tick_ms: u64) {
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "g0\n");
    s.look();
    s.ship(0);
    s.fs.close(w);
    for g in 1..=rotations {
        s.advance(tick_ms);
        for n in (1..g).rev() {
            let from = format!("/var/log/app.log.{n}");
            let to = format!("/var/log/app.log.{}", n + 1);
            s.fs.rename(Path::new(&from), Path::new(&to)).unwrap();
        }
        s.fs.rename(Path::new(LOG), Path::new("/var/log/app.log.1"))
            .unwrap();
        let w = s.fs.create(Path::new(LOG)).unwrap();
        s.write(&w, &format!("g{g}\n"));
        s.fs.close(w);
    }
}

/// Ships every generation after `g0` (3 bytes the server holds), each
/// confirmed before the next: what arrived, in order.
fn ship_generations(s: &mut Script, gens: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut held = 3;
    for _ in 0..=gens {
        got.extend(s.ship(held));
        held = 0;
        s.confirm();
        s.advance(1000);
        s.tick(false);
    }
    got
}

#[test]
fn generations_rotated_away_before_the_tail_looked_are_found_in_birth_order() {
    let mut s = Script::new();
    rotated_unseen(&mut s, 3, 5);
    s.look();
    let found: Vec<_> = s
        .notes
        .iter()
        .filter(|n| matches!(n, Note::FoundRotated { .. }))
        .collect();
    assert_eq!(found.len(), 2, "{:?}", s.notes);
    let got = ship_generations(&mut s, 3);
    assert_eq!(got, b"g1\ng2\ng3\n", "{:?}", s.notes);
    assert_eq!(s.tail.state(), State::Following);
}

#[test]
fn generations_born_in_one_clock_tick_and_rotated_away_unseen_go_by_their_numbers() {
    // logrotate's numbering while the tail was not looking (a client
    // restart), every file born in the same tick of the coarse birth
    // clock: the higher number is the older file (by name, app.log.1
    // would come before app.log.2, its predecessor).
    let mut s = Script::new();
    s.fs.set_birth_tick(4_000_000);
    rotated_unseen(&mut s, 4, 0);
    s.look();
    let got = ship_generations(&mut s, 4);
    assert_eq!(got, b"g1\ng2\ng3\ng4\n", "{:?}", s.notes);
    assert_eq!(s.tail.state(), State::Following);
}

#[test]
fn copytruncate_reads_the_rest_from_the_copy_then_the_file_from_zero() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "line 1\n");
    s.look();
    assert_eq!(s.ship(0), b"line 1\n");
    s.write(&w, "line 2\n"); // not read yet
    s.advance(5);
    s.copy_to("/var/log/app.log.1");
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    s.write(&w, "line 3\n");
    let sent = s.ship(7);
    assert_eq!(sent, b"line 2\n", "{:?}", s.notes);
    assert!(s
        .notes
        .iter()
        .any(|n| matches!(n, Note::ReadingCopy { at: 7, .. })));
    s.confirm();
    s.advance(1000);
    s.tick(false);
    assert_eq!(s.tail.state(), State::Following);
    assert_eq!(s.ship(0), b"line 3\n");
    s.fs.close(w);
}

#[test]
fn a_truncation_without_a_copy_starts_over_under_a_new_id() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "old old old\n");
    s.look();
    s.ship(0);
    let before = s.tail.stream_id().unwrap();
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    s.write(&w, "new\n");
    let (tail, mut env) = s.env();
    assert_eq!(tail.fill(&mut env).unwrap(), Filled::Truncated);
    s.take_notes();
    assert!(s.notes.contains(&Note::Truncated {
        at: 12,
        no_copy: true
    }));
    let after = s.tail.stream_id().unwrap();
    assert_ne!(before, after);
    assert_eq!(s.tail.state(), State::Following);
    assert_eq!(s.ship(0), b"new\n");
    s.fs.close(w);
}

#[test]
fn a_file_rewritten_past_the_position_fails_the_overlap_check() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "aaaa\n");
    s.look();
    s.ship(0);
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    s.write(&w, "bbbbbbbbbb\n"); // longer than before: never looked shorter
    let (tail, mut env) = s.env();
    assert_eq!(tail.fill(&mut env).unwrap(), Filled::Truncated);
    s.fs.close(w);
}

#[test]
fn onrotate_stop_stops_after_the_old_file() {
    let mut settings = tail_settings(false);
    settings.follow_rotations = false;
    let mut s = Script::with(settings, Vec::new());
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "x\n");
    s.fs.close(w);
    s.look();
    s.ship(0);
    s.fs.rename(Path::new(LOG), Path::new("/var/log/app.log.1"))
        .unwrap();
    s.fs.create(Path::new(LOG)).map(|w| s.fs.close(w)).unwrap();
    s.look();
    assert_eq!(s.tail.queued().count(), 0, "the new file is not taken");
    assert!(s.tick(true).finish);
    s.confirm();
    s.tick(false);
    assert_eq!(s.tail.state(), State::Stopped);
    assert!(s.notes.contains(&Note::StoppedAfterRotation));
}

#[test]
fn a_drained_file_without_successor_goes_back_to_missing() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "x\n");
    s.fs.close(w);
    s.look();
    s.ship(0);
    s.fs.unlink(Path::new(LOG)).unwrap();
    assert_eq!(s.look(), vec![Note::Rotated]);
    assert!(s.tick(true).finish);
    s.confirm();
    s.tick(false);
    assert!(matches!(s.tail.state(), State::Missing { .. }));
}

#[test]
fn a_deleted_file_held_too_long_is_abandoned() {
    let mut settings = tail_settings(false);
    settings.deleted_hold = Duration::from_secs(10);
    let mut s = Script::with(settings, Vec::new());
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "x\n");
    s.fs.close(w);
    s.look();
    s.fs.unlink(Path::new(LOG)).unwrap();
    s.look();
    s.tick(false);
    s.advance(10_001);
    s.tick(false);
    assert!(
        s.notes.contains(&Note::Abandoned { bytes: 2 }),
        "{:?}",
        s.notes
    );
    assert!(matches!(s.tail.state(), State::Missing { .. }));
}

#[test]
fn restart_resumes_the_recorded_generation_rotated_away_and_the_queue() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "first\n");
    s.look();
    s.ship(0);
    s.tail.on_ack(6).unwrap();
    s.fs.rename(Path::new(LOG), Path::new("/var/log/app.log.1"))
        .unwrap();
    s.write(&w, "more\n");
    s.fs.close(w);
    let w2 = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w2, "second\n");
    s.look();
    // Saved: the old file at 6, then the new one queued; a crash.
    let saved: Vec<Entry> = s.tail.entries().collect();
    assert_eq!(saved.len(), 2);
    let mut r = s.restarted(saved);
    r.look();
    assert!(r
        .notes
        .iter()
        .any(|n| matches!(n, Note::ResumedRotated { offset: 6, .. })));
    assert_eq!(r.ship(6), b"more\n");
    r.confirm();
    r.fs.close(w2);
    r.tick(false);
    assert_eq!(r.tail.state(), State::Following);
    assert_eq!(r.ship(0), b"second\n");
}

#[test]
fn an_idle_file_parks_and_reopens_as_itself() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "x\n");
    s.look();
    s.ship(0);
    s.confirm();
    let entry = s.tail.park(&mut s.fs).expect("parkable");
    assert!(s.tail.is_parked());
    assert_eq!(s.tail.open_files(), 0);
    s.loaded.push(entry);
    s.write(&w, "y\n");
    assert!(s.look().is_empty(), "reopened quietly: {:?}", s.notes);
    assert_eq!(s.tail.state(), State::Following);
    assert!(!s.tail.needs_verify(), "its offset is the server's");
    assert_eq!(s.ship(2), b"y\n");
    s.fs.close(w);
}

#[test]
fn the_server_holding_more_than_the_file_means_truncated() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "x\n");
    s.fs.close(w);
    s.look();
    let id = s.tail.stream_id();
    let (tail, mut env) = s.env();
    assert!(!tail.on_ready(&mut env, Some(100)));
    assert_ne!(s.tail.stream_id(), id, "a new stream for the new content");
}

#[test]
fn a_fifo_at_the_path_is_refused_once_and_retried_quietly() {
    let mut s = Script::new();
    s.fs.mkfifo(Path::new(LOG)).unwrap();
    let notes = s.look();
    assert!(
        matches!(
            &notes[..],
            [Note::Refused {
                kind: Kind::Fifo,
                ..
            }]
        ),
        "{notes:?}"
    );
    let State::Missing { retry_at: Some(at) } = s.tail.state() else {
        panic!("{:?}", s.tail.state());
    };
    // Every retry (and every look) finds the same FIFO: nothing to say.
    for _ in 0..3 {
        s.now = at.max(s.now) + Duration::from_secs(6);
        s.tick(false);
        assert_eq!(s.look(), vec![Note::StillRefused]);
    }
    // Something else there (a directory): said once more; then a file
    // is followed.
    s.fs.unlink(Path::new(LOG)).unwrap();
    s.fs.mkdir(Path::new(LOG)).unwrap();
    let notes = s.look();
    assert!(
        matches!(
            &notes[..],
            [Note::Refused {
                kind: Kind::Dir,
                ..
            }]
        ),
        "{notes:?}"
    );
    s.fs.rmdir(Path::new(LOG)).unwrap();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "a\n");
    assert!(matches!(&s.look()[..], [Note::Opened { .. }]));
    assert_eq!(s.ship(0), b"a\n");
    s.fs.close(w);
}

#[test]
fn a_symlink_at_the_path_is_not_opened_unless_followed() {
    let mut s = Script::new();
    s.fs.write_file(Path::new("/etc-shadow"), b"secret\n")
        .unwrap();
    s.fs.symlink(Path::new("/etc-shadow"), Path::new(LOG))
        .unwrap();
    let notes = s.look();
    assert!(
        matches!(
            &notes[..],
            [Note::Refused {
                kind: Kind::Symlink,
                ..
            }]
        ),
        "{notes:?}"
    );
    assert!(s.tail.current().is_none(), "nothing opened");
    s.now += Duration::from_secs(6);
    s.tick(false);
    assert_eq!(s.look(), vec![Note::StillRefused], "said once");
    // Rotated in by rename over a followed file: not opened either.
    s.fs.unlink(Path::new(LOG)).unwrap();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "ok\n");
    s.look();
    assert_eq!(s.ship(0), b"ok\n");
    s.confirm();
    s.fs.symlink(Path::new("/etc-shadow"), Path::new("/var/log/evil"))
        .unwrap();
    s.fs.rename(Path::new("/var/log/evil"), Path::new(LOG))
        .unwrap();
    s.fs.close(w);
    assert_eq!(s.look(), vec![Note::Rotated]);
    for _ in 0..10 {
        s.advance(600);
        let t = s.tick(false);
        if t.finish {
            s.confirm();
        }
    }
    assert!(
        s.notes.iter().any(|n| matches!(
            n,
            Note::Refused {
                kind: Kind::Symlink,
                ..
            }
        )),
        "{:?}",
        s.notes
    );
    assert!(
        s.tail.current().is_none(),
        "the link's target is never opened"
    );
}

#[test]
fn a_followed_symlink_is_shipped_and_checked_again_when_repointed() {
    let mut settings = tail_settings(false);
    settings.follow_symlinks = true;
    let mut s = Script::with(settings, Vec::new());
    let a = s.fs.create(Path::new("/data-a")).unwrap();
    s.write(&a, "a1\n");
    s.fs.symlink(Path::new("/data-a"), Path::new(LOG)).unwrap();
    assert!(matches!(&s.look()[..], [Note::Opened { .. }]));
    assert_eq!(s.ship(0), b"a1\n");
    s.confirm();
    // Still the same target: no rotation.
    assert_eq!(s.look(), vec![]);
    assert_eq!(s.tail.state(), State::Following);
    // Re-pointed: the old target is finished, the new one followed.
    s.advance(1);
    let b = s.fs.create(Path::new("/data-b")).unwrap();
    s.write(&b, "b1\n");
    s.fs.unlink(Path::new(LOG)).unwrap();
    s.fs.symlink(Path::new("/data-b"), Path::new(LOG)).unwrap();
    s.fs.close(a);
    assert_eq!(s.look(), vec![Note::Rotated]);
    for _ in 0..10 {
        s.advance(600);
        if s.tick(false).finish {
            s.confirm();
        }
    }
    assert_eq!(s.tail.state(), State::Following, "{:?}", s.notes);
    assert_eq!(s.ship(0), b"b1\n");
    s.fs.close(b);
}

#[test]
fn a_whole_file_is_complete_once_confirmed() {
    let mut settings = tail_settings(false);
    settings.whole = true;
    settings.follow_rotations = false;
    let mut s = Script::with(settings, Vec::new());
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "partial line without newline");
    s.fs.close(w);
    s.look();
    assert_eq!(s.ship(0), b"partial line without newline");
    assert!(s.tick(true).finish);
    assert!(!s.tail.is_complete());
    s.confirm();
    assert!(s.tail.is_complete());
    let _ = s.fs.lstat(Path::new(LOG));
}

#[test]
fn a_server_offset_beyond_anything_sent_is_a_conflict_not_a_skip_or_a_resend() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "one\ntwo\n");
    s.look();
    assert_eq!(s.ship(0), b"one\ntwo\n");
    assert_eq!(s.tail.on_ack(4), Ok(4));
    // Kicked off (someone else connected with this stream's id).
    s.tail.on_link_lost();
    s.write(&w, "three\nfour\nfive\n");
    let id = s.tail.stream_id();
    // Another writer pushed the server's offset past what was sent (8),
    // though not past the file's length (24): a skip would lose lines.
    let (tail, mut env) = s.env();
    assert!(!tail.on_ready(&mut env, Some(20)));
    let notes = s.take_notes();
    assert!(
        matches!(
            &notes[..],
            [Note::OffsetConflict {
                server: 20,
                high: 8,
                acked: 4,
                ..
            }]
        ),
        "{notes:?}"
    );
    assert_ne!(s.tail.stream_id(), id, "the rest goes under a new id");
    assert!(s.tail.needs_verify());
    assert!(s.tail.take_save_soon(), "the new id is recorded at once");
    // The new stream is unknown to the server: it echoes the offset sent.
    assert_eq!(s.ship(4), b"two\nthree\nfour\nfive\n");
    // Beyond the file's length: still a conflict, not a truncation.
    s.tail.on_link_lost();
    let id = s.tail.stream_id();
    let (tail, mut env) = s.env();
    assert!(!tail.on_ready(&mut env, Some(10_000)));
    let notes = s.take_notes();
    assert!(
        matches!(&notes[..], [Note::OffsetConflict { .. }]),
        "{notes:?}"
    );
    assert_ne!(s.tail.stream_id(), id);
    s.fs.close(w);
}

#[test]
fn a_server_offset_up_to_what_was_sent_is_believed() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "one\ntwo\n");
    s.look();
    assert_eq!(s.ship(0), b"one\ntwo\n");
    // The ACK for all 8 bytes was lost with the connection.
    s.tail.on_link_lost();
    let id = s.tail.stream_id();
    s.write(&w, "three\n");
    assert_eq!(s.ship(8), b"three\n");
    assert_eq!(s.tail.stream_id(), id);
    assert!(s.take_notes().is_empty());
    s.fs.close(w);
}

/// A change to the host, made while the tail runs.
type Change<'a> = Box<dyn FnOnce(&mut SimFs) + 'a>;

/// The simulated host, with a change made to it right after the tail's
/// `after`th directory listing: a rename racing the tail between two of
/// its system calls, which the scheduler's steps (between the tail's
/// calls) cannot produce. With `names`, the listings go through the
/// client's kept directory names ([`Listed`]), as in the daemon.
struct Racing<'a> {
    fs: &'a mut SimFs,
    names: Option<(&'a mut DirNames, Kept)>,
    lists: u32,
    after: u32,
    change: Option<Change<'a>>,
}

/// How the tail's listings are made in a racing look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Every listing reads the directory.
    Never,
    /// Kept names are used while no inotify event waits (the daemon's
    /// rule, `tail::listing`).
    WhileQuiet,
    /// Kept names are used whatever waits: the rule switched off.
    Always,
}

impl EventQueue<&mut SimFs> for Kept {
    fn quiet(&mut self, fs: &&mut SimFs) -> bool {
        *self == Kept::Always || fs.queued_events() == 0
    }
}

impl Fs for Racing<'_> {
    type File = SimFile;
    fn open(&mut self, p: &Path, follow: bool) -> std::io::Result<(SimFile, Meta)> {
        self.fs.open(p, follow)
    }
    fn fstat(&mut self, f: &SimFile) -> std::io::Result<Meta> {
        self.fs.fstat(f)
    }
    fn lstat(&mut self, p: &Path) -> std::io::Result<Option<Meta>> {
        self.fs.lstat(p)
    }
    fn stat(&mut self, p: &Path) -> std::io::Result<Option<Meta>> {
        self.fs.stat(p)
    }
    fn read_at(&mut self, f: &SimFile, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
        self.fs.read_at(f, buf, at)
    }
    fn list(&mut self, d: &Path) -> std::io::Result<Vec<(OsString, Meta)>> {
        self.list_prefixed(d, OsStr::new(""))
    }
    fn list_prefixed(&mut self, d: &Path, p: &OsStr) -> std::io::Result<Vec<(OsString, Meta)>> {
        let r = match &mut self.names {
            None | Some((_, Kept::Never)) => self.fs.list_prefixed(d, p),
            Some((names, kept)) => Listed::new(&mut *self.fs, names, *kept).list_prefixed(d, p),
        };
        self.lists += 1;
        if self.lists == self.after {
            if let Some(change) = self.change.take() {
                change(self.fs);
            }
        }
        r
    }
    fn writers(&mut self, f: &SimFile) -> std::io::Result<Option<bool>> {
        self.fs.writers(f)
    }
    fn remove(&mut self, p: &Path) -> std::io::Result<()> {
        self.fs.remove(p)
    }
    fn clock(&mut self) -> u64 {
        self.fs.clock()
    }
}

impl Script {
    /// A look during which `change` happens to the host right after the
    /// tail's `after`th directory listing; the listings go through `names`
    /// as `kept` says.
    fn look_racing(
        &mut self,
        after: u32,
        names: &mut DirNames,
        kept: Kept,
        change: impl FnOnce(&mut SimFs) + 'static,
    ) {
        {
            let mut racing = Racing {
                fs: &mut self.fs,
                names: Some((names, kept)),
                lists: 0,
                after,
                change: Some(Box::new(change)),
            };
            let mut env = Env {
                fs: &mut racing,
                now: self.now,
                loaded: &mut self.loaded,
            };
            self.tail.look(&mut env);
        }
        self.take_notes();
    }
}

/// The path's first file, rotated away and followed by the next one
/// while the tail was between listing the directory and opening what it
/// listed (`after_list`), or between finding nothing (twice: the
/// directory was empty) and opening the path. The directory is watched,
/// and the daemon read every event before the look (so kept names would
/// be used but for the change's own events). Returns what was shipped.
fn a_first_file_renamed_away_while_the_tail_looks(
    after_list: bool,
    coarse: bool,
    kept: Kept,
) -> (String, Script) {
    let mut s = Script::new();
    s.fs.watch(Path::new(DIR)).unwrap();
    let mut names = DirNames::default();
    names.watch(Path::new(DIR));
    if coarse {
        // Both files born in one tick of the kernel's coarse clock.
        s.fs.set_birth_tick(10_000_000);
    }
    assert_eq!(s.look(), vec![Note::Absent], "followed since now");
    s.advance(20);
    let rotate = |fs: &mut SimFs| {
        let w = fs.open_or_create(Path::new(LOG)).unwrap();
        fs.write(&w, b"first\n");
        fs.rename(Path::new(LOG), Path::new("/var/log/app.log.1"))
            .unwrap();
        fs.write(&w, b"first, late\n");
        fs.close(w);
        let w = fs.create(Path::new(LOG)).unwrap();
        fs.write(&w, b"second\n");
        fs.close(w);
    };
    let (after, change): (u32, Change<'static>) = if after_list {
        // The first file is at the path when the tail lists.
        let w = s.fs.create(Path::new(LOG)).unwrap();
        s.fs.close(w);
        let change = move |fs: &mut SimFs| {
            fs.remove(Path::new(LOG)).unwrap();
            rotate(fs);
        };
        (1, Box::new(change))
    } else {
        (2, Box::new(rotate))
    };
    // The daemon read the events so far (and so forgot what it kept).
    s.fs.drain_events();
    names.forget();
    s.look_racing(after, &mut names, kept, change);
    let got = ship_all(&mut s, &mut Default::default());
    (String::from_utf8_lossy(&got).into_owned(), s)
}

/// The race `after_list` names, with a fine and a coarse birth clock,
/// reads every file, in order.
fn race_is_caught(after_list: bool, kept: Kept) {
    for coarse in [false, true] {
        let (got, s) = a_first_file_renamed_away_while_the_tail_looks(after_list, coarse, kept);
        assert_eq!(
            got, "first\nfirst, late\nsecond\n",
            "after_list {after_list}, coarse {coarse}, {kept:?}: {:?}",
            s.notes
        );
        assert_eq!(s.tail.state(), State::Following);
    }
}

#[test]
fn a_file_renamed_away_between_the_listing_and_the_open_is_read_before_its_successor() {
    race_is_caught(true, Kept::Never);
}

#[test]
fn a_file_created_and_renamed_away_after_an_empty_listing_is_read_before_its_successor() {
    race_is_caught(false, Kept::Never);
}

/// The same races with the directory's names kept between listings
/// (`tail::listing`): the change's inotify events wait in the queue, so
/// the listings after it read the directory again.
#[test]
fn with_names_kept_while_no_event_waits_the_races_are_still_caught() {
    race_is_caught(true, Kept::WhileQuiet);
    race_is_caught(false, Kept::WhileQuiet);
}

/// The control: names kept whatever waits in the queue (as a plain
/// per-turn cache would) make the listings after the change the same
/// read as the one before it, and the first file is lost. This is what
/// the rule above prevents, and shows the test above can fail.
#[test]
fn names_kept_whatever_waits_would_lose_the_first_file() {
    for (after_list, coarse) in [(true, false), (true, true), (false, false), (false, true)] {
        let (got, _) =
            a_first_file_renamed_away_while_the_tail_looks(after_list, coarse, Kept::Always);
        assert_eq!(got, "second\n", "after_list {after_list}, coarse {coarse}");
    }
}

/// Plays the server: connects at what it holds for the current stream id,
/// ships, confirms, waits out the grace of a rotated file, ticks; returns
/// every byte that went out, in order.
fn ship_all(s: &mut Script, held: &mut std::collections::HashMap<String, u64>) -> Vec<u8> {
    let mut got = Vec::new();
    for _ in 0..6 {
        let id = s
            .tail
            .stream_id()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let at = held.get(&id).copied().unwrap_or(0);
        let sent = s.ship(at);
        // (A truncation found on `200` moves to a new id, shipped from 0.)
        let id = s
            .tail
            .stream_id()
            .map(|i| i.to_string())
            .unwrap_or_default();
        *held.entry(id).or_default() += sent.len() as u64;
        got.extend(sent);
        s.confirm();
        s.advance(1000);
        s.tick(false);
    }
    got
}

/// The model test's duplicate (`[Write(260), Write(169), Truncate,
/// Rotate(2), Start, Start, Write(15), Truncate, Write(9), Write(244),
/// Stop(true)]`): a file truncated and rotated away, its successor queued
/// and then truncated and rewritten, a crash. After the restart the
/// predecessor is finished first; the successor's truncation then looks
/// for copytruncate copies born since it was found, with a clock that
/// steps back one tick, and took the predecessor (born in that tick, no
/// longer held) for a later copy: its lines went out twice.
#[test]
fn a_finished_predecessor_is_not_taken_for_a_copy_of_its_truncated_successor() {
    let mut s = Script::new();
    s.fs.set_birth_tick(10_000_000);
    s.look();
    s.advance(20);
    let a = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&a, "a0\na1\n");
    s.look();
    // Truncated and rotated away before the tail read it; two more lines
    // through the writer's descriptor; the next file, in the same tick.
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    s.fs.rename(Path::new(LOG), Path::new("/var/log/app.log.1"))
        .unwrap();
    s.write(&a, "a2\na3\n");
    let b = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&b, "b0 the successor's first content\n");
    s.look();
    let (tail, mut env) = s.env();
    assert_eq!(tail.fill(&mut env).unwrap(), Filled::Truncated);
    s.take_notes();
    assert_eq!(s.tail.queued().count(), 1, "{:?}", s.notes);
    let mut held = std::collections::HashMap::new();
    let id = s.tail.stream_id().unwrap().to_string();
    assert_eq!(s.ship(0), b"a2\na3\n");
    held.insert(id, 6);
    // Saved: the predecessor's new content (nothing acknowledged), the
    // successor queued. The successor is truncated and rewritten; a crash.
    let saved: Vec<Entry> = s.tail.entries().collect();
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    s.write(&b, "b1\nb2\n");
    let mut r = s.restarted(saved);
    r.look();
    let got = ship_all(&mut r, &mut held);
    assert_eq!(String::from_utf8_lossy(&got), "b1\nb2\n", "{:?}", r.notes);
    assert_eq!(r.tail.state(), State::Following);
    r.fs.close(a);
    r.fs.close(b);
}

/// The safety net behind the listings: the directory's events say a
/// file left the path that the tail never held (here the file is put
/// where the rename would have left it, and the events are told to the
/// tail as inotify would report them, late). It is read, ahead of the
/// followed file, which then resumes at the server's offset: nothing is
/// skipped and nothing sent twice.
#[test]
fn a_departure_from_the_path_of_a_file_never_held_is_still_read() {
    use loghamster::tail::follow::DirChange;
    let mut s = Script::new();
    s.look();
    s.advance(20);
    let b = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&b, "b0\n");
    s.look();
    let mut held = std::collections::HashMap::new();
    let id = s.tail.stream_id().unwrap().to_string();
    assert_eq!(s.ship(0), b"b0\n");
    held.insert(id, 3);
    let a = s.fs.create(Path::new("/var/log/elsewhere")).unwrap();
    s.write(&a, "a0\n");
    s.fs.close(a);
    s.fs.rename(
        Path::new("/var/log/elsewhere"),
        Path::new("/var/log/app.log.1"),
    )
    .unwrap();
    s.tail.record(Path::new(LOG), DirChange::MovedFrom(7));
    s.tail
        .record(Path::new("/var/log/app.log.1"), DirChange::MovedTo(7));
    s.write(&b, "b1\n");
    s.look();
    let got = ship_all(&mut s, &mut held);
    assert_eq!(String::from_utf8_lossy(&got), "a0\nb1\n", "{:?}", s.notes);
    assert_eq!(s.tail.state(), State::Following);
    s.fs.close(b);
}
