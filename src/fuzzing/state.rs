//! The state-file loaders under fuzz: the client's state file and the
//! server's checkpoint (snapshot and journal).

use std::fs;
use std::path::Path;

use crate::persist::fnv1a;
use crate::sink::checkpoint::{plan_recovery, Checkpoint};
use crate::sink::journal::{sibling, RoundWrite, Store};
use crate::tail::state::{self, Durability};

/// Separates the snapshot from the journal records in a [`checkpoint`]
/// input (never in UTF-8 text).
pub const SPLIT: u8 = 0xff;

/// Loads `data` as the client's state file in `dir`. An input whose first
/// byte is odd has its rest sealed first (a correct `# sha256` line
/// appended), so mutations reach the parser behind the checksum; an even
/// one is written as it is. A file that loads must save and load again to
/// the same entries; one that does not must say why (never `()`).
pub fn client_state(dir: &Path, data: &[u8]) {
    let path = dir.join("client.state");
    let _ = fs::remove_file(dir.join("client.state.tmp"));
    let text = match data.split_first() {
        Some((first, rest)) if first & 1 == 1 => seal(rest),
        _ => data.to_vec(),
    };
    fs::write(&path, text).expect("scratch directory is writable");
    match state::load(&path) {
        Ok(loaded) => {
            let again = dir.join("again.state");
            state::save(&again, &loaded.entries, Durability::ProcessCrash)
                .expect("loaded entries save");
            let reloaded = state::load(&again).expect("saved entries load");
            assert_eq!(
                reloaded.entries, loaded.entries,
                "state file does not round-trip"
            );
            assert!(!reloaded.legacy, "a saved state file is sealed");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains("()"), "refused without a reason: {text}");
        }
    }
}

/// `body` with the checksum line the client writes after it.
fn seal(body: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut out = body.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    let sum = sha2::Sha256::digest(&out);
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    out.extend(format!("# sha256 {hex}\n").bytes());
    out
}

/// Loads `data` as a server checkpoint in `dir`: the bytes up to the
/// first [`SPLIT`] are the snapshot; each later part is one journal
/// record, framed with its length and checksum under a header for the
/// snapshot's generation, except the last, which is appended raw (a torn
/// or foreign tail). A checkpoint that loads must plan a recovery without
/// panicking, write as a snapshot and load again the same.
pub fn checkpoint(dir: &Path, data: &[u8]) {
    let path = dir.join("server.state");
    for suffix in [".journal", ".tmp"] {
        let _ = fs::remove_file(sibling(&path, suffix));
    }
    let mut parts = data.split(|&b| b == SPLIT);
    let snapshot = parts.next().unwrap_or_default();
    fs::write(&path, snapshot).expect("scratch directory is writable");
    let records: Vec<&[u8]> = parts.collect();
    if let Some((raw_tail, framed)) = records.split_last() {
        let mut journal = format!(
            "loghamsterd journal 1 generation {}\n",
            generation(snapshot)
        )
        .into_bytes();
        for r in framed {
            journal.extend(format!("R {} {:016x}\n", r.len(), fnv1a(r)).bytes());
            journal.extend_from_slice(r);
        }
        journal.extend_from_slice(raw_tail);
        fs::write(sibling(&path, ".journal"), journal).expect("scratch directory is writable");
    }
    let Ok((mut store, cp)) = Store::open(&path) else {
        return;
    };
    let _ = plan_recovery(&cp, |p| Some((0, 0, p.as_os_str().len() as u64)));
    store
        .write(&RoundWrite::Full(cp.clone()))
        .expect("a loaded checkpoint writes");
    let (_, again) = Store::open(&path).expect("a written checkpoint loads");
    assert_eq!(sorted(again), sorted(cp), "checkpoint does not round-trip");
}

/// The `generation = N` the snapshot names (0 when none does).
fn generation(snapshot: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(snapshot);
    text.lines()
        .filter_map(|l| l.strip_prefix("generation"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn sorted(mut cp: Checkpoint) -> Checkpoint {
    cp.outputs.sort_by(|a, b| a.path.cmp(&b.path));
    cp.streams
        .sort_by(|a, b| (&a.host, &a.path, &a.id).cmp(&(&b.host, &b.path, &b.id)));
    cp
}
