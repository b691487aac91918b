//! Attaching a stream: from the INIT line to a [`Attachment`] bound to an
//! output, or to a refusal line.
//!
//! The steps, each of which may refuse: read INIT (incrementally, at most
//! one line), parse what it asks for ([`Request`]: pure), identify the
//! client (`401` for a bad token), route the stream, check that its
//! identity may write it there (`403`) and may take it over (`409`; see
//! [`auth`]), open the output, take over its resume slot (a newer
//! connection of the owner for the same `(host, path, id)` replaces an
//! older one), then wait for the group checkpoint before answering `200`
//! (see `commit.rs`).

use std::borrow::Cow;
use std::io::{self, Read};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;

use super::inflate::{Inflow, InflowError};
use super::jet::JetLink;
use super::{Attachment, Conn, ConnPhase, Shared, Step, DONE_TIMEOUT};
use crate::codec::Codec;
use crate::config::auth::DEFAULT_ROUTE;
use crate::metrics::server::AuthRefusal;
use crate::metrics::server::{HandshakeFailure, LimitHit, OutputLabels};
use crate::persist::fnv1a;
use crate::proto::token::TOKEN_KEY;
use crate::proto::{self, Init, Status};
use crate::rate::Bucket;
use crate::reactor::sys::retry;
use crate::reactor::Key;
use crate::server::auth::{self, Claim, Identity};
use crate::server::book::Resume;
use crate::server::StreamKey;
use crate::sink::output::{LineWriter, OutputId};
use crate::sink::route::{Destination, Route, StreamInfo, SubjectRoute};

/// What an INIT asks for beyond routing, from its reserved meta keys.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    /// `offset:` the client's first byte (resume), below 2^63.
    offset: Option<u64>,
    /// `part_offset:` the stream's bytes before it are acknowledged (here
    /// or by another server): a known stream held shorter starts there.
    part_offset: Option<u64>,
    /// `ack:1`.
    ack: bool,
    /// `compression:` a codec this server accepts.
    codec: Option<Codec>,
}

/// Why a stream is refused: the reply line and the metric's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    code: u16,
    text: String,
    reason: HandshakeFailure,
}

/// Reads the reserved meta keys (`get` looks one up) under the server's
/// accepted codecs.
fn request<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
    accept: &[Codec],
) -> Result<Request, Refusal> {
    let number = |key: &str| match get(key).map(str::parse::<u64>) {
        None => Ok(None),
        Some(Ok(n)) if n <= proto::MAX_OFFSET => Ok(Some(n)),
        Some(_) => Err(Refusal {
            code: 400,
            text: format!("Bad request: {key} must be a decimal number below 2^63"),
            reason: HandshakeFailure::Malformed,
        }),
    };
    let offset = number("offset")?;
    let part_offset = number("part_offset")?;
    let codec = match get("compression") {
        None | Some("none") => None,
        Some(name) => match Codec::from_name(name) {
            Some(c) if accept.contains(&c) => Some(c),
            _ => {
                return Err(Refusal {
                    code: 415,
                    text: format!(
                        "Unsupported compression: {} (this server accepts {})",
                        crate::log::esc(name),
                        accepted(accept)
                    ),
                    reason: HandshakeFailure::Compression,
                })
            }
        },
    };
    Ok(Request {
        offset,
        part_offset,
        ack: matches!(get("ack"), Some("1" | "yes" | "true")),
        codec,
    })
}

/// The accepted codecs for a refusal line: `gzip, zstd`, or `none`.
fn accepted(codecs: &[Codec]) -> String {
    if codecs.is_empty() {
        return "none".into();
    }
    let names: Vec<&str> = codecs.iter().map(|c| c.name()).collect();
    names.join(", ")
}

