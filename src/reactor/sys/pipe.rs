//! Pipes and `splice(2)`: moving bytes between descriptors inside the
//! kernel.
//!
//! `splice` needs a pipe on one side, so a socket → file copy takes two
//! calls: [`Pipe::fill_from`] (socket → pipe; the pipe takes references to
//! the socket's buffer pages, no copy) and [`Pipe::drain_to`] (pipe → file
//! at an explicit offset; the kernel copies into the page cache, once).
//! Both ends are non-blocking, and every call passes `SPLICE_F_NONBLOCK`,
//! so `WouldBlock` means "nothing to move now", never a sleep.
//!
//! The file side takes an explicit offset because the kernel refuses to
//! splice into a descriptor opened with `O_APPEND` (`EINVAL`).
//! [`is_unsupported`] names the errors that mean "splice does not work
//! here" (as opposed to "this transfer failed"), for callers that fall back
//! to `read`/`write`.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::cvt;

/// An anonymous pipe used as a splice buffer: both ends owned,
/// close-on-exec, non-blocking.
#[derive(Debug)]
pub struct Pipe {
    /// Read end; a `File` only so that `read(2)` needs no `unsafe`.
    rd: File,
    wr: OwnedFd,
    /// Bytes the pipe holds at most (`F_GETPIPE_SZ`), > 0.
    capacity: usize,
}

impl Pipe {
    /// Creates a pipe and asks for `capacity` bytes of buffer
    /// (`F_SETPIPE_SZ`; the kernel rounds up to a power-of-two number of
    /// pages and refuses sizes above `/proc/sys/fs/pipe-max-size` for
    /// unprivileged processes). A refused size is not an error: the pipe
    /// keeps the size it has, which [`capacity`](Self::capacity) reports.
    pub fn new(capacity: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints the kernel fills.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: both descriptors were just created by pipe2 and are ours.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(capacity).unwrap_or(libc::c_int::MAX);
        // SAFETY: plain fcntl on a descriptor we own; no pointers involved.
        let _ = cvt(unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, want) });
        // SAFETY: plain fcntl on a descriptor we own; no pointers involved.
        let size = cvt(unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ) })?;
        Ok(Pipe {
            rd: File::from(rd),
            wr,
            capacity: usize::try_from(size).unwrap_or(0).max(1),
        })
    }

    /// How many bytes the pipe can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to `len` bytes from `src` (a socket) into the pipe. `Ok(0)`
    /// is end of stream on `src` (for `len > 0`); `WouldBlock` means `src`
    /// has nothing now *or* the pipe is full, so call it on an empty pipe
    /// to tell the two apart.
    pub fn fill_from(&self, src: &impl AsRawFd, len: usize) -> io::Result<usize> {
        // SAFETY: both descriptors are open for the call; null offsets ask
        // the kernel to use (and not touch) the descriptors' own positions.
        let n = unsafe {
            libc::splice(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                self.wr.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Moves up to `len` bytes from the pipe into `dst` at `offset` (the
    /// file position of `dst` is neither used nor changed). Returns the
    /// bytes written; on an error (a full disk) nothing more was taken from
    /// the pipe than what an earlier `Ok` reported.
    pub fn drain_to(&self, dst: &File, offset: u64, len: usize) -> io::Result<usize> {
        let mut off = libc::loff_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: both descriptors are open for the call; `off` is a valid,
        // exclusively borrowed loff_t that the kernel reads and updates.
        let n = unsafe {
            libc::splice(
                self.rd.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                &mut off,
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Reads bytes out of the pipe into user space (to keep what could not
    /// be spliced into a file).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.rd).read(buf)
    }
}

/// True for the errors with which `splice` says it cannot be used for this
/// pair of descriptors at all (a file system or socket type without splice
/// support, an `O_APPEND` target, a kernel without the call), rather than
/// that this one transfer failed.
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ESPIPE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (rx, _) = l.accept().unwrap();
        rx.set_nonblocking(true).unwrap();
        (tx, rx)
    }

    #[test]
    fn socket_to_file_at_an_offset_through_the_pipe() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("out");
        std::fs::write(&path, b"head:").unwrap();
        let out = File::options().read(true).write(true).open(&path).unwrap();
        let pipe = Pipe::new(1 << 20).unwrap();
        assert!(pipe.capacity() >= 4096);
        let (mut tx, rx) = socket_pair();
        tx.write_all(b"spliced\nbytes").unwrap();
        let mut got = 0;
        let mut offset = 5;
        while got < 13 {
            match pipe.fill_from(&rx, pipe.capacity()) {
                Ok(n) => {
                    assert!(n > 0);
                    let w = pipe.drain_to(&out, offset, n).unwrap();
                    assert_eq!(w, n);
                    offset += w as u64;
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        drop(tx);
        let eof = loop {
            match pipe.fill_from(&rx, 4096) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.unwrap(),
            }
        };
        assert_eq!(eof, 0, "end of stream");
        assert_eq!(std::fs::read(&path).unwrap(), b"head:spliced\nbytes");
        let mut last = [0u8];
        out.read_at(&mut last, offset - 1).unwrap();
        assert_eq!(&last, b"s");
    }

    #[test]
    fn an_append_only_target_is_reported_as_unsupported_and_bytes_stay_readable() {
        let tmp = tempfile::tempdir().unwrap();
        let out = File::options()
            .append(true)
            .create(true)
            .open(tmp.path().join("out"))
            .unwrap();
        let pipe = Pipe::new(0).unwrap();
        let (mut tx, rx) = socket_pair();
        tx.write_all(b"abc").unwrap();
        let n = loop {
            match pipe.fill_from(&rx, 4096) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.unwrap(),
            }
        };
        assert_eq!(n, 3);
        let e = pipe.drain_to(&out, 0, n).unwrap_err();
        assert!(is_unsupported(&e), "{e}");
        let mut buf = [0u8; 8];
        assert_eq!(pipe.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(
            pipe.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
