//! `loghamsterd` authorization config: `[[token]]` and `[[allow]]`.
//!
//! ```toml
//! [[token]]
//! name = "web"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//!
//! [[allow]]
//! token = "web"                 # or cert = "web*.example.com", or address = "10.1.0.0/16"
//! hosts = ["web*"]              # host names it may claim (globs)
//! outputs = ["app", "nginx*"]   # outputs it may write, by name; "(default)" is the directory route
//! svc = "nginx*"                # optional: a glob on the stream's svc
//! match = { env = "prod" }      # optional: globs as in an output's match
//! ```
//!
//! The client's side is [`ClientToken`]: `[server] token_file`, a file
//! that holds `<name>:<secret>` and that only its owner may read.
//!
//! Without any `[[allow]]` the server is open (see `crate::server::auth`).
//! Everything is checked at load: each rule names exactly one identity,
//! a token rule names a defined `[[token]]`, an address is a CIDR without
//! host bits, `hosts` and `outputs` are non-empty lists of globs, and each
//! output glob matches a configured output (or the default route).
//! Globs are those of routing: `*` does not cross `/`.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use globset::GlobMatcher;
use serde::Deserialize;
use toml::Spanned;

use super::{compile_glob, is_token, ConfigError, Doc, OrderedMap};
use crate::proto::token::{parse_new_token, TokenError};

/// The name that stands for the default `directory` route in `outputs`
/// (the same value as the metrics' `output` label).
pub const DEFAULT_ROUTE: &str = crate::metrics::server::DEFAULT_OUTPUT;

/// An IP network: `10.0.0.0/8`, `2001:db8::/32`, or one address.
/// Invariant: no bits below the prefix are set in `net`; an IPv4-mapped
/// IPv6 network is stored as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip/prefix` or a bare `ip` (all its bits). A network with
    /// host bits set (`10.0.0.1/8`) is refused, naming the one meant.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = ip
            .parse()
            .map_err(|_| format!("\"{text}\" is not an IP address or network (e.g. \"10.0.0.0/8\", \"2001:db8::/32\")"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("\"{text}\": the prefix length must be 0 to {max}")),
            },
        };
        let cidr = Cidr::canonical(net, prefix);
        let masked = Cidr {
            net: mask(cidr.net, cidr.prefix),
            ..cidr
        };
        if masked != cidr {
            return Err(format!(
                "\"{text}\" has bits set after the prefix; did you mean \"{masked}\"?"
            ));
        }
        Ok(cidr)
    }

    /// IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) as IPv4 (`10.0.0.0/8`).
    fn canonical(net: IpAddr, prefix: u8) -> Cidr {
        match net {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    net: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => Cidr { net, prefix },
            },
            _ => Cidr { net, prefix },
        }
    }

    /// Whether `ip` is in the network. An IPv4-mapped IPv6 address (a
    /// dual-stack listener's view of an IPv4 peer) counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

/// `ip` with every bit after the first `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// One `[[token]]`: a name and the SHA-256 of its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// A token (`[A-Za-z0-9_.-]{1,64}`), unique among `[[token]]`s.
    pub name: String,
    /// `sha256`: the digest of the secret (64 hex digits in the file).
    pub sha256: [u8; 32],
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenConfig {{ name: {:?} }}", self.name)
    }
}

/// Which clients an `[[allow]]` rule is about: exactly one identity.
#[derive(Debug, Clone)]
pub enum Who {
    /// `cert = "glob"`: a verified client certificate with a name (SAN or
    /// CN) that matches.
    Cert(GlobMatcher, String),
    /// `token = "name"`: a defined `[[token]]`.
    Token(String),
    /// `address = "CIDR"`: a source address in the network.
    Address(Cidr),
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Cert(_, g) => write!(f, "cert = \"{g}\""),
            Who::Token(n) => write!(f, "token = \"{n}\""),
            Who::Address(c) => write!(f, "address = \"{c}\""),
        }
    }
}

/// A compiled glob and its text.
pub type Glob = (GlobMatcher, String);

/// One `[[allow]]` rule: `who` may claim `hosts` and write `outputs`, for
/// streams that also match `matchers`.
#[derive(Debug, Clone)]
pub struct AllowRule {
    pub who: Who,
    /// Host names it may claim; non-empty.
    pub hosts: Vec<Glob>,
    /// Output names it may write ([`DEFAULT_ROUTE`] for the directory
    /// route); non-empty, each matching some output.
    pub outputs: Vec<Glob>,
    /// `svc` and `match`: (key, glob) pairs as in an output's `match`
    /// (`host`, `path`, or a meta key); all must match. May be empty.
    pub matchers: Vec<(String, GlobMatcher, String)>,
}

/// `[[token]]`s and `[[allow]]` rules. No rules: the server is open.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
    pub rules: Vec<AllowRule>,
}

