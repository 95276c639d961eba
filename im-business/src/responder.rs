//! The business service's answers on the bus, for core nodes: permission checks (`im.auth`),
//! pages of a group's members for fan-out (`im.members`), a user's groups for sync
//! (`im.groups`), the token revocations on record (`im.revocations`), and whether a sender
//! may reference media in a message (`im.attach`).

use std::{future::Future, sync::Arc};

use im_common::bus::{Bus, BusError, serve};
use im_proto::{
    bus::{BusReply, BusRequest},
    v1::{
        AttachCheck, BanEvent, BanKind, Error, MemberList, MembersQuery, PermissionCheck,
        RevocationList, RevocationsQuery, UserGroups, UserGroupsQuery,
    },
};
use tokio::task::JoinSet;

use crate::{Business, BusinessError, media::Media};

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
    answer(
        &mut tasks,
        &bus,
        &business,
        |b, check: PermissionCheck| async move {
            let action = check.action();
            Ok(
                b.check_permission(&check.user_id, &check.conversation_id, action)
                    .await,
            )
        },
    )
    .await?;
    answer(
        &mut tasks,
        &bus,
        &business,
        |b, query: MembersQuery| async move {
            let (user_ids, has_more, version) = b
                .member_ids(&query.group_id, &query.after_user_id, query.limit)
                .await?;
            Ok(MemberList {
                user_ids,
                has_more,
                version,
                error: None,
            })
        },
    )
    .await?;
    answer(
        &mut tasks,
        &bus,
        &business,
        |b, query: RevocationsQuery| async move {
            let (revocations, more) = b
                .revocations(&query.after_user_id, &query.after_device_id, query.limit)
                .await?;
            Ok(RevocationList {
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
            })
        },
    )
    .await?;
    answer(
        &mut tasks,
        &bus,
        &business,
        |b, query: UserGroupsQuery| async move {
            Ok(UserGroups {
                groups: b.groups_of(&query.user_id).await?,
                error: None,
            })
        },
    )
    .await?;
    Ok(tasks)
}

/// Answers `im.attach` (may a sender reference these media in a message?) with `media`.
pub async fn serve_media_requests(
    media: Arc<Media>,
    bus: Arc<dyn Bus>,
) -> Result<JoinSet<()>, BusError> {
    let mut tasks = JoinSet::new();
    let serving = serve(
        bus,
        QUEUE_GROUP,
        CONCURRENT_REQUESTS,
        move |check: AttachCheck| {
            let media = media.clone();
            async move {
                media
                    .check_attach(&check.user_id, &check.conversation_id, &check.media_ids)
                    .await
            }
        },
    )
    .await?;
    tasks.spawn(serving);
    Ok(tasks)
}

/// Serves requests of kind `R` with `handler`; a refusal goes back as the reply's error.
async fn answer<R, F, Fut>(
    tasks: &mut JoinSet<()>,
    bus: &Arc<dyn Bus>,
    business: &Arc<Business>,
    handler: F,
) -> Result<(), BusError>
where
    R: BusRequest,
    F: Fn(Arc<Business>, R) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R::Reply, BusinessError>> + Send + 'static,
{
    let business = business.clone();
    let serving = serve(
        bus.clone(),
        QUEUE_GROUP,
        CONCURRENT_REQUESTS,
        move |request: R| {
            let answered = handler(business.clone(), request);
            async move {
                answered.await.unwrap_or_else(|error| {
                    R::Reply::refused(Error::new(error.code(), error.to_string()))
                })
            }
        },
    )
    .await?;
    tasks.spawn(serving);
    Ok(())
}
