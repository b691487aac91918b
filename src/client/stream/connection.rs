//! The connection side of a stream: when it wants a connection and when
//! it lets one go, opening one within the client's slot budget
//! ([`LinkBudget`]), the INIT line and the codec it asks for, what the
//! server says back ([`Heard`]: offsets, ACKs, `250 DONE`, codec
//! refusals), and reconnecting with jittered backoff.
//!
//! The wire itself (handshake, framing, compression) is `client/link.rs`;
//! this file maps what it hears onto the stream's offsets. Sending bytes
//! is `send.rs`; `tick` in `mod.rs` decides when to connect.

use std::io;
use std::time::{Duration, Instant};

use mio::Interest;

use super::{Ctx, Settings, Stream};
use crate::client::carrier::{Dial, Opened};
use crate::client::failover::Failure;
use crate::client::link::{Close, Heard, Link, Phase};
use crate::codec::Codec;
use crate::config::Compression;
use crate::reactor::sys::tailfs;
use crate::reactor::Key;
use crate::tail::follow::{Env, State};

/// Longest a connect + handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's connection slots (`max_connections`): streams with data
/// but no free slot wait in `waiting`, oldest first.
#[derive(Debug)]
pub(crate) struct LinkBudget {
    pub open: usize,
    pub max: usize,
    pub waiting: std::collections::VecDeque<Key>,
    /// The server refused or ignored the configured codec: connections
    /// send plain bytes until then, and then ask again.
    pub plain_until: Option<Instant>,
    /// Since when connections fail to reach the server (no connection
    /// completed its handshake since): the outage is logged once, when it
    /// begins and when it ends, not once per file and retry.
    pub outage_since: Option<Instant>,
    /// The server turned a connection away at its connection limit while
    /// this many others were open: no more than that until then (see
    /// [`LinkBudget::server_full`]).
    pub cap: Option<(usize, Instant)>,
    /// When that was last logged.
    pub full_said: Option<Instant>,
}

/// How long a connection limit the server showed holds here: then one more
/// connection is tried (a slot may have freed, or the limit been raised).
pub(crate) const SERVER_FULL_HOLD: Duration = Duration::from_secs(10);
/// The server's connection limit is logged at most this often (it turns a
/// connection away once per [`SERVER_FULL_HOLD`] while it stays full).
pub(crate) const SERVER_FULL_SAY: Duration = Duration::from_secs(60);

/// How long a client sends uncompressed after the server refused or
/// ignored its codec, before it asks again (the server may have been
/// upgraded or reconfigured meanwhile).
const CODEC_RETRY: Duration = Duration::from_secs(600);

impl LinkBudget {
    /// True when one more connection may be opened at `now`: fewer than
    /// `max_connections`, and fewer than the server took when it last
    /// turned one away.
    pub fn room(&self, now: Instant) -> bool {
        let max = match self.cap {
            Some((n, until)) if now < until => n.min(self.max),
            _ => self.max,
        };
        self.open < max
    }

    /// The server turned a connection away at its connection limit while
    /// `open` others were open (the refused one is closed already): at
    /// most that many, at least one, for [`SERVER_FULL_HOLD`]. Without
    /// it each file waiting for a slot would take its turn at being
    /// refused, then retry on its own back-off, and nothing would tell the
    /// idle connections to make room. True when the caller should log it
    /// (at most once per [`SERVER_FULL_SAY`]).
    pub fn server_full(&mut self, now: Instant) -> bool {
        let n = match self.cap {
            Some((n, until)) if now < until => n.min(self.open),
            _ => self.open,
        };
        self.cap = Some((n.max(1), now + SERVER_FULL_HOLD));
        let say = self
            .full_said
            .is_none_or(|t| now.saturating_duration_since(t) >= SERVER_FULL_SAY);
        if say {
            self.full_said = Some(now);
        }
        say
    }

    /// What a new connection should ask for: the configured compression,
    /// unless the server turned it down recently.
    fn compression(&self, configured: Compression, now: Instant) -> Compression {
        match self.plain_until {
            Some(t) if now < t => Compression::default(),
            _ => configured,
        }
    }

