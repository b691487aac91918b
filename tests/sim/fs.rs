//! A simulated host file system for the tailer's deterministic simulation.
//!
//! `SimFs` implements [`loghamster::tail::fs::Fs`] (what the tailer's
//! executor calls) and, beside it, everything the simulated applications
//! and logrotate do to files: writer descriptors, rename, link, unlink,
//! truncate, copies that advance in steps, and an inotify emulation. A
//! seeded scheduler calls one of these between any two steps of the
//! tailer; nothing in here is random or reads a clock, and every map is a
//! `BTreeMap`, so one schedule always produces one history.
//!
//! ## What is modelled, and how faithfully
//! - Inodes with content, link count, birth time and kind (file,
//!   directory, FIFO, symlink), on one device ([`DEV`]). Freed inode
//!   numbers are reused, lowest first, as soon as nothing refers to them
//!   (ext4 does reuse them): a new file can get a deleted one's number.
//!   `born` comes from the simulated clock ([`SimFs::advance`]): strictly
//!   later than the clock's current reading and than every earlier birth;
//!   or, with a coarse clock ([`SimFs::set_birth_tick`]), as the kernel
//!   stamps it: the clock rounded down to its tick (never before an
//!   earlier birth, as Linux's multigrain floor keeps it), so files born in
//!   the same tick share one birth time.
//! - A reader handle ([`SimFile`], the tailer's descriptor) keeps its inode
//!   alive after the last name is gone; so does an open [`Writer`].
//!   Dropping a `SimFile` closes it; a `Writer` must be given back to
//!   [`SimFs::close`].
//! - Writers append at the current end (`O_APPEND`), into their inode
//!   whatever happened to its names since they were opened.
//! - Paths are absolute. Symlinks in the middle of a path are always
//!   followed, the last one only where the real call would follow it.
//!   `..` is supported; renaming directories is not (`Unsupported`).
//!
//! ## inotify, as the kernel does it (checked on Linux 6.x)
//! Watches are on directories; see `inotify.rs` for the queue (merging of
//! identical consecutive events, bounded size, `IN_Q_OVERFLOW`).
//! - create/link/mkfifo/symlink: `IN_CREATE` (`| IN_ISDIR` for mkdir).
//!   Opening an existing file with `O_TRUNC` gives `IN_MODIFY` instead.
//! - write (non-empty), truncate, ftruncate: `IN_MODIFY`; fchmod/futimens:
//!   `IN_ATTRIB`; closing a writer: `IN_CLOSE_WRITE`. These are reported
//!   for the directory entry the descriptor was *opened through*: it
//!   follows that entry through renames, and after the entry is unlinked
//!   or replaced the events still come under its old name in its old
//!   directory (so writes into a deleted `app.log` look exactly like writes
//!   into the new `app.log`, as on a real kernel).
//! - rename: `IN_MOVED_FROM` (old directory) then `IN_MOVED_TO` (new
//!   directory) with one shared nonzero cookie; a replaced target gets no
//!   event of its own; renaming a name onto another name of the same inode
//!   does nothing at all.
//! - unlink: `IN_DELETE` for every name removed, last link or not.
//! - rmdir: `IN_DELETE_SELF` and `IN_IGNORED` on the directory's own
//!   watch, then `IN_DELETE | IN_ISDIR` on its parent's.
//! - Link-count changes raise `IN_ATTRIB` only on a watch of the inode
//!   itself, never on its directory's watch, so a directory-watching
//!   client never sees one; neither does the simulation produce one.
//! - Not modelled: `IN_ACCESS`, `IN_OPEN`, `IN_CLOSE_NOWRITE` (readers are
//!   silent), watches on files, `IN_MOVE_SELF`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use loghamster::tail::fs::{Kind, Meta};

mod check;
mod inotify;
mod ops;
#[cfg(test)]
mod tests;

pub use inotify::{SimEvent, ALL_EVENTS, IN_ISDIR};

/// The one device every simulated file lives on.
pub const DEV: u64 = 0xfd01;
/// The root directory's inode number (as on ext4).
pub const ROOT_INO: u64 = 2;
/// Symlinks one lookup follows before giving up (Linux: 40).
const MAX_SYMLINKS: u32 = 40;
/// What `compress` writes first: the gzip magic.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

