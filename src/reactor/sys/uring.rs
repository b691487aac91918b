//! io_uring, where it pays: `fdatasync` of output files without blocking
//! the one-thread loop.
//!
//! A blocking `fdatasync` of an output that took a second of traffic costs
//! the server 10–20 ms on the development machine, during which no socket
//! is read: that is the live-tail p99 latency. Submitted to a ring, the
//! sync runs in the kernel while the loop goes on; the ring's descriptor
//! becomes readable when completions are ready, so the loop polls it with
//! mio like any socket.
//!
//! Only operations without user-space buffers are submitted, and the ring
//! keeps its own duplicate of each descriptor until the operation has
//! completed (the kernel may look the descriptor up only when the work
//! runs, after the caller closed its own): no memory or descriptor handed
//! to the kernel can go away while an operation is in flight.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use io_uring::{opcode, types, IoUring};

/// A small submission/completion ring for `fdatasync`.
pub struct Ring {
    ring: IoUring,
    /// Descriptors of operations in flight, by token, kept open until
    /// their completion is reaped.
    in_flight: HashMap<u64, OwnedFd>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.ring.as_raw_fd())
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl Ring {
    /// Sets up a ring with room for `entries` operations. Fails where
    /// io_uring is missing or forbidden (old kernel, seccomp,
    /// `kernel.io_uring_disabled`): the caller falls back to blocking calls.
    pub fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::new(entries)?;
        let mut probe = io_uring::Probe::new();
        if ring.submitter().register_probe(&mut probe).is_ok()
            && !probe.is_supported(opcode::Fsync::CODE)
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring has no fsync operation on this kernel",
            ));
        }
        Ok(Ring {
            ring,
            in_flight: HashMap::new(),
        })
    }

    /// Starts an `fdatasync` of `fd`; its completion is reported by
    /// [`reap`](Self::reap) with `token`, which must not be in flight.
    pub fn fdatasync(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        if self.in_flight.contains_key(&token) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an operation with this token is in flight",
            ));
        }
        let fd = fd.try_clone_to_owned()?;
        let entry = opcode::Fsync::new(types::Fd(fd.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(token);
        loop {
            // SAFETY: an fsync entry refers to no user memory, and its
            // descriptor (our duplicate) stays open in `in_flight` until
            // the completion is reaped.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            match pushed {
                Ok(()) => break,
                // The submission queue is full: hand it to the kernel first.
                Err(_) => {
                    self.ring.submit()?;
                }
            }
        }
        self.in_flight.insert(token, fd);
        self.ring.submit()?;
        Ok(())
    }

    /// Collects finished operations: `(token, result)`.
    pub fn reap(&mut self, out: &mut Vec<(u64, io::Result<()>)>) {
        for cqe in self.ring.completion() {
            self.in_flight.remove(&cqe.user_data());
            let res = cqe.result();
            let r = if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else {
                Ok(())
            };
            out.push((cqe.user_data(), r));
        }
    }

    /// Operations submitted and not reaped yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

impl AsRawFd for Ring {
    /// Readable (for epoll) when completions are waiting.
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn an_fdatasync_completes_with_its_token() {
        let Ok(mut ring) = Ring::new(8) else {
            eprintln!("io_uring is not available here; nothing to test");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("x")).unwrap();
        f.write_all(b"data\n").unwrap();
        ring.fdatasync(f.as_fd(), 42).unwrap();
        drop(f); // the ring keeps its own descriptor
        let mut done = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while done.is_empty() {
            assert!(std::time::Instant::now() < deadline, "no completion");
            ring.reap(&mut done);
            std::thread::yield_now();
        }
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, 42);
        assert!(done[0].1.is_ok(), "{:?}", done[0].1);
        assert_eq!(ring.in_flight(), 0);
    }
}