    /// The server turned the codec down: send plain for a while. True
    /// when this starts a new such period (the caller logs it, once).
    fn fall_back(&mut self, now: Instant) -> bool {
        let new = self.plain_until.is_none_or(|t| now >= t);
        if new {
            self.plain_until = Some(now + CODEC_RETRY);
        }
        new
    }
}

impl Stream {
    /// Socket readiness for this stream's connection.
    pub fn on_socket(&mut self, ctx: &mut Ctx<'_>) {
        let mut heard = Vec::new();
        let part_offset = self.part_offset(ctx);
        if let Some(link) = &mut self.link {
            let (settings, path, svc, meta) =
                (ctx.settings, self.tail.path(), &self.svc, &self.meta);
            let id = self.link_id.map(|i| i.to_string()).unwrap_or_default();
            let init = Init {
                id: &id,
                offset: self.tail.acked(),
                part_offset,
                codec: link.asks_for(),
            };
            link.poll(
                |out| write_init(out, settings, path, svc.as_deref(), meta, &init),
                &mut heard,
            );
        }
        for h in heard {
            self.on_heard(h, ctx);
        }
        self.tick(ctx);
    }

    /// Maps one thing the server said onto the stream's offsets and its
    /// connection.
    fn on_heard(&mut self, h: Heard, ctx: &mut Ctx<'_>) {
        match h {
            Heard::Ready(offset) => self.on_ready(offset, ctx),
            Heard::Ack(n) => match self.tail.on_ack(n) {
                Ok(0) => {}
                Ok(new) => {
                    ctx.meter.acknowledged(new, ctx.now);
                    self.last_active = ctx.now;
                    *ctx.dirty = true;
                    let at = self.tail.acked();
                    if crate::log::debug_enabled() && self.told.acknowledged(ctx.now, at) {
                        crate::debug!(
                            "{}: sent up to offset {at} (acknowledged)",
                            crate::log::esc(&self.tail.path())
                        );
                    }
                }
                Err(sent) => {
                    let why = format!("server acknowledged {n} bytes but only {sent} were sent");
                    self.drop_link(ctx, Some(why));
                }
            },
            Heard::Done(n) => self.on_done(n, ctx),
            Heard::CodecRefused(line) => self.on_codec_refused(&line, ctx),
            Heard::CodecIgnored(codec) => {
                let server = self.server_name(ctx).to_string();
                on_codec_ignored(codec, &server, ctx)
            }
            Heard::Finish(text) => {
                let path = crate::log::esc(self.path());
                let shown = crate::log::esc(&text);
                let _log = crate::log_scope!(server = self.server_name(ctx));
                if text.starts_with("Idle timeout") {
                    crate::info!("{path}: server closed the idle connection (421 {shown}); finishing it, reconnecting when the file grows");
                } else if text.starts_with("Server shutting down") {
                    crate::info!("{path}: server is shutting down; finishing the connection");
                } else {
                    crate::info!(
                        "{path}: server asks to finish (421 {shown}); finishing the connection"
                    );
                }
                if let Some(l) = &mut self.link {
                    l.finish();
                }
            }
            Heard::Closed(why) => self.on_closed(why, ctx),
        }
    }

    /// `200`: streaming starts at the server's `offset` (or at `acked`),
    /// unless the file turns out truncated or rewritten meanwhile.
    fn on_ready(&mut self, offset: Option<u64>, ctx: &mut Ctx<'_>) {
        if let Some(route) = &mut self.route {
            route.on_ready(ctx.servers);
        }
        if let Some(since) = ctx.links.outage_since.take() {
            crate::info!(
                server = self.server_name(ctx);
                "server {} is reachable again after {:.1}s",
                self.server_name(ctx),
                ctx.now.saturating_duration_since(since).as_secs_f64()
            );
        }
        self.reconnecting = false;
        let before = self.tail.acked();
        let mut env = Env {
            fs: &mut tailfs::listed(ctx.listings, ctx.inotify),
            now: ctx.now,
            loaded: ctx.loaded,
        };
        let ok = self.tail.on_ready(&mut env, offset);
        self.after_tail(ctx);
        if !ok {
            return;
        }
        let at = self.tail.acked();
        if at != before {
            crate::info!(
                offset = at, server = self.server_name(ctx);
                "{}: server holds {at} bytes, continuing from there (state had {before})",
                crate::log::esc(&self.tail.path()),
            );
        }
        // The server holds more than we knew: bytes whose ACK was
        // lost with a broken connection (or with the last run).
        ctx.meter.acknowledged(at.saturating_sub(before), ctx.now);
        self.link_deadline = None;
        self.backoff = Duration::ZERO;
        self.told.streaming(ctx.now, at);
        crate::debug!(
            offset = at, server = self.server_name(ctx);
            "{}: streaming from offset {at}",
            crate::log::esc(&self.tail.path())
        );
    }

