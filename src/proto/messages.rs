//! The handshake as the loghamster client speaks it: the `INIT` line with
//! the reserved keys of the extensions ([`InitRequest`]), and the server's
//! answer to it as a typed value ([`InitAnswer`]), so no caller compares
//! reply codes or reads reply text. Built on the generic parsers and
//! emitters of `handshake.rs`; the same rules hold (pure, allocation-free,
//! bounded; see the [module docs](super)).

use super::handshake::{push_init_target, push_meta, push_u64};
use super::token::TokenValue;
use super::{parse_reply, ParseError, Reply, Status, READY, UNSUPPORTED_CODEC};

/// Everything a client puts in its `INIT` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitRequest<'a> {
    /// The target's host (our host name). Must be non-empty.
    pub host: &'a str,
    /// The target's path (the file's path). Must be non-empty.
    pub path: &'a str,
    /// `svc:` the service the stream belongs to.
    pub svc: Option<&'a str>,
    /// Configured meta pairs, in order, after `svc:`. None of them may
    /// use a reserved key (`id`, `offset`, `ack`, `compression`, `svc`,
    /// `host`, `path`); config refuses those.
    pub meta: &'a [(String, String)],
    /// `id:` the file instance the stream belongs to (written even when
    /// empty, as `id:""`).
    pub id: &'a str,
    /// `offset:` where our first byte sits in the stream.
    pub offset: u64,
    /// `part_offset:` everything of the stream before it is acknowledged,
    /// by this server or another: a server that holds less starts the
    /// stream here (a client with several servers sends it).
    pub part_offset: Option<u64>,
    /// `ack:1`: ask for `ACK` lines and `250 DONE`.
    pub ack: bool,
    /// `compression:` the codec we would like to send (its wire name).
    pub compression: Option<&'a str>,
    /// `token:` a named token `<name>:<secret>` (see [`super::token`]).
    pub token: Option<TokenValue<'a>>,
}

/// Writes `r` as an `INIT STREAM` line: target, `svc:`, the configured
/// meta, then `id:`, `offset:`, `part_offset:`, `ack:1`, `compression:` and `token:` (the same
/// quoting rules as [`write_init`](super::write_init)).
pub fn write_init_request(out: &mut Vec<u8>, r: &InitRequest<'_>) {
    push_init_target(out, r.host, r.path);
    if let Some(svc) = r.svc {
        push_meta(out, "svc", svc);
    }
    for (key, value) in r.meta {
        push_meta(out, key, value);
    }
    push_meta(out, "id", r.id);
    out.extend_from_slice(b" offset:");
    push_u64(out, r.offset);
    if let Some(p) = r.part_offset {
        out.extend_from_slice(b" part_offset:");
        push_u64(out, p);
    }
    if r.ack {
        out.extend_from_slice(b" ack:1");
    }
    if let Some(codec) = r.compression {
        push_meta(out, "compression", codec);
    }
    if let Some(token) = r.token {
        push_meta(out, super::token::TOKEN_KEY, token.0);
    }
    out.push(b'\n');
}

