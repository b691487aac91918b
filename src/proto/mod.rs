//! Bytes on the wire: the loghamster handshake.
//!
//! This layer turns the few text lines that open a loghamster connection into
//! typed values and back. It does no I/O, reads no clock and owns no buffer:
//! every parser is a pure function over `&[u8]` that answers
//! [`Status::Complete`] (the message and how many bytes it used),
//! [`Status::Partial`] (read more and call again with the longer buffer), or a
//! small `Copy` [`ParseError`] that maps to the `4xx` line the server sends
//! before closing. Parsed messages borrow from the caller's buffer, so the
//! reactor can parse straight out of its read buffer and `roll()` it once the
//! message is handled.
//!
//! Files: `handshake.rs` holds the line parsers and emitters, `messages.rs`
//! the client's typed view of them (the `INIT` it writes, the answer it
//! reads), `token.rs` the `token:<name>:<secret>` value, `invariants.rs`
//! the checks the fuzz target runs. `client.rs` is
//! the one stateful piece: [`client::ClientConn`], the client's side of a
//! connection as a state machine. It owns a bounded input buffer and an
//! output queue, but still does no I/O and reads no clock; the socket
//! shell around it is `client/link.rs`.
//!
//! # The conversation
//!
//! ```text
//! >>  TCP connect
//!  << ### Welcome to LogHamster server v0.1
//!  << STREAMID abcdef
//! >>  INIT STREAM host:/path svc:servicename more:<meta>
//!  << 200 OK Ready to accept data
//! >>  raw log bytes ... until either side closes
//!  << ACK 1234                      (any time while streaming)
//!  << 421 Server shutting down      (asks the client to finish)
//! >>  half-close (shutdown SHUT_WR)
//!  << ACK 5678
//!  << 250 DONE 5678                 (then the server closes)
//! ```
//!
//! On a bad request the server sends one reply line with a `4xx` code (`5xx`
//! when it is the server's fault), e.g. `400 Bad request: unterminated quote`,
//! and closes. [`ParseError::reply_code`] and [`ParseError::reason`] give that
//! line for every parse error.
//!
//! # Grammar
//!
//! ```text
//! line      = *(any byte but LF) [CR] LF     ; at most MAX_LINE bytes incl. LF
//! ws        = 1*(SP / HTAB)
//!
//! greeting  = "### Welcome to LogHamster server v" version LF
//!             "STREAMID" ws stream-id LF
//! version   = 1*(any char)                   ; rest of the line, verbatim
//! stream-id = 1*64(ALPHA / DIGIT / "_" / "." / "-")
//!
//! init      = [ws] "INIT" ws "STREAM" ws target *(ws meta) [ws] LF
//! target    = bare / quoted                  ; "host:path", split at the FIRST ":"
//! meta      = key ":" (bare / quoted)        ; at most MAX_META, keys unique
//! key       = 1*64(ALPHA / DIGIT / "_" / "." / "-")
//! bare      = 1*(any char but SP, HTAB, DQUOTE, "\")
//! quoted    = DQUOTE *(char / escape) DQUOTE ; may be empty: key:""
//! escape    = "\\" / "\" DQUOTE / "\t" / "\n" / "\x" 2HEXDIG   ; \x01..\x7f
//!
//! reply     = code [ws text] LF              ; code 100..=599, three digits
//! server-line = "ACK" ws u64 [ws] LF         ; while streaming
//!             / "250" ws "DONE" ws u64 [ws] LF
//!             / reply                        ; 421 asks the client to finish
//! ```
//!
//! Keywords (`INIT`, `STREAM`, `STREAMID`, `ACK`) are case-sensitive
//! uppercase, like the verbs of HTTP. Keys are case-sensitive too.
//!
//! # Quoting
//!
//! A value goes bare when it is non-empty and has no space, tab, `"`, `\` or
//! control character; otherwise it is double-quoted and escaped. The target is
//! one token: if it is quoted, the whole `host:path` is inside the quotes
//! (`"web1:/var/log/my app.log"`). The host ends at the first *literal* `:` of
//! the raw token, and no escape contains a literal `:`, so a host that itself
//! contains `:` is written with `\x3a`. [`Value`] keeps the raw text (quotes
//! stripped, escapes intact) and [`Value::decode`] unescapes it, allocating
//! only when the value has escapes.
//!
//! # Limits and rejected bytes
//!
//! - A line is at most [`MAX_LINE`] bytes including its LF. A buffer of
//!   `MAX_LINE` bytes with no LF is [`ParseError::LineTooLong`] at once, so a
//!   peer can never make us buffer more than that per line.
//! - At most [`MAX_META`] meta pairs; keys and stream ids at most 64 bytes.
//! - Every line must be UTF-8 and contain no NUL, not even through `\x00`.
//!   ASCII control characters other than HTAB (including a CR that is not
//!   right before the LF, and DEL), C1 controls (U+0085 among them) and
//!   U+2028/U+2029 are rejected anywhere in a line, inside quotes too.
//! - No decoded INIT value (host, path, meta value) holds a control
//!   character ([`is_control`]): an escape that decodes to one (`\t`,
//!   `\n`, `\x01`..`\x1f`, `\x7f`) or a raw tab inside quotes is
//!   [`ParseError::ControlInHost`], [`ParseError::ControlInPath`] or
//!   [`ParseError::ControlInValue`]. Such values would forge lines in the
//!   server's log and land in output file names; nothing legitimate needs
//!   them.
//! - A CR right before the LF is accepted (people type at us with `nc` and
//!   `socat`); emitters never write CR.
//!
//! # Extension keys
//!
//! Extensions ride in meta keys so old peers ignore them:
//!
//! - `svc:<name>` (INIT): the service the stream belongs to.
//! - `id:<stream-id>` (INIT): resume the stream a previous `STREAMID` named.
//! - `offset:<u64>` (INIT and the `200` reply): the absolute stream offset of
//!   the first data byte; in the reply, where the server wants the client to
//!   resume. In a reply it is a trailing word, parsed into [`Reply::offset`].
//! - `ack:<u64>` (INIT): ask the server for `ACK <offset>` lines (bytes
//!   durably written) while streaming.
//! - `token:<name>:<secret>` (INIT): a named token that identifies the
//!   client ([`token`]; the server never logs the secret).
//!
//! # Invariants
//!
//! - `Complete(_, n)`: `1 <= n <= buf.len()`, `buf[n - 1] == b'\n'`, and the
//!   parser looked at nothing past `n` (parsing `&buf[..n]` gives the same).
//! - Every proper prefix of a valid message is `Partial`.
//! - No parser allocates or panics, whatever the input.
//! - For any message a parser accepts, emitting its parts again and parsing
//!   that gives the same parts ([`check_invariants`] checks all of this; the
//!   fuzz target and `tests/fuzz_corpus.rs` run it).

pub mod channel;
pub mod client;
pub mod handshake;
mod invariants;
mod messages;
pub mod mux;
pub mod token;

pub use handshake::*;
pub use invariants::check_invariants;
pub use messages::*;

/// The largest stream offset a peer may name or reach: `2^63 - 1`, the
/// largest integer TOML (and so every state file) can store. A server
/// refuses an `offset:` above it and a stream whose bytes would pass it.
pub const MAX_OFFSET: u64 = i64::MAX as u64;
