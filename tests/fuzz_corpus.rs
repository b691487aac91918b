//! Replays every seed of the fuzz corpora through the same invariant
//! checks the fuzz targets run, so stable `cargo test` covers what fuzzing
//! found.

use std::fs;
use std::path::Path;

/// Runs `check` on every file of `fuzz/corpus/<target>`; at least `min`.
fn replay(target: &str, min: usize, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seen = 0;
    for entry in fs::read_dir(&dir).expect("fuzz corpus directory") {
        let path = entry.expect("corpus entry").path();
        let data = fs::read(&path).expect("corpus file");
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "invariant broken by {}", path.display());
        seen += 1;
    }
    assert!(seen >= min, "only {seen} corpus files in {}", dir.display());
}

#[test]
fn fuzz_corpus_holds_invariants() {
    replay("handshake", 10, loghamster::proto::check_invariants);
}

#[test]
fn mux_corpus_holds_invariants() {
    replay("mux", 10, loghamster::proto::mux::check_invariants);
}

#[test]
fn decode_corpus_holds_invariants() {
    replay("decode", 10, loghamster::codec::check_invariants);
}

#[test]
fn config_corpus_holds_invariants() {
    replay("config", 4, loghamster::fuzzing::config);
}

/// Runs a loader's check with a scratch directory of its own.
fn in_scratch(check: fn(&std::path::Path, &[u8]), data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    check(dir.path(), data);
}

#[test]
fn client_state_corpus_holds_invariants() {
    replay("client_state", 4, |d| {
        in_scratch(loghamster::fuzzing::client_state, d)
    });
}

#[test]
fn checkpoint_corpus_holds_invariants() {
    replay("checkpoint", 3, |d| {
        in_scratch(loghamster::fuzzing::checkpoint, d)
    });
}

#[test]
fn server_corpus_holds_invariants() {
    replay("server", 10, |d| {
        in_scratch(loghamster::server::harness::run, d)
    });
}
