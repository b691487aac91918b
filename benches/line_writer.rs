//! The server's line-aligned writer: `cargo bench --bench line_writer`.
//!
//! Every chunk a server reads from a stream goes through
//! `sink::output::LineWriter::push`: cut at the last newline, write the
//! held tail plus the whole lines with one `writev`, keep the new tail.
//! Fed 64 KiB chunks of realistic lines (each ends mid-line):
//! - `push/sink`: into `io::sink()`, the splitting and bookkeeping alone;
//! - `push/file`: into an `O_APPEND` temp file, adding the `write(2)`;
//! - `outputs_write/shared`: the full server path, `Outputs::write` on an
//!   output two streams share (tails are held, only whole lines written).
//!
//! The files are truncated every 256 chunks (16 MiB), outside the timed
//! part, so a run does not fill the disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use loghamster::sink::output::{LineWriter, Outcome, Outputs};
use loghamster::sink::route::Route;

mod loglines;

const CHUNK: usize = 64 << 10;
const MAX_LINE: usize = 1 << 20; // the server's default `max_line`
const CHUNKS_PER_TRUNCATE: u64 = 256;

/// Runs `iters` pushes of the chunks in turn, timing only the pushes;
/// `path` (if any) is emptied every [`CHUNKS_PER_TRUNCATE`] chunks.
fn timed(
    iters: u64,
    chunks: &[&[u8]],
    path: Option<&Path>,
    mut push: impl FnMut(&[u8]),
) -> Duration {
    let mut chunks = chunks.iter().cycle();
    let (mut total, mut left) = (Duration::ZERO, iters);
    while left > 0 {
        let n = left.min(CHUNKS_PER_TRUNCATE);
        let start = Instant::now();
        for chunk in chunks.by_ref().take(n as usize) {
            push(chunk);
        }
        total += start.elapsed();
        left -= n;
        if let Some(path) = path {
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(0)
                .unwrap();
        }
    }
    total
}

fn bench_line_writer(c: &mut Criterion) {
    let stream = loglines::log_lines(4 << 20, 0);
    let chunks: Vec<&[u8]> = stream.chunks(CHUNK).collect();
    let tmp = tempfile::tempdir().unwrap();

    let mut group = c.benchmark_group("line_writer");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    group.bench_function("push/sink", |b| {
        b.iter_custom(|iters| {
            let mut w = LineWriter::new(0, MAX_LINE);
            timed(iters, &chunks, None, |c| {
                w.push(&mut io::sink(), c).unwrap()
            })
        })
    });

    let path = tmp.path().join("single.log");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    group.bench_function("push/file", |b| {
        b.iter_custom(|iters| {
            let mut w = LineWriter::new(0, MAX_LINE);
            timed(iters, &chunks, Some(&path), |c| {
                w.push(&mut file, c).unwrap()
            })
        })
    });
    file.flush().unwrap();

    let route = Route {
        output: None,
        base: tmp.path().to_path_buf(),
        relative: "shared.log".into(),
    };
    let mut outputs = Outputs::default();
    let id = outputs.acquire(&route).unwrap();
    assert_eq!(outputs.acquire(&route).unwrap(), id, "two streams share it");
    group.bench_function("outputs_write/shared", |b| {
        b.iter_custom(|iters| {
            let mut w = LineWriter::new(0, MAX_LINE);
            timed(iters, &chunks, Some(&route.full_path()), |c| {
                let outcome = outputs.write(id, &mut w, 1, c, false);
                assert!(matches!(outcome, Outcome::Written), "{outcome:?}");
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_line_writer);
criterion_main!(benches);
