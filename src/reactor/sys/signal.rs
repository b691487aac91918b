//! Signals as events: the signals we handle are blocked for the thread and
//! delivered through a non-blocking `signalfd`, so the loop sees them as a
//! readable descriptor and never runs code in a signal handler.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

pub use libc::{SIGHUP, SIGINT, SIGTERM};

#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` for the calling thread and returns a descriptor that
    /// becomes readable when one of them is pending. Call it before any
    /// other thread is started so they inherit the mask.
    pub fn new(signals: &[libc::c_int]) -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given.
        cvt(unsafe { libc::sigemptyset(set.as_mut_ptr()) })?;
        // SAFETY: the set was initialised by sigemptyset above.
        let mut set = unsafe { set.assume_init() };
        for &sig in signals {
            // SAFETY: `set` is an initialised sigset_t.
            cvt(unsafe { libc::sigaddset(&mut set, sig) })?;
        }
        // SAFETY: `set` is initialised; the old mask is not requested.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: `set` is initialised; -1 asks for a new descriptor.
        let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
        // SAFETY: the descriptor was just created and is owned by nobody else.
        Ok(SignalFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// True when one of `signals` (blocked, as this descriptor's are) is
    /// pending: delivered and not read yet. Nothing is taken: the next
    /// [`read`](Self::read) still returns it.
    pub fn pending(&self, signals: &[libc::c_int]) -> io::Result<bool> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigpending fills the set it is given.
        cvt(unsafe { libc::sigpending(set.as_mut_ptr()) })?;
        // SAFETY: initialised by sigpending above.
        let set = unsafe { set.assume_init() };
        // SAFETY: `set` is an initialised sigset_t; sigismember only reads it.
        Ok(signals
            .iter()
            .any(|&s| unsafe { libc::sigismember(&set, s) } == 1))
    }

    /// Returns the next pending signal, or `None` when there is none.
    pub fn read(&self) -> io::Result<Option<libc::c_int>> {
        let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: the kernel writes at most `size` bytes into `info`.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if n as usize != size {
            return Ok(None);
        }
        // SAFETY: the kernel filled the whole struct (checked just above).
        let info = unsafe { info.assume_init() };
        Ok(Some(info.ssi_signo as libc::c_int))
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_signal_is_seen_without_being_taken() {
        // SIGUSR2, blocked for this test's thread only: raise() sends it
        // to the calling thread.
        let fd = SignalFd::new(&[libc::SIGUSR2]).unwrap();
        assert!(!fd.pending(&[libc::SIGUSR2]).unwrap());
        // SAFETY: raising a signal this thread blocks only makes it pending.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        assert!(fd.pending(&[libc::SIGUSR2]).unwrap());
        assert!(!fd.pending(&[libc::SIGHUP]).unwrap());
        assert!(fd.pending(&[libc::SIGUSR2]).unwrap(), "still there");
        assert_eq!(fd.read().unwrap(), Some(libc::SIGUSR2));
        assert!(!fd.pending(&[libc::SIGUSR2]).unwrap());
    }
}
