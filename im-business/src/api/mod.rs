//! The business APIs for app backends: HTTP/JSON ([`http`]) and gRPC ([`grpc`]), both
//! authenticated with the app secret, both answering with the protocol's error codes. What
//! both read alike from a request is converted in one place (`convert`).

mod convert;
pub mod grpc;
pub mod http;
