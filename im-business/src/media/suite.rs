//! The suite every [`ObjectStore`](super::ObjectStore) backend runs: that the store itself
//! enforces what a signed URL allows (exact length, type and digest; expiry; tampering), and
//! that its server-side operations keep objects whole.
//!
//! `object_store_suite!(async { ... })` expands to the tests; the block makes a fresh store
//! and something to keep alive while the test runs (a temporary directory, a server task), or
//! `None` to skip where the store's service is not available.

/// The HTTP answer to a signed request made with `body` and the request's own headers, with
/// `content_type` in place of the signed one when given.
pub async fn send(
    request: &super::SignedRequest,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> reqwest::Response {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).expect("a method");
    let mut call = client.request(method, &request.url);
    for (name, value) in &request.headers {
        if name.eq_ignore_ascii_case("content-type") && content_type.is_some() {
            continue;
        }
        call = call.header(name, value);
    }
    if let Some(content_type) = content_type {
        call = call.header("content-type", content_type);
    }
    if request.method == "PUT" {
        call = call.body(body);
    }
    call.send().await.expect("the store answers")
}

/// A signed GET, with extra headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut call = reqwest::Client::new().get(url);
    for (name, value) in headers {
        call = call.header(*name, *value);
    }
    call.send().await.expect("the store answers")
}

