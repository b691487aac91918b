//! Compressed streams: socket bytes go through a push-style decoder
//! ([`crate::codec::Decoder`]) before the line writer sees them.
//!
//! Everything after the decoder is the plain path: the writer counts plain
//! bytes, so `ACK`, `250 DONE`, the checkpoint and resume offsets are the
//! same numbers an uncompressed stream would have. Such a stream never
//! takes the splice path (the kernel cannot decode).
//!
//! ## Bounds
//! - Per step: each decode step yields at most one [`DECODE_CHUNK`] of
//!   plain bytes into the server's one decode buffer
//!   ([`Shared::plain`](crate::server::Shared)), which goes to the writer
//!   at once. When the writer stalls (disk full, a shared output's open
//!   line), decoding stops and the compressed input not yet decoded is
//!   *held*, like the plain bytes the writer holds; the socket is not read
//!   meanwhile, so TCP back-pressure holds the client.
//! - Per turn: the plain bytes decoded count against the connection's
//!   [`QUANTUM`]. A stream that reaches it holds the rest of its input
//!   (and whatever the decoder still has inside) and is served again
//!   after the next poll, behind everything else that is ready: a small
//!   compression bomb (66 KiB of zstd that decode to 2 GiB) is written a
//!   quantum at a time instead of in one turn that holds every other
//!   connection.
//! - Memory: every decoder's memory (its window and buffers, measured
//!   after each step, plus held input) is charged to one budget,
//!   `decoder_memory` ([`Budget`]). A compressed stream is refused with
//!   `503 Decoder memory exhausted` at INIT when the budget is spent, and
//!   closed with the same line when its decoder grows past it (a zstd
//!   frame header that asks for an 8 MiB window). What it wrote before
//!   stays, and its client resumes from there.

use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::{Conn, ConnPhase, Shared, QUANTUM};
use crate::codec::{Codec, Decoder};
use crate::metrics::server::{CodecLabels, LimitHit};

/// The memory all decoders may hold together (`decoder_memory`), counted
/// in the `loghamster_server_decoder_memory_bytes` gauge.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    limit: usize,
    used: Gauge,
}

impl Budget {
    pub fn new(limit: usize, used: Gauge) -> Budget {
        Budget { limit, used }
    }

    fn used(&self) -> usize {
        usize::try_from(self.used.get()).unwrap_or(0)
    }

    /// A charge of `bytes`, or `None` when it does not fit.
    fn charge(&self, bytes: usize) -> Option<Charge> {
        if self.used().saturating_add(bytes) > self.limit {
            return None;
        }
        self.used.inc_by(bytes as i64);
        Some(Charge {
            budget: self.clone(),
            bytes,
        })
    }
}

/// One decoder's share of the [`Budget`]; given back when dropped.
#[derive(Debug)]
struct Charge {
    budget: Budget,
    bytes: usize,
}

impl Charge {
    /// Moves the charge to `bytes`; false when that growth does not fit
    /// (the charge is moved anyway, and given back with the stream).
    fn set(&mut self, bytes: usize) -> bool {
        let grew = bytes > self.bytes;
        self.budget.used.inc_by(bytes as i64 - self.bytes as i64);
        self.bytes = bytes;
        !grew || self.budget.used() <= self.budget.limit
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.dec_by(self.bytes as i64);
    }
}

/// Why a compressed stream could not start.
#[derive(Debug)]
pub(crate) enum InflowError {
    /// The decoder could not be created.
    Decoder(std::io::Error),
    /// `decoder_memory` is spent.
    Budget,
}

/// A compressed stream's decoding state.
#[derive(Debug)]
pub(crate) struct Inflow {
    dec: Decoder,
    /// Compressed bytes received but not decoded yet (the writer stalled,
    /// or the turn's quantum was used up).
    held: Vec<u8>,
    /// The decoder may have output left inside: decode again before
    /// reading the socket.
    more: bool,
    /// Plain bytes this turn may still decode (see [`QUANTUM`]).
    turn_left: usize,
    /// This decoder's share of `decoder_memory`.
    charge: Charge,
    /// `loghamster_server_compressed_received_bytes_total{codec}`.
    wire: Counter,
    /// `loghamster_server_decompressed_bytes_total{codec}`.
    decoded: Counter,
}

impl Inflow {
    pub fn new(codec: Codec, shared: &Shared) -> Result<Inflow, InflowError> {
        let dec = Decoder::new(codec).map_err(InflowError::Decoder)?;
        let charge = shared
            .decoders
            .charge(dec.memory())
            .ok_or(InflowError::Budget)?;
        let labels = CodecLabels::of(codec);
        let m = &shared.metrics;
        Ok(Inflow {
            dec,
            held: Vec::new(),
            more: false,
            turn_left: QUANTUM,
            charge,
            wire: m.compressed_received.get_or_create_owned(&labels),
            decoded: m.decompressed.get_or_create_owned(&labels),
        })
    }

    pub fn codec(&self) -> Codec {
        self.dec.codec()
    }

    /// Compressed input arrived with INIT, before the stream was attached.
    pub fn hold(&mut self, data: &[u8]) {
        self.wire.inc_by(data.len() as u64);
        self.held.extend_from_slice(data);
    }

