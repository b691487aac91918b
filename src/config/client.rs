//! `loghamsterc` configuration: the server to send to, tuning knobs and the
//! list of `[[stream]]`s.
//!
//! ```toml
//! state_file = "/var/lib/loghamster/client.state"   # optional
//! [server]
//! hostname = "log.mgmt.neotel.at"   # one server, or several:
//! # hostnames = ["log1:8901", "log2:8901", "log3"]   (streams spread, fail over)
//! port = 8901                 # for a hostname (or an entry) without one
//! failover_after = "10s"      # several servers: move a stream after this long
//! resolve_all = false         # true: every address of a name is a server
//! compression = "zstd"        # or "none" (default), "gzip", "lz4"
//! compression_level = 3       # optional: gzip 1-9 (6), zstd 1-19 (3)
//! token_file = "/etc/loghamster/token"   # optional: <name>:<secret>, mode 600
//! [[stream]]
//! path = "/var/log/messages"
//! [[stream]]
//! directory = "/var/log/sipproxyd/backup"
//! filepattern = '*.log.*.gz'
//! meta = { env = "prod" }
//! [prometheus]                # optional: serve /metrics and /health
//! listen = "127.0.0.1:9101"
//! ```
//!
//! `[prometheus]` is the server's section (see [`super::Prometheus`]) with
//! another default address, [`DEFAULT_PROMETHEUS_LISTEN`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use super::auth::ClientToken;
pub use super::servers::{Endpoint, EntryError};
use super::tls::{ClientTls, RawClientTls};
use super::{
    compile_glob, is_token, parse_toml, read_source, ConfigError, Doc, DurationValue, OrderedMap,
    Prometheus, RateValue, RawPrometheus, SizeValue,
};
pub use crate::codec::Codec;
use crate::proto::is_host_name;
pub use crate::rate::Limit;

/// Default server port.
pub const DEFAULT_PORT: u16 = 8901;
/// Default `[prometheus] listen` address of `loghamsterc` (the server's is
/// 8091, so both can run on one host with their defaults).
pub const DEFAULT_PROMETHEUS_LISTEN: &str = "127.0.0.1:9101";

/// Meta keys a client may not set: used by the protocol (`id`, `offset`,
/// `ack`, `compression`, `token`) or by the server's matching and
/// templates (`host`, `path`), or with their own config key (`svc`).
pub const RESERVED_META_KEYS: &[&str] = &[
    "id",
    "offset",
    "part_offset",
    "ack",
    "compression",
    "token",
    "host",
    "path",
    "svc",
];

/// The whole client configuration. All values are validated.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where to send streams (required `[server]` section).
    pub server: ServerAddr,
    /// Where read positions are persisted; default
    /// [`default_client_state_file`].
    pub state_file: PathBuf,
    /// Top-level `hostname`: overrides the host name sent in INIT. When set
    /// it is non-empty, only `[A-Za-z0-9._-]`, and not `.`/`..`.
    pub hostname: Option<String>,
    /// Top-level `debug`, default false.
    pub debug: bool,
    /// Top-level `log_format`: text (default) or JSON lines.
    pub log_format: crate::log::Format,
    /// Top-level `follow_symlinks`, default false: a symlink at a followed
    /// path, among a directory's files, or rotated in is not opened (one
    /// WARN per path) unless this is true.
    pub follow_symlinks: bool,
    /// Optional `[tuning]` section.
    pub tuning: Tuning,
    /// Optional `[prometheus]` section: the metrics endpoint; default
    /// disabled, listen address [`DEFAULT_PROMETHEUS_LISTEN`].
    pub prometheus: Prometheus,
    /// The `[[stream]]`s in file order; never empty.
    pub streams: Vec<StreamConfig>,
    /// `[tls]`: connect with TLS (see [`ClientTls`]); `None`: plain TCP.
    pub tls: Option<ClientTls>,
}

/// Default `[server] failover_after`.
pub const DEFAULT_FAILOVER_AFTER: Duration = Duration::from_secs(10);

