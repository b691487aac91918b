//! Entry points for the fuzz targets in `fuzz/fuzz_targets/`, kept in the
//! library so `tests/fuzz_corpus.rs` replays every committed corpus file
//! through exactly the checks the fuzzer runs (a crash input stays a
//! regression test of stable `cargo test`).
//!
//! Not an API: hidden from the docs, and nothing else in the crate uses
//! it. Each function takes the fuzzer's bytes, drives the real parser or
//! loader with them, and panics when an invariant breaks:
//!
//! - [`config`]: both TOML configurations (client and server), from text,
//!   validated; an error has a message, a server configuration routes.
//! - [`client_state`]: the client's state file through its public
//!   [`load`](crate::tail::state::load); what loads saves and loads again
//!   to the same entries.
//! - [`checkpoint`]: the server's snapshot plus journal through
//!   [`Store::open`](crate::sink::journal::Store::open), with journal
//!   records framed (length and checksum) by the harness so the fuzzer
//!   reaches the record parser; what loads is written as a snapshot and
//!   loads again to the same checkpoint.
//! - [`server`](crate::server::harness::run): a scripted conversation with
//!   a real server (see that module).
//!
//! The loaders read files, so their entry points take a scratch directory
//! the caller owns (the fuzz targets use one per process under `/dev/shm`,
//! the corpus test a temp dir).

mod state;

pub use state::{checkpoint, client_state};

use crate::config::{ClientConfig, ServerConfig};
use crate::sink::route::{Router, StreamInfo};

/// Parses `data` as a client and as a server configuration. Nothing may
/// panic; an error must say what is wrong; a valid server configuration
/// must build a router that answers a plain stream.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let name = std::path::Path::new("fuzz.toml");
    if let Err(e) = ClientConfig::from_toml_str(text, name) {
        assert!(
            !e.to_string().is_empty(),
            "client config error without text"
        );
    }
    match ServerConfig::from_toml_str(text, name) {
        Ok(cfg) => {
            let router = Router::new(&cfg);
            let meta = [("svc", "app")];
            let info = StreamInfo {
                host: "web1",
                path: "/var/log/app.log",
                meta: &meta,
            };
            if let Ok(route) = router.route(&info) {
                assert!(route.relative.components().count() > 0);
            }
        }
        Err(e) => assert!(
            !e.to_string().is_empty(),
            "server config error without text"
        ),
    }
}

/// A scratch directory for this process's fuzz target `name`, created on
/// first use: under `/dev/shm` when it exists (no disk writes per
/// execution), else the temp dir. Left behind when the fuzzer stops.
pub fn scratch_dir(name: &str) -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let root = match shm.is_dir() {
            true => shm.to_path_buf(),
            false => std::env::temp_dir(),
        };
        let dir = root.join(format!("loghamster-fuzz-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the fuzz scratch directory");
        dir
    })
}
