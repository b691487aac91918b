//! Unit tests of the client's connection machine with scripted server
//! bytes (kept out of `client.rs` to hold both files short).

use super::*;
use crate::proto::{write_ack, write_done, write_greeting, write_reply, write_reply_line, Reply};

const INIT: &[u8] = b"INIT STREAM h:/p id:x offset:0 ack:1\n";

fn greeting() -> Vec<u8> {
    let mut out = Vec::new();
    write_greeting(&mut out, "0.1.0", "6b06ed33-1");
    out
}

fn ready(offset: Option<u64>, compression: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let r = Reply {
        code: 200,
        text: "OK Ready to accept data",
        offset,
        compression,
    };
    write_reply_line(&mut out, &r);
    out
}

fn reply(code: u16, text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_reply(&mut out, code, text, None);
    out
}

fn ack(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    write_ack(&mut out, n);
    out
}

fn done(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    write_done(&mut out, n);
    out
}

/// Takes every event, answering `Greeted` with INIT as the shell does.
fn drain(c: &mut ClientConn) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(e) = c.poll_event() {
        if e == Event::Greeted {
            c.send_init(|out| out.extend_from_slice(INIT));
        }
        events.push(e);
    }
    assert!(c.inbuf.len() < INPUT_LIMIT, "input buffer over its limit");
    events
}

fn feed(c: &mut ClientConn, bytes: &[u8]) -> Vec<Event> {
    c.received(bytes);
    drain(c)
}

fn connected(asked: Option<Codec>) -> ClientConn {
    let mut c = ClientConn::new(asked);
    assert_eq!(c.phase(), Phase::Connecting);
    c.connected();
    assert_eq!(c.phase(), Phase::Greeting);
    c
}

/// A connection in `Up`, INIT written.
fn up() -> ClientConn {
    let mut c = connected(None);
    assert_eq!(feed(&mut c, &greeting()), [Event::Greeted]);
    c.consumed(INIT.len());
    let ready = Event::Ready {
        offset: None,
        compression: Negotiated::Plain,
    };
    assert_eq!(feed(&mut c, &ready_line()), [ready]);
    assert_eq!(c.phase(), Phase::Up);
    c
}

fn ready_line() -> Vec<u8> {
    ready(None, None)
}

fn closed(why: Close) -> Vec<Event> {
    vec![Event::Closed(why)]
}

#[test]
fn handshake_walks_every_phase() {
    let mut c = ClientConn::new(None);
    assert!(c.pending_output().is_empty());
    c.connected();
    assert_eq!(c.phase(), Phase::Greeting);
    let g = greeting();
    assert_eq!(feed(&mut c, &g[..10]), []);
    assert_eq!(c.phase(), Phase::Greeting);
    assert_eq!(feed(&mut c, &g[10..]), [Event::Greeted]);
    assert_eq!(c.phase(), Phase::Replying);
    assert_eq!(c.pending_output(), INIT);
    c.send_init(|out| out.extend_from_slice(b"twice\n"));
    assert_eq!(c.pending_output(), INIT, "INIT goes out once");
    c.consumed(5);
    assert_eq!(c.pending_output(), &INIT[5..]);
    c.consumed(usize::MAX);
    assert!(c.pending_output().is_empty());
    let want = Event::Ready {
        offset: Some(1234),
        compression: Negotiated::Plain,
    };
    assert_eq!(feed(&mut c, &ready(Some(1234), None)), [want]);
    assert_eq!(c.phase(), Phase::Up);
}

#[test]
fn bytes_while_connecting_mean_connected() {
    let mut c = ClientConn::new(None);
    assert_eq!(feed(&mut c, &greeting()), [Event::Greeted]);
    assert_eq!(c.phase(), Phase::Replying);
}

