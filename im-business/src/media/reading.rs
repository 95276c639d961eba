//! What users may read of media: their own media and quotas, downloads through a message
//! they can read, and the check the core makes before a message references media.

use im_common::now_ms;
use im_proto::v1::{self, ErrorCode, MediaState, PermissionDecision};

use super::{
    MessageAt, ORIGINAL, PROCESSING_RETRY_MS, Serving, SignedRequest, facts::MediaFacts,
    object_key, sniff, variant_key,
};
use crate::{Actor, BusinessError, store::MediaRecord};

impl super::Media {
    /// The media, for its owner (or the app).
    pub async fn get_media(
        &self,
        actor: &Actor,
        media_id: &str,
    ) -> Result<MediaRecord, BusinessError> {
        self.owned(actor, media_id).await
    }

    /// May `user_id` reference `media_ids` in a message in `conversation_id` (the core asks
    /// before it stores one)? Each must exist, be the user's and be completed (ready, or still
    /// processing). An allowed send holds a reference to each, so that none is deleted as
    /// unreferenced before its entry's reference arrives. Never cached.
    pub async fn check_attach(
        &self,
        user_id: &str,
        conversation_id: &str,
        media_ids: &[String],
    ) -> PermissionDecision {
        let deny = |code: ErrorCode, reason: String| PermissionDecision {
            allowed: false,
            code: code as i32,
            reason,
            ..Default::default()
        };
        for media_id in media_ids {
            let media = match self.store.get_media(media_id).await {
                Ok(media) => media,
                Err(error) => return deny(ErrorCode::Unavailable, error.to_string()),
            };
            // Another user's media is as good as none: its id tells nothing.
            let Some(media) = media.filter(|m| m.owner_user_id == user_id) else {
                return deny(
                    ErrorCode::MediaNotFound,
                    format!("no media {media_id} of yours"),
                );
            };
            match media.state() {
                // Processing media may be sent: its downloads wait until it is ready.
                MediaState::Ready | MediaState::Processing => {}
                MediaState::Quarantined => {
                    return deny(
                        ErrorCode::MediaQuarantined,
                        format!("media {media_id} is held"),
                    );
                }
                MediaState::Pending => {
                    return deny(
                        ErrorCode::Conflict,
                        format!("media {media_id} is not completed yet"),
                    );
                }
                _ => {
                    return deny(
                        ErrorCode::MediaNotFound,
                        format!("media {media_id} is gone"),
                    );
                }
            }
        }
        match self
            .store
            .hold_references(media_ids, conversation_id, now_ms())
            .await
        {
            Ok(true) => PermissionDecision {
                allowed: true,
                ..Default::default()
            },
            Ok(false) => deny(ErrorCode::MediaNotFound, "the media is gone or held".into()),
            Err(error) => deny(ErrorCode::Unavailable, error.to_string()),
        }
    }

    /// Whether `user_id` can read the message at `at` and it references `media_id` (as the
    /// media or its thumbnail), not recalled or deleted: the core answers the page, with the
    /// user's own read checks (membership, the history they may see).
    async fn referenced(&self, user_id: &str, media_id: &str, at: &MessageAt) -> bool {
        if at.conversation_id.is_empty() || at.seq == 0 {
            return false;
        }
        let query = v1::HistoryQuery {
            user_id: user_id.to_owned(),
            query: Some(v1::history_query::Query::Pull(v1::PullRequest {
                conversation_id: at.conversation_id.clone(),
                after_seq: at.seq - 1,
                limit: 1,
            })),
        };
        let page = match self.bus.call(&query, self.config.reference_timeout).await {
            Ok(v1::HistoryResult {
                result: Some(v1::history_result::Result::Page(page)),
            }) => page,
            Ok(_) => return false,
            Err(error) => {
                tracing::warn!(%error, media_id, "the core did not answer a reference check");
                return false;
            }
        };
        page.messages.iter().any(|m| {
            let withdrawn = m
                .state
                .as_ref()
                .is_some_and(|s| s.recalled_seq > 0 || s.deleted_seq > 0);
            let media = match m.body.as_ref().and_then(|b| b.kind.as_ref()) {
                Some(v1::message_body::Kind::Content(v1::Content {
                    kind: Some(v1::content::Kind::Media(media)),
                    ..
                })) => Some(media),
                _ => None,
            };
            m.seq == at.seq
                && !withdrawn
                && media.is_some_and(|r| r.media_id == media_id || r.thumbnail_media_id == media_id)
        })
    }

