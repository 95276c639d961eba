//! The `im-business` binary: help, refusing bad settings, serving, and a graceful stop.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

const BINARY: &str = env!("CARGO_BIN_EXE_im-business");

#[test]
fn help_names_the_settings() {
    let out = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--config",
        "IM_BUSINESS__APP_SECRET",
        "IM_CLUSTER__TOKEN_SECRET",
        "RUST_LOG",
    ] {
        assert!(help.contains(needle), "--help does not mention {needle}");
    }
}

#[test]
fn missing_secrets_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BINARY)
        .current_dir(dir.path())
        .env_remove("IM_BUSINESS__APP_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("app_secret"));
    let out = Command::new(BINARY)
        .current_dir(dir.path())
        .env("IM_BUSINESS__APP_SECRET", "s")
        .env("IM_BUSINESS__TOKEN_SECRET", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token_secret"));
}

#[tokio::test]
async fn serves_from_a_config_file_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("im.toml");
    std::fs::write(
        &config,
        "[business]\nhttp_listen = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndatabase = \"db/business.db\"\napp_secret = \"from the file\"\n",
    )
    .unwrap();
    let mut child = Command::new(BINARY)
        .current_dir(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .env(
            "IM_BUSINESS__TOKEN_SECRET",
            "a token secret of at least thirty-two bytes",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut urls = line
        .split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches(',').to_owned());
    let (http, ops) = (urls.next().unwrap(), urls.next().unwrap());

    // The operations endpoints are on their own listener, not on the API's.
    let client = reqwest::Client::new();
    let status = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status() }
    };
    assert_eq!(status(format!("{ops}/healthz")).await, 200);
    assert_eq!(status(format!("{ops}/readyz")).await, 200);
    assert_eq!(status(format!("{ops}/metrics")).await, 200);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            status(format!("{http}{path}")).await,
            404,
            "{path} on the API"
        );
    }
    let upsert = client
        .post(format!("{http}/v1/users"))
        .bearer_auth("from the file")
        .json(&serde_json::json!({"user_id": "amy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(upsert.status(), 200, "the secret came from the file");
    assert!(
        dir.path().join("db/business.db").exists(),
        "the database directory was created"
    );

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "a graceful stop exits 0, got {status:?}");
}

/// Starts the binary in `dir` with `config`; the child and its API's URL.
fn start(dir: &std::path::Path, config: &str) -> (std::process::Child, String) {
    let path = dir.join("im.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BINARY)
        .current_dir(dir)
        .args(["--config", path.to_str().unwrap()])
        .env(
            "IM_CLUSTER__TOKEN_SECRET",
            "a token secret of at least thirty-two bytes",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let http = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches(',').to_owned())
        .unwrap();
    (child, http)
}

/// The app's scanning webhook: the first scan never answers (the node is killed while it
/// waits), every later one allows.
async fn hanging_scanner(
    axum::extract::State(calls): axum::extract::State<
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    >,
) -> axum::Json<serde_json::Value> {
    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
        std::future::pending::<()>().await;
    }
    axum::Json(serde_json::json!({"verdict": "allow"}))
}

#[tokio::test]
async fn a_node_killed_mid_scan_leaves_the_media_to_be_processed_once_after_restart() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook = format!("http://{}/scan", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/scan", axum::routing::post(hanging_scanner))
        .with_state(calls.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[business]\nhttp_listen = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:0\"\n\
         ops_listen = \"127.0.0.1:0\"\ndatabase = \"business.db\"\napp_secret = \"s\"\n\
         [business.media]\nprocessing_wait = \"50ms\"\nprocessing_stall = \"1s\"\n\
         expiry_sweep_interval = \"1s\"\n\
         [business.media.scan]\nwebhook_url = \"{webhook}\"\ntimeout = \"1h\"\n"
    );
    let (mut first, http) = start(dir.path(), &config);
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, url: String, body: serde_json::Value| {
        client
            .request(method, url)
            .bearer_auth("s")
            .json(&body)
            .send()
    };
    let answer = call(
        reqwest::Method::POST,
        format!("{http}/v1/users"),
        serde_json::json!({"user_id": "amy"}),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let bytes = b"a file that is scanned once".to_vec();
    let create = serde_json::json!({"user_id": "amy", "kind": "file", "mime_type": "text/plain",
        "size_bytes": bytes.len()});
    let upload: serde_json::Value = call(
        reqwest::Method::POST,
        format!("{http}/v1/media/uploads"),
        create,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let part = &upload["parts"][0];
    let mut put = client
        .put(part["url"].as_str().unwrap())
        .body(bytes.clone());
    for h in part["headers"].as_array().unwrap() {
        put = put.header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());
    let id = upload["media_id"].as_str().unwrap().to_owned();
    let done: serde_json::Value = call(
        reqwest::Method::POST,
        format!("{http}/v1/media/{id}/complete"),
        serde_json::json!({}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(done["state"], "processing", "{done}");
    // Killed while its scan waits on the webhook.
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();

    // The next node's sweep takes it up again: one scan answered, then ready.
    let (mut second, http) = start(dir.path(), &config);
    let media = loop {
        let media: serde_json::Value = call(
            reqwest::Method::GET,
            format!("{http}/v1/media/{id}"),
            serde_json::json!({}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if media["state"] != "processing" {
            break media;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(media["state"], "ready", "{media}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the hung scan, then the one answered"
    );
    let signed: serde_json::Value = call(
        reqwest::Method::POST,
        format!("{http}/v1/media/{id}/download"),
        serde_json::json!({"user_id": "amy"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let served = client
        .get(signed["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(served.bytes().await.unwrap().to_vec(), bytes);
    second.kill().unwrap();
    second.wait().unwrap();
}
