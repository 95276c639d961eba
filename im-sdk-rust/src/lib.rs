//! The client SDK.
//!
//! This crate will hold what app developers embed and the mobile bindings wrap: a client
//! builder, connection with version negotiation, automatic reconnect, heartbeats, sends that
//! resolve on the server's ack and survive reconnects, a typed event stream in sequence order
//! with duplicates dropped and gaps filled, history, read state, typing, presence and a local
//! store. It depends on `im-proto` alone.

pub use im_proto as proto;
