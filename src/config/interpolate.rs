//! `${VAR}` in configuration values: templates that operators fill from
//! the environment, as Vector, Fluent Bit and Filebeat allow.
//!
//! In every string value of either daemon's config (not in keys, not in
//! comments, not in numbers):
//!
//! - `${NAME}` is the environment variable `NAME`; an unset one is an
//!   error naming the line.
//! - `${NAME:-default}` is `NAME` if it is set and not empty, `default`
//!   otherwise (the shell's meaning).
//! - `$$` is a literal `$`. Any other `$` stays as it is, so a `$` in a
//!   path or a glob needs no escaping unless `{` follows it.
//!
//! `NAME` is `[A-Za-z_][A-Za-z0-9_]*`. Values are substituted as text, not
//! parsed again: a variable cannot add keys or tables, and `${A}` holding
//! `${B}` stays `${B}`.
//!
//! How: the source is parsed once with `toml_edit`, which knows where each
//! string literal is; every literal whose value has a `$` is replaced in
//! the source text by a basic string holding the expanded value, and the
//! result goes to the usual parser and validation. Replacements keep every
//! value on its line (a multi-line literal keeps its line count), so later
//! errors name the lines of the file the operator wrote. The environment
//! is passed in, so all of this is tested without touching the process's.

use std::borrow::Cow;
use std::fmt::Write;
use std::ops::Range;
use std::path::Path;

use toml_edit::{ImDocument, Item, Value};

use super::{ConfigError, Doc};

/// Why one `${...}` could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `${NAME}` without a default, and `NAME` is not set.
    Unset(String),
    /// `${` without its `}`.
    Unterminated,
    /// `${...}` whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    BadName(String),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Unset(n) => write!(
                f,
                "environment variable {n} is not set (give a default as ${{{n}:-value}})"
            ),
            ExpandError::Unterminated => {
                write!(
                    f,
                    "\"${{\" without a closing \"}}\" (write $$ for a literal $)"
                )
            }
            ExpandError::BadName(n) => write!(
                f,
                "${{{n}}}: a variable name is letters, digits and '_', not starting with a digit"
            ),
        }
    }
}

/// Expands `${NAME}`, `${NAME:-default}` and `$$` in one value.
pub fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or(ExpandError::Unterminated)?;
            out.push_str(&lookup(&inner[..end], env)?);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of `NAME` or `NAME:-default`.
fn lookup(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let (name, default) = match spec.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (spec, None),
    };
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(ExpandError::BadName(spec.to_string()));
    }
    match (
        env(name).filter(|v| !v.is_empty() || default.is_none()),
        default,
    ) {
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => Err(ExpandError::Unset(name.to_string())),
    }
}

/// The configuration source with every string value expanded; borrowed
/// when nothing changes. Source that does not parse is returned as it is,
/// for the usual parser to report.
pub(crate) fn interpolate<'a>(
    src: &'a str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Cow<'a, str>, ConfigError> {
    if !src.contains('$') {
        return Ok(Cow::Borrowed(src));
    }
    let Ok(doc) = ImDocument::parse(src) else {
        return Ok(Cow::Borrowed(src));
    };
    let mut strings = Vec::new();
    for (_, item) in doc.as_table().iter() {
        collect_item(item, &mut strings);
    }
    let mut edits = Vec::new();
    for (span, value) in strings {
        if !value.contains('$') {
            continue;
        }
        let expanded = expand(value, env).map_err(|e| {
            let doc = Doc { src, path };
            doc.err_at(span.clone(), format!("{:?}: {e}", value))
        })?;
        if expanded != value {
            let newlines = src[span.clone()].matches('\n').count();
            edits.push((span, literal(&expanded, newlines)));
        }
    }
    if edits.is_empty() {
        return Ok(Cow::Borrowed(src));
    }
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    let mut out = src.to_string();
    for (span, text) in edits {
        out.replace_range(span, &text);
    }
    Ok(Cow::Owned(out))
}

/// Every string value under `item`, with where its literal is.
fn collect_item<'d>(item: &'d Item, out: &mut Vec<(Range<usize>, &'d str)>) {
    match item {
        Item::Value(v) => collect_value(v, out),
        Item::Table(t) => t.iter().for_each(|(_, i)| collect_item(i, out)),
        Item::ArrayOfTables(a) => a
            .iter()
            .for_each(|t| t.iter().for_each(|(_, i)| collect_item(i, out))),
        Item::None => {}
    }
}

