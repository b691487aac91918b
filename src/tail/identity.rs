//! File identity: device, inode and a fingerprint of the first bytes.
//!
//! The fingerprint covers the first `min(len, FINGERPRINT_LEN)` bytes and
//! records how many it covered. While a file is shorter than
//! [`FINGERPRINT_LEN`] the fingerprint is weaker (an empty file has none);
//! it is extended once the file has grown, and a stored fingerprint is
//! checked against the same number of bytes it was taken over.

use std::io;

use super::fs::{Fs, Meta};

use crate::persist::fnv1a;

/// Bytes covered by a full fingerprint.
pub const FINGERPRINT_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    /// FNV-1a 64 over the first `fp_len` bytes.
    pub fp: u64,
    pub fp_len: u32,
    /// FNV-1a 64 over the first `head_len` bytes: the first line, at most
    /// [`HEAD_LEN`] bytes (see [`head_len`]). Recognises a copy that ends
    /// before the fingerprinted length. (A stored `head_len` is used as it
    /// is: state files from before the first-line rule still match.)
    pub head: u64,
    pub head_len: u32,
}

/// Most bytes covered by the short fingerprint ([`Identity::head`]).
pub const HEAD_LEN: usize = 64;

/// How many of a file's first bytes `head` the short fingerprint covers:
/// its first line (newline included) when that ends within [`HEAD_LEN`]
/// bytes, else `HEAD_LEN` (or all of `head` when shorter). A copytruncate
/// copy holds whole lines as the writer wrote them: one made while the
/// file held a single short line must still be recognised after a
/// restart, when nothing but the fingerprints is known of the original.
pub fn head_len(head: &[u8]) -> usize {
    let h = head.len().min(HEAD_LEN);
    memchr::memchr(b'\n', &head[..h]).map_or(h, |i| i + 1)
}

impl Identity {
    /// Reads the identity of an open file whose `fstat` gave `meta`.
    pub fn of<F: Fs>(fs: &mut F, file: &F::File, meta: &Meta) -> io::Result<Identity> {
        Identity::with_prefix(fs, file, meta, 0).map(|(id, _)| id)
    }

    /// The identity, and the file's first bytes (at most `prefix`) from
    /// the same read.
    pub fn with_prefix<F: Fs>(
        fs: &mut F,
        file: &F::File,
        meta: &Meta,
        prefix: usize,
    ) -> io::Result<(Identity, Vec<u8>)> {
        let mut head = [0u8; FINGERPRINT_LEN];
        let n = read_head(fs, file, &mut head)?;
        let h = head_len(&head[..n]);
        let id = Identity {
            dev: meta.dev,
            ino: meta.ino,
            fp: fnv1a(&head[..n]),
            fp_len: n as u32,
            head: fnv1a(&head[..h]),
            head_len: h as u32,
        };
        Ok((id, head[..n.min(prefix)].to_vec()))
    }

    /// True when the file (with `fstat` `meta`) is the file this identity
    /// was taken from: same device and inode, and the same first bytes.
    pub fn matches<F: Fs>(&self, fs: &mut F, file: &F::File, meta: &Meta) -> io::Result<bool> {
        if meta.inode() != (self.dev, self.ino) {
            return Ok(false);
        }
        self.head_matches(fs, file)
    }

    /// The file's first bytes (at most `max`), read in the same call that
    /// proves it is this identity's file (as [`Identity::matches`]);
    /// `None` when it is not.
    pub fn verified_prefix<F: Fs>(
        &self,
        fs: &mut F,
        file: &F::File,
        meta: &Meta,
        max: usize,
    ) -> io::Result<Option<Vec<u8>>> {
        if meta.inode() != (self.dev, self.ino) {
            return Ok(None);
        }
        let mut head = [0u8; FINGERPRINT_LEN];
        let n = read_head(fs, file, &mut head)?;
        let fp = self.fp_len as usize;
        if n < fp || fnv1a(&head[..fp]) != self.fp {
            return Ok(None);
        }
        Ok(Some(head[..n.min(max)].to_vec()))
    }

