//! Wire protocol v1 of the IM platform: types, codec and rules, with no I/O.
//!
//! - [`v1`]: the protobuf types generated from `proto/im/v1/*.proto` (package `im.v1`): the
//!   WebSocket envelope ([`v1::ClientFrame`], [`v1::ServerFrame`]), messaging, the bus payloads,
//!   and, behind the `client` and `server` features, the tonic stubs of the business and admin
//!   gRPC APIs.
//! - [`codec`]: one frame per WebSocket binary message, with a size limit and typed errors.
//! - [`version`]: protocol versions, the WebSocket subprotocol name and version negotiation.
//! - [`error`]: the stable error-code table (name, meaning, retryable).
//! - [`ids`]: user, device, group and conversation ids with one canonical string form.
//! - [`bus`]: the subjects services talk on and the payload each carries.
//! - [`reflect`]: the field numbers each message declares, from the descriptor set.
//!
//! `docs/PROTOCOL.md` is the normative description; `conformance/vectors/` holds golden bytes
//! that every implementation, in any language, must reproduce.
//!
//! ```
//! use im_proto::{codec::FrameCodec, v1};
//!
//! let codec = FrameCodec::default();
//! let ping = v1::ClientFrame {
//!     request_id: 7,
//!     body: Some(v1::client_frame::Body::Ping(v1::Ping { client_time_ms: 1 })),
//! };
//! let bytes = codec.encode(&ping).unwrap();
//! assert_eq!(codec.decode_client(&bytes).unwrap(), ping);
//! ```

pub mod bus;
pub mod codec;
pub mod error;
pub mod ids;
pub mod reflect;
pub mod version;

/// Generated protobuf types of package `im.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/im.v1.rs"));
}

pub use codec::{FrameCodec, FrameError};
pub use error::ErrorInfo;
pub use ids::{ConversationId, ConversationKind, DeviceId, GroupId, IdError, UserId};
pub use v1::ErrorCode;

/// The encoded `google.protobuf.FileDescriptorSet` of every `.proto` file of the protocol, for
/// reflection (gRPC server reflection, JSON transcoding, the golden-vector tests).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/im_v1_descriptor.bin"));
