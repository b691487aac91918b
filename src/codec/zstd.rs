//! zstd frames through the `zstd` crate's streaming contexts, which are
//! push-style already (`ZSTD_compressStream2` / `ZSTD_decompressStream`).

use std::io;

use zstd::stream::raw::{self, InBuffer, Operation, OutBuffer};

use super::{Codec, DecodeError};

/// Room reserved per step; zstd's own recommended output size is ~128 KiB.
const STEP: usize = 128 * 1024;

pub struct Encoder {
    z: raw::Encoder<'static>,
}

impl Encoder {
    pub fn new(level: i32) -> io::Result<Encoder> {
        Ok(Encoder {
            z: raw::Encoder::new(level)?,
        })
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
    z: raw::Decoder<'static>,
    /// The input so far ends exactly after a complete frame.
    at_end: bool,
}

impl Decoder {
    pub fn new() -> io::Result<Decoder> {
        Ok(Decoder {
            z: raw::Decoder::new()?,
            at_end: true,
        })
    }

    pub fn decode(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        let mut input = InBuffer::around(data);
        while out.len() < out.capacity() {
            let (in0, out0) = (input.pos(), out.len());
            let pos = out.len();
            let hint = self
                .z
                .run(&mut input, &mut OutBuffer::around_pos(out, pos))
                .map_err(|e| DecodeError::new(Codec::Zstd, e.to_string()))?;
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
}
