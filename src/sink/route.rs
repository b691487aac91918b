//! Routing: which file a stream is written to. Pure, no I/O.
//!
//! A stream is described by what the client sent in INIT: its host, the
//! path of the file on the client, and meta data (`svc` included). The
//! [`Router`] picks an output and renders its path:
//!
//! 1. Outputs with a `match` table, in config order: the first whose every
//!    pattern matches wins. Keys `host` and `path` match the stream's host
//!    and path, any other key (`svc` included) the meta value of that name;
//!    a key the stream does not have never matches. Patterns are globs in
//!    which `*` does not cross `/`.
//! 2. Else the output *without* a `match` table whose name equals the
//!    stream's `svc`. (Outputs with a `match` table are only reachable
//!    through rule 1, so a client cannot bypass a match by naming it.)
//! 3. Else the default route `directory/<host>/<path without leading '/'>`;
//!    with no `directory` configured the stream is refused
//!    ([`RouteError::NoOutput`]).
//!
//! Output `path` templates use `{host}`, `{svc}`, `{file}` (last component
//! of the stream path), `{path}` (stream path without leading `/`, may span
//! components) and `{meta.KEY}`; see [`crate::config::template`].
//!
//! Safety: nothing a client sends can make the server write outside
//! `directory` or the configured outputs. The result is a trusted `base`
//! (the template's literal directory prefix, or `directory`) and a
//! `relative` path of only `Component::Normal`s. Values are checked before
//! substitution:
//! - the host must be non-empty `[A-Za-z0-9._-]`, not `.` or `..`
//!   ([`RouteError::BadHost`]), checked for every stream;
//! - single-component values (`{svc}`, `{file}`, `{meta.KEY}`) must be
//!   non-empty, not `.`/`..`, without `/` or NUL ([`RouteError::BadValue`]);
//! - the stream path (`{path}` and the default route) is split on `/`,
//!   empty and `.` components are dropped, a `..` component or NUL is
//!   [`RouteError::BadPath`], and something must remain.
//!
//! Finally the rendered relative path is checked component by component
//! again. Symlinks below `base` are the opener's job (`O_NOFOLLOW`).
//!
//! The server's own files are out of reach ([`RouteError::Reserved`]): in
//! the state file's directory, every name that starts with the state
//! file's name (`.loghamsterd.state`, its `.tmp` and `.journal` files, and
//! anything the server may add beside them) is refused as an output and
//! as a directory on the way to one, and so is any ancestor of the state
//! file. Without this, a template such as `path = "{path}"` relative to
//! `directory` let a client create a directory where the checkpoint's
//! temp file must go, and every later checkpoint failed. The comparison is
//! lexical, on absolute paths (a relative `directory` or `state_file` is
//! taken against the working directory, as the opener does).

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Component, PathBuf};

use crate::config::server::OutputKind;
use crate::config::{OutputConfig, Piece, ServerConfig};
use crate::proto::is_host_name;

/// Routes streams according to a [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct Router {
    directory: Option<PathBuf>,
    outputs: Vec<OutputConfig>,
    /// The state file as an absolute path, and its name: no route may
    /// land on it, beside it under a name that starts with it, or on one
    /// of its ancestors.
    reserved: Option<(PathBuf, std::ffi::OsString)>,
}

/// What a client said about a stream in INIT.
#[derive(Debug, Clone, Copy)]
pub struct StreamInfo<'a> {
    /// The client's host name (unvalidated).
    pub host: &'a str,
    /// The file path on the client (unvalidated).
    pub path: &'a str,
    /// Meta data, `svc` included; the first entry of a key counts.
    pub meta: &'a [(&'a str, &'a str)],
}

impl<'a> StreamInfo<'a> {
    fn meta(&self, key: &str) -> Option<&'a str> {
        self.meta.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// Where a stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The output's name; `None` for the default directory route.
    pub output: Option<String>,
    /// Trusted directory from the configuration.
    pub base: PathBuf,
    /// Below `base`: non-empty, only `Component::Normal`, no NUL.
    pub relative: PathBuf,
}

impl Route {
    /// `base` joined with `relative`.
    pub fn full_path(&self) -> PathBuf {
        self.base.join(&self.relative)
    }
}

/// Where a stream goes: a file ([`Route`]), or a subject of a JetStream
/// output (`[output.NAME.jetstream]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    File(Route),
    JetStream(SubjectRoute),
}