impl Conn {
    /// Reads and parses INIT; once complete, starts the stream and waits
    /// for the checkpoint (`Attaching`), or refuses it.
    pub(super) fn handshake(
        &mut self,
        key: Key,
        now: Instant,
        shared: &mut Shared,
        step: &mut Step,
    ) {
        let eof = self.read_handshake();
        let inbuf = std::mem::take(&mut self.inbuf);
        if let Some(used) = proto::mux::parse_request(&inbuf) {
            match self.carrier {
                None => self.become_mux(&inbuf[used..]),
                Some(_) => {
                    crate::warn!("{}: bad handshake: INIT MUX inside a channel", self.peer);
                    shared.metrics.handshake_failed(HandshakeFailure::Malformed);
                    self.fail(400, "Bad request: INIT MUX inside a channel", now);
                }
            }
            return;
        }
        match proto::parse_init(&inbuf) {
            Ok(Status::Complete(init, used)) => {
                let rest = &inbuf[used..];
                if let Some(stream) = self.start(key, &init, now, shared, step) {
                    let mut stream = Box::new(stream);
                    // Bytes sent right behind INIT (a person with nc) wait
                    // for the checkpoint like the rest.
                    match &mut stream.inflow {
                        Some(f) => f.hold(rest),
                        None => stream.writer.hold(rest),
                    }
                    self.stream = Some(stream);
                    let deadline = now + DONE_TIMEOUT;
                    self.phase = ConnPhase::Attaching { deadline };
                    step.wake_at = Some(deadline);
                }
            }
            Ok(Status::Partial) if eof => {
                if self.sock.session().is_some_and(|s| s.is_handshaking()) {
                    shared.metrics.handshake_failed(HandshakeFailure::Tls);
                }
                crate::debug!("{}: closed during the handshake", self.peer);
                self.phase = ConnPhase::close_now(now);
            }
            Ok(Status::Partial) => self.inbuf = inbuf,
            Err(e) => {
                crate::warn!("{}: bad handshake: {e}", self.peer);
                shared
                    .metrics
                    .handshake_failed(HandshakeFailure::from_parse(e));
                self.fail(e.reply_code(), e.reason(), now);
            }
        }
    }

    /// Reads into `inbuf` up to one line's limit; true at end of input.
    fn read_handshake(&mut self) -> bool {
        while self.inbuf.len() < proto::MAX_LINE {
            let start = self.inbuf.len();
            self.inbuf.resize(proto::MAX_LINE, 0);
            match retry(|| self.sock.read(&mut self.inbuf[start..])) {
                Ok(0) => {
                    self.inbuf.truncate(start);
                    return true;
                }
                Ok(n) => self.inbuf.truncate(start + n),
                Err(e) => {
                    self.inbuf.truncate(start);
                    if e.kind() == io::ErrorKind::WouldBlock {
                        return false;
                    }
                    self.log_io("read", &e);
                    return true;
                }
            }
        }
        false
    }

    /// Refuses the stream with `503 text`: its output cannot take it.
    fn unavailable(&mut self, text: &str, now: Instant, shared: &mut Shared) {
        let reason = HandshakeFailure::OutputUnavailable;
        let text = text.to_string();
        self.refuse(
            Refusal {
                code: 503,
                text,
                reason,
            },
            now,
            shared,
        );
    }

    /// Queues a refusal line, counts it, and moves to `Closing`.
    fn refuse(&mut self, r: Refusal, now: Instant, shared: &mut Shared) {
        shared.metrics.handshake_failed(r.reason);
        self.fail(r.code, &r.text, now);
    }