#[test]
fn compression_is_confirmed_ignored_or_plain() {
    use Negotiated::*;
    let cases = [
        (Some(Codec::Zstd), Some("zstd"), Confirmed(Codec::Zstd)),
        (Some(Codec::Zstd), None, Ignored(Codec::Zstd)),
        (Some(Codec::Zstd), Some("gzip"), Ignored(Codec::Zstd)),
        (None, Some("gzip"), Plain),
        (None, None, Plain),
    ];
    for (asked, answer, want) in cases {
        let mut c = connected(asked);
        assert_eq!(c.asks_for(), asked);
        feed(&mut c, &greeting());
        let got = feed(&mut c, &ready(Some(7), answer));
        let ready = Event::Ready {
            offset: Some(7),
            compression: want,
        };
        assert_eq!(got, [ready], "{asked:?} / {answer:?}");
    }
}

#[test]
fn refusals_close_with_their_line() {
    let text = "Unsupported compression: zstd (this server accepts gzip)";
    let codec = |t: &str| Close::CodecRefused {
        codec: Codec::Zstd,
        text: t.into(),
    };
    let refused = |code, t: &str| Close::Refused {
        code,
        text: t.into(),
    };
    let cases = [
        (Some(Codec::Zstd), reply(415, text), codec(text)),
        (None, reply(415, text), refused(415, text)),
        (None, reply(404, "Not found"), refused(404, "Not found")),
        (
            Some(Codec::Gzip),
            reply(503, "Output unavailable"),
            refused(503, "Output unavailable"),
        ),
        (None, reply(201, "Created"), refused(201, "Created")),
        (None, b"OK\n".to_vec(), Close::BadLine(ParseError::BadCode)),
    ];
    for (asked, line, want) in cases {
        let mut c = connected(asked);
        feed(&mut c, &greeting());
        assert_eq!(feed(&mut c, &line), closed(want.clone()), "{line:?}");
        assert_eq!(c.phase(), Phase::Closed);
        assert!(!want.is_clean());
    }
}

#[test]
fn bad_greetings_close() {
    let long_id = format!(
        "### Welcome to LogHamster server v1\nSTREAMID {}\n",
        "x".repeat(65)
    );
    let cases: [(&[u8], ParseError); 4] = [
        (b"HTTP/1.1 400 Bad Request\r\n", ParseError::BadGreeting),
        (
            b"### Welcome to LogHamster server v1\nHELLO\n",
            ParseError::BadGreeting,
        ),
        (long_id.as_bytes(), ParseError::BadStreamId),
        (
            b"### Welcome to LogHamster server v1\0\n",
            ParseError::NulByte,
        ),
    ];
    for (bytes, e) in cases {
        let mut c = connected(None);
        assert_eq!(
            feed(&mut c, bytes),
            closed(Close::BadGreeting(e)),
            "{bytes:?}"
        );
        assert!(
            c.pending_output().is_empty(),
            "no INIT after a bad greeting"
        );
    }
}

#[test]
fn streaming_then_a_clean_finish() {
    let mut c = up();
    assert_eq!(feed(&mut c, &ack(10)), [Event::Ack(10)]);
    assert!(!c.wants_half_close());
    c.finish();
    assert_eq!(c.phase(), Phase::Finishing);
    assert!(c.wants_half_close());
    c.half_closed();
    assert!(!c.wants_half_close());
    c.finish();
    assert_eq!(c.phase(), Phase::Finishing, "finish twice is finish once");
    // The last ACK comes after our half-close.
    assert_eq!(feed(&mut c, &ack(25)), [Event::Ack(25)]);
    assert_eq!(feed(&mut c, &done(25)), [Event::Done(25)]);
    assert_eq!(c.done(), Some(25));
    c.eof();
    assert_eq!(drain(&mut c), closed(Close::Finished));
    assert!(Close::Finished.is_clean());
    assert_eq!(Close::Finished.to_string(), "finished");
}

#[test]
fn eof_without_done_is_not_clean() {
    let mut c = up();
    c.finish();
    c.half_closed();
    feed(&mut c, &ack(3));
    c.eof();
    assert_eq!(drain(&mut c), closed(Close::Unconfirmed));
    assert!(!Close::Unconfirmed.is_clean());
}

