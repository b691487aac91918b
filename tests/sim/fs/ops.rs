//! The calls the simulated applications and logrotate make, and the
//! tailer's [`Fs`] calls. Each public method is one system call and queues
//! the inotify events that call would raise (see the parent module doc).

use std::ffi::{OsStr, OsString};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use loghamster::reactor::sys::inotify::mask;
use loghamster::tail::fs::{Fs, Kind, Meta};

use super::{
    compressed, err, inotify::SimEvent, CopyJob, Dentry, Node, SimFile, SimFs, Writer, WriterState,
    ALL_EVENTS, IN_ISDIR, ROOT_INO,
};

/// How a writer is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    /// `O_CREAT | O_TRUNC`
    CreateTruncate,
    /// `O_CREAT | O_EXCL`
    CreateNew,
    /// `O_CREAT` (appending to what is there)
    Create,
    /// no `O_CREAT`
    Existing,
}

impl SimFs {
    // ---- writers --------------------------------------------------------

    /// `open(path, O_CREAT|O_TRUNC|O_WRONLY|O_APPEND)`: `IN_CREATE` for a
    /// new file, `IN_MODIFY` for an existing one (truncated).
    pub fn create(&mut self, path: &Path) -> io::Result<Writer> {
        self.open_writer(path, Open::CreateTruncate)
    }

    /// `O_CREAT|O_EXCL` (logrotate's `createOutputFile`): `AlreadyExists`
    /// if anything has the name.
    pub fn create_new(&mut self, path: &Path) -> io::Result<Writer> {
        self.open_writer(path, Open::CreateNew)
    }

    /// `O_CREAT|O_WRONLY|O_APPEND` without truncating: how applications
    /// open their log.
    pub fn open_or_create(&mut self, path: &Path) -> io::Result<Writer> {
        self.open_writer(path, Open::Create)
    }

    /// Opens an existing regular file for writing (appending); `None` if
    /// there is none.
    pub fn open_append(&mut self, path: &Path) -> Option<Writer> {
        self.open_writer(path, Open::Existing).ok()
    }

    fn open_writer(&mut self, path: &Path, how: Open) -> io::Result<Writer> {
        let l = self.lookup(path, how != Open::CreateNew)?;
        let Some(name) = l.name else {
            return Err(err(ErrorKind::IsADirectory, "is a directory", path));
        };
        let ino = match l.ino {
            Some(_) if how == Open::CreateNew => {
                return Err(err(ErrorKind::AlreadyExists, "file exists", path))
            }
            Some(ino) => {
                let Node::File(data) = &mut self.inodes.get_mut(&ino).expect("found").node else {
                    return Err(err(ErrorKind::InvalidInput, "not a regular file", path));
                };
                if how == Open::CreateTruncate {
                    data.clear();
                    self.inotify.emit(l.dir, &name, mask::MODIFY, 0);
                }
                ino
            }
            None if how == Open::Existing => {
                return Err(err(ErrorKind::NotFound, "no such file", path))
            }
            None => {
                let ino = self.alloc(Node::File(Vec::new()));
                self.link_entry(l.dir, &name, ino);
                self.inotify.emit(l.dir, &name, mask::CREATE, 0);
                ino
            }
        };
        self.inodes.get_mut(&ino).expect("opened").writers += 1;
        let id = self.next_writer;
        self.next_writer += 1;
        let at = Dentry {
            dir: Some(l.dir),
            name,
            hashed: true,
        };
        self.writers.insert(id, WriterState { ino, at });
        self.debug_check();
        Ok(Writer { id })
    }

    fn writer(&self, w: &Writer) -> &WriterState {
        self.writers
            .get(&w.id)
            .expect("a writer that was not closed")
    }

    /// Queues `mask` for the entry writer `w` was opened through.
    fn emit_at_writer(&mut self, w: &Writer, mask: u32) {
        let at = self.writer(w).at.clone();
        if let Some(dir) = at.dir {
            self.inotify.emit(dir, &at.name, mask, 0);
        }
    }

