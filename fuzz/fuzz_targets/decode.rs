//! Feeds arbitrary bytes to the wire decoders and round-trips them through
//! the encoders (see `loghamster::codec::check_invariants`). Run with
//! `cargo +nightly fuzz run decode` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loghamster::codec::check_invariants(data);
});
