//! Output path templates (`[output.NAME] path = "/var/log/{host}/{svc}.log"`).
//!
//! A template is parsed once, at config load, into a trusted *base*
//! directory and a list of components made of literal text and
//! placeholders. Rendering (in `sink::route`) only fills in placeholders
//! below the base, so nothing a client sends can move the base.
//!
//! Syntax:
//! - `{host}`: the client's host name; `{svc}`: the `svc` meta value;
//!   `{file}`: the last component of the stream path; `{path}`: the stream
//!   path without its leading `/` (may span several components);
//!   `{meta.KEY}`: the value of meta key `KEY`. Bare `{KEY}` for other keys
//!   is rejected, so new placeholder names can be added later.
//! - `{{` and `}}` are literal braces.
//! - Empty and `.` literal components are dropped; a literal `..` component
//!   is an error, as is a template ending in `/`.
//! - The *base* is the literal directory prefix up to the component that
//!   holds the first placeholder; without placeholders it is the parent
//!   directory and the file name is the only component.
//! - A relative template is relative to the server's `directory`; without a
//!   `directory` it is an error.

use std::fmt;
use std::path::{Path, PathBuf};

use super::is_token;

/// One piece of a template component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text; never contains `/` or NUL (in a JetStream subject
    /// template: subject-safe, see `sink::jetstream::subject`).
    Lit(String),
    /// `{host}`
    Host,
    /// `{path}`
    Path,
    /// `{file}`
    File,
    /// `{svc}` (as `Meta("svc")`) or `{meta.KEY}`; the key is a valid token.
    Meta(String),
}

/// A parsed, validated output path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Trusted directory: literal prefix of the template (joined to the
    /// server `directory` for relative templates).
    base: PathBuf,
    /// Components below `base`; never empty. Adjacent literals are merged;
    /// a component that is a single literal is never empty, `.` or `..`.
    components: Vec<Vec<Piece>>,
}

/// Why a template was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The template is empty.
    Empty,
    /// The template contains a NUL byte.
    Nul,
    /// The template ends in `/` and so names no file.
    NoFileName,
    /// A `..` component.
    DotDot,
    /// `{` without `}` or a lone `}`.
    Unbalanced,
    /// `{name}` is not a known placeholder.
    UnknownPlaceholder(String),
    /// A relative template but no server `directory` to resolve it against.
    RelativeWithoutDirectory,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Empty => write!(f, "empty path template"),
            TemplateError::Nul => write!(f, "path template contains a NUL byte"),
            TemplateError::NoFileName => write!(f, "path template ends in `/`; it must name a file"),
            TemplateError::DotDot => write!(f, "path template must not contain `..` components"),
            TemplateError::Unbalanced => write!(
                f,
                "unbalanced brace in path template (write `{{{{` or `}}}}` for a literal brace)"
            ),
            TemplateError::UnknownPlaceholder(p) => write!(
                f,
                "unknown placeholder `{{{p}}}`; known: {{host}}, {{svc}}, {{file}}, {{path}}, {{meta.KEY}}"
            ),
            TemplateError::RelativeWithoutDirectory => write!(
                f,
                "relative path template needs a top-level `directory` to resolve against"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

impl Template {
    /// Parses `text`; a relative template is resolved against `directory`.
    pub fn parse(text: &str, directory: Option<&Path>) -> Result<Template, TemplateError> {
        if text.is_empty() {
            return Err(TemplateError::Empty);
        }
        if text.contains('\0') {
            return Err(TemplateError::Nul);
        }
        if text.ends_with('/') {
            return Err(TemplateError::NoFileName);
        }
        let mut comps: Vec<Vec<Piece>> = Vec::new();
        for raw in text.split('/') {
            let pieces = parse_component(raw)?;
            match pieces.as_slice() {
                [] => {}
                [Piece::Lit(l)] if l == "." => {}
                [Piece::Lit(l)] if l == ".." => return Err(TemplateError::DotDot),
                _ => comps.push(pieces),
            }
        }
        let first_dynamic = comps
            .iter()
            .position(|c| c.iter().any(|p| !matches!(p, Piece::Lit(_))));
        let split = match first_dynamic {
            Some(i) => i,
            None => comps
                .len()
                .checked_sub(1)
                .ok_or(TemplateError::NoFileName)?,
        };
        let mut base = if text.starts_with('/') {
            PathBuf::from("/")
        } else {
            directory
                .ok_or(TemplateError::RelativeWithoutDirectory)?
                .to_path_buf()
        };
        for c in &comps[..split] {
            if let [Piece::Lit(l)] = c.as_slice() {
                base.push(l);
            }
        }
        let components = comps.split_off(split);
        Ok(Template { base, components })
    }

    /// The trusted directory everything rendered from this template lives in.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The components below [`Template::base`]; never empty.
    pub fn components(&self) -> &[Vec<Piece>] {
        &self.components
    }
}

/// Parses one `/`-free component into merged pieces.
fn parse_component(raw: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find(['{', '}']) {
        lit.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            lit.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            lit.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(TemplateError::Unbalanced);
        } else {
            let end = tail.find('}').ok_or(TemplateError::Unbalanced)?;
            let name = &tail[1..end];
            if name.contains('{') {
                return Err(TemplateError::Unbalanced);
            }
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            pieces.push(placeholder(name)?);
            rest = &tail[end + 1..];
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

/// The placeholder `{name}` (also used by JetStream subject templates).
pub(crate) fn placeholder(name: &str) -> Result<Piece, TemplateError> {
    Ok(match name {
        "host" => Piece::Host,
        "path" => Piece::Path,
        "file" => Piece::File,
        "svc" => Piece::Meta("svc".to_string()),
        _ => match name.strip_prefix("meta.") {
            Some(key) if is_token(key) => Piece::Meta(key.to_string()),
            _ => return Err(TemplateError::UnknownPlaceholder(name.to_string())),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Piece {
        Piece::Lit(s.to_string())
    }

    #[test]
    fn base_is_literal_prefix() {
        let t = Template::parse("/var/log/{host}/{svc}.log", None).unwrap();
        assert_eq!(t.base(), Path::new("/var/log"));
        assert_eq!(
            t.components(),
            &[
                vec![Piece::Host],
                vec![Piece::Meta("svc".into()), lit(".log")]
            ]
        );
        let t = Template::parse("/var//log/./messages", None).unwrap();
        assert_eq!(t.base(), Path::new("/var/log"));
        assert_eq!(t.components(), &[vec![lit("messages")]]);
        let t = Template::parse("a/{{x}}-{meta.env}", Some(Path::new("/out"))).unwrap();
        assert_eq!(t.base(), Path::new("/out/a"));
        assert_eq!(
            t.components(),
            &[vec![lit("{x}-"), Piece::Meta("env".into())]]
        );
    }

    #[test]
    fn rejects() {
        use TemplateError::*;
        let cases: &[(&str, TemplateError)] = &[
            ("", Empty),
            ("/a/\0", Nul),
            ("/a/", NoFileName),
            ("/", NoFileName),
            ("/a/../b", DotDot),
            ("/a/{host", Unbalanced),
            ("/a/host}", Unbalanced),
            ("/a/{ho{st}", Unbalanced),
            ("/a/{bogus}", UnknownPlaceholder("bogus".into())),
            ("/a/{meta.}", UnknownPlaceholder("meta.".into())),
            ("rel/{host}", RelativeWithoutDirectory),
        ];
        for (text, want) in cases {
            assert_eq!(Template::parse(text, None).as_ref(), Err(want), "{text}");
        }
    }
}
