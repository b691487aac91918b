//! Handshake parsers and emitters. The grammar, limits and invariants are in
//! the [module docs](super).

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

/// Longest handshake line, including its `\n`.
pub const MAX_LINE: usize = 4096;
/// Most `key:value` pairs in one `INIT`.
pub const MAX_META: usize = 32;
/// Longest meta key.
pub const MAX_KEY: usize = 64;
/// Longest `STREAMID`.
pub const MAX_STREAM_ID: usize = 64;

/// Fixed first part of the greeting's first line; the version follows.
pub const GREETING_PREFIX: &str = "### Welcome to LogHamster server v";

/// Outcome of a parse that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole message, and the bytes it used (including the final `\n`).
    Complete(T, usize),
    /// No complete message yet: read more and parse the longer buffer.
    Partial,
}

/// Why a handshake line was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// `MAX_LINE` bytes without a `\n`.
    LineTooLong,
    /// The line is not UTF-8.
    NotUtf8,
    /// A NUL byte, raw or as `\x00`.
    NulByte,
    /// A raw control character in a line: ASCII other than tab, DEL, a
    /// C1 control (U+0080..U+009F) or a line separator (U+2028, U+2029).
    ControlChar,
    /// The target's host decodes to a control character (an escape).
    ControlInHost,
    /// The target's path decodes to a control character (an escape such
    /// as `\n`: it would forge log lines and land in file names).
    ControlInPath,
    /// A meta value decodes to a control character (an escape).
    ControlInValue,
    /// The line does not start with `INIT STREAM`.
    UnknownCommand,
    /// `INIT STREAM` with no target.
    MissingTarget,
    /// The target has no `:` between host and path.
    BadTarget,
    /// The target's host part is empty.
    EmptyHost,
    /// The target's path part is empty.
    EmptyPath,
    /// A meta word whose key is missing, too long, has a bad character or no `:`.
    BadKey,
    /// A bare value holding `"` or `\`.
    BadValue,
    /// `key:` with nothing after it (use `key:""`).
    EmptyValue,
    /// The line ended inside a quoted string.
    UnterminatedQuote,
    /// An unknown escape, or `\x` not followed by two hex digits of 01..=7f.
    BadEscape,
    /// Something right after a closing quote, or extra words after `ACK n`.
    TrailingGarbage,
    /// More than `MAX_META` meta pairs.
    TooManyMeta,
    /// The same meta key twice (or `offset:` twice in a reply).
    DuplicateKey,
    /// A reply that does not start with a three-digit code in 100..=599.
    BadCode,
    /// A number that is not a plain decimal `u64`.
    BadNumber,
    /// The greeting lines are not `### Welcome ...` / `STREAMID ...`.
    BadGreeting,
    /// The `STREAMID` is empty, too long or has a bad character.
    BadStreamId,
}

impl ParseError {
    /// The reply code a server sends for this error: 413 for the size
    /// limits, 400 for everything else (the errors only a client can meet,
    /// in server lines, also say 400; a client never sends them).
    pub fn reply_code(self) -> u16 {
        match self {
            ParseError::LineTooLong | ParseError::TooManyMeta => 413,
            _ => 400,
        }
    }

