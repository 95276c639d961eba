//! Media through the HTTP API and the embedded object store on one real listener: create an
//! upload, PUT its bytes to the signed URL, complete it, download it; and what the checks,
//! quotas and races do to what is kept and charged.

use std::sync::Arc;

#[cfg(feature = "s3")]
use im_business::media::s3::S3ObjectStore;
use im_business::{
    Actor,
    api::http::{ApiState, router},
    media::{Media, MediaConfig, ObjectStore, fs::FsObjectStore},
};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

pub(crate) const APP_SECRET: &str = "app secret for the media tests";
pub(crate) const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

/// The 64-byte header of an x86-64 ELF executable.
fn elf() -> Vec<u8> {
    let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
    bytes.resize(16, 0);
    bytes.extend_from_slice(b"\x02\0\x3e\0\x01\0\0\0");
    bytes.resize(64, 0);
    bytes
}

/// Where the media bytes live: the two backends the HTTP API runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    /// The embedded mode's: files, their signed URLs served by the API's listener.
    Disk,
    /// A fresh bucket on the S3 server of `scripts/services` (MinIO).
    #[cfg(feature = "s3")]
    S3,
}

pub(crate) const BACKENDS: &[Backend] = &[
    Backend::Disk,
    #[cfg(feature = "s3")]
    Backend::S3,
];

pub(crate) struct Server {
    base: String,
    http: reqwest::Client,
    media: Arc<Media>,
    objects: Arc<dyn ObjectStore>,
    pub(crate) world: crate::common::World,
    _dir: tempfile::TempDir,
}

async fn serve() -> Server {
    serve_with(MediaConfig::default()).await
}

async fn serve_with(config: MediaConfig) -> Server {
    serve_on(Backend::Disk, config)
        .await
        .expect("the disk is always there")
}

/// The HTTP API with media on `backend`, or `None` where its server is not running (which
/// fails in CI).
pub(crate) async fn serve_on(backend: Backend, config: MediaConfig) -> Option<Server> {
    let world = crate::common::world().await;
    for id in ["amy", "bob"] {
        world
            .business
            .upsert_user(&Actor::App, id, id, "", "")
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (objects, blob_routes): (Arc<dyn ObjectStore>, _) = match backend {
        Backend::Disk => {
            let disk =
                Arc::new(FsObjectStore::open(dir.path(), &base, APP_SECRET.as_bytes()).unwrap());
            (disk.clone(), Some(disk.routes()))
        }
        #[cfg(feature = "s3")]
        Backend::S3 => (Arc::new(s3_bucket().await?), None),
    };
    let media = Arc::new(Media::new(
        world.business.store(),
        objects.clone(),
        Arc::new(world.bus.clone()),
        config,
    ));
    let state =
        ApiState::new(world.business.clone(), APP_SECRET.as_bytes()).with_media(media.clone());
    let mut app = router(state);
    if let Some(blob_routes) = blob_routes {
        app = app.merge(blob_routes);
    }
    tokio::spawn(async move { axum::serve(listener, app).await });
    Some(Server {
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        media,
        objects,
        world,
        _dir: dir,
    })
}

/// A store on a fresh bucket of `IM_TEST_S3_URL` (`http://key:secret@host:port`).
#[cfg(feature = "s3")]
async fn s3_bucket() -> Option<S3ObjectStore> {
    let url = im_testkit::service_url("IM_TEST_S3_URL", "S3")?;
    let url: reqwest::Url = url.parse().expect("IM_TEST_S3_URL is a URL");
    let config = im_business::media::S3Config {
        endpoint: format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap(),
            url.port_or_known_default().unwrap()
        ),
        bucket: format!("im-media-{}", uuid::Uuid::new_v4().simple()),
        access_key: url.username().to_owned(),
        secret_key: url.password().unwrap_or_default().into(),
        ..Default::default()
    };
    Some(S3ObjectStore::open(&config).await.unwrap())
}

impl Server {
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        actor: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(APP_SECRET)
            .header("x-im-actor", actor)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn create(
        &self,
        user: &str,
        kind: &str,
        mime: &str,
        size: usize,
    ) -> (StatusCode, Value) {
        let body = json!({"user_id": user, "kind": kind, "mime_type": mime, "size_bytes": size});
        self.call(Method::POST, "/v1/media/uploads", user, body)
            .await
    }

