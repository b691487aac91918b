//! Deterministic, realistic log text shared by the benches.
//!
//! Lines are 80–300 bytes including the `\n` (a syslog-ish header:
//! timestamp, host, program, level, then words), drawn from a fixed
//! xorshift seed so every run and every machine measures the same bytes.

use std::io::Write;

/// `len` bytes of log lines whose last newline is `tail` bytes before the
/// end: a read into a fixed-size buffer that stopped `tail` bytes into a
/// line (`tail < len`). Fixing `tail` keeps a backwards scan's work the
/// same at every buffer size.
pub fn log_lines(len: usize, tail: usize) -> Vec<u8> {
    const LEVELS: [&str; 4] = ["INFO", "WARN", "DEBUG", "ERROR"];
    const WORDS: [&str; 16] = [
        "GET",
        "/api/v1/items?page=3",
        "status=200",
        "user=4711",
        "latency_ms=12",
        "upstream",
        "connection",
        "reset",
        "by",
        "peer",
        "request_id=9f3c2a7e41b0",
        "cache",
        "miss",
        "bytes=5120",
        "ok",
        "retrying",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(len + 300);
    while out.len() < len {
        let target = 80 + (next() % 221) as usize; // 80..=300, with the '\n'
        let start = out.len();
        let r = next();
        let _ = write!(
            out,
            "2024-05-17T09:{:02}:{:02}.{:03}Z web{} app[{}]: {} ",
            r % 60,
            (r >> 8) % 60,
            (r >> 16) % 1000,
            (r >> 26) % 16,
            (r >> 30) % 65536,
            LEVELS[((r >> 48) % 4) as usize],
        );
        while out.len() - start < target {
            out.extend_from_slice(WORDS[(next() % 16) as usize].as_bytes());
            out.push(b' ');
        }
        out.truncate(start + target - 1);
        out.push(b'\n');
    }
    out.truncate(len);
    let cut = len - tail - 1;
    out[cut] = b'\n';
    for b in &mut out[cut + 1..] {
        if *b == b'\n' {
            *b = b' ';
        }
    }
    out
}
