//! The embedded `im-server` binary (one process, no outside service): killed with SIGKILL in
//! the middle of a burst of sends and restarted on the same data directory, no acknowledged
//! message is lost, resends return the first acknowledgement, and sequences continue with no
//! gap and no reuse; its offline pushes reach the app's webhook; and it takes the tokens an
//! app signs with its own key, as configured, and no others; and with its open files limit
//! held by idle connections, logins still get in; and with a certificate, every API listener
//! speaks TLS; and with a bucket configured, media go to S3.

#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::Path,
    process::Command,
};

use im_proto::v1::{PullRequest, SendRequest, client_frame, server_frame};
use im_testkit::{
    client::{self, Client},
    sidecar::Proc,
};

const BIN: &str = env!("CARGO_BIN_EXE_im-server");
const CONVERSATION: &str = "d:amy:bob";
const SENDS: usize = 400;

fn token(data: &Path, user: &str, device: &str) -> String {
    im_testkit::binary::token(BIN, data, user, device)
}

/// Starts the server on ephemeral ports; its WebSocket address, read from what it prints. The
/// process is SIGKILLed when dropped, so a failing run leaves no server behind.
fn start(data: &Path) -> (Proc, SocketAddr) {
    start_with(data, &[])
}

fn start_with(data: &Path, env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    im_testkit::binary::start(BIN, data, env)
}

