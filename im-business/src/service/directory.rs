//! What core nodes ask without an actor, over the bus: a group's member ids for fan-out, the
//! token revocations on record, and the groups of a user for sync.

use im_proto::v1::UserGroup;

use super::{Business, MAX_REVOCATIONS_PAGE, permission::Visible};
use crate::{error::BusinessError, store::Revocation};

impl Business {
    /// A page of a group's member ids for fan-out (no actor: core nodes ask on the bus), with
    /// whether more follow and the group's version. The page is at most `max_page` members.
    pub async fn member_ids(
        &self,
        group_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<String>, bool, u64), BusinessError> {
        let group = match self.store.get_group(group_id).await? {
            Some(group) if !group.dismissed => group,
            _ => return Err(BusinessError::GroupNotFound(group_id.into())),
        };
        let limit = if limit == 0 {
            self.config.max_page
        } else {
            limit.min(self.config.max_page)
        };
        let page = self.store.list_members(group_id, after, limit).await?;
        let more = page.len() == limit as usize;
        let ids = page.into_iter().map(|m| m.user_id).collect();
        Ok((ids, more, group.version.max(0) as u64))
    }

    /// A page of the token revocations on record, for core nodes that start after them: up to
    /// `limit` (at most [`MAX_REVOCATIONS_PAGE`]) after the key (`after_user_id`,
    /// `after_device_id`), in key order, and whether more may follow. A `limit` of 0 is what
    /// core nodes from before pages ask: they get every revocation at once, as they expect.
    pub async fn revocations(
        &self,
        after_user_id: &str,
        after_device_id: &str,
        limit: u32,
    ) -> Result<(Vec<Revocation>, bool), BusinessError> {
        if limit == 0 {
            return Ok((self.all_revocations().await?, false));
        }
        self.revocations_page(after_user_id, after_device_id, limit)
            .await
    }

    /// Every token revocation on record, page by page.
    pub async fn all_revocations(&self) -> Result<Vec<Revocation>, BusinessError> {
        let mut all: Vec<Revocation> = Vec::new();
        loop {
            let (after_user, after_device) = all
                .last()
                .map(|r| (r.user_id.clone(), r.device_id.clone()))
                .unwrap_or_default();
            let (page, more) = self
                .revocations_page(&after_user, &after_device, MAX_REVOCATIONS_PAGE)
                .await?;
            all.extend(page);
            if !more {
                return Ok(all);
            }
        }
    }

    /// Up to `limit` (at most [`MAX_REVOCATIONS_PAGE`]) revocations after the key, and whether
    /// more may follow.
    async fn revocations_page(
        &self,
        after_user_id: &str,
        after_device_id: &str,
        limit: u32,
    ) -> Result<(Vec<Revocation>, bool), BusinessError> {
        let limit = limit.min(MAX_REVOCATIONS_PAGE);
        let page = self
            .store
            .revocations(after_user_id, after_device_id, limit)
            .await?;
        let more = page.len() == limit as usize;
        Ok((page, more))
    }

    /// The groups and channels `user_id` is a member of, for sync.
    pub async fn groups_of(&self, user_id: &str) -> Result<Vec<UserGroup>, BusinessError> {
        let groups = self.store.groups_of(user_id).await?;
        Ok(groups
            .into_iter()
            .map(|(group, member)| {
                let visible = Visible::of(&member);
                UserGroup {
                    group_id: group.group_id,
                    r#type: group.kind,
                    role: member.role,
                    visible_from_seq: visible.from_seq,
                    joining: visible.joining,
                }
            })
            .collect())
    }
}
