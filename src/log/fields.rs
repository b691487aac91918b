//! Structured fields and the JSON line (`log_format = "json"`).
//!
//! A text line carries its facts inside the message (`/var/log/a.log:
//! following from offset 0`); a JSON line carries the same message as
//! `msg` and the facts again as keys of their own, so a machine reads
//! `path` and `offset` without parsing prose. Fields come from two places:
//!
//! - the call: `info!(path = p, offset = o; "{}: ...", esc(p))` (the
//!   fields before the `;`);
//! - the scope: [`scope`] (through `log_scope!`) sets fields for every
//!   line logged on this thread until its guard drops, so a handler that
//!   runs for one stream or one connection names it once and every line
//!   it logs carries it. Scopes nest; an inner one or the call wins a key.
//!
//! In text mode the fields are not shown (the message already says it),
//! and a scope costs one atomic load. Each key appears once per line: the
//! call's fields first, then the scopes' from the innermost out, and never
//! one of the keys the line itself sets (`ts`, `level`, `daemon`, `msg`).
//!
//! Escaping: serde_json writes the strings, so a quote, a backslash or a
//! control character a peer put in a path cannot end the object or the
//! line. It leaves DEL, the C1 controls and U+2028/U+2029 as they are;
//! [`harden`] writes those as `\uXXXX` too, so a JSON line shows on a
//! terminal as safely as a text line through `esc`. Bytes that are not
//! UTF-8 (a path is an `OsStr`) become U+FFFD in a field; `msg` keeps them
//! as `\xHH`, as the text line does.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Keys every JSON line sets itself; a field by one of these names is
/// dropped.
pub const RESERVED: [&str; 4] = ["ts", "level", "daemon", "msg"];

/// One field's value, borrowed from the caller.
#[derive(Clone, Copy)]
pub enum Value<'a> {
    Str(&'a str),
    /// An `OsStr` or path: shown lossily (U+FFFD for bytes that are not
    /// UTF-8).
    Bytes(&'a [u8]),
    U64(u64),
    I64(i64),
    /// A non-finite number is written `null`.
    F64(f64),
    Bool(bool),
    /// Written as a string through `Display` (addresses, ids).
    Display(&'a dyn fmt::Display),
    Null,
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.encode(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

impl Value<'_> {
    /// Appends this value as JSON.
    fn encode(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and these types always serialize.
        let _ = match *self {
            Value::Str(s) => serde_json::to_writer(&mut *out, s),
            Value::Bytes(b) => serde_json::to_writer(&mut *out, &String::from_utf8_lossy(b)),
            Value::U64(n) => serde_json::to_writer(&mut *out, &n),
            Value::I64(n) => serde_json::to_writer(&mut *out, &n),
            Value::F64(x) if x.is_finite() => serde_json::to_writer(&mut *out, &x),
            Value::Bool(b) => serde_json::to_writer(&mut *out, &b),
            Value::Display(d) => serde_json::to_writer(&mut *out, &d.to_string()),
            Value::F64(_) | Value::Null => {
                out.extend_from_slice(b"null");
                Ok(())
            }
        };
    }
}

/// What can be a field's value: strings, paths, numbers, addresses.
pub trait ToValue {
    fn to_value(&self) -> Value<'_>;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

macro_rules! to_value {
    ($variant:ident as $wide:ty: $($t:ty),+) => {
        $(impl ToValue for $t {
            fn to_value(&self) -> Value<'_> {
                Value::$variant(<$wide>::from(*self))
            }
        })+
    };
}
to_value!(U64 as u64: u8, u16, u32, u64);
to_value!(I64 as i64: i8, i16, i32, i64);
to_value!(F64 as f64: f32, f64);
to_value!(Bool as bool: bool);

impl ToValue for usize {
    fn to_value(&self) -> Value<'_> {
        Value::U64(*self as u64)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Str(self)
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Str(self)
    }
}

impl ToValue for std::borrow::Cow<'_, str> {
    fn to_value(&self) -> Value<'_> {
        Value::Str(self)
    }
}

impl ToValue for OsStr {
    fn to_value(&self) -> Value<'_> {
        use std::os::unix::ffi::OsStrExt;
        Value::Bytes(self.as_bytes())
    }
}

macro_rules! as_os_str {
    ($($t:ty),+) => {
        $(impl ToValue for $t {
            fn to_value(&self) -> Value<'_> {
                self.as_os_str().to_value()
            }
        })+
    };
}
as_os_str!(OsString, Path, PathBuf);

macro_rules! by_display {
    ($($t:ty),+) => {
        $(impl ToValue for $t {
            fn to_value(&self) -> Value<'_> {
                Value::Display(self)
            }
        })+
    };
}
by_display!(SocketAddr, IpAddr);

impl ToValue for super::Escaped<'_> {
    fn to_value(&self) -> Value<'_> {
        Value::Bytes(self.0)
    }
}

