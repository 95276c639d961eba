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
