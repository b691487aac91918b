//! TCP fault-injection proxy for end-to-end tests (client -> proxy -> server on 127.0.0.1).
//!
//! `Proxy::start(upstream)` listens on an ephemeral local port and forwards every accepted
//! connection to `upstream`. Faults: `cut()` (abrupt close of all live connections),
//! `set_stalled(true)` (nothing forwarded, data waits), `set_slow(Some(n))` (n-byte chunks with
//! 1 ms pauses). Half-closes pass through (EOF on one side => `shutdown(Write)` on the other);
//! I/O errors close the whole connection. Std only; threads poll flags via 10 ms socket
//! timeouts, so `Drop` returns promptly.

use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

const BUF_SIZE: usize = 64 * 1024;
const POLL: Duration = Duration::from_millis(10);
const TICK: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    stalled: AtomicBool,
    slow: AtomicUsize, // 0 = full speed, otherwise max bytes per chunk
    accepted: AtomicUsize,
    cut_gen: AtomicU64, // bumped by `cut()`; pumps of an older generation exit
    conns: Mutex<Vec<(u64, TcpStream, TcpStream)>>, // (id, client, upstream) clones
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn alive(&self, gen: u64) -> bool {
        !self.stop.load(SeqCst) && self.cut_gen.load(SeqCst) == gen
    }

    /// Waits out a stall; false if the connection must close (cut or stop).
    fn ready(&self, gen: u64) -> bool {
        while self.alive(gen) {
            if !self.stalled.load(SeqCst) {
                return true;
            }
            thread::sleep(TICK);
        }
        false
    }
}

/// Locks, ignoring poisoning (a panicking test thread must not cascade into the proxy).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn retryable(e: &io::Error) -> bool {
    matches!(e.kind(), WouldBlock | TimedOut | Interrupted)
}

fn close_both(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// TCP proxy with injectable faults. Dropping it stops all threads and closes every socket.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards every accepted connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind");
        let addr = listener.local_addr().expect("proxy: local_addr");
        listener.set_nonblocking(true).expect("proxy: nonblocking");
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let accept_thread = Some(thread::spawn(move || accept_loop(listener, upstream, sh)));
        Proxy {
            addr,
            shared,
            accept_thread,
        }
    }

    /// Address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every current connection abruptly on both sides (shutdown(Both) then drop),
    /// like a network cut. New connections are still accepted afterwards.
    pub fn cut(&self) {
        let mut conns = lock(&self.shared.conns);
        self.shared.cut_gen.fetch_add(1, SeqCst);
        for (_, c, u) in conns.drain(..) {
            close_both(&c, &u);
        }
    }

    /// While stalled, no bytes are forwarded in either direction (connections stay open; data waits).
    pub fn set_stalled(&self, on: bool) {
        self.shared.stalled.store(on, SeqCst);
    }

    /// When `Some(n)`, forward at most n bytes per chunk and sleep 1 ms between chunks
    /// (a slow link); `None` = full speed.
    pub fn set_slow(&self, chunk: Option<usize>) {
        let n = chunk.map_or(0, |n| n.clamp(1, BUF_SIZE));
        self.shared.slow.store(n, SeqCst);
    }

    /// Number of connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        self.cut();
        let pumps: Vec<_> = lock(&self.shared.pumps).drain(..).collect();
        for p in pumps {
            let _ = p.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, sh: Arc<Shared>) {
    let mut next_id = 0u64;
    while !sh.stop.load(SeqCst) {
        let Ok((client, _)) = listener.accept() else {
            thread::sleep(TICK);
            continue;
        };
        sh.accepted.fetch_add(1, SeqCst);
        let Ok(up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue; // upstream unreachable: just close the client
        };
        next_id += 1;
        // On setup failure (fd exhaustion etc.) the streams are dropped, i.e. closed.
        let _ = spawn_conn(next_id, client, up, &sh);
    }
}

fn spawn_conn(id: u64, client: TcpStream, up: TcpStream, sh: &Arc<Shared>) -> io::Result<()> {
    for s in [&client, &up] {
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(POLL))?;
        s.set_write_timeout(Some(POLL))?;
        let _ = s.set_nodelay(true);
    }
    let (c2, u2) = (client.try_clone()?, up.try_clone()?);
    let gen = {
        let mut conns = lock(&sh.conns);
        conns.push((id, client.try_clone()?, up.try_clone()?));
        sh.cut_gen.load(SeqCst)
    };
    let remaining = Arc::new(AtomicUsize::new(2));
    let mut pumps = lock(&sh.pumps);
    pumps.retain(|h| !h.is_finished());
    for (from, to) in [(c2, u2), (up, client)] {
        let (sh2, remaining) = (sh.clone(), remaining.clone());
        let spawned = thread::Builder::new().spawn(move || {
            pump(&sh2, gen, from, to);
            if remaining.fetch_sub(1, SeqCst) == 1 {
                forget(&sh2, id);
            }
        });
        // On failure, close the connection; the other pump (if any) then exits.
        pumps.push(spawned.inspect_err(|_| forget(sh, id))?);
    }
    Ok(())
}