/// A stream routed to a JetStream output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRoute {
    /// The output's name.
    pub output: String,
    /// The output's place in the configuration's `outputs`.
    pub index: usize,
    /// The rendered subject: valid tokens only (see
    /// [`crate::sink::jetstream::subject`]).
    pub subject: String,
}

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The host name is empty, `.`/`..` or has characters outside
    /// `[A-Za-z0-9._-]`.
    BadHost,
    /// A value substituted into a single path component is missing, empty,
    /// `.`/`..` or contains `/` or NUL. `key` is `svc`, `file` or `meta.KEY`.
    BadValue {
        /// Which value.
        key: String,
    },
    /// The stream path contains `..` or NUL, or has no components.
    BadPath,
    /// No output matches and there is no default `directory`.
    NoOutput,
    /// The path is the server's state file, one of its temp or journal
    /// files (a name that starts with the state file's, in its
    /// directory), something below one of those, or an ancestor of it.
    Reserved,
}

impl RouteError {
    /// The status code of the reply to INIT.
    pub fn reply_code(&self) -> u16 {
        match self {
            RouteError::BadHost | RouteError::BadValue { .. } | RouteError::BadPath => 400,
            RouteError::NoOutput => 404,
            RouteError::Reserved => 403,
        }
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::BadHost => write!(f, "invalid host name"),
            RouteError::BadValue { key } => write!(f, "missing or invalid value for {key}"),
            RouteError::BadPath => write!(f, "invalid stream path"),
            RouteError::NoOutput => write!(f, "no output configured for this stream"),
            RouteError::Reserved => write!(f, "path reserved for the server's state"),
        }
    }
}

impl std::error::Error for RouteError {}

impl Router {
    /// Builds a router over the configuration's outputs and directory.
    pub fn new(cfg: &ServerConfig) -> Router {
        let reserved = cfg.state_path().and_then(|p| {
            let p = std::path::absolute(&p).unwrap_or(p);
            let name = p.file_name()?.to_os_string();
            Some((p, name))
        });
        Router {
            directory: cfg.directory.clone(),
            outputs: cfg.outputs.clone(),
            reserved,
        }
    }

    /// Picks the output for a stream and renders its path (or subject);
    /// refuses a path that reaches the server's state
    /// ([`RouteError::Reserved`]).
    pub fn destination(&self, s: &StreamInfo<'_>) -> Result<Destination, RouteError> {
        let dest = self.pick(s)?;
        if let (Destination::File(route), Some((state, name))) = (&dest, &self.reserved) {
            if reaches(&route.full_path(), state, name) {
                return Err(RouteError::Reserved);
            }
        }
        Ok(dest)
    }

    /// [`destination`](Self::destination) for file outputs only: a stream
    /// routed to a JetStream output is [`RouteError::NoOutput`] here.
    pub fn route(&self, s: &StreamInfo<'_>) -> Result<Route, RouteError> {
        match self.destination(s)? {
            Destination::File(r) => Ok(r),
            Destination::JetStream(_) => Err(RouteError::NoOutput),
        }
    }

    fn pick(&self, s: &StreamInfo<'_>) -> Result<Destination, RouteError> {
        if !is_host_name(s.host) {
            return Err(RouteError::BadHost);
        }
        let by_match = self
            .outputs
            .iter()
            .filter(|o| !o.matchers.is_empty())
            .find(|o| o.matchers.iter().all(|(k, g, _)| matches(s, k, g)));
        let by_name = || {
            let svc = s.meta("svc")?;
            self.outputs
                .iter()
                .find(|o| o.matchers.is_empty() && o.name == svc)
        };
        if let Some(out) = by_match.or_else(by_name) {
            return Ok(match &out.kind {
                OutputKind::File(t) => Destination::File(Route {
                    output: Some(out.name.clone()),
                    base: t.base().to_path_buf(),
                    relative: render(t.components(), s)?,
                }),
                OutputKind::JetStream(js) => Destination::JetStream(SubjectRoute {
                    output: out.name.clone(),
                    index: self
                        .outputs
                        .iter()
                        .position(|o| o.name == out.name)
                        .unwrap_or(0),
                    subject: js.subject.render(s)?,
                }),
            });
        }
        let dir = self.directory.as_ref().ok_or(RouteError::NoOutput)?;
        let mut relative = PathBuf::from(s.host);
        for c in path_components(s.path)? {
            relative.push(c);
        }
        Ok(Destination::File(Route {
            output: None,
            base: dir.clone(),
            relative: checked(relative)?,
        }))
    }
}

/// True when writing `path` (creating its directories) could touch the
/// state file `state` (named `name`) or a file beside it whose name starts
/// with `name`: `path` is an ancestor of `state`, or its component in
/// `state`'s directory starts with `name`.
fn reaches(path: &std::path::Path, state: &std::path::Path, name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if state.starts_with(&path) {
        return true;
    }
    let Some(dir) = state.parent() else {
        return false;
    };
    let Ok(below) = path.strip_prefix(dir) else {
        return false;
    };
    below
        .components()
        .next()
        .is_some_and(|c| c.as_os_str().as_bytes().starts_with(name.as_bytes()))
}

