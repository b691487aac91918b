//! Which streams a turn of the loop looks at for inotify news, and how
//! much inotify work one turn does: decisions without I/O, time passed in.
//!
//! A busy host appends to a thousand files a few lines at a time, and
//! inotify reports every `write(2)` as an `IN_MODIFY` of a name. Handled
//! one by one, each event costs the client a look at the path (an
//! `lstat`), a `pread`, and a timer, although the batching rules
//! (`crate::tail::batch`) will not send those bytes before the file's
//! `linger` is due anyway. So:
//!
//! 1. **Coalesce per drain** ([`coalesce`]): the events of one inotify
//!    drain become one entry per stream, masks or-ed together; a stream is
//!    handed its news once per drain, not once per event.
//! 2. **Look once per linger** ([`look_now`]): news that is only growth
//!    (`IN_MODIFY`) for a stream whose whole lines already wait for their
//!    linger is just noted: the stream's timer is armed for that moment,
//!    and the read then takes everything appended meanwhile in one `pread`
//!    and one send. Names changing (create, rename, delete, attributes,
//!    close, lost events) are looked at at once, whatever the linger.
//!    A *trickling* stream (its last pump found fewer than `batch` bytes
//!    before the file's end, and read nothing since) does not read its
//!    first growth either: the news starts the linger clock
//!    (`Tail::grew`), the timer is armed for it, and that one read takes
//!    the news and what follows. Before, the first append after each
//!    send was read at once only to start that clock: two `pread`s per
//!    send where one does. Any other stream waiting for nothing, or only
//!    for a partial line's timeout, looks at once (a file that just sent
//!    a batch is likely to have another).
//!
//!    The latency bound is unchanged: `linger` is the longest the oldest
//!    unsent line waits, as before. What would change is the `batch`
//!    shortcut (send at once once `batch` bytes of whole lines are
//!    buffered), which is only checked when the stream reads: a fast file
//!    whose read caught a write half done (a few lines, under `batch`)
//!    would then wait for its linger with much more in the file. So at
//!    most [`MAX_DEFERRED`] growth notes wait; the next one reads at once.
//!    A file appended to a couple of times per linger (the busy host's
//!    thousand files) is read once per linger; a file written hundreds of
//!    times per linger is read every few writes, as its `batch` wants.
//!    Growth alone does not make the stream look at its path either
//!    ([`names_changed`]): an append cannot change which file a name
//!    refers to, so only the file is read, with no `lstat` of the path.
//! 3. **Bounded drain** ([`Drain`]): one turn reads at most
//!    [`MAX_READS`] inotify buffers. A writer appending to a sibling file as
//!    fast as the loop reads events used to keep the drain loop going
//!    forever (the queue never ran empty), starving sockets, timers and
//!    the other files. Past the bound the loop comes back to inotify on
//!    its own (edge-triggered: no new edge would come) after serving
//!    everything else that is ready.
//! 4. **Rest between drains** ([`rest`]): every append is an inotify
//!    event, and an event wakes the loop whenever it sleeps, so a busy
//!    host woke the client thousands of times a second for news that
//!    waits for its linger anyway. After a drain whose news mostly waits
//!    (at most a quarter of its streams looked at once), the descriptor
//!    leaves the poll for a short gap (`linger / 8`, at most [`REST_MAX`])
//!    and is drained again when it ends: the loop then wakes for its
//!    timers, and events pile up in the kernel's queue meanwhile (a few
//!    hundred at 100,000 a second, against a queue of 16,384). A drain that
//!    found nothing, or that looked at most of its streams at once (one
//!    fast file, whose `batch` wants each write seen), keeps it in the
//!    poll; an idle client is not woken by the gap.

use std::time::{Duration, Instant};

use crate::reactor::sys::inotify::mask;
use crate::reactor::Key;

/// Inotify buffers (64 KiB, about 2,000 events each) read in one turn.
pub(super) const MAX_READS: u32 = 8;

/// Merges `hits` (stream, event mask) into one entry per stream, masks
/// or-ed, ordered by key.
pub(super) fn coalesce(hits: &mut Vec<(Key, u32)>) {
    hits.sort_unstable_by_key(|&(k, _)| k);
    hits.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 |= later.1;
            true
        } else {
            false
        }
    });
}

/// Whether news `mask` may concern which file the path names (anything
/// but growth): the stream looks at the path (an `lstat`) only then. An
/// append, however many, is only `IN_MODIFY`; a rotation, creation,
/// deletion or lost events always come with a name event of their own.
pub(super) fn names_changed(mask: u32) -> bool {
    mask & !mask::MODIFY != 0
}

/// Growth notes a lingering stream lets wait before it reads anyway.
pub(super) const MAX_DEFERRED: u32 = 2;

/// Whether news `mask` needs a look now. `lingering`: until when the
/// stream's growth may wait unread (`Stream::growth_waits`: its whole
/// lines' linger, or a trickle's; `None`: it may not);
/// `deferred`: growth notes it let wait since its last read.
pub(super) fn look_now(mask: u32, lingering: Option<Instant>, deferred: u32, now: Instant) -> bool {
    names_changed(mask) || deferred >= MAX_DEFERRED || lingering.is_none_or(|due| due <= now)
}

/// Longest the inotify descriptor rests out of the poll (see [`rest`]).
pub(super) const REST_MAX: Duration = Duration::from_millis(2);

