//! One simulated history: an application writing a log, logrotate
//! rotating it, the client's [`Tail`] following it over [`SimFs`], a
//! server that acknowledges late, disconnects and restarts, and client
//! crashes that keep only the last saved state file, interleaved by a
//! seeded scheduler that may delay the client arbitrarily between any two
//! operations. [`run`] plays one seed and checks, after every step and at
//! the end, what must hold (`check.rs`).
//!
//! The client side here mirrors `client/stream` (the real shell) in
//! miniature: connect when the tail wants a connection, INIT at the
//! acknowledged offset, take the server's offset, fill/send under the
//! batching rules, half-close when the tail says a generation is done,
//! acknowledge with `ACK` and `250 DONE`, drop the connection when the
//! generation changes. The decisions are the tail's own code.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loghamster::tail::batch::Rules;
use loghamster::tail::follow::{self, DirChange, Env, Note, State, Tail};
use loghamster::tail::fs::Fs;
use loghamster::tail::identity::StreamId;
use loghamster::tail::listing::{DirNames, EventQueue, Listed};
use loghamster::tail::state::Entry;

use crate::app::{App, Reopen};
use crate::fs::{SimFile, SimFs};
use crate::logrotate::{Config, Rotation, Step};

/// splitmix64: small, fast, and every seed is a different history.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub const DIR: &str = "/var/log";
pub const LOG: &str = "/var/log/app.log";
pub const OLDDIR: &str = "/var/log/old";

/// What the server says back, delivered when the scheduler decides.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Ack(u64),
    Done(u64),
    Closed,
}

/// The simulated server: per stream id, the bytes received and the part
/// committed (what an ACK covered). A restart cuts every stream back to
/// its committed part, as the real server cuts its output back to its
/// checkpoint.
#[derive(Default)]
pub struct Server {
    pub streams: BTreeMap<String, Vec<u8>>,
    committed: BTreeMap<String, u64>,
    /// Arrival order: (stream, offset, length) of each chunk received.
    pub arrivals: Vec<(String, u64, usize)>,
}

impl Server {
    fn received(&self, id: &str) -> u64 {
        self.streams.get(id).map_or(0, |s| s.len() as u64)
    }

    fn receive(&mut self, id: &str, at: u64, bytes: &[u8]) -> Result<(), String> {
        let s = self.streams.entry(id.to_string()).or_default();
        if at != s.len() as u64 {
            return Err(format!(
                "stream {id}: data at offset {at} but the server holds {}",
                s.len()
            ));
        }
        s.extend_from_slice(bytes);
        self.arrivals.push((id.to_string(), at, bytes.len()));
        Ok(())
    }

    fn commit(&mut self, id: &str) -> u64 {
        let n = self.received(id);
        self.committed.insert(id.to_string(), n);
        n
    }

    fn restart(&mut self) {
        for (id, s) in &mut self.streams {
            let keep = self.committed.get(id).copied().unwrap_or(0);
            s.truncate(keep as usize);
        }
        let committed = &self.committed;
        self.arrivals
            .retain(|(id, at, _)| *at < committed.get(id).copied().unwrap_or(0));
        for (id, at, len) in &mut self.arrivals {
            let keep = committed.get(id.as_str()).copied().unwrap_or(0);
            *len = (*len as u64).min(keep - *at) as usize;
        }
    }
}

/// The client's file system: [`SimFs`] with the directory names kept
/// while no inotify event waits, as the daemon lists (`tail::listing`).
type ClientFs<'a> = Listed<'a, &'a mut SimFs, SimQueue>;

/// The simulated inotify queue, asked as the daemon asks `FIONREAD`.
pub struct SimQueue;

impl EventQueue<&mut SimFs> for SimQueue {
    fn quiet(&mut self, fs: &&mut SimFs) -> bool {
        fs.queued_events() == 0
    }
}

/// A new client's kept names: none, with both watched directories known.
fn fresh_names() -> DirNames {
    let mut names = DirNames::default();
    names.watch(Path::new(DIR));
    names.watch(Path::new(OLDDIR));
    names
}

/// The client's connection, seen from both ends.
struct Link {
    id: StreamId,
    /// Offset of the next byte sent.
    sent: u64,
    finishing: bool,
    replies: VecDeque<Reply>,
}

