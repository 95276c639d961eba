//! Messaging through the gateway, as clients see it: delivery (1:1, groups, several devices),
//! idempotent sends, ordering, membership changes, the push hook, settings that change while
//! the node runs, and permission denials.

use std::time::Duration;

use crate::common::*;
use im_business::Actor;
use im_proto::v1::{
    Edit, ErrorCode, HistoryRequest, HistoryVisibility, MessageBody, NoticeKind, PullRequest,
    Recall, SeqCursor, SyncRequest, client_frame, message_body, server_frame,
};

#[tokio::test]
async fn direct_messages_reach_the_peer_and_the_senders_other_devices() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    let mut amy_phone = w.connect("amy", "phone").await;
    let mut amy_laptop = w.connect("amy", "laptop").await;
    let mut bob = w.connect("bob", "phone").await;

    let ack = amy_phone.say("d:amy:bob", "m1", "hello bob").await;
    assert_eq!((ack.seq, ack.duplicate), (1, false));

    for client in [&mut bob, &mut amy_laptop] {
        let message = client.message().await;
        assert_eq!(message.conversation_id, "d:amy:bob");
        assert_eq!(message.seq, 1);
        assert_eq!(message.sender_user_id, "amy");
        assert_eq!(message.sender_device_id, "phone");
        assert_eq!(message.server_msg_id, ack.server_msg_id);
        assert_eq!(text_of(&message), Some("hello bob"));
    }
    let echo = amy_phone
        .sees_within(Duration::from_millis(300), |b| {
            matches!(b, server_frame::Body::Message(_)).then_some(())
        })
        .await;
    assert!(
        echo.is_none(),
        "the sending session has the ack, not a push"
    );

    let reply = bob.say("d:amy:bob", "r1", "hi amy").await;
    assert_eq!(reply.seq, 2);
    assert_eq!(amy_phone.message().await.seq, 2);
    assert_eq!(amy_laptop.message().await.seq, 2);
}

