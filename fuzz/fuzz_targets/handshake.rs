//! Feeds arbitrary bytes to every handshake parser and checks the invariants
//! of `loghamster::proto` (see `check_invariants`). Run with
//! `cargo +nightly fuzz run handshake` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loghamster::proto::check_invariants(data);
});
