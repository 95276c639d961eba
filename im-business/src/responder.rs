//! The business service's answers on the bus: permission checks for core nodes (`im.auth`).

use std::sync::Arc;

use im_common::bus::{Bus, BusError, encode, respond};
use im_proto::{
    bus,
    v1::{ErrorCode, PermissionCheck, PermissionDecision},
};
use prost::Message;
use tokio::{sync::Semaphore, task::JoinHandle};

use crate::Business;

/// The queue group business nodes answer in: each check goes to one of them.
pub const QUEUE_GROUP: &str = "im-business";

/// Checks answered at once; more wait their turn.
const CONCURRENT_CHECKS: usize = 256;

/// Subscribes to `im.auth`, then answers permission checks in a task of its own until the bus
/// closes. Checks sent after this returns find a responder.
pub async fn serve_permission_checks(
    business: Arc<Business>,
    bus: Arc<dyn Bus>,
) -> Result<JoinHandle<()>, BusError> {
    let mut requests = bus.queue_subscribe(bus::AUTH, QUEUE_GROUP).await?;
    let slots = Arc::new(Semaphore::new(CONCURRENT_CHECKS));
    Ok(tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (business, bus) = (business.clone(), bus.clone());
            tokio::spawn(async move {
                let decision = match PermissionCheck::decode(message.payload.clone()) {
                    Ok(check) => {
                        let action = check.action();
                        business
                            .check_permission(&check.user_id, &check.conversation_id, action)
                            .await
                    }
                    Err(error) => PermissionDecision {
                        allowed: false,
                        code: ErrorCode::InvalidArgument as i32,
                        reason: format!("malformed permission check: {error}"),
                        ..Default::default()
                    },
                };
                if let Err(error) = respond(bus.as_ref(), &message, encode(&decision)).await {
                    tracing::warn!(%error, "permission decision not sent");
                }
                drop(slot);
            });
        }
    }))
}
