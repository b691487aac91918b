//! The zero-copy path: socket → pipe → output file with `splice(2)`.
//!
//! ## When
//! A streaming turn takes this path when the stream has its output to
//! itself (one writer: the line-aligned path would write every byte,
//! unterminated tail included, at once anyway), holds nothing in user
//! space (no bytes from the handshake, a stall or a shared spell), is not
//! stalled, no other stream owns the output's open last line, and the
//! output accepts splicing ([`Outputs::can_splice`]). Anything else, and
//! every turn after a second stream joined the output, is line-aligned as
//! before. The check is made at the start of every turn, so a stream moves
//! between the paths as writers come and go (logged at debug level).
//!
//! ## Invariants
//! - The server has one pipe ([`Splicer`]). A turn fills it from the socket
//!   only while it is empty and drains it into the output
//!   ([`Outputs::splice`]) before anything else happens, so between turns
//!   it is always empty. Bytes a drain could not write (a full disk) are
//!   read back into the stream's [`LineWriter`](crate::sink::output::LineWriter)
//!   and the line-aligned path's stall and retry take over. So, whenever
//!   other code looks, every byte taken from the socket is either in the
//!   output (counted by `LineWriter::written`) or pending in user space:
//!   offsets, `ACK`s, checkpoints and `250 DONE` are exact on both paths.
//! - Because the pipe is empty between turns, nothing has to happen when a
//!   second stream joins the output: the open-line owner is exact after
//!   every drain (the last byte is read back), and on its next turn the
//!   first stream sees two writers and reads the line-aligned way.
//! - Fairness: a turn moves at most [`QUANTUM`](super::QUANTUM) bytes, then asks to be
//!   served again after the next poll ([`Step::again`](super::Step)),
//!   so one fast connection cannot keep the loop from the others.
//! - Fallback: a socket that refuses splice turns the path off for the
//!   server's lifetime, an output that refuses it is written line-aligned
//!   from then on; each is logged once at debug level, and whatever was
//!   in the pipe is kept and written the line-aligned way.

use std::io;
use std::time::Instant;

use super::{Conn, ConnPhase, Shared, QUANTUM};
use crate::reactor::sys::pipe::{self, Pipe};
use crate::reactor::sys::retry;
use crate::sink::output::Outcome;

/// Pipe buffer asked for (the kernel caps it at `fs.pipe-max-size` for
/// unprivileged processes; a smaller pipe only means more calls).
const PIPE_SIZE: usize = 1 << 20;

/// The server's zero-copy machinery: one pipe, shared by every splicing
/// connection, empty between turns.
#[derive(Debug)]
pub(crate) struct Splicer {
    /// Created on first use; `None` again after an error that may have
    /// left bytes in it.
    pipe: Option<Pipe>,
    /// Splicing from sockets failed as unsupported: off for good.
    off: bool,
    /// A pipe could not be created (descriptor limit); logged once.
    pipe_failed: bool,
}

impl Splicer {
    pub fn new() -> Splicer {
        Splicer {
            pipe: None,
            off: false,
            pipe_failed: false,
        }
    }

    /// Takes the (empty) pipe for one turn, creating it if needed.
    fn take(&mut self) -> Option<Pipe> {
        if self.off {
            return None;
        }
        if let Some(p) = self.pipe.take() {
            return Some(p);
        }
        match Pipe::new(PIPE_SIZE) {
            Ok(p) => {
                crate::debug!("zero-copy: splice pipe of {} bytes", p.capacity());
                self.pipe_failed = false;
                Some(p)
            }
            Err(e) => {
                if !self.pipe_failed {
                    crate::debug!("zero-copy: cannot create a pipe ({e}); copying for now");
                    self.pipe_failed = true;
                }
                None
            }
        }
    }

    /// Returns the pipe after a turn that left it empty.
    fn give_back(&mut self, pipe: Pipe) {
        self.pipe = Some(pipe);
    }

    fn turn_off(&mut self, e: &io::Error) {
        crate::debug!("zero-copy: splice from sockets is not supported here ({e}); copying");
        self.off = true;
        self.pipe = None;
    }
}

/// How a zero-copy turn ended.
#[derive(Debug)]
pub(super) enum Turn {
    /// The socket is empty; everything taken from it is written.
    Drained,
    /// The quantum is used up; the socket may hold more.
    Quantum,
    /// The client half-closed; everything before is written.
    Eof,
    /// A write failed: the stream is stalled (its unwritten bytes pending)
    /// until this time.
    Stalled(Instant),
    /// The connection failed; it is closing.
    Closed,
    /// Splice does not apply after all: bytes taken from the socket are
    /// pending; continue line-aligned.
    Fallback,
    /// The connection's rate limit is spent until this time; everything
    /// taken from the socket is written.
    Throttled(Instant),
}

