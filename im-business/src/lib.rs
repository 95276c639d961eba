//! The business service: users and tokens, groups, roles, mute and blacklist, and the permission
//! checks the core asks over `im.auth`; media upload signing, processing and scanning; and the
//! scheduled jobs that run once per cluster (retention, reports, sync, alerts).
//!
//! Services never depend on each other: they talk over the bus (`im_proto::bus`).

pub use im_common as common;
