//! The permission decisions core nodes ask for on `im.auth` and cache: whether a user may
//! read, send or manage in a conversation, and for how long the answer holds.

use im_proto::{
    ConversationId, ConversationKind, UserId,
    v1::{ConversationAction, ConversationType, ErrorCode, PermissionDecision},
};

use super::{Business, PresenceAudience, Standing, forbidden, invalid, now_ms, parse_user};
use crate::{
    error::BusinessError,
    store::{JOINING, MemberRecord},
};

/// What of a group's history a member may see, as decisions and sync carry it: its first seq
/// (0 or 1: all of it), or that it is not known yet (the notice of the add has no seq yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Visible {
    pub(super) from_seq: u64,
    pub(super) joining: bool,
}

impl Visible {
    pub(super) fn of(member: &MemberRecord) -> Self {
        if member.visible_from_seq == JOINING {
            Self {
                from_seq: 0,
                joining: true,
            }
        } else {
            Self {
                from_seq: member.visible_from_seq.max(1) as u64,
                joining: false,
            }
        }
    }
}

impl Business {
    /// May `user_id` do `action` in `conversation_id`? The answer core nodes cache.
    pub async fn check_permission(
        &self,
        user_id: &str,
        conversation_id: &str,
        action: ConversationAction,
    ) -> PermissionDecision {
        let ttl_ms = self.config.decision_ttl_ms;
        let deny = |code: ErrorCode, reason: String| PermissionDecision {
            allowed: false,
            code: code as i32,
            reason,
            ttl_ms,
            ..Default::default()
        };
        match self.decide(user_id, conversation_id, action).await {
            Ok(visible) => PermissionDecision {
                allowed: true,
                // Not cached while the first seq is unknown: it is known in moments.
                ttl_ms: if visible.joining { 0 } else { ttl_ms },
                visible_from_seq: visible.from_seq,
                joining: visible.joining,
                ..Default::default()
            },
            Err(e @ BusinessError::Muted { until_ms, .. }) if until_ms > 0 => PermissionDecision {
                // A mute ends by itself: the decision must not outlive it.
                ttl_ms: ttl_ms.min((until_ms - now_ms()).max(0) as u64),
                until_ms,
                ..deny(e.code(), e.to_string())
            },
            // A fault is not a decision: nothing to cache.
            Err(BusinessError::Internal(reason)) => PermissionDecision {
                ttl_ms: 0,
                ..deny(ErrorCode::Internal, reason)
            },
            Err(e) => deny(e.code(), e.to_string()),
        }
    }

    /// May `watcher` see `watched`'s presence? Itself always; others under the presence
    /// policy, never once `watched` has blocked them.
    async fn may_see_presence(
        &self,
        watcher: &UserId,
        watched: &UserId,
    ) -> Result<(), BusinessError> {
        if watcher == watched {
            return Ok(());
        }
        let (watcher, watched) = (watcher.as_str(), watched.as_str());
        let refused = || forbidden(format!("{watched}'s presence is not shown to {watcher}"));
        if self.store.is_blocked(watched, watcher).await? {
            return Err(refused());
        }
        match self.config.presence_visible_to {
            PresenceAudience::Everyone => Ok(()),
            PresenceAudience::Related => {
                if self.store.is_contact(watched, watcher).await? {
                    return Ok(());
                }
                let theirs: std::collections::HashSet<String> = self
                    .store
                    .groups_of(watched)
                    .await?
                    .into_iter()
                    .map(|(group, _)| group.group_id)
                    .collect();
                let shared = self
                    .store
                    .groups_of(watcher)
                    .await?
                    .iter()
                    .any(|(group, _)| theirs.contains(&group.group_id));
                if shared { Ok(()) } else { Err(refused()) }
            }
        }
    }

    /// The rules behind [`Self::check_permission`]: `Ok` allows (with what a group member may
    /// read of the history); a refusal says why, and its code is the decision's.
    async fn decide(
        &self,
        user_id: &str,
        conversation_id: &str,
        action: ConversationAction,
    ) -> Result<Visible, BusinessError> {
        let conversation: ConversationId = conversation_id
            .parse()
            .map_err(|e: im_proto::IdError| invalid(e.to_string()))?;
        if action == ConversationAction::Unspecified {
            return Err(invalid("action is unspecified"));
        }
        self.active_user(user_id).await?;
        match conversation.kind() {
            ConversationKind::Direct(..) => {
                let me: UserId = parse_user(user_id)?;
                let peer = conversation.peer_of(&me).ok_or_else(|| {
                    forbidden(format!("{user_id} is not part of {conversation_id}"))
                })?;
                if action == ConversationAction::Manage {
                    return Err(forbidden("1:1 conversations have no managers"));
                }
                if action == ConversationAction::SeePresence {
                    return self
                        .may_see_presence(&me, peer)
                        .await
                        .map(|()| Visible::default());
                }
                if action == ConversationAction::Read || peer == &me {
                    return Ok(Visible::default());
                }
                let peer = peer.as_str();
                match self.store.get_user(peer).await? {
                    Some(user) if user.active => {}
                    _ => return Err(forbidden(format!("{peer} cannot be reached"))),
                }
                if self.store.is_blocked(peer, user_id).await? {
                    return Err(BusinessError::Blocked {
                        user_id: user_id.into(),
                        by: peer.into(),
                    });
                }
                if self.config.direct_requires_contact
                    && !self.store.is_contact(peer, user_id).await?
                {
                    return Err(BusinessError::NotAContact {
                        user_id: user_id.into(),
                        of: peer.into(),
                    });
                }
                Ok(Visible::default())
            }
            ConversationKind::Group(group_id) => {
                let group = match self.store.get_group(group_id.as_str()).await? {
                    Some(group) if !group.dismissed => group,
                    _ => return Err(BusinessError::GroupNotFound(group_id.to_string())),
                };
                let member = self.member(group_id.as_str(), user_id).await?;
                let standing = Standing::of(member.role);
                let muted = |until_ms| BusinessError::Muted {
                    group_id: group.group_id.clone(),
                    until_ms,
                };
                let allowed = Ok(Visible::default());
                match action {
                    ConversationAction::SeePresence => Err(invalid(
                        "presence is asked on the 1:1 conversation of the two users",
                    )),
                    ConversationAction::Read => Ok(Visible::of(&member)),
                    ConversationAction::Manage if standing >= Standing::Admin => allowed,
                    ConversationAction::Manage => {
                        Err(forbidden("only the owner and admins manage the group"))
                    }
                    // A member's own mute binds admins too; mute-all and channels spare them.
                    _ if member.muted_until_ms > now_ms() => Err(muted(member.muted_until_ms)),
                    _ if standing >= Standing::Admin => allowed,
                    _ if group.kind == ConversationType::Channel as i32 => {
                        Err(forbidden("only the owner and admins post in a channel"))
                    }
                    _ if group.mute_all => Err(muted(0)),
                    _ => allowed,
                }
            }
        }
    }
}
