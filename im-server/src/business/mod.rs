//! The core's view of the business service, which is the authority over who may do what and
//! who is in which group: its answers asked over the bus and cached until its events say they
//! changed.
//!
//! - [`permissions`]: may this user do this in this conversation (`im.auth`).
//! - [`directory`]: a group's members, a user's groups (`im.members`, `im.groups`).
//! - [`revocations`]: the token revocations on record, loaded as a node starts
//!   (`im.revocations`).

pub mod directory;
pub mod permissions;
pub mod revocations;

pub use directory::Directory;
pub use permissions::Permissions;
