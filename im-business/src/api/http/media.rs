//! Media: create an upload, PUT its bytes to the signed URL, complete it; read it back
//! through a short-lived signed URL (or a redirect to one). The JSON shapes mirror
//! `business.proto`'s media messages.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use im_proto::v1::{MediaKind, MediaQuota, MediaState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, ApiState, Body, Id, OkJson, PathArg, QueryArg, UserPath, auth::actor,
    error::ApiResult, shapes::integer,
};
use crate::{
    media::{
        Media, MessageAt, NewUpload, SignedRequest, Upload,
        facts::{MediaFacts, Variant},
    },
    store::MediaRecord,
};
use im_proto::v1::ErrorCode;

/// `/v1/media/{media_id}/...`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct MediaPath {
    /// The media (its upload's id).
    #[param(value_type = Id, inline)]
    pub(super) media_id: String,
}

/// What kind of media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A picture (its bytes must be an image).
    Image,
    /// A video.
    Video,
    /// A voice message or other audio.
    Audio,
    /// Any other file.
    File,
}

impl From<Kind> for MediaKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Image => Self::Image,
            Kind::Video => Self::Video,
            Kind::Audio => Self::Audio,
            Kind::File => Self::File,
        }
    }
}

impl Kind {
    fn of(kind: i32) -> Self {
        match MediaKind::try_from(kind) {
            Ok(MediaKind::Image) => Self::Image,
            Ok(MediaKind::Video) => Self::Video,
            Ok(MediaKind::Audio) => Self::Audio,
            _ => Self::File,
        }
    }
}

/// Start an upload. `user_id` is the uploader (with a user's own token, that user).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUploadBody {
    #[schema(value_type = Id, inline)]
    pub(super) user_id: String,
    pub(super) kind: Kind,
    /// The declared type (absent or empty: `application/octet-stream`); the type sniffed
    /// from the bytes wins at completion.
    #[serde(default)]
    #[schema(pattern = "^([!-~]*/[!-~]*)?$", max_length = 255)]
    pub(super) mime_type: String,
    /// The exact size in bytes.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    pub(super) size_bytes: u64,
    /// The SHA-256 of the bytes, if known (64 hex digits).
    #[serde(default)]
    #[schema(pattern = "^([0-9a-fA-F]{64})?$")]
    pub(super) sha256_hex: String,
    /// The name shown to downloaders (no control characters).
    #[serde(default)]
    #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$", max_length = 255)]
    pub(super) file_name: String,
    /// The client's id of the upload: creating again with it answers the same upload.
    #[serde(default)]
    #[schema(value_type = super::IdOrEmpty, inline)]
    pub(super) client_upload_id: String,
}

/// A request to make straight to the object store.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignedRequestJson {
    pub(super) url: String,
    /// `PUT` or `GET`.
    pub(super) method: String,
    /// Headers to send exactly as given.
    pub(super) headers: Vec<HeaderJson>,
    pub(super) expires_at_ms: i64,
}

/// One header of a signed request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeaderJson {
    pub(super) name: String,
    pub(super) value: String,
}

impl From<SignedRequest> for SignedRequestJson {
    fn from(r: SignedRequest) -> Self {
        Self {
            url: r.url,
            method: r.method.into(),
            headers: r
                .headers
                .into_iter()
                .map(|(name, value)| HeaderJson { name, value })
                .collect(),
            expires_at_ms: r.expires_at_ms,
        }
    }
}

/// An upload: the requests that send its bytes, then complete it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadJson {
    pub(super) media_id: String,
    /// `single`: one PUT of the whole body; `multipart`: one PUT per part, part n (from 1)
    /// carrying bytes `[(n - 1) * part_size_bytes, n * part_size_bytes)` of the body.
    pub(super) mode: String,
    /// For `multipart`: the size of every part but the last (0 for `single`).
    pub(super) part_size_bytes: u64,
    /// The requests to make, part 1 first (none once completed).
    pub(super) parts: Vec<SignedRequestJson>,
    /// Complete it by then, or it expires.
    pub(super) expires_at_ms: i64,
    pub(super) media: MediaJson,
}

