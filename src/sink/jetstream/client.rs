//! The client thread of one JetStream output: a current-thread tokio
//! runtime, one `async-nats` connection, and a task per publish or lookup.
//!
//! The main task takes a permit of the `max_outstanding` semaphore before
//! each command, so at most that many publishes are in flight. A publish
//! task sends its message and awaits the PubAck (`ack_timeout`); on any
//! failure it reports the first one ([`Event::PublishFailed`]), waits
//! (100 ms doubling to 2 s) and sends the very same message again, until
//! JetStream acknowledges it or the stream is forgotten. Tasks of one
//! stream identity take that identity's lock in turn, so a lookup of the
//! stream's end sees every publish this gateway made for it (a forgotten
//! stream's task stops at its next retry).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use tokio::sync::{mpsc, Mutex, Semaphore};

use super::{headers, Command, Event, StreamTag};
use crate::config::jetstream::{JetStreamConfig, NatsAuth, HEADER_ROOM};
use crate::metrics::jetstream::OutputSeries;

/// How the thread reaches the loop.
#[derive(Debug, Clone)]
pub struct Wire {
    pub events: std::sync::mpsc::Sender<Event>,
    pub waker: Arc<mio::Waker>,
    pub metrics: OutputSeries,
}

impl Wire {
    fn send(&self, e: Event) {
        if self.events.send(e).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// One stream identity's turn-taking: its publishes and lookups hold
/// `lock` in turn; `forgotten` stops the current publish's retries.
#[derive(Debug, Clone, Default)]
struct Turn {
    lock: Arc<Mutex<()>>,
    forgotten: Arc<AtomicBool>,
    /// The connection whose lookup began this turn.
    conn: usize,
}

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Starts the thread of output `name`.
pub fn spawn(
    name: &str,
    cfg: JetStreamConfig,
    commands: mpsc::Receiver<Command>,
    wire: Wire,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let label = name.to_string();
    std::thread::Builder::new()
        .name(format!("jetstream-{name}"))
        .spawn(move || rt.block_on(run(label, cfg, commands, wire)))?;
    Ok(())
}

async fn connect(name: &str, cfg: &JetStreamConfig, wire: &Wire) -> io::Result<async_nats::Client> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("loghamsterd output {name}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(2000)));
    opts = match &cfg.auth {
        NatsAuth::None => opts,
        NatsAuth::UserPassword { user, password } => {
            opts.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(t) => opts.token(t.clone()),
        NatsAuth::CredsFile(p) => opts.credentials_file(p).await?,
    };
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let (label, w) = (name.to_string(), wire.clone());
    opts = opts.event_callback(move |e| {
        let (label, w) = (label.clone(), w.clone());
        async move {
            match e {
                async_nats::Event::Connected => {
                    crate::info!("output {label}: connected to NATS");
                    w.metrics.connected.set(1);
                }
                async_nats::Event::Disconnected => {
                    crate::warn!("output {label}: disconnected from NATS; reconnecting");
                    w.metrics.connected.set(0);
                    w.send(Event::Disconnected);
                }
                other => crate::warn!("output {label}: NATS: {other}"),
            }
        }
    });
    opts.connect(cfg.servers.as_slice())
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

async fn run(
    name: String,
    cfg: JetStreamConfig,
    mut commands: mpsc::Receiver<Command>,
    wire: Wire,
) {
    let client = match connect(&name, &cfg, &wire).await {
        Ok(c) => c,
        Err(e) => {
            crate::error!("output {name}: cannot set up the NATS connection: {e}");
            return;
        }
    };
    let mut ctx = jetstream::new(client.clone());
    ctx.set_timeout(cfg.ack_timeout);
    let window = Arc::new(Semaphore::new(cfg.max_outstanding));
    let mut turns: HashMap<String, Turn> = HashMap::new();
    let mut sized = false;
    let mut served = 0u64;
    loop {
        let Ok(permit) = window.clone().acquire_owned().await else {
            return;
        };
        let Some(cmd) = commands.recv().await else {
            return;
        };
        if !sized && client.connection_state() == async_nats::connection::State::Connected {
            let max = (client.server_info().max_payload)
                .saturating_sub(HEADER_ROOM)
                .max(1024);
            wire.send(Event::Connected { max_message: max });
            sized = true;
        }
        served += 1;
        if served % 1024 == 0 {
            turns.retain(|_, t| Arc::strong_count(&t.lock) > 1);
        }
        match cmd {
            Command::Publish {
                conn,
                tag,
                offset,
                end,
                payload,
            } => {
                let turn = turns.entry(tag.identity.clone()).or_default().clone();
                let job = Publish {
                    conn,
                    tag,
                    offset,
                    end,
                    payload,
                };
                let (ctx, wire) = (ctx.clone(), wire.clone());
                let stream = cfg.stream.clone();
                tokio::spawn(async move {
                    job.run(&ctx, &stream, &turn, &wire).await;
                    drop(permit);
                });
            }
            Command::Lookup { conn, tag } => {
                // A new connection for the stream: the previous one's
                // publish (if any) stops retrying, and the lookup waits
                // for it to end.
                let turn = turns.entry(tag.identity.clone()).or_default();
                turn.forgotten.store(true, Ordering::Relaxed);
                let next = Turn {
                    lock: turn.lock.clone(),
                    forgotten: Arc::default(),
                    conn,
                };
                *turn = next.clone();
                let (ctx, wire, stream) = (ctx.clone(), wire.clone(), cfg.stream.clone());
                let timeout = cfg.ack_timeout;
                tokio::spawn(async move {
                    let _held = next.lock.lock().await;
                    let end = match tokio::time::timeout(timeout, lookup(&ctx, &stream, &tag)).await
                    {
                        Ok(r) => r,
                        Err(_) => Err(format!("no answer from JetStream within {timeout:?}")),
                    };
                    if end.is_err() {
                        wire.metrics.errors.inc();
                    }
                    wire.send(Event::Looked { conn, end });
                    drop(permit);
                });
            }
            Command::Forget { identity, conn } => {
                if let Some(t) = turns.get(&identity).filter(|t| t.conn == conn) {
                    t.forgotten.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// One message on its way, retried until acknowledged (or forgotten).
struct Publish {
    conn: usize,
    tag: Arc<StreamTag>,
    offset: u64,
    end: u64,
    payload: bytes::Bytes,
}

impl Publish {
    async fn run(self, ctx: &Context, stream: &str, turn: &Turn, wire: &Wire) {
        let _held = turn.lock.lock().await;
        let len = self.payload.len() as i64;
        let m = &wire.metrics;
        m.outstanding.inc();
        m.outstanding_bytes.inc_by(len);
        let mut delay = RETRY_FIRST;
        let mut reported = false;
        loop {
            if turn.forgotten.load(Ordering::Relaxed) {
                break;
            }
            m.published.inc();
            match self.attempt(ctx, stream).await {
                Ok(duplicate) => {
                    m.acked.inc();
                    m.acked_bytes.inc_by(len as u64);
                    if duplicate {
                        m.duplicates.inc();
                    }
                    wire.send(Event::Acked {
                        conn: self.conn,
                        end: self.end,
                    });
                    break;
                }
                Err(error) => {
                    m.errors.inc();
                    if !reported {
                        wire.send(Event::PublishFailed {
                            conn: self.conn,
                            error,
                        });
                        reported = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
        m.outstanding.dec();
        m.outstanding_bytes.dec_by(len);
    }

    /// One attempt: true when JetStream had the message already.
    async fn attempt(&self, ctx: &Context, stream: &str) -> Result<bool, String> {
        let h = headers(&self.tag, self.offset, self.end);
        let ack = ctx
            .publish_with_headers(self.tag.subject.clone(), h, self.payload.clone())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        if ack.stream != stream {
            return Err(format!(
                "subject {} is stored by stream {}, not {stream}",
                self.tag.subject, ack.stream
            ));
        }
        Ok(ack.duplicate)
    }
}

/// The stream's end in JetStream: `Loghamster-End` of the last message on
/// its subject when that message is the stream's own.
async fn lookup(ctx: &Context, stream: &str, tag: &StreamTag) -> Result<Option<u64>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    if !tag.resumable {
        return Ok(None);
    }
    let s = ctx
        .get_stream_no_info(stream)
        .await
        .map_err(|e| e.to_string())?;
    let msg = match s.get_last_raw_message_by_subject(&tag.subject).await {
        Ok(m) => m,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let get = |k: &str| msg.headers.get(k).map(|v| v.as_str().to_string());
    if get("Loghamster-Stream").as_deref() != Some(tag.identity.as_str()) {
        return Ok(None);
    }
    Ok(get("Loghamster-End").and_then(|v| v.parse().ok()))
}