fn collect_value<'d>(value: &'d Value, out: &mut Vec<(Range<usize>, &'d str)>) {
    match value {
        Value::String(s) => {
            if let Some(span) = s.span() {
                out.push((span, s.value()));
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_value(v, out)),
        Value::InlineTable(t) => t.iter().for_each(|(_, v)| collect_value(v, out)),
        _ => {}
    }
}

/// A TOML string literal for `value` that spans `newlines` line breaks,
/// like the literal it replaces: a basic string, or a multi-line one whose
/// line-ending backslash swallows the padding.
fn literal(value: &str, newlines: usize) -> String {
    let mut body = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '"' => body.push_str("\\\""),
            '\\' => body.push_str("\\\\"),
            '\n' => body.push_str("\\n"),
            '\t' => body.push_str("\\t"),
            '\r' => body.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(body, "\\u{:04X}", c as u32);
            }
            c => body.push(c),
        }
    }
    match newlines {
        0 => format!("\"{body}\""),
        n => format!("\"\"\"{body}\\{}\"\"\"", "\n".repeat(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("web1".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("a\"b\\c\nd\u{1}".into()),
            "DOLLAR" => Some("${HOST}".into()),
            _ => None,
        }
    }

    fn x(text: &str) -> Result<String, ExpandError> {
        expand(text, &env)
    }

    #[test]
    fn expands_values() {
        assert_eq!(x("${HOST}").unwrap(), "web1");
        assert_eq!(x("a-${HOST}-b").unwrap(), "a-web1-b");
        assert_eq!(x("${HOST}${HOST}").unwrap(), "web1web1");
        assert_eq!(x("${NOPE:-dflt}").unwrap(), "dflt");
        assert_eq!(x("${EMPTY:-dflt}").unwrap(), "dflt");
        assert_eq!(x("${EMPTY}").unwrap(), "");
        assert_eq!(x("${HOST:-dflt}").unwrap(), "web1");
        assert_eq!(x("${NOPE:-}").unwrap(), "");
        assert_eq!(x("${NOPE:-a:-b}").unwrap(), "a:-b");
        // Substituted text is not expanded again.
        assert_eq!(x("${DOLLAR}").unwrap(), "${HOST}");
    }

    #[test]
    fn dollars() {
        assert_eq!(x("$$").unwrap(), "$");
        assert_eq!(x("$${HOST}").unwrap(), "${HOST}");
        assert_eq!(x("cost $5 $").unwrap(), "cost $5 $");
        assert_eq!(x("$$$$").unwrap(), "$$");
        assert_eq!(x("plain").unwrap(), "plain");
    }

    #[test]
    fn errors() {
        assert_eq!(x("${NOPE}"), Err(ExpandError::Unset("NOPE".into())));
        assert_eq!(x("a ${HOST"), Err(ExpandError::Unterminated));
        assert_eq!(x("${}"), Err(ExpandError::BadName(String::new())));
        assert_eq!(x("${1X}"), Err(ExpandError::BadName("1X".into())));
        assert_eq!(x("${A B}"), Err(ExpandError::BadName("A B".into())));
        assert_eq!(x("${:-x}"), Err(ExpandError::BadName(":-x".into())));
    }

    fn interp(src: &str) -> Result<String, ConfigError> {
        interpolate(src, Path::new("t.toml"), &env).map(Cow::into_owned)
    }

    fn parsed(src: &str) -> toml::Table {
        toml::from_str(&interp(src).unwrap()).unwrap()
    }

    #[test]
    fn every_string_value_and_only_those() {
        let src = r#"
# ${NOPE} in a comment is left alone
hostname = "${HOST}"
n = 5
[server]
hostname = 'lit-${HOST}'
[[stream]]
path = "/var/log/${HOST}/app.log"
meta = { env = "${NOPE:-prod}", list = ["$$", "${HOST}"] }
"#;
        let t = parsed(src);
        assert_eq!(t["hostname"].as_str(), Some("web1"));
        assert_eq!(t["n"].as_integer(), Some(5));
        assert_eq!(t["server"]["hostname"].as_str(), Some("lit-web1"));
        let s = &t["stream"][0];
        assert_eq!(s["path"].as_str(), Some("/var/log/web1/app.log"));
        assert_eq!(s["meta"]["env"].as_str(), Some("prod"));
        assert_eq!(s["meta"]["list"][0].as_str(), Some("$"));
        assert_eq!(s["meta"]["list"][1].as_str(), Some("web1"));
    }

    #[test]
    fn nothing_to_do_borrows() {
        let src = "a = \"x\"\n";
        assert!(matches!(
            interpolate(src, Path::new("t"), &env),
            Ok(Cow::Borrowed(_))
        ));
        let src = "a = \"cost $5\"\n";
        assert!(matches!(
            interpolate(src, Path::new("t"), &env),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn awkward_values_stay_one_value() {
        let t = parsed("a = \"${QUOTE}\"\nb = 1\n");
        assert_eq!(t["a"].as_str(), Some("a\"b\\c\nd\u{1}"));
        assert_eq!(t["b"].as_integer(), Some(1));
    }

    #[test]
    fn lines_are_kept() {
        let src = "a = \"\"\"\n${HOST}\nx\n\"\"\"\nb = \"${HOST}\"\nc = 1\n";
        let out = interp(src).unwrap();
        assert_eq!(out.lines().count(), src.lines().count(), "{out}");
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["a"].as_str(), Some("web1\nx\n"));
        let c_line = out.lines().position(|l| l.starts_with("c =")).unwrap();
        assert_eq!(c_line, 5);
    }

    #[test]
    fn unset_variable_names_the_line() {
        let src = "a = 1\n\n[server]\nhostname = \"${LOGHOST}\"\n";
        let e = interp(src).unwrap_err();
        assert_eq!(e.line, Some(4));
        let text = e.to_string();
        assert!(text.contains("LOGHOST is not set"), "{text}");
    }

    #[test]
    fn broken_toml_is_left_to_the_parser() {
        let src = "a = \"${HOST}\nb = \n";
        assert_eq!(interp(src).unwrap(), src);
    }
}
