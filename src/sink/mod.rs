//! Where received bytes land: routing a stream to an output file, and
//! writing it there line by line.
//!
//! - [`route`] is pure: from a stream's host, path and metadata it picks an
//!   output and a path *relative to a trusted base directory*, refusing
//!   anything that could escape it (`..`, absolute paths, NUL bytes).
//! - [`output`] owns the open output files. Several streams may share one
//!   output; each stream's bytes go through a [`output::LineWriter`] that
//!   writes only whole lines in one `write(2)` on an `O_APPEND` descriptor,
//!   so lines from different streams never interleave. Files are opened
//!   beneath the base with `O_NOFOLLOW` on every component
//!   ([`crate::reactor::sys::fs`]), so a planted symlink cannot redirect a
//!   write either. `SIGHUP` reopens every output, for logrotate on the
//!   server side. A stream alone on its output may instead hand over bytes
//!   that sit in a pipe ([`output::Outputs::splice`]): the server's
//!   zero-copy path, which writes them at the end of the same file.
//! - [`jetstream`] is the other kind of output: a NATS JetStream stream,
//!   written by a client thread of its own, acknowledged on PubAck. A
//!   route names its output ([`route::Destination`]); the server keeps one
//!   path per kind (files: `Outputs` and checkpoints; JetStream: staged
//!   messages and lookups), and another engine (Kafka, an object store)
//!   would be a third `Destination` with a thread like JetStream's.

pub mod checkpoint;
pub mod jetstream;
pub mod journal;
pub mod output;
pub mod route;
