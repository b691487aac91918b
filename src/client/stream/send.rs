//! The sending side of a stream: moving file bytes into the connection
//! under the batching rules (`crate::tail::batch`), with `sendfile` for
//! whole files that go out uncompressed, a per-turn quantum for fairness
//! between streams, and the stream's and the client's rate limits.
//!
//! Reading into the buffer is `fill.rs`; the connection it writes to is
//! opened and dropped by `connection.rs`; `tick` in `mod.rs` calls
//! `pump` on every turn.

use std::ops::ControlFlow;
use std::time::Instant;

use super::{Ctx, Stream};
use crate::client::failover::Failure::Unreachable;
use crate::client::link::{Link, Phase};
use crate::reactor::sys::tailfs;
use crate::tail::follow::{Env, Filled, State, REOPEN_RETRY};

/// Most bytes one stream sends per turn of the loop (see `pump`).
const PUMP_QUANTUM: u64 = 1 << 20;

/// With `multiplex`, a followed file at least this far behind (file length
/// minus bytes sent) takes a connection of its own instead of a channel:
/// there the server splices it into its output and no frame is copied or
/// waits for credit. One that falls this far behind on a channel ends the
/// channel (`250 DONE`, a clean end) and reconnects on its own; back on a
/// channel once that connection ends (idle, rotation) caught up.
pub(super) const OWN_CONNECTION_BACKLOG: u64 = 1 << 20;

/// True when a stream `backlog` bytes behind its file should have a
/// connection of its own rather than a channel (see
/// [`OWN_CONNECTION_BACKLOG`]).
pub(super) fn wants_own_connection(backlog: u64) -> bool {
    backlog >= OWN_CONNECTION_BACKLOG
}

impl Stream {
    /// Bytes of the current file not sent yet (one `fstat`).
    pub(super) fn backlog(&self) -> u64 {
        self.file_len()
            .map_or(0, |len| len.saturating_sub(self.tail.sent()))
    }

    /// After a `pump` on a channel that left the file's reader behind (its
    /// last read filled the buffer): when the file is
    /// [`OWN_CONNECTION_BACKLOG`] ahead, ends the channel so the stream
    /// reconnects on a connection of its own. Only while following the
    /// path (a draining generation ends on its own terms).
    fn leave_channel_if_behind(&mut self) {
        let on_channel = self
            .link
            .as_ref()
            .is_some_and(|l| l.phase == Phase::Up && l.channel_of().is_some());
        if !on_channel
            || self.stopping
            || self.whole()
            || self.tail.state() != State::Following
            || !self.tail.behind()
        {
            return;
        }
        let backlog = self.backlog();
        if !wants_own_connection(backlog) {
            return;
        }
        crate::debug!(
            "{}: {backlog} bytes behind on a multiplexed connection: ending the channel to go on with a connection of its own",
            crate::log::esc(&self.path())
        );
        if let Some(link) = &mut self.link {
            link.finish();
        }
    }

    /// Moves file bytes into the socket under the batching rules. Returns
    /// when it wants to be called again (linger or partial-line timeout).
    ///
    /// Fairness: one call moves at most [`PUMP_QUANTUM`] bytes, then asks
    /// to be called again at once (through the timer heap, after the loop
    /// has served other ready events), so a file far behind cannot starve
    /// the others.
    pub(super) fn pump(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
        let at = self.pump_turn(ctx);
        self.leave_channel_if_behind();
        at
    }

    fn pump_turn(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
        let now = ctx.now;
        let start = self.tail.sent();
        let read_start = self.tail.read_pos();
        // Set once a read came back short (the file ended there): the
        // bytes read are sent, but the file is not read again this call,
        // since that `pread` would only find the same end. Anything
        // appended meanwhile is announced by inotify.
        let mut drained = false;
        loop {
            if !matches!(&self.link, Some(l) if l.phase == Phase::Up) || self.stopping {
                return None;
            }
            if self.link_id != self.tail.stream_id() {
                return Some(now);
            }
            if self.tail.sent().saturating_sub(start) >= PUMP_QUANTUM {
                return Some(now);
            }
            let zero_copy = self.link.as_ref().is_some_and(Link::zero_copy);
            let step = if self.whole() && self.tail.pending().is_empty() && zero_copy {
                self.pump_sendfile(ctx, start)
            } else {
                self.pump_buffered(ctx, (start, read_start), &mut drained)
            };
            if let ControlFlow::Break(at) = step {
                return at;
            }
        }
    }

