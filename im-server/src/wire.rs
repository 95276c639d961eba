//! Framing, in one place: the bytes of a sent body as they are checked and stored
//! ([`RawBody`]), and the frames the server builds around stored bodies.
//!
//! Entries are relayed with their `MessageBody` bytes exactly as received, so fields newer
//! than this server still reach the clients that know them: frames are assembled from
//! prost-encoded parts and raw length-delimited fields (a protobuf message is the concatenation
//! of its fields). The few field numbers this needs are named in [`fields`] and checked against
//! the descriptor set by a test.

use std::borrow::Cow;

use bytes::Bytes;
use im_proto::{
    reflect,
    v1::{Error, Message, MessageBody, MessagePage, ServerFrame, server_frame},
};
use prost::{
    Message as _,
    encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint},
};

/// Field numbers used when frames are taken apart or assembled around raw bodies.
pub(crate) mod fields {
    /// `ClientFrame.send`.
    pub(crate) const FRAME_SEND: u32 = 4;
    /// `SendRequest.body`.
    pub(crate) const SEND_BODY: u32 = 3;
    /// `ServerFrame.message`.
    pub(crate) const FRAME_MESSAGE: u32 = 6;
    /// `ServerFrame.messages`.
    pub(crate) const FRAME_MESSAGES: u32 = 8;
    /// `Message.body`.
    pub(crate) const MESSAGE_BODY: u32 = 8;
    /// `MessagePage.messages`.
    pub(crate) const PAGE_MESSAGES: u32 = 2;
    /// `MessageBody.content`.
    pub(crate) const BODY_CONTENT: u32 = 1;
    /// `MessageBody.edit`.
    pub(crate) const BODY_EDIT: u32 = 2;
    /// `Edit.content`.
    pub(crate) const EDIT_CONTENT: u32 = 2;
    /// `Content.media`.
    pub(crate) const CONTENT_MEDIA: u32 = 2;
}

/// The `MessageBody` of a send as the client encoded it: every copy of the field, in wire
/// order, so that what decodes from it is what the protobuf rules make of the frame (a field
/// sent twice is merged) and what the checks see is what is stored and relayed. Only what
/// those rules discard is left out: a oneof member that a later member replaced, in the frame
/// (an earlier `send` than the one kept) and in the body (an earlier kind), since the raw
/// readers of the stored body (the content check, an edit's folding) would otherwise see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBody(Bytes);

impl RawBody {
    /// The body of the `send` in the encoded `ClientFrame` `frame`; `None` when the frame is
    /// malformed or carries no body.
    pub fn of_send_frame(frame: &[u8]) -> Option<Self> {
        let frame = without_replaced(frame, oneof("im.v1.ClientFrame", "body"))?;
        let send = field(&frame, fields::FRAME_SEND)?;
        let body = field(&send, fields::SEND_BODY)?;
        let body = without_replaced(&body, oneof("im.v1.MessageBody", "kind"))?;
        Some(Self(Bytes::copy_from_slice(&body)))
    }

    /// A body from its bytes (a stored one, or one built in tests).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Self(bytes.into())
    }

    /// The body, decoded from exactly these bytes.
    pub fn decode(&self) -> Result<MessageBody, prost::DecodeError> {
        MessageBody::decode(self.0.clone())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (a body with no field at all).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw bytes of the field `number` of this body, every copy concatenated.
    pub(crate) fn field(&self, number: u32) -> Option<Cow<'_, [u8]>> {
        field(&self.0, number)
    }
}

/// The bytes of length-delimited field `number` in the protobuf message `buf`: every
/// occurrence, concatenated (which decodes as protobuf merges them), borrowed when there is
/// one. `None` if absent or if `buf` is not well formed.
pub(crate) fn field(mut buf: &[u8], number: u32) -> Option<Cow<'_, [u8]>> {
    let mut found: Option<Cow<'_, [u8]>> = None;
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        if wire_type != WireType::LengthDelimited {
            skip_value(&mut buf, tag, wire_type)?;
            continue;
        }
        let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
        let value = buf.get(..len)?;
        if tag == number {
            found = Some(match found {
                None => Cow::Borrowed(value),
                Some(earlier) => Cow::Owned([&earlier[..], value].concat()),
            });
        }
        buf = &buf[len..];
    }
    found
}

/// The members of a oneof of the protocol.
fn oneof(message: &str, oneof: &str) -> &'static [u32] {
    reflect::oneof_numbers(message, oneof).unwrap_or_default()
}