/// The simulated client: a tail, its connection, its state file.
pub struct Client {
    pub tail: Option<Tail<SimFile>>,
    settings: follow::Settings,
    link: Option<Link>,
    /// Entries from the state file not claimed yet.
    loaded: Vec<Entry>,
    /// The state file as last saved.
    saved: Vec<Entry>,
    nonce: u64,
    /// Directory names kept between listings; forgotten when the client
    /// reads events, lost in a crash.
    names: DirNames,
    pub notes: Vec<Note>,
}

impl Client {
    fn new(settings: follow::Settings) -> Client {
        Client {
            tail: None,
            settings,
            link: None,
            loaded: Vec::new(),
            saved: Vec::new(),
            nonce: 1,
            names: fresh_names(),
            notes: Vec::new(),
        }
    }

    /// Starts (or restarts after a crash) from the saved state file.
    fn start(&mut self, fs: &mut SimFs, now: Instant) {
        // Distinct per run, as the real client's (seeded by the clock).
        self.nonce = self
            .nonce
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.loaded = self.saved.clone();
        let mut tail = Tail::new(PathBuf::from(LOG), self.settings.clone(), self.nonce);
        let mut fs: ClientFs = Listed::new(fs, &mut self.names, SimQueue);
        let mut env = Env {
            fs: &mut fs,
            now,
            loaded: &mut self.loaded,
        };
        tail.look(&mut env);
        self.tail = Some(tail);
        self.after_tail();
    }

    fn crash(&mut self) {
        self.tail = None;
        self.link = None;
        self.names = fresh_names();
    }

    fn save(&mut self) {
        let Some(tail) = &self.tail else { return };
        let mut entries: Vec<Entry> = tail.entries().collect();
        entries.extend(self.loaded.iter().cloned());
        self.saved = entries;
    }

    fn after_tail(&mut self) {
        let Some(tail) = &mut self.tail else { return };
        self.notes.extend(tail.take_notes());
        let save = tail.take_save_soon();
        tail.take_dirty();
        if self.link.as_ref().map(|l| l.id) != tail.stream_id() && self.link.is_some() {
            self.link = None;
            tail.on_link_lost();
        }
        if save {
            self.save();
        }
    }
}

/// The knobs one seed draws.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub rotate: Config,
    pub reopen: Reopen,
    pub steps: usize,
    pub crashes: bool,
    pub server_restarts: bool,
    /// Percent of steps that are the client's.
    pub client_share: u64,
    /// The resolution of the clock births are stamped from, ns (0: every
    /// birth distinct); see [`SimFs::set_birth_tick`].
    pub birth_tick: u64,
}

impl Scenario {
    pub fn draw(rng: &mut Rng) -> Scenario {
        let copytruncate = rng.chance(40);
        let compress = rng.chance(30);
        let rotate = Config {
            rotate: rng.below(4) as u32,
            create: !rng.chance(20),
            copytruncate,
            compress,
            delaycompress: compress && rng.chance(50),
            dateext: rng.chance(25),
            olddir: rng.chance(20).then(|| PathBuf::from(OLDDIR)),
            missingok: true,
            ifempty: true,
            chunk: [16, 64, 4096][rng.below(3) as usize],
        };
        Scenario {
            rotate,
            reopen: if rng.chance(50) {
                Reopen::Immediate
            } else {
                Reopen::Lazy
            },
            steps: 150 + rng.below(250) as usize,
            crashes: rng.chance(30),
            server_restarts: rng.chance(30),
            client_share: 20 + rng.below(60),
            birth_tick: 0,
        }
    }

    /// The birth clock's resolution, from its own generator (so the rest
    /// of a seed's history, and the seeds kept as regressions, stay what
    /// they were): half the seeds stamp births with a coarse clock of 1,
    /// 4 or 10 ms, as the kernel does, so files born in one tick tie.
    fn draw_birth_tick(seed: u64) -> u64 {
        let mut rng = Rng::new(seed ^ 0x6269_7274_685f_7469);
        if rng.chance(50) {
            [1_000_000, 4_000_000, 10_000_000][rng.below(3) as usize]
        } else {
            0
        }
    }
}