    /// True when the file starts with the bytes this identity's
    /// fingerprint was taken over, whatever its device and inode (a copy).
    pub fn head_matches<F: Fs>(&self, fs: &mut F, file: &F::File) -> io::Result<bool> {
        let mut head = [0u8; FINGERPRINT_LEN];
        let n = read_head(fs, file, &mut head[..self.fp_len as usize])?;
        Ok(n == self.fp_len as usize && fnv1a(&head[..n]) == self.fp)
    }

    /// True when a file of `len` bytes (a copy) starts like this one: the
    /// whole fingerprint where the copy is that long, else the short one
    /// (a copy that ended before the fingerprinted length); false when
    /// the copy is shorter than both.
    pub fn copy_matches<F: Fs>(&self, fs: &mut F, file: &F::File, len: u64) -> io::Result<bool> {
        if len >= u64::from(self.fp_len) {
            return self.head_matches(fs, file);
        }
        if self.head_len == 0 || len < u64::from(self.head_len) {
            return Ok(false);
        }
        let mut head = [0u8; HEAD_LEN];
        let n = read_head(fs, file, &mut head[..self.head_len as usize])?;
        Ok(n == self.head_len as usize && fnv1a(&head[..n]) == self.head)
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
    pub fn refresh<F: Fs>(
        &mut self,
        fs: &mut F,
        file: &F::File,
        read_from: u64,
    ) -> io::Result<bool> {
        if (self.fp_len as usize) >= FINGERPRINT_LEN && read_from >= FINGERPRINT_LEN as u64 {
            return Ok(false);
        }
        let mut head = [0u8; FINGERPRINT_LEN];
        let n = read_head(fs, file, &mut head)?;
        let had = self.fp_len as usize;
        let rewritten = n < had || fnv1a(&head[..had]) != self.fp;
        if rewritten || n > had {
            let h = head_len(&head[..n]);
            self.fp = fnv1a(&head[..n]);
            self.fp_len = n as u32;
            self.head = fnv1a(&head[..h]);
            self.head_len = h as u32;
        }
        Ok(rewritten)
    }
}

/// The stream id sent to the server for one generation of a followed
/// file. Its parts are `dev-ino-born` in hex, so a client that crashed
/// before saving its state derives the same id again and the server can
/// tell it how far the stream got. A file whose content was replaced in
/// place (truncated and rewritten) gets a `-t<nonce>` suffix: its new
/// content is a new stream. Where the file system records no birth time,
/// the id carries a nonce instead (a crash before the state is saved then
/// re-sends the file).
///
/// Keyed ids (every id this version creates): the id on the wire is `k`
/// and 32 hex digits, the first 128 bits of SHA-256 over the client's
/// secret ([`IdKey`]) and the parts, so nobody who can `stat` the file
/// can compute it (and take the stream over on the server). Ids from a
/// state file written before keep their form (`mac` is `None`), so
/// nothing in flight is sent again. The state file records both:
/// [`StreamId::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub dev: u64,
    pub ino: u64,
    pub born: Born,
    /// Set for content that replaced the file's earlier content in place
    /// (or, after an offset conflict, the rest of the file under a new id).
    pub rewrite: Option<u64>,
    /// The keyed hash of the parts; `None` for an unkeyed (older) id.
    pub mac: Option<u128>,
}

/// The client's secret: 256 random bits, created on first start and kept
/// in the state file; keys new stream ids. Its `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdKey(pub [u8; 32]);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(..)")
    }
}

impl IdKey {
    /// 64 hex digits, as in the state file.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(h: &str) -> Option<IdKey> {
        let h = h.as_bytes();
        if h.len() != 64 {
            return None;
        }
        let mut k = [0u8; 32];
        for (i, pair) in h.chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).ok()?;
            k[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(IdKey(k))
    }
}

/// When a file was born, as far as its id is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Born {
    /// Nanoseconds since the epoch.
    At(u64),
    /// No birth time: a nonce.
    Unknown(u64),
}

