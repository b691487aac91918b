//! The library face of the client, after the original design's
//! `client := loghamster.NewClient("log.example.com:8901")` /
//! `client.StreamFile("/var/log/app.log")`.

use std::path::{Path, PathBuf};

use super::{ClientDaemon, ClientError};
use crate::config::client::{
    default_client_state_file, Compression, ServerAddr, Tuning, DEFAULT_PROMETHEUS_LISTEN,
};
use crate::config::{ClientConfig, Method, OnRotate, Prometheus, Source, StreamConfig};
use crate::proto::is_host_name;

/// A client under construction: a server address and the files to stream.
///
/// `build()` checks everything and returns a [`ClientDaemon`] ready to
/// `run()`; its [`stop_handle`](ClientDaemon::stop_handle) stops it
/// cleanly from another thread.
#[derive(Debug, Clone)]
pub struct Client {
    server: String,
    streams: Vec<StreamConfig>,
    state_file: Option<PathBuf>,
    hostname: Option<String>,
    tuning: Tuning,
    signals: bool,
}

impl Client {
    /// A client for `server` given as `host:port`.
    pub fn new(server: &str) -> Client {
        Client {
            server: server.to_string(),
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
        let (hostname, port) = Client::split_server(&self.server)?;
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
            server: ServerAddr {
                hostname,
                port,
                compression: Compression::default(),
                token: None,
            },
            state_file: self
                .state_file
                .clone()
                .unwrap_or_else(default_client_state_file),
            hostname: self.hostname.clone(),
            debug: false,
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
