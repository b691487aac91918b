//! Multiplexed connections (`INIT MUX`) against the real server: many
//! streams on one socket, each exactly a plain connection's conversation;
//! credit bounds what a channel may send; a connection that breaks the
//! framing is closed, alone.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use loghamster::proto::mux::{self, Frame, Status, WINDOW};

/// One channel as the test client sees it.
#[derive(Default)]
struct Chan {
    /// What the server sent on it, not yet taken as lines.
    inbox: Vec<u8>,
    fin: bool,
    closed: bool,
    /// DATA bytes this client may still send.
    credit: u32,
}

/// A blocking client of a multiplexed connection.
struct MuxClient {
    sock: TcpStream,
    rx: Vec<u8>,
    chans: HashMap<u32, Chan>,
    next: u32,
    /// The server closed the socket.
    eof: bool,
}

impl MuxClient {
    /// Connects, reads the greeting and turns the connection into a
    /// multiplexed one.
    fn connect(addr: SocketAddr) -> MuxClient {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut c = MuxClient {
            sock,
            rx: Vec::new(),
            chans: HashMap::new(),
            next: 1,
            eof: false,
        };
        let welcome = c.raw_line();
        assert!(welcome.starts_with("### Welcome"), "{welcome:?}");
        assert!(c.raw_line().starts_with("STREAMID "));
        c.sock.write_all(mux::REQUEST).unwrap();
        assert_eq!(c.raw_line(), "200 OK mux\n");
        c
    }

    /// One line before the frames start, byte by byte (so nothing behind
    /// it is taken).
    fn raw_line(&mut self) -> String {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while line.last() != Some(&b'\n') {
            assert_eq!(self.sock.read(&mut b).expect("read a line"), 1, "closed");
            line.push(b[0]);
        }
        String::from_utf8(line).unwrap()
    }

    fn open(&mut self) -> u32 {
        let id = self.next;
        self.next += 1;
        let mut out = Vec::new();
        mux::write_open(&mut out, id);
        self.sock.write_all(&out).unwrap();
        self.chans.insert(
            id,
            Chan {
                credit: WINDOW,
                ..Chan::default()
            },
        );
        id
    }

    /// Reads once and applies the frames that arrived.
    fn read_frames(&mut self) {
        let mut buf = vec![0u8; 256 * 1024];
        let n = self.sock.read(&mut buf).expect("read frames");
        if n == 0 {
            self.eof = true;
            return;
        }
        self.rx.extend_from_slice(&buf[..n]);
        let mut at = 0;
        while let Status::Complete(frame, used) = mux::parse(&self.rx[at..]).expect("a frame") {
            at += used;
            let chan = self
                .chans
                .get_mut(&frame.channel())
                .expect("an open channel");
            match frame {
                Frame::Data(_, d) => chan.inbox.extend_from_slice(d),
                Frame::Fin(_) => chan.fin = true,
                Frame::Close(_) => chan.closed = true,
                Frame::Credit(_, n) => chan.credit += n,
                Frame::Open(_) => panic!("OPEN from the server"),
            }
        }
        self.rx.drain(..at);
    }

    /// The next line the server sent on channel `id`.
    fn line(&mut self, id: u32) -> String {
        loop {
            let chan = &mut self.chans.get_mut(&id).unwrap();
            if let Some(end) = chan.inbox.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = chan.inbox.drain(..=end).collect();
                return String::from_utf8(line).unwrap();
            }
            assert!(!chan.fin && !self.eof, "channel {id} ended without a line");
            self.read_frames();
        }
    }

    /// Sends `data` on channel `id` within its credit, waiting for more.
    fn send(&mut self, id: u32, mut data: &[u8]) {
        while !data.is_empty() {
            let credit = self.chans[&id].credit as usize;
            if credit == 0 {
                self.read_frames();
                continue;
            }
            let n = credit.min(data.len());
            let mut out = Vec::new();
            mux::write_data(&mut out, id, &data[..n]);
            self.sock.write_all(&out).unwrap();
            self.chans.get_mut(&id).unwrap().credit -= n as u32;
            data = &data[n..];
        }
    }

    fn frames(&mut self, out: &[u8]) {
        self.sock.write_all(out).unwrap();
    }

    /// Reads until channel `id` is closed by the server.
    fn wait_closed(&mut self, id: u32) {
        while !self.chans[&id].closed {
            assert!(!self.eof, "connection closed before channel {id}");
            self.read_frames();
        }
    }
}

