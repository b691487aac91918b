//! The daemon side of directory sources (`dirsource.rs` is one source's
//! queue of files): starting a stream for each queued file while slots
//! are free (sent whole after close, or followed for a `path` glob),
//! retiring it once the server confirmed the whole file or its followed
//! file is gone, and the progress line of a `method = "send"` backfill.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::stream::Stream;
use super::{dirsource, progress};
use super::{ClientDaemon, PROGRESS, STATE};
use crate::reactor::Key;

/// The paths and files (device, inode) the streams read: a file a `path`
/// glob matched gets a stream only if no stream reads it yet. Built in one
/// pass over the streams and kept up to date as streams start, so starting
/// n files costs O(n + streams) rather than n passes over the streams.
#[derive(Debug, Default)]
struct Taken {
    paths: HashSet<PathBuf>,
    inodes: HashSet<(u64, u64)>,
}

impl Taken {
    fn of<'a>(streams: impl Iterator<Item = &'a Stream>) -> Self {
        let mut taken = Taken::default();
        for s in streams {
            taken.add(s);
        }
        taken
    }

    fn add(&mut self, s: &Stream) {
        self.insert(s.path(), s.held());
    }

    fn insert(&mut self, path: &Path, held: impl Iterator<Item = (u64, u64)>) {
        self.paths.insert(path.to_path_buf());
        self.inodes.extend(held);
    }

    /// True when a stream follows `path` or reads the file `inode`.
    fn takes(&self, path: &Path, inode: Option<(u64, u64)>) -> bool {
        self.paths.contains(path) || inode.is_some_and(|i| self.inodes.contains(&i))
    }
}

impl ClientDaemon {
    /// The progress timer: the terminal's status line, or the INFO line
    /// of each file sent by `method = "send"` whose time has come (see
    /// `progress.rs`).
    pub(super) fn on_progress(&mut self, started: Instant, now: Instant) {
        self.progress.fired(now);
        if self.progress.status_due(now) {
            let in_flight: u64 = self.streams.values().map(Stream::sent).sum();
            let done = self.sent_bytes + in_flight;
            let total = self.sources.iter().map(|s| s.queued_bytes).sum::<u64>();
            let elapsed = now.saturating_duration_since(started);
            let line = progress::status_line(done, total, self.sent_files, elapsed);
            crate::log::status(&line);
        }
        let streams = &self.streams;
        let look = |k: Key| {
            streams
                .get(k)
                .map(|s| (s.sent(), s.file_len().unwrap_or(0)))
        };
        for (key, r) in self.progress.due_files(now, look) {
            let Some(path) = self.streams.get(key).map(Stream::path) else {
                continue;
            };
            crate::info!(
                path = path, sent = r.sent, total = r.total, rate = r.rate,
                eta_s = r.eta.map(|d| d.as_secs());
                "{}: {}", crate::log::esc(path), r.text()
            );
        }
        self.arm_progress();
    }

    /// Schedules the progress timer if it is needed earlier than armed.
    pub(super) fn arm_progress(&mut self) {
        if let Some(at) = self.progress.arm() {
            self.reactor.timers.schedule(at, PROGRESS);
        }
    }

    /// A whole file was confirmed by `250 DONE`: record it as complete,
    /// delete it if configured (only if the path is still that file), and
    /// start the next queued file.
    pub(super) fn finish_whole(&mut self, key: Key, now: Instant) {
        let Some(stream) = self.streams.remove(key) else {
            return;
        };
        let Some(src) = self
            .sources
            .iter_mut()
            .find(|s| s.in_flight.get(stream.path()) == Some(&key))
        else {
            return;
        };
        src.in_flight.remove(stream.path());
        self.progress.forget(key);
        let len = stream.file_len().unwrap_or(0);
        if src.delete && stream.path_is_same_file() {
            match std::fs::remove_file(stream.path()) {
                Ok(()) => crate::info!(
                    "{}: sent ({len} bytes, confirmed); deleted",
                    crate::log::esc(&stream.path())
                ),
                Err(e) => crate::warn!(
                    "{}: sent ({len} bytes, confirmed) but cannot delete it: {e}",
                    crate::log::esc(&stream.path())
                ),
            }
        } else {
            crate::info!(
                "{}: sent ({len} bytes, confirmed)",
                crate::log::esc(&stream.path())
            );
        }
        self.completed.extend(stream.entry());
        self.sent_files += 1;
        self.sent_bytes += len;
        self.dirty = true;
        self.start_sources(now);
    }

