//! Wire compression: `cargo bench --bench codec`.
//!
//! The client's encoder and the server's decoder (`loghamster::codec`) on
//! 4 MiB of realistic log lines (`loglines`), for gzip at levels 1 and 6
//! (its default), LZ4, and zstd at levels 1 and 3 (its default):
//! - `codec/encode/*`: a new `Encoder`, `Encoder::compress` on each 64 KiB
//!   send (every call flushes, as the client's do), then
//!   `Encoder::finish`; the output buffer is emptied after each send, as
//!   the socket would take it;
//! - `codec/decode/*`: a new `Decoder`, `Decoder::decode` of that
//!   encoder's stream, fed in
//!   64 KiB socket-sized reads, into one reused [`DECODE_CHUNK`] buffer
//!   (the server's loop: decode until a call appends nothing).
//!
//! Throughput is plain bytes per second both ways. The compression ratio
//! (wire / plain) of each codec on the same data is printed once before
//! the measurements. Samples are few and flat (one pass over the data
//! each) so the whole bench takes about a minute.

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use loghamster::codec::{Codec, Decoder, Encoder, DECODE_CHUNK};

mod loglines;

/// Plain bytes per `compress` call, and compressed bytes per socket read.
const SEND: usize = 64 << 10;
const DATA: usize = 4 << 20;

/// The codecs and levels measured: (label, codec, level).
const CASES: [(&str, Codec, Option<i32>); 5] = [
    ("gzip-1", Codec::Gzip, Some(1)),
    ("gzip-6", Codec::Gzip, None),
    ("lz4", Codec::Lz4, None),
    ("zstd-1", Codec::Zstd, Some(1)),
    ("zstd-3", Codec::Zstd, None),
];

/// Compresses `plain` in [`SEND`]-byte sends, handing each send's output
/// to `sink` (and the stream's end after the last); returns the wire bytes.
fn encode(codec: Codec, level: Option<i32>, plain: &[u8], mut sink: impl FnMut(&[u8])) -> usize {
    let mut enc = Encoder::new(codec, level).unwrap();
    let mut out = Vec::with_capacity(2 * SEND);
    let mut wire = 0;
    for send in plain.chunks(SEND) {
        out.clear();
        enc.compress(send, &mut out).unwrap();
        wire += out.len();
        sink(&out);
    }
    out.clear();
    enc.finish(&mut out).unwrap();
    wire += out.len();
    sink(&out);
    wire
}

/// Decodes `stream` fed in [`SEND`]-byte reads, one [`DECODE_CHUNK`]
/// output buffer emptied after every call that appends; returns the plain
/// bytes.
fn decode(codec: Codec, stream: &[u8]) -> usize {
    let mut dec = Decoder::new(codec).unwrap();
    let mut plain = Vec::with_capacity(DECODE_CHUNK);
    let mut total = 0;
    for read in stream.chunks(SEND) {
        let mut input = read;
        loop {
            plain.clear();
            let used = dec.decode(input, &mut plain).unwrap();
            input = &input[used..];
            if plain.is_empty() {
                break;
            }
            total += black_box(&plain).len();
        }
    }
    assert!(dec.at_end(), "{codec}: the stream ends cleanly");
    total
}

fn bench_codec(c: &mut Criterion) {
    let plain = loglines::log_lines(DATA, 0);
    let streams: Vec<Vec<u8>> = CASES
        .iter()
        .map(|&(_, codec, level)| {
            let mut stream = Vec::new();
            encode(codec, level, &plain, |b| stream.extend_from_slice(b));
            assert_eq!(decode(codec, &stream), plain.len(), "{codec} round trip");
            stream
        })
        .collect();
    eprintln!(
        "codec: {} bytes of log lines in {} KiB sends, wire / plain:",
        plain.len(),
        SEND >> 10
    );
    for ((label, _, _), stream) in CASES.iter().zip(&streams) {
        eprintln!(
            "  {label:7} {:.4}  ({} bytes)",
            stream.len() as f64 / plain.len() as f64,
            stream.len()
        );
    }

    let mut group = c.benchmark_group("codec");
    group
        .throughput(Throughput::Bytes(plain.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for &(label, codec, level) in &CASES {
        group.bench_function(BenchmarkId::new("encode", label), |b| {
            b.iter(|| {
                encode(codec, level, black_box(&plain), |b| {
                    black_box(b);
                })
            })
        });
    }
    for (&(label, codec, _), stream) in CASES.iter().zip(&streams) {
        group.bench_function(BenchmarkId::new("decode", label), |b| {
            b.iter(|| decode(codec, black_box(stream)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
