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
mod truncation;
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
    if let Some(t) = &w.client.tail {
        s.push_str(&format!(
            "tail: {:?} acked {} sent {} current {:?} queued {}\n",
            t.state(),
            t.acked(),
            t.sent(),
            t.current().map(|g| (g.meta, g.id.to_string())),
            t.queued().count()
        ));
    }
    s.push_str(&format!(
        "at the path: {:?}\n",
        w.fs.stat_path(std::path::Path::new(world::LOG))
    ));
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

/// Seeds that once failed, each a bug the simulation found (kept so they
/// stay fixed whatever the random range plays).
const REGRESSIONS: &[u64] = &[
    2,        // a rewritten stream id reused after a restart (nonce seeds collided)
    14,       // a copytruncate's copies taken for rename generations while draining
    32,       // a copy shorter than the fingerprinted head (read past the copy)
    187,      // queued new content truncated again, forgotten across a restart
    513,      // no first bytes known after resuming mid-file
    896,      // the copy of the content still in the file taken as a generation
    931,      // an in-progress copy taken as a whole generation
    1685,     // an older generation found after a newer one was opened
    1806,     // a copy shorter than the fingerprint, after a restart
    3860,     // found by the first optimised run of 20,000 seeds
    1002265,  // an empty fingerprint on disk while the server already held bytes
    1002543,  // resumed at a server offset: the few bytes read were not checked
    1003649,  // the recorded file deleted while away: the ones born after it were skipped
    1009468,  // a recorded copy shorter than its fingerprint was not found after a restart
    2015580,  // a copy born in its original's clock tick resumed as the original rewritten
    2051233,  // a copy shorter than the short fingerprint, made before a restart, truncated after
    3132798, // the same, truncated before the restart (the short fingerprint is the first line now)
    10370673, // the same class, without olddir, with a 1 ms birth clock
    10507353, // the new content's copy, still empty when a truncation was found, taken as accounted for
    10993382, // the same class (the next copy created just before the truncation was found)
];

#[test]
fn seeds_that_once_failed_pass() {
    for &seed in REGRESSIONS {
        if let Err((why, w)) = play(seed) {
            panic!("{}", report(seed, &why, &w));
        }
    }
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
