//! Which messages show which media, so that media no message shows any more is deleted after
//! a grace period. A send that may attach media holds a reference for it (seq 0, in the attach
//! check's own transaction); the core tells, through the durable outbox IM_MEDIA_REFS
//! (`im.mediaref`), the entry that references it once committed, which takes the held
//! reference's place, and the entries recalled or deleted, whose references go. A reference
//! that never arrives only keeps media longer: nothing referenced is ever deleted.

use std::time::Duration;

use im_common::{bus::OutboxReader, now_ms};
use im_proto::v1::{MediaReferences, MediaStage, MediaState};
use prost::Message as _;

use super::{BusinessError, Media, announce};

/// The consumer that takes references from the outbox, shared by every business node.
pub const CONSUMER: &str = "im-media-refs";

/// Media deleted per batch by [`Media::collect_unreferenced`].
pub(super) const COLLECT_BATCH: u32 = 100;

impl Media {
    /// Records what a committed entry changes in references.
    pub async fn apply_references(
        &self,
        references: &MediaReferences,
    ) -> Result<(), BusinessError> {
        if references.referenced {
            self.store
                .add_references(
                    &references.media_ids,
                    &references.conversation_id,
                    references.seq,
                    now_ms(),
                )
                .await?;
        } else {
            self.store
                .drop_references(&references.conversation_id, references.seq)
                .await?;
        }
        Ok(())
    }

    /// Deletes up to `limit` ready media that nothing has referenced for
    /// [`super::MediaConfig::unreferenced_grace`] by `now_ms` (their bytes too, unless other
    /// media hold the same bytes); answers how many. Quarantined media is kept (its digest
    /// stays blocked).
    pub async fn collect_unreferenced(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<usize, BusinessError> {
        let grace = i64::try_from(self.config.unreferenced_grace.as_millis()).unwrap_or(i64::MAX);
        let candidates = self
            .store
            .unreferenced_media(now_ms.saturating_sub(grace), limit)
            .await?;
        let mut count = 0;
        for media in candidates {
            if !self
                .store
                .delete_if_unreferenced(&media.media_id, now_ms)
                .await?
            {
                continue;
            }
            count += 1;
            tracing::info!(media_id = %media.media_id, size = media.size_bytes, "unreferenced media deleted");
            self.processor.delete_bytes_unless_held(&media).await?;
            let mut gone = media;
            gone.state = MediaState::Deleted as i32;
            announce(&*self.bus, &gone, MediaStage::Deleted, "unreferenced").await;
        }
        metrics::counter!("im_media_collected_total").increment(count as u64);
        Ok(count)
    }
}

/// Takes references from the outbox into `media`'s store until the outbox ends. A store that
/// fails sends the item back to come again.
pub async fn run(mut reader: OutboxReader, media: std::sync::Arc<Media>) {
    while let Some(item) = reader.next().await {
        let Ok(references) = MediaReferences::decode(item.payload.clone()) else {
            tracing::warn!("undecodable media reference dropped");
            let _ = item.ack().await;
            continue;
        };
        let settled = match media.apply_references(&references).await {
            Ok(()) => item.ack().await,
            Err(error) => {
                let delay = Duration::from_secs(item.attempt.clamp(1, 60));
                tracing::warn!(%error, attempt = item.attempt, "media reference not recorded yet");
                item.retry(delay).await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(%error, "media reference not settled");
        }
    }
}
