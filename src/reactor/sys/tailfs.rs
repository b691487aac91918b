//! The tailer's file system on the real kernel: [`RealFs`] implements
//! [`crate::tail::fs::Fs`] with `open(O_RDONLY | O_NONBLOCK | O_CLOEXEC)`
//! (plus `O_NOFOLLOW` unless symlinks are followed, and `O_NOATIME` where
//! the kernel lets us), `fstat`/`statx`,
//! `pread` and `readdir`, and a lease probe (`super::lease`) for `writers`.
//!
//! Opening never blocks: `O_NONBLOCK` makes `open` of a FIFO return at
//! once, and anything that is not a regular file is refused right after
//! with `InvalidInput` before a read could stall the loop.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::inotify::Inotify;
use super::retry;
use crate::tail::fs::{Fs, Kind, Meta};
use crate::tail::listing::{DirNames, EventQueue, Listed};

/// The real file system (no state: every call is a system call).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

/// `Meta` from `std` metadata (birth time from `statx`, 0 where the file
/// system has none).
pub fn meta_of(m: &Metadata) -> Meta {
    let born = m
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let t = m.file_type();
    let kind = if t.is_file() {
        Kind::File
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_symlink() {
        Kind::Symlink
    } else if t.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Other
    };
    Meta {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        nlink: m.nlink(),
        born,
        kind,
    }
}

fn timespec_ns(ts: &libc::timespec) -> u64 {
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// `CLOCK_REALTIME_COARSE` in nanoseconds since the epoch.
fn coarse_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if r != 0 {
        return 0;
    }
    timespec_ns(&ts)
}

/// The coarse clock's resolution (a tick), at least 1 ms, at most 100 ms.
fn coarse_resolution() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let r = unsafe { libc::clock_getres(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    let res = if r == 0 { timespec_ns(&ts) } else { 10_000_000 };
    res.clamp(1_000_000, 100_000_000)
}

impl Fs for RealFs {
    type File = File;

    fn open(&mut self, path: &Path, follow_symlinks: bool) -> io::Result<(File, Meta)> {
        let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
        if !follow_symlinks {
            flags |= libc::O_NOFOLLOW;
        }
        let open = |flags| retry(|| OpenOptions::new().read(true).custom_flags(flags).open(path));
        // O_NOATIME: a file read right after every append would have its
        // access time updated (relatime: atime older than mtime) and its
        // inode dirtied on nearly every read, a tenth of the client's CPU
        // on a busy host. Only the owner (or CAP_FOWNER) may ask: others
        // open without it.
        let file = match open(flags | libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(flags),
            r => r,
        }
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) if !follow_symlinks => io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a symlink (set follow_symlinks = true to follow it)",
            ),
            _ => e,
        })?;
        let meta = meta_of(&file.metadata()?);
        if meta.kind != Kind::File {
            let what = match meta.kind {
                Kind::Dir => "a directory",
                Kind::Fifo => "a FIFO",
                _ => "not a regular file",
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("is {what}; only regular files are shipped"),
            ));
        }
        Ok((file, meta))
    }

    fn fstat(&mut self, file: &File) -> io::Result<Meta> {
        Ok(meta_of(&file.metadata()?))
    }

    fn lstat(&mut self, path: &Path) -> io::Result<Option<Meta>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(meta_of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn stat(&mut self, path: &Path) -> io::Result<Option<Meta>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(meta_of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_at(&mut self, file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
        retry(|| file.read_at(buf, at))
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<(OsString, Meta)>> {
        self.list_prefixed(dir, OsStr::new(""))
    }

    fn list_prefixed(&mut self, dir: &Path, prefix: &OsStr) -> io::Result<Vec<(OsString, Meta)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let Ok(entry) = entry else { continue };
            let named = entry.file_name();
            if !named
                .as_encoded_bytes()
                .starts_with(prefix.as_encoded_bytes())
            {
                continue;
            }
            // Gone between readdir and lstat: not listed.
            let Ok(m) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let meta = meta_of(&m);
            if matches!(meta.kind, Kind::File | Kind::Symlink) {
                out.push((named, meta));
            }
        }
        Ok(out)
    }

    fn names(&mut self, dir: &Path) -> io::Result<Vec<OsString>> {
        Ok(std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.file_name())
            .collect())
    }

    fn writers(&mut self, file: &File) -> io::Result<Option<bool>> {
        super::lease::writers(file)
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    /// The kernel stamps birth times from its coarse clock (one tick
    /// resolution): this reads that clock and steps back one tick, so a
    /// file created after the call is never born before the value
    /// returned (one created in the same tick just before counts as
    /// after: shipped, never skipped).
    fn clock(&mut self) -> u64 {
        coarse_now().saturating_sub(coarse_resolution())
    }
}

/// [`RealFs`] whose directory names are kept in `names` between
/// listings while `inotify`'s queue is empty (see `crate::tail::listing`):
/// the tails looking at one quiet directory share one `getdents` pass.
pub fn listed<'a>(
    names: &'a mut DirNames,
    inotify: &'a Inotify,
) -> Listed<'a, RealFs, &'a Inotify> {
    Listed::new(RealFs, names, inotify)
}