/// Fields set for every line this thread logs while the scopes are alive,
/// each value already encoded: `keys[i]` is `(key, start, end)` into `text`.
#[derive(Debug, Default)]
pub(super) struct ScopeFields {
    text: Vec<u8>,
    keys: Vec<(&'static str, usize, usize)>,
}

impl ScopeFields {
    fn push(&mut self, key: &'static str, value: &Value<'_>) {
        let start = self.text.len();
        value.encode(&mut self.text);
        self.keys.push((key, start, self.text.len()));
    }
}

thread_local! {
    static SCOPE: RefCell<ScopeFields> = RefCell::default();
}

/// Sets `fields` for every line this thread logs until the returned
/// guard drops (in JSON mode; in text mode it does nothing). Use it
/// through `log_scope!(key = value, ...)`.
pub fn scope(fields: &[(&'static str, Value<'_>)]) -> Scope {
    scope_in(super::json(), fields)
}

fn scope_in(json: bool, fields: &[(&'static str, Value<'_>)]) -> Scope {
    if !json {
        return Scope::default();
    }
    SCOPE.with(|s| {
        let mut s = s.borrow_mut();
        let restore = (s.text.len(), s.keys.len());
        for (k, v) in fields {
            s.push(k, v);
        }
        Scope {
            restore: Some(restore),
            _thread: std::marker::PhantomData,
        }
    })
}

/// Ends a [`scope`] when dropped.
#[must_use = "the fields are set only while this guard lives"]
#[derive(Default)]
pub struct Scope {
    restore: Option<(usize, usize)>,
    /// The fields live in a thread-local: the guard stays on its thread.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some((text, keys)) = self.restore {
            SCOPE.with(|s| {
                let mut s = s.borrow_mut();
                s.text.truncate(text);
                s.keys.truncate(keys);
            });
        }
    }
}

/// The JSON line of one event, with this thread's scope fields.
pub(super) fn line(
    ts: &str,
    level: &str,
    daemon: &str,
    msg: &str,
    fields: &[(&'static str, Value<'_>)],
) -> Vec<u8> {
    SCOPE.with(|s| encode_line(ts, level, daemon, msg, fields, &s.borrow()))
}

/// One JSON object and a newline: `ts`, `level`, `daemon`, `msg`, then
/// `fields`, then `scoped` from the innermost scope out, each key once.
pub(super) fn encode_line(
    ts: &str,
    level: &str,
    daemon: &str,
    msg: &str,
    fields: &[(&'static str, Value<'_>)],
    scoped: &ScopeFields,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + msg.len());
    let mut seen: Vec<&str> = RESERVED.to_vec();
    out.push(b'{');
    for (i, (k, v)) in [
        ("ts", ts),
        ("level", level),
        ("daemon", daemon),
        ("msg", msg),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(out, "\"{k}\":");
        Value::Str(v).encode(&mut out);
    }
    let mut field = |out: &mut Vec<u8>, key: &'static str, value: &mut dyn FnMut(&mut Vec<u8>)| {
        if seen.contains(&key) {
            return;
        }
        seen.push(key);
        out.push(b',');
        Value::Str(key).encode(out);
        out.push(b':');
        value(out);
    };
    for (k, v) in fields {
        field(&mut out, k, &mut |out| v.encode(out));
    }
    for &(k, start, end) in scoped.keys.iter().rev() {
        field(&mut out, k, &mut |out| {
            out.extend_from_slice(&scoped.text[start..end])
        });
    }
    out.push(b'}');
    let mut out = harden(out);
    out.push(b'\n');
    out
}

/// Writes DEL, the C1 controls and U+2028/U+2029 (which serde_json leaves
/// as they are) as `\uXXXX`. They can only stand inside strings, so the
/// JSON means the same.
fn harden(json: Vec<u8>) -> Vec<u8> {
    let risky = |c: char| matches!(c, '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}');
    let Ok(text) = std::str::from_utf8(&json) else {
        return json; // (serde_json writes UTF-8)
    };
    if !text.chars().any(risky) {
        return json;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match risky(c) {
            true => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            false => out.push(c),
        }
    }
    out.into_bytes()
}

/// `key = value, ...` as the fields of one call or scope.
#[doc(hidden)]
#[macro_export]
macro_rules! log_fields {
    ($($k:ident = $v:expr),*) => {
        [$((stringify!($k), $crate::log::ToValue::to_value(&$v))),*]
    };
}

