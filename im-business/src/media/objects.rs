//! The object store media bytes live in, behind [`ObjectStore`]: the local disk in the
//! embedded mode ([`super::fs`]), S3 in the distributed one. Clients never send bytes through
//! the API: they PUT and GET at URLs the store itself checks (signed, expiring, bound to the
//! exact size and type), and the service only reads, copies and deletes server-side.
//!
//! Keys are the server's choice, never a client's name (`staging/<media id>` while uploading,
//! `objects/<sha256[0:2]>/<sha256>` once verified, `variants/<sha256>/<name>`,
//! `quarantine/<sha256>`). Objects too large for one PUT arrive in parts, each a signed PUT
//! of an exact length, joined by the store when the upload completes.

use async_trait::async_trait;

/// A request a client makes straight to the store: the URL, its method and the headers it
/// must carry exactly as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// Where.
    pub url: String,
    /// `PUT` or `GET`.
    pub method: &'static str,
    /// Headers to send as they are.
    pub headers: Vec<(String, String)>,
    /// When the store stops honouring it.
    pub expires_at_ms: i64,
}

/// What a signed PUT allows: exactly these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutPolicy {
    /// The exact body length.
    pub size_bytes: u64,
    /// The exact `Content-Type`.
    pub content_type: String,
    /// The body's SHA-256, when the uploader declared one: the store refuses other bytes.
    pub sha256: Option<[u8; 32]>,
}

/// How a signed GET serves the object, whatever its bytes look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// The `Content-Type` answered (the type sniffed at completion).
    pub content_type: String,
    /// `Content-Disposition: attachment` with this file name, for anything a browser could
    /// render as a page; `None` serves it inline.
    pub attachment: Option<String>,
}

/// Why an object-store call failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// No object at the key.
    #[error("no object {0}")]
    NotFound(String),
    /// The store could not be reached or failed.
    #[error("object store: {0}")]
    Backend(String),
}

/// The result of an object-store call.
pub type ObjectResult<T> = Result<T, ObjectError>;

/// Where media bytes are kept. Every backend runs the same suite (`object_store_suite!`).
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A URL that lets its holder PUT exactly the bytes `policy` describes to `key` until
    /// `expires_at_ms`; the store itself refuses any other length, type or digest, an expired
    /// URL and a tampered one.
    fn sign_put(&self, key: &str, policy: &PutPolicy, expires_at_ms: i64) -> SignedRequest;
    /// A URL that lets its holder GET `key` (with `Range`) until `expires_at_ms`, served as
    /// `serving` says, with `X-Content-Type-Options: nosniff` where the store can set it.
    fn sign_get(&self, key: &str, serving: &Serving, expires_at_ms: i64) -> SignedRequest;
    /// The object's size, if it exists.
    async fn size_of(&self, key: &str) -> ObjectResult<Option<u64>>;
    /// Up to `len` bytes of the object from `offset` (fewer at its end).
    async fn read_range(&self, key: &str, offset: u64, len: u64) -> ObjectResult<Vec<u8>>;
    /// Stores `bytes` at `key`, replacing what was there, all at once.
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> ObjectResult<()>;
    /// Copies the object at `from` to `to` inside the store, as one snapshot: a write to `from`
    /// during the copy is either all in it or not at all.
    async fn copy(&self, from: &str, to: &str) -> ObjectResult<()>;
    /// Deletes the object; deleting what is not there succeeds.
    async fn delete(&self, key: &str) -> ObjectResult<()>;
    /// The keys under `prefix`, in key order.
    async fn list(&self, prefix: &str) -> ObjectResult<Vec<String>>;

    /// Starts an upload of `key` in parts (an object too large for one PUT); answers its id.
    async fn start_multipart(&self, key: &str, content_type: &str) -> ObjectResult<String>;
    /// A URL that lets its holder PUT part `number` (from 1) of the upload, of exactly
    /// `size_bytes`, until `expires_at_ms`; the store refuses another length.
    fn sign_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        size_bytes: u64,
        expires_at_ms: i64,
    ) -> SignedRequest;
    /// The parts received so far: their numbers and sizes, in order.
    async fn parts(&self, key: &str, upload_id: &str) -> ObjectResult<Vec<(u16, u64)>>;
    /// Joins parts 1 to `count` into the object at `key` and ends the upload. A part missing
    /// is [`ObjectError::NotFound`] naming it.
    async fn finish_multipart(&self, key: &str, upload_id: &str, count: u16) -> ObjectResult<()>;
    /// Ends the upload without an object, its parts deleted; ending one that is finished or
    /// unknown succeeds.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> ObjectResult<()>;
}

/// Whether `key` is one the service makes: ASCII letters, digits and `/._-`, no empty or dot
/// segment. Backends refuse others, so no key can climb out of its root.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        && key
            .split('/')
            .all(|segment| !segment.is_empty() && !segment.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::valid_key;

    #[test]
    fn keys_cannot_climb_out_of_the_root() {
        for good in [
            "staging/abc-1",
            "objects/ab/abcdef",
            "variants/ab/thumb_96.webp",
        ] {
            assert!(valid_key(good), "{good}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "../x",
            "a/../b",
            "a/.hidden",
            "a b",
            "a\\b",
            "é",
        ] {
            assert!(!valid_key(bad), "{bad}");
        }
    }
}
