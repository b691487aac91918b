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
//! prefix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static DEBUG: AtomicBool = AtomicBool::new(false);
static MUTED: AtomicBool = AtomicBool::new(false);
static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// Sets the program name shown in each line and whether debug lines print.
pub fn init(program: &'static str, debug: bool) {
    let _ = PROGRAM.set(program);
    DEBUG.store(debug, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Formats every line but writes none (`true`): for fuzz targets, which
/// run the daemons' code millions of times.
#[doc(hidden)]
pub fn mute(on: bool) {
    MUTED.store(on, Ordering::Relaxed);
}

#[doc(hidden)]
pub fn emit(level: &str, args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let prog = PROGRAM.get().copied().unwrap_or("loghamster");
    let line = format!("{} {prog} {level} {args}\n", timestamp(SystemTime::now()));
    if MUTED.load(Ordering::Relaxed) {
        return;
    }
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
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

#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { if $crate::log::debug_enabled() { $crate::log::emit("DEBUG", format_args!($($t)*)) } };
}
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::emit("INFO", format_args!($($t)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::emit("WARN", format_args!($($t)*)) };
}
#[macro_export]
macro_rules! error {
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
}
