//! One durability step for many outputs: which outputs of a checkpoint
//! round are `fdatasync`ed one by one and which file systems get one
//! `syncfs(2)` instead ([`plan`]), and the thread that runs those
//! `syncfs` calls without stalling the loop ([`Syncer`]).
//!
//! ## Why
//! A host with a thousand active files leaves a thousand dirty outputs per
//! `sync_interval`. An `fdatasync` each costs a journal commit (or, on
//! ext4 without a journal, a synchronous inode write) and a cache flush per
//! file: on the development machine 0.14 ms of server CPU and 6 ms of disk
//! wait per file, 18 % of the server's CPU at 1,000 files × 15 MB/s (see
//! `docs/PERFORMANCE.md`, "Many files: server"). One `syncfs` writes the
//! same pages back, every inode block once and one commit, for about
//! 1 ms of CPU.
//!
//! ## The trade-off
//! `syncfs` also writes back every other dirty file on that file system:
//! a build or a database sharing the output file system makes the round
//! slower (not less correct), and its I/O happens now rather than when the
//! kernel's flusher would have done it. So a file system gets `syncfs`
//! only when at least [`SYNCFS_AT`] of its outputs are dirty; a few dirty
//! outputs are synced one by one as before.
//!
//! ## Exactness
//! `ACK n` still means written, synced and recorded: a round takes its
//! checkpoint when it begins and writes it only after every sync of the
//! round, per file or per file system, has completed without error
//! (`commit`). `syncfs` is used only where it reports writeback errors
//! (Linux 5.8 and later); a failed `syncfs` marks every output it stood
//! for dirty again, like a failed `fdatasync`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::sync::Arc;

use mio::Waker;

use crate::reactor::sys::fs::syncfs;
use crate::sink::output::OutputId;

/// Dirty outputs on one file system from which on a round gives that file
/// system one `syncfs` instead of an `fdatasync` each (the crossover
/// measured in `docs/PERFORMANCE.md`).
pub(crate) const SYNCFS_AT: usize = 16;

/// How a round makes its dirty outputs durable.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Outputs to `fdatasync` one by one.
    pub per_file: Vec<OutputId>,
    /// File systems to `syncfs`, each with the outputs it stands for
    /// (the first one's descriptor names the file system).
    pub filesystems: Vec<Vec<OutputId>>,
}

/// Splits a round's dirty outputs, given with the device of their file
/// system, into per-file syncs and per-file-system syncs: a file system
/// with at least `at` dirty outputs gets one `syncfs` when `syncfs` is
/// usable. Pure: the same input gives the same plan, in device order.
pub(crate) fn plan(dirty: &[(OutputId, u64)], syncfs_usable: bool, at: usize) -> Plan {
    let mut by_dev: BTreeMap<u64, Vec<OutputId>> = BTreeMap::new();
    for &(id, dev) in dirty {
        by_dev.entry(dev).or_default().push(id);
    }
    let mut plan = Plan::default();
    for (_, ids) in by_dev {
        if syncfs_usable && ids.len() >= at.max(1) {
            plan.filesystems.push(ids);
        } else {
            plan.per_file.extend(ids);
        }
    }
    plan
}

/// Completed `syncfs` jobs: `(token, result)`.
pub(crate) type Done = (u64, io::Result<()>);

/// A thread that runs `syncfs` for the loop and wakes it when one is done
/// (a `syncfs` waits for the disk, 10–300 ms here, and io_uring has no
/// such operation). Dropping the `Syncer` ends the thread after its
/// current job.
#[derive(Debug)]
pub(crate) struct Syncer {
    jobs: mpsc::Sender<(u64, File)>,
    done: mpsc::Receiver<Done>,
    /// The first `syncfs` was logged (once per server).
    announced: bool,
}

impl Syncer {
    /// Starts the thread; `waker` wakes the loop after each job.
    pub fn start(waker: Arc<Waker>) -> io::Result<Syncer> {
        let (jobs, todo) = mpsc::channel::<(u64, File)>();
        let (report, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("loghamsterd-syncfs".into())
            .spawn(move || {
                for (token, file) in todo {
                    let result = syncfs(&file);
                    drop(file);
                    if report.send((token, result)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Syncer {
            jobs,
            done,
            announced: false,
        })
    }

    /// Queues a `syncfs` of the file system holding `file` (a descriptor
    /// the thread owns until the job is done); reported by
    /// [`reap`](Self::reap) with `token`.
    pub fn submit(&mut self, token: u64, file: File) -> io::Result<()> {
        if !self.announced {
            self.announced = true;
            crate::info!(
                "{SYNCFS_AT} or more outputs on one file system to sync: one syncfs for them (it writes back that file system's other files too)"
            );
        }
        self.jobs
            .send((token, file))
            .map_err(|_| io::Error::other("the syncfs thread is gone"))
    }

    /// Collects finished jobs.
    pub fn reap(&mut self, out: &mut Vec<Done>) {
        out.extend(self.done.try_iter());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_system_with_many_dirty_outputs_gets_one_syncfs() {
        let dirty: Vec<(OutputId, u64)> =
            (0..20).map(|i| (i, 7)).chain([(20, 9), (21, 9)]).collect();
        let p = plan(&dirty, true, 16);
        assert_eq!(p.filesystems, vec![(0..20).collect::<Vec<_>>()]);
        assert_eq!(p.per_file, vec![20, 21]);
    }

    #[test]
    fn below_the_threshold_or_without_a_usable_syncfs_every_output_is_synced_alone() {
        let dirty: Vec<(OutputId, u64)> = (0..15).map(|i| (i, 7)).collect();
        let p = plan(&dirty, true, 16);
        assert!(p.filesystems.is_empty());
        assert_eq!(p.per_file, (0..15).collect::<Vec<_>>());
        let many: Vec<(OutputId, u64)> = (0..100).map(|i| (i, 7)).collect();
        let p = plan(&many, false, 16);
        assert!(p.filesystems.is_empty());
        assert_eq!(p.per_file.len(), 100);
    }

    #[test]
    fn every_dirty_output_is_in_the_plan_exactly_once() {
        let dirty: Vec<(OutputId, u64)> = (0..50).map(|i| (i, (i % 3) as u64)).collect();
        for at in [0, 1, 10, 17, 100] {
            let p = plan(&dirty, true, at);
            let mut all: Vec<OutputId> = p.per_file.clone();
            all.extend(p.filesystems.iter().flatten());
            all.sort_unstable();
            assert_eq!(all, (0..50).collect::<Vec<_>>(), "at {at}");
            assert!(p.filesystems.iter().all(|f| !f.is_empty()));
        }
        assert_eq!(plan(&[], true, 16), Plan::default());
    }

    #[test]
    fn the_thread_syncs_and_reports_with_the_token() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(1)).unwrap());
        let mut s = Syncer::start(waker).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let f = File::create(tmp.path().join("x")).unwrap();
        s.submit(5, f).unwrap();
        let mut done = Vec::new();
        let mut events = mio::Events::with_capacity(4);
        while done.is_empty() {
            // The thread wakes the poll once the job is done.
            poll.poll(&mut events, None).unwrap();
            s.reap(&mut done);
        }
        assert_eq!(done[0].0, 5);
        assert!(done[0].1.is_ok());
    }
}
