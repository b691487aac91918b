//! `loghamsterd` configuration: where to listen and where streams go.
//!
//! ```toml
//! debug = true
//! listen = "127.0.0.1:8000"
//! directory = "/tmp/out"          # default route: directory/<host>/<path>
//! accept_compression = ["gzip", "lz4", "zstd"]   # the default
//! max_connections = 16384         # see [`Limits`] for these five
//! max_connections_per_address = 4096
//! idle_timeout = "10m"
//! decoder_memory = "256MiB"
//! stream_retention = "720h"
//! [prometheus]
//! listen = ":8091"
//! enabled = true
//! [output.message]
//!     path = "/var/log/messages"
//! [output.nginx]
//!     path = "/var/log/remote/{host}/{file}"
//!     match = { svc = "nginx", host = "web*" }
//! [[token]]                       # see [`super::auth`]
//!     name = "web"
//!     sha256 = "<64 hex digits>"
//! [[allow]]
//!     token = "web"
//!     hosts = ["web*"]
//!     outputs = ["nginx"]
//! ```
//!
//! `directory` may be relative; it is then resolved against the daemon's
//! working directory when files are opened. Output names are tokens
//! (`[A-Za-z0-9_.-]+`) because clients select an output by naming it in
//! `svc`. Output templates are parsed at load time (see
//! [`super::template`]); a relative template is resolved against
//! `directory` and is an error without one. `match` patterns are globs in
//! which `*` does not cross `/`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::codec::Codec;

use super::auth::{AuthConfig, RawAllow, RawToken, DEFAULT_ROUTE};
use super::jetstream::{JetStreamConfig, RawJetStream};
use super::tls::{RawServerTls, ServerTls};
use super::{
    compile_glob, is_token, parse_toml, read_source, ConfigError, Doc, DurationValue, OrderedMap,
    Prometheus, RateValue, RawPrometheus, SizeValue, Template,
};
use crate::rate::Limit;

/// Default `listen` address.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8901);
/// Default `[prometheus] listen` address of `loghamsterd`.
pub const DEFAULT_PROMETHEUS_LISTEN: &str = "127.0.0.1:8091";

/// The whole server configuration. All values are validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Top-level `debug`, default false.
    pub debug: bool,
    /// Top-level `log_format`: text (default) or JSON lines.
    pub log_format: crate::log::Format,
    /// `listen = "ip:port"`, default `127.0.0.1:8901`.
    pub listen: SocketAddr,
    /// Root of the default route (`directory/<host>/<path>`); `None`
    /// disables the default route. A relative directory is resolved
    /// against the working directory.
    pub directory: Option<PathBuf>,
    /// `state_file`: where the server commits stream offsets; default
    /// `<directory>/.loghamsterd.state` (see [`ServerConfig::state_path`]).
    pub state_file: Option<PathBuf>,
    /// `[prometheus]` section (shared with the client, see
    /// [`Prometheus`]); default listen address [`DEFAULT_PROMETHEUS_LISTEN`].
    pub prometheus: Prometheus,
    /// `handshake_timeout = "10s"`: time a client has to complete INIT; > 0.
    pub handshake_timeout: Duration,
    /// `max_line = "1MiB"`: longest accepted line; >= 1.
    pub max_line: usize,
    /// `[output.NAME]` tables in file order; names are unique tokens.
    pub outputs: Vec<OutputConfig>,
    /// `sync = "none" | "interval" | "always"`: when outputs are made
    /// durable with `fdatasync` (default `interval`).
    pub sync: SyncPolicy,
    /// `sync_interval = "1s"`: how often outputs are synced (with
    /// `interval`) and the state file is committed; > 0.
    pub sync_interval: Duration,
    /// `engine = "auto" | "epoll" | "io_uring"`: how outputs are synced.
    pub engine: Engine,
    /// `accept_compression = ["gzip", "lz4", "zstd"]`: the codecs clients
    /// may compress streams with (default all; `[]` accepts plain streams
    /// only). A stream asking for another one is refused with `415`.
    pub accept_compression: Vec<Codec>,
    /// `connection_rate_limit = "50MiB/s"` (with `connection_burst`,
    /// default one second's worth): most bytes per second the server
    /// reads from each connection (compressed bytes for a compressed
    /// stream); `None`, the default, is unlimited. Excess waits in the
    /// client's file, held back by TCP.
    pub connection_rate_limit: Option<Limit>,
    /// Bounds that keep a hostile or broken client from exhausting the
    /// server (see [`Limits`]).
    pub limits: Limits,
    /// `[[token]]` and `[[allow]]`: who may write what (see
    /// [`super::auth`]); no rules, the default, is an open server.
    pub auth: AuthConfig,
    /// `[tls]`: the listener speaks TLS (see [`ServerTls`]); `None`: plain
    /// TCP only.
    pub tls: Option<ServerTls>,
}

