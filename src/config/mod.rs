//! Configuration files of both daemons.
//!
//! `loghamsterc` reads a [`ClientConfig`] (which server to talk to, which
//! files to stream) and `loghamsterd` reads a [`ServerConfig`] (where to
//! listen, where each stream is written). Both are TOML files; the examples
//! in the original design README are the contract and parse as written
//! (the client sketch after adding the quotes TOML requires).
//!
//! Loading happens in two steps. First serde deserializes the text into
//! private *raw* structs whose fields are all `Option`s and which carry
//! `#[serde(deny_unknown_fields)]`, so a misspelt key is rejected with its
//! name and line. Then a `validate` step turns the raw structs into the
//! public types: it fills in defaults, checks cross-field rules (a stream
//! has exactly one of `path`/`directory`, `max_batch >= batch`, ...) and
//! compiles globs and output templates. After loading, the public structs
//! hold only valid values; their field docs state the invariants.
//!
//! Every failure is a [`ConfigError`]: the file, the line when known, one
//! line of message naming the offending key, and sometimes a hint. Hints are
//! heuristics over the offending source line for the two mistakes the
//! original README itself makes: unquoted string values
//! (`hostname=log.mgmt.neotel.at`) and a half-closed array-of-tables header
//! (`[[stream]`).
//!
//! Shared value syntaxes live here: durations ([`parse_duration`]: `"50ms"`,
//! `"5s"`, `"2m"`, `"1h"`), sizes ([`parse_size`]: `4096`, `"4k"`,
//! `"4KiB"`, `"1MiB"`, `"2GiB"`; all units are binary, `k`/`KB`/`KiB` all
//! mean 1024) and listen addresses ([`parse_listen`]: `"ip:port"` or
//! `":port"`). So does the one section both files share, `[prometheus]`
//! ([`Prometheus`]); each daemon only brings its default address.
//!
//! [`overlap`] decides which `[[stream]]` reads a file several entries
//! name: the same file twice is an error, overlaps follow one rule.

#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod interpolate;
pub mod jetstream;
pub mod overlap;
pub mod reload;
pub mod server;
pub mod servers;
pub mod template;
pub mod tls;

pub use client::{
    default_client_state_file, ClientConfig, Codec, Compression, Method, OnRotate, ServerAddr,
    Source, StreamConfig, Tuning,
};
pub use server::{Limits, OutputConfig, ServerConfig, SyncPolicy};
pub use template::{Piece, Template, TemplateError};
pub use tls::{ClientTls, ServerTls};

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A configuration file could not be loaded.
///
/// Displays as `PATH:LINE: MESSAGE  (hint: HINT)`; the line and the hint
/// part are left out when unknown. `message` is always a single line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file (or the name given to `from_toml_str`).
    pub path: PathBuf,
    /// 1-based line of the offending text, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the key where there is one. Single line.
    pub message: String,
    /// A suggestion how to fix it, when a heuristic recognised the mistake.
    pub hint: Option<String>,
}

impl ConfigError {
    /// An error about the file as a whole (no line).
    pub fn new(path: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.to_path_buf(),
            line: None,
            message: one_line(&message.into()),
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> ConfigError {
        self.hint = Some(hint.into());
        self
    }

    /// Converts a TOML syntax or type error, locating its line and adding a
    /// hint if the offending line shows a known mistake.
    pub fn from_toml(path: &Path, src: &str, err: &toml::de::Error) -> ConfigError {
        let mut e = ConfigError::new(path, err.message());
        let Some(span) = err.span() else { return e };
        let line = line_of(src, span.start);
        e.line = Some(line);
        let Some(text) = src.lines().nth(line - 1) else {
            return e;
        };
        e.hint = hint_for_line(text);
        let t = strip_comment(text).trim();
        if let Some(name) = header_name(t) {
            if e.message.contains("expected a sequence") && !t.starts_with("[[") {
                e.hint = Some(format!("write [[{name}]] (double brackets) for each entry"));
            }
            if e.message.starts_with("missing field") || is_value_error(&e.message) {
                e.message = format!("[{name}]: {}", e.message);
            }
        } else if is_value_error(&e.message) {
            if let Some((key, _)) = t.split_once('=') {
                let key = key.trim();
                let table = src
                    .lines()
                    .take(line - 1)
                    .filter_map(|l| header_name(strip_comment(l).trim()))
                    .last();
                e.message = match table {
                    Some(table) => format!("`{table}.{key}`: {}", e.message),
                    None => format!("`{key}`: {}", e.message),
                };
            }
        }
        e
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "  (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and deserializes a TOML file, without any validation beyond what
/// serde does.
pub fn load_toml<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T, ConfigError> {
    let path = path.as_ref();
    let src = read_source(path)?;
    parse_toml(&src, path)
}

/// Reads a configuration file as UTF-8 text.
pub(crate) fn read_source(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::new(path, format!("cannot read configuration file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let line = line_of_bytes(e.as_bytes(), e.utf8_error().valid_up_to());
        ConfigError {
            line: Some(line),
            ..ConfigError::new(path, "file is not valid UTF-8")
        }
    })
}

/// The source with `${VAR}` expanded from the process's environment (see
/// [`interpolate`]).
pub(crate) fn expand_env<'a>(
    src: &'a str,
    path: &Path,
) -> Result<std::borrow::Cow<'a, str>, ConfigError> {
    interpolate::interpolate(src, path, &|name| std::env::var(name).ok())
}

/// Deserializes TOML text; `path` is only used in error messages.
pub(crate) fn parse_toml<T: DeserializeOwned>(src: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(src).map_err(|e| ConfigError::from_toml(path, src, &e))
}

/// The source text being validated, for errors that point at a line.
pub(crate) struct Doc<'a> {
    pub src: &'a str,
    pub path: &'a Path,
}

