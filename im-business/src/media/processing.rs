//! Processing after complete: content safety first ([`super::scan`]: the verdict kept on the
//! bytes' digest, then the scanners), then the facts and thumbnails of an image
//! ([`super::facts`]), kept beside the object under `variants/<sha256>/<name>`, then the media
//! is READY.
//!
//! Unsafe bytes are quarantined wherever they are: their digest is blocked (so the same bytes
//! uploaded again by anyone are quarantined at complete), every media holding them moves to
//! QUARANTINED, and the object moves out of `objects/` to `quarantine/<sha256>`, so even a
//! download URL signed before cannot fetch it. An operator's release allows the digest (never
//! scanned or quarantined automatically again), moves the object back and processes the media
//! it held.
//!
//! Processing is idempotent per media id: it reads the media, does nothing unless it is still
//! PROCESSING, writes variants under keys that follow from the bytes alone (so a second run
//! writes the same objects), and moves PROCESSING to READY once (the store's transition picks
//! one winner). A node that stops mid-way leaves the media in PROCESSING; every node's sweep
//! resumes media that stayed there past `processing_stall`.

use std::sync::Arc;

use im_common::{bus::Bus, now_ms};
use im_proto::v1::{self, AlertSeverity, MediaStage, MediaState};
use tokio::sync::Semaphore;

use super::{
    BusinessError, MediaConfig, announce,
    facts::{ImageLimits, MediaFacts, analyze_image},
    internal, object_key,
    scan::{ScanOutcome, ScanRecord, Scanners, WhenUnavailable},
};
use crate::store::{BusinessStore, HashRecord, HashVerdict, MediaChange, MediaRecord};

use super::ObjectStore;

/// Where content safety left media in processing.
enum Safety {
    /// On to its facts and variants, with what the scanners said.
    Pass(Vec<ScanRecord>),
    /// Settled here (quarantined, rejected) or held in processing: as it now is.
    Settled(Box<MediaRecord>),
}

/// The types processing decodes; other media are kept without variants.
const DECODED: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// Media moved per batch when a digest is quarantined or released.
const HOLDERS_BATCH: u32 = 100;

/// The key of a variant of the bytes with digest `sha256_hex`.
pub fn variant_key(sha256_hex: &str, name: &str) -> String {
    format!("variants/{sha256_hex}/{name}")
}

/// Where quarantined bytes are kept, out of reach of every signed download.
pub fn quarantine_key(sha256_hex: &str) -> String {
    format!("quarantine/{sha256_hex}")
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
    pub(super) scanners: Scanners,
    pub(super) unavailable: WhenUnavailable,
}

