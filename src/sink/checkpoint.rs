//! The server's checkpoint: how far each stream got, and how long each
//! open output was, at one consistent moment.
//!
//! On disk it is a snapshot plus a journal of what changed since
//! ([`super::journal`]). The snapshot (TOML, versioned, written with
//! [`crate::persist::write_atomic`]):
//! ```toml
//! version = 2
//! generation = 7      # the journal that continues this snapshot
//! [[output]]
//! path = "/srv/logs/web1/var/log/app.log"
//! dev = 64769
//! ino = 1234
//! len = 9000          # bytes in the file at the checkpoint
//! writers = 1         # streams attached at the checkpoint
//! [[stream]]
//! host = "web1"
//! path = "/var/log/app.log"
//! id = "fe00-98c1-6745a1f0.1a2b"
//! offset = 9000       # stream offset whose bytes are all in `output`
//! output = "/srv/logs/web1/var/log/app.log"
//! attached = true
//! seen = 1765000000   # unix time it was last attached or detached
//! owner = "token:web" # the identity that owns it (optional)
//! ```
//! Version 1 (no `generation`, no `seen`) is read too: `seen` is then the
//! time of loading, so such streams expire a full retention later.
//! `owner` (see `crate::server::auth`) is optional within version 2: a
//! file written before owners were recorded loads with none, and the
//! first identity the rules let write such a stream adopts it.
//!
//! Each journal record is a [`Delta`] in the same TOML terms: the outputs
//! whose mark changed, the outputs closed, the streams that changed and
//! the streams forgotten.
//!
//! The server writes outputs synchronously from one thread, so at the
//! moment of a checkpoint every stream's offset matches the output lengths
//! exactly. The server checkpoints before the first byte of every new
//! attachment (a successful INIT), so an output's `writers` never
//! under-counts who wrote after the checkpoint, and an output is in the
//! checkpoint whenever a stream writes to it.
//!
//! After a crash, [`plan_recovery`] compares each output with its
//! checkpoint:
//! - longer, one writer: the bytes after `len` belong to that stream and
//!   were never committed: truncate back to `len`; the client re-sends them
//!   from the checkpointed offset (exactly once);
//! - longer, several writers: the excess cannot be attributed; it stays
//!   and is reported (those lines may arrive twice);
//! - shorter (power loss without `sync`): one writer: the stream's offset
//!   is moved back by the missing bytes so the client re-sends them;
//!   several writers: reported as lost;
//! - another file at the path (rotated by logrotate since): left alone.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;

use crate::persist::{escape_path, unescape_path, StateError, TomlText};

/// The snapshot's format version; version 1 is still read.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMark {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub writers: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMark {
    pub host: String,
    pub path: String,
    pub id: String,
    pub offset: u64,
    pub output: PathBuf,
    /// A connection was writing this stream at the checkpoint.
    pub attached: bool,
    /// Unix time (seconds) it was last attached or detached: its age for
    /// `stream_retention`.
    pub seen: u64,
    /// The identity that owns it (`token:web`, ...), if one is recorded.
    pub owner: Option<String>,
}

/// A stream by its key, for records that forget it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamRef {
    pub host: String,
    pub path: String,
    pub id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub outputs: Vec<OutputMark>,
    pub streams: Vec<StreamMark>,
}

/// What changed between two checkpoints: one journal record. Applied to
/// the earlier checkpoint it gives the later one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Outputs opened, or whose length or writer count changed.
    pub outputs: Vec<OutputMark>,
    /// Outputs no longer open.
    pub closed: Vec<PathBuf>,
    /// Streams that are new or changed.
    pub streams: Vec<StreamMark>,
    /// Streams forgotten (retention, or the cap on idle streams).
    pub gone: Vec<StreamRef>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
            && self.closed.is_empty()
            && self.streams.is_empty()
            && self.gone.is_empty()
    }
}

/// Errors reading or writing the checkpoint.
pub type CheckpointError = StateError;

/// A checkpoint as maps, for applying deltas.
#[derive(Debug, Default)]
pub(super) struct Tables {
    pub outputs: HashMap<PathBuf, OutputMark>,
    pub streams: HashMap<StreamRef, StreamMark>,
}

