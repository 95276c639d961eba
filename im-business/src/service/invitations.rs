//! Consent to group adds: whom a user may put in a group without asking them (the
//! `group_adds` policy), and the invitations of the others, which they accept (joining the
//! group) or decline.

use im_proto::v1::{GroupRole, MemberChange, NoticeKind};

use super::{Actor, Business, GroupAdds, Standing, forbidden, notices::notice, now_ms};
use crate::{
    error::BusinessError,
    store::{GroupRecord, InvitationRecord, MemberRecord},
};

/// What an add did: the group as it is now, who joined and who was invited.
#[derive(Debug, Clone)]
pub struct AddedMembers {
    /// The group after the add.
    pub group: GroupRecord,
    /// The users who are members now.
    pub added: Vec<String>,
    /// The users invited: they join once they accept.
    pub invited: Vec<String>,
}

impl Business {
    /// Splits `users` into those `actor` puts in a group at once and those it invites. A user
    /// who blocks the actor is refused: no add and no invitation reaches them.
    pub(super) async fn by_consent(
        &self,
        actor: &Actor,
        users: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), BusinessError> {
        let Actor::User(actor_id) = actor else {
            return Ok((users, Vec::new()));
        };
        let (mut added, mut invited) = (Vec::new(), Vec::new());
        for user in users {
            if user == *actor_id {
                added.push(user);
                continue;
            }
            if self.store.is_blocked(&user, actor_id).await? {
                return Err(BusinessError::Blocked {
                    user_id: actor_id.clone(),
                    by: user,
                });
            }
            let at_once = match self.config.group_adds {
                GroupAdds::Direct => true,
                GroupAdds::Contacts => self.store.is_contact(&user, actor_id).await?,
                GroupAdds::Invitation => false,
            };
            if at_once {
                added.push(user);
            } else {
                invited.push(user);
            }
        }
        Ok((added, invited))
    }

    /// Records `actor`'s invitations of `users` to `group`; a member already in it is
    /// ALREADY_EXISTS, as for a direct add.
    pub(super) async fn invite(
        &self,
        actor: &Actor,
        group: &GroupRecord,
        users: &[String],
    ) -> Result<(), BusinessError> {
        let Actor::User(inviter) = actor else {
            return Ok(());
        };
        for user in users {
            if self
                .store
                .get_member(&group.group_id, user)
                .await?
                .is_some()
            {
                return Err(BusinessError::AlreadyExists(format!(
                    "member {user} of group {}",
                    group.group_id
                )));
            }
        }
        let now = now_ms();
        let invitations: Vec<InvitationRecord> = users
            .iter()
            .map(|user| InvitationRecord {
                group_id: group.group_id.clone(),
                user_id: user.clone(),
                inviter_user_id: inviter.clone(),
                created_at_ms: now,
            })
            .collect();
        self.store.invite(&invitations).await?;
        Ok(())
    }

    /// The invitations pending for `user_id`, oldest first (the user itself, or the app).
    pub async fn list_invitations(
        &self,
        actor: &Actor,
        user_id: &str,
    ) -> Result<Vec<InvitationRecord>, BusinessError> {
        Self::app_or_self(actor, user_id)?;
        self.active_user(user_id).await?;
        Ok(self
            .store
            .invitations_of(user_id, self.config.max_page)
            .await?)
    }

    /// `user_id` accepts its invitation to `group_id` and joins it (the user itself, or the
    /// app); the group as it is then.
    pub async fn accept_invitation(
        &self,
        actor: &Actor,
        group_id: &str,
        user_id: &str,
    ) -> Result<GroupRecord, BusinessError> {
        self.audited(
            actor,
            "group.invitation.accept",
            format!("group:{group_id}"),
            async {
                Self::app_or_self(actor, user_id)?;
                let invitation = self.pending(group_id, user_id).await?;
                let (group, _) = self.standing(&Actor::App, group_id).await?;
                if self.store.get_member(group_id, user_id).await?.is_some() {
                    // Joined meanwhile (added by an admin, say): the invitation is spent.
                    self.store.delete_invitation(group_id, user_id).await?;
                    return Ok(group);
                }
                let member = MemberRecord {
                    group_id: group_id.to_owned(),
                    user_id: user_id.to_owned(),
                    role: GroupRole::Member as i32,
                    joined_at_ms: now_ms(),
                    muted_until_ms: 0,
                    visible_from_seq: group.first_seq_of_added(),
                };
                // Added by the inviter, with the user's consent.
                let inviter = Actor::User(invitation.inviter_user_id.clone());
                let joined = vec![user_id.to_owned()];
                let body = notice(NoticeKind::MembersAdded, &inviter, &joined);
                let group = self.store.add_members(group_id, &[member], &body).await?;
                // Kept if this fails: accepting again finds the user a member and spends it.
                self.store.delete_invitation(group_id, user_id).await?;
                self.append_notice(&group, body).await;
                self.member_event(
                    actor,
                    &group,
                    MemberChange::Added,
                    joined,
                    GroupRole::Member,
                )
                .await;
                Ok(group)
            },
        )
        .await
    }

    /// Declines `user_id`'s invitation to `group_id` (the user), or withdraws it (the inviter,
    /// the group's owner and admins, the app).
    pub async fn decline_invitation(
        &self,
        actor: &Actor,
        group_id: &str,
        user_id: &str,
    ) -> Result<(), BusinessError> {
        self.audited(
            actor,
            "group.invitation.decline",
            format!("group:{group_id}"),
            async {
                let invitation = self.pending(group_id, user_id).await?;
                let allowed = match actor {
                    Actor::App => true,
                    Actor::User(who) if *who == user_id || *who == invitation.inviter_user_id => {
                        true
                    }
                    Actor::User(_) => matches!(
                        self.standing(actor, group_id).await,
                        Ok((_, standing)) if standing >= Standing::Admin
                    ),
                };
                if !allowed {
                    return Err(forbidden(
                        "the invited user, the inviter and the group's admins answer an invitation",
                    ));
                }
                self.store.delete_invitation(group_id, user_id).await?;
                Ok(())
            },
        )
        .await
    }

    /// The invitation of `user_id` to `group_id`, if there is one.
    async fn pending(
        &self,
        group_id: &str,
        user_id: &str,
    ) -> Result<InvitationRecord, BusinessError> {
        self.store
            .get_invitation(group_id, user_id)
            .await?
            .ok_or_else(|| BusinessError::InvitationNotFound {
                group_id: group_id.to_owned(),
                user_id: user_id.to_owned(),
            })
    }
}