    /// The reply text for this error, e.g. `Bad request: unterminated quote`.
    pub fn reason(self) -> &'static str {
        use ParseError::*;
        match self {
            LineTooLong => "Request too large: line too long",
            TooManyMeta => "Request too large: too many meta pairs",
            NotUtf8 => "Bad request: not UTF-8",
            NulByte => "Bad request: NUL byte",
            ControlChar => "Bad request: control character",
            ControlInHost => "Bad request: control character in host",
            ControlInPath => "Bad request: control character in path",
            ControlInValue => "Bad request: control character in meta value",
            UnknownCommand => "Bad request: unknown command",
            MissingTarget => "Bad request: missing target",
            BadTarget => "Bad request: target is not host:path",
            EmptyHost => "Bad request: empty host",
            EmptyPath => "Bad request: empty path",
            BadKey => "Bad request: bad meta key",
            BadValue => "Bad request: bad bare value",
            EmptyValue => "Bad request: empty value",
            UnterminatedQuote => "Bad request: unterminated quote",
            BadEscape => "Bad request: bad escape",
            TrailingGarbage => "Bad request: trailing garbage",
            DuplicateKey => "Bad request: duplicate key",
            BadCode => "Bad request: bad reply code",
            BadNumber => "Bad request: bad number",
            BadGreeting => "Bad request: bad greeting",
            BadStreamId => "Bad request: bad stream id",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ParseError {}

/// One value as it appeared on the wire: the raw text with the surrounding
/// quotes stripped and escapes left in place. Equality compares that wire
/// form; compare [`Value::decode`] for meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Value<'a> {
    /// Invariant: valid for the escape grammar whenever `escaped` is true
    /// (the parser checked it), and free of NUL and control characters.
    raw: &'a str,
    /// True when `raw` holds at least one `\` escape.
    escaped: bool,
}

impl<'a> Value<'a> {
    /// The wire text, quotes stripped, escapes not decoded.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether [`Value::decode`] would have to allocate.
    pub fn has_escapes(&self) -> bool {
        self.escaped
    }

    /// The value with escapes decoded. Borrows when there are none.
    pub fn decode(&self) -> Cow<'a, str> {
        if self.escaped {
            Cow::Owned(unescape(self.raw))
        } else {
            Cow::Borrowed(self.raw)
        }
    }

    /// The value as a plain decimal `u64` (for `offset:` and `ack:`).
    pub fn as_u64(&self) -> Result<u64, ParseError> {
        parse_u64(self.raw)
    }
}

/// A parsed `INIT STREAM` line.
#[derive(Clone, Copy)]
pub struct Init<'a> {
    /// Target host: non-empty, everything before the target's first `:`.
    pub host: Value<'a>,
    /// Target path: non-empty, the rest of the target (may contain `:`).
    pub path: Value<'a>,
    /// Invariant: `meta[..meta_len]` are the pairs in wire order, keys unique.
    meta: [(&'a str, Value<'a>); MAX_META],
    meta_len: usize,
}

impl<'a> Init<'a> {
    /// The meta pairs in the order they were sent.
    pub fn meta(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + '_ {
        self.meta.iter().take(self.meta_len).copied()
    }

    /// The value sent for `key` (case-sensitive), if any.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.meta().find(|&(k, _)| k == key).map(|(_, v)| v)
    }
}

impl fmt::Debug for Init<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Init")
            .field("host", &self.host)
            .field("path", &self.path)
            .field("meta", &self.meta().collect::<Vec<_>>())
            .finish()
    }
}

impl PartialEq for Init<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.host == other.host && self.path == other.path && self.meta().eq(other.meta())
    }
}

impl Eq for Init<'_> {}

/// The server's two greeting lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting<'a> {
    /// Non-empty: the rest of the first line after `v`, verbatim.
    pub version: &'a str,
    /// 1..=64 bytes of `[A-Za-z0-9_.-]`.
    pub stream_id: &'a str,
}

/// A status line: `200 OK ...`, `400 Bad request: ...`, `250 DONE 12345`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// 100..=599.
    pub code: u16,
    /// Everything after the code, trimmed of spaces and tabs, minus the
    /// trailing `offset:` and `compression:` words. Holds no control
    /// character but tab.
    pub text: &'a str,
    /// The trailing `offset:<u64>` word, if the line ended with one.
    pub offset: Option<u64>,
    /// The trailing `compression:<codec>` word (`[A-Za-z0-9_.-]{1,64}`):
    /// on `200`, the server confirms it decodes that codec.
    pub compression: Option<&'a str>,
}

/// `200`: the stream is accepted; the client may send.
pub const READY: u16 = 200;
/// `250 DONE <n>`: the answer to the client's half-close.
pub const DONE: u16 = 250;
/// `415`: the server does not accept the codec the INIT asked for.
pub const UNSUPPORTED_CODEC: u16 = 415;
/// `421`: the server shuts down and asks the client to finish.
pub const FINISH_REQUEST: u16 = 421;

