//! Unit tests for the handshake parsers and emitters (kept out of
//! `handshake.rs` to hold both files under 800 lines).

use super::*;
use crate::proto::check_invariants;
use ParseError::*;

/// Parsed INIT as owned strings: (host, path, [(key, value)]).
type Owned = (String, String, Vec<(String, String)>);

fn init_owned(line: &[u8]) -> Result<Owned, ParseError> {
    match parse_init(line)? {
        Status::Complete(init, n) => {
            assert_eq!(n, line.len(), "consumed for {line:?}");
            let meta = init
                .meta()
                .map(|(k, v)| (k.to_owned(), v.decode().into_owned()))
                .collect();
            let (host, path) = (init.host.decode(), init.path.decode());
            Ok((host.into_owned(), path.into_owned(), meta))
        }
        Status::Partial => panic!("partial: {line:?}"),
    }
}

fn ok(host: &str, path: &str, meta: &[(&str, &str)]) -> Result<Owned, ParseError> {
    let meta = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok((host.to_owned(), path.to_owned(), meta))
}

#[test]
fn init_table() {
    let many: String = (0..=MAX_META).map(|i| format!(" k{i}:v")).collect();
    let max: String = (0..MAX_META).map(|i| format!(" k{i}:v")).collect();
    let long_key = format!("INIT STREAM h:/p {}:v\n", "k".repeat(MAX_KEY + 1));
    let key64 = format!("INIT STREAM h:/p {}:v\n", "k".repeat(MAX_KEY));
    let cases: Vec<(String, Result<Owned, ParseError>)> = vec![
        (
            "INIT STREAM host:/path svc:servicename more:<meta>\n".into(),
            ok(
                "host",
                "/path",
                &[("svc", "servicename"), ("more", "<meta>")],
            ),
        ),
        (
            "INIT STREAM web:/var/log/a:b.log\n".into(),
            ok("web", "/var/log/a:b.log", &[]),
        ),
        (
            "INIT STREAM \"web1:/var/log/my app.log\" svc:x\n".into(),
            ok("web1", "/var/log/my app.log", &[("svc", "x")]),
        ),
        (
            r#"INIT STREAM h:/p msg:"a \"b\" \\ \x41\x7e" e:"""#.to_string() + "\n",
            ok("h", "/p", &[("msg", "a \"b\" \\ A~"), ("e", "")]),
        ),
        (
            r#"INIT STREAM "h:/p\\n" k:"\\t""#.to_string() + "\n",
            ok("h", "/p\\n", &[("k", "\\t")]),
        ),
        (
            "INIT STREAM h:/p a:1\r\n".into(),
            ok("h", "/p", &[("a", "1")]),
        ),
        (
            " \tINIT\t STREAM  h:/p  \t a:1 \n".into(),
            ok("h", "/p", &[("a", "1")]),
        ),
        (
            "INIT STREAM h:/p url:http://x:80/\n".into(),
            ok("h", "/p", &[("url", "http://x:80/")]),
        ),
        (
            "INIT STREAM h:/p k.-_9:ü\n".into(),
            ok("h", "/p", &[("k.-_9", "ü")]),
        ),
        (
            r#"INIT STREAM "a\x3ab:/p""#.to_string() + "\n",
            ok("a:b", "/p", &[]),
        ),
        (format!("INIT STREAM h:/p{max}\n"), ok("h", "/p", &[])), // meta checked below
        (key64, ok("h", "/p", &[(&"k".repeat(MAX_KEY), "v")])),
        // Errors.
        ("init stream h:/p\n".into(), Err(UnknownCommand)),
        ("INIT\n".into(), Err(UnknownCommand)),
        ("INIT STREAMX h:/p\n".into(), Err(UnknownCommand)),
        ("\n".into(), Err(UnknownCommand)),
        ("INIT STREAM\n".into(), Err(MissingTarget)),
        ("INIT STREAM   \r\n".into(), Err(MissingTarget)),
        ("INIT STREAM hostpath\n".into(), Err(BadTarget)),
        ("INIT STREAM :/p\n".into(), Err(EmptyHost)),
        ("INIT STREAM h:\n".into(), Err(EmptyPath)),
        ("INIT STREAM \"h:/p\n".into(), Err(UnterminatedQuote)),
        (
            "INIT STREAM h:/p k:\"ab\\\"\n".into(),
            Err(UnterminatedQuote),
        ),
        ("INIT STREAM h:/p k:\"a\\q\"\n".into(), Err(BadEscape)),
        ("INIT STREAM h:/p k:\"\\xg1\"\n".into(), Err(BadEscape)),
        ("INIT STREAM h:/p k:\"\\x80\"\n".into(), Err(BadEscape)),
        ("INIT STREAM h:/p k:\"\\x00\"\n".into(), Err(NulByte)),
        ("INIT STREAM h:/p k:\"a\"b\n".into(), Err(TrailingGarbage)),
        ("INIT STREAM \"h:/p\"x\n".into(), Err(TrailingGarbage)),
        ("INIT STREAM h:/p k:a\"b\n".into(), Err(BadValue)),
        ("INIT STREAM h:/p\\x k:a\n".into(), Err(BadValue)),
        ("INIT STREAM h:/p k:\n".into(), Err(EmptyValue)),
        ("INIT STREAM h:/p k: x\n".into(), Err(EmptyValue)),
        ("INIT STREAM h:/p novalue\n".into(), Err(BadKey)),
        ("INIT STREAM h:/p :v\n".into(), Err(BadKey)),
        ("INIT STREAM h:/p k!:v\n".into(), Err(BadKey)),
        (long_key, Err(BadKey)),
        ("INIT STREAM h:/p a:1 a:2\n".into(), Err(DuplicateKey)),
        (format!("INIT STREAM h:/p{many}\n"), Err(TooManyMeta)),
        ("INIT STREAM h:/p\0\n".into(), Err(NulByte)),
        ("INIT STREAM h:/p\x01\n".into(), Err(ControlChar)),
        ("INIT STREAM h:/p k:\"a\rb\"\n".into(), Err(ControlChar)),
        ("INIT STREAM h:/p\r\r\n".into(), Err(ControlChar)),
        ("INIT STREAM h:/p\x7f\n".into(), Err(ControlChar)),
        // Control characters that escapes would smuggle into a value.
        (
            r#"INIT STREAM "h:/x\nFORGED line""#.to_string() + "\n",
            Err(ControlInPath),
        ),
        (
            r#"INIT STREAM "h:/p\t""#.to_string() + "\n",
            Err(ControlInPath),
        ),
        (
            r#"INIT STREAM "h:/\x1b[2J""#.to_string() + "\n",
            Err(ControlInPath),
        ),
        (
            r#"INIT STREAM "h:/p\x7F""#.to_string() + "\n",
            Err(ControlInPath),
        ),
        (
            r#"INIT STREAM "h:/p\x09""#.to_string() + "\n",
            Err(ControlInPath),
        ),
        (
            r#"INIT STREAM "h\x0a:/p""#.to_string() + "\n",
            Err(ControlInHost),
        ),
        (
            r#"INIT STREAM "h\n:/p\n""#.to_string() + "\n",
            Err(ControlInHost),
        ),
        (
            r#"INIT STREAM h:/p k:"a\tb""#.to_string() + "\n",
            Err(ControlInValue),
        ),
        (
            r#"INIT STREAM h:/p svc:"\x0d""#.to_string() + "\n",
            Err(ControlInValue),
        ),
        ("INIT STREAM \"h:/raw\ttab\"\n".into(), Err(ControlInPath)),
        (
            "INIT STREAM h:/p k:\"raw\ttab\"\n".into(),
            Err(ControlInValue),
        ),
        // Raw C1 controls and Unicode line separators, anywhere.
        ("INIT STREAM h:/p\u{85}x\n".into(), Err(ControlChar)),
        ("INIT STREAM h:/p\u{2028}x\n".into(), Err(ControlChar)),
        ("INIT STREAM h:/p k:\"\u{2029}\"\n".into(), Err(ControlChar)),
        ("INIT STREAM h:/p k:\u{9b}\n".into(), Err(ControlChar)),
    ];
    for (line, want) in &cases {
        let got = init_owned(line.as_bytes());
        match (want, &got) {
            // The MAX_META row: only count the pairs.
            (Ok((_, _, m)), Ok((_, _, g))) if m.is_empty() && line.contains("k0:") => {
                assert_eq!(g.len(), MAX_META)
            }
            _ => assert_eq!(&got, want, "line {line:?}"),
        }
    }
}