/// `[server] multiplex` when not set: followed files share one connection
/// per server. A host with many files sending a few lines each pays the
/// TCP path once per turn instead of once per file and send (half the
/// client's CPU at 1,000 files, docs/PERFORMANCE.md); a file with a
/// backlog and a whole file still get a connection of their own, so one
/// stream keeps the zero-copy paths.
pub const DEFAULT_MULTIPLEX: bool = true;

/// The `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Host name or IP address of the first server (`servers[0]`); kept
    /// for callers that know one server.
    pub hostname: String,
    /// TCP port of the first server, default 8901; never 0.
    pub port: u16,
    /// Every server, in the order configured; never empty, no server
    /// twice, `servers[0]` is `hostname:port`. Set it with
    /// [`ServerAddr::set_servers`] to keep the two in step.
    pub servers: Vec<Endpoint>,
    /// `resolve_all`: a name with several addresses is several servers.
    pub resolve_all: bool,
    /// `failover_after`: how long a server may be unreachable or refuse a
    /// stream before the stream moves to its next server (several servers
    /// only). Never zero.
    pub failover_after: Duration,
    /// Stream compression, default none.
    pub compression: Compression,
    /// `token_file`: the named token sent in every INIT, read (and
    /// checked: one `<name>:<secret>` line, mode 600) at load; `None`
    /// without one.
    pub token: Option<ClientToken>,
    /// `multiplex`: followed files share one connection per server
    /// (`INIT MUX`, see docs/PROTOCOL.md); default [`DEFAULT_MULTIPLEX`].
    pub multiplex: bool,
}

/// Wire compression: `compression` and `compression_level` in `[server]`.
/// Invariant: `level` is set only for a codec with levels, and within
/// [`Codec::levels`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compression {
    /// `None` (the default, `"none"`): bytes are sent as read.
    pub codec: Option<Codec>,
    /// The codec's default level when `None`.
    pub level: Option<i32>,
}

impl Compression {
    /// Parses the command line's form: `none`, `<codec>` or
    /// `<codec>:<level>` (e.g. `zstd:9`).
    pub fn parse(text: &str) -> Result<Compression, String> {
        let (name, level) = match text.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (text, None),
        };
        if name == "none" && level.is_none() {
            return Ok(Compression::default());
        }
        let codec = Codec::from_name(name)
            .ok_or_else(|| format!("unknown codec \"{name}\", expected none, gzip, lz4 or zstd"))?;
        let level = match (level, codec.levels()) {
            (None, _) => None,
            (Some(_), None) => return Err(format!("{codec} has no levels")),
            (Some(l), Some(range)) => match l.parse::<i32>() {
                Ok(n) if range.contains(&n) => Some(n),
                _ => {
                    return Err(format!(
                        "{codec} levels are {} to {}, not \"{l}\"",
                        range.start(),
                        range.end()
                    ))
                }
            },
        };
        Ok(Compression {
            codec: Some(codec),
            level,
        })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (
            self.codec,
            self.level.or(self.codec.and_then(Codec::default_level)),
        ) {
            (None, _) => f.write_str("none"),
            (Some(c), Some(l)) => write!(f, "{c} level {l}"),
            (Some(c), None) => write!(f, "{c}"),
        }
    }
}

