//! Feeds arbitrary bytes to the server's checkpoint loader, snapshot and
//! journal (see `loghamster::fuzzing::checkpoint`). Run with
//! `cargo +nightly fuzz run checkpoint` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loghamster::log::mute(true);
    let dir = loghamster::fuzzing::scratch_dir("checkpoint");
    loghamster::fuzzing::checkpoint(dir, data);
});
