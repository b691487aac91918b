//! The server's checkpoint: how far each stream got, and how long each
//! open output was, at one consistent moment.
//!
//! Format (TOML, versioned, written with [`crate::persist::write_atomic`]):
//! ```toml
//! version = 1
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
//! ```
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

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::persist::{escape_path, load_toml, save_toml, unescape_path, Durability, StateError};

pub const VERSION: u32 = 1;

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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub outputs: Vec<OutputMark>,
    pub streams: Vec<StreamMark>,
}

/// Errors reading or writing the checkpoint.
pub type CheckpointError = StateError;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: u32,
    #[serde(default)]
    output: Vec<RawOutput>,
    #[serde(default)]
    stream: Vec<RawStream>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    path: String,
    dev: u64,
    ino: u64,
    len: u64,
    writers: u32,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    host: String,
    path: String,
    id: String,
    offset: u64,
    output: String,
    attached: bool,
}

/// Loads a checkpoint; a missing file is an empty checkpoint.
pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
    const RISK: &str = "reconnecting clients could duplicate data";
    let Some(raw) = load_toml(path, VERSION, |r: &Raw| r.version, RISK)? else {
        return Ok(Checkpoint::default());
    };
    let outputs = raw
        .output
        .into_iter()
        .map(|o| OutputMark {
            path: unescape_path(&o.path),
            dev: o.dev,
            ino: o.ino,
            len: o.len,
            writers: o.writers,
        })
        .collect();
    let streams = raw
        .stream
        .into_iter()
        .map(|s| StreamMark {
            host: s.host,
            path: s.path,
            id: s.id,
            offset: s.offset,
            output: unescape_path(&s.output),
            attached: s.attached,
        })
        .collect();
    Ok(Checkpoint { outputs, streams })
}

/// Writes a checkpoint atomically and durably.
pub fn save(path: &Path, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let output = cp
        .outputs
        .iter()
        .map(|o| RawOutput {
            path: escape_path(&o.path),
            dev: o.dev,
            ino: o.ino,
            len: o.len,
            writers: o.writers,
        })
        .collect();
    let stream = cp
        .streams
        .iter()
        .map(|s| RawStream {
            host: s.host.clone(),
            path: s.path.clone(),
            id: s.id.clone(),
            offset: s.offset,
            output: escape_path(&s.output),
            attached: s.attached,
        })
        .collect();
    save_toml(
        path,
        &Raw {
            version: VERSION,
            output,
            stream,
        },
        Durability::Synced,
    )
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
                    output.display()
                ));
            }
            Repair::SharedExcess { output, excess } => lines.push(format!(
                "{}: {excess} bytes written after the last checkpoint by one of several streams; those lines may arrive twice",
                output.display()
            )),
            Repair::Rewind { output, missing } => {
                for s in cp.streams.iter_mut().filter(|s| s.attached && s.output == *output) {
                    s.offset = s.offset.saturating_sub(*missing);
                }
                lines.push(format!(
                    "{}: {missing} committed bytes are missing (power loss without sync?); asking the client to send them again",
                    output.display()
                ));
            }
            Repair::SharedLoss { output, missing } => lines.push(format!(
                "{}: {missing} committed bytes of a shared output are missing (power loss without sync); they are lost",
                output.display()
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
        save(&sf, &c).unwrap();
        assert_eq!(load(&sf).unwrap(), c);
        fs::write(&sf, "version = 1\n[[stream]]\nhost = 1\n").unwrap();
        assert!(matches!(load(&sf), Err(CheckpointError::Corrupt { .. })));
    }
}