impl Doc<'_> {
    /// An error without a line.
    pub fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path, message)
    }

    /// An error at the line containing `span.start`.
    pub fn err_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            line: Some(line_of(self.src, span.start)),
            ..self.err(message)
        }
    }

    /// Top-level `log_format` (both daemons): `"text"` (the default) or
    /// `"json"`.
    pub fn log_format(
        &self,
        value: Option<Spanned<String>>,
    ) -> Result<crate::log::Format, ConfigError> {
        let Some(v) = value else {
            return Ok(crate::log::Format::default());
        };
        crate::log::Format::parse(v.get_ref()).ok_or_else(|| {
            self.err_at(
                v.span(),
                format!(
                    "`log_format` {:?}: expected \"text\" or \"json\"",
                    v.get_ref()
                ),
            )
        })
    }

    /// An error at the `n`th (0-based) line whose trimmed text starts with
    /// `header`, e.g. the third `[[stream]]`.
    pub fn err_at_header(&self, header: &str, n: usize, message: String) -> ConfigError {
        let line = self
            .src
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with(header))
            .nth(n)
            .map(|(i, _)| i + 1);
        ConfigError {
            line,
            ..self.err(message)
        }
    }
}

/// 1-based line number of byte `offset` in `src`.
fn line_of(src: &str, offset: usize) -> usize {
    line_of_bytes(src.as_bytes(), offset)
}

fn line_of_bytes(bytes: &[u8], offset: usize) -> usize {
    let end = offset.min(bytes.len());
    memchr::memchr_iter(b'\n', &bytes[..end]).count() + 1
}

/// `name` of a `[name]` or `[[name]]` header line (already trimmed).
fn header_name(t: &str) -> Option<&str> {
    if !t.starts_with('[') {
        return None;
    }
    Some(t.trim_matches(|c| c == '[' || c == ']').trim())
}

/// Whether a serde message is about a value (and so should name its key)
/// rather than about syntax.
fn is_value_error(msg: &str) -> bool {
    [
        "invalid type",
        "invalid value",
        "invalid length",
        "unknown variant",
        "invalid duration",
        "invalid size",
        "size ",
    ]
    .iter()
    .any(|p| msg.starts_with(p))
}

/// Collapses a possibly multi-line message into one line.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Looks at the offending source line for a mistake we can explain.
fn hint_for_line(line: &str) -> Option<String> {
    let t = strip_comment(line).trim();
    let half_open = t.starts_with("[[") && !t.ends_with("]]");
    let half_close = t.starts_with('[') && !t.starts_with("[[") && t.ends_with("]]");
    if half_open || half_close {
        let name = header_name(t).unwrap_or_default();
        return Some(format!(
            "array-of-tables headers need double brackets on both sides: [[{name}]]"
        ));
    }
    let (key, value) = t.split_once('=')?;
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() || value.is_empty() || key.starts_with('[') {
        return None;
    }
    if toml::from_str::<toml::Table>(&format!("x = {value}")).is_ok() {
        return None; // the value is fine; the problem is elsewhere
    }
    let quoted = if value.contains(['"', '\\']) && !value.contains('\'') {
        format!("'{value}'")
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    };
    toml::from_str::<toml::Table>(&format!("x = {quoted}")).ok()?;
    Some(format!("string values need quotes: {key} = {quoted}"))
}

