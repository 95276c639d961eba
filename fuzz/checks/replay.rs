//! Replays a fuzz target's inputs through its check, on stable: every input the fuzzer ever
//! failed on (`fuzz/regressions/<target>/`) stays fixed, and the seeds (`fuzz/corpus/<target>/`)
//! pass too. Included by path by the tests that run each check.

use std::{fs, path::Path};

/// Runs `check` on every regression input and seed of `target`; `manifest_dir` is the calling
/// crate's, a sibling of `fuzz/`.
pub(crate) fn replay(manifest_dir: &str, target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(manifest_dir).join("../fuzz");
    let mut replayed = 0;
    for dir in [format!("regressions/{target}"), format!("corpus/{target}")] {
        for entry in fs::read_dir(fuzz.join(dir)).expect("the fuzz inputs") {
            let path = entry.expect("an entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue; // .gitkeep
            }
            // Printed before the check, so that a failure names its input.
            eprintln!("{}", path.display());
            check(&fs::read(&path).expect("readable"));
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs under {}", fuzz.display());
}
