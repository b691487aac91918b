//! Routing an INIT to an output: `cargo bench --bench route`.
//!
//! `sink::route::Router::route` runs once per accepted stream, on the
//! server's only thread, before the first byte is written; a burst of
//! reconnecting clients (a server restart) runs it thousands of times in a
//! row. The configuration below is a realistic one: a default `directory`,
//! three outputs with `match` globs and templates (the one that matches is
//! the last of them, so every glob is tried), and two outputs chosen by
//! `svc`. Meta is what a client really sends (`svc`, `id`, `offset`, `ack`).
//!
//! - `match`: the third `match` output wins (rule 1).
//! - `by_name`: no `match` output fits; `svc` names an output (rule 2).
//! - `fallback`: nothing fits; the default `directory/<host>/<path>` route.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use loghamster::config::ServerConfig;
use loghamster::sink::route::{Router, StreamInfo};

const CONFIG: &str = r#"
directory = "/srv/logs"

[output.kernel]
path = "/var/log/remote/{host}/kern.log"
match = { host = "db*", path = "/var/log/kern.log" }

[output.app]
path = "/var/log/remote/{svc}/{host}/{path}"
match = { svc = "api", path = "/srv/app/**/*.log" }

[output.nginx]
path = "/var/log/remote/{host}/nginx-{file}"
match = { svc = "nginx", host = "web*" }

[output.audit]
path = "/var/log/remote/audit.log"

[output.message]
path = "/var/log/messages"
"#;

fn bench_route(c: &mut Criterion) {
    let cfg = ServerConfig::from_toml_str(CONFIG, "bench.toml").expect("bench config is valid");
    let router = Router::new(&cfg);
    let meta = |svc| {
        [
            ("svc", svc),
            ("id", "fd01-83a2-1"),
            ("offset", "0"),
            ("ack", "1"),
        ]
    };
    let (nginx, audit, other) = (meta("nginx"), meta("audit"), meta("billing"));
    let cases = [
        (
            "match",
            Some("nginx"),
            "web3",
            "/var/log/nginx/access.log",
            &nginx,
        ),
        (
            "by_name",
            Some("audit"),
            "auth1",
            "/var/log/audit/audit.log",
            &audit,
        ),
        (
            "fallback",
            None,
            "batch7",
            "/var/log/billing/2024/run.log",
            &other,
        ),
    ];

    let mut group = c.benchmark_group("route");
    for (name, output, host, path, meta) in cases {
        let info = StreamInfo { host, path, meta };
        let got = router.route(&info).expect("bench stream routes");
        assert_eq!(got.output.as_deref(), output, "{name} takes its rule");
        group.bench_function(name, |b| b.iter(|| router.route(black_box(&info))));
    }
    group.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
