//! Deadlines for the loop.
//!
//! A min-heap of `(deadline, key)`. Entries are never cancelled: an owner
//! that no longer cares simply ignores the wake-up (it re-checks its own
//! deadlines against `now`), and an entry whose key is stale is dropped by
//! the slot lookup. Owners avoid flooding the heap by arming only when the
//! new deadline is earlier than the one they already armed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Timers<K: Ord + Copy> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    pub fn schedule(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// How long the loop may sleep from `now`; `None` when nothing is armed.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// Pops one entry whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<K> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, k))| k),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// How many of an owner's pending wake-ups [`Armed`] remembers.
const PENDING: usize = 4;

/// An owner's record of the wake-ups it has pending in the heap, so it
/// schedules an entry only when it needs an earlier wake-up than any it
/// already has.
///
/// Entries are never cancelled, so an owner woken by an early deadline
/// still has its later ones in the heap. Remembering them is what keeps
/// the heap bounded: a stream that arms its linger (soon) and then its
/// idle close (minutes away) after every send would otherwise push a new
/// far entry per send, each living minutes (at 1,000 busy files, 37,000
/// a second: millions of entries). Only the [`PENDING`] earliest are
/// kept; forgetting one costs a redundant entry, never a missed wake-up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Armed {
    /// Ascending; the `None`s at the end.
    pending: [Option<Instant>; PENDING],
}

impl Armed {
    /// Returns true when `at` must be pushed to the heap: when no pending
    /// wake-up comes at or before it.
    pub fn arm(&mut self, at: Instant) -> bool {
        if self.pending[0].is_some_and(|first| first <= at) {
            return false;
        }
        // Earlier than every pending one: it goes first, and the latest
        // falls off when all slots are taken.
        self.pending.copy_within(..PENDING - 1, 1);
        self.pending[0] = Some(at);
        true
    }

    /// The earliest pending deadline, if any: the owner is woken by then.
    pub fn at(&self) -> Option<Instant> {
        self.pending[0]
    }

    /// Called when a wake-up for this owner fires at `now`: every pending
    /// deadline at or before `now` is spent.
    pub fn fired(&mut self, now: Instant) {
        let spent = self
            .pending
            .iter()
            .take_while(|p| p.is_some_and(|at| at <= now))
            .count();
        if spent > 0 {
            self.pending.copy_within(spent.., 0);
            self.pending[PENDING - spent..].fill(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.schedule(t0 + Duration::from_millis(30), 3u32);
        t.schedule(t0 + Duration::from_millis(10), 1u32);
        assert_eq!(t.timeout(t0), Some(Duration::from_millis(10)));
        assert_eq!(t.pop_expired(t0), None);
        let later = t0 + Duration::from_millis(31);
        assert_eq!(t.pop_expired(later), Some(1));
        assert_eq!(t.pop_expired(later), Some(3));
        assert!(t.is_empty());
    }

    #[test]
    fn armed_schedules_only_earlier_deadlines() {
        let t0 = Instant::now();
        let mut a = Armed::default();
        assert!(a.arm(t0 + Duration::from_secs(2)));
        assert!(!a.arm(t0 + Duration::from_secs(3)));
        assert!(a.arm(t0 + Duration::from_secs(1)));
        a.fired(t0 + Duration::from_secs(1));
        // The 2 s wake-up is still pending: 3 s needs no entry of its own.
        assert!(!a.arm(t0 + Duration::from_secs(3)));
        assert_eq!(a.at(), Some(t0 + Duration::from_secs(2)));
        a.fired(t0 + Duration::from_secs(2));
        assert_eq!(a.at(), None);
        assert!(a.arm(t0 + Duration::from_secs(3)));
    }

    /// An owner woken soon and again minutes later, as a busy stream is
    /// (its linger, then its idle close), through many cycles: the heap
    /// holds a bounded number of entries, and the owner is woken by every
    /// deadline it asked for.
    #[test]
    fn an_owner_cycling_a_near_and_a_far_deadline_keeps_the_heap_bounded() {
        let t0 = Instant::now();
        let (linger, idle) = (Duration::from_millis(20), Duration::from_secs(300));
        let mut timers = Timers::default();
        let mut armed = Armed::default();
        let mut now = t0;
        let mut most = 0;
        for _ in 0..100_000 {
            // After a send: nothing until the idle close.
            let far = now + idle;
            if armed.arm(far) {
                timers.schedule(far, 7u32);
            }
            assert!(armed.at().is_some_and(|at| at <= far));
            // The next line: its linger.
            let near = now + linger;
            if armed.arm(near) {
                timers.schedule(near, 7u32);
            }
            assert_eq!(armed.at(), Some(near));
            most = most.max(timers.len());
            // The loop wakes it at the linger.
            now = near;
            assert_eq!(timers.pop_expired(now), Some(7));
            assert_eq!(timers.pop_expired(now), None);
            armed.fired(now);
        }
        assert!(most <= 3, "{most} entries at most");
        // 2,000 s later than the start: the idle closes that came due
        // wake it (each once), and nothing else is left.
        now = t0 + Duration::from_secs(2_400);
        let mut woken = 0;
        while timers.pop_expired(now).is_some() {
            woken += 1;
        }
        armed.fired(now);
        assert!(woken >= 1 && timers.is_empty() && armed.at().is_none());
    }

    #[test]
    fn only_the_earliest_pending_are_remembered_and_a_forgotten_one_is_pushed_again() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut a = Armed::default();
        // Ever earlier: each one is pushed; the latest falls off.
        for n in (1..=PENDING as u64 + 1).rev() {
            assert!(a.arm(s(10 * n)));
        }
        assert_eq!(a.at(), Some(s(10)));
        a.fired(s(10 * PENDING as u64));
        assert_eq!(a.at(), None, "all that it remembers were spent");
        // The forgotten latest is still in a heap somewhere, but arming it
        // again pushes it: one redundant entry, no missed wake-up.
        assert!(a.arm(s(10 * (PENDING as u64 + 1))));
    }
}