impl From<Upload> for UploadJson {
    fn from(u: Upload) -> Self {
        Self {
            media_id: u.media.media_id.clone(),
            mode: if u.media.multipart_id.is_empty() {
                "single"
            } else {
                "multipart"
            }
            .into(),
            part_size_bytes: u64::try_from(u.media.part_bytes).unwrap_or(0),
            parts: u.parts.into_iter().map(Into::into).collect(),
            expires_at_ms: u.media.expires_at_ms,
            media: u.media.into(),
        }
    }
}

/// Media: its state and facts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MediaJson {
    pub(super) media_id: String,
    #[schema(value_type = Id, inline)]
    pub(super) owner_user_id: String,
    /// `pending`, `processing`, `ready`, `quarantined`, `rejected`, `aborted` or `deleted`.
    pub(super) state: String,
    pub(super) kind: Kind,
    /// The type sniffed from the bytes once completed (the declared one before).
    pub(super) mime_type: String,
    pub(super) size_bytes: u64,
    /// Set once completed.
    pub(super) sha256_hex: String,
    pub(super) file_name: String,
    pub(super) created_at_ms: i64,
    /// Why it was rejected or quarantined.
    pub(super) detail: String,
    /// Width as shown (EXIF orientation applied), once processed; 0 when unknown.
    pub(super) width: u32,
    /// Height as shown, once processed; 0 when unknown.
    pub(super) height: u32,
    /// Whether the image has more than one frame.
    pub(super) animated: bool,
    /// A ThumbHash placeholder of an image, base64 (empty when none).
    pub(super) thumbhash: String,
    /// The renditions made by the server, for `download` with `variant`.
    pub(super) variants: Vec<VariantJson>,
    /// Why there are no variants, once processed without them.
    pub(super) no_variants: String,
}

/// A rendition the server made of media (a thumbnail).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VariantJson {
    /// `thumb_96`, `thumb_320` or `thumb_1024` (the longest side, in pixels).
    pub(super) name: String,
    pub(super) mime_type: String,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) size_bytes: u64,
}

impl From<Variant> for VariantJson {
    fn from(v: Variant) -> Self {
        Self {
            name: v.name,
            mime_type: v.mime_type,
            width: v.width,
            height: v.height,
            size_bytes: v.size_bytes,
        }
    }
}

/// The lowercase name of a media state (`ready`).
pub(super) fn state_name(state: MediaState) -> String {
    state
        .as_str_name()
        .trim_start_matches("MEDIA_STATE_")
        .to_ascii_lowercase()
}

impl From<MediaRecord> for MediaJson {
    fn from(m: MediaRecord) -> Self {
        use base64::Engine as _;
        let facts = MediaFacts::parse(&m.facts);
        Self {
            width: facts.width,
            height: facts.height,
            animated: facts.animated,
            thumbhash: base64::engine::general_purpose::STANDARD.encode(&facts.thumbhash),
            variants: facts.variants.into_iter().map(Into::into).collect(),
            no_variants: facts.no_variants,
            state: state_name(m.state()),
            kind: Kind::of(m.kind),
            media_id: m.media_id,
            owner_user_id: m.owner_user_id,
            mime_type: m.mime_type,
            size_bytes: u64::try_from(m.size_bytes).unwrap_or(0),
            sha256_hex: m.sha256_hex,
            file_name: m.file_name,
            created_at_ms: m.created_at_ms,
            detail: m.detail,
        }
    }
}

/// Which rendition to download, and for a user other than the uploader the message that
/// references the media: its conversation and seq (which the user must be able to read).
#[derive(Debug, Default, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// `original` (or empty), or a variant's name.
    #[serde(default)]
    pub(super) variant: String,
    /// The conversation of the message that references the media.
    #[serde(default)]
    pub(super) conversation_id: String,
    /// The seq of that message.
    #[serde(default)]
    pub(super) seq: u64,
}

impl DownloadQuery {
    fn at(&self) -> MessageAt {
        MessageAt {
            conversation_id: self.conversation_id.clone(),
            seq: self.seq,
        }
    }
}