impl Conn {
    /// Whether this turn may take the zero-copy path; logs when the answer
    /// changes for the stream.
    pub(super) fn splice_ready(&mut self, shared: &mut Shared) -> bool {
        let Some(s) = self.stream.as_mut() else {
            return false;
        };
        let writers = shared.outputs.writers(s.output);
        let blocker = if s.jet.is_some() {
            Some("JetStream output")
        } else if shared.splice.off {
            Some("splice unavailable")
        } else if self.sock.as_plain().is_none() {
            Some("TLS connection")
        } else if s.inflow.is_some() {
            Some("compressed stream")
        } else if s.writer.pending_len() > 0 {
            Some("bytes held in memory")
        } else if writers != 1 {
            Some("output shared")
        } else if shared
            .outputs
            .open_line(s.output)
            .is_some_and(|o| o != s.owner)
        {
            Some("another stream's line is open")
        } else if !shared.outputs.can_splice(s.output) {
            Some("output cannot be spliced")
        } else {
            None
        };
        let ready = blocker.is_none();
        if ready != s.splicing {
            s.splicing = ready;
            let out = shared.outputs.path(s.output);
            match blocker {
                None => crate::debug!(
                    "{}: {} zero-copy on: splicing into {} at offset {}",
                    self.peer,
                    s.label,
                    crate::log::esc(&out),
                    s.writer.written()
                ),
                Some(why) => crate::debug!(
                    "{}: {} zero-copy off ({why}, {writers} writers): line-aligned writes into {} at offset {}; {} bytes spliced so far",
                    self.peer,
                    s.label,
                    crate::log::esc(&out),
                    s.writer.written(),
                    s.spliced
                ),
            }
        }
        ready
    }

    /// Moves socket bytes into the output through the pipe until the
    /// socket is empty, the quantum is used up, or something stops it.
    pub(super) fn splice_turn(&mut self, now: Instant, shared: &mut Shared) -> Turn {
        let Some(pipe) = shared.splice.take() else {
            return Turn::Fallback;
        };
        let mut moved = 0;
        loop {
            if moved >= QUANTUM {
                shared.splice.give_back(pipe);
                return Turn::Quantum;
            }
            if let Some(at) = self.rate_wait(now) {
                shared.splice.give_back(pipe);
                return Turn::Throttled(at);
            }
            if self.passes_max_offset(pipe.capacity()) {
                // Near the offset limit the line-aligned path counts
                // every byte before it takes it.
                shared.splice.give_back(pipe);
                return Turn::Fallback;
            }
            let n = match self.fill_pipe(&pipe, now, shared) {
                Ok(n) => n,
                Err(end) => {
                    shared.splice.give_back(pipe);
                    return end;
                }
            };
            moved += n;
            let Some(s) = self.stream.as_mut() else {
                return self.closing(now);
            };
            let before = s.writer.written();
            let outcome = match shared
                .outputs
                .splice(s.output, &mut s.writer, s.owner, &pipe, n)
            {
                Ok(o) => o,
                Err(e) => {
                    // The pipe may still hold bytes: it is dropped. The
                    // stream's offset counts only what reached the file,
                    // so its client sends the rest again after reconnecting.
                    crate::error!(
                        "{}: {} lost bytes it could not read back from the splice pipe ({e}); closing the connection",
                        self.peer,
                        s.label
                    );
                    super::note_offset(shared, s);
                    return self.closing(now);
                }
            };
            let spliced = s.writer.written() - before;
            s.spliced += spliced;
            s.spliced_bytes.inc_by(spliced);
            if let Outcome::Failed(e) = &outcome {
                if pipe::is_unsupported(e) {
                    // Not a stall: the output refused splice (and is
                    // line-aligned from now on); the caller writes what
                    // is pending.
                    shared.splice.give_back(pipe);
                    super::note_offset(shared, s);
                    return Turn::Fallback;
                }
            }
            if let Some(at) = self.settle(outcome, now, shared) {
                shared.splice.give_back(pipe);
                return Turn::Stalled(at);
            }
        }
    }

    /// Fills the empty `pipe` from the socket: how many bytes it took, or
    /// how the turn ends (the pipe is still empty then).
    fn fill_pipe(&mut self, pipe: &Pipe, now: Instant, shared: &mut Shared) -> Result<usize, Turn> {
        let allowed = self.allowance(now, pipe.capacity());
        let Some(sock) = self.sock.as_plain() else {
            return Err(Turn::Fallback);
        };
        match retry(|| pipe.fill_from(sock, allowed)) {
            Ok(0) => Err(Turn::Eof),
            Ok(n) => {
                self.charge(now, n);
                Ok(n)
            }
            // The pipe is empty, so it is the socket that is.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Turn::Drained),
            Err(e) if pipe::is_unsupported(&e) => {
                shared.splice.turn_off(&e);
                Err(Turn::Fallback)
            }
            Err(e) => {
                crate::debug!("{}: read failed: {e}", self.peer);
                Err(self.closing(now))
            }
        }
    }

    fn closing(&mut self, now: Instant) -> Turn {
        self.phase = ConnPhase::close_now(now);
        Turn::Closed
    }
}