    /// Keeps `input` for later: the writer stalled or the quantum is used.
    fn keep(&mut self, input: &[u8]) {
        self.held = input.to_vec();
        self.more = true;
    }
}

impl Conn {
    /// A new turn: a compressed stream may decode another [`QUANTUM`].
    pub(super) fn new_turn(&mut self) {
        if let Some(f) = self.stream.as_mut().and_then(|s| s.inflow.as_mut()) {
            f.turn_left = QUANTUM;
        }
    }

    /// Writes stream bytes from the socket: decoded first for a compressed
    /// stream, as they are otherwise. Returns the retry time when the
    /// stream is stalled afterwards (or `None` when it was closed for
    /// input that does not decode). A compressed stream that used up its
    /// quantum keeps the rest ([`holds_input`](Self::holds_input)).
    pub(super) fn write_input(
        &mut self,
        data: &[u8],
        now: Instant,
        shared: &mut Shared,
    ) -> Option<Instant> {
        let Some(mut f) = self.stream.as_mut().and_then(|s| s.inflow.take()) else {
            return self.write_data(data, now, shared);
        };
        f.wire.inc_by(data.len() as u64);
        let stalled = self.inflate(&mut f, data, now, shared);
        match self.stream.as_mut() {
            // A stream closed for its input gives its decoder's memory
            // back at once, not when the connection is dropped.
            Some(s) if matches!(self.phase, ConnPhase::Streaming) => s.inflow = Some(f),
            _ => {}
        }
        stalled
    }

    /// True when the stream is compressed and has input (or decoder
    /// output) left to write before it reads the socket again.
    pub(super) fn holds_input(&self) -> bool {
        self.stream
            .as_ref()
            .and_then(|s| s.inflow.as_ref())
            .is_some_and(|f| !f.held.is_empty() || f.more)
    }

    /// The client half-closed a compressed stream in the middle of it:
    /// returns the codec then (the stream must not end here).
    pub(super) fn cut_short(&self) -> Option<Codec> {
        let f = self.stream.as_ref()?.inflow.as_ref()?;
        (!f.dec.at_end()).then(|| f.codec())
    }

    fn inflate(
        &mut self,
        f: &mut Inflow,
        data: &[u8],
        now: Instant,
        shared: &mut Shared,
    ) -> Option<Instant> {
        let joined;
        let mut input = if f.held.is_empty() {
            data
        } else {
            f.held.extend_from_slice(data);
            joined = std::mem::take(&mut f.held);
            joined.as_slice()
        };
        f.more = false;
        let mut plain = std::mem::take(&mut shared.plain);
        let stalled = loop {
            if f.turn_left == 0 {
                f.keep(input);
                break None;
            }
            plain.clear();
            match f.dec.decode(input, &mut plain) {
                Ok(used) => input = &input[used..],
                Err(e) => {
                    self.undecodable(f.codec(), &e.to_string(), now, shared);
                    break None;
                }
            }
            if !f.charge.set(f.dec.memory() + input.len()) {
                self.over_budget(&f.charge, now, shared);
                break None;
            }
            if plain.is_empty() {
                break None;
            }
            f.decoded.inc_by(plain.len() as u64);
            f.turn_left = f.turn_left.saturating_sub(plain.len());
            if let Some(at) = self.write_data(&plain, now, shared) {
                f.keep(input);
                break Some(at);
            }
            if !matches!(self.phase, ConnPhase::Streaming) {
                break None;
            }
        };
        shared.plain = plain;
        stalled
    }

    /// Input that does not decode: logged, counted, and the connection
    /// closed (what decoded before is kept).
    fn undecodable(&mut self, codec: Codec, e: &str, now: Instant, shared: &mut Shared) {
        let label = self.stream.as_ref().map_or("", |s| s.label.as_str());
        crate::warn!(
            "{}: {label}: {e}; closing the connection (what decoded before is kept)",
            self.peer
        );
        shared
            .metrics
            .decode_errors
            .get_or_create(&CodecLabels::of(codec))
            .inc();
        self.phase = ConnPhase::close_now(now);
    }

    /// The decoder grew past `decoder_memory`: `503`, logged, counted.
    fn over_budget(&mut self, charge: &Charge, now: Instant, shared: &mut Shared) {
        let label = self.stream.as_ref().map_or("", |s| s.label.as_str());
        crate::warn!(
            "{}: {label}: its decoder needs {} KiB, and all decoders together would pass decoder_memory ({} MiB); closing the stream",
            self.peer,
            charge.bytes >> 10,
            charge.budget.limit >> 20
        );
        shared.metrics.limit_hit(LimitHit::DecoderMemory);
        self.fail(503, "Decoder memory exhausted", now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_budget_and_are_given_back() {
        let budget = Budget::new(100, Gauge::default());
        let mut a = budget.charge(60).expect("fits");
        assert!(budget.charge(50).is_none(), "would pass the limit");
        let b = budget.charge(40).expect("fits exactly");
        assert_eq!(budget.used(), 100);
        assert!(a.set(50), "shrinking always fits");
        assert!(!a.set(70), "growing past the limit does not");
        assert_eq!(budget.used(), 110);
        drop(a);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
