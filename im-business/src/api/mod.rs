//! The business APIs for app backends: HTTP/JSON ([`http`]) and gRPC ([`grpc`]), both
//! authenticated with the app secret, both answering with the protocol's error codes.

pub mod grpc;
pub mod http;
