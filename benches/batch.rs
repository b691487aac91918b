//! The client's batching rule: `cargo bench --bench batch`.
//!
//! `tail::batch::decide` runs for every stream on every read and every
//! timer wake-up, so it must cost next to nothing. `decide/*` measures it
//! alone in its four outcomes, with the default tuning (batch 4 KiB,
//! linger 20 ms, partial_line_timeout 5 s).
//!
//! No pure function builds a batch from a read buffer: the client
//! (`client::stream`) finds `whole` with `memrchr` inline and calls
//! `decide`. `scan_and_decide/*` replays those two steps on a read buffer
//! of realistic lines cut 96 bytes into a line, at the client's initial
//! buffer size (4 x batch = 16 KiB) and at `max_batch` (256 KiB).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use loghamster::tail::batch::{decide, Rules, Unsent};

mod loglines;

const MS: Duration = Duration::from_millis(1);

fn bench_batch(c: &mut Criterion) {
    let rules = Rules {
        batch: 4096,
        linger: 20 * MS,
        partial_line_timeout: 5000 * MS,
    };
    let t0 = Instant::now();
    let unsent = |len, whole| Unsent {
        len,
        whole,
        full: false,
        since: t0,
        partial_since: (whole < len).then_some(t0),
    };
    let cases = [
        ("empty", unsent(0, 0), t0),
        ("linger_wait", unsent(900, 850), t0 + MS),
        ("batch_ready", unsent(16384, 16300), t0),
        ("partial_timeout", unsent(120, 0), t0 + 5000 * MS),
    ];

    let mut group = c.benchmark_group("batch");
    for (name, u, now) in cases {
        group.bench_function(BenchmarkId::new("decide", name), |b| {
            b.iter(|| decide(black_box(&rules), black_box(&u), black_box(now)))
        });
    }
    for (label, size) in [("16KiB", 16 << 10), ("256KiB", 256 << 10)] {
        let buf = loglines::log_lines(size, 96);
        group.bench_function(BenchmarkId::new("scan_and_decide", label), |b| {
            b.iter(|| {
                let buf = black_box(&buf[..]);
                let whole = memchr::memrchr(b'\n', buf).map_or(0, |i| i + 1);
                decide(&rules, &unsent(buf.len(), whole), black_box(t0))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_batch);
criterion_main!(benches);