    /// `250 DONE n`: the server committed everything up to `n`.
    fn on_done(&mut self, n: u64, ctx: &mut Ctx<'_>) {
        if n != self.tail.sent() {
            crate::warn!(
                "{}: server confirmed {n} bytes, {} were sent",
                crate::log::esc(&self.tail.path()),
                self.tail.sent()
            );
        }
        let new = self.tail.on_done(n);
        if new > 0 {
            ctx.meter.acknowledged(new, ctx.now);
            *ctx.dirty = true;
        }
    }

    /// `415`: the server refused our codec (`line`); send plain for a
    /// while and drop this connection.
    fn on_codec_refused(&mut self, line: &str, ctx: &mut Ctx<'_>) {
        let codec = self.link.as_ref().and_then(|l| l.asks_for());
        if ctx.links.fall_back(ctx.now) {
            crate::warn!(
                server = self.server_name(ctx);
                "server {} refused compression {} ({}); sending uncompressed, asking again in {} min",
                self.server_name(ctx),
                codec.map_or("?", |c| c.name()),
                crate::log::esc(line),
                CODEC_RETRY.as_secs() / 60
            );
        }
        self.drop_link(ctx, None);
    }

    /// The connection is over (`why`); a clean end reconnects at once when
    /// there is something to send.
    fn on_closed(&mut self, why: Close, ctx: &mut Ctx<'_>) {
        let finished = why.is_clean();
        if finished {
            self.tail.on_link_finished();
        }
        if self.stopping || finished {
            self.drop_link(ctx, None);
        } else if why.at_connection_limit() && ctx.servers.len() == 1 {
            self.turned_away(ctx, &why);
        } else {
            let failure = super::route::failure_of(&why);
            self.link_failed(ctx, why.to_string(), failure);
        }
        if finished {
            // A clean end (idle close, rotation): reconnect at once
            // when there is something to send.
            self.retry_at = None;
            self.backoff = Duration::ZERO;
        }
    }

    /// The (only) server turned this connection away at its connection
    /// limit: the file waits for a slot like one over `max_connections`,
    /// while the connections open stay, idle ones closing after 1 s (with
    /// several servers the stream moves instead, see `route`). Said at
    /// most once per [`SERVER_FULL_SAY`] for the whole client, not per
    /// file.
    fn turned_away(&mut self, ctx: &mut Ctx<'_>, why: &Close) {
        self.drop_link(ctx, None);
        let open = ctx.links.open;
        if ctx.links.server_full(ctx.now) {
            let cap = ctx.links.cap.map_or(1, |(n, _)| n);
            crate::warn!(
                server = self.server_name(ctx);
                "{why} with {open} connections open from here: at most {cap} now, trying one more every {}s; the other files wait for one to close (idle ones close after 1s), nothing is lost (said at most every {}s)",
                SERVER_FULL_HOLD.as_secs(),
                SERVER_FULL_SAY.as_secs()
            );
        } else {
            crate::debug!("{}: {why}", crate::log::esc(self.path()));
        }
        if !self.waiting_link {
            self.waiting_link = true;
            ctx.links.waiting.push_back(self.key);
        }
    }

    /// A connection is needed: data to send, a whole file to finish, or a
    /// rotated file to end with `250 DONE`. An idle followed file holds no
    /// connection.
    pub(super) fn wants_link(&self) -> bool {
        self.tail.wants_link(self.file_len().unwrap_or(0))
    }

