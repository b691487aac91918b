//! gzip (RFC 1952) through `flate2`'s zlib-rs backend, which handles the
//! gzip header and trailer in its push-style `Compress`/`Decompress`.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{Codec, DecodeError};

/// zlib's largest window (32 KiB), the one `gzip` itself uses.
const WINDOW_BITS: u8 = 15;

pub struct Encoder {
    z: Compress,
}

impl Encoder {
    pub fn new(level: i32) -> Encoder {
        let level = Compression::new(level.clamp(0, 9) as u32);
        Encoder {
            z: Compress::new_gzip(level, WINDOW_BITS),
        }
    }

    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.run(data, out, FlushCompress::Sync)
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.run(&[], out, FlushCompress::Finish)
    }

    /// Feeds all of `data` with `flush`, growing `out` until zlib leaves
    /// room in it (its sign that the flush is complete).
    fn run(&mut self, mut data: &[u8], out: &mut Vec<u8>, flush: FlushCompress) -> io::Result<()> {
        loop {
            out.reserve(data.len() / 2 + 256);
            let before = self.z.total_in();
            let status = self
                .z
                .compress_vec(data, out, flush)
                .map_err(io::Error::other)?;
            data = &data[(self.z.total_in() - before) as usize..];
            let done = match status {
                Status::StreamEnd => true,
                Status::Ok | Status::BufError => data.is_empty() && out.len() < out.capacity(),
            };
            if done {
                return Ok(());
            }
        }
    }
}

pub struct Decoder {
    z: Decompress,
    /// Inside a gzip member (header seen, trailer not yet).
    in_member: bool,
}

impl Decoder {
    /// Bytes the decoder holds: zlib's inflate state and its 32 KiB window
    /// (fixed; zlib-rs does not report it, so this is its documented size
    /// rounded up).
    pub fn memory(&self) -> usize {
        48 * 1024
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            z: Decompress::new_gzip(WINDOW_BITS),
            in_member: false,
        }
    }

    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        let mut used = 0;
        while out.len() < out.capacity() {
            let rest = &input[used..];
            if rest.is_empty() && !self.in_member {
                break;
            }
            if !self.in_member {
                // A new member (the first, or one after a complete one).
                self.z = Decompress::new_gzip(WINDOW_BITS);
                self.in_member = true;
            }
            let (in0, out0) = (self.z.total_in(), out.len());
            let status = self
                .z
                .decompress_vec(rest, out, FlushDecompress::None)
                .map_err(|e| DecodeError::new(Codec::Gzip, e.to_string()))?;
            used += (self.z.total_in() - in0) as usize;
            match status {
                Status::StreamEnd => self.in_member = false,
                _ if self.z.total_in() == in0 && out.len() == out0 => break,
                _ => {}
            }
        }
        Ok(used)
    }

    pub fn at_end(&self) -> bool {
        !self.in_member
    }
}
