//! Subject templates: where in JetStream a stream's messages go. Pure.
//!
//! A template is dot-separated tokens of literal text and placeholders,
//! like an output's path template: `logs.{host}.{svc}.{path}`. Values
//! become valid subject tokens by escaping, never by refusal where a
//! file name would be refused: `.`, `*`, `>`, `%`, whitespace and control
//! characters are written `%XX` (their UTF-8 bytes, upper-case hex), so
//! `app.log` is the token `app%2Elog` and no value can add a token, a
//! wildcard or an empty token. `{path}` is the one placeholder that spans
//! tokens: the stream path split on `/` (empty and `.` parts dropped, like
//! the default file route), each part escaped, joined with `.`; a consumer
//! can then subscribe to `logs.web1.app.var.log.>`.
//!
//! Placeholders: `{host}`, `{svc}`, `{path}`, `{file}` (last component of
//! the path) and `{meta.KEY}`. A value the stream does not have is
//! [`RouteError::BadValue`], as for file routes.

use std::fmt::Write as _;

use crate::config::template::{placeholder, Piece};
use crate::sink::route::{RouteError, StreamInfo};

/// A parsed subject template: one `Vec<Piece>` per token, none empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    tokens: Vec<Vec<Piece>>,
}

impl SubjectTemplate {
    /// Parses `text`; the error says what is wrong, for a config message.
    pub fn parse(text: &str) -> Result<SubjectTemplate, String> {
        if text.is_empty() {
            return Err("the subject template is empty".into());
        }
        let mut tokens = Vec::new();
        for tok in split_tokens(text) {
            if tok.is_empty() {
                return Err(format!(
                    "{text:?} has an empty token (two dots, or a dot at an end)"
                ));
            }
            tokens.push(parse_token(tok)?);
        }
        Ok(SubjectTemplate { tokens })
    }

    /// The subject for a stream. Escaping makes every value a valid token
    /// (see the module doc); only a missing or empty value is an error.
    pub fn render(&self, s: &StreamInfo<'_>) -> Result<String, RouteError> {
        let mut out = String::new();
        for (i, tok) in self.tokens.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            for piece in tok {
                match piece {
                    Piece::Lit(l) => out.push_str(l),
                    Piece::Host => escape_into(&mut out, nonempty("host", Some(s.host))?),
                    Piece::File => {
                        escape_into(&mut out, nonempty("file", s.path.rsplit('/').next())?)
                    }
                    Piece::Meta(k) => {
                        let key = if k == "svc" {
                            k.clone()
                        } else {
                            format!("meta.{k}")
                        };
                        let v = s.meta.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
                        escape_into(&mut out, nonempty(&key, v)?);
                    }
                    Piece::Path => {
                        let parts: Vec<&str> = s
                            .path
                            .split('/')
                            .filter(|p| !p.is_empty() && *p != ".")
                            .collect();
                        if parts.is_empty() {
                            return Err(RouteError::BadPath);
                        }
                        for (j, p) in parts.iter().enumerate() {
                            if j > 0 {
                                out.push('.');
                            }
                            escape_into(&mut out, p);
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// `text` split at the dots outside `{...}` (`{meta.KEY}` has one).
fn split_tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut depth) = (0, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn nonempty<'a>(key: &str, v: Option<&'a str>) -> Result<&'a str, RouteError> {
    match v {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(RouteError::BadValue {
            key: key.to_string(),
        }),
    }
}

fn parse_token(tok: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = tok;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {tok:?}"))?;
            let name = &after[..end];
            pieces.push(placeholder(name).map_err(|_| {
                format!(
                    "unknown placeholder {{{name}}} (use {{host}}, {{svc}}, {{path}}, {{file}} or {{meta.KEY}})"
                )
            })?);
            rest = &after[end + 1..];
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            let lit = &rest[..end];
            if let Some(c) = lit.chars().find(|&c| needs_escape(c) || c == '}') {
                return Err(format!(
                    "{c:?} may not appear in a subject token ({tok:?}); tokens are separated by '.'"
                ));
            }
            pieces.push(Piece::Lit(lit.to_string()));
            rest = &rest[end..];
        }
    }
    Ok(pieces)
}

/// Characters a value may not carry into a subject token as they are.
fn needs_escape(c: char) -> bool {
    matches!(c, '.' | '*' | '>' | '%') || c.is_whitespace() || c.is_control()
}

/// Appends `v` with every [`needs_escape`] character as `%XX` per byte.
pub fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        if needs_escape(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(
        t: &str,
        host: &str,
        path: &str,
        meta: &[(&str, &str)],
    ) -> Result<String, RouteError> {
        let info = StreamInfo { host, path, meta };
        SubjectTemplate::parse(t).unwrap().render(&info)
    }

    #[test]
    fn values_become_escaped_tokens_and_path_spans_tokens() {
        let meta = [("svc", "web app"), ("env", "a*b>c")];
        assert_eq!(
            render(
                "logs.{host}.{svc}.{path}",
                "web1.example",
                "/var//log/./app.log",
                &meta
            )
            .unwrap(),
            "logs.web1%2Eexample.web%20app.var.log.app%2Elog"
        );
        assert_eq!(
            render("x.{meta.env}-{file}", "h", "/a/b%c", &meta).unwrap(),
            "x.a%2Ab%3Ec-b%25c"
        );
        assert_eq!(
            render("t.{host}", "h\u{7f}\t", "/p", &[]).unwrap(),
            "t.h%7F%09"
        );
    }

    #[test]
    fn missing_values_are_refused_like_file_routes() {
        assert_eq!(
            render("t.{svc}", "h", "/p", &[]),
            Err(RouteError::BadValue { key: "svc".into() })
        );
        assert_eq!(
            render("t.{meta.env}", "h", "/p", &[("env", "")]),
            Err(RouteError::BadValue {
                key: "meta.env".into()
            })
        );
        assert_eq!(
            render("t.{path}", "h", "//./", &[]),
            Err(RouteError::BadPath)
        );
    }

    #[test]
    fn bad_templates_say_why() {
        for (t, want) in [
            ("", "empty"),
            ("a..b", "empty token"),
            ("a.", "empty token"),
            ("a.{nope}", "unknown placeholder {nope}"),
            ("a.{host", "unclosed"),
            ("a.b*", "'*' may not appear"),
            ("a.>", "'>' may not appear"),
            ("a b", "' ' may not appear"),
        ] {
            let e = SubjectTemplate::parse(t).unwrap_err();
            assert!(e.contains(want), "{t:?}: {e}");
        }
    }
}
