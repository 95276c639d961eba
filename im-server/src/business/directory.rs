//! Who is in a group, and which groups a user is in: asked of the business service over the bus
//! (`im.members`, `im.groups`). Member lists are cached for fan-out, and membership and group
//! events (applied by the node's event intake) drop a group's list.

use std::{sync::Arc, time::Duration};

use im_common::{
    bus::{Bus, BusError},
    cache::InvalidatedCache,
};
use im_proto::{
    GroupId, UserId,
    v1::{MembersQuery, UserGroup, UserGroupsQuery},
};
use moka::sync::Cache;

use crate::events::Event;

/// Group member lists and users' groups, from the business service.
pub struct Directory {
    bus: Arc<dyn Bus>,
    members: InvalidatedCache<GroupId, Arc<[String]>>,
    timeout: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// A directory caching the member lists of up to `groups` groups, once the event intake
    /// follows the events that change them.
    pub fn new(bus: Arc<dyn Bus>, groups: u64, timeout: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(groups)
            // A backstop only: events drop a list as soon as it changes.
            .time_to_live(Duration::from_secs(600))
            .build();
        Self {
            bus,
            members: InvalidatedCache::new(cache),
            timeout,
        }
    }

    /// Every member of `group`, read page by page on a cache miss.
    pub async fn members(&self, group: &GroupId) -> Result<Arc<[String]>, BusError> {
        let ticket = self.members.ticket();
        if let Some(members) = self.members.get(group) {
            return Ok(members);
        }
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let query = MembersQuery {
                group_id: group.to_string(),
                after_user_id: after.clone(),
                limit: 0,
            };
            let page = self.bus.call(&query, self.timeout).await?;
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
        self.members.insert(ticket, group.clone(), members.clone());
        Ok(members)
    }

    /// The groups and channels `user` belongs to.
    pub async fn groups_of(&self, user: &UserId) -> Result<Vec<UserGroup>, BusError> {
        let query = UserGroupsQuery {
            user_id: user.to_string(),
        };
        Ok(self.bus.call(&query, self.timeout).await?.groups)
    }

    /// Drops the member list `event` may have changed; returns the list this node had, which
    /// says whom to tell when a group is dismissed.
    pub fn apply(&self, event: &Event) -> Option<Arc<[String]>> {
        let group_id = match event {
            Event::Member(event) => &event.group_id,
            Event::Group(event) => &event.group_id,
            Event::Ban(_) | Event::Route(_) | Event::Presence(_) => return None,
        };
        let group = GroupId::new(group_id.as_str()).ok()?;
        let known = self.members.get(&group);
        self.members.invalidate(&group);
        known
    }

    /// Events stopped arriving: no member list is cached until [`Self::resume`].
    pub fn pause(&self) {
        self.members.pause();
    }

    /// Events flow: member lists are cached (from scratch) until [`Self::pause`].
    pub fn resume(&self) {
        self.members.resume();
    }
}