    fn writer_data(&mut self, w: &Writer) -> &mut Vec<u8> {
        let ino = self.writer(w).ino;
        match &mut self.inodes.get_mut(&ino).expect("open inode").node {
            Node::File(data) => data,
            _ => unreachable!("writers are opened on regular files only"),
        }
    }

    /// `write(2)` on an `O_APPEND` descriptor: appends at the current end
    /// of the writer's inode. `IN_MODIFY` unless `bytes` is empty.
    pub fn write(&mut self, w: &Writer, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.writer_data(w).extend_from_slice(bytes);
        self.emit_at_writer(w, mask::MODIFY);
    }

    /// `ftruncate(2)`: `IN_MODIFY`.
    pub fn truncate_fd(&mut self, w: &Writer, len: u64) {
        let len = usize::try_from(len).expect("simulated files fit in memory");
        self.writer_data(w).resize(len, 0);
        self.emit_at_writer(w, mask::MODIFY);
    }

    /// `fchmod`/`fchown`/`futimens` through a writer: `IN_ATTRIB`.
    pub fn touch_attr(&mut self, w: &Writer) {
        self.emit_at_writer(w, mask::ATTRIB);
    }

    /// `close(2)` of a writer: `IN_CLOSE_WRITE`.
    pub fn close(&mut self, w: Writer) {
        self.emit_at_writer(&w, mask::CLOSE_WRITE);
        let state = self.writers.remove(&w.id).expect("open writer");
        self.inodes.get_mut(&state.ino).expect("open inode").writers -= 1;
        self.debug_check();
    }

