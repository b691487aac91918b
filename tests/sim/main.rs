//! The deterministic simulation of the client's tailer: a simulated host
//! ([`fs`]), logrotate's rotations as single file-system steps
//! ([`logrotate`]) and the applications writing the logs ([`app`]).

mod app;
mod fs;
mod logrotate;