#[tokio::test]
async fn group_messages_reach_every_online_member_in_order() {
    let w = world().await;
    w.users(&["owner", "amy", "bob", "cy"]).await;
    w.group("team", "owner", &["amy", "bob", "cy"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    let mut cy = w.connect("cy", "d").await;

    // Seq 1 is the notice of the group's creation.
    for n in 0..20 {
        let ack = amy.say("g:team", &format!("a{n}"), &format!("#{n}")).await;
        assert_eq!(ack.seq, n + 2);
    }
    for client in [&mut bob, &mut cy] {
        let seqs: Vec<u64> = {
            let mut seen = Vec::new();
            for _ in 0..20 {
                seen.push(client.message().await.seq);
            }
            seen
        };
        assert_eq!(seqs, (2..=21).collect::<Vec<_>>(), "every entry, in order");
    }
}

#[tokio::test]
async fn pipelined_sends_from_several_senders_get_gap_free_sequences_in_send_order() {
    let w = world().await;
    w.users(&["owner", "amy", "bob"]).await;
    w.group("team", "owner", &["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    // Both send bursts without waiting for answers: the committer batches them.
    let mut amy_ids = Vec::new();
    let mut bob_ids = Vec::new();
    for n in 0..30 {
        amy_ids.push(
            amy.send(client_frame::Body::Send(im_proto::v1::SendRequest {
                client_msg_id: format!("a{n}"),
                conversation_id: "g:team".into(),
                body: Some(text(&format!("a{n}"))),
            }))
            .await,
        );
        bob_ids.push(
            bob.send(client_frame::Body::Send(im_proto::v1::SendRequest {
                client_msg_id: format!("b{n}"),
                conversation_id: "g:team".into(),
                body: Some(text(&format!("b{n}"))),
            }))
            .await,
        );
    }
    let mut seqs = Vec::new();
    for (client, ids) in [(&mut amy, &amy_ids), (&mut bob, &bob_ids)] {
        let mut mine = Vec::new();
        for id in ids {
            match client.answer(*id).await {
                server_frame::Body::SendAck(ack) => mine.push(ack.seq),
                other => panic!("{other:?}"),
            }
        }
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "one sender's messages keep their order: {mine:?}"
        );
        seqs.extend(mine);
    }
    seqs.sort_unstable();
    // Seq 1 is the notice of the group's creation.
    assert_eq!(seqs, (2..=61).collect::<Vec<_>>(), "gap-free, no seq twice");
}

#[tokio::test]
async fn a_resend_returns_the_first_ack_across_reconnects_and_devices() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "phone").await;
    let first = amy.say("d:amy:bob", "same-id", "once").await;
    drop(amy);
    let mut again = w.connect("amy", "phone").await;
    let repeat = again.say("d:amy:bob", "same-id", "once").await;
    assert!(repeat.duplicate);
    assert_eq!(
        (repeat.seq, &repeat.server_msg_id, repeat.server_time_ms),
        (first.seq, &first.server_msg_id, first.server_time_ms)
    );
    let mut laptop = w.connect("amy", "laptop").await;
    assert!(laptop.say("d:amy:bob", "same-id", "once").await.duplicate);
    let next = again.say("d:amy:bob", "other-id", "twice").await;
    assert_eq!(next.seq, 2, "a resend appends nothing");

    let mut bob = w.connect("bob", "phone").await;
    let history = page(
        bob.call(client_frame::Body::History(HistoryRequest {
            conversation_id: "d:amy:bob".into(),
            before_seq: 0,
            limit: 0,
        }))
        .await,
    );
    assert_eq!(history.messages.len(), 2);
}

#[tokio::test]
async fn windows_close_for_senders_but_not_for_admins() {
    let w = world_with(|s| {
        s.messaging.edit_window = Duration::ZERO;
        s.messaging.recall_window = Duration::ZERO;
    })
    .await;
    w.users(&["owner", "amy"]).await;
    w.group("team", "owner", &["amy"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut owner = w.connect("owner", "d").await;
    amy.say("g:team", "1", "oops").await; // 2, after the notice of the creation
    tokio::time::sleep(Duration::from_millis(5)).await;
    let body = |kind| MessageBody { kind: Some(kind) };
    let content = match text("fixed").kind {
        Some(message_body::Kind::Content(c)) => c,
        _ => unreachable!(),
    };
    let edit = amy
        .send_message(
            "g:team",
            "2",
            body(message_body::Kind::Edit(Edit {
                target_seq: 2,
                content: Some(content),
            })),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&edit), ErrorCode::EditWindowClosed);
    let recall = body(message_body::Kind::Recall(Recall { target_seq: 2 }));
    let late = amy
        .send_message("g:team", "3", recall.clone())
        .await
        .unwrap_err();
    assert_eq!(code(&late), ErrorCode::EditWindowClosed);
    let by_admin = owner.send_message("g:team", "4", recall).await.unwrap();
    assert_eq!(by_admin.seq, 3);
}

#[tokio::test]
async fn live_settings_apply_from_the_next_request_and_the_rest_wait_for_a_restart() {
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    amy.say("d:amy:bob", "1", "oops").await;
    let reload = &w.reload().messaging;
    let closed = im_server::messaging::Settings {
        edit_window: Duration::ZERO,
        ..(*reload.get()).clone()
    };
    reload.apply(closed.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let content = match text("fixed").kind {
        Some(message_body::Kind::Content(c)) => c,
        _ => unreachable!(),
    };
    let edit = MessageBody {
        kind: Some(message_body::Kind::Edit(Edit {
            target_seq: 1,
            content: Some(content),
        })),
    };
    let refused = amy.send_message("d:amy:bob", "2", edit).await.unwrap_err();
    assert_eq!(
        code(&refused),
        ErrorCode::EditWindowClosed,
        "the window reloaded shut applies to the next edit"
    );
    let restart_only = im_server::messaging::Settings {
        commit_queue: 1,
        ..closed
    };
    let error = reload.apply(restart_only).unwrap_err().to_string();
    assert!(error.contains("core.messaging.commit_queue"), "{error}");
    assert_eq!(
        reload.get().commit_queue,
        8_192,
        "nothing refused is in force"
    );
}

#[tokio::test]
async fn permission_denials_carry_their_codes() {
    let w = world().await;
    w.users(&["owner", "amy", "bob", "eve"]).await;
    w.group("team", "owner", &["amy"]).await;
    let mut eve = w.connect("eve", "d").await;
    let mut amy = w.connect("amy", "d").await;

    let outsider = eve
        .send_message("g:team", "1", text("hi"))
        .await
        .unwrap_err();
    assert_eq!(code(&outsider), ErrorCode::NotAMember);
    let reading = eve
        .call(client_frame::Body::History(HistoryRequest {
            conversation_id: "g:team".into(),
            ..Default::default()
        }))
        .await;
    assert!(matches!(reading, server_frame::Body::Error(e) if e.code() == ErrorCode::NotAMember));
    let stranger = eve
        .send_message("d:amy:bob", "2", text("hi"))
        .await
        .unwrap_err();
    assert_eq!(
        code(&stranger),
        ErrorCode::Forbidden,
        "not eve's conversation"
    );
    let unknown = amy
        .send_message("g:nowhere", "3", text("hi"))
        .await
        .unwrap_err();
    assert_eq!(code(&unknown), ErrorCode::GroupNotFound);
    let malformed = amy
        .send_message("d:bob:amy", "4", text("hi"))
        .await
        .unwrap_err();
    assert_eq!(
        code(&malformed),
        ErrorCode::InvalidArgument,
        "not canonical"
    );

    w.business
        .mute_member(&Actor::App, "team", "amy", now_ms() + 60_000)
        .await
        .unwrap();
    let muted = amy
        .send_message("g:team", "5", text("hi"))
        .await
        .unwrap_err();
    assert_eq!(code(&muted), ErrorCode::Muted);

    w.business
        .set_block(&Actor::App, "bob", "amy", true)
        .await
        .unwrap();
    let blocked = amy
        .send_message("d:amy:bob", "6", text("hi"))
        .await
        .unwrap_err();
    assert_eq!(code(&blocked), ErrorCode::Blocked);
    w.business
        .set_block(&Actor::App, "bob", "amy", false)
        .await
        .unwrap();
    amy.say("d:amy:bob", "7", "hi again").await;
}

/// The notice in `message`, if it is one: its kind and targets.
fn notice_of(message: &im_proto::v1::Message) -> Option<(NoticeKind, Vec<String>)> {
    match message.body.as_ref()?.kind.as_ref()? {
        message_body::Kind::Notice(n) => Some((n.kind(), n.target_user_ids.clone())),
        _ => None,
    }
}

/// `user`'s history of `conversation`, newest last.
async fn history_of(client: &mut Client, conversation: &str) -> im_proto::v1::MessagePage {
    page(
        client
            .call(client_frame::Body::History(HistoryRequest {
                conversation_id: conversation.into(),
                before_seq: 0,
                limit: 0,
            }))
            .await,
    )
}

#[tokio::test]
async fn members_added_and_removed_are_told_and_fanned_out_to() {
    let w = world().await;
    w.users(&["owner", "amy", "bob"]).await;
    w.group("team", "owner", &["amy"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    amy.say("g:team", "1", "before bob").await; // 2, after the notice of the creation
    w.business
        .add_members(&Actor::App, "team", &["bob".into()])
        .await
        .unwrap();
    let joined = bob
        .expect(|b| match b {
            server_frame::Body::Conversation(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (
            joined.conversation_id.as_str(),
            joined.active,
            joined.last_seq,
            joined.visible_from_seq,
            joined.read_seq,
            joined.unread_count,
        ),
        ("g:team", true, 3, 3, 2, 0),
        "bob sees the group from the notice of his add (3) on, nothing before it to read"
    );
    let added = amy.message().await;
    assert_eq!(
        (added.seq, added.sender_user_id.as_str(), notice_of(&added)),
        (
            3,
            "",
            Some((NoticeKind::MembersAdded, vec!["bob".to_owned()]))
        ),
        "the members see the notice, sent by no one"
    );
    let first = history_of(&mut bob, "g:team").await;
    assert_eq!(
        first
            .messages
            .iter()
            .map(|m| (m.seq, notice_of(m).map(|(kind, _)| kind)))
            .collect::<Vec<_>>(),
        [(3, Some(NoticeKind::MembersAdded))],
        "the notice of his add is the first entry bob sees"
    );
    amy.say("g:team", "2", "welcome bob").await;
    assert_eq!(
        bob.message().await.seq,
        4,
        "the new member gets new entries"
    );

    w.business
        .remove_members(&Actor::App, "team", &["bob".into()])
        .await
        .unwrap();
    let removed = bob
        .expect(|b| match b {
            server_frame::Body::Conversation(c) => Some(c.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (removed.active, removed.last_seq, removed.visible_from_seq),
        (false, 0, 0),
        "a removed member's state carries no seqs"
    );
    let gone = amy.message().await;
    assert_eq!(
        (gone.seq, notice_of(&gone)),
        (
            5,
            Some((NoticeKind::MembersRemoved, vec!["bob".to_owned()]))
        )
    );
    amy.say("g:team", "3", "bob left").await;
    let leaked = bob
        .sees_within(Duration::from_millis(300), |b| match b {
            server_frame::Body::Message(m) => Some(m.seq),
            _ => None,
        })
        .await;
    assert_eq!(leaked, None, "no entries after removal");
    let sync = sync_of(
        bob.call(client_frame::Body::Sync(SyncRequest {
            held: vec![SeqCursor {
                conversation_id: "g:team".into(),
                seq: 4,
            }],
            ..Default::default()
        }))
        .await,
    );
    assert_eq!(sync.conversations.len(), 1);
    assert!(!sync.conversations[0].active, "sync says bob is out");
    assert_eq!(
        (
            sync.conversations[0].last_seq,
            sync.conversations[0].visible_from_seq
        ),
        (0, 0),
        "and tells nothing more"
    );

    w.business
        .leave_group(&Actor::User("amy".into()), "team", "amy")
        .await
        .unwrap();
    let mut owner = w.connect("owner", "d").await;
    let recall = MessageBody {
        kind: Some(message_body::Kind::Recall(Recall { target_seq: 3 })),
    };
    let kept = owner
        .send_message("g:team", "recall-notice", recall)
        .await
        .unwrap_err();
    assert_eq!(
        code(&kept),
        ErrorCode::InvalidArgument,
        "a notice is not a message: not even the owner withdraws it ({kept:?})"
    );
    let history = history_of(&mut owner, "g:team").await;
    let notices: Vec<(u64, NoticeKind, Vec<String>)> = history
        .messages
        .iter()
        .filter_map(|m| notice_of(m).map(|(kind, targets)| (m.seq, kind, targets)))
        .collect();
    let names = |users: &[&str]| users.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        notices,
        [
            (1, NoticeKind::GroupCreated, names(&["owner", "amy"])),
            (3, NoticeKind::MembersAdded, names(&["bob"])),
            (5, NoticeKind::MembersRemoved, names(&["bob"])),
            (7, NoticeKind::MemberLeft, names(&["amy"])),
        ],
        "every change of the membership is an entry in the history, in order"
    );
}

#[tokio::test]
async fn members_added_later_see_the_history_from_their_join_unless_the_group_shows_it_all() {
    let w = world().await;
    w.users(&["owner", "amy", "bob", "cy"]).await;
    w.group("team", "owner", &["amy"]).await;
    let open = im_business::NewGroup {
        group_id: "open".into(),
        name: "open".into(),
        owner_user_id: "owner".into(),
        member_user_ids: vec!["amy".into()],
        history_visibility: HistoryVisibility::Full,
        ..Default::default()
    };
    w.business.create_group(&Actor::App, open).await.unwrap();
    let mut amy = w.connect("amy", "d").await;
    for group in ["g:team", "g:open"] {
        amy.say(group, "early", "said before bob came").await; // 2
    }
    for group in ["team", "open"] {
        w.business
            .add_members(&Actor::App, group, &["bob".into()])
            .await
            .unwrap(); // 3
    }
    let mut bob = w.connect("bob", "d").await;

    let from_join = history_of(&mut bob, "g:team").await;
    let seqs: Vec<u64> = from_join.messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        (seqs, from_join.visible_from_seq, from_join.has_more),
        (vec![3], 3, false),
        "the notice of his add is the first entry bob sees"
    );
    let pulled = page(
        bob.call(client_frame::Body::Pull(PullRequest {
            conversation_id: "g:team".into(),
            after_seq: 0,
            limit: 0,
        }))
        .await,
    );
    let seqs: Vec<u64> = pulled.messages.iter().map(|m| m.seq).collect();
    assert_eq!((seqs, pulled.visible_from_seq), (vec![3], 3));
    let hidden = bob
        .send_message(
            "g:team",
            "react",
            MessageBody {
                kind: Some(message_body::Kind::Reaction(im_proto::v1::Reaction {
                    target_seq: 2,
                    key: "+1".into(),
                    remove: false,
                })),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        code(&hidden),
        ErrorCode::MessageNotFound,
        "what bob cannot see, he cannot react to"
    );

    let everything = history_of(&mut bob, "g:open").await;
    let seqs: Vec<u64> = everything.messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        (seqs, everything.visible_from_seq),
        (vec![1, 2, 3], 1),
        "a group that shows its history shows it all"
    );

    let sync = sync_of(
        bob.call(client_frame::Body::Sync(SyncRequest::default()))
            .await,
    );
    let states: Vec<(&str, u64, u64, u64, bool)> = sync
        .conversations
        .iter()
        .map(|c| {
            (
                c.conversation_id.as_str(),
                c.visible_from_seq,
                c.read_seq,
                c.unread_count,
                c.last_message.is_some(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("g:open", 1, 0, 1, true), ("g:team", 3, 2, 0, false)],
        "what lies below bob's floor is neither unread nor previewed"
    );

    // The setting applies to later adds; the members in it keep their floor.
    let full = im_business::GroupUpdate {
        history_visibility: Some(HistoryVisibility::Full),
        ..Default::default()
    };
    w.business
        .update_group(&Actor::App, "team", full)
        .await
        .unwrap();
    w.business
        .add_members(&Actor::App, "team", &["cy".into()])
        .await
        .unwrap(); // 4
    let mut cy = w.connect("cy", "d").await;
    assert_eq!(history_of(&mut cy, "g:team").await.visible_from_seq, 1);
    assert_eq!(history_of(&mut bob, "g:team").await.visible_from_seq, 3);
}

#[tokio::test]
async fn replies_mentions_and_fields_newer_than_the_server_reach_clients_as_sent() {
    use prost::Message as _;
    let w = world().await;
    w.users(&["amy", "bob"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut bob = w.connect("bob", "d").await;
    amy.say("d:amy:bob", "1", "question").await;
    let Some(message_body::Kind::Content(mut content)) = text("answer").kind else {
        unreachable!()
    };
    content.reply_to_seq = 1;
    content.mentions = vec!["bob".into()];
    // A field this server does not know (99 in Content), as a newer client may send.
    let mut content = content.encode_to_vec();
    put_field(&mut content, 99, b"new");
    let mut raw_body = Vec::new();
    put_field(&mut raw_body, 1, &content);
    let mut send = im_proto::v1::SendRequest {
        client_msg_id: "2".into(),
        conversation_id: "d:amy:bob".into(),
        body: None,
    }
    .encode_to_vec();
    put_field(&mut send, 3, &raw_body);
    let mut frame = im_proto::v1::ClientFrame {
        request_id: 500,
        body: None,
    }
    .encode_to_vec();
    put_field(&mut frame, 4, &send);
    amy.send_bytes(frame).await;
    assert!(matches!(amy.answer(500).await, server_frame::Body::SendAck(a) if a.seq == 2));

    assert_eq!(bob.message().await.seq, 1);
    let pushed = bob.message().await;
    let Some(message_body::Kind::Content(got)) = pushed.body.as_ref().and_then(|b| b.kind.clone())
    else {
        panic!("content")
    };
    assert_eq!(
        (got.reply_to_seq, got.mentions),
        (1, vec!["bob".to_owned()])
    );
    // The test client's prost drops the unknown field; the bytes on the wire keep it.
    let id = bob
        .send(client_frame::Body::Pull(PullRequest {
            conversation_id: "d:amy:bob".into(),
            after_seq: 1,
            limit: 1,
        }))
        .await;
    use futures::StreamExt;
    let bytes = loop {
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(bytes))) = bob.ws.next().await
        else {
            panic!("closed")
        };
        let frame = im_proto::v1::ServerFrame::decode(bytes.clone()).unwrap();
        if frame.request_id == id {
            break bytes;
        }
    };
    assert!(
        bytes
            .windows(raw_body.len())
            .any(|w| w == raw_body.as_slice()),
        "the body's bytes, unknown field included, are relayed unchanged"
    );
}

#[derive(Default)]

struct RecordingPush(std::sync::Mutex<Vec<(u64, Vec<String>)>>);

#[async_trait::async_trait]
impl im_server::push::PushHook for RecordingPush {
    async fn offline(&self, entry: &im_proto::v1::Message, offline: &[String]) {
        self.0.lock().unwrap().push((entry.seq, offline.to_vec()));
    }
}

#[tokio::test]
async fn entries_for_users_with_no_device_online_go_to_the_push_hook() {
    let push = std::sync::Arc::new(RecordingPush::default());
    let w = world_with_push(push.clone()).await;
    w.users(&["owner", "amy", "bob", "cy"]).await;
    w.group("team", "owner", &["amy", "bob", "cy"]).await;
    let mut amy = w.connect("amy", "d").await;
    let _bob = w.connect("bob", "d").await;
    amy.say("g:team", "1", "hi").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let first = push.0.lock().unwrap().first().cloned();
        if let Some((seq, mut offline)) = first {
            offline.sort();
            assert_eq!(
                (seq, offline),
                (2, vec!["cy".to_owned(), "owner".to_owned()]),
                "the first is amy's: the notice of the creation (seq 1) wakes no one"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hook was never called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_resend_gets_its_first_ack_even_after_the_sender_was_muted() {
    let w = world().await;
    w.users(&["owner", "amy"]).await;
    w.group("team", "owner", &["amy"]).await;
    let mut amy = w.connect("amy", "d").await;
    let mut owner = w.connect("owner", "d").await;
    let first = amy.say("g:team", "once", "before the mute").await;
    assert_eq!(owner.message().await.seq, first.seq);
    w.business
        .mute_member(&Actor::App, "team", "amy", now_ms() + 60_000)
        .await
        .unwrap();
    let again = amy.say("g:team", "once", "before the mute").await;
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
    // Pushed again (the node that stored it may have died before pushing); clients drop the
    // repeat by seq.
    assert_eq!(owner.message().await.seq, first.seq);
    let new = amy
        .send_message("g:team", "new", text("x"))
        .await
        .unwrap_err();
    assert_eq!(
        code(&new),
        ErrorCode::Muted,
        "a new message is still refused"
    );
}
