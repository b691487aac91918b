//! The `token:` meta key of INIT: `token:<name>:<secret>`.
//!
//! A named token is a shared secret that identifies a client more strongly
//! than its source address (see `crate::server::auth`). The name says
//! which `[[token]]` of the server's config to check against and is not
//! secret (it appears in logs and in refusal lines); the secret is
//! everything after the name's `:` and is never logged by either side.
//! The server stores only the SHA-256 of the secret.
//!
//! The same text, `<name>:<secret>` on one line, is what a client's
//! `token_file` holds and what `loghamsterd --hash-token` reads, so one
//! file serves all three.
//!
//! Pure: a parser over `&str` that borrows, and a checker for secrets a
//! person chose. Names are tokens (`[A-Za-z0-9_.-]{1,64}`, like meta
//! keys); secrets are printable ASCII without spaces, so the value goes
//! on the wire bare (no quoting, no escapes).

use std::fmt;

/// The meta key that carries a token.
pub const TOKEN_KEY: &str = "token";

/// The shortest secret a client or `--hash-token` accepts: 16 characters.
/// The server stores an unsalted SHA-256, which is safe only for secrets
/// nobody can guess (32 random hex digits, from `openssl rand -hex 16` or
/// longer, are recommended).
pub const MIN_SECRET: usize = 16;

/// Longest token name, as for meta keys.
const MAX_NAME: usize = 64;

/// A `<name>:<secret>` value. `Debug` does not show the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// `[A-Za-z0-9_.-]{1,64}`.
    pub name: &'a str,
    /// Non-empty printable ASCII without spaces.
    pub secret: &'a str,
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token {{ name: {:?}, secret: <redacted> }}", self.name)
    }
}

/// A `<name>:<secret>` value to send, as it is: `Debug` shows only the
/// name, so a request that holds one can be debug-printed safely.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenValue<'a>(pub &'a str);

impl fmt::Debug for TokenValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0.split_once(':').map_or("", |(n, _)| n);
        write!(f, "TokenValue({name:?}:<redacted>)")
    }
}

/// Why a token value is not `<name>:<secret>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No `:` between a name and a secret.
    NoSeparator,
    /// The name is empty, longer than 64 bytes or has characters outside
    /// `[A-Za-z0-9_.-]`.
    BadName,
    /// The secret is empty or has spaces, control or non-ASCII characters.
    BadSecret,
    /// The secret is shorter than [`MIN_SECRET`].
    ShortSecret,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::NoSeparator => write!(f, "expected <name>:<secret>"),
            TokenError::BadName => write!(
                f,
                "the name (before the first ':') must be 1 to {MAX_NAME} letters, digits, '_', '.' or '-'"
            ),
            TokenError::BadSecret => write!(
                f,
                "the secret (after the first ':') must be non-empty printable ASCII without spaces"
            ),
            TokenError::ShortSecret => write!(
                f,
                "the secret must be at least {MIN_SECRET} characters (e.g. `openssl rand -hex 16`)"
            ),
        }
    }
}

impl std::error::Error for TokenError {}

/// Splits `<name>:<secret>` at its first `:`.
pub fn parse_token(value: &str) -> Result<Token<'_>, TokenError> {
    let (name, secret) = value.split_once(':').ok_or(TokenError::NoSeparator)?;
    if name.is_empty() || name.len() > MAX_NAME || !super::is_token(name) {
        return Err(TokenError::BadName);
    }
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::BadSecret);
    }
    Ok(Token { name, secret })
}

/// [`parse_token`], and the secret is at least [`MIN_SECRET`] long: for
/// secrets a person configures (the server checks what arrives against
/// its hash and needs no length rule).
pub fn parse_new_token(value: &str) -> Result<Token<'_>, TokenError> {
    let t = parse_token(value)?;
    if t.secret.len() < MIN_SECRET {
        return Err(TokenError::ShortSecret);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_secret_split_at_the_first_colon() {
        let t = parse_token("web:s3cr:et").unwrap();
        assert_eq!((t.name, t.secret), ("web", "s3cr:et"));
        for (bad, want) in [
            ("web", TokenError::NoSeparator),
            (":secret", TokenError::BadName),
            ("we b:secret", TokenError::BadName),
            ("web:", TokenError::BadSecret),
            ("web:two words", TokenError::BadSecret),
            ("web:t\u{e9}", TokenError::BadSecret),
        ] {
            assert_eq!(parse_token(bad), Err(want), "{bad:?}");
        }
        let long = format!("{}:secret", "n".repeat(65));
        assert_eq!(parse_token(&long), Err(TokenError::BadName));
        assert_eq!(parse_new_token("web:short"), Err(TokenError::ShortSecret));
        assert!(parse_new_token("web:0123456789abcdef").is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = parse_token("web:hunter2hunter2").unwrap();
        let shown = format!("{t:?}");
        assert!(
            shown.contains("web") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