    /// Identifies the client, routes the stream, checks that its identity
    /// may write it, opens its output and takes its resume slot. On
    /// failure an error line is queued and `None` returned.
    fn start(
        &mut self,
        key: Key,
        init: &Init<'_>,
        now: Instant,
        shared: &mut Shared,
        step: &mut Step,
    ) -> Option<Attachment> {
        let host = init.host.decode();
        let path = init.path.decode();
        // The token is for authentication only: routing, templates,
        // matches and logs never see it.
        let token = init.get(TOKEN_KEY).map(|v| v.decode());
        let meta: Vec<(&str, Cow<'_, str>)> = init
            .meta()
            .filter(|(k, _)| *k != TOKEN_KEY)
            .map(|(k, v)| (k, v.decode()))
            .collect();
        let meta_refs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        let get = |name: &str| meta_refs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        // Everything the peer sent reaches the log through `esc`.
        let label = format!("{}:{}", crate::log::esc(&*host), crate::log::esc(&*path));
        // Every line about this stream names its host and path.
        let _log = crate::log_scope!(host = host, path = path);
        let req = match request(get, &shared.cfg.accept_compression) {
            Ok(r) => r,
            Err(r) => {
                crate::warn!("{}: refused stream {label}: {}", self.peer, r.text);
                self.refuse(r, now, shared);
                return None;
            }
        };
        let identity = self.identify(token.as_deref(), &label, now, shared)?;
        let inflow = match req.codec.map(|c| Inflow::new(c, shared)).transpose() {
            Ok(f) => f,
            Err(InflowError::Decoder(e)) => {
                crate::error!("{}: cannot start a decoder for {label}: {e}", self.peer);
                self.fail(503, "Decoder unavailable", now);
                return None;
            }
            Err(InflowError::Budget) => {
                crate::warn!(
                    "{}: refused stream {label}: decoders hold all of decoder_memory ({} MiB)",
                    self.peer,
                    shared.cfg.limits.decoder_memory >> 20
                );
                shared.metrics.limit_hit(LimitHit::DecoderMemory);
                self.fail(503, "Decoder memory exhausted", now);
                return None;
            }
        };
        let info = StreamInfo {
            host: &host,
            path: &path,
            meta: &meta_refs,
        };
        let stream_key = get("id").map(|id| StreamKey {
            host: host.to_string(),
            path: path.to_string(),
            id: id.to_string(),
        });
        let gate = Gate {
            info: &info,
            label: &label,
            identity: &identity,
            key: stream_key.as_ref(),
        };
        let opened = self.open_output(&gate, now, shared)?;
        let start = match &stream_key {
            Some(k) => {
                let owner = identity.to_string();
                let slot = Slot {
                    conn: key,
                    out_path: opened.resume_path(),
                    owner,
                };
                let start = take_resume_slot(shared, k, slot, req.offset.unwrap_or(0), step);
                skip_to_part(shared, k, start, req.part_offset)
            }
            None => req.offset.unwrap_or(0),
        };
        // A checkpoint before the first byte of every attachment records
        // this output's length and writer count, so crash recovery always
        // knows whose bytes follow it (and forgives excess it reported).
        // It is a group commit: the server checkpoints once after this turn
        // of the loop for every INIT that arrived, and only then answers
        // `200` (see `after_commit`). A JetStream stream waits for the
        // lookup of its end instead (see `jet`).
        let jet = match &opened {
            Opened::File(..) => {
                shared.commit_requested = true;
                None
            }
            Opened::Jet(sr) => {
                let j = JetLink::new(sr, &info, stream_key.as_ref(), &self.stream_id, key, start);
                if !Conn::jet_lookup(&j, shared) {
                    crate::warn!(
                        "{}: refused stream {label}: output {} takes no more commands now",
                        self.peer,
                        sr.output
                    );
                    self.unavailable("JetStream busy", now, shared);
                    release_slot(shared, stream_key.as_ref(), key);
                    return None;
                }
                Some(Box::new(j))
            }
        };
        let owner = match &stream_key {
            Some(k) => fnv1a(format!("{}\0{}\0{}", k.host, k.path, k.id).as_bytes()),
            None => u64::MAX - key.token().0 as u64,
        };
        let codec = inflow
            .as_ref()
            .map_or(String::new(), |f| format!(", {}", f.codec()));
        crate::info!(
            stream_id = self.stream_id, output = opened.resume_path(), offset = start;
            "{} (STREAMID {}, {identity}): {label} -> {} (offset {start}{codec})",
            self.peer,
            self.stream_id,
            opened.describe(shared)
        );
        let resumable = req.offset.is_some() || stream_key.is_some();
        let labels = OutputLabels::for_route(opened.name());
        let output = opened.id();
        shared.metrics.streams_active.inc();
        let m = &shared.metrics;
        Some(Attachment {
            label,
            output,
            received: m.received_bytes.get_or_create_owned(&labels),
            lines: m.received_lines.get_or_create_owned(&labels),
            spliced_bytes: m.spliced_bytes.get_or_create_owned(&labels),
            unacked: match req.ack {
                true => m.unacknowledged_bytes.clone(),
                false => Gauge::default(),
            },
            write_errors: m.write_errors.get_or_create_owned(&labels),
            counted: start,
            writer: LineWriter::new(start, shared.cfg.max_line),
            jet,
            place: stream_key
                .as_ref()
                .and_then(|k| shared.resume.place(k, key)),
            key: stream_key,
            ack: req.ack,
            acked: start,
            ackable: start,
            stall: None,
            eof: false,
            owner,
            reply_offset: resumable.then_some(start),
            spliced: 0,
            splicing: false,
            inflow,
            rate: shared
                .cfg
                .connection_rate_limit
                .map(|l| Bucket::new(l, now)),
            last_input: now,
            idle_deadline: None,
        })
    }

    /// The client's identity (see [`auth`]), or a `401` refusal.
    fn identify(
        &mut self,
        token: Option<&str>,
        label: &str,
        now: Instant,
        shared: &mut Shared,
    ) -> Option<Identity> {
        let tokens = &shared.cfg.auth.tokens;
        // INIT comes inside TLS, so the handshake (and the client
        // certificate's verification) is done by now.
        // (A channel has its carrier's, from when it was opened.)
        if self.carrier.is_none() {
            self.cert_names = self.sock.peer_names();
        }
        match auth::identify(self.peer.ip(), &self.cert_names, token, tokens) {
            Ok(id) => Some(id),
            Err(e) => {
                crate::warn!("{}: refused stream {label}: {e}", self.peer);
                shared.metrics.auth_refused(AuthRefusal::Token);
                self.fail(401, e.reply(), now);
                None
            }
        }
    }

    /// Routes the stream, checks that its identity may write it there
    /// and may take it over, and opens (or shares) its output; nothing is
    /// created for a stream that is refused.
    fn open_output(
        &mut self,
        gate: &Gate<'_>,
        now: Instant,
        shared: &mut Shared,
    ) -> Option<Opened> {
        let label = gate.label;
        let route = match shared.router.destination(gate.info) {
            Ok(r) => r,
            Err(e) => {
                crate::warn!("{}: refused stream {label}: {e}", self.peer);
                let code = e.reply_code();
                let text = match code {
                    404 => format!("Not found: {e}"),
                    403 => format!("Forbidden: {e}"),
                    _ => format!("Bad request: {e}"),
                };
                let reason = HandshakeFailure::from_route(&e);
                self.refuse(Refusal { code, text, reason }, now, shared);
                return None;
            }
        };
        let route = match route {
            Destination::File(r) => r,
            Destination::JetStream(sr) => {
                self.authorize(gate, Some(&sr.output), now, shared)?;
                if shared.jet.get(sr.index).is_none() {
                    self.unavailable("Output unavailable", now, shared);
                    return None;
                }
                return Some(Opened::Jet(sr));
            }
        };
        self.authorize(gate, route.output.as_deref(), now, shared)?;
        match shared.outputs.acquire(&route) {
            Ok(output) => {
                if !shared.unopenable.is_empty() && shared.unopenable.clear(&route.full_path()) {
                    crate::info!(
                        "output {} opened again",
                        crate::log::esc(&route.full_path())
                    );
                }
                Some(Opened::File(route, output))
            }
            Err(e) => {
                let path = route.full_path();
                if shared.unopenable.say(path.clone(), e.kind()) {
                    crate::error!(
                        "{}: cannot open output {} for {label}: {e} (said again only if the error changes; clients get 503 and retry)",
                        self.peer,
                        crate::log::esc(&path)
                    );
                } else {
                    crate::debug!(
                        "{}: cannot open output {} for {label}: {e}",
                        self.peer,
                        crate::log::esc(&path)
                    );
                }
                let refusal = Refusal {
                    code: 503,
                    text: "Output unavailable".into(),
                    reason: HandshakeFailure::OutputUnavailable,
                };
                self.refuse(refusal, now, shared);
                None
            }
        }
    }

    /// `[[allow]]` and stream ownership: `403` for a stream the identity
    /// may not write, `409` for one another identity owns (whose
    /// connection is left alone). Logged once, counted.
    fn authorize(
        &mut self,
        gate: &Gate<'_>,
        output: Option<&str>,
        now: Instant,
        shared: &mut Shared,
    ) -> Option<()> {
        let (id, label) = (gate.identity, gate.label);
        let cfg = &shared.cfg.auth;
        if let Err(denied) = auth::authorize(cfg, id, gate.info, output) {
            let text = denied.explain(id, gate.info.host, output.unwrap_or(DEFAULT_ROUTE));
            crate::warn!("{}: refused stream {label}: {text}", self.peer);
            shared.metrics.auth_refused(denied.into());
            self.fail(403, &format!("Forbidden: {text}"), now);
            return None;
        }
        let Some(k) = gate.key else {
            return Some(()); // not resumable: nothing to own
        };
        match auth::claim(cfg, shared.resume.owner(k), id, &k.host) {
            Claim::Refused { owner } => {
                crate::warn!(
                    "{}: refused stream {label} (id {}): {id} may not take over a stream owned by {owner}",
                    self.peer,
                    crate::log::esc(&k.id)
                );
                shared.metrics.auth_refused(AuthRefusal::Owner);
                self.fail(409, "Conflict: stream owned by another identity", now);
                None
            }
            Claim::Adopted { from } if !cfg.is_open() => {
                crate::info!(
                    "{label} (id {}): {from} may no longer write host {}; {id} adopts the stream",
                    crate::log::esc(&k.id),
                    crate::log::esc(&k.host)
                );
                Some(())
            }
            _ => Some(()),
        }
    }
}

/// What the checks on the way to an output look at.
struct Gate<'a> {
    info: &'a StreamInfo<'a>,
    /// `host:path`, escaped for the log.
    label: &'a str,
    identity: &'a Identity,
    /// The resumable stream's key, if it names an `id:`.
    key: Option<&'a StreamKey>,
}

