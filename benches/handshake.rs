//! Handshake parser throughput: `cargo bench --bench handshake`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use loghamster::proto::{parse_init, parse_server_line, write_init};

fn bench_handshake(c: &mut Criterion) {
    let seed: &[u8] = b"INIT STREAM host:/path svc:servicename more:<meta>\n";
    let meta: Vec<(String, String)> = (0..10)
        .map(|i| (format!("key{i}"), format!("value number {i}")))
        .collect();
    let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut ten = Vec::new();
    write_init(&mut ten, "web1", "/var/log/my app.log", &meta);
    let ack: &[u8] = b"ACK 18446744073709551615\n";

    let mut group = c.benchmark_group("handshake");
    for (name, line) in [("parse_init/seed", seed), ("parse_init/10_meta", &ten[..])] {
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse_init(black_box(line))));
    }
    group.throughput(Throughput::Bytes(ack.len() as u64));
    group.bench_function("parse_server_line/ack", |b| {
        b.iter(|| parse_server_line(black_box(ack)))
    });
    group.finish();
}

criterion_group!(benches, bench_handshake);
criterion_main!(benches);
