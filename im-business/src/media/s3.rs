//! The distributed mode's object store: a bucket on S3 or an S3-compatible server (MinIO),
//! reached with AWS Signature V4 presigned URLs (signed by `rusty-s3`, sent with `reqwest`).
//!
//! A signed PUT signs `content-length`, `content-type` and, when the uploader declared one,
//! `x-amz-checksum-sha256`: the server refuses another length or type (the signature no
//! longer matches, 403) and other bytes (400). The service's own calls (head, ranged get, put,
//! copy, delete, list) are signed the same way with a short expiry.

use std::time::Duration;

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::{Method, StatusCode};
use rusty_s3::{
    Bucket, Credentials, S3Action, UrlStyle,
    actions::{CreateMultipartUpload, ListObjectsV2, ListParts, PartsContent},
};

use super::{
    S3Config,
    objects::{
        ObjectError, ObjectResult, ObjectStore, PutPolicy, Serving, SignedRequest, valid_key,
    },
};

/// How long the service's own signed calls are honoured.
const CALL_TTL: Duration = Duration::from_secs(60);

/// Objects in an S3 bucket.
pub struct S3ObjectStore {
    bucket: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
}

fn backend(e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Backend(e.to_string())
}

/// The signing time and validity that make a URL expire at `expires_at_ms`. S3 takes a
/// validity of one second at least, so a time already past is signed a second before it.
fn signing_window(expires_at_ms: i64) -> (jiff::Timestamp, Duration) {
    let now = im_common::now_ms();
    let (signed_at, seconds) = if expires_at_ms > now {
        let left = u64::try_from(expires_at_ms - now).unwrap_or(0);
        (now, left.div_ceil(1000).min(7 * 24 * 3600))
    } else {
        (expires_at_ms - 1000, 1)
    };
    let signed_at = jiff::Timestamp::from_millisecond(signed_at).unwrap_or(jiff::Timestamp::now());
    (signed_at, Duration::from_secs(seconds))
}

impl S3ObjectStore {
    /// The store on `config`'s bucket, which is created if missing.
    pub async fn open(config: &S3Config) -> ObjectResult<Self> {
        let endpoint = config
            .endpoint
            .parse()
            .map_err(|e| backend(format!("media_s3.endpoint: {e}")))?;
        let style = if config.virtual_host {
            UrlStyle::VirtualHost
        } else {
            UrlStyle::Path
        };
        let region = if config.region.is_empty() {
            "us-east-1".to_owned()
        } else {
            config.region.clone()
        };
        let bucket = Bucket::new(endpoint, style, config.bucket.clone(), region)
            .map_err(|e| backend(format!("media_s3: {e}")))?;
        let store = Self {
            bucket,
            credentials: Credentials::new(&config.access_key, config.secret_key.expose()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(backend)?,
        };
        store.ensure_bucket().await?;
        Ok(store)
    }

    async fn ensure_bucket(&self) -> ObjectResult<()> {
        let head = self
            .bucket
            .head_bucket(Some(&self.credentials))
            .sign(CALL_TTL);
        let found = self.http.head(head).send().await.map_err(backend)?;
        match found.status() {
            s if s.is_success() => return Ok(()),
            StatusCode::NOT_FOUND => {}
            s => return Err(backend(format!("bucket {}: {s}", self.bucket.name()))),
        }
        let create = self.bucket.create_bucket(&self.credentials);
        let url = create.sign(CALL_TTL);
        let made = self
            .http
            .put(url)
            .body(create.body())
            .send()
            .await
            .map_err(backend)?;
        let status = made.status();
        // Another node may have created it meanwhile.
        if status.is_success() || status == StatusCode::CONFLICT {
            Ok(())
        } else {
            Err(backend(format!(
                "creating bucket {}: {status} {}",
                self.bucket.name(),
                made.text().await.unwrap_or_default()
            )))
        }
    }

    fn check(key: &str) -> ObjectResult<()> {
        if valid_key(key) {
            Ok(())
        } else {
            Err(backend(format!("not a key of this service: {key:?}")))
        }
    }

    /// A failed answer as an error, reading S3's error body for the log.
    async fn failure(key: &str, answer: reqwest::Response) -> ObjectError {
        let status = answer.status();
        if status == StatusCode::NOT_FOUND {
            return ObjectError::NotFound(key.to_owned());
        }
        let body = answer.text().await.unwrap_or_default();
        backend(format!("{key}: {status} {body}"))
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    fn sign_put(&self, key: &str, policy: &PutPolicy, expires_at_ms: i64) -> SignedRequest {
        let mut action = self.bucket.put_object(Some(&self.credentials), key);
        let length = policy.size_bytes.to_string();
        // Every HTTP client sends content-length from the body; it is signed, not listed.
        action.headers_mut().insert("content-length", length);
        let mut headers = vec![("content-type".to_owned(), policy.content_type.clone())];
        if let Some(digest) = policy.sha256 {
            headers.push(("x-amz-checksum-sha256".into(), STANDARD.encode(digest)));
        }
        for (name, value) in &headers {
            action.headers_mut().insert(name.clone(), value.clone());
        }
        let (at, ttl) = signing_window(expires_at_ms);
        SignedRequest {
            url: action.sign_with_time(ttl, &at).into(),
            method: "PUT",
            headers,
            expires_at_ms,
        }
    }

    fn sign_get(&self, key: &str, serving: &Serving, expires_at_ms: i64) -> SignedRequest {
        let mut action = self.bucket.get_object(Some(&self.credentials), key);
        let query = action.query_mut();
        query.insert("response-content-type", serving.content_type.clone());
        if let Some(name) = &serving.attachment {
            query.insert(
                "response-content-disposition",
                super::sniff::attachment(name),
            );
        }
        query.insert("response-cache-control", "private, max-age=300");
        let (at, ttl) = signing_window(expires_at_ms);
        SignedRequest {
            url: action.sign_with_time(ttl, &at).into(),
            method: "GET",
            headers: Vec::new(),
            expires_at_ms,
        }
    }

    async fn size_of(&self, key: &str) -> ObjectResult<Option<u64>> {
        Self::check(key)?;
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(CALL_TTL);
        let answer = self.http.head(url).send().await.map_err(backend)?;
        match answer.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => answer
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Some)
                .ok_or_else(|| backend(format!("{key}: no content-length"))),
            _ => Err(Self::failure(key, answer).await),
        }
    }