/// Who takes a resume slot: the connection, where its stream goes and its
/// identity.
struct Slot {
    conn: Key,
    /// The output file, or `jetstream:NAME:SUBJECT` (see [`Opened`]).
    out_path: std::path::PathBuf,
    /// The identity's `Display` form: the stream's owner from now on.
    owner: String,
}

/// Makes connection `slot.conn` the writer of resumable stream `k`
/// (replacing an older connection, which `step.replaced` names) and its
/// identity the owner, and returns the offset to continue from: what the
/// server holds, or `offset` for a stream it does not know (or one now
/// routed to another output).
fn take_resume_slot(
    shared: &mut Shared,
    k: &StreamKey,
    slot: Slot,
    offset: u64,
    step: &mut Step,
) -> u64 {
    let out_path = slot.out_path;
    let seen = crate::sink::journal::unix_now();
    let entry = shared
        .resume
        .entry(k, || Resume::new(offset, out_path.clone(), seen));
    step.replaced = entry.conn.replace(slot.conn);
    if let Some(old) = step.replaced {
        crate::info!(
            "{}:{} (id {}): a new connection ({}) takes the stream over; closing the older one",
            crate::log::esc(&k.host),
            crate::log::esc(&k.path),
            crate::log::esc(&k.id),
            slot.owner
        );
        // The replaced connection writes nothing more (the server closes
        // it next): drop its reference now, so the checkpoint does not
        // count it as a second writer.
        if let Some(id) = shared.outputs.id_of(&entry.output) {
            shared.outputs.release(id);
            shared.evicted.insert(old);
        }
    }
    entry.seen = seen;
    entry.owner = Some(slot.owner);
    if entry.output != out_path {
        // Routed elsewhere than before (config changed): the old offset
        // says nothing about the new output.
        entry.output = out_path;
        entry.offset = offset;
    }
    entry.offset
}

