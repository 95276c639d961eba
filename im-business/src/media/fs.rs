//! The embedded mode's object store: files under a directory, and the signed URLs of an S3
//! store served by the business HTTP listener (`PUT` and `GET /media/blob/{grant}`), so that
//! clients upload and download the same way in both modes.
//!
//! A grant is the request's terms (method, key, expiry, and for a PUT the exact size, type and
//! digest; for a GET how to serve) as JSON, then an HMAC-SHA256 of them: the listener refuses
//! an expired, tampered or misused grant with 403, a body of another length or type with 403
//! and wrong bytes with 400, as S3 does. A PUT lands in a temporary file first and replaces the
//! object only once complete and checked, so a reader never sees half an upload.

use std::{
    io::SeekFrom,
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;
use axum::{
    Router,
    body::Body,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::put,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::objects::{
    ObjectError, ObjectResult, ObjectStore, PutPolicy, Serving, SignedRequest, valid_key,
};

/// Where the listener serves grants.
pub const BLOB_PATH: &str = "/media/blob/{grant}";

/// The terms of one signed request.
#[derive(Debug, Serialize, Deserialize)]
struct Grant {
    /// `PUT` or `GET`.
    m: String,
    /// The key.
    k: String,
    /// Expiry, ms since the epoch.
    e: i64,
    /// PUT: the exact length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    /// PUT: the exact type; GET: the type served.
    t: String,
    /// PUT: the body's SHA-256 (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    /// GET: served as an attachment with this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
}

/// Media files under a directory, with URLs served by the business HTTP listener.
pub struct FsObjectStore {
    root: PathBuf,
    public_url: String,
    key: [u8; 32],
}

impl std::fmt::Debug for FsObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsObjectStore")
            .field("root", &self.root)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

fn backend(error: impl std::fmt::Display) -> ObjectError {
    ObjectError::Backend(error.to_string())
}

impl FsObjectStore {
    /// A store under `root` (created if missing), whose URLs start with `public_url` (where
    /// clients reach the business HTTP listener, e.g. `http://127.0.0.1:7101`) and are signed
    /// with a key derived from `secret`.
    pub fn open(root: &Path, public_url: &str, secret: &[u8]) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join(".tmp"))?;
        let mut key = Sha256::new();
        key.update(b"im media grants\0");
        key.update(secret);
        Ok(Self {
            root: root.to_owned(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            key: key.finalize().into(),
        })
    }

    /// The routes that serve this store's grants, to merge into the HTTP listener's router.
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route(BLOB_PATH, put(put_blob).get(get_blob))
            .with_state(self)
    }

    fn path_of(&self, key: &str) -> ObjectResult<PathBuf> {
        if valid_key(key) {
            Ok(self.root.join(key))
        } else {
            Err(ObjectError::Backend(format!("not a valid key: {key:?}")))
        }
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join(".tmp")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // An HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    fn sign(&self, grant: &Grant) -> String {
        let terms = serde_json::to_vec(grant).unwrap_or_default();
        let mut mac = self.mac();
        mac.update(&terms);
        let tag = mac.finalize().into_bytes();
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&terms),
            URL_SAFE_NO_PAD.encode(tag)
        );
        format!("{}/media/blob/{token}", self.public_url)
    }

    /// The grant a token carries, if its signature holds, it is for `method` and unexpired.
    fn verify(&self, token: &str, method: &str) -> Result<Grant, Denied> {
        let denied = Denied;
        let (terms, tag) = token
            .split_once('.')
            .ok_or_else(|| denied("malformed grant"))?;
        let terms = URL_SAFE_NO_PAD
            .decode(terms)
            .map_err(|_| denied("malformed grant"))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| denied("malformed grant"))?;
        let mut mac = self.mac();
        mac.update(&terms);
        mac.verify_slice(&tag)
            .map_err(|_| denied("the signature does not match"))?;
        let grant: Grant = serde_json::from_slice(&terms).map_err(|_| denied("malformed grant"))?;
        if grant.m != method {
            return Err(denied("the grant is for another method"));
        }
        if grant.e <= im_common::now_ms() {
            return Err(denied("the grant has expired"));
        }
        Ok(grant)
    }

    /// Writes `bytes` to a temporary file, flushes it to disk, and moves it to `key`.
    async fn write_whole(&self, key: &str, bytes: &[u8]) -> ObjectResult<()> {
        let path = self.path_of(key)?;
        let temp = self.temp_path();
        let mut file = tokio::fs::File::create(&temp).await.map_err(backend)?;
        file.write_all(bytes).await.map_err(backend)?;
        file.sync_all().await.map_err(backend)?;
        self.publish(&temp, &path).await
    }

    /// Moves a complete temporary file to its key's path.
    async fn publish(&self, temp: &Path, path: &Path) -> ObjectResult<()> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(backend)?;
        }
        tokio::fs::rename(temp, path).await.map_err(backend)
    }
}

