//! loghamsterc: the LogHamster client. See the crate docs and README.

// The fields' doc comments are argh's --help text, written for a terminal.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

/// `--version`: the crate version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LOGHAMSTER_COMMIT"),
    ")"
);
use loghamster::config::client::Endpoint;
use loghamster::config::ClientConfig;
use loghamster::{Client, ClientDaemon};

/// Follow log files and stream what is appended to a loghamsterd server.
#[derive(FromArgs)]
struct Args {
    /// TOML config file (the keys of the README's client section)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// server as host:port; repeat it for several servers (without
    /// --config; with it, replaces [server]'s servers)
    #[argh(option, short = 's')]
    server: Vec<String>,
    /// state file (overrides `state_file`)
    #[argh(option)]
    state_file: Option<PathBuf>,
    /// service name sent as `svc` with every file given on the command line
    #[argh(option)]
    svc: Option<String>,
    /// extra metadata `key=value` sent with every file on the command line (repeatable)
    #[argh(option)]
    meta: Vec<String>,
    /// host name sent in INIT (default: this machine's)
    #[argh(option)]
    hostname: Option<String>,
    /// wire compression: none, gzip, lz4 or zstd, optionally with a
    /// level as zstd:9 (overrides [server] compression)
    #[argh(option)]
    compression: Option<String>,
    /// one connection per followed file (overrides [server] multiplex;
    /// default: followed files share one connection per server)
    #[argh(switch)]
    no_multiplex: bool,
    /// file holding the token <name>:<secret> sent to the server, mode 600
    /// (overrides [server] token_file)
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// serve /metrics and /health on this address, e.g. 127.0.0.1:9101
    /// (turns [prometheus] on; overrides its listen)
    #[argh(option)]
    metrics_listen: Option<String>,
    /// print debug lines
    #[argh(switch)]
    debug: bool,
    /// log lines as text (default) or json, one object per line
    /// (overrides `log_format`)
    #[argh(option, from_str_fn(log_format))]
    log_format: Option<loghamster::log::Format>,
    /// ship the file a symlink at a followed path leads to (overrides
    /// `follow_symlinks`; default: symlinks are not opened)
    #[argh(switch)]
    follow_symlinks: bool,
    /// validate the config, print a summary and exit
    #[argh(switch)]
    check_config: bool,
    /// files to stream (without --config)
    #[argh(positional)]
    files: Vec<PathBuf>,
}

fn log_format(text: &str) -> Result<loghamster::log::Format, String> {
    loghamster::cli::log_format(text)
}

fn main() -> ExitCode {
    let args: Args = loghamster::cli::parse("loghamsterc", VERSION);
    if let Some(f) = args.log_format {
        loghamster::log::set_format(f);
    }
    let cfg = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            loghamster::log::fatal("loghamsterc", &e);
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        if let Some(tls) = &cfg.tls {
            // The files too: a bad one is the same error as at start-up.
            if let Err(e) = loghamster::tls::client_config(tls, &cfg.server.hostname) {
                eprintln!("loghamsterc: {e}");
                return ExitCode::from(2);
            }
            println!("tls: files OK");
        }
        let metrics = match cfg.prometheus.enabled {
            true => format!(", metrics on {}", cfg.prometheus.listen),
            false => String::new(),
        };
        let failover = match cfg.server.servers.len() {
            1 => String::new(),
            _ => format!(
                ", failover after {:?}{}",
                cfg.server.failover_after,
                if cfg.server.resolve_all {
                    ", every address of a name"
                } else {
                    ""
                }
            ),
        };
        // The state file as at start-up, but nothing is created or
        // changed (a missing directory is asked about, not made).
        if let Err(e) = loghamster::writable::client(&cfg, loghamster::writable::Mode::Check) {
            eprintln!("loghamsterc: {e}");
            return ExitCode::from(1);
        }
        let token = match &cfg.server.token {
            Some(t) => format!(", token {}", t.name()),
            None => String::new(),
        };
        println!(
            "config OK: {} {} (compression {}{token}{failover}), {} streams, state file {} (writable){metrics}",
            if cfg.server.servers.len() == 1 { "server" } else { "servers" },
            cfg.server.list(),
            cfg.server.compression,
            cfg.streams.len(),
            cfg.state_file.display()
        );
        println!("logs: {}", args.log_format.unwrap_or(cfg.log_format));
        return ExitCode::SUCCESS;
    }
    loghamster::log::init("loghamsterc", cfg.debug);
    loghamster::log::set_format(args.log_format.unwrap_or(cfg.log_format));
    let result = ClientDaemon::new(cfg, true).and_then(|mut daemon| {
        if args.config.is_some() {
            // SIGHUP loads the file again, with the same overrides.
            daemon.reload_with(Box::new(move || build_config(&args)));
        }
        daemon.run()
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            loghamster::log::fatal("loghamsterc", &e);
            ExitCode::from(1)
        }
    }
}

/// The `--server` options: each `host:port` (`[v6addr]:port`), no server
/// twice.
fn cli_servers(given: &[String]) -> Result<Vec<Endpoint>, String> {
    for s in given {
        Client::split_server(s)?;
    }
    Endpoint::parse_list(given, 0).map_err(|e| format!("--server: {e}"))
}

fn build_config(args: &Args) -> Result<ClientConfig, String> {
    let mut cfg = match (&args.config, args.server.first()) {
        (Some(path), _) => {
            if !args.files.is_empty() {
                return Err(
                    "give files either in the config file or on the command line, not both".into(),
                );
            }
            let mut cfg = ClientConfig::load(path).map_err(|e| e.to_string())?;
            if !args.server.is_empty() {
                cfg.server.set_servers(cli_servers(&args.server)?);
            }
            cfg
        }
        (None, Some(_)) => {
            if args.files.is_empty() {
                return Err(
                    "no files to stream: name them after the options, or use --config".into(),
                );
            }
            let mut meta = Vec::new();
            for kv in &args.meta {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--meta {kv:?}: expected key=value"))?;
                meta.push((k.to_string(), v.to_string()));
            }
            cli_servers(&args.server)?;
            let mut client = Client::new(args.server.as_slice());
            for f in &args.files {
                client.stream_file_with(f, args.svc.clone(), meta.clone());
            }
            client.into_config()?
        }
        (None, None) => {
            return Err(
                "nothing to do: give --config FILE, or --server HOST:PORT and files (see --help)"
                    .into(),
            )
        }
    };
    if let Some(s) = &args.state_file {
        cfg.state_file = s.clone();
    }
    if let Some(h) = &args.hostname {
        if !loghamster::proto::is_host_name(h) {
            return Err(format!(
                "--hostname {h:?}: use only letters, digits, '.', '_' and '-' (not \".\" or \"..\")"
            ));
        }
        cfg.hostname = Some(h.clone());
    }
    if let Some(path) = &args.token_file {
        let token = loghamster::config::client::ClientToken::read(path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        cfg.server.token = Some(token);
    }
    if let Some(c) = &args.compression {
        cfg.server.compression =
            loghamster::config::Compression::parse(c).map_err(|e| format!("--compression: {e}"))?;
    }
    if let Some(listen) = &args.metrics_listen {
        cfg.prometheus.enable_at(listen)?;
    }
    if args.no_multiplex {
        cfg.server.multiplex = false;
    }
    cfg.debug |= args.debug;
    cfg.follow_symlinks |= args.follow_symlinks;
    Ok(cfg)
}