impl<F> EventQueue<F> for &Inotify {
    fn quiet(&mut self, _: &F) -> bool {
        matches!(self.pending(), Ok(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::identity::{Identity, FINGERPRINT_LEN};
    use std::io::Write;

    #[test]
    fn reading_a_followed_file_leaves_its_access_time_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"one line\n").unwrap();
        // An access time older than the modification time: relatime would
        // update it on the next read (unless O_NOATIME).
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let times = std::fs::FileTimes::new().set_accessed(old);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_times(times)
            .unwrap();
        let before = std::fs::metadata(&p).unwrap().accessed().unwrap();
        let (f, _) = RealFs.open(&p, false).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(RealFs.read_at(&f, &mut buf, 0).unwrap(), 9);
        drop(f);
        assert_eq!(std::fs::metadata(&p).unwrap().accessed().unwrap(), before);
    }

    #[test]
    fn a_prefixed_listing_names_only_the_files_that_start_with_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["app.log", "app.log.1", "other.log", "ap.log"] {
            std::fs::write(dir.path().join(name), b"x\n").unwrap();
        }
        let mut names: Vec<_> = RealFs
            .list_prefixed(dir.path(), std::ffi::OsStr::new("app.log"))
            .unwrap()
            .into_iter()
            .map(|(n, m)| (n.into_string().unwrap(), m.len))
            .collect();
        names.sort();
        assert_eq!(names, [("app.log".into(), 2), ("app.log.1".into(), 2)]);
        assert_eq!(RealFs.list(dir.path()).unwrap().len(), 4);
    }

    /// The kernel's side of `tail::listing`: a quiet watched directory is
    /// read once, however often it is listed; a name created, renamed or
    /// removed queues an event (before the call returns), and the next
    /// listing reads the directory again; each name is `lstat`ed afresh.
    #[test]
    fn a_listed_fs_reads_a_watched_directory_again_once_an_event_waits() {
        use super::super::inotify::mask;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("app.log"), b"x\n").unwrap();
        std::fs::write(d.join("other.log"), b"x\n").unwrap();
        let inotify = Inotify::new().unwrap();
        let watched = mask::CREATE | mask::MOVED_FROM | mask::MOVED_TO | mask::DELETE;
        inotify.add_watch(d, watched | mask::MODIFY).unwrap();
        let mut names = DirNames::default();
        names.watch(d);
        let listed = |names: &mut DirNames| {
            let mut got: Vec<_> = listed(names, &inotify)
                .list_prefixed(d, OsStr::new("app.log"))
                .unwrap()
                .into_iter()
                .map(|(n, m)| (n.into_string().unwrap(), m.len))
                .collect();
            got.sort();
            got
        };
        assert_eq!(listed(&mut names), [("app.log".into(), 2)]);
        assert_eq!(listed(&mut names), [("app.log".into(), 2)]);
        assert_eq!(names.reads(), 1, "quiet: one read");
        assert_eq!(inotify.pending().unwrap(), 0);
        // A rotation: renamed away, created again. Events wait: read again.
        std::fs::rename(d.join("app.log"), d.join("app.log.1")).unwrap();
        std::fs::write(d.join("app.log"), b"xyz\n").unwrap();
        assert!(inotify.pending().unwrap() > 0);
        let rotated = [("app.log".into(), 4), ("app.log.1".into(), 2)];
        assert_eq!(listed(&mut names), rotated);
        assert_eq!(names.reads(), 2);
        // Still waiting (the daemon has not read them): read every time.
        assert_eq!(listed(&mut names), rotated);
        assert_eq!(names.reads(), 3);
        // Read (the daemon then forgets), quiet again: the next read is
        // kept.
        let mut buf = vec![0u8; 4096];
        while inotify.read(&mut buf).is_ok() {}
        names.forget();
        assert_eq!(listed(&mut names), rotated);
        assert_eq!(listed(&mut names), rotated);
        assert_eq!(names.reads(), 4);
        std::fs::remove_file(d.join("app.log.1")).unwrap();
        assert_eq!(listed(&mut names), [("app.log".into(), 4)]);
        assert_eq!(names.reads(), 5);
    }

    #[test]
    fn opens_regular_files_only_and_never_blocks_on_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = RealFs.open(&fifo, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = RealFs.open(dir.path(), true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let file = dir.path().join("a.log");
        std::fs::write(&file, b"x\n").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(RealFs.open(&link, false).is_err());
        let (_, m) = RealFs.open(&link, true).unwrap();
        assert_eq!((m.len, m.kind), (2, Kind::File));
        let listed = RealFs.list(dir.path()).unwrap();
        assert_eq!(listed.len(), 2, "the file and the symlink, not the FIFO");
    }

    #[test]
    fn identity_follows_the_file_and_its_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"").unwrap();
        let fs = &mut RealFs;
        let (f, m) = fs.open(&p, false).unwrap();
        let mut id = Identity::of(fs, &f, &m).unwrap();
        assert_eq!(id.fp_len, 0);
        std::fs::write(&p, vec![b'x'; 3000]).unwrap();
        assert!(!id.refresh(fs, &f, 0).unwrap(), "extended, not rewritten");
        assert_eq!(id.fp_len as usize, FINGERPRINT_LEN);
        let m = fs.fstat(&f).unwrap();
        assert!(id.matches(fs, &f, &m).unwrap());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"more\n")
            .unwrap();
        assert!(id.matches(fs, &f, &m).unwrap(), "appending keeps it");
        std::fs::write(&p, vec![b'n'; 1500]).unwrap(); // same inode, new content
        assert!(!id.matches(fs, &f, &m).unwrap());
        assert!(id.refresh(fs, &f, 0).unwrap(), "reading the head notices");
        assert!(m.born > 0, "ext4/tmpfs record birth times");
    }

    #[test]
    fn a_file_created_after_the_clock_is_born_after_it() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50 {
            let before = RealFs.clock();
            let p = dir.path().join(format!("f{i}"));
            std::fs::write(&p, b"x").unwrap();
            let m = RealFs.lstat(&p).unwrap().unwrap();
            assert!(m.born > before, "born {} clock {before}", m.born);
        }
    }
}
