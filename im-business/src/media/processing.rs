//! Processing after complete: the facts and thumbnails of an image ([`super::facts`]), kept
//! beside the object under `variants/<sha256>/<name>`, then the media is READY.
//!
//! Processing is idempotent per media id: it reads the media, does nothing unless it is still
//! PROCESSING, writes variants under keys that follow from the bytes alone (so a second run
//! writes the same objects), and moves PROCESSING to READY once (the store's transition picks
//! one winner). A node that stops mid-way leaves the media in PROCESSING; every node's sweep
//! resumes media that stayed there past `processing_stall`.

use std::sync::Arc;

use im_common::{bus::Bus, now_ms};
use im_proto::v1::{MediaStage, MediaState};
use tokio::sync::Semaphore;

use super::{
    BusinessError, MediaConfig, announce,
    facts::{ImageLimits, MediaFacts, analyze_image},
    internal, object_key,
};
use crate::store::{BusinessStore, MediaChange, MediaRecord};

use super::ObjectStore;

/// The types processing decodes; other media are kept without variants.
const DECODED: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// The key of a variant of the bytes with digest `sha256_hex`.
pub fn variant_key(sha256_hex: &str, name: &str) -> String {
    format!("variants/{sha256_hex}/{name}")
}

/// What processing needs, shared with the tasks it runs in (cheap to clone).
#[derive(Clone)]
pub(super) struct Processor {
    pub(super) store: Arc<dyn BusinessStore>,
    pub(super) objects: Arc<dyn ObjectStore>,
    pub(super) bus: Arc<dyn Bus>,
    pub(super) limits: ImageLimits,
    /// Images decoded at once: each may hold `max_decode_bytes`.
    pub(super) slots: Arc<Semaphore>,
}

impl Processor {
    pub(super) fn new(
        store: Arc<dyn BusinessStore>,
        objects: Arc<dyn ObjectStore>,
        bus: Arc<dyn Bus>,
        config: &MediaConfig,
    ) -> Self {
        Self {
            store,
            objects,
            bus,
            limits: ImageLimits {
                max_dimension: config.max_image_dimension,
                max_pixels: config.max_image_pixels,
                max_decode_bytes: config.max_decode_bytes,
            },
            slots: Arc::new(Semaphore::new(config.processing_concurrency.max(1) as usize)),
        }
    }

    /// Processes the media if it is still PROCESSING; answers it as it then is. A failure of
    /// the store leaves it PROCESSING, for the sweep to resume.
    pub(super) async fn process(self, media_id: String) -> Result<MediaRecord, BusinessError> {
        let missing = || BusinessError::MediaNotFound(media_id.clone());
        let media = self.store.get_media(&media_id).await?.ok_or_else(missing)?;
        if media.state() != MediaState::Processing {
            return Ok(media);
        }
        let _slot = self.slots.acquire().await.map_err(internal)?;
        let started = std::time::Instant::now();
        let facts = if DECODED.contains(&media.mime_type.as_str()) {
            self.image_facts(&media).await?
        } else {
            MediaFacts::none(format!("no variants are made of {}", media.mime_type))
        };
        let change = MediaChange {
            facts: Some(facts.to_json()),
            ..MediaChange::default()
        };
        let (moved, media) = self
            .store
            .transition_media(
                &media_id,
                &[MediaState::Processing],
                MediaState::Ready,
                &change,
                now_ms(),
            )
            .await?;
        if moved {
            let seconds = started.elapsed().as_secs_f64();
            metrics::histogram!("im_media_processing_seconds").record(seconds);
            tracing::info!(
                media_id,
                variants = facts.variants.len(),
                no_variants = %facts.no_variants,
                seconds,
                "media processed"
            );
            announce(
                &*self.bus,
                &media,
                MediaStage::Processed,
                &facts.no_variants,
            )
            .await;
        }
        Ok(media)
    }

    /// The facts of an image, its variants written; an image that cannot be decoded within
    /// the limits gets facts that say why, and no variants.
    async fn image_facts(&self, media: &MediaRecord) -> Result<MediaFacts, BusinessError> {
        let size = u64::try_from(media.size_bytes).unwrap_or(0);
        let bytes = self
            .objects
            .read_range(&object_key(&media.sha256_hex), 0, size)
            .await
            .map_err(internal)?;
        let limits = self.limits;
        let analyzed = tokio::task::spawn_blocking(move || analyze_image(&bytes, &limits))
            .await
            .map_err(internal)?;
        let (facts, renditions) = match analyzed {
            Ok(done) => done,
            Err(why) => {
                tracing::info!(media_id = %media.media_id, %why, "image kept without variants");
                return Ok(MediaFacts::none(why.to_string()));
            }
        };
        for rendition in renditions {
            let key = variant_key(&media.sha256_hex, &rendition.variant.name);
            self.objects
                .put(&key, rendition.bytes, &rendition.variant.mime_type)
                .await
                .map_err(internal)?;
        }
        Ok(facts)
    }

    /// Resumes up to `limit` media left in processing since `before_ms`; answers how many of
    /// them are ready now.
    pub(super) async fn resume(&self, before_ms: i64, limit: u32) -> Result<usize, BusinessError> {
        let stalled = self.store.stalled_processing(before_ms, limit).await?;
        let mut done = 0;
        for media in stalled {
            let media = self.clone().process(media.media_id).await?;
            done += usize::from(media.state() == MediaState::Ready);
        }
        Ok(done)
    }
}
