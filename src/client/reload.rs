//! SIGHUP: take a new configuration without losing or doubling a line.
//!
//! The configuration file is loaded again (`ClientDaemon::reload_with`
//! says how: the same path, `${VAR}` expanded, the command line's
//! overrides applied) and checked as at start-up, the TLS files and host
//! name included. A file that fails is refused with one ERROR line and
//! the running configuration stays. Otherwise
//! [`crate::config::reload::client_plan`] compares it with the running
//! one, stream by stream:
//!
//! - an *unchanged* stream is not touched: its file, connection and
//!   position carry on;
//! - a *removed* stream is finished like a clean stop: its connection is
//!   half-closed, the server writes and acknowledges what it received,
//!   then the stream is dropped and its entries (file identity and
//!   acknowledged offset) stay among the state file's entries, so adding
//!   it back later resumes where it ended;
//! - a *changed* stream is finished the same way and started again from
//!   that entry with its new settings;
//! - an *added* stream starts as at start-up (a saved entry for its file
//!   is used).
//!
//! Finishing takes a round trip to the server, so a reload happens in
//! two steps: [`Pending`] holds the new configuration while the retired
//! streams finish (at most `shutdown_timeout`; a stream still connected
//! then is cut, and what the server did not acknowledge is sent again
//! by the stream that takes its file over, which the server's resume
//! offset makes exact). Then the plan is applied in one turn of the
//! loop and one INFO line says what changed. A SIGHUP during those
//! steps is remembered and reloads again afterwards.
//!
//! Keys that cannot change in a running client (`state_file`,
//! `[prometheus]`, `debug`, `log_format`) are named in one WARN and keep their running
//! values. A client started without a configuration file (streams named
//! on the command line) has nothing to re-read: SIGHUP saves the state
//! file and says so.

use std::time::Instant;

use mio::Token;

use super::setup::{check_streams, settings, stream_yields};
use super::stream::Settings;
use super::{ClientDaemon, ClientError};
use crate::config::reload::{client_plan, ClientPlan};
use crate::config::ClientConfig;
use crate::metrics::client::StreamLabels;
use crate::rate::Bucket;
use crate::reactor::Key;
use crate::tail::state;

/// Timer: a pending reload's retired streams are out of time.
pub(super) const RELOAD: Token = Token(8);

/// Loads the configuration again for a reload: the file and the command
/// line's overrides, or why not (one line).
pub type Reloader = Box<dyn FnMut() -> Result<ClientConfig, String> + Send>;

/// What one configured `[[stream]]` runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    /// A followed path.
    Stream(Key),
    /// A directory source or a `path` glob (index into `sources`).
    Source(usize),
}

/// A reload waiting for its retired streams to finish.
pub(super) struct Pending {
    cfg: ClientConfig,
    plan: ClientPlan,
    settings: Settings,
    /// Streams being finished (followed paths, and the files in flight of
    /// retired sources).
    keys: Vec<Key>,
    /// Retired sources (indices into `sources`).
    sources: Vec<usize>,
    /// When waiting ends.
    until: Instant,
}

impl ClientDaemon {
    /// Lets SIGHUP reload the configuration: `load` reads it again (as at
    /// start-up, command-line overrides included). Without one, SIGHUP
    /// only saves the state file.
    pub fn reload_with(&mut self, load: Reloader) {
        self.reloader = Some(load);
    }

    /// SIGHUP: saves the state, loads the configuration and starts
    /// applying it (see the module doc).
    pub(super) fn on_hup(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        if self.pending.is_some() {
            self.hup_again = true;
            crate::info!("SIGHUP: the last reload is still finishing streams; reloading again once it is done");
            return;
        }
        self.save_state(state::Durability::Synced);
        let Some(load) = self.reloader.as_mut() else {
            crate::info!("SIGHUP: state file saved; no configuration file to reload (the streams were named on the command line)");
            return;
        };
        let new = load().map_err(ClientError::Config);
        match new.and_then(|cfg| self.prepare(cfg)) {
            Ok(pending) => self.begin_reload(pending, now),
            Err(e) => crate::error!("SIGHUP: configuration refused, the running one stays: {e}"),
        }
    }

    /// Checks `cfg` as start-up would and plans it against the running
    /// configuration.
    fn prepare(&self, mut cfg: ClientConfig) -> Result<Pending, ClientError> {
        check_streams(&cfg.streams)?;
        let plan = client_plan(&self.config, &mut cfg);
        let settings = settings(&cfg, self.settings.id_key)?;
        Ok(Pending {
            cfg,
            plan,
            settings,
            keys: Vec::new(),
            sources: Vec::new(),
            until: Instant::now(), // set when it begins
        })
    }

    /// Begins finishing the streams the plan removes or changes; applies
    /// at once when there are none.
    fn begin_reload(&mut self, mut p: Pending, now: Instant) {
        if !p.plan.restart_only.is_empty() {
            crate::warn!(
                "SIGHUP: {} cannot change while loghamsterc runs; keeping the running values (restart to apply)",
                p.plan.restart_only.join(", ")
            );
        }
        let retired = p.plan.streams.removed.iter().copied();
        let retired = retired.chain(p.plan.streams.changed.iter().map(|&(old, _)| old));
        for old in retired {
            match self.units[old] {
                Unit::Stream(key) => p.keys.push(key),
                Unit::Source(i) => {
                    self.sources[i].retiring = true;
                    p.keys.extend(self.sources[i].in_flight.values().copied());
                    p.sources.push(i);
                }
            }
        }
        for &key in &p.keys {
            self.with_stream(key, now, |s, ctx| s.stop(ctx));
        }
        p.until = now + self.shutdown_timeout;
        self.reactor.timers.schedule(p.until, RELOAD);
        self.pending = Some(p);
        self.reload_if_ready(now);
    }

