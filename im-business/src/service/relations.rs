//! Blocks and contacts: directed relations of one user to another, written by one
//! function whatever the kind. A block stops the blocked user sending to the blocker; with
//! `direct_requires_contact`, only contacts reach a user in 1:1 conversations.

use im_proto::v1::{BanEvent, BanKind};

use super::{Actor, Business, Page, invalid, now_ms};
use crate::{error::BusinessError, store::Relation};

impl Business {
    /// `user_id` blocks (or, with `on` false, unblocks) `blocked`: a blocked user cannot send
    /// to the blocker. The app, or the user itself.
    pub async fn set_block(
        &self,
        actor: &Actor,
        user_id: &str,
        blocked: &str,
        on: bool,
    ) -> Result<(), BusinessError> {
        self.set_relation(actor, Relation::Block, user_id, blocked, on)
            .await
    }

    /// The users `user_id` blocks, a page in id order (the app, or the user itself).
    pub async fn list_blocked(
        &self,
        actor: &Actor,
        user_id: &str,
        after: &str,
        limit: u32,
    ) -> Result<Page<String>, BusinessError> {
        Self::app_or_self(actor, user_id)?;
        self.active_user(user_id).await?;
        let limit = self.page_limit(limit);
        let blocked = self.store.list_blocked(user_id, after, limit).await?;
        Ok(Page::of(blocked, limit, String::as_str))
    }

    /// Adds (or removes) `contact` as a contact of `user_id` (the app, or the user itself).
    pub async fn set_contact(
        &self,
        actor: &Actor,
        user_id: &str,
        contact: &str,
        on: bool,
    ) -> Result<(), BusinessError> {
        self.set_relation(actor, Relation::Contact, user_id, contact, on)
            .await
    }

    /// Adds or lifts a relation of `user_id` to `other`, announced on `im.ban` so that caches
    /// drop the 1:1 decisions it may change.
    async fn set_relation(
        &self,
        actor: &Actor,
        relation: Relation,
        user_id: &str,
        other: &str,
        on: bool,
    ) -> Result<(), BusinessError> {
        let (action, kind) = match (relation, on) {
            (Relation::Block, true) => ("user.block", BanKind::UserBlocked),
            (Relation::Block, false) => ("user.unblock", BanKind::UserUnblocked),
            (Relation::Contact, true) => ("contact.add", BanKind::ContactAdded),
            (Relation::Contact, false) => ("contact.remove", BanKind::ContactRemoved),
        };
        self.audited(actor, action, format!("user:{other}"), async {
            Self::app_or_self(actor, user_id)?;
            if user_id == other {
                return Err(invalid(format!("{action} needs two different users")));
            }
            self.active_user(user_id).await?;
            self.existing_user(other).await?;
            let now = now_ms();
            // The store keeps a method per kind: its trait is public, and every backend's suite
            // calls them; the queries behind them are one (`store::sql`).
            match relation {
                Relation::Block => self.store.set_block(user_id, other, on, now).await?,
                Relation::Contact => self.store.set_contact(user_id, other, on, now).await?,
            };
            let event = BanEvent {
                kind: kind.into(),
                user_id: user_id.into(),
                target_user_id: other.into(),
                ..Default::default()
            };
            self.ban_event(actor, event).await;
            Ok(())
        })
        .await
    }
}