/// Opens a stream for `path` on a new channel; returns the channel.
fn stream(c: &mut MuxClient, host: &str, path: &str) -> u32 {
    let id = c.open();
    assert!(c.line(id).starts_with("### Welcome"));
    assert!(c.line(id).starts_with("STREAMID "));
    c.send(id, format!("INIT STREAM {host}:{path} ack:1\n").as_bytes());
    let ok = c.line(id);
    assert!(ok.starts_with("200 "), "{ok:?}");
    id
}

/// Half-closes channel `id` and returns the offset of its `250 DONE`.
fn finish(c: &mut MuxClient, id: u32) -> u64 {
    let mut out = Vec::new();
    mux::write_fin(&mut out, id);
    c.frames(&out);
    loop {
        let line = c.line(id);
        if let Some(n) = line.strip_prefix("250 DONE ") {
            c.wait_closed(id);
            return n.trim().parse().unwrap();
        }
        assert!(line.starts_with("ACK "), "{line:?}");
    }
}

#[test]
fn many_streams_share_one_connection_and_every_line_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let mut c = MuxClient::connect(server.addr);
    let files = 40;
    let ids: Vec<u32> = (0..files)
        .map(|i| stream(&mut c, "mx", &format!("/var/log/f{i}.log")))
        .collect();
    // Rounds of a few lines per file, every file's frames in one write,
    // as a client with many files sends what their lingers gathered.
    let rounds = 25;
    for r in 0..rounds {
        let mut batch = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let lines: String = (0..3).map(|k| line(&format!("f{i}"), r * 3 + k)).collect();
            mux::write_data(&mut batch, id, lines.as_bytes());
            c.chans.get_mut(&id).unwrap().credit -= lines.len() as u32;
        }
        c.frames(&batch);
    }
    for (i, &id) in ids.iter().enumerate() {
        let want = expected(&format!("f{i}"), 0, rounds * 3);
        assert_eq!(finish(&mut c, id), want.len() as u64, "file {i}");
        let dest = routed(
            &out,
            "mx",
            std::path::Path::new(&format!("/var/log/f{i}.log")),
        );
        assert_eq!(read(&dest), want, "file {i}");
    }
    // A resumed stream on a new channel continues where the last ended.
    let again = stream(&mut c, "mx", "/var/log/f0.log");
    c.send(again, line("f0", rounds * 3).as_bytes());
    let want = expected("f0", 0, rounds * 3 + 1);
    assert_eq!(finish(&mut c, again), line("f0", rounds * 3).len() as u64);
    assert_eq!(
        read(&routed(&out, "mx", std::path::Path::new("/var/log/f0.log"))),
        want
    );
}

#[test]
fn a_channel_gets_credit_back_and_moves_many_windows() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let mut c = MuxClient::connect(server.addr);
    let id = stream(&mut c, "mx", "/var/log/big.log");
    let want = expected("big", 0, 60_000);
    assert!(want.len() > 20 * WINDOW as usize);
    // `send` waits for CREDIT whenever the window is used up: without
    // credit coming back this would time out.
    c.send(id, want.as_bytes());
    assert_eq!(finish(&mut c, id), want.len() as u64);
    assert_eq!(
        read(&routed(
            &out,
            "mx",
            std::path::Path::new("/var/log/big.log")
        )),
        want
    );
}

/// The frames that break a rule on channel `id` of a client.
type Breaker = Box<dyn Fn(&mut MuxClient, u32) -> Vec<u8>>;

