//! `MediaService`: the media operations for app backends, on behalf of a user (`user_id`) or
//! of the app itself (empty `user_id`, for any media).

use std::sync::Arc;

use im_proto::v1::{
    self, ErrorCode, MediaKind,
    media_service_server::{MediaService, MediaServiceServer},
};
use tonic::{Request, Response, Status};

use super::{MAX_REQUEST_BYTES, status};
use crate::{
    Actor, Business,
    media::{Media, MessageAt, NewUpload, SignedRequest, Upload, facts::MediaFacts},
    store::MediaRecord,
};

/// The service over `media`, for [`super::routes`]; operators' decisions are audited by
/// `business`.
pub(super) fn server(business: Arc<Business>, media: Arc<Media>) -> MediaServiceServer<MediaGrpc> {
    MediaServiceServer::new(MediaGrpc { business, media })
        .max_decoding_message_size(MAX_REQUEST_BYTES)
}

/// `MediaService` over one [`Media`].
#[derive(Clone)]
pub(super) struct MediaGrpc {
    business: Arc<Business>,
    media: Arc<Media>,
}

/// The actor of a media call: the user it names, else the app.
fn on_behalf_of(user_id: &str) -> Actor {
    if user_id.is_empty() {
        Actor::App
    } else {
        Actor::User(user_id.to_owned())
    }
}

fn media_object(m: MediaRecord) -> v1::MediaObject {
    let facts = MediaFacts::parse(&m.facts);
    v1::MediaObject {
        width: facts.width,
        height: facts.height,
        animated: facts.animated,
        thumbhash: facts.thumbhash,
        variants: facts
            .variants
            .into_iter()
            .map(|v| v1::MediaVariant {
                name: v.name,
                mime_type: v.mime_type,
                width: v.width,
                height: v.height,
                size_bytes: v.size_bytes,
            })
            .collect(),
        state: m.state,
        kind: m.kind,
        size_bytes: u64::try_from(m.size_bytes).unwrap_or(0),
        media_id: m.media_id,
        owner_user_id: m.owner_user_id,
        mime_type: m.mime_type,
        sha256_hex: m.sha256_hex,
        file_name: m.file_name,
        created_at_ms: m.created_at_ms,
        detail: m.detail,
        ..v1::MediaObject::default()
    }
}

fn signed_url(media_id: &str, r: SignedRequest) -> v1::SignedUrl {
    v1::SignedUrl {
        media_id: media_id.to_owned(),
        url: r.url,
        method: r.method.into(),
        headers: r
            .headers
            .into_iter()
            .map(|(name, value)| v1::Header { name, value })
            .collect(),
        expires_at_ms: r.expires_at_ms,
    }
}

fn upload(u: Upload) -> v1::Upload {
    let media_id = u.media.media_id.clone();
    let mode = if u.media.multipart_id.is_empty() {
        v1::UploadMode::Single
    } else {
        v1::UploadMode::Multipart
    };
    v1::Upload {
        mode: mode as i32,
        part_size_bytes: u64::try_from(u.media.part_bytes).unwrap_or(0),
        parts: u
            .parts
            .into_iter()
            .map(|part| signed_url(&media_id, part))
            .collect(),
        expires_at_ms: u.media.expires_at_ms,
        media_id,
    }
}

impl MediaGrpc {
    async fn create(&self, new: NewUpload) -> Result<Upload, Status> {
        let actor = Actor::User(new.user_id.clone());
        Ok(self.media.create_upload(&actor, new).await?)
    }
}

#[tonic::async_trait]
impl MediaService for MediaGrpc {
    async fn create_upload(
        &self,
        request: Request<v1::CreateUploadRequest>,
    ) -> Result<Response<v1::Upload>, Status> {
        let r = request.into_inner();
        let new = NewUpload {
            user_id: r.user_id,
            kind: MediaKind::try_from(r.kind).unwrap_or(MediaKind::Unspecified),
            mime_type: r.mime_type,
            size_bytes: r.size_bytes,
            sha256_hex: r.sha256_hex,
            file_name: r.file_name,
            client_upload_id: r.client_upload_id,
        };
        Ok(Response::new(upload(self.create(new).await?)))
    }

