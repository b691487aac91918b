//! Reloading a configuration: what a new one changes, as a plan. Pure.
//!
//! On SIGHUP each daemon loads its configuration file again (with
//! `${VAR}` expanded as at start-up) and, if it is valid, hands the
//! running configuration and the new one to [`client_plan`] or
//! [`server_plan`]. The plan says what to do; the daemons do it.
//!
//! ## The client
//! A `[[stream]]` is known by where it reads ([`Reach`]: its directory and
//! the literal name or glob there), so moving an entry in the file or
//! changing its `svc` keeps its identity, and two entries can never share
//! one (the same file twice is refused). Against the running streams each
//! new one is *added*, *changed* (same reach, other settings, or other
//! names it must leave to other entries) or *unchanged*; running streams
//! the new file does not name are *removed*. The settings every stream
//! shares (`[server]`, `hostname`, `[tuning]`, `[tls]`,
//! `follow_symlinks`) are part of each stream: when one of them changes,
//! every kept stream is *changed*. A changed stream is finished and
//! started again from its saved position; an unchanged one is not
//! touched.
//!
//! ## The server
//! Outputs are known by name: added, removed, changed (path template,
//! `match` or JetStream settings) or unchanged. Every other key that a
//! running server can take for new connections (limits, `[[allow]]` and
//! `[[token]]`, `[tls]`, `directory`, ...) is named when it changed.
//!
//! ## What needs a restart
//! Some keys cannot change under a running daemon: the state file (the
//! positions, or the checkpoint, live there), the listen addresses, the
//! log level, how the server syncs, and a server's JetStream outputs
//! (their client threads are addressed by place in the outputs table).
//! The plan copies their running values into the new configuration and
//! names them in `restart_only`, so the daemon says once which changes it
//! did not take.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::hash::Hash;
use std::path::PathBuf;

use super::auth::AllowRule;
use super::overlap::{claims, Names, Reach};
use super::server::OutputKind;
use super::{ClientConfig, OutputConfig, ServerConfig, StreamConfig};

/// How two lists of configured things compare, by their keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Indices into the new list of things the old one does not have.
    pub added: Vec<usize>,
    /// Indices into the old list of things the new one does not have.
    pub removed: Vec<usize>,
    /// `(old, new)` index pairs with the same key and other settings.
    pub changed: Vec<(usize, usize)>,
    /// `(old, new)` index pairs with the same key and the same settings.
    pub unchanged: Vec<(usize, usize)>,
}

impl Diff {
    /// Matches `old` and `new` by `key` (unique within each list) and
    /// compares matched pairs with `same`.
    pub fn of<T, K: Hash + Eq>(
        old: &[T],
        new: &[T],
        key: impl Fn(&T) -> K,
        same: impl Fn(usize, usize) -> bool,
    ) -> Diff {
        let by_key: HashMap<K, usize> = old.iter().enumerate().map(|(i, t)| (key(t), i)).collect();
        let mut diff = Diff::default();
        let mut kept = vec![false; old.len()];
        for (j, t) in new.iter().enumerate() {
            match by_key.get(&key(t)) {
                Some(&i) => {
                    kept[i] = true;
                    match same(i, j) {
                        true => diff.unchanged.push((i, j)),
                        false => diff.changed.push((i, j)),
                    }
                }
                None => diff.added.push(j),
            }
        }
        diff.removed = (0..old.len()).filter(|&i| !kept[i]).collect();
        diff
    }

    /// True when nothing was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// `2 streams added, 1 removed, 1 changed, 5 unchanged` (`noun` plural).
    pub fn summary(&self, noun: &str) -> String {
        format!(
            "{} {noun} added, {} removed, {} changed, {} unchanged",
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.unchanged.len()
        )
    }
}

/// What a new client configuration changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientPlan {
    /// The `[[stream]]`s, old against new.
    pub streams: Diff,
    /// Settings every stream shares that changed (so every kept stream
    /// is in `streams.changed`).
    pub shared: Vec<&'static str>,
    /// Keys that changed but need a restart; the new configuration holds
    /// their running values.
    pub restart_only: Vec<&'static str>,
}