impl AuthConfig {
    /// No `[[allow]]` rule: anyone who can connect may write anything.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    name: Spanned<String>,
    sha256: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllow {
    cert: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
    outputs: Option<Spanned<Vec<Spanned<String>>>>,
    svc: Option<Spanned<String>>,
    #[serde(rename = "match")]
    matches: Option<Spanned<OrderedMap<Spanned<String>>>>,
}

/// Validates `[[token]]` and `[[allow]]`. `outputs` are the names a rule
/// may write: the configured outputs and, with a `directory`,
/// [`DEFAULT_ROUTE`].
pub(super) fn validate(
    doc: &Doc<'_>,
    tokens: Vec<Spanned<RawToken>>,
    rules: Vec<Spanned<RawAllow>>,
    outputs: &[&str],
) -> Result<AuthConfig, ConfigError> {
    let mut cfg = AuthConfig::default();
    for t in tokens {
        let t = t.into_inner();
        let name = t.name;
        if !is_token(name.get_ref()) || name.get_ref().len() > 64 {
            return Err(doc.err_at(
                name.span(),
                format!(
                    "`token.name` {:?}: use 1 to 64 letters, digits, '_', '.' or '-'",
                    name.get_ref()
                ),
            ));
        }
        if cfg.tokens.iter().any(|x| x.name == *name.get_ref()) {
            return Err(doc.err_at(
                name.span(),
                format!("token {:?} is defined twice", name.get_ref()),
            ));
        }
        let sha256 = parse_digest(t.sha256.get_ref()).ok_or_else(|| {
            doc.err_at(
                t.sha256.span(),
                format!("token {:?}: `sha256` must be 64 hex digits", name.get_ref()),
            )
            .with_hint("print it with: loghamsterd --hash-token < token-file")
        })?;
        cfg.tokens.push(TokenConfig {
            name: name.into_inner(),
            sha256,
        });
    }
    for (i, rule) in rules.into_iter().enumerate() {
        let span = rule.span();
        let rule = rule
            .into_inner()
            .validate(doc, &cfg.tokens, outputs, i + 1, span)?;
        cfg.rules.push(rule);
    }
    Ok(cfg)
}

/// 64 hex digits as 32 bytes.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

impl RawAllow {
    fn validate(
        self,
        doc: &Doc<'_>,
        tokens: &[TokenConfig],
        outputs: &[&str],
        n: usize,
        span: std::ops::Range<usize>,
    ) -> Result<AllowRule, ConfigError> {
        let at =
            |s: std::ops::Range<usize>, msg: String| doc.err_at(s, format!("allow #{n}: {msg}"));
        let who = match (self.cert, self.token, self.address) {
            (Some(c), None, None) if !c.get_ref().is_empty() => {
                let g =
                    compile_glob(c.get_ref()).map_err(|e| at(c.span(), format!("`cert`: {e}")))?;
                Who::Cert(g, c.into_inner())
            }
            (None, Some(t), None) if !t.get_ref().is_empty() => {
                if !tokens.iter().any(|x| x.name == *t.get_ref()) {
                    return Err(at(
                        t.span(),
                        format!("`token` {:?} is not defined", t.get_ref()),
                    )
                    .with_hint(format!(
                        "add [[token]] with name = {:?} and its sha256",
                        t.get_ref()
                    )));
                }
                Who::Token(t.into_inner())
            }
            (None, None, Some(a)) => Who::Address(
                Cidr::parse(a.get_ref()).map_err(|e| at(a.span(), format!("`address`: {e}")))?,
            ),
            (None, None, None) => {
                return Err(at(span, "names no identity".into()).with_hint(
                    "give one of cert = \"glob\", token = \"name\", address = \"CIDR\"",
                ))
            }
            (c, t, _)
                if c.as_ref().is_some_and(|c| c.get_ref().is_empty())
                    || t.as_ref().is_some_and(|t| t.get_ref().is_empty()) =>
            {
                return Err(at(span, "the identity is empty".into()))
            }
            _ => {
                return Err(at(span, "names more than one identity".into())
                    .with_hint("one rule per identity: cert, token or address"))
            }
        };
        let hosts = globs(doc, n, "hosts", self.hosts, span.clone(), &[])?;
        let outputs = globs(doc, n, "outputs", self.outputs, span, outputs)?;
        let mut matchers = Vec::new();
        if let Some(svc) = self.svc {
            let g =
                compile_glob(svc.get_ref()).map_err(|e| at(svc.span(), format!("`svc`: {e}")))?;
            matchers.push(("svc".to_string(), g, svc.into_inner()));
        }
        if let Some(m) = self.matches {
            for (key, glob) in m.into_inner().0 {
                if !is_token(&key) {
                    return Err(at(
                        glob.span(),
                        format!(
                            "`match`: key {key:?} may contain only letters, digits, '_', '.', '-'"
                        ),
                    ));
                }
                let g = compile_glob(glob.get_ref())
                    .map_err(|e| at(glob.span(), format!("`match.{key}`: {e}")))?;
                matchers.push((key, g, glob.into_inner()));
            }
        }
        Ok(AllowRule {
            who,
            hosts,
            outputs,
            matchers,
        })
    }
}

/// A rule's `hosts` or `outputs`: present, non-empty, globs; for
/// `outputs` (`names` non-empty) each must match one of `names`.
fn globs(
    doc: &Doc<'_>,
    n: usize,
    key: &str,
    list: Option<Spanned<Vec<Spanned<String>>>>,
    rule: std::ops::Range<usize>,
    names: &[&str],
) -> Result<Vec<Glob>, ConfigError> {
    let hint = format!("write {key} = [\"*\"] for any");
    let Some(list) = list else {
        return Err(doc
            .err_at(rule, format!("allow #{n}: `{key}` is missing"))
            .with_hint(hint));
    };
    let span = list.span();
    let list = list.into_inner();
    if list.is_empty() {
        return Err(doc
            .err_at(span, format!("allow #{n}: `{key}` is empty"))
            .with_hint(hint));
    }
    let mut out = Vec::with_capacity(list.len());
    for g in list {
        let m = compile_glob(g.get_ref())
            .map_err(|e| doc.err_at(g.span(), format!("allow #{n}: `{key}`: {e}")))?;
        if key == "outputs" && !names.iter().any(|name| m.is_match(name)) {
            let known = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            return Err(doc.err_at(
                g.span(),
                format!(
                    "allow #{n}: `outputs`: {:?} names no output (outputs: {known})",
                    g.get_ref()
                ),
            ));
        }
        out.push((m, g.into_inner()));
    }
    Ok(out)
}

/// The token loghamsterc sends in INIT (`[server] token_file`).
/// `Debug` shows only the name.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientToken {
    /// `<name>:<secret>`, checked by [`parse_new_token`].
    value: String,
}

