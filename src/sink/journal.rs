//! The checkpoint on disk: a snapshot plus an append-only journal, so a
//! checkpoint round costs what changed, not what the server knows.
//!
//! Before this, every round rewrote the whole state file: 70,000 stream
//! ids (one INIT each, from one hostile client) meant an 11.8 MB file
//! rewritten and `fsync`ed every second and 2 s per legitimate delivery.
//!
//! ## Files
//! - `<state>`: a snapshot ([`super::checkpoint`]), replaced atomically
//!   (temp file, `fsync`, rename, `fsync` of the directory). It names the
//!   `generation` of the journal that continues it.
//! - `<state>.journal`: a header line `loghamsterd journal 1 generation N`,
//!   then one record per round: `R <len> <fnv1a-64 hex>` and `len` bytes of
//!   a [`Delta`]. Each round appends its record and `fdatasync`s the
//!   journal before anything it covers is acknowledged.
//!
//! ## Compaction
//! When the journal has grown past the snapshot (and past
//! [`MIN_COMPACT`]), or a round could not be written, the next round
//! writes a whole snapshot instead, with the next generation; the journal
//! is started again (truncated, new header) by the round after. Each byte
//! of snapshot is paid for by at least as many bytes of journal, so the
//! cost per change stays constant however many streams are known.
//!
//! ## Crash safety
//! - A record is valid only whole and with its checksum: a torn last
//!   record (a crash while appending) is dropped at load, which is safe
//!   because nothing it covers was acknowledged.
//! - A journal whose generation is not the snapshot's is ignored: it
//!   predates a compaction whose snapshot already contains it (the crash
//!   came between the rename and the new journal header).
//! - Loading applies the records in order over the snapshot, and the first
//!   round after start-up writes a snapshot again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::checkpoint::{
    decode_delta, decode_snapshot, encode_delta, encode_snapshot, Checkpoint, CheckpointError,
    Delta, OutputMark, Tables,
};
use crate::persist::fnv1a;
use crate::persist::{write_atomic, Durability, StateError};

/// The journal is compacted once it is larger than the snapshot and than
/// this.
pub const MIN_COMPACT: u64 = 1 << 20;
const HEADER: &str = "loghamsterd journal 1 generation ";
const RISK: &str = "reconnecting clients could duplicate data";

/// What one round writes.
#[derive(Debug)]
pub enum RoundWrite {
    /// Only what changed (see [`Store::output_changes`]).
    Delta(Delta),
    /// Everything: a new snapshot.
    Full(Checkpoint),
}

/// The checkpoint files of one server.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    journal_path: PathBuf,
    /// Open for appending, with a header for `generation`; `None` until
    /// the first record after a snapshot.
    journal: Option<File>,
    generation: u64,
    journal_len: u64,
    snapshot_len: u64,
    /// The next round must write a snapshot (start-up, a failed round).
    full_due: bool,
    /// The outputs as the files say now: open at the last round.
    outputs: std::collections::HashMap<PathBuf, OutputMark>,
}