#[test]
fn init_rejects_invalid_utf8_and_oversize() {
    assert_eq!(parse_init(b"INIT STREAM h:/\xff\n"), Err(NotUtf8));
    let mut line = b"INIT STREAM h:/".to_vec();
    line.resize(MAX_LINE - 1, b'a');
    assert_eq!(parse_init(&line), Ok(Status::Partial));
    line.push(b'\n'); // exactly MAX_LINE with its newline: fine
    assert!(matches!(
        parse_init(&line),
        Ok(Status::Complete(_, MAX_LINE))
    ));
    line.pop();
    line.push(b'a'); // MAX_LINE bytes and no newline: decided at once
    assert_eq!(parse_init(&line), Err(LineTooLong));
    line.push(b'\n');
    assert_eq!(parse_init(&line), Err(LineTooLong));
}

#[test]
fn init_consumes_only_its_line() {
    let buf = b"INIT STREAM h:/p a:1\nraw log bytes\n";
    match parse_init(buf) {
        Ok(Status::Complete(init, n)) => {
            assert_eq!(n, 21);
            assert_eq!(init.get("a").map(|v| v.raw()), Some("1"));
            assert_eq!(init.get("b"), None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn decode_borrows_without_escapes() {
    let line = b"INIT STREAM \"h:/a b\" k:plain q:\"quoted\" e:\"x\\\"y\"\n";
    let Ok(Status::Complete(init, _)) = parse_init(line) else {
        panic!("no parse");
    };
    assert!(matches!(init.host.decode(), Cow::Borrowed("h")));
    assert!(matches!(init.path.decode(), Cow::Borrowed("/a b")));
    assert!(matches!(
        init.get("k").map(|v| v.decode()),
        Some(Cow::Borrowed("plain"))
    ));
    assert!(matches!(
        init.get("q").map(|v| v.decode()),
        Some(Cow::Borrowed("quoted"))
    ));
    let e = init.get("e").unwrap_or_default();
    assert!(e.has_escapes());
    assert_eq!(e.raw(), "x\\\"y");
    assert!(matches!(e.decode(), Cow::Owned(s) if s == "x\"y"));
}

/// One valid message per parser, as (name, bytes, parser).
type Parser = fn(&[u8]) -> bool;

fn valid_messages() -> Vec<(&'static str, Vec<u8>, Parser)> {
    fn partial<T>(r: Result<Status<T>, ParseError>) -> bool {
        matches!(r, Ok(Status::Partial))
    }
    let mut greeting = Vec::new();
    write_greeting(&mut greeting, "0.1", "abcdef");
    vec![
        (
            "init",
            br#"INIT STREAM "web1:/var/log/my app.log" svc:x m:"a\"b\x41""#.to_vec(),
            |b| partial(parse_init(b)),
        ),
        ("greeting", greeting, |b| partial(parse_greeting(b))),
        (
            "reply",
            b"200 OK Ready to accept data offset:1234\r".to_vec(),
            |b| partial(parse_reply(b)),
        ),
        ("ack", b"ACK 18446744073709551615".to_vec(), |b| {
            partial(parse_server_line(b))
        }),
        ("status", b"421 Server shutting down".to_vec(), |b| {
            partial(parse_server_line(b))
        }),
        ("done", b"250 DONE 18446744073709551615".to_vec(), |b| {
            partial(parse_server_line(b))
        }),
        ("done with spaces", b"250\t DONE \t7 \r".to_vec(), |b| {
            partial(parse_server_line(b))
        }),
    ]
}

#[test]
fn every_proper_prefix_is_partial() {
    for (name, mut msg, is_partial) in valid_messages() {
        if msg.last() != Some(&b'\n') {
            msg.push(b'\n');
        }
        for cut in 0..msg.len() {
            assert!(is_partial(&msg[..cut]), "{name}: prefix {cut} not Partial");
        }
        assert!(!is_partial(&msg), "{name}: whole message still Partial");
        check_invariants(&msg);
    }
}

#[test]
fn greeting_parses_both_lines() {
    let buf = b"### Welcome to LogHamster server v0.1\r\nSTREAMID abc-1.x_Y\nINIT";
    let want = Greeting {
        version: "0.1",
        stream_id: "abc-1.x_Y",
    };
    assert_eq!(
        parse_greeting(buf),
        Ok(Status::Complete(want, buf.len() - 4))
    );
    let bad: &[(&[u8], ParseError)] = &[
        (
            b"### Welcome to LogHamster server v\nSTREAMID a\n",
            BadGreeting,
        ),
        (b"500 Too busy\n", BadGreeting),
        (
            b"### Welcome to LogHamster server v1\nSTREAM a\n",
            BadGreeting,
        ),
        (
            b"### Welcome to LogHamster server v1\nSTREAMIDa\n",
            BadGreeting,
        ),
        (
            b"### Welcome to LogHamster server v1\nSTREAMID a b\n",
            BadStreamId,
        ),
        (
            b"### Welcome to LogHamster server v1\nSTREAMID \n",
            BadStreamId,
        ),
        (
            b"### Welcome to LogHamster server v1\x01\nSTREAMID a\n",
            ControlChar,
        ),
    ];
    for (buf, err) in bad {
        assert_eq!(parse_greeting(buf), Err(*err), "{buf:?}");
    }
    let long_id = format!("{GREETING_PREFIX}1\nSTREAMID {}\n", "a".repeat(65));
    assert_eq!(parse_greeting(long_id.as_bytes()), Err(BadStreamId));
}

#[test]
fn reply_table() {
    let r = |code, text, offset| {
        Ok(Reply {
            code,
            text,
            offset,
            compression: None,
        })
    };
    let rc = |code, text, offset, c| {
        Ok(Reply {
            code,
            text,
            offset,
            compression: Some(c),
        })
    };
    let cases: &[(&str, Result<Reply<'_>, ParseError>)] = &[
        (
            "200 OK Ready to accept data\n",
            r(200, "OK Ready to accept data", None),
        ),
        (
            "200 OK Ready to accept data offset:1234\n",
            r(200, "OK Ready to accept data", Some(1234)),
        ),
        ("200 OK foo:bar offset:7\r\n", r(200, "OK foo:bar", Some(7))),
        (
            "200 OK offset:7 foo:bar\n",
            r(200, "OK offset:7 foo:bar", None),
        ),
        (
            "400 Bad request: unterminated quote\n",
            r(400, "Bad request: unterminated quote", None),
        ),
        ("250 DONE 12345\n", r(250, "DONE 12345", None)),
        ("200\n", r(200, "", None)),
        ("200 offset:0\n", r(200, "", Some(0))),
        ("599 \t x \t\n", r(599, "x", None)),
        ("200 OK offset:1 offset:2\n", Err(DuplicateKey)),
        (
            "200 OK Ready offset:5 compression:zstd\n",
            rc(200, "OK Ready", Some(5), "zstd"),
        ),
        (
            "200 OK compression:gzip offset:5\n",
            rc(200, "OK", Some(5), "gzip"),
        ),
        ("200 OK compression:lz4\n", rc(200, "OK", None, "lz4")),
        ("200 OK compression:a compression:b\n", Err(DuplicateKey)),
        ("200 OK compression:\n", Err(BadValue)),
        ("200 OK compression:a/b\n", Err(BadValue)),
        ("200 OK offset:x\n", Err(BadNumber)),
        ("200 OK offset:\n", Err(BadNumber)),
        ("200 OK offset:18446744073709551616\n", Err(BadNumber)),
        ("099 low\n", Err(BadCode)),
        ("600 high\n", Err(BadCode)),
        ("2000 OK\n", Err(BadCode)),
        ("20 OK\n", Err(BadCode)),
        ("OK\n", Err(BadCode)),
        ("\n", Err(BadCode)),
    ];
    for (line, want) in cases {
        let got = match parse_reply(line.as_bytes()) {
            Ok(Status::Complete(reply, n)) => {
                assert_eq!(n, line.len());
                Ok(reply)
            }
            Ok(Status::Partial) => panic!("partial {line:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(&got, want, "{line:?}");
    }
}

#[test]
fn server_line_table() {
    type Want<'a> = Result<Status<ServerLine<'a>>, ParseError>;
    let cases: &[(&[u8], Want<'_>)] = &[
        (b"ACK 0\n", Ok(Status::Complete(ServerLine::Ack(0), 6))),
        (
            b"ACK\t42 \r\n",
            Ok(Status::Complete(ServerLine::Ack(42), 9)),
        ),
        (b"ACK 1", Ok(Status::Partial)),
        (b"ACK\n", Err(BadNumber)),
        (b"ACK -1\n", Err(BadNumber)),
        (b"ACK +1\n", Err(BadNumber)),
        (b"ACK 1 2\n", Err(TrailingGarbage)),
        (b"ACKNOWLEDGED\n", Err(BadCode)),
        (b"ack 1\n", Err(BadCode)),
        (
            b"250 DONE 0\n",
            Ok(Status::Complete(ServerLine::Done(0), 11)),
        ),
        (
            b"250\tDONE  42\t\r\n",
            Ok(Status::Complete(ServerLine::Done(42), 15)),
        ),
        (b"250 DONE 1", Ok(Status::Partial)),
        (b"250 DONE\n", Err(BadNumber)),
        (b"250 DONE x\n", Err(BadNumber)),
        (b"250 DONE 18446744073709551616\n", Err(BadNumber)),
        (b"250 DONE 1 2\n", Err(TrailingGarbage)),
        (b"250 DONE 1 offset:1\n", Err(TrailingGarbage)),
        (b"250 DONE offset:1\n", Err(BadNumber)),
        (b"250DONE 1\n", Err(BadCode)),
        (
            b"251 DONE 1\n",
            Ok(Status::Complete(
                ServerLine::Reply(reply(251, "DONE 1")),
                11,
            )),
        ),
        (
            b"250 DONEX 1\n",
            Ok(Status::Complete(
                ServerLine::Reply(reply(250, "DONEX 1")),
                12,
            )),
        ),
        (
            b"250 done 1\n",
            Ok(Status::Complete(
                ServerLine::Reply(reply(250, "done 1")),
                11,
            )),
        ),
        (
            b"421 Server shutting down\n",
            Ok(Status::Complete(
                ServerLine::FinishRequest(reply(421, "Server shutting down")),
                25,
            )),
        ),
        (
            b"421\n",
            Ok(Status::Complete(
                ServerLine::FinishRequest(reply(421, "")),
                4,
            )),
        ),
        (
            b"503 Output unavailable\n",
            Ok(Status::Complete(
                ServerLine::Reply(reply(503, "Output unavailable")),
                23,
            )),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(&parse_server_line(line), want, "{line:?}");
    }
}

fn reply(code: u16, text: &str) -> Reply<'_> {
    Reply {
        code,
        text,
        offset: None,
        compression: None,
    }
}

const NASTY: &[&str] = &[
    "plain",
    "",
    "with space",
    "tab\there",
    "quote\"inside",
    "\"",
    "back\\slash\\",
    "\\x41 not an escape",
    "colon:and:more",
    ":",
    "new\nline\r\n",
    "ctl\x01\x1f\x7f",
    "ünïcödé 日本語 🐹",
    "  leading and trailing  ",
    "ends with backslash \\",
];

/// Whether a value holds a character INIT refuses.
fn has_control(s: &str) -> bool {
    s.chars().any(is_control)
}

#[test]
fn init_round_trips() {
    for host in NASTY.iter().filter(|s| !s.is_empty()) {
        for path in NASTY.iter().filter(|s| !s.is_empty()) {
            let meta: Vec<(String, &str)> = NASTY
                .iter()
                .filter(|v| !has_control(v))
                .enumerate()
                .map(|(i, v)| (format!("k{i}"), *v))
                .collect();
            let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let mut out = Vec::new();
            write_init(&mut out, host, path, &meta);
            assert!(!out.contains(&b'\r'));
            let want = match (has_control(host), has_control(path)) {
                (true, _) => Err(ControlInHost),
                (false, true) => Err(ControlInPath),
                (false, false) => ok(host, path, &meta),
            };
            assert_eq!(
                init_owned(&out),
                want,
                "{:?}",
                String::from_utf8_lossy(&out)
            );
            check_invariants(&out);
        }
    }
}

#[test]
fn init_refuses_meta_values_with_control_characters() {
    for value in NASTY.iter().filter(|v| has_control(v)) {
        let mut out = Vec::new();
        write_init(&mut out, "h", "/p", &[("svc", "ok"), ("k", value)]);
        assert_eq!(init_owned(&out), Err(ControlInValue), "{value:?}");
        check_invariants(&out);
    }
}

#[test]
fn init_emitter_writes_bare_when_it_can() {
    let mut out = Vec::new();
    write_init(
        &mut out,
        "host",
        "/path",
        &[("svc", "servicename"), ("more", "<meta>")],
    );
    assert_eq!(out, b"INIT STREAM host:/path svc:servicename more:<meta>\n");
    out.clear();
    write_init(&mut out, "web1", "/var/log/my app.log", &[("e", "")]);
    assert_eq!(out, b"INIT STREAM \"web1:/var/log/my app.log\" e:\"\"\n");
}

#[test]
fn greeting_round_trips() {
    for version in NASTY.iter().filter(|s| !s.is_empty()) {
        let mut out = Vec::new();
        write_greeting(&mut out, version, "abc-DEF_0.9");
        let Ok(Status::Complete(g, n)) = parse_greeting(&out) else {
            panic!("{out:?}");
        };
        assert_eq!(n, out.len());
        assert_eq!(g.stream_id, "abc-DEF_0.9");
        let sanitized: String = version
            .chars()
            .map(|c| {
                if c.is_ascii_control() && c != '\t' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        assert_eq!(g.version, sanitized);
    }
}

#[test]
fn reply_round_trips() {
    let texts = [
        "OK Ready to accept data",
        "",
        "Bad request: \"x\" \\ ü",
        "DONE 12345",
        "a\tb",
    ];
    for text in texts {
        for offset in [None, Some(0), Some(1234), Some(u64::MAX)] {
            for code in [100, 200, 250, 421, 599] {
                for compression in [None, Some("zstd")] {
                    let mut out = Vec::new();
                    let want = Reply {
                        code,
                        text,
                        offset,
                        compression,
                    };
                    if compression.is_none() {
                        write_reply(&mut out, code, text, offset);
                    } else {
                        write_reply_line(&mut out, &want);
                    }
                    assert_eq!(parse_reply(&out), Ok(Status::Complete(want, out.len())));
                    check_invariants(&out);
                }
            }
        }
    }
    // Free text can never inject a second line.
    let mut out = Vec::new();
    write_reply(&mut out, 400, " evil\n200 OK\r\n", None);
    assert_eq!(out, b"400 evil 200 OK\n");
}

#[test]
fn ack_round_trips() {
    for n in [0, 1, 9, 10, 1234, u64::MAX] {
        let mut out = Vec::new();
        write_ack(&mut out, n);
        assert_eq!(
            parse_server_line(&out),
            Ok(Status::Complete(ServerLine::Ack(n), out.len()))
        );
    }
}

#[test]
fn done_round_trips() {
    for n in [0, 1, 9, 10, 1234, u64::MAX] {
        let mut out = Vec::new();
        write_done(&mut out, n);
        assert_eq!(out, format!("250 DONE {n}\n").as_bytes());
        let want = Ok(Status::Complete(ServerLine::Done(n), out.len()));
        assert_eq!(parse_server_line(&out), want);
        check_invariants(&out);
    }
}

#[test]
fn finish_request_round_trips() {
    let mut out = Vec::new();
    write_reply(&mut out, FINISH_REQUEST, "Server shutting down", None);
    let want = ServerLine::FinishRequest(reply(421, "Server shutting down"));
    assert_eq!(
        parse_server_line(&out),
        Ok(Status::Complete(want, out.len()))
    );
    check_invariants(&out);
}

#[test]
fn errors_map_to_reply_lines() {
    assert_eq!(UnterminatedQuote.reply_code(), 400);
    assert_eq!(
        UnterminatedQuote.to_string(),
        "Bad request: unterminated quote"
    );
    assert_eq!(LineTooLong.reply_code(), 413);
    let mut out = Vec::new();
    let e = DuplicateKey;
    write_reply(&mut out, e.reply_code(), e.reason(), None);
    let Ok(Status::Complete(r, _)) = parse_reply(&out) else {
        panic!("{out:?}");
    };
    assert_eq!((r.code, r.text), (400, "Bad request: duplicate key"));
}

#[test]
fn garbage_never_panics() {
    // A cheap deterministic stand-in for the fuzzer: xorshift bytes drawn
    // from an alphabet rich in delimiters.
    let alphabet = b"INIT STREAM ACK 0123456789:\"\\xtn\r\n\t\0\x01\xc3\xbc";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let mut data = Vec::new();
        for _ in 0..(state % 80) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.push(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        check_invariants(&data);
    }
}
