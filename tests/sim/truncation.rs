//! What a truncation under the reader loses, case by case: the notes
//! must count exactly the old bytes the tail knew of and that exist
//! nowhere now (read but not sent, seen but not read, seen past a copy's
//! end), and never the new content, which is sent whole.

use std::path::Path;

use loghamster::tail::follow::{Filled, Note};

use crate::fs::Writer;
use crate::scripted::Script;
use crate::world::LOG;

fn lost(s: &Script) -> Vec<(u64, u64)> {
    s.notes
        .iter()
        .filter_map(|n| match n {
            Note::Lost { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

/// The server says it holds `held`: the tail looks at the file (its
/// length is seen) without reading.
fn ready(s: &mut Script, held: u64) -> bool {
    let (tail, mut env) = s.env();
    let ok = tail.on_ready(&mut env, Some(held));
    s.take_notes();
    ok
}

fn fill(s: &mut Script) -> Filled {
    let (tail, mut env) = s.env();
    let f = tail.fill(&mut env).unwrap();
    s.take_notes();
    f
}

/// `line 1\npartial` read, its first line sent: "partial" waits for its
/// end of line.
fn partly_sent() -> (Script, Writer) {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "line 1\npartial");
    s.look();
    assert!(ready(&mut s, 0));
    assert_eq!(fill(&mut s), Filled::Read(14));
    s.tail.on_sent(7);
    (s, w)
}

/// `line 1\n` read and sent, `line 2\n` written and not read.
fn line_2_unread() -> (Script, Writer) {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "line 1\n");
    s.look();
    assert_eq!(s.ship(0), b"line 1\n");
    s.write(&w, "line 2\n");
    (s, w)
}

/// The file is truncated and `x\n` written, shorter than the reader's
/// position: `lost` is noted, then `x\n` is sent under a new id.
fn shortened_to_x(mut s: Script, w: Writer, lost_range: (u64, u64)) {
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    s.write(&w, "x\n");
    assert_eq!(fill(&mut s), Filled::Truncated);
    assert_eq!(lost(&s), [lost_range], "{:?}", s.notes);
    assert_eq!(s.ship(0), b"x\n");
    s.fs.close(w);
}

#[test]
fn rewritten_past_the_position_before_a_reconnect_loses_nothing() {
    // The connection was closed while idle; the file is truncated and
    // rewritten longer than it was before the client looks again. The
    // reconnect's `200` finds it rewritten: its length then is the new
    // content's, all of which is sent.
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "aaaa\n");
    s.look();
    assert_eq!(s.ship(0), b"aaaa\n");
    s.confirm();
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    let new = "b".repeat(40) + "\n";
    s.write(&w, &new);
    assert_eq!(s.ship(5), new.as_bytes(), "{:?}", s.notes);
    assert!(s.notes.contains(&Note::Truncated {
        at: 5,
        no_copy: true
    }));
    assert_eq!(lost(&s), [], "{:?}", s.notes);
    s.fs.close(w);
}

#[test]
fn rewritten_past_the_position_under_an_open_connection_loses_nothing() {
    let mut s = Script::new();
    let w = s.fs.create(Path::new(LOG)).unwrap();
    s.write(&w, "aaaa\n");
    s.look();
    assert_eq!(s.ship(0), b"aaaa\n");
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    let new = "b".repeat(40) + "\n";
    s.write(&w, &new);
    assert_eq!(fill(&mut s), Filled::Truncated);
    assert_eq!(lost(&s), [], "{:?}", s.notes);
    assert_eq!(s.ship(0), new.as_bytes());
    s.fs.close(w);
}

#[test]
fn shortened_below_the_reader_loses_what_was_seen_and_not_read() {
    let (mut s, w) = line_2_unread();
    // A reconnect sees the file 14 bytes long (the old content: its
    // first bytes are unchanged); nothing of line 2 is read.
    assert!(ready(&mut s, 7));
    shortened_to_x(s, w, (7, 14));
}

#[test]
fn read_and_not_sent_is_lost_without_a_copy() {
    let (s, w) = partly_sent();
    shortened_to_x(s, w, (7, 14));
}

#[test]
fn a_copy_loses_only_what_was_seen_past_its_end() {
    let (mut s, w) = line_2_unread();
    s.advance(5);
    s.copy_to("/var/log/app.log.1");
    // logrotate's window: written after the copy, seen, then truncated.
    s.write(&w, "line 3\n");
    assert!(ready(&mut s, 7));
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    s.write(&w, "new\n");
    assert_eq!(fill(&mut s), Filled::Truncated);
    assert!(s.notes.contains(&Note::Truncated {
        at: 7,
        no_copy: false
    }));
    assert_eq!(lost(&s), [(14, 21)], "{:?}", s.notes);
    s.fs.close(w);
}

#[test]
fn a_copy_holding_everything_loses_nothing() {
    let (mut s, w) = partly_sent();
    s.write(&w, " line\n");
    assert!(ready(&mut s, 7));
    s.advance(5);
    s.copy_to("/var/log/app.log.1");
    s.fs.truncate(Path::new(LOG), 0).unwrap();
    s.write(&w, "new\n");
    assert_eq!(s.ship(7), b"partial line\n", "{:?}", s.notes);
    assert_eq!(lost(&s), [], "{:?}", s.notes);
    s.fs.close(w);
}
