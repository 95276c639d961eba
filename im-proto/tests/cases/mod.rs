//! The frames behind the golden vectors. Cases are only ever added: an existing case's bytes
//! are the protocol.

use im_proto::v1::{
    self, ClientFrame, ErrorCode, ServerFrame, client_frame::Body as C, server_frame::Body as S,
};
use prost::Message;

pub(crate) struct Case<F> {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) frame: F,
}

pub(crate) struct Malformed {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) message: &'static str,
    pub(crate) max_frame_bytes: usize,
    pub(crate) bytes: Vec<u8>,
    pub(crate) error: ErrorCode,
    pub(crate) request_id: u64,
}

const T0: i64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z, a fixed server time

fn client_case(
    name: &'static str,
    description: &'static str,
    request_id: u64,
    body: C,
) -> Case<ClientFrame> {
    Case {
        name,
        description,
        frame: ClientFrame {
            request_id,
            body: Some(body),
        },
    }
}

fn server_case(
    name: &'static str,
    description: &'static str,
    request_id: u64,
    body: S,
) -> Case<ServerFrame> {
    Case {
        name,
        description,
        frame: ServerFrame {
            request_id,
            body: Some(body),
        },
    }
}

fn text(text: &str) -> v1::Content {
    v1::Content {
        kind: Some(v1::content::Kind::Text(v1::Text { text: text.into() })),
        ..Default::default()
    }
}

fn body(kind: v1::message_body::Kind) -> Option<v1::MessageBody> {
    Some(v1::MessageBody { kind: Some(kind) })
}

fn send(client_msg_id: &str, conversation_id: &str, kind: v1::message_body::Kind) -> C {
    C::Send(v1::SendRequest {
        client_msg_id: client_msg_id.into(),
        conversation_id: conversation_id.into(),
        body: body(kind),
    })
}

fn cursor(conversation_id: &str, seq: u64) -> v1::SeqCursor {
    v1::SeqCursor {
        conversation_id: conversation_id.into(),
        seq,
    }
}

fn message(seq: u64, sender: &str, kind: v1::message_body::Kind) -> v1::Message {
    v1::Message {
        conversation_id: "d:alice:bob".into(),
        seq,
        server_msg_id: format!("m-{seq:04}"),
        sender_user_id: sender.into(),
        sender_device_id: "phone-1".into(),
        client_msg_id: format!("c-{seq:04}"),
        server_time_ms: T0 + seq as i64,
        body: body(kind),
        state: None,
    }
}

