//! zstd frames through the `zstd` crate's streaming contexts, which are
//! push-style already (`ZSTD_compressStream2` / `ZSTD_decompressStream`).
//!
//! Memory is per connection on both ends, so the window is small: the
//! encoder uses a 128 KiB window ([`WINDOW_LOG`]; on log lines the ratio
//! moved from 0.194 to 0.196 against zstd's default 2 MiB at level 3, and
//! the contexts shrank from 3.5 MiB to 1.6 MiB on the client and from
//! 2.5 MiB to 0.6 MiB on the server). The decoder accepts windows up to
//! 8 MiB ([`WINDOW_LOG_MAX`]), which covers the `zstd` tool's defaults, so
//! a peer cannot make the server allocate zstd's own limit of 128 MiB per
//! connection.

use std::io;

use zstd::stream::raw::{self, InBuffer, Operation, OutBuffer};

use super::{Codec, DecodeError};

/// Room reserved per step; zstd's own recommended output size is ~128 KiB.
const STEP: usize = 128 * 1024;
/// The encoder's window: 2^17 = 128 KiB.
pub const WINDOW_LOG: u32 = 17;
/// The largest window a decoder accepts: 2^23 = 8 MiB.
pub const WINDOW_LOG_MAX: u32 = 23;

pub struct Encoder {
    z: raw::Encoder<'static>,
}

impl Encoder {
    pub fn new(level: i32) -> io::Result<Encoder> {
        let mut z = raw::Encoder::new(level)?;
        z.set_parameter(raw::CParameter::WindowLog(WINDOW_LOG))?;
        Ok(Encoder { z })
    }

    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mut input = InBuffer::around(data);
        while input.pos() < data.len() {
            out.reserve(STEP);
            let pos = out.len();
            self.z
                .run(&mut input, &mut OutBuffer::around_pos(out, pos))?;
        }
        // Flush: everything given so far becomes decodable.
        loop {
            out.reserve(STEP);
            let pos = out.len();
            if self.z.flush(&mut OutBuffer::around_pos(out, pos))? == 0 {
                return Ok(());
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            out.reserve(STEP);
            let pos = out.len();
            if self.z.finish(&mut OutBuffer::around_pos(out, pos), true)? == 0 {
                return Ok(());
            }
        }
    }
}

pub struct Decoder {
    /// The context itself rather than `raw::Decoder`, so its memory can be
    /// measured ([`memory`](Self::memory)).
    z: zstd::zstd_safe::DCtx<'static>,
    /// The input so far ends exactly after a complete frame.
    at_end: bool,
}

impl Decoder {
    pub fn new() -> io::Result<Decoder> {
        let mut z = zstd::zstd_safe::DCtx::try_create()
            .ok_or_else(|| io::Error::other("zstd: cannot create a decoding context"))?;
        z.set_parameter(raw::DParameter::WindowLogMax(WINDOW_LOG_MAX))
            .map_err(|code| io::Error::other(zstd::zstd_safe::get_error_name(code)))?;
        Ok(Decoder { z, at_end: true })
    }

    pub fn decode(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        let mut input = InBuffer::around(data);
        while out.len() < out.capacity() {
            let (in0, out0) = (input.pos(), out.len());
            let pos = out.len();
            let hint = self
                .z
                .decompress_stream(&mut OutBuffer::around_pos(out, pos), &mut input)
                .map_err(|code| {
                    DecodeError::new(Codec::Zstd, zstd::zstd_safe::get_error_name(code))
                })?;
            if input.pos() == in0 && out.len() == out0 {
                break;
            }
            // 0: a frame is complete and all of it is flushed out. (A call
            // that moved nothing says nothing about where we stand.)
            self.at_end = hint == 0;
        }
        Ok(input.pos())
    }

    pub fn at_end(&self) -> bool {
        self.at_end
    }

    /// Bytes the context holds: mostly the window, which a frame header
    /// sizes (up to [`WINDOW_LOG_MAX`]).
    pub fn memory(&self) -> usize {
        self.z.sizeof()
    }
}
