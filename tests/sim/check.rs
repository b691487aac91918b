//! What every simulated history must satisfy.
//!
//! After every step: each server stream holds only whole lines the
//! application wrote (a trailing partial line aside), no line arrived
//! twice, and lines arrived in the order they were written (per path,
//! across generations). At the end, once the client settled: every line
//! still present in a log file on the host (the path, its rotations under
//! any name, in the directory or `olddir`, compressed copies aside) has
//! arrived. Lines the host destroyed before any client read them (a
//! copytruncate's window between copy and truncate, a rotated file deleted
//! before the client opened it) are not required; nothing else may be
//! missing.

use std::collections::BTreeMap;
use std::path::Path;

use crate::app::parse_lines;
use crate::world::{World, DIR, OLDDIR};
use loghamster::tail::fs::{Fs, Kind};

/// Every complete line the server holds, with the index of the chunk
/// that completed it, in arrival order.
fn arrived(w: &World) -> Result<Vec<(usize, u64)>, String> {
    // Chunk index of each byte range, per stream.
    let mut ends: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
    for (i, (id, at, len)) in w.server.arrivals.iter().enumerate() {
        ends.entry(id.as_str())
            .or_default()
            .push((at + *len as u64, i));
    }
    let mut out = Vec::new();
    for (id, bytes) in &w.server.streams {
        let lines = parse_lines(bytes).map_err(|e| format!("stream {id}: {e}"))?;
        let chunks = ends.get(id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let mut end = 0u64;
        for (k, l) in lines.iter().enumerate() {
            let text = crate::app::line(&l.tag, l.generation, l.seq);
            end += text.len() as u64;
            let chunk = chunks
                .iter()
                .find(|(e, _)| *e >= end)
                .map(|(_, i)| *i)
                .ok_or_else(|| format!("stream {id}: line {k} beyond every chunk"))?;
            out.push((chunk, l.seq));
        }
    }
    out.sort_by_key(|(chunk, _)| *chunk);
    Ok(out)
}

/// What the per-step check has seen so far, so each step costs only what
/// arrived since (a server restart, which cuts streams back, starts over).
#[derive(Default)]
pub struct Seen {
    arrivals: usize,
    /// Bytes of each stream parsed into lines.
    parsed: BTreeMap<String, usize>,
    last: Option<u64>,
    lines: std::collections::HashSet<u64>,
}

impl Seen {
    /// Forgets everything (after a server restart).
    pub fn reset(&mut self) {
        *self = Seen::default();
    }
}

/// Checked after every step.
pub fn invariants(w: &World, seen: &mut Seen) -> Result<(), String> {
    while seen.arrivals < w.server.arrivals.len() {
        let (id, at, len) = &w.server.arrivals[seen.arrivals];
        seen.arrivals += 1;
        let bytes = &w.server.streams[id];
        let end = (*at as usize + len).min(bytes.len());
        let from = seen.parsed.get(id).copied().unwrap_or(0);
        if from >= end {
            continue;
        }
        let chunk = &bytes[from..end];
        let complete = match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => continue,
        };
        let lines = parse_lines(&chunk[..complete]).map_err(|e| format!("stream {id}: {e}"))?;
        seen.parsed.insert(id.clone(), from + complete);
        for l in lines {
            if !seen.lines.insert(l.seq) {
                return Err(format!("line {} arrived twice", l.seq));
            }
            if let Some(prev) = seen.last.filter(|p| l.seq < *p) {
                return Err(format!("line {} arrived after line {prev}", l.seq));
            }
            seen.last = Some(l.seq);
        }
    }
    if let Some(tail) = &w.client.tail {
        if tail.acked() > tail.sent() {
            return Err(format!(
                "acked {} beyond sent {}",
                tail.acked(),
                tail.sent()
            ));
        }
    }
    Ok(())
}

/// Checked once the client settled at the end.
pub fn final_state(w: &mut World) -> Result<(), String> {
    invariants(w, &mut Seen::default())?;
    let got: std::collections::BTreeSet<u64> = arrived(w)?.into_iter().map(|(_, s)| s).collect();
    for dir in [DIR, OLDDIR] {
        for (name, meta) in w.fs.list(Path::new(dir)).map_err(|e| e.to_string())? {
            let n = name.to_string_lossy();
            if meta.kind != Kind::File || !n.starts_with("app.log") || n.ends_with(".gz") {
                continue;
            }
            let path = Path::new(dir).join(&name);
            let bytes = w.fs.read_path(&path).map_err(|e| e.to_string())?;
            for l in parse_lines(&bytes).map_err(|e| format!("{}: {e}", path.display()))? {
                if !got.contains(&l.seq) {
                    return Err(format!(
                        "line {} (generation {}) is in {} but never arrived",
                        l.seq,
                        l.generation,
                        path.display()
                    ));
                }
            }
        }
    }
    Ok(())
}