/// The optional `[tuning]` section. Invariants: `1 <= batch_bytes <=
/// max_batch_bytes`, `0 < reconnect_min <= reconnect_max`,
/// `state_interval > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// `batch = "4KiB"`: minimum bytes per send, default 4096.
    pub batch_bytes: usize,
    /// `max_batch = "256KiB"`: maximum bytes per send, default 256 KiB.
    pub max_batch_bytes: usize,
    /// `linger = "20ms"`: max time a batch smaller than `batch_bytes` waits.
    pub linger: Duration,
    /// `partial_line_timeout = "5s"`: a trailing line without newline is
    /// held back at most this long (from when it was first seen), then sent.
    pub partial_line_timeout: Duration,
    /// `reconnect_min = "200ms"`: first reconnect back-off.
    pub reconnect_min: Duration,
    /// `reconnect_max = "30s"`: back-off cap.
    pub reconnect_max: Duration,
    /// `state_interval = "1s"`: how often a dirty state file is rewritten.
    pub state_interval: Duration,
    /// `shutdown_timeout = "5s"`: how long shutdown waits for acks.
    pub shutdown_timeout: Duration,
    /// `max_connections = 4096`: most connections open at once; further
    /// streams with data wait for a slot (>= 1).
    pub max_connections: usize,
    /// `rate_limit = "100MiB/s"` (with `burst`): most bytes per second for
    /// the whole client, on top of any per-stream limit.
    pub rate_limit: Option<Limit>,
    /// `max_open_files = 0`: most followed files held open at once; above
    /// it, files with everything read and acknowledged are closed ("parked")
    /// and reopened (checked by identity) when their directory reports a
    /// change. 0: the open-files limit minus `max_connections` and a reserve.
    pub max_open_files: usize,
    /// `idle_close = "5m"`: a connection idle this long (everything sent
    /// and acknowledged) is closed; when streams wait for a slot, after 1 s.
    pub idle_close: Duration,
    /// `deleted_hold = "1h"`: how long a deleted file that could not be
    /// delivered to its end is kept open (its disk space is only freed
    /// when it is released); then its rest is abandoned and logged.
    pub deleted_hold: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            batch_bytes: 4096,
            max_batch_bytes: 256 * 1024,
            linger: Duration::from_millis(20),
            partial_line_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            state_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(5),
            deleted_hold: Duration::from_secs(3600),
            max_connections: 4096,
            max_open_files: 0,
            rate_limit: None,
            idle_close: Duration::from_secs(300),
        }
    }
}

/// One `[[stream]]`.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// What to read: one file or matching files in a directory.
    pub source: Source,
    /// `method`: `"watch"` (default) or `"send"`.
    pub method: Method,
    /// `onrotate`: `"follow"` (default) or `"stop"`.
    pub onrotate: OnRotate,
    /// `svc`: service name sent to the server; a valid token
    /// (`[A-Za-z0-9_.-]+`).
    pub svc: Option<String>,
    /// `meta = { env = "prod" }` in file order. Keys are tokens and not in
    /// [`RESERVED_META_KEYS`]; values are non-empty without whitespace or
    /// control characters.
    pub meta: Vec<(String, String)>,
    /// `delete`: remove the file once fully sent, default false.
    pub delete: bool,
    /// `rate_limit = "20MiB/s"` (with `burst`, default one second's
    /// worth): most bytes per second for all files of this stream together.
    pub rate_limit: Option<Limit>,
}

/// Where a stream's data comes from. Paths are non-empty.
#[derive(Debug, Clone)]
pub enum Source {
    /// `path = "/var/log/messages"`
    Path(PathBuf),
    /// `directory = "..."` with `filepattern` (default `"*"`) matched
    /// against file names (the pattern contains no `/`).
    Directory {
        /// The directory to watch.
        dir: PathBuf,
        /// Compiled `pattern_text`.
        pattern: globset::GlobMatcher,
        /// The `filepattern` as written.
        pattern_text: String,
    },
}

/// How a stream is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Follow the file and send new data as it is written.
    #[default]
    Watch,
    /// Send existing files once, after they were closed/rotated.
    Send,
}

