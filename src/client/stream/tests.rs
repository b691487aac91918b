//! The stream's shell driven step by step, without the daemon's loop:
//! the test plays the servers on blocking std sockets over loopback,
//! waits for the stream's socket events on a `Poll` of its own and hands
//! them over, and injects faults into the stream's own socket (a
//! `shutdown(SHUT_WR)` makes its next `send` or `sendfile` fail with
//! `EPIPE`, at exactly the step the test chooses, with no race against
//! what the peer does or the read side sees).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::{Ctx, LinkBudget, Settings, Stream};
use crate::client::failover::Servers;
use crate::client::link::Phase;
use crate::client::meter::{Meter, ServerMeter};
use crate::metrics::client::StreamLabels;
use crate::metrics::ClientMetrics;
use crate::reactor::sys::inotify::Inotify;
use crate::reactor::{Slots, Timers};
use crate::tail::batch;
use crate::tail::identity::IdKey;
use crate::tail::listing::DirNames;
use crate::tail::state::Entry;

/// Longest a step may take on a loaded machine (a bound, not a timing).
const PATIENCE: Duration = Duration::from_secs(30);

/// What a stream's handlers get from the daemon, owned by the test.
struct World {
    poll: Poll,
    timers: Timers<Token>,
    settings: Settings,
    loaded: Vec<Entry>,
    pool: Vec<Vec<u8>>,
    flags: [bool; 3],
    abandoned: u64,
    links: LinkBudget,
    meter: Meter,
    throttled: Duration,
    servers: Servers,
    server_meters: Vec<ServerMeter>,
    listings: DirNames,
    inotify: Inotify,
    carriers: crate::client::carrier::Carriers,
    now: Instant,
}

impl World {
    /// Two servers; a failure moves a stream at once (`failover_after`
    /// of 0); bytes go out as soon as they are read (no linger).
    fn new(names: Vec<String>) -> World {
        let now = Instant::now();
        let mut metrics = ClientMetrics::with_streams(std::iter::empty(), now);
        let server_meters = names
            .iter()
            .map(|n| ServerMeter::new(&mut metrics, n))
            .collect();
        let label = StreamLabels {
            stream: "test".into(),
        };
        World {
            poll: Poll::new().expect("a poll"),
            timers: Timers::default(),
            settings: Settings {
                hostname: "h".into(),
                rules: batch::Rules {
                    batch: 16 * 1024,
                    linger: Duration::ZERO,
                    partial_line_timeout: Duration::ZERO,
                },
                max_batch: 64 * 1024,
                reconnect_min: Duration::from_millis(100),
                reconnect_max: Duration::from_secs(1),
                deleted_hold: Duration::from_secs(60),
                idle_close: Duration::from_secs(300),
                compression: Default::default(),
                multiplex: false,
                token: None,
                follow_symlinks: false,
                id_key: IdKey([7; 32]),
                tls: None,
            },
            loaded: Vec::new(),
            pool: Vec::new(),
            flags: [false; 3],
            abandoned: 0,
            links: LinkBudget {
                open: 0,
                max: 16,
                waiting: Default::default(),
                plain_until: None,
                outage_since: None,
                cap: None,
                full_said: None,
            },
            meter: Meter::new(&metrics, label),
            throttled: Duration::ZERO,
            servers: Servers::new(names, Duration::ZERO),
            server_meters,
            listings: DirNames::default(),
            inotify: Inotify::new().expect("an inotify"),
            carriers: Default::default(),
            now,
        }
    }

    fn ctx(&mut self) -> Ctx<'_> {
        let [dirty, save_soon, fd_pressure] = &mut self.flags;
        Ctx {
            registry: self.poll.registry(),
            timers: &mut self.timers,
            settings: &self.settings,
            now: self.now,
            dirty,
            save_soon,
            loaded: &mut self.loaded,
            pool: &mut self.pool,
            abandoned_bytes: &mut self.abandoned,
            links: &mut self.links,
            fd_pressure,
            meter: &mut self.meter,
            stream_limit: None,
            client_limit: None,
            throttled: &mut self.throttled,
            servers: &mut self.servers,
            server_meters: &self.server_meters,
            listings: &mut self.listings,
            inotify: &self.inotify,
            carriers: &mut self.carriers,
        }
    }

    /// Hands the stream its socket events until `done` holds for it.
    fn drive(&mut self, s: &mut Stream, done: impl Fn(&Stream) -> bool) {
        let mut events = Events::with_capacity(8);
        while !done(s) {
            self.poll.poll(&mut events, Some(PATIENCE)).expect("poll");
            assert!(!events.is_empty(), "no event for {PATIENCE:?}");
            s.on_socket(&mut self.ctx());
        }
    }
}

/// A stream of `path` (a followed file, or `whole`), connected to the
/// first of two servers the test plays, streaming after the server's
/// `200`. Returns the world, the stream, the server's index and its end
/// of the connection.
fn streaming(path: &Path, whole: bool) -> (World, Stream, usize, TcpStream) {
    streaming_with(path, whole, Duration::ZERO)
}