/// Until when the inotify descriptor rests out of the poll after a drain
/// that handed `hits` streams their news, `looked` of which looked at
/// once; `None`: it stays in the poll. The gap is `linger / 8`, at most
/// [`REST_MAX`] (none with `linger = 0`), so it adds at most that to the
/// moment a stream that was not lingering sees its news.
pub(super) fn rest(hits: usize, looked: usize, linger: Duration, now: Instant) -> Option<Instant> {
    let gap = REST_MAX.min(linger / 8);
    (hits > 0 && looked * 4 <= hits && !gap.is_zero()).then(|| now + gap)
}

/// The inotify reads of one turn.
#[derive(Debug, Default)]
pub(super) struct Drain {
    reads: u32,
}

impl Drain {
    /// Counts one read that returned events; false once the turn's budget
    /// is spent (the caller comes back in a later turn).
    pub(super) fn another(&mut self) -> bool {
        self.reads += 1;
        self.reads < MAX_READS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> Key {
        Key::from_token(mio::Token(crate::reactor::slots::RESERVED + n)).unwrap()
    }

    #[test]
    fn coalesce_leaves_one_entry_per_stream_with_every_bit() {
        let (a, b, c) = (key(1), key(2), key(3));
        let mut hits = vec![
            (b, mask::MODIFY),
            (a, mask::MODIFY),
            (b, mask::MODIFY),
            (c, mask::MODIFY),
            (b, mask::MOVED_FROM),
            (a, mask::MODIFY),
        ];
        coalesce(&mut hits);
        assert_eq!(
            hits,
            vec![
                (a, mask::MODIFY),
                (b, mask::MODIFY | mask::MOVED_FROM),
                (c, mask::MODIFY)
            ]
        );
    }

    #[test]
    fn the_descriptor_rests_after_news_that_mostly_waits() {
        let now = Instant::now();
        let linger = Duration::from_millis(20);
        let gap = Duration::from_micros(2_000);
        // A busy host: most streams' news waits for their linger.
        assert_eq!(rest(200, 3, linger, now), Some(now + gap));
        assert_eq!(rest(200, 50, linger, now), Some(now + gap));
        assert_eq!(rest(1, 0, linger, now), Some(now + gap));
        // Most looked at once (one fast file), or nothing read: no rest.
        assert_eq!(rest(200, 51, linger, now), None);
        assert_eq!(rest(1, 1, linger, now), None);
        assert_eq!(rest(0, 0, linger, now), None);
        // A short linger rests an eighth of it; none without linger.
        let short = Duration::from_millis(4);
        assert_eq!(rest(10, 0, short, now), Some(now + short / 8));
        assert_eq!(rest(10, 0, Duration::ZERO, now), None);
    }

    #[test]
    fn coalesce_of_nothing_or_one() {
        let mut hits = Vec::new();
        coalesce(&mut hits);
        assert!(hits.is_empty());
        let mut hits = vec![(key(7), mask::CREATE)];
        coalesce(&mut hits);
        assert_eq!(hits, vec![(key(7), mask::CREATE)]);
    }

    #[test]
    fn growth_of_a_lingering_stream_waits_for_its_linger() {
        let now = Instant::now();
        let due = now + Duration::from_millis(15);
        assert!(!look_now(mask::MODIFY, Some(due), 0, now));
        // Its linger came: look (the timer does the same).
        assert!(look_now(mask::MODIFY, Some(due), 0, due));
        assert!(look_now(mask::MODIFY, Some(now), 0, due));
    }

    #[test]
    fn a_stream_growing_often_reads_after_a_few_notes() {
        let now = Instant::now();
        let due = Some(now + Duration::from_millis(15));
        for n in 0..MAX_DEFERRED {
            assert!(!look_now(mask::MODIFY, due, n, now), "note {n}");
        }
        assert!(look_now(mask::MODIFY, due, MAX_DEFERRED, now));
    }

    #[test]
    fn a_stream_waiting_for_nothing_looks_at_once() {
        let now = Instant::now();
        assert!(look_now(mask::MODIFY, None, 0, now));
    }

    #[test]
    fn name_changes_are_looked_at_at_once_even_while_lingering() {
        let now = Instant::now();
        let due = Some(now + Duration::from_millis(15));
        for m in [
            mask::CREATE,
            mask::MOVED_FROM,
            mask::MOVED_TO,
            mask::DELETE,
            mask::ATTRIB,
            mask::CLOSE_WRITE,
            mask::Q_OVERFLOW,
            mask::IGNORED,
        ] {
            assert!(look_now(m, due, 0, now), "mask {m:#x}");
            assert!(look_now(m | mask::MODIFY, due, 0, now), "mask {m:#x}");
        }
    }

    #[test]
    fn only_growth_leaves_the_path_alone() {
        assert!(!names_changed(mask::MODIFY));
        assert!(names_changed(mask::MODIFY | mask::MOVED_TO));
        assert!(names_changed(mask::DELETE));
        assert!(names_changed(mask::Q_OVERFLOW));
    }

    #[test]
    fn a_drain_stops_after_its_budget() {
        let mut d = Drain::default();
        let mut reads = 1;
        while d.another() {
            reads += 1;
            assert!(reads <= MAX_READS, "no bound");
        }
        assert_eq!(reads, MAX_READS);
    }
}