    /// Forgets a stream started for a `path` glob match whose file is gone.
    pub(super) fn drop_gone(&mut self, key: Key) {
        let Some(stream) = self.streams.remove(key) else {
            return;
        };
        crate::debug!(
            "{}: gone; no longer followed",
            crate::log::esc(&stream.path())
        );
        self.draining.remove(&key);
        for dw in self.dirs.values_mut() {
            if let Some(keys) = dw.streams.get_mut(stream.name()) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    dw.streams.remove(stream.name());
                }
            }
        }
        for src in &mut self.sources {
            if src.in_flight.get(stream.path()) == Some(&key) {
                src.in_flight.remove(stream.path());
            }
        }
    }

    /// Starts queued whole-file sends while slots are free.
    pub(super) fn start_sources(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        // Built at the first followed file, kept up to date after.
        let mut taken: Option<Taken> = None;
        for i in 0..self.sources.len() {
            if self.sources[i].retiring {
                continue;
            }
            loop {
                // (Before taking a path: one not started stays queued.)
                if self.stop_waiting() {
                    return;
                }
                let Some(path) = self.sources[i].next_to_start() else {
                    break;
                };
                let src = &self.sources[i];
                let key = self.streams.vacant_key();
                if src.follow {
                    // Not if a stream already reads this file (a configured
                    // path, or one draining it after a rename).
                    let inode = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
                    let streams = &self.streams;
                    let taken = taken.get_or_insert_with(|| Taken::of(streams.values()));
                    if taken.takes(&path, inode) {
                        continue;
                    }
                    let mut stream = Stream::new(
                        key,
                        src.meter,
                        path.clone(),
                        src.svc.clone(),
                        src.meta.clone(),
                        self.settings.tail(true, false),
                    );
                    stream.set_ephemeral();
                    let name = super::watch::Name::new(stream.name());
                    self.streams.insert(stream);
                    let dir = &self.sources[i].dir;
                    if let Some(dw) = self.dirs.values_mut().find(|d| d.dir == *dir) {
                        dw.streams.entry(name).or_default().push(key);
                    }
                    self.sources[i].in_flight.insert(path, key);
                    self.with_stream(key, now, |s, ctx| {
                        s.on_file_event(ctx);
                    });
                    if let Some(s) = self.streams.get(key) {
                        taken.add(s);
                    }
                    continue;
                }
                // A file sent before that grew since: its entry goes back
                // among the loaded ones, so the stream continues it.
                if let Some(e) = dirsource::take_grown(&path, &mut self.completed) {
                    self.loaded.push(e);
                }
                let once = src.once;
                let stream = Stream::new(
                    key,
                    src.meter,
                    path.clone(),
                    src.svc.clone(),
                    src.meta.clone(),
                    self.settings.tail(false, true),
                );
                self.streams.insert(stream);
                self.sources[i].in_flight.insert(path, key);
                self.with_stream(key, now, |s, ctx| s.on_file_event(ctx));
                // (Not yet connected: `sent` is where the send starts.)
                if let Some(from) = self.streams.get(key).filter(|_| once).map(Stream::sent) {
                    self.progress.watch(key, now, from);
                    self.arm_progress();
                }
            }
        }
    }

    /// Looks again at files not proven closed whose time has come, starts
    /// what is queued, and arms the timer for the rest.
    pub(super) fn recheck_sources(&mut self, now: Instant) {
        let mut next: Option<Instant> = None;
        for src in &mut self.sources {
            if let Some(at) = src.recheck(now, &self.completed) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.start_sources(now);
        if let Some(at) = next {
            if self.state_timer.arm(at) {
                self.reactor.timers.schedule(at, STATE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Taken;
    use std::path::Path;

    #[test]
    fn a_file_is_taken_by_its_path_or_by_any_file_a_stream_reads() {
        let mut t = Taken::default();
        t.insert(Path::new("/d/a.log"), [(1, 10), (1, 11)].into_iter());
        t.insert(Path::new("/d/b.log"), std::iter::empty());
        assert!(t.takes(Path::new("/d/a.log"), None));
        assert!(t.takes(Path::new("/d/b.log"), Some((1, 99))));
        // Renamed away while its stream drains it: taken by inode.
        assert!(t.takes(Path::new("/d/a.log.1"), Some((1, 11))));
        assert!(!t.takes(Path::new("/d/c.log"), Some((2, 10))));
        assert!(!t.takes(Path::new("/d/c.log"), None));
    }
}
