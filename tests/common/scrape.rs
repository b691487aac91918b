//! Reading a daemon's `/metrics` endpoint over plain HTTP: where it
//! serves (from its log line), one `GET`, scraping until a condition
//! holds, and one sample's value.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::{Proc, PATIENCE};

/// Where the client says it serves metrics (`serving metrics on
/// http://ADDR/metrics`).
pub fn metrics_addr(client: &Proc) -> SocketAddr {
    const SAYS: &str = "serving metrics on http://";
    client.wait_log(SAYS);
    let log = client.log();
    let at = log.find(SAYS).expect("logged") + SAYS.len();
    let rest = &log[at..];
    let end = rest.find("/metrics").expect("a URL");
    rest[..end].parse().expect("a socket address")
}

/// `GET path` over HTTP/1.1; returns the head (status line and headers)
/// and the body, after checking `Content-Length` against the body.
pub fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(PATIENCE)).expect("set a timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send the request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let length = format!("\r\nContent-Length: {}\r\n", body.len());
    assert!(head.contains(&length), "{head}");
    (head.to_string(), body.to_string())
}

/// The body of `/metrics` once `done` holds for it.
pub fn scrape_until(addr: SocketAddr, what: &str, mut done: impl FnMut(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (head, body) = get(addr, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        if done(&body) {
            return body;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}; last scrape:\n{body}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The value of the sample `series` (name and labels, exactly as
/// exposed), if the body has it.
pub fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
