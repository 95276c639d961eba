//! The admin service: dynamic configuration with hot reload pushed to every node, rate-limit
//! policies, gray release by version label, cross-store data verification, and the audit log,
//! with an HTTP API and a web console.
//!
//! Services never depend on each other: they talk over the bus (`im_proto::bus`).

pub use im_common as common;
