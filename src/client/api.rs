//! The library face of the client, after the original design's
//! `client := loghamster.NewClient("log.example.com:8901")` /
//! `client.StreamFile("/var/log/app.log")`.

use std::path::{Path, PathBuf};

use super::{ClientDaemon, ClientError};
use crate::config::client::{
    default_client_state_file, Endpoint, ServerAddr, Tuning, DEFAULT_PORT,
    DEFAULT_PROMETHEUS_LISTEN,
};
use crate::config::{ClientConfig, Method, OnRotate, Prometheus, Source, StreamConfig};
use crate::proto::is_host_name;

/// What [`Client::new`] takes: one server as `host:port`, or several
/// (`&["log1:8901", "log2:8901"]`, a `Vec<String>`, ...).
pub trait IntoServers {
    fn into_servers(self) -> Vec<String>;
}

impl IntoServers for &str {
    fn into_servers(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl IntoServers for &String {
    fn into_servers(self) -> Vec<String> {
        vec![self.clone()]
    }
}

impl IntoServers for String {
    fn into_servers(self) -> Vec<String> {
        vec![self]
    }
}

impl<S: AsRef<str>> IntoServers for &[S] {
    fn into_servers(self) -> Vec<String> {
        self.iter().map(|s| s.as_ref().to_string()).collect()
    }
}

impl<S: AsRef<str>, const N: usize> IntoServers for &[S; N] {
    fn into_servers(self) -> Vec<String> {
        self.as_slice().into_servers()
    }
}

impl<S: AsRef<str>> IntoServers for Vec<S> {
    fn into_servers(self) -> Vec<String> {
        self.as_slice().into_servers()
    }
}

/// A client under construction: its servers and the files to stream.
///
/// `build()` checks everything and returns a [`ClientDaemon`] ready to
/// `run()`; its [`stop_handle`](ClientDaemon::stop_handle) stops it
/// cleanly from another thread.
#[derive(Debug, Clone)]
pub struct Client {
    servers: Vec<String>,
    failover_after: Option<std::time::Duration>,
    streams: Vec<StreamConfig>,
    state_file: Option<PathBuf>,
    hostname: Option<String>,
    tuning: Tuning,
    signals: bool,
}

impl Client {
    /// A client for one server given as `host:port`, or for several
    /// (each stream goes to one of them, by rendezvous hashing, and moves
    /// on when its server fails; see the README, "Several servers").
    pub fn new(servers: impl IntoServers) -> Client {
        Client {
            servers: servers.into_servers(),
            failover_after: None,
            streams: Vec::new(),
            state_file: None,
            hostname: None,
            tuning: Tuning::default(),
            signals: false,
        }
    }

    /// Follows `path` and streams what is appended to it.
    pub fn stream_file(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.stream_file_with(path, None, Vec::new())
    }

    /// Like [`stream_file`](Self::stream_file), with a service name and metadata.
    pub fn stream_file_with(
        &mut self,
        path: impl AsRef<Path>,
        svc: Option<String>,
        meta: Vec<(String, String)>,
    ) -> &mut Self {
        self.streams.push(StreamConfig {
            source: Source::Path(path.as_ref().to_path_buf()),
            method: Method::Watch,
            onrotate: OnRotate::Follow,
            svc,
            meta,
            delete: false,
            rate_limit: None,
        });
        self
    }

    /// Where positions are kept (default: [`default_client_state_file`]).
    pub fn state_file(&mut self, path: impl AsRef<Path>) -> &mut Self {
        self.state_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// The host name sent in INIT (default: this machine's).
    pub fn hostname(&mut self, name: &str) -> &mut Self {
        self.hostname = Some(name.to_string());
        self
    }

    pub fn tuning(&mut self, tuning: Tuning) -> &mut Self {
        self.tuning = tuning;
        self
    }

    /// How long a server may fail a stream before the stream moves on
    /// (default 10 s; several servers only).
    pub fn failover_after(&mut self, after: std::time::Duration) -> &mut Self {
        self.failover_after = Some(after);
        self
    }

    /// Let SIGTERM/SIGINT stop the client (off by default for library use).
    pub fn handle_signals(&mut self, on: bool) -> &mut Self {
        self.signals = on;
        self
    }

    /// Splits `host:port` (`[v6addr]:port` too).
    pub fn split_server(server: &str) -> Result<(String, u16), String> {
        let bad = || format!("server {server:?}: expected host:port");
        let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        let port = crate::cli::connect_port(port).map_err(|e| format!("server {server:?}: {e}"))?;
        Ok((host.to_string(), port))
    }

    /// The equivalent validated configuration.
    pub fn into_config(&self) -> Result<ClientConfig, String> {
        let servers =
            Endpoint::parse_list(&self.servers, DEFAULT_PORT).map_err(|e| e.to_string())?;
        if let Some(s) = self
            .servers
            .iter()
            .find(|s| Client::split_server(s).is_err())
        {
            // A bare host is fine in a config file, but here a port is
            // expected: say so in the old words.
            return Err(Client::split_server(s).unwrap_err());
        }
        if self.failover_after.is_some_and(|d| d.is_zero()) {
            return Err("failover_after must be above zero".into());
        }
        let mut server = ServerAddr::one(&servers[0].host, servers[0].port);
        server.set_servers(servers);
        if let Some(d) = self.failover_after {
            server.failover_after = d;
        }
        if self.streams.is_empty() {
            return Err("no files to stream".into());
        }
        if let Some((first, second)) = crate::config::overlap::duplicate(&self.streams) {
            let path = |i: usize| match &self.streams[i].source {
                Source::Path(p) => p.display().to_string(),
                Source::Directory { dir, .. } => dir.display().to_string(),
            };
            return Err(format!(
                "{:?} and {:?} are the same file, named twice; name each file once",
                path(first),
                path(second)
            ));
        }
        if let Some(h) = self.hostname.as_deref().filter(|h| !is_host_name(h)) {
            return Err(format!(
                "host name {h:?}: only letters, digits, '.', '_' and '-' are allowed"
            ));
        }
        Ok(ClientConfig {
            server,
            state_file: self
                .state_file
                .clone()
                .unwrap_or_else(default_client_state_file),
            hostname: self.hostname.clone(),
            debug: false,
            log_format: crate::log::Format::default(),
            follow_symlinks: false,
            tuning: self.tuning,
            prometheus: Prometheus::disabled(DEFAULT_PROMETHEUS_LISTEN),
            streams: self.streams.clone(),
            tls: None,
        })
    }

    pub fn build(&self) -> Result<ClientDaemon, ClientError> {
        let cfg = self.into_config().map_err(ClientError::Config)?;
        ClientDaemon::new(cfg, self.signals)
    }
}