/// A stream that continues here after a stretch on another server
/// (`part_offset` beyond what this server holds): it starts at
/// `part_offset`, and the bytes between are the other server's.
fn skip_to_part(shared: &mut Shared, k: &StreamKey, start: u64, part: Option<u64>) -> u64 {
    match part {
        Some(p) if p > start => {
            crate::info!(
                "{}:{} (id {}): continues here from offset {p} (this server held {start}; the bytes between are on another server)",
                k.host,
                k.path.escape_debug(),
                k.id.escape_debug()
            );
            shared.resume.set_offset(k, p);
            p
        }
        _ => start,
    }
}

/// Where an attaching stream goes: an opened output file, or a JetStream
/// output's subject.
enum Opened {
    File(Route, OutputId),
    Jet(SubjectRoute),
}

impl Opened {
    /// What the resume book records as the stream's output: the file, or
    /// `jetstream:NAME:SUBJECT` (no file is ever opened at that path).
    fn resume_path(&self) -> std::path::PathBuf {
        match self {
            Opened::File(r, _) => r.full_path(),
            Opened::Jet(sr) => format!("jetstream:{}:{}", sr.output, sr.subject).into(),
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            Opened::File(r, _) => r.output.as_deref(),
            Opened::Jet(sr) => Some(&sr.output),
        }
    }