/// Why a grant was refused: answered 403 with the reason.
struct Denied(&'static str);

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        (StatusCode::FORBIDDEN, self.0).into_response()
    }
}

#[async_trait]
impl ObjectStore for FsObjectStore {
    fn sign_put(&self, key: &str, policy: &PutPolicy, expires_at_ms: i64) -> SignedRequest {
        let grant = Grant {
            m: "PUT".into(),
            k: key.into(),
            e: expires_at_ms,
            n: Some(policy.size_bytes),
            t: policy.content_type.clone(),
            s: policy.sha256.map(hex::encode),
            a: None,
        };
        SignedRequest {
            url: self.sign(&grant),
            method: "PUT",
            headers: vec![("content-type".into(), policy.content_type.clone())],
            expires_at_ms,
        }
    }

    fn sign_get(&self, key: &str, serving: &Serving, expires_at_ms: i64) -> SignedRequest {
        let grant = Grant {
            m: "GET".into(),
            k: key.into(),
            e: expires_at_ms,
            n: None,
            t: serving.content_type.clone(),
            s: None,
            a: serving.attachment.clone(),
        };
        SignedRequest {
            url: self.sign(&grant),
            method: "GET",
            headers: Vec::new(),
            expires_at_ms,
        }
    }

    async fn size_of(&self, key: &str) -> ObjectResult<Option<u64>> {
        match tokio::fs::metadata(self.path_of(key)?).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn read_range(&self, key: &str, offset: u64, len: u64) -> ObjectResult<Vec<u8>> {
        let mut file = match tokio::fs::File::open(self.path_of(key)?).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ObjectError::NotFound(key.into()));
            }
            Err(e) => return Err(backend(e)),
        };
        file.seek(SeekFrom::Start(offset)).await.map_err(backend)?;
        let mut bytes = Vec::new();
        file.take(len)
            .read_to_end(&mut bytes)
            .await
            .map_err(backend)?;
        Ok(bytes)
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, _content_type: &str) -> ObjectResult<()> {
        self.write_whole(key, &bytes).await
    }

    async fn copy(&self, from: &str, to: &str) -> ObjectResult<()> {
        let (source, path) = (self.path_of(from)?, self.path_of(to)?);
        let temp = self.temp_path();
        let not_found = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ObjectError::NotFound(from.into())
            } else {
                backend(e)
            }
        };
        // Every write makes a new file and renames it into place, so a file is never changed
        // once it has a key: a second name for it is a copy that costs no bytes, and a later
        // PUT to the source replaces the source's name, not this one's data.
        if let Err(e) = tokio::fs::hard_link(&source, &temp).await {
            if e.kind() == std::io::ErrorKind::NotFound {
                return Err(not_found(e));
            }
            // A file system without links: copy the bytes, then make them durable.
            tokio::fs::copy(&source, &temp).await.map_err(not_found)?;
            let file = tokio::fs::File::open(&temp).await.map_err(backend)?;
            file.sync_all().await.map_err(backend)?;
        }
        self.publish(&temp, &path).await
    }

    async fn delete(&self, key: &str) -> ObjectResult<()> {
        match tokio::fs::remove_file(self.path_of(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn list(&self, prefix: &str) -> ObjectResult<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut keys = Vec::new();
            let mut dirs = vec![root.clone()];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(backend(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(backend)?;
                    let path = entry.path();
                    let Ok(relative) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = relative.to_string_lossy().replace('\\', "/");
                    if key.starts_with(".tmp") {
                        continue;
                    }
                    if entry.file_type().map_err(backend)?.is_dir() {
                        dirs.push(path);
                    } else if key.starts_with(&prefix) {
                        keys.push(key);
                    }
                }
            }
            keys.sort();
            Ok(keys)
        })
        .await
        .map_err(backend)?
    }

    async fn start_multipart(&self, _key: &str, _content_type: &str) -> ObjectResult<String> {
        // Parts are files of their own until joined: nothing to set up.
        Ok(uuid::Uuid::new_v4().simple().to_string())
    }

    fn sign_part(
        &self,
        _key: &str,
        upload_id: &str,
        number: u16,
        size_bytes: u64,
        expires_at_ms: i64,
    ) -> SignedRequest {
        let policy = PutPolicy {
            size_bytes,
            content_type: PART_TYPE.into(),
            sha256: None,
        };
        self.sign_put(&part_key(upload_id, number), &policy, expires_at_ms)
    }

    async fn parts(&self, _key: &str, upload_id: &str) -> ObjectResult<Vec<(u16, u64)>> {
        let prefix = format!("{}/", parts_prefix(upload_id)?);
        let mut parts = Vec::new();
        for key in self.list(&prefix).await? {
            let Some(number) = key[prefix.len()..].parse::<u16>().ok() else {
                continue;
            };
            if let Some(size) = self.size_of(&key).await? {
                parts.push((number, size));
            }
        }
        parts.sort_unstable();
        Ok(parts)
    }

    async fn finish_multipart(&self, key: &str, upload_id: &str, count: u16) -> ObjectResult<()> {
        let path = self.path_of(key)?;
        parts_prefix(upload_id)?;
        let temp = self.temp_path();
        let mut joined = tokio::fs::File::create(&temp).await.map_err(backend)?;
        for number in 1..=count {
            let part = part_key(upload_id, number);
            let mut file = match tokio::fs::File::open(self.path_of(&part)?).await {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = tokio::fs::remove_file(&temp).await;
                    return Err(ObjectError::NotFound(part));
                }
                Err(e) => return Err(backend(e)),
            };
            tokio::io::copy(&mut file, &mut joined)
                .await
                .map_err(backend)?;
        }
        joined.sync_all().await.map_err(backend)?;
        self.publish(&temp, &path).await?;
        self.abort_multipart(key, upload_id).await
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> ObjectResult<()> {
        let dir = self.root.join(parts_prefix(upload_id)?);
        match tokio::fs::remove_dir_all(dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}

/// The type parts are PUT with (the object's own is recorded at completion).
const PART_TYPE: &str = "application/octet-stream";

/// Where the parts of an upload wait to be joined: `parts/<upload id>`.
fn parts_prefix(upload_id: &str) -> ObjectResult<String> {
    if !upload_id.is_empty() && upload_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(format!("parts/{upload_id}"))
    } else {
        Err(backend(format!("not an upload id: {upload_id:?}")))
    }
}

