//! The invariants of the [module docs](super), checked on any input: the
//! fuzz target (`fuzz/fuzz_targets/handshake.rs`) and `tests/fuzz_corpus.rs`
//! run [`check_invariants`] on arbitrary bytes.

use std::fmt;

use super::*;

/// Runs every parser on `data` and panics if an invariant of the module docs
/// breaks: counts in range and ending on `\n`, nothing read past the count,
/// prefixes of a complete message `Partial`, `Partial` only when no line is
/// complete, and emit-then-parse giving the same parts. Used by the fuzz
/// target (`fuzz/fuzz_targets/handshake.rs`) and by `tests/fuzz_corpus.rs`.
pub fn check_invariants(data: &[u8]) {
    check_status(data, parse_init, 1);
    check_status(data, parse_greeting, 2);
    check_status(data, parse_reply, 1);
    check_status(data, parse_server_line, 1);

    if let Ok(Status::Complete(init, _)) = parse_init(data) {
        let parts = |i: &Init<'_>| {
            let meta = i
                .meta()
                .map(|(k, v)| (k.to_owned(), v.decode().into_owned()));
            (
                i.host.decode().into_owned(),
                i.path.decode().into_owned(),
                meta.collect::<Vec<_>>(),
            )
        };
        let (host, path, meta) = parts(&init);
        let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut out = Vec::new();
        write_init(&mut out, &host, &path, &pairs);
        match parse_init(&out) {
            Ok(Status::Complete(again, n)) => {
                assert_eq!((n, parts(&again)), (out.len(), parts(&init)));
            }
            // Re-quoting can make a line near the limit longer than it.
            Err(ParseError::LineTooLong) => assert!(out.len() > MAX_LINE),
            other => panic!("re-emitted INIT {out:?} parsed as {other:?}"),
        }
    }
    if let Ok(Status::Complete(g, _)) = parse_greeting(data) {
        let mut out = Vec::new();
        write_greeting(&mut out, g.version, g.stream_id);
        assert_eq!(parse_greeting(&out), Ok(Status::Complete(g, out.len())));
    }
    if let Ok(Status::Complete(r, _)) = parse_reply(data) {
        let mut out = Vec::new();
        write_reply_line(&mut out, &r);
        assert_eq!(parse_reply(&out), Ok(Status::Complete(r, out.len())));
    }
    if let Ok(Status::Complete(line, _)) = parse_server_line(data) {
        let mut out = Vec::new();
        match line {
            ServerLine::Ack(n) => write_ack(&mut out, n),
            ServerLine::Done(n) => write_done(&mut out, n),
            ServerLine::FinishRequest(r) | ServerLine::Reply(r) => write_reply_line(&mut out, &r),
        }
        let want = Ok(Status::Complete(line, out.len()));
        assert_eq!(parse_server_line(&out), want);
    }
}

/// The parser-independent checks; `lines` is how many lines a message has.
fn check_status<'a, T: PartialEq + fmt::Debug>(
    data: &'a [u8],
    parse: impl Fn(&'a [u8]) -> Result<Status<T>, ParseError>,
    lines: usize,
) {
    match parse(data) {
        Ok(Status::Complete(msg, n)) => {
            assert!(n >= 1 && n <= data.len() && n <= lines * MAX_LINE);
            assert_eq!(data.get(n - 1), Some(&b'\n'));
            let exact = data.get(..n).unwrap_or_default();
            assert_eq!(parse(exact), Ok(Status::Complete(msg, n)));
            for cut in [0, n / 2, n - 1] {
                let prefix = data.get(..cut).unwrap_or_default();
                assert_eq!(parse(prefix), Ok(Status::Partial), "prefix {cut}");
            }
        }
        Ok(Status::Partial) => {
            let newlines = data.iter().filter(|&&b| b == b'\n').count();
            assert!(newlines < lines && data.len() < lines * MAX_LINE);
        }
        Err(_) => {}
    }
}