#[test]
fn eof_before_finishing_names_the_phase() {
    for (setup, phase) in [
        (0, Phase::Connecting),
        (1, Phase::Greeting),
        (2, Phase::Replying),
        (3, Phase::Up),
    ] {
        let mut c = match setup {
            0 => ClientConn::new(None),
            1 => connected(None),
            2 => {
                let mut c = connected(None);
                feed(&mut c, &greeting());
                c
            }
            _ => up(),
        };
        if phase != Phase::Connecting {
            // A partial line at the close changes nothing.
            c.received(b"ACK 1");
        }
        c.eof();
        assert_eq!(drain(&mut c), closed(Close::ServerClosed(phase)));
    }
}

#[test]
fn finish_request_is_reported_once() {
    let mut c = up();
    let mut bytes = reply(421, "Server shutting down");
    bytes.extend(ack(4));
    bytes.extend(reply(421, "Server shutting down"));
    assert_eq!(
        feed(&mut c, &bytes),
        [
            Event::FinishRequested("Server shutting down".into()),
            Event::Ack(4)
        ]
    );
    c.finish();
    assert_eq!(feed(&mut c, &reply(421, "again")), []);
    assert_eq!(c.phase(), Phase::Finishing);
}

#[test]
fn other_lines_while_streaming_close() {
    let cases = [
        (
            reply(503, "Cannot commit server state"),
            Close::Ended {
                code: 503,
                text: "Cannot commit server state".into(),
            },
        ),
        (
            reply(250, "OK"),
            Close::Ended {
                code: 250,
                text: "OK".into(),
            },
        ),
        (done(9), Close::EarlyDone(9)),
        (b"ACK x\n".to_vec(), Close::BadLine(ParseError::BadNumber)),
        (
            b"250 DONE 1 2\n".to_vec(),
            Close::BadLine(ParseError::TrailingGarbage),
        ),
        (b"hello\n".to_vec(), Close::BadLine(ParseError::BadCode)),
    ];
    for (line, want) in cases {
        let mut c = up();
        assert_eq!(feed(&mut c, &line), closed(want), "{line:?}");
    }
}

#[test]
fn overlong_input_closes_in_every_phase() {
    let long = vec![b'x'; MAX_LINE];
    for phase in [
        Phase::Greeting,
        Phase::Replying,
        Phase::Up,
        Phase::Finishing,
    ] {
        let mut c = connected(None);
        if phase != Phase::Greeting {
            feed(&mut c, &greeting());
        }
        if matches!(phase, Phase::Up | Phase::Finishing) {
            feed(&mut c, &ready_line());
        }
        if phase == Phase::Finishing {
            c.finish();
        }
        assert_eq!(c.phase(), phase);
        // Fed byte by byte: the limit holds at every step.
        let mut events = Vec::new();
        for b in long.chunks(1) {
            events.extend(feed(&mut c, b));
        }
        assert_eq!(events, closed(Close::Overlong), "{phase:?}");
    }
    // One huge read: closed as soon as a line passes the limit.
    let mut c = up();
    let mut flood = ack(1);
    flood.extend(vec![b'7'; 64 * MAX_LINE]);
    assert_eq!(
        feed(&mut c, &flood),
        [Event::Ack(1), Event::Closed(Close::Overlong)]
    );
}

#[test]
fn several_lines_in_one_read() {
    let mut c = connected(Some(Codec::Gzip));
    let mut bytes = greeting();
    bytes.extend(ready(Some(0), Some("gzip")));
    bytes.extend(ack(5));
    bytes.extend(reply(421, "Server shutting down"));
    bytes.extend(ack(8));
    let ready = Event::Ready {
        offset: Some(0),
        compression: Negotiated::Confirmed(Codec::Gzip),
    };
    let want = [
        Event::Greeted,
        ready,
        Event::Ack(5),
        Event::FinishRequested("Server shutting down".into()),
        Event::Ack(8),
    ];
    assert_eq!(feed(&mut c, &bytes), want);
}