enum Node {
    File(Vec<u8>),
    Dir {
        entries: BTreeMap<OsString, u64>,
        parent: u64,
    },
    Fifo,
    Symlink(PathBuf),
}

struct Inode {
    node: Node,
    /// Names referring to this inode (unused for directories: their
    /// count is computed). 0 once deleted; the inode then lives on only
    /// while a reader or writer holds it.
    nlink: u64,
    born: u64,
    /// Open writer descriptors on this inode.
    writers: u32,
    /// Cloned into every reader handle; the inode is in use while the
    /// count is above 1.
    readers: Rc<()>,
}

/// A read-only descriptor (the tailer's). Dropping it closes it.
#[derive(Debug, Clone)]
pub struct SimFile {
    ino: u64,
    _hold: Rc<()>,
}

impl SimFile {
    pub fn ino(&self) -> u64 {
        self.ino
    }
}

/// The directory entry a writer was opened through (a dentry).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dentry {
    /// `None` once its directory was removed.
    dir: Option<u64>,
    name: OsString,
    /// Still a name of the inode (false after unlink or being replaced).
    hashed: bool,
}

struct WriterState {
    ino: u64,
    at: Dentry,
}

/// A write descriptor of a simulated application or of logrotate. Not
/// `Clone`; give it back to [`SimFs::close`].
#[derive(Debug)]
pub struct Writer {
    id: u64,
}

/// A copy in progress (`cp`, logrotate's copytruncate or its compressor):
/// it reads the source through a descriptor opened at the start, at the
/// source's current length at each step, until a read returns nothing.
#[derive(Debug)]
pub struct CopyJob {
    src: SimFile,
    dst: Writer,
    pos: u64,
    compress: bool,
    /// A read returned 0: the copy is complete.
    eof: bool,
}

impl CopyJob {
    /// A job copying from `src` into `dst` (bytes transformed by
    /// [`compressed`] when `compress`).
    pub fn new(src: SimFile, dst: Writer, compress: bool) -> CopyJob {
        CopyJob {
            src,
            dst,
            pos: 0,
            compress,
            eof: false,
        }
    }

    /// Bytes of the source copied so far.
    pub fn copied(&self) -> u64 {
        self.pos
    }

    pub fn target(&self) -> &Writer {
        &self.dst
    }

    /// Ends the job without closing its target (closing the source).
    pub fn into_target(self) -> Writer {
        self.dst
    }

    /// A read returned 0: nothing is left to copy.
    pub fn is_done(&self) -> bool {
        self.eof
    }
}

/// What the simulated compressor makes of `data`: the gzip magic followed
/// by every byte inverted. Different bytes, no newline left in lines of
/// text, and streamable chunk by chunk.
pub fn compressed(data: &[u8]) -> Vec<u8> {
    let mut out = GZIP_MAGIC.to_vec();
    out.extend(data.iter().map(|b| !b));
    out
}

/// The directory holding the last name of a path, and what that name is.
struct Lookup {
    dir: u64,
    /// `None` when the path ends at a directory without naming an entry
    /// (`/`, `/a/..`).
    name: Option<OsString>,
    ino: Option<u64>,
}

impl Lookup {
    /// A directory reached without naming an entry.
    fn itself(dir: u64) -> Lookup {
        Lookup {
            dir,
            name: None,
            ino: Some(dir),
        }
    }
}

enum Part {
    Root,
    Up,
    Name(OsString),
}

fn err(kind: ErrorKind, what: &str, path: &Path) -> io::Error {
    io::Error::new(kind, format!("{}: {what}", path.display()))
}

fn parts(path: &Path) -> VecDeque<Part> {
    path.components()
        .filter_map(|c| match c {
            Component::RootDir | Component::Prefix(_) => Some(Part::Root),
            Component::CurDir => None,
            Component::ParentDir => Some(Part::Up),
            Component::Normal(n) => Some(Part::Name(n.to_owned())),
        })
        .collect()
}