#[test]
fn a_connection_that_breaks_the_framing_is_closed_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::with_directory(&out);
    let log = tmp.path().join("plain.log");
    let mut plain = client_for(&server, &tmp.path().join("state"), "plain", &[&log]);
    append_lines(&log, "plain", 0, 100);
    // Each way a client can break the rules closes its connection.
    let breaks: Vec<(&str, Breaker)> = vec![
        (
            "more data than the credit",
            Box::new(|_, id| {
                let mut out = Vec::new();
                mux::write_data(&mut out, id, &vec![b'x'; WINDOW as usize]);
                mux::write_data(&mut out, id, b"x");
                out
            }),
        ),
        (
            "a frame for a channel never opened",
            Box::new(|_, id| {
                let mut out = Vec::new();
                mux::write_data(&mut out, id + 5, b"x\n");
                out
            }),
        ),
        (
            "a channel opened twice",
            Box::new(|_, id| {
                let mut out = Vec::new();
                mux::write_open(&mut out, id);
                out
            }),
        ),
        (
            "an unknown frame kind",
            Box::new(|_, _| vec![9, 0, 0, 0, 0, 0, 0, 1]),
        ),
        (
            "data after the end",
            Box::new(|_, id| {
                let mut out = Vec::new();
                mux::write_fin(&mut out, id);
                mux::write_data(&mut out, id, b"x\n");
                out
            }),
        ),
    ];
    for (i, (what, bad)) in breaks.iter().enumerate() {
        let mut c = MuxClient::connect(server.addr);
        let id = stream(&mut c, "bad", &format!("/b{i}.log"));
        let bytes = bad(&mut c, id);
        c.frames(&bytes);
        while !c.eof {
            c.read_frames();
        }
        // The server said so, once per broken connection (its log is
        // read by another thread: wait for the line, do not race it).
        wait_for(what, || {
            server.proc.log().matches("broke the protocol").count() > i
        });
    }
    // INIT MUX inside a channel is refused like any bad INIT.
    let mut c = MuxClient::connect(server.addr);
    let id = c.open();
    c.line(id);
    c.line(id);
    c.send(id, mux::REQUEST);
    assert!(c
        .line(id)
        .starts_with("400 Bad request: INIT MUX inside a channel"));
    c.wait_closed(id);
    // The plain stream kept flowing throughout.
    append_lines(&log, "plain", 100, 200);
    wait_content(&routed(&out, "plain", &log), &expected("plain", 0, 200));
    assert!(plain.stop().success());
}

#[test]
fn the_end_of_the_connection_ends_its_channels_and_keeps_their_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "idle_timeout = \"1s\"\n");
    let mut c = MuxClient::connect(server.addr);
    let a = stream(&mut c, "gone", "/a.log");
    let b = stream(&mut c, "gone", "/b.log");
    c.send(a, expected("a", 0, 50).as_bytes());
    c.send(b, format!("{}half a li", expected("b", 0, 50)).as_bytes());
    drop(c);
    // Everything that arrived is kept: a stream alone on its output has
    // even its cut line written (as on a plain connection that breaks).
    wait_content(
        &routed(&out, "gone", std::path::Path::new("/a.log")),
        &expected("a", 0, 50),
    );
    wait_content(
        &routed(&out, "gone", std::path::Path::new("/b.log")),
        &format!("{}half a li", expected("b", 0, 50)),
    );
    // A connection that carries no channel is closed after idle_timeout
    // (nothing else closes it: its one channel ended cleanly).
    let mut idle = MuxClient::connect(server.addr);
    let id = stream(&mut idle, "idle", "/i.log");
    assert_eq!(finish(&mut idle, id), 0);
    while !idle.eof {
        idle.read_frames();
    }
}

/// `n` files `dir/<tag><i>.log`, each with lines `0..lines` of tag
/// `<tag><i>`.
fn files_with_lines(
    dir: &std::path::Path,
    tag: &str,
    n: usize,
    lines: usize,
) -> Vec<std::path::PathBuf> {
    (0..n)
        .map(|i| {
            let f = dir.join(format!("{tag}{i}.log"));
            append_lines(&f, &format!("{tag}{i}"), 0, lines);
            f
        })
        .collect()
}

#[test]
fn a_client_with_many_files_sends_them_all_on_one_multiplexed_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "[prometheus]\nlisten = \"127.0.0.1:0\"\n");
    let files = files_with_lines(tmp.path(), "f", 30, 10);
    let streams = stream_tables(&files);
    let cfg = client_config(tmp.path(), &server, &format!("multiplex = true\n{streams}"));
    let client = client(&["--config", cfg.to_str().unwrap()]);
    client.wait_log("multiplexed connection ready");
    for round in 1..5 {
        for (i, f) in files.iter().enumerate() {
            append_lines(f, &format!("f{i}"), round * 10, round * 10 + 10);
        }
    }
    for (i, f) in files.iter().enumerate() {
        wait_content(&routed(&out, "h", f), &expected(&format!("f{i}"), 0, 50));
    }
    let log = client.log();
    assert!(!log.contains("WARN"), "{log}");
    // One connection for all: it and its 30 channels are what the server
    // accepted (30 connections of their own would be 30).
    let body = common::scrape::get(common::scrape::metrics_addr(&server.proc), "/metrics").1;
    let accepted = common::scrape::value(&body, "loghamster_server_connections_accepted_total");
    assert_eq!(accepted, Some(31.0), "{body}");
}

