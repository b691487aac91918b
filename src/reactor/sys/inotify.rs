//! inotify(7): one non-blocking descriptor, watches added by path, events
//! decoded from the kernel's packed records without copying names.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::cvt;

/// The event bits the tailer uses, re-exported so callers need no libc.
pub mod mask {
    pub const MODIFY: u32 = libc::IN_MODIFY;
    pub const ATTRIB: u32 = libc::IN_ATTRIB;
    pub const CLOSE_WRITE: u32 = libc::IN_CLOSE_WRITE;
    pub const CREATE: u32 = libc::IN_CREATE;
    pub const DELETE: u32 = libc::IN_DELETE;
    pub const DELETE_SELF: u32 = libc::IN_DELETE_SELF;
    pub const MOVE_SELF: u32 = libc::IN_MOVE_SELF;
    pub const MOVED_FROM: u32 = libc::IN_MOVED_FROM;
    pub const MOVED_TO: u32 = libc::IN_MOVED_TO;
    pub const IGNORED: u32 = libc::IN_IGNORED;
    pub const Q_OVERFLOW: u32 = libc::IN_Q_OVERFLOW;
    pub const ONLYDIR: u32 = libc::IN_ONLYDIR;
}

/// A watch descriptor as returned by `inotify_add_watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Watch(pub i32);

/// One decoded event; `name` borrows from the read buffer.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub watch: Watch,
    pub mask: u32,
    /// Ties the two halves of a rename (`MOVED_FROM`, `MOVED_TO`); 0
    /// otherwise.
    pub cookie: u32,
    pub name: Option<&'a OsStr>,
}

/// An inotify instance (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct Inotify {
    fd: OwnedFd,
}

impl Inotify {
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers are passed; the result is checked before use.
        let fd = cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Inotify {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Adds (or updates) a watch on `path` for the events in `mask`.
    pub fn add_watch(&self, path: &Path, mask: u32) -> io::Result<Watch> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        let wd = cvt(unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) })?;
        Ok(Watch(wd))
    }

    /// Removes watch `w` (the kernel queues `IN_IGNORED` for it). A watch
    /// the kernel already ended (its inode deleted) is `EINVAL`.
    pub fn rm_watch(&self, w: Watch) -> io::Result<()> {
        // SAFETY: plain integers; the result is checked.
        cvt(unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), w.0) })?;
        Ok(())
    }

    /// Bytes of events waiting to be read (`FIONREAD`): 0 when the queue
    /// is empty, i.e. nothing was queued since the last read found it
    /// empty.
    pub fn pending(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, to `n`,
        // which outlives the call.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Reads as many events as fit into `buf` (at least 4 KiB is sensible),
    /// retrying on `EINTR`. Returns `WouldBlock` when the queue is empty.
    pub fn read<'a>(&self, buf: &'a mut [u8]) -> io::Result<Events<'a>> {
        let n = super::retry(|| {
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                n if n < 0 => Err(io::Error::last_os_error()),
                n => Ok(n),
            }
        })?;
        Ok(Events {
            buf: &buf[..n as usize],
        })
    }
}

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Iterator over the records of one `read`.
pub struct Events<'a> {
    buf: &'a [u8],
}

const HEADER: usize = std::mem::size_of::<libc::inotify_event>();

/// The largest event: its header and a name of `NAME_MAX` bytes with its
/// terminating NUL.
const LARGEST: usize = HEADER + 255 + 1;

impl Events<'_> {
    /// Whether the read that returned these events left room in `cap`
    /// bytes for one more event of any size: then the queue was empty
    /// when it was read (the kernel copies events while the next one
    /// fits), so a further read would only find it empty.
    pub fn emptied(&self, cap: usize) -> bool {
        self.buf.len() + LARGEST <= cap
    }
}

impl<'a> Iterator for Events<'a> {
    type Item = Event<'a>;

    fn next(&mut self) -> Option<Event<'a>> {
        if self.buf.len() < HEADER {
            return None;
        }
        let word = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&self.buf[at..at + 4]);
            u32::from_ne_bytes(b)
        };
        // struct inotify_event { int wd; uint32_t mask; uint32_t cookie; uint32_t len; char name[]; }
        let wd = word(0) as i32;
        let mask = word(4);
        let cookie = word(8);
        let len = word(12) as usize;
        let end = (HEADER + len).min(self.buf.len());
        let raw = &self.buf[HEADER..end];
        self.buf = &self.buf[end..];
        let name = raw.split(|&b| b == 0).next().filter(|n| !n.is_empty());
        Some(Event {
            watch: Watch(wd),
            mask,
            cookie,
            name: name.map(OsStr::from_bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_with_room_for_another_event_emptied_the_queue() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ino = Inotify::new().expect("inotify");
        ino.add_watch(dir.path(), mask::CREATE).expect("watch");
        for name in ["a", "b"] {
            std::fs::write(dir.path().join(name), "").expect("create");
        }
        // Two events, each a header and a padded name: a buffer with room
        // for one largest event more says the queue is empty after them.
        let mut big = [0u8; 4096];
        let events = ino.read(&mut big).expect("two events");
        assert!(events.emptied(4096));
        assert_eq!(events.count(), 2);
        assert_eq!(
            ino.read(&mut big).map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        // A buffer that one event of a long name fills leaves no room:
        // the queue may hold more, and the caller reads again.
        std::fs::write(dir.path().join("c".repeat(250)), "").expect("create");
        std::fs::write(dir.path().join("d"), "").expect("create");
        let mut small = [0u8; LARGEST];
        let events = ino.read(&mut small).expect("one event");
        assert!(!events.emptied(LARGEST));
        assert_eq!(events.count(), 1);
        assert_eq!(ino.read(&mut big).expect("the other").count(), 1);
    }

    #[test]
    fn a_watch_follows_its_directory_renamed_away_and_the_path_needs_a_new_one() {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let (dir, moved) = (tmp.path().join("d"), tmp.path().join("d.old"));
        std::fs::create_dir(&dir).expect("mkdir");
        let ino = Inotify::new().expect("inotify");
        let m = mask::CREATE | mask::MOVE_SELF;
        let old = ino.add_watch(&dir, m).expect("watch");
        // The same directory at the path: the same watch.
        assert_eq!(ino.add_watch(&dir, m).expect("again"), old);
        std::fs::rename(&dir, &moved).expect("rename");
        std::fs::create_dir(&dir).expect("mkdir again");
        std::fs::write(dir.join("new"), "").expect("create in the new one");
        std::fs::write(moved.join("old"), "").expect("create in the old one");
        let mut buf = [0u8; 4096];
        let seen = |ino: &Inotify, buf: &mut [u8]| -> Vec<(Watch, u32, Option<String>)> {
            let events = ino.read(buf).expect("events");
            events
                .map(|e| {
                    let name = e.name.map(|n| n.to_string_lossy().into_owned());
                    (e.watch, e.mask & (m | mask::IGNORED), name)
                })
                .collect()
        };
        // The watch went with the directory: what is made at the path is
        // not seen, what is made in the renamed one is, by name only.
        assert_eq!(
            seen(&ino, &mut buf),
            vec![
                (old, mask::MOVE_SELF, None),
                (old, mask::CREATE, Some("old".into()))
            ]
        );
        let new = ino.add_watch(&dir, m).expect("the new one");
        assert_ne!(new, old);
        ino.rm_watch(old).expect("remove the old one");
        assert_eq!(seen(&ino, &mut buf), vec![(old, mask::IGNORED, None)]);
        assert_eq!(
            ino.rm_watch(old).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EINVAL))
        );
    }
}
