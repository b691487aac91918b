//! File identity: device, inode and a fingerprint of the first bytes.
//!
//! The fingerprint covers the first `min(len, FINGERPRINT_LEN)` bytes and
//! records how many it covered. While a file is shorter than
//! [`FINGERPRINT_LEN`] the fingerprint is weaker (an empty file has none);
//! it is extended once the file has grown, and a stored fingerprint is
//! checked against the same number of bytes it was taken over.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Bytes covered by a full fingerprint.
pub const FINGERPRINT_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    /// FNV-1a 64 over the first `fp_len` bytes.
    pub fp: u64,
    pub fp_len: u32,
}

impl Identity {
    /// Reads the identity of an open file.
    pub fn of(file: &File) -> io::Result<Identity> {
        let meta = file.metadata()?;
        let mut head = [0u8; FINGERPRINT_LEN];
        let n = read_head(file, &mut head)?;
        Ok(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            fp: fnv1a(&head[..n]),
            fp_len: n as u32,
        })
    }

    /// True when `file` is the file this identity was taken from: same
    /// device and inode, and the same bytes at the start.
    pub fn matches(&self, file: &File) -> io::Result<bool> {
        let meta = file.metadata()?;
        if meta.dev() != self.dev || meta.ino() != self.ino {
            return Ok(false);
        }
        let mut head = [0u8; FINGERPRINT_LEN];
        let n = read_head(file, &mut head[..self.fp_len as usize])?;
        Ok(n == self.fp_len as usize && fnv1a(&head[..n]) == self.fp)
    }

    /// True when `file` starts with the bytes this identity's fingerprint
    /// was taken over, whatever its device and inode (a copy of the file).
    pub fn head_matches(&self, file: &File) -> io::Result<bool> {
        let mut head = [0u8; FINGERPRINT_LEN];
        let n = read_head(file, &mut head[..self.fp_len as usize])?;
        Ok(n == self.fp_len as usize && fnv1a(&head[..n]) == self.fp)
    }

    /// Extends a short fingerprint once the file has more bytes, and takes
    /// it again whenever the reader has just read within the fingerprinted
    /// head (`read_from` below `FINGERPRINT_LEN`): a file truncated and
    /// rewritten before the reader got to it must be known by the bytes it
    /// actually read, or a later run would take it for another file.
    ///
    /// Returns true when the recorded fingerprint no longer matched (the
    /// head was rewritten), so the caller records the new one promptly;
    /// merely extending it returns false.
    pub fn refresh(&mut self, file: &File, read_from: u64) -> io::Result<bool> {
        if (self.fp_len as usize) >= FINGERPRINT_LEN && read_from >= FINGERPRINT_LEN as u64 {
            return Ok(false);
        }
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != (self.dev, self.ino) {
            return Ok(false);
        }
        let mut head = [0u8; FINGERPRINT_LEN];
        let n = read_head(file, &mut head)?;
        let had = self.fp_len as usize;
        let rewritten = n < had || fnv1a(&head[..had]) != self.fp;
        if rewritten || n > had {
            self.fp = fnv1a(&head[..n]);
            self.fp_len = n as u32;
        }
        Ok(rewritten)
    }
}

/// The stream id sent to the server for a file seen for the first time:
/// `dev-ino-birthtime` in hex, so a client that crashed before saving its
/// state derives the same id again and the server can tell it how far the
/// stream got. Where the file system has no birth time, the id falls back
/// to one derived from the current time (a crash before the state is
/// saved then re-sends the file from its start).
pub fn stream_id(file: &File, identity: &Identity) -> String {
    let born = file
        .metadata()
        .and_then(|m| m.created())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    match born {
        Some(d) => format!(
            "{:x}-{:x}-{:x}.{:x}",
            identity.dev,
            identity.ino,
            d.as_secs(),
            d.subsec_nanos()
        ),
        None => format!(
            "{:x}-{:x}-t{:x}",
            identity.dev,
            identity.ino,
            unique_suffix()
        ),
    }
}

/// A suffix that differs between calls (time in nanoseconds).
pub fn unique_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn read_head(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// FNV-1a, 64 bit: stable across Rust versions, which the state file needs.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn same_file_matches_and_rewritten_file_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"first line\n").unwrap();
        let f = File::open(&p).unwrap();
        let id = Identity::of(&f).unwrap();
        assert_eq!(id.fp_len, 11);
        assert!(id.matches(&f).unwrap());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"more\n")
            .unwrap();
        assert!(id.matches(&f).unwrap(), "appending keeps the identity");
        std::fs::write(&p, b"other line\n").unwrap(); // same inode, new content
        assert!(!id.matches(&File::open(&p).unwrap()).unwrap());
    }

    #[test]
    fn short_fingerprint_is_extended() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"").unwrap();
        let f = File::open(&p).unwrap();
        let mut id = Identity::of(&f).unwrap();
        assert_eq!(id.fp_len, 0);
        std::fs::write(&p, vec![b'x'; 3000]).unwrap();
        assert!(!id.refresh(&f, 0).unwrap(), "extended, not rewritten");
        assert_eq!(id.fp_len as usize, FINGERPRINT_LEN);
        assert!(id.matches(&f).unwrap());
    }

    #[test]
    fn refresh_reports_a_head_rewritten_before_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, vec![b'o'; 2000]).unwrap();
        let f = File::open(&p).unwrap();
        let mut id = Identity::of(&f).unwrap();
        // Truncated and rewritten in place (same inode).
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap()
            .write_all(&[b'n'; 1500])
            .unwrap();
        assert!(
            !id.refresh(&f, 4000).unwrap(),
            "beyond the head: not checked"
        );
        assert!(id.refresh(&f, 0).unwrap(), "reading the head notices");
        assert!(id.matches(&f).unwrap());
        assert!(!id.refresh(&f, 0).unwrap(), "now it is up to date");
    }

    #[test]
    fn stream_id_is_stable_for_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"x\n").unwrap();
        let f = File::open(&p).unwrap();
        let id = Identity::of(&f).unwrap();
        assert_eq!(stream_id(&f, &id), stream_id(&File::open(&p).unwrap(), &id));
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
