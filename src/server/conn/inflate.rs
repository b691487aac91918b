//! Compressed streams: socket bytes go through a push-style decoder
//! ([`crate::codec::Decoder`]) before the line writer sees them.
//!
//! Everything after the decoder is the plain path: the writer counts plain
//! bytes, so `ACK`, `250 DONE`, the checkpoint and resume offsets are the
//! same numbers an uncompressed stream would have. Such a stream never
//! takes the splice path (the kernel cannot decode).
//!
//! Bounded memory: each decode step yields at most one
//! [`DECODE_CHUNK`] of plain bytes, which goes to the writer at once. When
//! the writer stalls (disk full, a shared output's open line), decoding
//! stops and the compressed input not yet decoded is *held*, like the
//! plain bytes the writer holds; the socket is not read meanwhile, so TCP
//! back-pressure holds the client.

use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

use super::{Conn, ConnPhase, Shared};
use crate::codec::{Codec, Decoder, DECODE_CHUNK};
use crate::metrics::server::CodecLabels;

/// A compressed stream's decoding state.
#[derive(Debug)]
pub(crate) struct Inflow {
    dec: Decoder,
    /// Compressed bytes received but not decoded yet (the writer stalled).
    held: Vec<u8>,
    /// Decoder output, handed to the writer before the next step; its
    /// capacity is one [`DECODE_CHUNK`].
    plain: Vec<u8>,
    /// `loghamster_server_compressed_received_bytes_total{codec}`.
    wire: Counter,
    /// `loghamster_server_decompressed_bytes_total{codec}`.
    decoded: Counter,
}

impl Inflow {
    pub fn new(codec: Codec, shared: &Shared) -> std::io::Result<Inflow> {
        let labels = CodecLabels::of(codec);
        let m = &shared.metrics;
        Ok(Inflow {
            dec: Decoder::new(codec)?,
            held: Vec::new(),
            plain: Vec::with_capacity(DECODE_CHUNK),
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
}

impl Conn {
    /// Writes stream bytes from the socket: decoded first for a compressed
    /// stream, as they are otherwise. Returns the retry time when the
    /// stream is stalled afterwards (or `None` when it was closed for
    /// input that does not decode).
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
        if let Some(s) = self.stream.as_mut() {
            s.inflow = Some(f);
        }
        stalled
    }

    /// True when the stream is compressed and holds undecoded input.
    pub(super) fn holds_input(&self) -> bool {
        self.stream
            .as_ref()
            .and_then(|s| s.inflow.as_ref())
            .is_some_and(|f| !f.held.is_empty())
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
        loop {
            f.plain.clear();
            match f.dec.decode(input, &mut f.plain) {
                Ok(used) => input = &input[used..],
                Err(e) => {
                    let label = self.stream.as_ref().map_or("", |s| s.label.as_str());
                    crate::warn!(
                        "{}: {label}: {e}; closing the connection (what decoded before is kept)",
                        self.peer
                    );
                    shared
                        .metrics
                        .decode_errors
                        .get_or_create(&CodecLabels::of(f.codec()))
                        .inc();
                    self.phase = ConnPhase::close_now(now);
                    return None;
                }
            }
            if f.plain.is_empty() {
                return None;
            }
            f.decoded.inc_by(f.plain.len() as u64);
            if let Some(at) = self.write_data(&f.plain, now, shared) {
                f.held = input.to_vec();
                return Some(at);
            }
        }
    }
}
