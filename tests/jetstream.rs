//! The JetStream output against real nats-server processes: every line
//! exactly once, in order per file, through gateways, kills and outages.
//! Everything is read back from JetStream with an async-nats consumer and
//! checked message by message (`nats::Reader`): each message must start
//! where the file's bytes so far end; a message inside them is a
//! duplicate, one past them a hole.

mod common;
mod nats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

/// A gateway writing every stream to JetStream stream `stream`; `extra`
/// goes into its `jetstream` table, then the rest of the file.
fn gateway(dir: &Path, name: &str, urls: &[String], stream: &str, extra: &str) -> Server {
    let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let cfg = dir.join(format!("{name}.toml"));
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate_file = \"{}\"\n[output.logs]\nmatch = {{ host = \"*\" }}\n[output.logs.jetstream]\nservers = [{}]\nstream = \"{stream}\"\nsubject = \"logs.{{host}}.{{path}}\"\n{extra}\n",
        dir.join(format!("{name}.state")).display(),
        servers.join(", ")
    );
    std::fs::write(&cfg, text).expect("write gateway config");
    Server::start(&["--config", cfg.to_str().unwrap()])
}

/// `n` log files in `dir/files`.
fn files(dir: &Path, n: usize) -> Vec<PathBuf> {
    let d = dir.join("files");
    std::fs::create_dir_all(&d).unwrap();
    (0..n).map(|i| d.join(format!("app{i}.log"))).collect()
}

fn want(files: &[PathBuf]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|f| {
            (
                f.display().to_string(),
                std::fs::read(f).unwrap_or_default(),
            )
        })
        .collect()
}

fn append_all(files: &[PathBuf], from: usize, to: usize) {
    for (i, f) in files.iter().enumerate() {
        append_lines(f, &format!("f{i}"), from, to);
    }
}

/// Every file arrived exactly once and in order, and nothing else did.
fn assert_exactly_once(reader: &nats::Reader, want: &BTreeMap<String, Vec<u8>>) {
    for (path, w) in want {
        let f = reader
            .files
            .get(path)
            .unwrap_or_else(|| panic!("{path}: nothing in JetStream"));
        assert!(
            f.broken.is_empty(),
            "{path}: messages out of place {:?}",
            f.broken
        );
        assert_eq!(f.duplicates, 0, "{path}: duplicated messages");
        let got = String::from_utf8_lossy(&f.data);
        let w = String::from_utf8_lossy(w);
        assert!(got == w, "{path}: {}", describe_difference(&got, &w));
    }
    assert_eq!(reader.files.len(), want.len(), "only the files sent");
}

#[test]
fn lines_reach_jetstream_once_and_a_new_gateway_continues_at_their_end() {
    let Some(bin) = nats::binary("lines_reach_jetstream_once_...") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = nats::Node::start(&bin, dir.path(), "solo", 0, None);
    let urls = vec![node.url()];
    let rt = nats::runtime();
    nats::create_stream(&rt, &urls, "LOGS", 1);
    let files = files(dir.path(), 3);
    append_all(&files, 0, 200);
    let gw = gateway(dir.path(), "gw1", &urls, "LOGS", "");
    let state = dir.path().join("client.state");
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let mut client = client_for(&gw, &state, "web1", &refs);
    let mut reader = nats::Reader::new(&rt, &urls, "LOGS");
    let w = want(&files);
    reader.wait_complete(&rt, &w);
    assert_exactly_once(&reader, &w);

    // The client's state is lost and another gateway takes over: the
    // gateway learns each stream's end from JetStream, nothing twice.
    client.kill9();
    std::fs::remove_file(&state).unwrap();
    let gw2 = gateway(dir.path(), "gw2", &urls, "LOGS", "");
    append_all(&files, 200, 300);
    let _client = client_for(&gw2, &state, "web1", &refs);
    let w = want(&files);
    reader.wait_complete(&rt, &w);
    assert_exactly_once(&reader, &w);
    gw2.proc.wait_log("its end in JetStream");
    drop(gw);
}

