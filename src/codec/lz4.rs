//! The LZ4 frame format (lz4 spec `lz4_Frame_format.md`, v1.6.x).
//!
//! Encoding uses `lz4_flex`'s `FrameEncoder` writing into a `Vec`, which
//! is push-style already: each [`Encoder::compress`] ends with a block.
//! `lz4_flex` decodes frames only through a pull-style `Read` adaptor, so
//! the frame layer is parsed here, as a state machine over the bytes that
//! arrived, and each complete block is decoded with `lz4_flex::block`.
//!
//! Accepted: block sizes 64 KiB to 4 MiB, independent or linked blocks,
//! block and content checksums (verified), the content size field,
//! skippable frames (skipped). Refused: dictionary ids and the legacy
//! format. A stream announcing 4 MiB blocks costs the decoder up to two
//! such buffers while it runs.

use std::hash::Hasher;
use std::io::{self, Write};

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use twox_hash::XxHash32;

use super::{Codec, DecodeError};

const MAGIC: u32 = 0x184D_2204;
const LEGACY_MAGIC: u32 = 0x184C_2102;
const SKIPPABLE: std::ops::RangeInclusive<u32> = 0x184D_2A50..=0x184D_2A5F;
/// How much earlier output a linked block may refer to.
const WINDOW: usize = 64 * 1024;

const FLG_VERSION: u8 = 0b1100_0000;
const FLG_INDEPENDENT: u8 = 0b0010_0000;
const FLG_BLOCK_CHECKSUM: u8 = 0b0001_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
const FLG_RESERVED: u8 = 0b0000_0010;
const FLG_DICT_ID: u8 = 0b0000_0001;
const UNCOMPRESSED_BIT: u32 = 0x8000_0000;

pub struct Encoder {
    z: FrameEncoder<Vec<u8>>,
}

impl Encoder {
    pub fn new() -> Encoder {
        // Linked 64 KiB blocks: small flushed blocks still refer to what
        // came before, which keeps the ratio up for a slow trickle.
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Linked);
        Encoder {
            z: FrameEncoder::with_frame_info(info, Vec::new()),
        }
    }

    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.z.write_all(data)?;
        self.z.flush()?;
        out.append(self.z.get_mut());
        Ok(())
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.z.try_finish().map_err(io::Error::other)?;
        out.append(self.z.get_mut());
        Ok(())
    }
}

/// What the decoder expects next. Each state but `Skip` needs a fixed
/// number of bytes ([`Decoder::need`]), gathered whole before it acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Magic,
    /// The frame descriptor's flag byte.
    Flags,
    /// The rest of the descriptor: BD, optional fields, header checksum.
    Descriptor {
        flg: u8,
        len: usize,
    },
    SkipSize,
    Skip {
        left: u64,
    },
    BlockSize,
    Block {
        size: usize,
        compressed: bool,
    },
    ContentChecksum,
}

/// The current frame's settings.
#[derive(Debug, Clone, Copy, Default)]
struct Frame {
    block_max: usize,
    linked: bool,
    block_checksum: bool,
    content_checksum: bool,
}

pub struct Decoder {
    state: State,
    frame: Frame,
    content: XxHash32,
    /// Bytes of the current unit when it spans calls (empty otherwise).
    acc: Vec<u8>,
    /// The last decoded block: `block[..block_len]`, handed out from `taken`.
    block: Vec<u8>,
    block_len: usize,
    taken: usize,
    /// The last [`WINDOW`] bytes of output before the current block, for
    /// linked blocks.
    window: Vec<u8>,
}

