//! Wire compression: push-style encoders and decoders, no I/O.
//!
//! A client that asks for compression (`compression:<codec>` in INIT, see
//! `docs/PROTOCOL.md`) sends one compressed stream per connection; the
//! server decodes it inside its single loop. Both sides therefore need
//! codecs that are *pushed* bytes as they arrive and never block waiting
//! for more, rather than `Read` adaptors over a socket:
//!
//! - [`Encoder::compress`] takes plain bytes and appends compressed bytes
//!   that decode to *all* of them (it flushes), so the server can write
//!   every complete line the client sent without waiting for more data.
//!   [`Encoder::finish`] appends the stream's end (trailer, checksum).
//! - [`Decoder::decode`] takes whatever arrived, returns how much of it it
//!   used, and appends no more plain bytes than the output buffer has
//!   room for (a caller keeps one [`DECODE_CHUNK`] buffer), so a
//!   small packet that expands a thousandfold never becomes one huge
//!   buffer. Whatever it did not use is offered again with the next call.
//!   [`Decoder::at_end`] says whether the input so far ends on a clean
//!   stream boundary (a half-close anywhere else means a cut stream).
//!
//! Offsets, ACKs and resume never see compressed bytes: the client counts
//! the plain bytes it gave the encoder, the server the plain bytes it
//! wrote. A reconnect starts a new compressed stream at the server's
//! plain offset.
//!
//! The formats are the standard ones, so hand-made clients can use the
//! usual tools: gzip (RFC 1952, through `flate2`'s zlib-rs backend), the
//! LZ4 frame format (block codec from `lz4_flex`; the frame layer is
//! parsed here, because `lz4_flex` only offers a pull-style frame reader)
//! and zstd frames (`zstd`'s streaming context).

mod gzip;
mod lz4;
mod zstd;

use std::fmt;
use std::io;

/// The room [`Decoder::decode`] makes in an output buffer that has none.
pub const DECODE_CHUNK: usize = 256 * 1024;

/// A wire codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Gzip,
    Lz4,
    Zstd,
}

impl Codec {
    /// Every codec, in the order their names are listed.
    pub const ALL: [Codec; 3] = [Codec::Gzip, Codec::Lz4, Codec::Zstd];

    /// The codec's name on the wire and in config files.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// The codec with this wire name.
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The levels the codec accepts (`None`: it has no levels).
    pub fn levels(self) -> Option<std::ops::RangeInclusive<i32>> {
        match self {
            Codec::Gzip => Some(1..=9),
            Codec::Lz4 => None,
            Codec::Zstd => Some(1..=19),
        }
    }

    /// The level used when none is configured.
    pub fn default_level(self) -> Option<i32> {
        match self {
            Codec::Gzip => Some(6),
            Codec::Lz4 => None,
            Codec::Zstd => Some(3),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compressed stream that cannot be decoded: its codec and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub codec: Codec,
    pub what: String,
}

impl DecodeError {
    fn new(codec: Codec, what: impl Into<String>) -> DecodeError {
        DecodeError {
            codec,
            what: what.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} stream: {}", self.codec, self.what)
    }
}

impl std::error::Error for DecodeError {}

/// A push-style compressor for one connection's stream.
pub struct Encoder {
    inner: EncoderKind,
}

enum EncoderKind {
    Gzip(gzip::Encoder),
    Lz4(lz4::Encoder),
    Zstd(zstd::Encoder),
}

impl Encoder {
    /// An encoder for `codec` at `level` (the codec's default when `None`;
    /// ignored by codecs without levels).
    pub fn new(codec: Codec, level: Option<i32>) -> io::Result<Encoder> {
        let level = level.or(codec.default_level()).unwrap_or(0);
        let inner = match codec {
            Codec::Gzip => EncoderKind::Gzip(gzip::Encoder::new(level)),
            Codec::Lz4 => EncoderKind::Lz4(lz4::Encoder::new()),
            Codec::Zstd => EncoderKind::Zstd(zstd::Encoder::new(level)?),
        };
        Ok(Encoder { inner })
    }

    /// Compresses all of `data` and flushes: appends to `out` bytes from
    /// which the peer can decode every byte of `data`.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.inner {
            EncoderKind::Gzip(e) => e.compress(data, out),
            EncoderKind::Lz4(e) => e.compress(data, out),
            EncoderKind::Zstd(e) => e.compress(data, out),
        }
    }

    /// Appends the end of the stream to `out`; call once, after the last
    /// [`compress`](Self::compress).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.inner {
            EncoderKind::Gzip(e) => e.finish(out),
            EncoderKind::Lz4(e) => e.finish(out),
            EncoderKind::Zstd(e) => e.finish(out),
        }
    }
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codec = match self.inner {
            EncoderKind::Gzip(_) => Codec::Gzip,
            EncoderKind::Lz4(_) => Codec::Lz4,
            EncoderKind::Zstd(_) => Codec::Zstd,
        };
        f.debug_struct("Encoder").field("codec", &codec).finish()
    }
}

/// A push-style decompressor for one connection's stream. Several
/// complete streams back to back (gzip members, LZ4 or zstd frames) decode
/// as their concatenation.
pub struct Decoder {
    inner: DecoderKind,
}

enum DecoderKind {
    Gzip(gzip::Decoder),
    Lz4(lz4::Decoder),
    Zstd(zstd::Decoder),
}