/// What one client, or many, may take of the server; every value is a
/// top-level key. The defaults suit a small server and every loghamsterc
/// with its own defaults (it opens at most 4096 connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `max_connections = 16384`: connections open at once; further ones
    /// get `503 Too many connections` and are closed. The server lowers it
    /// to what its open-files limit allows (three descriptors per connection:
    /// socket, output and its splice descriptor, plus a reserve for its own files), so running out
    /// of descriptors never blocks a checkpoint or `accept`.
    pub max_connections: usize,
    /// `max_connections_per_address = 4096`: connections open at once from
    /// one source address; further ones get `503 Too many connections from
    /// your address`.
    pub max_connections_per_address: usize,
    /// `idle_timeout = "10m"`: a stream that sent nothing for this long is
    /// asked to finish (`421 Idle timeout`, then `250 DONE`) or, without
    /// `ack:1`, closed. loghamsterc closes its own idle connections after
    /// 5 minutes and reconnects when the file grows.
    pub idle_timeout: Duration,
    /// `decoder_memory = "256MiB"`: memory all decoders of compressed
    /// streams may hold together; a compressed stream that would pass it
    /// is refused with `503 Decoder memory exhausted`.
    pub decoder_memory: usize,
    /// `stream_retention = "720h"`: a resumable stream not connected for
    /// this long is forgotten; if its client comes back, the server takes
    /// the client's own `offset:` (what it had acknowledged) again.
    pub stream_retention: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 16_384,
            max_connections_per_address: 4096,
            idle_timeout: Duration::from_secs(600),
            decoder_memory: 256 << 20,
            stream_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl std::fmt::Display for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max_connections {} ({} per address), idle_timeout {}s, decoder_memory {} MiB, stream_retention {}h",
            self.max_connections,
            self.max_connections_per_address,
            self.idle_timeout.as_secs_f64(),
            self.decoder_memory >> 20,
            self.stream_retention.as_secs() / 3600
        )
    }
}

/// Which kernel interface makes outputs durable. Sockets and files are
/// always driven by epoll (mio) with splice/sendfile: measured, that is
/// the faster path for them. io_uring pays for `fdatasync`, which it runs
/// without stalling the loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// io_uring where available, else blocking `fdatasync` (logged once).
    #[default]
    Auto,
    /// Blocking `fdatasync` in the loop.
    Epoll,
    /// io_uring or refuse to start.
    IoUring,
}

/// When the server makes outputs durable, and so when it acknowledges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Never `fdatasync`; `ACK` as soon as data is written to the output
    /// (it survives a crash of the server, not a power loss).
    None,
    /// `fdatasync` every written output, then commit the state file, every
    /// `sync_interval`; `ACK` what was committed.
    #[default]
    Interval,
    /// `fdatasync` after every batch before acknowledging it.
    Always,
}

/// One `[output.NAME]` table.
#[derive(Debug, Clone)]
pub struct OutputConfig {
    /// The table name; a token (`[A-Za-z0-9_.-]+`).
    pub name: String,
    /// The `path` template as written (a JetStream output: its subject).
    pub path: String,
    /// Where its streams go: files, or a JetStream stream.
    pub kind: OutputKind,
    /// `match` table in file order: (key, compiled glob, glob text). Keys
    /// `host` and `path` match the stream's host and path, any other key a
    /// meta value (`svc` included). Empty means "no match table".
    pub matchers: Vec<(String, globset::GlobMatcher, String)>,
}