#[test]
fn acks_not_taken_yet_merge() {
    let mut c = up();
    for n in (1..=10_000).chain([3]) {
        c.received(&ack(n));
    }
    assert!(c.events.len() <= 1);
    assert_eq!(drain(&mut c), [Event::Ack(10_000)]);
}

#[test]
fn bytes_after_done_are_discarded() {
    let mut c = up();
    c.finish();
    c.half_closed();
    let mut bytes = done(4);
    bytes.extend(b"anything at all\n\0\xff");
    bytes.extend(vec![b'x'; 3 * MAX_LINE]);
    assert_eq!(feed(&mut c, &bytes), [Event::Done(4)]);
    assert!(c.inbuf.is_empty());
    c.eof();
    assert_eq!(drain(&mut c), closed(Close::Finished));
}

#[test]
fn io_failures_and_giving_up_close() {
    type Input = fn(&mut ClientConn);
    let cases: [(Input, Close); 4] = [
        (
            |c| c.connect_failed(io::ErrorKind::ConnectionRefused),
            Close::ConnectFailed(io::ErrorKind::ConnectionRefused.into()),
        ),
        (
            |c| c.read_failed(io::ErrorKind::ConnectionReset),
            Close::ReadFailed(io::ErrorKind::ConnectionReset.into()),
        ),
        (
            |c| c.write_failed(io::ErrorKind::BrokenPipe),
            Close::WriteFailed(io::ErrorKind::BrokenPipe.into()),
        ),
        (|c| c.finish(), Close::Abandoned),
    ];
    for (input, want) in cases {
        let mut c = connected(None);
        input(&mut c);
        assert_eq!(drain(&mut c), closed(want));
    }
}

#[test]
fn closed_ignores_everything() {
    let mut c = up();
    c.write_failed(io::ErrorKind::BrokenPipe);
    assert_eq!(drain(&mut c).len(), 1);
    c.received(&ack(5));
    c.eof();
    c.finish();
    c.connected();
    c.read_failed(io::ErrorKind::Other);
    c.abort(Close::Abandoned);
    c.send_init(|out| out.push(b'x'));
    assert_eq!(c.phase(), Phase::Closed);
    assert_eq!(drain(&mut c), []);
    assert!(c.pending_output().is_empty() && !c.wants_half_close());
}

#[test]
fn half_close_waits_for_our_output() {
    let mut c = connected(None);
    feed(&mut c, &greeting());
    feed(&mut c, &ready_line()); // INIT still unwritten
    c.finish();
    assert!(!c.wants_half_close());
    c.consumed(INIT.len());
    assert!(c.wants_half_close());
}

/// The whole conversation, in two parts around our `finish()`.
fn script() -> (Vec<u8>, Vec<u8>) {
    let mut before = greeting();
    before.extend(ready(Some(100), Some("zstd")));
    before.extend(ack(110));
    before.extend(b"ACK\t120 \r\n");
    before.extend(reply(421, "Server shutting down"));
    let mut after = ack(130);
    after.extend(done(130));
    (before, after)
}

/// Runs the script fed in the given pieces; takes events after each.
fn run(before: &[&[u8]], after: &[&[u8]]) -> Vec<Event> {
    let mut c = connected(Some(Codec::Zstd));
    let mut events = Vec::new();
    for piece in before {
        events.extend(feed(&mut c, piece));
    }
    c.finish();
    for piece in after {
        events.extend(feed(&mut c, piece));
    }
    c.eof();
    events.extend(drain(&mut c));
    // ACKs merge when taken late: compare the merged sequence.
    events.dedup_by(|b, a| match (a, b) {
        (Event::Ack(x), Event::Ack(y)) => {
            *x = (*x).max(*y);
            true
        }
        _ => false,
    });
    events
}

