//! Certificate, key and CA files into rustls configurations.
//!
//! Everything here runs at start-up (and on the server's SIGHUP); every
//! failure is one [`TlsError`] that names the file and what is wrong
//! with it, so a person can fix it without reading rustls's errors.
//! Only TLS 1.3 is offered (rustls is built without TLS 1.2): both ends
//! are loghamster, and 1.3 defines the half-close the protocol relies on.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{ClientTls, ServerTls};

/// Why TLS could not be set up. Displays as one line naming the file.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A file held no PEM block of the kind wanted, or a broken one.
    Pem {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// The private key does not belong to the certificate.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the certificate or key (`what` names them).
    Refused { what: String, problem: String },
    /// A CA file's certificate is not usable as a trust anchor.
    BadCa { path: PathBuf, problem: String },
    /// No CA file and the system's roots could not be loaded.
    NoSystemRoots(String),
    /// `server_name` (or the server's host name) is not a DNS name or IP.
    BadServerName(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { what, path, source } => {
                write!(f, "cannot read TLS {what} {}: {source}", path.display())
            }
            TlsError::Pem {
                what,
                path,
                problem,
            } => write!(f, "TLS {what} {}: {problem}", path.display()),
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "TLS key {} does not belong to certificate {} (their public keys differ)",
                key.display(),
                cert.display()
            ),
            TlsError::Refused { what, problem } => write!(f, "TLS {what}: {problem}"),
            TlsError::BadCa { path, problem } => {
                write!(f, "TLS CA file {}: {problem}", path.display())
            }
            TlsError::NoSystemRoots(why) => write!(
                f,
                "no TLS `ca` file given and the system's root certificates cannot be loaded ({why})"
            ),
            TlsError::BadServerName(name) => write!(
                f,
                "TLS server name {name:?} is neither a DNS name nor an IP address"
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// The one crypto provider: ring (builds without cmake or nasm). rustls
/// deprecates it only for lacking post-quantum key exchange.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a file for a PEM parse, naming it in the error.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn pem_problem(e: pem::Error) -> String {
    match e {
        pem::Error::NoItemsFound => "no PEM block of this kind found".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// Every certificate in a PEM file (a chain: the end entity first).
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let bad = |problem: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_problem(e)))?;
    if certs.is_empty() {
        return Err(bad(
            "contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        what: "key",
        path: path.to_path_buf(),
        problem: match e {
            pem::Error::NoItemsFound => {
                "contains no PEM private key (-----BEGIN PRIVATE KEY-----)".into()
            }
            other => pem_problem(other),
        },
    })
}

/// A root store from a CA file: every certificate in it is trusted.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("CA file", path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The system's trust anchors (rustls-native-certs).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or("none found".to_string(), |e| e.to_string());
        return Err(TlsError::NoSystemRoots(why));
    }
    Ok(roots)
}

/// The certificate and key, checked to belong together.
fn cert_and_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let chain = load_certs("certificate", cert)?;
    let der = load_key(key)?;
    rustls::sign::CertifiedKey::from_der(chain, der, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        },
        other => TlsError::Refused {
            what: format!("key {} / certificate {}", key.display(), cert.display()),
            problem: other.to_string(),
        },
    })
}

/// The server's rustls configuration from `[tls]`: its certificate and
/// key, and with `client_ca` a verifier that requires client certificates
/// signed by it (mutual TLS).
pub fn server_config(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let certified = cert_and_key(&tls.cert, &tls.key, &provider)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| refused("protocol versions", e))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: ca.clone(),
                    problem: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let resolver = rustls::sign::SingleCertAndKey::from(certified);
    Ok(Arc::new(builder.with_cert_resolver(Arc::new(resolver))))
}

/// What a client connects with: its rustls configuration and the name the
/// server's certificate must carry.
#[derive(Debug, Clone)]
pub struct ClientSetup {
    pub config: Arc<rustls::ClientConfig>,
    /// `[tls] server_name`: the name every server's certificate must
    /// carry; without it, each server's own host name.
    pub server_name: Option<ServerName<'static>>,
}

