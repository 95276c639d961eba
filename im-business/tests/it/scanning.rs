//! Content safety through the HTTP API, on both object stores: a real clamd (started by
//! `scripts/services` with a signature of the EICAR test file) quarantines unsafe bytes
//! wherever they are, an operator's quarantine blocks the same bytes uploaded by anyone, a
//! release serves them again; the app's own scanning webhook; a scanner that is down holds
//! media (or lets it pass, by policy) and raises an alert.

use std::sync::{Arc, Mutex};

use axum::{Json, extract::State, http::HeaderMap, routing::post};
use im_business::media::{MediaConfig, ScanConfig, WhenUnavailable, object_key, quarantine_key};
use im_proto::v1::{self, MediaStage};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::media::{BACKENDS, PNG, Server, serve_on};

/// The EICAR test file: every scanner's "this is a virus" that is not one.
const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

fn scanning(scan: ScanConfig) -> MediaConfig {
    MediaConfig {
        scan,
        ..MediaConfig::default()
    }
}

/// clamd of `scripts/services`, or `None` to skip (which fails in CI).
fn clamd() -> Option<ScanConfig> {
    let address = im_testkit::service_url("IM_TEST_CLAMD_ADDR", "clamd")?;
    Some(ScanConfig {
        clamd: address,
        ..ScanConfig::default()
    })
}

/// Creates, PUTs and completes an upload of `bytes` as a file; the completion's answer.
async fn upload(s: &Server, user: &str, mime: &str, bytes: &[u8]) -> (StatusCode, Value) {
    let (status, created) = s.create(user, "file", mime, bytes.len()).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(s.put(&created, bytes).await, StatusCode::OK);
    s.complete(user, created["media_id"].as_str().unwrap())
        .await
}

async fn moderate(
    s: &Server,
    actor: &str,
    id: &str,
    action: &str,
    reason: &str,
) -> (StatusCode, Value) {
    let path = format!("/v1/media/{id}/{action}");
    s.call(Method::POST, &path, actor, json!({ "reason": reason }))
        .await
}

fn bus(s: &Server) -> &dyn im_common::bus::Bus {
    &s.world.bus
}