impl Decoder {
    /// Bytes the decoder holds: its buffers (a block and its compressed
    /// bytes at most the frame's block size, 4 MiB, plus the window).
    pub fn memory(&self) -> usize {
        std::mem::size_of::<Decoder>()
            + self.acc.capacity()
            + self.block.capacity()
            + self.window.capacity()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            state: State::Magic,
            frame: Frame::default(),
            content: XxHash32::with_seed(0),
            acc: Vec::new(),
            block: Vec::new(),
            block_len: 0,
            taken: 0,
            window: Vec::new(),
        }
    }

    pub fn at_end(&self) -> bool {
        self.state == State::Magic && self.acc.is_empty()
    }

    /// Bytes the current state needs before it can act.
    fn need(&self) -> usize {
        match self.state {
            State::Magic | State::SkipSize | State::BlockSize | State::ContentChecksum => 4,
            State::Flags => 1,
            State::Descriptor { len, .. } => len,
            State::Skip { left } => left.min(usize::MAX as u64) as usize,
            State::Block { size, .. } => size + if self.frame.block_checksum { 4 } else { 0 },
        }
    }

    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        let mut used = 0;
        loop {
            if self.taken < self.block_len {
                let room = out.capacity() - out.len();
                let n = room.min(self.block_len - self.taken);
                out.extend_from_slice(&self.block[self.taken..self.taken + n]);
                self.taken += n;
                if self.taken < self.block_len {
                    return Ok(used);
                }
            }
            let rest = &input[used..];
            if let State::Skip { left } = self.state {
                let n = left.min(rest.len() as u64);
                used += n as usize;
                self.state = match left - n {
                    0 => State::Magic,
                    left => State::Skip { left },
                };
                if rest.is_empty() {
                    return Ok(used);
                }
                continue;
            }
            let need = self.need();
            if self.acc.is_empty() && rest.len() >= need {
                used += need;
                self.step(&rest[..need])?;
                continue;
            }
            let n = (need - self.acc.len()).min(rest.len());
            self.acc.extend_from_slice(&rest[..n]);
            used += n;
            if self.acc.len() < need {
                return Ok(used);
            }
            let unit = std::mem::take(&mut self.acc);
            let result = self.step(&unit);
            self.acc = unit;
            self.acc.clear();
            result?;
        }
    }

    /// Acts on one complete unit of the current state.
    fn step(&mut self, unit: &[u8]) -> Result<(), DecodeError> {
        let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        self.state = match self.state {
            State::Magic => match le32(unit) {
                MAGIC => State::Flags,
                m if SKIPPABLE.contains(&m) => State::SkipSize,
                LEGACY_MAGIC => return Err(bad("the legacy LZ4 format is not supported")),
                m => return Err(bad(format!("not an LZ4 frame (magic number {m:#010x})"))),
            },
            State::SkipSize => match le32(unit) {
                0 => State::Magic,
                n => State::Skip { left: n.into() },
            },
            State::Flags => {
                let flg = unit[0];
                if flg & FLG_VERSION != 0b0100_0000 || flg & FLG_RESERVED != 0 {
                    return Err(bad(format!("unsupported frame flags {flg:#04x}")));
                }
                if flg & FLG_DICT_ID != 0 {
                    return Err(bad("frames that need a dictionary are not supported"));
                }
                let csize = if flg & FLG_CONTENT_SIZE != 0 { 8 } else { 0 };
                State::Descriptor {
                    flg,
                    len: 2 + csize,
                }
            }
            State::Descriptor { flg, len } => {
                let mut h = XxHash32::with_seed(0);
                h.write(&[flg]);
                h.write(&unit[..len - 1]);
                if (h.finish_32() >> 8) as u8 != unit[len - 1] {
                    return Err(bad("frame header checksum mismatch"));
                }
                let bd = unit[0];
                let block_max = match (bd >> 4) & 0b111 {
                    4 => 64 << 10,
                    5 => 256 << 10,
                    6 => 1 << 20,
                    7 => 4 << 20,
                    _ => return Err(bad(format!("unsupported block size byte {bd:#04x}"))),
                };
                if bd & 0b1000_1111 != 0 {
                    return Err(bad(format!("unsupported block size byte {bd:#04x}")));
                }
                self.frame = Frame {
                    block_max,
                    linked: flg & FLG_INDEPENDENT == 0,
                    block_checksum: flg & FLG_BLOCK_CHECKSUM != 0,
                    content_checksum: flg & FLG_CONTENT_CHECKSUM != 0,
                };
                self.content = XxHash32::with_seed(0);
                self.window.clear();
                self.block_len = 0;
                self.taken = 0;
                State::BlockSize
            }
            State::BlockSize => match le32(unit) {
                0 if self.frame.content_checksum => State::ContentChecksum,
                0 => State::Magic,
                v => {
                    let size = (v & !UNCOMPRESSED_BIT) as usize;
                    if size > self.frame.block_max {
                        return Err(bad(format!(
                            "block of {size} bytes in a frame of {} byte blocks",
                            self.frame.block_max
                        )));
                    }
                    State::Block {
                        size,
                        compressed: v & UNCOMPRESSED_BIT == 0,
                    }
                }
            },
            State::Block { size, compressed } => {
                let data = &unit[..size];
                if self.frame.block_checksum && XxHash32::oneshot(0, data) != le32(&unit[size..]) {
                    return Err(bad("block checksum mismatch"));
                }
                self.decode_block(data, compressed)?;
                State::BlockSize
            }
            State::ContentChecksum => {
                if self.content.finish_32() != le32(unit) {
                    return Err(bad("content checksum mismatch"));
                }
                State::Magic
            }
            State::Skip { .. } => unreachable!("skipped bytes are not gathered"),
        };
        Ok(())
    }

    /// Decodes one block into `block`, to be handed out from its start.
    fn decode_block(&mut self, data: &[u8], compressed: bool) -> Result<(), DecodeError> {
        if self.frame.linked && self.block_len > 0 {
            // The previous block becomes history for this one.
            self.window.extend_from_slice(&self.block[..self.block_len]);
            let excess = self.window.len().saturating_sub(WINDOW);
            self.window.drain(..excess);
        }
        if self.block.len() < self.frame.block_max {
            self.block.resize(self.frame.block_max, 0);
        }
        let n = if !compressed {
            self.block[..data.len()].copy_from_slice(data);
            data.len()
        } else if self.frame.linked {
            lz4_flex::block::decompress_into_with_dict(data, &mut self.block, &self.window)
                .map_err(|e| bad(e.to_string()))?
        } else {
            lz4_flex::block::decompress_into(data, &mut self.block)
                .map_err(|e| bad(e.to_string()))?
        };
        self.block_len = n;
        self.taken = 0;
        if self.frame.content_checksum {
            self.content.write(&self.block[..n]);
        }
        Ok(())
    }
}

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError::new(Codec::Lz4, what)
}
