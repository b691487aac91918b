use super::*;

use std::net::TcpStream as StdStream;
use std::thread;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry as Metrics;

use crate::metrics::{ClientMetrics, ServerMetrics};
use crate::reactor::{Slots, Timers};

fn parse(s: &[u8]) -> Result<Status<RequestLine<'_>>, RequestError> {
    parse_request_line(s)
}

fn line<'a>(method: &'a str, target: &'a str, version: Version) -> RequestLine<'a> {
    RequestLine {
        method,
        target,
        version,
    }
}

#[test]
fn request_line_table() {
    use RequestError::*;
    use Version::*;
    let ok = |input: &'static [u8], want: RequestLine<'static>| {
        assert_eq!(
            parse(input),
            Ok(Status::Complete(
                want,
                memchr::memchr(b'\n', input).unwrap() + 1
            )),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    };
    ok(
        b"GET /metrics HTTP/1.1\r\n",
        line("GET", "/metrics", Http11),
    );
    ok(b"GET /health HTTP/1.0\n", line("GET", "/health", Http10));
    ok(
        b"HEAD /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        line("HEAD", "/metrics?x=1", Http11),
    );
    ok(b"POST * HTTP/1.1\r\n", line("POST", "*", Http11));
    let bad: &[(&[u8], RequestError)] = &[
        (b"GET /metrics\r\n", Malformed),
        (b"GET  /metrics HTTP/1.1\r\n", Malformed),
        (b"GET /metrics HTTP/1.1 x\r\n", Malformed),
        (b" GET /metrics HTTP/1.1\r\n", Malformed),
        (b"\r\n", Malformed),
        (b"GE(T /metrics HTTP/1.1\r\n", Malformed),
        (b"GET /metrics FTP/1.1\r\n", Malformed),
        (b"GET /metrics http/1.1\r\n", Malformed),
        (b"GET /m\tx HTTP/1.1\r\n", Malformed),
        (b"GET /m\x00 HTTP/1.1\r\n", Malformed),
        (b"GET /metrics HTTP/2.0\r\n", UnsupportedVersion),
        (b"GET /metrics HTTP/0.9\r\n", UnsupportedVersion),
        (b"GET /\xff HTTP/1.1\r\n", NotUtf8),
        (b"GET /\xc3 HTTP/1.1\r\n", NotUtf8),
        (b"GET /\xc3\xa4 HTTP/1.1\r\n", Malformed),
        // A TLS ClientHello fails at once, before any line end.
        (b"\x16\x03\x01\x02\x00\x01", Malformed),
    ];
    for (input, want) in bad {
        assert_eq!(
            parse(input),
            Err(*want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn every_prefix_of_a_valid_request_line_is_partial() {
    for valid in [
        &b"GET /metrics HTTP/1.1\r\n"[..],
        b"HEAD /health?verbose HTTP/1.0\n",
    ] {
        for n in 0..valid.len() {
            assert_eq!(parse(&valid[..n]), Ok(Status::Partial), "prefix {n}");
        }
        assert!(matches!(parse(valid), Ok(Status::Complete(_, n)) if n == valid.len()));
    }
}

#[test]
fn oversized_request_line_is_too_large() {
    let mut long = b"GET /".to_vec();
    long.resize(MAX_REQUEST - 1, b'a');
    assert_eq!(parse(&long), Ok(Status::Partial));
    long.push(b'a');
    assert_eq!(parse(&long), Err(RequestError::TooLarge));
    long.extend_from_slice(b" HTTP/1.1\r\n");
    assert_eq!(parse(&long), Err(RequestError::TooLarge));
    assert_eq!(RequestError::TooLarge.status().0, 431);
}

#[test]
fn head_ends_at_the_first_empty_line() {
    assert_eq!(head_len(b"GET / HTTP/1.1\r\n"), None);
    assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
    assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
    assert_eq!(head_len(b"GET / HTTP/1.0\n\n"), Some(16));
    assert_eq!(head_len(b""), None);
}

#[test]
fn request_path_drops_the_query() {
    assert_eq!(
        line("GET", "/metrics?a=b", Version::Http11).path(),
        "/metrics"
    );
    assert_eq!(line("GET", "/health", Version::Http11).path(), "/health");
}

#[test]
fn slot_keys_and_fixed_tokens_never_fall_in_the_metrics_range() {
    for t in 0..crate::reactor::slots::RESERVED {
        assert!(!MetricsServer::owns(Token(t)));
    }
    let mut slots = Slots::default();
    for i in 0..2000 {
        let k = slots.insert(i);
        assert!(!MetricsServer::owns(k.token()), "{k:?}");
        if i % 3 != 0 {
            slots.remove(k);
        }
    }
    assert!(MetricsServer::owns(LISTENER) && MetricsServer::owns(TIMER));
    assert!(!MetricsServer::owns(Token(TOKENS.end)));
}

/// A daemon loop in miniature: one poll, one timer heap, the endpoint.
struct Harness {
    poll: mio::Poll,
    events: mio::Events,
    timers: Timers<Token>,
    server: MetricsServer,
    metrics: Metrics,
    requests: Counter,
}

impl Harness {
    fn new(limits: Limits) -> Harness {
        let poll = mio::Poll::new().unwrap();
        let addr = "127.0.0.1:0".parse().unwrap();
        let server = MetricsServer::bind_with(addr, poll.registry(), limits).unwrap();
        let mut metrics = Metrics::default();
        let requests = Counter::default();
        metrics.register(
            "loghamster_test_requests",
            "Test requests",
            requests.clone(),
        );
        requests.inc_by(7);
        Harness {
            poll,
            events: mio::Events::with_capacity(64),
            timers: Timers::default(),
            server,
            metrics,
            requests,
        }
    }

    /// One turn of the loop at `now` (events use it; the poll waits at
    /// most 20 ms of real time).
    fn turn(&mut self, now: Instant) {
        let timeout = Duration::from_millis(20);
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        let registry = self.poll.registry();
        for ev in self.events.iter() {
            assert!(MetricsServer::owns(ev.token()), "{:?}", ev.token());
            self.server.on_event(
                registry,
                &mut self.timers,
                ev.token(),
                now,
                &mut self.metrics,
            );
        }
        while let Some(t) = self.timers.pop_expired(now) {
            assert_eq!(t, TIMER);
            self.server.tick(registry, &mut self.timers, now);
        }
    }

    /// Turns the loop until `done` or 10 s of real time.
    fn run_until(&mut self, mut done: impl FnMut(&Harness) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < Duration::from_secs(10), "loop timed out");
            self.turn(Instant::now());
        }
    }
}

/// Sends `raw` on a fresh connection and reads the whole answer.
fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = StdStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn serves_metrics_health_and_errors_over_real_http() {
    let mut h = Harness::new(Limits::default());
    let addr = h.server.local_addr();
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.resize(MAX_REQUEST + 500, b'x');
    let requests: Vec<Vec<u8>> = vec![
        b"GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n".to_vec(),
        b"GET /health HTTP/1.0\r\n\r\n".to_vec(),
        b"HEAD /health HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /nope HTTP/1.1\r\n\r\n".to_vec(),
        b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
        b"GET /metrics HTTP/2.0\r\n\r\n".to_vec(),
        b"GET /\xff HTTP/1.1\r\n\r\n".to_vec(),
        huge,
    ];
    let client = thread::spawn(move || {
        requests
            .iter()
            .map(|r| exchange(addr, r))
            .collect::<Vec<_>>()
    });
    h.run_until(|_| client.is_finished());
    let answers = client.join().unwrap();

    let metrics = &answers[0];
    assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
    assert!(metrics.contains(&format!(
        "\r\nContent-Type: {}\r\n",
        super::super::CONTENT_TYPE
    )));
    assert!(metrics.contains("\r\nConnection: close\r\n"));
    assert!(
        metrics.contains("\nloghamster_test_requests_total 7\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\n# TYPE loghamster_test_requests_total counter\n"));
    let body_len = metrics.split_once("\r\n\r\n").unwrap().1.len();
    assert!(metrics.contains(&format!("\r\nContent-Length: {body_len}\r\n")));

    assert!(answers[1].starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(answers[1].ends_with("\r\n\r\nok\n"), "{}", answers[1]);
    assert!(answers[2].starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(answers[2].contains("Content-Length: 3\r\n"));
    assert!(answers[2].ends_with("\r\n\r\n"), "HEAD has no body");
    assert!(answers[3].starts_with("HTTP/1.1 404 Not Found\r\n"));
    assert!(answers[4].starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
    assert!(answers[4].contains("\r\nAllow: GET, HEAD\r\n"));
    assert!(answers[5].starts_with("HTTP/1.1 505 "));
    assert!(answers[6].starts_with("HTTP/1.1 400 Bad Request\r\n"));
    assert!(answers[7].starts_with("HTTP/1.1 431 "), "{}", answers[7]);

    h.requests.inc();
    h.run_until(|h| h.server.connections() == 0);
}

#[test]
fn idle_connection_is_closed_at_its_deadline() {
    let mut h = Harness::new(Limits::default());
    let mut idle = StdStream::connect(h.server.local_addr()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    h.run_until(|h| h.server.connections() == 1);
    let now = Instant::now();
    // The endpoint armed its timer; nothing happens before the deadline.
    assert_eq!(h.timers.len(), 1);
    h.turn(now + Duration::from_secs(4));
    assert_eq!(h.server.connections(), 1);
    h.turn(now + Limits::default().timeout + Duration::from_millis(1));
    assert_eq!(h.server.connections(), 0);
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "closed without an answer");
}

#[test]
fn connections_over_the_limit_are_refused() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    let addr = h.server.local_addr();
    let _first = StdStream::connect(addr).unwrap();
    h.run_until(|h| h.server.connections() == 1);
    let mut second = StdStream::connect(addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = thread::spawn(move || {
        let mut out = String::new();
        let _ = second.read_to_string(&mut out);
        out
    });
    h.run_until(|_| reader.is_finished());
    assert!(reader.join().unwrap().starts_with("HTTP/1.1 503 "));
    assert_eq!(h.server.connections(), 1);
}

#[test]
fn stale_token_does_not_reach_the_slots_next_connection() {
    let mut h = Harness::new(Limits::default());
    let addr = h.server.local_addr();
    let first = StdStream::connect(addr).unwrap();
    h.run_until(|h| h.server.connections() == 1);
    let old = h.server.conns.keys()[0].token();
    drop(first);
    h.run_until(|h| h.server.connections() == 0);
    let _second = StdStream::connect(addr).unwrap();
    h.run_until(|h| h.server.connections() == 1);
    let new = h.server.conns.keys()[0].token();
    assert_ne!(old, new);
    assert_eq!(low_word(old), low_word(new), "the same slot");
    assert!(MetricsServer::owns(old) && MetricsServer::owns(new));
    assert_eq!(h.server.slot_of(old), None);
    assert_eq!(h.server.slot_of(new), Key::from_token(new));
}

/// Runs `promtool check metrics` on `text`; `None` when promtool is absent.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    use std::process::{Command, Stdio};
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), said))
}

#[test]
fn promtool_accepts_both_daemons_expositions() {
    let server = ServerMetrics::with_outputs([Some("nginx"), None]);
    server.connections_accepted.inc();
    server.observe_fsync(Duration::from_millis(3));
    let t0 = Instant::now();
    let mut client = ClientMetrics::with_streams(
        [crate::metrics::client::StreamLabels {
            stream: "/var/log/app/*.log".into(),
        }],
        t0,
    );
    client.rate_limited(Duration::from_millis(250));
    let texts = [
        ("server", server.encode()),
        ("client", {
            let mut s = String::new();
            Scrape::scrape(&mut client, t0 + Duration::from_secs(1), &mut s);
            s
        }),
    ];
    for (who, text) in texts {
        let Some((ok, said)) = promtool_check(&text) else {
            // CI installs promtool (.ci/run): there, its absence fails.
            assert!(
                std::env::var_os("LOGHAMSTER_REQUIRE_PROMTOOL").is_none(),
                "promtool is required (LOGHAMSTER_REQUIRE_PROMTOOL) but not in PATH"
            );
            // Past the harness's output capture (which also takes
            // `io::stderr()`), so the skip shows in a plain `cargo test`.
            let msg = "SKIPPED promtool_accepts_both_daemons_expositions: promtool not found \
                       in PATH (Debian: apt-get install -y prometheus)";
            use std::os::fd::AsFd;
            match io::stderr().as_fd().try_clone_to_owned() {
                Ok(fd) => {
                    let _ = writeln!(std::fs::File::from(fd), "{msg}");
                }
                Err(_) => eprintln!("{msg}"),
            }
            return;
        };
        assert!(
            ok,
            "promtool rejected the {who} exposition:\n{said}\n{text}"
        );
        assert!(
            said.trim().is_empty(),
            "promtool lint for {who}:\n{said}\n{text}"
        );
    }
}
