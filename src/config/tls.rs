//! The `[tls]` section of both daemons.
//!
//! ```toml
//! # loghamsterd
//! [tls]
//! cert = "/etc/loghamster/server.crt"   # PEM chain, the server's certificate first
//! key = "/etc/loghamster/server.key"    # PEM private key (PKCS#8, PKCS#1 or SEC1)
//! client_ca = "/etc/loghamster/clients-ca.crt"  # optional: require client certificates
//! require = true                        # default: plain TCP is refused
//!
//! # loghamsterc
//! [tls]
//! ca = "/etc/loghamster/ca.crt"         # optional: else the system's roots
//! cert = "/etc/loghamster/web1.crt"     # optional, with key: mutual TLS
//! key = "/etc/loghamster/web1.key"
//! server_name = "logs.example.net"      # optional: else each server's host name
//! ```
//!
//! This step checks the section's shape (which keys go together, no empty
//! paths). The files themselves are read when the daemon starts
//! ([`crate::tls::load`]), and a bad one stops it with one line naming
//! the file.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Doc};

/// The server's `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `cert`: PEM certificate chain, end entity first. Non-empty path.
    pub cert: PathBuf,
    /// `key`: PEM private key matching `cert`. Non-empty path.
    pub key: PathBuf,
    /// `client_ca`: when set, clients must present a certificate signed by
    /// a CA in this PEM file (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// `require` (default true): plain TCP connections are refused with
    /// `403 TLS required`. With false the listener takes both.
    pub require: bool,
}