/// [`streaming`] with the batching rules' `linger`: the test's clock is
/// moved on by it once the connection is up, so the file's first bytes go.
fn streaming_with(path: &Path, whole: bool, linger: Duration) -> (World, Stream, usize, TcpStream) {
    let listeners = [0, 1].map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"));
    let names = listeners
        .iter()
        .map(|l| l.local_addr().expect("an address").to_string())
        .collect();
    let mut w = World::new(names);
    w.settings.rules.linger = linger;
    let key = Slots::<()>::default().vacant_key();
    let tail = w.settings.tail(true, whole);
    let mut s = Stream::new(key, 0, path.to_path_buf(), None, Vec::new(), tail);
    s.on_file_event(&mut w.ctx());
    let server = s.server().expect("connecting");
    let (mut peer, _) = listeners[server].accept().expect("accept");
    peer.set_read_timeout(Some(PATIENCE)).expect("timeout");
    peer.write_all(b"### Welcome to LogHamster server v0.1.0\nSTREAMID t-1\n")
        .expect("greet");
    w.drive(&mut s, |s| {
        s.link.as_ref().is_some_and(|l| l.phase == Phase::Replying)
    });
    let mut init = String::new();
    BufReader::new(&mut peer)
        .read_line(&mut init)
        .expect("INIT");
    assert!(init.starts_with("INIT STREAM "), "{init:?}");
    peer.write_all(b"200 OK Ready to accept data offset:0\n")
        .expect("200");
    w.drive(&mut s, |s| {
        s.link.as_ref().is_some_and(|l| l.phase == Phase::Up)
    });
    if s.tail.sent() == 0 {
        w.now += linger;
        s.tick(&mut w.ctx());
    }
    assert!(s.tail.sent() > 0, "the file's first bytes went");
    (w, s, server, peer)
}

/// The stream's socket is shut for writing: its next send fails.
fn break_sends(s: &Stream) {
    let link = s.link.as_ref().expect("a link");
    link.sock
        .tcp()
        .expect("tcp")
        .shutdown(Shutdown::Write)
        .expect("shutdown");
}

/// After a failed send: the stream moved to the other server (the
/// failure counted towards `failover_after`), and the bytes sent but not acknowledged (`in_doubt`) were
/// counted as possibly on both.
fn assert_failed_over(w: &World, s: &Stream, from: usize, in_doubt: u64) {
    assert_eq!(s.server(), Some(1 - from), "moved to the other server");
    assert_eq!(w.server_meters[from].failovers.get(), 1);
    assert_eq!(w.meter.failover_duplicates.get(), in_doubt);
}

#[test]
fn a_failed_send_is_a_link_failure_with_its_unacknowledged_bytes_in_doubt() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("app.log");
    std::fs::write(&path, "one\ntwo\n").expect("write");
    let (mut w, mut s, server, mut peer) = streaming(&path, false);
    let mut got = [0; 8];
    peer.read_exact(&mut got).expect("the file's bytes");
    assert_eq!(&got, b"one\ntwo\n");
    assert_eq!((s.tail.sent(), s.tail.acked()), (8, 0));
    break_sends(&s);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(b"three\n").expect("append");
    s.on_file_event(&mut w.ctx());
    assert_failed_over(&w, &s, server, 8);
}

#[test]
fn a_failed_sendfile_is_a_link_failure_with_its_unacknowledged_bytes_in_doubt() {
    // A whole file of several turns' quanta (1 MiB each): after the turn
    // that heard the `200`, some of it is left to `sendfile`.
    const LEN: usize = 8 << 20;
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("done.log");
    std::fs::write(&path, "x".repeat(LEN - 1) + "\n").expect("write");
    let (mut w, mut s, server, _peer) = streaming(&path, true);
    let sent = s.tail.sent();
    assert!(sent < LEN as u64, "{sent}");
    break_sends(&s);
    s.tick(&mut w.ctx());
    assert_failed_over(&w, &s, server, sent);
}

/// Appends `text` to the file at `path`.
fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(text.as_bytes()).expect("append");
}

