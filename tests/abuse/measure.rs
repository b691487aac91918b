//! The figures of `docs/SECURITY.md`: each attack of issue 12 against a
//! server binary, with the server's memory (RSS), its descriptors and a
//! legitimate stream's delivery time (INIT to `ACK` of one line) measured
//! before and during the attack. A measurement, not a test: it is ignored
//! by `cargo test`, and `scripts/abuse` runs it, against the server built
//! from this tree or another (`LOGHAMSTER_ABUSE_SERVER=path`, e.g. a build
//! of the commit the issue was measured on). `LOGHAMSTER_ABUSE_ONLY=a,b`
//! picks attacks by name; `LOGHAMSTER_ABUSE_IDS=n` sets how many stream
//! ids `ids` makes (70,000 by default; an older server rewrites its whole
//! state file per round, so that takes it an hour).
//!
//! Only config keys every version knows are used, so the same run works
//! against an older server.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

/// How long a legitimate delivery may take before it counts as failed.
const GIVE_UP: Duration = Duration::from_secs(20);

/// What the server's process holds: RSS in MiB and open descriptors.
fn footprint(pid: u32) -> (f64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (kib / 1024.0, fds)
}

/// Waits until the server's RSS stopped growing (three looks 200 ms apart).
fn settle(pid: u32) {
    let mut last = footprint(pid).0;
    let mut same = 0;
    while same < 3 {
        std::thread::sleep(Duration::from_millis(200));
        let now = footprint(pid).0;
        same = if (now - last).abs() < 0.5 {
            same + 1
        } else {
            0
        };
        last = now;
    }
}

/// One legitimate stream: INIT, one line, its `ACK`. The time it took, or
/// what went wrong.
fn deliver(addr: SocketAddr, id: &str) -> Result<Duration, String> {
    let t0 = Instant::now();
    // From another address than the attacks, as another host would.
    let mut s = connect_from(std::net::Ipv4Addr::new(127, 0, 0, 2), addr);
    s.set_read_timeout(Some(GIVE_UP)).unwrap();
    let greeting = read_line(&mut s);
    if !greeting.starts_with("### Welcome") {
        return Err(format!("greeting {greeting:?}"));
    }
    read_line(&mut s);
    writeln!(s, "INIT STREAM legit:/app.log id:{id} offset:0 ack:1").map_err(|e| e.to_string())?;
    let reply = read_line(&mut s);
    if !reply.starts_with("200 ") {
        return Err(format!("got {:?}", reply.trim_end()));
    }
    s.write_all(b"a legitimate line\n")
        .map_err(|e| e.to_string())?;
    let ack = read_line(&mut s);
    if !ack.starts_with("ACK ") {
        return Err(format!("no ACK ({:?})", ack.trim_end()));
    }
    Ok(t0.elapsed())
}

fn show(d: &Result<Duration, String>) -> String {
    match d {
        Ok(d) => format!("{:.0} ms", d.as_secs_f64() * 1000.0),
        Err(e) => e.clone(),
    }
}

/// One attack: it gets the server's address and pid and returns a note.
type Attack = fn(&Limited, &std::path::Path) -> String;

fn offset(server: &Limited, _: &std::path::Path) -> String {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(GIVE_UP)).unwrap();
    read_line(&mut s);
    read_line(&mut s);
    s.write_all(b"INIT STREAM ovf:/x id:o1 offset:9223372036854775807 ack:1\nab")
        .unwrap();
    let reply = read_line(&mut s);
    let next = read_line(&mut s);
    format!("{} / {}", reply.trim_end(), next.trim_end())
}

fn state_tmp(server: &Limited, _: &std::path::Path) -> String {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(GIVE_UP)).unwrap();
    read_line(&mut s);
    read_line(&mut s);
    s.write_all(b"INIT STREAM evil:/.loghamsterd.state.tmp/x\n")
        .unwrap();
    read_line(&mut s).trim_end().to_string()
}

fn bomb(server: &Limited, _: &std::path::Path) -> String {
    let wire = zstd_zeros(2 << 30);
    let mut s = TcpStream::connect(server.addr).unwrap();
    read_line(&mut s);
    read_line(&mut s);
    s.write_all(b"INIT STREAM bomb:/zeros compression:zstd\n")
        .unwrap();
    read_line(&mut s);
    s.write_all(&wire).unwrap();
    std::mem::forget(s);
    format!("{} KiB of zstd for 2 GiB of zeros", wire.len() >> 10)
}

