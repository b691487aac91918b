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

/// Sets `TCP_QUICKACK`. Off ("ping-pong" mode) lets the kernel delay the
/// ACK for what the socket receives next: a receiver that empties its
/// socket after each small segment otherwise sends an ACK for every one,
/// while in this mode the ACK waits for the next segment or the
/// delayed-ACK timer, so a peer sending a few lines at a time gets about
/// half as many. The kernel turns it on again when that timer fires, so a
/// receiver turns it off after each read that wants it.
pub fn set_quickack(sock: &impl AsFd, on: bool) -> io::Result<()> {
    let fd = sock.as_fd().as_raw_fd();
    let val = libc::c_int::from(on);
    // SAFETY: `fd` is borrowed for the call; `val` is an int that lives
    // across it, and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `TCP_QUICKACK` as the kernel reports it: false while ACKs are delayed
/// (see [`set_quickack`]).
pub fn quickack(sock: &impl AsFd) -> io::Result<bool> {
    let fd = sock.as_fd().as_raw_fd();
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is borrowed for the call; `val` and `len` are valid for
    // writes of an int and a socklen_t, and `len` holds `val`'s size.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(val != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn quickack_is_set_and_read_back() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        set_quickack(&s, true).unwrap();
        assert!(quickack(&s).unwrap());
        set_quickack(&s, false).unwrap();
        assert!(!quickack(&s).unwrap());
        set_quickack(&s, true).unwrap();
        assert!(quickack(&s).unwrap());
    }
}