/// Files that each have a backlog (below the 1 MiB that would take a
/// connection of their own) all start at once: their channels' bytes fill
/// the multiplexed connection's send buffer within a turn, so the later
/// streams wait for it to empty before they read (`Carriers::congested`),
/// and every line still arrives, in order.
#[test]
fn many_backlogs_at_once_wait_for_the_multiplexed_connection_and_all_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    // About 90 KiB each: 5.6 MiB in all, eleven times the send buffer.
    let files = files_with_lines(tmp.path(), "b", 64, 1000);
    let cfg = client_config(tmp.path(), &server, &stream_tables(&files));
    let mut client = common::client(&["--config", cfg.to_str().unwrap()]);
    for round in 1..3 {
        for (i, f) in files.iter().enumerate() {
            append_lines(f, &format!("b{i}"), round * 1000, round * 1000 + 1000);
        }
    }
    for (i, f) in files.iter().enumerate() {
        wait_content(&routed(&out, "h", f), &expected(&format!("b{i}"), 0, 3000));
    }
    assert!(client.stop().success(), "{}", client.log());
    let log = client.log();
    assert!(log.contains("multiplexed connection ready"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
}

/// A scripted server that gives a channel its first window of credit and
/// no more: every DATA frame the client sent ends at a line end. (Frames
/// not yet written die with a killed client, unlike what it `send`s on a
/// socket of its own, so a frame that ended mid-line would leave a line
/// cut in two in the output, which a later stream's bytes would end.)
#[test]
fn a_channel_frames_whole_lines_while_more_waits_for_credit() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("app.log");
    // 100-byte lines: neither the 16 KiB a channel's outbox holds nor the
    // 64 KiB window is a whole number of them.
    let text: String = (0..1500)
        .map(|i| format!("L{i:08} {}\n", "x".repeat(89)))
        .collect();
    std::fs::write(&file, &text).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = tmp.path().join("client.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_file = {:?}\nhostname = \"h\"\n[server]\nhostname = \"127.0.0.1\"\nport = {}\n\
             multiplex = true\n{}",
            tmp.path().join("state"),
            listener.local_addr().unwrap().port(),
            stream_tables([&file])
        ),
    )
    .unwrap();
    let mut client = common::client(&["--config", cfg.to_str().unwrap()]);
    let (mut sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    sock.write_all(b"### Welcome to LogHamster server v0.1.0\nSTREAMID t-1\n")
        .unwrap();
    let mut rx = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while rx.len() < mux::REQUEST.len() {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "closed before INIT MUX");
        rx.extend_from_slice(&buf[..n]);
    }
    assert_eq!(rx.drain(..mux::REQUEST.len()).as_slice(), mux::REQUEST);
    sock.write_all(b"200 OK mux\n").unwrap();
    // The channel's greeting, then `200` to its INIT; then only DATA
    // until the window is nearly used (the client may stop short of it
    // by less than a line).
    let (mut stream, mut frames, mut answered) = (0usize, Vec::new(), false);
    while stream + 100 < WINDOW as usize - 200 || !answered {
        let mut at = 0;
        while let Status::Complete(frame, used) = mux::parse(&rx[at..]).expect("a frame") {
            at += used;
            let mut reply = Vec::new();
            match frame {
                Frame::Open(id) => mux::write_data(
                    &mut reply,
                    id,
                    b"### Welcome to LogHamster server v0.1.0\nSTREAMID t-2\n",
                ),
                Frame::Data(id, d) if !answered => {
                    assert!(
                        d.starts_with(b"INIT STREAM"),
                        "{:?}",
                        String::from_utf8_lossy(d)
                    );
                    assert!(d.ends_with(b"\n"));
                    mux::write_data(&mut reply, id, b"200 OK Ready to accept data offset:0\n");
                    answered = true;
                }
                Frame::Data(_, d) => {
                    stream += d.len();
                    frames.push(d.to_vec());
                }
                other => panic!("unexpected {other:?}"),
            }
            sock.write_all(&reply).unwrap();
        }
        rx.drain(..at);
        if stream + 100 >= WINDOW as usize - 200 && answered {
            break;
        }
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "the client closed after {stream} bytes");
        rx.extend_from_slice(&buf[..n]);
    }
    client.kill9();
    let cut: Vec<(usize, usize)> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.last() != Some(&b'\n'))
        .map(|(i, f)| (i, f.len()))
        .collect();
    assert!(
        cut.is_empty(),
        "frames (index, length) that end mid-line: {cut:?} of {}",
        frames.len()
    );
    assert_eq!(frames.concat(), text.as_bytes()[..stream].to_vec());
}

