//! Media through the business API with the user's own token: an upload is created there, its
//! bytes PUT straight to the object store at the signed URL it answers, and completed there;
//! a download is signed there for a message the user can read, and fetched from the store.
//!
//! Answers are parsed into structs that mirror im-business's `UploadJson`, `MediaJson` and
//! `SignedRequestJson`, each field the SDK reads required (see `groups`).

use std::sync::Arc;

use base64::Engine as _;
use im_proto::{ErrorCode, v1};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::{
    error::{Error, Result},
    groups::{BusinessApi, parse, refusal, unavailable},
};

/// An uploaded object as the business API knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// The server's id of the media.
    pub media_id: String,
    /// `pending`, `processing`, `ready`, `quarantined`, `rejected`, `aborted` or `deleted`.
    pub state: String,
    /// Image, video, audio or file.
    pub kind: v1::MediaKind,
    /// The type the server sniffed from the bytes once completed (the declared one before).
    pub mime_type: String,
    /// The exact size.
    pub size_bytes: u64,
    /// The name shown to downloaders.
    pub file_name: String,
    /// Width as shown, once processed (0: unknown).
    pub width: u32,
    /// Height as shown, once processed (0: unknown).
    pub height: u32,
    /// Whether the image has more than one frame.
    pub animated: bool,
    /// A ThumbHash of an image: a placeholder to show before a thumbnail loads (empty: none).
    pub thumbhash: Vec<u8>,
    /// The renditions the server made, smallest first ([`crate::Client::download_variant`]).
    pub variants: Vec<MediaVariant>,
}

/// A rendition the server made of media (a thumbnail).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MediaVariant {
    /// `thumb_96`, `thumb_320` or `thumb_1024`: the longest side in pixels.
    pub name: String,
    /// Its type.
    pub mime_type: String,
    /// Its width.
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// Its size.
    pub size_bytes: u64,
}

impl Media {
    /// Whether it is processed and can be downloaded.
    pub fn is_ready(&self) -> bool {
        self.state == "ready"
    }

    /// Whether its upload was completed (ready, or still being processed): it can be sent.
    pub fn is_completed(&self) -> bool {
        self.is_ready() || self.state == "processing"
    }

    /// The reference a message carries ([`crate::ContentKind::Media`]).
    pub fn to_ref(&self) -> v1::MediaRef {
        v1::MediaRef {
            kind: self.kind.into(),
            media_id: self.media_id.clone(),
            mime_type: self.mime_type.clone(),
            size_bytes: self.size_bytes,
            file_name: self.file_name.clone(),
            width: self.width,
            height: self.height,
            ..v1::MediaRef::default()
        }
    }
}

/// How far an upload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadProgress {
    /// The server created (or, for the same client upload id, found) the upload.
    Created {
        /// The server's id of the media.
        media_id: String,
    },
    /// The object store took a part of the bytes (all of them, for an upload in one PUT).
    Sent {
        /// Bytes sent so far.
        bytes: u64,
        /// Bytes in all.
        total: u64,
    },
    /// The server checked the bytes and keeps them.
    Completed,
}

/// What to upload: the bytes and what they are.
pub struct NewUpload {
    kind: v1::MediaKind,
    mime_type: String,
    bytes: Vec<u8>,
    file_name: String,
    client_upload_id: String,
    on_progress: Option<Arc<dyn Fn(UploadProgress) + Send + Sync>>,
}

impl std::fmt::Debug for NewUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUpload")
            .field("kind", &self.kind)
            .field("mime_type", &self.mime_type)
            .field("size_bytes", &self.bytes.len())
            .field("client_upload_id", &self.client_upload_id)
            .finish_non_exhaustive()
    }
}

