//! The frame decoder on any bytes, as the gateway decodes each binary WebSocket message
//! (`FrameCodec::decode_client`) and as a client decodes the server's (`decode_server`): no
//! panic, the size limit decides alone and exactly, a decoded frame re-encodes to bytes that
//! decode to the same frame, and each error is the one docs/PROTOCOL.md ("Unknown request
//! variants") says.
//!
//! Shared by the fuzz target `frame_decode` and by im-proto's `fuzz_regressions` test, which
//! replays every input kept under fuzz/regressions/frame_decode/.

use std::fmt::Debug;

use im_proto::{
    FrameCodec, FrameError,
    codec::Frame,
    reflect,
    v1::{ClientFrame, ServerFrame},
};
use prost::{
    Name,
    encoding::{WireType, decode_key, decode_varint},
};

/// Checks `data` as a client's frame and as a server's.
pub(crate) fn check(data: &[u8]) {
    frame::<ClientFrame>(data, |codec, bytes| codec.decode_client(bytes));
    frame::<ServerFrame>(data, |codec, bytes| codec.decode_server(bytes));
}

type Decode<F> = fn(&FrameCodec, &[u8]) -> Result<F, FrameError>;

fn frame<F: Frame + Name + PartialEq + Debug>(data: &[u8], decode: Decode<F>) {
    let codec = FrameCodec::default();
    let limit = codec.max_frame_bytes();
    let result = decode(&codec, data);
    if data.len() > limit {
        let size = data.len();
        assert_eq!(result, Err(FrameError::TooLarge { size, limit }));
        return;
    }
    // The limit decides nothing but the size: at exactly the frame's size the answer is the
    // same, one byte less and it is too large whatever the bytes.
    assert_eq!(decode(&FrameCodec::new(data.len()), data), result);
    if let Some(limit) = data.len().checked_sub(1) {
        let size = data.len();
        assert_eq!(
            decode(&FrameCodec::new(limit), data),
            Err(FrameError::TooLarge { size, limit })
        );
    }
    let error = match result {
        Ok(frame) => return round_trip(&frame),
        Err(error) => error,
    };
    assert_eq!(error.to_error().code, error.code() as i32);
    let decoded = F::decode(data);
    match error {
        FrameError::UnknownBody { request_id } => {
            let decoded = decoded.expect("an unknown variant is well formed protobuf");
            assert!(!decoded.has_body());
            assert_eq!(request_id, decoded.request_id());
            assert!(
                decoded.encoded_len() < data.len(),
                "it held more than it decoded"
            );
        }
        FrameError::Malformed(_) => {
            if let Ok(decoded) = decoded {
                assert!(!decoded.has_body(), "a frame with a body is not malformed");
                assert!(
                    !declares_less_than(data, &F::full_name()),
                    "a frame without a known body that holds an unknown field is an unknown variant"
                );
            }
        }
        other => panic!("{} bytes within the limit of {limit}: {other}", data.len()),
    }
}

/// A frame that decoded: its canonical encoding is within a limit of its own size and not one
/// byte less, decodes to the same frame, and encodes to itself again.
fn round_trip<F: Frame + PartialEq + Debug>(frame: &F) {
    assert!(frame.has_body(), "a decoded frame has a body");
    let size = frame.encoded_len();
    let bytes = FrameCodec::new(size)
        .encode(frame)
        .expect("a frame fits a limit of its own size");
    assert_eq!(bytes.len(), size);
    let limit = size - 1;
    assert_eq!(
        FrameCodec::new(limit).encode(frame),
        Err(FrameError::TooLarge { size, limit })
    );
    let again: F = FrameCodec::new(size)
        .decode(&bytes)
        .expect("a re-encoded frame decodes");
    assert_eq!(&again, frame);
    assert_eq!(
        again.encode_to_vec(),
        bytes,
        "the encoding is a fixed point"
    );
}

/// Whether the well-formed message `buf` holds a field its type `message` does not declare.
fn declares_less_than(mut buf: &[u8], message: &str) -> bool {
    let declared = reflect::field_numbers(message).expect("a message of the protocol");
    while !buf.is_empty() {
        let Ok((number, wire_type)) = decode_key(&mut buf) else {
            return false;
        };
        if declared.binary_search(&number).is_err() {
            return true;
        }
        let skip = match wire_type {
            WireType::Varint => match decode_varint(&mut buf) {
                Ok(_) => 0,
                Err(_) => return false,
            },
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => match decode_varint(&mut buf) {
                Ok(len) => usize::try_from(len).unwrap_or(usize::MAX),
                Err(_) => return false,
            },
            // A declared field never has a group's wire type in a frame that decoded.
            WireType::StartGroup | WireType::EndGroup => return false,
        };
        match buf.get(skip..) {
            Some(rest) => buf = rest,
            None => return false,
        }
    }
    false
}
