//! The record path over an in-memory socket pair whose buffers hold only
//! `cap` bytes, so every `WouldBlock`, partial write and split record is
//! hit without a kernel.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::Arc;

use super::{Socket, Tls, RX_QUANTUM, TX_LIMIT};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// One direction of the pair: bytes in flight and whether the writer
/// half-closed.
#[derive(Default)]
struct Wire {
    bytes: VecDeque<u8>,
    closed: bool,
}

struct MemSock {
    inbox: Rc<RefCell<Wire>>,
    outbox: Rc<RefCell<Wire>>,
    cap: usize,
    reads: usize,
}

fn pair(cap: usize) -> (MemSock, MemSock) {
    let (a, b) = (Rc::default(), Rc::default());
    let s = |inbox: &Rc<RefCell<Wire>>, outbox: &Rc<RefCell<Wire>>| MemSock {
        inbox: inbox.clone(),
        outbox: outbox.clone(),
        cap,
        reads: 0,
    };
    (s(&a, &b), s(&b, &a))
}

impl Read for MemSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        let mut w = self.inbox.borrow_mut();
        if w.bytes.is_empty() {
            return if w.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(w.bytes.len());
        for (slot, b) in buf.iter_mut().zip(w.bytes.drain(..n)) {
            *slot = b;
        }
        Ok(n)
    }
}

