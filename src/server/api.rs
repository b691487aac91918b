//! Building a server from code instead of a config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{Server, ServerError};
use crate::config::ServerConfig;

/// Flags-only server set-up: `Server::builder().listen(a).directory(d).bind()`.
#[derive(Debug, Default)]
pub struct ServerBuilder {
    listen: Option<SocketAddr>,
    directory: Option<PathBuf>,
    debug: bool,
    signals: bool,
}

impl ServerBuilder {
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Root of the default route `directory/<host>/<path>`.
    pub fn directory(mut self, dir: impl AsRef<Path>) -> Self {
        self.directory = Some(dir.as_ref().to_path_buf());
        self
    }

    pub fn debug(mut self, on: bool) -> Self {
        self.debug = on;
        self
    }

    /// Let SIGTERM/SIGINT stop the server and SIGHUP reopen outputs.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    pub fn bind(self) -> Result<Server, ServerError> {
        Server::bind(
            ServerConfig::from_flags(self.listen, self.directory, self.debug),
            self.signals,
        )
    }
}