    /// A signed GET of the media (or one of its variants) for the actor, served so that no
    /// browser runs it as a page: the uploader's (or the app's), or a user's who can read a
    /// message that references it (`at`).
    pub async fn sign_download(
        &self,
        actor: &Actor,
        media_id: &str,
        variant: &str,
        at: &MessageAt,
    ) -> Result<SignedRequest, BusinessError> {
        let media = match (self.owned(actor, media_id).await, actor) {
            (Ok(media), _) => media,
            (Err(BusinessError::MediaNotFound(_)), Actor::User(user_id)) => {
                match self.store.get_media(media_id).await? {
                    Some(media) if self.referenced(user_id, media_id, at).await => media,
                    _ => return Err(BusinessError::MediaNotFound(media_id.to_owned())),
                }
            }
            (Err(error), _) => return Err(error),
        };
        match media.state() {
            MediaState::Ready => {}
            MediaState::Quarantined => {
                return Err(BusinessError::MediaQuarantined(media_id.to_owned()));
            }
            MediaState::Pending => {
                return Err(BusinessError::Conflict(format!(
                    "media {media_id} was not completed yet"
                )));
            }
            MediaState::Processing => {
                return Err(BusinessError::Unavailable {
                    what: format!("media {media_id} is not ready yet"),
                    retry_after_ms: PROCESSING_RETRY_MS,
                });
            }
            _ => return Err(BusinessError::MediaNotFound(media_id.to_owned())),
        }
        let (key, serving) = if variant.is_empty() || variant == ORIGINAL {
            let serving = Serving {
                content_type: media.mime_type.clone(),
                attachment: (!sniff::inline(&media.mime_type)).then(|| {
                    if media.file_name.is_empty() {
                        "download".to_owned()
                    } else {
                        media.file_name.clone()
                    }
                }),
            };
            (object_key(&media.sha256_hex), serving)
        } else {
            // Variants are images the server encoded itself: served inline as their type.
            let facts = MediaFacts::parse(&media.facts);
            let Some(found) = facts.variants.iter().find(|v| v.name == variant) else {
                return Err(BusinessError::MediaNotFound(format!(
                    "{media_id} (variant {variant})"
                )));
            };
            let serving = Serving {
                content_type: found.mime_type.clone(),
                attachment: None,
            };
            (variant_key(&media.sha256_hex, &found.name), serving)
        };
        let ttl = i64::try_from(self.config.download_url_ttl.as_millis()).unwrap_or(i64::MAX);
        Ok(self
            .objects
            .sign_get(&key, &serving, now_ms().saturating_add(ttl)))
    }

    /// What `user_id` has used of its quotas.
    pub async fn quota(
        &self,
        actor: &Actor,
        user_id: &str,
    ) -> Result<v1::MediaQuota, BusinessError> {
        Self::may_act_for(actor, user_id)?;
        self.active_actor(actor).await?;
        if self.store.get_user(user_id).await?.is_none() {
            return Err(BusinessError::UserNotFound(user_id.to_owned()));
        }
        let window_ms = i64::try_from(self.config.upload_window.as_millis()).unwrap_or(i64::MAX);
        let usage = self
            .store
            .media_usage(user_id, now_ms().saturating_sub(window_ms))
            .await?;
        Ok(v1::MediaQuota {
            user_id: user_id.to_owned(),
            stored_bytes: usage.stored_bytes,
            stored_limit: self.config.stored_bytes_per_user,
            window_bytes: usage.window_bytes,
            window_limit: self.config.window_bytes_per_user,
            window_ms: u64::try_from(window_ms).unwrap_or(0),
            pending_uploads: usage.pending_uploads,
            pending_limit: self.config.pending_uploads_per_user,
        })
    }
}