/// Multiplexing is the default, from a config file and from the command
/// line alike; `multiplex = false` and `--no-multiplex` turn it off. (A
/// client's multiplexed connection is ready before its first byte, so a
/// client stopped once a file's lines arrived has said whether it was.)
#[test]
fn followed_files_multiplex_by_default_and_either_switch_turns_it_off() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = server_with(tmp.path(), &out, "");
    let cases: [(&str, &[&str], bool); 4] = [
        ("file-default", &[], true),
        ("file-off", &["multiplex = false\n"], false),
        ("cli-default", &[], true),
        ("cli-off", &["--no-multiplex"], false),
    ];
    for (name, extra, multiplexed) in cases {
        let file = tmp.path().join(format!("{name}.log"));
        append_lines(&file, name, 0, 20);
        let state = tmp.path().join(format!("{name}.state"));
        let mut client = if name.starts_with("file") {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let body = format!("{}{}", extra.concat(), stream_tables([&file]));
            let cfg = client_config(&dir, &server, &body);
            common::client(&["--config", cfg.to_str().unwrap()])
        } else {
            client_for_with(&server, &state, "h", &[&file], extra)
        };
        wait_content(&routed(&out, "h", &file), &expected(name, 0, 20));
        // Stopped, the client's whole log is in.
        assert!(client.stop().success(), "{}", client.log());
        let log = client.log();
        assert_eq!(
            log.contains("multiplexed connection ready"),
            multiplexed,
            "{name}: multiplexed should be {multiplexed}:\n{log}"
        );
    }
}

/// With `multiplex = true`, a file far behind its end (a catch-up) gets a
/// connection of its own, where the server splices it into its output; a
/// file caught up takes a channel, and once a burst leaves it far behind
/// it ends the channel (`250 DONE`) and goes on with a connection of its
/// own, spliced too. Every line arrives once and in order.
#[test]
fn a_file_far_behind_gets_a_connection_of_its_own_and_is_spliced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--directory",
        out.to_str().unwrap(),
        "--debug",
    ]);
    let big = tmp.path().join("big.log");
    let small = tmp.path().join("small.log");
    append_lines(&big, "big", 0, 40_000);
    append_lines(&small, "small", 0, 10);
    let streams = stream_tables([&big, &small]);
    let cfg = client_config(tmp.path(), &server, &format!("multiplex = true\n{streams}"));
    let client = client(&["--config", cfg.to_str().unwrap(), "--debug"]);
    wait_content(&routed(&out, "h", &big), &expected("big", 0, 40_000));
    wait_content(&routed(&out, "h", &small), &expected("small", 0, 10));
    let spliced = |log: &str, name: &str| {
        log.lines()
            .any(|l| l.contains(name) && l.contains("zero-copy on"))
    };
    let log = server.proc.log();
    assert!(spliced(&log, "big.log"), "{log}");
    assert!(!spliced(&log, "small.log"), "{log}");
    // A burst of about 3 MiB at once on the caught-up file's channel.
    append_lines(&small, "small", 10, 40_010);
    client.wait_log("bytes behind on a multiplexed connection");
    wait_content(&routed(&out, "h", &small), &expected("small", 0, 40_010));
    wait_for("the server to splice small.log", || {
        spliced(&server.proc.log(), "small.log")
    });
}