impl Write for MemSock {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut w = self.outbox.borrow_mut();
        let room = self.cap.saturating_sub(w.bytes.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(data.len());
        w.bytes.extend(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for MemSock {
    fn shutdown_write(&self) -> io::Result<()> {
        self.outbox.borrow_mut().closed = true;
        Ok(())
    }
}

fn sessions() -> (Tls, Tls) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["logs.test".to_string()]).expect("params");
    let cert: CertificateDer<'static> = params.self_signed(&key).expect("cert").der().clone();
    let key = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let provider = super::super::load::provider();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("logs.test").expect("name");
    let c = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
    let s = rustls::ServerConnection::new(Arc::new(server)).expect("server");
    (Tls::new(c.into()), Tls::new(s.into()))
}

/// Reads what `tls` has now into `into`; the error that ended it, if not
/// `WouldBlock`.
fn drain(tls: &mut Tls, sock: &mut MemSock, into: &mut Vec<u8>) -> Option<io::Error> {
    let mut buf = [0; 10_007];
    loop {
        match tls.read(sock, &mut buf) {
            Ok(0) => return None,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) => return Some(e),
        }
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Sends `payload` from client to server through sockets of `cap` bytes,
/// both sides making progress in turns; returns what the server read.
fn ship(cap: usize, payload: &[u8]) -> Vec<u8> {
    let (mut c, mut s) = sessions();
    let (mut cs, mut ss) = pair(cap);
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..100_000 {
        if sent < payload.len() {
            match c.write(&mut cs, &payload[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client write: {e}"),
            }
        } else {
            c.flush(&mut cs).expect("client flush");
        }
        // Drive the client's handshake as well (it reads the server's flight).
        assert!(drain(&mut c, &mut cs, &mut Vec::new()).is_none());
        assert!(drain(&mut s, &mut ss, &mut got).is_none());
        s.flush(&mut ss).expect("server flush");
        if got.len() == payload.len() {
            return got;
        }
    }
    panic!("stuck at {} of {} bytes", got.len(), payload.len());
}

#[test]
fn every_byte_arrives_through_small_and_odd_buffers() {
    let payload = data(300_001);
    for cap in [4096, 16_385, 1 << 20] {
        assert!(ship(cap, &payload) == payload, "cap {cap}");
    }
    let payload = data(3_001);
    for cap in [1, 7] {
        assert!(ship(cap, &payload) == payload, "cap {cap}");
    }
}

#[test]
fn writes_stop_at_the_buffer_limit_while_the_socket_is_full() {
    let (mut c, mut s) = sessions();
    let (mut cs, mut ss) = pair(64 * 1024);
    // Handshake first.
    for _ in 0..10 {
        c.flush(&mut cs).unwrap();
        drain(&mut s, &mut ss, &mut Vec::new());
        drain(&mut c, &mut cs, &mut Vec::new());
    }
    assert!(!c.conn.is_handshaking());
    // Nobody reads: what the client takes is bounded by the socket and
    // rustls's limit, then it says WouldBlock.
    let payload = data(4 << 20);
    let mut taken = 0;
    loop {
        match c.write(&mut cs, &payload[taken..]) {
            Ok(n) => taken += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(taken > 0);
    assert!(taken <= TX_LIMIT + 64 * 1024, "took {taken} bytes");
    // And once the server reads, the rest follows.
    let mut got = Vec::new();
    while got.len() < payload.len() {
        drain(&mut s, &mut ss, &mut got);
        match c.write(&mut cs, &payload[taken..]) {
            Ok(n) => taken += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        c.flush(&mut cs).unwrap();
    }
    assert!(got == payload);
}

#[test]
fn one_read_takes_many_records_and_few_syscalls() {
    let (mut c, mut s) = sessions();
    let (mut cs, mut ss) = pair(1 << 22);
    let payload = data(1 << 20);
    for _ in 0..10 {
        c.flush(&mut cs).unwrap();
        drain(&mut s, &mut ss, &mut Vec::new());
        drain(&mut c, &mut cs, &mut Vec::new());
    }
    let mut taken = 0;
    while taken < payload.len() {
        taken += c.write(&mut cs, &payload[taken..]).unwrap();
    }
    ss.reads = 0;
    let mut buf = vec![0; 256 * 1024];
    let n = s.read(&mut ss, &mut buf).unwrap();
    assert_eq!(
        n,
        buf.len(),
        "a read fills the caller's buffer across records"
    );
    assert!(
        ss.reads <= 256 * 1024 / RX_QUANTUM + 2,
        "{} socket reads for 256 KiB",
        ss.reads
    );
}

#[test]
fn close_notify_is_a_clean_end_and_the_other_side_still_answers() {
    let (mut c, mut s) = sessions();
    let (mut cs, mut ss) = pair(1 << 20);
    c.write(&mut cs, b"last line\n").unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        drain(&mut s, &mut ss, &mut got);
        drain(&mut c, &mut cs, &mut Vec::new());
        c.flush(&mut cs).unwrap();
    }
    c.shutdown_write(&mut cs).unwrap();
    assert!(
        cs.outbox.borrow().closed,
        "TCP half-close after close_notify"
    );
    assert!(drain(&mut s, &mut ss, &mut got).is_none());
    assert_eq!(got, b"last line\n");
    let mut buf = [0; 16];
    assert_eq!(s.read(&mut ss, &mut buf).unwrap(), 0, "end of stream");
    // The server answers after the client's close_notify (`250 DONE`).
    s.write(&mut ss, b"250 DONE 10\n").unwrap();
    let mut answer = Vec::new();
    assert!(drain(&mut c, &mut cs, &mut answer).is_none());
    assert_eq!(answer, b"250 DONE 10\n");
    // Idle, the connection holds no ciphertext buffer.
    assert_eq!(s.held(), 0);
}

#[test]
fn a_tcp_end_without_close_notify_is_an_error_not_an_end() {
    let (mut c, mut s) = sessions();
    let (mut cs, mut ss) = pair(1 << 20);
    c.write(&mut cs, b"line\n").unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        drain(&mut s, &mut ss, &mut got);
        drain(&mut c, &mut cs, &mut Vec::new());
        c.flush(&mut cs).unwrap();
    }
    assert_eq!(got, b"line\n");
    cs.shutdown_write().unwrap(); // a FIN, no close_notify
    let e = drain(&mut s, &mut ss, &mut got).expect("an error");
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn plaintext_from_a_non_tls_peer_is_a_tls_failure() {
    let (mut c, _) = sessions();
    let (mut cs, mut ss) = pair(1 << 20);
    c.flush(&mut cs).unwrap();
    ss.write_all(b"### Welcome to LogHamster server v0.1.0\n")
        .unwrap();
    let e = drain(&mut c, &mut cs, &mut Vec::new()).expect("an error");
    let f = super::super::failure(&e).expect("a TLS failure");
    assert!(f.to_string().contains("does not speak TLS"), "{f}");
}
