//! TLS end to end: the real binaries on loopback, with certificates made
//! at run time (rcgen) in temp dirs. Shipping through TLS, mutual TLS
//! refusing clients without a trusted certificate, a plain client against
//! a listener that requires TLS, a server certificate for another name,
//! bad files at start-up, and SIGHUP rotating the certificate.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SerialNumber,
};

/// A CA that signs certificates into PEM files in `dir`.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
    name: String,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        let ca = Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        std::fs::write(ca.pem(), ca.cert.pem()).unwrap();
        ca
    }

    fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    /// Issues a certificate for `names` with `serial`; writes `<file>.crt`
    /// and `<file>.key`, returns their paths.
    fn issue(&self, file: &str, names: &[&str], serial: u64, client: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// A TLS server into `out` with the `[tls]` lines `tls`.
fn tls_server(dir: &Path, out: &Path, tls: &str) -> Server {
    server_with(dir, out, &format!("[tls]\n{tls}"))
}

fn server_tls(cert: &Path, key: &Path) -> String {
    format!(
        "cert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

/// A client config for `file` as host `host` (state in `dir`), with the
/// `[tls]` lines `tls` (none at all when `None`).
fn tls_client(dir: &Path, server: &Server, host: &str, file: &Path, tls: Option<&str>) -> Proc {
    tls_client_with(dir, server, host, file, tls, "")
}

/// [`tls_client`] with more `[server]` keys.
fn tls_client_with(
    dir: &Path,
    server: &Server,
    host: &str,
    file: &Path,
    tls: Option<&str>,
    more: &str,
) -> Proc {
    let cfg = dir.join(format!("{host}.toml"));
    let mut text = format!(
        "state_file = \"{}\"\nhostname = \"{host}\"\n[server]\nhostname = \"127.0.0.1\"\nport = {}\n{more}[[stream]]\npath = \"{}\"\n",
        dir.join(format!("{host}.state")).display(),
        server.port(),
        file.display()
    );
    if let Some(tls) = tls {
        text.push_str("[tls]\n");
        text.push_str(tls);
    }
    std::fs::write(&cfg, text).unwrap();
    client(&["--config", cfg.to_str().unwrap()])
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    (dir, out, logs)
}

#[test]
fn tls_ships_a_file_with_every_line() {
    let (dir, out, logs) = setup();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.issue("server", &["logs.test", "127.0.0.1"], 1, false);
    let server = tls_server(dir.path(), &out, &server_tls(&cert, &key));
    server.proc.wait_log("plain TCP refused");
    let file = logs.join("app.log");
    append_lines(&file, "tls", 0, 20_000);
    let tls = format!("ca = \"{}\"\n", ca.pem().display());
    let _c = tls_client(dir.path(), &server, "web1", &file, Some(&tls));
    wait_content(&routed(&out, "web1", &file), &expected("tls", 0, 20_000));
    // More lines on the same (TLS) connection or a new one.
    append_lines(&file, "tls", 20_000, 30_000);
    wait_content(&routed(&out, "web1", &file), &expected("tls", 0, 30_000));
}

#[test]
fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let (dir, out, logs) = setup();
    let ca = Ca::new(dir.path(), "ca");
    let clients = Ca::new(dir.path(), "clients");
    let stranger = Ca::new(dir.path(), "stranger");
    let (cert, key) = ca.issue("server", &["127.0.0.1"], 1, false);
    let tls = format!(
        "{}client_ca = \"{}\"\n",
        server_tls(&cert, &key),
        clients.pem().display()
    );
    let server = tls_server(dir.path(), &out, &tls);
    server.proc.wait_log("client certificates required");
    let trust = format!("ca = \"{}\"\n", ca.pem().display());

    // No certificate: both sides say why.
    let file = logs.join("nocert.log");
    append_lines(&file, "n", 0, 10);
    let c = tls_client(dir.path(), &server, "nocert", &file, Some(&trust));
    c.wait_log("the server requires a client certificate");
    server
        .proc
        .wait_log("the client presented no certificate, but this server requires one");
    drop(c);

    // A certificate from a CA the server does not trust.
    let (sc, sk) = stranger.issue("stranger-client", &["web9"], 9, true);
    let file = logs.join("stranger.log");
    append_lines(&file, "s", 0, 10);
    let with_cert = |c: &Path, k: &Path| {
        format!(
            "{trust}cert = \"{}\"\nkey = \"{}\"\n",
            c.display(),
            k.display()
        )
    };
    let c = tls_client(
        dir.path(),
        &server,
        "stranger",
        &file,
        Some(&with_cert(&sc, &sk)),
    );
    c.wait_log("the peer refused our certificate");
    server
        .proc
        .wait_log("the peer's certificate is not signed by a trusted CA");
    drop(c);

    // A trusted one gets through.
    let (cc, ck) = clients.issue("web1-client", &["web1"], 5, true);
    let file = logs.join("good.log");
    append_lines(&file, "g", 0, 1000);
    let _c = tls_client(
        dir.path(),
        &server,
        "web1",
        &file,
        Some(&with_cert(&cc, &ck)),
    );
    wait_content(&routed(&out, "web1", &file), &expected("g", 0, 1000));
    // The refused ones never reached INIT, so nothing of theirs exists.
    assert!(!out.join("nocert").exists());
    assert!(!out.join("stranger").exists());
}

#[test]
fn a_plain_client_is_refused_by_a_listener_that_requires_tls() {
    let (dir, out, logs) = setup();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.issue("server", &["127.0.0.1"], 1, false);
    let server = tls_server(dir.path(), &out, &server_tls(&cert, &key));
    // A raw client reads the refusal in plain text.
    let mut raw = Raw::connect(server.addr);
    assert_eq!(raw.line(), "403 TLS required\n");
    // loghamsterc without [tls] says so.
    let file = logs.join("plain.log");
    append_lines(&file, "p", 0, 10);
    let c = tls_client(dir.path(), &server, "plain", &file, None);
    c.wait_log("server refused the connection: 403 TLS required");
    server
        .proc
        .wait_log("plain TCP connection refused: this listener requires TLS");
    assert!(!out.join("plain").exists());
}

#[test]
fn a_listener_that_does_not_require_tls_takes_both() {
    let (dir, out, logs) = setup();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.issue("server", &["127.0.0.1"], 1, false);
    let tls = format!("{}require = false\n", server_tls(&cert, &key));
    let server = tls_server(dir.path(), &out, &tls);
    server.proc.wait_log("plain TCP accepted too");
    let (plain, secure) = (logs.join("plain.log"), logs.join("secure.log"));
    append_lines(&plain, "p", 0, 2000);
    append_lines(&secure, "s", 0, 2000);
    let trust = format!("ca = \"{}\"\n", ca.pem().display());
    let _a = tls_client(dir.path(), &server, "plain", &plain, None);
    let _b = tls_client(dir.path(), &server, "secure", &secure, Some(&trust));
    wait_content(&routed(&out, "plain", &plain), &expected("p", 0, 2000));
    wait_content(&routed(&out, "secure", &secure), &expected("s", 0, 2000));
}

#[test]
fn the_client_refuses_a_server_certificate_for_another_name() {
    let (dir, out, logs) = setup();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.issue("server", &["logs.test", "127.0.0.1"], 1, false);
    let server = tls_server(dir.path(), &out, &server_tls(&cert, &key));
    let file = logs.join("app.log");
    append_lines(&file, "x", 0, 10);
    let tls = format!(
        "ca = \"{}\"\nserver_name = \"other.test\"\n",
        ca.pem().display()
    );
    let c = tls_client(dir.path(), &server, "web1", &file, Some(&tls));
    c.wait_log("not valid for the expected server name");
    // The handshake failed before INIT: nothing of it reached an output.
    assert!(!out.join("web1").exists());
    drop(c);
    // With the certificate's name it goes through.
    let tls = format!(
        "ca = \"{}\"\nserver_name = \"logs.test\"\n",
        ca.pem().display()
    );
    let _c = tls_client(dir.path(), &server, "web1", &file, Some(&tls));
    wait_content(&routed(&out, "web1", &file), &expected("x", 0, 10));
}

/// Runs a binary with `--check-config` on a config; its exit code and
/// stderr.
fn check(bin: &str, cfg: &Path) -> (i32, String) {
    let o = Command::new(bin)
        .args(["--check-config", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bad_tls_files_stop_start_up_with_one_line_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let (cert, key) = ca.issue("server", &["127.0.0.1"], 1, false);
    let (_, other_key) = ca.issue("other", &["127.0.0.1"], 2, false);
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "hello\n").unwrap();
    let missing = d.join("missing.crt");
    let server_cfg = |tls: &str| {
        let p = d.join("server.toml");
        std::fs::write(&p, format!("listen = \"127.0.0.1:0\"\n[tls]\n{tls}")).unwrap();
        p
    };
    let cases = [
        (
            server_tls(&missing, &key),
            format!(
                "cannot read TLS certificate {}: No such file",
                missing.display()
            ),
        ),
        (
            server_tls(&cert, &other_key),
            format!(
                "TLS key {} does not belong to certificate {}",
                other_key.display(),
                cert.display()
            ),
        ),
        (
            server_tls(&garbage, &key),
            format!(
                "TLS certificate {}: contains no PEM certificate",
                garbage.display()
            ),
        ),
        (
            server_tls(&cert, &garbage),
            format!("TLS key {}: contains no PEM private key", garbage.display()),
        ),
        (
            format!(
                "{}client_ca = \"{}\"\n",
                server_tls(&cert, &key),
                garbage.display()
            ),
            format!(
                "TLS CA file {}: contains no PEM certificate",
                garbage.display()
            ),
        ),
        (
            format!("cert = \"{}\"\n", cert.display()),
            "[tls]: `cert` without `key`".to_string(),
        ),
    ];
    for (tls, want) in cases {
        let (code, err) = check(SERVER_BIN, &server_cfg(&tls));
        assert_eq!(code, 2, "{tls}: {err}");
        assert!(err.contains(&want), "{tls}\nwant {want}\ngot {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    // The server itself stops at start-up the same way.
    let mut s = Command::new(SERVER_BIN);
    s.args([
        "--config",
        server_cfg(&server_tls(&cert, &other_key)).to_str().unwrap(),
    ]);
    let o = s.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not belong to certificate"));

    let client_cfg = |tls: &str| {
        let p = d.join("client.toml");
        std::fs::write(
            &p,
            format!(
                "[server]\nhostname = \"127.0.0.1\"\n[[stream]]\npath = \"/tmp/x\"\n[tls]\n{tls}"
            ),
        )
        .unwrap();
        p
    };
    let cases = [
        (
            format!("ca = \"{}\"\n", missing.display()),
            format!("cannot read TLS CA file {}", missing.display()),
        ),
        (
            format!(
                "ca = \"{}\"\ncert = \"{}\"\n",
                ca.pem().display(),
                cert.display()
            ),
            "[tls]: `cert` without `key`".to_string(),
        ),
        (
            format!(
                "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                ca.pem().display(),
                cert.display(),
                other_key.display()
            ),
            "does not belong to certificate".to_string(),
        ),
        (
            "server_name = \"bad name\"\n".to_string(),
            "`tls.server_name` \"bad name\"".to_string(),
        ),
    ];
    for (tls, want) in cases {
        let (code, err) = check(CLIENT_BIN, &client_cfg(&tls));
        assert_eq!(code, 2, "{tls}: {err}");
        assert!(err.contains(&want), "{tls}\nwant {want}\ngot {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

/// Connects with TLS trusting `ca`, reads the greeting, and returns the
/// serial number (hex) of the certificate the server presented.
fn presented_serial(server: &Server, ca: &Path) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for c in loghamster::tls::load::load_certs("CA file", ca).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(loghamster::tls::load::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut greeting = Vec::new();
    let mut byte = [0u8; 1];
    while !greeting.ends_with(b"\n") {
        assert_eq!(tls.read(&mut byte).unwrap(), 1, "greeting");
        greeting.push(byte[0]);
    }
    assert!(greeting.starts_with(b"### Welcome to LogHamster"));
    let cert = tls.conn.peer_certificates().unwrap()[0].clone();
    let _ = tls.write_all(b"");
    let described = loghamster::tls::describe(&cert);
    described
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("serial ")
        .to_string()
}

#[test]
fn sighup_rotates_the_certificate_and_a_bad_one_keeps_the_old() {
    let (dir, out, _) = setup();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.issue("server", &["127.0.0.1"], 0x11, false);
    let server = tls_server(dir.path(), &out, &server_tls(&cert, &key));
    assert_eq!(presented_serial(&server, &ca.pem()), "11");

    // Rotate: a new certificate and key at the same paths.
    ca.issue("server", &["127.0.0.1"], 0x22, false);
    server.proc.signal("HUP");
    server.proc.wait_log("SIGHUP: reloaded TLS certificate");
    assert!(server.proc.log().contains("serial 22"));
    assert_eq!(presented_serial(&server, &ca.pem()), "22");

    // A key that does not match: logged, and the old pair stays.
    let (_, other_key) = ca.issue("other", &["127.0.0.1"], 0x33, false);
    std::fs::copy(&other_key, &key).unwrap();
    server.proc.signal("HUP");
    server
        .proc
        .wait_log("SIGHUP: TLS reload failed, keeping the certificate in use");
    assert_eq!(presented_serial(&server, &ca.pem()), "22");
}

#[test]
fn a_client_certificate_is_the_identity_allow_rules_match() {
    client_certificate_identity("");
}

/// Through a multiplexed connection, each channel has the connection's
/// certificate as its identity.
#[test]
fn a_client_certificate_is_the_identity_of_every_multiplexed_stream() {
    client_certificate_identity("multiplex = true\n");
}

fn client_certificate_identity(more: &str) {
    let (dir, out, logs) = setup();
    let ca = Ca::new(dir.path(), "ca");
    let clients = Ca::new(dir.path(), "clients");
    let (cert, key) = ca.issue("server", &["127.0.0.1"], 1, false);
    let tls = format!(
        "{}client_ca = \"{}\"\n[[allow]]\ncert = \"web*.example\"\nhosts = [\"web1\"]\noutputs = [\"(default)\"]\n",
        server_tls(&cert, &key),
        clients.pem().display()
    );
    let server = tls_server(dir.path(), &out, &tls);
    let trust = format!("ca = \"{}\"\n", ca.pem().display());
    let with_cert = |c: &Path, k: &Path| {
        format!(
            "{trust}cert = \"{}\"\nkey = \"{}\"\n",
            c.display(),
            k.display()
        )
    };
    // web1.example may write host web1.
    let (c1, k1) = clients.issue("web1", &["web1.example"], 7, true);
    let file = logs.join("a.log");
    append_lines(&file, "a", 0, 500);
    let _a = tls_client_with(
        dir.path(),
        &server,
        "web1",
        &file,
        Some(&with_cert(&c1, &k1)),
        more,
    );
    wait_content(&routed(&out, "web1", &file), &expected("a", 0, 500));
    // A certificate the CA signed but no rule names is refused at INIT,
    // and the refusal names the certificate's identity.
    let (c2, k2) = clients.issue("db1", &["db1.example"], 8, true);
    let file = logs.join("b.log");
    append_lines(&file, "b", 0, 10);
    let b = tls_client_with(
        dir.path(),
        &server,
        "db1",
        &file,
        Some(&with_cert(&c2, &k2)),
        more,
    );
    b.wait_log("server refused the stream: 403");
    server.proc.wait_log("db1.example");
    assert!(!out.join("db1").exists());
}