/// Cuts a trailing `# comment`, ignoring `#` inside quoted strings.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return &line[..i],
            None => {}
        }
    }
    line
}

/// Why a duration or size value was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// The value is empty.
    Empty,
    /// The value does not start with a decimal number.
    BadNumber,
    /// A duration needs a unit (`ms`, `s`, `m`, `h`).
    MissingUnit,
    /// The unit is not one we know.
    UnknownUnit(String),
    /// The value does not fit.
    Overflow,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::Empty => write!(f, "empty value"),
            ValueError::BadNumber => write!(f, "expected a whole number followed by a unit"),
            ValueError::MissingUnit => {
                write!(f, "a duration needs a unit: ms, s, m or h (e.g. \"5s\")")
            }
            ValueError::UnknownUnit(u) => write!(f, "unknown unit `{u}`"),
            ValueError::Overflow => write!(f, "value too large"),
        }
    }
}

impl std::error::Error for ValueError {}

/// Splits `"12ms"` into `(12, "ms")`; whitespace between is allowed.
fn split_number(s: &str) -> Result<(u64, &str), ValueError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ValueError::Empty);
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(ValueError::BadNumber);
    }
    let n = s[..digits].parse().map_err(|_| ValueError::Overflow)?;
    Ok((n, s[digits..].trim_start()))
}

/// Parses a duration: a whole number with unit `ms`, `s`, `m` or `h`
/// (`"50ms"`, `"5s"`, `"2m"`, `"1h"`). A unit is required.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    let (n, unit) = split_number(s)?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(ValueError::MissingUnit),
        other => return Err(ValueError::UnknownUnit(other.to_string())),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or(ValueError::Overflow)
}

/// Parses a size in bytes: a whole number, optionally with a binary unit
/// (`B`; `k`/`K`/`KB`/`KiB` = 1024; `M`/`MB`/`MiB`; `G`/`GB`/`GiB`).
pub fn parse_size(s: &str) -> Result<usize, ValueError> {
    let (n, unit) = split_number(s)?;
    let shift = match unit {
        "" | "B" => 0,
        "k" | "K" | "KB" | "KiB" | "kB" | "kiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        other => return Err(ValueError::UnknownUnit(other.to_string())),
    };
    let bytes = n.checked_mul(1u64 << shift).ok_or(ValueError::Overflow)?;
    usize::try_from(bytes).map_err(|_| ValueError::Overflow)
}

