//! Scripted histories across a restart of the client: what the state
//! file keeps, and what a new run can still tell from it.

use std::collections::HashMap;
use std::path::Path;

use loghamster::tail::follow::{Note, State};
use loghamster::tail::state::Entry;

use super::{ship_all, Script};
use crate::world::{tail_settings, LOG, OLDDIR};

/// Seed 2051233: copytruncate into an `olddir`, its copy made while the
/// file held 56 bytes (shorter than the 64-byte short fingerprint), then
/// 42 more bytes read and sent (the copytruncate's window: the truncate
/// destroys them), a crash with nothing acknowledged, and the truncate
/// after the restart. The new run knew the file only by its fingerprints,
/// neither of which a 56-byte copy can be checked against, so it took the
/// copy for a later generation and sent its lines a second time. It now
/// keeps the first bytes of a resumed file that still holds what was
/// read, and recognises the short copy by them.
#[test]
fn a_copy_shorter_than_the_short_fingerprint_is_recognised_after_a_restart() {
    let settings = tail_settings(true);
    let mut s = Script::with(settings.clone(), Vec::new());
    s.fs.mkdir_all(Path::new(OLDDIR)).unwrap();
    s.look();
    s.advance(20);
    let a = s.fs.create(Path::new(LOG)).unwrap();
    let early = "a0 early\na1 early\na2 early\na3 early\na4 early\na5 early..\n";
    assert!(early.len() < 64);
    s.write(&a, early);
    s.look();
    // logrotate's copy, made now; the lines after it are in the window.
    s.advance(1);
    let copy = Path::new("/var/log/old/app.log.1");
    s.fs.write_file(copy, early.as_bytes()).unwrap();
    s.write(&a, "a6 in the window\na7 in the window\na8 wind\n");
    let id = s.tail.stream_id().unwrap().to_string();
    let sent = s.ship(0);
    assert_eq!(sent.len(), 98);
    let saved: Vec<Entry> = s.tail.entries().collect();
    let mut r = s.restarted_as(settings, saved);
    r.look();
    assert_eq!(r.tail.state(), State::Following);
    // The truncate, then the file's new content.
    r.fs.truncate(Path::new(LOG), 0).unwrap();
    r.write(&a, "b0 after\n");
    let mut held = HashMap::from([(id, 98)]);
    let got = ship_all(&mut r, &mut held);
    assert_eq!(String::from_utf8_lossy(&got), "b0 after\n", "{:?}", r.notes);
    assert!(
        r.notes
            .iter()
            .any(|n| matches!(n, Note::ReadingCopy { name, .. } if name == copy)),
        "{:?}",
        r.notes
    );
    r.fs.close(a);
}

/// A generation finished in an earlier run, born in the clock tick of
/// its successor, is not taken for the successor's copy: the successor
/// starts like it (the same banner), logrotate's `copytruncate` with
/// `rotate 0` truncates without a copy, and the new run, resumed on the
/// successor, used to read the finished file on from the successor's
/// position under the successor's id (its `p0` line went out twice).
#[test]
fn a_predecessor_finished_before_a_restart_is_not_taken_for_a_copy() {
    let mut s = Script::new();
    s.fs.set_birth_tick(10_000_000);
    s.look();
    s.advance(20);
    let p = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&p, "banner\np0\n");
    s.look();
    let mut held = HashMap::new();
    let got = s.ship(0);
    held.insert(s.tail.stream_id().unwrap().to_string(), got.len() as u64);
    // Rotated by rename; the successor is born in the same tick.
    s.fs.rename(Path::new(LOG), Path::new("/var/log/app.log.1"))
        .unwrap();
    s.fs.close(p);
    let n = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&n, "banner\n");
    s.look();
    let got = ship_all(&mut s, &mut held);
    assert_eq!(String::from_utf8_lossy(&got), "banner\n", "{:?}", s.notes);
    assert_eq!(s.tail.state(), State::Following);
    let saved: Vec<Entry> = s.tail.entries().collect();
    let mut r = s.restarted(saved);
    r.look();
    // More lines, then a truncation without a copy, then new content.
    r.write(&n, "n1\n");
    r.fs.truncate(Path::new(LOG), 0).unwrap();
    r.write(&n, "n2\n");
    let got = ship_all(&mut r, &mut held);
    assert_eq!(String::from_utf8_lossy(&got), "n2\n", "{:?}", r.notes);
    assert_eq!(r.tail.state(), State::Following);
    r.fs.close(n);
}

/// Seed 3132798: as above, but the truncate came before the crash, so
/// the new run finds the file rewritten and nothing of its first bytes
/// but the fingerprints. The short one covered 64 bytes, more than the
/// copy holds; it now covers the first line (at most 64 bytes), which a
/// copy of whole lines always holds.
#[test]
fn a_copy_shorter_than_64_bytes_is_recognised_when_truncated_before_a_restart() {
    let settings = tail_settings(true);
    let mut s = Script::with(settings.clone(), Vec::new());
    s.fs.mkdir_all(Path::new(OLDDIR)).unwrap();
    s.look();
    s.advance(20);
    let a = s.fs.create(Path::new(LOG)).unwrap();
    let early = "a0 early\na1 early\na2 early\na3 early\na4 early\na5 early..\n";
    s.write(&a, early);
    s.look();
    s.advance(1);
    let copy = Path::new("/var/log/old/app.log.1");
    s.fs.write_file(copy, early.as_bytes()).unwrap();
    s.write(&a, "a6 in the window\na7 in the window\na8 wind\n");
    let id = s.tail.stream_id().unwrap().to_string();
    let sent = s.ship(0);
    assert_eq!(sent.len(), 98);
    let saved: Vec<Entry> = s.tail.entries().collect();
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    s.write(&a, "b0 after\n");
    let mut r = s.restarted_as(settings, saved);
    r.look();
    let mut held = HashMap::from([(id, 98)]);
    let got = ship_all(&mut r, &mut held);
    assert_eq!(String::from_utf8_lossy(&got), "b0 after\n", "{:?}", r.notes);
    r.fs.close(a);
}