    /// Ends an idle connection (all sent and acknowledged, nothing new)
    /// after `idle_close`, or after 1 s when other streams wait for a slot.
    /// Returns when to look again.
    pub(super) fn close_if_idle(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
        self.link.as_ref().filter(|l| l.phase == Phase::Up)?;
        if self.whole() || self.tail.state() != State::Following || self.stopping {
            return None;
        }
        let idle = if ctx.links.waiting.is_empty() {
            ctx.settings.idle_close
        } else {
            ctx.settings.idle_close.min(Duration::from_secs(1))
        };
        let at = self.last_active + idle;
        if ctx.now < at {
            return Some(at);
        }
        let at_eof = self.file_len().is_none_or(|len| len <= self.tail.sent());
        if self.tail.pending().is_empty() && self.tail.acked() == self.tail.sent() && at_eof {
            crate::debug!(
                "{}: idle; closing its connection (acknowledged up to offset {})",
                crate::log::esc(&self.path()),
                self.tail.acked()
            );
            if let Some(link) = &mut self.link {
                link.finish();
            }
            return None;
        }
        Some(ctx.now + idle)
    }

    /// A connection slot may be free: connect now if one is wanted.
    pub fn on_slot_free(&mut self, ctx: &mut Ctx<'_>) {
        self.waiting_link = false;
        self.retry_at = None;
        self.tick(ctx);
    }

    pub(super) fn connect(&mut self, ctx: &mut Ctx<'_>) {
        if !ctx.links.room(ctx.now) {
            if !self.waiting_link {
                self.waiting_link = true;
                ctx.links.waiting.push_back(self.key);
            }
            return;
        }
        let now = ctx.now;
        let compression = if self.precompressed() {
            Compression::default()
        } else {
            ctx.links.compression(ctx.settings.compression, now)
        };
        let server = self.choose_server(ctx);
        let name = ctx.servers.name(server);
        // A followed file takes a channel of the server's multiplexed
        // connection when configured; a whole file goes by `sendfile` on
        // a connection of its own, and so does a followed file far behind
        // (`send::OWN_CONNECTION_BACKLOG`: the server splices it).
        let multiplex = ctx.settings.multiplex
            && !self.whole()
            && !super::send::wants_own_connection(self.backlog());
        let result = resolve(name).and_then(|addr| {
            if multiplex {
                let to = Dial {
                    addr,
                    server: name,
                    tls: ctx.settings.tls.as_ref(),
                };
                match ctx
                    .carriers
                    .open(to, ctx.registry, ctx.timers, self.key, now)
                {
                    Opened::Channel(end, ticket) => {
                        return Ok(Some(Link::channel(end, ticket, compression)))
                    }
                    Opened::Wait => return Ok(None),
                    Opened::Plain => {}
                }
            }
            let mut link = Link::connect(addr, name, compression, ctx.settings.tls.as_ref())?;
            ctx.registry.register(
                &mut link.sock,
                self.key.token(),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(Some(link))
        });
        match result {
            // The carrier is connecting: it asks again once it is ready.
            Ok(None) => self.waiting_link = true,
            Ok(Some(link)) => {
                if self.reconnecting {
                    ctx.meter.reconnects.inc();
                }
                ctx.links.open += 1;
                self.link = Some(link);
                self.link_id = self.tail.stream_id();
                self.link_deadline = Some(now + HANDSHAKE_TIMEOUT);
            }
            Err(e) => {
                self.reconnecting = true;
                self.unreachable(ctx, &format!("cannot connect: {e}"));
                self.schedule_retry(ctx);
                self.after_failure(ctx, Failure::Unreachable, 0);
            }
        }
    }

    /// Closes the connection (logging `why` if given) and schedules a retry.
    pub(super) fn drop_link(&mut self, ctx: &mut Ctx<'_>, why: Option<String>) {
        let mut connecting = false;
        if let Some(link) = self.link.take() {
            connecting = link.phase == Phase::Connecting;
            self.link = Some(link);
            self.count_wire(ctx);
        }
        if let Some(mut link) = self.link.take() {
            let _ = ctx.registry.deregister(&mut link.sock);
            ctx.links.open = ctx.links.open.saturating_sub(1);
        }
        let unacked = self.tail.sent().saturating_sub(self.tail.acked());
        if let Some(why) = why {
            self.tail.on_link_lost();
            self.reconnecting = true;
            if connecting {
                self.unreachable(ctx, &why);
            } else if !self.told.link_ended(&why) {
                // The same reason as last time (a server that refuses on
                // every reconnect): said once, until a handshake works.
                crate::debug!("{}: {why} (again)", crate::log::esc(&self.path()));
            } else if unacked > 0 {
                crate::warn!(
                    server = self.server_name(ctx), unacked = unacked;
                    "{}: {why}; {unacked} unacknowledged bytes will be sent again",
                    crate::log::esc(&self.path())
                );
            } else {
                crate::warn!(server = self.server_name(ctx); "{}: {why}", crate::log::esc(&self.path()));
            }
        } else if self.tail.sent() != self.tail.acked() || self.tail.needs_verify() {
            self.tail.on_link_lost();
        }
        self.link_id = None;
        self.link_deadline = None;
        if !self.stopping {
            self.schedule_retry(ctx);
        }
    }

    /// A connection did not reach the server. The first such failure of an
    /// outage is a warning for the whole client; the others (every file,
    /// every retry) are debug lines.
    fn unreachable(&mut self, ctx: &mut Ctx<'_>, why: &str) {
        if ctx.links.outage_since.is_none() {
            ctx.links.outage_since = Some(ctx.now);
            let then = match ctx.servers.len() {
                1 => format!(
                    "files wait and retry with back-off up to {}s",
                    ctx.settings.reconnect_max.as_secs()
                ),
                _ => format!(
                    "streams retry, and move to their next server after {:?}",
                    ctx.servers.failover_after()
                ),
            };
            crate::warn!(
                server = self.server_name(ctx);
                "server {} is unreachable ({}: {why}); {then}, nothing is lost",
                self.server_name(ctx),
                crate::log::esc(&self.path()),
            );
        } else {
            crate::debug!(server = self.server_name(ctx); "{}: {why}", crate::log::esc(&self.path()));
        }
    }

    fn schedule_retry(&mut self, ctx: &mut Ctx<'_>) {
        let s = ctx.settings;
        self.backoff = if self.backoff.is_zero() {
            s.reconnect_min
        } else {
            (self.backoff * 2).min(s.reconnect_max)
        };
        // xorshift jitter: wait between 75% and 125% of the backoff.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let factor = 0.75 + (self.jitter % 1000) as f64 / 2000.0;
        self.retry_at = Some(ctx.now + self.backoff.mul_f64(factor));
    }
}

/// The server's `200` did not confirm `codec`: send plain for a while
/// (this connection already does).
fn on_codec_ignored(codec: Codec, server: &str, ctx: &mut Ctx<'_>) {
    if ctx.links.fall_back(ctx.now) {
        crate::warn!(
            server = server;
            "server {server} did not confirm compression {codec} (it predates compression); sending uncompressed, asking again in {} min",
            CODEC_RETRY.as_secs() / 60
        );
    }
}

/// The per-connection words of an INIT line.
struct Init<'a> {
    id: &'a str,
    offset: u64,
    /// `part_offset:` (several servers): everything before it is
    /// acknowledged, here or on another server.
    part_offset: Option<u64>,
    codec: Option<Codec>,
}

