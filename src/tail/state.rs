//! The client's state file: one file for all streams.
//!
//! Format (TOML, versioned, sealed by a checksum line):
//! ```toml
//! version = 2
//! [[file]]
//! id = "fd01-83a2-6553f100.75bcd15~k3f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2"
//!                                     # dev-ino-born, and after `~` the stream
//!                                     # id sent to the server (see StreamId)
//! path = "/var/log/app.log"           # %XX-escaped where not printable ASCII
//! dev = 64769
//! ino = 33698
//! fp = "af63dc4c8601ec8c"             # fingerprint of the first fp_len bytes
//! fp_len = 1024
//! head = "12ab34cd56ef7890"           # fingerprint of the first head_len bytes (the first line, <= 64)
//! head_len = 64
//! offset = 123456                     # acknowledged by the server
//! complete = false                    # true: sent whole after close and confirmed (`250 DONE`)
//! copy = true                         # only when true: logrotate's copy, read as a snapshot
//! copies_after = 1765056000000000000  # only when set: copies born up to then are accounted for
//! # sha256 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
//! ```
//! The last line is the SHA-256 of every byte before it. A file whose
//! checksum does not match (a changed field, a flipped bit), that lacks
//! the line (truncated), or that does not parse is refused at start-up
//! with a reason naming what is wrong: the client does not start rather
//! than re-send what the server already has. A version 1 file (written by
//! an earlier loghamsterc, without checksum or secret) still loads, once:
//! the next save writes version 2.
//!
//! Entries are keyed by identity (`dev`, `ino`, `fp`), not by path: on
//! start-up a path resumes from an entry only if the file there is the same
//! file. `offset` is what the server acknowledged, never merely what was
//! sent. A path may have several entries, in order: the generation being
//! read, then the ones found after it and not read yet (offset 0), so a
//! restart reads every one of them, in the same order. Two kinds of
//! entry hold no file to read (see `follow::Tail::entries`): id `-`, since
//! when a path without a file is followed (`copies_after`), and id `+`, a
//! generation finished in its run (`dev`, `ino`, birth in `copies_after`)
//! born in the same clock tick as one still held; a version that does not
//! know an id's form ignores the entry.
//!
//! Writes are atomic: a temp file beside the target, `fsync`, `rename`,
//! `fsync` of the directory.
//!
//! The client's secret ([`IdKey`], which keys new stream ids) is kept
//! beside it, in `<state file>.key` (64 hex digits and a newline, mode
//! 0600), written once on first start: so the documented recovery from a
//! damaged state file (move it away) keeps the secret, and with it the ids
//! the server knows, and nothing is sent twice.

use std::path::{Path, PathBuf};

use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;

use super::identity::{IdKey, Identity};
pub use crate::persist::Durability;
pub use crate::persist::StateError;
use crate::persist::{
    escape_path, toml_reason, unescape_path, write_atomic, write_atomic_mode, TomlText,
};

/// The version written; [`LEGACY_VERSION`] files still load.
pub const VERSION: u32 = 2;
/// Written by loghamsterc before the checksum and the secret.
pub const LEGACY_VERSION: u32 = 1;

/// How the checksum line starts.
const SEAL: &str = "# sha256 ";

/// What starting without the state file would cost (for messages).
const RISK: &str = "every file would be sent again from the beginning";

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub entries: Vec<Entry>,
    /// Written by an earlier version (no checksum): loaded as it is.
    pub legacy: bool,
}

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

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize, Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct Raw {
    version: u32,
    #[serde(default)]
    file: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize, Debug, PartialEq))]
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