/// A duration in a config file: a string like `"5s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"50ms\", \"5s\", \"2m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationValue, E> {
                parse_duration(v)
                    .map(DurationValue)
                    .map_err(|e| E::custom(format!("invalid duration \"{v}\": {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in a config file: an integer (bytes) or a string like `"4KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SizeValue(pub usize);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string like \"4KiB\" or \"1MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SizeValue, E> {
                usize::try_from(v)
                    .map(SizeValue)
                    .map_err(|_| E::custom("size too large"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SizeValue, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("size must not be negative"))?;
                self.visit_u64(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeValue, E> {
                parse_size(v)
                    .map(SizeValue)
                    .map_err(|e| E::custom(format!("invalid size \"{v}\": {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A rate in a config file: bytes per second as an integer, or a string
/// like `"20MiB/s"` (a size followed by `/s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateValue(pub u64);

/// Parses `"20MiB/s"`-style rates into bytes per second (> 0).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let size = s
        .trim()
        .strip_suffix("/s")
        .ok_or_else(|| "a rate ends in \"/s\", like \"20MiB/s\"".to_string())?;
    match parse_size(size) {
        Ok(0) => Err("a rate must be more than 0".into()),
        Ok(n) => Ok(n as u64),
        Err(e) => Err(e.to_string()),
    }
}

impl<'de> Deserialize<'de> for RateValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RateValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate: bytes per second, or a string like \"20MiB/s\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RateValue, E> {
                if v == 0 {
                    return Err(E::custom("a rate must be more than 0"));
                }
                Ok(RateValue(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RateValue, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("a rate must not be negative"))?;
                self.visit_u64(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RateValue, E> {
                parse_rate(v)
                    .map(RateValue)
                    .map_err(|e| E::custom(format!("invalid rate \"{v}\": {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TOML table deserialized as key/value pairs in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderedMap<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    entries.push((k, v));
                }
                Ok(OrderedMap(entries))
            }
        }
        d.deserialize_map(Vis(std::marker::PhantomData))
    }
}

/// Parses a metrics `listen` address: `ip:port`, or `:port` for every IPv4
/// interface. `None` if it is neither. Port 0 is accepted (the daemon
/// binds a free port and logs it).
pub fn parse_listen(text: &str) -> Option<SocketAddr> {
    match text.strip_prefix(':') {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from((Ipv4Addr::UNSPECIFIED, p))),
        None => text.parse().ok(),
    }
}

/// The `[prometheus]` section of either daemon: whether and where it
/// serves `/metrics` and `/health` (see [`crate::metrics`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prometheus {
    /// `listen`: `ip:port`, or `:port` for every IPv4 interface, as
    /// written; [`parse_listen`] accepts it. The default depends on the
    /// daemon (`127.0.0.1:8091` for `loghamsterd`, `127.0.0.1:9101` for
    /// `loghamsterc`).
    pub listen: String,
    /// `enabled`: false without the section; true when the section exists
    /// but has no `enabled` key.
    pub enabled: bool,
}

impl Prometheus {
    /// The section when it is absent: disabled, with `listen` ready for
    /// when it is enabled.
    pub fn disabled(listen: &str) -> Prometheus {
        Prometheus {
            listen: listen.to_string(),
            enabled: false,
        }
    }

    /// `--metrics-listen`: enables the endpoint on `listen`, or says what
    /// a bad address should look like.
    pub fn enable_at(&mut self, listen: &str) -> Result<(), String> {
        if parse_listen(listen).is_none() {
            return Err(format!(
                "--metrics-listen {listen:?}: expected ip:port or :port"
            ));
        }
        self.listen = listen.to_string();
        self.enabled = true;
        Ok(())
    }

    /// The address to bind: `listen` parsed. `None` only for a value built
    /// by hand that a config file would have rejected.
    pub fn addr(&self) -> Option<SocketAddr> {
        parse_listen(&self.listen)
    }
}

/// `[prometheus]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrometheus {
    listen: Option<Spanned<String>>,
    enabled: Option<bool>,
}

impl RawPrometheus {
    /// Checks `listen` (an error names its line); `default_listen` is the
    /// daemon's address when the key is absent.
    pub(crate) fn validate(
        self,
        doc: &Doc<'_>,
        default_listen: &str,
    ) -> Result<Prometheus, ConfigError> {
        let mut p = Prometheus {
            enabled: self.enabled.unwrap_or(true),
            ..Prometheus::disabled(default_listen)
        };
        if let Some(l) = self.listen {
            let text = l.get_ref();
            if parse_listen(text).is_none() {
                return Err(doc.err_at(
                    l.span(),
                    format!("`prometheus.listen` \"{text}\": expected ip:port or :port"),
                ));
            }
            p.listen = l.into_inner();
        }
        Ok(p)
    }
}

/// Meta keys, svc values and output names are wire tokens.
pub(crate) use crate::proto::is_token;

/// Compiles a glob; `*` and `?` do not match `/` (use `**` for that).
pub(crate) fn compile_glob(pattern: &str) -> Result<globset::GlobMatcher, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        assert_eq!(
            hint_for_line("hostname=log.mgmt.neotel.at").as_deref(),
            Some("string values need quotes: hostname = \"log.mgmt.neotel.at\"")
        );
        assert_eq!(
            hint_for_line("compression=none     # gzip, lz4").as_deref(),
            Some("string values need quotes: compression = \"none\"")
        );
        assert_eq!(hint_for_line("port=8901"), None);
        assert_eq!(hint_for_line("x = \"a#b\""), None);
        assert_eq!(
            hint_for_line("  [[stream]   # c").as_deref(),
            Some("array-of-tables headers need double brackets on both sides: [[stream]]")
        );
        assert_eq!(hint_for_line("[[stream]]"), None);
    }

    #[test]
    fn comments_and_lines() {
        assert_eq!(strip_comment("a = 'x#' # y"), "a = 'x#' ");
        assert_eq!(strip_comment(r##"a = "\"#" # y"##), r##"a = "\"#" "##);
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
        assert_eq!(one_line("a\n  b\n\n"), "a, b");
    }

    #[test]
    fn display() {
        let e = ConfigError {
            line: Some(2),
            ..ConfigError::new(Path::new("/etc/x.toml"), "bad")
        }
        .with_hint("fix it");
        assert_eq!(e.to_string(), "/etc/x.toml:2: bad  (hint: fix it)");
        assert_eq!(
            ConfigError::new(Path::new("x"), "bad").to_string(),
            "x: bad"
        );
    }
}