impl ClientToken {
    /// The token from `<name>:<secret>` (a secret of at least
    /// [`MIN_SECRET`](crate::proto::token::MIN_SECRET) characters).
    pub fn new(value: &str) -> Result<ClientToken, TokenError> {
        parse_new_token(value)?;
        Ok(ClientToken {
            value: value.to_string(),
        })
    }

    /// Reads a token file: one line `<name>:<secret>` (a final newline
    /// is fine), a regular file that neither its group nor others may
    /// read or write (like an ssh key: `chmod 600`).
    pub fn read(path: &Path) -> Result<ClientToken, String> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "may be read or written by others (mode {mode:03o}); make it private: chmod 600"
            ));
        }
        let mut text = String::new();
        // A token line is short; more is not a token file.
        file.take(4096)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read: {e}"))?;
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.contains('\n') {
            return Err("expected one line, <name>:<secret>".into());
        }
        ClientToken::new(line).map_err(|e| e.to_string())
    }

    /// The token's name (not secret).
    pub fn name(&self) -> &str {
        self.value.split_once(':').map_or("", |(n, _)| n)
    }

    /// `<name>:<secret>`: the value of the `token:` key in INIT.
    pub fn wire(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientToken {{ name: {:?} }}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_one_private_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("web:0123456789abcdef\n", 0o600);
        let t = ClientToken::read(&path).unwrap();
        assert_eq!((t.name(), t.wire()), ("web", "web:0123456789abcdef"));
        assert!(!format!("{t:?}").contains("0123"));
        write("web:0123456789abcdef\n", 0o640);
        let e = ClientToken::read(&path).unwrap_err();
        assert!(e.contains("mode 640") && e.contains("chmod 600"), "{e}");
        for (text, says) in [
            ("web:short\n", "at least 16"),
            ("0123456789abcdef\n", "<name>:<secret>"),
            ("web:0123456789abcdef\nx\n", "one line"),
            ("", "<name>:<secret>"),
        ] {
            write(text, 0o400);
            let e = ClientToken::read(&path).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        assert!(ClientToken::read(dir.path()).is_err());
        let e = ClientToken::read(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("cannot open"), "{e}");
    }

    #[test]
    fn cidrs_parse_and_contain_v4_and_v6() {
        let net = |s| Cidr::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("127.0.0.2").contains(ip("127.0.0.2")));
        assert!(!net("127.0.0.2").contains(ip("127.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(net("::/0").contains(ip("::1")));
        assert!(net("::1").contains(ip("::1")));
        assert!(net("fe80::/10").contains(ip("febf::1")));
        assert!(!net("fe80::/10").contains(ip("fec0::1")));
        // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6.
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert!(!net("::/0").contains(ip("::ffff:10.1.2.3")));
        assert_eq!(net("2001:db8::/32").to_string(), "2001:db8::/32");
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        for (text, says) in [
            ("10.0.0.1/8", "did you mean \"10.0.0.0/8\""),
            ("10.0.0.0/33", "0 to 32"),
            ("2001:db8::1/32", "did you mean \"2001:db8::/32\""),
            ("::/129", "0 to 128"),
            ("web1", "not an IP address"),
            ("", "not an IP address"),
            ("10.0.0.0/", "prefix length"),
        ] {
            let e = Cidr::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn digests_are_64_hex_digits() {
        let d = parse_digest(&"ab".repeat(32)).unwrap();
        assert_eq!(d, [0xab; 32]);
        assert!(parse_digest(&"ab".repeat(31)).is_none());
        assert!(parse_digest(&"zz".repeat(32)).is_none());
        assert!(parse_digest(&"\u{e9}".repeat(32)).is_none());
    }
}