#[test]
fn a_trickling_files_growth_waits_unread_for_its_linger_counted_from_the_news() {
    const LINGER: Duration = Duration::from_millis(20);
    const MS: Duration = Duration::from_millis(1);
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("app.log");
    std::fs::write(&path, "one\ntwo\n").expect("write");
    let (mut w, mut s, _, mut peer) = streaming_with(&path, false, LINGER);
    let mut got = [0; 8];
    peer.read_exact(&mut got).expect("the file's bytes");
    // The read found a few bytes and the file's end: a trickle.
    append(&path, "three\n");
    let t1 = w.now + 5 * MS;
    w.now = t1;
    assert_eq!(s.growth_waits(t1), Some(t1 + LINGER));
    let at = s.defer_growth(t1).expect("the timer armed for the linger");
    w.timers.schedule(at, s.key.token());
    assert_eq!(at, t1 + LINGER);
    // More news before then waits for the same moment, unread.
    append(&path, "four\n");
    let t2 = t1 + 3 * MS;
    assert_eq!(s.growth_waits(t2), Some(t1 + LINGER));
    assert_eq!(s.defer_growth(t2), None, "armed already");
    assert_eq!(s.tail.read_pos(), 8, "nothing read while the growth waits");
    // The timer: one read, sent at once (its linger ran from the news).
    w.now = at;
    s.tick(&mut w.ctx());
    assert_eq!(s.tail.sent(), 19);
    let mut got = [0; 11];
    peer.read_exact(&mut got).expect("the growth");
    assert_eq!(&got, b"three\nfour\n");
    // Its third note in one linger reads at once (a file speeding up
    // still sends as soon as it has `batch` bytes).
    let t3 = w.now + MS;
    for n in 0..3 {
        append(&path, "more\n");
        let waits = s.growth_waits(t3);
        if crate::client::due::look_now(
            crate::reactor::sys::inotify::mask::MODIFY,
            waits,
            s.deferred(),
            t3,
        ) {
            assert_eq!(n, 2, "the third note looks");
            s.note_growth(false);
        } else {
            assert!(n < 2, "note {n} waits");
            let _ = s.defer_growth(t3);
        }
    }
}

#[test]
fn a_file_whose_read_found_a_batch_reads_its_growth_at_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("app.log");
    // More than `batch` (16 KiB) of lines: not a trickle.
    std::fs::write(&path, ("x".repeat(99) + "\n").repeat(200)).expect("write");
    let linger = Duration::from_millis(20);
    let (mut w, mut s, _, _peer) = streaming_with(&path, false, linger);
    assert_eq!(s.tail.read_pos(), 20_000, "read to its end");
    // What was under `batch` after the first send goes at its linger.
    w.now += linger;
    s.tick(&mut w.ctx());
    assert_eq!(s.tail.sent(), 20_000);
    append(&path, "one\n");
    assert_eq!(s.growth_waits(w.now), None);
}

/// The only server turns a connection away at its connection limit (the
/// line it sends instead of its greeting): the file waits for a slot, as
/// one over `max_connections` does (so idle connections close after 1 s),
/// instead of retrying on its own back-off; until `SERVER_FULL_HOLD`
/// passed no more connections are opened than the server took.
#[test]
fn a_file_turned_away_at_the_servers_connection_limit_waits_for_a_slot() {
    use super::connection::{SERVER_FULL_HOLD, SERVER_FULL_SAY};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut w = World::new(vec![listener.local_addr().expect("addr").to_string()]);
    // Three other files' connections are open.
    w.links.open = 3;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("a.log");
    std::fs::write(&path, "one\n").expect("write");
    let key = Slots::<()>::default().vacant_key();
    let tail = w.settings.tail(true, false);
    let mut s = Stream::new(key, 0, path, None, Vec::new(), tail);
    s.on_file_event(&mut w.ctx());
    let (mut peer, _) = listener.accept().expect("accept");
    peer.write_all(b"503 Too many connections from your address\n")
        .expect("refuse");
    drop(peer);
    w.drive(&mut s, |s| s.link.is_none());
    assert_eq!(w.links.waiting, [key]);
    assert_eq!(w.links.open, 3);
    assert_eq!(w.links.cap.map(|(n, _)| n), Some(3));
    assert!(!w.links.room(w.now));
    // Its back-off retry comes and finds no room: it still waits.
    w.now += Duration::from_secs(1);
    s.tick(&mut w.ctx());
    assert!(
        s.link.is_none(),
        "no connection opened while the server is full"
    );
    assert_eq!(w.links.waiting, [key]);
    // A refusal while capped only lowers the cap (one more file's
    // connection closed meanwhile).
    w.links.open = 2;
    assert!(!w.links.server_full(w.now), "said once");
    assert_eq!(w.links.cap.map(|(n, _)| n), Some(2));
    // The hold passed: one more may be tried.
    w.now += SERVER_FULL_HOLD;
    assert!(w.links.room(w.now));
    w.links.open = 3;
    assert!(
        !w.links.server_full(w.now),
        "refused again: not said again yet"
    );
    assert_eq!(w.links.cap.map(|(n, _)| n), Some(3), "a new cap");
    w.now += SERVER_FULL_SAY;
    assert!(w.links.server_full(w.now), "said again after a while");
}

/// A refusal with nothing else open still leaves one connection.
#[test]
fn a_server_full_with_nothing_open_still_allows_one_connection() {
    let mut w = World::new(vec!["127.0.0.1:9".into()]);
    assert!(w.links.server_full(w.now));
    assert!(w.links.room(w.now));
    w.links.open = 1;
    assert!(!w.links.room(w.now));
}
