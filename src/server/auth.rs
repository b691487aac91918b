//! Who a client is, and what it may write. Pure: no I/O, no clock.
//!
//! ## Identities
//! A connection is identified by the strongest credential it presents:
//! 1. the names of its verified TLS client certificate (SAN, then CN):
//!    [`Identity::Cert`];
//! 2. a named token in INIT (`token:<name>:<secret>`, see
//!    [`crate::proto::token`]), checked against the SHA-256 in its
//!    `[[token]]`: [`Identity::Token`];
//! 3. its source address: [`Identity::Address`].
//!
//! [`identify`] takes the three and returns one identity. A token that is
//! sent is always checked, even by a client with a certificate and on an
//! open server: a wrong secret is refused (`401`), never ignored. The
//! digest comparison takes the same time wherever the digests differ
//! ([`ct_eq`]); token names are not secret. The secret is never logged:
//! only the name appears, in logs and in refusal lines.
//!
//! ## Rules
//! `[[allow]]` rules ([`crate::config::auth`]) each name one identity (a
//! certificate glob, a token name or a CIDR) and what it may write: the
//! host names it may claim, the outputs (by name; `(default)` is the
//! directory route) and `svc`/`match` globs. A rule applies only to its
//! own kind of identity: a client that presents a token is judged by the
//! token rules, whatever its address. [`authorize`] allows a stream when
//! one applicable rule allows all of host, output and matches; otherwise
//! it says which part no rule allowed ([`Denied`]), checked in the order
//! identity, host, output, matches.
//!
//! ## Open mode
//! Without any rule the server is open, as before identities existed:
//! everyone may write everything, and the server logs one WARN at start.
//!
//! ## Ownership
//! The identity that creates a resumable stream owns it, in the server's
//! bookkeeping and checkpoint, across restarts. With rules, another
//! identity's INIT for a known stream is refused (`409`) and the owner's
//! connection is left alone ([`claim`]). Two exceptions keep a client from
//! being locked out of its own streams for `stream_retention`:
//! - a stream without a recorded owner (from a checkpoint written before
//!   owners, or from open mode) is adopted by the first identity the
//!   rules let write it;
//! - a stream whose owner the rules no longer let claim its host (its
//!   credentials were changed, say from an address to a token) is adopted
//!   by the next identity they do let write it. Only the host decides
//!   this, because host, path and id are the stream's key: a peer cannot
//!   change them to make the owner look unwelcome, as it could by choosing
//!   a `svc` that routes to an output the owner may not write.
//!
//! In open mode the owner is recorded but not enforced: the server
//! records the last identity that wrote each stream, so when rules are
//! turned on each stream belongs to the client that wrote it last.
//! Enforcing it would change what an open server does (a client behind
//! NAT, or one whose address changed, would lose its streams), and would
//! protect little: an open server lets anyone claim any host anyway, and
//! the attacker of issue 12 was a local user on the victim's own host,
//! with the victim's address.

use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::config::auth::{AllowRule, AuthConfig, TokenConfig, Who, DEFAULT_ROUTE};
use crate::metrics::server::AuthRefusal;
use crate::proto::token::{parse_new_token, parse_token, TokenError};
use crate::sink::route::{matches, StreamInfo};

/// Who a connection is: its strongest credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A verified client certificate's names (SAN, then CN); never empty.
    Cert(Box<[String]>),
    /// A `[[token]]` whose secret the client knew.
    Token(String),
    /// The source address (IPv4-mapped IPv6 shown as IPv4).
    Address(IpAddr),
}

impl fmt::Display for Identity {
    /// `cert:<first name>`, `token:<name>` or `address:<ip>`: what logs
    /// and refusal lines show, and what the checkpoint records as a
    /// stream's owner. A certificate name is escaped (`escape_debug`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Cert(names) => {
                let first = names.first().map_or("", String::as_str);
                write!(f, "cert:{}", first.escape_debug())
            }
            Identity::Token(name) => write!(f, "token:{name}"),
            Identity::Address(ip) => write!(f, "address:{ip}"),
        }
    }
}

impl Identity {
    /// The identity a recorded owner stands for (its `Display` form);
    /// `None` for text this server never writes.
    pub fn from_owner(owner: &str) -> Option<Identity> {
        let (kind, rest) = owner.split_once(':')?;
        match kind {
            "cert" if !rest.is_empty() => Some(Identity::Cert(Box::new([rest.to_string()]))),
            "token" if crate::proto::is_token(rest) => Some(Identity::Token(rest.to_string())),
            "address" => rest.parse().ok().map(Identity::Address),
            _ => None,
        }
    }

    /// Whether rule subject `who` is this identity.
    fn is(&self, who: &Who) -> bool {
        match (self, who) {
            (Identity::Cert(names), Who::Cert(glob, _)) => names.iter().any(|n| glob.is_match(n)),
            (Identity::Token(name), Who::Token(want)) => name == want,
            (Identity::Address(ip), Who::Address(net)) => net.contains(*ip),
            _ => false,
        }
    }
}

/// Why a token was not accepted: `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The `token:` value is not `<name>:<secret>`.
    Malformed(TokenError),
    /// No `[[token]]` has this name.
    UnknownToken(String),
    /// The secret's digest is not the configured one.
    WrongSecret(String),
}

impl AuthError {
    /// The refusal line's text after `401 `. Unknown names and wrong
    /// secrets read the same, so the line does not confirm a name.
    pub fn reply(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => {
                "Unauthorized: malformed token (expected token:<name>:<secret>)"
            }
            _ => "Unauthorized: unknown token or wrong secret",
        }
    }
}