impl Store {
    /// Loads the snapshot at `path` and its journal: the store and the
    /// checkpoint they hold (empty when there is none).
    pub fn open(path: &Path) -> Result<(Store, Checkpoint), CheckpointError> {
        let now = unix_now();
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.into(),
            reason,
            risk: RISK,
        };
        check_temp_slot(path)?;
        let (cp, generation, snapshot_len) = match fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| corrupt("not UTF-8".into()))?;
                let (cp, gen) = decode_snapshot(&text, now).map_err(corrupt)?;
                (cp, gen, text.len() as u64)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Checkpoint::default(), 0, 0),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        let journal_path = sibling(path, ".journal");
        let mut tables = Tables::of(cp);
        let replayed = replay(&journal_path, generation, now, &mut tables)?;
        if replayed > 0 {
            crate::info!(
                "state: {replayed} journal records applied over {}",
                crate::log::esc(&path)
            );
        }
        let cp = tables.into_checkpoint();
        let store = Store {
            path: path.into(),
            journal_path,
            journal: None,
            generation,
            journal_len: 0,
            snapshot_len,
            full_due: true,
            outputs: cp
                .outputs
                .iter()
                .map(|o| (o.path.clone(), o.clone()))
                .collect(),
        };
        Ok((store, cp))
    }

    /// True when the next round must write everything.
    pub fn wants_full(&self) -> bool {
        self.full_due || self.journal_len > self.snapshot_len.max(MIN_COMPACT)
    }

    /// The outputs open now (`marks`) against those recorded: marks that
    /// are new or changed, and paths no longer open.
    pub fn output_changes(&self, marks: &[OutputMark]) -> (Vec<OutputMark>, Vec<PathBuf>) {
        let changed = marks
            .iter()
            .filter(|m| self.outputs.get(&m.path) != Some(*m))
            .cloned()
            .collect();
        let open: std::collections::HashSet<&PathBuf> = marks.iter().map(|m| &m.path).collect();
        let closed = self
            .outputs
            .keys()
            .filter(|p| !open.contains(p))
            .cloned()
            .collect();
        (changed, closed)
    }

    /// Writes one round durably; returns the bytes written. On failure the
    /// next round writes a snapshot.
    pub fn write(&mut self, w: &RoundWrite) -> Result<u64, CheckpointError> {
        let res = match w {
            RoundWrite::Full(cp) => self.write_full(cp),
            RoundWrite::Delta(d) if d.is_empty() => Ok(0),
            RoundWrite::Delta(d) => self.append(d),
        };
        if res.is_err() {
            self.full_due = true;
            self.journal = None;
        }
        res
    }

    fn write_full(&mut self, cp: &Checkpoint) -> Result<u64, CheckpointError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let generation = self.generation + 1;
        let bytes = encode_snapshot(cp, generation).map_err(err)?;
        write_atomic(&self.path, &bytes, Durability::Synced).map_err(err)?;
        self.generation = generation;
        self.snapshot_len = bytes.len() as u64;
        self.journal = None;
        self.journal_len = 0;
        self.full_due = false;
        self.outputs = cp
            .outputs
            .iter()
            .map(|o| (o.path.clone(), o.clone()))
            .collect();
        Ok(bytes.len() as u64)
    }

    /// Writes `cp` (what [`Store::open`] loaded, after crash recovery) as
    /// the snapshot and starts its journal, before the server takes
    /// connections. Without it the first round writes a snapshot (a
    /// synced temp file and directory) and the round after starts the
    /// journal: durability barriers that the first stream's `200` and its
    /// `250 DONE` would wait for. After it, every round until the next
    /// compaction is one append and one `fdatasync`. On failure the first
    /// round writes the snapshot, as before.
    pub fn prepare(&mut self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let res = self.write_full(cp).and_then(|_| {
            let journal = self
                .start_journal(None)
                .map_err(|source| StateError::Write {
                    path: self.journal_path.clone(),
                    source,
                })?;
            self.journal = Some(journal);
            Ok(())
        });
        if res.is_err() {
            self.full_due = true;
            self.journal = None;
        }
        res
    }

    fn append(&mut self, d: &Delta) -> Result<u64, CheckpointError> {
        let err = |source| StateError::Write {
            path: self.journal_path.clone(),
            source,
        };
        let payload = encode_delta(d).map_err(err)?;
        let mut record = format!("R {} {:016x}\n", payload.len(), fnv1a(payload.as_bytes()));
        record.push_str(&payload);
        let journal = match self.journal.take() {
            Some(f) => {
                let mut w = &f;
                w.write_all(record.as_bytes()).map_err(err)?;
                f.sync_data().map_err(err)?;
                f
            }
            // A new journal goes durable with its first record.
            None => self.start_journal(Some(&record)).map_err(err)?,
        };
        self.journal = Some(journal);
        self.journal_len += record.len() as u64;
        for p in &d.closed {
            self.outputs.remove(p);
        }
        for o in &d.outputs {
            self.outputs.insert(o.path.clone(), o.clone());
        }
        Ok(record.len() as u64)
    }

    /// Truncates the journal and writes the header of this generation,
    /// with `first`, the first record, when there is one; durable (file
    /// and directory) when it returns. Header and record share one sync:
    /// a crash before it leaves a journal that is empty, stale (another
    /// generation: ignored) or ends in a torn record (dropped), and nothing
    /// the record covers was acknowledged yet.
    fn start_journal(&self, first: Option<&str>) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.journal_path)?;
        let mut text = format!("{HEADER}{}\n", self.generation);
        text.push_str(first.unwrap_or(""));
        (&f).write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Some(dir) = self.journal_path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(f)
    }
}

