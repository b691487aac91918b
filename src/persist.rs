//! Crash-safe small files: both daemons' state files go through here.
//!
//! [`write_atomic`] writes a temp file beside the target, `fsync`s it,
//! renames it over the target and `fsync`s the directory, so after a crash
//! or power loss the target holds either the old or the new content, never
//! a mix. Paths inside state files are stored with [`escape_path`] (bytes
//! outside printable ASCII, and `%`, as `%XX`), since TOML strings must be
//! UTF-8 and paths need not be. Hashes stored in state files use
//! [`fnv1a`], which stays the same across Rust versions.

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

mod toml_text;
pub use toml_text::TomlText;

/// Why a state file could not be read or written.
#[derive(Debug)]
pub enum StateError {
    Read {
        path: PathBuf,
        source: io::Error,
    },
    /// Unparsable, or of an unknown version. `risk` says what starting
    /// without it would cost, for the message.
    Corrupt {
        path: PathBuf,
        reason: String,
        risk: &'static str,
    },
    Write {
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Read { path, source } => write!(f, "cannot read state file {}: {source}", path.display()),
            StateError::Corrupt { path, reason, risk } => write!(
                f,
                "state file {} is corrupt ({reason}); refusing to start, since without it {risk}. Repair it, or move it away to accept that",
                path.display()
            ),
            StateError::Write { path, source } => write!(f, "cannot write state file {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for StateError {}

/// Reads a versioned TOML state file: `Ok(None)` when it does not exist,
/// `Corrupt` when it does not parse or `version_of` is not `version`.
pub fn load_toml<T: DeserializeOwned>(
    path: &Path,
    version: u32,
    version_of: impl Fn(&T) -> u32,
    risk: &'static str,
) -> Result<Option<T>, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.into(),
        reason,
        risk,
    };
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let text = String::from_utf8(text).map_err(|_| corrupt("not UTF-8".into()))?;
    let value: T = toml::from_str(&text).map_err(|e| corrupt(toml_reason(&e)))?;
    match version_of(&value) {
        v if v == version => Ok(Some(value)),
        v => Err(corrupt(format!(
            "version {v} is not supported (expected {version})"
        ))),
    }
}

/// Why TOML text did not parse, never empty: the parser's message with
/// the line it found the problem on.
pub fn toml_reason(e: &toml::de::Error) -> String {
    let what = match e.message().trim() {
        "" => "unparsable TOML",
        m => m,
    };
    match e.span() {
        Some(span) => format!("{what} (at byte {})", span.start),
        None => what.to_string(),
    }
}

/// How far a write must get before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the machine: `fsync` of the file and of its
    /// directory.
    Synced,
    /// Survives a crash of the process only (the kernel has the data): no
    /// `fsync`, so cheap enough to do on every identity change.
    ProcessCrash,
}

/// Serializes `value` as TOML and writes it with [`write_atomic`].
pub fn save_toml<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.into(),
        source,
    };
    let text =
        toml::to_string(value).map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    write_atomic(path, text.as_bytes(), durability).map_err(err)
}

/// Replaces `path` with `bytes` atomically; [`Durability::Synced`] makes it
/// durable too.
pub fn write_atomic(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    write_atomic_mode(path, bytes, durability, 0o666)
}

/// [`write_atomic`] with the temp file (and so the result) created with
/// permission bits `mode` (before the umask): 0600 for a file holding a
/// secret.
pub fn write_atomic_mode(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
    mode: u32,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?
    };
    // An existing temp file keeps its old mode: set it.
    if mode != 0o666 {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    f.write_all(bytes)?;
    if durability == Durability::ProcessCrash {
        drop(f);
        return fs::rename(&tmp, path);
    }
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// A path as printable ASCII: other bytes and `%` become `%XX`.
pub fn escape_path(p: &Path) -> String {
    let mut s = String::new();
    for &b in p.as_os_str().as_bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            s.push(b as char);
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

/// Inverse of [`escape_path`]; a `%` not followed by two hex digits stays.
pub fn unescape_path(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// FNV-1a, 64 bit: stable across Rust versions, which state files need.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        for raw in [
            &b"/var/log/a.log"[..],
            b"/caf\xe9 100%.log",
            b"%",
            b"%zz",
            b"\x01\x7f",
        ] {
            let p = Path::new(std::ffi::OsStr::from_bytes(raw));
            let e = escape_path(p);
            assert!(e.bytes().all(|c| (0x20..0x7f).contains(&c)));
            assert_eq!(unescape_path(&e), p);
        }
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state");
        write_atomic(&p, b"one", Durability::Synced).unwrap();
        write_atomic(&p, b"two", Durability::ProcessCrash).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