/// A world: the host, the application, logrotate, client and server.
pub struct World {
    pub rng: Rng,
    pub fs: SimFs,
    pub app: App,
    rotation: Option<Rotation>,
    stamp: u64,
    pub client: Client,
    pub server: Server,
    pub now: Instant,
    pub scenario: Scenario,
    pub trace: Vec<String>,
    seen: crate::check::Seen,
}

pub fn tail_settings(olddir: bool) -> follow::Settings {
    follow::Settings {
        rules: Rules {
            batch: 64,
            linger: Duration::from_millis(20),
            partial_line_timeout: Duration::from_secs(5),
        },
        initial_buffer: 256,
        max_batch: 1024,
        deleted_hold: Duration::from_secs(3600),
        follow_rotations: true,
        whole: false,
        follow_symlinks: false,
        id_key: None,
        olddirs: if olddir {
            vec![PathBuf::from(OLDDIR)]
        } else {
            Vec::new()
        },
    }
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let mut scenario = Scenario::draw(&mut rng);
        scenario.birth_tick = Scenario::draw_birth_tick(seed);
        let mut fs = SimFs::new();
        fs.set_birth_tick(scenario.birth_tick);
        fs.mkdir_all(Path::new(DIR)).expect("mkdir");
        fs.mkdir_all(Path::new(OLDDIR)).expect("mkdir");
        fs.watch(Path::new(DIR)).expect("watch");
        fs.watch(Path::new(OLDDIR)).expect("watch");
        fs.set_queue_limit(64);
        let app = App::new("app", Path::new(LOG), scenario.reopen);
        let client = Client::new(tail_settings(scenario.rotate.olddir.is_some()));
        World {
            rng,
            fs,
            app,
            rotation: None,
            stamp: 0,
            client,
            server: Server::default(),
            now: Instant::now(),
            scenario,
            trace: Vec::new(),
            seen: Default::default(),
        }
    }

    fn note(&mut self, what: impl Into<String>) {
        self.trace.push(what.into());
    }

    /// Plays the history; `Err` names the first broken rule.
    pub fn run(&mut self) -> Result<(), String> {
        self.app
            .write_lines(&mut self.fs, 3)
            .map_err(|e| e.to_string())?;
        self.client.start(&mut self.fs, self.now);
        for _ in 0..self.scenario.steps {
            self.step()?;
            let mut seen = std::mem::take(&mut self.seen);
            let result = crate::check::invariants(self, &mut seen);
            self.seen = seen;
            result?;
        }
        self.quiesce()?;
        crate::check::final_state(self)
    }

    fn step(&mut self) -> Result<(), String> {
        let dt = self.rng.below(40);
        self.advance(Duration::from_millis(dt));
        if self.rng.below(100) < self.scenario.client_share {
            return self.client_step();
        }
        match self.rng.below(10) {
            0..=4 => {
                let n = 1 + self.rng.below(4);
                self.app
                    .write_lines(&mut self.fs, n)
                    .map_err(|e| e.to_string())?;
                self.note(format!("app writes {n}"));
            }
            5..=6 => self.rotation_step()?,
            7 if self.app.reopen_pending() => {
                self.app.reopen(&mut self.fs).map_err(|e| e.to_string())?;
                self.note("app reopens");
            }
            8 if self.scenario.crashes && self.rng.chance(10) => {
                self.note("client crashes and restarts");
                self.client.crash();
                self.client.start(&mut self.fs, self.now);
            }
            9 if self.scenario.server_restarts && self.rng.chance(10) => {
                self.note("server restarts");
                self.server.restart();
                self.seen.reset();
                if let Some(tail) = &mut self.client.tail {
                    if self.client.link.take().is_some() {
                        tail.on_link_lost();
                    }
                }
            }
            _ => self.client_step()?,
        }
        Ok(())
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.fs.advance(d.as_nanos() as u64 + 1);
    }

    fn rotation_step(&mut self) -> Result<(), String> {
        if self.rotation.is_none() {
            self.stamp += 1;
            self.rotation = Some(Rotation::new(
                self.scenario.rotate.clone(),
                Path::new(LOG),
                self.stamp,
            ));
        }
        let Some(r) = &mut self.rotation else {
            return Ok(());
        };
        match r.step(&mut self.fs) {
            Step::Did(op) => self.note(format!("logrotate {op:?}")),
            Step::Postrotate => {
                self.app.hup(&mut self.fs).map_err(|e| e.to_string())?;
                self.note("postrotate HUP");
            }
            Step::Done(outcome) => {
                self.note(format!("logrotate done: {outcome:?}"));
                self.rotation = None;
            }
        }
        Ok(())
    }

    /// One thing the client does: read inotify events and look, tick,
    /// pump, hear a reply, save its state.
    fn client_step(&mut self) -> Result<(), String> {
        match self.rng.below(6) {
            0 => self.client_events(),
            1 => self.client_tick(),
            2 | 3 => self.client_pump()?,
            4 => self.client_hear()?,
            _ => {
                self.client.save();
                self.note("client saves its state");
            }
        }
        Ok(())
    }

    /// The client's tail, what its `Env` is made of (the file system, the
    /// loaded entries) and the server.
    #[allow(clippy::type_complexity)]
    fn env_parts(
        &mut self,
    ) -> Option<(
        &mut Tail<SimFile>,
        ClientFs<'_>,
        &mut Vec<Entry>,
        &mut Server,
    )> {
        let tail = self.client.tail.as_mut()?;
        let fs: ClientFs = Listed::new(&mut self.fs, &mut self.client.names, SimQueue);
        Some((tail, fs, &mut self.client.loaded, &mut self.server))
    }

    fn client_events(&mut self) {
        let max = 1 + self.rng.below(8) as usize;
        let events = self.fs.drain_some_events(max);
        if events.is_empty() {
            return;
        }
        // As the daemon does after every read of its inotify descriptor.
        self.client.names.forget();
        let now = self.now;
        let Some((tail, mut fs, loaded, _)) = self.env_parts() else {
            return;
        };
        let mut env = Env {
            fs: &mut fs,
            now,
            loaded,
        };
        use loghamster::reactor::sys::inotify::mask as m;
        for e in &events {
            let change = if e.mask & m::MOVED_FROM != 0 {
                DirChange::MovedFrom(e.cookie)
            } else if e.mask & m::MOVED_TO != 0 {
                DirChange::MovedTo(e.cookie)
            } else if e.mask & m::DELETE != 0 {
                DirChange::Deleted
            } else if e.mask & m::CREATE != 0 {
                DirChange::Created
            } else {
                continue;
            };
            if e.name.to_string_lossy().starts_with("app.log") {
                tail.record(&e.dir.join(&e.name), change);
            }
        }
        let name = tail.name().to_os_string();
        let draining = matches!(tail.state(), State::Draining { .. });
        let overflow = events
            .iter()
            .any(|e| e.mask & loghamster::reactor::sys::inotify::mask::Q_OVERFLOW != 0);
        if overflow || draining || events.iter().any(|e| e.name == name) {
            tail.look(&mut env);
        }
        self.client.after_tail();
        let names: Vec<String> = events
            .iter()
            .map(|e| format!("{}:{:x}", e.name.to_string_lossy(), e.mask))
            .collect();
        self.note(format!("client reads {} events {names:?}", events.len()));
    }

    fn client_tick(&mut self) {
        let link_open = self.client.link.is_some();
        let now = self.now;
        let Some((tail, mut fs, loaded, _)) = self.env_parts() else {
            return;
        };
        let mut env = Env {
            fs: &mut fs,
            now,
            loaded,
        };
        let t = tail.tick(&mut env, link_open);
        self.client.after_tail();
        if t.finish {
            if let Some(link) = &mut self.client.link {
                if !link.finishing {
                    link.finishing = true;
                    let id = link.id.to_string();
                    let n = self.server.commit(&id);
                    link.replies.push_back(Reply::Done(n));
                    link.replies.push_back(Reply::Closed);
                }
            }
        }
        self.note("client ticks");
    }

    fn client_pump(&mut self) -> Result<(), String> {
        if self.client.link.is_none() {
            return self.client_connect();
        }
        let now = self.now;
        let Some((tail, mut fs, loaded, _)) = self.env_parts() else {
            return Ok(());
        };
        let mut env = Env {
            fs: &mut fs,
            now,
            loaded,
        };
        let filled = tail
            .fill(&mut env)
            .map_err(|e| format!("read failed: {e}"))?;
        self.client.after_tail();
        let now = self.now;
        let (Some(tail), Some(link)) = (&mut self.client.tail, &mut self.client.link) else {
            return Ok(());
        };
        if link.finishing {
            return Ok(());
        }
        let d = tail.sendable(now);
        if d.send > 0 {
            let id = link.id.to_string();
            let bytes = tail.pending()[..d.send].to_vec();
            self.server.receive(&id, link.sent, &bytes)?;
            link.sent += bytes.len() as u64;
            tail.on_sent(bytes.len());
            if self.rng.chance(50) {
                let n = self.server.commit(&id);
                link.replies.push_back(Reply::Ack(n));
            }
        }
        self.note(format!("client pumps ({filled:?}, sent {})", d.send));
        Ok(())
    }

    fn client_connect(&mut self) -> Result<(), String> {
        let now = self.now;
        let Some((tail, mut fs, loaded, server)) = self.env_parts() else {
            return Ok(());
        };
        let mut env = Env {
            fs: &mut fs,
            now,
            loaded,
        };
        let len = match tail.current() {
            Some(g) => env.fs.fstat(&g.file).map_or(0, |m| m.len),
            None => return Ok(()),
        };
        if !tail.wants_link(len) {
            return Ok(());
        }
        let Some(id) = tail.stream_id() else {
            return Ok(());
        };
        let held = server.received(&id.to_string());
        let ok = tail.on_ready(&mut env, Some(held));
        if ok {
            self.client.link = Some(Link {
                id,
                sent: held,
                finishing: false,
                replies: VecDeque::new(),
            });
        }
        self.client.after_tail();
        self.note(format!("client connects {id} at {held} (ok: {ok})"));
        Ok(())
    }

    fn client_hear(&mut self) -> Result<(), String> {
        let Some(link) = &mut self.client.link else {
            return Ok(());
        };
        let Some(reply) = link.replies.pop_front() else {
            return Ok(());
        };
        let Some(tail) = &mut self.client.tail else {
            return Ok(());
        };
        match reply {
            Reply::Ack(n) => {
                tail.on_ack(n)
                    .map_err(|sent| format!("ACK {n} beyond sent {sent}"))?;
            }
            Reply::Done(n) => {
                tail.on_done(n);
            }
            Reply::Closed => {
                self.client.link = None;
                tail.on_link_finished();
            }
        }
        self.client.after_tail();
        self.note(format!("client hears {reply:?}"));
        Ok(())
    }

    /// Stops writing and rotating, brings the server back, and lets the
    /// client run until it has nothing left to do.
    fn quiesce(&mut self) -> Result<(), String> {
        while self.rotation.is_some() {
            self.rotation_step()?;
        }
        if self.app.reopen_pending() {
            self.app.reopen(&mut self.fs).map_err(|e| e.to_string())?;
        }
        self.app.close(&mut self.fs);
        if self.client.tail.is_none() {
            self.client.start(&mut self.fs, self.now);
        }
        for _ in 0..4000 {
            self.advance(Duration::from_millis(30));
            self.client_events();
            self.client_tick();
            // Connect, then read and send (the real shell pumps right
            // after a connection comes up).
            self.client_pump()?;
            self.client_pump()?;
            while self
                .client
                .link
                .as_ref()
                .is_some_and(|l| !l.replies.is_empty())
            {
                self.client_hear()?;
            }
            if let Some(link) = &mut self.client.link {
                let n = self.server.commit(&link.id.to_string());
                link.replies.push_back(Reply::Ack(n));
            }
            if self.idle() {
                return Ok(());
            }
        }
        Err("the client did not settle within 4000 rounds after the history".into())
    }

    /// Nothing left: following the file at the path, everything read, sent
    /// and acknowledged, no rotated file waiting.
    fn idle(&mut self) -> bool {
        let Some(tail) = &self.client.tail else {
            return false;
        };
        if self.fs.queued_events() > 0 {
            return false;
        }
        let len = match tail.current() {
            Some(g) => self.fs.fstat(&g.file).map_or(0, |m| m.len),
            None => {
                return matches!(tail.state(), State::Missing { .. })
                    && self.fs.stat_path(Path::new(LOG)).is_none()
            }
        };
        tail.state() == State::Following
            && !tail.needs_verify()
            && tail.queued().next().is_none()
            && tail.acked() == len
            && tail.sent() == len
    }
}
