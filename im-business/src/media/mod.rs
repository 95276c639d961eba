//! Media: uploads straight to the object store, checked at completion, kept under a
//! content-addressed key, and served through short-lived signed URLs.
//!
//! The life of an upload:
//! 1. **create**: the quotas are checked and the declared size reserved in one transaction
//!    (so concurrent creates never pass a quota); the answer is a signed PUT bound to the exact
//!    size and type, expiring in minutes. Creating again with the same client id answers the
//!    same upload with fresh URLs (a resume after the URL expired).
//! 2. the client PUTs the bytes to `staging/<media id>`; the store refuses any other bytes.
//! 3. **complete** (idempotent): the staged object is first copied to a snapshot no URL can
//!    write to; the snapshot's size, digest and sniffed type are checked, and it is copied to
//!    `objects/<sha256[0:2]>/<sha256>`. A PUT to the old URL afterwards changes nothing served.
//!    Bytes that are not what was declared reject the upload: nothing kept, nothing charged.
//! 4. **abort**, or **expiry** of an upload not completed in time, releases the reservation.
//!
//! Complete and abort race safely: each moves the row from PENDING in one transaction, and
//! only one of them can.
//!
//! - [`objects`]: the [`ObjectStore`] trait; [`fs`]: its embedded backend; `s3` (feature
//!   `s3`): S3 and MinIO.
//! - [`sniff`]: what the bytes are, and how they may be served; `reading`: what users may read
//!   (their media and quotas, downloads through a message, the core's attach check).

pub mod facts;
pub mod fs;
pub mod objects;
mod processing;
mod reading;
pub mod references;
#[cfg(feature = "s3")]
pub mod s3;
pub mod scan;
pub mod sniff;
#[cfg(any(test, feature = "testing"))]
pub mod suite;

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use im_common::{bus::Bus, now_ms};
use im_proto::v1::{self, MediaKind, MediaStage, MediaState};
use sha2::{Digest, Sha256};

use crate::{
    Actor, BusinessError,
    store::{BusinessStore, MediaChange, MediaRecord, UploadLimits},
};
pub use objects::{ObjectStore, PutPolicy, Serving, SignedRequest};
pub use processing::{quarantine_key, variant_key};
pub use scan::{ScanConfig, WhenUnavailable};

/// Limits and lifetimes of media: section `[business.media]` of the config file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// The largest image, in bytes.
    pub max_image_bytes: u64,
    /// The largest audio.
    pub max_audio_bytes: u64,
    /// The largest video.
    pub max_video_bytes: u64,
    /// The largest file of any other kind.
    pub max_file_bytes: u64,
    /// The largest upload sent in one PUT; larger ones are sent in parts.
    pub max_single_put_bytes: u64,
    /// The size of each part of an upload sent in parts but the last (at least 5 MiB, S3's
    /// smallest; larger when an object would take more than 10,000 parts).
    pub part_bytes: u64,
    /// How long a signed upload URL is honoured.
    #[serde(with = "humantime_serde")]
    pub upload_url_ttl: Duration,
    /// How long an upload may stay pending before it expires and its reservation is released.
    #[serde(with = "humantime_serde")]
    pub pending_ttl: Duration,
    /// How long a signed download URL is honoured.
    #[serde(with = "humantime_serde")]
    pub download_url_ttl: Duration,
    /// Bytes one user may keep.
    pub stored_bytes_per_user: u64,
    /// Bytes one user may upload in [`Self::upload_window`].
    pub window_bytes_per_user: u64,
    /// The rolling window of [`Self::window_bytes_per_user`].
    #[serde(with = "humantime_serde")]
    pub upload_window: Duration,
    /// Uploads one user may have pending at once.
    pub pending_uploads_per_user: u32,
    /// Uploads one user may create per minute, on each node.
    pub creates_per_minute: u32,
    /// Creates in a burst above the rate.
    pub create_burst: u32,
    /// How often each node looks for uploads past their pending time (every node may: only
    /// one moves each upload).
    #[serde(with = "humantime_serde")]
    pub expiry_sweep_interval: Duration,
    /// How long a download waits for the core to show the message that references the media.
    #[serde(with = "humantime_serde")]
    pub reference_timeout: Duration,
    /// The widest or tallest image processing decodes; larger ones get no variants.
    pub max_image_dimension: u32,
    /// The most pixels of an image processing decodes.
    pub max_image_pixels: u64,
    /// The most memory decoding one image may take, in bytes.
    pub max_decode_bytes: u64,
    /// Images decoded at once on each node.
    pub processing_concurrency: u32,
    /// How long complete waits for processing (thumbnails, facts) before it answers the media
    /// as PROCESSING; processing goes on either way.
    #[serde(with = "humantime_serde")]
    pub processing_wait: Duration,
    /// Media in processing this long is taken up again by the sweep (its node stopped, or
    /// its scan was held).
    #[serde(with = "humantime_serde")]
    pub processing_stall: Duration,
    /// Content scanning (`[business.media.scan]`).
    pub scan: ScanConfig,
    /// Ready media that no message has referenced for this long is deleted.
    #[serde(with = "humantime_serde")]
    pub unreferenced_grace: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        const MIB: u64 = 1 << 20;
        Self {
            max_image_bytes: 32 * MIB,
            max_audio_bytes: 64 * MIB,
            max_video_bytes: 2048 * MIB,
            max_file_bytes: 2048 * MIB,
            max_single_put_bytes: 64 * MIB,
            part_bytes: 16 * MIB,
            upload_url_ttl: Duration::from_secs(15 * 60),
            pending_ttl: Duration::from_secs(24 * 3600),
            download_url_ttl: Duration::from_secs(5 * 60),
            stored_bytes_per_user: 10 * 1024 * MIB,
            window_bytes_per_user: 2 * 1024 * MIB,
            upload_window: Duration::from_secs(24 * 3600),
            pending_uploads_per_user: 10,
            creates_per_minute: 30,
            create_burst: 10,
            expiry_sweep_interval: Duration::from_secs(60),
            reference_timeout: Duration::from_secs(5),
            max_image_dimension: 16_384,
            max_image_pixels: 50_000_000,
            max_decode_bytes: 512 * MIB,
            processing_concurrency: 2,
            processing_wait: Duration::from_secs(10),
            processing_stall: Duration::from_secs(120),
            scan: ScanConfig::default(),
            unreferenced_grace: Duration::from_secs(24 * 3600),
        }
    }
}

