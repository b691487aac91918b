//! What both daemons' command lines share: argument parsing with the
//! exit codes the README promises, `-h`, `--version`, and port numbers
//! checked with their own message.
//!
//! argh exits 1 on a usage error and knows only `--help`. Operators and
//! scripts expect the conventions of every other daemon: `-h` and
//! `--help` print the usage to stdout and exit 0, `-V` and `--version`
//! print the version and exit 0, and any usage error exits 2 with one
//! line on stderr. [`parse`] wraps argh's `FromArgs` to give exactly that;
//! the decision is [`classify`], a pure function tested without a process.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use argh::{EarlyExit, FromArgs};

/// What the command line asked for.
#[derive(Debug, PartialEq)]
pub enum Parsed<T> {
    /// Run with these arguments.
    Run(T),
    /// Print this to stdout and exit 0 (`--help`, `--version`).
    Print(String),
    /// A usage error: print this to stderr and exit 2.
    Usage(String),
}

/// The exit code of a usage error (wrong flag, bad value, bad config).
pub const EXIT_USAGE: u8 = 2;

/// Parses `args` (without the program name) for the program `name`,
/// whose version text is `version`.
pub fn classify<T: FromArgs>(name: &str, version: &str, args: &[String]) -> Parsed<T> {
    if args.iter().any(|a| a == "-V" || a == "--version") {
        return Parsed::Print(format!("{name} {version}\n"));
    }
    // argh spells help `--help` only; `-h` is what everyone types first.
    let args: Vec<&str> = args
        .iter()
        .map(|a| if a == "-h" { "--help" } else { a.as_str() })
        .collect();
    match T::from_args(&[name], &args) {
        Ok(t) => Parsed::Run(t),
        Err(EarlyExit {
            output,
            status: Ok(()),
        }) => Parsed::Print(output),
        Err(EarlyExit {
            output,
            status: Err(()),
        }) => Parsed::Usage(output),
    }
}

/// Parses the process's arguments; prints and exits for help, version
/// and usage errors (exit 2).
pub fn parse<T: FromArgs>(name: &str, version: &str) -> T {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match classify(name, version, &args) {
        Parsed::Run(t) => t,
        Parsed::Print(text) => {
            print!("{text}");
            std::process::exit(0)
        }
        Parsed::Usage(text) => {
            eprint!("{text}");
            std::process::exit(EXIT_USAGE.into())
        }
    }
}

/// Why a port number or address was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrError {
    /// No `:port` at the end.
    NoPort(String),
    /// The part before `:port` is not an IP address.
    NotAnIp(String),
    /// The port is not a decimal number.
    NotANumber(String),
    /// The port is outside the range allowed here.
    OutOfRange { port: String, min: u16 },
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::NoPort(a) => write!(f, "{a:?}: expected ip:port"),
            AddrError::NotAnIp(ip) => write!(f, "{ip:?} is not an IP address"),
            AddrError::NotANumber(p) => write!(f, "port {p:?} is not a number"),
            AddrError::OutOfRange { port, min } => {
                write!(f, "port {port} is out of range ({min} to 65535)")
            }
        }
    }
}

impl std::error::Error for AddrError {}

/// A TCP port to connect to: a decimal number from 1 to 65535.
pub fn connect_port(text: &str) -> Result<u16, AddrError> {
    port_in(text, 1)
}

/// A TCP port to listen on: 0 (the kernel picks a free one, which the
/// daemon logs) to 65535.
pub fn listen_port(text: &str) -> Result<u16, AddrError> {
    port_in(text, 0)
}

fn port_in(text: &str, min: u16) -> Result<u16, AddrError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::NotANumber(text.to_string()));
    }
    match text.parse::<u64>() {
        Ok(p) if p >= u64::from(min) && p <= 65535 => Ok(p as u16),
        _ => Err(AddrError::OutOfRange {
            port: text.to_string(),
            min,
        }),
    }
}

