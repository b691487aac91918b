//! SIGHUP: reopen the outputs, and take a new configuration without
//! dropping a connection.
//!
//! The outputs are reopened first, as before (logrotate renamed them).
//! Then, when the server was started from a file, the file is loaded
//! again (`Server::reload_with` says how, with the command line's
//! overrides) and compared with the running configuration
//! ([`crate::config::reload::server_plan`]). A file that does not load,
//! or whose new `[tls]` files do not, is refused with one ERROR line and
//! the running configuration stays. Otherwise the server takes at once,
//! for every connection that arrives from now on:
//!
//! - routes: the `[output.NAME]` tables and `directory` (a new
//!   [`Router`]);
//! - limits: `max_connections` and `max_connections_per_address` (the
//!   [`Gate`](super::admit::Gate)), `decoder_memory` (new decoders),
//!   `idle_timeout` (from the next sweep), `stream_retention`,
//!   `handshake_timeout`, `max_line`, `connection_rate_limit`,
//!   `accept_compression`, `sync_interval`;
//! - who may write what: `[[token]]` and `[[allow]]`;
//! - `[tls]` (a changed section loads its files; an unchanged one loads
//!   them again, as before).
//!
//! Connections already streaming keep their output, their decoder and
//! their authorization until they end. Moving a live stream to another
//! output would need a boundary both sides agree on: which bytes went to
//! the old file, what the checkpoint and the resume book say, what was
//! acknowledged. The client's next connection is exactly that boundary:
//! the resume book notices a stream routed elsewhere and takes the
//! client's acknowledged offset (`conn::attach`). So a new route applies
//! when a stream reconnects (after `idle_timeout`, a restart of the
//! client, or a network break), and to a revoked token or rule likewise;
//! restart loghamsterd to cut every connection at once.
//!
//! Keys that cannot change in a running server (`listen`, the state
//! file, `sync`, `engine`, `[prometheus]`, `debug`, `log_format`, JetStream outputs)
//! are named in one WARN and keep their running values.

use super::{conn, Server};
use crate::config::reload::server_plan;
use crate::config::ServerConfig;
use crate::sink::route::Router;
use crate::tls::Acceptor;

/// Loads the configuration again for a reload: the file and the command
/// line's overrides, or why not (one line).
pub type Reloader = Box<dyn FnMut() -> Result<ServerConfig, String> + Send>;

impl Server {
    /// Lets SIGHUP reload the configuration: `load` reads it again (as at
    /// start-up, command-line overrides included). Without one, SIGHUP
    /// only reopens outputs and reloads the TLS files.
    pub fn reload_with(&mut self, load: Reloader) {
        self.reloader = Some(load);
    }

    /// SIGHUP: reopens every output, then reloads the configuration (or,
    /// without a [`Reloader`], the TLS files).
    pub(super) fn on_hup(&mut self) {
        let failed = self.shared.outputs.reopen_all();
        crate::info!(
            "SIGHUP: reopened {} outputs",
            self.shared.outputs.len() - failed.len()
        );
        for (path, e) in failed {
            crate::error!("cannot reopen output {}: {e}", crate::log::esc(&path));
        }
        if !self.reload_config() {
            self.reload_tls();
        }
    }

    /// Loads and applies the configuration; true when it applied a
    /// changed `[tls]` (its files are then fresh).
    fn reload_config(&mut self) -> bool {
        let Some(load) = self.reloader.as_mut() else {
            return false;
        };
        let mut new = match load() {
            Ok(cfg) => cfg,
            Err(e) => {
                crate::error!("SIGHUP: configuration refused, the running one stays: {e}");
                return false;
            }
        };
        let plan = server_plan(&self.shared.cfg, &mut new);
        let tls_changed = plan.changed.contains(&"[tls]");
        let tls = match tls_changed {
            true => match new.tls.as_ref().map(Acceptor::load).transpose() {
                Ok(tls) => tls,
                Err(e) => {
                    crate::error!("SIGHUP: configuration refused, the running one stays: {e}");
                    return false;
                }
            },
            false => self.shared.tls.take(),
        };
        if !plan.restart_only.is_empty() {
            crate::warn!(
                "SIGHUP: {} cannot change while loghamsterd runs; keeping the running values (restart to apply)",
                plan.restart_only.join(", ")
            );
        }
        self.apply_config(new, tls);
        crate::info!("{}", plan.summary());
        tls_changed
    }

    /// Makes `cfg` the running configuration for new connections.
    fn apply_config(&mut self, cfg: ServerConfig, tls: Option<Acceptor>) {
        let shared = &mut self.shared;
        shared.router = Router::new(&cfg);
        let lowered = self.gate.lowered.take();
        self.gate.set_limits(&cfg.limits);
        if let Some(why) = self
            .gate
            .lowered
            .as_ref()
            .filter(|&w| Some(w) != lowered.as_ref())
        {
            crate::info!("{why}");
        }
        if cfg.limits.decoder_memory != shared.cfg.limits.decoder_memory {
            let used = shared.metrics.decoder_memory.clone();
            shared.decoders = conn::Budget::new(cfg.limits.decoder_memory, used);
        }
        if cfg.auth.is_open() && !shared.cfg.auth.is_open() {
            crate::warn!(
                "open server: the new configuration has no [[allow]] rules, so anyone who can reach {} may write any host's streams to any output",
                self.local_addr
            );
        }
        shared.tls = tls;
        shared.cfg = cfg;
    }

    /// Loads `[tls]`'s files again; new connections use them, open ones
    /// keep theirs. A failure keeps the old ones.
    fn reload_tls(&mut self) {
        let Some(tls) = &mut self.shared.tls else {
            return;
        };
        match tls.reload() {
            Ok(()) => crate::info!(
                "SIGHUP: reloaded TLS certificate {} ({})",
                tls.settings.cert.display(),
                tls.describes
            ),
            Err(e) => {
                crate::error!("SIGHUP: TLS reload failed, keeping the certificate in use: {e}")
            }
        }
    }
}
