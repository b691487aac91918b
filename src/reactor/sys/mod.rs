//! Every system call the crate makes that `std` and `mio` do not wrap.
//!
//! Each syscall family lives in one file and is exposed through a safe
//! wrapper that owns its descriptor (`OwnedFd`) and reports failure as
//! `io::Result`. This is the only place in the crate where `unsafe` is
//! allowed; every `unsafe` block carries a `// SAFETY:` line saying why the
//! call is sound.
//!
//! - [`inotify`]: file-system change notification for the tailer.
//! - [`signal`]: a `signalfd` so signals arrive as readable events in the loop.
//! - [`fs`]: opening output files beneath a trusted directory without ever
//!   following a symlink, and small metadata helpers.
//! - [`host`]: the host name and process limits.
//! - [`lease`]: file leases, to prove that nobody holds a file open for
//!   writing (send after close).
//! - [`notify`]: the service manager's notification socket (`sd_notify`).
//! - [`net`]: socket settings `mio` does not expose (the listen backlog).
//! - [`uring`]: an io_uring for `fdatasync` without blocking the loop.
//! - [`random`]: random bytes from the kernel (`getrandom`), for the
//!   client's secret.
//! - [`pipe`]: pipes and `splice(2)`, the server's zero-copy path from a
//!   socket into an output file.

pub mod fs;
pub mod host;
pub mod inotify;
pub mod lease;
pub mod net;
pub mod notify;
pub mod pipe;
pub mod random;
pub mod signal;
pub mod tailfs;
pub mod uring;

use std::io;

/// Calls `f` again for as long as it fails with `EINTR`
/// (`ErrorKind::Interrupted`): a signal arrived before the call did
/// anything, so calling it again is always right. Every read, write,
/// accept or splice loop in the crate goes through here instead of
/// spelling the retry out.
pub fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// Turns a `-1` return from a libc call into the thread's `errno`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_repeats_only_interrupted_calls() {
        let mut calls = 0;
        let r = retry(|| {
            calls += 1;
            match calls {
                1 | 2 => Err(io::ErrorKind::Interrupted.into()),
                _ => Ok(calls),
            }
        });
        assert_eq!(r.unwrap(), 3);
        let mut calls = 0;
        let r: io::Result<()> = retry(|| {
            calls += 1;
            Err(io::ErrorKind::WouldBlock.into())
        });
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(calls, 1);
    }
}