/// Applies the journal's valid records of `generation` to `tables`;
/// returns how many. A torn or corrupt record ends the journal there
/// (logged); a journal of another generation is ignored.
fn replay(
    path: &Path,
    generation: u64,
    now: u64,
    tables: &mut Tables,
) -> Result<usize, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let Some((head, mut rest)) = split_line(&bytes) else {
        return Ok(0);
    };
    let current = std::str::from_utf8(head)
        .ok()
        .and_then(|h| h.strip_prefix(HEADER))
        .and_then(|g| g.parse::<u64>().ok())
        == Some(generation);
    if !current {
        return Ok(0);
    }
    let mut n = 0;
    while !rest.is_empty() {
        match next_record(rest) {
            Some((payload, after)) => match std::str::from_utf8(payload)
                .map_err(|e| e.to_string())
                .and_then(|t| decode_delta(t, now))
            {
                Ok(d) => {
                    tables.apply(d);
                    n += 1;
                    rest = after;
                }
                Err(why) => {
                    crate::warn!(
                        "{}: record {} does not parse ({why}); ignoring it and what follows",
                        crate::log::esc(&path),
                        n + 1
                    );
                    break;
                }
            },
            None => {
                crate::warn!(
                    "{}: the last {} bytes are a torn record (a crash while writing it); ignoring them",
                    crate::log::esc(&path),
                    rest.len()
                );
                break;
            }
        }
    }
    Ok(n)
}

/// One whole record with a matching checksum: its payload and what
/// follows; `None` when torn or corrupt.
fn next_record(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (line, rest) = split_line(buf)?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.strip_prefix("R ")?.split(' ');
    let len: usize = words.next()?.parse().ok()?;
    let sum = u64::from_str_radix(words.next()?, 16).ok()?;
    let payload = rest.get(..len)?;
    (fnv1a(payload) == sum).then(|| (payload, &rest[len..]))
}

fn split_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = memchr::memchr(b'\n', buf)?;
    Some((&buf[..at], &buf[at + 1..]))
}

