//! Replays every seed of the fuzz corpus through the same invariant checks
//! the fuzz target runs, so stable `cargo test` covers what fuzzing found.

use std::fs;
use std::path::Path;

use loghamster::proto::check_invariants;

#[test]
fn fuzz_corpus_holds_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/handshake");
    let mut seen = 0;
    for entry in fs::read_dir(&dir).expect("fuzz corpus directory") {
        let path = entry.expect("corpus entry").path();
        let data = fs::read(&path).expect("corpus file");
        let result = std::panic::catch_unwind(|| check_invariants(&data));
        assert!(result.is_ok(), "invariant broken by {}", path.display());
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} corpus files in {}", dir.display());
}