/// The server's answer to `INIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitAnswer<'a> {
    /// `200`: stream from `offset` (the server's resume point, when it
    /// sent one). `compression` is the codec the server confirmed, if any.
    Ready {
        offset: Option<u64>,
        compression: Option<&'a str>,
    },
    /// `415`: the server does not accept the codec the INIT asked for.
    UnsupportedCodec(Reply<'a>),
    /// Any other code: the server refused the stream and closes.
    Refused(Reply<'a>),
}

impl<'a> InitAnswer<'a> {
    /// Classifies a status line that answers INIT.
    pub fn from_reply(r: Reply<'a>) -> InitAnswer<'a> {
        match r.code {
            READY => InitAnswer::Ready {
                offset: r.offset,
                compression: r.compression,
            },
            UNSUPPORTED_CODEC => InitAnswer::UnsupportedCodec(r),
            _ => InitAnswer::Refused(r),
        }
    }
}

/// Parses the status line that answers INIT (see [`parse_reply`]).
pub fn parse_init_answer(buf: &[u8]) -> Result<Status<InitAnswer<'_>>, ParseError> {
    Ok(match parse_reply(buf)? {
        Status::Complete(r, n) => Status::Complete(InitAnswer::from_reply(r), n),
        Status::Partial => Status::Partial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{parse_init, write_reply, write_reply_line};

    fn request<'a>(meta: &'a [(String, String)]) -> InitRequest<'a> {
        InitRequest {
            host: "web1",
            path: "/var/log/my app.log",
            svc: Some("billing"),
            meta,
            id: "fe00-98c154-6745a1f0.1a2b3c",
            offset: 1_048_576,
            part_offset: Some(1_000_000),
            ack: true,
            compression: Some("zstd"),
            token: None,
        }
    }

    /// The server's parser reads back every word the client wrote.
    #[test]
    fn init_request_round_trips_through_the_server_parser() {
        let meta = vec![
            ("env".to_string(), "prod eu".to_string()),
            ("team".to_string(), "a\"b\\c".to_string()),
        ];
        let cases = [
            request(&meta),
            InitRequest {
                svc: None,
                meta: &[],
                id: "",
                offset: 0,
                part_offset: None,
                ack: false,
                compression: None,
                ..request(&meta)
            },
            InitRequest {
                host: "h:st",
                offset: u64::MAX,
                token: Some(TokenValue("web:0123456789abcdef")),
                ..request(&[])
            },
        ];
        for r in cases {
            let mut out = Vec::new();
            write_init_request(&mut out, &r);
            let Ok(Status::Complete(init, n)) = parse_init(&out) else {
                panic!("{out:?} does not parse");
            };
            assert_eq!(n, out.len());
            let get = |k| init.get(k).map(|v| v.decode().into_owned());
            assert_eq!(init.host.decode(), r.host);
            assert_eq!(init.path.decode(), r.path);
            assert_eq!(get("svc").as_deref(), r.svc);
            for (k, v) in r.meta {
                assert_eq!(get(k).as_ref(), Some(v));
            }
            assert_eq!(get("id").as_deref(), Some(r.id));
            let offset = init.get("offset").map(|v| v.as_u64());
            assert_eq!(offset, Some(Ok(r.offset)));
            let part = init.get("part_offset").map(|v| v.as_u64());
            assert_eq!(part, r.part_offset.map(Ok));
            assert_eq!(get("ack").as_deref(), r.ack.then_some("1"));
            assert_eq!(get("compression").as_deref(), r.compression);
            assert_eq!(get("token").as_deref(), r.token.map(|t| t.0));
            let pairs = usize::from(r.svc.is_some()) + r.meta.len() + 2;
            let extra = usize::from(r.ack)
                + usize::from(r.compression.is_some())
                + usize::from(r.part_offset.is_some())
                + usize::from(r.token.is_some());
            assert_eq!(init.meta().count(), pairs + extra);
        }
    }

    #[test]
    fn init_request_writes_the_classic_line() {
        let mut out = Vec::new();
        write_init_request(
            &mut out,
            &InitRequest {
                path: "/a.log",
                part_offset: None,
                ..request(&[])
            },
        );
        let want = "INIT STREAM web1:/a.log svc:billing id:fe00-98c154-6745a1f0.1a2b3c \
                    offset:1048576 ack:1 compression:zstd\n";
        assert_eq!(String::from_utf8_lossy(&out), want);
    }

    #[test]
    fn init_answer_table() {
        type Want<'a> = Result<Status<InitAnswer<'a>>, ParseError>;
        let r = |code, text| Reply {
            code,
            text,
            offset: None,
            compression: None,
        };
        let unsupported = "Unsupported compression: zstd (this server accepts gzip)";
        let cases: &[(&[u8], Want<'_>)] = &[
            (
                b"200 OK Ready to accept data\n",
                Ok(Status::Complete(
                    InitAnswer::Ready {
                        offset: None,
                        compression: None,
                    },
                    28,
                )),
            ),
            (
                b"200 OK offset:7 compression:zstd\r\n",
                Ok(Status::Complete(
                    InitAnswer::Ready {
                        offset: Some(7),
                        compression: Some("zstd"),
                    },
                    34,
                )),
            ),
            (
                b"415 Unsupported compression: zstd (this server accepts gzip)\n",
                Ok(Status::Complete(
                    InitAnswer::UnsupportedCodec(r(415, unsupported)),
                    61,
                )),
            ),
            (
                b"404 Not found\n",
                Ok(Status::Complete(
                    InitAnswer::Refused(r(404, "Not found")),
                    14,
                )),
            ),
            (
                b"201 Created\n",
                Ok(Status::Complete(InitAnswer::Refused(r(201, "Created")), 12)),
            ),
            (b"200 OK", Ok(Status::Partial)),
            (b"OK 200\n", Err(ParseError::BadCode)),
            (b"200 OK offset:x\n", Err(ParseError::BadNumber)),
        ];
        for (line, want) in cases {
            assert_eq!(&parse_init_answer(line), want, "{line:?}");
        }
    }

    #[test]
    fn init_answers_round_trip() {
        let ready = Reply {
            code: READY,
            text: "OK Ready to accept data",
            offset: Some(12),
            compression: Some("lz4"),
        };
        let mut out = Vec::new();
        write_reply_line(&mut out, &ready);
        let want = InitAnswer::Ready {
            offset: Some(12),
            compression: Some("lz4"),
        };
        assert_eq!(
            parse_init_answer(&out),
            Ok(Status::Complete(want, out.len()))
        );
        for (code, text) in [
            (415, "Unsupported compression: x"),
            (503, "Output unavailable"),
        ] {
            let mut out = Vec::new();
            write_reply(&mut out, code, text, None);
            let Ok(Status::Complete(a, n)) = parse_init_answer(&out) else {
                panic!("{out:?}");
            };
            assert_eq!(n, out.len());
            let reply = match a {
                InitAnswer::UnsupportedCodec(r) if code == 415 => r,
                InitAnswer::Refused(r) if code != 415 => r,
                other => panic!("{code}: {other:?}"),
            };
            assert_eq!((reply.code, reply.text), (code, text));
        }
    }

    #[test]
    fn every_prefix_of_an_answer_is_partial() {
        let line = b"415 Unsupported compression: zstd offset:3\n";
        for cut in 0..line.len() {
            assert_eq!(parse_init_answer(&line[..cut]), Ok(Status::Partial));
        }
    }
}
