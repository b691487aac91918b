//! Opening output files beneath a trusted directory.
//!
//! The server builds output paths from what clients send. Routing already
//! rejects `..`, absolute paths and NUL bytes; this layer makes sure that a
//! symlink planted anywhere below the trusted base cannot redirect a write:
//! every component below `base` is opened with `openat(..., O_NOFOLLOW)`,
//! directories are created with `mkdirat` as needed.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use super::cvt;

fn c_name(name: &std::ffi::OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn openat(
    dir: &OwnedFd,
    name: &CString,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: the descriptor was just returned by the kernel; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mkdirat(dir: &OwnedFd, name: &CString) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
    match cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other.map(drop),
    }
}

/// Opens `base/relative` for appending, creating missing directories and the
/// file. `base` itself is created with `create_dir_all` and may be reached
/// through symlinks (it comes from the operator's config); no component of
/// `relative` may be a symlink (`ELOOP`/`ENOTDIR` is returned instead), and
/// `relative` must consist of normal components only.
pub fn open_append_beneath(base: &Path, relative: &Path) -> io::Result<File> {
    std::fs::create_dir_all(base)?;
    let base_c = c_name(base.as_os_str())?;
    // SAFETY: `base_c` is NUL-terminated and outlives the call.
    let fd = cvt(unsafe {
        libc::open(
            base_c.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: freshly returned descriptor, owned here.
    let mut dir = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut parts = relative.components().peekable();
    while let Some(part) = parts.next() {
        let Component::Normal(name) = part else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "output path has a non-normal component",
            ));
        };
        let name = c_name(name)?;
        if parts.peek().is_some() {
            mkdirat(&dir, &name)?;
            dir = openat(
                &dir,
                &name,
                libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW,
                0,
            )?;
        } else {
            let flags = libc::O_WRONLY
                | libc::O_APPEND
                | libc::O_CREAT
                | libc::O_NOFOLLOW
                | libc::O_NONBLOCK;
            let fd = openat(&dir, &name, flags, 0o644)?;
            return Ok(File::from(fd));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "empty output path",
    ))
}

/// A second descriptor for the file open as `file`, for writing at
/// explicit offsets: the same inode (reopened through `/proc/self/fd`, so a
/// rename of the path in between cannot hand out another file), opened
/// read-write and without `O_APPEND`, which `splice(2)` refuses. Fails
/// when `/proc` is not mounted or the file is not readable by us.
pub fn reopen_positional(file: &File) -> io::Result<File> {
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(link)
}

/// `faccessat(2)` with `W_OK | X_OK` and the effective ids: whether this
/// process may create files in the directory `dir`, without creating one
/// (for `--check-config` about a directory that does not exist yet).
/// Root passes unless the file system is read-only.
pub fn may_create_in(dir: &Path) -> io::Result<()> {
    let c = c_name(dir.as_os_str())?;
    // SAFETY: `c` is NUL-terminated and outlives the call; no memory is
    // written.
    cvt(unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    })
    .map(drop)
}

/// `sendfile(2)`: copies up to `count` bytes of `input` starting at
/// `offset` to the socket `out` inside the kernel. Returns the bytes sent
/// (`WouldBlock` when the socket is full).
pub fn sendfile(out: &impl AsRawFd, input: &File, offset: u64, count: usize) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both descriptors are open for the call; `off` is a valid,
    // exclusively borrowed off_t the kernel updates.
    let n = unsafe { libc::sendfile(out.as_raw_fd(), input.as_raw_fd(), &mut off, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `syncfs(2)`: writes back every dirty page and inode of the file system
/// that holds `file` and waits for it, in one call (one journal commit and
/// one cache flush instead of one per file). Since Linux 5.8 it reports a
/// writeback error of any file on that file system that happened since
/// `file` was opened or last passed here ([`syncfs_reports_errors`]).
pub fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we hold open; no pointers.
    cvt(unsafe { libc::syncfs(file.as_raw_fd()) }).map(drop)
}

/// Whether this kernel's `syncfs(2)` reports writeback errors (Linux 5.8
/// and later; before, it returned 0 whatever happened, so it cannot stand
/// in for `fdatasync`).
pub fn syncfs_reports_errors() -> bool {
    // SAFETY: `uts` is a plain struct the kernel fills completely.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    let release: Vec<u8> = uts.release.iter().map(|&c| c as u8).collect();
    kernel_at_least(&release, (5, 8))
}

/// `release` (`uname -r`, NUL-padded) names a kernel at or after `want`.
fn kernel_at_least(release: &[u8], want: (u32, u32)) -> bool {
    let text = release.split(|&b| b == 0).next().unwrap_or_default();
    let text = String::from_utf8_lossy(text);
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let mut num = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (num(), num()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert!(kernel_at_least(b"6.18.44-generic\0\0", (5, 8)));
        assert!(kernel_at_least(b"5.8.0", (5, 8)));
        assert!(!kernel_at_least(b"5.4.0-150-generic", (5, 8)));
        assert!(!kernel_at_least(b"4.19.0", (5, 8)));
        assert!(!kernel_at_least(b"", (5, 8)));
        assert!(!kernel_at_least(b"garbage", (5, 8)));
    }

    #[test]
    fn syncfs_syncs_the_file_system_of_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut f = open_append_beneath(tmp.path(), Path::new("s.log")).unwrap();
        f.write_all(b"a\n").unwrap();
        syncfs(&f).unwrap();
    }

    #[test]
    fn creates_directories_and_appends() {
        let tmp = tempfile::tempdir().unwrap();
        let mut f = open_append_beneath(tmp.path(), Path::new("h/var/log/x.log")).unwrap();
        f.write_all(b"a\n").unwrap();
        let mut f = open_append_beneath(tmp.path(), Path::new("h/var/log/x.log")).unwrap();
        f.write_all(b"b\n").unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("h/var/log/x.log")).unwrap(),
            b"a\nb\n"
        );
    }

    #[test]
    fn refuses_symlinked_directory_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("evil")).unwrap();
        assert!(open_append_beneath(tmp.path(), Path::new("evil/x.log")).is_err());
        std::os::unix::fs::symlink(outside.path().join("f"), tmp.path().join("f")).unwrap();
        assert!(open_append_beneath(tmp.path(), Path::new("f")).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn sendfile_copies_a_file_range_into_a_socket() {
        use std::io::Read;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let out = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        assert_eq!(sendfile(&out, &File::open(&p).unwrap(), 3, 4).unwrap(), 4);
        drop(out);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"3456");
    }

    #[test]
    fn reopen_positional_names_the_same_file_even_after_a_rename() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let tmp = tempfile::tempdir().unwrap();
        let mut f = open_append_beneath(tmp.path(), Path::new("o.log")).unwrap();
        f.write_all(b"abc").unwrap();
        std::fs::rename(tmp.path().join("o.log"), tmp.path().join("o.log.1")).unwrap();
        std::fs::write(tmp.path().join("o.log"), b"other").unwrap();
        let g = reopen_positional(&f).unwrap();
        assert_eq!(g.metadata().unwrap().ino(), f.metadata().unwrap().ino());
        g.write_at(b"d", 3).unwrap();
        let mut last = [0u8];
        g.read_at(&mut last, 3).unwrap();
        assert_eq!(&last, b"d");
        assert_eq!(std::fs::read(tmp.path().join("o.log.1")).unwrap(), b"abcd");
    }

    #[test]
    fn refuses_parent_components() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(open_append_beneath(tmp.path(), Path::new("../x")).is_err());
        assert!(open_append_beneath(tmp.path(), Path::new("/etc/x")).is_err());
    }
}