    /// `std::fs::write`: create (truncating), one write, close.
    pub fn write_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let w = self.create(path)?;
        self.write(&w, bytes);
        self.close(w);
        Ok(())
    }

    /// What `fstat` on the writer says (which inode it writes to, its length).
    pub fn writer_meta(&self, w: &Writer) -> Meta {
        self.meta(self.writer(w).ino)
    }

    /// A read-only descriptor on the writer's inode (`/proc/self/fd/N`).
    pub fn reader_of(&self, w: &Writer) -> SimFile {
        self.reader(self.writer(w).ino)
    }

    // ---- names ----------------------------------------------------------

    /// `rename(2)`, replacing an existing non-directory target.
    pub fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let (fdir, fname, src) = self.entry(from)?;
        let src = src.ok_or_else(|| err(ErrorKind::NotFound, "no such file", from))?;
        let (tdir, tname, old) = self.entry(to)?;
        if self.kind(src) == Kind::Dir {
            return Err(err(
                ErrorKind::Unsupported,
                "the simulation renames no directories",
                from,
            ));
        }
        if old == Some(src) {
            return Ok(());
        }
        if let Some(old) = old {
            if self.kind(old) == Kind::Dir {
                return Err(err(ErrorKind::IsADirectory, "is a directory", to));
            }
            self.unlink_entry(tdir, &tname);
        }
        self.entries_mut(fdir).remove(&fname);
        self.entries_mut(tdir).insert(tname.clone(), src);
        for w in self.writers.values_mut() {
            if w.at.hashed && w.at.dir == Some(fdir) && w.at.name == fname {
                w.at.dir = Some(tdir);
                w.at.name.clone_from(&tname);
            }
        }
        let cookie = self.inotify.cookie();
        self.inotify.emit(fdir, &fname, mask::MOVED_FROM, cookie);
        self.inotify.emit(tdir, &tname, mask::MOVED_TO, cookie);
        self.collect_garbage();
        self.debug_check();
        Ok(())
    }

    /// `link(2)` (the existing name is not followed if a symlink).
    pub fn link(&mut self, existing: &Path, new: &Path) -> io::Result<()> {
        let (_, _, ino) = self.entry(existing)?;
        let ino = ino.ok_or_else(|| err(ErrorKind::NotFound, "no such file", existing))?;
        if self.kind(ino) == Kind::Dir {
            return Err(err(
                ErrorKind::PermissionDenied,
                "hard link to a directory",
                existing,
            ));
        }
        let (dir, name) = self.free_name(new)?;
        self.link_entry(dir, &name, ino);
        self.inotify.emit(dir, &name, mask::CREATE, 0);
        self.debug_check();
        Ok(())
    }

    /// `unlink(2)`: `IN_DELETE`.
    pub fn unlink(&mut self, path: &Path) -> io::Result<()> {
        let (dir, name, ino) = self.entry(path)?;
        let ino = ino.ok_or_else(|| err(ErrorKind::NotFound, "no such file", path))?;
        if self.kind(ino) == Kind::Dir {
            return Err(err(ErrorKind::IsADirectory, "is a directory", path));
        }
        self.unlink_entry(dir, &name);
        self.inotify.emit(dir, &name, mask::DELETE, 0);
        self.collect_garbage();
        self.debug_check();
        Ok(())
    }

    /// `truncate(2)` (follows symlinks), zero-filling when growing:
    /// `IN_MODIFY`, even when the length does not change.
    pub fn truncate(&mut self, path: &Path, len: u64) -> io::Result<()> {
        let l = self.lookup(path, true)?;
        let ino = l
            .ino
            .ok_or_else(|| err(ErrorKind::NotFound, "no such file", path))?;
        let Node::File(data) = &mut self.inodes.get_mut(&ino).expect("found").node else {
            return Err(err(ErrorKind::InvalidInput, "not a regular file", path));
        };
        data.resize(
            usize::try_from(len).expect("simulated files fit in memory"),
            0,
        );
        let name = l.name.expect("a file has a name");
        self.inotify.emit(l.dir, &name, mask::MODIFY, 0);
        Ok(())
    }

    /// The directory and name of `path`, which must not exist yet.
    fn free_name(&self, path: &Path) -> io::Result<(u64, OsString)> {
        match self.entry(path)? {
            (_, _, Some(_)) => Err(err(ErrorKind::AlreadyExists, "file exists", path)),
            (dir, name, None) => Ok((dir, name)),
        }
    }

    fn make(&mut self, path: &Path, node: Node) -> io::Result<()> {
        let (dir, name) = self.free_name(path)?;
        let is_dir = matches!(node, Node::Dir { .. });
        let ino = self.alloc(node);
        if is_dir {
            let Node::Dir { parent, .. } = &mut self.inodes.get_mut(&ino).expect("new").node else {
                unreachable!()
            };
            *parent = dir;
            self.entries_mut(dir).insert(name.clone(), ino);
        } else {
            self.link_entry(dir, &name, ino);
        }
        let isdir = if is_dir { IN_ISDIR } else { 0 };
        self.inotify.emit(dir, &name, mask::CREATE | isdir, 0);
        self.debug_check();
        Ok(())
    }

    /// `mkdir(2)`: `IN_CREATE | IN_ISDIR`.
    pub fn mkdir(&mut self, path: &Path) -> io::Result<()> {
        let node = Node::Dir {
            entries: Default::default(),
            parent: ROOT_INO,
        };
        self.make(path, node)
    }

    /// `mkdir -p`: every missing directory of `path`.
    pub fn mkdir_all(&mut self, path: &Path) -> io::Result<()> {
        let mut sofar = PathBuf::new();
        for c in path.components() {
            sofar.push(c);
            if self.lookup(&sofar, true)?.ino.is_none() {
                self.mkdir(&sofar)?;
            }
        }
        Ok(())
    }

    /// `mkfifo(3)`: `IN_CREATE`.
    pub fn mkfifo(&mut self, path: &Path) -> io::Result<()> {
        self.make(path, Node::Fifo)
    }

    /// `symlink(2)`: `IN_CREATE`. `target` may be relative (to the link's
    /// directory) and need not exist.
    pub fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        self.make(link, Node::Symlink(target.to_owned()))
    }

    /// `rmdir(2)` of an empty directory: `IN_DELETE_SELF` and `IN_IGNORED`
    /// on its own watch, then `IN_DELETE | IN_ISDIR` on its parent's.
    pub fn rmdir(&mut self, path: &Path) -> io::Result<()> {
        let (dir, name, ino) = self.entry(path)?;
        let ino = ino.ok_or_else(|| err(ErrorKind::NotFound, "no such directory", path))?;
        match self.entries(ino) {
            None => return Err(err(ErrorKind::NotADirectory, "not a directory", path)),
            Some(e) if !e.is_empty() => {
                return Err(err(
                    ErrorKind::DirectoryNotEmpty,
                    "directory not empty",
                    path,
                ))
            }
            Some(_) => {}
        }
        self.entries_mut(dir).remove(&name);
        if self.inotify.watched(ino) {
            self.inotify.emit(ino, OsStr::new(""), mask::DELETE_SELF, 0);
            self.inotify.remove(ino);
        }
        self.inotify.emit(dir, &name, mask::DELETE | IN_ISDIR, 0);
        for w in self.writers.values_mut().filter(|w| w.at.dir == Some(ino)) {
            w.at.dir = None;
        }
        self.inodes.remove(&ino);
        self.free_inos.insert(ino);
        self.debug_check();
        Ok(())
    }

    // ---- copies -----------------------------------------------------------

    /// `cp from to`, to be advanced with [`SimFs::copy_step`]: the source
    /// is opened first (followed if a symlink), then `to` created or
    /// truncated.
    pub fn copy_start(&mut self, from: &Path, to: &Path) -> io::Result<CopyJob> {
        let (src, _) = self.open(from, true)?;
        let dst = self.create(to)?;
        Ok(CopyJob::new(src, dst, false))
    }

    /// One `read` of up to `max_bytes` from the source at the copy's
    /// position and, if it returned data, one `write` of it (transformed
    /// for a compressing job) into the target. True once a read returned
    /// nothing: the copy is complete (call [`SimFs::copy_finish`]); bytes
    /// appended to the source after that are not copied.
    pub fn copy_step(&mut self, job: &mut CopyJob, max_bytes: usize) -> bool {
        if job.eof {
            return true;
        }
        let mut buf = vec![0; max_bytes];
        let n = self.read_inode(job.src.ino, &mut buf, job.pos);
        if n == 0 {
            job.eof = true;
            return true;
        }
        let chunk = &buf[..n];
        let out = match (job.compress, job.pos) {
            (true, 0) => compressed(chunk),
            (true, _) => chunk.iter().map(|b| !b).collect(),
            (false, _) => chunk.to_vec(),
        };
        job.pos += n as u64;
        self.write(&job.dst, &out);
        false
    }

    /// Closes the copy's target (`IN_CLOSE_WRITE`) and its source.
    pub fn copy_finish(&mut self, job: CopyJob) {
        self.close(job.dst);
    }

    fn read_inode(&self, ino: u64, buf: &mut [u8], at: u64) -> usize {
        let Node::File(data) = &self.inode(ino).node else {
            return 0;
        };
        let start = usize::try_from(at).unwrap_or(usize::MAX).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        n
    }

    // ---- inotify -------------------------------------------------------------

    /// `inotify_add_watch(dir, ALL_EVENTS)`; the events carry `dir` as given.
    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        self.watch_mask(dir, ALL_EVENTS)
    }

    /// `inotify_add_watch` with an explicit mask (replacing an earlier one).
    pub fn watch_mask(&mut self, dir: &Path, mask: u32) -> io::Result<()> {
        let ino = self.dir_ino(dir)?;
        self.inotify.add(ino, dir.to_owned(), mask);
        Ok(())
    }

    /// `inotify_rm_watch`: `IN_IGNORED`. `NotFound` if `dir` has no watch.
    pub fn unwatch(&mut self, dir: &Path) -> io::Result<()> {
        let ino = self.dir_ino(dir)?;
        if self.inotify.remove(ino) {
            Ok(())
        } else {
            Err(err(ErrorKind::NotFound, "not watched", dir))
        }
    }

    fn dir_ino(&self, dir: &Path) -> io::Result<u64> {
        let ino = self.lookup(dir, true)?.ino;
        let ino = ino.ok_or_else(|| err(ErrorKind::NotFound, "no such directory", dir))?;
        match self.kind(ino) {
            Kind::Dir => Ok(ino),
            _ => Err(err(ErrorKind::NotADirectory, "not a directory", dir)),
        }
    }

    /// The queue's bound (the kernel's `max_queued_events`).
    pub fn set_queue_limit(&mut self, limit: usize) {
        self.inotify.set_limit(limit);
    }

    /// Reads every queued event.
    pub fn drain_events(&mut self) -> Vec<SimEvent> {
        self.inotify.drain(usize::MAX)
    }

    /// Reads at most `max` events (a short `read` of the inotify fd).
    pub fn drain_some_events(&mut self, max: usize) -> Vec<SimEvent> {
        self.inotify.drain(max)
    }

    pub fn queued_events(&self) -> usize {
        self.inotify.len()
    }

    // ---- looking without touching (for checkers and tests) --------------------

    /// The whole content of the file at `path` (followed).
    pub fn read_path(&self, path: &Path) -> io::Result<Vec<u8>> {
        let ino = self.lookup(path, true)?.ino;
        match ino.map(|i| &self.inode(i).node) {
            Some(Node::File(data)) => Ok(data.clone()),
            Some(_) => Err(err(ErrorKind::InvalidInput, "not a regular file", path)),
            None => Err(err(ErrorKind::NotFound, "no such file", path)),
        }
    }

    /// The content of inode `ino` if it is a live regular file.
    pub fn content(&self, ino: u64) -> Option<&[u8]> {
        match &self.inodes.get(&ino)?.node {
            Node::File(data) => Some(data),
            _ => None,
        }
    }

    /// Every name in `dir`, whatever it is, sorted.
    pub fn names(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let ino = self.dir_ino(dir)?;
        Ok(self
            .entries(ino)
            .expect("a directory")
            .keys()
            .cloned()
            .collect())
    }

    /// `lstat` without the `&mut` of the trait.
    pub fn stat_path(&self, path: &Path) -> Option<Meta> {
        self.lookup(path, false).ok()?.ino.map(|i| self.meta(i))
    }
}

