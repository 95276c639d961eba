//! Text a client sends never forges a log line: ids, names and headers reach the log through
//! the same subscriber the binaries install (`im_common::process::log_subscriber`), which
//! escapes control characters whatever field carries them.
//!
//! A test binary of its own: tracing caches which callsites a subscriber wants process-wide,
//! so a thread-local capture in a process where other tests log at once can miss lines.

#![allow(clippy::unwrap_used)]

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "it/common.rs"]
mod common;

use crate::common::*;
use im_proto::v1::{SendRequest, client_frame, server_frame};

const FORGED: &str = "\n2026-01-01T00:00:00Z  INFO im_business: audit actor=\"app\" FORGED\0";

// The default test runtime runs every task of the system on this thread, so the thread's
// subscriber sees all they log.
#[tokio::test]
async fn client_text_reaches_the_log_escaped_on_every_input_path() {
    let captured = im_testkit::logs::Captured::default();
    let _guard = tracing::subscriber::set_default(captured.subscriber("debug"));

    let mut world = world().await;
    world.users(&["amy", "bob"]).await;
    let token = world.token("amy", "phone");

    // The business API, with the user's own token: a group id and a name of the user's.
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/v1/groups", world.api_url()))
        .bearer_auth(&token)
        .header("x-im-actor", "amy")
        .json(&serde_json::json!({ "group_id": format!("g{FORGED}"), "name": FORGED }))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_client_error(), "{}", answer.status());
    let answer = http
        .post(format!("{}/v1/groups/x%0AFORGED%00/leave", world.api_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_client_error(), "{}", answer.status());

    // The gateway: a device id in the Hello, a conversation id in a send.
    let (refused, _) = Client::refused(world.addr, hello(&token, &format!("p{FORGED}"))).await;
    assert!(matches!(refused.body, Some(server_frame::Body::Error(_))));
    let mut amy = Client::connect(world.addr, &token, "phone").await;
    let answer = amy
        .call(client_frame::Body::Send(SendRequest {
            client_msg_id: format!("m{FORGED}"),
            conversation_id: format!("d:amy:bob{FORGED}"),
            body: Some(text("hi")),
        }))
        .await;
    assert!(matches!(answer, server_frame::Body::Error(_)), "{answer:?}");
    drop(amy);
    world.stop().await;

    let log = captured.text();
    assert!(
        log.contains(r"\n2026-01-01T00:00:00Z"),
        "the forged text was logged, escaped:\n{log}"
    );
    assert!(!log.contains('\0'), "a NUL reached the log:\n{log}");
    for line in log.lines() {
        assert!(!line.starts_with("2026-01-01"), "a forged line: {line}");
    }
}