/// Closes and unregisters connection `id`.
fn forget(sh: &Shared, id: u64) {
    let mut conns = lock(&sh.conns);
    for (_, c, u) in conns.iter().filter(|(i, _, _)| *i == id) {
        close_both(c, u);
    }
    conns.retain(|(i, _, _)| *i != id);
}

/// Copies `from` -> `to` until EOF (then half-closes `to`); on error, cut or stop closes both.
fn pump(sh: &Shared, gen: u64, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; BUF_SIZE];
    while sh.ready(gen) {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write); // pass the half-close through
                return;
            }
            Ok(n) if send(sh, gen, &mut to, &buf[..n]) => {}
            Err(e) if retryable(&e) => {}
            _ => break,
        }
    }
    close_both(&from, &to);
}

/// Writes all of `data` honoring stall and slow mode; false on write error, cut or stop.
fn send(sh: &Shared, gen: u64, to: &mut TcpStream, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        if !sh.ready(gen) {
            return false;
        }
        let slow = sh.slow.load(SeqCst);
        let limit = if slow == 0 { usize::MAX } else { slow };
        match to.write(&data[..limit.min(data.len())]) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(e) if retryable(&e) => continue,
            Err(_) => return false,
        }
        if slow != 0 {
            thread::sleep(TICK);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Receiver};
    use std::time::Instant;

    const T: Duration = Duration::from_secs(5);

    /// Echo server; sends on the channel whenever a connection's read side ends (EOF/error).
    fn echo_server() -> (SocketAddr, Receiver<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr, (tx, rx)) = (l.local_addr().unwrap(), channel());
        thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = (tx.send(()), s.shutdown(Shutdown::Write));
                });
            }
        });
        (addr, rx)
    }

    /// Starts an echo server behind a proxy and connects a client (5 s read timeout).
    fn setup() -> (Proxy, TcpStream, Receiver<()>) {
        let (up, rx) = echo_server();
        let p = Proxy::start(up);
        let c = TcpStream::connect(p.addr()).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        (p, c, rx)
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }

    /// Drains the stream; true if it ends with EOF or an error (not a timeout) within `T`.
    fn sees_close(s: &mut TcpStream) -> bool {
        s.read_to_end(&mut Vec::new())
            .map_or_else(|e| !retryable(&e), |_| true)
    }

    #[test]
    fn passes_data_and_half_close() {
        let (p, mut c, rx) = setup();
        roundtrip(&mut c, b"hello\n");
        c.write_all(b"line1\nline2\n").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        rx.recv_timeout(T).expect("server saw EOF");
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"line1\nline2\n");
        assert_eq!(p.accepted(), 1);
    }

    #[test]
    fn cut_closes_both_ends_and_new_connections_work() {
        let (p, mut c, rx) = setup();
        roundtrip(&mut c, b"ping");
        p.cut();
        rx.recv_timeout(T).expect("server saw the cut");
        assert!(sees_close(&mut c), "client saw the cut");
        roundtrip(&mut TcpStream::connect(p.addr()).unwrap(), b"again");
        assert_eq!(p.accepted(), 2);
    }

    #[test]
    fn stall_holds_data_until_released() {
        let (p, mut c, _rx) = setup();
        roundtrip(&mut c, b"ping");
        p.set_stalled(true);
        c.write_all(b"held").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 4];
        assert!(matches!(c.read(&mut b), Err(e) if retryable(&e)), "leaked");
        p.set_stalled(false);
        c.set_read_timeout(Some(T)).unwrap();
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"held");
    }

    #[test]
    fn slow_mode_delivers_everything_intact() {
        let (p, mut c, _rx) = setup();
        p.set_slow(Some(1000));
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut w, sent) = (c.try_clone().unwrap(), data.clone());
        let writer = thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == data, "corrupted: got {} bytes", got.len());
    }

    #[test]
    fn upstream_down_closes_client() {
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let p = Proxy::start(dead);
        let mut c = TcpStream::connect(p.addr()).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        assert!(sees_close(&mut c));
        assert_eq!(p.accepted(), 1);
    }

    #[test]
    fn drop_is_prompt_and_closes_connections() {
        let (p, mut c, rx) = setup();
        roundtrip(&mut c, b"ping");
        p.set_stalled(true);
        let t = Instant::now();
        drop(p);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "drop took {:?}",
            t.elapsed()
        );
        assert!(sees_close(&mut c));
        rx.recv_timeout(T).expect("server saw close");
    }
}
