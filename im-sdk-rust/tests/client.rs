//! The SDK against a real embedded server in the same process, through a proxy that cuts
//! connections and drops frames: every message arrives exactly once and in order across a cut
//! connection and a server restart, an injected sequence gap is filled, a second device sees
//! the same history and read state.

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use common::*;
use im_proto::v1::{ErrorCode, server_frame};
use im_sdk_rust::{Body, ConnectionState, Content, Event};

const CHAT: &str = "d:alice:bob";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_across_a_cut_connection_and_a_server_restart_arrives_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.users(&["alice", "bob"]).await;
    let proxy = Proxy::start(server.addr).await;
    let alice = Arc::new(client(proxy.addr, "alice", "phone"));
    let bob = client(proxy.addr, "bob", "phone");
    let mut alice_events = alice.events().unwrap();
    let mut bob_events = bob.events().unwrap();
    alice.wait_connected().await.unwrap();
    bob.wait_connected().await.unwrap();

    const BURST: usize = 120;
    let send = |n: usize| {
        let alice = alice.clone();
        tokio::spawn(async move {
            let body = Body::Content(Content::text(format!("#{n}")));
            alice.send_with_id(CHAT, &format!("m{n:03}"), body).await
        })
    };
    let mut sends: Vec<_> = (0..BURST / 3).map(send).collect();
    proxy.cut(); // every connection drops in the middle of the burst
    sends.extend((BURST / 3..2 * BURST / 3).map(send));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The server goes away while sends are in flight, and comes back on the same data.
    server.stop().await;
    sends.extend((2 * BURST / 3..BURST).map(send));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let server = Server::start(dir.path()).await;
    proxy.point_to(server.addr);

    let mut seqs = HashSet::new();
    let mut resent = 0;
    for send in sends {
        let sent = send
            .await
            .unwrap()
            .expect("every send is acknowledged in the end");
        assert!(seqs.insert(sent.seq), "seq {} acknowledged twice", sent.seq);
        resent += usize::from(sent.duplicate);
    }
    eprintln!("{resent} of {BURST} sends were stored before their first ack was lost");
    assert_eq!(seqs.len(), BURST);

    let expected: Vec<u64> = (1..=BURST as u64).collect();
    for events in [&mut alice_events, &mut bob_events] {
        let seen = collect_until(events, |e| messages_in(e, CHAT).len() >= BURST).await;
        let messages = messages_in(&seen, CHAT);
        let got: Vec<u64> = messages.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(got, expected, "each entry once, in seq order");
        let ids: HashSet<&String> = messages.iter().map(|(_, id)| id).collect();
        assert_eq!(ids.len(), BURST, "every message, none twice");
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::Connection(ConnectionState::Reconnecting { .. }))),
            "the client did reconnect"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_sequence_gap_is_filled_by_pulling() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.users(&["alice", "bob"]).await;
    let proxy = Proxy::start(server.addr).await;
    // The server's push of seq 3 never reaches bob.
    proxy.drop_frames(Arc::new(
        |frame| matches!(&frame.body, Some(server_frame::Body::Message(m)) if m.seq == 3),
    ));
    let alice = client(server.addr, "alice", "phone");
    let bob = client(proxy.addr, "bob", "phone");
    let mut bob_events = bob.events().unwrap();
    bob.wait_connected().await.unwrap();
    for n in 1..=5 {
        alice.send_text(CHAT, &format!("#{n}")).await.unwrap();
    }
    let seen = collect_until(&mut bob_events, |e| messages_in(e, CHAT).len() >= 5).await;
    let got: Vec<u64> = messages_in(&seen, CHAT).iter().map(|(s, _)| *s).collect();
    assert_eq!(
        got,
        [1, 2, 3, 4, 5],
        "3 was pulled before 4 and 5 were shown"
    );
    let recent = bob.recent(CHAT, 10).await.unwrap();
    assert_eq!(
        recent.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_push_recovers_a_lost_push_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    // The server's own resend of the unacknowledged push is far off: only the sync brings it.
    let server = Server::start_with(dir.path(), |s| {
        s.gateway.resend_after = Duration::from_secs(600);
    })
    .await;
    server.users(&["alice", "bob"]).await;
    let proxy = Proxy::start(server.addr).await;
    // The push of the last message never reaches bob, and nothing after it shows a gap.
    proxy.drop_frames(Arc::new(
        |frame| matches!(&frame.body, Some(server_frame::Body::Message(m)) if m.seq == 2),
    ));
    let alice = client(server.addr, "alice", "phone");
    let bob = client(proxy.addr, "bob", "phone");
    let mut bob_events = bob.events().unwrap();
    bob.wait_connected().await.unwrap();
    for n in 1..=2 {
        alice.send_text(CHAT, &format!("#{n}")).await.unwrap();
    }
    collect_until(&mut bob_events, |e| messages_in(e, CHAT).len() == 1).await;
    proxy.pass_frames();
    // What a node sends when its bus link came back: pushes may have been lost, sync.
    proxy.inject(&im_proto::v1::ServerFrame {
        request_id: 0,
        body: Some(server_frame::Body::Resync(im_proto::v1::Resync {
            sync_after_ms: 50,
        })),
    });
    let seen = collect_until(&mut bob_events, |e| !messages_in(e, CHAT).is_empty()).await;
    assert_eq!(
        messages_in(&seen, CHAT)
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>(),
        [2],
        "the lost push is shown after the sync"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::Connection(ConnectionState::Reconnecting { .. }))),
        "on the same connection: {seen:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_sees_the_same_history_and_read_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.users(&["alice", "bob"]).await;
    let alice = client(server.addr, "alice", "phone");
    let phone = client(server.addr, "bob", "phone");
    let laptop = client(server.addr, "bob", "laptop");
    let mut laptop_events = laptop.events().unwrap();
    phone.wait_connected().await.unwrap();
    laptop.wait_connected().await.unwrap();
    for n in 1..=3 {
        alice.send_text(CHAT, &format!("#{n}")).await.unwrap();
    }
    let mut phone_events = phone.events().unwrap();
    collect_until(&mut phone_events, |e| messages_in(e, CHAT).len() == 3).await;
    let listed = phone.conversations().await.unwrap();
    assert_eq!(
        (listed[0].last_seq, listed[0].unread_count),
        (3, 3),
        "the list follows live messages"
    );
    let read = phone.mark_read(CHAT, 2).await.unwrap();
    assert_eq!((read.read_seq, read.unread_count), (2, 1));
    let listed = phone.conversations().await.unwrap();
    assert_eq!((listed[0].read_seq, listed[0].unread_count), (2, 1));
    let seen = collect_until(&mut laptop_events, |e| {
        e.iter()
            .any(|e| matches!(e, Event::ReadState { read_seq: 2, .. }))
    })
    .await;
    assert!(seen.iter().any(|e| matches!(e, Event::ReadState { conversation_id, unread_count: 1, .. } if conversation_id == CHAT)));

    let on_phone = phone.history(CHAT, 0, 0).await.unwrap();
    let on_laptop = laptop.history(CHAT, 0, 0).await.unwrap();
    assert_eq!(on_phone, on_laptop);
    assert_eq!(on_phone.messages.len(), 3);

    // A third device, connecting later, learns the read state from its sync.
    let tablet = client(server.addr, "bob", "tablet");
    let mut tablet_events = tablet.events().unwrap();
    let seen = collect_until(&mut tablet_events, |e| messages_in(e, CHAT).len() >= 3).await;
    let state = seen
        .iter()
        .find_map(|e| match e {
            Event::Conversation(c) if c.conversation_id == CHAT => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (state.read_seq, state.unread_count, state.last_seq),
        (2, 1, 3)
    );
    let listed = tablet.conversations().await.unwrap();
    assert_eq!(listed.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_the_caller_with_their_codes_and_the_client_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.users(&["alice", "bob", "owner"]).await;
    server.group("team", "owner", &["bob"]).await;
    let alice = client(server.addr, "alice", "phone");
    let refused = alice.send_text("g:team", "let me in").await.unwrap_err();
    assert_eq!(refused.error_code(), Some(ErrorCode::NotAMember));
    assert!(!refused.is_retryable());
    let history = alice.history("g:team", 0, 0).await.unwrap_err();
    assert_eq!(history.error_code(), Some(ErrorCode::NotAMember));
    // bob shows his presence to his contacts and group mates, and alice is neither.
    let presence = alice.subscribe_presence(&["bob".to_owned()]).await.unwrap();
    assert!(presence.is_empty(), "{presence:?}");
    alice.send_text(CHAT, "still here").await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_session_of_the_same_device_stops_the_older_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.users(&["alice"]).await;
    let first = client(server.addr, "alice", "phone");
    first.wait_connected().await.unwrap();
    let second = client(server.addr, "alice", "phone");
    second.wait_connected().await.unwrap();
    let mut stopped = false;
    for _ in 0..200 {
        if let ConnectionState::Stopped { reason } = first.connection_state() {
            assert!(reason.contains("SESSION_REPLACED"), "{reason}");
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped, "the replaced client does not reconnect by itself");
    assert_eq!(
        second
            .send_text("d:alice:alice", "mine now")
            .await
            .unwrap()
            .seq,
        1
    );
    server.stop().await;
}

/// A client of `user` on the device "phone" that also reaches the business API.
fn with_api(server: &Server, user: &str) -> im_sdk_rust::Client {
    im_sdk_rust::ClientBuilder::new(
        format!("ws://{}/ws", server.addr),
        "phone",
        Arc::new(im_sdk_rust::StaticToken(token(user, "phone"))),
    )
    .business_api(server.api_url())
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_managed_through_the_business_api_and_their_messages_flow() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.users(&["alice", "bob", "carol"]).await;
    // Bob has alice as a contact, so she adds him at once; carol does not: she is invited.
    server.contact("bob", "alice").await;
    let with_api = |user: &str| with_api(&server, user);
    let alice = with_api("alice");
    let bob = with_api("bob");
    let carol = with_api("carol");
    let mut bob_events = bob.events().unwrap();
    let mut carol_events = carol.events().unwrap();
    bob.wait_connected().await.unwrap();
    carol.wait_connected().await.unwrap();

    let group = alice
        .create_group("Team", &["bob".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        (group.owner_user_id.as_str(), group.member_count),
        ("alice", 2)
    );
    let conversation = format!("g:{}", group.group_id);
    alice.send_text(&conversation, "welcome").await.unwrap();
    // The message and the "you are in this group" state come by different paths, in either
    // order: wait for both.
    let joined = |e: &Event| matches!(e, Event::Conversation(c) if c.conversation_id == conversation && c.active);
    collect_until(&mut bob_events, |e| {
        messages_in(e, &conversation).len() == 1 && e.iter().any(joined)
    })
    .await;
    let members = bob.members(&group.group_id).await.unwrap();
    let mut names: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["alice", "bob"]);

    let refused = bob
        .add_members(&group.group_id, &["carol".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(
        refused.error_code(),
        Some(ErrorCode::Forbidden),
        "invite-only: admins add"
    );
    let added = alice
        .add_members(&group.group_id, &["carol".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        (added.added.len(), added.invited.as_slice()),
        (0, ["carol".to_owned()].as_slice()),
        "carol has not added alice as a contact: she is invited"
    );
    let invitations = carol.invitations().await.unwrap();
    assert_eq!(
        invitations
            .iter()
            .map(|i| (i.group_id.as_str(), i.inviter_user_id.as_str()))
            .collect::<Vec<_>>(),
        [(group.group_id.as_str(), "alice")]
    );
    let joined = carol.accept_invitation(&group.group_id).await.unwrap();
    assert_eq!(joined.member_count, 3, "carol joins by accepting");
    bob.leave_group(&group.group_id).await.unwrap();
    let left = collect_until(&mut bob_events, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Conversation(c) if !c.active))
    })
    .await;
    assert!(!left.is_empty());
    alice.send_text(&conversation, "hello carol").await.unwrap();
    let seen = collect_until(&mut carol_events, |e| {
        messages_in(e, &conversation).len() == 1
    })
    .await;
    // 1: created, 2: "welcome", 3: carol added, 4: bob left, 5: "hello carol".
    assert_eq!(
        messages_in(&seen, &conversation)
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>(),
        [5],
        "carol sees the history from her add on: not what was said before"
    );
    let notices: Vec<(u64, im_proto::v1::NoticeKind)> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Change(m) => match &m.body {
                im_sdk_rust::Body::Notice(n) => Some((m.seq, n.kind())),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        notices,
        [
            (3, im_proto::v1::NoticeKind::MembersAdded),
            (4, im_proto::v1::NoticeKind::MemberLeft)
        ],
        "and the notices of the changes since, in order"
    );
    server.stop().await;
}

/// The head of a PNG (enough for the server to sniff it as one).
const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_uploaded_in_parts_with_progress_per_part() {
    use im_proto::v1::MediaKind;
    use im_sdk_rust::{NewUpload, UploadProgress};

    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_business(dir.path(), |s| {
        s.media.max_single_put_bytes = 5 * MIB;
        s.media.part_bytes = 5 * MIB;
    })
    .await;
    server.users(&["alice"]).await;
    let alice = with_api(&server, "alice");
    let bytes: Vec<u8> = (0..11 * MIB).map(|i| (i % 253) as u8).collect();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = seen.clone();
    let upload = NewUpload::new(MediaKind::File, "application/octet-stream", bytes.clone())
        .on_progress(move |p| progress.lock().unwrap().push(p));
    let media = alice.upload(upload).await.unwrap();
    assert!(media.is_ready(), "{media:?}");
    let sent: Vec<(u64, u64)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| match p {
            UploadProgress::Sent { bytes, total } => Some((*bytes, *total)),
            _ => None,
        })
        .collect();
    let total = 11 * MIB;
    assert_eq!(sent, [(5 * MIB, total), (10 * MIB, total), (total, total)]);
    let fetched = alice.download(&media.media_id, "", 0).await.unwrap();
    assert!(fetched == bytes, "the parts joined in order");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_uploaded_sent_and_downloaded_by_the_peer_only() {
    use im_proto::v1::MediaKind;
    use im_sdk_rust::{ContentKind, NewUpload, UploadProgress};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.users(&["alice", "bob", "carol"]).await;
    let with_api = |user: &str| with_api(&server, user);
    let (alice, bob, carol) = (with_api("alice"), with_api("bob"), with_api("carol"));
    let mut bob_events = bob.events().unwrap();
    bob.wait_connected().await.unwrap();

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = seen.clone();
    let upload = NewUpload::new(MediaKind::Image, "image/png", PNG.to_vec())
        .file_name("dot.png")
        .on_progress(move |p| progress.lock().unwrap().push(p));
    let resume_id = upload.id().to_owned();
    let media = alice.upload(upload).await.unwrap();
    assert!(media.is_ready(), "{media:?}");
    assert_eq!(
        (media.mime_type.as_str(), media.size_bytes),
        ("image/png", PNG.len() as u64)
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            UploadProgress::Created {
                media_id: media.media_id.clone()
            },
            UploadProgress::Sent {
                bytes: PNG.len() as u64,
                total: PNG.len() as u64,
            },
            UploadProgress::Completed,
        ]
    );
    // Uploading again with the same id (an app that restarted mid-way) is the same media.
    let again = alice
        .upload(
            NewUpload::new(MediaKind::Image, "image/png", PNG.to_vec())
                .client_upload_id(&resume_id),
        )
        .await
        .unwrap();
    assert_eq!(again.media_id, media.media_id);

    // An upload cancelled once created (the app dropped the future) resumes with its id.
    let (created_tx, created) = tokio::sync::oneshot::channel();
    let created_tx = std::sync::Mutex::new(Some(created_tx));
    let cancelled =
        NewUpload::new(MediaKind::Image, "image/png", PNG.to_vec()).on_progress(move |p| {
            if let UploadProgress::Created { media_id } = p
                && let Some(tx) = created_tx.lock().unwrap().take()
            {
                let _ = tx.send(media_id);
            }
        });
    let cancelled_id = cancelled.id().to_owned();
    let first_id = tokio::select! {
        biased;
        id = created => id.unwrap(),
        done = alice.upload(cancelled) => panic!("not cancelled in time: {done:?}"),
    };
    let resumed = alice
        .upload(
            NewUpload::new(MediaKind::Image, "image/png", PNG.to_vec())
                .client_upload_id(&cancelled_id),
        )
        .await
        .unwrap();
    assert_eq!(
        (resumed.media_id.as_str(), resumed.is_ready()),
        (first_id.as_str(), true)
    );

    let sent = alice.send_media(CHAT, &media, "a dot").await.unwrap();
    let events = collect_until(&mut bob_events, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Message(m) if m.seq == sent.seq))
    })
    .await;
    let reference = events
        .iter()
        .find_map(|e| match e {
            Event::Message(m) => match &m.body {
                Body::Content(Content {
                    kind: ContentKind::Media(r),
                    ..
                }) => Some(r.clone()),
                _ => None,
            },
            _ => None,
        })
        .expect("bob received the media message");
    assert_eq!(
        (reference.media_id.as_str(), reference.caption.as_str()),
        (media.media_id.as_str(), "a dot")
    );
    assert_eq!(
        bob.download(&reference.media_id, CHAT, sent.seq)
            .await
            .unwrap(),
        PNG,
        "the peer reads it through the message"
    );
    assert_eq!(
        alice.download(&media.media_id, "", 0).await.unwrap(),
        PNG,
        "the uploader, as such"
    );
    let refused = carol
        .download(&reference.media_id, CHAT, sent.seq)
        .await
        .unwrap_err();
    assert_eq!(
        refused.error_code(),
        Some(ErrorCode::MediaNotFound),
        "{refused}"
    );

    // Bytes that are not what was declared are refused with their code.
    let rejected = alice
        .upload(NewUpload::new(
            MediaKind::Image,
            "image/png",
            b"plain text, not a picture".to_vec(),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        rejected.error_code(),
        Some(ErrorCode::MediaRejected),
        "{rejected}"
    );
    server.stop().await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_made_before_an_app_restart_are_delivered_once_after_it() {
    use im_sdk_rust::{ClientBuilder, StaticToken, store::sqlite::SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alice-client.db");
    // The server is not there yet: the send waits in the persistent outbox.
    let idle = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = idle.local_addr().unwrap();
    drop(idle);
    let offline = ClientBuilder::new(
        format!("ws://{nowhere}/ws"),
        "phone",
        Arc::new(StaticToken(token("alice", "phone"))),
    )
    .store(Arc::new(SqliteStore::open(&state, 200).unwrap()))
    .build()
    .unwrap();
    let offline = Arc::new(offline);
    let pending = {
        let offline = offline.clone();
        tokio::spawn(async move {
            offline
                .send_with_id(
                    CHAT,
                    "before-restart",
                    Body::Content(Content::text("sent while offline")),
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    offline.close().await; // the app quits
    let error = pending.await.unwrap().unwrap_err();
    assert_eq!(error.error_code(), Some(ErrorCode::Unavailable));

    let server = Server::start(dir.path()).await;
    server.users(&["alice", "bob"]).await;
    let bob = client(server.addr, "bob", "phone");
    let mut bob_events = bob.events().unwrap();
    // The app starts again on the same state, and the server is up.
    let restarted = ClientBuilder::new(
        format!("ws://{}/ws", server.addr),
        "phone",
        Arc::new(StaticToken(token("alice", "phone"))),
    )
    .store(Arc::new(SqliteStore::open(&state, 200).unwrap()))
    .build()
    .unwrap();
    let mut alice_events = restarted.events().unwrap();
    let seen = collect_until(&mut bob_events, |e| messages_in(e, CHAT).len() == 1).await;
    assert_eq!(messages_in(&seen, CHAT), [(1, "before-restart".to_owned())]);
    let mine = collect_until(&mut alice_events, |e| messages_in(e, CHAT).len() == 1).await;
    assert_eq!(
        messages_in(&mine, CHAT).len(),
        1,
        "the sender's view shows it once"
    );
    // Sending the same id again is the same message.
    let again = restarted
        .send_with_id(
            CHAT,
            "before-restart",
            Body::Content(Content::text("sent while offline")),
        )
        .await
        .unwrap();
    assert_eq!((again.seq, again.duplicate), (1, true));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_calls_are_retried_for_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), |s| s.gateway.frames_per_second = 4).await;
    server.users(&["alice"]).await;
    let alice = Arc::new(client(server.addr, "alice", "phone"));
    alice.wait_connected().await.unwrap();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let alice = alice.clone();
            tokio::spawn(async move { alice.history("d:alice:alice", 0, 0).await })
        })
        .collect();
    for call in calls {
        let page = call.await.unwrap().expect("answered once the rate allows");
        assert!(page.messages.is_empty());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_calls_the_client_from_its_event_loop_never_deadlocks_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.users(&["alice", "bob"]).await;
    let alice = client(server.addr, "alice", "phone");
    for n in 0..60 {
        alice.send_text(CHAT, &format!("#{n}")).await.unwrap();
    }
    // A tiny stream: bob's catch-up overflows it while bob's loop waits on the client.
    let config = im_sdk_rust::Config {
        event_buffer: 2,
        ..im_sdk_rust::Config::default()
    };
    let bob = im_sdk_rust::ClientBuilder::new(
        format!("ws://{}/ws", server.addr),
        "phone",
        Arc::new(im_sdk_rust::StaticToken(token("bob", "phone"))),
    )
    .config(config)
    .build()
    .unwrap();
    let mut events = bob.events().unwrap();
    let mut seqs = Vec::new();
    let reading = async {
        while seqs.len() < 60 {
            if let Some(Event::Message(m)) = events.next().await {
                bob.mark_read(CHAT, m.seq).await.unwrap();
                seqs.push(m.seq);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .expect("the app's loop and the client both make progress");
    assert_eq!(seqs, (1..=60).collect::<Vec<u64>>());
    server.stop().await;
}
