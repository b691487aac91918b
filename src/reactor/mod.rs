//! The event loop: one thread, one `epoll` (through mio), nothing else.
//!
//! The reactor knows nothing about files, streams or the protocol. It owns
//! the `mio::Poll`, a reused `Events` buffer and the timer heap, and hands
//! the daemon the list of ready tokens to dispatch with a
//! `match token { ... }` (readiness kinds are not passed on: by the rules
//! below every handler reads and writes until `WouldBlock` anyway). Tokens are plain numbers: fixed ones below
//! [`slots::RESERVED`] for singletons (listener, signalfd, inotify) and
//! generation-tagged [`slots::Key`]s for everything in a slab.
//!
//! ## Edge-triggered rules
//! mio registers sources edge-triggered. Every handler therefore:
//! 1. drains its source until `WouldBlock` (or until it deliberately stops
//!    reading to apply back-pressure, in which case it must remember that
//!    it stopped and resume on its own, never waiting for another edge);
//! 2. treats every event as a hint: readiness can be spurious, so a
//!    `WouldBlock` right away is normal;
//! 3. never assumes one event per write: several writes may coalesce into
//!    one event, and one event may cover data that was already read.
//!
//! Timers ([`timer::Timers`]) carry a token and fire by calling the same
//! handler as an event would; owners re-check their own deadlines, so a
//! stale or early wake-up is harmless.
//!
//! [`Supervisor`] tells systemd when the daemon is ready and stopping, and
//! pings its watchdog from a timer of this loop.
//!
//! All raw system calls live in [`sys`], the only module allowed `unsafe`.

pub mod slots;
pub mod supervisor;
#[allow(unsafe_code)]
pub mod sys;
pub mod timer;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mio::{Events, Poll, Registry, Token, Waker};

pub use slots::{Key, Slots};
pub use supervisor::Supervisor;
pub use timer::{Armed, Timers};

#[derive(Debug)]
pub struct Reactor {
    poll: Poll,
    events: Events,
    /// The tokens of the last poll whose events said the peer closed its
    /// side (`EPOLLRDHUP`/`EPOLLHUP`; see [`Reactor::read_closed`]).
    closed: Vec<Token>,
    pub timers: Timers<Token>,
}

impl Reactor {
    pub fn new(capacity: usize) -> io::Result<Self> {
        Ok(Reactor {
            poll: Poll::new()?,
            events: Events::with_capacity(capacity),
            closed: Vec::new(),
            timers: Timers::default(),
        })
    }

    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// The registry and the timers at once, for handlers that need both.
    pub fn parts(&mut self) -> (&Registry, &mut Timers<Token>) {
        (self.poll.registry(), &mut self.timers)
    }

    /// Sleeps until an event arrives or the earliest timer is due, then
    /// fills `out` with the ready tokens (cleared first; its capacity is
    /// reused), copied out of mio's buffer so handlers can borrow the
    /// daemon mutably while iterating. Expired timers
    /// are not included: the caller drains them with `timers.pop_expired`.
    pub fn wait(&mut self, out: &mut Vec<Token>, now: Instant) -> io::Result<()> {
        let timeout = self.timers.timeout(now);
        self.wait_at_most(out, timeout)
    }

    /// As [`wait`](Self::wait), but sleeps at most `timeout` whatever the
    /// timers say (`Some(Duration::ZERO)`: only looks). For a caller that
    /// keeps its own clock, such as a simulation.
    pub fn wait_at_most(
        &mut self,
        out: &mut Vec<Token>,
        timeout: Option<std::time::Duration>,
    ) -> io::Result<()> {
        out.clear();
        self.closed.clear();
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            // Not `sys::retry`: a signal ends the wait early, like an
            // event, so the caller re-reads the clock and runs due timers.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        out.extend(self.events.iter().map(|e| e.token()));
        self.closed.extend(
            self.events
                .iter()
                .filter(|e| e.is_read_closed())
                .map(|e| e.token()),
        );
        // Looked up once per connection event: sorted, so many
        // connections closing in one poll cost no quadratic scan.
        self.closed.sort_unstable();
        Ok(())
    }

    /// Whether the last poll's event for `token` said the peer closed its
    /// side. Sockets are edge-triggered: after a read that came back
    /// short, a reader may wait for the next event instead of reading
    /// again to find the socket empty, unless the event that woke it also
    /// carried the end of input (which no later event would announce).
    pub fn read_closed(&self, token: Token) -> bool {
        self.closed.binary_search(&token).is_ok()
    }
}

/// Asks a running daemon to stop cleanly, from any thread: sets a flag and
/// wakes the loop, which checks [`StopHandle::requested`] on its waker token.
#[derive(Debug, Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    pub fn new(registry: &Registry, token: Token) -> io::Result<StopHandle> {
        Ok(StopHandle {
            flag: Arc::new(AtomicBool::new(false)),
            waker: Arc::new(Waker::new(registry, token)?),
        })
    }

    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The loop's one waker (mio allows one per `Poll`), for other threads
    /// that have news for the loop: it looks at them whenever it wakes.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }
}

/// Reads and drops whatever a non-blocking socket has; true once the peer
/// closed it or it failed, false when it would block. For connections the
/// daemon has finished answering and only waits to see closed.
pub fn discard_input(sock: &mut impl io::Read) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match sys::retry(|| sock.read(&mut sink)) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}
