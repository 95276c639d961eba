//! A group itself: creating one (with its first members), reading it, changing its profile
//! or its mute-all switch, and dismissing it. Its membership is in `members`.

use im_proto::{
    GroupId,
    v1::{
        ConversationType, GroupChange, GroupRole, HistoryVisibility, JoinPolicy, MemberChange,
        NoticeKind,
    },
};

use super::{Actor, Business, Standing, forbidden, invalid, notices::notice, now_ms};
use crate::{
    error::BusinessError,
    store::{GroupChanges, GroupRecord, MemberRecord},
};

/// A new group, as asked for.
#[derive(Debug, Clone, Default)]
pub struct NewGroup {
    /// Empty: the server assigns one.
    pub group_id: String,
    /// Shown name; required.
    pub name: String,
    /// The owner; empty when a user creates the group for itself.
    pub owner_user_id: String,
    /// The first members besides the owner.
    pub member_user_ids: Vec<String>,
    /// GROUP (default) or CHANNEL.
    pub kind: ConversationType,
    /// Default: invite only.
    pub join_policy: JoinPolicy,
    /// Avatar URL.
    pub avatar_url: String,
    /// App-defined JSON.
    pub extra_json: String,
    /// What members added later see; default: the history from their join.
    pub history_visibility: HistoryVisibility,
}

/// Changes to a group's profile; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct GroupUpdate {
    /// New name.
    pub name: Option<String>,
    /// New avatar URL.
    pub avatar_url: Option<String>,
    /// New join policy.
    pub join_policy: Option<JoinPolicy>,
    /// Mute everyone but the owner and admins.
    pub mute_all: Option<bool>,
    /// New app-defined JSON.
    pub extra_json: Option<String>,
    /// What members added from now on see.
    pub history_visibility: Option<HistoryVisibility>,
}