fn send(n: usize) -> client_frame::Body {
    client_frame::Body::Send(SendRequest {
        client_msg_id: format!("m{n:04}"),
        conversation_id: CONVERSATION.into(),
        body: Some(client::text(&format!("message {n}"))),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_and_sequences_continue() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let amy_token = token(data, "amy", "phone");
    let bob_token = token(data, "bob", "phone");

    let (mut server, addr) = start(data);
    let mut amy = Client::connect(addr, &amy_token, "phone").await;
    let mut ids = Vec::new();
    for n in 0..SENDS {
        ids.push((amy.send(send(n)).await, n));
    }
    // Collect acks for part of the burst, then kill the process outright.
    let mut acked: BTreeMap<usize, u64> = BTreeMap::new();
    for (request_id, n) in ids.iter().take(SENDS / 2) {
        match amy.answer(*request_id).await {
            server_frame::Body::SendAck(ack) => {
                acked.insert(*n, ack.seq);
            }
            other => panic!("{other:?}"),
        }
    }
    server.kill(); // SIGKILL: no shutdown, no flush.
    drop(amy);
    assert_eq!(acked.len(), SENDS / 2);

    let (mut server, addr) = start(data);
    let mut amy = Client::connect(addr, &amy_token, "phone").await;
    let mut seqs = HashSet::new();
    let mut ids = Vec::new();
    for n in 0..SENDS {
        ids.push((amy.send(send(n)).await, n));
    }
    for (request_id, n) in ids {
        let ack = match amy.answer(request_id).await {
            server_frame::Body::SendAck(ack) => ack,
            other => panic!("{other:?}"),
        };
        if let Some(first) = acked.get(&n) {
            assert!(
                ack.duplicate,
                "message {n} was acknowledged before the kill"
            );
            assert_eq!(ack.seq, *first, "its first ack comes back");
        }
        assert!(seqs.insert(ack.seq), "seq {} given twice", ack.seq);
    }
    assert_eq!(seqs, (1..=SENDS as u64).collect(), "no gap, no reuse");
    let next = amy.say(CONVERSATION, "after", "after the restart").await;
    assert_eq!(next.seq, SENDS as u64 + 1);

    // The peer reads each message exactly once, in order.
    let mut bob = Client::connect(addr, &bob_token, "phone").await;
    let mut held = 0;
    let mut seen = HashSet::new();
    loop {
        let page = match bob
            .call(client_frame::Body::Pull(PullRequest {
                conversation_id: CONVERSATION.into(),
                after_seq: held,
                limit: 100,
            }))
            .await
        {
            server_frame::Body::Messages(page) => page,
            other => panic!("{other:?}"),
        };
        for message in &page.messages {
            assert_eq!(message.seq, held + 1);
            held = message.seq;
            assert!(seen.insert(message.client_msg_id.clone()), "shown twice");
        }
        if !page.has_more {
            break;
        }
    }
    assert_eq!(held, SENDS as u64 + 1);
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_binary_posts_offline_pushes_to_the_webhook() {
    let pushes: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let seen = pushes.clone();
    let app = axum::Router::new().route(
        "/push",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body.0);
                http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let amy_token = token(data, "amy", "phone");
    token(data, "bob", "phone");
    let (mut server, addr) = start_with(data, &[("IM_BUSINESS__PUSH_WEBHOOK_URL", &url)]);
    let mut amy = Client::connect(addr, &amy_token, "phone").await;
    // bob has no device online.
    let sent = amy.say(CONVERSATION, "n1", "are you there?").await;
    let push = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if let Some(push) = pushes.lock().unwrap().first().cloned() {
                return push;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the push reached the webhook");
    assert_eq!(push["seq"], sent.seq);
    assert_eq!(push["user_ids"], serde_json::json!(["bob"]));
    assert_eq!(push["text"], "are you there?");
    server.kill();
}

/// A throwaway Ed25519 key pair, as an app's backend would hold one.
const APP_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDlMD2GUna8k2I49tbhIqmOvM0ZM5//PtpY5JfNnVJEj\n-----END PRIVATE KEY-----\n";
const APP_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAp66dpB3vORrz/iJu5708ZLPgTedgdJ7x8olpmYesVw0=\n-----END PUBLIC KEY-----\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_signed_tokens_are_taken_with_their_issuer_and_a_sane_issue_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let key_file = data.join("app.pub.pem");
    std::fs::write(&key_file, APP_PUBLIC).unwrap();
    let (mut server, addr) = start_with(
        data,
        &[
            ("IM_CLUSTER__APP_TOKENS__ALGORITHM", "EdDSA"),
            (
                "IM_CLUSTER__APP_TOKENS__PUBLIC_KEY_FILE",
                key_file.to_str().unwrap(),
            ),
            ("IM_CLUSTER__APP_TOKENS__ISSUER", "chat-backend"),
        ],
    );
    let now = im_testkit::now_ms() / 1000;
    let sign = |claims: serde_json::Value| {
        let key = jsonwebtoken::EncodingKey::from_ed_pem(APP_PRIVATE.as_bytes()).unwrap();
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let good = sign(serde_json::json!({
        "sub": "carol", "iss": "chat-backend", "iat": now, "exp": now + 600
    }));
    let carol = Client::connect(addr, &good, "tablet").await;
    assert_eq!(carol.welcome.user_id, "carol");

    let refused = [
        (
            "no issuer",
            serde_json::json!({ "sub": "carol", "iat": now, "exp": now + 600 }),
        ),
        (
            "another issuer",
            serde_json::json!({ "sub": "carol", "iss": "other", "iat": now, "exp": now + 600 }),
        ),
        (
            "issued an hour ahead",
            serde_json::json!({
                "sub": "carol", "iss": "chat-backend", "iat": now + 3_600, "exp": now + 7_200
            }),
        ),
    ];
    for (why, claims) in refused {
        let (answer, close) = Client::refused(addr, client::hello(&sign(claims), "tablet")).await;
        let Some(server_frame::Body::Error(error)) = answer.body else {
            panic!("{why}: {answer:?}");
        };
        assert_eq!(
            error.code(),
            im_proto::v1::ErrorCode::Unauthenticated,
            "{why}"
        );
        assert_eq!(close.map(|c| u16::from(c.code)), Some(1008), "{why}");
    }
    server.kill();
}

#[test]
fn settings_renamed_in_this_release_are_read_under_their_new_names() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("im.toml");
    std::fs::write(
        &config,
        "[core]\nidle_timeout_ms = 5000\nmessages_per_second = 7\ntoken_secret = \"a legacy secret of at least thirty-two bytes\"\n[bus]\nnats_url = \"\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--config", config.to_str().unwrap(), "print-settings"])
        .env("IM_CORE__MAX_HISTORY_PAGE", "9")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["core"]["gateway"]["idle_timeout"], "5s");
    assert_eq!(shown["core"]["messaging"]["messages_per_second"], 7);
    assert_eq!(
        shown["core"]["messaging"]["max_history_page"], 9,
        "from the environment"
    );
    assert_eq!(
        shown["cluster"]["token_secret"], "<hidden>",
        "moved, and hidden"
    );
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        warnings.contains("core.idle_timeout_ms") && warnings.contains("core.gateway.idle_timeout"),
        "the old name is named with the new one: {warnings}"
    );

    // An old key and its new key that disagree are refused, naming both.
    std::fs::write(
        &config,
        "[core]\nidle_timeout_ms = 5000\n[core.gateway]\nidle_timeout = \"6s\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--config", config.to_str().unwrap(), "print-settings"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("core.idle_timeout_ms") && error.contains("core.gateway.idle_timeout"),
        "{error}"
    );
}

