//! Arbitrary bytes through the frame decoder, as the gateway decodes a binary WebSocket message.
#![no_main]

#[path = "../checks/frame_decode.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
