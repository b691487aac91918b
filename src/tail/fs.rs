//! The file system as the tailer's executor sees it.
//!
//! The tailer's decisions ((`crate::tail::follow`)) take no file system at
//! all: they ask for actions and are told what happened. The executor that
//! carries those actions out talks to the file system through this trait,
//! so the same executor runs over the real kernel
//! (`reactor::sys::fs::Real`) and over a simulated host in the
//! tests (`tests/sim/`), where a seeded scheduler can change the file
//! system between any two calls.
//!
//! Every call is one system call on the real side (or a few, for `list`),
//! and none of them blocks: files are opened `O_NONBLOCK`, and anything
//! that is not a regular file is refused at `open`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

/// What kind of object a name or descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Fifo,
    Symlink,
    /// A socket, a device, ...
    Other,
}

/// What `stat` tells the tailer about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    /// Hard links left; 0 once the file was deleted (still readable
    /// through a descriptor held open).
    pub nlink: u64,
    /// Birth time in nanoseconds since the epoch (`statx` `btime`), or 0
    /// where the file system records none. Files created later have a
    /// larger value: it orders the generations of a rotated path.
    pub born: u64,
    pub kind: Kind,
}

impl Meta {
    /// Device and inode: which file this is, whatever its name.
    pub fn inode(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// The file-system calls the tailer's executor makes.
pub trait Fs {
    /// An open, read-only descriptor.
    type File;

    /// Opens `path` read-only and non-blocking. A symlink at the last
    /// component is followed only when `follow_symlinks`; anything that is
    /// not a regular file (FIFO, device, socket, directory) is refused with
    /// `ErrorKind::InvalidInput` before a read could block.
    fn open(&mut self, path: &Path, follow_symlinks: bool) -> io::Result<(Self::File, Meta)>;

    /// `fstat` of an open file.
    fn fstat(&mut self, file: &Self::File) -> io::Result<Meta>;

    /// `lstat` of a name; `Ok(None)` when nothing has that name.
    fn lstat(&mut self, path: &Path) -> io::Result<Option<Meta>>;

    /// `stat` of a name (a symlink is followed); `Ok(None)` when nothing
    /// has that name or a symlink leads nowhere.
    fn stat(&mut self, path: &Path) -> io::Result<Option<Meta>>;

    /// `pread`: up to `buf.len()` bytes at `at`; 0 at the end of the file.
    fn read_at(&mut self, file: &Self::File, buf: &mut [u8], at: u64) -> io::Result<usize>;

    /// The entries of a directory that are regular files, with their
    /// metadata (`lstat` of each: a symlink is listed as `Kind::Symlink`).
    fn list(&mut self, dir: &Path) -> io::Result<Vec<(OsString, Meta)>>;

    /// [`list`](Self::list), only the names that start with `prefix`. A
    /// real file system looks at the other names without an `lstat`: a
    /// followed file's look for its rotations must not cost one `lstat`
    /// per file in a directory of ten thousand (nor a start-up of ten
    /// thousand files, one such look each, a hundred million).
    fn list_prefixed(&mut self, dir: &Path, prefix: &OsStr) -> io::Result<Vec<(OsString, Meta)>> {
        let mut all = self.list(dir)?;
        all.retain(|(name, _)| {
            name.as_encoded_bytes()
                .starts_with(prefix.as_encoded_bytes())
        });
        Ok(all)
    }

    /// Every name in a directory, whatever it names, without an `lstat`
    /// of each (on the real side one `getdents` pass): what
    /// `crate::tail::listing` keeps between listings.
    fn names(&mut self, dir: &Path) -> io::Result<Vec<OsString>> {
        Ok(self.list(dir)?.into_iter().map(|(name, _)| name).collect())
    }

    /// Whether any process holds the file open for writing: `Some(false)`
    /// proves it is closed (Linux: a read lease could be taken),
    /// `Some(true)` that it is open for writing, `None` that this cannot be
    /// told here (the caller then falls back to waiting for it to settle).
    fn writers(&mut self, file: &Self::File) -> io::Result<Option<bool>>;

    /// Removes a name.
    fn remove(&mut self, path: &Path) -> io::Result<()>;

    /// The file system's current time, in the unit of [`Meta::born`]
    /// (wall-clock nanoseconds on the real side): files born after this
    /// call have a larger `born`.
    fn clock(&mut self) -> u64;
}

/// A borrowed file system is one too (a wrapper such as
/// `crate::tail::listing::Listed` may hold either).
impl<F: Fs + ?Sized> Fs for &mut F {
    type File = F::File;

    fn open(&mut self, path: &Path, follow_symlinks: bool) -> io::Result<(F::File, Meta)> {
        (**self).open(path, follow_symlinks)
    }

    fn fstat(&mut self, file: &F::File) -> io::Result<Meta> {
        (**self).fstat(file)
    }

    fn lstat(&mut self, path: &Path) -> io::Result<Option<Meta>> {
        (**self).lstat(path)
    }

    fn stat(&mut self, path: &Path) -> io::Result<Option<Meta>> {
        (**self).stat(path)
    }

    fn read_at(&mut self, file: &F::File, buf: &mut [u8], at: u64) -> io::Result<usize> {
        (**self).read_at(file, buf, at)
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<(OsString, Meta)>> {
        (**self).list(dir)
    }

    fn list_prefixed(&mut self, dir: &Path, prefix: &OsStr) -> io::Result<Vec<(OsString, Meta)>> {
        (**self).list_prefixed(dir, prefix)
    }

    fn names(&mut self, dir: &Path) -> io::Result<Vec<OsString>> {
        (**self).names(dir)
    }

    fn writers(&mut self, file: &F::File) -> io::Result<Option<bool>> {
        (**self).writers(file)
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        (**self).remove(path)
    }

    fn clock(&mut self) -> u64 {
        (**self).clock()
    }
}