/// The body of `download`: the fields of [`DownloadQuery`], in JSON.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct DownloadBody {
    /// `original` (or empty), or a variant's name.
    #[serde(default)]
    pub(super) variant: String,
    /// The conversation of the message that references the media.
    #[serde(default)]
    pub(super) conversation_id: String,
    /// The seq of that message.
    #[serde(default, deserialize_with = "integer")]
    pub(super) seq: u64,
}

impl From<DownloadBody> for DownloadQuery {
    fn from(b: DownloadBody) -> Self {
        Self {
            variant: b.variant,
            conversation_id: b.conversation_id,
            seq: b.seq,
        }
    }
}

/// A user's media quotas and what it uses of them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QuotaJson {
    #[schema(value_type = Id, inline)]
    pub(super) user_id: String,
    pub(super) stored_bytes: u64,
    pub(super) stored_limit: u64,
    pub(super) window_bytes: u64,
    pub(super) window_limit: u64,
    pub(super) window_ms: u64,
    pub(super) pending_uploads: u32,
    pub(super) pending_limit: u32,
}

impl From<MediaQuota> for QuotaJson {
    fn from(q: MediaQuota) -> Self {
        Self {
            user_id: q.user_id,
            stored_bytes: q.stored_bytes,
            stored_limit: q.stored_limit,
            window_bytes: q.window_bytes,
            window_limit: q.window_limit,
            window_ms: q.window_ms,
            pending_uploads: q.pending_uploads,
            pending_limit: q.pending_limit,
        }
    }
}

fn media(s: &ApiState) -> Result<&Media, ApiError> {
    s.media
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "media is not configured here"))
}

/// Start an upload: the quotas are checked and the size reserved; PUT the bytes with the
/// signed request, then complete it. The same `client_upload_id` again answers the same
/// upload, with fresh URLs while it is pending.
#[utoipa::path(post, path = "/v1/media/uploads", request_body = CreateUploadBody, responses((status = 200, body = UploadJson)), tag = "media")]
pub(super) async fn create_upload(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Body(b): Body<CreateUploadBody>,
) -> ApiResult<UploadJson> {
    let new = NewUpload {
        user_id: b.user_id,
        kind: b.kind.into(),
        mime_type: b.mime_type,
        size_bytes: b.size_bytes,
        sha256_hex: b.sha256_hex,
        file_name: b.file_name,
        client_upload_id: b.client_upload_id,
    };
    let upload = media(&s)?.create_upload(&actor(&headers)?, new).await?;
    Ok(Json(upload.into()))
}

/// Complete an upload: its stored bytes are checked (size, digest, type sniffed from them)
/// and kept. Idempotent; bytes that are not what was declared answer MEDIA_REJECTED.
#[utoipa::path(post, path = "/v1/media/{media_id}/complete", params(MediaPath), responses((status = 200, body = MediaJson)), tag = "media")]
pub(super) async fn complete_upload(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MediaPath { media_id }): PathArg<MediaPath>,
) -> ApiResult<MediaJson> {
    let done = media(&s)?
        .complete_upload(&actor(&headers)?, &media_id)
        .await?;
    Ok(Json(done.into()))
}

/// An operator's decision on media, and why.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ModerationBody {
    /// Why (kept in the audit trail and on the media): 1 to 1024 characters, not only spaces.
    #[schema(min_length = 1, max_length = 1024, pattern = "\\S")]
    pub(super) reason: String,
}

/// Quarantine the media's bytes (the app only): every media holding them is served to no one,
/// and the same bytes uploaded again are quarantined at completion. Audited.
#[utoipa::path(post, path = "/v1/media/{media_id}/quarantine", params(MediaPath), request_body = ModerationBody, responses((status = 200, body = MediaJson)), tag = "media")]
pub(super) async fn quarantine_media(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MediaPath { media_id }): PathArg<MediaPath>,
    Body(b): Body<ModerationBody>,
) -> ApiResult<MediaJson> {
    let actor = actor(&headers)?;
    let detail = serde_json::json!({ "reason": b.reason });
    let work = media(&s)?.quarantine_media(&actor, &media_id, &b.reason);
    let held = s
        .business
        .audited_with(&actor, "media.quarantine", media_id.clone(), detail, work)
        .await?;
    Ok(Json(held.into()))
}