impl Business {
    /// Creates a group. A user creates it for itself (it becomes the owner); the app names
    /// the owner. First members a user may not add without asking (the `group_adds` policy)
    /// are invited instead.
    pub async fn create_group(
        &self,
        actor: &Actor,
        new: NewGroup,
    ) -> Result<GroupRecord, BusinessError> {
        let group_id = if new.group_id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            new.group_id.clone()
        };
        self.audited(actor, "group.create", format!("group:{group_id}"), async {
            let owner = match actor {
                Actor::App => new.owner_user_id.clone(),
                Actor::User(user) if new.owner_user_id.is_empty() || new.owner_user_id == *user => {
                    user.clone()
                }
                Actor::User(_) => return Err(forbidden("a user creates groups it owns")),
            };
            group_id
                .parse::<GroupId>()
                .map_err(|e| invalid(e.to_string()))?;
            self.check_name("name", &new.name, true)?;
            self.check_url(&new.avatar_url)?;
            self.check_extra(&new.extra_json)?;
            let kind = match new.kind {
                ConversationType::Unspecified | ConversationType::Group => ConversationType::Group,
                ConversationType::Channel => ConversationType::Channel,
                ConversationType::Direct => return Err(invalid("a group is GROUP or CHANNEL")),
            };
            let join_policy = match new.join_policy {
                JoinPolicy::Unspecified => JoinPolicy::InviteOnly,
                other => other,
            };
            let history_visibility = match new.history_visibility {
                HistoryVisibility::Unspecified => HistoryVisibility::FromJoin,
                other => other,
            };
            self.active_user(&owner).await?;
            if new.member_user_ids.contains(&owner) {
                return Err(invalid("the owner is listed among the members"));
            }
            let others = self.active_users(&new.member_user_ids).await?;
            // The creator acts as the owner: those it may not add without asking are invited.
            let creator = match actor {
                Actor::App => Actor::App,
                Actor::User(_) => Actor::User(owner.clone()),
            };
            let (others, invited) = self.by_consent(&creator, others).await?;
            let now = now_ms();
            let member = |user_id: &str, role: GroupRole| MemberRecord {
                group_id: group_id.clone(),
                user_id: user_id.to_owned(),
                role: role as i32,
                joined_at_ms: now,
                muted_until_ms: 0,
                // The first members see everything: the notice of the creation comes first.
                visible_from_seq: 1,
            };
            let mut members = vec![member(&owner, GroupRole::Owner)];
            members.extend(others.iter().map(|u| member(u, GroupRole::Member)));
            let record = GroupRecord {
                group_id: group_id.clone(),
                name: new.name.clone(),
                avatar_url: new.avatar_url.clone(),
                owner_user_id: owner.clone(),
                kind: kind as i32,
                join_policy: join_policy as i32,
                max_members: self.config.max_group_members,
                mute_all: false,
                extra_json: new.extra_json.clone(),
                member_count: 0,
                dismissed: false,
                version: 0,
                created_at_ms: now,
                history_visibility: history_visibility as i32,
            };
            let everyone: Vec<String> = members.iter().map(|m| m.user_id.clone()).collect();
            let body = notice(NoticeKind::GroupCreated, actor, &everyone);
            let group = self.store.create_group(&record, &members, &body).await?;
            self.invite(&creator, &group, &invited).await?;
            self.append_notice(&group, body).await;
            self.group_event(actor, &group, GroupChange::Created).await;
            self.member_event(
                actor,
                &group,
                MemberChange::Added,
                everyone,
                GroupRole::Member,
            )
            .await;
            Ok(group)
        })
        .await
    }

    /// A group, for the app or its members.
    pub async fn get_group(
        &self,
        actor: &Actor,
        group_id: &str,
    ) -> Result<GroupRecord, BusinessError> {
        Ok(self.standing(actor, group_id).await?.0)
    }

    /// Changes a group's profile or its mute-all switch (owner, admins, the app).
    pub async fn update_group(
        &self,
        actor: &Actor,
        group_id: &str,
        update: GroupUpdate,
    ) -> Result<GroupRecord, BusinessError> {
        self.audited(actor, "group.update", format!("group:{group_id}"), async {
            let (before, standing) = self.standing(actor, group_id).await?;
            if standing < Standing::Admin {
                return Err(forbidden("only the owner and admins change the group"));
            }
            if let Some(name) = &update.name {
                self.check_name("name", name, true)?;
            }
            if let Some(avatar_url) = &update.avatar_url {
                self.check_url(avatar_url)?;
            }
            if let Some(extra_json) = &update.extra_json {
                self.check_extra(extra_json)?;
            }
            if update.join_policy == Some(JoinPolicy::Unspecified) {
                return Err(invalid("join_policy is unspecified"));
            }
            if update.history_visibility == Some(HistoryVisibility::Unspecified) {
                return Err(invalid("history_visibility is unspecified"));
            }
            let changes = GroupChanges {
                name: update.name,
                avatar_url: update.avatar_url,
                join_policy: update.join_policy.map(|p| p as i32),
                mute_all: update.mute_all,
                extra_json: update.extra_json,
                history_visibility: update.history_visibility.map(|v| v as i32),
            };
            let group = self.store.update_group(group_id, &changes).await?;
            let change = if group.mute_all != before.mute_all {
                GroupChange::MuteAll
            } else {
                GroupChange::Updated
            };
            self.group_event(actor, &group, change).await;
            Ok(group)
        })
        .await
    }

    /// Dismisses a group (owner, the app).
    pub async fn dismiss_group(&self, actor: &Actor, group_id: &str) -> Result<(), BusinessError> {
        self.audited(actor, "group.dismiss", format!("group:{group_id}"), async {
            let (_, standing) = self.standing(actor, group_id).await?;
            if standing < Standing::Owner {
                return Err(forbidden("only the owner dismisses the group"));
            }
            let group = self.store.dismiss_group(group_id).await?;
            self.group_event(actor, &group, GroupChange::Dismissed)
                .await;
            Ok(())
        })
        .await
    }
}
