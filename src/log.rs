//! Plain, timestamped, one-line-per-event logging to standard error.
//!
//! `info`/`warn`/`error` always print; `debug` prints only when enabled
//! (config `debug = true` or `--debug`). Format:
//! `2026-11-25T14:00:05.123Z loghamsterd WARN message`.
//!
//! One event is one line, whatever a peer sent: every string that came
//! from outside (INIT's host, path and meta values, reply lines, file and
//! output paths) goes into a message through [`esc`], which writes control
//! characters, the Unicode line separators and `\\` as escapes. A peer can
//! then neither end a line early nor forge one that starts with our
//! prefix. (A control character that reaches a text message anyway is
//! escaped when the line is written.)
//!
//! With `log_format = "json"` (or `--log-format json`, see [`Format`]) each
//! line is one JSON object instead: `ts`, `level`, `daemon`, `msg` (the
//! text line's message) and the event's structured fields, which a call
//! passes before a `;` (`info!(path = p, offset = o; "...")`) or a handler
//! sets for all its lines with `log_scope!` (see `fields.rs`).
//!
//! A status line (the progress of a `method = "send"` backfill on a
//! terminal, [`status`]) stays at the bottom of the terminal: every log
//! line first clears it (`\r` and erase to the end of the line), then
//! draws it again below itself, so the two never run into each other.

mod fields;

pub use fields::{scope, Scope, ToValue, Value};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

static DEBUG: AtomicBool = AtomicBool::new(false);
static MUTED: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);
static PROGRAM: OnceLock<&'static str> = OnceLock::new();
/// The status line on screen (empty: none); see [`status`].
static STATUS: Mutex<String> = Mutex::new(String::new());

/// Clears the rest of a terminal line after a carriage return.
const CLEAR_LINE: &str = "\r\x1b[K";

/// Sets the program name shown in each line and whether debug lines print.
pub fn init(program: &'static str, debug: bool) {
    let _ = PROGRAM.set(program);
    DEBUG.store(debug, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// How lines are written: `log_format` in both configs, `--log-format`
/// on both command lines (the flag wins).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// `2026-11-25T14:00:05.123Z loghamsterd WARN message` (the default).
    #[default]
    Text,
    /// One JSON object per line (see the module doc).
    Json,
}

impl Format {
    /// `"text"` or `"json"`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Chooses text or JSON lines (text until called).
pub fn set_format(format: Format) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
}

/// True when lines are JSON objects.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Formats every line but writes none (`true`): for fuzz targets, which
/// run the daemons' code millions of times.
#[doc(hidden)]
pub fn mute(on: bool) {
    MUTED.store(on, Ordering::Relaxed);
}

#[doc(hidden)]
pub fn emit(level: &str, args: std::fmt::Arguments<'_>) {
    emit_with(level, &[], args)
}

/// One line with structured fields (shown in JSON mode only); the
/// macros' `key = value, ...;` form.
#[doc(hidden)]
pub fn emit_with(level: &str, fields: &[(&'static str, Value<'_>)], args: std::fmt::Arguments<'_>) {
    let prog = PROGRAM.get().copied().unwrap_or("loghamster");
    let line = format_line(json(), SystemTime::now(), level, prog, args, fields);
    if MUTED.load(Ordering::Relaxed) {
        return;
    }
    write_line(&line);
}

/// A line as [`emit_with`] writes it.
fn format_line(
    json: bool,
    now: SystemTime,
    level: &str,
    prog: &str,
    args: std::fmt::Arguments<'_>,
    fields: &[(&'static str, Value<'_>)],
) -> Vec<u8> {
    let msg = one_line(match args.as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(args.to_string()),
    });
    let ts = timestamp(now);
    match json {
        true => fields::line(&ts, level, prog, &msg, fields),
        false => format!("{ts} {prog} {level} {msg}\n").into_bytes(),
    }
}