    /// Applies a pending reload once its retired streams finished (or ran
    /// out of time); called after every turn of the loop.
    pub(super) fn reload_if_ready(&mut self, now: Instant) {
        let Some(p) = &self.pending else {
            return;
        };
        let done = |k: &Key| self.streams.get(*k).is_none_or(|s| s.finished());
        if self.stopping || (now < p.until && !p.keys.iter().all(done)) {
            return;
        }
        let Some(p) = self.pending.take() else {
            return;
        };
        self.apply_reload(p, now);
        if std::mem::take(&mut self.hup_again) {
            self.on_hup(now);
        }
    }

    /// Drops the retired streams and sources, takes the new settings and
    /// starts the added and changed streams.
    fn apply_reload(&mut self, p: Pending, now: Instant) {
        for &key in &p.keys {
            self.retire_stream(key, now);
        }
        let moved = self.drop_sources(&p.sources);
        let shared_changed = !p.plan.shared.is_empty();
        self.take_settings(&p.cfg, p.settings, shared_changed);
        let mut units: Vec<Option<Unit>> = vec![None; p.cfg.streams.len()];
        for &(old, new) in &p.plan.streams.unchanged {
            units[new] = Some(match self.units[old] {
                Unit::Source(i) => Unit::Source(moved[i].unwrap_or(i)),
                unit => unit,
            });
        }
        let yields = stream_yields(&p.cfg.streams, false);
        let started = p.plan.streams.added.iter().copied();
        let started = started.chain(p.plan.streams.changed.iter().map(|&(_, new)| new));
        for new in started {
            let s = &p.cfg.streams[new];
            self.metrics.add_stream(StreamLabels::for_config(s), now);
            if s.rate_limit.is_none() {
                let meter = self.stream_meter(s);
                self.limits[meter] = None;
            }
            match self.add_stream(new, s, yields[new].clone()) {
                Ok(unit) => units[new] = Some(unit),
                // Checked in `prepare`; cannot fail here.
                Err(e) => crate::error!("reload: stream #{}: {e}", new + 1),
            }
        }
        self.units = units.into_iter().flatten().collect();
        self.send_only = p
            .cfg
            .streams
            .iter()
            .all(|s| s.method == crate::config::Method::Send);
        self.config = p.cfg;
        self.watch_dirs(now);
        self.save_soon = true;
        crate::info!("{}", p.plan.summary());
    }

    /// Ends stream `key` for good: its entries go back among the loaded
    /// ones (so the state file keeps them and a stream that takes its file
    /// again resumes), and every reference to it goes.
    fn retire_stream(&mut self, key: Key, now: Instant) {
        self.with_stream(key, now, |s, ctx| s.end(ctx));
        let Some(stream) = self.streams.remove(key) else {
            return;
        };
        self.open_files -= stream.open_files();
        self.loaded.extend(stream.entries());
        self.draining.remove(&key);
        self.links.waiting.retain(|k| *k != key);
        for dw in self.dirs.values_mut() {
            if let Some(keys) = dw.streams.get_mut(stream.name()) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    dw.streams.remove(stream.name());
                }
            }
        }
        for (_, keys, _) in &mut self.unwatched {
            keys.retain(|k| *k != key);
        }
        self.dirty = true;
    }

    /// Removes the retired sources; returns where each remaining one
    /// moved (`None`: removed), after renumbering the watches' lists.
    fn drop_sources(&mut self, retired: &[usize]) -> Vec<Option<usize>> {
        let mut moved = Vec::with_capacity(self.sources.len());
        let mut next = 0;
        for i in 0..self.sources.len() {
            match retired.contains(&i) {
                true => moved.push(None),
                false => {
                    moved.push(Some(next));
                    next += 1;
                }
            }
        }
        let mut i = 0;
        self.sources.retain(|_| {
            i += 1;
            moved[i - 1].is_some()
        });
        let renumber = |list: &mut Vec<usize>| {
            *list = list.iter().filter_map(|&i| moved[i]).collect();
        };
        for dw in self.dirs.values_mut() {
            renumber(&mut dw.sources);
        }
        for (_, _, sources) in &mut self.unwatched {
            renumber(sources);
        }
        moved
    }

    /// The new settings: new connections use them; with `shared_changed`
    /// every stream was restarted, so the servers and the tuning are
    /// taken as well.
    fn take_settings(&mut self, cfg: &ClientConfig, settings: Settings, shared_changed: bool) {
        self.settings = settings;
        if !shared_changed {
            return;
        }
        let t = &cfg.tuning;
        if cfg.server != self.config.server {
            let names = super::setup::server_names(&cfg.server);
            self.servers = super::failover::Servers::new(names, cfg.server.failover_after);
            self.server_meters = (self.servers.names().iter())
                .map(|n| super::meter::ServerMeter::new(&mut self.metrics, n))
                .collect();
        }
        self.links.max = t.max_connections;
        self.max_open_files =
            super::setup::max_open_files(t.max_open_files, t.max_connections, self.nofile);
        self.state_interval = t.state_interval;
        self.shutdown_timeout = t.shutdown_timeout;
        self.client_limit = t.rate_limit.map(|l| Bucket::new(l, Instant::now()));
    }
}
