//! A group's membership: adding, removing and listing members, a member leaving, roles,
//! handing the ownership over, and muting a member.

use std::collections::BTreeSet;

use im_proto::v1::{
    BanEvent, BanKind, GroupChange, GroupRole, JoinPolicy, MemberChange, NoticeKind,
};

use super::{
    Actor, AddedMembers, Business, Page, Standing, forbidden, invalid, notices::notice, now_ms,
};
use crate::{
    error::BusinessError,
    store::{GroupRecord, MemberRecord},
};

impl Business {
    /// Adds members (owner, admins, the app; any member when the group is open): those the
    /// `group_adds` policy lets the actor add at once join, the others are invited.
    pub async fn add_members(
        &self,
        actor: &Actor,
        group_id: &str,
        user_ids: &[String],
    ) -> Result<AddedMembers, BusinessError> {
        self.audited_with(
            actor,
            "group.member.add",
            format!("group:{group_id}"),
            serde_json::json!({ "users": user_ids }),
            async {
                if user_ids.is_empty() {
                    return Err(invalid("no users to add"));
                }
                let (group, standing) = self.standing(actor, group_id).await?;
                let open = group.join_policy == JoinPolicy::Open as i32;
                if standing < Standing::Admin && !open {
                    return Err(forbidden(
                        "only the owner and admins add members to this group",
                    ));
                }
                let users = self.active_users(user_ids).await?;
                let (users, invited) = self.by_consent(actor, users).await?;
                self.invite(actor, &group, &invited).await?;
                if users.is_empty() {
                    return Ok(AddedMembers {
                        group,
                        added: users,
                        invited,
                    });
                }
                let now = now_ms();
                let visible_from_seq = group.first_seq_of_added();
                let members: Vec<MemberRecord> = users
                    .iter()
                    .map(|user_id| MemberRecord {
                        group_id: group_id.to_owned(),
                        user_id: user_id.clone(),
                        role: GroupRole::Member as i32,
                        joined_at_ms: now,
                        muted_until_ms: 0,
                        visible_from_seq,
                    })
                    .collect();
                let body = notice(NoticeKind::MembersAdded, actor, &users);
                let group = self.store.add_members(group_id, &members, &body).await?;
                self.append_notice(&group, body).await;
                self.member_event(
                    actor,
                    &group,
                    MemberChange::Added,
                    users.clone(),
                    GroupRole::Member,
                )
                .await;
                Ok(AddedMembers {
                    group,
                    added: users,
                    invited,
                })
            },
        )
        .await
    }

    /// Removes members (owner and the app any member but the owner; admins plain members).
    pub async fn remove_members(
        &self,
        actor: &Actor,
        group_id: &str,
        user_ids: &[String],
    ) -> Result<GroupRecord, BusinessError> {
        self.audited_with(
            actor,
            "group.member.remove",
            format!("group:{group_id}"),
            serde_json::json!({ "users": user_ids }),
            async {
                if user_ids.is_empty() {
                    return Err(invalid("no users to remove"));
                }
                if user_ids.iter().collect::<BTreeSet<_>>().len() != user_ids.len() {
                    return Err(invalid("a user is listed twice"));
                }
                let (_, standing) = self.standing(actor, group_id).await?;
                if standing < Standing::Admin {
                    return Err(forbidden("only the owner and admins remove members"));
                }
                for user_id in user_ids {
                    let target = Standing::of(self.member(group_id, user_id).await?.role);
                    if target == Standing::Owner {
                        return Err(BusinessError::Conflict(
                            "the owner cannot be removed; transfer ownership first".into(),
                        ));
                    }
                    if standing == Standing::Admin && target >= Standing::Admin {
                        return Err(forbidden("admins remove plain members only"));
                    }
                }
                let body = notice(NoticeKind::MembersRemoved, actor, user_ids);
                let group = self.store.remove_members(group_id, user_ids, &body).await?;
                self.append_notice(&group, body).await;
                self.member_event(
                    actor,
                    &group,
                    MemberChange::Removed,
                    user_ids.to_vec(),
                    GroupRole::Unspecified,
                )
                .await;
                Ok(group)
            },
        )
        .await
    }

    /// A member leaves (the member itself, or the app for it). The owner must hand over first.
    pub async fn leave_group(
        &self,
        actor: &Actor,
        group_id: &str,
        user_id: &str,
    ) -> Result<(), BusinessError> {
        self.audited_with(
            actor,
            "group.member.leave",
            format!("group:{group_id}"),
            serde_json::json!({ "users": [user_id] }),
            async {
                Self::app_or_self(actor, user_id)?;
                self.standing(&Actor::App, group_id).await?;
                let member = self.member(group_id, user_id).await?;
                if Standing::of(member.role) == Standing::Owner {
                    return Err(BusinessError::Conflict(
                        "the owner cannot leave; transfer ownership first".into(),
                    ));
                }
                let leaving = [user_id.to_owned()];
                let body = notice(NoticeKind::MemberLeft, actor, &leaving);
                let group = self.store.remove_members(group_id, &leaving, &body).await?;
                self.append_notice(&group, body).await;
                self.member_event(
                    actor,
                    &group,
                    MemberChange::Left,
                    vec![user_id.to_owned()],
                    GroupRole::Unspecified,
                )
                .await;
                Ok(())
            },
        )
        .await
    }