/// The next event, waiting at most long enough for a hang to fail the test.
async fn next<E: im_proto::bus::BusEvent>(events: &mut im_common::bus::Events<E>) -> E {
    tokio::time::timeout(std::time::Duration::from_secs(30), events.next())
        .await
        .expect("an event in time")
        .expect("the bus is open")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn unsafe_bytes_are_quarantined_everywhere_until_an_operator_releases_them() {
    let Some(scan) = clamd() else { return };
    for backend in BACKENDS {
        let Some(s) = serve_on(*backend, scanning(scan.clone())).await else {
            continue;
        };
        unsafe_bytes_are_quarantined_on(&s).await;
    }
}

async fn unsafe_bytes_are_quarantined_on(s: &Server) {
    let mut scans = bus(s).events::<v1::ScanEvent>().await.unwrap();
    let sha = sha256_hex(EICAR);

    // clamd finds it: quarantined at once, served to no one, the bytes out of `objects/`.
    let (status, held) = upload(s, "amy", "text/plain", EICAR).await;
    assert_eq!(status, StatusCode::OK, "{held}");
    assert_eq!(held["state"], "quarantined", "{held}");
    let detail = held["detail"].as_str().unwrap();
    assert!(
        detail.contains("Im.Test.Eicar"),
        "clamd's finding: {detail}"
    );
    let id = held["media_id"].as_str().unwrap().to_owned();
    let event = next(&mut scans).await.media.unwrap();
    assert_eq!(event.stage(), MediaStage::Quarantined);
    assert_eq!(event.media_id, id);
    let (status, refused) = s.sign("amy", &id, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["name"], "MEDIA_QUARANTINED");
    assert!(
        s.keys(&object_key(&sha)).await.is_empty(),
        "not under objects/"
    );
    assert_eq!(s.keys(&quarantine_key(&sha)).await.len(), 1, "kept aside");

    // The same bytes from someone else: quarantined at completion, by their digest.
    let (_, again) = upload(s, "bob", "text/plain", EICAR).await;
    assert_eq!(again["state"], "quarantined", "{again}");
    let event = next(&mut scans).await.media.unwrap();
    assert_eq!(event.stage(), MediaStage::Quarantined);
    assert_eq!(event.media_id, again["media_id"].as_str().unwrap());

    // Clean bytes pass the scan and are served.
    let (_, clean) = upload(s, "amy", "image/png", PNG).await;
    assert_eq!(clean["state"], "ready", "{clean}");
    let clean_id = clean["media_id"].as_str().unwrap().to_owned();
    let event = next(&mut scans).await.media.unwrap();
    assert_eq!(
        (event.stage(), event.media_id.as_str()),
        (MediaStage::ScanClean, clean_id.as_str())
    );

    // Only the app moderates, and it says why.
    let (status, _) = moderate(s, "amy", &clean_id, "quarantine", "mine").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, refused) = moderate(s, "", &clean_id, "quarantine", " ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["name"], "INVALID_ARGUMENT");

    // An operator quarantines bytes no scanner flags: the same bytes uploaded again by
    // someone else are held at completion, though clamd passes them.
    let (status, held) = moderate(s, "", &clean_id, "quarantine", "reported by users").await;
    assert_eq!(status, StatusCode::OK, "{held}");
    assert_eq!(held["state"], "quarantined");
    assert_eq!(held["detail"], "reported by users");
    let (_, copy) = upload(s, "bob", "image/png", PNG).await;
    assert_eq!(copy["state"], "quarantined", "{copy}");
    assert_eq!(copy["detail"], "reported by users");
    let (status, _) = s.sign("amy", &clean_id, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Released: every holder of the bytes is served again, and the bytes are back.
    let (status, released) = moderate(s, "", &id, "release", "the test file, not a virus").await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["state"], "ready", "{released}");
    assert_eq!(released["detail"], "");
    let (_, bytes) = s.download("amy", &id).await;
    assert_eq!(bytes, EICAR);
    assert_eq!(s.keys(&object_key(&sha)).await.len(), 1);
    assert!(s.keys(&quarantine_key(&sha)).await.is_empty());
    let bobs = again["media_id"].as_str().unwrap();
    let (status, bobs) = s
        .call(Method::GET, &format!("/v1/media/{bobs}"), "bob", json!({}))
        .await;
    assert_eq!(
        (status, &bobs["state"]),
        (StatusCode::OK, &json!("ready")),
        "{bobs}"
    );

    // Released bytes are allowed from now on: uploaded again, they are not scanned again.
    let (_, third) = upload(s, "bob", "text/plain", EICAR).await;
    assert_eq!(third["state"], "ready", "{third}");
}

/// What the app's scanning webhook was sent, and what it answers per digest.
#[derive(Default)]
struct Webhook {
    asked: Vec<Value>,
    fetched: Vec<Vec<u8>>,
    authorized: Vec<bool>,
}

async fn scanner(
    State(seen): State<Arc<Mutex<Webhook>>>,
    headers: HeaderMap,
    Json(asked): Json<Value>,
) -> Json<Value> {
    // The signed URL it is given fetches the bytes.
    let url = asked["url"].as_str().unwrap_or_default().to_owned();
    let bytes = reqwest::get(&url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let verdict = match bytes.as_slice() {
        b"reject me" => json!({"verdict": "reject", "reason": "not allowed here"}),
        b"hold me" => json!({"verdict": "quarantine", "reason": "looks like spam"}),
        _ => json!({"verdict": "allow"}),
    };
    let mut seen = seen.lock().unwrap();
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    seen.authorized
        .push(bearer == Some("Bearer webhook secret"));
    seen.asked.push(asked);
    seen.fetched.push(bytes);
    Json(verdict)
}

#[tokio::test]
async fn the_apps_own_scanner_allows_quarantines_or_rejects() {
    let seen = Arc::new(Mutex::new(Webhook::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/scan", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/scan", post(scanner))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let scan = ScanConfig {
        webhook_url: url,
        webhook_secret: "webhook secret".into(),
        ..ScanConfig::default()
    };
    for backend in BACKENDS {
        let Some(s) = serve_on(*backend, scanning(scan.clone())).await else {
            continue;
        };
        let (_, allowed) = upload(&s, "amy", "text/plain", b"just text").await;
        assert_eq!(allowed["state"], "ready", "{allowed}");
        let (_, held) = upload(&s, "amy", "text/plain", b"hold me").await;
        assert_eq!(held["state"], "quarantined", "{held}");
        assert_eq!(held["detail"], "webhook: looks like spam");

        // Rejected: nothing kept, nothing charged.
        let (_, rejected) = upload(&s, "amy", "text/plain", b"reject me").await;
        assert_eq!(rejected["state"], "rejected", "{rejected}");
        assert_eq!(rejected["detail"], "webhook: not allowed here");
        assert!(
            s.keys(&object_key(&sha256_hex(b"reject me")))
                .await
                .is_empty()
        );
        let quota = s.quota("amy").await;
        let kept = (b"just text".len() + b"hold me".len()) as u64;
        assert_eq!(quota["stored_bytes"], kept, "{quota}");

        let seen = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(seen.authorized, [true, true, true]);
        assert_eq!(
            seen.fetched,
            [
                b"just text".to_vec(),
                b"hold me".to_vec(),
                b"reject me".to_vec()
            ]
        );
        assert_eq!(seen.asked[0]["media_id"], allowed["media_id"]);
        assert_eq!(seen.asked[0]["owner_user_id"], "amy");
        assert_eq!(seen.asked[0]["sha256_hex"], sha256_hex(b"just text"));
        assert_eq!(seen.asked[0]["size_bytes"], 9);
    }
}

#[tokio::test]
async fn a_scanner_that_is_down_holds_media_or_lets_it_pass_by_policy() {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let down = ScanConfig {
        clamd: closed.to_string(),
        ..ScanConfig::default()
    };
    let s = serve_on(BACKENDS[0], scanning(down.clone())).await.unwrap();
    let mut alerts = bus(&s).events::<v1::MonitorAlert>().await.unwrap();
    let (status, held) = upload(&s, "amy", "image/png", PNG).await;
    assert_eq!(status, StatusCode::OK, "{held}");
    assert_eq!(held["state"], "processing", "held, not served: {held}");
    let alert = next(&mut alerts).await;
    assert_eq!(alert.name, "media_scanner_unavailable");
    assert!(
        alert.message.contains(held["media_id"].as_str().unwrap()),
        "{}",
        alert.message
    );
    let (status, wait) = s.sign("amy", held["media_id"].as_str().unwrap(), "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{wait}");

    let allow = ScanConfig {
        unavailable: WhenUnavailable::Allow,
        ..down
    };
    let s = serve_on(BACKENDS[0], scanning(allow)).await.unwrap();
    let (_, passed) = upload(&s, "amy", "image/png", PNG).await;
    assert_eq!(passed["state"], "ready", "let through unscanned: {passed}");
}
