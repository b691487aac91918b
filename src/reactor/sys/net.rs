//! Socket settings `mio` does not expose.

use std::io;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;

use super::cvt;

/// Sets a listening socket's accept queue length (`listen(2)` again; the
/// kernel caps it at `net.core.somaxconn`). mio listens with 128, which a
/// burst of reconnecting clients overflows: their SYNs are dropped and
/// retried a second later.
pub fn set_listen_backlog(listener: &impl AsFd, backlog: i32) -> io::Result<()> {
    let fd = listener.as_fd().as_raw_fd();
    // SAFETY: `fd` is a valid descriptor borrowed for the call; listen(2)
    // only changes the socket's state.
    cvt(unsafe { libc::listen(fd, backlog) }).map(drop)
}
