//! `rate_limit`: a limited stream is held to its rate (delayed, never
//! dropped) while an unlimited one beside it runs at full speed; and the
//! server's `connection_rate_limit` holds each connection to its cap.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn fill(path: &Path, tag: &str, bytes: u64) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let (mut i, mut n) = (0, 0u64);
    while n < bytes {
        let chunk: String = (i..i + 1000).map(|k| line(tag, k)).collect();
        f.write_all(chunk.as_bytes()).unwrap();
        n += chunk.len() as u64;
        i += 1000;
    }
    n
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Watches `out` grow to `len` bytes and returns its rate once the burst
/// is spent: from the first sample past 512 KiB to the last byte.
fn rate_after_burst(out: &Path, len: u64) -> f64 {
    let mut start = None;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (now, got) = (Instant::now(), size(out));
        if start.is_none() && got >= 512 << 10 {
            start = Some((now, got));
        }
        if got == len {
            break;
        }
        assert!(now < deadline, "{} did not arrive", out.display());
        std::thread::sleep(Duration::from_millis(5));
    }
    let (t0, b0) = start.expect("sampled past 512 KiB");
    (len - b0) as f64 / t0.elapsed().as_secs_f64()
}

#[test]
fn a_limited_stream_keeps_its_rate_while_an_unlimited_one_runs_free() {
    const RATE: f64 = (1 << 20) as f64; // 1 MiB/s
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let slow = tmp.path().join("slow.log");
    let fast = tmp.path().join("fast.log");
    let slow_len = fill(&slow, "s", 4 << 20);
    let fast_len = fill(&fast, "f", 16 << 20);
    let server = Server::with_directory(&out);
    let cfg = client_config(
        tmp.path(),
        &server,
        &format!(
            "[[stream]]\npath = \"{}\"\nrate_limit = \"1MiB/s\"\nburst = \"256KiB\"\n\
             [[stream]]\npath = \"{}\"\n",
            slow.display(),
            fast.display()
        ),
    );
    let (slow_out, fast_out) = (routed(&out, "h", &slow), routed(&out, "h", &fast));
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    // The unlimited file is through while the limited one is at a fraction.
    wait_for("the unlimited file", || size(&fast_out) == fast_len);
    let slow_then = size(&slow_out);
    assert!(
        slow_then < slow_len / 2,
        "the unlimited stream waited for the limited one ({slow_then} of {slow_len})"
    );
    let rate = rate_after_burst(&slow_out, slow_len);
    eprintln!("limited stream: {:.3} MiB/s (limit 1 MiB/s)", rate / RATE);
    assert!(rate <= RATE * 1.03, "faster than its limit: {rate:.0} B/s");
    assert!(rate >= RATE * 0.9, "far below its limit: {rate:.0} B/s");
    assert!(std::fs::read(&slow).unwrap() == std::fs::read(&slow_out).unwrap());
    assert!(std::fs::read(&fast).unwrap() == std::fs::read(&fast_out).unwrap());
    assert!(client.stop().success());
}

#[test]
fn the_server_caps_each_connection_to_its_connection_rate_limit() {
    const RATE: f64 = (1 << 20) as f64; // 1 MiB/s per connection
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(
        tmp.path(),
        &out,
        "connection_rate_limit = \"1MiB/s\"\nconnection_burst = \"256KiB\"\n",
    );
    // A plain stream alone on its output: the spliced path is capped too.
    let plain = tmp.path().join("plain.log");
    let plain_len = fill(&plain, "p", 3 << 20);
    let cfg = client_config(
        tmp.path(),
        &server,
        &format!("[[stream]]\npath = \"{}\"\n", plain.display()),
    );
    let mut client = client(&["--config", cfg.to_str().unwrap()]);
    let plain_out = routed(&out, "h", &plain);
    let rate = rate_after_burst(&plain_out, plain_len);
    eprintln!("capped connection: {:.3} MiB/s (cap 1 MiB/s)", rate / RATE);
    assert!(rate <= RATE * 1.03, "faster than the cap: {rate:.0} B/s");
    assert!(rate >= RATE * 0.9, "far below the cap: {rate:.0} B/s");
    assert!(std::fs::read(&plain).unwrap() == std::fs::read(&plain_out).unwrap());
    assert!(client.stop().success());
}