/// `--log-format`: `text` or `json` (see [`crate::log::Format`]).
pub fn log_format(text: &str) -> Result<crate::log::Format, String> {
    crate::log::Format::parse(text).ok_or_else(|| "expected text or json".to_string())
}

/// An address to listen on: `ip:port` or `[ipv6]:port`, port 0 to 65535.
pub fn listen_addr(text: &str) -> Result<SocketAddr, AddrError> {
    let (ip, port) = text
        .rsplit_once(':')
        .ok_or_else(|| AddrError::NoPort(text.to_string()))?;
    let bare = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']'));
    let ip: IpAddr = match bare {
        Some(v6) => v6.parse::<Ipv6Addr>().map(IpAddr::V6),
        None => ip.parse::<Ipv4Addr>().map(IpAddr::V4),
    }
    .map_err(|_| AddrError::NotAnIp(ip.to_string()))?;
    Ok(SocketAddr::new(ip, listen_port(port)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test the help text and its exits.
    #[derive(FromArgs, Debug, PartialEq)]
    struct Args {
        /// a number
        #[argh(option)]
        n: Option<u32>,
        /// a switch
        #[argh(switch)]
        debug: bool,
    }

    fn run(args: &[&str]) -> Parsed<Args> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        classify("prog", "1.2.3 (abc)", &args)
    }

    #[test]
    fn runs_with_good_arguments() {
        assert_eq!(
            run(&["--n", "4", "--debug"]),
            Parsed::Run(Args {
                n: Some(4),
                debug: true
            })
        );
    }

    #[test]
    fn help_long_and_short_print_usage() {
        for h in ["-h", "--help"] {
            match run(&[h]) {
                Parsed::Print(text) => assert!(text.contains("Usage: prog"), "{text}"),
                other => panic!("{h}: {other:?}"),
            }
        }
    }

    #[test]
    fn version_long_and_short() {
        for v in ["-V", "--version"] {
            assert_eq!(run(&[v]), Parsed::Print("prog 1.2.3 (abc)\n".into()));
        }
        // Anywhere on the line, as with other daemons.
        assert_eq!(
            run(&["--debug", "--version"]),
            Parsed::Print("prog 1.2.3 (abc)\n".into())
        );
    }

    #[test]
    fn usage_errors_are_usage() {
        for args in [&["--bogus"][..], &["--n", "x"], &["--n"], &["stray"]] {
            match run(args) {
                Parsed::Usage(text) => assert!(!text.is_empty(), "{args:?}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn ports() {
        assert_eq!(connect_port("8901"), Ok(8901));
        assert_eq!(connect_port("1"), Ok(1));
        assert_eq!(connect_port("65535"), Ok(65535));
        assert_eq!(listen_port("0"), Ok(0));
        for bad in ["0", "65536", "99999", "18446744073709551616"] {
            let want = AddrError::OutOfRange {
                port: bad.into(),
                min: 1,
            };
            assert_eq!(connect_port(bad), Err(want), "{bad}");
        }
        for bad in ["", "x", "-1", "+80", " 80", "8o"] {
            let want = AddrError::NotANumber(bad.into());
            assert_eq!(connect_port(bad), Err(want), "{bad}");
        }
        assert_eq!(
            connect_port("99999").unwrap_err().to_string(),
            "port 99999 is out of range (1 to 65535)"
        );
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            listen_addr("127.0.0.1:0"),
            Ok("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(listen_addr("[::1]:8901"), Ok("[::1]:8901".parse().unwrap()));
        assert_eq!(
            listen_addr("127.0.0.1:99999").unwrap_err().to_string(),
            "port 99999 is out of range (0 to 65535)"
        );
        assert_eq!(
            listen_addr("localhost:80"),
            Err(AddrError::NotAnIp("localhost".into()))
        );
        assert_eq!(listen_addr("::1:80"), Err(AddrError::NotAnIp("::1".into())));
        assert_eq!(listen_addr("8901"), Err(AddrError::NoPort("8901".into())));
    }
}