impl MediaConfig {
    /// The largest object of `kind` this server takes.
    pub fn max_bytes(&self, kind: MediaKind) -> u64 {
        match kind {
            MediaKind::Image => self.max_image_bytes,
            MediaKind::Audio => self.max_audio_bytes,
            MediaKind::Video => self.max_video_bytes,
            MediaKind::File | MediaKind::Unspecified => self.max_file_bytes,
        }
    }

    /// The size of each part of an upload of `size` bytes sent in parts: `part_bytes`, or
    /// more where `size` would take more parts than S3 allows.
    pub fn part_size_for(&self, size: u64) -> u64 {
        self.part_bytes.max(size.div_ceil(u64::from(MAX_PARTS)))
    }
}

/// Where the bucket is: section `[business.media_s3]` of the config file; when set,
/// media live there instead of under `media_dir` (feature `s3`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The server's URL, as clients reach it (`https://s3.eu-west-1.amazonaws.com`,
    /// `http://minio.internal:9000`): the signed URLs start with it.
    pub endpoint: String,
    /// The bucket; created at start if it does not exist.
    pub bucket: String,
    /// The region the signatures name (`us-east-1` for MinIO unless it was set otherwise).
    pub region: String,
    /// The access key.
    pub access_key: String,
    /// The secret key.
    pub secret_key: im_common::settings::Secret,
    /// Bucket in the host name (`https://<bucket>.s3...`) rather than the path.
    pub virtual_host: bool,
}

/// The message through which a user other than the uploader reads media: its conversation
/// and seq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageAt {
    /// The conversation (empty: none named).
    pub conversation_id: String,
    /// The seq of the message that references the media.
    pub seq: u64,
}

/// What a client asks to upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewUpload {
    /// The uploader.
    pub user_id: String,
    /// What kind of media.
    pub kind: MediaKind,
    /// The declared type.
    pub mime_type: String,
    /// The exact size.
    pub size_bytes: u64,
    /// The SHA-256 (hex), or empty.
    pub sha256_hex: String,
    /// The file name.
    pub file_name: String,
    /// The client's id of the upload, or empty.
    pub client_upload_id: String,
}

/// A created upload: where to PUT, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The media as it now is (PENDING, or further along for a create answered again).
    pub media: MediaRecord,
    /// The requests to make (none once the upload was completed).
    pub parts: Vec<SignedRequest>,
}