impl NewUpload {
    /// `bytes` of `kind`, declared as `mime_type` (the type sniffed from the bytes wins), with
    /// a fresh client upload id.
    pub fn new(kind: v1::MediaKind, mime_type: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            kind,
            mime_type: mime_type.into(),
            bytes,
            file_name: String::new(),
            client_upload_id: uuid::Uuid::new_v4().to_string(),
            on_progress: None,
        }
    }

    /// The name shown to downloaders.
    pub fn file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = name.into();
        self
    }

    /// The app's id of this upload. Uploading again with the same id (after a cut connection,
    /// a cancellation or an app restart) resumes the same upload: one media, charged once.
    pub fn client_upload_id(mut self, id: impl Into<String>) -> Self {
        self.client_upload_id = id.into();
        self
    }

    /// The id uploading again with resumes (fresh unless [`Self::client_upload_id`] set it).
    pub fn id(&self) -> &str {
        &self.client_upload_id
    }

    /// Called as the upload moves on.
    pub fn on_progress(mut self, f: impl Fn(UploadProgress) + Send + Sync + 'static) -> Self {
        self.on_progress = Some(Arc::new(f));
        self
    }

    fn report(&self, progress: UploadProgress) {
        if let Some(f) = &self.on_progress {
            f(progress);
        }
    }
}

/// Media as the business API answers it (`MediaJson`).
#[derive(Deserialize)]
struct MediaJson {
    media_id: String,
    state: String,
    kind: String,
    mime_type: String,
    size_bytes: u64,
    file_name: String,
    #[serde(default)]
    width: u32,
    #[serde(default)]
    height: u32,
    #[serde(default)]
    animated: bool,
    /// Base64.
    #[serde(default)]
    thumbhash: String,
    #[serde(default)]
    variants: Vec<MediaVariant>,
}

impl From<MediaJson> for Media {
    fn from(m: MediaJson) -> Self {
        let kind = match m.kind.as_str() {
            "image" => v1::MediaKind::Image,
            "video" => v1::MediaKind::Video,
            "audio" => v1::MediaKind::Audio,
            _ => v1::MediaKind::File,
        };
        Self {
            media_id: m.media_id,
            state: m.state,
            kind,
            mime_type: m.mime_type,
            size_bytes: m.size_bytes,
            file_name: m.file_name,
            width: m.width,
            height: m.height,
            animated: m.animated,
            thumbhash: base64::engine::general_purpose::STANDARD
                .decode(m.thumbhash)
                .unwrap_or_default(),
            variants: m.variants,
        }
    }
}

/// A request to make straight to the object store (`SignedRequestJson`).
#[derive(Deserialize)]
struct SignedRequest {
    url: String,
    method: String,
    headers: Vec<Header>,
}

#[derive(Deserialize)]
struct Header {
    name: String,
    value: String,
}

/// An upload as created (`UploadJson`): the media, and what to PUT (nothing once completed).
#[derive(Deserialize)]
struct UploadJson {
    media: MediaJson,
    parts: Vec<SignedRequest>,
    /// For an upload in parts, the size of each part but the last.
    #[serde(default)]
    part_size_bytes: u64,
}

fn kind_name(kind: v1::MediaKind) -> &'static str {
    match kind {
        v1::MediaKind::Image => "image",
        v1::MediaKind::Video => "video",
        v1::MediaKind::Audio => "audio",
        _ => "file",
    }
}

impl BusinessApi {
    /// Creates (or resumes) the upload, PUTs its bytes unless the server has them, completes
    /// it.
    pub(crate) async fn upload(&self, user_id: &str, upload: &NewUpload) -> Result<Media> {
        let body = json!({
            "user_id": user_id,
            "kind": kind_name(upload.kind),
            "mime_type": upload.mime_type,
            "size_bytes": upload.bytes.len(),
            "file_name": upload.file_name,
            "client_upload_id": upload.client_upload_id,
        });
        let answer = self
            .call(Method::POST, "/v1/media/uploads", Some(body))
            .await?;
        let created = parse::<UploadJson>("an upload", &answer)?;
        let media = Media::from(created.media);
        upload.report(UploadProgress::Created {
            media_id: media.media_id.clone(),
        });
        if media.state != "pending" {
            // Completed before (a resumed upload): nothing to send again.
            return if media.is_completed() {
                upload.report(UploadProgress::Completed);
                Ok(media)
            } else {
                Err(Error::new(
                    ErrorCode::Conflict,
                    format!("the upload is {}", media.state),
                ))
            };
        }
        // Part n carries bytes [(n - 1) * part_size, n * part_size); one PUT carries them all.
        let total = upload.bytes.len();
        let part_size = match usize::try_from(created.part_size_bytes) {
            Ok(size) if size > 0 && created.parts.len() > 1 => size,
            _ => total,
        };
        for (n, part) in created.parts.iter().enumerate() {
            let start = (n * part_size).min(total);
            let end = (start + part_size).min(total);
            self.send_part(part, &upload.bytes[start..end]).await?;
            upload.report(UploadProgress::Sent {
                bytes: end as u64,
                total: total as u64,
            });
        }
        let path = format!("/v1/media/{}/complete", media.media_id);
        let done = self.call(Method::POST, &path, None).await?;
        let media = Media::from(parse::<MediaJson>("media", &done)?);
        upload.report(UploadProgress::Completed);
        Ok(media)
    }