#[test]
fn every_split_of_the_server_bytes_gives_the_same_events() {
    let (before, after) = script();
    let want = vec![
        Event::Greeted,
        Event::Ready {
            offset: Some(100),
            compression: Negotiated::Confirmed(Codec::Zstd),
        },
        Event::Ack(120),
        Event::FinishRequested("Server shutting down".into()),
        Event::Ack(130),
        Event::Done(130),
        Event::Closed(Close::Finished),
    ];
    assert_eq!(run(&[&before], &[&after]), want);
    for cut in 0..=before.len() {
        let (a, b) = before.split_at(cut);
        assert_eq!(run(&[a, b], &[&after]), want, "before, cut at {cut}");
    }
    for cut in 0..=after.len() {
        let (a, b) = after.split_at(cut);
        assert_eq!(run(&[&before], &[a, b]), want, "after, cut at {cut}");
    }
    let bytes: Vec<&[u8]> = before.chunks(1).collect();
    let tail: Vec<&[u8]> = after.chunks(1).collect();
    assert_eq!(run(&bytes, &tail), want, "byte by byte");
}

#[test]
fn every_close_reads_as_one_line() {
    let cases = [
        (Close::ServerClosed(Phase::Up), "server closed the connection"),
        (
            Close::ServerClosed(Phase::Greeting),
            "server closed the connection during the handshake",
        ),
        (
            Close::CodecRefused {
                codec: Codec::Zstd,
                text: "Unsupported compression: zstd (this server accepts gzip)".into(),
            },
            "server refused compression zstd: 415 Unsupported compression: zstd (this server accepts gzip)",
        ),
        (
            Close::Refused {
                code: 404,
                text: "Not found".into(),
            },
            "server refused the stream: 404 Not found",
        ),
        (
            Close::Turned {
                code: 503,
                text: "Too many connections from your address".into(),
            },
            "server refused the connection: 503 Too many connections from your address",
        ),
        (
            Close::BadGreeting(ParseError::BadStreamId),
            "bad greeting from server: bad stream id",
        ),
        (
            Close::ConnectFailed(io::ErrorKind::ConnectionRefused.into()),
            "connect failed: connection refused",
        ),
        (
            Close::ReadFailed((&io::Error::from_raw_os_error(104)).into()),
            "read failed: Connection reset by peer (os error 104)",
        ),
        (
            Close::EncoderFailed {
                codec: Codec::Zstd,
                error: io::ErrorKind::OutOfMemory.into(),
            },
            "cannot start the zstd encoder: out of memory",
        ),
    ];
    for (close, line) in cases {
        assert_eq!(close.to_string(), line);
        assert!(!close.is_clean());
    }
}

#[test]
fn a_status_line_instead_of_the_greeting_says_why() {
    for (line, code, text) in [
        (
            reply(503, "Too many connections from your address"),
            503,
            "Too many connections from your address",
        ),
        (
            reply(503, "Too many connections"),
            503,
            "Too many connections",
        ),
        (
            reply(421, "Server shutting down"),
            421,
            "Server shutting down",
        ),
    ] {
        let mut c = ClientConn::new(None);
        c.connected();
        let want = Close::Turned {
            code,
            text: text.into(),
        };
        // Only the connection limits wait for a slot (the client's
        // `turned_away`); a shutdown is not one.
        assert_eq!(want.at_connection_limit(), code == 503, "{want}");
        assert_eq!(feed(&mut c, &line), [Event::Closed(want)]);
    }
    // The same text refusing a stream (after INIT) is not the limit.
    let refused = Close::Refused {
        code: 503,
        text: "Too many connections".into(),
    };
    assert!(!refused.at_connection_limit());
    // Not a status line: still a bad greeting.
    let mut c = ClientConn::new(None);
    c.connected();
    let got = feed(&mut c, b"HELLO\nthere\n");
    assert!(
        matches!(got[..], [Event::Closed(Close::BadGreeting(_))]),
        "{got:?}"
    );
}