    async fn read_range(&self, key: &str, offset: u64, len: u64) -> ObjectResult<Vec<u8>> {
        Self::check(key)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut action = self.bucket.get_object(Some(&self.credentials), key);
        let range = format!("bytes={offset}-{}", offset.saturating_add(len - 1));
        action.headers_mut().insert("range", range.clone());
        let answer = self
            .http
            .get(action.sign(CALL_TTL))
            .header(reqwest::header::RANGE, range)
            .send()
            .await
            .map_err(backend)?;
        match answer.status() {
            // Past the end: nothing there.
            StatusCode::RANGE_NOT_SATISFIABLE => Ok(Vec::new()),
            StatusCode::PARTIAL_CONTENT | StatusCode::OK => {
                let mut bytes = answer.bytes().await.map_err(backend)?.to_vec();
                bytes.truncate(usize::try_from(len).unwrap_or(usize::MAX));
                Ok(bytes)
            }
            _ => Err(Self::failure(key, answer).await),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> ObjectResult<()> {
        Self::check(key)?;
        let mut action = self.bucket.put_object(Some(&self.credentials), key);
        action
            .headers_mut()
            .insert("content-type", content_type.to_owned());
        let answer = self
            .http
            .put(action.sign(CALL_TTL))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .map_err(backend)?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(Self::failure(key, answer).await)
        }
    }

    async fn copy(&self, from: &str, to: &str) -> ObjectResult<()> {
        Self::check(from)?;
        Self::check(to)?;
        // CopyObject is a PUT naming its source; S3 copies one version of it, whole.
        let source = format!("/{}/{from}", self.bucket.name());
        let mut action = self.bucket.put_object(Some(&self.credentials), to);
        action
            .headers_mut()
            .insert("x-amz-copy-source", source.clone());
        let answer = self
            .http
            .put(action.sign(CALL_TTL))
            .header("x-amz-copy-source", source)
            .send()
            .await
            .map_err(backend)?;
        if !answer.status().is_success() {
            return Err(Self::failure(from, answer).await);
        }
        // S3 may answer 200 and report a failure in the body.
        let body = answer.text().await.map_err(backend)?;
        if body.contains("<Error>") {
            return Err(backend(format!("copying {from} to {to}: {body}")));
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> ObjectResult<()> {
        Self::check(key)?;
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(CALL_TTL);
        let answer = self.http.delete(url).send().await.map_err(backend)?;
        if answer.status().is_success() || answer.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Self::failure(key, answer).await)
        }
    }

    async fn list(&self, prefix: &str) -> ObjectResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            if !prefix.is_empty() {
                action.with_prefix(prefix);
            }
            if let Some(token) = &token {
                action.with_continuation_token(token.clone());
            }
            let answer = self
                .http
                .request(Method::GET, action.sign(CALL_TTL))
                .send()
                .await
                .map_err(backend)?;
            if !answer.status().is_success() {
                return Err(Self::failure(prefix, answer).await);
            }
            let text = answer.text().await.map_err(backend)?;
            let page = ListObjectsV2::parse_response(&text).map_err(backend)?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => return Ok(keys),
            }
        }
    }

    async fn start_multipart(&self, key: &str, content_type: &str) -> ObjectResult<String> {
        Self::check(key)?;
        let mut action = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), key);
        action
            .headers_mut()
            .insert("content-type", content_type.to_owned());
        let answer = self
            .http
            .post(action.sign(CALL_TTL))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .send()
            .await
            .map_err(backend)?;
        if !answer.status().is_success() {
            return Err(Self::failure(key, answer).await);
        }
        let text = answer.text().await.map_err(backend)?;
        let created = CreateMultipartUpload::parse_response(&text).map_err(backend)?;
        Ok(created.upload_id().to_owned())
    }

    fn sign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        size_bytes: u64,
        expires_at_ms: i64,
    ) -> SignedRequest {
        let mut action = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, upload_id);
        // Signed, not listed: every HTTP client sends it from the body.
        action
            .headers_mut()
            .insert("content-length", size_bytes.to_string());
        let (at, ttl) = signing_window(expires_at_ms);
        SignedRequest {
            url: action.sign_with_time(ttl, &at).into(),
            method: "PUT",
            headers: Vec::new(),
            expires_at_ms,
        }
    }

    async fn parts(&self, key: &str, upload_id: &str) -> ObjectResult<Vec<(u16, u64)>> {
        Ok(self
            .listed_parts(key, upload_id)
            .await?
            .into_iter()
            .map(|part| (part.number, part.size))
            .collect())
    }

    async fn finish_multipart(&self, key: &str, upload_id: &str, count: u16) -> ObjectResult<()> {
        let listed = self.listed_parts(key, upload_id).await?;
        let mut etags = Vec::with_capacity(usize::from(count));
        for number in 1..=count {
            match listed.iter().find(|part| part.number == number) {
                Some(part) => etags.push(part.etag.clone()),
                None => return Err(ObjectError::NotFound(format!("{key} part {number}"))),
            }
        }
        let action = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(CALL_TTL);
        let answer = self
            .http
            .post(url)
            .body(action.body())
            .send()
            .await
            .map_err(backend)?;
        if !answer.status().is_success() {
            return Err(Self::failure(key, answer).await);
        }
        // S3 may answer 200 and report a failure in the body.
        let body = answer.text().await.map_err(backend)?;
        if body.contains("<Error>") {
            return Err(backend(format!("joining the parts of {key}: {body}")));
        }
        Ok(())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> ObjectResult<()> {
        Self::check(key)?;
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, upload_id)
            .sign(CALL_TTL);
        let answer = self.http.delete(url).send().await.map_err(backend)?;
        if answer.status().is_success() || answer.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Self::failure(key, answer).await)
        }
    }
}

