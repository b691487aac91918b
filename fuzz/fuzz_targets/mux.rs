//! Feeds arbitrary bytes to the multiplexed connection's frame parser and
//! channel table and checks their invariants (see
//! `loghamster::proto::mux::check_invariants`). Run with
//! `cargo +nightly fuzz run mux` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loghamster::proto::mux::check_invariants(data);
});
