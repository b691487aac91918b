//! Writing the state files' text: `cargo bench --bench state_text`.
//!
//! Both daemons write their state once a second (`state_interval`,
//! `sync_interval`) from their only thread, and with 1,000 busy files
//! every entry has changed by then: the client's whole state file
//! (`tail::state::encode`), and the server's journal record of every
//! output and stream (`sink::checkpoint::encode_delta`), or now and then
//! its whole snapshot. A loop turn that spends milliseconds on this
//! delays every line that arrives meanwhile (issue 13's p99).
//!
//! - `client_state/N`: N entries of followed files, sealed (SHA-256).
//! - `server_delta/N`: N changed outputs and their N streams.
//! - `server_snapshot/N`: the same as a snapshot.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use loghamster::sink::checkpoint::{
    encode_delta, encode_snapshot, Checkpoint, Delta, OutputMark, StreamMark,
};
use loghamster::tail::identity::Identity;
use loghamster::tail::state::{encode, Entry};

fn client_entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            id: format!("fd01-{i:x}-6553f100.75bcd15~k3f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2"),
            path: PathBuf::from(format!("/var/log/many/f{i:05}.log")),
            identity: Identity {
                dev: 64769,
                ino: 33698 + i as u64,
                fp: 0xaf63_dc4c_8601_ec8c ^ i as u64,
                fp_len: 1024,
                head: 0x12ab_34cd_56ef_7890,
                head_len: 64,
            },
            offset: 123_456_789 + i as u64,
            complete: false,
            copy: false,
            copies_after: 0,
        })
        .collect()
}

fn server_checkpoint(n: usize) -> Checkpoint {
    let output = |i: usize| PathBuf::from(format!("/srv/logs/web1/var/log/many/f{i:05}.log"));
    Checkpoint {
        outputs: (0..n)
            .map(|i| OutputMark {
                path: output(i),
                dev: 64769,
                ino: 1234 + i as u64,
                len: 9_000_000 + i as u64,
                writers: 1,
            })
            .collect(),
        streams: (0..n)
            .map(|i| StreamMark {
                host: "web1".into(),
                path: format!("/var/log/many/f{i:05}.log"),
                id: format!("fe00-98c1-6745a1f0.{i:x}"),
                offset: 9_000_000 + i as u64,
                output: output(i),
                attached: true,
                seen: 1_765_000_000,
                owner: None,
            })
            .collect(),
    }
}

fn bench_state_text(c: &mut Criterion) {
    for n in [100, 1000] {
        let entries = client_entries(n);
        c.bench_with_input(BenchmarkId::new("client_state", n), &entries, |b, e| {
            b.iter(|| encode(black_box(e)).unwrap())
        });
        let cp = server_checkpoint(n);
        let delta = Delta {
            outputs: cp.outputs.clone(),
            closed: Vec::new(),
            streams: cp.streams.clone(),
            gone: Vec::new(),
        };
        c.bench_with_input(BenchmarkId::new("server_delta", n), &delta, |b, d| {
            b.iter(|| encode_delta(black_box(d)).unwrap())
        });
        c.bench_with_input(BenchmarkId::new("server_snapshot", n), &cp, |b, cp| {
            b.iter(|| encode_snapshot(black_box(cp), 7).unwrap())
        });
    }
}

criterion_group!(benches, bench_state_text);
criterion_main!(benches);