impl S3ObjectStore {
    /// Every part of the upload the server has, a page of 1,000 at a time; none for an upload
    /// it does not know (finished or aborted).
    async fn listed_parts(&self, key: &str, upload_id: &str) -> ObjectResult<Vec<PartsContent>> {
        Self::check(key)?;
        let mut parts = Vec::new();
        let mut marker = None;
        loop {
            let mut action = self
                .bucket
                .list_parts(Some(&self.credentials), key, upload_id);
            if let Some(marker) = marker {
                action.set_part_number_marker(marker);
            }
            let answer = self
                .http
                .get(action.sign(CALL_TTL))
                .send()
                .await
                .map_err(backend)?;
            match answer.status() {
                StatusCode::NOT_FOUND => return Ok(parts),
                s if s.is_success() => {}
                _ => return Err(Self::failure(key, answer).await),
            }
            let text = answer.text().await.map_err(backend)?;
            let page = ListParts::parse_response(&text).map_err(backend)?;
            parts.extend(page.parts);
            match page.next_part_number_marker {
                Some(next) => marker = Some(next),
                None => return Ok(parts),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A store on a fresh bucket of the S3 server of `scripts/services`
    /// (`IM_TEST_S3_URL=http://key:secret@host:port`), or `None` to skip.
    pub(crate) async fn fresh() -> Option<(Arc<S3ObjectStore>, ())> {
        let url = im_testkit::service_url("IM_TEST_S3_URL", "S3")?;
        let url: reqwest::Url = url.parse().expect("IM_TEST_S3_URL is a URL");
        let config = S3Config {
            endpoint: format!(
                "{}://{}:{}",
                url.scheme(),
                url.host_str().expect("a host"),
                url.port_or_known_default().expect("a port")
            ),
            bucket: format!("im-test-{}", uuid::Uuid::new_v4().simple()),
            region: String::new(),
            access_key: url.username().to_owned(),
            secret_key: url.password().unwrap_or_default().into(),
            virtual_host: false,
        };
        Some((Arc::new(S3ObjectStore::open(&config).await.unwrap()), ()))
    }

    crate::object_store_suite!(fresh());

    #[test]
    fn an_expiry_already_past_signs_an_expired_url() {
        let now = im_common::now_ms();
        let (at, ttl) = signing_window(now - 5_000);
        assert_eq!(ttl, Duration::from_secs(1));
        assert_eq!(at.as_millisecond() + 1000, now - 5_000);
        let (at, ttl) = signing_window(now + 90_500);
        assert_eq!(ttl, Duration::from_secs(91));
        assert!((at.as_millisecond() - now).abs() < 1_000);
    }
}
