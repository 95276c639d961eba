//! Who is in a group, and which groups a user is in: asked of the business service over the bus
//! (`im.members`, `im.groups`). Member lists are cached for fan-out; membership and group
//! events drop a group's list, and an epoch keeps a list read before an event from being cached
//! after it.

use std::{sync::Arc, time::Duration};

use im_common::bus::{Bus, encode};
use im_proto::{
    bus,
    v1::{Error, ErrorCode, MemberList, MembersQuery, UserGroup, UserGroups, UserGroupsQuery},
};
use moka::sync::Cache;
use prost::Message;

/// Group member lists and users' groups, from the business service.
pub struct Directory {
    bus: Arc<dyn Bus>,
    members: Cache<String, Arc<[String]>>,
    epoch: std::sync::Mutex<u64>,
    timeout: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("cached_groups", &self.members.entry_count())
            .finish()
    }
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Unavailable, format!("{what}: {error}"))
}

impl Directory {
    /// A directory caching the member lists of up to `groups` groups.
    pub fn new(bus: Arc<dyn Bus>, groups: u64, timeout: Duration) -> Self {
        Self {
            bus,
            members: Cache::builder()
                .max_capacity(groups)
                // A backstop only: events drop a list as soon as it changes.
                .time_to_live(Duration::from_secs(600))
                .build(),
            epoch: std::sync::Mutex::new(0),
            timeout,
        }
    }

    fn epoch(&self) -> std::sync::MutexGuard<'_, u64> {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every member of `group_id`, read page by page on a cache miss.
    pub async fn members(&self, group_id: &str) -> Result<Arc<[String]>, Error> {
        if let Some(members) = self.members.get(group_id) {
            return Ok(members);
        }
        let epoch = *self.epoch();
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let query = MembersQuery {
                group_id: group_id.to_owned(),
                after_user_id: after.clone(),
                limit: 0,
            };
            let answer = self
                .bus
                .request(bus::MEMBERS, encode(&query), self.timeout)
                .await
                .map_err(|e| unavailable("member list", e))?;
            let page = MemberList::decode(answer).map_err(|e| unavailable("member list", e))?;
            if let Some(error) = page.error {
                return Err(error);
            }
            let Some(last) = page.user_ids.last() else {
                break;
            };
            after = last.clone();
            all.extend(page.user_ids);
            if !page.has_more {
                break;
            }
        }
        let members: Arc<[String]> = all.into();
        let current = self.epoch();
        if *current == epoch {
            self.members.insert(group_id.to_owned(), members.clone());
        }
        Ok(members)
    }

    /// The groups and channels `user_id` belongs to.
    pub async fn groups_of(&self, user_id: &str) -> Result<Vec<UserGroup>, Error> {
        let query = UserGroupsQuery {
            user_id: user_id.to_owned(),
        };
        let answer = self
            .bus
            .request(bus::GROUPS, encode(&query), self.timeout)
            .await
            .map_err(|e| unavailable("groups of a user", e))?;
        let groups = UserGroups::decode(answer).map_err(|e| unavailable("groups of a user", e))?;
        match groups.error {
            Some(error) => Err(error),
            None => Ok(groups.groups),
        }
    }

    /// The cached member list of `group_id`, if any (no request is made).
    pub fn cached(&self, group_id: &str) -> Option<Arc<[String]>> {
        self.members.get(group_id)
    }

    /// Drops the cached member list of `group_id` (its membership changed).
    pub fn forget(&self, group_id: &str) {
        let mut epoch = self.epoch();
        *epoch += 1;
        self.members.invalidate(group_id);
    }
}
