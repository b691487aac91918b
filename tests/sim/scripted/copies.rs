//! Scripted histories of copytruncate: which copies hold what, when the
//! file is truncated again before the tail gets to its new content.

use std::collections::HashMap;
use std::path::Path;

use loghamster::tail::follow::{Filled, Note, State};

use super::{ship_all, Script};
use crate::world::LOG;

/// Seed 10507353: two copytruncates back to back. The tail finds the
/// first truncation when the next rotation has already moved the first
/// copy to `app.log.2` and created the next copy, still empty (being
/// made). It reads the rest from `app.log.2`; the truncated file's new
/// content then went into that next copy, and the file was truncated
/// again before the tail read it. The new content had counted every copy
/// born so far as accounted for, the empty one too, so it never looked
/// at that copy again: its lines were lost. A copy left alone (empty, or
/// holding what the file still starts with) is no longer accounted for.
#[test]
fn a_copy_still_being_made_when_the_truncation_is_found_is_read_if_truncated_again() {
    let mut s = Script::new();
    s.look();
    s.advance(20);
    let a = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&a, "a0\na1\n");
    s.look();
    let mut held = HashMap::new();
    let got = s.ship(0);
    assert_eq!(got, b"a0\na1\n");
    held.insert(s.tail.stream_id().unwrap().to_string(), 6);
    // The first copytruncate: copy, truncate.
    s.advance(1);
    s.fs.write_file(Path::new("/var/log/app.log.1"), b"a0\na1\n")
        .unwrap();
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    // The next one begins: the copy shifted, the next copy created.
    s.advance(1);
    s.fs.rename(
        Path::new("/var/log/app.log.1"),
        Path::new("/var/log/app.log.2"),
    )
    .unwrap();
    let c = s.fs.create(Path::new("/var/log/app.log.1")).unwrap();
    let (tail, mut env) = s.env();
    assert_eq!(tail.fill(&mut env).unwrap(), Filled::Truncated);
    s.take_notes();
    // New lines, copied into the next copy, then truncated again.
    s.write(&a, "b0\nb1\n");
    s.write(&c, "b0\nb1\n");
    s.fs.close(c);
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    let got = ship_all(&mut s, &mut held);
    assert_eq!(String::from_utf8_lossy(&got), "b0\nb1\n", "{:?}", s.notes);
    // (It had nothing to be recognised by: the next copy is read whole.)
    let found = Note::FoundRotated {
        name: "/var/log/app.log.1".into(),
    };
    assert!(s.notes.contains(&found), "{:?}", s.notes);
    assert_eq!(s.tail.state(), State::Following);
    s.fs.close(a);
}