impl StreamId {
    /// The id of a file first seen with `meta`; `nonce` is used where the
    /// file system records no birth time.
    pub fn new(meta: &Meta, nonce: u64) -> StreamId {
        let born = if meta.born > 0 {
            Born::At(meta.born)
        } else {
            Born::Unknown(nonce)
        };
        StreamId {
            dev: meta.dev,
            ino: meta.ino,
            born,
            rewrite: None,
            mac: None,
        }
    }

    /// The same file's new content after an in-place rewrite (unkeyed:
    /// key it again with [`StreamId::keyed`]).
    pub fn rewritten(self, nonce: u64) -> StreamId {
        StreamId {
            rewrite: Some(nonce),
            mac: None,
            ..self
        }
    }

    /// This id keyed with `key`: what goes on the wire becomes the hash.
    pub fn keyed(self, key: &IdKey) -> StreamId {
        use sha2::Digest;
        let unkeyed = StreamId { mac: None, ..self };
        let mut h = sha2::Sha256::new();
        h.update(b"loghamster stream id v1\0");
        h.update(key.0);
        h.update(unkeyed.to_string().as_bytes());
        let d = h.finalize();
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&d[..16]);
        StreamId {
            mac: Some(u128::from_be_bytes(mac)),
            ..self
        }
    }

    /// The id as the state file records it: the parts, and for a keyed id
    /// `~` and the id sent on the wire. [`FromStr`](std::str::FromStr)
    /// reads it back (and the unkeyed form alone).
    pub fn record(&self) -> String {
        let parts = StreamId { mac: None, ..*self }.to_string();
        match self.mac {
            Some(_) => format!("{parts}~{self}"),
            None => parts,
        }
    }

    /// True when this id names the original content of the file with
    /// `meta` (same device, inode and birth), not a rewrite of it.
    pub fn is_original_of(&self, meta: &Meta) -> bool {
        self.rewrite.is_none()
            && (self.dev, self.ino) == meta.inode()
            && self.born == Born::At(meta.born)
    }
}

impl std::fmt::Display for StreamId {
    /// The id on the wire.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(mac) = self.mac {
            return write!(f, "k{mac:032x}");
        }
        write!(f, "{:x}-{:x}-", self.dev, self.ino)?;
        match self.born {
            Born::At(ns) => write!(f, "{:x}.{:x}", ns / 1_000_000_000, ns % 1_000_000_000)?,
            Born::Unknown(n) => write!(f, "t{n:x}")?,
        }
        match self.rewrite {
            Some(n) => write!(f, "-t{n:x}"),
            None => Ok(()),
        }
    }
}

impl std::str::FromStr for StreamId {
    type Err = BadStreamId;

    /// Parses what [`StreamId::record`] wrote (the state file).
    fn from_str(s: &str) -> Result<StreamId, BadStreamId> {
        let (s, mac) = match s.split_once('~') {
            Some((parts, wire)) => {
                let hex = wire.strip_prefix('k').filter(|h| h.len() == 32);
                let mac = hex.and_then(|h| u128::from_str_radix(h, 16).ok());
                (parts, Some(mac.ok_or(BadStreamId)?))
            }
            None => (s, None),
        };
        let hex = |t: &str| u64::from_str_radix(t, 16).map_err(|_| BadStreamId);
        let mut parts = s.splitn(4, '-');
        let dev = hex(parts.next().ok_or(BadStreamId)?)?;
        let ino = hex(parts.next().ok_or(BadStreamId)?)?;
        let b = parts.next().ok_or(BadStreamId)?;
        let born = match b.strip_prefix('t') {
            Some(n) => Born::Unknown(hex(n)?),
            None => {
                let (secs, nanos) = b.split_once('.').ok_or(BadStreamId)?;
                let (secs, nanos) = (hex(secs)?, hex(nanos)?);
                if nanos >= 1_000_000_000 {
                    return Err(BadStreamId);
                }
                let ns = secs
                    .checked_mul(1_000_000_000)
                    .and_then(|s| s.checked_add(nanos))
                    .ok_or(BadStreamId)?;
                Born::At(ns)
            }
        };
        let rewrite = match parts.next() {
            None => None,
            Some(r) => Some(hex(r.strip_prefix('t').ok_or(BadStreamId)?)?),
        };
        Ok(StreamId {
            dev,
            ino,
            born,
            rewrite,
            mac,
        })
    }
}