/// An attack holding more idle TCP connections than the process has file descriptors does
/// not keep a user out: silent connections give way to newer ones, and descriptors stay in
/// reserve for the store and the accept itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_open_files_limit_do_not_lock_logins_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let amy_token = token(data, "amy", "phone");
    let bob_token = token(data, "bob", "phone");
    let env = [
        // Every silent connection comes from 127.0.0.1 here: the cap per address is out of the
        // way, so the descriptor budget is what holds.
        ("IM_CORE__GATEWAY__MAX_PENDING_PER_IP", "100000"),
        // Long enough that waiting out the silent ones is no way in.
        ("IM_CORE__GATEWAY__HANDSHAKE_TIMEOUT", "5m"),
    ];
    let (_server, addr) = im_testkit::binary::start_with_open_files(BIN, data, &env, 256);
    let mut silent = Vec::new();
    for _ in 0..600 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut amy = Client::connect(addr, &amy_token, "phone").await;
    let mut bob = Client::connect(addr, &bob_token, "phone").await;
    let sent = amy.call(send(1)).await;
    assert!(matches!(sent, server_frame::Body::SendAck(_)), "{sent:?}");
    let pushed = bob.message().await;
    assert_eq!(pushed.conversation_id, CONVERSATION);
    // And the next wave of silent connections changes nothing for those already in.
    for _ in 0..600 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let sent = amy.call(send(2)).await;
    assert!(matches!(sent, server_frame::Body::SendAck(_)), "{sent:?}");
}