impl fmt::Display for AuthError {
    /// For the log: names the token (escaped), never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Malformed(e) => write!(f, "malformed token: {e}"),
            AuthError::UnknownToken(n) => {
                write!(f, "unknown token {:?}", n.escape_debug().to_string())
            }
            AuthError::WrongSecret(n) => write!(f, "wrong secret for token {n:?}"),
        }
    }
}

/// The identity of a connection from `peer` with verified certificate
/// names `cert_names` (empty without TLS) that sent `token` (the value of
/// its `token:` key) in INIT. See the [module docs](self).
pub fn identify(
    peer: IpAddr,
    cert_names: &[String],
    token: Option<&str>,
    tokens: &[TokenConfig],
) -> Result<Identity, AuthError> {
    let token = match token {
        None => None,
        Some(value) => {
            let t = parse_token(value).map_err(AuthError::Malformed)?;
            let known = tokens
                .iter()
                .find(|c| c.name == t.name)
                .ok_or_else(|| AuthError::UnknownToken(t.name.to_string()))?;
            if !ct_eq(&digest(t.secret), &known.sha256) {
                return Err(AuthError::WrongSecret(known.name.clone()));
            }
            Some(known.name.clone())
        }
    };
    Ok(match (cert_names.is_empty(), token) {
        (false, _) => Identity::Cert(cert_names.into()),
        (true, Some(name)) => Identity::Token(name),
        (true, None) => Identity::Address(peer.to_canonical()),
    })
}

/// SHA-256 of a token secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Equality of two digests in a time that does not depend on where they
/// differ: every byte is looked at, and differences are OR-ed together.
pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// The `[[token]]` entry for a `<name>:<secret>` line (what
/// `loghamsterd --hash-token` prints).
pub fn token_entry(line: &str) -> Result<String, TokenError> {
    let t = parse_new_token(line.trim_end_matches(['\n', '\r']))?;
    let hex: String = digest(t.secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!(
        "[[token]]\nname = \"{}\"\nsha256 = \"{hex}\"\n",
        t.name
    ))
}

/// What no applicable rule allowed; checked in this order (a later one
/// means a rule got further).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Denied {
    /// No rule names this identity.
    Identity,
    /// No rule for it allows the host.
    Host,
    /// None allows the host and the output.
    Output,
    /// None allows the host, the output and its `svc`/`match` globs.
    Match,
}

impl Denied {
    /// The refusal's text after `403 Forbidden: `. `host` is a checked
    /// host name (routing refused any other) and `output` a configured
    /// name, so nothing here needs escaping but the identity, which does
    /// its own.
    pub fn explain(self, id: &Identity, host: &str, output: &str) -> String {
        match self {
            Denied::Identity => format!("{id} may not write to this server"),
            Denied::Host => format!("{id} may not write host {host}"),
            Denied::Output => format!("{id} may not write output {output}"),
            Denied::Match => {
                format!("{id} may not write this stream to output {output} (svc or match)")
            }
        }
    }
}

impl From<Denied> for AuthRefusal {
    fn from(d: Denied) -> AuthRefusal {
        match d {
            Denied::Identity => AuthRefusal::Identity,
            Denied::Host => AuthRefusal::Host,
            Denied::Output => AuthRefusal::Output,
            Denied::Match => AuthRefusal::Match,
        }
    }
}

/// Whether `id` may write stream `s` to output `output` (a configured
/// name, or [`DEFAULT_ROUTE`]). Always allowed on an open server.
pub fn authorize(
    cfg: &AuthConfig,
    id: &Identity,
    s: &StreamInfo<'_>,
    output: Option<&str>,
) -> Result<(), Denied> {
    if cfg.is_open() {
        return Ok(());
    }
    let output = output.unwrap_or(DEFAULT_ROUTE);
    let host_ok = |r: &AllowRule| r.hosts.iter().any(|(g, _)| g.is_match(s.host));
    let output_ok = |r: &AllowRule| r.outputs.iter().any(|(g, _)| g.is_match(output));
    let match_ok = |r: &AllowRule| r.matchers.iter().all(|(k, g, _)| matches(s, k, g));
    let mut best = Denied::Identity;
    for r in cfg.rules.iter().filter(|r| id.is(&r.who)) {
        let got = match (host_ok(r), output_ok(r), match_ok(r)) {
            (false, _, _) => Denied::Host,
            (true, false, _) => Denied::Output,
            (true, true, false) => Denied::Match,
            (true, true, true) => return Ok(()),
        };
        best = best.max(got);
    }
    Err(best)
}

/// Whether some rule lets `id` claim `host`.
fn may_claim(cfg: &AuthConfig, id: &Identity, host: &str) -> bool {
    cfg.rules
        .iter()
        .any(|r| id.is(&r.who) && r.hosts.iter().any(|(g, _)| g.is_match(host)))
}

/// What an INIT for a known (or new) stream of host `host` may do, given
/// the owner recorded for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// No owner is recorded: `id` becomes it.
    New,
    /// `id` is the owner.
    Owned,
    /// `id` takes the stream over from `from` and becomes its owner: on an
    /// open server, or because the rules no longer let `from` claim the
    /// host.
    Adopted { from: String },
    /// Another identity owns the stream: `409`, and its connection stays.
    Refused { owner: String },
}

/// Decides ownership (see the [module docs](self)). `owner` is the
/// recorded owner's `Display` form.
pub fn claim(cfg: &AuthConfig, owner: Option<&str>, id: &Identity, host: &str) -> Claim {
    let Some(owner) = owner else {
        return Claim::New;
    };
    if *owner == *id.to_string() {
        return Claim::Owned;
    }
    let enforced =
        !cfg.is_open() && Identity::from_owner(owner).is_some_and(|o| may_claim(cfg, &o, host));
    match enforced {
        true => Claim::Refused {
            owner: owner.to_string(),
        },
        false => Claim::Adopted {
            from: owner.to_string(),
        },
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