/// The simulated host. See the module doc.
pub struct SimFs {
    inodes: BTreeMap<u64, Inode>,
    free_inos: BTreeSet<u64>,
    next_ino: u64,
    /// The simulated clock, nanoseconds.
    now: u64,
    last_born: u64,
    /// Births are stamped from a clock of this resolution (0: every
    /// birth distinct, strictly after the clock's reading).
    birth_tick: u64,
    writers: BTreeMap<u64, WriterState>,
    next_writer: u64,
    inotify: inotify::Inotify,
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

impl SimFs {
    /// An empty file system: just `/`. The clock starts at 1 s.
    pub fn new() -> SimFs {
        let mut fs = SimFs {
            inodes: BTreeMap::new(),
            free_inos: BTreeSet::new(),
            next_ino: ROOT_INO + 1,
            now: 1_000_000_000,
            last_born: 0,
            birth_tick: 0,
            writers: BTreeMap::new(),
            next_writer: 1,
            inotify: inotify::Inotify::new(),
        };
        let root = fs.new_inode(Node::Dir {
            entries: BTreeMap::new(),
            parent: ROOT_INO,
        });
        fs.inodes.insert(ROOT_INO, root);
        fs
    }

    /// The simulated clock, in nanoseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, nanos: u64) {
        self.now += nanos;
    }

    /// Stamps births from a coarse clock of `tick` nanoseconds (as the
    /// kernel does): files created within one tick share their birth time.
    pub fn set_birth_tick(&mut self, tick: u64) {
        self.birth_tick = tick;
    }

    /// What the file system's clock says now, in the unit of births: with
    /// a coarse clock, the start of the previous tick (a file born after
    /// the call, even within the current tick, is born after it, as
    /// `RealFs::clock` promises).
    pub fn fs_clock(&self) -> u64 {
        match self.birth_tick {
            0 => self.now,
            t => (self.now / t * t).saturating_sub(t),
        }
    }

    // ---- lookups ------------------------------------------------------

    fn inode(&self, ino: u64) -> &Inode {
        &self.inodes[&ino]
    }

    fn kind(&self, ino: u64) -> Kind {
        match self.inode(ino).node {
            Node::File(_) => Kind::File,
            Node::Dir { .. } => Kind::Dir,
            Node::Fifo => Kind::Fifo,
            Node::Symlink(_) => Kind::Symlink,
        }
    }

    fn entries(&self, dir: u64) -> Option<&BTreeMap<OsString, u64>> {
        match &self.inode(dir).node {
            Node::Dir { entries, .. } => Some(entries),
            _ => None,
        }
    }

    fn entries_mut(&mut self, dir: u64) -> &mut BTreeMap<OsString, u64> {
        match &mut self.inodes.get_mut(&dir).expect("directory inode").node {
            Node::Dir { entries, .. } => entries,
            _ => panic!("inode {dir} is not a directory"),
        }
    }

    fn parent_of(&self, dir: u64) -> u64 {
        match self.inode(dir).node {
            Node::Dir { parent, .. } => parent,
            _ => dir,
        }
    }

