//! Config loading: the seed README examples, error lines and hints, value
//! syntaxes.

use std::path::Path;
use std::time::Duration;

use loghamster::config::{
    parse_duration, parse_size, ClientConfig, Codec, Compression, ConfigError, Method, OnRotate,
    Prometheus, ServerConfig, Source, ValueError,
};

const CLIENT_PATH: &str = "/etc/loghamster/client.toml";

/// The seed README's client sketch with the quotes TOML needs.
const SEED_CLIENT_FIXED: &str = r#"state_file = "/var/lib/loghamster/client.state"   # optional
[server]
hostname = "log.mgmt.neotel.at"
port = 8901
compression = "none"     # gzip, lz4
[[stream]]
path = "/var/log/messages"
method = "watch"
onrotate = "follow"
[[stream]]
directory = "/var/log/sipproxyd/backup"
method = "watch"
filepattern = '*.log.*.gz'
"#;

/// The seed README's client sketch exactly as written (dedented).
const SEED_CLIENT_RAW: &str = "[server]
hostname=log.mgmt.neotel.at
port=8901
compression=none     # gzip, lz4

[[stream]
path=/var/log/messages
method=watch
onrotate=follow

[[stream]]
directory=/var/log/sipproxyd/backup
method=watch
filepattern='*.log.*.gz'
";

const SEED_SERVER: &str = r#"    debug = true
    listen = "127.0.0.1:8000"
    directory = "/tmp/out"

    [prometheus]
    listen = ":8091"
    enabled = true

    [output.message]
        path = "/var/log/messages"

    [output.test]
        path = "/tmp/log/test.log"
"#;

fn client_err(src: &str) -> ConfigError {
    match ClientConfig::from_toml_str(src, CLIENT_PATH) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

fn server_err(src: &str) -> ConfigError {
    match ServerConfig::from_toml_str(src, "/etc/loghamster/server.toml") {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

/// A minimal valid client config plus `extra` appended to the stream.
fn client_with(stream_extra: &str) -> String {
    format!("[server]\nhostname = \"h\"\n[[stream]]\npath = \"/a\"\n{stream_extra}\n")
}

#[test]
fn seed_client_example_parses_once_quoted() {
    let c = ClientConfig::from_toml_str(SEED_CLIENT_FIXED, CLIENT_PATH).unwrap();
    assert_eq!(c.server.hostname, "log.mgmt.neotel.at");
    assert_eq!(c.server.port, 8901);
    assert_eq!(c.server.compression, Compression::default());
    assert_eq!(c.state_file, Path::new("/var/lib/loghamster/client.state"));
    assert!(!c.debug);
    assert_eq!(c.hostname, None);
    assert_eq!(c.tuning.batch_bytes, 4096);
    assert_eq!(c.streams.len(), 2);
    assert!(matches!(&c.streams[0].source, Source::Path(p) if p == Path::new("/var/log/messages")));
    assert_eq!(c.streams[0].method, Method::Watch);
    assert_eq!(c.streams[0].onrotate, OnRotate::Follow);
    match &c.streams[1].source {
        Source::Directory {
            dir,
            pattern,
            pattern_text,
        } => {
            assert_eq!(dir, Path::new("/var/log/sipproxyd/backup"));
            assert_eq!(pattern_text, "*.log.*.gz");
            assert!(pattern.is_match("sip.log.3.gz"));
            assert!(!pattern.is_match("sip.log"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn seed_client_as_written_points_at_line_2_with_quotes_hint() {
    let e = client_err(SEED_CLIENT_RAW);
    assert_eq!(e.line, Some(2));
    assert_eq!(
        e.hint.as_deref(),
        Some("string values need quotes: hostname = \"log.mgmt.neotel.at\"")
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with("/etc/loghamster/client.toml:2: invalid string"),
        "{shown}"
    );
    assert!(!shown.contains('\n'));
}

#[test]
fn half_closed_stream_header_gets_header_hint() {
    let quoted = SEED_CLIENT_FIXED.replacen("[[stream]]", "[[stream]", 1);
    let e = client_err(&quoted);
    assert_eq!(e.line, Some(6));
    assert_eq!(
        e.hint.as_deref(),
        Some("array-of-tables headers need double brackets on both sides: [[stream]]")
    );
}

#[test]
fn single_bracket_stream_gets_hint() {
    let e = client_err("[server]\nhostname = \"h\"\n[stream]\npath = \"/a\"\n");
    assert_eq!(e.line, Some(3));
    assert!(e.hint.unwrap().contains("[[stream]]"));
}

#[test]
fn unknown_key_is_named() {
    let e = client_err("[server]\nhostname = \"h\"\nhostnme = \"x\"\n[[stream]]\npath = \"/a\"\n");
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("unknown field `hostnme`"), "{e}");
    let e = client_err(&client_with("fliepattern = \"*\""));
    assert!(e.message.contains("`fliepattern`"), "{e}");
    let e = server_err("lisen = \"127.0.0.1:1\"\n");
    assert!(e.message.contains("`lisen`"), "{e}");
    let e = server_err("[output.a]\npath = \"/x\"\nmatches = { host = \"a\" }\n");
    assert!(e.message.contains("`matches`"), "{e}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let e = client_err("[server]\nhostname = \"h\"\nport = \"80\"\n[[stream]]\npath = \"/a\"\n");
    assert_eq!(e.line, Some(3));
    assert!(e.message.starts_with("`server.port`: invalid type"), "{e}");
    let e = client_err("[server]\nhostname = \"h\"\nport = 70000\n[[stream]]\npath = \"/a\"\n");
    assert!(e.message.contains("server.port"), "{e}");
    let e = client_err(&client_with("method = \"tail\""));
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("unknown variant `tail`"), "{e}");
    let e = server_err("debug = \"yes\"\n");
    assert!(e.message.starts_with("`debug`:"), "{e}");
}

#[test]
fn client_validation_errors() {
    let cases: &[(&str, &str)] = &[
        ("[server]\nhostname = \"h\"\n", "no [[stream]]"),
        ("[[stream]]\npath = \"/a\"\n", "missing [server]"),
        (&client_with("directory = \"/d\""), "stream #1: `path` and `directory`"),
        (&client_with("filepattern = \"*.log\""), "`filepattern` only applies"),
        (&client_with("svc = \"a b\""), "`svc`"),
        (&client_with("meta = { svc = \"x\" }"), "stream's `svc` key"),
        (&client_with("meta = { offset = \"1\" }"), "reserved"),
        (&client_with("meta = { \"a b\" = \"1\" }"), "`meta.a b`"),
        (&client_with("meta = { env = \"a b\" }"), "`meta.env`"),
        (&client_with("rate_limit = \"5MiB\""), "ends in \"/s\""),
        (&client_with("rate_limit = 0"), "more than 0"),
        (&client_with("burst = \"1MiB\""), "`burst` needs a `rate_limit`"),
        (
            "[server]\nhostname = \"h\"\ncompression = \"lz4\"\ncompression_level = 3\n[[stream]]\npath = \"/a\"\n",
            "lz4 has no levels",
        ),
        (
            "[server]\nhostname = \"h\"\ncompression = \"zstd\"\ncompression_level = 22\n[[stream]]\npath = \"/a\"\n",
            "zstd levels are 1 to 19, not 22",
        ),
        (
            "[server]\nhostname = \"h\"\ncompression_level = 3\n[[stream]]\npath = \"/a\"\n",
            "needs a `compression` codec",
        ),
        (
            "[server]\nhostname = \"h\"\ncompression = \"brotli\"\n[[stream]]\npath = \"/a\"\n",
            "unknown codec",
        ),
        (
            "hostname = \"../x\"\n[server]\nhostname = \"h\"\n[[stream]]\npath = \"/a\"\n",
            "`hostname`",
        ),
        (
            "[server]\nhostname = \"h\"\n[tuning]\nbatch = \"8k\"\nmax_batch = \"4k\"\n[[stream]]\npath = \"/a\"\n",
            "`tuning.max_batch`",
        ),
        (
            "[server]\nhostname = \"h\"\n[tuning]\nbatch = 0\n[[stream]]\npath = \"/a\"\n",
            "`tuning.batch`",
        ),
        (
            "[server]\nhostname = \"h\"\n[tuning]\nlinger = 20\n[[stream]]\npath = \"/a\"\n",
            "`tuning.linger`",
        ),
    ];
    for (src, want) in cases {
        let e = client_err(src);
        assert!(e.message.contains(want), "{src:?}: {e}");
    }
}

#[test]
fn stream_without_source_points_at_its_header() {
    let src = "[server]\nhostname = \"h\"\n[[stream]]\npath = \"/a\"\n\n[[stream]]\nsvc = \"x\"\n";
    let e = client_err(src);
    assert_eq!(e.line, Some(6));
    assert!(e.message.starts_with("stream #2:"), "{e}");
}

#[test]
fn client_full_config() {
    let src = r#"
hostname = "web-1"
debug = true
[server]
hostname = "10.0.0.1"
compression = "zstd"
compression_level = 9
[tuning]
batch = "8KiB"
max_batch = "1MiB"
linger = "5ms"
partial_line_timeout = "2s"
reconnect_min = "100ms"
reconnect_max = "1m"
state_interval = "2s"
shutdown_timeout = "1s"
[[stream]]
directory = "/var/log/app"
method = "send"
onrotate = "stop"
svc = "app"
meta = { env = "prod", dc = "vie", a = "1" }
delete = true
"#;
    let c = ClientConfig::from_toml_str(src, CLIENT_PATH).unwrap();
    assert_eq!(c.hostname.as_deref(), Some("web-1"));
    assert!(c.debug);
    assert_eq!(c.server.port, 8901);
    let zstd9 = Compression {
        codec: Some(Codec::Zstd),
        level: Some(9),
    };
    assert_eq!(c.server.compression, zstd9);
    assert_eq!(c.tuning.batch_bytes, 8192);
    assert_eq!(c.tuning.max_batch_bytes, 1 << 20);
    assert_eq!(c.tuning.linger, Duration::from_millis(5));
    assert_eq!(c.tuning.reconnect_max, Duration::from_secs(60));
    let s = &c.streams[0];
    assert_eq!(
        (s.method, s.onrotate, s.delete),
        (Method::Send, OnRotate::Stop, true)
    );
    assert_eq!(s.svc.as_deref(), Some("app"));
    let keys: Vec<_> = s.meta.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["env", "dc", "a"]);
    assert!(matches!(&s.source, Source::Directory { pattern_text, .. } if pattern_text == "*"));
}

#[test]
fn seed_server_example_parses() {
    let c = ServerConfig::from_toml_str(SEED_SERVER, "server.toml").unwrap();
    assert!(c.debug);
    assert_eq!(c.listen, "127.0.0.1:8000".parse().unwrap());
    assert_eq!(c.directory.as_deref(), Some(Path::new("/tmp/out")));
    assert_eq!(c.prometheus.listen, ":8091");
    assert!(c.prometheus.enabled);
    assert_eq!(c.handshake_timeout, Duration::from_secs(10));
    assert_eq!(c.max_line, 1 << 20);
    let names: Vec<_> = c.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["message", "test"]);
    assert_eq!(c.outputs[1].path, "/tmp/log/test.log");
    assert!(c.outputs.iter().all(|o| o.matchers.is_empty()));
}

#[test]
fn server_defaults_and_options() {
    let c = ServerConfig::from_toml_str("", "s.toml").unwrap();
    assert_eq!(c.listen, "127.0.0.1:8901".parse().unwrap());
    assert!(!c.prometheus.enabled);
    assert!(c.directory.is_none() && c.outputs.is_empty());
    let src = r#"
handshake_timeout = "3s"
max_line = "64KiB"
state_file = "/var/lib/loghamster/server.state"
[output.zeta]
path = "/srv/{host}/{file}"
match = { host = "web*", svc = "nginx" }
[output.alpha]
path = "apps/{svc}.log"
directory = "/srv/logs"
"#;
    // `directory` inside an output is unknown; the top-level one is placed first.
    assert!(server_err(src).message.contains("`directory`"));
    let src = format!(
        "directory = \"/srv/logs\"\n{}",
        src.replace("directory = \"/srv/logs\"\n", "")
    );
    let c = ServerConfig::from_toml_str(&src, "s.toml").unwrap();
    assert_eq!(c.handshake_timeout, Duration::from_secs(3));
    assert_eq!(c.max_line, 64 << 10);
    let names: Vec<_> = c.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha"]);
    let keys: Vec<_> = c.outputs[0].matchers.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(keys, ["host", "svc"]);
    assert_eq!(
        c.outputs[1].template().unwrap().base(),
        Path::new("/srv/logs/apps")
    );
    let f = ServerConfig::from_flags(None, Some("/o".into()), true);
    assert!(f.debug && f.outputs.is_empty());
    assert_eq!(f.accept_compression, Codec::ALL);
    let only = ServerConfig::from_toml_str("accept_compression = [\"lz4\", \"lz4\"]\n", "s.toml");
    assert_eq!(only.unwrap().accept_compression, [Codec::Lz4]);
    let none = ServerConfig::from_toml_str("accept_compression = []\n", "s.toml");
    assert!(none.unwrap().accept_compression.is_empty());
}

#[test]
fn server_validation_errors() {
    let cases: &[(&str, &str, usize)] = &[
        ("listen = \"localhost\"\n", "`listen`", 1),
        ("debug = true\nlisten = \":8901\"\n", "`listen`", 2),
        (
            "debug = true\nconnection_burst = \"1MiB\"\n",
            "`connection_burst` needs a `connection_rate_limit`",
            2,
        ),
        (
            "debug = true\naccept_compression = [\"zstd\", \"xz\"]\n",
            "`accept_compression`: unknown codec \"xz\"",
            2,
        ),
        (
            "[prometheus]\nlisten = \"nope\"\n",
            "`prometheus.listen`",
            2,
        ),
        (
            "[output.a]\npath = \"/x/{nope}\"\n",
            "`output.a.path`: unknown placeholder",
            2,
        ),
        (
            "[output.a]\npath = \"/x/{host\"\n",
            "`output.a.path`: unbalanced",
            2,
        ),
        ("[output.a]\npath = \"/x/../y\"\n", "`output.a.path`", 2),
        (
            "[output.a]\npath = \"rel/{host}\"\n",
            "`output.a.path`: relative",
            2,
        ),
        ("[output.a]\npath = \"/x/\"\n", "`output.a.path`", 2),
        ("[output.\"a b\"]\npath = \"/x\"\n", "output name", 2),
        (
            "[output.a]\npath = \"/x\"\nmatch = { host = \"[\" }\n",
            "`output.a.match.host`",
            3,
        ),
        ("handshake_timeout = \"0s\"\n", "`handshake_timeout`", 1),
        ("max_line = \"1XB\"\n", "`max_line`", 1),
    ];
    for (src, want, line) in cases {
        let e = server_err(src);
        assert!(e.message.contains(want), "{src:?}: {e}");
        assert_eq!(e.line, Some(*line), "{src:?}: {e}");
    }
}

/// A minimal valid client config followed by `tail` (4 lines before it).
fn client_then(tail: &str) -> String {
    format!("[server]\nhostname = \"h\"\n[[stream]]\npath = \"/a\"\n{tail}")
}

#[test]
fn client_prometheus_section_is_the_servers_with_its_own_default() {
    let off = ClientConfig::from_toml_str(&client_then(""), CLIENT_PATH).unwrap();
    assert_eq!(off.prometheus, Prometheus::disabled("127.0.0.1:9101"));
    let server = ServerConfig::from_toml_str("", "s.toml").unwrap();
    assert_eq!(server.prometheus, Prometheus::disabled("127.0.0.1:8091"));

    // The section alone turns it on, as on the server.
    let on = ClientConfig::from_toml_str(&client_then("[prometheus]\n"), CLIENT_PATH).unwrap();
    assert!(on.prometheus.enabled);
    assert_eq!(
        on.prometheus.addr(),
        Some("127.0.0.1:9101".parse().unwrap())
    );

    let cases: &[(&str, bool, &str)] = &[
        ("listen = \":9101\"", true, "0.0.0.0:9101"),
        (
            "listen = \"[::1]:9101\"\nenabled = true",
            true,
            "[::1]:9101",
        ),
        ("listen = \"127.0.0.1:0\"", true, "127.0.0.1:0"),
        (
            "enabled = false\nlisten = \"10.0.0.1:9\"",
            false,
            "10.0.0.1:9",
        ),
    ];
    for (body, enabled, addr) in cases {
        let src = client_then(&format!("[prometheus]\n{body}\n"));
        let c = ClientConfig::from_toml_str(&src, CLIENT_PATH).unwrap();
        assert_eq!(c.prometheus.enabled, *enabled, "{body}");
        assert_eq!(c.prometheus.addr(), Some(addr.parse().unwrap()), "{body}");
    }
}

#[test]
fn client_prometheus_errors_name_key_and_line() {
    let cases: &[(&str, &str, usize)] = &[
        (
            "listen = \"nope\"",
            "`prometheus.listen` \"nope\": expected ip:port or :port",
            6,
        ),
        ("listen = \"localhost:9101\"", "`prometheus.listen`", 6),
        ("listen = \"9101\"", "`prometheus.listen`", 6),
        ("listen = \":70000\"", "`prometheus.listen`", 6),
        (
            "enabled = true\nlisten = 9101",
            "`prometheus.listen`: invalid type",
            7,
        ),
        ("enabled = \"yes\"", "`prometheus.enabled`: invalid type", 6),
        ("lisen = \":9101\"", "unknown field `lisen`", 6),
    ];
    for (body, want, line) in cases {
        let e = client_err(&client_then(&format!("[prometheus]\n{body}\n")));
        assert!(e.message.contains(want), "{body:?}: {e}");
        assert_eq!(e.line, Some(*line), "{body:?}: {e}");
    }
}

#[test]
fn unreadable_file_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let e = ClientConfig::load(&missing).unwrap_err();
    assert_eq!(e.path, missing);
    assert_eq!(e.line, None);
    assert!(e.message.contains("cannot read"), "{e}");
    let file = dir.path().join("server.toml");
    std::fs::write(&file, SEED_SERVER).unwrap();
    assert_eq!(ServerConfig::load(&file).unwrap().outputs.len(), 2);
    std::fs::write(&file, b"debug = true\n\xff\n").unwrap();
    let e = ServerConfig::load(&file).unwrap_err();
    assert_eq!(e.line, Some(2));
}

#[test]
fn durations() {
    let ok: &[(&str, Duration)] = &[
        ("50ms", Duration::from_millis(50)),
        ("5s", Duration::from_secs(5)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        (" 3 s ", Duration::from_secs(3)),
        ("0ms", Duration::ZERO),
    ];
    for (s, d) in ok {
        assert_eq!(parse_duration(s), Ok(*d), "{s}");
    }
    let bad: &[(&str, ValueError)] = &[
        ("", ValueError::Empty),
        ("5", ValueError::MissingUnit),
        ("s", ValueError::BadNumber),
        ("-5s", ValueError::BadNumber),
        ("1.5s", ValueError::UnknownUnit(".5s".into())),
        ("5d", ValueError::UnknownUnit("d".into())),
        ("99999999999999999999s", ValueError::Overflow),
        ("18446744073709551615h", ValueError::Overflow),
    ];
    for (s, e) in bad {
        assert_eq!(parse_duration(s).as_ref(), Err(e), "{s}");
    }
}

#[test]
fn sizes() {
    let ok: &[(&str, usize)] = &[
        ("4096", 4096),
        ("4KiB", 4096),
        ("4k", 4096),
        ("4K", 4096),
        ("4KB", 4096),
        ("1MiB", 1 << 20),
        ("2GiB", 2 << 30),
        ("7B", 7),
        ("0", 0),
    ];
    for (s, n) in ok {
        assert_eq!(parse_size(s), Ok(*n), "{s}");
    }
    assert_eq!(
        parse_size("4TiB"),
        Err(ValueError::UnknownUnit("TiB".into()))
    );
    assert_eq!(parse_size("k"), Err(ValueError::BadNumber));
    assert_eq!(
        parse_size("18446744073709551615G"),
        Err(ValueError::Overflow)
    );
}

#[test]
fn rate_limits_per_stream_and_per_client() {
    let c = ClientConfig::from_toml_str(
        "[server]\nhostname = \"h\"\n[tuning]\nrate_limit = \"100MiB/s\"\n\
         [[stream]]\npath = \"/a\"\nrate_limit = \"20MiB/s\"\nburst = \"4MiB\"\n\
         [[stream]]\npath = \"/b\"\nrate_limit = 1000\n",
        std::path::Path::new("c.toml"),
    )
    .unwrap();
    let limit = |bytes_per_sec, burst| {
        Some(loghamster::rate::Limit {
            bytes_per_sec,
            burst,
        })
    };
    assert_eq!(c.tuning.rate_limit, limit(100 << 20, 100 << 20));
    assert_eq!(c.streams[0].rate_limit, limit(20 << 20, 4 << 20));
    assert_eq!(c.streams[1].rate_limit, limit(1000, 1000));
}

#[test]
fn the_same_file_in_two_streams_is_an_error_naming_both_lines() {
    let src = "[server]\nhostname = \"h\"\n[[stream]]\npath = \"/var/log/a.log\"\n[[stream]]\npath = \"/var/log/b.log\"\n[[stream]]\nsvc = \"x\"\npath = \"/var/log//./a.log\"\n";
    let e = client_err(src);
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.message.starts_with("stream #3"), "{e}");
    assert!(
        e.message.contains("line 9") && e.message.contains("stream #1 (line 4)"),
        "{e}"
    );
    // The same glob, and the same directory and pattern, twice.
    let globs = "[server]\nhostname = \"h\"\n[[stream]]\npath = \"/d/*.log\"\n[[stream]]\npath = \"/d/./*.log\"\n";
    assert!(client_err(globs).message.contains("stream #1 (line 4)"));
    let dirs = "[server]\nhostname = \"h\"\n[[stream]]\ndirectory = \"/d\"\n[[stream]]\ndirectory = \"/d/\"\nfilepattern = \"*\"\n";
    assert!(client_err(dirs).message.contains("stream #1 (line 4)"));
    // Different files, and overlapping globs, are fine.
    let fine = "[server]\nhostname = \"h\"\n[[stream]]\npath = \"/d/*.log\"\n[[stream]]\npath = \"/d/a.log\"\n[[stream]]\ndirectory = \"/d\"\n";
    ClientConfig::from_toml_str(fine, CLIENT_PATH).expect("overlaps are not errors");
}
