//! Plays a script of client operations (INIT, data, compressed data,
//! half-close, close, time passing, restarts) against a real server on
//! loopback (see `loghamster::server::harness`). Run with
//! `cargo +nightly fuzz run server` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loghamster::log::mute(true);
    let dir = loghamster::fuzzing::scratch_dir("server");
    loghamster::server::harness::run(dir, data);
});
