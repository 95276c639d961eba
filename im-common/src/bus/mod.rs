//! The bus services and nodes talk over: publish/subscribe, queue groups and request/reply on
//! the subjects of [`im_proto::bus`], and outboxes for what must not be lost.
//!
//! - [`transport`]: the [`Bus`] trait, in the shape of NATS (subjects, reply inboxes, queue
//!   groups), so the in-process bus and the NATS one are interchangeable.
//! - [`typed`]: `emit`, `call`, `events` and [`serve`] on any bus: each payload goes on the
//!   subject its type names, each answer decodes as the reply its request names.
//! - [`local`]: [`LocalBus`], the embedded mode's bus, with [`memory_outbox`]es.
//! - [`outbox`]: the [`Outbox`] trait; `jetstream` (feature `nats`) holds them on disk.
//! - `nats` (feature `nats`): [`NatsBus`](nats::NatsBus), the distributed mode's bus.
//!
//! The files depend one way: `error` <- `outbox` <- `transport` <- `typed`, `local`,
//! `memory_outbox`, `nats`, `jetstream`; this module only names them and picks a bus.

pub mod error;
#[cfg(feature = "nats")]
pub mod jetstream;
pub mod local;
pub mod memory_outbox;
#[cfg(feature = "nats")]
pub mod nats;
pub mod outbox;
#[cfg(test)]
pub(crate) mod suite;
pub mod transport;
pub mod typed;

use std::sync::Arc;

pub use error::BusError;
pub use local::LocalBus;
pub use outbox::{
    AUDIT_KEPT, AUDIT_STREAM, MEDIA_REFS_KEPT, MEDIA_REFS_STREAM, Outbox, OutboxItem, OutboxReader,
    PUSH_KEPT, PUSH_STREAM,
};
pub use transport::{Bus, BusMessage, LinkState, Subscription};
pub use typed::{Events, Incoming, Requests, Responder, encode, respond, serve};

/// The bus the `[cluster]` settings name: NATS when `nats_url` is set (feature `nats`), else a
/// new in-process bus.
pub async fn connect(
    settings: &crate::settings::ClusterSettings,
) -> Result<Arc<dyn Bus>, BusError> {
    if settings.nats_url.is_empty() {
        return Ok(Arc::new(LocalBus::default()));
    }
    #[cfg(feature = "nats")]
    {
        Ok(Arc::new(nats::NatsBus::connect(&settings.nats_url).await?))
    }
    #[cfg(not(feature = "nats"))]
    Err(BusError::unavailable(
        "cluster.nats_url is set but this build has no NATS support (feature `nats`)",
    ))
}
