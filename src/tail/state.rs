//! The client's state file: one file for all streams.
//!
//! Format (TOML, versioned):
//! ```toml
//! version = 1
//! [[file]]
//! id = "fd01-83a2-18b4c6d2e0f1a000"   # stream id sent to the server
//! path = "/var/log/app.log"           # %XX-escaped where not printable ASCII
//! dev = 64769
//! ino = 33698
//! fp = "af63dc4c8601ec8c"             # fingerprint of the first fp_len bytes
//! fp_len = 1024
//! head = "12ab34cd56ef7890"           # fingerprint of the first head_len (<= 64) bytes
//! head_len = 64
//! offset = 123456                     # acknowledged by the server
//! complete = false                    # true: sent whole after close and confirmed (`250 DONE`)
//! copy = true                         # only when true: logrotate's copy, read as a snapshot
//! copies_after = 1765056000000000000  # only when set: copies born up to then are accounted for
//! ```
//! Entries are keyed by identity (`dev`, `ino`, `fp`), not by path: on
//! start-up a path resumes from an entry only if the file there is the same
//! file. `offset` is what the server acknowledged, never merely what was
//! sent. A path may have several entries, in order: the generation being
//! read, then the ones found after it and not read yet (offset 0), so a
//! restart reads every one of them, in the same order.
//!
//! Writes are atomic: a temp file beside the target, `fsync`, `rename`,
//! `fsync` of the directory. A corrupt or unreadable state file is an error
//! that names the file; the client refuses to start rather than silently
//! re-sending everything from offset 0.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::Identity;
pub use crate::persist::Durability;
pub use crate::persist::StateError;
use crate::persist::{escape_path, load_toml, save_toml, unescape_path};

pub const VERSION: u32 = 1;

/// One tracked file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub path: PathBuf,
    pub identity: Identity,
    /// Offset acknowledged by the server.
    pub offset: u64,
    /// A file sent whole after close, confirmed by `250 DONE`: not sent
    /// again; if it grows, the growth continues its stream from `offset`.
    pub complete: bool,
    /// A copy of the path's file (copytruncate), read as a snapshot.
    pub copy: bool,
    /// Copies born up to this time (file-system clock, ns) are accounted
    /// for (see `follow::Gen::copies_after`); 0 when unknown.
    pub copies_after: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: u32,
    #[serde(default)]
    file: Vec<RawEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: String,
    path: String,
    dev: u64,
    ino: u64,
    fp: String,
    fp_len: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    head: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero32")]
    head_len: u32,
    offset: u64,
    #[serde(default)]
    complete: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    copy: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    copies_after: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !b
}

/// Loads the entries; a missing file means no entries.
pub fn load(path: &Path) -> Result<Vec<Entry>, StateError> {
    const RISK: &str = "every file would be sent again from the beginning";
    let Some(raw) = load_toml(path, VERSION, |r: &Raw| r.version, RISK)? else {
        return Ok(Vec::new());
    };
    raw.file
        .into_iter()
        .map(|r| {
            let fp = u64::from_str_radix(&r.fp, 16).map_err(|_| StateError::Corrupt {
                path: path.into(),
                reason: format!("bad fingerprint {:?}", r.fp),
                risk: RISK,
            })?;
            let head = match &r.head {
                Some(h) => u64::from_str_radix(h, 16).map_err(|_| StateError::Corrupt {
                    path: path.into(),
                    reason: format!("bad head fingerprint {h:?}"),
                    risk: RISK,
                })?,
                None => 0,
            };
            let identity = Identity {
                dev: r.dev,
                ino: r.ino,
                fp,
                fp_len: r.fp_len,
                head,
                head_len: r.head_len.min(crate::tail::identity::HEAD_LEN as u32),
            };
            Ok(Entry {
                id: r.id,
                path: unescape_path(&r.path),
                identity,
                offset: r.offset,
                complete: r.complete,
                copy: r.copy,
                copies_after: r.copies_after,
            })
        })
        .collect()
}

/// Writes the entries atomically (temp file, rename); with
/// [`Durability::Synced`] also durably (fsync of the file and directory).
pub fn save(path: &Path, entries: &[Entry], durability: Durability) -> Result<(), StateError> {
    let file = entries
        .iter()
        .map(|e| RawEntry {
            id: e.id.clone(),
            path: escape_path(&e.path),
            dev: e.identity.dev,
            ino: e.identity.ino,
            fp: format!("{:016x}", e.identity.fp),
            fp_len: e.identity.fp_len,
            head: (e.identity.head_len > 0).then(|| format!("{:016x}", e.identity.head)),
            head_len: e.identity.head_len,
            offset: e.offset,
            complete: e.complete,
            copy: e.copy,
            copies_after: e.copies_after,
        })
        .collect();
    save_toml(
        path,
        &Raw {
            version: VERSION,
            file,
        },
        durability,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn entry(path: &Path) -> Entry {
        Entry {
            id: "a-b-c".into(),
            path: path.into(),
            identity: Identity {
                dev: 1,
                ino: 2,
                fp: u64::MAX,
                fp_len: 1024,
                head: 7,
                head_len: 64,
            },
            offset: 77,
            complete: false,
            copy: false,
            copies_after: 0,
        }
    }

    #[test]
    fn round_trips_including_odd_paths() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("sub/state");
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"/var/log/caf\xe9 100%.log"));
        let entries = vec![entry(Path::new("/var/log/a.log")), entry(odd)];
        save(&sf, &entries, Durability::Synced).unwrap();
        assert_eq!(load(&sf).unwrap(), entries);
        assert!(!dir.path().join("sub/state.tmp").exists());
    }

    #[test]
    fn missing_is_empty_but_corrupt_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        assert!(load(&sf).unwrap().is_empty());
        for bad in [
            "",
            "version = 1\n[[file]]\nid = 3\n",
            "version = 9\n",
            "garbage",
        ] {
            std::fs::write(&sf, bad).unwrap();
            let e = load(&sf).unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("state"), "{e}");
        }
    }
}
