//! Arbitrary bytes through the gateway's handling of a frame that needs no network: the raw body
//! of a send, checked and stored, and the frames that carry it back out.
#![no_main]

// The server's own source, so the target tests exactly what the gateway runs; the frames it
// builds for other answers are not used here.
#[allow(dead_code)]
#[path = "../../im-server/src/wire.rs"]
mod wire;

#[path = "../checks/gateway_frame.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