/// A stream id that is not `dev-ino-born[-tN]` in hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadStreamId;

impl std::fmt::Display for BadStreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a stream id (dev-ino-born in hex)")
    }
}

fn read_head<F: Fs>(fs: &mut F, file: &F::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match fs.read_at(file, &mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::fs::Kind;

    fn meta(born: u64) -> Meta {
        Meta {
            dev: 0x801,
            ino: 0x1234,
            len: 0,
            nlink: 1,
            born,
            kind: Kind::File,
        }
    }

    #[test]
    fn the_short_fingerprint_covers_the_first_line_up_to_64_bytes() {
        assert_eq!(head_len(b""), 0);
        assert_eq!(head_len(b"abc"), 3);
        assert_eq!(head_len(b"a0\na1\n"), 3);
        assert_eq!(head_len(b"\nrest"), 1);
        assert_eq!(head_len(&[b'x'; 100]), HEAD_LEN);
        let mut long = vec![b'x'; HEAD_LEN];
        long.push(b'\n');
        assert_eq!(head_len(&long), HEAD_LEN);
        long[HEAD_LEN - 1] = b'\n';
        assert_eq!(head_len(&long), HEAD_LEN);
    }

    #[test]
    fn stream_ids_round_trip_through_their_text() {
        let a = StreamId::new(&meta(1_700_000_000_123_456_789), 7);
        assert_eq!(a.to_string(), "801-1234-6553f100.75bcd15");
        let b = a.rewritten(0xabc);
        let c = StreamId::new(&meta(0), 0x99);
        for id in [a, b, c] {
            assert_eq!(id.to_string().parse::<StreamId>(), Ok(id));
        }
        assert!(a.is_original_of(&meta(1_700_000_000_123_456_789)));
        assert!(!b.is_original_of(&meta(1_700_000_000_123_456_789)));
        for bad in [
            "",
            "1-2",
            "x-2-3.4",
            "1-2-3",
            "1-2-3.4-5",
            "1-2-3.3b9aca00",
            "1-2-3.4~k12",
            "1-2-3.4~x00000000000000000000000000000000",
        ] {
            assert_eq!(bad.parse::<StreamId>(), Err(BadStreamId), "{bad}");
        }
    }

    #[test]
    fn keyed_ids_hide_their_parts_and_round_trip_through_the_record() {
        let m = meta(1_700_000_000_123_456_789);
        let (k1, k2) = (IdKey([1; 32]), IdKey([2; 32]));
        let a = StreamId::new(&m, 7).keyed(&k1);
        let wire = a.to_string();
        assert_eq!(wire.len(), 33);
        assert!(wire.starts_with('k') && !wire.contains("1234"), "{wire}");
        assert_ne!(
            wire,
            StreamId::new(&m, 7).keyed(&k2).to_string(),
            "the key matters"
        );
        assert_eq!(
            wire,
            StreamId::new(&m, 9).keyed(&k1).to_string(),
            "stable per file"
        );
        let r = a.record();
        assert!(r.starts_with("801-1234-6553f100.75bcd15~k"), "{r}");
        assert_eq!(r.parse::<StreamId>(), Ok(a));
        let t = a.rewritten(5).keyed(&k1);
        assert_ne!(t.to_string(), wire);
        assert_eq!(t.record().parse::<StreamId>(), Ok(t));
        assert_eq!(IdKey::from_hex(&k1.to_hex()), Some(k1));
        assert_eq!(IdKey::from_hex("00"), None);
        assert_eq!(format!("{k1:?}"), "IdKey(..)");
    }
}