impl ClientSetup {
    /// The name the certificate of `server` (`host:port`, as the client
    /// connects to it) must carry.
    pub fn name_for(&self, server: &str) -> Result<ServerName<'static>, TlsError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::BadServerName(host.to_string()))
    }
}

/// The client's rustls configuration from `[tls]`: trust `ca` (or the
/// system's roots), present `cert`/`key` when given, and expect
/// `server_name` (default: each server's host name; `host`, one server's
/// `host:port` or host name, is checked to be one).
pub fn client_config(tls: &ClientTls, host: &str) -> Result<ClientSetup, TlsError> {
    let provider = provider();
    let roots = match &tls.ca {
        Some(ca) => load_roots(ca)?,
        None => system_roots()?,
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| refused("CA roots", e))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| refused("protocol versions", e))?
        .with_webpki_verifier(verifier);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let certified = cert_and_key(cert, key, &provider)?;
            let resolver = rustls::sign::SingleCertAndKey::from(certified);
            builder.with_client_cert_resolver(Arc::new(resolver))
        }
        _ => builder.with_no_client_auth(),
    };
    let server_name = match tls.server_name.as_deref() {
        Some(name) => Some(
            ServerName::try_from(name.to_string())
                .map_err(|_| TlsError::BadServerName(name.to_string()))?,
        ),
        None => None,
    };
    let setup = ClientSetup {
        config: Arc::new(config),
        server_name,
    };
    setup.name_for(host)?;
    Ok(setup)
}

fn refused(what: &str, e: impl fmt::Display) -> TlsError {
    TlsError::Refused {
        what: what.to_string(),
        problem: e.to_string(),
    }
}

/// The server's TLS: the settings, and the rustls configuration each new
/// connection starts with (replaced whole by a reload; connections keep
/// the `Arc` they started with).
#[derive(Debug, Clone)]
pub struct Acceptor {
    pub settings: ServerTls,
    pub config: Arc<rustls::ServerConfig>,
    /// `require`: plain connections are refused.
    pub require: bool,
    /// The certificate in use, for the log ([`super::describe`]).
    pub describes: String,
}

impl Acceptor {
    /// Loads `[tls]`'s files.
    pub fn load(settings: &ServerTls) -> Result<Acceptor, TlsError> {
        let config = server_config(settings)?;
        let chain = load_certs("certificate", &settings.cert)?;
        Ok(Acceptor {
            settings: settings.clone(),
            config,
            require: settings.require,
            describes: chain.first().map_or_else(String::new, super::describe),
        })
    }

    /// Loads the files again (SIGHUP): on success new connections use
    /// them; on failure nothing changes and the error says why.
    pub fn reload(&mut self) -> Result<(), TlsError> {
        *self = Acceptor::load(&self.settings)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(fixed: Option<&str>) -> ClientSetup {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        ClientSetup {
            config: Arc::new(config),
            server_name: fixed.map(|n| ServerName::try_from(n.to_string()).unwrap()),
        }
    }

    #[test]
    fn each_server_is_expected_under_its_own_host_name() {
        let s = setup(None);
        let name = |server| s.name_for(server).map(|n| n.to_str().into_owned());
        assert_eq!(name("log1.example.net:8901").unwrap(), "log1.example.net");
        assert_eq!(name("log2.example.net").unwrap(), "log2.example.net");
        assert_eq!(name("127.0.0.1:8901").unwrap(), "127.0.0.1");
        assert_eq!(name("[::1]:8901").unwrap(), "::1");
        assert!(matches!(
            name("bad name:1"),
            Err(TlsError::BadServerName(n)) if n == "bad name"
        ));
    }

    #[test]
    fn a_configured_server_name_is_expected_of_every_server() {
        let s = setup(Some("logs.example.net"));
        for server in ["log1:8901", "10.0.0.7:8901"] {
            let n = s.name_for(server).unwrap();
            assert_eq!(n.to_str(), "logs.example.net");
        }
    }
}