    /// PUTs the bytes to a signed URL, with its headers exactly.
    async fn send_part(&self, part: &SignedRequest, bytes: &[u8]) -> Result<()> {
        if part.method != "PUT" {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("the signed upload request is a {}, not a PUT", part.method),
            ));
        }
        let mut request = self.http().put(&part.url);
        for h in &part.headers {
            request = request.header(&h.name, &h.value);
        }
        let response = request
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.bytes().await.map(Vec::from).unwrap_or_default();
        Err(refusal(status, &body))
    }

    pub(crate) async fn abort_upload(&self, media_id: &str) -> Result<()> {
        let path = format!("/v1/media/{media_id}/abort");
        self.call(Method::POST, &path, None).await.map(drop)
    }

    pub(crate) async fn media(&self, media_id: &str) -> Result<Media> {
        let answer = self
            .call(Method::GET, &format!("/v1/media/{media_id}"), None)
            .await?;
        Ok(parse::<MediaJson>("media", &answer)?.into())
    }

    /// A short-lived URL of the media shown by the message at `seq` of `conversation_id`
    /// (empty and 0 for the user's own media).
    pub(crate) async fn download_url(
        &self,
        media_id: &str,
        variant: &str,
        conversation_id: &str,
        seq: u64,
    ) -> Result<String> {
        let body = json!({ "variant": variant, "conversation_id": conversation_id, "seq": seq });
        let path = format!("/v1/media/{media_id}/download");
        let answer = self.call(Method::POST, &path, Some(body)).await?;
        Ok(parse::<SignedRequest>("a signed download", &answer)?.url)
    }

    pub(crate) async fn download(
        &self,
        media_id: &str,
        variant: &str,
        conversation_id: &str,
        seq: u64,
    ) -> Result<Vec<u8>> {
        let url = self
            .download_url(media_id, variant, conversation_id, seq)
            .await?;
        let response = self.http().get(&url).send().await.map_err(unavailable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unavailable)?;
        if status.is_success() {
            Ok(body.to_vec())
        } else {
            Err(refusal(status, &body))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn media_json() -> Value {
        json!({
            "media_id": "7b1c",
            "owner_user_id": "alice",
            "state": "ready",
            "kind": "image",
            "mime_type": "image/png",
            "size_bytes": 67,
            "sha256_hex": "ab",
            "file_name": "dot.png",
            "created_at_ms": 1,
            "detail": "",
        })
    }

    #[test]
    fn media_is_read_from_the_answer_and_referenced_as_it_is() {
        let media: Media = serde_json::from_value::<MediaJson>(media_json())
            .unwrap()
            .into();
        assert!(media.is_ready());
        let reference = media.to_ref();
        assert_eq!(reference.kind(), v1::MediaKind::Image);
        assert_eq!(
            (
                reference.media_id.as_str(),
                reference.mime_type.as_str(),
                reference.size_bytes,
                reference.file_name.as_str()
            ),
            ("7b1c", "image/png", 67, "dot.png")
        );
    }

    #[test]
    fn an_upload_answer_without_a_field_the_sdk_reads_is_an_error_naming_it() {
        for key in [
            "media_id",
            "state",
            "kind",
            "mime_type",
            "size_bytes",
            "file_name",
        ] {
            let mut media = media_json();
            media.as_object_mut().unwrap().remove(key);
            let answer = serde_json::to_vec(&json!({"media": media, "parts": []})).unwrap();
            let Err(error) = parse::<UploadJson>("an upload", &answer) else {
                panic!("{key} is required");
            };
            assert_eq!(error.error_code(), Some(ErrorCode::Internal));
            assert!(error.message.contains(&format!("`{key}`")), "{error}");
        }
    }
}
