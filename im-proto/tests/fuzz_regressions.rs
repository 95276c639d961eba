//! The check of the fuzz target `frame_decode` (fuzz/), on stable: every input the fuzzer ever
//! failed on (fuzz/regressions/frame_decode/) stays fixed, and the seeds pass too.

#[path = "../../fuzz/checks/frame_decode.rs"]
mod frame_decode;

use std::{fs, path::Path};

#[test]
fn frame_decode() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for dir in ["regressions/frame_decode", "corpus/frame_decode"] {
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
            frame_decode::check(&fs::read(&path).expect("readable"));
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs under {}", fuzz.display());
}