/// A client TLS configuration that trusts `cert` (DER) alone.
fn trusting(cert: &[u8]) -> std::sync::Arc<tokio_rustls::rustls::ClientConfig> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.to_vec()))
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// A TLS connection to `addr` for the name `localhost`, trusting `cert` alone.
async fn tls_to(
    addr: SocketAddr,
    cert: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(trusting(cert))
        .connect(name, tcp)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_gateway_speaks_wss_and_the_business_apis_tls() {
    use futures::{SinkExt, StreamExt};
    use prost::Message as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_file, key_file) = (data.join("cert.pem"), data.join("key.pem"));
    std::fs::write(&cert_file, made.cert.pem()).unwrap();
    std::fs::write(&key_file, made.signing_key.serialize_pem()).unwrap();
    let cert = made.cert.der().to_vec();
    let amy = token(data, "amy", "phone");
    let (cert_path, key_path) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());
    let env = [
        ("IM_CORE__TLS__CERT_FILE", cert_path),
        ("IM_CORE__TLS__KEY_FILE", key_path),
        ("IM_BUSINESS__TLS__CERT_FILE", cert_path),
        ("IM_BUSINESS__TLS__KEY_FILE", key_path),
    ];
    let (_server, printed) = im_testkit::binary::start_printing(BIN, data, &env);

    // The gateway: a WebSocket over TLS, and a Hello answered by a Welcome.
    let tls = tls_to(printed.gateway, &cert).await.unwrap();
    let mut request = "wss://localhost/ws".into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "im.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    let hello = im_proto::v1::ClientFrame {
        request_id: 1,
        body: Some(client_frame::Body::Hello(client::hello(&amy, "phone"))),
    };
    ws.send(tungstenite::Message::Binary(hello.encode_to_vec().into()))
        .await
        .unwrap();
    let answer = loop {
        match ws.next().await.unwrap().unwrap() {
            tungstenite::Message::Binary(bytes) => {
                break im_proto::v1::ServerFrame::decode(bytes).unwrap();
            }
            _ => continue,
        }
    };
    assert!(
        matches!(answer.body, Some(server_frame::Body::Welcome(_))),
        "{answer:?}"
    );
    // Plain WebSocket on the same port is not served.
    assert!(client::open(printed.gateway, &["im.v1"]).await.is_err());
    // Nor TLS with another certificate trusted.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    assert!(tls_to(printed.gateway, other.cert.der()).await.is_err());

    // The HTTP API over TLS.
    let mut https = tls_to(printed.api, &cert).await.unwrap();
    https
        .write_all(b"GET /openapi.json HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    https.read_to_string(&mut answer).await.ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The gRPC API over TLS: a call without the app secret is answered UNAUTHENTICATED.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(made.cert.pem()))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", printed.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let refused = grpc
        .unary(
            tonic::Request::new(()),
            "/im.v1.UserService/GetUser".parse().unwrap(),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_bucket_configured_media_go_to_s3_and_nothing_to_the_disk() {
    let Some(s3) = im_testkit::service_url("IM_TEST_S3_URL", "S3") else {
        return;
    };
    let s3: reqwest::Url = s3.parse().unwrap();
    let endpoint = format!(
        "http://{}:{}",
        s3.host_str().unwrap(),
        s3.port_or_known_default().unwrap()
    );
    let bucket = format!("im-binary-{}", uuid::Uuid::new_v4().simple());
    let env = [
        ("IM_BUSINESS__MEDIA_S3__ENDPOINT", endpoint.as_str()),
        ("IM_BUSINESS__MEDIA_S3__BUCKET", bucket.as_str()),
        ("IM_BUSINESS__MEDIA_S3__ACCESS_KEY", s3.username()),
        ("IM_BUSINESS__MEDIA_S3__SECRET_KEY", s3.password().unwrap()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let amy = token(data, "amy", "phone");
    let (mut server, printed) = im_testkit::binary::start_printing(BIN, data, &env);
    let api = format!("http://{}", printed.api);
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{api}/v1/media/uploads"))
        .bearer_auth(&amy)
        .json(&serde_json::json!({"user_id": "amy", "kind": "file",
            "mime_type": "text/plain", "size_bytes": 5, "file_name": "hi.txt"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let part = &created["parts"][0];
    let put_url = part["url"].as_str().expect("a signed PUT");
    assert!(
        put_url.starts_with(&format!("{endpoint}/{bucket}/staging/")),
        "{put_url}"
    );
    let mut put = http.put(put_url).body("hello");
    for h in part["headers"].as_array().unwrap() {
        put = put.header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());
    let id = created["media_id"].as_str().unwrap();
    let media: serde_json::Value = http
        .post(format!("{api}/v1/media/{id}/complete"))
        .bearer_auth(&amy)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(media["state"], "ready", "{media}");
    let signed: serde_json::Value = http
        .post(format!("{api}/v1/media/{id}/download"))
        .bearer_auth(&amy)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let get_url = signed["url"].as_str().unwrap();
    assert!(get_url.starts_with(&endpoint), "{get_url}");
    let fetched = http.get(get_url).send().await.unwrap();
    assert_eq!(
        fetched.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .split(';')
            .next(),
        Some("attachment")
    );
    assert_eq!(fetched.text().await.unwrap(), "hello");
    assert!(
        !data.join("media").join("objects").exists(),
        "nothing kept on this node's disk"
    );
    server.kill();
}
