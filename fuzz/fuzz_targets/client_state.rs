//! Feeds arbitrary bytes to the client's state-file loader (see
//! `loghamster::fuzzing::client_state`). Run with
//! `cargo +nightly fuzz run client_state` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loghamster::log::mute(true);
    let dir = loghamster::fuzzing::scratch_dir("client_state");
    loghamster::fuzzing::client_state(dir, data);
});
