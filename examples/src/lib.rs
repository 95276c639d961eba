//! Examples of the SDK and the servers in use.
//!
//! This crate will hold small runnable programs (`cargo run -p im-examples --example NAME`):
//! a hello-world under 30 lines, an echo bot and a terminal chat client, each running against
//! the embedded server exactly as the README says.

pub use im_sdk_rust as sdk;
