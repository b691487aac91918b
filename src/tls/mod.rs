//! TLS on both daemons, with rustls.
//!
//! rustls is sans-IO: bytes from the socket go in (`read_tls`,
//! `process_new_packets`), plaintext comes out (`reader`), plaintext goes
//! in (`writer`) and records come out (`write_tls`); `wants_write` says
//! whether records wait. It sits between the socket and the protocol like
//! a codec, inside the same one-thread mio loops, with no runtime.
//!
//! - [`load`]: `[tls]` files into rustls configurations, with one clear
//!   error per bad file (unreadable, not PEM, key not matching the
//!   certificate, CA unusable).
//! - [`transport`]: [`Transport`], a connection that is plain TCP or TLS
//!   over it, read and written as plaintext by the server's `conn` and the
//!   client's `link` alike.
//! - [`peer_names`]: who a verified client certificate names (SAN DNS
//!   names and the subject CN), for authorization.
//! - [`looks_like_tls`]: how the server tells a TLS client from a plain
//!   one on the same port (see docs/PROTOCOL.md, "TLS").
//!
//! ## Which paths TLS takes
//!
//! The server's zero-copy path (`splice` from socket to file) and the
//! client's (`sendfile` from file to socket) move bytes the kernel never
//! shows user space, so they apply to plain connections only
//! ([`Transport::as_plain`]). A TLS connection takes the copying path:
//! records are decrypted into the server's read buffer and written out
//! line-aligned; the client reads the file into its buffer and encrypts
//! from there.
//!
//! ## Where kTLS goes (not built: this kernel has `CONFIG_TLS` off)
//!
//! Linux can do the record layer itself (`TCP_ULP "tls"`), and then
//! `splice`/`sendfile` work on TLS sockets again. The record path is
//! built so that this is one change in one place:
//!
//! 1. After the handshake (`!is_handshaking()`, the first time a TLS
//!    `Transport` is read or written with nothing buffered in rustls) the connection would call
//!    `rustls::Connection::dangerous_extract_secrets()` (with
//!    `enable_secret_extraction = true` in both configurations), giving
//!    the TX/RX traffic secrets and sequence numbers.
//! 2. A new `reactor/sys/ktls.rs` wrapper would set `TCP_ULP` and
//!    `SOL_TLS` `TLS_TX`/`TLS_RX` with them (`tls12_crypto_info_*`), and
//!    report `ENOPROTOOPT`/`ENOENT` when the kernel has no kTLS.
//! 3. On success the transport drops its `Tls` state and is plain over
//!    the same socket: `Transport::as_plain` returns it, and the existing
//!    splice and sendfile paths run unchanged. On failure it keeps TLS.
//!
//! The two things kTLS needs from the rest are kept true already: nothing
//! but [`Transport`] touches records, and a connection checks
//! [`Transport::as_plain`] before every zero-copy turn rather than once.
//! (Key updates and `close_notify` would then be control messages the
//! kernel passes up; the half-close rule stays: only `close_notify` ends
//! a stream cleanly.)

mod identity;
pub mod load;
pub mod transport;

use std::fmt;

pub use identity::{describe, peer_names, peer_names_of};
pub use load::{client_config, server_config, Acceptor, ClientSetup, TlsError};
pub use transport::Transport;

/// The first byte of every TLS record carrying a handshake message (a
/// ClientHello starts the connection with one). A plain loghamster client
/// sends nothing before the server's greeting, and `INIT` starts with `I`.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// True when the first byte a client sent starts a TLS handshake.
pub fn looks_like_tls(first: u8) -> bool {
    first == HANDSHAKE_RECORD
}

/// A TLS error, carried inside an `io::Error` (kind `InvalidData`) from
/// [`Transport`] so the logs can say what went wrong in TLS terms.
#[derive(Debug)]
pub struct TlsFailure(pub rustls::Error);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        match &self.0 {
            E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                write!(f, "TLS: the server's certificate is not valid for the expected server name (set [tls] server_name?): {}", self.0)
            }
            E::InvalidCertificate(C::UnknownIssuer) => write!(
                f,
                "TLS: the peer's certificate is not signed by a trusted CA ({})",
                self.0
            ),
            E::NoCertificatesPresented => f.write_str(
                "TLS: the client presented no certificate, but this server requires one (client_ca)",
            ),
            E::AlertReceived(A::CertificateRequired) => f.write_str(
                "TLS: the server requires a client certificate ([tls] cert and key)",
            ),
            E::AlertReceived(A::UnknownCA | A::BadCertificate) => f.write_str(
                "TLS: the peer refused our certificate (not signed by a CA it trusts)",
            ),
            E::InvalidMessage(_) | E::InappropriateMessage { .. } => write!(
                f,
                "TLS: the peer does not speak TLS here ({}); is it a plain server?",
                self.0
            ),
            other => write!(f, "TLS: {other}"),
        }
    }
}

impl std::error::Error for TlsFailure {}

/// The TLS failure inside an I/O error from a [`Transport`], if it is one.
pub fn failure(e: &std::io::Error) -> Option<&TlsFailure> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsFailure>())
}
