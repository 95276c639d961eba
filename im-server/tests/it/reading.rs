//! What clients read back through the gateway: sync after being offline, history and pull
//! pages, read state and receipts, edits, recalls, deletes and reactions, typing and presence.

use crate::common::*;
use im_proto::v1::{
    Delete, Edit, ErrorCode, HistoryRequest, MarkRead, MessageBody, PresenceStatus,
    PresenceSubscribe, PullRequest, Reaction, ReadCursorsRequest, Recall, SeqCursor, SetPresence,
    SyncRequest, Typing, client_frame, message_body, server_frame,
};

#[tokio::test]
async fn offline_users_sync_then_pull_what_they_missed() {
    let w = world().await;
    w.users(&["owner", "amy", "bob"]).await;
    w.group("team", "owner", &["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    for n in 0..5 {
        amy.say("d:amy:bob", &format!("d{n}"), "direct").await;
    }
    // Seq 1 is the notice of the group's creation; amy's entries are 2 to 4.
    for n in 0..3 {
        amy.say("g:team", &format!("g{n}"), "group").await;
    }

    let mut bob = w.connect("bob", "d").await;
    let sync = sync_of(
        bob.call(client_frame::Body::Sync(SyncRequest {
            held: vec![SeqCursor {
                conversation_id: "g:team".into(),
                seq: 1,
            }],
            ..Default::default()
        }))
        .await,
    );
    assert!(sync.next_page_token.is_empty());
    let states: Vec<(&str, u64, u64, bool)> = sync
        .conversations
        .iter()
        .map(|c| {
            (
                c.conversation_id.as_str(),
                c.last_seq,
                c.unread_count,
                c.active,
            )
        })
        .collect();
    assert_eq!(
        states,
        [("d:amy:bob", 5, 5, true), ("g:team", 4, 3, true)],
        "both conversations moved past what bob holds"
    );
    let preview = sync.conversations[0].last_message.as_ref().unwrap();
    assert_eq!((preview.seq, text_of(preview)), (5, Some("direct")));

    let pulled = page(
        bob.call(client_frame::Body::Pull(PullRequest {
            conversation_id: "g:team".into(),
            after_seq: 1,
            limit: 0,
        }))
        .await,
    );
    let seqs: Vec<u64> = pulled.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert!(!pulled.has_more);

    let caught_up = sync_of(
        bob.call(client_frame::Body::Sync(SyncRequest {
            held: vec![
                SeqCursor {
                    conversation_id: "g:team".into(),
                    seq: 4,
                },
                SeqCursor {
                    conversation_id: "d:amy:bob".into(),
                    seq: 5,
                },
            ],
            ..Default::default()
        }))
        .await,
    );
    assert!(caught_up.conversations.is_empty(), "nothing moved");
}

#[tokio::test]
async fn sync_pages_cover_every_conversation_once() {
    let w = world_with(|s| s.messaging.max_sync_page = 3).await;
    let peers: Vec<String> = (0..8).map(|n| format!("p{n}")).collect();
    let mut all: Vec<&str> = peers.iter().map(String::as_str).collect();
    all.push("zed");
    w.users(&all).await;
    for peer in &peers {
        let mut client = w.connect(peer, "d").await;
        let conversation = if peer.as_str() < "zed" {
            format!("d:{peer}:zed")
        } else {
            format!("d:zed:{peer}")
        };
        client.say(&conversation, "hi", "hi").await;
    }
    let mut zed = w.connect("zed", "d").await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let sync = sync_of(
            zed.call(client_frame::Body::Sync(SyncRequest {
                page_token: token.clone(),
                limit: 100,
                ..Default::default()
            }))
            .await,
        );
        assert!(sync.conversations.len() <= 3, "capped by max_sync_page");
        seen.extend(sync.conversations.into_iter().map(|c| c.conversation_id));
        if sync.next_page_token.is_empty() {
            break;
        }
        token = sync.next_page_token;
    }
    let mut expected: Vec<String> = peers.iter().map(|p| format!("d:{p}:zed")).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn history_pages_backwards_without_gaps() {
    let w = world_with(|s| s.messaging.max_history_page = 4).await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    for n in 1..=10 {
        amy.say("d:amy:bob", &format!("m{n}"), &format!("{n}"))
            .await;
    }
    let mut bob = w.connect("bob", "d").await;
    let mut before = 0;
    let mut pages = Vec::new();
    loop {
        let page = page(
            bob.call(client_frame::Body::History(HistoryRequest {
                conversation_id: "d:amy:bob".into(),
                before_seq: before,
                limit: 50,
            }))
            .await,
        );
        assert_eq!(page.last_seq, 10);
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "ascending, no gap"
        );
        before = seqs[0];
        pages.push(seqs);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(
        pages,
        vec![vec![7, 8, 9, 10], vec![3, 4, 5, 6], vec![1, 2]],
        "newest first, capped by max_history_page"
    );
}

#[tokio::test]
async fn read_cursors_unread_counts_and_receipts() {
    let w = world().await;
    w.users(&["owner", "amy", "bob"]).await;
    w.group("team", "owner", &["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob_phone = w.connect("bob", "phone").await;
    let mut bob_laptop = w.connect("bob", "laptop").await;
    // Seq 1 is the notice of the group's creation; amy's entries are 2 to 5.
    for n in 0..4 {
        amy.say("g:team", &format!("m{n}"), "x").await;
    }
    let state = match bob_phone
        .call(client_frame::Body::MarkRead(MarkRead {
            conversation_id: "g:team".into(),
            seq: 4,
        }))
        .await
    {
        server_frame::Body::ReadState(state) => state,
        other => panic!("{other:?}"),
    };
    assert_eq!((state.read_seq, state.unread_count), (4, 1));

    let mirrored = bob_laptop
        .expect(|b| match b {
            server_frame::Body::ReadState(s) => Some(s.clone()),
            _ => None,
        })
        .await;
    assert_eq!(mirrored, state, "the user's other devices follow");
    let receipt = amy
        .expect(|b| match b {
            server_frame::Body::ReadReceipt(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (receipt.user_id.as_str(), receipt.read_seq),
        ("bob", 4),
        "the sender sees bob's receipt"
    );

    // Never backwards.
    let back = bob_phone
        .call(client_frame::Body::MarkRead(MarkRead {
            conversation_id: "g:team".into(),
            seq: 1,
        }))
        .await;
    assert!(matches!(back, server_frame::Body::ReadState(s) if s.read_seq == 4));

    let cursors = match amy
        .call(client_frame::Body::ReadCursors(ReadCursorsRequest {
            conversation_id: "g:team".into(),
            ..Default::default()
        }))
        .await
    {
        server_frame::Body::ReadCursors(page) => page,
        other => panic!("{other:?}"),
    };
    let rows: Vec<(&str, u64)> = cursors
        .cursors
        .iter()
        .map(|c| (c.user_id.as_str(), c.read_seq))
        .collect();
    assert_eq!(rows, [("bob", 4)]);

    // A device that was offline learns the read state in its sync.
    let mut bob_tablet = w.connect("bob", "tablet").await;
    let sync = sync_of(
        bob_tablet
            .call(client_frame::Body::Sync(SyncRequest {
                held: vec![SeqCursor {
                    conversation_id: "g:team".into(),
                    seq: 5,
                }],
                read: vec![SeqCursor {
                    conversation_id: "g:team".into(),
                    seq: 0,
                }],
                ..Default::default()
            }))
            .await,
    );
    assert_eq!(sync.conversations.len(), 1);
    assert_eq!(
        (
            sync.conversations[0].read_seq,
            sync.conversations[0].unread_count
        ),
        (4, 1)
    );
}

#[tokio::test]
async fn edits_recalls_deletes_and_reactions_are_entries_and_shape_history() {
    let w = world().await;
    w.users(&["owner", "amy", "bob"]).await;
    w.group("team", "owner", &["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    let mut owner = w.connect("owner", "d").await;
    // 1 is the notice of the group's creation.
    amy.say("g:team", "1", "first").await; // 2
    amy.say("g:team", "2", "second").await; // 3
    bob.say("g:team", "3", "bob's").await; // 4

    let body = |kind| MessageBody { kind: Some(kind) };
    let edit = amy
        .send_message(
            "g:team",
            "4",
            body(message_body::Kind::Edit(Edit {
                target_seq: 2,
                content: text("first, fixed").kind.and_then(|k| match k {
                    message_body::Kind::Content(c) => Some(c),
                    _ => None,
                }),
            })),
        )
        .await
        .unwrap();
    assert_eq!(edit.seq, 5);
    let denied = bob
        .send_message(
            "g:team",
            "x1",
            body(message_body::Kind::Edit(Edit {
                target_seq: 2,
                content: None,
            })),
        )
        .await
        .unwrap_err();
    assert_eq!(
        code(&denied),
        ErrorCode::InvalidArgument,
        "an edit needs content"
    );
    let recall = |seq| body(message_body::Kind::Recall(Recall { target_seq: seq }));
    let delete = |seq| body(message_body::Kind::Delete(Delete { target_seq: seq }));
    let refused = bob
        .send_message("g:team", "x0", delete(2))
        .await
        .unwrap_err();
    assert_eq!(
        code(&refused),
        ErrorCode::Forbidden,
        "deleting follows recall's rights"
    );
    let refused = bob
        .send_message("g:team", "x2", recall(2))
        .await
        .unwrap_err();
    assert_eq!(code(&refused), ErrorCode::Forbidden, "not bob's message");
    amy.send_message("g:team", "5", recall(3)).await.unwrap(); // 6
    owner.send_message("g:team", "6", recall(4)).await.unwrap(); // 7: admins always may
    let react = |key: &str, remove| {
        body(message_body::Kind::Reaction(Reaction {
            target_seq: 2,
            key: key.into(),
            remove,
        }))
    };
    bob.send_message("g:team", "7", react("👍", false))
        .await
        .unwrap();
    owner
        .send_message("g:team", "8", react("👍", false))
        .await
        .unwrap();
    owner
        .send_message("g:team", "9", react("🎉", false))
        .await
        .unwrap();
    owner
        .send_message("g:team", "10", react("🎉", true))
        .await
        .unwrap();
    let missing = bob
        .send_message(
            "g:team",
            "x3",
            body(message_body::Kind::Reaction(Reaction {
                target_seq: 99,
                key: "👍".into(),
                remove: false,
            })),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&missing), ErrorCode::MessageNotFound);

    // Amy was pushed what the others did, each as an entry of its own.
    let mut pushed = Vec::new();
    for _ in 0..6 {
        pushed.push(amy.message().await.seq);
    }
    pushed.sort_unstable();
    assert_eq!(pushed, [4, 7, 8, 9, 10, 11]);

    let history = page(
        bob.call(client_frame::Body::History(HistoryRequest {
            conversation_id: "g:team".into(),
            before_seq: 0,
            limit: 0,
        }))
        .await,
    );
    assert_eq!(history.last_seq, 11);
    assert_eq!(history.messages.len(), 11, "every entry keeps its place");
    let by_seq = |seq: u64| history.messages.iter().find(|m| m.seq == seq).unwrap();
    let first = by_seq(2);
    assert_eq!(
        text_of(first),
        Some("first, fixed"),
        "the body is the edited one"
    );
    let state = first.state.as_ref().unwrap();
    assert_eq!(state.edited_seq, 5);
    let reactions: Vec<(&str, u32, bool)> = state
        .reactions
        .iter()
        .map(|r| (r.key.as_str(), r.count, r.mine))
        .collect();
    assert_eq!(reactions, [("👍", 2, true)], "a removed reaction is gone");
    for (seq, recall_seq) in [(3, 6), (4, 7)] {
        let withdrawn = by_seq(seq);
        assert_eq!(withdrawn.state.as_ref().unwrap().recalled_seq, recall_seq);
        assert_eq!(
            text_of(withdrawn),
            None,
            "a recalled entry keeps no content"
        );
    }
    let sync = sync_of(
        bob.call(client_frame::Body::Sync(SyncRequest::default()))
            .await,
    );
    assert_eq!(
        sync.conversations[0].unread_count, 1,
        "only amy's edited first message counts: 3 was recalled, 4 is bob's own, 1 a notice"
    );
}

#[tokio::test]
async fn typing_reaches_the_others_and_is_not_stored() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    amy.send_with_id(
        0,
        client_frame::Body::Typing(Typing {
            conversation_id: "d:amy:bob".into(),
            active: true,
        }),
    )
    .await;
    let typing = bob
        .expect(|b| match b {
            server_frame::Body::Typing(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (
            typing.conversation_id.as_str(),
            typing.user_id.as_str(),
            typing.active
        ),
        ("d:amy:bob", "amy", true)
    );
    let history = page(
        bob.call(client_frame::Body::History(HistoryRequest {
            conversation_id: "d:amy:bob".into(),
            ..Default::default()
        }))
        .await,
    );
    assert!(history.messages.is_empty() && history.last_seq == 0);

    // Typing is never answered, whatever its request id; the connection goes on.
    amy.send_with_id(
        9,
        client_frame::Body::Typing(Typing {
            conversation_id: "d:amy:bob".into(),
            active: false,
        }),
    )
    .await;
    assert!(matches!(
        amy.call(client_frame::Body::Ping(Default::default())).await,
        server_frame::Body::Pong(_)
    ));
    let answered = amy
        .sees_within(std::time::Duration::from_millis(300), |_| Some(()))
        .await;
    assert!(answered.is_none(), "no answer to the typing: {answered:?}");
}

#[tokio::test]
async fn an_edit_or_reaction_of_a_recalled_or_deleted_entry_is_message_not_found() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    amy.say("d:amy:bob", "1", "oops").await; // 1
    amy.say("d:amy:bob", "2", "gone too").await; // 2
    let body = |kind| MessageBody { kind: Some(kind) };
    amy.send_message(
        "d:amy:bob",
        "3",
        body(message_body::Kind::Recall(Recall { target_seq: 1 })),
    )
    .await
    .unwrap();
    amy.send_message(
        "d:amy:bob",
        "4",
        body(message_body::Kind::Delete(Delete { target_seq: 2 })),
    )
    .await
    .unwrap();
    let content = text("fixed").kind.and_then(|k| match k {
        message_body::Kind::Content(c) => Some(c),
        _ => None,
    });
    for target_seq in [1, 2] {
        let edit = amy
            .send_message(
                "d:amy:bob",
                &format!("e{target_seq}"),
                body(message_body::Kind::Edit(Edit {
                    target_seq,
                    content: content.clone(),
                })),
            )
            .await
            .unwrap_err();
        assert_eq!(code(&edit), ErrorCode::MessageNotFound, "{edit:?}");
        let reaction = amy
            .send_message(
                "d:amy:bob",
                &format!("r{target_seq}"),
                body(message_body::Kind::Reaction(Reaction {
                    target_seq,
                    key: "+1".into(),
                    remove: false,
                })),
            )
            .await
            .unwrap_err();
        assert_eq!(code(&reaction), ErrorCode::MessageNotFound, "{reaction:?}");
    }
    let history = page(
        amy.call(client_frame::Body::History(HistoryRequest {
            conversation_id: "d:amy:bob".into(),
            ..Default::default()
        }))
        .await,
    );
    assert_eq!(history.last_seq, 4, "nothing was written");
    let recalled = &history.messages[0];
    assert_eq!(recalled.seq, 1);
    assert!(
        recalled
            .body
            .as_ref()
            .and_then(|b| b.kind.as_ref())
            .is_none(),
        "and the recalled text stays gone: {recalled:?}"
    );
}

#[tokio::test]
async fn sync_compares_read_cursors_only_where_the_client_sent_one() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob_phone = w.connect("bob", "phone").await;
    let mut bob_laptop = w.connect("bob", "laptop").await;
    amy.say("d:amy:bob", "1", "hi").await;
    bob_phone
        .call(client_frame::Body::MarkRead(MarkRead {
            conversation_id: "d:amy:bob".into(),
            seq: 1,
        }))
        .await;
    let held = vec![SeqCursor {
        conversation_id: "d:amy:bob".into(),
        seq: 1,
    }];
    let without_read = sync_of(
        bob_laptop
            .call(client_frame::Body::Sync(SyncRequest {
                held: held.clone(),
                ..Default::default()
            }))
            .await,
    );
    assert!(
        without_read.conversations.is_empty(),
        "nothing new, and no read cursor asked about: {without_read:?}"
    );
    let with_read = sync_of(
        bob_laptop
            .call(client_frame::Body::Sync(SyncRequest {
                held,
                read: vec![SeqCursor {
                    conversation_id: "d:amy:bob".into(),
                    seq: 0,
                }],
                ..Default::default()
            }))
            .await,
    );
    assert_eq!(with_read.conversations.len(), 1);
    assert_eq!(with_read.conversations[0].read_seq, 1, "read on the phone");
}

#[tokio::test]
async fn presence_follows_devices_and_chosen_status() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    // bob shows his presence to his contacts.
    w.business
        .set_contact(&im_business::Actor::App, "bob", "amy", true)
        .await
        .unwrap();
    let mut amy = w.connect("amy", "d").await;
    let list = match amy
        .call(client_frame::Body::PresenceSubscribe(PresenceSubscribe {
            user_ids: vec!["bob".into()],
        }))
        .await
    {
        server_frame::Body::Presences(list) => list,
        other => panic!("{other:?}"),
    };
    assert_eq!(list.presences[0].status(), PresenceStatus::Offline);

    let mut bob = w.connect("bob", "phone").await;
    let presence = |status: PresenceStatus| {
        move |b: &server_frame::Body| match b {
            server_frame::Body::Presence(p) if p.status() == status => Some(p.clone()),
            _ => None,
        }
    };
    let online = amy.expect(presence(PresenceStatus::Online)).await;
    assert_eq!(online.user_id, "bob");
    let answer = bob
        .call(client_frame::Body::SetPresence(SetPresence {
            status: PresenceStatus::Busy as i32,
            status_text: "in a meeting".into(),
        }))
        .await;
    assert!(matches!(answer, server_frame::Body::Ok(_)));
    let too_long = bob
        .call(client_frame::Body::SetPresence(SetPresence {
            status: PresenceStatus::Away as i32,
            status_text: "x".repeat(257),
        }))
        .await;
    assert!(
        matches!(&too_long, server_frame::Body::Error(e) if e.code() == ErrorCode::InvalidArgument && e.limit == 256),
        "{too_long:?}"
    );
    let unknown = bob
        .call(client_frame::Body::SetPresence(SetPresence {
            status: 99,
            status_text: String::new(),
        }))
        .await;
    assert!(
        matches!(&unknown, server_frame::Body::Error(e) if e.code() == ErrorCode::InvalidArgument),
        "a status from a newer protocol is refused, not taken as ONLINE: {unknown:?}"
    );
    let busy = amy.expect(presence(PresenceStatus::Busy)).await;
    assert_eq!(busy.status_text, "in a meeting");
    drop(bob);
    let offline = amy.expect(presence(PresenceStatus::Offline)).await;
    assert!(offline.last_seen_ms > 0);
}

/// Whose presence `watcher` is shown, of `users`.
async fn shown(watcher: &mut Client, users: &[&str]) -> Vec<String> {
    match watcher
        .call(client_frame::Body::PresenceSubscribe(PresenceSubscribe {
            user_ids: users.iter().map(|u| u.to_string()).collect(),
        }))
        .await
    {
        server_frame::Body::Presences(list) => {
            let mut ids: Vec<String> = list.presences.into_iter().map(|p| p.user_id).collect();
            ids.sort();
            ids
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn presence_is_shown_to_contacts_and_group_mates_unless_blocked() {
    use im_business::Actor;
    let w = world().await;
    let everyone = [
        "amy", "contact", "fan", "mate", "stranger", "blocker", "owner",
    ];
    w.users(&everyone).await;
    let app = Actor::App;
    // contact added amy; amy added fan (not the other way round).
    w.business
        .set_contact(&app, "contact", "amy", true)
        .await
        .unwrap();
    w.business
        .set_contact(&app, "amy", "fan", true)
        .await
        .unwrap();
    w.group("team", "owner", &["amy", "mate", "blocker"]).await;
    w.business
        .set_block(&app, "blocker", "amy", true)
        .await
        .unwrap();
    let mut amy = w.connect("amy", "d").await;
    let others = ["contact", "fan", "mate", "stranger", "blocker"];
    assert_eq!(
        shown(&mut amy, &others).await,
        ["contact", "mate"],
        "contacts (those who added amy) and group mates, never one who blocked her"
    );
    assert_eq!(shown(&mut amy, &["amy"]).await, ["amy"], "herself");

    // Only those shown are watched: a stranger's presence never reaches amy.
    let mut stranger = w.connect("stranger", "d").await;
    stranger
        .call(client_frame::Body::SetPresence(SetPresence {
            status: PresenceStatus::Busy as i32,
            status_text: "private".into(),
        }))
        .await;
    let leaked = amy
        .sees_within(std::time::Duration::from_millis(300), |b| match b {
            server_frame::Body::Presence(p) if p.user_id == "stranger" => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(leaked, None);
}

#[tokio::test]
async fn presence_for_everyone_is_a_setting_and_blocks_still_hide_it() {
    use im_business::Actor;
    let w = World::builder()
        .business(|s| s.presence_visible_to = im_business::PresenceAudience::Everyone)
        .start()
        .await;
    w.users(&["amy", "stranger", "blocker"]).await;
    w.business
        .set_block(&Actor::App, "blocker", "amy", true)
        .await
        .unwrap();
    let mut amy = w.connect("amy", "d").await;
    assert_eq!(
        shown(&mut amy, &["stranger", "blocker"]).await,
        ["stranger"]
    );
}

#[tokio::test]
async fn a_deleted_entry_keeps_its_place_and_loses_its_content() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    amy.say("d:amy:bob", "1", "regret").await;
    let delete = MessageBody {
        kind: Some(message_body::Kind::Delete(Delete { target_seq: 1 })),
    };
    assert_eq!(
        amy.send_message("d:amy:bob", "2", delete)
            .await
            .unwrap()
            .seq,
        2
    );
    let history = page(
        bob.call(client_frame::Body::History(HistoryRequest {
            conversation_id: "d:amy:bob".into(),
            ..Default::default()
        }))
        .await,
    );
    let first = &history.messages[0];
    assert_eq!(first.state.as_ref().unwrap().deleted_seq, 2);
    assert_eq!(text_of(first), None);
    let sync = sync_of(
        bob.call(client_frame::Body::Sync(SyncRequest::default()))
            .await,
    );
    assert_eq!(
        sync.conversations[0].unread_count, 0,
        "a deleted message is not unread"
    );
}

#[tokio::test]
async fn sync_pages_fit_the_clients_frames() {
    let w = world_with(|s| {
        s.messaging.max_content_bytes = 4_096;
        s.gateway.max_frame_bytes = 8_192;
    })
    .await;
    w.users(&["amy", "bob", "cy", "dan", "eve"]).await;
    let long = "x".repeat(3_000);
    for peer in ["bob", "cy", "dan", "eve"] {
        let mut client = w.connect(peer, "d").await;
        client.say(&format!("d:amy:{peer}"), "1", &long).await;
    }
    let hello = im_proto::v1::Hello {
        max_frame_bytes: 4_096 + 1_024,
        ..hello(&w.token("amy", "d"), "d")
    };
    let mut amy = Client::connect_with(w.addr, hello).await;
    let (mut pages, mut seen, mut token) = (0, 0, String::new());
    loop {
        let sync = sync_of(
            amy.call(client_frame::Body::Sync(SyncRequest {
                page_token: token.clone(),
                ..Default::default()
            }))
            .await,
        );
        pages += 1;
        seen += sync.conversations.len();
        assert!(
            prost::Message::encoded_len(&sync) < 4_096 + 1_024,
            "fits the announced frame limit"
        );
        if sync.next_page_token.is_empty() {
            break;
        }
        token = sync.next_page_token;
    }
    assert_eq!((seen, pages), (4, 4), "one 3 KB preview per page");
}

#[tokio::test]
async fn a_message_carries_a_bounded_number_of_reaction_keys() {
    let w = world_with(|s| s.messaging.max_reaction_keys = 2).await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    amy.say("d:amy:bob", "1", "react to me").await;
    let react = |key: &str| MessageBody {
        kind: Some(message_body::Kind::Reaction(Reaction {
            target_seq: 1,
            key: key.into(),
            remove: false,
        })),
    };
    amy.send_message("d:amy:bob", "r1", react("a"))
        .await
        .unwrap();
    bob.send_message("d:amy:bob", "r2", react("b"))
        .await
        .unwrap();
    let third = bob
        .send_message("d:amy:bob", "r3", react("c"))
        .await
        .unwrap_err();
    assert_eq!((code(&third), third.limit), (ErrorCode::QuotaExceeded, 2));
    bob.send_message("d:amy:bob", "r4", react("a"))
        .await
        .expect("a key already there may be added to");
}
