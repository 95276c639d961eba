//! Components every service shares (the "common module" of the design).
//!
//! This crate will hold, as the services that need them arrive:
//! - configuration: one file shape plus environment overrides, and dynamic values that change
//!   at run time (pushed over `im.config`);
//! - the bus trait with its in-process (embedded) and NATS (distributed) implementations;
//! - caches: a local cache with a policy, and the Redis client;
//! - metrics, tracing and log setup;
//! - the unified service error, mapped onto the protocol's stable error codes;
//! - storage traits and the one test suite every backend runs.
//!
//! The arrows point one way: `im-proto` <- `im-common` <- services <- binaries.

pub use im_proto as proto;