/// What an output is.
#[derive(Debug, Clone)]
pub enum OutputKind {
    /// `path`, parsed and validated; what routing uses.
    File(Template),
    /// `jetstream = { ... }`: messages in a JetStream stream.
    JetStream(Box<JetStreamConfig>),
}

impl OutputConfig {
    /// The path template of a file output.
    pub fn template(&self) -> Option<&Template> {
        match &self.kind {
            OutputKind::File(t) => Some(t),
            OutputKind::JetStream(_) => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    debug: Option<bool>,
    log_format: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    directory: Option<Spanned<PathBuf>>,
    state_file: Option<PathBuf>,
    prometheus: Option<RawPrometheus>,
    handshake_timeout: Option<Spanned<DurationValue>>,
    max_line: Option<Spanned<SizeValue>>,
    sync: Option<SyncPolicy>,
    sync_interval: Option<Spanned<DurationValue>>,
    engine: Option<Engine>,
    accept_compression: Option<Spanned<Vec<Spanned<String>>>>,
    connection_rate_limit: Option<RateValue>,
    connection_burst: Option<Spanned<SizeValue>>,
    max_connections: Option<Spanned<usize>>,
    max_connections_per_address: Option<Spanned<usize>>,
    idle_timeout: Option<Spanned<DurationValue>>,
    decoder_memory: Option<Spanned<SizeValue>>,
    stream_retention: Option<Spanned<DurationValue>>,
    tls: Option<RawServerTls>,
    output: Option<OrderedMap<RawOutput>>,
    token: Option<Vec<Spanned<RawToken>>>,
    allow: Option<Vec<Spanned<RawAllow>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    path: Option<Spanned<String>>,
    jetstream: Option<Spanned<RawJetStream>>,
    #[serde(rename = "match")]
    matches: Option<Spanned<OrderedMap<Spanned<String>>>>,
}

impl ServerConfig {
    /// Reads and validates a server configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<ServerConfig, ConfigError> {
        let path = path.as_ref();
        let src = read_source(path)?;
        ServerConfig::from_toml_str(&src, path)
    }

    /// Parses and validates configuration text, with `${VAR}` in string
    /// values expanded from the environment; `path_for_messages` only
    /// appears in errors.
    pub fn from_toml_str(
        src: &str,
        path_for_messages: impl AsRef<Path>,
    ) -> Result<ServerConfig, ConfigError> {
        let path = path_for_messages.as_ref();
        let src = &*super::expand_env(src, path)?;
        let raw: RawServer = parse_toml(src, path)?;
        raw.validate(&Doc { src, path })
    }

    /// A configuration without a file: defaults plus command-line flags,
    /// no outputs (everything takes the default route).
    pub fn from_flags(
        listen: Option<SocketAddr>,
        directory: Option<PathBuf>,
        debug: bool,
    ) -> ServerConfig {
        ServerConfig {
            debug,
            log_format: crate::log::Format::default(),
            listen: listen.unwrap_or(DEFAULT_LISTEN),
            directory,
            state_file: None,
            prometheus: Prometheus::disabled(DEFAULT_PROMETHEUS_LISTEN),
            handshake_timeout: Duration::from_secs(10),
            max_line: 1 << 20,
            outputs: Vec::new(),
            sync: SyncPolicy::default(),
            sync_interval: Duration::from_secs(1),
            engine: Engine::default(),
            accept_compression: Codec::ALL.to_vec(),
            connection_rate_limit: None,
            limits: Limits::default(),
            auth: AuthConfig::default(),
            tls: None,
        }
    }
}

impl ServerConfig {
    /// The state file to use: `state_file`, else `.loghamsterd.state` in
    /// `directory` (host names cannot start with `.`, so no stream can be
    /// routed onto it), else none (offsets are kept in memory only).
    pub fn state_path(&self) -> Option<PathBuf> {
        self.state_file.clone().or_else(|| {
            self.directory
                .as_ref()
                .map(|d| d.join(".loghamsterd.state"))
        })
    }
}

impl RawServer {
    fn validate(self, doc: &Doc<'_>) -> Result<ServerConfig, ConfigError> {
        let mut cfg = ServerConfig::from_flags(None, None, self.debug.unwrap_or(false));
        cfg.log_format = doc.log_format(self.log_format)?;
        if let Some(l) = self.listen {
            cfg.listen = crate::cli::listen_addr(l.get_ref()).map_err(|why| {
                let e = doc.err_at(
                    l.span(),
                    format!(
                        "`listen` \"{}\": {why}; expected ip:port, e.g. \"127.0.0.1:8901\"",
                        l.get_ref()
                    ),
                );
                if l.get_ref().starts_with(':') {
                    e.with_hint(format!(
                        "for all interfaces write \"0.0.0.0{0}\" or \"[::]{0}\"",
                        l.get_ref()
                    ))
                } else {
                    e
                }
            })?;
        }
        if let Some(d) = &self.directory {
            if d.get_ref().as_os_str().is_empty() {
                return Err(doc.err_at(d.span(), "`directory` must not be empty"));
            }
        }
        cfg.directory = self.directory.map(Spanned::into_inner);
        cfg.state_file = self.state_file;
        if let Some(p) = self.prometheus {
            cfg.prometheus = p.validate(doc, DEFAULT_PROMETHEUS_LISTEN)?;
        }
        if let Some(t) = self.handshake_timeout {
            if t.get_ref().0.is_zero() {
                return Err(doc.err_at(t.span(), "`handshake_timeout` must be greater than 0"));
            }
            cfg.handshake_timeout = t.get_ref().0;
        }
        if let Some(m) = self.max_line {
            if m.get_ref().0 == 0 {
                return Err(doc.err_at(m.span(), "`max_line` must be at least 1 byte"));
            }
            cfg.max_line = m.get_ref().0;
        }
        cfg.sync = self.sync.unwrap_or_default();
        cfg.engine = self.engine.unwrap_or_default();
        if let Some(t) = self.sync_interval {
            if t.get_ref().0.is_zero() {
                return Err(doc.err_at(t.span(), "`sync_interval` must be greater than 0"));
            }
            cfg.sync_interval = t.get_ref().0;
        }
        if let Some(list) = self.accept_compression {
            cfg.accept_compression.clear();
            for name in list.into_inner() {
                let Some(codec) = Codec::from_name(name.get_ref()) else {
                    let all: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
                    return Err(doc.err_at(
                        name.span(),
                        format!(
                            "`accept_compression`: unknown codec \"{}\", expected some of \"{}\"",
                            name.get_ref(),
                            all.join("\", \"")
                        ),
                    ));
                };
                if !cfg.accept_compression.contains(&codec) {
                    cfg.accept_compression.push(codec);
                }
            }
        }
        cfg.connection_rate_limit = match (self.connection_rate_limit, self.connection_burst) {
            (None, None) => None,
            (None, Some(b)) => {
                return Err(doc.err_at(
                    b.span(),
                    "`connection_burst` needs a `connection_rate_limit`",
                ))
            }
            (Some(r), b) => Some(Limit {
                bytes_per_sec: r.0,
                burst: b.map_or(r.0, |b| b.into_inner().0.max(1) as u64),
            }),
        };
        cfg.limits = limits(
            doc,
            [self.max_connections, self.max_connections_per_address],
            [self.idle_timeout, self.stream_retention],
            self.decoder_memory,
        )?;
        cfg.tls = self.tls.map(|t| t.validate(doc)).transpose()?;
        for (name, raw) in self.output.map_or_else(Vec::new, |o| o.0) {
            let out = raw.validate(doc, name, cfg.directory.as_deref())?;
            cfg.outputs.push(out);
        }
        let mut names: Vec<&str> = cfg.outputs.iter().map(|o| o.name.as_str()).collect();
        if cfg.directory.is_some() {
            names.push(DEFAULT_ROUTE);
        }
        cfg.auth = super::auth::validate(
            doc,
            self.token.unwrap_or_default(),
            self.allow.unwrap_or_default(),
            &names,
        )?;
        Ok(cfg)
    }
}

/// Validates the [`Limits`] keys: counts at least 1, durations above 0;
/// `decoder_memory` may be 0 (compressed streams are then refused).
fn limits(
    doc: &Doc<'_>,
    [conns, per_addr]: [Option<Spanned<usize>>; 2],
    [idle, retention]: [Option<Spanned<DurationValue>>; 2],
    memory: Option<Spanned<SizeValue>>,
) -> Result<Limits, ConfigError> {
    let mut l = Limits::default();
    for (key, v, slot) in [
        ("max_connections", conns, &mut l.max_connections),
        (
            "max_connections_per_address",
            per_addr,
            &mut l.max_connections_per_address,
        ),
    ] {
        if let Some(v) = v {
            if *v.get_ref() == 0 {
                return Err(doc.err_at(v.span(), format!("`{key}` must be at least 1")));
            }
            *slot = v.into_inner();
        }
    }
    for (key, v, slot) in [
        ("idle_timeout", idle, &mut l.idle_timeout),
        ("stream_retention", retention, &mut l.stream_retention),
    ] {
        if let Some(v) = v {
            if v.get_ref().0.is_zero() {
                return Err(doc.err_at(v.span(), format!("`{key}` must be greater than 0")));
            }
            *slot = v.into_inner().0;
        }
    }
    if let Some(m) = memory {
        l.decoder_memory = m.into_inner().0;
    }
    Ok(l)
}

impl RawOutput {
    fn validate(
        self,
        doc: &Doc<'_>,
        name: String,
        directory: Option<&Path>,
    ) -> Result<OutputConfig, ConfigError> {
        let (path, kind) = match (self.path, self.jetstream) {
            (Some(p), None) => {
                let t = Template::parse(p.get_ref(), directory)
                    .map_err(|e| doc.err_at(p.span(), format!("`output.{name}.path`: {e}")))?;
                (p, OutputKind::File(t))
            }
            (None, Some(js)) => {
                let span = js.span();
                let js = js.into_inner().validate(doc, &name, span.clone())?;
                let subject = Spanned::new(span, js.subject_text.clone());
                (subject, OutputKind::JetStream(Box::new(js)))
            }
            (Some(p), Some(_)) => {
                return Err(doc.err_at(
                    p.span(),
                    format!("`output.{name}` has both a `path` and a `jetstream` table; an output is a file or a JetStream stream"),
                ))
            }
            (None, None) => {
                return Err(doc.err(format!(
                    "`output.{name}` needs a `path` (files) or a `jetstream` table"
                )))
            }
        };
        if !is_token(&name) {
            return Err(doc.err_at(
                path.span(),
                format!("output name {name:?}: may contain only letters, digits, '_', '.', '-'"),
            ));
        }
        let mut matchers = Vec::new();
        if let Some(m) = self.matches {
            let span = m.span();
            let entries = m.into_inner().0;
            if entries.is_empty() {
                return Err(doc
                    .err_at(span, format!("`output.{name}.match` is empty"))
                    .with_hint("remove it to select this output by svc name"));
            }
            for (key, glob) in entries {
                if !is_token(&key) {
                    return Err(doc.err_at(
                        glob.span(),
                        format!("`output.{name}.match`: key {key:?} may contain only letters, digits, '_', '.', '-'"),
                    ));
                }
                let matcher = compile_glob(glob.get_ref()).map_err(|e| {
                    doc.err_at(glob.span(), format!("`output.{name}.match.{key}`: {e}"))
                })?;
                matchers.push((key, matcher, glob.into_inner()));
            }
        }
        Ok(OutputConfig {
            name,
            path: path.into_inner(),
            kind,
            matchers,
        })
    }
}