#[test]
fn a_hundred_files_through_two_gateways_into_r3_arrive_once_across_kills() {
    let Some(bin) = nats::binary("a_hundred_files_through_two_gateways_...") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = nats::cluster(&bin, dir.path());
    let urls: Vec<String> = nodes.iter().map(nats::Node::url).collect();
    let rt = nats::runtime();
    nats::create_stream(&rt, &urls, "LOGS", 3);
    let files = files(dir.path(), 100);
    let (half1, half2) = files.split_at(50);
    append_all(&files, 0, 50);
    let mut gw1 = gateway(dir.path(), "gw1", &urls, "LOGS", "");
    let gw2 = gateway(dir.path(), "gw2", &urls, "LOGS", "");
    let (state1, state2) = (dir.path().join("c1.state"), dir.path().join("c2.state"));
    let refs1: Vec<&Path> = half1.iter().map(PathBuf::as_path).collect();
    let refs2: Vec<&Path> = half2.iter().map(PathBuf::as_path).collect();
    let mut client1 = client_for(&gw1, &state1, "web1", &refs1);
    let mut client2 = client_for(&gw2, &state2, "web2", &refs2);
    let mut reader = nats::Reader::new(&rt, &urls, "LOGS");
    reader.wait_complete(&rt, &want(&files));

    // One NATS node dies while lines are on their way: the stream keeps
    // its quorum, the gateways reconnect and re-send what timed out.
    append_all(&files, 50, 150);
    nodes[2].proc.kill9();
    reader.wait_complete(&rt, &want(&files));

    // A gateway dies while its streams flow; their client dies too and
    // comes back on the other gateway, which learns where each stream
    // ends from JetStream.
    append_all(&files, 150, 250);
    gw1.proc.kill9();
    client1.kill9();
    let _client1 = client_for(&gw2, &state1, "web1", &refs1);
    reader.wait_complete(&rt, &want(&files));

    // A client dies while streaming and comes back on the same gateway.
    append_all(&files, 250, 350);
    client2.kill9();
    let _client2 = client_for(&gw2, &state2, "web2", &refs2);
    let w = want(&files);
    reader.wait_complete(&rt, &w);
    assert_exactly_once(&reader, &w);
}

#[test]
fn jetstream_down_then_back_loses_nothing_and_the_gateway_holds_little() {
    let Some(bin) = nats::binary("jetstream_down_then_back_...") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut node = nats::Node::start(&bin, dir.path(), "solo", 0, None);
    let urls = vec![node.url()];
    let rt = nats::runtime();
    nats::create_stream(&rt, &urls, "LOGS", 1);
    let files = files(dir.path(), 4);
    append_all(&files, 0, 100);
    // Small messages, so what the gateway may hold is small too.
    let extra = "max_message = \"64KiB\"\n[prometheus]\nenabled = true\nlisten = \"127.0.0.1:0\"\n";
    let gw = gateway(dir.path(), "gw", &urls, "LOGS", extra);
    let metrics = metrics_addr(&gw);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let _client = client_for(&gw, &dir.path().join("c.state"), "web1", &refs);
    let mut reader = nats::Reader::new(&rt, &urls, "LOGS");
    reader.wait_complete(&rt, &want(&files));
    let rss_before = rss_kib(gw.proc.pid());

    // JetStream goes away; 64 MiB more arrive in the files meanwhile.
    node.proc.kill9();
    let line = "x".repeat(1023);
    for f in &files {
        let mut text = String::with_capacity(16 << 20);
        for _ in 0..(16 << 10) {
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(f)
            .and_then(|mut h| std::io::Write::write_all(&mut h, text.as_bytes()))
            .unwrap();
    }
    // The gateway has tried and failed: every stream is held back now.
    wait_for("failed publishes", || {
        metric(
            &metrics,
            "loghamster_server_jetstream_errors_total{output=\"logs\"}",
        ) >= 3.0
    });
    let rss_down = rss_kib(gw.proc.pid());
    node.restart();
    let w = want(&files);
    reader = nats::Reader::new(&rt, &urls, "LOGS");
    reader.wait_complete(&rt, &w);
    assert_exactly_once(&reader, &w);
    eprintln!("gateway RSS: {rss_before} KiB before, {rss_down} KiB while JetStream was down");
    assert!(
        rss_down < rss_before + 16 * 1024,
        "the gateway grew from {rss_before} KiB to {rss_down} KiB while JetStream was down"
    );
}

/// The gateway's `/metrics` address, from its log.
fn metrics_addr(gw: &Server) -> String {
    let needle = "serving metrics on http://";
    gw.proc.wait_log(needle);
    let log = gw.proc.log();
    let at = log.find(needle).unwrap() + needle.len();
    log[at..].split('/').next().unwrap().to_string()
}

/// One sample's value from `/metrics` (0 when absent).
fn metric(addr: &str, series: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0.0;
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}