    /// Resolves `path` the way the kernel walks it: intermediate symlinks
    /// always followed, the last one only when `follow_last`.
    fn lookup(&self, path: &Path, follow_last: bool) -> io::Result<Lookup> {
        if !path.is_absolute() {
            let what = "simulated paths are absolute";
            return Err(err(ErrorKind::InvalidInput, what, path));
        }
        let mut todo = parts(path);
        let (mut found, mut links) = (Lookup::itself(ROOT_INO), 0);
        while let Some(part) = todo.pop_front() {
            let cur = found.ino.expect("only the last name can be missing");
            let name = match part {
                Part::Root => {
                    found = Lookup::itself(ROOT_INO);
                    continue;
                }
                Part::Up => {
                    found = Lookup::itself(self.parent_of(cur));
                    continue;
                }
                Part::Name(name) => name,
            };
            let Some(entries) = self.entries(cur) else {
                return Err(err(ErrorKind::NotADirectory, "not a directory", path));
            };
            let ino = entries.get(&name).copied();
            let last = todo.is_empty();
            found = match ino.map(|i| &self.inode(i).node) {
                Some(Node::Symlink(target)) if !last || follow_last => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        let what = "too many levels of symbolic links";
                        return Err(err(ErrorKind::InvalidInput, what, path));
                    }
                    for p in parts(target).into_iter().rev() {
                        todo.push_front(p);
                    }
                    Lookup::itself(cur)
                }
                None if !last => {
                    return Err(err(ErrorKind::NotFound, "no such file or directory", path))
                }
                Some(Node::File(_) | Node::Fifo) if !last => {
                    return Err(err(ErrorKind::NotADirectory, "not a directory", path))
                }
                _ => Lookup {
                    dir: cur,
                    name: Some(name),
                    ino,
                },
            };
        }
        Ok(found)
    }

    /// Like `lookup` without following the last component, for calls that
    /// act on a name (rename, unlink, mkdir, ...).
    fn entry(&self, path: &Path) -> io::Result<(u64, OsString, Option<u64>)> {
        let l = self.lookup(path, false)?;
        match l.name {
            Some(name) => Ok((l.dir, name, l.ino)),
            None => Err(err(
                ErrorKind::InvalidInput,
                "names no directory entry",
                path,
            )),
        }
    }

    fn meta(&self, ino: u64) -> Meta {
        let inode = self.inode(ino);
        let (len, nlink) = match &inode.node {
            Node::File(data) => (data.len() as u64, inode.nlink),
            Node::Dir { entries, .. } => {
                let subdirs = entries
                    .values()
                    .filter(|i| self.kind(**i) == Kind::Dir)
                    .count();
                (4096, 2 + subdirs as u64)
            }
            Node::Fifo => (0, inode.nlink),
            Node::Symlink(t) => (t.as_os_str().len() as u64, inode.nlink),
        };
        Meta {
            dev: DEV,
            ino,
            len,
            nlink,
            born: inode.born,
            kind: self.kind(ino),
        }
    }

    // ---- inode lifetime -----------------------------------------------

    fn new_inode(&mut self, node: Node) -> Inode {
        // Strictly after the clock as last read (`Fs::clock` promises
        // it) and after every earlier birth.
        let born = match self.birth_tick {
            0 => self.now.max(self.last_born) + 1,
            t => (self.now / t * t).max(self.last_born),
        };
        self.last_born = born;
        Inode {
            node,
            nlink: 0,
            born,
            writers: 0,
            readers: Rc::new(()),
        }
    }

    /// A new inode under the lowest free number, not yet linked anywhere.
    fn alloc(&mut self, node: Node) -> u64 {
        self.collect_garbage();
        let ino = self.free_inos.pop_first().unwrap_or_else(|| {
            self.next_ino += 1;
            self.next_ino - 1
        });
        let inode = self.new_inode(node);
        self.inodes.insert(ino, inode);
        ino
    }

    /// Frees every file nothing refers to any more: no name, no writer, no
    /// reader handle.
    fn collect_garbage(&mut self) {
        let dead: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, i)| {
                !matches!(i.node, Node::Dir { .. })
                    && i.nlink == 0
                    && i.writers == 0
                    && Rc::strong_count(&i.readers) == 1
            })
            .map(|(ino, _)| *ino)
            .collect();
        for ino in dead {
            self.inodes.remove(&ino);
            self.free_inos.insert(ino);
        }
    }

    fn reader(&self, ino: u64) -> SimFile {
        SimFile {
            ino,
            _hold: self.inode(ino).readers.clone(),
        }
    }

    /// Adds a name for `ino` in `dir`.
    fn link_entry(&mut self, dir: u64, name: &OsStr, ino: u64) {
        self.entries_mut(dir).insert(name.to_owned(), ino);
        self.inodes.get_mut(&ino).expect("linked inode").nlink += 1;
    }

    /// Removes name `name` of `dir`; writers opened through it keep it as
    /// their (now unhashed) dentry.
    fn unlink_entry(&mut self, dir: u64, name: &OsStr) -> u64 {
        let ino = self.entries_mut(dir).remove(name).expect("entry to unlink");
        self.inodes.get_mut(&ino).expect("unlinked inode").nlink -= 1;
        for w in self.writers.values_mut() {
            if w.at.hashed && w.at.dir == Some(dir) && w.at.name == name {
                w.at.hashed = false;
            }
        }
        ino
    }

    fn debug_check(&self) {
        #[cfg(debug_assertions)]
        if let Err(e) = self.check() {
            panic!("SimFs invariant broken: {e}");
        }
    }
}