/// The most parts one upload takes (S3's limit).
const MAX_PARTS: u16 = 10_000;

/// How many parts of `part` bytes an object of `size` bytes takes (1 at least).
fn part_count(size: u64, part: u64) -> u16 {
    u16::try_from(size.div_ceil(part.max(1)).max(1)).unwrap_or(MAX_PARTS)
}

/// The variant of media to download.
pub const ORIGINAL: &str = "original";

/// How long to wait before asking again for media that is still being processed.
const PROCESSING_RETRY_MS: u64 = 1_000;

/// Bytes read at a time while hashing an object.
const HASH_CHUNK: u64 = 8 << 20;

/// Uploads expired per store round trip by the sweep.
const EXPIRY_BATCH: u32 = 500;

/// The longest file name, declared type and client upload id.
/// Characters, as the API's schema counts them.
const MAX_FILE_NAME_CHARS: usize = 255;
const MAX_MIME_BYTES: usize = 255;

/// The media service: uploads, their checks, and downloads.
pub struct Media {
    store: Arc<dyn BusinessStore>,
    objects: Arc<dyn ObjectStore>,
    bus: Arc<dyn Bus>,
    config: MediaConfig,
    creates: DefaultKeyedRateLimiter<String>,
    processor: processing::Processor,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The staging key of an upload.
fn staging_key(media_id: &str) -> String {
    format!("staging/{media_id}")
}

/// The content-addressed key of verified bytes.
pub fn object_key(sha256_hex: &str) -> String {
    format!(
        "objects/{}/{sha256_hex}",
        &sha256_hex[..2.min(sha256_hex.len())]
    )
}

fn invalid(message: impl Into<String>) -> BusinessError {
    BusinessError::InvalidArgument(message.into())
}

fn internal(error: impl std::fmt::Display) -> BusinessError {
    BusinessError::Internal(error.to_string())
}

fn parse_sha256(hex_digest: &str) -> Result<Option<[u8; 32]>, BusinessError> {
    if hex_digest.is_empty() {
        return Ok(None);
    }
    let mut digest = [0_u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest)
        .map_err(|_| invalid("sha256_hex is not 64 hex digits"))?;
    Ok(Some(digest))
}

impl Media {
    /// The service over the business `store` (its catalogue), keeping bytes in `objects` and
    /// announcing on `bus`.
    pub fn new(
        store: Arc<dyn BusinessStore>,
        objects: Arc<dyn ObjectStore>,
        bus: Arc<dyn Bus>,
        config: MediaConfig,
    ) -> Self {
        let rate = NonZeroU32::new(config.creates_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.create_burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let creates = DefaultKeyedRateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst));
        let scanners = scan::Scanners::new(&config.scan);
        let processor = processing::Processor::new(
            store.clone(),
            objects.clone(),
            bus.clone(),
            &config,
            scanners,
        );
        Self {
            store,
            objects,
            bus,
            config,
            creates,
            processor,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// The object store.
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// The actor may act for `user_id`: the app, or the user itself.
    fn may_act_for(actor: &Actor, user_id: &str) -> Result<(), BusinessError> {
        match actor {
            Actor::App => Ok(()),
            Actor::User(user) if user == user_id => Ok(()),
            Actor::User(_) => Err(BusinessError::Forbidden(
                "a user uploads and manages only its own media".into(),
            )),
        }
    }

    /// A user acting for itself must be active: a deactivated user manages nothing, as
    /// everywhere else in the API.
    async fn active_actor(&self, actor: &Actor) -> Result<(), BusinessError> {
        let Actor::User(user_id) = actor else {
            return Ok(());
        };
        match self.store.get_user(user_id).await? {
            Some(user) if user.active => Ok(()),
            Some(_) => Err(BusinessError::UserDisabled(user_id.clone())),
            None => Err(BusinessError::UserNotFound(user_id.clone())),
        }
    }

    /// The media, if the actor owns it (or is the app); otherwise not found, so that ids of
    /// others' uploads tell nothing.
    async fn owned(&self, actor: &Actor, media_id: &str) -> Result<MediaRecord, BusinessError> {
        self.active_actor(actor).await?;
        let media = self
            .store
            .get_media(media_id)
            .await?
            .ok_or_else(|| BusinessError::MediaNotFound(media_id.to_owned()))?;
        match actor {
            Actor::App => Ok(media),
            Actor::User(user) if *user == media.owner_user_id => Ok(media),
            Actor::User(_) => Err(BusinessError::MediaNotFound(media_id.to_owned())),
        }
    }

    /// Starts an upload: checks the request and the quotas, reserves the size, and signs the
    /// PUT. The same client upload id again answers the same upload, with fresh URLs while it
    /// is pending.
    pub async fn create_upload(
        &self,
        actor: &Actor,
        new: NewUpload,
    ) -> Result<Upload, BusinessError> {
        Self::may_act_for(actor, &new.user_id)?;
        let user = self
            .store
            .get_user(&new.user_id)
            .await?
            .ok_or_else(|| BusinessError::UserNotFound(new.user_id.clone()))?;
        if !user.active {
            return Err(BusinessError::UserDisabled(new.user_id));
        }
        let kind = new.kind;
        if kind == MediaKind::Unspecified {
            return Err(invalid("kind is required"));
        }
        let max = self.config.max_bytes(kind);
        if new.size_bytes == 0 {
            return Err(invalid("size_bytes must be at least 1"));
        }
        if new.size_bytes > max {
            return Err(BusinessError::QuotaExceeded {
                what: "object size",
                limit: max,
            });
        }
        // No declared type: the bytes will say (the sniffed type wins anyway).
        let mut mime = new.mime_type.trim().to_ascii_lowercase();
        if mime.is_empty() {
            mime = "application/octet-stream".to_owned();
        }
        if mime.len() > MAX_MIME_BYTES
            || !mime.contains('/')
            || !mime.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid("mime_type must be a type/subtype"));
        }
        if new.file_name.chars().count() > MAX_FILE_NAME_CHARS
            || new.file_name.chars().any(char::is_control)
        {
            return Err(invalid(format!(
                "file_name: at most {MAX_FILE_NAME_CHARS} characters, no control characters"
            )));
        }
        let sha256 = parse_sha256(&new.sha256_hex)?;
        if !new.client_upload_id.is_empty()
            && new.client_upload_id.parse::<im_proto::UserId>().is_err()
        {
            return Err(invalid("client_upload_id: 1 to 64 of A-Z a-z 0-9 _ . @ -"));
        }
        if let Err(denied) = self.creates.check_key(&new.user_id) {
            let wait = denied.wait_time_from(governor::clock::DefaultClock::default().now());
            return Err(BusinessError::RateLimited {
                what: "media uploads created",
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            });
        }
        let now = now_ms();
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let media_id = uuid::Uuid::new_v4().to_string();
        let client_upload_id = if new.client_upload_id.is_empty() {
            media_id.clone()
        } else {
            new.client_upload_id.clone()
        };
        let size = i64::try_from(new.size_bytes).unwrap_or(i64::MAX);
        let staging = staging_key(&media_id);
        let (multipart_id, part_bytes) = if new.size_bytes > self.config.max_single_put_bytes {
            let id = self
                .objects
                .start_multipart(&staging, &mime)
                .await
                .map_err(internal)?;
            let part = self.config.part_size_for(new.size_bytes);
            (id, i64::try_from(part).unwrap_or(i64::MAX))
        } else {
            (String::new(), 0)
        };
        let record = MediaRecord {
            media_id,
            owner_user_id: new.user_id.clone(),
            client_upload_id,
            kind: kind as i32,
            state: MediaState::Pending as i32,
            mime_type: mime,
            size_bytes: size,
            sha256_hex: sha256.map(hex::encode).unwrap_or_default(),
            file_name: new.file_name,
            detail: String::new(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ms(self.config.pending_ttl)),
            updated_at_ms: now,
            facts: String::new(),
            multipart_id,
            part_bytes,
        };
        let limits = UploadLimits {
            stored_bytes: self.config.stored_bytes_per_user,
            window_bytes: self.config.window_bytes_per_user,
            window_start_ms: now.saturating_sub(ms(self.config.upload_window)),
            pending_uploads: self.config.pending_uploads_per_user,
        };
        let created = self.store.create_upload(&record, &limits).await;
        let fresh = created
            .as_ref()
            .is_ok_and(|media| media.media_id == record.media_id);
        if !fresh && !record.multipart_id.is_empty() {
            // Refused, or answered by an upload made before: the parts started are not used.
            let _ = self
                .objects
                .abort_multipart(&staging, &record.multipart_id)
                .await;
        }
        let media = created?;
        if !fresh && (media.size_bytes != record.size_bytes || media.kind != record.kind) {
            return Err(BusinessError::Conflict(format!(
                "client_upload_id {} names another upload",
                record.client_upload_id
            )));
        }
        let parts = if media.state() == MediaState::Pending {
            let expires = now
                .saturating_add(ms(self.config.upload_url_ttl))
                .min(media.expires_at_ms);
            self.sign_parts(&media, expires)?
        } else {
            Vec::new()
        };
        if fresh {
            tracing::info!(media_id = %media.media_id, user_id = %media.owner_user_id, size = media.size_bytes, "upload created");
            self.announce(&media, MediaStage::UploadSigned, "").await;
        }
        Ok(Upload { media, parts })
    }