/// Whether `glob` matches the stream's value for `key` (`host`, `path` or
/// a meta key; a missing key never matches). Also used by `[[allow]]`.
pub(crate) fn matches(s: &StreamInfo<'_>, key: &str, glob: &globset::GlobMatcher) -> bool {
    let value = match key {
        "host" => Some(s.host),
        "path" => Some(s.path),
        _ => s.meta(key),
    };
    value.is_some_and(|v| glob.is_match(v))
}

/// A value for one path component.
fn single<'a>(key: &str, v: Option<&'a str>) -> Result<&'a str, RouteError> {
    match v {
        Some(v) if !v.is_empty() && v != "." && v != ".." && !v.contains(['/', '\0']) => Ok(v),
        _ => Err(RouteError::BadValue {
            key: key.to_string(),
        }),
    }
}

/// The stream path's components: `.` and empty ones dropped; `..` or NUL
/// rejected; at least one required.
fn path_components(path: &str) -> Result<Vec<&str>, RouteError> {
    if path.contains('\0') {
        return Err(RouteError::BadPath);
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(RouteError::BadPath),
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return Err(RouteError::BadPath);
    }
    Ok(out)
}

fn render(components: &[Vec<Piece>], s: &StreamInfo<'_>) -> Result<PathBuf, RouteError> {
    let mut rel = PathBuf::new();
    for comp in components {
        let mut buf = String::new();
        for piece in comp {
            match piece {
                Piece::Lit(l) => buf.push_str(l),
                Piece::Host => buf.push_str(s.host),
                Piece::File => buf.push_str(single("file", s.path.rsplit('/').next())?),
                Piece::Meta(k) => {
                    let key = if k == "svc" {
                        "svc".to_string()
                    } else {
                        format!("meta.{k}")
                    };
                    buf.push_str(single(&key, s.meta(k))?);
                }
                Piece::Path => buf.push_str(&path_components(s.path)?.join("/")),
            }
        }
        for part in buf.split('/') {
            rel.push(part_ok(part)?);
        }
    }
    checked(rel)
}

fn part_ok(part: &str) -> Result<&str, RouteError> {
    if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
        return Err(RouteError::BadPath);
    }
    Ok(part)
}

/// Final check: non-empty and only `Normal` components.
fn checked(rel: PathBuf) -> Result<PathBuf, RouteError> {
    let ok = rel.components().next().is_some()
        && rel.components().all(|c| matches!(c, Component::Normal(_)))
        && !rel.as_os_str().as_encoded_bytes().contains(&0);
    if ok {
        Ok(rel)
    } else {
        Err(RouteError::BadPath)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_jetstream_output_routes_to_an_escaped_subject() {
        let cfg = ServerConfig::from_toml_str(
            "directory = \"/srv/logs\"\n[output.logs]\nmatch = { svc = \"app\" }\n[output.logs.jetstream]\nservers = [\"nats://127.0.0.1:4222\"]\nstream = \"LOGS\"\nsubject = \"logs.{host}.{path}\"\n",
            "server.toml",
        )
        .unwrap();
        let r = Router::new(&cfg);
        let meta = [("svc", "app")];
        let info = StreamInfo {
            host: "web1",
            path: "/var/log/app.log",
            meta: &meta,
        };
        let want = Destination::JetStream(SubjectRoute {
            output: "logs".into(),
            index: 0,
            subject: "logs.web1.var.log.app%2Elog".into(),
        });
        assert_eq!(r.destination(&info), Ok(want));
        assert_eq!(r.route(&info), Err(RouteError::NoOutput));
        let other = StreamInfo { meta: &[], ..info };
        assert!(matches!(r.destination(&other), Ok(Destination::File(_))));
    }

    #[test]
    fn the_state_file_its_siblings_and_its_ancestors_are_reserved() {
        let state = Path::new("/srv/logs/.loghamsterd.state");
        let name = std::ffi::OsStr::new(".loghamsterd.state");
        let reached = |p: &str| reaches(Path::new(p), state, name);
        for p in [
            "/srv/logs/.loghamsterd.state",
            "/srv/logs/.loghamsterd.state.tmp",
            "/srv/logs/.loghamsterd.state.tmp/x",
            "/srv/logs/.loghamsterd.state.journal",
            "/srv/logs/.loghamsterd.stateX/y/z",
            "/srv/logs",
            "/srv",
        ] {
            assert!(reached(p), "{p} should be reserved");
        }
        for p in [
            "/srv/logs/web1/.loghamsterd.state",
            "/srv/logs/x.loghamsterd.state",
            "/srv/logs/.loghamsterd.stat",
            "/srv/other/.loghamsterd.state",
            "/srv/logsx",
        ] {
            assert!(!reached(p), "{p} should be allowed");
        }
    }
}