    /// A page of members in user id order, after `after` (the app or members).
    pub async fn list_members(
        &self,
        actor: &Actor,
        group_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Page<MemberRecord>, BusinessError> {
        self.standing(actor, group_id).await?;
        let limit = self.page_limit(limit);
        let members = self.store.list_members(group_id, after, limit).await?;
        Ok(Page::of(members, limit, |m| &m.user_id))
    }

    /// Makes a member an admin or a plain member again (owner, the app).
    pub async fn set_member_role(
        &self,
        actor: &Actor,
        group_id: &str,
        user_id: &str,
        role: GroupRole,
    ) -> Result<(), BusinessError> {
        self.audited_with(
            actor,
            "group.member.role",
            format!("group:{group_id}"),
            serde_json::json!({ "users": [user_id], "role": role.as_str_name() }),
            async {
                if !matches!(role, GroupRole::Admin | GroupRole::Member) {
                    return Err(invalid(
                        "role is ADMIN or MEMBER; ownership moves with TransferOwnership",
                    ));
                }
                let (_, standing) = self.standing(actor, group_id).await?;
                if standing < Standing::Owner {
                    return Err(forbidden("only the owner changes roles"));
                }
                // The store refuses to change the owner's role, checked where it is written.
                let group = self
                    .store
                    .set_member_role(group_id, user_id, role as i32)
                    .await?;
                self.member_event(
                    actor,
                    &group,
                    MemberChange::RoleChanged,
                    vec![user_id.to_owned()],
                    role,
                )
                .await;
                Ok(())
            },
        )
        .await
    }

    /// Hands the group to another member; the old owner becomes an admin (owner, the app).
    pub async fn transfer_ownership(
        &self,
        actor: &Actor,
        group_id: &str,
        new_owner: &str,
    ) -> Result<(), BusinessError> {
        self.audited_with(
            actor,
            "group.owner.transfer",
            format!("group:{group_id}"),
            serde_json::json!({ "users": [new_owner] }),
            async {
                let (group, standing) = self.standing(actor, group_id).await?;
                if standing < Standing::Owner {
                    return Err(forbidden("only the owner transfers ownership"));
                }
                if group.owner_user_id == new_owner {
                    return Err(BusinessError::Conflict(format!(
                        "{new_owner} owns the group already"
                    )));
                }
                self.member(group_id, new_owner).await?;
                self.active_user(new_owner).await?;
                let group = self
                    .store
                    .transfer_ownership(group_id, &group.owner_user_id, new_owner)
                    .await?;
                self.group_event(actor, &group, GroupChange::OwnerTransferred)
                    .await;
                self.member_event(
                    actor,
                    &group,
                    MemberChange::RoleChanged,
                    vec![new_owner.to_owned()],
                    GroupRole::Owner,
                )
                .await;
                Ok(())
            },
        )
        .await
    }

    /// Mutes a member until `until_ms` (0 lifts the mute). Owner and the app mute anyone but
    /// the owner; admins plain members.
    pub async fn mute_member(
        &self,
        actor: &Actor,
        group_id: &str,
        user_id: &str,
        until_ms: i64,
    ) -> Result<(), BusinessError> {
        self.audited_with(
            actor,
            "group.member.mute",
            format!("group:{group_id}"),
            serde_json::json!({ "users": [user_id], "until_ms": until_ms }),
            async {
                if until_ms < 0 {
                    return Err(invalid("until_ms is negative"));
                }
                let (_, standing) = self.standing(actor, group_id).await?;
                if standing < Standing::Admin {
                    return Err(forbidden("only the owner and admins mute members"));
                }
                let member = self.member(group_id, user_id).await?;
                let target = Standing::of(member.role);
                if target == Standing::Owner
                    || (standing == Standing::Admin && target >= Standing::Admin)
                {
                    return Err(forbidden("this member cannot be muted by this actor"));
                }
                self.store
                    .set_member_mute(group_id, user_id, until_ms)
                    .await?;
                let kind = if until_ms == 0 {
                    BanKind::MemberUnmuted
                } else {
                    BanKind::MemberMuted
                };
                let event = BanEvent {
                    kind: kind.into(),
                    user_id: user_id.into(),
                    group_id: group_id.into(),
                    until_ms,
                    ..Default::default()
                };
                self.ban_event(actor, event).await;
                Ok(())
            },
        )
        .await
    }
}