/// What to do when a followed file is rotated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRotate {
    /// Finish the old file, then continue with the new one at the path.
    #[default]
    Follow,
    /// Finish the old file and stop.
    Stop,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    server: Option<RawServerAddr>,
    state_file: Option<PathBuf>,
    hostname: Option<Spanned<String>>,
    debug: Option<bool>,
    log_format: Option<Spanned<String>>,
    follow_symlinks: Option<bool>,
    tuning: Option<RawTuning>,
    prometheus: Option<RawPrometheus>,
    tls: Option<RawClientTls>,
    stream: Option<Vec<RawStream>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerAddr {
    hostname: Option<Spanned<String>>,
    hostnames: Option<Spanned<Vec<String>>>,
    resolve_all: Option<bool>,
    failover_after: Option<Spanned<DurationValue>>,
    port: Option<Spanned<i64>>,
    compression: Option<Spanned<String>>,
    compression_level: Option<Spanned<i32>>,
    token_file: Option<Spanned<PathBuf>>,
    multiplex: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTuning {
    batch: Option<Spanned<SizeValue>>,
    max_batch: Option<Spanned<SizeValue>>,
    linger: Option<DurationValue>,
    partial_line_timeout: Option<DurationValue>,
    reconnect_min: Option<Spanned<DurationValue>>,
    reconnect_max: Option<Spanned<DurationValue>>,
    state_interval: Option<Spanned<DurationValue>>,
    shutdown_timeout: Option<DurationValue>,
    deleted_hold: Option<DurationValue>,
    max_connections: Option<usize>,
    max_open_files: Option<usize>,
    rate_limit: Option<RateValue>,
    burst: Option<Spanned<SizeValue>>,
    idle_close: Option<DurationValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    path: Option<Spanned<PathBuf>>,
    directory: Option<Spanned<PathBuf>>,
    filepattern: Option<Spanned<String>>,
    method: Option<Method>,
    onrotate: Option<OnRotate>,
    svc: Option<Spanned<String>>,
    meta: Option<OrderedMap<Spanned<String>>>,
    delete: Option<bool>,
    rate_limit: Option<RateValue>,
    burst: Option<Spanned<SizeValue>>,
}

impl ClientConfig {
    /// Reads and validates a client configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<ClientConfig, ConfigError> {
        let path = path.as_ref();
        let src = read_source(path)?;
        ClientConfig::from_toml_str(&src, path)
    }

    /// Parses and validates configuration text, with `${VAR}` in string
    /// values expanded from the environment; `path_for_messages` only
    /// appears in errors.
    pub fn from_toml_str(
        src: &str,
        path_for_messages: impl AsRef<Path>,
    ) -> Result<ClientConfig, ConfigError> {
        let path = path_for_messages.as_ref();
        let src = &*super::expand_env(src, path)?;
        let raw: RawClient = parse_toml(src, path)?;
        raw.validate(&Doc { src, path })
    }
}

impl RawClient {
    fn validate(self, doc: &Doc<'_>) -> Result<ClientConfig, ConfigError> {
        let server = self.server.ok_or_else(|| {
            doc.err("missing [server] section")
                .with_hint("add [server] with at least hostname = \"...\"")
        })?;
        let hostname = match self.hostname {
            Some(h) if !is_host_name(h.get_ref()) => {
                return Err(doc.err_at(
                    h.span(),
                    format!(
                        "`hostname` \"{}\": must be non-empty, only letters, digits, '.', '_', '-', and not \".\" or \"..\"",
                        h.get_ref()
                    ),
                ))
            }
            h => h.map(Spanned::into_inner),
        };
        let raw_streams = self.stream.unwrap_or_default();
        if raw_streams.is_empty() {
            return Err(doc
                .err("no [[stream]] configured; nothing to send")
                .with_hint("add [[stream]] with path = \"/var/log/...\""));
        }
        let spans: Vec<_> = raw_streams.iter().map(RawStream::source_span).collect();
        let streams: Vec<StreamConfig> = raw_streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.validate(doc, i))
            .collect::<Result<_, _>>()?;
        if let Some((first, second)) = super::overlap::duplicate(&streams) {
            let line = |i: usize| spans[i].clone().map(|s| super::line_of(doc.src, s.start));
            let at = |i: usize| line(i).map_or(String::new(), |l| format!(" (line {l})"));
            let message = format!(
                "stream #{}{} reads the same file as stream #{}{}: {}; a file can belong to only one [[stream]]",
                second + 1,
                at(second),
                first + 1,
                at(first),
                super::overlap::Reach::of(&streams[second]),
            );
            return Err(ConfigError {
                line: line(second),
                ..doc.err(message)
            });
        }
        Ok(ClientConfig {
            server: server.validate(doc)?,
            state_file: self.state_file.unwrap_or_else(default_client_state_file),
            hostname,
            debug: self.debug.unwrap_or(false),
            log_format: doc.log_format(self.log_format)?,
            follow_symlinks: self.follow_symlinks.unwrap_or(false),
            tuning: self
                .tuning
                .map_or(Ok(Tuning::default()), |t| t.validate(doc))?,
            prometheus: match self.prometheus {
                Some(p) => p.validate(doc, DEFAULT_PROMETHEUS_LISTEN)?,
                None => Prometheus::disabled(DEFAULT_PROMETHEUS_LISTEN),
            },
            streams,
            tls: self.tls.map(|t| t.validate(doc)).transpose()?,
        })
    }
}

