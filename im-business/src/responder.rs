//! The business service's answers on the bus, for core nodes: permission checks (`im.auth`),
//! pages of a group's members for fan-out (`im.members`), a user's groups for sync
//! (`im.groups`) and the token revocations on record (`im.revocations`).

use std::{future::Future, sync::Arc};

use im_common::bus::{Bus, BusError, encode, respond};
use im_proto::{
    bus,
    v1::{
        BanEvent, BanKind, Error, ErrorCode, MemberList, MembersQuery, PermissionCheck,
        PermissionDecision, RevocationList, RevocationsQuery, UserGroups, UserGroupsQuery,
    },
};
use prost::Message;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{Business, BusinessError};

/// The queue group business nodes answer in: each request goes to one of them.
pub const QUEUE_GROUP: &str = "im-business";

/// Requests answered at once per subject; more wait their turn.
const CONCURRENT_REQUESTS: usize = 256;

/// Subscribes to every subject the business service answers, then answers in tasks of their
/// own until the bus closes. Requests sent after this returns find a responder.
pub async fn serve_bus_requests(
    business: Arc<Business>,
    bus: Arc<dyn Bus>,
) -> Result<JoinSet<()>, BusError> {
    let mut tasks = JoinSet::new();
    let b = business.clone();
    answer(
        &mut tasks,
        &bus,
        bus::AUTH,
        move |check: PermissionCheck| {
            let business = b.clone();
            async move {
                let action = check.action();
                business
                    .check_permission(&check.user_id, &check.conversation_id, action)
                    .await
            }
        },
    )
    .await?;
    let b = business.clone();
    answer(
        &mut tasks,
        &bus,
        bus::MEMBERS,
        move |query: MembersQuery| {
            let business = b.clone();
            async move {
                match business
                    .member_ids(&query.group_id, &query.after_user_id, query.limit)
                    .await
                {
                    Ok((user_ids, has_more, version)) => MemberList {
                        user_ids,
                        has_more,
                        version,
                        error: None,
                    },
                    Err(error) => MemberList {
                        error: Some(error_of(&error)),
                        ..Default::default()
                    },
                }
            }
        },
    )
    .await?;
    let b = business.clone();
    answer(
        &mut tasks,
        &bus,
        bus::REVOCATIONS,
        move |query: RevocationsQuery| {
            let business = b.clone();
            async move {
                let page = business
                    .revocations(&query.after_user_id, &query.after_device_id, query.limit)
                    .await;
                match page {
                    Ok((revocations, more)) => RevocationList {
                        revocations: revocations
                            .into_iter()
                            .map(|r| BanEvent {
                                kind: BanKind::TokensRevoked as i32,
                                user_id: r.user_id,
                                device_id: r.device_id,
                                until_ms: r.revoked_before_ms,
                                ..Default::default()
                            })
                            .collect(),
                        error: None,
                        more,
                    },
                    Err(error) => RevocationList {
                        revocations: Vec::new(),
                        error: Some(error_of(&error)),
                        more: false,
                    },
                }
            }
        },
    )
    .await?;
    let b = business;
    answer(
        &mut tasks,
        &bus,
        bus::GROUPS,
        move |query: UserGroupsQuery| {
            let business = b.clone();
            async move {
                match business.groups_of(&query.user_id).await {
                    Ok(groups) => UserGroups {
                        groups,
                        error: None,
                    },
                    Err(error) => UserGroups {
                        groups: Vec::new(),
                        error: Some(error_of(&error)),
                    },
                }
            }
        },
    )
    .await?;
    Ok(tasks)
}

fn error_of(error: &BusinessError) -> Error {
    Error::new(error.code(), error.to_string())
}

/// Answers requests on `subject` with `handler`, at most [`CONCURRENT_REQUESTS`] at once.
/// A request that does not decode is answered with the reply type's `Default` after a warning;
/// the asker then sees an empty answer rather than waiting for its timeout.
async fn answer<Q, A, F, Fut>(
    tasks: &mut JoinSet<()>,
    bus: &Arc<dyn Bus>,
    subject: &'static str,
    handler: F,
) -> Result<(), BusError>
where
    Q: Message + Default + 'static,
    A: Message + Default + Malformed + 'static,
    F: Fn(Q) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = A> + Send + 'static,
{
    let mut requests = bus.queue_subscribe(subject, QUEUE_GROUP).await?;
    let bus = bus.clone();
    let slots = Arc::new(Semaphore::new(CONCURRENT_REQUESTS));
    let handler = Arc::new(handler);
    tasks.spawn(async move {
        while let Some(message) = requests.next().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (bus, handler) = (bus.clone(), handler.clone());
            tokio::spawn(async move {
                let reply = match Q::decode(message.payload.clone()) {
                    Ok(query) => handler(query).await,
                    Err(error) => {
                        tracing::warn!(subject, %error, "malformed request");
                        A::malformed(format!("malformed request on {subject}: {error}"))
                    }
                };
                if let Err(error) = respond(bus.as_ref(), &message, encode(&reply)).await {
                    tracing::warn!(subject, %error, "answer not sent");
                }
                drop(slot);
            });
        }
    });
    Ok(())
}

/// The answer to a request that did not decode.
trait Malformed {
    fn malformed(reason: String) -> Self;
}

impl Malformed for PermissionDecision {
    fn malformed(reason: String) -> Self {
        Self {
            allowed: false,
            code: ErrorCode::InvalidArgument as i32,
            reason,
            ..Default::default()
        }
    }
}

impl Malformed for MemberList {
    fn malformed(reason: String) -> Self {
        Self {
            error: Some(Error::new(ErrorCode::InvalidArgument, reason)),
            ..Default::default()
        }
    }
}

impl Malformed for RevocationList {
    fn malformed(reason: String) -> Self {
        Self {
            error: Some(Error::new(ErrorCode::InvalidArgument, reason)),
            ..Default::default()
        }
    }
}

impl Malformed for UserGroups {
    fn malformed(reason: String) -> Self {
        Self {
            error: Some(Error::new(ErrorCode::InvalidArgument, reason)),
            ..Default::default()
        }
    }
}
