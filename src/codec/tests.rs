//! Round trips through every codec, fed in every way a socket can split
//! the bytes, plus the refusals a decoder owes a broken stream.

use super::*;

/// Log-like input: lines with some repetition and some noise.
fn sample(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut n = 0u64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        n += 1;
        let line = format!(
            "2026-11-25T18:{:02}:{:02}Z host=web{} level={} msg=\"request {n} took {}ms\"\n",
            n / 60 % 60,
            n % 60,
            x % 7,
            ["info", "warn", "debug"][(x % 3) as usize],
            x % 1000
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

/// Feeds `input` to `d` until it takes no more, appending what decodes
/// to `plain`; `out` is the decoder's output buffer (its capacity is the
/// room each step gets).
fn feed(
    d: &mut Decoder,
    input: &[u8],
    out: &mut Vec<u8>,
    plain: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut rest = input;
    loop {
        out.clear();
        let used = d.decode(rest, out)?;
        rest = &rest[used..];
        plain.extend_from_slice(out);
        if out.is_empty() {
            assert!(rest.is_empty(), "no output but input left");
            return Ok(());
        }
    }
}

/// Decodes `wire` fed in pieces of `piece` bytes; output buffer capacity
/// `room` (0: let the decoder reserve).
fn decode_all(
    codec: Codec,
    wire: &[u8],
    piece: usize,
    room: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut d = Decoder::new(codec).unwrap();
    let mut plain = Vec::new();
    let mut out = Vec::with_capacity(room);
    for chunk in wire.chunks(piece.max(1)) {
        feed(&mut d, chunk, &mut out, &mut plain)?;
    }
    assert!(
        d.at_end(),
        "{codec}: not at a stream boundary after the whole stream"
    );
    Ok(plain)
}

fn encode(codec: Codec, sends: &[&[u8]]) -> Vec<u8> {
    let mut e = Encoder::new(codec, None).unwrap();
    let mut wire = Vec::new();
    for s in sends {
        e.compress(s, &mut wire).unwrap();
    }
    e.finish(&mut wire).unwrap();
    wire
}

#[test]
fn every_codec_round_trips_whatever_the_split() {
    let data = sample(300_000);
    for codec in Codec::ALL {
        let sends: Vec<&[u8]> = data.chunks(70_001).collect();
        let wire = encode(codec, &sends);
        assert!(wire.len() < data.len() / 2, "{codec}: {} bytes", wire.len());
        for piece in [1, 7, 4096, 65_536, wire.len()] {
            for room in [0, 1, 100, 1 << 20] {
                if piece == 1 && room == 1 {
                    continue; // slow and adds nothing over piece 1 alone
                }
                let got = decode_all(codec, &wire, piece, room).unwrap();
                assert!(got == data, "{codec}: piece {piece}, room {room}");
            }
        }
    }
}

#[test]
fn a_flushed_send_decodes_before_the_stream_ends() {
    for codec in Codec::ALL {
        let mut e = Encoder::new(codec, None).unwrap();
        let mut d = Decoder::new(codec).unwrap();
        for i in 0..50 {
            let line = format!("line {i} of a slow trickle\n");
            let mut wire = Vec::new();
            e.compress(line.as_bytes(), &mut wire).unwrap();
            let mut got = Vec::new();
            feed(&mut d, &wire, &mut Vec::new(), &mut got).unwrap();
            assert_eq!(got, line.as_bytes(), "{codec}: send {i}");
            assert!(!d.at_end(), "{codec}: a flushed stream is still open");
        }
        let mut wire = Vec::new();
        e.finish(&mut wire).unwrap();
        let mut out = Vec::new();
        assert_eq!(d.decode(&wire, &mut out).unwrap(), wire.len());
        assert!(out.is_empty());
        assert!(d.at_end(), "{codec}: the trailer ends the stream");
    }
}

#[test]
fn empty_and_concatenated_streams() {
    for codec in Codec::ALL {
        assert_eq!(decode_all(codec, &encode(codec, &[]), 3, 0).unwrap(), b"");
        let mut wire = encode(codec, &[b"one\n"]);
        wire.extend(encode(codec, &[b"two\n", b""]));
        assert_eq!(decode_all(codec, &wire, 5, 0).unwrap(), b"one\ntwo\n");
    }
}

#[test]
fn a_cut_stream_is_not_at_its_end() {
    let data = sample(10_000);
    for codec in Codec::ALL {
        let wire = encode(codec, &[&data]);
        let mut d = Decoder::new(codec).unwrap();
        assert!(d.at_end(), "{codec}: an empty stream may end");
        feed(
            &mut d,
            &wire[..wire.len() - 3],
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .unwrap();
        assert!(!d.at_end(), "{codec}: cut 3 bytes before its end");
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let data = sample(20_000);
    for codec in Codec::ALL {
        let mut d = Decoder::new(codec).unwrap();
        let mut out = Vec::new();
        let err = d.decode(b"this is not compressed at all\n", &mut out);
        assert!(err.is_err(), "{codec} took plain text");
        assert!(err.unwrap_err().to_string().contains(codec.name()));
        // Flipped bytes inside a valid stream: an error or different
        // bytes, never a panic (checksummed formats must notice).
        let wire = encode(codec, &[&data]);
        for at in [wire.len() / 3, wire.len() / 2, wire.len() - 2] {
            let mut bad = wire.clone();
            bad[at] ^= 0x5a;
            match decode_all_lenient(codec, &bad) {
                Ok(got) if codec == Codec::Gzip => {
                    assert_ne!(got, data, "{codec}: CRC missed a flip at {at}")
                }
                _ => {}
            }
        }
    }
}

/// Like [`decode_all`] in one piece, without the end-of-stream assertion.
fn decode_all_lenient(codec: Codec, wire: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut d = Decoder::new(codec).unwrap();
    let mut plain = Vec::new();
    feed(&mut d, wire, &mut Vec::new(), &mut plain)?;
    Ok(plain)
}

#[test]
fn lz4_frames_from_other_encoders_decode() {
    // Independent 4 MiB blocks with block and content checksums and a
    // content size, as other LZ4 tools write them.
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    use std::io::Write;
    let data = sample(5_000_000);
    for (mode, size) in [
        (BlockMode::Independent, BlockSize::Max4MB),
        (BlockMode::Linked, BlockSize::Max256KB),
        (BlockMode::Independent, BlockSize::Max64KB),
    ] {
        let info = FrameInfo::new()
            .block_mode(mode)
            .block_size(size)
            .block_checksums(true)
            .content_checksum(true)
            .content_size(Some(data.len() as u64));
        let mut e = FrameEncoder::with_frame_info(info, Vec::new());
        e.write_all(&data).unwrap();
        let wire = e.finish().unwrap();
        assert!(decode_all(Codec::Lz4, &wire, 100_000, 0).unwrap() == data);
        let mut bad = wire.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1; // the content checksum
        let err = decode_all_lenient(Codec::Lz4, &bad).unwrap_err();
        assert!(err.what.contains("checksum"), "{err}");
    }
}

#[test]
fn lz4_skippable_frames_are_skipped() {
    let mut wire = vec![0x5a, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 1, 2, 3, 4, 5];
    wire.extend(encode(Codec::Lz4, &[b"after the skippable frame\n"]));
    for piece in [1, 3, 100] {
        let got = decode_all(Codec::Lz4, &wire, piece, 0).unwrap();
        assert_eq!(got, b"after the skippable frame\n");
    }
}

#[test]
fn a_zstd_window_over_8_mib_is_refused() {
    use ::zstd::stream::raw::{CParameter, Encoder as Raw, InBuffer, Operation, OutBuffer};
    let mut z = Raw::new(3).unwrap();
    z.set_parameter(CParameter::WindowLog(24)).unwrap();
    let mut wire = Vec::with_capacity(1 << 16);
    let data = sample(10_000);
    let mut input = InBuffer::around(&data);
    while input.pos() < data.len() {
        let pos = wire.len();
        z.run(&mut input, &mut OutBuffer::around_pos(&mut wire, pos))
            .unwrap();
    }
    loop {
        let pos = wire.len();
        if z.finish(&mut OutBuffer::around_pos(&mut wire, pos), true)
            .unwrap()
            == 0
        {
            break;
        }
    }
    let err = decode_all_lenient(Codec::Zstd, &wire).unwrap_err();
    assert!(err.to_string().contains("too much memory"), "{err}");
    // Our own encoder's window is small enough for any server.
    assert_eq!(
        decode_all(Codec::Zstd, &encode(Codec::Zstd, &[&data]), 999, 0).unwrap(),
        data
    );
}

#[test]
fn levels_and_names() {
    for codec in Codec::ALL {
        assert_eq!(Codec::from_name(codec.name()), Some(codec));
        if let Some(levels) = codec.levels() {
            for level in [*levels.start(), *levels.end()] {
                let mut e = Encoder::new(codec, Some(level)).unwrap();
                let mut wire = Vec::new();
                e.compress(b"x\n", &mut wire).unwrap();
                e.finish(&mut wire).unwrap();
                assert_eq!(decode_all(codec, &wire, 2, 0).unwrap(), b"x\n");
            }
        }
    }
    assert_eq!(Codec::from_name("brotli"), None);
}

mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    /// 200 cases, or `CODEC_CASES` (for a longer hunt).
    fn cases() -> u32 {
        std::env::var("CODEC_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn random_bytes_hold_the_invariants(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            check_invariants(&data);
        }

        /// Valid streams with a few bytes flipped: deep inside the
        /// decoders, where random bytes rarely get.
        #[test]
        fn flipped_streams_hold_the_invariants(
            pick in any::<u8>(),
            flips in proptest::collection::vec((any::<usize>(), 1u8..), 1..4),
        ) {
            let codec = Codec::ALL[usize::from(pick) % Codec::ALL.len()];
            let mut wire = encode(codec, &[&sample(4000)]);
            for (at, x) in flips {
                let i = at % wire.len();
                wire[i] ^= x;
            }
            let mut data = vec![pick];
            data.extend_from_slice(&wire);
            check_invariants(&data);
        }
    }
}