/// The protobuf message `buf` less the members of a oneof (`members`) that a later member
/// replaces: what protobuf reads is the last member, merged from its copies after the last
/// other member. Borrowed when nothing is replaced; `None` if `buf` is not well formed.
fn without_replaced<'a>(buf: &'a [u8], members: &[u32]) -> Option<Cow<'a, [u8]>> {
    // Where the copies that are read begin: at the last member unlike the one before it.
    let (mut rest, mut last, mut read_from) = (buf, None, 0);
    while !rest.is_empty() {
        let start = buf.len() - rest.len();
        let (number, wire_type) = decode_key(&mut rest).ok()?;
        skip_value(&mut rest, number, wire_type)?;
        if members.contains(&number) {
            if last.is_some_and(|last| last != number) {
                read_from = start;
            }
            last = Some(number);
        }
    }
    if read_from == 0 {
        return Some(Cow::Borrowed(buf));
    }
    // Before that point only the fields outside the oneof are kept, in their order.
    let mut kept = Vec::with_capacity(buf.len());
    let mut rest = &buf[..read_from];
    while !rest.is_empty() {
        let start = read_from - rest.len();
        let (number, wire_type) = decode_key(&mut rest).ok()?;
        skip_value(&mut rest, number, wire_type)?;
        if !members.contains(&number) {
            kept.extend_from_slice(&buf[start..read_from - rest.len()]);
        }
    }
    kept.extend_from_slice(&buf[read_from..]);
    Some(Cow::Owned(kept))
}

/// Moves `buf` past the value of the field whose key (`number`, `wire_type`) was just read. A
/// (deprecated) group is skipped up to its matching end, as protobuf skips one it does not
/// know: walking past it rather than giving up keeps what the walkers find equal to what
/// decodes. `None` if `buf` ends early or a group end does not match.
fn skip_value(buf: &mut &[u8], number: u32, wire_type: WireType) -> Option<()> {
    let mut open_groups = Vec::new();
    let (mut number, mut wire_type) = (number, wire_type);
    loop {
        match wire_type {
            WireType::Varint => {
                decode_varint(buf).ok()?;
            }
            WireType::SixtyFourBit => *buf = buf.get(8..)?,
            WireType::ThirtyTwoBit => *buf = buf.get(4..)?,
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
                *buf = buf.get(len..)?;
            }
            WireType::StartGroup => open_groups.push(number),
            WireType::EndGroup => {
                if open_groups.pop() != Some(number) {
                    return None;
                }
            }
        }
        if open_groups.is_empty() {
            return Some(());
        }
        (number, wire_type) = decode_key(buf).ok()?;
    }
}

/// Whether the encoded message `raw` of type `message` (a full name) holds a field that type
/// does not declare: one from a newer version of the protocol.
pub(crate) fn has_unknown_fields(raw: &[u8], message: &str) -> bool {
    let Some(known) = reflect::field_numbers(message) else {
        return false;
    };
    let mut buf = raw;
    while !buf.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else {
            return false;
        };
        if known.binary_search(&tag).is_err() {
            return true;
        }
        if skip_value(&mut buf, tag, wire_type).is_none() {
            return false;
        }
    }
    false
}

/// Appends `bytes` as length-delimited field `number`.
pub(crate) fn put_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A `ServerFrame` carrying `body`.
pub(crate) fn frame(request_id: u64, body: server_frame::Body) -> Bytes {
    ServerFrame {
        request_id,
        body: Some(body),
    }
    .encode_to_vec()
    .into()
}

/// A `ServerFrame` carrying an `Error`.
pub(crate) fn error_frame(request_id: u64, error: Error) -> Bytes {
    frame(request_id, server_frame::Body::Error(error))
}

/// A `ServerFrame` whose body variant `number` is the already encoded `inner`.
fn raw_frame(request_id: u64, number: u32, inner: &[u8]) -> Bytes {
    let mut out = ServerFrame {
        request_id,
        body: None,
    }
    .encode_to_vec();
    put_field(&mut out, number, inner);
    out.into()
}

/// An encoded `Message` whose body is the raw body `body`.
pub(crate) fn message(message: &Message, body: &[u8]) -> Vec<u8> {
    debug_assert!(message.body.is_none(), "the body goes in raw");
    let mut out = message.encode_to_vec();
    put_field(&mut out, fields::MESSAGE_BODY, body);
    out
}

/// The push of an encoded `Message` (request id 0).
pub(crate) fn push_frame(message: &[u8]) -> Bytes {
    raw_frame(0, fields::FRAME_MESSAGE, message)
}

/// A page of entries: the page's fields, and its entries as encoded `Message`s with their
/// bodies as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Everything but the entries.
    pub page: MessagePage,
    /// The entries, ascending.
    pub messages: Vec<Vec<u8>>,
}

