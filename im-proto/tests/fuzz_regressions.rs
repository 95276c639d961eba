//! The check of the fuzz target `frame_decode` (fuzz/), on stable: every input the fuzzer ever
//! failed on (fuzz/regressions/frame_decode/) stays fixed, and the seeds pass too.

#[path = "../../fuzz/checks/frame_decode.rs"]
mod frame_decode;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn frame_decode() {
    replay::replay(
        env!("CARGO_MANIFEST_DIR"),
        "frame_decode",
        frame_decode::check,
    );
}
