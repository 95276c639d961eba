//! The checks operations start with: the sizes and forms of names, URLs and app-defined JSON,
//! the page size, and who the actor is (the app, the user itself, or a member standing
//! somewhere in a group). They refuse; they change nothing.

use std::collections::BTreeSet;

use super::{Actor, Business, DEFAULT_PAGE, Standing, forbidden, invalid, parse_user};
use crate::{
    error::BusinessError,
    store::{GroupRecord, MemberRecord, UserRecord},
};

impl Business {
    /// `name` (a display or group name, called `what` in the refusal) is at most
    /// `max_name_bytes`, and not blank when `required`.
    pub(super) fn check_name(
        &self,
        what: &str,
        name: &str,
        required: bool,
    ) -> Result<(), BusinessError> {
        if required && name.trim().is_empty() {
            return Err(invalid(format!("{what} is empty")));
        }
        if name.len() > self.config.max_name_bytes {
            return Err(invalid(format!(
                "{what} is {} bytes, more than {}",
                name.len(),
                self.config.max_name_bytes
            )));
        }
        Ok(())
    }

    /// The page size to use: 100 when unset, at most `max_page`.
    pub(super) fn page_limit(&self, limit: u32) -> u32 {
        if limit == 0 {
            DEFAULT_PAGE.min(self.config.max_page)
        } else {
            limit.min(self.config.max_page)
        }
    }

    /// `url` is at most `max_url_bytes`.
    pub(super) fn check_url(&self, url: &str) -> Result<(), BusinessError> {
        if url.len() > self.config.max_url_bytes {
            return Err(invalid(format!(
                "URL is {} bytes, more than {}",
                url.len(),
                self.config.max_url_bytes
            )));
        }
        Ok(())
    }

    /// `extra_json` is at most `max_extra_json_bytes` and, unless empty, JSON.
    pub(super) fn check_extra(&self, extra_json: &str) -> Result<(), BusinessError> {
        if extra_json.len() > self.config.max_extra_json_bytes {
            return Err(invalid(format!(
                "extra_json is {} bytes, more than {}",
                extra_json.len(),
                self.config.max_extra_json_bytes
            )));
        }
        if !extra_json.is_empty() {
            serde_json::from_str::<serde_json::Value>(extra_json)
                .map_err(|e| invalid(format!("extra_json is not JSON: {e}")))?;
        }
        Ok(())
    }

    /// The user, who must exist and be active.
    pub(super) async fn active_user(&self, user_id: &str) -> Result<UserRecord, BusinessError> {
        parse_user(user_id)?;
        match self.store.get_user(user_id).await? {
            None => Err(BusinessError::UserNotFound(user_id.to_owned())),
            Some(user) if !user.active => Err(BusinessError::UserDisabled(user_id.to_owned())),
            Some(user) => Ok(user),
        }
    }

    /// The actor must be the app or `user_id` itself.
    pub(super) fn app_or_self(actor: &Actor, user_id: &str) -> Result<(), BusinessError> {
        if *actor == Actor::App || actor.is(user_id) {
            Ok(())
        } else {
            Err(forbidden(format!("only {user_id} or the app may do this")))
        }
    }

    /// The actor must be the app.
    pub(super) fn app_only(actor: &Actor) -> Result<(), BusinessError> {
        match actor {
            Actor::App => Ok(()),
            Actor::User(_) => Err(forbidden("only the app may do this")),
        }
    }

    /// The group (not dismissed) and where the actor stands in it.
    pub(super) async fn standing(
        &self,
        actor: &Actor,
        group_id: &str,
    ) -> Result<(GroupRecord, Standing), BusinessError> {
        let group = match self.store.get_group(group_id).await? {
            Some(group) if !group.dismissed => group,
            _ => return Err(BusinessError::GroupNotFound(group_id.to_owned())),
        };
        let user_id = match actor {
            Actor::App => return Ok((group, Standing::App)),
            Actor::User(user_id) => user_id,
        };
        self.active_user(user_id).await?;
        match self.store.get_member(group_id, user_id).await? {
            Some(member) => Ok((group, Standing::of(member.role))),
            None => Err(BusinessError::NotAMember {
                group_id: group_id.to_owned(),
                user_id: user_id.clone(),
            }),
        }
    }

    /// The membership of `user_id` in the group, which must exist.
    pub(super) async fn member(
        &self,
        group_id: &str,
        user_id: &str,
    ) -> Result<MemberRecord, BusinessError> {
        self.store
            .get_member(group_id, user_id)
            .await?
            .ok_or_else(|| BusinessError::NotAMember {
                group_id: group_id.to_owned(),
                user_id: user_id.to_owned(),
            })
    }

    /// Distinct, valid, existing, active user ids (checked in batches: groups can be large).
    pub(super) async fn active_users(
        &self,
        user_ids: &[String],
    ) -> Result<Vec<String>, BusinessError> {
        let distinct: BTreeSet<&String> = user_ids.iter().collect();
        if distinct.len() != user_ids.len() {
            return Err(invalid("a user is listed twice"));
        }
        for user_id in user_ids {
            parse_user(user_id)?;
        }
        match self.store.first_unusable(user_ids).await? {
            None => Ok(user_ids.to_vec()),
            Some((user_id, true)) => Err(BusinessError::UserDisabled(user_id)),
            Some((user_id, false)) => Err(BusinessError::UserNotFound(user_id)),
        }
    }

    /// The user, who must exist (active or not).
    pub(super) async fn existing_user(&self, user_id: &str) -> Result<UserRecord, BusinessError> {
        parse_user(user_id)?;
        self.store
            .get_user(user_id)
            .await?
            .ok_or_else(|| BusinessError::UserNotFound(user_id.to_owned()))
    }
}
