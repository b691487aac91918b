//! Saying a thing once per cause.
//!
//! A condition that persists (a missing directory retried every few
//! seconds, a server that refuses a stream on every reconnect, a state
//! file that cannot be written) is one WARN or ERROR line when it begins,
//! another only when its cause changes, and one INFO line when it ends;
//! the retries in between are silent (or debug lines). The callers keep
//! one [`Said`] per thing that can go wrong (or a [`SaidBy`] keyed by
//! path) and ask it before logging. No I/O and no clock here: the caller
//! decides what a cause is (an error kind, a reply text) and what to
//! print.

use std::collections::HashMap;
use std::hash::Hash;

/// The cause last reported for one thing, if it is still going on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said<C> {
    last: Option<C>,
}

impl<C> Default for Said<C> {
    fn default() -> Self {
        Said { last: None }
    }
}

impl<C: PartialEq> Said<C> {
    /// Records `cause`; true when it should be said: nothing was said
    /// yet, or the cause differs from the one said last.
    pub fn say(&mut self, cause: C) -> bool {
        if self.last.as_ref() == Some(&cause) {
            return false;
        }
        self.last = Some(cause);
        true
    }

    /// The condition ended; true when something had been said about it
    /// (the caller may then say that it ended).
    pub fn clear(&mut self) -> bool {
        self.last.take().is_some()
    }

    /// True while a cause is on record.
    pub fn active(&self) -> bool {
        self.last.is_some()
    }
}

/// One [`Said`] per key (a directory, an output path), for keys that
/// come and go. At most [`SaidBy::MAX`] keys are remembered: past that
/// everything is forgotten, so memory stays bounded whatever peers send,
/// at the cost of saying a persisting cause once more.
#[derive(Debug, Clone)]
pub struct SaidBy<K, C> {
    map: HashMap<K, C>,
}

impl<K, C> Default for SaidBy<K, C> {
    fn default() -> Self {
        SaidBy {
            map: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq, C: PartialEq> SaidBy<K, C> {
    /// Most keys remembered.
    pub const MAX: usize = 4096;

    /// As [`Said::say`], for `key`.
    pub fn say(&mut self, key: K, cause: C) -> bool {
        if self.map.get(&key) == Some(&cause) {
            return false;
        }
        if self.map.len() >= Self::MAX && !self.map.contains_key(&key) {
            self.map.clear();
        }
        self.map.insert(key, cause);
        true
    }

    /// As [`Said::clear`], for `key`.
    pub fn clear<Q>(&mut self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key).is_some()
    }

    /// Keys with a cause on record.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_said_once_until_it_changes_or_ends() {
        let mut s = Said::default();
        assert!(!s.active());
        assert!(s.say("EACCES"));
        assert!(!s.say("EACCES"));
        assert!(!s.say("EACCES"));
        assert!(s.active());
        assert!(s.say("ENOSPC"), "a new cause is said");
        assert!(!s.say("ENOSPC"));
        assert!(s.clear(), "the end is said when something was");
        assert!(!s.clear(), "and only once");
        assert!(s.say("ENOSPC"), "the same cause again after it ended");
    }

    #[test]
    fn keys_are_independent_and_bounded() {
        let mut s: SaidBy<String, u8> = SaidBy::default();
        assert!(s.say("a".into(), 1));
        assert!(s.say("b".into(), 1));
        assert!(!s.say("a".into(), 1));
        assert!(s.clear("a"));
        assert!(!s.clear("a"));
        assert!(!s.say("b".into(), 1));
        for i in 0..SaidBy::<String, u8>::MAX * 2 {
            s.say(i.to_string(), 0);
            assert!(s.len() <= SaidBy::<String, u8>::MAX);
        }
    }
}
