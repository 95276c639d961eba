//! The core service (im-core-service): the WebSocket gateway, the messaging module
//! (conversations, persistence, per-conversation sequences, fan-out, history, resend) and the
//! presence module (online status, subscriptions). The all-in-one binary that runs the whole
//! system in one process composes this library with the business one from a package of its
//! own (`im-all`), so that no service library depends on another: they talk over the bus
//! (`im_proto::bus`).
//!
//! - [`gateway`]: WebSocket upgrade and version negotiation, the Hello, one task per
//!   connection (heartbeat, limits, rate limits, bounded outbound queue, resends).
//! - [`messaging`]: sends checked, group-committed and acknowledged; fan-out; sync, history,
//!   pull; read state, receipts, typing.
//! - [`presence`]: who is online, behind [`presence::PresenceStore`]; in the distributed mode
//!   also which node holds whom.
//! - [`router`]: frames to this node's sessions and, over the bus, to other nodes'.
//! - [`rate`]: each user's message rate, per node or shared by the cluster.
//! - [`sessions`]: this node's sessions and presence watchers.
//! - [`business`]: the business service's answers (permissions, group members, revocations),
//!   asked over the bus and cached until its events invalidate them.
//! - [`events`] and [`intake`]: the events the node follows, applied by one task in a fixed
//!   order (token verifier, permission cache, member directory, sessions).
//! - [`store`]: conversations' entries and read cursors behind [`store::MessageStore`], with
//!   the embedded SQLite backend and the suite every backend runs.
//! - [`push`]: the hook for entries to offline users.
//! - [`server`]: all of it started together, with a graceful shutdown.

pub mod business;
pub mod claim;
pub mod events;
pub mod gateway;
pub mod intake;
pub mod media_refs;
pub mod messaging;
pub mod outage;
pub mod presence;
pub mod push;
pub mod rate;
pub mod router;
pub mod server;
pub mod sessions;
pub mod settings;
pub mod store;
mod wire;

pub use im_common as common;

#[cfg(test)]
mod tests {
    use crate::store::SqliteMessageStore;

    crate::message_store_suite!(async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteMessageStore::open(&dir.path().join("messages.db"), 4)
            .await
            .expect("opens");
        Some((store, dir))
    });
}

/// The check of the fuzz target `gateway_frame` (fuzz/), run here on stable by `fuzz_regressions`.
#[cfg(test)]
#[path = "../../fuzz/checks/gateway_frame.rs"]
mod fuzz_gateway_frame;

#[cfg(test)]
#[path = "../../fuzz/checks/replay.rs"]
mod fuzz_replay;

#[cfg(test)]
mod fuzz_regressions {
    /// Every input the fuzzer ever failed on stays fixed; the seeds pass too.
    #[test]
    fn gateway_frame() {
        crate::fuzz_replay::replay(
            env!("CARGO_MANIFEST_DIR"),
            "gateway_frame",
            crate::fuzz_gateway_frame::check,
        );
    }
}