/// `msg` with any control character (`\n` above all) escaped as [`esc`]
/// would: one event stays one line even if a message was built without
/// `esc`.
fn one_line(msg: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'_, str> {
    if !msg.chars().any(char::is_control) {
        return msg;
    }
    let mut out = String::with_capacity(msg.len() + 8);
    for c in msg.chars() {
        match c {
            c if c.is_control() => out.push_str(&esc(c.encode_utf8(&mut [0; 4])).to_string()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes one line to stderr in one write, clearing the status line
/// before it and drawing it again after it.
fn write_line(line: &[u8]) {
    use std::io::Write;
    let status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    let _ = std::io::stderr()
        .lock()
        .write_all(&around_status(line, &status));
}

/// `line` as written while `status` is on screen: the status line
/// cleared, the line, the status line drawn again below it.
fn around_status<'a>(line: &'a [u8], status: &str) -> std::borrow::Cow<'a, [u8]> {
    if status.is_empty() {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut all = Vec::with_capacity(line.len() + status.len() + 8);
    all.extend_from_slice(CLEAR_LINE.as_bytes());
    all.extend_from_slice(line);
    all.extend_from_slice(status.as_bytes());
    std::borrow::Cow::Owned(all)
}

/// Shows `text` as the status line at the bottom of a terminal, in place
/// of the previous one; log lines clear it and draw it again below them
/// (see the module doc). The caller decides that stderr is a terminal.
/// Control characters in `text` are dropped (it must stay one line).
pub fn status(text: &str) {
    use std::io::Write;
    if MUTED.load(Ordering::Relaxed) {
        return;
    }
    let mut status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    status.clear();
    status.extend(text.chars().filter(|c| !c.is_control()));
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{CLEAR_LINE}{status}");
}

/// Clears the status line from the terminal and forgets it (nothing
/// happens when none is shown).
pub fn clear_status() {
    use std::io::Write;
    let mut status = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    if !status.is_empty() {
        status.clear();
        let _ = std::io::stderr().lock().write_all(CLEAR_LINE.as_bytes());
    }
}

/// Prints why a daemon cannot go on (before it exits non-zero): one
/// `program: error` line, or an ERROR line in JSON mode.
pub fn fatal(program: &'static str, error: &dyn std::fmt::Display) {
    clear_status();
    match json() {
        true => {
            let _ = PROGRAM.set(program);
            emit("ERROR", format_args!("{error}"));
        }
        false => eprintln!("{program}: {error}"),
    }
}

/// Shows `s` (a `str`, `String`, `Path` or `OsStr`) in a log line: C0
/// control characters, DEL, C1 controls, U+2028 and U+2029 become `\n`,
/// `\t`, `\r` or `\u{..}`, a `\` becomes `\\`, bytes that are not UTF-8
/// become `\xHH`; everything else shows as is. Allocates nothing.
pub fn esc<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> Escaped<'_> {
    use std::os::unix::ffi::OsStrExt;
    Escaped(s.as_ref().as_bytes())
}

/// Untrusted bytes as [`esc`] shows them.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(&'a [u8]);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\t' => f.write_str("\\t")?,
                    '\r' => f.write_str("\\r")?,
                    c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                        write!(f, "\\u{{{:x}}}", u32::from(c))?
                    }
                    c => f.write_char(c)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `debug!("...")`, or with fields for JSON lines:
/// `debug!(path = p, offset = o; "...")` (see the module doc).
#[macro_export]
macro_rules! debug {
    ($($k:ident = $v:expr),+ ; $($t:tt)+) => {
        if $crate::log::debug_enabled() {
            $crate::log::emit_with("DEBUG", &$crate::log_fields!($($k = $v),+), format_args!($($t)+))
        }
    };
    ($($t:tt)*) => { if $crate::log::debug_enabled() { $crate::log::emit("DEBUG", format_args!($($t)*)) } };
}
/// `info!("...")`, or `info!(key = value, ...; "...")`.
#[macro_export]
macro_rules! info {
    ($($k:ident = $v:expr),+ ; $($t:tt)+) => {
        $crate::log::emit_with("INFO", &$crate::log_fields!($($k = $v),+), format_args!($($t)+))
    };
    ($($t:tt)*) => { $crate::log::emit("INFO", format_args!($($t)*)) };
}
/// `warn!("...")`, or `warn!(key = value, ...; "...")`.
#[macro_export]
macro_rules! warn {
    ($($k:ident = $v:expr),+ ; $($t:tt)+) => {
        $crate::log::emit_with("WARN", &$crate::log_fields!($($k = $v),+), format_args!($($t)+))
    };
    ($($t:tt)*) => { $crate::log::emit("WARN", format_args!($($t)*)) };
}
/// `error!("...")`, or `error!(key = value, ...; "...")`.
#[macro_export]
macro_rules! error {
    ($($k:ident = $v:expr),+ ; $($t:tt)+) => {
        $crate::log::emit_with("ERROR", &$crate::log_fields!($($k = $v),+), format_args!($($t)+))
    };
    ($($t:tt)*) => { $crate::log::emit("ERROR", format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn escapes_what_could_break_a_line() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let cases: &[(&[u8], &str)] = &[
            (b"web1:/var/log/app.log", "web1:/var/log/app.log"),
            (b"h:/x\nFORGED line", "h:/x\\nFORGED line"),
            (b"a\tb\rc\x1b[31m\x7f", "a\\tb\\rc\\u{1b}[31m\\u{7f}"),
            (
                "\u{85}\u{2028}\u{2029}é".as_bytes(),
                "\\u{85}\\u{2028}\\u{2029}é",
            ),
            (b"back\\slash", "back\\\\slash"),
            (b"not \xff utf8", "not \\xff utf8"),
        ];
        for (raw, want) in cases {
            let shown = esc(OsStr::from_bytes(raw)).to_string();
            assert_eq!(&shown, want);
            assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        }
        assert_eq!(esc("plain").to_string(), "plain");
        assert_eq!(esc(std::path::Path::new("/a b")).to_string(), "/a b");
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_615_205_123);
        assert_eq!(timestamp(t), "2026-11-25T14:00:05.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&timestamp(leap)[..10], "2000-02-29");
    }

    fn line(json: bool, args: std::fmt::Arguments<'_>) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_615_205_123);
        let fields = crate::log_fields!(path = "/a", offset = 3u64);
        String::from_utf8(format_line(json, t, "INFO", "loghamsterc", args, &fields)).unwrap()
    }

    #[test]
    fn text_lines_show_the_message_and_not_the_fields() {
        assert_eq!(
            line(false, format_args!("/a: following from offset {}", 3)),
            "2026-11-25T14:00:05.123Z loghamsterc INFO /a: following from offset 3\n"
        );
    }

    #[test]
    fn json_lines_carry_the_message_and_the_fields() {
        let l = line(true, format_args!("/a: following from offset {}", 3));
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["ts"], "2026-11-25T14:00:05.123Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["daemon"], "loghamsterc");
        assert_eq!(v["msg"], "/a: following from offset 3");
        assert_eq!(v["path"], "/a");
        assert_eq!(v["offset"], 3);
    }

    #[test]
    fn a_message_never_spans_two_lines() {
        let bad = "cannot parse:\n  line 2\r\x1b[31m";
        for json in [false, true] {
            let l = line(json, format_args!("{bad}"));
            assert_eq!(l.matches('\n').count(), 1, "{l:?}");
            assert!(l.ends_with('\n'));
            assert!(!l[..l.len() - 1].chars().any(char::is_control), "{l:?}");
        }
        let l = line(false, format_args!("{bad}"));
        assert!(
            l.ends_with("cannot parse:\\n  line 2\\r\\u{1b}[31m\n"),
            "{l:?}"
        );
    }

    #[test]
    fn a_log_line_clears_the_status_line_and_draws_it_again_below() {
        let line = b"2026-11-25T14:00:05.123Z loghamsterc INFO x\n";
        assert_eq!(&*around_status(line, ""), line);
        let framed = around_status(line, "sent 1.0 of 2.0 MiB");
        let text = std::str::from_utf8(&framed).unwrap();
        assert_eq!(
            text,
            "\r\x1b[K2026-11-25T14:00:05.123Z loghamsterc INFO x\nsent 1.0 of 2.0 MiB"
        );
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!(Format::parse("json"), Some(Format::Json));
        assert_eq!(Format::parse("text"), Some(Format::Text));
        assert_eq!(Format::parse("JSON"), None);
        assert_eq!(Format::default(), Format::Text);
        assert_eq!(Format::Json.to_string(), "json");
    }

    #[test]
    fn the_macros_take_fields_before_a_semicolon() {
        mute(true);
        let p = std::path::Path::new("/x");
        crate::info!(path = p, offset = 1u64; "{}: x", esc(p));
        crate::warn!(path = p; "plain {}", 1);
        crate::error!(n = 2usize; "n");
        crate::debug!(n = 2usize; "n {}", 2);
        crate::info!("no fields {}", 1);
        crate::info!("no args");
    }
}