/// Sets fields for every line this thread logs until the returned guard
/// drops: `let _log = log_scope!(path = stream.path());` (JSON mode only;
/// see `crate::log`).
#[macro_export]
macro_rules! log_scope {
    ($($k:ident = $v:expr),+ $(,)?) => {
        $crate::log::scope(&$crate::log_fields!($($k = $v),+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> serde_json::Map<String, serde_json::Value> {
        assert_eq!(line.last(), Some(&b'\n'), "ends with a newline");
        let body = &line[..line.len() - 1];
        assert!(!body.contains(&b'\n'), "one line: {line:?}");
        match serde_json::from_slice(body).expect("valid JSON") {
            serde_json::Value::Object(m) => m,
            v => panic!("not an object: {v}"),
        }
    }

    #[test]
    fn a_line_has_the_four_keys_then_the_fields_in_order() {
        let scoped = ScopeFields::default();
        let line = encode_line(
            "2026-11-25T14:00:05.123Z",
            "INFO",
            "loghamsterc",
            "/var/log/a.log: following from offset 7",
            &crate::log_fields!(path = Path::new("/var/log/a.log"), offset = 7u64),
            &scoped,
        );
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "{\"ts\":\"2026-11-25T14:00:05.123Z\",\"level\":\"INFO\",\"daemon\":\"loghamsterc\",\
             \"msg\":\"/var/log/a.log: following from offset 7\",\"path\":\"/var/log/a.log\",\"offset\":7}\n"
        );
    }

    #[test]
    fn values_of_every_kind() {
        let peer: SocketAddr = "[::1]:8901".parse().unwrap();
        let none: Option<u64> = None;
        let v = parse(&encode_line(
            "t",
            "WARN",
            "loghamsterd",
            "m",
            &crate::log_fields!(
                peer = peer,
                count = 3usize,
                delta = -2i64,
                rate = 1.5f64,
                nan = f64::NAN,
                ok = true,
                gone = none,
                some = Some(4u32),
                owned = String::from("x")
            ),
            &ScopeFields::default(),
        ));
        assert_eq!(v["peer"], "[::1]:8901");
        assert_eq!(v["count"], 3);
        assert_eq!(v["delta"], -2);
        assert_eq!(v["rate"], 1.5);
        assert!(v["nan"].is_null());
        assert_eq!(v["ok"], true);
        assert!(v["gone"].is_null());
        assert_eq!(v["some"], 4);
        assert_eq!(v["owned"], "x");
    }

    #[test]
    fn what_a_peer_sent_stays_inside_its_string() {
        use std::os::unix::ffi::OsStrExt;
        let nasty: &[u8] =
            b"h:/x\"}\n{\"level\":\"ERROR\"\r\t\\ \x1b[31m \x7f \xc2\x85 \xe2\x80\xa8 \xff";
        let path = OsStr::from_bytes(nasty);
        let msg = format!("{}: refused", super::super::esc(path));
        let line = encode_line(
            "t",
            "WARN",
            "loghamsterd",
            &msg,
            &crate::log_fields!(path = path),
            &ScopeFields::default(),
        );
        let text = std::str::from_utf8(&line).unwrap();
        assert!(
            !text[..text.len() - 1]
                .chars()
                .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'),
            "{text:?}"
        );
        let v = parse(&line);
        assert_eq!(v["level"], "WARN");
        assert_eq!(v.len(), 5, "{v:?}");
        let shown = v["path"].as_str().unwrap();
        assert!(shown.starts_with("h:/x\"}\n{\"level\""), "{shown:?}");
        assert!(shown.ends_with('\u{fffd}'), "{shown:?}");
        assert!(v["msg"].as_str().unwrap().ends_with("\\xff: refused"));
    }

    #[test]
    fn scopes_nest_and_the_call_wins_a_key() {
        let mut scoped = ScopeFields::default();
        scoped.push("peer", &Value::Str("10.0.0.1:5000"));
        scoped.push("path", &Value::Str("outer"));
        scoped.push("path", &Value::Str("inner"));
        let v = parse(&encode_line(
            "t",
            "INFO",
            "d",
            "m",
            &crate::log_fields!(offset = 1u64),
            &scoped,
        ));
        assert_eq!(v["path"], "inner");
        assert_eq!(v["peer"], "10.0.0.1:5000");
        let v = parse(&encode_line(
            "t",
            "INFO",
            "d",
            "m",
            &crate::log_fields!(path = "call", msg = "not the message", ts = 0u8),
            &scoped,
        ));
        assert_eq!(v["path"], "call");
        assert_eq!(v["msg"], "m");
        assert_eq!(v["ts"], "t");
    }

    #[test]
    fn a_scope_guard_restores_what_was_before() {
        let outer = scope_in(true, &crate::log_fields!(peer = "a"));
        {
            let _inner = scope_in(true, &crate::log_fields!(path = "p", offset = 1u64));
            SCOPE.with(|s| assert_eq!(s.borrow().keys.len(), 3));
        }
        SCOPE.with(|s| {
            let s = s.borrow();
            assert_eq!(s.keys.len(), 1);
            assert_eq!(&s.text[..], b"\"a\"");
        });
        drop(outer);
        SCOPE.with(|s| assert!(s.borrow().keys.is_empty()));
        let _text = scope_in(false, &crate::log_fields!(peer = "a"));
        SCOPE.with(|s| assert!(s.borrow().keys.is_empty(), "text mode keeps none"));
    }
}