    /// Sends `bytes` with the upload's signed request; answers the store's status.
    pub(crate) async fn put(&self, upload: &Value, bytes: &[u8]) -> StatusCode {
        let part = &upload["parts"][0];
        assert_eq!(part["method"], "PUT");
        let mut request = self.http.put(part["url"].as_str().unwrap());
        for h in part["headers"].as_array().unwrap() {
            request = request.header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap());
        }
        request.body(bytes.to_vec()).send().await.unwrap().status()
    }

    pub(crate) async fn complete(&self, user: &str, id: &str) -> (StatusCode, Value) {
        let path = format!("/v1/media/{id}/complete");
        self.call(Method::POST, &path, user, json!({})).await
    }

    /// Fetches the media through a freshly signed URL: status, headers, body.
    pub(crate) async fn download(&self, user: &str, id: &str) -> (header::HeaderMap, Vec<u8>) {
        let (status, signed) = self
            .call(
                Method::POST,
                &format!("/v1/media/{id}/download"),
                user,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{signed}");
        let response = self
            .http
            .get(signed["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        (headers, response.bytes().await.unwrap().to_vec())
    }

    pub(crate) async fn quota(&self, user: &str) -> Value {
        let (status, quota) = self
            .call(
                Method::GET,
                &format!("/v1/users/{user}/media-quota"),
                user,
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{quota}");
        quota
    }

    pub(crate) async fn keys(&self, prefix: &str) -> Vec<String> {
        self.objects.list(prefix).await.unwrap()
    }
}

#[tokio::test]
async fn an_upload_goes_straight_to_the_store_and_is_served_as_its_bytes_say() {
    for backend in BACKENDS {
        let Some(s) = serve_on(*backend, MediaConfig::default()).await else {
            continue;
        };
        an_upload_goes_straight_to_the_store_and_is_served_as_its_bytes_say_on(&s).await;
    }
}

async fn an_upload_goes_straight_to_the_store_and_is_served_as_its_bytes_say_on(s: &Server) {
    let (status, upload) = s.create("amy", "image", "image/jpeg", PNG.len()).await;
    assert_eq!(status, StatusCode::OK, "{upload}");
    assert_eq!(upload["media"]["state"], "pending");
    assert_eq!(s.quota("amy").await["pending_uploads"], 1);
    let id = upload["media_id"].as_str().unwrap().to_owned();
    assert_eq!(s.put(&upload, PNG).await, StatusCode::OK);

    let (status, media) = s.complete("amy", &id).await;
    assert_eq!(status, StatusCode::OK, "{media}");
    assert_eq!(
        (media["state"].as_str(), media["mime_type"].as_str()),
        (Some("ready"), Some("image/png")),
        "the sniffed type wins over the declared one"
    );
    let (again_status, again) = s.complete("amy", &id).await;
    assert_eq!(
        (again_status, &again),
        (StatusCode::OK, &media),
        "complete is idempotent"
    );

    let (headers, bytes) = s.download("amy", &id).await;
    assert_eq!(bytes, PNG);
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers.get(header::CONTENT_DISPOSITION).is_none(),
        "an image is shown inline"
    );

    let quota = s.quota("amy").await;
    assert_eq!(
        (
            quota["stored_bytes"].as_u64(),
            quota["pending_uploads"].as_u64()
        ),
        (Some(PNG.len() as u64), Some(0))
    );
    assert_eq!(s.keys("staging/").await, Vec::<String>::new());
    assert_eq!(s.keys("verify/").await, Vec::<String>::new());

    // The old URL still takes a PUT until it expires: what is served stays what was checked.
    let mut other = PNG.to_vec();
    *other.last_mut().unwrap() ^= 0xff;
    assert_eq!(s.put(&upload, &other).await, StatusCode::OK);
    assert_eq!(s.download("amy", &id).await.1, PNG);
    assert_eq!(s.complete("amy", &id).await.1, media);

    // A redirect for <img src>.
    let response = s
        .http
        .get(format!("{}/v1/media/{id}/content", s.base))
        .bearer_auth(APP_SECRET)
        .header("x-im-actor", "amy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let fetched = s
        .http
        .get(&location)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(fetched.as_ref(), PNG);
}

#[tokio::test]
async fn bytes_that_are_not_what_was_declared_are_rejected_and_cost_nothing() {
    for backend in BACKENDS {
        let Some(s) = serve_on(*backend, MediaConfig::default()).await else {
            continue;
        };
        bytes_that_are_not_what_was_declared_are_rejected_and_cost_nothing_on(&s).await;
    }
}

async fn bytes_that_are_not_what_was_declared_are_rejected_and_cost_nothing_on(s: &Server) {
    let exe = elf();
    let (_, upload) = s.create("amy", "image", "image/png", exe.len()).await;
    let id = upload["media_id"].as_str().unwrap().to_owned();
    assert_eq!(s.put(&upload, &exe).await, StatusCode::OK);
    for _ in 0..2 {
        let (status, error) = s.complete("amy", &id).await;
        assert_eq!(
            (status, error["code"].as_i64(), error["name"].as_str()),
            (StatusCode::BAD_REQUEST, Some(4010), Some("MEDIA_REJECTED")),
            "{error}"
        );
    }
    let (status, media) = s
        .call(Method::GET, &format!("/v1/media/{id}"), "amy", json!({}))
        .await;
    assert_eq!(
        (status, media["state"].as_str()),
        (StatusCode::OK, Some("rejected"))
    );
    assert!(
        media["detail"].as_str().unwrap().contains("image"),
        "{media}"
    );
    let (status, error) = s
        .call(
            Method::POST,
            &format!("/v1/media/{id}/download"),
            "amy",
            json!({}),
        )
        .await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::NOT_FOUND, Some("MEDIA_NOT_FOUND"))
    );
    for prefix in ["objects/", "staging/", "verify/"] {
        assert_eq!(s.keys(prefix).await, Vec::<String>::new(), "{prefix}");
    }
    let quota = s.quota("amy").await;
    assert_eq!(
        (
            quota["stored_bytes"].as_u64(),
            quota["window_bytes"].as_u64(),
            quota["pending_uploads"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );

    // A digest declared at create and not matched, and a size not matched, reject too.
    let body = json!({"user_id": "amy", "kind": "image", "mime_type": "image/png",
        "size_bytes": PNG.len(), "sha256_hex": "ab".repeat(32)});
    let (_, upload) = s.call(Method::POST, "/v1/media/uploads", "amy", body).await;
    // The store refuses the bytes already (the digest is part of the signed request).
    assert!(s.put(&upload, PNG).await.is_client_error());
    let id = upload["media_id"].as_str().unwrap();
    let (status, error) = s.complete("amy", id).await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::CONFLICT, Some("CONFLICT")),
        "nothing uploaded: {error}"
    );
}

#[tokio::test]
async fn what_a_browser_could_run_is_served_as_an_attachment() {
    for backend in BACKENDS {
        let Some(s) = serve_on(*backend, MediaConfig::default()).await else {
            continue;
        };
        what_a_browser_could_run_is_served_as_an_attachment_on(&s).await;
    }
}

async fn what_a_browser_could_run_is_served_as_an_attachment_on(s: &Server) {
    let page = b"<!DOCTYPE html><html><script>alert(1)</script></html>";
    for (kind, mime, name) in [
        ("file", "text/html", "page.html"),
        ("file", "image/svg+xml", "logo.svg"),
    ] {
        let body = json!({"user_id": "amy", "kind": kind, "mime_type": mime,
            "size_bytes": page.len(), "file_name": name});
        let (_, upload) = s.call(Method::POST, "/v1/media/uploads", "amy", body).await;
        let id = upload["media_id"].as_str().unwrap().to_owned();
        assert_eq!(s.put(&upload, page).await, StatusCode::OK);
        let (status, media) = s.complete("amy", &id).await;
        assert_eq!(status, StatusCode::OK, "{media}");
        let (headers, bytes) = s.download("amy", &id).await;
        assert_eq!(bytes, page);
        let disposition = headers[header::CONTENT_DISPOSITION].to_str().unwrap();
        assert!(
            disposition.starts_with("attachment;"),
            "{mime}: {disposition}"
        );
        assert!(disposition.contains(name), "{disposition}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    // An image that is really SVG (no magic number of any image type) is not an image.
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
    let (_, upload) = s.create("amy", "image", "image/svg+xml", svg.len()).await;
    assert_eq!(s.put(&upload, svg).await, StatusCode::OK);
    let (status, error) = s
        .complete("amy", upload["media_id"].as_str().unwrap())
        .await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::BAD_REQUEST, Some("MEDIA_REJECTED"))
    );
}

#[tokio::test]
async fn a_user_sees_and_manages_only_its_own_media() {
    let s = serve().await;
    let (_, upload) = s.create("amy", "image", "image/png", PNG.len()).await;
    let id = upload["media_id"].as_str().unwrap().to_owned();
    s.put(&upload, PNG).await;
    s.complete("amy", &id).await;
    for (method, path) in [
        (Method::GET, format!("/v1/media/{id}")),
        (Method::POST, format!("/v1/media/{id}/complete")),
        (Method::POST, format!("/v1/media/{id}/abort")),
        (Method::POST, format!("/v1/media/{id}/download")),
        (Method::GET, format!("/v1/media/{id}/content")),
        (Method::GET, "/v1/media/no-such-media".to_owned()),
    ] {
        let (status, error) = s.call(method.clone(), &path, "bob", json!({})).await;
        assert_eq!(
            (status, error["code"].as_i64()),
            (StatusCode::NOT_FOUND, Some(4009)),
            "{method} {path}: {error}"
        );
    }
    let (status, error) = s.create_for("bob", "amy").await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN"))
    );
    let (status, _) = s
        .call(Method::GET, "/v1/users/amy/media-quota", "bob", json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Without the app secret nothing is answered.
    let response = s
        .http
        .get(format!("{}/v1/media/{id}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

impl Server {
    pub(crate) async fn create_for(&self, actor: &str, user: &str) -> (StatusCode, Value) {
        let body =
            json!({"user_id": user, "kind": "image", "mime_type": "image/png", "size_bytes": 10});
        self.call(Method::POST, "/v1/media/uploads", actor, body)
            .await
    }
}

#[tokio::test]
async fn quotas_are_reserved_at_create_and_say_their_limit() {
    let config = MediaConfig {
        pending_uploads_per_user: 2,
        stored_bytes_per_user: 3 * PNG.len() as u64,
        max_image_bytes: 1024,
        ..MediaConfig::default()
    };
    let s = serve_with(config).await;
    let (status, error) = s.create("amy", "image", "image/png", 1025).await;
    assert_eq!(
        (status, error["name"].as_str(), error["limit"].as_u64()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            Some("QUOTA_EXCEEDED"),
            Some(1024)
        ),
        "{error}"
    );
    let (_, first) = s.create("amy", "image", "image/png", PNG.len()).await;
    let (_, second) = s.create("amy", "image", "image/png", PNG.len()).await;
    let (status, error) = s.create("amy", "image", "image/png", PNG.len()).await;
    assert_eq!(
        (status, error["code"].as_i64(), error["limit"].as_u64()),
        (StatusCode::TOO_MANY_REQUESTS, Some(5002), Some(2)),
        "two pending at most: {error}"
    );
    // Another user's quota is its own.
    assert_eq!(
        s.create("bob", "image", "image/png", PNG.len()).await.0,
        StatusCode::OK
    );
    // Aborting releases the reservation.
    let first_id = first["media_id"].as_str().unwrap();
    let (status, _) = s
        .call(
            Method::POST,
            &format!("/v1/media/{first_id}/abort"),
            "amy",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.quota("amy").await["pending_uploads"], 1);
    let (status, third) = s.create("amy", "image", "image/png", PNG.len()).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    // Completed uploads count against the stored bytes: three PNGs fit, a fourth does not.
    for upload in [&second, &third] {
        s.put(upload, PNG).await;
        assert_eq!(
            s.complete("amy", upload["media_id"].as_str().unwrap())
                .await
                .0,
            StatusCode::OK
        );
    }
    let (_, fourth) = s.create("amy", "image", "image/png", PNG.len()).await;
    let (status, error) = s.create("amy", "image", "image/png", PNG.len()).await;
    assert_eq!(
        (status, error["limit"].as_u64()),
        (StatusCode::TOO_MANY_REQUESTS, Some(3 * PNG.len() as u64)),
        "stored and reserved bytes at most the quota: {error}"
    );
    assert_eq!(fourth["media"]["state"], "pending");
}

#[tokio::test]
async fn creating_too_fast_is_rate_limited_with_a_retry_hint() {
    let config = MediaConfig {
        creates_per_minute: 1,
        create_burst: 1,
        ..MediaConfig::default()
    };
    let s = serve_with(config).await;
    assert_eq!(
        s.create("amy", "file", "text/plain", 5).await.0,
        StatusCode::OK
    );
    let response = s
        .http
        .post(format!("{}/v1/media/uploads", s.base))
        .bearer_auth(APP_SECRET)
        .json(
            &json!({"user_id": "amy", "kind": "file", "mime_type": "text/plain", "size_bytes": 5}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["name"], "RATE_LIMITED");
    let hint = error["retry_after_ms"].as_u64().unwrap();
    assert!(hint > 0 && hint <= 60_000, "{error}");
    assert_eq!(retry_after, hint.div_ceil(1000));
}

#[tokio::test]
async fn the_same_client_upload_id_is_the_same_upload_with_fresh_urls() {
    let s = serve().await;
    let body = json!({"user_id": "amy", "kind": "image", "mime_type": "image/png",
        "size_bytes": PNG.len(), "client_upload_id": "photo-1"});
    let (_, first) = s
        .call(Method::POST, "/v1/media/uploads", "amy", body.clone())
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, again) = s
        .call(Method::POST, "/v1/media/uploads", "amy", body.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["media_id"], first["media_id"]);
    assert_eq!(s.quota("amy").await["pending_uploads"], 1, "reserved once");
    // The resumed URL works.
    assert_eq!(s.put(&again, PNG).await, StatusCode::OK);
    let id = first["media_id"].as_str().unwrap();
    assert_eq!(s.complete("amy", id).await.0, StatusCode::OK);
    let (status, done) = s.call(Method::POST, "/v1/media/uploads", "amy", body).await;
    assert_eq!(
        (status, done["media"]["state"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    assert_eq!(done["parts"], json!([]), "nothing left to send");
    let other = json!({"user_id": "amy", "kind": "image", "mime_type": "image/png",
        "size_bytes": 99, "client_upload_id": "photo-1"});
    let (status, error) = s
        .call(Method::POST, "/v1/media/uploads", "amy", other)
        .await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::CONFLICT, Some("CONFLICT"))
    );
}

#[tokio::test]
async fn complete_and_abort_race_and_exactly_one_wins() {
    let config = MediaConfig {
        create_burst: 100,
        ..MediaConfig::default()
    };
    for backend in BACKENDS {
        let Some(s) = serve_on(*backend, config.clone()).await else {
            continue;
        };
        race_on(&s).await;
    }
}

async fn race_on(s: &Server) {
    let mut ready = 0;
    for _ in 0..12 {
        let (_, upload) = s.create("amy", "image", "image/png", PNG.len()).await;
        let id = upload["media_id"].as_str().unwrap().to_owned();
        s.put(&upload, PNG).await;
        let abort_path = format!("/v1/media/{id}/abort");
        let (a, b, c) = tokio::join!(
            s.complete("amy", &id),
            s.call(Method::POST, &abort_path, "amy", json!({})),
            s.complete("amy", &id),
        );
        let (_, media) = s
            .call(Method::GET, &format!("/v1/media/{id}"), "amy", json!({}))
            .await;
        match media["state"].as_str() {
            Some("ready") => {
                ready += 1;
                assert_eq!((a.0, c.0), (StatusCode::OK, StatusCode::OK), "{a:?} {c:?}");
                assert_eq!(b.0, StatusCode::CONFLICT, "{b:?}");
            }
            Some("aborted") => {
                assert_eq!(b.0, StatusCode::OK);
                for done in [a, c] {
                    assert_eq!(done.0, StatusCode::NOT_FOUND, "{done:?}");
                }
            }
            other => panic!("settled as {other:?}"),
        }
    }
    let quota = s.quota("amy").await;
    assert_eq!(
        (
            quota["stored_bytes"].as_u64(),
            quota["pending_uploads"].as_u64()
        ),
        (Some(ready * PNG.len() as u64), Some(0)),
        "each upload that won is charged once, the others nothing: {quota}"
    );
    assert!(
        s.keys("objects/").await.len() <= 1,
        "the same bytes are kept once"
    );
}

#[tokio::test]
async fn uploads_not_completed_in_time_expire_and_release_their_reservation() {
    let s = serve().await;
    let (_, upload) = s.create("amy", "file", "text/plain", 5).await;
    let id = upload["media_id"].as_str().unwrap().to_owned();
    assert_eq!(s.put(&upload, b"hello").await, StatusCode::OK);
    assert_eq!(
        s.media
            .expire_uploads(im_common::now_ms(), 100)
            .await
            .unwrap(),
        0,
        "not yet"
    );
    let later = upload["expires_at_ms"].as_i64().unwrap() + 1;
    assert_eq!(s.media.expire_uploads(later, 100).await.unwrap(), 1);
    assert_eq!(s.media.expire_uploads(later, 100).await.unwrap(), 0, "once");
    assert_eq!(s.quota("amy").await["pending_uploads"], 0);
    assert_eq!(s.keys("staging/").await, Vec::<String>::new());
    let (status, error) = s.complete("amy", &id).await;
    assert_eq!(
        (status, error["name"].as_str()),
        (StatusCode::NOT_FOUND, Some("MEDIA_NOT_FOUND"))
    );
}

/// A `width` x `height` PNG of a gradient (no transparency).
fn picture(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 200])
    });
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

impl Server {
    /// Creates, PUTs and completes an upload of `bytes`; the completed media.
    pub(crate) async fn uploaded(&self, user: &str, mime: &str, bytes: &[u8]) -> Value {
        let (status, upload) = self.create(user, "image", mime, bytes.len()).await;
        assert_eq!(status, StatusCode::OK, "{upload}");
        assert_eq!(self.put(&upload, bytes).await, StatusCode::OK);
        let id = upload["media_id"].as_str().unwrap();
        let (status, media) = self.complete(user, id).await;
        assert_eq!(status, StatusCode::OK, "{media}");
        media
    }

    /// Signs a download of `variant` for `user`: the status and the answer.
    pub(crate) async fn sign(&self, user: &str, id: &str, variant: &str) -> (StatusCode, Value) {
        let path = format!("/v1/media/{id}/download");
        self.call(Method::POST, &path, user, json!({"variant": variant}))
            .await
    }
}

#[tokio::test]
async fn an_image_is_processed_into_thumbnails_its_readers_download() {
    for backend in BACKENDS {
        let Some(s) = serve_on(*backend, MediaConfig::default()).await else {
            continue;
        };
        an_image_is_processed_into_thumbnails_its_readers_download_on(&s).await;
    }
}

async fn an_image_is_processed_into_thumbnails_its_readers_download_on(s: &Server) {
    let media = s.uploaded("amy", "image/png", &picture(640, 480)).await;
    assert_eq!(
        media["state"], "ready",
        "complete waited for processing: {media}"
    );
    assert_eq!(
        (media["width"].as_u64(), media["height"].as_u64()),
        (Some(640), Some(480))
    );
    assert_eq!(media["animated"], false);
    assert!(!media["thumbhash"].as_str().unwrap().is_empty());
    let names: Vec<&str> = media["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["thumb_96", "thumb_320"],
        "none larger than the image"
    );
    let id = media["media_id"].as_str().unwrap();

    let (status, signed) = s.sign("amy", id, "thumb_320").await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    let response = s
        .http
        .get(signed["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let thumb = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (320, 240));
    assert_eq!(
        media["variants"][1]["size_bytes"].as_u64(),
        Some(
            s.objects
                .size_of(&im_business::media::variant_key(
                    media["sha256_hex"].as_str().unwrap(),
                    "thumb_320"
                ))
                .await
                .unwrap()
                .unwrap()
        ),
        "the size the media says is the size kept"
    );

    // A variant the media has not, and another user with no message showing it: nothing.
    let (status, refused) = s.sign("amy", id, "thumb_1024").await;
    assert_eq!(
        (status, &refused["name"]),
        (StatusCode::NOT_FOUND, &json!("MEDIA_NOT_FOUND"))
    );
    let (status, refused) = s.sign("bob", id, "thumb_96").await;
    assert_eq!(
        (status, &refused["name"]),
        (StatusCode::NOT_FOUND, &json!("MEDIA_NOT_FOUND"))
    );

    // Bytes that are no image this server decodes are kept without variants, saying why.
    let media = s.uploaded("amy", "image/png", PNG).await;
    assert_eq!(media["state"], "ready");
    assert_eq!(media["variants"], json!([]));
    assert!(
        media["no_variants"]
            .as_str()
            .unwrap()
            .contains("not decoded"),
        "{media}"
    );
}

#[tokio::test]
async fn complete_answers_processing_media_after_its_wait_and_processing_goes_on() {
    let s = serve_with(MediaConfig {
        processing_wait: std::time::Duration::ZERO,
        ..MediaConfig::default()
    })
    .await;
    let media = s.uploaded("amy", "image/png", &picture(1200, 900)).await;
    assert_eq!(media["state"], "processing", "{media}");
    let id = media["media_id"].as_str().unwrap().to_owned();
    // Not served before it is ready: a retry hint instead.
    let (status, busy) = s.sign("amy", &id, "").await;
    if status != StatusCode::OK {
        assert_eq!(busy["name"], "UNAVAILABLE", "{busy}");
    }
    let ready = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let media = s.media.get_media(&Actor::App, &id).await.unwrap();
            if media.state() == im_proto::v1::MediaState::Ready {
                return media;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("processing ends by itself");
    let facts = im_business::media::facts::MediaFacts::parse(&ready.facts);
    assert_eq!(
        (facts.width, facts.height, facts.variants.len()),
        (1200, 900, 3)
    );
}

#[tokio::test]
async fn a_large_upload_goes_in_parts_that_are_joined_at_completion() {
    const MIB: u64 = 1 << 20;
    let config = MediaConfig {
        max_single_put_bytes: 5 * MIB,
        part_bytes: 5 * MIB,
        ..MediaConfig::default()
    };
    for backend in BACKENDS {
        let Some(s) = serve_on(*backend, config.clone()).await else {
            continue;
        };
        a_large_upload_goes_in_parts_on(&s).await;
    }
}

async fn a_large_upload_goes_in_parts_on(s: &Server) {
    let body: Vec<u8> = (0..11 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let create = json!({"user_id": "amy", "kind": "file", "mime_type": "application/octet-stream",
        "size_bytes": body.len(), "client_upload_id": "big-1"});
    let (status, upload) = s
        .call(Method::POST, "/v1/media/uploads", "amy", create.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{upload}");
    assert_eq!(upload["mode"], "multipart");
    let part = upload["part_size_bytes"].as_u64().unwrap() as usize;
    assert_eq!(part, 5 << 20);
    let parts = upload["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "5 + 5 + 1 MiB");
    let id = upload["media_id"].as_str().unwrap().to_owned();
    let chunk = |n: usize| &body[n * part..((n + 1) * part).min(body.len())];
    let send = |signed: &Value, bytes: Vec<u8>| {
        let mut request = s.http.put(signed["url"].as_str().unwrap());
        for h in signed["headers"].as_array().unwrap() {
            request = request.header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap());
        }
        async move { request.body(bytes).send().await.unwrap().status() }
    };

    // The store holds each part to its length; completing with a part missing says so.
    let mut short = chunk(2).to_vec();
    short.pop();
    assert!(send(&parts[2], short).await.is_client_error());
    assert!(send(&parts[2], chunk(2).to_vec()).await.is_success());
    assert!(send(&parts[0], chunk(0).to_vec()).await.is_success());
    let (status, refused) = s.complete("amy", &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("part"),
        "{refused}"
    );

    // Resumed (the same client upload id): the same upload, its remaining part signed again.
    let (_, resumed) = s
        .call(Method::POST, "/v1/media/uploads", "amy", create)
        .await;
    assert_eq!(resumed["media_id"], id.as_str());
    assert!(
        send(&resumed["parts"][1], chunk(1).to_vec())
            .await
            .is_success()
    );
    let (status, media) = s.complete("amy", &id).await;
    assert_eq!(status, StatusCode::OK, "{media}");
    assert_eq!(media["state"], "ready", "{media}");
    assert_eq!(media["size_bytes"], body.len());
    let (_, served) = s.download("amy", &id).await;
    assert!(served == body, "the parts joined in order");
    assert_eq!(s.quota("amy").await["stored_bytes"], body.len());
    assert!(s.keys("parts/").await.is_empty(), "no part left behind");
    let (status, again) = s.complete("amy", &id).await;
    assert_eq!((status, &again["state"]), (StatusCode::OK, &json!("ready")));

    // Given up: its parts go, and its reservation.
    let (_, other) = s
        .create("bob", "file", "application/octet-stream", 6 << 20)
        .await;
    assert_eq!(other["mode"], "multipart");
    assert!(
        send(&other["parts"][0], body[..5 << 20].to_vec())
            .await
            .is_success()
    );
    let other_id = other["media_id"].as_str().unwrap();
    let (status, _) = s
        .call(
            Method::POST,
            &format!("/v1/media/{other_id}/abort"),
            "bob",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.keys("parts/").await.is_empty());
    assert_eq!(s.quota("bob").await["stored_bytes"], 0);
}