/// Release the media's bytes (the app only): they are allowed from now on (not scanned or
/// quarantined automatically again, which also protects media never held), and the media
/// quarantined with them is processed and served again. Audited.
#[utoipa::path(post, path = "/v1/media/{media_id}/release", params(MediaPath), request_body = ModerationBody, responses((status = 200, body = MediaJson)), tag = "media")]
pub(super) async fn release_media(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MediaPath { media_id }): PathArg<MediaPath>,
    Body(b): Body<ModerationBody>,
) -> ApiResult<MediaJson> {
    let actor = actor(&headers)?;
    let detail = serde_json::json!({ "reason": b.reason });
    let work = media(&s)?.release_media(&actor, &media_id, &b.reason);
    let released = s
        .business
        .audited_with(&actor, "media.release", media_id.clone(), detail, work)
        .await?;
    Ok(Json(released.into()))
}

/// Give up an upload not completed: its reservation is released and its bytes deleted.
#[utoipa::path(post, path = "/v1/media/{media_id}/abort", params(MediaPath), responses((status = 200, body = OkJson)), tag = "media")]
pub(super) async fn abort_upload(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MediaPath { media_id }): PathArg<MediaPath>,
) -> ApiResult<OkJson> {
    media(&s)?
        .abort_upload(&actor(&headers)?, &media_id)
        .await?;
    Ok(Json(OkJson {}))
}

/// The media's state and facts.
#[utoipa::path(get, path = "/v1/media/{media_id}", params(MediaPath), responses((status = 200, body = MediaJson)), tag = "media")]
pub(super) async fn get_media(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MediaPath { media_id }): PathArg<MediaPath>,
) -> ApiResult<MediaJson> {
    let found = media(&s)?.get_media(&actor(&headers)?, &media_id).await?;
    Ok(Json(found.into()))
}

/// A short-lived signed URL to fetch the media (or a variant of it).
#[utoipa::path(post, path = "/v1/media/{media_id}/download", params(MediaPath), request_body = DownloadBody, responses((status = 200, body = SignedRequestJson)), tag = "media")]
pub(super) async fn sign_download(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MediaPath { media_id }): PathArg<MediaPath>,
    Body(b): Body<DownloadBody>,
) -> ApiResult<SignedRequestJson> {
    let b = DownloadQuery::from(b);
    let signed = media(&s)?
        .sign_download(&actor(&headers)?, &media_id, &b.variant, &b.at())
        .await?;
    Ok(Json(signed.into()))
}

/// A redirect (302) to a short-lived signed URL of the media, for `<img src>` and players.
#[utoipa::path(get, path = "/v1/media/{media_id}/content", params(MediaPath, DownloadQuery), responses((status = 302, description = "To the signed URL (`location`).")), tag = "media")]
pub(super) async fn redirect_to_content(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(MediaPath { media_id }): PathArg<MediaPath>,
    QueryArg(q): QueryArg<DownloadQuery>,
) -> Result<Response, ApiError> {
    let signed = media(&s)?
        .sign_download(&actor(&headers)?, &media_id, &q.variant, &q.at())
        .await?;
    let location = HeaderValue::from_str(&signed.url)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "the signed URL is not a header"))?;
    let mut found = StatusCode::FOUND.into_response();
    found.headers_mut().insert(header::LOCATION, location);
    found
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(found)
}

/// What the user uses of its media quotas.
#[utoipa::path(get, path = "/v1/users/{user_id}/media-quota", params(UserPath), responses((status = 200, body = QuotaJson)), tag = "media")]
pub(super) async fn media_quota(
    State(s): State<ApiState>,
    headers: HeaderMap,
    PathArg(UserPath { user_id }): PathArg<UserPath>,
) -> ApiResult<QuotaJson> {
    let quota = media(&s)?.quota(&actor(&headers)?, &user_id).await?;
    Ok(Json(quota.into()))
}
