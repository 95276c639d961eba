//! The core service (im-core-service): the WebSocket gateway, the messaging module (conversations,
//! persistence, per-conversation sequences, fan-out, history, resend) and the presence module
//! (online status, node routing with leases, subscriptions). The all-in-one binary that runs
//! the whole system in one process composes this library with the business and admin ones
//! from a package of its own, so that no service library depends on another.
//!
//! Services never depend on each other: they talk over the bus (`im_proto::bus`).

pub use im_common as common;
