//! Three core nodes and a business node as separate processes, sharing NATS, Redis and
//! PostgreSQL: delivery, presence and moderation work across nodes.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Cluster, text};
use im_proto::v1::{ErrorCode, PresenceStatus};
use im_sdk_rust::{Client, ConnectionState, Event, Events, Message, direct_conversation_id};
use reqwest::Method;
use serde_json::json;

/// The next message from `sender` a client shows in `conversation`, within ten seconds.
async fn next_message(events: &mut Events, conversation: &str, sender: &str) -> Message {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(Event::Message(m))
                    if m.conversation_id == conversation && m.sender_user_id == sender =>
                {
                    return m;
                }
                Some(_) => {}
                None => panic!("the client stopped"),
            }
        }
    })
    .await
    .expect("a message in time")
}

/// The presence of `user` as `watcher` sees it, polled until `wanted` (ten seconds at most).
async fn presence_becomes(watcher: &Client, user: &str, wanted: PresenceStatus) {
    let users = [user.to_owned()];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let seen = watcher.subscribe_presence(&users).await.unwrap();
            if seen[0].status() == wanted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{user} never became {wanted:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_share_presence_and_enforce_bans() {
    let Some(cluster) = Cluster::start(3).await else {
        return;
    };
    let (amy, bob, cat) = (
        cluster.user("amy"),
        cluster.user("bob"),
        cluster.user("cat"),
    );
    // One user per node: each client's first gateway is a different node.
    let amy_client = cluster.client(&amy, "phone", 0).await;
    let bob_client = cluster.client(&bob, "phone", 1).await;
    let cat_client = cluster.client(&cat, "phone", 2).await;
    let mut amy_events = amy_client.events().unwrap();
    let mut bob_events = bob_client.events().unwrap();
    let mut cat_events = cat_client.events().unwrap();

    // 1:1 across nodes, both ways.
    let direct = direct_conversation_id(&amy, &bob).unwrap();
    let sent = amy_client
        .send_text(&direct, "hello from node 0")
        .await
        .unwrap();
    let got = next_message(&mut bob_events, &direct, &amy).await;
    assert_eq!(
        (got.seq, got.body_text()),
        (sent.seq, Some("hello from node 0"))
    );
    bob_client
        .send_text(&direct, "hello from node 1")
        .await
        .unwrap();
    let got = next_message(&mut amy_events, &direct, &bob).await;
    assert_eq!(got.body_text(), Some("hello from node 1"));

    // A group whose members are on three nodes.
    let group = cluster.user("team");
    cluster
        .admin
        .group(&group, &amy, &[bob.clone(), cat.clone()], false)
        .await
        .unwrap();
    let conversation = format!("g:{group}");
    let sent = amy_client
        .send(&conversation, text("to the team"))
        .await
        .unwrap();
    for events in [&mut bob_events, &mut cat_events] {
        let got = next_message(events, &conversation, &amy).await;
        assert_eq!((got.seq, got.body_text()), (sent.seq, Some("to the team")));
    }
    cat_client
        .send(&conversation, text("from node 2"))
        .await
        .unwrap();
    for events in [&mut amy_events, &mut bob_events] {
        let got = next_message(events, &conversation, &cat).await;
        assert_eq!(got.body_text(), Some("from node 2"));
    }

    // Presence across nodes: amy (node 0) sees cat (node 2) come and go.
    presence_becomes(&amy_client, &cat, PresenceStatus::Online).await;
    cat_client.close().await;
    presence_becomes(&amy_client, &cat, PresenceStatus::Offline).await;

    // A mute made on the business node holds on every core node at its next check: bob's
    // devices on each of the three nodes are refused.
    cluster
        .admin
        .call(
            Method::PUT,
            &format!("/v1/groups/{group}/members/{bob}/mute"),
            Some(json!({ "until_ms": im_common::now_ms() + 3_600_000 })),
        )
        .await
        .unwrap();
    let laptop = cluster.client(&bob, "laptop", 0).await;
    let tablet = cluster.client(&bob, "tablet", 2).await;
    for (device, client) in [
        ("phone", &bob_client),
        ("laptop", &laptop),
        ("tablet", &tablet),
    ] {
        let refused = client
            .send(&conversation, text("muted?"))
            .await
            .unwrap_err();
        assert_eq!(
            refused.error_code(),
            Some(ErrorCode::Muted),
            "bob's {device}"
        );
    }

    // A revocation ends bob's sessions on every node.
    cluster
        .admin
        .call(
            Method::POST,
            &format!("/v1/users/{bob}/tokens/revoke"),
            Some(json!({ "device_id": "" })),
        )
        .await
        .unwrap();
    for client in [&bob_client, &laptop, &tablet] {
        let stopped = tokio::time::timeout(Duration::from_secs(10), async {
            while !matches!(client.connection_state(), ConnectionState::Stopped { .. }) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(stopped.is_ok(), "a revoked session was ended");
    }
}
