//! Three core nodes and a business node as separate processes, sharing NATS, Redis and
//! PostgreSQL: delivery, presence and moderation work across nodes.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use common::{Cluster, text};
use im_proto::v1::{ErrorCode, PresenceStatus};
use im_sdk_rust::{Client, ConnectionState, Event, Events, Message, direct_conversation_id};
use reqwest::Method;
use serde_json::{Value, json};

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
        .group(&group, &amy, &[bob.clone(), cat.clone()], false, None)
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

    // A fourth node given a running node's id does not start, and says why.
    let (status, log) = cluster.start_node_refused("core-1");
    assert!(
        !status.success(),
        "a node with a taken id exited with {status}"
    );
    assert!(
        log.contains("\"core-1\" is taken by a running node"),
        "the refusal names the id: {log}"
    );
    // The running node with that id still gets its deliveries.
    let dan = cluster.user("dan");
    let dan_client = cluster.client(&dan, "phone", 1).await;
    let mut dan_events = dan_client.events().unwrap();
    let direct = direct_conversation_id(&amy, &dan).unwrap();
    amy_client.send_text(&direct, "still there?").await.unwrap();
    let got = next_message(&mut dan_events, &direct, &amy).await;
    assert_eq!(got.body_text(), Some("still there?"));

    // amy's phone connecting again, on another node, replaces its session on node 0 (opened
    // more than the nodes' one-second clock margin before).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let amy_again = cluster.client(&amy, "phone", 2).await;
    let replaced = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let ConnectionState::Stopped { reason } = amy_client.connection_state() {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the older session ended");
    assert!(
        replaced.contains("SESSION_REPLACED"),
        "ended as replaced: {replaced}"
    );
    assert!(
        !matches!(
            amy_again.connection_state(),
            ConnectionState::Stopped { .. }
        ),
        "the newer session stays"
    );
}

/// A webhook that refuses its first push, then records every push it accepts.
/// docs/DEPLOYMENT.md: "a core node waits up to `business_wait` for the token revocations on
/// record ... and exits with an error if no business node answered by then".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_node_without_a_business_node_exits_once_its_wait_is_over() {
    let wait = [("IM_CORE__BUSINESS_WAIT", "1s".to_owned())];
    let Some(mut cluster) = Cluster::start_with_core(0, wait.to_vec()).await else {
        return;
    };
    cluster.kill_business();
    let (status, log) = cluster.start_node_refused("core-0");
    assert!(!status.success(), "it exited with {status}");
    assert!(
        log.contains("waiting for the business service's revocations"),
        "it said what it waited for: {log}"
    );
}

