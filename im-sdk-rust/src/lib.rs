//! The client SDK: what app developers embed and the foreign-language bindings wrap.
//!
//! ```no_run
//! use std::sync::Arc;
//! use im_sdk_rust::{ClientBuilder, Event, StaticToken};
//!
//! # async fn run() -> im_sdk_rust::Result<()> {
//! let token = Arc::new(StaticToken("a token from your backend".into()));
//! let client = ClientBuilder::new("ws://127.0.0.1:7100/ws", "laptop", token).build()?;
//! let mut events = client.events().expect("the event stream");
//! client.send_text("d:alice:bob", "hello").await?; // resolves on the server's ack
//! while let Some(event) = events.next().await {
//!     if let Event::Message(message) = event {
//!         println!("{}: {:?}", message.sender_user_id, message.body);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! - [`ClientBuilder`] / [`Client`]: connection with version negotiation, automatic reconnect
//!   with jittered backoff, heartbeats, sends that resolve on the server's ack and survive
//!   reconnects (the outbox), history, read state, typing, presence; groups and membership
//!   through the business API with the user's own token ([`ClientBuilder::business_api`]);
//!   media: [`Client::upload`] straight to the object store, [`Client::send_media`],
//!   [`Client::download`].
//! - [`Event`]: one stream, entries of a conversation in seq order and each once (repeats
//!   dropped, gaps filled by pulling, a sync after every connect), receipts, typing,
//!   presence, connection state.
//! - [`store::LocalStore`]: where the client keeps its state ([`store::MemoryStore`] by
//!   default).
//! - [`Error`]: one error type carrying the protocol's error codes.
//!
//! It depends on `im-proto` for the wire types, never on server code.

mod client;
mod error;
mod groups;
mod media;
pub mod store;
mod types;

pub use client::{
    Client, ClientBuilder, Config, Events, Page, ReadState, Sent, StaticToken, TokenProvider,
};
pub use error::{Error, Result};
pub use groups::{Added, Group, Invitation, Member};
pub use media::{Media, MediaVariant, NewUpload, UploadProgress};

/// The canonical id of the 1:1 conversation of two users (`d:<a>:<b>`, ids in byte order).
pub fn direct_conversation_id(a: &str, b: &str) -> Result<String> {
    let id = |user: &str| {
        im_proto::UserId::new(user)
            .map_err(|e| Error::new(im_proto::ErrorCode::InvalidArgument, e.to_string()))
    };
    Ok(im_proto::ConversationId::direct(id(a)?, id(b)?).to_string())
}
pub use im_proto as proto;
pub use types::{
    Body, ConnectionState, Content, ContentKind, Conversation, EntryState, Event, Message,
};
