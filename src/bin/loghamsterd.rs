//! loghamsterd: the LogHamster server. See the crate docs and README.

// The fields' doc comments are argh's --help text, written for a terminal.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use std::net::SocketAddr;
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
use loghamster::config::ServerConfig;
use loghamster::Server;

/// Receive log streams over the LogHamster protocol and write them to files.
#[derive(FromArgs)]
struct Args {
    /// TOML config file (the keys of the README's server section)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// address to listen on, e.g. 127.0.0.1:8901 (overrides `listen`)
    #[argh(option, short = 'l', from_str_fn(listen_addr))]
    listen: Option<SocketAddr>,
    /// root of the default route directory/<host>/<path> (overrides `directory`)
    #[argh(option, short = 'd')]
    directory: Option<PathBuf>,
    /// serve /metrics and /health on this address, e.g. 127.0.0.1:8091
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
    /// validate the config, print a summary and exit
    #[argh(switch)]
    check_config: bool,
    /// read a token `<name>:<secret>` (a client's token_file) from stdin,
    /// print its [[token]] entry for the server config, and exit
    #[argh(switch)]
    hash_token: bool,
}

fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    loghamster::cli::listen_addr(text).map_err(|e| e.to_string())
}

fn log_format(text: &str) -> Result<loghamster::log::Format, String> {
    loghamster::cli::log_format(text)
}

fn main() -> ExitCode {
    let args: Args = loghamster::cli::parse("loghamsterd", VERSION);
    if args.hash_token {
        return hash_token();
    }
    if let Some(f) = args.log_format {
        loghamster::log::set_format(f);
    }
    let cfg = match load_config(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            loghamster::log::fatal("loghamsterd", &e);
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        let codecs: Vec<&str> = cfg.accept_compression.iter().map(|c| c.name()).collect();
        println!(
            "config OK: listen {}, {} outputs, default directory {}, compression accepted: {}",
            cfg.listen,
            cfg.outputs.len(),
            match &cfg.directory {
                Some(d) => d.display().to_string(),
                None => "(none: streams that match no output are refused)".into(),
            },
            match codecs.is_empty() {
                true => "none".to_string(),
                false => codecs.join(", "),
            }
        );
        match cfg.prometheus.enabled {
            true => println!(
                "metrics: http://{}/metrics and /health",
                cfg.prometheus
                    .addr()
                    .map_or_else(|| cfg.prometheus.listen.clone(), |a| a.to_string())
            ),
            false => println!("metrics: off (no [prometheus] enabled, no --metrics-listen)"),
        }
        // Where it writes, as at start-up, but nothing is created or
        // changed (a missing directory is asked about, not made).
        match loghamster::writable::server(&cfg, loghamster::writable::Mode::Check) {
            Ok(checked) if checked.is_empty() => {
                println!("writes: nothing on disk (no directory, state file or file output)")
            }
            Ok(checked) => println!("writable: {}", checked.join(", ")),
            Err(e) => {
                eprintln!("loghamsterd: {e}");
                return ExitCode::from(1);
            }
        }
        println!("limits: {}", cfg.limits);
        println!("logs: {}", args.log_format.unwrap_or(cfg.log_format));
        match cfg.auth.is_open() {
            true => println!("authorization: open (no [[allow]] rules: anyone who can connect may write anything)"),
            false => println!(
                "authorization: {} [[allow]] rules, {} tokens",
                cfg.auth.rules.len(),
                cfg.auth.tokens.len()
            ),
        }
        if let Some(tls) = &cfg.tls {
            // The files too: a bad one is the same error as at start-up.
            match loghamster::tls::Acceptor::load(tls) {
                Ok(a) => println!("tls: certificate {} ({})", tls.cert.display(), a.describes),
                Err(e) => {
                    eprintln!("loghamsterd: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        return ExitCode::SUCCESS;
    }
    loghamster::log::init("loghamsterd", cfg.debug);
    loghamster::log::set_format(args.log_format.unwrap_or(cfg.log_format));
    let mut server = match Server::bind(cfg, true) {
        Ok(s) => s,
        Err(e) => {
            loghamster::log::fatal("loghamsterd", &e);
            return ExitCode::from(1);
        }
    };
    if args.config.is_some() {
        // SIGHUP loads the file again, with the same overrides.
        server.reload_with(Box::new(move || load_config(&args)));
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            loghamster::log::fatal("loghamsterd", &e);
            ExitCode::from(1)
        }
    }
}

/// The configuration: the file (or defaults) with the command line's
/// overrides; at start-up and again on SIGHUP.
fn load_config(args: &Args) -> Result<ServerConfig, String> {
    let mut cfg = match &args.config {
        Some(path) => ServerConfig::load(path).map_err(|e| e.to_string())?,
        None => ServerConfig::from_flags(None, None, false),
    };
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(d) = &args.directory {
        cfg.directory = Some(d.clone());
    }
    cfg.debug |= args.debug;
    if let Some(listen) = &args.metrics_listen {
        cfg.prometheus.enable_at(listen)?;
    }
    Ok(cfg)
}

/// `--hash-token`: one `<name>:<secret>` line from stdin to a `[[token]]`
/// entry on stdout. The secret is not echoed.
fn hash_token() -> ExitCode {
    use std::io::Read;
    let mut line = String::new();
    // One line is plenty; more is not a token file.
    let read = std::io::stdin().take(4096).read_to_string(&mut line);
    if let Err(e) = read {
        eprintln!("loghamsterd: --hash-token: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    let one = line.strip_suffix('\n').unwrap_or(&line);
    if one.contains('\n') {
        eprintln!("loghamsterd: --hash-token: expected one line, <name>:<secret>");
        return ExitCode::from(2);
    }
    match loghamster::server::auth::token_entry(one) {
        Ok(entry) => {
            print!("{entry}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loghamsterd: --hash-token: {e}");
            ExitCode::from(2)
        }
    }
}