impl Processor {
    pub(super) fn new(
        store: Arc<dyn BusinessStore>,
        objects: Arc<dyn ObjectStore>,
        bus: Arc<dyn Bus>,
        config: &MediaConfig,
        scanners: Scanners,
    ) -> Self {
        Self {
            scanners,
            unavailable: config.scan.unavailable,
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
        let started = std::time::Instant::now();
        let scans = match self.safety(&media).await? {
            Safety::Pass(scans) => scans,
            Safety::Settled(media) => return Ok(*media),
        };
        let _slot = self.slots.acquire().await.map_err(internal)?;
        let mut facts = if DECODED.contains(&media.mime_type.as_str()) {
            self.image_facts(&media).await?
        } else {
            MediaFacts::none(format!("no variants are made of {}", media.mime_type))
        };
        facts.scans = scans;
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

    /// Content safety for media in processing: the verdict kept on its digest, else the
    /// scanners'. Unsafe media is settled here (quarantined, rejected); media whose scan could
    /// not be made is held (left in processing for the sweep) unless the policy lets it pass.
    async fn safety(&self, media: &MediaRecord) -> Result<Safety, BusinessError> {
        match self.store.hash_verdict(&media.sha256_hex).await? {
            Some(kept) if kept.blocked() => {
                self.quarantine_hash(&media.sha256_hex, &kept.reason, &kept.actor)
                    .await?;
                return self.settled(&media.media_id).await;
            }
            Some(kept) if kept.allowed() => {
                let released = ScanRecord {
                    scanner: kept.actor,
                    verdict: "clean".into(),
                    note: "released by an operator".into(),
                    version: String::new(),
                };
                return Ok(Safety::Pass(vec![released]));
            }
            _ => {}
        }
        if !self.scanners.any() {
            return Ok(Safety::Pass(Vec::new()));
        }
        let outcome = self.scanners.scan(&self.objects, media).await;
        let last = |records: &[ScanRecord]| records.last().cloned().unwrap_or_default();
        match outcome {
            ScanOutcome::Clean(records) => {
                metrics::counter!("im_media_scans_total", "verdict" => "clean").increment(1);
                announce(&*self.bus, media, MediaStage::ScanClean, "").await;
                Ok(Safety::Pass(records))
            }
            ScanOutcome::Quarantine(records) => {
                metrics::counter!("im_media_scans_total", "verdict" => "quarantine").increment(1);
                let finding = last(&records);
                let reason = format!("{}: {}", finding.scanner, finding.note);
                self.quarantine_hash(&media.sha256_hex, &reason, &finding.scanner)
                    .await?;
                self.settled(&media.media_id).await
            }
            ScanOutcome::Reject(records) => {
                metrics::counter!("im_media_scans_total", "verdict" => "reject").increment(1);
                let finding = last(&records);
                self.reject(media, &format!("{}: {}", finding.scanner, finding.note))
                    .await?;
                self.settled(&media.media_id).await
            }
            ScanOutcome::Unavailable(records) => {
                metrics::counter!("im_media_scans_total", "verdict" => "unavailable").increment(1);
                let failed = last(&records);
                tracing::warn!(
                    media_id = %media.media_id,
                    scanner = %failed.scanner,
                    why = %failed.note,
                    policy = ?self.unavailable,
                    "media scanner unavailable"
                );
                self.alert(media, &failed).await;
                match self.unavailable {
                    WhenUnavailable::Hold => self.settled(&media.media_id).await,
                    WhenUnavailable::Allow => Ok(Safety::Pass(records)),
                }
            }
        }
    }

    async fn settled(&self, media_id: &str) -> Result<Safety, BusinessError> {
        let media = self.store.get_media(media_id).await?;
        let media = media.ok_or_else(|| BusinessError::MediaNotFound(media_id.to_owned()))?;
        Ok(Safety::Settled(Box::new(media)))
    }

    /// Tells operators on `im.monitor` that a scanner could not answer.
    async fn alert(&self, media: &MediaRecord, failed: &ScanRecord) {
        let alert = v1::MonitorAlert {
            source: "im-business".into(),
            name: "media_scanner_unavailable".into(),
            severity: AlertSeverity::Warning.into(),
            message: format!(
                "{} could not scan media {} ({}); policy {:?}",
                failed.scanner, media.media_id, failed.note, self.unavailable
            ),
            value: 1.0,
            time_ms: now_ms(),
        };
        if let Err(error) = self.bus.emit(&alert).await {
            tracing::warn!(%error, "monitor alert not published");
        }
    }

    /// Rejects media in processing (the app's scanner refused it): nothing kept, nothing
    /// charged. Its bytes go unless other media hold them.
    async fn reject(&self, media: &MediaRecord, why: &str) -> Result<(), BusinessError> {
        let change = MediaChange {
            detail: Some(why.to_owned()),
            ..MediaChange::default()
        };
        let (moved, media) = self
            .store
            .transition_media(
                &media.media_id,
                &[MediaState::Processing],
                MediaState::Rejected,
                &change,
                now_ms(),
            )
            .await?;
        if moved {
            tracing::info!(media_id = %media.media_id, why, "media rejected by its scan");
            self.delete_bytes_unless_held(&media).await?;
            announce(&*self.bus, &media, MediaStage::Uploaded, why).await;
        }
        Ok(())
    }

    /// Blocks the bytes of `sha256_hex` and quarantines every media holding them; the object
    /// moves to `quarantine/` and its variants go. Idempotent: asked again, it finishes what a
    /// stopped node left.
    pub(super) async fn quarantine_hash(
        &self,
        sha256_hex: &str,
        reason: &str,
        actor: &str,
    ) -> Result<usize, BusinessError> {
        let verdict = self.store.hash_verdict(sha256_hex).await?;
        if !verdict.is_some_and(|v| v.blocked() && v.reason == reason) {
            self.store
                .set_hash_verdict(&HashRecord {
                    sha256_hex: sha256_hex.to_owned(),
                    verdict: HashVerdict::Blocked as i32,
                    reason: reason.to_owned(),
                    actor: actor.to_owned(),
                    updated_at_ms: now_ms(),
                })
                .await?;
        }
        let change = MediaChange {
            detail: Some(reason.to_owned()),
            ..MediaChange::default()
        };
        let mut count = 0;
        loop {
            let holders = self
                .store
                .media_of_hash(
                    sha256_hex,
                    &[MediaState::Processing, MediaState::Ready],
                    HOLDERS_BATCH,
                )
                .await?;
            if holders.is_empty() {
                break;
            }
            for media in holders {
                let (moved, media) = self
                    .store
                    .transition_media(
                        &media.media_id,
                        &[MediaState::Processing, MediaState::Ready],
                        MediaState::Quarantined,
                        &change,
                        now_ms(),
                    )
                    .await?;
                if moved {
                    count += 1;
                    tracing::warn!(media_id = %media.media_id, sha256_hex, reason, actor, "media quarantined");
                    announce(&*self.bus, &media, MediaStage::Quarantined, reason).await;
                }
            }
        }
        metrics::counter!("im_media_quarantined_total").increment(count as u64);
        self.hide(sha256_hex).await?;
        Ok(count)
    }

    /// Allows the bytes of `sha256_hex` (an operator's release): the object moves back, and
    /// the media quarantined with them are processed again (and so served). Answers how many.
    pub(super) async fn release_hash(
        &self,
        sha256_hex: &str,
        reason: &str,
        actor: &str,
    ) -> Result<usize, BusinessError> {
        self.store
            .set_hash_verdict(&HashRecord {
                sha256_hex: sha256_hex.to_owned(),
                verdict: HashVerdict::Allowed as i32,
                reason: reason.to_owned(),
                actor: actor.to_owned(),
                updated_at_ms: now_ms(),
            })
            .await?;
        self.restore(sha256_hex).await?;
        let change = MediaChange {
            detail: Some(String::new()),
            ..MediaChange::default()
        };
        let mut released = Vec::new();
        loop {
            let held = self
                .store
                .media_of_hash(sha256_hex, &[MediaState::Quarantined], HOLDERS_BATCH)
                .await?;
            if held.is_empty() {
                break;
            }
            for media in held {
                let (moved, _) = self
                    .store
                    .transition_media(
                        &media.media_id,
                        &[MediaState::Quarantined],
                        MediaState::Processing,
                        &change,
                        now_ms(),
                    )
                    .await?;
                if moved {
                    tracing::info!(media_id = %media.media_id, sha256_hex, actor, "media released");
                    released.push(media.media_id);
                }
            }
        }
        let count = released.len();
        for media_id in released {
            // A failure leaves it processing, for the sweep.
            if let Err(error) = self.clone().process(media_id.clone()).await {
                tracing::warn!(%error, media_id, "released media not processed yet; the sweep retries");
            }
        }
        Ok(count)
    }

    /// Moves the object out of `objects/` and drops its variants.
    async fn hide(&self, sha256_hex: &str) -> Result<(), BusinessError> {
        let kept = object_key(sha256_hex);
        let held = quarantine_key(sha256_hex);
        if self
            .objects
            .size_of(&kept)
            .await
            .map_err(internal)?
            .is_some()
        {
            if self
                .objects
                .size_of(&held)
                .await
                .map_err(internal)?
                .is_none()
            {
                self.objects.copy(&kept, &held).await.map_err(internal)?;
            }
            self.objects.delete(&kept).await.map_err(internal)?;
        }
        self.delete_variants(sha256_hex).await
    }

    /// Moves a quarantined object back to `objects/`.
    async fn restore(&self, sha256_hex: &str) -> Result<(), BusinessError> {
        let kept = object_key(sha256_hex);
        let held = quarantine_key(sha256_hex);
        if self
            .objects
            .size_of(&held)
            .await
            .map_err(internal)?
            .is_some()
        {
            if self
                .objects
                .size_of(&kept)
                .await
                .map_err(internal)?
                .is_none()
            {
                self.objects.copy(&held, &kept).await.map_err(internal)?;
            }
            self.objects.delete(&held).await.map_err(internal)?;
        }
        Ok(())
    }

    /// Deletes the bytes of `media` (gone from the catalogue) and their variants, unless other
    /// media hold the same bytes.
    pub(super) async fn delete_bytes_unless_held(
        &self,
        media: &MediaRecord,
    ) -> Result<(), BusinessError> {
        let held = self
            .store
            .holders_of(&media.sha256_hex, &media.media_id)
            .await?;
        if held > 0 {
            return Ok(());
        }
        self.objects
            .delete(&object_key(&media.sha256_hex))
            .await
            .map_err(internal)?;
        self.delete_variants(&media.sha256_hex).await
    }

    async fn delete_variants(&self, sha256_hex: &str) -> Result<(), BusinessError> {
        let prefix = format!("variants/{sha256_hex}/");
        for key in self.objects.list(&prefix).await.map_err(internal)? {
            self.objects.delete(&key).await.map_err(internal)?;
        }
        Ok(())
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
