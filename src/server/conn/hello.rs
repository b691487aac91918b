//! TLS or plain: what a connection on a `[tls]` listener speaks.
//!
//! In this protocol the server speaks first (the greeting), while a TLS
//! client speaks first (its ClientHello). So a connection on a listener
//! with `[tls]` starts by waiting, up to [`HELLO_WAIT`], for its first
//! byte, looked at with `peek` (nothing is consumed):
//!
//! - `0x16` (a TLS handshake record): TLS starts on the socket with the
//!   configuration current at that moment (a SIGHUP reload applies to
//!   connections from then on), and the greeting goes out inside TLS once
//!   the handshake is done.
//! - any other byte, or none within the wait: a plain client (they wait
//!   for the greeting; only a person typing with `nc` sends first). With
//!   `require = true` it gets `403 TLS required` in plain text and is
//!   closed; otherwise the greeting goes out at once.
//!
//! A plain client on a `require = false` listener thus waits
//! [`HELLO_WAIT`] for its greeting; TLS clients and listeners without
//! `[tls]` do not wait at all. See docs/PROTOCOL.md, "TLS".

use std::io;
use std::time::{Duration, Instant};

use super::{Conn, ConnPhase, Shared, Step};
use crate::metrics::server::HandshakeFailure;

/// How long a connection on a `[tls]` listener may take to send its first
/// byte before it counts as plain. A ClientHello is sent as soon as the
/// TCP connect completes, so it normally arrives with the connection;
/// this leaves room for one retransmission on a lossy link.
pub(crate) const HELLO_WAIT: Duration = Duration::from_millis(500);

/// What the first byte says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hello {
    /// Wait for it (until the deadline).
    Wait,
    Tls,
    Plain,
}

/// Decides from what `peek` found (`None`: nothing yet) and the time.
pub(crate) fn classify(first: Option<u8>, now: Instant, until: Instant) -> Hello {
    match first {
        Some(b) if crate::tls::looks_like_tls(b) => Hello::Tls,
        Some(_) => Hello::Plain,
        None if now >= until => Hello::Plain,
        None => Hello::Wait,
    }
}

impl Conn {
    /// The connection came in on a `[tls]` listener: its first byte
    /// decides, by `until` at the latest, before the greeting is sent.
    pub fn expect_hello(&mut self, until: Instant) {
        self.hello = Some(until);
    }

    /// Waits on a `[tls]` listener for the first byte and starts TLS or
    /// the plain greeting (see the module doc). True when the handshake
    /// may be read now.
    pub(super) fn hello(&mut self, now: Instant, shared: &mut Shared, step: &mut Step) -> bool {
        let Some(until) = self.hello else {
            return true;
        };
        let Some(tcp) = self.sock.tcp() else {
            // A channel: its connection already decided.
            self.hello = None;
            return true;
        };
        let mut first = [0u8; 1];
        let found = match crate::reactor::sys::retry(|| tcp.peek(&mut first)) {
            Ok(0) => {
                crate::debug!("{}: closed before sending anything", self.peer);
                self.phase = ConnPhase::close_now(now);
                return false;
            }
            Ok(_) => Some(first[0]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => {
                crate::debug!("{}: read failed: {e}", self.peer);
                self.phase = ConnPhase::close_now(now);
                return false;
            }
        };
        match classify(found, now, until) {
            Hello::Wait => {
                step.wake_at = Some(until);
                return false;
            }
            Hello::Tls => {
                let Some(tls) = &shared.tls else { return true };
                match rustls::ServerConnection::new(tls.config.clone()) {
                    Ok(session) => self.sock.start_tls(session),
                    Err(e) => {
                        crate::error!("{}: cannot start TLS: {e}", self.peer);
                        self.phase = ConnPhase::close_now(now);
                        return false;
                    }
                }
            }
            Hello::Plain if shared.tls.as_ref().is_some_and(|t| t.require) => {
                crate::warn!(
                    "{}: plain TCP connection refused: this listener requires TLS ([tls] require = true)",
                    self.peer
                );
                shared
                    .metrics
                    .handshake_failed(HandshakeFailure::TlsRequired);
                self.hello = None;
                self.fail(403, "TLS required", now);
                return false;
            }
            Hello::Plain => {}
        }
        self.hello = None;
        self.send_greeting();
        true
    }

    /// Logs a failed read or write: a TLS failure (a refused certificate,
    /// a client without one) as a warning with its reason, the rest for
    /// debugging.
    pub(super) fn log_io(&self, what: &str, e: &io::Error) {
        match crate::tls::failure(e) {
            Some(f) => crate::warn!("{}: {f}", self.peer),
            None => crate::debug!("{}: {what} failed: {e}", self.peer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_byte_decides() {
        let now = Instant::now();
        let until = now + HELLO_WAIT;
        assert_eq!(classify(Some(0x16), now, until), Hello::Tls);
        assert_eq!(classify(Some(b'I'), now, until), Hello::Plain);
        assert_eq!(classify(Some(0x15), now, until), Hello::Plain);
        assert_eq!(classify(None, now, until), Hello::Wait);
        assert_eq!(classify(None, until, until), Hello::Plain);
        // A late ClientHello still counts once it is there.
        assert_eq!(classify(Some(0x16), until, until), Hello::Tls);
    }
}