/// Expands to the object-store suite for the store `$make` makes.
#[macro_export]
macro_rules! object_store_suite {
    ($make:expr) => {
        mod object_store_suite {
            #[allow(unused_imports)]
            use super::*;
            use $crate::media::{
                PutPolicy, Serving,
                objects::{ObjectError, ObjectStore},
                suite::{get, send},
            };

            fn later(ms: i64) -> i64 {
                im_common::now_ms() + ms
            }

            fn policy(body: &[u8], content_type: &str) -> PutPolicy {
                PutPolicy {
                    size_bytes: body.len() as u64,
                    content_type: content_type.into(),
                    sha256: None,
                }
            }

            async fn put(store: &dyn ObjectStore, key: &str, body: &[u8]) {
                let signed = store.sign_put(key, &policy(body, "image/png"), later(60_000));
                let answer = send(&signed, body.to_vec(), None).await;
                assert!(answer.status().is_success(), "{:?}", answer.text().await);
            }

            #[tokio::test]
            async fn a_signed_put_stores_exactly_the_bytes_and_a_signed_get_serves_them() {
                let Some((store, _keep)) = $make.await else {
                    return;
                };
                let store: &dyn ObjectStore = &*store;
                let body = b"\x89PNG\r\n\x1a\n the rest".to_vec();
                put(store, "staging/one", &body).await;
                assert_eq!(
                    store.size_of("staging/one").await.unwrap(),
                    Some(body.len() as u64)
                );
                assert_eq!(
                    store.read_range("staging/one", 0, 1 << 20).await.unwrap(),
                    body
                );
                assert_eq!(
                    store.read_range("staging/one", 4, 3).await.unwrap(),
                    &body[4..7]
                );

                let inline = Serving {
                    content_type: "image/png".into(),
                    attachment: None,
                };
                let served = get(
                    &store.sign_get("staging/one", &inline, later(60_000)).url,
                    &[],
                )
                .await;
                assert_eq!(served.status(), 200);
                assert_eq!(served.headers()["content-type"], "image/png");
                assert_eq!(served.headers()["x-content-type-options"], "nosniff");
                assert!(served.headers().get("content-disposition").is_none());
                assert_eq!(served.bytes().await.unwrap().to_vec(), body);

                let page = Serving {
                    content_type: "text/html".into(),
                    attachment: Some("page.html".into()),
                };
                let served = get(
                    &store.sign_get("staging/one", &page, later(60_000)).url,
                    &[],
                )
                .await;
                assert_eq!(served.headers()["content-type"], "text/html");
                let disposition = served.headers()["content-disposition"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert!(disposition.starts_with("attachment"), "{disposition}");
                assert!(disposition.contains("page.html"), "{disposition}");
            }

            #[tokio::test]
            async fn the_store_refuses_a_body_of_another_length_or_type() {
                let Some((store, _keep)) = $make.await else {
                    return;
                };
                let store: &dyn ObjectStore = &*store;
                let body = vec![7_u8; 1000];
                let signed =
                    store.sign_put("staging/sized", &policy(&body, "image/png"), later(60_000));
                for (wrong, what) in [
                    (vec![7_u8; 1001], "one byte longer"),
                    (vec![7_u8; 999], "one byte shorter"),
                ] {
                    let answer = send(&signed, wrong, None).await;
                    assert!(
                        answer.status().is_client_error(),
                        "{what}: {}",
                        answer.status()
                    );
                }
                let answer = send(&signed, body.clone(), Some("text/html")).await;
                assert!(
                    answer.status().is_client_error(),
                    "another type: {}",
                    answer.status()
                );
                assert_eq!(
                    store.size_of("staging/sized").await.unwrap(),
                    None,
                    "nothing stored"
                );
                let answer = send(&signed, body, None).await;
                assert!(
                    answer.status().is_success(),
                    "the granted bytes: {}",
                    answer.status()
                );
            }

            #[tokio::test]
            async fn the_store_refuses_an_expired_tampered_or_misused_url() {
                let Some((store, _keep)) = $make.await else {
                    return;
                };
                let store: &dyn ObjectStore = &*store;
                let body = b"bytes".to_vec();
                let expired =
                    store.sign_put("staging/late", &policy(&body, "image/png"), later(-1_000));
                assert_eq!(
                    send(&expired, body.clone(), None).await.status(),
                    403,
                    "expired"
                );

                let signed =
                    store.sign_put("staging/late", &policy(&body, "image/png"), later(60_000));
                let mut tampered = signed.clone();
                // The signature ends the URL: one character of it changed.
                let last = tampered.url.pop().expect("a URL");
                tampered.url.push(if last == 'A' { 'B' } else { 'A' });
                assert_eq!(
                    send(&tampered, body.clone(), None).await.status(),
                    403,
                    "tampered"
                );
                assert_eq!(store.size_of("staging/late").await.unwrap(), None);

                put(store, "staging/late", &body).await;
                let serving = Serving {
                    content_type: "image/png".into(),
                    attachment: None,
                };
                let read = store.sign_get("staging/late", &serving, later(60_000));
                let mut as_put = read.clone();
                as_put.method = "PUT";
                let answer = send(&as_put, b"other".to_vec(), Some("image/png")).await;
                assert_eq!(answer.status(), 403, "a GET grant used to PUT");
                let stale = store.sign_get("staging/late", &serving, later(-1_000));
                assert_eq!(get(&stale.url, &[]).await.status(), 403, "an expired GET");
                assert_eq!(
                    store.read_range("staging/late", 0, 100).await.unwrap(),
                    body
                );
            }

            #[tokio::test]
            async fn the_store_refuses_bytes_of_another_digest() {
                let Some((store, _keep)) = $make.await else {
                    return;
                };
                let store: &dyn ObjectStore = &*store;
                use sha2::Digest;
                let body = b"exactly these bytes".to_vec();
                let digest: [u8; 32] = sha2::Sha256::digest(&body).into();
                let signed_policy = PutPolicy {
                    sha256: Some(digest),
                    ..policy(&body, "image/png")
                };
                let signed = store.sign_put("staging/digest", &signed_policy, later(60_000));
                let other = b"exactly those bytes".to_vec();
                assert_eq!(other.len(), body.len());
                let answer = send(&signed, other, None).await;
                assert!(answer.status().is_client_error(), "{}", answer.status());
                assert_eq!(store.size_of("staging/digest").await.unwrap(), None);
                assert!(send(&signed, body, None).await.status().is_success());
            }

            #[tokio::test]
            async fn ranges_are_served() {
                let Some((store, _keep)) = $make.await else {
                    return;
                };
                let store: &dyn ObjectStore = &*store;
                let body: Vec<u8> = (0..=255).collect();
                put(store, "objects/ra/range", &body).await;
                let serving = Serving {
                    content_type: "video/mp4".into(),
                    attachment: None,
                };
                let url = store
                    .sign_get("objects/ra/range", &serving, later(60_000))
                    .url;
                let part = get(&url, &[("range", "bytes=10-19")]).await;
                assert_eq!(part.status(), 206);
                assert_eq!(part.headers()["content-range"], "bytes 10-19/256");
                assert_eq!(part.bytes().await.unwrap().to_vec(), &body[10..20]);
                let tail = get(&url, &[("range", "bytes=-6")]).await;
                assert_eq!(tail.bytes().await.unwrap().to_vec(), &body[250..]);
                assert_eq!(get(&url, &[("range", "bytes=300-")]).await.status(), 416);
            }

            #[tokio::test]
            async fn copies_are_whole_and_deletes_and_listings_are_exact() {
                let Some((store, _keep)) = $make.await else {
                    return;
                };
                let store: &dyn ObjectStore = &*store;
                put(store, "staging/a", b"first").await;
                store.copy("staging/a", "objects/aa/a").await.unwrap();
                put(store, "staging/a", b"second").await;
                assert_eq!(
                    store.read_range("objects/aa/a", 0, 100).await.unwrap(),
                    b"first",
                    "the copy is its own"
                );
                store
                    .put("variants/aa/thumb", b"thumb".to_vec(), "image/webp")
                    .await
                    .unwrap();
                assert_eq!(store.list("objects/").await.unwrap(), ["objects/aa/a"]);
                assert_eq!(store.list("staging/").await.unwrap(), ["staging/a"]);
                assert_eq!(
                    store.list("").await.unwrap(),
                    ["objects/aa/a", "staging/a", "variants/aa/thumb"]
                );
                store.delete("staging/a").await.unwrap();
                store
                    .delete("staging/a")
                    .await
                    .expect("deleting what is gone succeeds");
                assert_eq!(store.size_of("staging/a").await.unwrap(), None);
                assert!(
                    matches!(
                        store.copy("staging/a", "objects/bb/b").await,
                        Err(ObjectError::NotFound(_))
                    ),
                    "copy of nothing"
                );
                assert!(store.list("staging/").await.unwrap().is_empty());
            }

            #[tokio::test]
            async fn parts_are_held_to_their_length_and_joined_in_order() {
                let Some((store, _keep)) = $make.await else {
                    return;
                };
                let store: &dyn ObjectStore = &*store;
                // S3's smallest part but the last.
                const FIVE_MIB: usize = 5 << 20;
                let first: Vec<u8> = (0..FIVE_MIB).map(|i| (i % 251) as u8).collect();
                let last = b"the end".to_vec();
                let key = "staging/big";
                let upload = store.start_multipart(key, "video/mp4").await.unwrap();
                let sign = |n, size| store.sign_part(key, &upload, n, size as u64, later(60_000));

                // Parts arrive in any order; each is held to the length it was signed for.
                let answer = send(&sign(2, last.len()), last.clone(), None).await;
                assert!(answer.status().is_success(), "{:?}", answer.text().await);
                let mut longer = first.clone();
                longer.push(0);
                let refused = send(&sign(1, first.len()), longer, None).await;
                assert!(refused.status().is_client_error(), "{}", refused.status());
                assert_eq!(
                    store.parts(key, &upload).await.unwrap(),
                    [(2, last.len() as u64)]
                );
                assert!(
                    matches!(
                        store.finish_multipart(key, &upload, 2).await,
                        Err(ObjectError::NotFound(_))
                    ),
                    "part 1 is missing"
                );
                let answer = send(&sign(1, first.len()), first.clone(), None).await;
                assert!(answer.status().is_success(), "{:?}", answer.text().await);
                assert_eq!(
                    store.parts(key, &upload).await.unwrap(),
                    [(1, first.len() as u64), (2, last.len() as u64)]
                );
                store.finish_multipart(key, &upload, 2).await.unwrap();
                let whole = [first.as_slice(), last.as_slice()].concat();
                assert_eq!(store.size_of(key).await.unwrap(), Some(whole.len() as u64));
                assert_eq!(
                    store.read_range(key, 0, whole.len() as u64).await.unwrap(),
                    whole
                );
                store
                    .abort_multipart(key, &upload)
                    .await
                    .expect("ending a finished upload succeeds");
                assert_eq!(store.size_of(key).await.unwrap(), Some(whole.len() as u64));

                // Aborted: its parts are gone, and nothing can be joined.
                let gone = store
                    .start_multipart("staging/gone", "video/mp4")
                    .await
                    .unwrap();
                let part = store.sign_part("staging/gone", &gone, 1, 4, later(60_000));
                assert!(
                    send(&part, b"four".to_vec(), None)
                        .await
                        .status()
                        .is_success()
                );
                store.abort_multipart("staging/gone", &gone).await.unwrap();
                assert!(store.parts("staging/gone", &gone).await.unwrap().is_empty());
                assert!(
                    store
                        .finish_multipart("staging/gone", &gone, 1)
                        .await
                        .is_err()
                );
                assert_eq!(store.size_of("staging/gone").await.unwrap(), None);
            }
        }
    };
}
