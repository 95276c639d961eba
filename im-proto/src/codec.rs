//! One frame per WebSocket binary message: decoding with a size limit and typed errors, and
//! encoding under a size limit.
//!
//! Each direction has its own limit: a peer decodes under the limit it announced and encodes
//! under the limit the other side announced (`Hello.max_frame_bytes`, `ServerLimits.max_frame_bytes`),
//! so it keeps two codecs, e.g. `FrameCodec::announced(hello.max_frame_bytes)` for sending.

use bytes::Bytes;
use prost::Message;

use crate::{
    v1::{ClientFrame, Error, ErrorCode, ServerFrame},
    version::DEFAULT_MAX_FRAME_BYTES,
};

/// Why bytes are not an acceptable frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is larger than the limit. Checked before any decoding.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not protobuf of the frame type, or the frame carries no body at all.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame is well formed but its body is a variant this receiver does not know: a newer
    /// peer's frame. The request id is kept so the answer can be correlated.
    #[error("frame body is of a variant this receiver does not know (request {request_id})")]
    UnknownBody {
        /// The frame's request id.
        request_id: u64,
    },
}

impl FrameError {
    /// The protocol error code a receiver answers with.
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::Malformed(_) => ErrorCode::MalformedFrame,
            Self::UnknownBody { .. } => ErrorCode::UnsupportedFrame,
        }
    }

    /// The request id an answer should carry: known only for [`FrameError::UnknownBody`].
    pub const fn request_id(&self) -> u64 {
        match self {
            Self::UnknownBody { request_id } => *request_id,
            _ => 0,
        }
    }

    /// The `Error` body to send back.
    pub fn to_error(&self) -> Error {
        let mut error = Error::new(self.code(), self.to_string());
        if let Self::TooLarge { limit, .. } = self {
            error.limit = *limit as u64;
        }
        error
    }
}

/// Frames whose body is a `oneof`: the codec checks the body is present and known.
pub trait Frame: Message + Default {
    /// The frame's request id.
    fn request_id(&self) -> u64;
    /// Whether the body is set (to a variant this build knows).
    fn has_body(&self) -> bool;
}

impl Frame for ClientFrame {
    fn request_id(&self) -> u64 {
        self.request_id
    }
    fn has_body(&self) -> bool {
        self.body.is_some()
    }
}

impl Frame for ServerFrame {
    fn request_id(&self) -> u64 {
        self.request_id
    }
    fn has_body(&self) -> bool {
        self.body.is_some()
    }
}

/// Decodes and encodes frames under a size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_bytes: usize,
}

impl Default for FrameCodec {
    /// A codec with the protocol's default limit of 1 MiB.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    /// A codec that rejects frames larger than `max_frame_bytes`.
    pub const fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    /// A codec for the limit a peer announced, where 0 means the protocol default (1 MiB).
    pub const fn announced(max_frame_bytes: u32) -> Self {
        match max_frame_bytes {
            0 => Self::new(DEFAULT_MAX_FRAME_BYTES),
            n => Self::new(n as usize),
        }
    }

    /// The limit.
    pub const fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Decodes a frame from a client.
    pub fn decode_client(&self, bytes: &[u8]) -> Result<ClientFrame, FrameError> {
        self.decode(bytes)
    }

    /// Decodes a frame from a server.
    pub fn decode_server(&self, bytes: &[u8]) -> Result<ServerFrame, FrameError> {
        self.decode(bytes)
    }

    /// Decodes any frame type.
    pub fn decode<F: Frame>(&self, bytes: &[u8]) -> Result<F, FrameError> {
        self.check_size(bytes.len())?;
        let frame = F::decode(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if frame.has_body() {
            return Ok(frame);
        }
        // prost skips unknown fields, so a newer variant decodes as "no body". Re-encoding
        // tells the two apart: if the input was longer, it carried fields we do not know.
        if frame.encoded_len() < bytes.len() {
            Err(FrameError::UnknownBody {
                request_id: frame.request_id(),
            })
        } else {
            Err(FrameError::Malformed("frame has no body".into()))
        }
    }

    /// Encodes a frame, refusing one larger than the limit.
    pub fn encode<F: Message>(&self, frame: &F) -> Result<Bytes, FrameError> {
        self.check_size(frame.encoded_len())?;
        Ok(Bytes::from(frame.encode_to_vec()))
    }

    fn check_size(&self, size: usize) -> Result<(), FrameError> {
        if size > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                size,
                limit: self.max_frame_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Ping, SendRequest, client_frame::Body};

    fn ping(request_id: u64) -> ClientFrame {
        ClientFrame {
            request_id,
            body: Some(Body::Ping(Ping { client_time_ms: 42 })),
        }
    }

    #[test]
    fn round_trip() {
        let codec = FrameCodec::default();
        let bytes = codec.encode(&ping(3)).unwrap();
        assert_eq!(codec.decode_client(&bytes).unwrap(), ping(3));
    }

    #[test]
    fn size_limit_applies_both_ways_and_at_the_exact_boundary() {
        let frame = ClientFrame {
            request_id: 1,
            body: Some(Body::Send(SendRequest {
                client_msg_id: "x".repeat(100),
                ..Default::default()
            })),
        };
        let size = frame.encoded_len();
        let exact = FrameCodec::new(size);
        let bytes = exact.encode(&frame).unwrap();
        assert_eq!(exact.decode_client(&bytes).unwrap(), frame);

        let small = FrameCodec::new(size - 1);
        let too_large = FrameError::TooLarge {
            size,
            limit: size - 1,
        };
        assert_eq!(small.encode(&frame), Err(too_large.clone()));
        assert_eq!(small.decode_client(&bytes), Err(too_large.clone()));
        assert_eq!(too_large.code(), ErrorCode::FrameTooLarge);
        assert_eq!(too_large.to_error().limit, (size - 1) as u64);
    }

    #[test]
    fn an_announced_zero_means_the_default_limit() {
        assert_eq!(FrameCodec::announced(0), FrameCodec::default());
        assert_eq!(FrameCodec::announced(4096).max_frame_bytes(), 4096);
    }

    #[test]
    fn truncated_bytes_are_malformed() {
        let codec = FrameCodec::default();
        let bytes = codec.encode(&ping(300)).unwrap();
        let err = codec.decode_client(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::MalformedFrame);
        assert_eq!(err.request_id(), 0);
    }

    #[test]
    fn a_frame_without_body_is_malformed() {
        let codec = FrameCodec::default();
        let err = codec.decode_client(&[0x08, 0x05]).unwrap_err(); // request_id 5, nothing else
        assert_eq!(err.code(), ErrorCode::MalformedFrame);
        assert_eq!(
            codec.decode_client(&[]).unwrap_err().code(),
            ErrorCode::MalformedFrame
        );
    }

    #[test]
    fn an_unknown_variant_is_unsupported_and_keeps_the_request_id() {
        // request_id 9, then field 999 (a body variant from the future) holding 0 bytes.
        let bytes = [0x08, 0x09, 0xba, 0x3e, 0x00];
        let err = FrameCodec::default().decode_client(&bytes).unwrap_err();
        assert_eq!(err, FrameError::UnknownBody { request_id: 9 });
        assert_eq!(err.code(), ErrorCode::UnsupportedFrame);
        assert_eq!(err.request_id(), 9);
        assert_eq!(err.to_error().code, ErrorCode::UnsupportedFrame as i32);
    }
}