async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>, Arc<AtomicU32>) {
    let accepted: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls = Arc::new(AtomicU32::new(0));
    let (seen, counted) = (accepted.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/push",
        axum::routing::post(move |body: axum::Json<Value>| {
            let (seen, counted) = (seen.clone(), counted.clone());
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    return http::StatusCode::SERVICE_UNAVAILABLE;
                }
                seen.lock().unwrap().push(body.0);
                http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, accepted, calls)
}

/// The pushes the webhook accepted for `user`, once there are `count` (twenty seconds at most).
async fn pushes_for(accepted: &Mutex<Vec<Value>>, user: &str, count: usize) -> Vec<Value> {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let found: Vec<Value> = accepted
                .lock()
                .unwrap()
                .iter()
                .filter(|p| {
                    p["user_ids"]
                        .as_array()
                        .is_some_and(|u| u.iter().any(|id| id == user))
                })
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{count} pushes for {user} never reached the webhook"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_pushes_wait_in_the_outbox_until_the_webhook_takes_them() {
    let (url, accepted, calls) = webhook().await;
    let env = vec![("IM_BUSINESS__PUSH_WEBHOOK_URL", url)];
    let Some(mut cluster) = Cluster::start_with(2, env).await else {
        return;
    };
    let (amy, bob) = (cluster.user("amy"), cluster.user("bob"));
    cluster.admin.user(&bob).await.unwrap();
    let amy_client = cluster.client(&amy, "phone", 0).await;
    let direct = direct_conversation_id(&amy, &bob).unwrap();

    // bob has no device online: the entry goes to the webhook, which refuses it once.
    let first = amy_client
        .send_text(&direct, "are you there?")
        .await
        .unwrap();
    let pushes = pushes_for(&accepted, &bob, 1).await;
    assert_eq!(pushes[0]["seq"], first.seq);
    assert_eq!(pushes[0]["text"], "are you there?");
    assert_eq!(pushes[0]["sender_user_id"], amy.as_str());
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the refused push came again"
    );

    // With the business node down, the push waits in JetStream; it arrives once a business
    // node is back.
    cluster.kill_business();
    let second = amy_client.send_text(&direct, "hello?").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pushes_for(&accepted, &bob, 1).await.len(),
        1,
        "nobody took it yet"
    );
    cluster.restart_business();
    let pushes = pushes_for(&accepted, &bob, 2).await;
    assert_eq!(pushes[1]["seq"], second.seq);
    assert_eq!(pushes.len(), 2, "each push once");

    // A resend is fanned out again (its first node may have died before pushing), but bob is
    // notified of it once: the pushes come in order, so a second one would come before "last".
    let once = amy_client
        .send_with_id(&direct, "once", text("only once"))
        .await
        .unwrap();
    let again = amy_client
        .send_with_id(&direct, "once", text("only once"))
        .await
        .unwrap();
    assert!(again.duplicate && again.seq == once.seq);
    let last = amy_client.send_text(&direct, "last").await.unwrap();
    let pushes = pushes_for(&accepted, &bob, 4).await;
    let seqs: Vec<&Value> = pushes[2..].iter().map(|p| &p["seq"]).collect();
    assert_eq!(seqs, [&json!(once.seq), &json!(last.seq)]);
}

/// The notices in `conversation` as `client` sees its history: (seq, kind), and its first
/// visible seq.
async fn notices_seen(
    client: &Client,
    conversation: &str,
) -> (Vec<(u64, im_proto::v1::NoticeKind)>, u64) {
    let page = client.history(conversation, 0, 0).await.unwrap();
    let notices = page
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            im_sdk_rust::Body::Notice(n) => Some((m.seq, n.kind())),
            _ => None,
        })
        .collect();
    (notices, page.visible_from_seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_of_changes_made_while_no_core_node_ran_are_written_once_one_does() {
    use im_proto::v1::NoticeKind::{GroupCreated, MembersAdded};
    let Some(mut cluster) = Cluster::start(0).await else {
        return;
    };
    let (amy, bob) = (cluster.user("amy"), cluster.user("bob"));
    for user in [&amy, &bob] {
        cluster.admin.user(user).await.unwrap();
    }
    // The business node stores both changes and their notices; no core node takes them yet.
    let group = cluster.user("team");
    cluster
        .admin
        .group(&group, &amy, &[], false, None)
        .await
        .unwrap();
    cluster
        .admin
        .call(
            Method::POST,
            &format!("/v1/groups/{group}/members"),
            Some(json!({"user_ids": [bob]})),
        )
        .await
        .unwrap();

    cluster.add_node("core-0");
    let conversation = format!("g:{group}");
    let bob_client = cluster.client(&bob, "phone", 0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let seen = loop {
        // Until the notice of his add is written, bob is joining: he sees nothing yet.
        let seen = notices_seen(&bob_client, &conversation).await;
        if !seen.0.is_empty() {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob's add was never completed: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        seen,
        (vec![(2, MembersAdded)], 2),
        "bob sees the group from the notice of his add on"
    );
    let amy_client = cluster.client(&amy, "phone", 0).await;
    assert_eq!(
        notices_seen(&amy_client, &conversation).await,
        (vec![(1, GroupCreated), (2, MembersAdded)], 1),
        "each notice once, in the order of the changes"
    );
}