impl RawServerAddr {
    fn validate(self, doc: &Doc<'_>) -> Result<ServerAddr, ConfigError> {
        let port = match self.port {
            Some(p) => {
                let text = p.get_ref().to_string();
                let port = match *p.get_ref() < 0 {
                    true => Err(crate::cli::AddrError::OutOfRange { port: text, min: 1 }),
                    false => crate::cli::connect_port(&text),
                };
                port.map_err(|e| doc.err_at(p.span(), format!("`server.port`: {e}")))?
            }
            None => DEFAULT_PORT,
        };
        let servers = match (self.hostname, self.hostnames) {
            (Some(h), None) if h.get_ref().trim().is_empty() => {
                return Err(doc.err_at(h.span(), "`server.hostname` must not be empty"));
            }
            (Some(h), None) => Endpoint::parse_list(&[h.get_ref()], port)
                .map_err(|e| doc.err_at(h.span(), format!("`server.hostname`: {e}")))?,
            (None, Some(list)) => Endpoint::parse_list(list.get_ref(), port)
                .map_err(|e| doc.err_at(list.span(), format!("`server.hostnames`: {e}")))?,
            (Some(h), Some(_)) => {
                return Err(doc.err_at(
                    h.span(),
                    "give either `server.hostname` (one server) or `server.hostnames` (a list), not both",
                ))
            }
            (None, None) => {
                return Err(doc
                    .err("[server] names no server")
                    .with_hint("add hostname = \"...\" or hostnames = [\"log1:8901\", ...]"))
            }
        };
        let failover_after = match self.failover_after {
            None => DEFAULT_FAILOVER_AFTER,
            Some(d) if d.get_ref().0.is_zero() => {
                return Err(doc.err_at(d.span(), "`server.failover_after` must be above zero"))
            }
            Some(d) => d.into_inner().0,
        };
        let names = || {
            let all: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
            format!("\"none\", \"{}\"", all.join("\", \""))
        };
        let codec = match &self.compression {
            None => None,
            Some(c) if c.get_ref() == "none" => None,
            Some(c) => match Codec::from_name(c.get_ref()) {
                Some(codec) => Some(codec),
                None => {
                    return Err(doc.err_at(
                        c.span(),
                        format!(
                            "`server.compression`: unknown codec \"{}\", expected one of {}",
                            c.get_ref(),
                            names()
                        ),
                    ))
                }
            },
        };
        let level = match (self.compression_level, codec) {
            (None, _) => None,
            (Some(l), None) => {
                return Err(doc.err_at(
                    l.span(),
                    "`server.compression_level` needs a `compression` codec",
                ))
            }
            (Some(l), Some(codec)) => match codec.levels() {
                Some(range) if range.contains(l.get_ref()) => Some(l.into_inner()),
                Some(range) => {
                    return Err(doc.err_at(
                        l.span(),
                        format!(
                            "`server.compression_level`: {codec} levels are {} to {}, not {}",
                            range.start(),
                            range.end(),
                            l.get_ref()
                        ),
                    ))
                }
                None => {
                    return Err(doc.err_at(
                        l.span(),
                        format!("`server.compression_level`: {codec} has no levels"),
                    ))
                }
            },
        };
        let compression = Compression { codec, level };
        let token = match self.token_file {
            None => None,
            Some(f) => Some(ClientToken::read(f.get_ref()).map_err(|e| {
                doc.err_at(
                    f.span(),
                    format!("`server.token_file` {}: {e}", f.get_ref().display()),
                )
            })?),
        };
        let mut addr = ServerAddr::one(&servers[0].host, servers[0].port);
        addr.set_servers(servers);
        addr.resolve_all = self.resolve_all.unwrap_or(false);
        addr.failover_after = failover_after;
        addr.compression = compression;
        addr.token = token;
        addr.multiplex = self.multiplex.unwrap_or(DEFAULT_MULTIPLEX);
        Ok(addr)
    }
}