    async fn complete_upload(
        &self,
        request: Request<v1::UploadRef>,
    ) -> Result<Response<v1::MediaObject>, Status> {
        let r = request.into_inner();
        let done = self
            .media
            .complete_upload(&on_behalf_of(&r.user_id), &r.media_id)
            .await?;
        Ok(Response::new(media_object(done)))
    }

    async fn abort_upload(
        &self,
        request: Request<v1::UploadRef>,
    ) -> Result<Response<v1::Ok>, Status> {
        let r = request.into_inner();
        self.media
            .abort_upload(&on_behalf_of(&r.user_id), &r.media_id)
            .await?;
        Ok(Response::new(v1::Ok {}))
    }

    async fn get_media(
        &self,
        request: Request<v1::UploadRef>,
    ) -> Result<Response<v1::MediaObject>, Status> {
        let r = request.into_inner();
        let found = self
            .media
            .get_media(&on_behalf_of(&r.user_id), &r.media_id)
            .await?;
        Ok(Response::new(media_object(found)))
    }

    async fn sign_download(
        &self,
        request: Request<v1::SignDownloadRequest>,
    ) -> Result<Response<v1::SignedUrl>, Status> {
        let r = request.into_inner();
        let signed = self
            .media
            .sign_download(
                &on_behalf_of(&r.user_id),
                &r.media_id,
                &r.variant,
                &MessageAt {
                    conversation_id: r.conversation_id.clone(),
                    seq: r.seq,
                },
            )
            .await?;
        Ok(Response::new(signed_url(&r.media_id, signed)))
    }

    async fn get_media_quota(
        &self,
        request: Request<v1::GetUserRequest>,
    ) -> Result<Response<v1::MediaQuota>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            self.media.quota(&Actor::App, &r.user_id).await?,
        ))
    }

    async fn sign_upload(
        &self,
        request: Request<v1::SignUploadRequest>,
    ) -> Result<Response<v1::SignedUrl>, Status> {
        let r = request.into_inner();
        let new = NewUpload {
            user_id: r.user_id,
            kind: MediaKind::try_from(r.kind).unwrap_or(MediaKind::Unspecified),
            mime_type: r.mime_type,
            size_bytes: r.size_bytes,
            file_name: r.file_name,
            ..NewUpload::default()
        };
        let created = self.create(new).await?;
        let media_id = created.media.media_id.clone();
        let part = created
            .parts
            .into_iter()
            .next()
            .ok_or_else(|| status(ErrorCode::Internal, "an upload without a request"))?;
        Ok(Response::new(signed_url(&media_id, part)))
    }

    async fn quarantine_media(
        &self,
        request: Request<v1::ModerateMediaRequest>,
    ) -> Result<Response<v1::MediaObject>, Status> {
        let r = request.into_inner();
        let detail = serde_json::json!({ "reason": r.reason });
        let work = self
            .media
            .quarantine_media(&Actor::App, &r.media_id, &r.reason);
        let held = self
            .business
            .audited_with(
                &Actor::App,
                "media.quarantine",
                r.media_id.clone(),
                detail,
                work,
            )
            .await?;
        Ok(Response::new(media_object(held)))
    }

    async fn release_media(
        &self,
        request: Request<v1::ModerateMediaRequest>,
    ) -> Result<Response<v1::MediaObject>, Status> {
        let r = request.into_inner();
        let detail = serde_json::json!({ "reason": r.reason });
        let work = self
            .media
            .release_media(&Actor::App, &r.media_id, &r.reason);
        let released = self
            .business
            .audited_with(
                &Actor::App,
                "media.release",
                r.media_id.clone(),
                detail,
                work,
            )
            .await?;
        Ok(Response::new(media_object(released)))
    }
}
