//! `[output.NAME.jetstream]`: an output that is a NATS JetStream stream
//! instead of a file (see [`crate::sink::jetstream`]).
//!
//! ```toml
//! [output.logs]
//! match = { svc = "*" }
//! [output.logs.jetstream]
//! servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
//! stream = "LOGS"                         # must exist, created by the operator
//! subject = "logs.{host}.{svc}.{path}"    # tokens escaped, see sink::jetstream::subject
//! # user = "gw" / password = "..." | token = "..." | creds_file = "/etc/loghamster/gw.creds"
//! # tls_ca = "/etc/loghamster/nats-ca.pem"  # verify the servers with this CA (and require TLS)
//! # max_message = "1MiB"                  # largest message (capped by the servers' max_payload)
//! # max_outstanding = 64                  # messages published and not yet acknowledged, at most
//! # ack_timeout = "5s"                    # a publish not acknowledged by then is sent again
//! ```
//!
//! An output has either a `path` or a `jetstream` table. Every error names
//! the key, on one line.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Doc, DurationValue, SizeValue};
use crate::sink::jetstream::subject::SubjectTemplate;

/// Room kept in each message for its headers, below the servers'
/// `max_payload` (which counts headers too).
pub const HEADER_ROOM: usize = 8 << 10;

/// A validated `[output.NAME.jetstream]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// `nats://host:port` (or `tls://`) URLs, at least one, all parsed.
    pub servers: Vec<String>,
    /// The JetStream stream's name (it must exist and cover the subjects).
    pub stream: String,
    /// `subject` as written, and parsed.
    pub subject_text: String,
    pub subject: SubjectTemplate,
    pub auth: NatsAuth,
    /// `tls_ca`: trust these roots and require TLS.
    pub tls_ca: Option<PathBuf>,
    /// Largest message payload, headers excluded; at least 1 KiB.
    pub max_message: usize,
    /// Messages in flight to JetStream for this output, at least 1.
    pub max_outstanding: usize,
    pub ack_timeout: Duration,
}

/// How the gateway authenticates to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    UserPassword { user: String, password: String },
    Token(String),
    CredsFile(PathBuf),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJetStream {
    servers: Option<Spanned<Vec<Spanned<String>>>>,
    stream: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    creds_file: Option<Spanned<PathBuf>>,
    tls_ca: Option<Spanned<PathBuf>>,
    max_message: Option<Spanned<SizeValue>>,
    max_outstanding: Option<Spanned<usize>>,
    ack_timeout: Option<Spanned<DurationValue>>,
}

impl RawJetStream {
    /// Validates the table of output `name`; `at` is its span, for the
    /// errors about a missing key.
    pub(crate) fn validate(
        self,
        doc: &Doc<'_>,
        name: &str,
        at: std::ops::Range<usize>,
    ) -> Result<JetStreamConfig, ConfigError> {
        let key = |k: &str| format!("`output.{name}.jetstream.{k}`");
        let missing = |k: &str| doc.err_at(at.clone(), format!("{} is missing", key(k)));
        let servers = self.servers.ok_or_else(|| missing("servers"))?;
        if servers.get_ref().is_empty() {
            return Err(doc.err_at(servers.span(), format!("{} is empty", key("servers"))));
        }
        let mut urls = Vec::new();
        for s in servers.into_inner() {
            if let Err(e) = s.get_ref().parse::<async_nats::ServerAddr>() {
                return Err(doc.err_at(
                    s.span(),
                    format!("{}: {:?} is not a server URL ({e}); expected e.g. \"nats://127.0.0.1:4222\"", key("servers"), s.get_ref()),
                ));
            }
            urls.push(s.into_inner());
        }
        let stream = self.stream.ok_or_else(|| missing("stream"))?;
        let ok_name = |n: &str| {
            !n.is_empty()
                && !n.contains(|c: char| {
                    matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace() || c.is_control()
                })
        };
        if !ok_name(stream.get_ref()) {
            return Err(doc.err_at(
                stream.span(),
                format!("{}: {:?} is not a JetStream stream name (no '.', '*', '>', '/', '\\' or spaces)", key("stream"), stream.get_ref()),
            ));
        }
        let subject = self.subject.ok_or_else(|| missing("subject"))?;
        let template = SubjectTemplate::parse(subject.get_ref())
            .map_err(|e| doc.err_at(subject.span(), format!("{}: {e}", key("subject"))))?;
        let auth = auth(
            doc,
            &key,
            self.user,
            self.password,
            self.token,
            self.creds_file,
        )?;
        let max_message = match self.max_message {
            None => 1 << 20,
            Some(m) if m.get_ref().0 < 1024 => {
                return Err(doc.err_at(
                    m.span(),
                    format!("{} must be at least 1KiB", key("max_message")),
                ))
            }
            Some(m) => m.into_inner().0,
        };
        let max_outstanding = match self.max_outstanding {
            None => 64,
            Some(m) if *m.get_ref() == 0 => {
                return Err(doc.err_at(
                    m.span(),
                    format!("{} must be at least 1", key("max_outstanding")),
                ))
            }
            Some(m) => m.into_inner(),
        };
        let ack_timeout = match self.ack_timeout {
            None => Duration::from_secs(5),
            Some(t) if t.get_ref().0.is_zero() => {
                return Err(doc.err_at(
                    t.span(),
                    format!("{} must be greater than 0", key("ack_timeout")),
                ))
            }
            Some(t) => t.into_inner().0,
        };
        Ok(JetStreamConfig {
            servers: urls,
            stream: stream.into_inner(),
            subject_text: subject.into_inner(),
            subject: template,
            auth,
            tls_ca: self.tls_ca.map(Spanned::into_inner),
            max_message,
            max_outstanding,
            ack_timeout,
        })
    }
}