fn write_init(
    out: &mut Vec<u8>,
    s: &Settings,
    path: &std::path::Path,
    svc: Option<&str>,
    meta: &[(String, String)],
    init: &Init<'_>,
) {
    let path = path.to_string_lossy();
    let request = crate::proto::InitRequest {
        host: &s.hostname,
        path: &path,
        svc,
        meta,
        id: init.id,
        offset: init.offset,
        part_offset: init.part_offset,
        ack: true,
        compression: init.codec.map(Codec::name),
        token: s
            .token
            .as_ref()
            .map(|t| crate::proto::token::TokenValue(t.wire())),
    };
    crate::proto::write_init_request(out, &request);
}

/// File name endings of data that is compressed already: such files go
/// out as they are, never compressed a second time.
const COMPRESSED_SUFFIXES: &[&str] = &[
    ".gz", ".tgz", ".zst", ".lz4", ".xz", ".bz2", ".br", ".zip", ".7z", ".lzma",
];

impl Stream {
    /// True when the file is compressed already (by its name, e.g. a
    /// rotated `app.log.2.gz`).
    fn precompressed(&self) -> bool {
        let name = self.name().to_string_lossy();
        COMPRESSED_SUFFIXES.iter().any(|s| name.ends_with(s))
    }
}

fn resolve(server: &str) -> io::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    server
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address"))
}
