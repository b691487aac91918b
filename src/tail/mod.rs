//! Everything the client knows about files, independent of sockets.
//!
//! - [`identity`]: a file is known by device + inode + a fingerprint of its
//!   first bytes, never by path alone, so a reused inode or a renamed file
//!   is told apart.
//! - [`batch`]: the pure rule that decides how much of what was read may be
//!   sent now (whole lines, at least `batch` bytes unless `linger` expired,
//!   a trailing partial line only after `partial_line_timeout`). Time is
//!   passed in; tests use a fake clock.
//! - [`closed`]: when a file counts as closed for send after close: a
//!   lease probe's proof that nobody writes it, or where that cannot be
//!   had, the settle rule (pure, time passed in).
//! - [`state`]: the one state file for all streams, versioned and written
//!   atomically (temp file, fsync, rename, fsync the directory). It records
//!   *acknowledged* offsets: what the server confirmed it wrote.
//! - [`listing`]: a directory's names kept between the tails' listings
//!   while no inotify event says they may have changed, so ten thousand
//!   tails in one directory share one read without weakening the race
//!   checks of `follow`.
//!
//! The client daemon ([`crate::client`]) owns the descriptors and the clock
//! and drives these pieces from the event loop.

pub mod batch;
pub mod closed;
pub mod follow;
pub mod fs;
pub mod identity;
pub mod listing;
pub mod state;