    /// The signed requests that send a pending upload's bytes: one PUT, or one per part.
    fn sign_parts(
        &self,
        media: &MediaRecord,
        expires_at_ms: i64,
    ) -> Result<Vec<SignedRequest>, BusinessError> {
        let staging = staging_key(&media.media_id);
        let size = u64::try_from(media.size_bytes).unwrap_or(0);
        if media.multipart_id.is_empty() {
            let policy = PutPolicy {
                size_bytes: size,
                content_type: media.mime_type.clone(),
                sha256: parse_sha256(&media.sha256_hex)?,
            };
            return Ok(vec![self.objects.sign_put(
                &staging,
                &policy,
                expires_at_ms,
            )]);
        }
        let part = u64::try_from(media.part_bytes).unwrap_or(0).max(1);
        Ok((1..=part_count(size, part))
            .map(|number| {
                let start = u64::from(number - 1) * part;
                let len = part.min(size - start);
                self.objects
                    .sign_part(&staging, &media.multipart_id, number, len, expires_at_ms)
            })
            .collect())
    }

    /// Joins the parts of an upload sent in parts into its staged object, unless that was
    /// done already (a complete asked again after a failure).
    async fn join_parts(&self, media: &MediaRecord) -> Result<(), BusinessError> {
        let staging = staging_key(&media.media_id);
        let size = u64::try_from(media.size_bytes).unwrap_or(0);
        if self.objects.size_of(&staging).await.map_err(internal)? == Some(size) {
            return Ok(());
        }
        let part = u64::try_from(media.part_bytes).unwrap_or(0).max(1);
        let count = part_count(size, part);
        match self
            .objects
            .finish_multipart(&staging, &media.multipart_id, count)
            .await
        {
            Ok(()) => Ok(()),
            Err(objects::ObjectError::NotFound(missing)) => Err(BusinessError::Conflict(format!(
                "not every part was uploaded yet ({missing} of {count} parts is missing): PUT each part first"
            ))),
            Err(other) => Err(internal(other)),
        }
    }

