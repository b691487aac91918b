//! What the bench prints: the machine, the results table (markdown), the
//! idle table, and the daemons' last log lines when a scenario failed.

use std::path::Path;
use std::process::Command;

use crate::data::{GIB, MIB};
use crate::scale::{Idle, IdleSample};
use crate::{compression_arg, Args, Ctx, Error, Run, Scenario};

/// The machine, the commit, the work dir's file system and the settings.
pub fn machine_info(work: &Path, nofile: (u64, u64), socat: bool, args: &Args) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = commit();
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(work)
        .output()
        .map_or("?".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    // stat(1) names ext4's magic number after its ancestors.
    let fs = match fs.as_str() {
        "ext2/ext3" => "ext2/3/4".to_string(),
        _ => fs,
    };
    let socat_version = match socat {
        true => socat_version(),
        false => "socat: not installed".into(),
    };
    println!("## loghamster end-to-end benchmark\n");
    println!("- commit: {commit}");
    println!(
        "- machine: {nproc} CPUs, {cpu}, kernel {}",
        read("/proc/sys/kernel/osrelease").trim()
    );
    println!("- load average at start: {}", load());
    println!("- work dir: {} ({fs})", work.display());
    println!(
        "- RLIMIT_NOFILE: soft {} raised to {} for the daemons",
        nofile.0, nofile.1
    );
    println!("- {socat_version}");
    match args.compression {
        None => println!("- wire compression: none (the clients' default; no `--compression`)"),
        Some(c) => println!(
            "- wire compression: {c} (`--compression {}` for every loghamsterc)",
            compression_arg(c)
        ),
    }
    if args.multiplex {
        println!("- client configs: `[server] multiplex = true` (`--multiplex`)");
    }
    if args.plain {
        println!("- client configs: `[server] multiplex = false` (`--plain`)");
    }
    match args.sync.as_deref() {
        None => println!(
            "- daemons: release build, default settings (server `sync = \"interval\"`: outputs \
             fdatasync'd every 1 s and before each `250 DONE`)"
        ),
        Some(sync) => println!(
            "- daemons: release build, default settings but the server's `sync = \"{sync}\"` \
             (`250 DONE` is always preceded by an fdatasync)"
        ),
    }
    println!(
        "- the server's `[prometheus]` endpoint listens on a free loopback port (scraped once \
         per run, after the transfer, for the wire / input column)\n"
    );
}

/// `git rev-parse --short HEAD` of the checkout the bench was built from.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match (
        git(&["rev-parse", "--short", "HEAD"]),
        git(&["status", "--porcelain", "--untracked-files=no"]),
    ) {
        (Some(c), Some(s)) if !s.is_empty() => format!("{c} (with uncommitted changes)"),
        (Some(c), _) => c,
        (None, _) => "? (not a git checkout)".into(),
    }
}

fn socat_version() -> String {
    Command::new("socat")
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.contains("socat version"))
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "socat".into())
}

fn load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The error and the last lines of every log in the run's directory.
pub fn failure(scenario: Scenario, e: &Error, run_dir: &Path) {
    eprintln!("e2e: scenario {} FAILED: {e}", scenario.name());
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let daemon_log = ["server", "client", "socat-send", "socat-recv"].contains(&stem);
        if daemon_log && path.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- last lines of {}:", path.display());
            for l in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("    {l}");
            }
        }
    }
}