impl Tables {
    pub fn of(cp: Checkpoint) -> Tables {
        let mut t = Tables::default();
        for o in cp.outputs {
            t.outputs.insert(o.path.clone(), o);
        }
        for s in cp.streams {
            t.streams.insert(s.key(), s);
        }
        t
    }

    pub fn apply(&mut self, d: Delta) {
        for p in d.closed {
            self.outputs.remove(&p);
        }
        for o in d.outputs {
            self.outputs.insert(o.path.clone(), o);
        }
        for g in d.gone {
            self.streams.remove(&g);
        }
        for s in d.streams {
            self.streams.insert(s.key(), s);
        }
    }

    /// In a stable order (by output path, by stream key), so the same
    /// state always reads back the same.
    pub fn into_checkpoint(self) -> Checkpoint {
        let mut outputs: Vec<OutputMark> = self.outputs.into_values().collect();
        outputs.sort_by(|a, b| a.path.cmp(&b.path));
        let mut streams: Vec<StreamMark> = self.streams.into_values().collect();
        streams.sort_by(|a, b| (&a.host, &a.path, &a.id).cmp(&(&b.host, &b.path, &b.id)));
        Checkpoint { outputs, streams }
    }
}

impl StreamMark {
    pub fn key(&self) -> StreamRef {
        StreamRef {
            host: self.host.clone(),
            path: self.path.clone(),
            id: self.id.clone(),
        }
    }
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
#[serde(deny_unknown_fields)]
struct RawHead {
    version: u32,
    #[serde(default)]
    generation: u64,
    #[serde(default)]
    output: Vec<RawOutput>,
    #[serde(default)]
    stream: Vec<RawStream>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Serialize))]
#[serde(deny_unknown_fields)]
struct RawDelta {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    closed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    output: Vec<RawOutput>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    stream: Vec<RawStream>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gone: Vec<RawRef>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
#[serde(deny_unknown_fields)]
struct RawOutput {
    path: String,
    dev: u64,
    ino: u64,
    len: u64,
    writers: u32,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
#[serde(deny_unknown_fields)]
struct RawStream {
    host: String,
    path: String,
    id: String,
    offset: u64,
    output: String,
    attached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
#[serde(deny_unknown_fields)]
struct RawRef {
    host: String,
    path: String,
    id: String,
}

impl RawOutput {
    #[cfg(test)]
    fn of(o: &OutputMark) -> RawOutput {
        RawOutput {
            path: escape_path(&o.path),
            dev: o.dev,
            ino: o.ino,
            len: o.len,
            writers: o.writers,
        }
    }

    fn mark(self) -> OutputMark {
        OutputMark {
            path: unescape_path(&self.path),
            dev: self.dev,
            ino: self.ino,
            len: self.len,
            writers: self.writers,
        }
    }
}

impl RawStream {
    #[cfg(test)]
    fn of(s: &StreamMark) -> RawStream {
        RawStream {
            host: s.host.clone(),
            path: s.path.clone(),
            id: s.id.clone(),
            offset: s.offset,
            output: escape_path(&s.output),
            attached: s.attached,
            seen: Some(s.seen),
            owner: s.owner.clone(),
        }
    }