impl ServerAddr {
    /// One server, with every other setting at its default.
    pub fn one(host: &str, port: u16) -> ServerAddr {
        ServerAddr {
            hostname: host.to_string(),
            port,
            servers: vec![Endpoint {
                host: host.to_string(),
                port,
            }],
            resolve_all: false,
            failover_after: DEFAULT_FAILOVER_AFTER,
            compression: Compression::default(),
            token: None,
            multiplex: DEFAULT_MULTIPLEX,
        }
    }

    /// Replaces the servers (`servers` must not be empty; an empty list
    /// is ignored) and keeps `hostname` and `port` naming the first.
    pub fn set_servers(&mut self, servers: Vec<Endpoint>) {
        if let Some(first) = servers.first() {
            self.hostname = first.host.clone();
            self.port = first.port;
            self.servers = servers;
        }
    }

    /// The servers as `host:port` text, comma-separated (for messages).
    pub fn list(&self) -> String {
        let all: Vec<String> = self.servers.iter().map(Endpoint::to_string).collect();
        all.join(", ")
    }
}

impl RawTuning {
    fn validate(self, doc: &Doc<'_>) -> Result<Tuning, ConfigError> {
        let d = Tuning::default();
        let size = |v: Option<Spanned<SizeValue>>, dflt| v.map_or(dflt, |v| v.get_ref().0);
        let dur = |v: Option<Spanned<DurationValue>>, dflt| v.map_or(dflt, |v| v.get_ref().0);
        let t = Tuning {
            batch_bytes: size(self.batch.clone(), d.batch_bytes),
            max_batch_bytes: size(self.max_batch.clone(), d.max_batch_bytes),
            linger: self.linger.map_or(d.linger, |v| v.0),
            partial_line_timeout: self
                .partial_line_timeout
                .map_or(d.partial_line_timeout, |v| v.0),
            reconnect_min: dur(self.reconnect_min.clone(), d.reconnect_min),
            reconnect_max: dur(self.reconnect_max.clone(), d.reconnect_max),
            state_interval: dur(self.state_interval.clone(), d.state_interval),
            shutdown_timeout: self.shutdown_timeout.map_or(d.shutdown_timeout, |v| v.0),
            deleted_hold: self.deleted_hold.map_or(d.deleted_hold, |v| v.0),
            max_connections: self.max_connections.unwrap_or(d.max_connections).max(1),
            max_open_files: self.max_open_files.unwrap_or(d.max_open_files),
            rate_limit: limit(doc, "[tuning]", self.rate_limit, self.burst.clone())?,
            idle_close: self.idle_close.map_or(d.idle_close, |v| v.0),
        };
        let at = |span: Option<std::ops::Range<usize>>, msg: &str| match span {
            Some(s) => doc.err_at(s, msg),
            None => doc.err(msg),
        };
        if t.batch_bytes == 0 {
            return Err(at(
                self.batch.map(|s| s.span()),
                "`tuning.batch` must be at least 1 byte",
            ));
        }
        if t.max_batch_bytes < t.batch_bytes {
            let span = self.max_batch.or(self.batch).map(|s| s.span());
            return Err(at(
                span,
                "`tuning.max_batch` must not be smaller than `tuning.batch`",
            ));
        }
        if t.reconnect_min.is_zero() {
            let span = self.reconnect_min.map(|s| s.span());
            return Err(at(span, "`tuning.reconnect_min` must be greater than 0"));
        }
        if t.reconnect_max < t.reconnect_min {
            let span = self.reconnect_max.or(self.reconnect_min).map(|s| s.span());
            return Err(at(
                span,
                "`tuning.reconnect_max` must not be smaller than `tuning.reconnect_min`",
            ));
        }
        if t.state_interval.is_zero() {
            let span = self.state_interval.map(|s| s.span());
            return Err(at(span, "`tuning.state_interval` must be greater than 0"));
        }
        Ok(t)
    }
}