/// A line the server may send while the client streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerLine<'a> {
    /// `ACK <u64>`: bytes durably written, as an absolute stream offset.
    Ack(u64),
    /// `250 DONE <u64>`: after the client's half-close, everything before
    /// that offset is written, synced and committed. A `250` whose first
    /// word is `DONE` must be exactly this (else [`ParseError::BadNumber`]
    /// or [`ParseError::TrailingGarbage`]).
    Done(u64),
    /// A `421` line, e.g. `421 Server shutting down`: stop sending and
    /// half-close.
    FinishRequest(Reply<'a>),
    /// Any other status line.
    Reply(Reply<'a>),
}

// Lines

/// Splits off the first line: `Ok(Some((content, consumed)))` with a final
/// `\r` stripped from `content`, `Ok(None)` when more bytes may complete it.
fn take_line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ParseError> {
    let window = buf.get(..MAX_LINE).unwrap_or(buf);
    match memchr::memchr(b'\n', window) {
        Some(i) => {
            let line = window.get(..i).unwrap_or_default();
            Ok(Some((line.strip_suffix(b"\r").unwrap_or(line), i + 1)))
        }
        None if buf.len() >= MAX_LINE => Err(ParseError::LineTooLong),
        None => Ok(None),
    }
}

/// ASCII control characters we refuse on the wire: all but tab, plus DEL.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether `s` is a token: non-empty, only the key bytes
/// `[A-Za-z0-9_.-]` (no length limit; keys add [`MAX_KEY`]). Meta keys,
/// `svc` values and the server's output names are tokens.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_key_byte)
}

/// Whether `s` is acceptable as the host of an INIT target, which the
/// server uses as a path component (`{host}`, the default route): a
/// [token](is_token) not starting with `.` (so not `.`/`..`, and no hidden
/// directories such as the server's state file).
pub fn is_host_name(s: &str) -> bool {
    is_token(s) && !s.starts_with('.')
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-'
}

