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
//! - [`net`]: socket settings `mio` does not expose (the listen backlog).
//! - [`uring`]: an io_uring for `fdatasync` without blocking the loop.
//! - [`pipe`]: pipes and `splice(2)`, the server's zero-copy path from a
//!   socket into an output file.

pub mod fs;
pub mod host;
pub mod inotify;
pub mod lease;
pub mod net;
pub mod pipe;
pub mod signal;
pub mod tailfs;
pub mod uring;

use std::io;

/// Turns a `-1` return from a libc call into the thread's `errno`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
