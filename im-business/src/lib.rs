//! The business service: users and tokens, groups, roles, mute and blacklist, and the
//! permission checks the core asks over `im.auth`; media upload signing, processing and
//! scanning; and the scheduled jobs that run once per cluster (retention, reports, sync,
//! alerts).
//!
//! - [`api`]: the HTTP/JSON and gRPC APIs for app backends.
//! - [`media`]: uploads straight to the object store, their checks and quotas, downloads.
//! - [`responder`]: answers to the core's permission checks on `im.auth`.
//! - [`server`] and [`settings`]: running it, alone or composed with the other services.
//! - [`service`]: the rules of who may do what, announced on the bus and audited.
//! - [`store`]: the business data behind [`store::BusinessStore`], with the embedded SQLite
//!   backend and the suite every backend runs.
//! - [`webhook`]: offline pushes from the durable outbox to the app's webhook.
//!
//! Services never depend on each other: they talk over the bus (`im_proto::bus`).

pub mod api;
pub mod error;
pub mod media;
pub mod responder;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;
pub mod webhook;

pub use error::BusinessError;
pub use service::{
    Actor, AddedMembers, Business, BusinessConfig, GroupAdds, GroupUpdate, NewGroup,
    PresenceAudience, UserImport,
};

pub use im_common as common;

#[cfg(test)]
mod tests {
    use crate::store::SqliteBusinessStore;

    crate::business_store_suite!(async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteBusinessStore::open(&dir.path().join("business.db"), 4)
            .await
            .expect("opens");
        Some((store, dir))
    });
}
