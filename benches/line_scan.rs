//! Finding the last newline in a buffer: `cargo bench --bench line_scan`.
//!
//! Both daemons cut data at the last `\n` with `memchr::memrchr`: the
//! client to know how much of its read buffer is whole lines (the `whole`
//! it hands to `tail::batch::decide`), the server in
//! `sink::output::LineWriter::push` for every chunk it receives. A naive
//! byte loop runs beside it on the same bytes so the ratio is visible.
//!
//! Two inputs per buffer size (4 KiB, 64 KiB, 1 MiB), both 80–300 byte
//! log lines (`loglines`):
//! - `lines`: cut 96 bytes into a line (about half an average one), as a
//!   read leaves them. The scan stops at the last newline, so it only
//!   covers that partial line; the bytes/s figure is per *buffer* and
//!   mostly shows that the cost does not grow with it.
//! - `no_newline`: the same bytes with every `\n` made a space, i.e. one
//!   line longer than the buffer: the whole buffer is scanned. This is the
//!   worst case and the scanner's real throughput (on a buffer that is hot
//!   in cache, as one just filled by `read` is).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod loglines;

/// The baseline: one byte at a time from the end.
fn naive_last_newline(buf: &[u8]) -> Option<usize> {
    let mut i = buf.len();
    while i > 0 {
        i -= 1;
        if buf[i] == b'\n' {
            return Some(i);
        }
    }
    None
}

fn bench_line_scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("line_scan");
    for (label, size) in [("4KiB", 4 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let lines = loglines::log_lines(size, 96);
        let flat: Vec<u8> = lines
            .iter()
            .map(|&b| if b == b'\n' { b' ' } else { b })
            .collect();
        group.throughput(Throughput::Bytes(size as u64));
        for (input, buf) in [("lines", &lines), ("no_newline", &flat)] {
            assert_eq!(memchr::memrchr(b'\n', buf), naive_last_newline(buf));
            group.bench_with_input(
                BenchmarkId::new(format!("memrchr/{input}"), label),
                buf,
                |b, buf| b.iter(|| memchr::memrchr(b'\n', black_box(buf))),
            );
            group.bench_with_input(
                BenchmarkId::new(format!("naive/{input}"), label),
                buf,
                |b, buf| b.iter(|| naive_last_newline(black_box(buf))),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_line_scan);
criterion_main!(benches);
