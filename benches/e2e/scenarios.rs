//! The socat baseline and the two catch-up scenarios (a: send after close,
//! b: follow a file that is already complete). Each run gets its own
//! directory (`run_dir`) with the output tree, the daemons' logs, state
//! and config files. Every `loghamsterc` gets `--compression` (see
//! [`cli_args`] and [`client_config`]); [`wire`] reads back from the server
//! what crossed the sockets.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::data::compare;
use crate::proc::{
    daemon, free_port, is_listening, wait_until, Counted, Exit, Proc, Server, Usage,
};
use crate::{compression_arg, Ctx, Error, Run, Wire};

/// How long a clean stop (SIGTERM) may take: the server waits at most 5 s
/// for its clients, the client at most `shutdown_timeout` (5 s).
pub const STOP: Duration = Duration::from_secs(15);

/// Generous: 60 s plus 5 MiB/s for the bytes (far below anything sane).
pub fn timeout_for(bytes: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs_f64(bytes as f64 / (5.0 * 1024.0 * 1024.0))
}

/// socat file → TCP → socat → file, the same bytes over the same loopback.
///
/// With `sync` (scenario `socat_sync`), the timed interval also covers an
/// `fdatasync` of the output once the receiving socat exited: the bench
/// opens the output and syncs it, which writes back every dirty page of
/// that file whoever wrote it, and nothing else (a `sync(1)` would also
/// flush whatever other processes left dirty). That is the least a
/// receiver must do before it may confirm a whole file, as loghamsterd
/// does before `250 DONE`; socat has no option for it.
pub fn socat(ctx: &Ctx, run_dir: &Path, sync: bool) -> Result<Run, Error> {
    let out = run_dir.join("out");
    let port = free_port()?;
    let mut recv = Proc::spawn(
        "socat (receiver)",
        Command::new("socat")
            .args(["-b", "262144", "-u"])
            .arg(format!("TCP-LISTEN:{port},reuseaddr,bind=127.0.0.1"))
            .arg(format!("OPEN:{},creat", out.display())),
        Some(&run_dir.join("socat-recv.log")),
    )?;
    wait_until(Duration::from_secs(10), "socat to listen", || {
        recv.check_alive()?;
        is_listening(port)
    })?;

    let t0 = Instant::now();
    let mut send = Proc::spawn(
        "socat (sender)",
        Command::new("socat")
            .args(["-b", "262144", "-u"])
            .arg(format!("FILE:{}", ctx.data.display()))
            .arg(format!("TCP:127.0.0.1:{port}")),
        Some(&run_dir.join("socat-send.log")),
    )?;
    wait_until(
        timeout_for(ctx.data_bytes),
        "the receiving socat to exit",
        || {
            if let Some(exit) = send.try_reap()? {
                clean(&send, exit)?;
            }
            Ok(recv.try_reap()?.is_some())
        },
    )?;
    if sync {
        std::fs::File::open(&out)
            .and_then(|f| f.sync_data())
            .map_err(Error::io(format!("fdatasync {}", out.display())))?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let recv_exit = recv.wait(STOP)?;
    let send_exit = send.wait(STOP)?;
    let (client, server) = (clean(&send, send_exit)?, clean(&recv, recv_exit)?);
    verify(&ctx.data, &out)?;
    Ok(Run::new(ctx.data_bytes, secs, client, server))
}

/// (a) `[[stream]] directory = ... method = "send"`: the client sends the
/// file whole and exits once the server confirmed every byte.
pub fn send_whole(ctx: &Ctx, run_dir: &Path, tls: bool) -> Result<Run, Error> {
    let outdir = run_dir.join("out");
    let mut server = Server::start_with(ctx, run_dir, tls)?;
    let dir = ctx.data.parent().expect("the data file is in a directory");
    let stream = format!(
        "directory = {}\nfilepattern = \"*.log\"\nmethod = \"send\"\n",
        toml_str(dir)
    );
    let config = client_config(ctx, run_dir, &server, "a", &stream, tls)?;

    let t0 = Instant::now();
    let mut client = spawn_client(run_dir, [OsStr::new("--config"), config.as_os_str()])?;
    wait_until(
        timeout_for(ctx.data_bytes),
        "loghamsterc to send and exit",
        || {
            server.proc.check_alive()?;
            Ok(client.try_reap()?.is_some())
        },
    )?;
    let out = output_path(&outdir, "a", &ctx.data);
    wait_for_len(
        &out,
        ctx.data_bytes,
        Duration::from_secs(10),
        &mut [&mut server.proc],
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let client_exit = client.wait(STOP)?;
    let client_usage = clean(&client, client_exit)?;
    let wire = wire(ctx, &server, ctx.data_bytes)?;
    let server_exit = server.proc.terminate(STOP)?;
    let server_usage = clean(&server.proc, server_exit)?;
    verify(&ctx.data, &out)?;
    let mut run = Run::new(ctx.data_bytes, secs, client_usage, server_usage);
    run.wire = Some(wire);
    Ok(run)
}

/// (b) `loghamsterc FILE` on a file that is already complete: catch-up
/// streaming until the server's output has every byte.
pub fn catch_up(ctx: &Ctx, run_dir: &Path, tls: bool) -> Result<Run, Error> {
    let outdir = run_dir.join("out");
    let mut server = Server::start_with(ctx, run_dir, tls)?;
    // TLS needs a config file; the plain run keeps the command line.
    let args = if tls {
        let stream = format!("path = {}\n", toml_str(&ctx.data));
        let config = client_config(ctx, run_dir, &server, "b", &stream, true)?;
        vec![OsString::from("--config"), config.into()]
    } else {
        let mut args = cli_args(ctx, run_dir, &server, "b");
        args.push(ctx.data.clone().into());
        args
    };
    let t0 = Instant::now();
    let mut client = spawn_client(run_dir, args)?;
    let out = output_path(&outdir, "b", &ctx.data);
    wait_for_len(
        &out,
        ctx.data_bytes,
        timeout_for(ctx.data_bytes),
        &mut [&mut server.proc, &mut client],
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let (client_usage, server_usage, wire) = stop(ctx, &mut client, &mut server, ctx.data_bytes)?;
    verify(&ctx.data, &out)?;
    let mut run = Run::new(ctx.data_bytes, secs, client_usage, server_usage);
    run.wire = Some(wire);
    Ok(run)
}

/// `-s ADDR --hostname HOST --state-file RUN_DIR/client.state` and
/// `--compression C` when given: the client's flags before the files.
pub fn cli_args(ctx: &Ctx, run_dir: &Path, server: &Server, host: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-s",
        server.addr.as_str(),
        "--hostname",
        host,
        "--state-file",
    ]
    .map(OsString::from)
    .into();
    args.push(run_dir.join("client.state").into());
    if let Some(c) = ctx.compression {
        args.push("--compression".into());
        args.push(compression_arg(c).into());
    }
    args
}

/// Writes `RUN_DIR/client.toml`: state file in the run dir, host name
/// `host`, the server (with `compression` and `compression_level` when
/// `--compression` was given), one `[[stream]]` with the keys in
/// `stream`, and with `tls` a `[tls]` trusting the bench's CA.
pub fn client_config(
    ctx: &Ctx,
    run_dir: &Path,
    server: &Server,
    host: &str,
    stream: &str,
    tls: bool,
) -> Result<PathBuf, Error> {
    let (ip, port) = server
        .addr
        .rsplit_once(':')
        .ok_or_else(|| Error::Failed(format!("odd server address {}", server.addr)))?;
    let mut compression = String::new();
    if let Some(c) = ctx.compression {
        let name = c.codec.map_or("none", |codec| codec.name());
        compression += &format!("compression = \"{name}\"\n");
        if let Some(level) = c.level {
            compression += &format!("compression_level = {level}\n");
        }
    }
    if let Some(on) = ctx.multiplex {
        compression += &format!("multiplex = {on}\n");
    }
    let mut config = format!(
        "state_file = {}\nhostname = \"{host}\"\n\n[server]\nhostname = \"{ip}\"\nport = {port}\n\
         {compression}\n[[stream]]\n{stream}",
        toml_str(&run_dir.join("client.state")),
    );
    if tls {
        config += &format!("\n[tls]\nca = {}\n", toml_str(&ctx.tls.ca));
    }
    let path = run_dir.join("client.toml");
    std::fs::write(&path, config).map_err(Error::io(path.display()))?;
    Ok(path)
}

/// `loghamsterc ARGS`, standard error to `RUN_DIR/client.log`.
pub fn spawn_client(
    run_dir: &Path,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
) -> Result<Proc, Error> {
    Proc::spawn(
        "loghamsterc",
        Command::new(daemon("loghamsterc", env!("CARGO_BIN_EXE_loghamsterc"))).args(args),
        Some(&run_dir.join("client.log")),
    )
}

/// Stops the client, reads the bytes on the wire for `plain` stream bytes
/// from the server (see [`wire`]), then stops the server (SIGTERM, both
/// must exit 0).
pub fn stop(
    ctx: &Ctx,
    client: &mut Proc,
    server: &mut Server,
    plain: u64,
) -> Result<(Usage, Usage, Wire), Error> {
    let c = client.terminate(STOP)?;
    let client_usage = clean(client, c)?;
    let wire = wire(ctx, server, plain)?;
    let s = server.proc.terminate(STOP)?;
    Ok((client_usage, clean(&server.proc, s)?, wire))
}

/// The stream bytes that crossed the server's sockets, once all `plain`
/// stream bytes arrived (call after the client stopped), from the
/// server's `/metrics`: what compressed streams read plus the plain bytes
/// of the others. Fails when the counters do not add up: the plain bytes
/// must be `plain`; with `--compression CODEC` every one of them must have
/// arrived compressed (the server accepted the codec on every stream),
/// without it (or with `none`) none.
pub fn wire(ctx: &Ctx, server: &Server, plain: u64) -> Result<Wire, Error> {
    // The server counts right after each write, in the same turn of its
    // loop: the counters are final by now but for that instant.
    let mut counted = server.counted()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while counted.received < plain && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        counted = server.counted()?;
    }
    let Counted {
        received,
        compressed,
        decompressed,
    } = counted;
    let odd = |what: String| {
        Err(Error::Failed(format!(
            "loghamsterd's /metrics: {what} (received {received}, compressed received \
             {compressed}, decompressed {decompressed})"
        )))
    };
    if received != plain || decompressed > received {
        return odd(format!("expected {plain} stream bytes received"));
    }
    match ctx.compression.and_then(|c| c.codec) {
        Some(codec) if decompressed != plain => {
            return odd(format!(
                "only {decompressed} of {plain} bytes arrived compressed with {codec}"
            ))
        }
        None if compressed + decompressed > 0 => {
            return odd("compressed bytes without --compression".into())
        }
        _ => {}
    }
    Ok(Wire {
        bytes: compressed + (received - decompressed),
        plain,
    })
}

/// The usage of a process that exited with status 0; an error otherwise.
pub fn clean(proc: &Proc, exit: Exit) -> Result<Usage, Error> {
    if exit.code == Some(0) {
        return Ok(exit.usage);
    }
    Err(Error::Failed(format!("{}: {}", proc.name, exit.describe())))
}

/// Where the server's default route puts `src` of `host`.
pub fn output_path(outdir: &Path, host: &str, src: &Path) -> PathBuf {
    outdir.join(host).join(src.strip_prefix("/").unwrap_or(src))
}

/// Waits until `path` has `len` bytes; fails at once if it gets longer or
/// one of `alive` ends.
pub fn wait_for_len(
    path: &Path,
    len: u64,
    timeout: Duration,
    alive: &mut [&mut Proc],
) -> Result<(), Error> {
    let what = format!("{} to reach {len} bytes", path.display());
    wait_until(timeout, &what, || {
        for p in alive.iter_mut() {
            p.check_alive()?;
        }
        let have = std::fs::metadata(path).map_or(0, |m| m.len());
        if have > len {
            return Err(Error::Failed(format!(
                "{} has {have} bytes, more than the {len} sent",
                path.display()
            )));
        }
        Ok(have == len)
    })
}

/// Byte-for-byte comparison; a difference is a failure.
pub fn verify(expected: &Path, actual: &Path) -> Result<(), Error> {
    match compare(expected, actual).map_err(Error::io(format!("compare {}", actual.display())))? {
        None => Ok(()),
        Some(diff) => Err(Error::Failed(format!("output differs: {diff}"))),
    }
}

/// A TOML basic string for a path.
pub fn toml_str(p: &Path) -> String {
    toml::Value::String(p.to_string_lossy().into_owned()).to_string()
}
