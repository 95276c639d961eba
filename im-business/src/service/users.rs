//! Users and their tokens: the app creates, imports and deactivates users and issues their
//! tokens; a user reads profiles and logs its own devices out.

use std::collections::BTreeSet;

use im_proto::v1::{BanEvent, BanKind};

use super::{Actor, Business, invalid, now_ms, parse_user};
use crate::{
    error::BusinessError,
    store::{Revocation, UserRecord},
};

/// One user of an import.
#[derive(Debug, Clone, Default)]
pub struct UserImport {
    /// The user id.
    pub user_id: String,
    /// Shown name.
    pub display_name: String,
    /// Avatar URL.
    pub avatar_url: String,
    /// App-defined JSON.
    pub extra_json: String,
}

impl Business {
    /// Creates the user or updates its profile (app only).
    pub async fn upsert_user(
        &self,
        actor: &Actor,
        user_id: &str,
        display_name: &str,
        avatar_url: &str,
        extra_json: &str,
    ) -> Result<UserRecord, BusinessError> {
        self.audited(actor, "user.upsert", format!("user:{user_id}"), async {
            Self::app_only(actor)?;
            parse_user(user_id)?;
            self.check_name("display_name", display_name, false)?;
            self.check_url(avatar_url)?;
            self.check_extra(extra_json)?;
            let now = now_ms();
            let user = UserRecord {
                user_id: user_id.to_owned(),
                display_name: display_name.to_owned(),
                avatar_url: avatar_url.to_owned(),
                extra_json: extra_json.to_owned(),
                active: true,
                created_at_ms: now,
                updated_at_ms: now,
            };
            Ok(self.store.upsert_user(&user).await?)
        })
        .await
    }

    /// Creates or updates many users at once (app only): how an app imports its users.
    pub async fn import_users(
        &self,
        actor: &Actor,
        users: &[UserImport],
    ) -> Result<usize, BusinessError> {
        let target = format!("users:{}", users.len());
        self.audited(actor, "user.import", target, async {
            Self::app_only(actor)?;
            // As adding members: a list that must say who cannot be empty.
            if users.is_empty() {
                return Err(invalid("no users to import"));
            }
            if users.len() > self.config.max_import_batch {
                return Err(invalid(format!(
                    "at most {} users per import",
                    self.config.max_import_batch
                )));
            }
            let now = now_ms();
            let mut records = Vec::with_capacity(users.len());
            let mut seen = BTreeSet::new();
            for u in users {
                parse_user(&u.user_id)?;
                if !seen.insert(u.user_id.as_str()) {
                    return Err(invalid(format!("{} is listed twice", u.user_id)));
                }
                self.check_name("display_name", &u.display_name, false)?;
                self.check_url(&u.avatar_url)?;
                self.check_extra(&u.extra_json)?;
                records.push(UserRecord {
                    user_id: u.user_id.clone(),
                    display_name: u.display_name.clone(),
                    avatar_url: u.avatar_url.clone(),
                    extra_json: u.extra_json.clone(),
                    active: true,
                    created_at_ms: now,
                    updated_at_ms: now,
                });
            }
            self.store.upsert_users(&records).await?;
            Ok(records.len())
        })
        .await
    }

    /// A user's profile, for the app or any active user.
    pub async fn get_user(
        &self,
        actor: &Actor,
        user_id: &str,
    ) -> Result<UserRecord, BusinessError> {
        if let Actor::User(me) = actor {
            self.active_user(me).await?;
        }
        self.existing_user(user_id).await
    }

    /// Deactivates a user (app only): its tokens stop working and its sessions end.
    pub async fn deactivate_user(
        &self,
        actor: &Actor,
        user_id: &str,
    ) -> Result<UserRecord, BusinessError> {
        self.audited(actor, "user.deactivate", format!("user:{user_id}"), async {
            Self::app_only(actor)?;
            parse_user(user_id)?;
            let now = now_ms();
            let user = self.store.deactivate_user(user_id, now).await?;
            let event = BanEvent {
                kind: BanKind::UserDeactivated.into(),
                user_id: user_id.into(),
                until_ms: now,
                ..Default::default()
            };
            self.ban_event(actor, event).await;
            Ok(user)
        })
        .await
    }

    /// A token for an active user on a device (app only); returns it with its expiry.
    pub async fn issue_token(
        &self,
        actor: &Actor,
        user_id: &str,
        device_id: &str,
        ttl_ms: i64,
    ) -> Result<(String, i64), BusinessError> {
        self.audited(actor, "token.issue", format!("user:{user_id}"), async {
            Self::app_only(actor)?;
            device_id
                .parse::<im_proto::DeviceId>()
                .map_err(|e| invalid(e.to_string()))?;
            if ttl_ms < 0 || ttl_ms > self.config.max_token_ttl_ms {
                return Err(invalid(format!(
                    "ttl must be between 0 and {} ms",
                    self.config.max_token_ttl_ms
                )));
            }
            self.active_user(user_id).await?;
            let ttl = if ttl_ms == 0 {
                self.config.default_token_ttl_ms
            } else {
                ttl_ms
            };
            // Read before signing: a revocation that commits meanwhile stops this token too.
            let cut_offs = self.store.cut_offs(user_id, device_id).await?;
            let now = now_ms();
            let token = self
                .issuer
                .issue_after(user_id, device_id, cut_offs, now, ttl)
                .map_err(|e| BusinessError::Internal(e.to_string()))?;
            Ok((token, now + ttl))
        })
        .await
    }

    /// Logs out one device (or every device, with an empty `device_id`): every token issued
    /// to it until now stops working, whatever issue time it carries. The app, or the user
    /// itself.
    pub async fn revoke_tokens(
        &self,
        actor: &Actor,
        user_id: &str,
        device_id: &str,
    ) -> Result<(), BusinessError> {
        self.audited(actor, "token.revoke", format!("user:{user_id}"), async {
            Self::app_or_self(actor, user_id)?;
            self.existing_user(user_id).await?;
            if !device_id.is_empty() {
                device_id
                    .parse::<im_proto::DeviceId>()
                    .map_err(|e| invalid(e.to_string()))?;
            }
            let now = now_ms();
            let revocation = Revocation {
                user_id: user_id.into(),
                device_id: device_id.into(),
                revoked_before_ms: now,
            };
            let cut_off = self.store.revoke_tokens(&revocation).await?;
            let event = BanEvent {
                kind: BanKind::TokensRevoked.into(),
                user_id: user_id.into(),
                device_id: device_id.into(),
                until_ms: cut_off,
                ..Default::default()
            };
            self.ban_event(actor, event).await;
            Ok(())
        })
        .await
    }
}