    fn mark(self, loaded_at: u64) -> StreamMark {
        StreamMark {
            host: self.host,
            path: self.path,
            id: self.id,
            offset: self.offset,
            output: unescape_path(&self.output),
            attached: self.attached,
            seen: self.seen.unwrap_or(loaded_at),
            owner: self.owner,
        }
    }
}

/// Why text did not parse as a snapshot or a record: for the message.
fn reason(e: toml::de::Error) -> String {
    e.message().to_string()
}

/// Parses a snapshot: the checkpoint and the generation of the journal
/// that continues it. `loaded_at` stands in for a missing `seen`.
pub(super) fn decode_snapshot(text: &str, loaded_at: u64) -> Result<(Checkpoint, u64), String> {
    let raw: RawHead = toml::from_str(text).map_err(reason)?;
    if raw.version != VERSION && raw.version != 1 {
        return Err(format!(
            "version {} is not supported (expected 1 or {VERSION})",
            raw.version
        ));
    }
    let outputs = raw.output.into_iter().map(RawOutput::mark).collect();
    let streams = raw.stream.into_iter().map(|s| s.mark(loaded_at)).collect();
    Ok((Checkpoint { outputs, streams }, raw.generation))
}

/// Encodes a snapshot with [`TomlText`] (no copy of the whole checkpoint
/// in serializer form, and a fraction of `toml`'s time: see
/// `cargo bench --bench state_text`).
pub fn encode_snapshot(cp: &Checkpoint, generation: u64) -> io::Result<Vec<u8>> {
    let mut t = TomlText::with_capacity(64 + 400 * (cp.outputs.len() + cp.streams.len()));
    t.int("version", u64::from(VERSION));
    t.int("generation", generation);
    for o in &cp.outputs {
        output_table(&mut t, o);
    }
    for s in &cp.streams {
        stream_table(&mut t, s);
    }
    t.finish().map(String::into_bytes)
}

/// Encodes one journal record's payload: every round of a busy server
/// writes one, with every output and stream that moved.
pub fn encode_delta(d: &Delta) -> io::Result<String> {
    let mut t = TomlText::with_capacity(
        64 + 400 * (d.closed.len() + d.outputs.len() + d.streams.len() + d.gone.len()),
    );
    if !d.closed.is_empty() {
        let closed: Vec<String> = d.closed.iter().map(|p| escape_path(p)).collect();
        t.strs("closed", closed.iter().map(String::as_str));
    }
    for o in &d.outputs {
        output_table(&mut t, o);
    }
    for s in &d.streams {
        stream_table(&mut t, s);
    }
    for g in &d.gone {
        t.table("gone");
        t.str("host", &g.host);
        t.str("path", &g.path);
        t.str("id", &g.id);
    }
    t.finish()
}

/// One `[[output]]`, as [`RawOutput`] reads it.
fn output_table(t: &mut TomlText, o: &OutputMark) {
    t.table("output");
    t.str("path", &escape_path(&o.path));
    t.int("dev", o.dev);
    t.int("ino", o.ino);
    t.int("len", o.len);
    t.int("writers", u64::from(o.writers));
}

/// One `[[stream]]`, as [`RawStream`] reads it.
fn stream_table(t: &mut TomlText, s: &StreamMark) {
    t.table("stream");
    t.str("host", &s.host);
    t.str("path", &s.path);
    t.str("id", &s.id);
    t.int("offset", s.offset);
    t.str("output", &escape_path(&s.output));
    t.bool("attached", s.attached);
    t.int("seen", s.seen);
    if let Some(owner) = &s.owner {
        t.str("owner", owner);
    }
}

/// Parses one journal record's payload.
pub(super) fn decode_delta(text: &str, loaded_at: u64) -> Result<Delta, String> {
    let raw: RawDelta = toml::from_str(text).map_err(reason)?;
    Ok(Delta {
        outputs: raw.output.into_iter().map(RawOutput::mark).collect(),
        closed: raw.closed.iter().map(|p| unescape_path(p)).collect(),
        streams: raw.stream.into_iter().map(|s| s.mark(loaded_at)).collect(),
        gone: raw
            .gone
            .into_iter()
            .map(|g| StreamRef {
                host: g.host,
                path: g.path,
                id: g.id,
            })
            .collect(),
    })
}

/// Loads a checkpoint (snapshot and journal); a missing file is an empty
/// checkpoint. See [`super::journal::Store::open`].
pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
    super::journal::Store::open(path).map(|(_, cp)| cp)
}

/// What recovery must do to one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Cut uncommitted bytes of a single-writer output.
    Truncate {
        output: PathBuf,
        to: u64,
        excess: u64,
    },
    /// Uncommitted bytes in a shared output: may be duplicated.
    SharedExcess { output: PathBuf, excess: u64 },
    /// A single-writer output lost its tail: move the stream back.
    Rewind { output: PathBuf, missing: u64 },
    /// A shared output lost its tail: those bytes are lost.
    SharedLoss { output: PathBuf, missing: u64 },
}

/// Decides the repairs. `stat` gives `(dev, ino, len)` of the file now at
/// a path (`None` if absent). Pure apart from that callback.
pub fn plan_recovery(
    cp: &Checkpoint,
    stat: impl Fn(&Path) -> Option<(u64, u64, u64)>,
) -> Vec<Repair> {
    let mut plan = Vec::new();
    for o in &cp.outputs {
        let Some((dev, ino, len)) = stat(&o.path) else {
            continue;
        };
        if (dev, ino) != (o.dev, o.ino) || len == o.len {
            continue;
        }
        let output = o.path.clone();
        plan.push(match (len > o.len, o.writers <= 1) {
            (true, true) => Repair::Truncate {
                output,
                to: o.len,
                excess: len - o.len,
            },
            (true, false) => Repair::SharedExcess {
                output,
                excess: len - o.len,
            },
            (false, true) => Repair::Rewind {
                output,
                missing: o.len - len,
            },
            (false, false) => Repair::SharedLoss {
                output,
                missing: o.len - len,
            },
        });
    }
    plan
}

/// Applies the plan: truncates files and rewinds stream offsets in `cp`.
/// Returns one log line per repair.
pub fn apply_recovery(cp: &mut Checkpoint, plan: &[Repair]) -> io::Result<Vec<String>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut lines = Vec::new();
    for r in plan {
        match r {
            Repair::Truncate { output, to, excess } => {
                let f = fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(output)?;
                f.set_len(*to)?;
                f.sync_all()?;
                lines.push(format!(
                    "{}: removed {excess} bytes written after the last checkpoint; their client sends them again",
                    crate::log::esc(output)
                ));
            }
            Repair::SharedExcess { output, excess } => lines.push(format!(
                "{}: {excess} bytes written after the last checkpoint by one of several streams; those lines may arrive twice",
                crate::log::esc(output)
            )),
            Repair::Rewind { output, missing } => {
                for s in cp.streams.iter_mut().filter(|s| s.attached && s.output == *output) {
                    s.offset = s.offset.saturating_sub(*missing);
                }
                lines.push(format!(
                    "{}: {missing} committed bytes are missing (power loss without sync?); asking the client to send them again",
                    crate::log::esc(output)
                ));
            }
            Repair::SharedLoss { output, missing } => lines.push(format!(
                "{}: {missing} committed bytes of a shared output are missing (power loss without sync); they are lost",
                crate::log::esc(output)
            )),
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(len: u64, writers: u32) -> Checkpoint {
        Checkpoint {
            outputs: vec![OutputMark {
                path: "/o".into(),
                dev: 1,
                ino: 2,
                len,
                writers,
            }],
            streams: vec![StreamMark {
                host: "h".into(),
                path: "/p".into(),
                id: "i".into(),
                offset: 500,
                output: "/o".into(),
                attached: true,
                seen: 1,
                owner: Some("token:web".into()),
            }],
        }
    }

    #[test]
    fn recovery_table() {
        let at = |len| move |_: &Path| Some((1, 2, len));
        assert_eq!(plan_recovery(&cp(100, 1), at(100)), vec![]);
        assert_eq!(
            plan_recovery(&cp(100, 1), at(150)),
            vec![Repair::Truncate {
                output: "/o".into(),
                to: 100,
                excess: 50
            }]
        );
        assert_eq!(
            plan_recovery(&cp(100, 2), at(150)),
            vec![Repair::SharedExcess {
                output: "/o".into(),
                excess: 50
            }]
        );
        assert_eq!(
            plan_recovery(&cp(100, 1), at(70)),
            vec![Repair::Rewind {
                output: "/o".into(),
                missing: 30
            }]
        );
        assert_eq!(
            plan_recovery(&cp(100, 3), at(70)),
            vec![Repair::SharedLoss {
                output: "/o".into(),
                missing: 30
            }]
        );
        // Rotated away (other inode) or gone: nothing to repair.
        assert_eq!(
            plan_recovery(&cp(100, 1), |_: &Path| Some((1, 3, 150))),
            vec![]
        );
        assert_eq!(plan_recovery(&cp(100, 1), |_: &Path| None), vec![]);
    }

    #[test]
    fn owners_are_optional_in_version_2() {
        // Written before owners were recorded: loads, with none.
        let old = "version = 2\ngeneration = 3\n[[stream]]\nhost = \"h\"\npath = \"/p\"\nid = \"i\"\noffset = 5\noutput = \"/o\"\nattached = false\nseen = 9\n";
        let (loaded, generation) = decode_snapshot(old, 1).unwrap();
        assert_eq!((generation, loaded.streams[0].owner.as_deref()), (3, None));
        // An owner survives a snapshot and a journal record.
        let c = cp(100, 1);
        let text = String::from_utf8(encode_snapshot(&c, 4).unwrap()).unwrap();
        assert!(text.contains("owner = \"token:web\""), "{text}");
        assert_eq!(decode_snapshot(&text, 1).unwrap().0, c);
        let d = Delta {
            streams: c.streams.clone(),
            ..Delta::default()
        };
        assert_eq!(decode_delta(&encode_delta(&d).unwrap(), 1).unwrap(), d);
        let none = Delta {
            streams: vec![StreamMark {
                owner: None,
                ..c.streams[0].clone()
            }],
            ..Delta::default()
        };
        let text = encode_delta(&none).unwrap();
        assert!(!text.contains("owner"), "{text}");
    }

    #[test]
    fn plain_snapshots_read_as_toml_wrote_them_and_odd_values_round_trip() {
        // Plain values: byte for byte what `toml`'s serializer wrote, a
        // table at a time (earlier versions).
        let c = cp(100, 1);
        let mut old = format!("version = {VERSION}\ngeneration = 4\n");
        old.push_str("\n[[output]]\n");
        old.push_str(&toml::to_string(&RawOutput::of(&c.outputs[0])).unwrap());
        old.push_str("\n[[stream]]\n");
        old.push_str(&toml::to_string(&RawStream::of(&c.streams[0])).unwrap());
        assert_eq!(
            String::from_utf8(encode_snapshot(&c, 4).unwrap()).unwrap(),
            old
        );
        // Quotes, backslashes, control characters and bytes that are not
        // UTF-8, in every string of a snapshot and of a journal record.
        let odd_path = |tail: &[u8]| {
            use std::os::unix::ffi::OsStrExt;
            let mut b = b"/srv/\"q\"\\\n\xe9%".to_vec();
            b.extend_from_slice(tail);
            PathBuf::from(std::ffi::OsStr::from_bytes(&b))
        };
        let odd = Checkpoint {
            outputs: vec![OutputMark {
                path: odd_path(b"o"),
                dev: u64::from(u32::MAX),
                ino: i64::MAX as u64,
                len: 0,
                writers: u32::MAX,
            }],
            streams: vec![StreamMark {
                host: "h\"\\\u{1}\u{7f}é".into(),
                path: "/p\n\t\r".into(),
                id: "i'\"".into(),
                offset: 7,
                output: odd_path(b"o"),
                attached: false,
                seen: 0,
                owner: Some("token:\"web\"\\".into()),
            }],
        };
        let text = String::from_utf8(encode_snapshot(&odd, 9).unwrap()).unwrap();
        assert_eq!(decode_snapshot(&text, 1).unwrap(), (odd.clone(), 9));
        let d = Delta {
            outputs: odd.outputs.clone(),
            closed: vec![odd_path(b"1"), odd_path(b"2")],
            streams: odd.streams.clone(),
            gone: vec![StreamRef {
                host: "g\"".into(),
                path: "\\".into(),
                id: "\u{0}".into(),
            }],
        };
        assert_eq!(decode_delta(&encode_delta(&d).unwrap(), 1).unwrap(), d);
        // What TOML cannot hold is refused, not written unreadable.
        let mut big = cp(100, 1);
        big.streams[0].offset = u64::MAX;
        let e = encode_snapshot(&big, 1).unwrap_err();
        assert!(e.to_string().contains("`offset`"), "{e}");
    }

    #[test]
    fn rewind_moves_the_attached_stream_back() {
        let mut c = cp(100, 1);
        apply_recovery(
            &mut c,
            &[Repair::Rewind {
                output: "/o".into(),
                missing: 30,
            }],
        )
        .unwrap();
        assert_eq!(c.streams[0].offset, 470);
    }

    #[test]
    fn truncate_cuts_the_file_and_round_trip_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.log");
        fs::write(&out, b"0123456789").unwrap();
        let mut c = cp(4, 1);
        c.outputs[0].path = out.clone();
        apply_recovery(
            &mut c,
            &[Repair::Truncate {
                output: out.clone(),
                to: 4,
                excess: 6,
            }],
        )
        .unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"0123");
        let sf = dir.path().join("state");
        fs::write(&sf, encode_snapshot(&c, 0).unwrap()).unwrap();
        assert_eq!(load(&sf).unwrap(), c);
        fs::write(&sf, "version = 1\n[[stream]]\nhost = 1\n").unwrap();
        assert!(matches!(load(&sf), Err(CheckpointError::Corrupt { .. })));
    }
}