    /// Completes an upload: the staged bytes are checked and kept under their digest. Asking
    /// again answers the media as it is; an upload whose bytes were rejected answers
    /// MEDIA_REJECTED again.
    pub async fn complete_upload(
        &self,
        actor: &Actor,
        media_id: &str,
    ) -> Result<MediaRecord, BusinessError> {
        let media = self.owned(actor, media_id).await?;
        match media.state() {
            MediaState::Pending => {}
            MediaState::Rejected => return Err(BusinessError::MediaRejected(media.detail)),
            MediaState::Aborted | MediaState::Deleted | MediaState::Unspecified => {
                return Err(BusinessError::MediaNotFound(media_id.to_owned()));
            }
            MediaState::Processing | MediaState::Ready | MediaState::Quarantined => {
                return Ok(media);
            }
        }
        let staging = staging_key(media_id);
        if !media.multipart_id.is_empty()
            && let Err(error) = self.join_parts(&media).await
        {
            // A concurrent complete or abort may have settled it and ended the upload.
            if self.owned(actor, media_id).await?.state() != MediaState::Pending {
                return Box::pin(self.complete_upload(actor, media_id)).await;
            }
            return Err(error);
        }
        // A snapshot no signed URL can write to: what is checked is what is kept.
        let snapshot = format!("verify/{media_id}/{}", uuid::Uuid::new_v4().simple());
        if let Err(error) = self.objects.copy(&staging, &snapshot).await {
            // A concurrent complete or abort may have settled it and removed the staging.
            if self.owned(actor, media_id).await?.state() != MediaState::Pending {
                return Box::pin(self.complete_upload(actor, media_id)).await;
            }
            return Err(match error {
                objects::ObjectError::NotFound(_) => BusinessError::Conflict(
                    "nothing was uploaded yet: PUT the bytes to the signed URL first".into(),
                ),
                other => internal(other),
            });
        }
        let outcome = self.verify(&media, &snapshot).await;
        let settled = match outcome {
            Ok((sha256_hex, mime)) => {
                let blocked = match self.store.hash_verdict(&sha256_hex).await {
                    Ok(verdict) => verdict.filter(|v| v.blocked()),
                    Err(error) => {
                        let _ = self.objects.delete(&snapshot).await;
                        return Err(error.into());
                    }
                };
                // Bytes blocked already are quarantined at once, wherever they come from.
                let (kept, to, detail) = match blocked {
                    Some(verdict) => (
                        quarantine_key(&sha256_hex),
                        MediaState::Quarantined,
                        Some(verdict.reason),
                    ),
                    None => (object_key(&sha256_hex), MediaState::Processing, None),
                };
                let copied = match self.objects.size_of(&kept).await {
                    // The same bytes are kept already (another upload of them).
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => self.objects.copy(&snapshot, &kept).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = copied {
                    let _ = self.objects.delete(&snapshot).await;
                    return Err(internal(error));
                }
                let change = MediaChange {
                    mime_type: Some(mime),
                    sha256_hex: Some(sha256_hex),
                    detail,
                    ..MediaChange::default()
                };
                self.settle(media_id, to, &change).await
            }
            Err(Rejection::Refused(why)) => {
                let change = MediaChange {
                    detail: Some(why),
                    ..MediaChange::default()
                };
                self.settle(media_id, MediaState::Rejected, &change).await
            }
            Err(Rejection::Failed(error)) => {
                let _ = self.objects.delete(&snapshot).await;
                return Err(error);
            }
        };
        let _ = self.objects.delete(&snapshot).await;
        let (moved, media) = settled?;
        if moved {
            let _ = self.objects.delete(&staging).await;
        }
        match media.state() {
            MediaState::Rejected => {
                if moved {
                    tracing::info!(media_id, detail = %media.detail, "upload rejected");
                    self.announce(&media, MediaStage::Uploaded, &media.detail)
                        .await;
                }
                Err(BusinessError::MediaRejected(media.detail))
            }
            MediaState::Aborted | MediaState::Deleted => {
                Err(BusinessError::MediaNotFound(media_id.to_owned()))
            }
            _ => {
                if moved {
                    tracing::info!(media_id, mime = %media.mime_type, size = media.size_bytes, "upload completed");
                    self.announce(&media, MediaStage::Uploaded, "").await;
                    if media.state() == MediaState::Quarantined {
                        tracing::warn!(media_id, sha256_hex = %media.sha256_hex, "blocked bytes quarantined at complete");
                        self.announce(&media, MediaStage::Quarantined, &media.detail)
                            .await;
                    }
                }
                Ok(self.processed_within_wait(media).await)
            }
        }
    }

    /// Processes the media (on a task of its own, which goes on past the wait) and answers it
    /// as it is once processing ends or `processing_wait` is over, whichever comes first.
    async fn processed_within_wait(&self, media: MediaRecord) -> MediaRecord {
        if media.state() != MediaState::Processing {
            return media;
        }
        let processing = tokio::spawn(self.processor.clone().process(media.media_id.clone()));
        match tokio::time::timeout(self.config.processing_wait, processing).await {
            Ok(Ok(Ok(processed))) => processed,
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, media_id = %media.media_id, "processing failed; the sweep retries");
                media
            }
            Ok(Err(_)) | Err(_) => media,
        }
    }

    /// Moves a pending upload to `to`; only one of complete, abort and expiry can.
    async fn settle(
        &self,
        media_id: &str,
        to: MediaState,
        change: &MediaChange,
    ) -> Result<(bool, MediaRecord), BusinessError> {
        Ok(self
            .store
            .transition_media(media_id, &[MediaState::Pending], to, change, now_ms())
            .await?)
    }

    /// The digest and the settled type of the snapshot, or why it is not what was declared.
    async fn verify(
        &self,
        media: &MediaRecord,
        snapshot: &str,
    ) -> Result<(String, String), Rejection> {
        let failed = |e: objects::ObjectError| Rejection::Failed(internal(e));
        let size = self
            .objects
            .size_of(snapshot)
            .await
            .map_err(failed)?
            .unwrap_or(0);
        let declared = u64::try_from(media.size_bytes).unwrap_or(0);
        if size != declared {
            return Err(Rejection::Refused(format!(
                "{size} bytes stored, {declared} declared"
            )));
        }
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut offset = 0;
        while offset < size {
            let chunk = self
                .objects
                .read_range(snapshot, offset, HASH_CHUNK)
                .await
                .map_err(failed)?;
            if chunk.is_empty() {
                break;
            }
            if offset == 0 {
                head = chunk[..chunk.len().min(sniff::SNIFF_BYTES as usize)].to_vec();
            }
            offset += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let digest = hex::encode(hasher.finalize());
        if !media.sha256_hex.is_empty() && media.sha256_hex != digest {
            return Err(Rejection::Refused(format!(
                "the bytes' SHA-256 is {digest}, {} declared",
                media.sha256_hex
            )));
        }
        let kind = MediaKind::try_from(media.kind).unwrap_or(MediaKind::File);
        let mime = sniff::settle(kind, &media.mime_type, sniff::sniff(&head))
            .map_err(Rejection::Refused)?;
        Ok((digest, mime))
    }

    /// Quarantines the media's bytes (an operator's decision, the app only): every media
    /// holding them is served to no one, and the same bytes uploaded again are quarantined at
    /// complete. An operator's quarantine overrides an earlier release. Answers the media as
    /// it now is.
    pub async fn quarantine_media(
        &self,
        actor: &Actor,
        media_id: &str,
        reason: &str,
    ) -> Result<MediaRecord, BusinessError> {
        let media = self.moderated(actor, media_id, reason).await?;
        self.processor
            .quarantine_hash(&media.sha256_hex, reason, "operator")
            .await?;
        self.moderated(actor, media_id, reason).await
    }

    /// Releases the media's bytes (an operator's decision, the app only): they are allowed
    /// from now on (never scanned or quarantined automatically again: this also protects
    /// media that was never held), and every media quarantined with them is processed and
    /// served again. Answers the media as it is once processed, or after `processing_wait`.
    pub async fn release_media(
        &self,
        actor: &Actor,
        media_id: &str,
        reason: &str,
    ) -> Result<MediaRecord, BusinessError> {
        let media = self.moderated(actor, media_id, reason).await?;
        let processor = self.processor.clone();
        let (sha256_hex, reason) = (media.sha256_hex.clone(), reason.to_owned());
        let releasing = tokio::spawn(async move {
            processor
                .release_hash(&sha256_hex, &reason, "operator")
                .await
        });
        match tokio::time::timeout(self.config.processing_wait, releasing).await {
            Ok(Ok(done)) => {
                done?;
            }
            Ok(Err(error)) => return Err(internal(error)),
            // Goes on; the media answers as processing meanwhile.
            Err(_) => {}
        }
        self.store
            .get_media(media_id)
            .await?
            .ok_or_else(|| BusinessError::MediaNotFound(media_id.to_owned()))
    }

    /// Completed media an operator acts on, with a reason given.
    async fn moderated(
        &self,
        actor: &Actor,
        media_id: &str,
        reason: &str,
    ) -> Result<MediaRecord, BusinessError> {
        if *actor != Actor::App {
            return Err(BusinessError::Forbidden(
                "only the app (an operator) quarantines or releases media".into(),
            ));
        }
        if reason.trim().is_empty() || reason.chars().count() > 1024 {
            return Err(invalid(
                "a reason of 1 to 1024 characters, not only spaces, is required",
            ));
        }
        let media = self.owned(actor, media_id).await?;
        match media.state() {
            MediaState::Processing | MediaState::Ready | MediaState::Quarantined => Ok(media),
            state => Err(BusinessError::Conflict(format!(
                "the media is {}: only completed media is moderated",
                state.as_str_name()
            ))),
        }
    }

    /// Gives up a pending upload: its reservation is released and its staged bytes deleted.
    /// Aborting an upload aborted already succeeds; one completed is a CONFLICT.
    pub async fn abort_upload(&self, actor: &Actor, media_id: &str) -> Result<(), BusinessError> {
        self.owned(actor, media_id).await?;
        let (moved, media) = self
            .store
            .transition_media(
                media_id,
                &[MediaState::Pending],
                MediaState::Aborted,
                &MediaChange::default(),
                now_ms(),
            )
            .await?;
        match media.state() {
            MediaState::Aborted => {
                if moved {
                    self.discard_staging(&media).await;
                    self.announce(&media, MediaStage::Deleted, "aborted").await;
                }
                Ok(())
            }
            _ => Err(BusinessError::Conflict(format!(
                "the upload is {}, not pending",
                media.state().as_str_name()
            ))),
        }
    }

    /// Aborts up to `limit` uploads that were not completed in time, deleting their staged
    /// bytes and releasing their reservations; answers how many.
    pub async fn expire_uploads(&self, now_ms: i64, limit: u32) -> Result<usize, BusinessError> {
        let expired = self.store.expired_uploads(now_ms, limit).await?;
        let mut count = 0;
        for media in expired {
            let change = MediaChange {
                detail: Some("not completed in time".into()),
                ..MediaChange::default()
            };
            let (moved, media) = self
                .store
                .transition_media(
                    &media.media_id,
                    &[MediaState::Pending],
                    MediaState::Aborted,
                    &change,
                    now_ms,
                )
                .await?;
            if moved {
                self.discard_staging(&media).await;
                self.announce(&media, MediaStage::Deleted, "expired").await;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Expires uploads past their pending time every [`MediaConfig::expiry_sweep_interval`]
    /// until `stop`.
    pub async fn sweep_expired(&self, stop: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval(
            self.config
                .expiry_sweep_interval
                .max(Duration::from_secs(1)),
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let stall = i64::try_from(self.config.processing_stall.as_millis()).unwrap_or(i64::MAX);
            let stalled_since = now_ms().saturating_sub(stall);
            match self.processor.resume(stalled_since, EXPIRY_BATCH).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "stalled processing resumed"),
                Err(error) => {
                    tracing::warn!(%error, "resuming processing failed; next sweep retries")
                }
            }
            match self
                .collect_unreferenced(now_ms(), references::COLLECT_BATCH)
                .await
            {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "unreferenced media deleted"),
                Err(error) => {
                    tracing::warn!(%error, "deleting unreferenced media failed; next sweep retries")
                }
            }
            loop {
                match self.expire_uploads(now_ms(), EXPIRY_BATCH).await {
                    Ok(count) if count > 0 => {
                        tracing::info!(count, "expired uploads released");
                        if count < EXPIRY_BATCH as usize {
                            break;
                        }
                    }
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "expiring uploads failed; next sweep retries");
                        break;
                    }
                }
            }
        }
    }

    /// Deletes what an upload that was given up left: its staged object and its parts.
    async fn discard_staging(&self, media: &MediaRecord) {
        let staging = staging_key(&media.media_id);
        if !media.multipart_id.is_empty()
            && let Err(error) = self
                .objects
                .abort_multipart(&staging, &media.multipart_id)
                .await
        {
            tracing::warn!(%error, media_id = %media.media_id, "parts of an upload given up not deleted");
        }
        let _ = self.objects.delete(&staging).await;
    }

    async fn announce(&self, media: &MediaRecord, stage: MediaStage, detail: &str) {
        announce(&*self.bus, media, stage, detail).await;
    }
}