impl ClientPlan {
    /// The one INFO line of a reload.
    pub fn summary(&self) -> String {
        let mut s = format!("reload: {}", self.streams.summary("streams"));
        if !self.shared.is_empty() {
            s += &format!(
                " ({} changed: every stream continues from its saved position)",
                self.shared.join(", ")
            );
        }
        s
    }
}

/// The plan for replacing the running client configuration `old` with
/// `new`; keys that need a restart are set back to `old`'s values in
/// `new` and named in the plan.
pub fn client_plan(old: &ClientConfig, new: &mut ClientConfig) -> ClientPlan {
    let mut restart_only = Vec::new();
    if new.state_file != old.state_file {
        restart_only.push("state_file");
        new.state_file = old.state_file.clone();
    }
    if new.prometheus != old.prometheus {
        restart_only.push("[prometheus]");
        new.prometheus = old.prometheus.clone();
    }
    if new.debug != old.debug {
        restart_only.push("debug");
        new.debug = old.debug;
    }
    if new.log_format != old.log_format {
        restart_only.push("log_format");
        new.log_format = old.log_format;
    }
    let shared: Vec<&'static str> = [
        ("[server]", new.server != old.server),
        ("hostname", new.hostname != old.hostname),
        ("[tuning]", new.tuning != old.tuning),
        ("[tls]", new.tls != old.tls),
        (
            "follow_symlinks",
            new.follow_symlinks != old.follow_symlinks,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect();
    let (old_yields, new_yields) = (yields(&old.streams), yields(&new.streams));
    let streams = Diff::of(&old.streams, &new.streams, stream_key, |i, j| {
        shared.is_empty()
            && same_stream(&old.streams[i], &new.streams[j])
            && old_yields[i] == new_yields[j]
    });
    ClientPlan {
        streams,
        shared,
        restart_only,
    }
}

/// A literal file name or a glob's text: how a name set compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum NameKey {
    File(OsString),
    Glob(String),
}

impl From<&Names> for NameKey {
    fn from(n: &Names) -> NameKey {
        match n {
            Names::File(f) => NameKey::File(f.clone()),
            Names::Glob { text, .. } => NameKey::Glob(text.clone()),
        }
    }
}

/// What identifies a configured stream: where it reads.
fn stream_key(s: &StreamConfig) -> (PathBuf, NameKey) {
    let r = Reach::of(s);
    (r.dir, NameKey::from(&r.names))
}

/// Everything but where it reads (that is the key).
fn same_stream(a: &StreamConfig, b: &StreamConfig) -> bool {
    a.method == b.method
        && a.onrotate == b.onrotate
        && a.svc == b.svc
        && a.meta == b.meta
        && a.delete == b.delete
        && a.rate_limit == b.rate_limit
}

/// For each stream, the names it leaves to streams ranked before it.
fn yields(streams: &[StreamConfig]) -> Vec<Vec<NameKey>> {
    let reaches: Vec<Reach> = streams.iter().map(Reach::of).collect();
    claims(&reaches)
        .yields
        .iter()
        .map(|ys| {
            ys.iter()
                .map(|&j| NameKey::from(&reaches[j].names))
                .collect()
        })
        .collect()
}

/// What a new server configuration changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServerPlan {
    /// The `[output.NAME]` tables, old against new, by name.
    pub outputs: Diff,
    /// Other keys that changed and apply to new connections.
    pub changed: Vec<&'static str>,
    /// Keys that changed but need a restart; the new configuration holds
    /// their running values.
    pub restart_only: Vec<&'static str>,
}

impl ServerPlan {
    /// The one INFO line of a reload.
    pub fn summary(&self) -> String {
        let others = match self.changed.is_empty() {
            true => "nothing else changed".to_string(),
            false => format!("changed: {}", self.changed.join(", ")),
        };
        format!("reload: {}; {others}", self.outputs.summary("outputs"))
    }
}