    /// One `pump` step for a closed file that goes out whole: `sendfile`,
    /// no user-space copy. `start` is `sent` when `pump` began.
    fn pump_sendfile(&mut self, ctx: &mut Ctx<'_>, start: u64) -> ControlFlow<Option<Instant>> {
        let now = ctx.now;
        let sent = self.tail.sent();
        let left = self.file_len().unwrap_or(0).saturating_sub(sent);
        if left == 0 {
            // All handed over: come back at once to half-close
            // (nothing else would wake this stream before the
            // server's next ACK).
            return ControlFlow::Break((sent > start).then_some(now));
        }
        let chunk = match self.throttle(ctx, left.min(PUMP_QUANTUM) as usize) {
            Ok(n) => n,
            Err(at) => return ControlFlow::Break(Some(at)),
        };
        let (Some(g), Some(link)) = (self.tail.current(), &mut self.link) else {
            return ControlFlow::Break(None);
        };
        match link.send_file(&g.file, sent, chunk) {
            Ok(0) => ControlFlow::Break(None), // socket full (or the file ended): wait
            Ok(n) => {
                charge(ctx, n);
                // The kernel read the file for us: read and sent.
                ctx.meter.read.add(n as u64);
                ctx.meter.sent.add(n as u64);
                self.tail.on_sent_from_file(n as u64);
                self.last_active = now;
                ControlFlow::Continue(())
            }
            Err(e) => {
                self.link_failed(ctx, format!("sendfile failed: {e}"), Some(Unreachable));
                ControlFlow::Break(None)
            }
        }
    }

    /// One `pump` step through the buffer: read more (unless `drained`),
    /// decide what the batching rules let go, and send it. `start` is
    /// `sent` when `pump` began.
    fn pump_buffered(
        &mut self,
        ctx: &mut Ctx<'_>,
        (start, read_start): (u64, u64),
        drained: &mut bool,
    ) -> ControlFlow<Option<Instant>> {
        let now = ctx.now;
        if !*drained && !self.known_at_end() && self.carrier_congested(ctx) {
            // The file is read again once the carrier's bytes are out.
            *drained = true;
        }
        if !*drained && !self.known_at_end() {
            self.deferred = 0;
            self.growth_due = None;
            let before = self.tail.read_pos();
            self.pump_fill(ctx)?;
            *drained = !self.tail.behind();
            // A trickle: this pump found fewer than `batch` bytes in all
            // before the file's end (its last read alone may be the short
            // rest of a burst).
            let read = self.tail.read_pos();
            if read > before {
                let batch = self.tail.settings().rules.batch as u64;
                self.trickle = *drained && read.saturating_sub(read_start) < batch;
            }
            let following = self.tail.state() == State::Following && !self.whole();
            self.at_end = match self.tail.stream_id() {
                Some(id) if *drained && following => Some((id, self.tail.read_pos())),
                _ => None,
            };
        }
        if self.tail.pending().is_empty() {
            self.tail.sendable(now);
            self.release_buffer(ctx);
            // A whole file read and sent to its end (a compressed
            // link reads instead of sendfile): come back at once to
            // half-close, as in `pump_sendfile`.
            return ControlFlow::Break((self.whole() && self.tail.sent() > start).then_some(now));
        }
        let d = self.tail.sendable(now);
        if d.send == 0 {
            return ControlFlow::Break(d.wake_at);
        }
        let send = match self.throttle(ctx, d.send) {
            Ok(n) => n,
            Err(at) => return ControlFlow::Break(Some(at)),
        };
        self.send_buffered(ctx, send)
    }