/// The key of one part, numbered so that keys sort as the parts do.
fn part_key(upload_id: &str, number: u16) -> String {
    format!("parts/{upload_id}/{number:05}")
}

fn status(code: StatusCode, why: &str) -> Response {
    (code, why.to_owned()).into_response()
}

/// `PUT /media/blob/{grant}`: exactly the granted bytes, or nothing.
async fn put_blob(
    State(store): State<Arc<FsObjectStore>>,
    UrlPath(token): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let grant = match store.verify(&token, "PUT") {
        Ok(grant) => grant,
        Err(denied) => return denied.into_response(),
    };
    let Some(size) = grant.n else {
        return status(StatusCode::FORBIDDEN, "malformed grant");
    };
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        None => return status(StatusCode::LENGTH_REQUIRED, "Content-Length is required"),
        Some(length) if length != size => {
            return status(
                StatusCode::FORBIDDEN,
                "Content-Length is not the signed size",
            );
        }
        Some(_) => {}
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some(grant.t.as_str()) {
        return status(StatusCode::FORBIDDEN, "Content-Type is not the signed type");
    }
    let Ok(path) = store.path_of(&grant.k) else {
        return status(StatusCode::FORBIDDEN, "malformed grant");
    };
    let temp = store.temp_path();
    let written = receive(body, &temp, size, grant.s.as_deref()).await;
    let answer = match written {
        Ok(digest) => match store.publish(&temp, &path).await {
            Ok(()) => {
                let mut ok = StatusCode::OK.into_response();
                if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
                    ok.headers_mut().insert(header::ETAG, etag);
                }
                return ok;
            }
            Err(error) => {
                tracing::warn!(%error, "media blob not stored");
                status(StatusCode::INTERNAL_SERVER_ERROR, "not stored")
            }
        },
        Err(refusal) => refusal,
    };
    let _ = tokio::fs::remove_file(&temp).await;
    answer
}

