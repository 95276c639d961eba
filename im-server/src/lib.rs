//! The core service (im-core-service): the WebSocket gateway, the messaging module
//! (conversations, persistence, per-conversation sequences, fan-out, history, resend) and the
//! presence module (online status, node routing with leases, subscriptions). The all-in-one
//! binary that runs the whole system in one process composes this library with the business and
//! admin ones from a package of its own, so that no service library depends on another.
//!
//! - [`store`]: conversations' entries and read cursors behind [`store::MessageStore`], with
//!   the embedded SQLite backend and the suite every backend runs.
//!
//! Still to come: the gateway, messaging and presence modules (see docs/ARCHITECTURE.md).
//! Services never depend on each other: they talk over the bus (`im_proto::bus`).

pub mod store;

pub use im_common as common;

#[cfg(test)]
mod tests {
    use crate::store::SqliteMessageStore;

    crate::message_store_suite!(async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteMessageStore::open(&dir.path().join("messages.db"), 4)
            .await
            .expect("opens");
        (store, dir)
    });
}