#[cfg(test)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
fn is_zero32(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
fn is_false(b: &bool) -> bool {
    !b
}

/// Loads the state; a missing file means an empty one.
pub fn load(path: &Path) -> Result<State, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.into(),
        reason,
        risk: RISK,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        corrupt(format!(
            "not UTF-8 at byte {}: damaged or not a state file",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let (body, sealed) = unseal(&text).map_err(corrupt)?;
    let raw: Raw = toml::from_str(body).map_err(|e| {
        let why = toml_reason(&e);
        corrupt(match sealed {
            true => why,
            false => format!("{why}; it has no checksum line either: truncated?"),
        })
    })?;
    match (raw.version, sealed) {
        (VERSION, true) | (LEGACY_VERSION, false) => {}
        (VERSION, false) => {
            return Err(corrupt(
                "the checksum line at the end is missing: the file was truncated or edited".into(),
            ))
        }
        (LEGACY_VERSION, true) => {
            return Err(corrupt(
                "version 1 with a checksum line: edited by hand?".into(),
            ))
        }
        (v, _) => {
            return Err(corrupt(format!(
                "version {v} is not supported (expected {VERSION} or {LEGACY_VERSION})"
            )))
        }
    }
    let entries = raw
        .file
        .into_iter()
        .enumerate()
        .map(|(i, r)| entry(r).map_err(|why| corrupt(format!("[[file]] #{}: {why}", i + 1))))
        .collect::<Result<_, _>>()?;
    Ok(State {
        entries,
        legacy: !sealed,
    })
}

/// Splits the checksum line off and checks it. Returns the body and
/// whether it was sealed (a legacy file has no checksum line).
fn unseal(text: &str) -> Result<(&str, bool), String> {
    if text.is_empty() {
        return Err("the file is empty".into());
    }
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let at = trimmed.rfind('\n').map_or(0, |i| i + 1);
    let Some(recorded) = trimmed[at..].strip_prefix(SEAL) else {
        return Ok((text, false));
    };
    let body = &text[..at];
    let computed = sha256_hex(body.as_bytes());
    if recorded.trim() != computed {
        return Err(format!(
            "checksum mismatch (recorded sha256 {}, content has {computed}): the file was changed or damaged after it was written",
            recorded.trim()
        ));
    }
    Ok((body, true))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One `[[file]]` as the daemon knows it; `Err` says which field is bad.
fn entry(r: RawEntry) -> Result<Entry, String> {
    let hex = |what: &str, h: &str| {
        u64::from_str_radix(h, 16).map_err(|_| format!("bad {what} {h:?} (expected hex)"))
    };
    let fp = hex("fingerprint `fp`", &r.fp)?;
    let head = match &r.head {
        Some(h) => hex("head fingerprint `head`", h)?,
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
}

/// Writes the state atomically (temp file, rename), sealed with its
/// checksum line; with [`Durability::Synced`] also durably (fsync of the
/// file and directory).
pub fn save(path: &Path, entries: &[Entry], durability: Durability) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.into(),
        source,
    };
    let text = encode(entries).map_err(err)?;
    write_atomic(path, text.as_bytes(), durability).map_err(err)
}

/// The state file's text for `entries`, sealed with its checksum line:
/// what [`save`] writes.
pub fn encode(entries: &[Entry]) -> std::io::Result<String> {
    let mut text = to_text(entries)?;
    let seal = sha256_hex(text.as_bytes());
    text.push_str(SEAL);
    text.push_str(&seal);
    text.push('\n');
    Ok(text)
}

/// The state file's TOML (a [`Raw`]), written with [`TomlText`]: every
/// entry has changed at every save of a busy host, and `toml`'s
/// serializer took 6.9 ms for 1,000 of them on the client's only thread.
fn to_text(entries: &[Entry]) -> std::io::Result<String> {
    let mut t = TomlText::with_capacity(64 + 360 * entries.len());
    t.int("version", u64::from(VERSION));
    for e in entries {
        t.table("file");
        t.str("id", &e.id);
        t.str("path", &escape_path(&e.path));
        t.int("dev", e.identity.dev);
        t.int("ino", e.identity.ino);
        t.hex("fp", e.identity.fp);
        t.int("fp_len", u64::from(e.identity.fp_len));
        if e.identity.head_len > 0 {
            t.hex("head", e.identity.head);
            t.int("head_len", u64::from(e.identity.head_len));
        }
        t.int("offset", e.offset);
        t.bool("complete", e.complete);
        if e.copy {
            t.bool("copy", true);
        }
        if e.copies_after != 0 {
            t.int("copies_after", e.copies_after);
        }
    }
    t.finish()
}

/// Where the secret of the state file `state` is kept.
pub fn key_path(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    state.with_file_name(name)
}

/// The client's secret kept beside the state file `state`; `None` when
/// there is none yet.
pub fn load_key(state: &Path) -> Result<Option<IdKey>, StateError> {
    let path = key_path(state);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let hex = std::str::from_utf8(&text).ok().map(str::trim_end);
    match hex.and_then(IdKey::from_hex) {
        Some(k) => Ok(Some(k)),
        None => Err(StateError::Corrupt {
            path,
            reason: format!(
                "expected 64 hex digits and a newline, found {} bytes that are not",
                text.len()
            ),
            risk: "stream ids the server knows could not be derived again, and files would be sent again",
        }),
    }
}

/// Writes the secret beside the state file `state` (mode 0600, durably).
pub fn save_key(state: &Path, key: &IdKey) -> Result<(), StateError> {
    let path = key_path(state);
    let text = format!("{}\n", key.to_hex());
    write_atomic_mode(&path, text.as_bytes(), Durability::Synced, 0o600)
        .map_err(|source| StateError::Write { path, source })
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

    const KEY: IdKey = IdKey([0x5a; 32]);

    fn raw_entry(e: &Entry) -> RawEntry {
        RawEntry {
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
        }
    }

    #[test]
    fn round_trips_including_odd_paths() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("sub/state");
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"/var/log/caf\xe9 100%.log"));
        let mut keyed = entry(Path::new("/var/log/k.log"));
        keyed.id = "801-1234-6553f100.75bcd15~k0123456789abcdef0123456789abcdef".into();
        // A finished generation's marker, and a short fingerprint over a
        // first line shorter than 64 bytes.
        let mut finished = entry(Path::new("/var/log/k.log"));
        finished.id = crate::tail::follow::FINISHED_MARKER.into();
        finished.copies_after = 1_765_056_000_123_456_789;
        finished.identity.head_len = 9;
        let entries = vec![
            entry(Path::new("/var/log/a.log")),
            entry(odd),
            keyed,
            finished,
        ];
        save(&sf, &entries, Durability::Synced).unwrap();
        let got = load(&sf).unwrap();
        assert_eq!(got.entries, entries);
        assert!(!got.legacy);
        assert!(!dir.path().join("sub/state.tmp").exists());
    }

    #[test]
    fn the_text_is_what_toml_wrote_and_reads() {
        let raw = |entries: &[Entry]| Raw {
            version: VERSION,
            file: entries.iter().map(raw_entry).collect(),
        };
        // Plain values: byte for byte what `toml`'s serializer wrote
        // (earlier versions), optional keys present and absent.
        let mut copy = entry(Path::new("/var/log/b.log"));
        copy.copy = true;
        copy.complete = true;
        copy.copies_after = 1_765_056_000_123_456_789;
        copy.identity.head_len = 0;
        let plain = vec![entry(Path::new("/x.log")), copy];
        assert_eq!(
            to_text(&plain).unwrap(),
            toml::to_string(&raw(&plain)).unwrap()
        );
        // Quotes, backslashes, control characters: `toml` reads back the
        // same fields.
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"/var/log/a \"b\"\\\n.log"));
        let mut odd = entry(odd);
        odd.id = "x\"\\\u{1}\u{7f}\t~é".into();
        let back: Raw = toml::from_str(&to_text(std::slice::from_ref(&odd)).unwrap()).unwrap();
        assert_eq!(back, raw(&[odd]));
        // No entries: no `file = []`, and still a valid empty list.
        let empty: Raw = toml::from_str(&to_text(&[]).unwrap()).unwrap();
        assert!(empty.file.is_empty());
    }

    #[test]
    fn the_key_is_kept_beside_privately() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        assert_eq!(load_key(&sf).unwrap(), None);
        save_key(&sf, &KEY).unwrap();
        assert_eq!(load_key(&sf).unwrap(), Some(KEY));
        use std::os::unix::fs::PermissionsExt;
        let kp = dir.path().join("state.key");
        let mode = std::fs::metadata(&kp).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        std::fs::write(&kp, "abc\n").unwrap();
        let e = load_key(&sf).unwrap_err();
        assert!(e.to_string().contains("state.key"), "{e}");
    }

    #[test]
    fn missing_is_empty_but_corrupt_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        assert_eq!(load(&sf).unwrap(), State::default());
        for bad in [
            "",
            "version = 1\n[[file]]\nid = 3\n",
            "version = 9\n",
            "garbage",
            "version = 2\n",
        ] {
            std::fs::write(&sf, bad).unwrap();
            let e = load(&sf).unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("state"), "{e}");
            assert!(!e.to_string().contains("()"), "an empty reason: {e}");
        }
    }

    /// The text of a saved state with two entries.
    fn saved(sf: &Path) -> String {
        let entries = [entry(Path::new("/l/a.log")), entry(Path::new("/l/b.log"))];
        save(sf, &entries, Durability::ProcessCrash).unwrap();
        std::fs::read_to_string(sf).unwrap()
    }

    fn reason(sf: &Path) -> String {
        match load(sf) {
            Err(StateError::Corrupt { reason, .. }) => reason,
            other => panic!("not refused as corrupt: {other:?}"),
        }
    }

    #[test]
    fn a_changed_field_fails_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        let text = saved(&sf);
        // Still valid hex: only the checksum can tell.
        let changed = text.replacen("fp = \"ffffffffffffffff\"", "fp = \"fffffffffffffffe\"", 1);
        assert_ne!(changed, text);
        std::fs::write(&sf, &changed).unwrap();
        assert!(
            reason(&sf).starts_with("checksum mismatch"),
            "{}",
            reason(&sf)
        );
        let changed = text.replacen("offset = 77", "offset = 7", 1);
        std::fs::write(&sf, &changed).unwrap();
        assert!(reason(&sf).starts_with("checksum mismatch"));
    }

    #[test]
    fn every_truncation_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        let text = saved(&sf);
        for cut in 0..text.len() - 1 {
            std::fs::write(&sf, &text[..cut]).unwrap();
            let why = reason(&sf);
            assert!(!why.trim().is_empty(), "cut at {cut}");
        }
        std::fs::write(&sf, &text[..text.len() / 2]).unwrap();
        assert!(reason(&sf).contains("truncated"), "{}", reason(&sf));
    }

    #[test]
    fn a_legacy_file_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        let legacy = "version = 1\n\n[[file]]\nid = \"801-1234-6553f100.75bcd15\"\npath = \"/l/a.log\"\ndev = 1\nino = 2\nfp = \"00000000000000ff\"\nfp_len = 10\noffset = 5\ncomplete = false\n";
        std::fs::write(&sf, legacy).unwrap();
        let got = load(&sf).unwrap();
        assert!(got.legacy);
        assert_eq!(got.entries.len(), 1);
        assert_eq!(got.entries[0].id, "801-1234-6553f100.75bcd15");
        assert_eq!(got.entries[0].offset, 5);
    }
}