impl RawStream {
    /// Where its `path` or `directory` is written.
    fn source_span(&self) -> Option<std::ops::Range<usize>> {
        let path = self.path.as_ref().map(Spanned::span);
        path.or_else(|| self.directory.as_ref().map(Spanned::span))
    }

    /// `index` is 0-based; messages say `stream #1` for the first stream.
    fn validate(self, doc: &Doc<'_>, index: usize) -> Result<StreamConfig, ConfigError> {
        let name = format!("stream #{}", index + 1);
        let source = match (self.path, self.directory) {
            (Some(_), Some(d)) => {
                return Err(doc.err_at(
                    d.span(),
                    format!("{name}: `path` and `directory` are mutually exclusive; use one [[stream]] for each"),
                ))
            }
            (None, None) => {
                return Err(doc.err_at_header(
                    "[[stream",
                    index,
                    format!("{name}: needs `path` (one file) or `directory` (with optional `filepattern`)"),
                ))
            }
            (Some(p), None) => {
                if let Some(fp) = self.filepattern {
                    return Err(doc.err_at(
                        fp.span(),
                        format!("{name}: `filepattern` only applies to `directory` streams"),
                    ));
                }
                if p.get_ref().as_os_str().is_empty() {
                    return Err(doc.err_at(p.span(), format!("{name}: `path` must not be empty")));
                }
                Source::Path(p.into_inner())
            }
            (None, Some(d)) => {
                if d.get_ref().as_os_str().is_empty() {
                    return Err(doc.err_at(
                        d.span(),
                        format!("{name}: `directory` must not be empty"),
                    ));
                }
                let (pattern_text, span) = match self.filepattern {
                    Some(fp) => (fp.get_ref().clone(), Some(fp.span())),
                    None => ("*".to_string(), None),
                };
                let bad = |msg: String| match span.clone() {
                    Some(s) => doc.err_at(s, msg),
                    None => doc.err(msg),
                };
                if pattern_text.contains('/') {
                    return Err(bad(format!(
                        "{name}: `filepattern` \"{pattern_text}\" is matched against file names and must not contain '/'"
                    )));
                }
                let pattern = compile_glob(&pattern_text).map_err(|e| {
                    bad(format!("{name}: `filepattern` \"{pattern_text}\": {e}"))
                })?;
                Source::Directory {
                    dir: d.into_inner(),
                    pattern,
                    pattern_text,
                }
            }
        };
        let svc = match self.svc {
            Some(s) if !is_token(s.get_ref()) => {
                return Err(doc.err_at(
                    s.span(),
                    format!(
                        "{name}: `svc` \"{}\" must be non-empty and contain only letters, digits, '_', '.', '-'",
                        s.get_ref()
                    ),
                ))
            }
            s => s.map(Spanned::into_inner),
        };
        let meta = validate_meta(doc, &name, self.meta.map_or_else(Vec::new, |m| m.0))?;
        Ok(StreamConfig {
            source,
            method: self.method.unwrap_or_default(),
            onrotate: self.onrotate.unwrap_or_default(),
            svc,
            meta,
            delete: self.delete.unwrap_or(false),
            rate_limit: limit(doc, &name, self.rate_limit, self.burst)?,
        })
    }
}