fn windows(server: &Limited, _: &std::path::Path) -> String {
    let prefix = zstd_big_window_prefix();
    let mut refused = 0;
    for i in 0..150 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(GIVE_UP)).unwrap();
        read_line(&mut s);
        read_line(&mut s);
        writeln!(s, "INIT STREAM win:/w{i} compression:zstd").unwrap();
        if !read_line(&mut s).starts_with("200 ") {
            refused += 1;
        }
        let _ = s.write_all(&prefix);
        std::mem::forget(s);
    }
    settle(server.child.id());
    format!("150 connections, 8 MiB windows filled by <1 KiB each; {refused} refused at INIT")
}

fn idle(server: &Limited, _: &std::path::Path) -> String {
    let (mut open, mut refused, mut silent, mut in_a_row) = (0, 0, 0, 0);
    for i in 0..10_000 {
        if in_a_row >= 20 {
            // The server stopped answering: the rest would wait the same.
            break;
        }
        let Ok(mut s) = TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)) else {
            // The accept queue is full: SYNs are dropped.
            silent += 1;
            in_a_row += 1;
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let first = read_line(&mut s);
        if first.starts_with("503 ") {
            refused += 1;
            continue;
        }
        if !first.starts_with("### Welcome") {
            silent += 1;
            in_a_row += 1;
            continue;
        }
        in_a_row = 0;
        read_line(&mut s);
        let _ = writeln!(s, "INIT STREAM idle:/f{i} id:i{i} offset:0");
        open += 1;
        std::mem::forget(s);
    }
    settle(server.child.id());
    format!(
        "10,000 idle connections with an output each: {open} greeted, {refused} refused with 503, {silent} got no greeting"
    )
}

fn ids(server: &Limited, dir: &std::path::Path) -> String {
    let n = std::env::var("LOGHAMSTER_ABUSE_IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(70_000);
    for batch in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut conns = Vec::new();
        for &i in batch {
            let mut s = TcpStream::connect(server.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            read_line(&mut s);
            read_line(&mut s);
            writeln!(s, "INIT STREAM ids:/one id:x{i} offset:0\nx").unwrap();
            conns.push(s);
        }
        for s in &mut conns {
            read_line(s);
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        for mut s in conns {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        }
    }
    let size = |name: &str| std::fs::metadata(dir.join("out").join(name)).map_or(0, |m| m.len());
    format!(
        "{n} stream ids; state file {:.1} MB, journal {:.1} MB",
        size(".loghamsterd.state") as f64 / 1e6,
        size(".loghamsterd.state.journal") as f64 / 1e6
    )
}

const ATTACKS: &[(&str, &str, Attack)] = &[
    ("offset", "", offset),
    (
        "state_tmp",
        "[output.evil]\npath = \"{path}\"\nmatch = { host = \"evil\" }\n",
        state_tmp,
    ),
    ("bomb", "", bomb),
    ("windows", "", windows),
    ("idle", "", idle),
    ("ids", "", ids),
];

#[test]
#[ignore = "a measurement for docs/SECURITY.md; run by scripts/abuse"]
fn measure_attacks() {
    let bin = std::env::var("LOGHAMSTER_ABUSE_SERVER").unwrap_or(SERVER_BIN.into());
    let only = std::env::var("LOGHAMSTER_ABUSE_ONLY").unwrap_or_default();
    println!("server: {bin}");
    println!("| attack | RSS before → during | fds before → during | delivery before → during | what happened |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, extra, attack) in ATTACKS {
        if !only.is_empty() && !only.split(',').any(|o| o == *name) {
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let extra = format!("sync_interval = \"100ms\"\n{extra}");
        let server = Limited::launch(&bin, tmp.path(), None, &extra);
        let pid = server.child.id();
        let before = deliver(server.addr, "before");
        let (rss0, fds0) = footprint(pid);
        let note = attack(&server, tmp.path());
        let (rss1, fds1) = footprint(pid);
        let during = deliver(server.addr, "during");
        let (rss2, fds2) = footprint(pid);
        println!(
            "| {name} | {rss0:.1} → {:.1} MiB | {fds0} → {} | {} → {} | {note} |",
            rss1.max(rss2),
            fds1.max(fds2),
            show(&before),
            show(&during)
        );
    }
}