impl Fs for SimFs {
    type File = SimFile;

    fn open(&mut self, path: &Path, follow_symlinks: bool) -> io::Result<(SimFile, Meta)> {
        let ino = self.lookup(path, follow_symlinks)?.ino;
        let ino = ino.ok_or_else(|| err(ErrorKind::NotFound, "no such file", path))?;
        if self.kind(ino) != Kind::File {
            return Err(err(ErrorKind::InvalidInput, "not a regular file", path));
        }
        Ok((self.reader(ino), self.meta(ino)))
    }

    fn fstat(&mut self, file: &SimFile) -> io::Result<Meta> {
        Ok(self.meta(file.ino))
    }

    fn lstat(&mut self, path: &Path) -> io::Result<Option<Meta>> {
        match self.lookup(path, false) {
            Ok(l) => Ok(l.ino.map(|i| self.meta(i))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn stat(&mut self, path: &Path) -> io::Result<Option<Meta>> {
        match self.lookup(path, true) {
            Ok(l) => Ok(l.ino.map(|i| self.meta(i))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_at(&mut self, file: &SimFile, buf: &mut [u8], at: u64) -> io::Result<usize> {
        Ok(self.read_inode(file.ino, buf, at))
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<(OsString, Meta)>> {
        let ino = self.dir_ino(dir)?;
        let entries = self.entries(ino).expect("a directory");
        Ok(entries
            .iter()
            .filter(|(_, i)| matches!(self.kind(**i), Kind::File | Kind::Symlink))
            .map(|(name, i)| (name.clone(), self.meta(*i)))
            .collect())
    }

    fn writers(&mut self, file: &SimFile) -> io::Result<Option<bool>> {
        Ok(Some(self.inode(file.ino).writers > 0))
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        self.unlink(path)
    }

    fn clock(&mut self) -> u64 {
        self.fs_clock()
    }
}