    /// True when the stream is on a channel whose carrier has a full send
    /// buffer ([`Carriers::congested`]); it is then served again once
    /// that is out. Reading now would only hold the file's bytes in
    /// memory, in this stream's buffer, until then.
    ///
    /// [`Carriers::congested`]: crate::client::carrier::Carriers::congested
    fn carrier_congested(&self, ctx: &mut Ctx<'_>) -> bool {
        let Some((carrier, _)) = self.channel_of() else {
            return false;
        };
        if !ctx.carriers.congested(carrier) {
            return false;
        }
        ctx.carriers.wait_room(carrier, self.key);
        true
    }

    /// Reads more of the file into the buffer for `pump`; breaks with
    /// when to come back if the file was truncated or the read failed.
    fn pump_fill(&mut self, ctx: &mut Ctx<'_>) -> ControlFlow<Option<Instant>> {
        let now = ctx.now;
        if self.tail.pending().is_empty() {
            if let Some(back) = ctx.pool.pop().and_then(|b| self.tail.adopt_buffer(b)) {
                ctx.pool.push(back);
            }
        }
        let mut env = Env {
            fs: &mut tailfs::listed(ctx.listings, ctx.inotify),
            now,
            loaded: ctx.loaded,
        };
        let filled = self.tail.fill(&mut env);
        self.after_tail(ctx);
        match filled {
            Ok(Filled::Read(n)) => {
                ctx.meter.read.add(n as u64);
            }
            Ok(Filled::Eof) => {}
            Ok(Filled::Truncated) => return ControlFlow::Break(Some(now)),
            Err(e) => {
                crate::error!("reading {} failed: {e}", crate::log::esc(&self.path()));
                return ControlFlow::Break(Some(now + REOPEN_RETRY));
            }
        }
        ControlFlow::Continue(())
    }

    /// Sends the next `send` buffered bytes; breaks when the socket is
    /// full or the send failed.
    fn send_buffered(&mut self, ctx: &mut Ctx<'_>, send: usize) -> ControlFlow<Option<Instant>> {
        let Some(link) = self.link.as_mut() else {
            return ControlFlow::Break(None);
        };
        match link.send(&self.tail.pending()[..send]) {
            Ok(0) => ControlFlow::Break(None), // socket full: wait for writable
            Ok(n) => {
                charge(ctx, n);
                ctx.meter.sent.add(n as u64);
                self.tail.on_sent(n);
                self.last_active = ctx.now;
                ControlFlow::Continue(())
            }
            Err(e) => {
                self.link_failed(ctx, format!("send failed: {e}"), Some(Unreachable));
                ControlFlow::Break(None)
            }
        }
    }
}

/// Least credit a throttled stream waits for before sending again, so a
/// limited stream sends in chunks, not a byte at a time.
const THROTTLE_CHUNK: usize = 16 * 1024;

impl Stream {
    /// How many of `want` bytes the rate limits let go now; or, with none,
    /// when to try again (and the wait starts counting as throttled).
    fn throttle(&mut self, ctx: &mut Ctx<'_>, want: usize) -> Result<usize, Instant> {
        let now = ctx.now;
        let mut n = want;
        for b in [
            ctx.stream_limit.as_deref_mut(),
            ctx.client_limit.as_deref_mut(),
        ]
        .into_iter()
        .flatten()
        {
            n = n.min(b.available(now, n));
        }
        if n > 0 {
            if let Some(since) = self.throttled_since.take() {
                *ctx.throttled += now.saturating_duration_since(since);
            }
            return Ok(n);
        }
        let wake = want.min(THROTTLE_CHUNK);
        let at = [
            ctx.stream_limit.as_deref_mut(),
            ctx.client_limit.as_deref_mut(),
        ]
        .into_iter()
        .flatten()
        .map(|b| b.ready_at(now, wake))
        .max()
        .unwrap_or(now);
        self.throttled_since.get_or_insert(now);
        Err(at)
    }
}

/// Takes credit for `n` bytes sent from the stream's and the client's
/// buckets.
fn charge(ctx: &mut Ctx<'_>, n: usize) {
    let now = ctx.now;
    for b in [
        ctx.stream_limit.as_deref_mut(),
        ctx.client_limit.as_deref_mut(),
    ]
    .into_iter()
    .flatten()
    {
        b.take(now, n);
    }
}
