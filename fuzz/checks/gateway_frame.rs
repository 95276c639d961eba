//! The gateway's handling of a send frame's bytes, which needs no network (im-server's `wire`):
//! the body taken from the frame as received (`RawBody::of_send_frame`: what the checks decode
//! and the store keeps), the parts of it the checks and the edit folding read as raw bytes, and
//! the frames that carry a stored body back out. What is checked is what protobuf makes of the
//! frame, what is stored decodes to what was checked, every frame built around a stored body
//! decodes to that body again, and no bytes make any of it panic.
//!
//! Shared by the fuzz target `gateway_frame` and by im-server's unit test `fuzz_regressions`,
//! which replays every input kept under fuzz/regressions/gateway_frame/.

use std::borrow::Cow;

use im_proto::{
    FrameCodec,
    v1::{
        ClientFrame, Content, Message, MessageBody, MessagePage, ServerFrame, client_frame,
        message_body, server_frame,
    },
};
use prost::Message as _;

use crate::wire::{self, RawBody, fields};

/// `SendRequest.client_msg_id`.
const SEND_CLIENT_MSG_ID: u32 = 1;
/// A field number no message of the protocol declares.
const UNDECLARED: u32 = 1000;

/// Checks `data` as a whole frame, and as the body of a send frame (so that the fuzzer reaches
/// the bodies' structure without first finding a frame around it).
pub(crate) fn check(data: &[u8]) {
    send_frame(data);
    send_frame(&send_frame_around(data));
    // The walkers take bytes of any shape.
    for number in [1, 2, 3, 4, 8] {
        let _ = wire::field(data, number);
    }
    for message in [
        "im.v1.ClientFrame",
        "im.v1.MessageBody",
        "im.v1.Content",
        "none",
    ] {
        let _ = wire::has_unknown_fields(data, message);
    }
}

/// A `ClientFrame` (request 1) whose send has the client message id "m-1" and the body `body`.
fn send_frame_around(body: &[u8]) -> Vec<u8> {
    let mut send = Vec::new();
    wire::put_field(&mut send, SEND_CLIENT_MSG_ID, b"m-1");
    wire::put_field(&mut send, fields::SEND_BODY, body);
    let mut frame = ClientFrame {
        request_id: 1,
        body: None,
    }
    .encode_to_vec();
    wire::put_field(&mut frame, fields::FRAME_SEND, &send);
    frame
}

/// A frame as the gateway reads it (link.rs), then the body of a send as dispatch.rs takes it.
fn send_frame(bytes: &[u8]) {
    let Ok(frame) = FrameCodec::default().decode_client(bytes) else {
        return;
    };
    let Some(client_frame::Body::Send(send)) = frame.body else {
        return;
    };
    let raw = RawBody::of_send_frame(bytes);
    let Some(sent) = &send.body else {
        assert_eq!(raw, None, "a send without a body has no raw body");
        return;
    };
    let raw = raw.expect("a send that decoded has its body's bytes");
    let checked = raw
        .decode()
        .expect("a body that decoded in its frame decodes alone");
    assert_eq!(
        &checked, sent,
        "the body checked is the body protobuf reads from the frame"
    );
    // The same send, encoded canonically, gives the same body.
    let canonical = ClientFrame {
        request_id: frame.request_id,
        body: Some(client_frame::Body::Send(send.clone())),
    }
    .encode_to_vec();
    let again = RawBody::of_send_frame(&canonical).expect("a canonical frame is walked");
    assert_eq!(again.decode().as_ref(), Ok(&checked));
    stored(&raw, &checked);
}

/// A body as stored (the checked bytes, as they are), read back by the checks' raw-byte looks,
/// folded as an edit, and relayed in a push and a page.
fn stored(raw: &RawBody, checked: &MessageBody) {
    let stored = RawBody::from_bytes(raw.as_bytes().to_vec());
    assert_eq!(
        stored.len(),
        raw.len(),
        "the size checked is the size stored"
    );
    assert_eq!(stored.decode().as_ref(), Ok(checked));
    unknown_fields(checked, "im.v1.MessageBody");
    match &checked.kind {
        Some(message_body::Kind::Content(content)) => {
            // What the content check reads as sent is the content that was decoded.
            let sent = stored
                .field(fields::BODY_CONTENT)
                .expect("a content body has its content field");
            assert_eq!(Content::decode(&*sent).as_ref(), Ok(content));
            unknown_fields(content, "im.v1.Content");
        }
        Some(message_body::Kind::Edit(edit)) => {
            // An edit folded into its target is relayed as its content alone (the messaging
            // module's aggregation): the content that was checked.
            let content = wire::field(stored.as_bytes(), fields::BODY_EDIT)
                .and_then(|e| wire::field(&e, fields::EDIT_CONTENT).map(Cow::into_owned))
                .unwrap_or_default();
            let mut folded = Vec::new();
            wire::put_field(&mut folded, fields::BODY_CONTENT, &content);
            assert_eq!(
                MessageBody::decode(&*folded)
                    .expect("a folded edit decodes")
                    .kind,
                Some(message_body::Kind::Content(
                    edit.content.clone().unwrap_or_default()
                )),
                "the folded edit is the edit's content"
            );
        }
        _ => {}
    }
    relayed(stored.as_bytes(), checked);
}

/// The entry with the stored body, as a push and in a page.
fn relayed(body: &[u8], checked: &MessageBody) {
    let entry = Message {
        conversation_id: "d:alice:bob".into(),
        seq: 7,
        server_msg_id: "s-7".into(),
        sender_user_id: "alice".into(),
        client_msg_id: "m-1".into(),
        server_time_ms: 1,
        ..Default::default()
    };
    let encoded = wire::message(&entry, body);
    let message = Message::decode(&*encoded).expect("an entry decodes");
    assert_eq!(
        message,
        Message {
            body: Some(checked.clone()),
            ..entry
        }
    );

    let push = ServerFrame::decode(wire::push_frame(&encoded)).expect("a push decodes");
    assert_eq!(push.request_id, 0);
    assert_eq!(
        push.body,
        Some(server_frame::Body::Message(message.clone()))
    );

    let page = MessagePage {
        conversation_id: "d:alice:bob".into(),
        messages: Vec::new(),
        has_more: true,
        last_seq: 9,
        visible_from_seq: 1,
    };
    let framed = wire::page_frame(
        5,
        &wire::Page {
            page: page.clone(),
            messages: vec![encoded.clone(), encoded],
        },
    );
    let answer = ServerFrame::decode(framed).expect("a page decodes");
    assert_eq!(answer.request_id, 5);
    let expected = MessagePage {
        messages: vec![message.clone(), message],
        ..page
    };
    assert_eq!(answer.body, Some(server_frame::Body::Messages(expected)));
}

/// A message encoded by this build holds no unknown field; with one appended, it does.
fn unknown_fields(message: &impl prost::Message, name: &str) {
    let mut encoded = message.encode_to_vec();
    assert!(!wire::has_unknown_fields(&encoded, name), "{name}");
    wire::put_field(&mut encoded, UNDECLARED, b"newer");
    assert!(wire::has_unknown_fields(&encoded, name), "{name}");
}
