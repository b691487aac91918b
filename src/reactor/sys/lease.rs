//! File leases (`fcntl(F_SETLEASE)`, Linux): proving that nobody holds a
//! file open for writing.
//!
//! A read lease can be placed only while no process has the file open for
//! writing (nor mapped shared-writable); the kernel answers `EAGAIN`
//! otherwise. So [`probe`] takes a read lease on a descriptor opened
//! read-only and releases it at once: success proves the file closed at
//! that instant, `EAGAIN` proves a writer. Our own read-only descriptor
//! does not count as a writer.
//!
//! Where the answer cannot be had, [`probe`] says why instead of guessing:
//! leases switched off (`/proc/sys/fs/leases-enable` = 0, or a kernel
//! without them: `EINVAL`), a file system that does not support them
//! (some network and FUSE file systems: `EINVAL`, `ENOLCK`, `EOPNOTSUPP`),
//! or no permission (`EACCES`/`EPERM`: only the file's owner, or a process
//! with `CAP_LEASE`, may take a lease).
//!
//! Two side effects, both kept as small as the kernel allows:
//! - While we hold the lease (a few microseconds), a process opening the
//!   file for writing waits for us to release it (with `O_NONBLOCK` its
//!   open fails with `EWOULDBLOCK` instead).
//! - Such an open breaks the lease, and the kernel tells the lease holder
//!   with `SIGIO`, whose default action ends the process. The first probe
//!   therefore sets `SIGIO` to be ignored, unless the program already
//!   handles or ignores it (nothing in this crate uses `SIGIO` otherwise).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Once;

use super::cvt;

/// What the kernel says about writers of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// Nobody holds the file open for writing (a read lease was granted).
    None,
    /// Some process holds it open for writing (or mapped writable).
    Some,
    /// It cannot be told here.
    Unknown(Unsupported),
}

/// Why a lease could not tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// `/proc/sys/fs/leases-enable` is 0.
    Disabled,
    /// The file system (or the descriptor) does not support leases.
    FileSystem,
    /// We neither own the file nor have `CAP_LEASE`.
    NotPermitted,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unsupported::Disabled => "file leases are disabled (/proc/sys/fs/leases-enable = 0)",
            Unsupported::FileSystem => "the file system does not support file leases",
            Unsupported::NotPermitted => "taking a file lease needs the file's owner or CAP_LEASE",
        })
    }
}

/// Whether any process holds `file` open for writing. `file` must be open
/// read-only (a descriptor open for writing is itself a writer).
pub fn probe(file: BorrowedFd<'_>) -> io::Result<Writers> {
    ignore_sigio();
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is an open descriptor borrowed for the call; F_SETLEASE
    // takes an integer argument and touches no memory of ours.
    match cvt(unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) }) {
        Ok(_) => {
            // SAFETY: as above; releases the lease just taken.
            cvt(unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) })?;
            Ok(Writers::None)
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY) => Ok(Writers::Some),
            Some(libc::EACCES | libc::EPERM) => Ok(Writers::Unknown(Unsupported::NotPermitted)),
            Some(libc::EINVAL) if !leases_enabled() => Ok(Writers::Unknown(Unsupported::Disabled)),
            Some(libc::EINVAL | libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS) => {
                Ok(Writers::Unknown(Unsupported::FileSystem))
            }
            _ => Err(e),
        },
    }
}

/// [`probe`] in the shape of `tail::fs::Fs::writers`: `Some(false)` closed,
/// `Some(true)` open for writing, `None` cannot be told.
pub fn writers(file: &impl AsFd) -> io::Result<Option<bool>> {
    Ok(match probe(file.as_fd())? {
        Writers::None => Some(false),
        Writers::Some => Some(true),
        Writers::Unknown(_) => None,
    })
}

/// False when `/proc/sys/fs/leases-enable` says 0.
fn leases_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/fs/leases-enable").map_or(true, |s| s.trim() != "0")
}

/// Makes a broken lease's `SIGIO` harmless (see the module doc), once, and
/// only when `SIGIO` still has its default action.
fn ignore_sigio() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut old = std::mem::MaybeUninit::<libc::sigaction>::uninit();
        // SAFETY: a null new action only reads the current one into `old`.
        let rc = unsafe { libc::sigaction(libc::SIGIO, std::ptr::null(), old.as_mut_ptr()) };
        if rc != 0 {
            return;
        }
        // SAFETY: sigaction succeeded and filled `old`.
        let old = unsafe { old.assume_init() };
        if old.sa_sigaction == libc::SIG_DFL {
            // SAFETY: installs no handler code: SIG_IGN is a disposition.
            unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;

    #[test]
    fn a_file_is_open_for_writing_exactly_while_a_writer_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"").unwrap();
        let reader = File::open(&p).unwrap();
        assert_eq!(probe(reader.as_fd()).unwrap(), Writers::None);
        assert_eq!(writers(&reader).unwrap(), Some(false));

        let mut writer = File::options().append(true).open(&p).unwrap();
        assert_eq!(probe(reader.as_fd()).unwrap(), Writers::Some);
        assert_eq!(writers(&reader).unwrap(), Some(true));
        // The probe released its lease: the writer is not held up.
        writer.write_all(b"line\n").unwrap();
        drop(writer);

        assert_eq!(writers(&reader).unwrap(), Some(false));
        // Probing again and again takes and releases it every time.
        assert_eq!(writers(&reader).unwrap(), Some(false));
    }

    #[test]
    fn another_reader_is_not_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"x\n").unwrap();
        let other = File::open(&p).unwrap();
        let reader = File::open(&p).unwrap();
        assert_eq!(writers(&reader).unwrap(), Some(false));
        drop(other);
    }

    #[test]
    fn a_descriptor_open_for_writing_cannot_take_a_read_lease() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let own = File::create(&p).unwrap();
        // Our own writable descriptor is a writer like any other.
        assert_eq!(writers(&own).unwrap(), Some(true));
    }
}