/// The answer to a history or pull request.
pub(crate) fn page_frame(request_id: u64, page: &Page) -> Bytes {
    debug_assert!(page.page.messages.is_empty(), "the entries go in raw");
    let mut out = page.page.encode_to_vec();
    for message in &page.messages {
        put_field(&mut out, fields::PAGE_MESSAGES, message);
    }
    raw_frame(request_id, fields::FRAME_MESSAGES, &out)
}

#[cfg(test)]
mod tests {
    use im_proto::v1::{Content, Text, content, message_body};

    use super::*;

    fn text(text: &str) -> MessageBody {
        MessageBody {
            kind: Some(message_body::Kind::Content(Content {
                kind: Some(content::Kind::Text(Text { text: text.into() })),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn hand_written_field_numbers_match_the_descriptors() {
        let named = [
            (fields::FRAME_SEND, "im.v1.ClientFrame", "send"),
            (fields::SEND_BODY, "im.v1.SendRequest", "body"),
            (fields::FRAME_MESSAGE, "im.v1.ServerFrame", "message"),
            (fields::FRAME_MESSAGES, "im.v1.ServerFrame", "messages"),
            (fields::MESSAGE_BODY, "im.v1.Message", "body"),
            (fields::PAGE_MESSAGES, "im.v1.MessagePage", "messages"),
            (fields::BODY_CONTENT, "im.v1.MessageBody", "content"),
            (fields::BODY_EDIT, "im.v1.MessageBody", "edit"),
            (fields::EDIT_CONTENT, "im.v1.Edit", "content"),
        ];
        for (number, message, field) in named {
            assert_eq!(
                reflect::field_number(message, field),
                Some(number),
                "{message}.{field}"
            );
        }
    }

    #[test]
    fn raw_fields_round_trip_through_prost() {
        let body = text("hi");
        let raw = body.encode_to_vec();
        let content = field(&raw, fields::BODY_CONTENT).expect("content");
        assert_eq!(
            Content::decode(&content[..]).expect("decodes").kind,
            Some(content::Kind::Text(Text { text: "hi".into() }))
        );
        assert_eq!(field(&raw, fields::BODY_EDIT), None);
        assert_eq!(field(&[0x0a, 0x05, 0x01], 1), None, "truncated");

        let mut rebuilt = Vec::new();
        put_field(&mut rebuilt, fields::BODY_CONTENT, &content);
        assert_eq!(rebuilt, raw);

        let mut newer = raw.clone();
        put_field(&mut newer, 99, b"from the future");
        assert!(has_unknown_fields(&newer, "im.v1.MessageBody"));
        assert!(!has_unknown_fields(&raw, "im.v1.MessageBody"));
        let twice = [raw.clone(), raw].concat();
        assert!(
            !has_unknown_fields(&twice, "im.v1.MessageBody"),
            "a field sent twice is not a newer one"
        );
    }

    mod split_fields {
        use im_proto::v1::{ClientFrame, Content, Recall, client_frame, message_body};
        use proptest::prelude::*;

        use super::super::*;
        use super::text;

        /// One copy of a body field, as a sender may write it: a part of a body.
        fn part() -> impl Strategy<Value = MessageBody> {
            prop_oneof![
                "[a-z ]{0,12}".prop_map(|t| text(&t)),
                (
                    proptest::collection::vec("[a-z]{1,6}", 0..3),
                    any::<bool>(),
                    0u64..9
                )
                    .prop_map(|(mentions, mention_all, reply_to_seq)| {
                        MessageBody {
                            kind: Some(message_body::Kind::Content(Content {
                                kind: None,
                                mentions,
                                mention_all,
                                reply_to_seq,
                            })),
                        }
                    }),
                (0u64..9).prop_map(|target_seq| MessageBody {
                    kind: Some(message_body::Kind::Recall(Recall { target_seq })),
                }),
                Just(MessageBody::default()),
            ]
        }

        /// A frame whose send is written in `sends` copies and whose body in one copy per
        /// part, spread over the send copies: what protobuf merges back into one send.
        fn frame(parts: &[MessageBody], sends: usize) -> Vec<u8> {
            let mut copies = vec![Vec::new(); sends];
            for (i, part) in parts.iter().enumerate() {
                put_field(
                    &mut copies[i % sends],
                    fields::SEND_BODY,
                    &part.encode_to_vec(),
                );
            }
            copies[0].splice(0..0, [0x0a, 0x02, b'm', b'1']); // client_msg_id
            let mut frame = ClientFrame {
                request_id: 7,
                body: None,
            }
            .encode_to_vec();
            for copy in copies {
                put_field(&mut frame, fields::FRAME_SEND, &copy);
            }
            frame
        }

        proptest! {
            // What the checks decode from a RawBody is what protobuf makes of the whole frame,
            // however its send and body fields were split, and it is those bytes that are stored.
            #[test]
            fn the_raw_body_decodes_as_protobuf_merges_the_frame(
                parts in proptest::collection::vec(part(), 1..5),
                sends in 1usize..4,
            ) {
                let frame = frame(&parts, sends);
                let merged = ClientFrame::decode(&frame[..]).expect("a valid frame");
                let Some(client_frame::Body::Send(send)) = merged.body else {
                    panic!("a send");
                };
                prop_assert_eq!(send.client_msg_id.as_str(), "m1");
                let raw = RawBody::of_send_frame(&frame).expect("a body");
                let checked = raw.decode().expect("decodes");
                prop_assert_eq!(Some(&checked), send.body.as_ref());
                // Re-reading the stored bytes gives the same body again.
                let stored = RawBody::from_bytes(raw.as_bytes().to_vec());
                prop_assert_eq!(stored.decode().expect("decodes"), checked);
            }
        }
    }

    #[test]
    fn walkers_skip_groups_as_protobuf_does() {
        // Group 14 holding a varint and group 15, then an empty content.
        let body = [0x73, 0x08, 0x01, 0x7b, 0x7c, 0x74, 0x0a, 0x00];
        assert_eq!(field(&body, fields::BODY_CONTENT).as_deref(), Some(&[][..]));
        assert_eq!(
            MessageBody::decode(&body[..]).expect("decodes").kind,
            Some(message_body::Kind::Content(Content::default()))
        );
        assert!(has_unknown_fields(&body, "im.v1.MessageBody"));
        assert_eq!(field(&[0x73, 0x7c, 0x0a, 0x00], 1), None, "the wrong end");
        assert_eq!(field(&[0x74, 0x0a, 0x00], 1), None, "an end never opened");
        assert_eq!(field(&[0x73, 0x0a, 0x00], 1), None, "never closed");
    }

    #[test]
    fn a_replaced_oneof_member_is_left_out_of_the_raw_body() {
        use im_proto::v1::{ClientFrame, Recall, client_frame};

        let recall = MessageBody {
            kind: Some(message_body::Kind::Recall(Recall { target_seq: 3 })),
        }
        .encode_to_vec();
        let send = |body: &[&[u8]]| {
            let mut send = Vec::new();
            for part in body {
                put_field(&mut send, fields::SEND_BODY, part);
            }
            send
        };
        let decoded = |frame: &[u8]| match ClientFrame::decode(frame).expect("decodes").body {
            Some(client_frame::Body::Send(send)) => send.body,
            _ => panic!("a send"),
        };

        // A send, replaced by a ping, then another send: only the last one is read.
        let mut frame = vec![0x08, 0x01];
        put_field(
            &mut frame,
            fields::FRAME_SEND,
            &send(&[&text("old").encode_to_vec()]),
        );
        put_field(&mut frame, 3, &[]);
        put_field(&mut frame, fields::FRAME_SEND, &send(&[&recall]));
        let raw = RawBody::of_send_frame(&frame).expect("a body");
        assert_eq!(raw.as_bytes(), &recall[..]);
        assert_eq!(Some(raw.decode().expect("decodes")), decoded(&frame));

        // In the body, a content replaced by a recall, then a content again.
        let new = text("new").encode_to_vec();
        let mut frame = vec![0x08, 0x01];
        let body = send(&[&text("old").encode_to_vec(), &recall, &new]);
        put_field(&mut frame, fields::FRAME_SEND, &body);
        let raw = RawBody::of_send_frame(&frame).expect("a body");
        assert_eq!(raw.as_bytes(), &new[..]);
        assert_eq!(Some(raw.decode().expect("decodes")), decoded(&frame));

        // Copies of one member are all kept, merged as protobuf merges them.
        let mut frame = vec![0x08, 0x01];
        let twice = send(&[&text("a").encode_to_vec(), &text("b").encode_to_vec()]);
        put_field(&mut frame, fields::FRAME_SEND, &twice);
        let raw = RawBody::of_send_frame(&frame).expect("a body");
        assert_eq!(raw.len(), 2 * text("a").encoded_len());
        assert_eq!(Some(raw.decode().expect("decodes")), decoded(&frame));
    }

    #[test]
    fn request_ids_and_raw_bodies_go_where_the_frames_say() {
        let page = Page {
            page: MessagePage::default(),
            messages: vec![message(&Message::default(), &text("x").encode_to_vec())],
        };
        let decoded = ServerFrame::decode(page_frame(42, &page)).expect("decodes");
        assert_eq!(decoded.request_id, 42);
        let Some(server_frame::Body::Messages(messages)) = decoded.body else {
            panic!("a page");
        };
        assert_eq!(messages.messages[0].body, Some(text("x")));
    }
}
