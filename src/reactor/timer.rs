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

/// An owner's record of the earliest deadline it has armed, so it schedules
/// a heap entry only when it needs an earlier wake-up than it already has.
#[derive(Debug, Default, Clone, Copy)]
pub struct Armed(Option<Instant>);

impl Armed {
    /// Returns true when `at` must be pushed to the heap.
    pub fn arm(&mut self, at: Instant) -> bool {
        match self.0 {
            Some(cur) if cur <= at => false,
            _ => {
                self.0 = Some(at);
                true
            }
        }
    }

    /// The deadline armed, if any: the owner is woken by then.
    pub fn at(&self) -> Option<Instant> {
        self.0
    }

    /// Called when a wake-up for this owner fires at `now`.
    pub fn fired(&mut self, now: Instant) {
        if matches!(self.0, Some(at) if at <= now) {
            self.0 = None;
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
        assert!(a.arm(t0 + Duration::from_secs(3)));
    }
}
