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

/// A gateway writing every stream to JetStream stream `stream`.
fn gateway(dir: &Path, name: &str, urls: &[String], stream: &str, extra: &str) -> Server {
    let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let cfg = dir.join(format!("{name}.toml"));
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstate_file = \"{}\"\n{extra}\n[output.logs]\nmatch = {{ host = \"*\" }}\n[output.logs.jetstream]\nservers = [{}]\nstream = \"{stream}\"\nsubject = \"logs.{{host}}.{{path}}\"\n",
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