/// `path` with `suffix` added to its file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The snapshot's temp file must be creatable: something else at its
/// path (a directory made by a stream before routes were checked) would
/// make every checkpoint fail, so start-up refuses with a clear message.
fn check_temp_slot(path: &Path) -> Result<(), CheckpointError> {
    let tmp = sibling(path, ".tmp");
    match fs::symlink_metadata(&tmp) {
        Ok(m) if !m.is_file() => Err(StateError::Write {
            path: tmp,
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "something other than a regular file is in the way of the checkpoint's temp file; remove it",
            ),
        }),
        _ => Ok(()),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::checkpoint::{StreamMark, StreamRef};

    fn stream(id: &str, offset: u64) -> StreamMark {
        StreamMark {
            host: "h".into(),
            path: "/p".into(),
            id: id.into(),
            offset,
            output: "/o".into(),
            attached: false,
            seen: 7,
            owner: None,
        }
    }

    fn output(len: u64) -> OutputMark {
        OutputMark {
            path: "/o".into(),
            dev: 1,
            ino: 2,
            len,
            writers: 1,
        }
    }

    fn delta(streams: Vec<StreamMark>, gone: &[&str]) -> RoundWrite {
        RoundWrite::Delta(Delta {
            outputs: vec![],
            closed: vec![],
            streams,
            gone: gone
                .iter()
                .map(|id| StreamRef {
                    host: "h".into(),
                    path: "/p".into(),
                    id: id.to_string(),
                })
                .collect(),
        })
    }

    #[test]
    fn snapshot_and_journal_load_back_as_one_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        let (mut store, cp) = Store::open(&sf).unwrap();
        assert_eq!(cp, Checkpoint::default());
        assert!(store.wants_full(), "the first round after start-up");
        let base = Checkpoint {
            outputs: vec![output(10)],
            streams: vec![stream("a", 10), stream("b", 5)],
        };
        store.write(&RoundWrite::Full(base)).unwrap();
        assert!(!store.wants_full());
        let small = store.write(&delta(vec![stream("a", 20)], &["b"])).unwrap();
        assert!(small < 300, "a record costs what changed: {small} bytes");
        let (changed, closed) = store.output_changes(&[output(20)]);
        assert_eq!((changed.len(), closed.len()), (1, 0));
        store
            .write(&RoundWrite::Delta(Delta {
                outputs: changed,
                streams: vec![stream("c", 1)],
                ..Delta::default()
            }))
            .unwrap();
        let (_, got) = Store::open(&sf).unwrap();
        assert_eq!(got.outputs, vec![output(20)]);
        assert_eq!(got.streams, vec![stream("a", 20), stream("c", 1)]);
    }

    #[test]
    fn prepared_at_start_up_the_first_round_appends_and_a_restart_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        let base = Checkpoint {
            outputs: vec![output(10)],
            streams: vec![stream("a", 10)],
        };
        let (mut store, _) = Store::open(&sf).unwrap();
        store.write(&RoundWrite::Full(base)).unwrap();
        store.write(&delta(vec![stream("a", 11)], &[])).unwrap();
        // A restart: what was loaded is written back before any round.
        let (mut store, loaded) = Store::open(&sf).unwrap();
        assert!(store.wants_full());
        store.prepare(&loaded).unwrap();
        assert!(!store.wants_full(), "the first round is a delta");
        let jp = sibling(&sf, ".journal");
        let header = fs::read_to_string(&jp).unwrap();
        assert_eq!(header, format!("{HEADER}2\n"), "started before any record");
        store.write(&delta(vec![stream("b", 3)], &[])).unwrap();
        let (_, got) = Store::open(&sf).unwrap();
        assert_eq!(got.outputs, vec![output(10)]);
        assert_eq!(got.streams, vec![stream("a", 11), stream("b", 3)]);
    }

    #[test]
    fn a_journal_started_with_its_first_record_loads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        let (mut store, _) = Store::open(&sf).unwrap();
        let base = Checkpoint {
            outputs: vec![],
            streams: vec![stream("a", 1)],
        };
        store.write(&RoundWrite::Full(base)).unwrap();
        store.write(&delta(vec![stream("a", 2)], &[])).unwrap();
        let text = fs::read_to_string(sibling(&sf, ".journal")).unwrap();
        assert!(text.starts_with(&format!("{HEADER}1\nR ")), "{text}");
        let (_, got) = Store::open(&sf).unwrap();
        assert_eq!(got.streams, vec![stream("a", 2)]);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_a_stale_journal_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        let (mut store, _) = Store::open(&sf).unwrap();
        let base = Checkpoint {
            outputs: vec![],
            streams: vec![stream("a", 1)],
        };
        store.write(&RoundWrite::Full(base.clone())).unwrap();
        store.write(&delta(vec![stream("a", 2)], &[])).unwrap();
        store.write(&delta(vec![stream("a", 3)], &[])).unwrap();
        let jp = sibling(&sf, ".journal");
        let full = fs::read(&jp).unwrap();
        fs::write(&jp, &full[..full.len() - 5]).unwrap();
        let (_, got) = Store::open(&sf).unwrap();
        assert_eq!(
            got.streams,
            vec![stream("a", 2)],
            "the torn record is dropped"
        );
        // A crash right after a compaction's rename leaves the old
        // journal: its generation is not the snapshot's.
        fs::write(&jp, &full).unwrap();
        let (mut store, _) = Store::open(&sf).unwrap();
        store.write(&RoundWrite::Full(base.clone())).unwrap();
        let (_, got) = Store::open(&sf).unwrap();
        assert_eq!(
            got, base,
            "the old journal is not replayed over the new snapshot"
        );
    }

    #[test]
    fn a_version_1_state_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        fs::write(
            &sf,
            "version = 1\n[[stream]]\nhost = \"h\"\npath = \"/p\"\nid = \"a\"\noffset = 4\noutput = \"/o\"\nattached = false\n",
        )
        .unwrap();
        let (_, cp) = Store::open(&sf).unwrap();
        assert_eq!(cp.streams.len(), 1);
        assert_eq!(cp.streams[0].offset, 4);
        assert!(cp.streams[0].seen > 0, "seen is the time of loading");
    }

    #[test]
    fn something_in_the_way_of_the_temp_file_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let sf = dir.path().join("state");
        fs::create_dir(sibling(&sf, ".tmp")).unwrap();
        let e = Store::open(&sf).unwrap_err().to_string();
        assert!(e.contains("state.tmp") && e.contains("remove it"), "{e}");
    }
}
