//! Feeds arbitrary text to the client and server configuration parsers
//! (see `loghamster::fuzzing::config`). Run with
//! `cargo +nightly fuzz run config` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loghamster::log::mute(true);
    loghamster::fuzzing::config(data);
});
