//! The client's list of servers: `[server] hostnames = ["log1:8901", ...]`,
//! the seed's `hostname` + `port` for one, or `--server` given once or more.
//!
//! An entry is `host:port`, `[v6addr]:port`, or a bare host (or bare IPv6
//! address) that takes the section's `port` (default 8901). Entries are
//! kept in the order given; the same server named twice is an error (it
//! would get twice its share of streams). Which server a stream goes to is
//! `client/rendezvous.rs`; `resolve_all` (several addresses per name) is
//! applied when the client starts (`client/setup.rs`).

use std::fmt;

/// One configured server: a host name or address, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or IP address (an IPv6 address without brackets);
    /// non-empty, no spaces.
    pub host: String,
    /// TCP port; never 0.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a server entry was refused; the message names the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryError {
    Empty,
    BadHost(String),
    BadPort { entry: String, why: String },
    Duplicate(String),
    NoServers,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryError::Empty => f.write_str("a server entry is empty"),
            EntryError::BadHost(e) => write!(
                f,
                "server {e:?}: expected host:port, [v6addr]:port or a bare host (no spaces, no empty host)"
            ),
            EntryError::BadPort { entry, why } => write!(f, "server {entry:?}: {why}"),
            EntryError::Duplicate(e) => write!(
                f,
                "server {e} is named twice (it would get twice its share of streams)"
            ),
            EntryError::NoServers => f.write_str("the list of servers is empty"),
        }
    }
}

impl std::error::Error for EntryError {}

impl Endpoint {
    /// Parses one entry; a bare host takes `default_port`.
    pub fn parse(entry: &str, default_port: u16) -> Result<Endpoint, EntryError> {
        let text = entry.trim();
        if text.is_empty() {
            return Err(EntryError::Empty);
        }
        let bad_host = || EntryError::BadHost(entry.to_string());
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad_host)?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or_else(bad_host)?)),
            }
        } else if text.matches(':').count() > 1 {
            (text, None) // a bare IPv6 address
        } else {
            match text.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (text, None),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad_host());
        }
        let port = match port {
            None => default_port,
            Some(p) => crate::cli::connect_port(p).map_err(|e| EntryError::BadPort {
                entry: entry.to_string(),
                why: e.to_string(),
            })?,
        };
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }

    /// Parses a list of entries (in order), refusing an empty list and
    /// the same server twice.
    pub fn parse_list<S: AsRef<str>>(
        entries: &[S],
        default_port: u16,
    ) -> Result<Vec<Endpoint>, EntryError> {
        let mut out: Vec<Endpoint> = Vec::with_capacity(entries.len());
        for e in entries {
            let ep = Endpoint::parse(e.as_ref(), default_port)?;
            if out.contains(&ep) {
                return Err(EntryError::Duplicate(ep.to_string()));
            }
            out.push(ep);
        }
        if out.is_empty() {
            return Err(EntryError::NoServers);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn entries_parse_with_and_without_ports() {
        let cases = [
            ("log1:8901", ep("log1", 8901)),
            ("log1", ep("log1", 7000)),
            (" log1:9 ", ep("log1", 9)),
            ("[::1]:8901", ep("::1", 8901)),
            ("[::1]", ep("::1", 7000)),
            ("fe80::1", ep("fe80::1", 7000)),
            ("10.0.0.1:1", ep("10.0.0.1", 1)),
        ];
        for (text, want) in cases {
            assert_eq!(Endpoint::parse(text, 7000), Ok(want.clone()), "{text}");
        }
        assert_eq!(ep("::1", 5).to_string(), "[::1]:5");
        assert_eq!(ep("log1", 5).to_string(), "log1:5");
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["", "  ", ":8901", "log 1:8901", "[::1", "[::1]x", "[]:1"] {
            let e = Endpoint::parse(bad, 8901).unwrap_err();
            assert!(!e.to_string().is_empty(), "{bad}");
        }
        let e = Endpoint::parse("log1:0", 8901).unwrap_err();
        assert!(e.to_string().contains("log1:0"), "{e}");
        let e = Endpoint::parse("log1:http", 8901).unwrap_err();
        assert!(matches!(e, EntryError::BadPort { .. }), "{e}");
        let e = Endpoint::parse_list(&["a:1", "b:2", "a:1"], 8901).unwrap_err();
        assert_eq!(e, EntryError::Duplicate("a:1".into()));
        let e = Endpoint::parse_list(&["a", "a:8901"], 8901).unwrap_err();
        assert_eq!(e, EntryError::Duplicate("a:8901".into()));
        let none: [&str; 0] = [];
        assert_eq!(Endpoint::parse_list(&none, 1), Err(EntryError::NoServers));
    }
}