/// The client's `[tls]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// `ca`: PEM file of the CAs that may sign the server's certificate;
    /// `None`: the system's root certificates.
    pub ca: Option<PathBuf>,
    /// `cert`/`key`: the client's certificate for mutual TLS; both or
    /// neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `server_name`: the name the server's certificate must carry;
    /// `None`: each server's own host name (`[server] hostname` or
    /// every `hostnames` entry).
    pub server_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTls {
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
    client_ca: Option<Spanned<PathBuf>>,
    require: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientTls {
    ca: Option<Spanned<PathBuf>>,
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
    server_name: Option<Spanned<String>>,
}

/// A path key, refused when empty.
fn path(
    doc: &Doc<'_>,
    key: &str,
    v: Option<Spanned<PathBuf>>,
) -> Result<Option<PathBuf>, ConfigError> {
    match v {
        Some(p) if p.get_ref().as_os_str().is_empty() => {
            Err(doc.err_at(p.span(), format!("`tls.{key}` must not be empty")))
        }
        v => Ok(v.map(Spanned::into_inner)),
    }
}

impl RawServerTls {
    pub(super) fn validate(self, doc: &Doc<'_>) -> Result<ServerTls, ConfigError> {
        let cert = path(doc, "cert", self.cert)?;
        let key = path(doc, "key", self.key)?;
        let (cert, key) = match (cert, key) {
            (Some(c), Some(k)) => (c, k),
            (None, _) => {
                return Err(doc
                    .err_at_header(
                        "[tls]",
                        0,
                        "[tls]: `cert` is missing (the server's certificate, PEM)".into(),
                    )
                    .with_hint("a server with [tls] needs cert = \"...\" and key = \"...\""))
            }
            (Some(_), None) => {
                return Err(doc.err_at_header(
                    "[tls]",
                    0,
                    "[tls]: `cert` without `key` (the certificate's private key, PEM)".into(),
                ))
            }
        };
        Ok(ServerTls {
            cert,
            key,
            client_ca: path(doc, "client_ca", self.client_ca)?,
            require: self.require.unwrap_or(true),
        })
    }
}

impl RawClientTls {
    pub(super) fn validate(self, doc: &Doc<'_>) -> Result<ClientTls, ConfigError> {
        let cert = path(doc, "cert", self.cert)?;
        let key = path(doc, "key", self.key)?;
        match (&cert, &key) {
            (Some(_), None) => {
                return Err(doc.err_at_header(
                    "[tls]",
                    0,
                    "[tls]: `cert` without `key`; mutual TLS needs both".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(doc.err_at_header(
                    "[tls]",
                    0,
                    "[tls]: `key` without `cert`; mutual TLS needs both".into(),
                ))
            }
            _ => {}
        }
        let server_name = match self.server_name {
            Some(n) if rustls_pki_types::ServerName::try_from(n.get_ref().as_str()).is_err() => {
                return Err(doc.err_at(
                    n.span(),
                    format!(
                        "`tls.server_name` {:?}: expected a DNS name or an IP address",
                        n.get_ref()
                    ),
                ))
            }
            n => n.map(Spanned::into_inner),
        };
        Ok(ClientTls {
            ca: path(doc, "ca", self.ca)?,
            cert,
            key,
            server_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ClientConfig, ServerConfig};

    const CLIENT: &str =
        "[server]\nhostname = \"logs.example\"\n[[stream]]\npath = \"/var/log/a\"\n";

    fn server(tls: &str) -> Result<ServerConfig, String> {
        ServerConfig::from_toml_str(&format!("directory = \"/tmp/x\"\n[tls]\n{tls}"), "s.toml")
            .map_err(|e| e.to_string())
    }

    fn client(tls: &str) -> Result<ClientConfig, String> {
        ClientConfig::from_toml_str(&format!("{CLIENT}[tls]\n{tls}"), "c.toml")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn server_tls_defaults_to_required() {
        let cfg = server("cert = \"s.crt\"\nkey = \"s.key\"\n").unwrap();
        let tls = cfg.tls.unwrap();
        assert!(tls.require);
        assert_eq!(tls.client_ca, None);
        let cfg =
            server("cert = \"s.crt\"\nkey = \"s.key\"\nrequire = false\nclient_ca = \"ca.crt\"\n")
                .unwrap();
        let tls = cfg.tls.unwrap();
        assert!(!tls.require);
        assert_eq!(tls.client_ca.unwrap().to_str(), Some("ca.crt"));
        assert!(server("").is_err_and(|e| e.contains("`cert` is missing")));
    }

    #[test]
    fn server_tls_errors_name_the_key_and_line() {
        assert_eq!(
            server("cert = \"s.crt\"\n").unwrap_err(),
            "s.toml:2: [tls]: `cert` without `key` (the certificate's private key, PEM)"
        );
        assert_eq!(
            server("cert = \"\"\nkey = \"k\"\n").unwrap_err(),
            "s.toml:3: `tls.cert` must not be empty"
        );
        assert!(server("cert = \"a\"\nkey = \"b\"\nca = \"c\"\n")
            .unwrap_err()
            .contains("unknown field `ca`"));
        assert!(server("cert = \"a\"\nkey = \"b\"\nrequire = \"yes\"\n")
            .unwrap_err()
            .contains("tls.require"));
    }

    #[test]
    fn client_tls_keys() {
        assert_eq!(client("").unwrap().tls, Some(Default::default()));
        let c = client(
            "ca = \"ca.crt\"\ncert = \"c.crt\"\nkey = \"c.key\"\nserver_name = \"logs.internal\"\n",
        )
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(c.ca.unwrap().to_str(), Some("ca.crt"));
        assert_eq!(c.server_name.as_deref(), Some("logs.internal"));
        let none = ClientConfig::from_toml_str(CLIENT, "c.toml").unwrap();
        assert_eq!(none.tls, None);
    }

    #[test]
    fn client_tls_pairs_and_names_are_checked() {
        assert_eq!(
            client("cert = \"c.crt\"\n").unwrap_err(),
            "c.toml:5: [tls]: `cert` without `key`; mutual TLS needs both"
        );
        assert_eq!(
            client("key = \"c.key\"\n").unwrap_err(),
            "c.toml:5: [tls]: `key` without `cert`; mutual TLS needs both"
        );
        assert!(client("server_name = \"not a name\"\n")
            .unwrap_err()
            .contains("`tls.server_name` \"not a name\": expected a DNS name or an IP address"));
        assert!(client("ca = \"\"\n")
            .unwrap_err()
            .contains("`tls.ca` must not be empty"));
    }
}
