//! Writing the state files' TOML straight into one `String`.
//!
//! Both daemons rewrite their state once a second from their only thread,
//! and with 1,000 busy files every entry has changed by then.
//! `toml::to_string` builds a document tree for every value and formats
//! it: 6.9 ms for the client's 1,000 entries and 8.6 ms for the server's
//! journal record of 1,000 outputs and streams (`cargo bench --bench
//! state_text`), a loop turn that delays every line arriving meanwhile.
//! The files hold nothing but arrays of flat tables of bare keys with
//! strings, integers and booleans, which this writes directly.
//!
//! Reading stays with the `toml` parser; the tests parse what this writes
//! with it (every string, every integer in range).

use std::fmt::Write as _;
use std::io;

/// TOML text being written: key/value lines, `[[table]]` headers.
#[derive(Debug, Default)]
pub struct TomlText {
    text: String,
    /// The first value TOML cannot hold (an integer beyond `i64`).
    bad: Option<(&'static str, u64)>,
}

impl TomlText {
    /// Starts with `capacity` bytes reserved.
    pub fn with_capacity(capacity: usize) -> TomlText {
        TomlText {
            text: String::with_capacity(capacity),
            bad: None,
        }
    }

    /// Starts an entry of the array of tables `name`, after a blank line.
    pub fn table(&mut self, name: &'static str) {
        debug_assert!(is_bare(name), "{name:?} is not a bare key");
        self.text.push_str("\n[[");
        self.text.push_str(name);
        self.text.push_str("]]\n");
    }

    /// `key = "value"`, escaped as a basic string.
    pub fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        self.quoted(value);
        self.text.push('\n');
    }

    /// `key = ["a", "b"]`.
    pub fn strs<'a>(&mut self, key: &'static str, values: impl IntoIterator<Item = &'a str>) {
        self.key(key);
        self.text.push('[');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.quoted(v);
        }
        self.text.push_str("]\n");
    }

    /// `key = "%016x"`: a 64-bit hash as 16 hex digits in a string.
    pub fn hex(&mut self, key: &'static str, value: u64) {
        self.key(key);
        let _ = write!(self.text, "\"{value:016x}\"");
        self.text.push('\n');
    }

    /// `key = 123`. TOML integers are `i64`: a larger value makes
    /// [`TomlText::finish`] fail rather than write what no parser reads.
    pub fn int(&mut self, key: &'static str, value: u64) {
        if i64::try_from(value).is_err() {
            self.bad.get_or_insert((key, value));
        }
        self.key(key);
        let _ = write!(self.text, "{value}");
        self.text.push('\n');
    }

    /// `key = true` or `key = false`.
    pub fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.text.push_str(if value { "true" } else { "false" });
        self.text.push('\n');
    }

    /// The text, or `InvalidData` naming the first value out of range.
    pub fn finish(self) -> io::Result<String> {
        match self.bad {
            None => Ok(self.text),
            Some((key, v)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "`{key}` = {v} is beyond TOML's integers (at most {})",
                    i64::MAX
                ),
            )),
        }
    }

    fn key(&mut self, key: &'static str) {
        debug_assert!(is_bare(key), "{key:?} is not a bare key");
        self.text.push_str(key);
        self.text.push_str(" = ");
    }

    /// A basic string: `"` and `\` escaped, control characters as `\n`,
    /// `\t`, ... or `\uXXXX` (TOML allows none of them raw but tab).
    fn quoted(&mut self, s: &str) {
        self.text.push('"');
        // Every byte to escape is ASCII, so no UTF-8 sequence is cut.
        let mut rest = s;
        while let Some(i) = rest
            .bytes()
            .position(|b| b < 0x20 || b == 0x7f || b == b'"' || b == b'\\')
        {
            self.text.push_str(&rest[..i]);
            match rest.as_bytes()[i] {
                b'"' => self.text.push_str("\\\""),
                b'\\' => self.text.push_str("\\\\"),
                b'\n' => self.text.push_str("\\n"),
                b'\r' => self.text.push_str("\\r"),
                b'\t' => self.text.push_str("\\t"),
                0x08 => self.text.push_str("\\b"),
                0x0c => self.text.push_str("\\f"),
                b => {
                    let _ = write!(self.text, "\\u{b:04X}");
                }
            }
            rest = &rest[i + 1..];
        }
        self.text.push_str(rest);
        self.text.push('"');
    }
}

fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        names: Vec<String>,
        #[serde(default)]
        row: Vec<Row>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Row {
        s: String,
        n: u64,
        h: String,
        b: bool,
    }

    fn write(names: &[String], rows: &[(String, u64, u64, bool)]) -> io::Result<String> {
        let mut t = TomlText::default();
        t.strs("names", names.iter().map(String::as_str));
        for (s, n, h, b) in rows {
            t.table("row");
            t.str("s", s);
            t.int("n", *n);
            t.hex("h", *h);
            t.bool("b", *b);
        }
        t.finish()
    }

    #[test]
    fn the_layout_is_plain_toml() {
        let text = write(
            &["a".into(), "b\"c".into()],
            &[("x\\y\u{1}\u{7f}é\t".into(), 7, 0xab, true)],
        )
        .unwrap();
        assert_eq!(
            text,
            "names = [\"a\", \"b\\\"c\"]\n\n[[row]]\ns = \"x\\\\y\\u0001\\u007Fé\\t\"\nn = 7\n\
             h = \"00000000000000ab\"\nb = true\n"
        );
    }

    #[test]
    fn an_integer_beyond_i64_is_refused_by_name() {
        let mut t = TomlText::default();
        t.int("ok", i64::MAX as u64);
        t.int("offset", u64::MAX);
        t.int("later", u64::MAX - 1);
        let e = t.finish().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string().contains("`offset` = 18446744073709551615"),
            "{e}"
        );
    }

    proptest! {
        /// Whatever the strings hold, `toml` reads back what was written.
        #[test]
        fn toml_reads_back_every_value(
            names in prop::collection::vec(any::<String>(), 0..4),
            rows in prop::collection::vec(
                (any::<String>(), 0..=i64::MAX as u64, any::<u64>(), any::<bool>()),
                0..6,
            ),
        ) {
            let text = write(&names, &rows).unwrap();
            let doc: Doc = toml::from_str(&text).map_err(|e| {
                TestCaseError::fail(format!("{e}\n{text}"))
            })?;
            let want = Doc {
                names,
                row: rows
                    .into_iter()
                    .map(|(s, n, h, b)| Row { s, n, h: format!("{h:016x}"), b })
                    .collect(),
            };
            prop_assert_eq!(doc, want);
        }
    }
}