/// Whether `c` is a character no value may hold: an ASCII control
/// character (tab included), DEL, a C1 control (U+0085, the next line, is
/// one) or a Unicode line or paragraph separator (U+2028, U+2029). Any of
/// them would end or forge a line in a log, and none belongs in a host
/// name or a file name.
pub fn is_control(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Checks a line's content (no `\n`) for NUL, UTF-8 and control
/// characters (as [`is_control`], but a raw tab is a separator).
fn check_line(line: &[u8]) -> Result<&str, ParseError> {
    if memchr::memchr(0, line).is_some() {
        return Err(ParseError::NulByte);
    }
    let s = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    if line.iter().any(|&b| is_ctl(b)) || (!s.is_ascii() && s.chars().any(is_control)) {
        return Err(ParseError::ControlChar);
    }
    Ok(s)
}

/// Whether a parser-checked raw value decodes to a control character: a
/// raw tab (inside quotes), or an escape `\t`, `\n`, `\x01`..`\x1f` or
/// `\x7f` (other raw control characters never pass [`check_line`]).
fn has_control(raw: &str) -> bool {
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'\t' {
            return true;
        }
        if b != b'\\' {
            continue;
        }
        match bytes.next() {
            Some(b't' | b'n') => return true,
            Some(b'x') => {
                let hi = bytes.next().and_then(hex_val);
                let lo = bytes.next().and_then(hex_val);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    if is_ctl(hi * 16 + lo) || hi * 16 + lo == b'\t' {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// `err` when `v` decodes to a control character.
fn no_control(v: Value<'_>, err: ParseError) -> Result<(), ParseError> {
    match has_control(v.raw) {
        true => Err(err),
        false => Ok(()),
    }
}

/// A plain decimal `u64`: digits only (no sign, no spaces), no overflow.
fn parse_u64(s: &str) -> Result<u64, ParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadNumber);
    }
    s.parse().map_err(|_| ParseError::BadNumber)
}

fn hex_val(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Decodes escapes in a parser-checked raw value. Never panics; on input
/// the parser would have refused it drops the broken escape.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('x') => {
                let hi = chars.next().and_then(|c| u8::try_from(c).ok());
                let lo = chars.next().and_then(|c| u8::try_from(c).ok());
                if let (Some(hi), Some(lo)) = (hi.and_then(hex_val), lo.and_then(hex_val)) {
                    out.push(char::from(hi * 16 + lo));
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

// INIT

/// A position in a checked line. All delimiters are ASCII, so every index
/// the cursor stops at is a char boundary.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn slice(&self, from: usize) -> &'a str {
        self.s.get(from..self.pos).unwrap_or_default()
    }

    fn skip_while(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
    }

    /// Skips spaces and tabs; true if there were any.
    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        self.skip_while(is_ws);
        self.pos > start
    }

    /// A run of non-whitespace.
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        self.skip_while(|b| !is_ws(b));
        self.slice(start)
    }

    /// A bare or quoted value; then the token must end (whitespace or end).
    fn value(&mut self) -> Result<Value<'a>, ParseError> {
        let v = if self.peek() == Some(b'"') {
            self.pos += 1;
            self.quoted()?
        } else {
            let raw = self.word();
            if raw.bytes().any(|b| b == b'"' || b == b'\\') {
                return Err(ParseError::BadValue);
            }
            Value {
                raw,
                escaped: false,
            }
        };
        match self.peek() {
            Some(b) if !is_ws(b) => Err(ParseError::TrailingGarbage),
            _ => Ok(v),
        }
    }

    /// The body of a quoted string, the opening quote already consumed.
    fn quoted(&mut self) -> Result<Value<'a>, ParseError> {
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err(ParseError::UnterminatedQuote),
                Some(b'"') => {
                    let raw = self.slice(start);
                    self.pos += 1;
                    return Ok(Value { raw, escaped });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 1;
                    self.escape()?;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Checks one escape after its `\`.
    fn escape(&mut self) -> Result<(), ParseError> {
        let b = self.peek().ok_or(ParseError::UnterminatedQuote)?;
        self.pos += 1;
        match b {
            b'\\' | b'"' | b't' | b'n' => Ok(()),
            b'x' => match (self.hex_digit()?, self.hex_digit()?) {
                (0, 0) => Err(ParseError::NulByte),
                (hi, _) if hi < 8 => Ok(()),
                _ => Err(ParseError::BadEscape),
            },
            _ => Err(ParseError::BadEscape),
        }
    }

    /// One hex digit of a `\xHH` escape.
    fn hex_digit(&mut self) -> Result<u8, ParseError> {
        let b = self.peek().ok_or(ParseError::UnterminatedQuote)?;
        let v = hex_val(b).ok_or(ParseError::BadEscape)?;
        self.pos += 1;
        Ok(v)
    }

    /// `key:value`.
    fn meta(&mut self) -> Result<(&'a str, Value<'a>), ParseError> {
        let start = self.pos;
        self.skip_while(is_key_byte);
        let key = self.slice(start);
        if key.is_empty() || key.len() > MAX_KEY || self.peek() != Some(b':') {
            return Err(ParseError::BadKey);
        }
        self.pos += 1;
        match self.peek() {
            None => Err(ParseError::EmptyValue),
            Some(b) if is_ws(b) => Err(ParseError::EmptyValue),
            Some(_) => Ok((key, self.value()?)),
        }
    }
}

/// Splits a target at the first literal `:`.
fn split_target(target: Value<'_>) -> Result<(Value<'_>, Value<'_>), ParseError> {
    let (host, path) = target.raw.split_once(':').ok_or(ParseError::BadTarget)?;
    if host.is_empty() {
        return Err(ParseError::EmptyHost);
    }
    if path.is_empty() {
        return Err(ParseError::EmptyPath);
    }
    let part = |raw| Value {
        raw,
        escaped: target.escaped && raw.contains('\\'),
    };
    Ok((part(host), part(path)))
}

fn parse_init_line(line: &str) -> Result<Init<'_>, ParseError> {
    let mut c = Cursor { s: line, pos: 0 };
    c.skip_ws();
    if c.word() != "INIT" || !c.skip_ws() || c.word() != "STREAM" {
        return Err(ParseError::UnknownCommand);
    }
    c.skip_ws();
    if c.at_end() {
        return Err(ParseError::MissingTarget);
    }
    let (host, path) = split_target(c.value()?)?;
    no_control(host, ParseError::ControlInHost)?;
    no_control(path, ParseError::ControlInPath)?;
    let mut init = Init {
        host,
        path,
        meta: [("", Value::default()); MAX_META],
        meta_len: 0,
    };
    loop {
        c.skip_ws();
        if c.at_end() {
            return Ok(init);
        }
        let (key, value) = c.meta()?;
        no_control(value, ParseError::ControlInValue)?;
        if init.get(key).is_some() {
            return Err(ParseError::DuplicateKey);
        }
        let slot = init
            .meta
            .get_mut(init.meta_len)
            .ok_or(ParseError::TooManyMeta)?;
        *slot = (key, value);
        init.meta_len += 1;
    }
}

/// Parses the client's `INIT STREAM host:path key:value...` line. No
/// decoded host, path or meta value holds a control character (see
/// [`is_control`]): escapes that would give one are refused.
pub fn parse_init(buf: &[u8]) -> Result<Status<Init<'_>>, ParseError> {
    let Some((line, n)) = take_line(buf)? else {
        return Ok(Status::Partial);
    };
    let init = parse_init_line(check_line(line)?)?;
    Ok(Status::Complete(init, n))
}

// Server lines

/// Parses both greeting lines; the count covers both.
pub fn parse_greeting(buf: &[u8]) -> Result<Status<Greeting<'_>>, ParseError> {
    let Some((line1, n1)) = take_line(buf)? else {
        return Ok(Status::Partial);
    };
    let version = check_line(line1)?
        .strip_prefix(GREETING_PREFIX)
        .filter(|v| !v.is_empty())
        .ok_or(ParseError::BadGreeting)?;
    let Some((line2, n2)) = take_line(buf.get(n1..).unwrap_or_default())? else {
        return Ok(Status::Partial);
    };
    let rest = check_line(line2)?
        .strip_prefix("STREAMID")
        .ok_or(ParseError::BadGreeting)?;
    let stream_id = rest.trim_start_matches([' ', '\t']);
    if stream_id.len() == rest.len() {
        return Err(ParseError::BadGreeting);
    }
    if stream_id.is_empty()
        || stream_id.len() > MAX_STREAM_ID
        || !stream_id.bytes().all(is_key_byte)
    {
        return Err(ParseError::BadStreamId);
    }
    let greeting = Greeting { version, stream_id };
    Ok(Status::Complete(greeting, n1 + n2))
}

fn parse_reply_line(line: &str) -> Result<Reply<'_>, ParseError> {
    let b = line.as_bytes();
    let code = match (b.first(), b.get(1), b.get(2), b.get(3)) {
        (Some(&d0), Some(&d1), Some(&d2), sep)
            if [d0, d1, d2].iter().all(u8::is_ascii_digit)
                && !matches!(sep, Some(&s) if !is_ws(s)) =>
        {
            u16::from(d0 - b'0') * 100 + u16::from(d1 - b'0') * 10 + u16::from(d2 - b'0')
        }
        _ => return Err(ParseError::BadCode),
    };
    if !(100..=599).contains(&code) {
        return Err(ParseError::BadCode);
    }
    let mut text = line.get(3..).unwrap_or_default().trim_matches([' ', '\t']);
    let (mut offset, mut compression) = (None, None);
    loop {
        let (head, last) = match text.rfind([' ', '\t']) {
            Some(i) => (
                text.get(..i).unwrap_or_default(),
                text.get(i + 1..).unwrap_or_default(),
            ),
            None => ("", text),
        };
        if let Some(v) = last.strip_prefix("offset:") {
            if offset.replace(parse_u64(v)?).is_some() {
                return Err(ParseError::DuplicateKey);
            }
        } else if let Some(v) = last.strip_prefix("compression:") {
            if v.is_empty() || v.len() > MAX_KEY || !v.bytes().all(is_key_byte) {
                return Err(ParseError::BadValue);
            }
            if compression.replace(v).is_some() {
                return Err(ParseError::DuplicateKey);
            }
        } else {
            break;
        }
        text = head.trim_end_matches([' ', '\t']);
    }
    Ok(Reply {
        code,
        text,
        offset,
        compression,
    })
}

/// Parses one status line, e.g. `200 OK Ready to accept data offset:1234`.
pub fn parse_reply(buf: &[u8]) -> Result<Status<Reply<'_>>, ParseError> {
    let Some((line, n)) = take_line(buf)? else {
        return Ok(Status::Partial);
    };
    Ok(Status::Complete(parse_reply_line(check_line(line)?)?, n))
}

/// Parses one line the server sends while streaming: `ACK <u64>` or a reply.
pub fn parse_server_line(buf: &[u8]) -> Result<Status<ServerLine<'_>>, ParseError> {
    let Some((line, n)) = take_line(buf)? else {
        return Ok(Status::Partial);
    };
    let line = check_line(line)?;
    if let Some(rest) = after_keyword(line, "ACK") {
        return Ok(Status::Complete(ServerLine::Ack(sole_u64(rest)?), n));
    }
    let reply = parse_reply_line(line)?;
    let words = line
        .get(3..)
        .unwrap_or_default()
        .trim_start_matches([' ', '\t']);
    let parsed = match (reply.code, after_keyword(words, "DONE")) {
        (DONE, Some(rest)) => ServerLine::Done(sole_u64(rest)?),
        (FINISH_REQUEST, _) => ServerLine::FinishRequest(reply),
        _ => ServerLine::Reply(reply),
    };
    Ok(Status::Complete(parsed, n))
}

/// What follows `keyword` when `s` starts with it as a whole word.
fn after_keyword<'a>(s: &'a str, keyword: &str) -> Option<&'a str> {
    s.strip_prefix(keyword)
        .filter(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// The one `u64` word of `rest` (`ACK n`, `250 DONE n`).
fn sole_u64(rest: &str) -> Result<u64, ParseError> {
    let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
    let n = parse_u64(words.next().unwrap_or_default())?;
    match words.next() {
        Some(_) => Err(ParseError::TrailingGarbage),
        None => Ok(n),
    }
}

// Emitters

pub(super) fn push_u64(out: &mut Vec<u8>, n: u64) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// Pushes `s` with every control character (`\n` included, and those of
/// [`is_control`] beyond ASCII) made a space, so free text can never end
/// the line early or make the peer refuse it.
fn push_text(out: &mut Vec<u8>, s: &str) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| if is_ctl(b) { b' ' } else { b }));
        return;
    }
    let mut buf = [0; 4];
    for c in s.chars() {
        let c = if c != '\t' && is_control(c) { ' ' } else { c };
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.bytes()
            .any(|b| is_ws(b) || b == b'"' || b == b'\\' || is_ctl(b))
}

/// Pushes the inside of a quoted string; `colon` also escapes `:`.
fn push_escaped(out: &mut Vec<u8>, s: &str, colon: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b':' if colon => out.extend_from_slice(b"\\x3a"),
            b if is_ctl(b) => {
                let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
                out.extend_from_slice(b"\\x");
                out.extend_from_slice(&hex);
            }
            b => out.push(b),
        }
    }
}

fn push_value(out: &mut Vec<u8>, s: &str) {
    if needs_quotes(s) {
        out.push(b'"');
        push_escaped(out, s, false);
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Writes both greeting lines. Control characters in `version` become
/// spaces; bytes of `stream_id` outside `[A-Za-z0-9_.-]` become `_`. An
/// empty version or an empty or over-long id gives lines the peer refuses.
pub fn write_greeting(out: &mut Vec<u8>, version: &str, stream_id: &str) {
    out.extend_from_slice(GREETING_PREFIX.as_bytes());
    push_text(out, version);
    out.extend_from_slice(b"\nSTREAMID ");
    out.extend(
        stream_id
            .bytes()
            .map(|b| if is_key_byte(b) { b } else { b'_' }),
    );
    out.push(b'\n');
}

/// Writes an `INIT STREAM` line, quoting and escaping what needs it, so any
/// host, path and values without NUL parse back to the same strings. Key
/// bytes outside `[A-Za-z0-9_.-]` become `_`. Empty host or path, empty,
/// over-long or repeated keys, more than `MAX_META` pairs or a line over
/// `MAX_LINE` give a line the peer refuses; the emitter itself never fails.
pub fn write_init(out: &mut Vec<u8>, host: &str, path: &str, meta: &[(&str, &str)]) {
    push_init_target(out, host, path);
    for (key, value) in meta {
        push_meta(out, key, value);
    }
    out.push(b'\n');
}

/// Pushes `INIT STREAM host:path`, quoted when it has to be.
pub(super) fn push_init_target(out: &mut Vec<u8>, host: &str, path: &str) {
    out.extend_from_slice(b"INIT STREAM ");
    if needs_quotes(host) || needs_quotes(path) || host.contains(':') {
        out.push(b'"');
        push_escaped(out, host, true);
        out.push(b':');
        push_escaped(out, path, false);
        out.push(b'"');
    } else {
        out.extend_from_slice(host.as_bytes());
        out.push(b':');
        out.extend_from_slice(path.as_bytes());
    }
}

/// Pushes ` key:value`, quoting the value when it has to be.
pub(super) fn push_meta(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(b' ');
    out.extend(key.bytes().map(|b| if is_key_byte(b) { b } else { b'_' }));
    out.push(b':');
    push_value(out, value);
}

/// Writes a status line: `code text[ offset:N]`. Control characters in
/// `text` become spaces and it is trimmed. Replies have no quoting, so a
/// text that itself ends in an `offset:N` word reads back as an offset;
/// `code` is written as is and
/// must be 100..=599 for the peer to accept the line.
pub fn write_reply(out: &mut Vec<u8>, code: u16, text: &str, offset: Option<u64>) {
    write_reply_line(
        out,
        &Reply {
            code,
            text,
            offset,
            compression: None,
        },
    );
}

/// Writes a status line with all its trailing words:
/// `code text[ offset:N][ compression:C]`. A `compression` that is not a
/// valid key is left out.
pub fn write_reply_line(out: &mut Vec<u8>, r: &Reply<'_>) {
    push_u64(out, u64::from(r.code));
    let text = r
        .text
        .trim_matches(|c: char| c == ' ' || c.is_ascii_control());
    if !text.is_empty() {
        out.push(b' ');
        push_text(out, text);
    }
    if let Some(offset) = r.offset {
        out.extend_from_slice(b" offset:");
        push_u64(out, offset);
    }
    if let Some(c) = r.compression {
        if !c.is_empty() && c.len() <= MAX_KEY && c.bytes().all(is_key_byte) {
            out.extend_from_slice(b" compression:");
            out.extend_from_slice(c.as_bytes());
        }
    }
    out.push(b'\n');
}

/// Writes `ACK <offset>`.
pub fn write_ack(out: &mut Vec<u8>, offset: u64) {
    out.extend_from_slice(b"ACK ");
    push_u64(out, offset);
    out.push(b'\n');
}

/// Writes `250 DONE <offset>`.
pub fn write_done(out: &mut Vec<u8>, offset: u64) {
    out.extend_from_slice(b"250 DONE ");
    push_u64(out, offset);
    out.push(b'\n');
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