    /// The output file's id; none for JetStream (every `Outputs` method
    /// ignores an id that is not open).
    fn id(&self) -> OutputId {
        match self {
            Opened::File(_, id) => *id,
            Opened::Jet(_) => OutputId::MAX,
        }
    }

    fn describe(&self, shared: &Shared) -> String {
        match self {
            Opened::File(_, id) => crate::log::esc(&shared.outputs.path(*id)).to_string(),
            Opened::Jet(sr) => format!("JetStream output {} subject {}", sr.output, sr.subject),
        }
    }
}

/// A refused JetStream stream gives its resume slot back.
fn release_slot(shared: &mut Shared, key: Option<&StreamKey>, conn: Key) {
    if let Some(k) = key {
        shared
            .resume
            .detach(k, conn, crate::sink::journal::unix_now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&'static str, &'static str)], accept: &[Codec]) -> Result<Request, Refusal> {
        request(
            |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v),
            accept,
        )
    }

    #[test]
    fn reserved_keys_are_read_and_checked() {
        let all = Codec::ALL;
        let want = Request {
            offset: Some(5),
            part_offset: Some(3),
            ack: true,
            codec: Some(Codec::Zstd),
        };
        let got = req(
            &[
                ("offset", "5"),
                ("part_offset", "3"),
                ("ack", "1"),
                ("compression", "zstd"),
            ],
            &all,
        );
        assert_eq!(got, Ok(want));
        let plain = req(&[("compression", "none")], &[]).unwrap();
        assert_eq!((plain.offset, plain.ack, plain.codec), (None, false, None));
        let big = req(&[("offset", "9223372036854775808")], &all).unwrap_err();
        assert_eq!((big.code, big.reason), (400, HandshakeFailure::Malformed));
        let refused = req(&[("compression", "zstd")], &[Codec::Gzip]).unwrap_err();
        assert_eq!(refused.code, 415);
        assert_eq!(
            refused.text,
            "Unsupported compression: zstd (this server accepts gzip)"
        );
        let none = req(&[("compression", "gzip")], &[]).unwrap_err();
        assert!(
            none.text.ends_with("(this server accepts none)"),
            "{}",
            none.text
        );
    }
}