/// One way to authenticate, or none; two at once is an error.
fn auth(
    doc: &Doc<'_>,
    key: &dyn Fn(&str) -> String,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    creds: Option<Spanned<PathBuf>>,
) -> Result<NatsAuth, ConfigError> {
    let spans: Vec<(&str, std::ops::Range<usize>)> = [
        ("user", user.as_ref().map(|s| s.span())),
        ("token", token.as_ref().map(|s| s.span())),
        ("creds_file", creds.as_ref().map(|s| s.span())),
    ]
    .into_iter()
    .filter_map(|(k, s)| Some((k, s?)))
    .collect();
    if let [(a, _), (b, span), ..] = spans.as_slice() {
        return Err(doc.err_at(
            span.clone(),
            format!(
                "{} and {} are two ways to authenticate; choose one",
                key(a),
                key(b)
            ),
        ));
    }
    match (user, password, token, creds) {
        (Some(u), Some(p), None, None) => Ok(NatsAuth::UserPassword {
            user: u.into_inner(),
            password: p.into_inner(),
        }),
        (Some(u), None, ..) => Err(doc.err_at(
            u.span(),
            format!("{} needs a {}", key("user"), key("password")),
        )),
        (None, Some(p), ..) => Err(doc.err_at(
            p.span(),
            format!("{} needs a {}", key("password"), key("user")),
        )),
        (None, None, Some(t), None) => Ok(NatsAuth::Token(t.into_inner())),
        (None, None, None, Some(c)) => Ok(NatsAuth::CredsFile(c.into_inner())),
        _ => Ok(NatsAuth::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::server::OutputKind;
    use crate::config::ServerConfig;

    const HEAD: &str = "[output.logs]\n[output.logs.jetstream]\n";

    fn load(body: &str) -> Result<ServerConfig, String> {
        ServerConfig::from_toml_str(&format!("{HEAD}{body}"), "server.toml")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_jetstream_output_is_read_with_its_defaults() {
        let c = load(
            "servers = [\"nats://127.0.0.1:4222\", \"tls://n2:4222\"]\nstream = \"LOGS\"\nsubject = \"logs.{host}.{path}\"\ncreds_file = \"/etc/gw.creds\"\n",
        )
        .unwrap();
        let OutputKind::JetStream(js) = &c.outputs[0].kind else {
            panic!("a JetStream output");
        };
        assert_eq!(js.servers.len(), 2);
        assert_eq!(js.auth, NatsAuth::CredsFile("/etc/gw.creds".into()));
        assert_eq!((js.max_message, js.max_outstanding), (1 << 20, 64));
        assert_eq!(js.ack_timeout, Duration::from_secs(5));
    }

    #[test]
    fn every_mistake_is_one_line_naming_the_key() {
        let ok =
            "servers = [\"nats://127.0.0.1:4222\"]\nstream = \"LOGS\"\nsubject = \"logs.{host}\"\n";
        for (body, want) in [
            (
                "stream = \"LOGS\"\nsubject = \"a\"\n",
                "`output.logs.jetstream.servers` is missing",
            ),
            (
                "servers = []\nstream = \"L\"\nsubject = \"a\"\n",
                "`output.logs.jetstream.servers` is empty",
            ),
            (
                "servers = [\"nats://[::1\"]\nstream = \"L\"\nsubject = \"a\"\n",
                "`output.logs.jetstream.servers`",
            ),
            (
                "servers = [\"nats://h:1\"]\nsubject = \"a\"\n",
                "`output.logs.jetstream.stream` is missing",
            ),
            (
                "servers = [\"nats://h:1\"]\nstream = \"a.b\"\nsubject = \"a\"\n",
                "`output.logs.jetstream.stream`: \"a.b\"",
            ),
            (
                "servers = [\"nats://h:1\"]\nstream = \"L\"\nsubject = \"a..b\"\n",
                "`output.logs.jetstream.subject`: ",
            ),
            (
                "servers = [\"nats://h:1\"]\nstream = \"L\"\nsubject = \"a.{x}\"\n",
                "unknown placeholder {x}",
            ),
            (
                &format!("{ok}user = \"u\"\n"),
                "`output.logs.jetstream.user` needs a `output.logs.jetstream.password`",
            ),
            (
                &format!("{ok}token = \"t\"\ncreds_file = \"c\"\n"),
                "two ways to authenticate",
            ),
            (
                &format!("{ok}max_message = 10\n"),
                "`output.logs.jetstream.max_message` must be at least 1KiB",
            ),
            (
                &format!("{ok}max_outstanding = 0\n"),
                "`output.logs.jetstream.max_outstanding` must be at least 1",
            ),
            (
                &format!("{ok}ack_timeout = \"0s\"\n"),
                "`output.logs.jetstream.ack_timeout` must be greater than 0",
            ),
        ] {
            let e = load(body).expect_err(body);
            assert!(e.contains(want), "{body:?}: {e}");
            assert!(!e.trim_end().contains('\n') || e.contains("hint"), "{e}");
        }
        let both = ServerConfig::from_toml_str(
            &format!("[output.logs]\npath = \"/x/{{host}}\"\n[output.logs.jetstream]\n{ok}"),
            "s.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            both.contains("both a `path` and a `jetstream` table"),
            "{both}"
        );
    }
}
