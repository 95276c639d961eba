//! The core service's integration tests, in one binary: the gateway's contract on the wire,
//! messaging as clients see it, media in messages, durability of the store, and permission
//! checks against the real business service.

#![allow(clippy::unwrap_used)] // Tests: a panic is how a failure is reported.

mod common;
mod durability;
mod gateway;
mod media;
mod messaging;
mod permissions;
mod reading;
