//! The deterministic simulation of the client's tailer: a simulated host
//! ([`fs`]), logrotate's rotations as single file-system steps
//! ([`logrotate`]), the applications writing the logs ([`app`]), one
//! history of client, server and host interleaved by a seeded scheduler
//! ([`world`]), and the rules every history must keep ([`check`]).
//!
//! `SIM_SCHEDULES=N` sets how many seeds [`many_random_histories_keep_every_rule`]
//! plays (default below); `SIM_SEED=S` replays one seed and prints its
//! trace. A failing seed is printed with the command that replays it.

mod app;
mod check;
mod fs;
mod logrotate;
mod scripted;
mod world;

use world::World;

/// Seeds played by a plain `cargo test` (a quick debug-build pass; CI
/// plays 100,000 more in an optimised build, see `scripts/test`).
const DEFAULT_SCHEDULES: u64 = 1_000;

fn play(seed: u64) -> Result<(), (String, Box<World>)> {
    let mut w = Box::new(World::new(seed));
    match w.run() {
        Ok(()) => Ok(()),
        Err(e) => Err((e, w)),
    }
}

fn report(seed: u64, why: &str, w: &World) -> String {
    let tail: Vec<&String> = w.trace.iter().rev().take(60).collect();
    let mut s = format!(
        "seed {seed} failed: {why}\nscenario: {:?}\nlast steps (newest first):\n",
        w.scenario
    );
    for t in tail {
        s.push_str("  ");
        s.push_str(t);
        s.push('\n');
    }
    s.push_str(&format!("notes: {:?}\n", w.client.notes));
    s.push_str(&format!(
        "replay: SIM_SEED={seed} cargo test --test sim -- replay\n"
    ));
    s
}

#[test]
fn many_random_histories_keep_every_rule() {
    let n: u64 = std::env::var("SIM_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SCHEDULES);
    let base: u64 = std::env::var("SIM_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let started = std::time::Instant::now();
    for seed in base..base + n {
        if let Err((why, w)) = play(seed) {
            panic!("{}", report(seed, &why, &w));
        }
    }
    eprintln!(
        "simulation: {n} schedules in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn replay() {
    let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    let mut w = World::new(seed);
    let result = w.run();
    for t in &w.trace {
        eprintln!("{t}");
    }
    if let Err(why) = result {
        panic!("{}", report(seed, &why, &w));
    }
}
