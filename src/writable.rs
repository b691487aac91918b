//! Can a daemon write where its configuration says it will?
//!
//! Asked once at start-up and by `--check-config`, so that a state file
//! or output directory the daemon cannot write is one error line naming
//! the path and the system's reason, and exit 1, instead of an error
//! later (every second, or at every connection) while nothing is saved.
//!
//! - A directory that exists is probed: a file `.loghamster-probe.<pid>`
//!   is created in it (`O_EXCL`) and removed at once. This is what the
//!   daemon will do (the state file is replaced through a temp file beside
//!   it), so it catches what `access(2)` misses: read-only mounts, ACLs,
//!   SELinux, a full inode table.
//! - A file that exists (a state file, the server's journal) must be a
//!   regular file this process can open for writing; it is opened without
//!   truncating and closed, so nothing in it changes.
//! - A directory that does not exist is created in [`Mode::Start`], as
//!   the first write would do anyway. In [`Mode::Check`] nothing is
//!   created: its nearest existing ancestor must be a directory in which
//!   this process may create entries (`faccessat(2)` with the effective
//!   ids).
//!
//! A disk that fills up later, or permissions changed at run time, are the
//! daemons' business: one ERROR, a metric, retries with back-off (see
//! `client::statefile` and the server's checkpoint rounds).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::{ClientConfig, ServerConfig};

/// Start-up (may create a missing directory) or `--check-config`
/// (creates nothing that stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Start,
    Check,
}

/// A path the daemon must write but cannot.
#[derive(Debug)]
pub struct NotWritable {
    /// What the path is for ("state file", "output directory", ...).
    pub what: &'static str,
    pub path: PathBuf,
    /// The directory in which no file can be created, when the path
    /// itself is a file in it.
    pub dir: Option<PathBuf>,
    pub source: io::Error,
}

impl fmt::Display for NotWritable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot write {} {}",
            self.what,
            crate::log::esc(&self.path)
        )?;
        if let Some(d) = &self.dir {
            write!(f, " (cannot create files in {})", crate::log::esc(d))?;
        }
        write!(f, ": {}", self.source)
    }
}

impl std::error::Error for NotWritable {}

/// The directory `dir` can hold new files (see the module doc).
pub fn dir(what: &'static str, dir: &Path, mode: Mode) -> Result<(), NotWritable> {
    let fail = |path: &Path, source| NotWritable {
        what,
        path: path.to_path_buf(),
        dir: None,
        source,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => probe(dir).map_err(|e| fail(dir, e)),
        Ok(_) => Err(fail(dir, io::Error::from_raw_os_error(libc::ENOTDIR))),
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(fail(dir, e)),
        Err(_) if mode == Mode::Start => {
            std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
            probe(dir).map_err(|e| fail(dir, e))
        }
        Err(_) => {
            let ancestor = nearest_existing(dir);
            match std::fs::metadata(&ancestor) {
                Ok(m) if !m.is_dir() => {
                    Err(fail(&ancestor, io::Error::from_raw_os_error(libc::ENOTDIR)))
                }
                _ => crate::reactor::sys::fs::may_create_in(&ancestor)
                    .map_err(|e| fail(&ancestor, e)),
            }
        }
    }
}

/// The file `path` can be written: its directory can hold new files and,
/// if it exists, it is a regular file open for writing.
pub fn file(what: &'static str, path: &Path, mode: Mode) -> Result<(), NotWritable> {
    dir(what, &parent(path), mode).map_err(|e| NotWritable {
        path: path.to_path_buf(),
        dir: Some(e.path),
        ..e
    })?;
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )),
            Err(e) => Err(e),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|source| NotWritable {
        what,
        path: path.to_path_buf(),
        dir: None,
        source,
    })
}

/// The client's state file. Returns the path checked.
pub fn client(cfg: &ClientConfig, mode: Mode) -> Result<&Path, NotWritable> {
    file("state file", &cfg.state_file, mode)?;
    Ok(&cfg.state_file)
}

/// The server's state file and journal, its default `directory` and the
/// directory of every file output. Returns what was checked, one line
/// each, for `--check-config`.
pub fn server(cfg: &ServerConfig, mode: Mode) -> Result<Vec<String>, NotWritable> {
    let mut checked = Vec::new();
    if let Some(state) = cfg.state_path() {
        file("state file", &state, mode)?;
        let mut journal = state.clone().into_os_string();
        journal.push(".journal");
        file("state journal", Path::new(&journal), mode)?;
        checked.push(format!("state file {}", crate::log::esc(&state)));
    }
    if let Some(d) = &cfg.directory {
        dir("output directory", d, mode)?;
        checked.push(format!("directory {}", crate::log::esc(d)));
    }
    for out in &cfg.outputs {
        if let Some(t) = out.template() {
            dir("output directory", t.base(), mode)?;
            checked.push(format!(
                "output {} under {}",
                out.name,
                crate::log::esc(t.base())
            ));
        }
    }
    Ok(checked)
}

/// The directory a file is in (`.` for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `path` or the closest of its ancestors that exists (`/` at worst, `.`
/// for a relative path with none).
fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_ok())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Creates and removes a probe file in `dir`.
fn probe(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = dir.join(format!(".loghamster-probe.{}", std::process::id()));
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name);
    match made {
        Ok(f) => {
            drop(f);
            std::fs::remove_file(&name)
        }
        // A probe left by a crashed process of the same pid: it proves
        // nothing, so try once more without it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&name)?;
            probe(dir)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_writable_directory_passes_and_keeps_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("state"), "x").unwrap();
        let before = entries(tmp.path());
        file("state file", &tmp.path().join("state"), Mode::Check).unwrap();
        file("state file", &tmp.path().join("new"), Mode::Check).unwrap();
        assert_eq!(entries(tmp.path()), before);
        assert_eq!(std::fs::read(tmp.path().join("state")).unwrap(), b"x");
    }

    #[test]
    fn check_creates_no_missing_directory_and_start_does() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("a/b/state");
        file("state file", &state, Mode::Check).unwrap();
        assert!(entries(tmp.path()).is_empty());
        file("state file", &state, Mode::Start).unwrap();
        assert_eq!(entries(&tmp.path().join("a/b")), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let plain = tmp.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        for mode in [Mode::Check, Mode::Start] {
            let e = file("state file", &plain.join("sub/state"), mode).unwrap_err();
            assert_eq!(e.source.raw_os_error(), Some(libc::ENOTDIR), "{e}");
            assert!(e.to_string().starts_with("cannot write state file "), "{e}");
        }
        let e = file("state file", &plain.join("state"), Mode::Check).unwrap_err();
        assert_eq!(e.dir.as_deref(), Some(plain.as_path()), "{e}");
        assert!(e.to_string().contains("(cannot create files in "), "{e}");
        let e = dir("output directory", &plain, Mode::Check).unwrap_err();
        assert_eq!(e.path, plain);
        // A directory where the state file should be.
        let e = file("state file", tmp.path(), Mode::Check).unwrap_err();
        assert_eq!(e.path, tmp.path());
    }
}