impl Decoder {
    pub fn new(codec: Codec) -> io::Result<Decoder> {
        let inner = match codec {
            Codec::Gzip => DecoderKind::Gzip(gzip::Decoder::new()),
            Codec::Lz4 => DecoderKind::Lz4(lz4::Decoder::new()),
            Codec::Zstd => DecoderKind::Zstd(zstd::Decoder::new()?),
        };
        Ok(Decoder { inner })
    }

    pub fn codec(&self) -> Codec {
        match self.inner {
            DecoderKind::Gzip(_) => Codec::Gzip,
            DecoderKind::Lz4(_) => Codec::Lz4,
            DecoderKind::Zstd(_) => Codec::Zstd,
        }
    }

    /// Decodes a prefix of `input`, appending plain bytes to `out` but no
    /// more than its spare capacity (it reserves [`DECODE_CHUNK`] when
    /// there is none); returns how many input bytes it used.
    ///
    /// Call again (with the unused input, or with none) while it appends
    /// anything: decoded bytes may wait inside the decoder. When a call
    /// appends nothing, all of `input` was used and more is needed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        let before = out.len();
        if out.capacity() == before {
            out.reserve(DECODE_CHUNK);
        }
        let used = match &mut self.inner {
            DecoderKind::Gzip(d) => d.decode(input, out),
            DecoderKind::Lz4(d) => d.decode(input, out),
            DecoderKind::Zstd(d) => d.decode(input, out),
        }?;
        if out.len() == before && used < input.len() {
            // The promise above: no output means all input was taken.
            return Err(DecodeError::new(
                self.codec(),
                "the decoder made no progress",
            ));
        }
        Ok(used)
    }

    /// Bytes this decoder holds now (its window and buffers), for a
    /// server's budget of decoder memory. A zstd decoder grows when a
    /// frame header asks for a larger window; an LZ4 one with its block
    /// size.
    pub fn memory(&self) -> usize {
        match &self.inner {
            DecoderKind::Gzip(d) => d.memory(),
            DecoderKind::Lz4(d) => d.memory(),
            DecoderKind::Zstd(d) => d.memory(),
        }
    }

    /// True when the input so far ends exactly after a complete stream
    /// (or is empty): the sender may stop here.
    pub fn at_end(&self) -> bool {
        match &self.inner {
            DecoderKind::Gzip(d) => d.at_end(),
            DecoderKind::Lz4(d) => d.at_end(),
            DecoderKind::Zstd(d) => d.at_end(),
        }
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("codec", &self.codec())
            .field("at_end", &self.at_end())
            .finish()
    }
}

/// Checks the codecs against `data` and panics if an invariant breaks.
/// The first byte picks the codec and a split size; the rest is both
/// decoded as a (most likely broken) compressed stream and compressed.
///
/// - Decoding never panics, and gives the same bytes and the same
///   verdict whether the input comes in one piece or in small pieces,
///   with a tiny output buffer or a big one (before an error, one may
///   have decoded further than the other).
/// - Compressing the rest in two sends, then finishing, decodes back to
///   it, and the decoder is at the stream's end.
///
/// Used by the fuzz target (`fuzz/fuzz_targets/decode.rs`) and by
/// `tests/fuzz_corpus.rs`.
pub fn check_invariants(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let codec = Codec::ALL[usize::from(first) % Codec::ALL.len()];
    let piece = 1 + usize::from(first >> 2);
    let (a, whole) = decode_pieces(codec, rest, rest.len().max(1), DECODE_CHUNK);
    let (b, split) = decode_pieces(codec, rest, piece, 7);
    match (&whole, &split) {
        (Ok(x), Ok(y)) => {
            assert_eq!(x, y, "{codec}: split at {piece} ends differently");
            assert!(a == b, "{codec}: split at {piece} decodes differently");
        }
        (Err(_), Err(_)) => {
            // How much output precedes an error may depend on the split.
            let n = a.len().min(b.len());
            assert!(
                a[..n] == b[..n],
                "{codec}: split at {piece} decodes differently"
            );
        }
        _ => panic!("{codec}: split at {piece}: {whole:?} in one piece, {split:?} split"),
    }

    let mut enc = Encoder::new(codec, None).expect("encoder");
    let mut wire = Vec::new();
    let (a, b) = rest.split_at(rest.len() / 2);
    enc.compress(a, &mut wire).expect("compress");
    enc.compress(b, &mut wire).expect("compress");
    enc.finish(&mut wire).expect("finish");
    let (plain, verdict) = decode_pieces(codec, &wire, piece, 7);
    assert_eq!(
        verdict,
        Ok(true),
        "{codec}: own stream did not decode to its end"
    );
    assert!(plain == rest, "{codec}: round trip changed the bytes");
}

/// Decodes `wire` in pieces of `piece` bytes with `room` bytes of output
/// buffer: the plain bytes, and the error or whether it ended cleanly.
fn decode_pieces(
    codec: Codec,
    wire: &[u8],
    piece: usize,
    room: usize,
) -> (Vec<u8>, Result<bool, String>) {
    let mut d = Decoder::new(codec).expect("decoder");
    let mut plain = Vec::new();
    let mut out = Vec::with_capacity(room);
    for chunk in wire.chunks(piece) {
        let mut rest = chunk;
        loop {
            out.clear();
            match d.decode(rest, &mut out) {
                Ok(used) => rest = &rest[used..],
                Err(e) => return (plain, Err(e.to_string())),
            }
            plain.extend_from_slice(&out);
            if out.is_empty() {
                break;
            }
        }
    }
    (plain, Ok(d.at_end()))
}

#[cfg(test)]
mod tests;
