//! The business service's integration tests, in one binary: authorization and the rules of who
//! may do what (consent to group adds included), both APIs (HTTP/JSON with its matrix of codes,
//! gRPC), large groups, media uploads and downloads, and the `im-business` binary itself.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)] // Tests: a panic is how a failure is reported; not every test uses every helper.

mod authorization;
mod binary;
mod common;
mod consent;
mod grpc_api;
mod http_api;
mod http_matrix;
mod large_group;
mod media;
mod rules;
mod scanning;