pub(crate) fn client_cases() -> Vec<Case<ClientFrame>> {
    use v1::message_body::Kind;
    vec![
        client_case(
            "hello",
            "The first frame: offers v1, a token, a device and the client library.",
            1,
            C::Hello(v1::Hello {
                protocol_versions: vec![1],
                token: "tok_alice_phone".into(),
                device_id: "phone-1".into(),
                platform: v1::Platform::Android.into(),
                client_version: "im-sdk-rust/0.1.0".into(),
                max_frame_bytes: 1_048_576,
                features: Vec::new(),
            }),
        ),
        client_case(
            "hello_multi_version",
            "A client that speaks v1 and a future v2; the server chooses the highest common.",
            1,
            C::Hello(v1::Hello {
                protocol_versions: vec![1, 2],
                token: "tok".into(),
                device_id: "web-7".into(),
                platform: v1::Platform::Web.into(),
                ..Default::default()
            }),
        ),
        client_case(
            "hello_features",
            "A client that handles the Resync push says so.",
            1,
            C::Hello(v1::Hello {
                protocol_versions: vec![1],
                token: "tok".into(),
                device_id: "web-7".into(),
                platform: v1::Platform::Web.into(),
                features: vec![v1::ClientFeature::Resync.into()],
                ..Default::default()
            }),
        ),
        client_case(
            "ping",
            "A heartbeat with the client's clock.",
            2,
            C::Ping(v1::Ping { client_time_ms: T0 }),
        ),
        client_case(
            "send_text",
            "A 1:1 text message.",
            3,
            send("c-0001", "d:alice:bob", Kind::Content(text("hello, bob"))),
        ),
        client_case(
            "send_text_unicode",
            "Text outside ASCII travels as UTF-8.",
            4,
            send("c-0002", "d:alice:bob", Kind::Content(text("你好 👋"))),
        ),
        client_case(
            "send_mentions_reply",
            "A group message mentioning two users and replying to seq 41.",
            5,
            send(
                "c-0003",
                "g:team-42",
                Kind::Content(v1::Content {
                    mentions: vec!["bob".into(), "carol".into()],
                    reply_to_seq: 41,
                    ..text("@bob @carol see above")
                }),
            ),
        ),
        client_case(
            "send_media",
            "An image reference with its thumbnail.",
            6,
            send(
                "c-0004",
                "g:team-42",
                Kind::Content(v1::Content {
                    kind: Some(v1::content::Kind::Media(v1::MediaRef {
                        kind: v1::MediaKind::Image.into(),
                        media_id: "med-9f2".into(),
                        mime_type: "image/jpeg".into(),
                        size_bytes: 248_112,
                        file_name: "beach.jpg".into(),
                        width: 1600,
                        height: 1200,
                        thumbnail_media_id: "med-9f2-t".into(),
                        caption: "holiday".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
            ),
        ),
        client_case(
            "send_custom",
            "An app-defined payload with a fallback text; mention_all set.",
            7,
            send(
                "c-0005",
                "g:team-42",
                Kind::Content(v1::Content {
                    kind: Some(v1::content::Kind::Custom(v1::Custom {
                        r#type: "com.example.location".into(),
                        data: vec![0x01, 0x02, 0xff],
                        fallback_text: "[location]".into(),
                    })),
                    mention_all: true,
                    ..Default::default()
                }),
            ),
        ),
        client_case(
            "send_edit",
            "Replace the content of seq 7.",
            8,
            send(
                "c-0006",
                "d:alice:bob",
                Kind::Edit(v1::Edit {
                    target_seq: 7,
                    content: Some(text("hello, Bob")),
                }),
            ),
        ),
        client_case(
            "send_recall",
            "Recall seq 7.",
            9,
            send(
                "c-0007",
                "d:alice:bob",
                Kind::Recall(v1::Recall { target_seq: 7 }),
            ),
        ),
        client_case(
            "send_delete",
            "Delete seq 8 for everyone.",
            10,
            send(
                "c-0008",
                "d:alice:bob",
                Kind::Delete(v1::Delete { target_seq: 8 }),
            ),
        ),
        client_case(
            "send_reaction_add",
            "React to seq 9.",
            11,
            send(
                "c-0009",
                "g:team-42",
                Kind::Reaction(v1::Reaction {
                    target_seq: 9,
                    key: "👍".into(),
                    remove: false,
                }),
            ),
        ),
        client_case(
            "send_reaction_remove",
            "Take the reaction back.",
            12,
            send(
                "c-0010",
                "g:team-42",
                Kind::Reaction(v1::Reaction {
                    target_seq: 9,
                    key: "👍".into(),
                    remove: true,
                }),
            ),
        ),
        client_case(
            "delivery_ack",
            "Cumulative acks for two conversations in one frame; no request id, no answer.",
            0,
            C::DeliveryAck(v1::DeliveryAck {
                acks: vec![cursor("d:alice:bob", 12), cursor("g:team-42", 300)],
            }),
        ),
        client_case(
            "sync_first_page",
            "What moved past the sequences and read cursors held; unlisted conversations count as held at 0.",
            13,
            C::Sync(v1::SyncRequest {
                held: vec![cursor("d:alice:bob", 12), cursor("g:team-42", 300)],
                page_token: String::new(),
                limit: 100,
                read: vec![cursor("d:alice:bob", 10), cursor("g:team-42", 300)],
            }),
        ),
        client_case(
            "sync_next_page",
            "The following page.",
            14,
            C::Sync(v1::SyncRequest {
                page_token: "p2".into(),
                ..Default::default()
            }),
        ),
        client_case(
            "history_latest",
            "The newest 50 entries.",
            15,
            C::History(v1::HistoryRequest {
                conversation_id: "g:team-42".into(),
                before_seq: 0,
                limit: 50,
            }),
        ),
        client_case(
            "history_before",
            "The 50 entries below seq 251.",
            16,
            C::History(v1::HistoryRequest {
                conversation_id: "g:team-42".into(),
                before_seq: 251,
                limit: 50,
            }),
        ),
        client_case(
            "pull_gap",
            "Fill a gap: entries above seq 12.",
            17,
            C::Pull(v1::PullRequest {
                conversation_id: "d:alice:bob".into(),
                after_seq: 12,
                limit: 100,
            }),
        ),
        client_case(
            "mark_read",
            "Move the read cursor to seq 12.",
            18,
            C::MarkRead(v1::MarkRead {
                conversation_id: "d:alice:bob".into(),
                seq: 12,
            }),
        ),
        client_case(
            "read_cursors",
            "Who read how far in a group.",
            19,
            C::ReadCursors(v1::ReadCursorsRequest {
                conversation_id: "g:team-42".into(),
                page_token: String::new(),
                limit: 200,
            }),
        ),
        client_case(
            "typing_start",
            "Typing; no request id, no answer.",
            0,
            C::Typing(v1::Typing {
                conversation_id: "d:alice:bob".into(),
                active: true,
            }),
        ),
        client_case(
            "typing_stop",
            "Stopped typing.",
            0,
            C::Typing(v1::Typing {
                conversation_id: "d:alice:bob".into(),
                active: false,
            }),
        ),
        client_case(
            "presence_subscribe",
            "Hear about two users' presence.",
            20,
            C::PresenceSubscribe(v1::PresenceSubscribe {
                user_ids: vec!["bob".into(), "carol".into()],
            }),
        ),
        client_case(
            "presence_unsubscribe",
            "Stop hearing about one.",
            21,
            C::PresenceUnsubscribe(v1::PresenceUnsubscribe {
                user_ids: vec!["carol".into()],
            }),
        ),
        client_case(
            "set_presence",
            "Set a chosen status.",
            22,
            C::SetPresence(v1::SetPresence {
                status: v1::PresenceStatus::Busy.into(),
                status_text: "in a meeting".into(),
            }),
        ),
    ]
}

pub(crate) fn server_cases() -> Vec<Case<ServerFrame>> {
    use v1::message_body::Kind;
    vec![
        server_case(
            "welcome",
            "The answer to a good Hello.",
            1,
            S::Welcome(v1::Welcome {
                protocol_version: 1,
                user_id: "alice".into(),
                device_id: "phone-1".into(),
                session_id: "s-7f3a".into(),
                heartbeat_interval_ms: 30_000,
                idle_timeout_ms: 90_000,
                limits: Some(v1::ServerLimits {
                    max_frame_bytes: 1_048_576,
                    max_content_bytes: 65_536,
                    max_messages_per_second: 20,
                    max_inflight_requests: 64,
                    max_sync_page: 200,
                    max_history_page: 200,
                    max_presence_subscriptions: 1_000,
                    // Left unset so this case's bytes stay as published; `welcome_with_frame_rate` sets them.
                    max_frames_per_second: 0,
                    max_rate_limited_in_a_row: 0,
                }),
                server_time_ms: T0,
                server_version: "im-server/0.1.0".into(),
                node_id: "core-1".into(),
            }),
        ),
        server_case(
            "welcome_with_frame_rate",
            "A Welcome announcing the frame rate and how many refusals in a row close the connection.",
            1,
            S::Welcome(v1::Welcome {
                protocol_version: 1,
                user_id: "alice".into(),
                device_id: "phone-1".into(),
                session_id: "s-7f3b".into(),
                heartbeat_interval_ms: 30_000,
                idle_timeout_ms: 90_000,
                limits: Some(v1::ServerLimits {
                    max_frame_bytes: 1_048_576,
                    max_messages_per_second: 20,
                    max_frames_per_second: 50,
                    max_rate_limited_in_a_row: 100,
                    ..Default::default()
                }),
                server_time_ms: T0,
                server_version: "im-server/0.1.0".into(),
                node_id: "core-1".into(),
            }),
        ),
        server_case(
            "error_unsupported_version",
            "The answer to a Hello with no version in common.",
            1,
            S::Error(v1::Error {
                supported_versions: vec![1],
                ..v1::Error::new(ErrorCode::UnsupportedVersion, "no common protocol version")
            }),
        ),
        server_case(
            "error_rate_limited",
            "A send refused by the rate limit, with the time to wait.",
            3,
            S::Error(v1::Error {
                retry_after_ms: 250,
                ..v1::Error::new(ErrorCode::RateLimited, "slow down")
            }),
        ),
        server_case(
            "error_frame_too_large",
            "A connection-level error (request id 0) naming the limit.",
            0,
            S::Error(v1::Error {
                limit: 1_048_576,
                ..v1::Error::new(ErrorCode::FrameTooLarge, "frame too large")
            }),
        ),
        server_case(
            "error_not_a_member",
            "A send to a group the user is not in.",
            5,
            S::Error(v1::Error::new(
                ErrorCode::NotAMember,
                "not a member of g:team-42",
            )),
        ),
        server_case(
            "pong",
            "The answer to a Ping.",
            2,
            S::Pong(v1::Pong {
                client_time_ms: T0,
                server_time_ms: T0 + 3,
            }),
        ),
        server_case(
            "send_ack",
            "The message is durable at seq 13.",
            3,
            S::SendAck(v1::SendAck {
                conversation_id: "d:alice:bob".into(),
                client_msg_id: "c-0001".into(),
                server_msg_id: "m-0013".into(),
                seq: 13,
                server_time_ms: T0 + 13,
                duplicate: false,
            }),
        ),
        server_case(
            "send_ack_duplicate",
            "The same client_msg_id sent again: the first ack, marked duplicate.",
            30,
            S::SendAck(v1::SendAck {
                conversation_id: "d:alice:bob".into(),
                client_msg_id: "c-0001".into(),
                server_msg_id: "m-0013".into(),
                seq: 13,
                server_time_ms: T0 + 13,
                duplicate: true,
            }),
        ),
        server_case(
            "message_text",
            "A pushed text entry.",
            0,
            S::Message(message(13, "alice", Kind::Content(text("hello, bob")))),
        ),
        server_case(
            "message_recall",
            "A pushed recall of seq 7.",
            0,
            S::Message(message(
                14,
                "alice",
                Kind::Recall(v1::Recall { target_seq: 7 }),
            )),
        ),
        server_case(
            "message_notice",
            "A system notice written by the server.",
            0,
            S::Message(v1::Message {
                conversation_id: "g:team-42".into(),
                sender_device_id: String::new(),
                client_msg_id: String::new(),
                ..message(
                    1,
                    "carol",
                    Kind::Notice(v1::SystemNotice {
                        kind: v1::NoticeKind::MembersAdded.into(),
                        actor_user_id: "carol".into(),
                        target_user_ids: vec!["alice".into(), "bob".into()],
                        text: "carol added alice and bob".into(),
                    }),
                )
            }),
        ),
        server_case(
            "sync",
            "Two conversations moved; one more page follows.",
            13,
            S::Sync(v1::SyncResponse {
                conversations: vec![
                    v1::ConversationState {
                        conversation_id: "d:alice:bob".into(),
                        r#type: v1::ConversationType::Direct.into(),
                        last_seq: 14,
                        read_seq: 12,
                        unread_count: 1,
                        visible_from_seq: 1,
                        last_message: Some(message(13, "bob", Kind::Content(text("hi!")))),
                        active: true,
                    },
                    v1::ConversationState {
                        conversation_id: "g:team-42".into(),
                        r#type: v1::ConversationType::Group.into(),
                        last_seq: 320,
                        read_seq: 300,
                        unread_count: 18,
                        visible_from_seq: 101,
                        last_message: None,
                        active: true,
                    },
                ],
                next_page_token: "p2".into(),
            }),
        ),
        server_case(
            "messages",
            "A page of two entries, the first edited and reacted to.",
            17,
            S::Messages(v1::MessagePage {
                conversation_id: "d:alice:bob".into(),
                messages: vec![
                    v1::Message {
                        state: Some(v1::MessageState {
                            edited_seq: 15,
                            reactions: vec![v1::ReactionCount {
                                key: "👍".into(),
                                count: 2,
                                mine: true,
                            }],
                            ..Default::default()
                        }),
                        ..message(13, "alice", Kind::Content(text("hello, Bob")))
                    },
                    message(14, "bob", Kind::Content(text("hi!"))),
                ],
                has_more: true,
                last_seq: 15,
                visible_from_seq: 1,
            }),
        ),
        server_case(
            "read_state",
            "The answer to mark_read (and the push to the user's other devices).",
            18,
            S::ReadState(v1::ReadState {
                conversation_id: "d:alice:bob".into(),
                read_seq: 12,
                unread_count: 2,
            }),
        ),
        server_case(
            "read_receipt",
            "Bob read up to seq 13.",
            0,
            S::ReadReceipt(v1::ReadReceipt {
                conversation_id: "d:alice:bob".into(),
                user_id: "bob".into(),
                read_seq: 13,
                read_at_ms: T0 + 60_000,
            }),
        ),
        server_case(
            "read_cursors",
            "A page of read cursors.",
            19,
            S::ReadCursors(v1::ReadCursorsPage {
                conversation_id: "g:team-42".into(),
                cursors: vec![
                    v1::ReadCursor {
                        user_id: "bob".into(),
                        read_seq: 320,
                    },
                    v1::ReadCursor {
                        user_id: "carol".into(),
                        read_seq: 290,
                    },
                ],
                next_page_token: String::new(),
            }),
        ),
        server_case(
            "typing",
            "Bob is typing.",
            0,
            S::Typing(v1::TypingEvent {
                conversation_id: "d:alice:bob".into(),
                user_id: "bob".into(),
                active: true,
            }),
        ),
        server_case(
            "presences",
            "The answer to presence_subscribe.",
            20,
            S::Presences(v1::PresenceList {
                presences: vec![
                    v1::Presence {
                        user_id: "bob".into(),
                        status: v1::PresenceStatus::Online.into(),
                        platforms: vec![v1::Platform::Ios.into(), v1::Platform::Desktop.into()],
                        ..Default::default()
                    },
                    v1::Presence {
                        user_id: "carol".into(),
                        status: v1::PresenceStatus::Offline.into(),
                        last_seen_ms: T0 - 3_600_000,
                        ..Default::default()
                    },
                ],
            }),
        ),
        server_case(
            "presence",
            "Bob went away.",
            0,
            S::Presence(v1::Presence {
                user_id: "bob".into(),
                status: v1::PresenceStatus::Away.into(),
                status_text: "lunch".into(),
                platforms: vec![v1::Platform::Ios.into()],
                last_seen_ms: 0,
            }),
        ),
        server_case("ok", "Plain success.", 21, S::Ok(v1::Ok {})),
        server_case(
            "go_away",
            "The node is draining; reconnect after a second.",
            0,
            S::GoAway(v1::GoAway {
                code: ErrorCode::ShuttingDown.into(),
                message: "node draining".into(),
                reconnect_after_ms: 1_000,
            }),
        ),
        server_case(
            "resync",
            "Pushes may have been lost: sync on this connection in 1.5 s.",
            0,
            S::Resync(v1::Resync {
                sync_after_ms: 1_500,
            }),
        ),
        server_case(
            "conversation_removed",
            "The user was removed from a group; the conversation stays readable.",
            0,
            S::Conversation(v1::ConversationState {
                conversation_id: "g:team-42".into(),
                r#type: v1::ConversationType::Group.into(),
                last_seq: 321,
                read_seq: 320,
                unread_count: 0,
                visible_from_seq: 101,
                last_message: None,
                active: false,
            }),
        ),
    ]
}

pub(crate) fn malformed_cases() -> Vec<Malformed> {
    const CLIENT: &str = "im.v1.ClientFrame";
    const SERVER: &str = "im.v1.ServerFrame";
    const LIMIT: usize = 1_048_576;
    let frame = |case: Case<ClientFrame>| case.frame.encode_to_vec();
    let send = frame(
        client_cases()
            .into_iter()
            .find(|case| case.name == "send_text")
            .expect("the send_text case"),
    );
    let hello = |versions: Vec<u32>| {
        ClientFrame {
            request_id: 1,
            body: Some(C::Hello(v1::Hello {
                protocol_versions: versions,
                token: "tok".into(),
                device_id: "d1".into(),
                ..Default::default()
            })),
        }
        .encode_to_vec()
    };
    // The answer to a frame that cannot be attributed carries request id 0; to an unknown
    // variant or a Hello, the frame's own request id (all below are one-byte varints).
    let bad = |name, description, message, max_frame_bytes, bytes: Vec<u8>, error| {
        let request_id = match (error, bytes.as_slice()) {
            (ErrorCode::UnsupportedFrame | ErrorCode::UnsupportedVersion, [0x08, id, ..]) => {
                u64::from(*id)
            }
            _ => 0,
        };
        Malformed {
            name,
            description,
            message,
            max_frame_bytes,
            bytes,
            error,
            request_id,
        }
    };
    vec![
        bad(
            "empty",
            "Zero bytes: a frame with no body.",
            CLIENT,
            LIMIT,
            vec![],
            ErrorCode::MalformedFrame,
        ),
        bad(
            "no_body",
            "A request id and nothing else.",
            CLIENT,
            LIMIT,
            vec![0x08, 0x05],
            ErrorCode::MalformedFrame,
        ),
        bad(
            "truncated",
            "A send frame cut one byte short.",
            CLIENT,
            LIMIT,
            send[..send.len() - 1].to_vec(),
            ErrorCode::MalformedFrame,
        ),
        bad(
            "truncated_length",
            "A length prefix that runs past the end.",
            CLIENT,
            LIMIT,
            vec![0x08, 0x01, 0x22, 0x10, 0x0a],
            ErrorCode::MalformedFrame,
        ),
        bad(
            "overlong_varint",
            "A varint of eleven bytes.",
            CLIENT,
            LIMIT,
            [vec![0x08], vec![0xff; 10], vec![0x01]].concat(),
            ErrorCode::MalformedFrame,
        ),
        bad(
            "invalid_utf8",
            "A string field holding bytes that are not UTF-8.",
            CLIENT,
            LIMIT,
            vec![0x08, 0x03, 0x22, 0x03, 0x0a, 0x01, 0xff],
            ErrorCode::MalformedFrame,
        ),
        bad(
            "oversized",
            "A valid send frame one byte over a receiver limit set to its size minus one.",
            CLIENT,
            send.len() - 1,
            send.clone(),
            ErrorCode::FrameTooLarge,
        ),
        bad(
            "oversized_server",
            "A valid server frame over the client's limit.",
            SERVER,
            8,
            ServerFrame {
                request_id: 2,
                body: Some(S::Pong(v1::Pong {
                    client_time_ms: T0,
                    server_time_ms: T0,
                })),
            }
            .encode_to_vec(),
            ErrorCode::FrameTooLarge,
        ),
        bad(
            "unknown_variant",
            "A body in field 999, a variant from a newer protocol revision: answered with UNSUPPORTED_FRAME and request id 9.",
            CLIENT,
            LIMIT,
            vec![0x08, 0x09, 0xba, 0x3e, 0x02, 0x08, 0x01],
            ErrorCode::UnsupportedFrame,
        ),
        bad(
            "unknown_push",
            "A server push in field 999: a client ignores it (and logs UNSUPPORTED_FRAME).",
            SERVER,
            LIMIT,
            vec![0xba, 0x3e, 0x00],
            ErrorCode::UnsupportedFrame,
        ),
        bad(
            "unsupported_version",
            "A Hello offering only versions 2 and 99 to a v1 server.",
            CLIENT,
            LIMIT,
            hello(vec![2, 99]),
            ErrorCode::UnsupportedVersion,
        ),
        bad(
            "no_version",
            "A Hello offering no version at all.",
            CLIENT,
            LIMIT,
            hello(vec![]),
            ErrorCode::UnsupportedVersion,
        ),
    ]
}