/// The plan for replacing the running server configuration `old` with
/// `new`; keys that need a restart are set back to `old`'s values in
/// `new` and named in the plan.
pub fn server_plan(old: &ServerConfig, new: &mut ServerConfig) -> ServerPlan {
    let restart_only = pin_server(old, new);
    let outputs = Diff::of(
        &old.outputs,
        &new.outputs,
        |o| o.name.clone(),
        |i, j| same_output(&old.outputs[i], &new.outputs[j]),
    );
    let (o, n) = (&old.limits, &new.limits);
    let changed = [
        ("directory", old.directory != new.directory),
        (
            "handshake_timeout",
            old.handshake_timeout != new.handshake_timeout,
        ),
        ("max_line", old.max_line != new.max_line),
        ("sync_interval", old.sync_interval != new.sync_interval),
        (
            "accept_compression",
            old.accept_compression != new.accept_compression,
        ),
        (
            "connection_rate_limit",
            old.connection_rate_limit != new.connection_rate_limit,
        ),
        ("max_connections", o.max_connections != n.max_connections),
        (
            "max_connections_per_address",
            o.max_connections_per_address != n.max_connections_per_address,
        ),
        ("idle_timeout", o.idle_timeout != n.idle_timeout),
        ("decoder_memory", o.decoder_memory != n.decoder_memory),
        ("stream_retention", o.stream_retention != n.stream_retention),
        ("[[token]]", old.auth.tokens != new.auth.tokens),
        ("[[allow]]", !same_rules(&old.auth.rules, &new.auth.rules)),
        ("[tls]", old.tls != new.tls),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect();
    ServerPlan {
        outputs,
        changed,
        restart_only,
    }
}

/// Sets the keys a running server cannot change back to `old`'s values
/// in `new`, and names those that differed.
fn pin_server(old: &ServerConfig, new: &mut ServerConfig) -> Vec<&'static str> {
    let mut pinned = Vec::new();
    if new.listen != old.listen {
        pinned.push("listen");
        new.listen = old.listen;
    }
    if new.state_path() != old.state_path() {
        pinned.push("state_file");
        new.state_file = old.state_path();
    }
    if new.sync != old.sync {
        pinned.push("sync");
        new.sync = old.sync;
    }
    if new.engine != old.engine {
        pinned.push("engine");
        new.engine = old.engine;
    }
    if new.prometheus != old.prometheus {
        pinned.push("[prometheus]");
        new.prometheus = old.prometheus.clone();
    }
    if new.debug != old.debug {
        pinned.push("debug");
        new.debug = old.debug;
    }
    if new.log_format != old.log_format {
        pinned.push("log_format");
        new.log_format = old.log_format;
    }
    if jet_outputs(&new.outputs) != jet_outputs(&old.outputs) {
        pinned.push("JetStream outputs (the whole [output.*] table is kept)");
        new.outputs = old.outputs.clone();
    }
    pinned
}

/// The JetStream outputs with their place in the outputs table.
fn jet_outputs(outputs: &[OutputConfig]) -> Vec<(usize, &OutputConfig)> {
    outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o.kind, OutputKind::JetStream(_)))
        .collect()
}

fn same_output(a: &OutputConfig, b: &OutputConfig) -> bool {
    let kind = match (&a.kind, &b.kind) {
        (OutputKind::File(x), OutputKind::File(y)) => x == y,
        (OutputKind::JetStream(x), OutputKind::JetStream(y)) => x == y,
        _ => false,
    };
    let texts = |o: &OutputConfig| -> Vec<(String, String)> {
        let m = o.matchers.iter();
        m.map(|(k, _, t)| (k.clone(), t.clone())).collect()
    };
    kind && a.path == b.path && texts(a) == texts(b)
}

impl PartialEq for OutputConfig {
    fn eq(&self, other: &OutputConfig) -> bool {
        self.name == other.name && same_output(self, other)
    }
}

/// Two `[[allow]]` lists with the same rules in the same order (rules
/// are tried in order).
fn same_rules(a: &[AllowRule], b: &[AllowRule]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| rule_text(x) == rule_text(y))
}

/// An `[[allow]]` rule as written: who, then every glob's text.
fn rule_text(r: &AllowRule) -> Vec<String> {
    let mut text = vec![r.who.to_string()];
    text.extend(r.hosts.iter().map(|(_, t)| format!("host {t}")));
    text.extend(r.outputs.iter().map(|(_, t)| format!("output {t}")));
    let m = r.matchers.iter();
    text.extend(m.map(|(k, _, t)| format!("match {k} {t}")));
    text
}

#[cfg(test)]
mod tests;