/// Writes the body to `temp`, at most `size` bytes, checking its length and digest; answers
/// the digest (hex).
async fn receive(
    body: Body,
    temp: &Path,
    size: u64,
    sha256: Option<&str>,
) -> Result<String, Response> {
    let failed = |error: std::io::Error| {
        tracing::warn!(%error, "media blob not written");
        status(StatusCode::INTERNAL_SERVER_ERROR, "not stored")
    };
    let mut file = tokio::fs::File::create(temp).await.map_err(failed)?;
    let mut hasher = Sha256::new();
    let mut received = 0_u64;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| status(StatusCode::BAD_REQUEST, "the body was cut off"))?;
        received += chunk.len() as u64;
        if received > size {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "the body is longer than signed",
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(failed)?;
    }
    if received != size {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "the body is shorter than signed",
        ));
    }
    let digest = hex::encode(hasher.finalize());
    if sha256.is_some_and(|declared| !declared.eq_ignore_ascii_case(&digest)) {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "the body's SHA-256 is not the signed one",
        ));
    }
    file.sync_all().await.map_err(failed)?;
    Ok(digest)
}

/// The byte range a `Range` header asks of an object of `size` bytes: `None` for the whole,
/// `Err` when it cannot be satisfied.
fn byte_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    // One range of bytes; anything else is served whole, as the RFC allows.
    let Some(spec) = range.strip_prefix("bytes=").filter(|s| !s.contains(',')) else {
        return Ok(None);
    };
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (start, "") => (start.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (start, end) => {
            let end: u64 = end.parse().map_err(|_| ())?;
            (
                start.parse().map_err(|_| ())?,
                end.min(size.saturating_sub(1)),
            )
        }
    };
    if size == 0 || start > end || start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// `GET /media/blob/{grant}`: the object, served as the grant says, whole or one range.
async fn get_blob(
    State(store): State<Arc<FsObjectStore>>,
    UrlPath(token): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let grant = match store.verify(&token, "GET") {
        Ok(grant) => grant,
        Err(denied) => return denied.into_response(),
    };
    let Ok(path) = store.path_of(&grant.k) else {
        return status(StatusCode::FORBIDDEN, "malformed grant");
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return status(StatusCode::NOT_FOUND, "no such object");
        }
        Err(error) => {
            tracing::warn!(%error, "media blob not read");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "not read");
        }
    };
    let size = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(_) => return status(StatusCode::INTERNAL_SERVER_ERROR, "not read"),
    };
    let range = match byte_range(&headers, size) {
        Ok(range) => range,
        Err(()) => {
            let mut refused = status(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                refused.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return refused;
        }
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let length = if size == 0 { 0 } else { end - start + 1 };
    if start > 0 && file.seek(SeekFrom::Start(start)).await.is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "not read");
    }
    let stream = tokio_util::io::ReaderStream::new(file.take(length));
    let mut response = Response::new(Body::from_stream(stream));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, grant.t.clone());
    set(header::CONTENT_LENGTH, length.to_string());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff".into());
    set(header::CACHE_CONTROL, "private, max-age=300".into());
    if range.is_some() {
        set(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
    }
    if let Some(name) = &grant.a {
        set(header::CONTENT_DISPOSITION, super::sniff::attachment(name));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::object_store_suite!(async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let store = Arc::new(FsObjectStore::open(dir.path(), &url, b"secret").expect("opens"));
        let serving = tokio::spawn(axum::serve(listener, store.clone().routes()).into_future());
        let store: Arc<dyn ObjectStore> = store;
        Some((store, (dir, AbortOnDrop(serving))))
    });

    /// Stops the store's listener when the test ends.
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    fn range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).unwrap());
        byte_range(&headers, size)
    }

    #[test]
    fn ranges_are_read_as_the_rfc_says() {
        assert_eq!(range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=95-200", 100), Ok(Some((95, 99))));
        assert_eq!(
            range("bytes=0-1,5-6", 100),
            Ok(None),
            "many ranges: the whole"
        );
        assert_eq!(range("bytes=100-", 100), Err(()));
        assert_eq!(range("bytes=5-2", 100), Err(()));
        assert_eq!(range("bytes=-0", 100), Err(()));
        assert_eq!(range("bytes=x-", 100), Err(()));
    }
}