/// `rate_limit` with its `burst` (default: one second's worth); a `burst`
/// without a `rate_limit` is an error.
fn limit(
    doc: &Doc<'_>,
    name: &str,
    rate: Option<RateValue>,
    burst: Option<Spanned<SizeValue>>,
) -> Result<Option<Limit>, ConfigError> {
    match (rate, burst) {
        (None, None) => Ok(None),
        (None, Some(b)) => {
            Err(doc.err_at(b.span(), format!("{name}: `burst` needs a `rate_limit`")))
        }
        (Some(r), b) => Ok(Some(Limit {
            bytes_per_sec: r.0,
            burst: b.map_or(r.0, |b| b.into_inner().0.max(1) as u64),
        })),
    }
}

fn validate_meta(
    doc: &Doc<'_>,
    name: &str,
    raw: Vec<(String, Spanned<String>)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut meta = Vec::with_capacity(raw.len());
    for (key, value) in raw {
        let err = |msg: String| doc.err_at(value.span(), format!("{name}: `meta.{key}`: {msg}"));
        if key == "svc" {
            return Err(
                err("set the service with the stream's `svc` key, not in meta".into())
                    .with_hint(format!("svc = \"{}\"", value.get_ref())),
            );
        }
        if RESERVED_META_KEYS.contains(&key.as_str()) {
            return Err(err(format!(
                "key is reserved (reserved: {})",
                RESERVED_META_KEYS.join(", ")
            )));
        }
        if !is_token(&key) {
            return Err(err(
                "keys may contain only letters, digits, '_', '.', '-'".into()
            ));
        }
        let v = value.get_ref();
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(
                "value must be non-empty, without whitespace or control characters".into(),
            ));
        }
        meta.push((key, value.into_inner()));
    }
    Ok(meta)
}

/// The default state file: `/var/lib/loghamster/client.state` when running
/// as root (effective uid 0); otherwise
/// `$XDG_STATE_HOME/loghamster/client.state`, else
/// `$HOME/.local/state/loghamster/client.state` (each only if the variable
/// is an absolute path), else `./loghamsterc.state`.
pub fn default_client_state_file() -> PathBuf {
    state_file_for(
        effective_uid(),
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn state_file_for(euid: Option<u32>, xdg: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    if euid == Some(0) {
        return PathBuf::from("/var/lib/loghamster/client.state");
    }
    if let Some(x) = xdg.filter(|p| p.is_absolute()) {
        return x.join("loghamster/client.state");
    }
    if let Some(h) = home.filter(|p| p.is_absolute()) {
        return h.join(".local/state/loghamster/client.state");
    }
    PathBuf::from("./loghamsterc.state")
}

/// The effective uid, from the `Uid:` line of `/proc/self/status` (real,
/// effective, saved, fs), else the owner of `/proc/self`. `None` without
/// procfs.
fn effective_uid() -> Option<u32> {
    let from_status = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        });
    from_status.or_else(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_defaults() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            state_file_for(Some(0), p("/x"), p("/h")),
            Path::new("/var/lib/loghamster/client.state")
        );
        assert_eq!(
            state_file_for(Some(1000), p("/x"), p("/h")),
            Path::new("/x/loghamster/client.state")
        );
        assert_eq!(
            state_file_for(Some(1000), p("rel"), p("/h")),
            Path::new("/h/.local/state/loghamster/client.state")
        );
        assert_eq!(
            state_file_for(None, None, None),
            Path::new("./loghamsterc.state")
        );
    }

    #[test]
    fn euid_is_readable() {
        assert!(effective_uid().is_some());
    }
}
