//! Encoding frames around stored bodies. Entries are relayed with their `MessageBody` bytes
//! exactly as received, so fields newer than this server still reach the clients that know
//! them: frames are assembled from prost-encoded parts and raw length-delimited fields (a
//! protobuf message is the concatenation of its fields).

use bytes::Bytes;
use im_proto::v1::{Error, ServerFrame, server_frame};
use prost::{
    Message,
    encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint},
};

/// The bytes of length-delimited field `number` in the protobuf message `buf` (its last
/// occurrence), or `None` if absent or if `buf` is not well formed.
pub(crate) fn field(mut buf: &[u8], number: u32) -> Option<&[u8]> {
    let mut found = None;
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        let skip = match wire_type {
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let value = buf.get(..len)?;
                if tag == number {
                    found = Some(value);
                }
                len
            }
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        buf = buf.get(skip..)?;
    }
    found
}

/// Appends `bytes` as length-delimited field `number`.
pub(crate) fn put_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Whether `raw` holds fields that `decoded` (decoded from it) does not know: re-encoding
/// what was understood comes out shorter.
pub(crate) fn has_unknown_fields(decoded: &impl Message, raw: &[u8]) -> bool {
    decoded.encoded_len() < raw.len()
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
pub(crate) fn raw_frame(request_id: u64, number: u32, inner: &[u8]) -> Bytes {
    let mut out = ServerFrame {
        request_id,
        body: None,
    }
    .encode_to_vec();
    put_field(&mut out, number, inner);
    out.into()
}

#[cfg(test)]
mod tests {
    use im_proto::v1::{Content, MessageBody, Text, content, message_body};

    use super::*;

    #[test]
    fn raw_fields_round_trip_through_prost() {
        let body = MessageBody {
            kind: Some(message_body::Kind::Content(Content {
                kind: Some(content::Kind::Text(Text { text: "hi".into() })),
                ..Default::default()
            })),
        };
        let raw = body.encode_to_vec();
        let content = field(&raw, 1).expect("content");
        assert_eq!(
            Content::decode(content).expect("decodes").kind,
            Some(content::Kind::Text(Text { text: "hi".into() }))
        );
        assert_eq!(field(&raw, 2), None);
        assert_eq!(field(&[0x0a, 0x05, 0x01], 1), None, "truncated");

        let mut rebuilt = Vec::new();
        put_field(&mut rebuilt, 1, content);
        assert_eq!(rebuilt, raw);

        let mut newer = raw.clone();
        put_field(&mut newer, 99, b"from the future");
        let seen = MessageBody::decode(newer.as_slice()).expect("decodes");
        assert!(has_unknown_fields(&seen, &newer));
        assert!(!has_unknown_fields(&body, &raw));
    }
}