/// Announces a stage of the media on its subject (`im.upload` for signed and uploaded,
/// `im.process` for processed, `im.scan` for clean and quarantined, `im.media` for deleted).
async fn announce(bus: &dyn Bus, media: &MediaRecord, stage: MediaStage, detail: &str) {
    {
        let event = v1::MediaEvent {
            media_id: media.media_id.clone(),
            stage: stage as i32,
            owner_user_id: media.owner_user_id.clone(),
            mime_type: media.mime_type.clone(),
            size_bytes: u64::try_from(media.size_bytes).unwrap_or(0),
            time_ms: now_ms(),
            detail: detail.to_owned(),
        };
        let published = match stage {
            MediaStage::UploadSigned | MediaStage::Uploaded => {
                let upload = v1::UploadEvent { media: Some(event) };
                bus.emit(&upload).await
            }
            MediaStage::Processed => {
                let processed = v1::ProcessEvent { media: Some(event) };
                bus.emit(&processed).await
            }
            MediaStage::ScanClean | MediaStage::Quarantined => {
                let scanned = v1::ScanEvent { media: Some(event) };
                bus.emit(&scanned).await
            }
            _ => bus.emit(&event).await,
        };
        if let Err(error) = published {
            tracing::warn!(%error, media_id = %media.media_id, "media event not published");
        }
    }
}

/// Why a completion did not keep the bytes.
enum Rejection {
    /// The bytes are not what was declared.
    Refused(String),
    /// The store failed: try again.
    Failed(BusinessError),
}