/// One table row: a scenario's runs, or how it failed.
pub struct Row {
    pub scenario: Scenario,
    pub runs: Vec<Run>,
    pub failure: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn med(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

fn label(s: Scenario, ctx: &Ctx, args: &Args) -> String {
    match s {
        Scenario::Socat => "socat → socat (baseline)".into(),
        Scenario::SocatSync => "socat → socat + fdatasync (baseline of a)".into(),
        Scenario::A => "a) whole file, send after close".into(),
        Scenario::B => "b) catch-up stream".into(),
        Scenario::ATls => "a_tls) a over TLS".into(),
        Scenario::BTls => "b_tls) b over TLS".into(),
        Scenario::C if ctx.rate_bytes() == 0 => {
            format!(
                "c) live tail, {:.0} MiB at full speed",
                ctx.live_bytes() as f64 / MIB
            )
        }
        Scenario::C => format!(
            "c) live tail, {:.0} MiB at {} MiB/s",
            ctx.live_bytes() as f64 / MIB,
            ctx.rate_mib
        ),
        Scenario::Files => format!("files: {} files, one client (catch-up)", args.files),
        Scenario::Idle => format!("idle: {} files", ctx.idle_files),
        Scenario::Many => format!(
            "many: {} files, one writer at {} MiB/s for {} s",
            ctx.many.files, ctx.many.rate_mib, ctx.many.secs
        ),
        Scenario::Js1 => "js1) catch-up stream into JetStream R1".into(),
        Scenario::Js3 => "js3) catch-up stream into JetStream R3 (3 local nodes)".into(),
    }
}

/// The markdown results table and the notes below it.
pub fn table(rows: &[Row], ctx: &Ctx, args: &Args) {
    let socat = rows
        .iter()
        .find(|r| r.scenario == Scenario::Socat && r.failure.is_none())
        .map(|r| med(&r.runs, Run::mib_s));
    println!(
        "\n| scenario | MiB/s | ratio to socat | client CPU s/GiB | server CPU s/GiB | \
         wire / input | client peak RSS | server peak RSS | latency p50/p99/p99.9 ms | verified |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for row in rows {
        let name = label(row.scenario, ctx, args);
        if let Some(why) = &row.failure {
            let why = why.replace('|', "\\|");
            println!("| {name} | — | — | — | — | — | — | — | — | **FAILED**: {why} |");
            continue;
        }
        println!("{}", result_cells(&name, row, socat, ctx));
    }
    println!(
        "\nCPU: user+system seconds of each process's whole life (wait4), per GiB moved; \
         peak RSS: ru_maxrss. For socat, client = the sending and server = the receiving socat."
    );
    println!(
        "wire / input: stream bytes the server read from its sockets (compressed or not, \
         handshake lines and ACKs not counted) over the plain bytes, from loghamsterd's \
         /metrics after the client stopped; socat moves the plain bytes."
    );
    if args.repeat > 1 {
        println!("Each column is the median of {} runs.", args.repeat);
    }
    for row in rows.iter().filter(|r| r.runs.len() > 1) {
        let each: Vec<String> = row.runs.iter().map(|r| fmt_rate(r.mib_s())).collect();
        println!(
            "- {}: MiB/s per run: {}",
            row.scenario.name(),
            each.join(", ")
        );
    }
    synced_ratios(rows);
    for note in rows
        .iter()
        .flat_map(|r| r.runs.iter().flat_map(|run| &run.notes))
    {
        println!("- {note}");
    }
    println!("- load average at the end: {}", load());
}

/// With `socat_sync` in the run: the median MiB/s of `a` and `a_tls`
/// (confirmed by `250 DONE`, after an `fdatasync`) over its median, and
/// run by run (the n-th run of each over the n-th of
/// `socat_sync`).
fn synced_ratios(rows: &[Row]) {
    let Some(base) = rows
        .iter()
        .find(|r| r.scenario == Scenario::SocatSync && r.failure.is_none())
    else {
        return;
    };
    let base_mib = med(&base.runs, Run::mib_s);
    for row in rows.iter().filter(|r| r.failure.is_none()) {
        // Only the scenarios whose end is confirmed by a sync.
        if !matches!(row.scenario, Scenario::A | Scenario::ATls) {
            continue;
        }
        let each: Vec<String> = row
            .runs
            .iter()
            .zip(&base.runs)
            .map(|(r, b)| format!("{:.2}", r.mib_s() / b.mib_s()))
            .collect();
        println!(
            "- {}: ratio to socat_sync {:.2} (per run: {})",
            row.scenario.name(),
            med(&row.runs, Run::mib_s) / base_mib,
            each.join(", ")
        );
    }
}

/// One successful row of the table: medians over the runs.
fn result_cells(name: &str, row: &Row, socat: Option<f64>, ctx: &Ctx) -> String {
    let runs = &row.runs;
    let mib_s = med(runs, Run::mib_s);
    let ratio = match socat {
        Some(_) if row.scenario == Scenario::Many => "(paced)".into(),
        Some(base) if row.scenario == Scenario::C && ctx.rate_bytes() > 0 => {
            format!("{:.2} (paced)", mib_s / base)
        }
        Some(base) => format!("{:.2}", mib_s / base),
        None => "—".into(),
    };
    let per_gib = |f: fn(&Run) -> f64| med(runs, |r| f(r) / (r.bytes as f64 / GIB));
    let rss = |f: fn(&Run) -> u64| format!("{:.1} MiB", med(runs, |r| f(r) as f64) / 1024.0);
    let latency = match runs[0].latency_ms {
        Some(_) => {
            let q = |i: usize| med(runs, |r| r.latency_ms.map_or(f64::NAN, |l| l[i]));
            format!("{:.1} / {:.1} / {:.1}", q(0), q(1), q(2))
        }
        None => "—".into(),
    };
    let wire = match runs.iter().all(|r| r.wire.is_some()) {
        true => format!(
            "{:.3}",
            med(runs, |r| r.wire.map_or(f64::NAN, |w| w.ratio()))
        ),
        false => "—".into(),
    };
    let verified = match runs.len() {
        1 => "yes".to_string(),
        n => format!("yes ({n}/{n} runs)"),
    };
    format!(
        "| {name} | {} | {ratio} | {:.2} | {:.2} | {wire} | {} | {} | {latency} | {verified} |",
        fmt_rate(mib_s),
        per_gib(|r| r.client.cpu_s),
        per_gib(|r| r.server.cpu_s),
        rss(|r| r.client.maxrss_kib),
        rss(|r| r.server.maxrss_kib),
    )
}

fn fmt_rate(mib_s: f64) -> String {
    if mib_s >= 100.0 {
        format!("{mib_s:.0}")
    } else {
        format!("{mib_s:.1}")
    }
}

/// The `idle` scenario's own table.
pub fn idle_table(idle: &Idle, secs: u64) {
    println!(
        "\nidle: {} one-line files followed by one client (`path = \"DIR/*.log\"`); every line \
         arrived {:.1} s after the client started; then 2 s to settle and a {secs} s idle window:\n",
        idle.files, idle.deliver_secs
    );
    println!("| daemon | CPU s in the idle window | RSS | peak RSS | open fds | CPU s over its whole life |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let row = |name: &str, s: &IdleSample, total: f64| {
        println!(
            "| {name} | {:.2} | {:.1} MiB | {:.1} MiB | {} | {total:.2} |",
            s.cpu_s,
            s.rss_kib as f64 / 1024.0,
            s.hwm_kib as f64 / 1024.0,
            s.fds,
        );
    };
    row("loghamsterc", &idle.client, idle.client_total.cpu_s);
    row("loghamsterd", &idle.server, idle.server_total.cpu_s);
    println!("\n(CPU in the window from /proc/<pid>/stat, 10 ms clock ticks.)");
}
