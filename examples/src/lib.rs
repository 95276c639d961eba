//! Small programs that use the SDK against the embedded server (`cargo run --bin im-server`).
//! Get a token for a user with `cargo run --bin im-server -- token <user> --device <device>`.
//!
//! - `hello` (`src/bin/hello.rs`, under 30 lines): one message to yourself.
//! - `echo-bot`: answers every 1:1 message with the same text ([`echo_bot`]).
//! - `chat`: a terminal chat with another user; two terminals chat with each other.

pub use im_sdk_rust as sdk;

use im_sdk_rust::{Body, Client, Content, ContentKind, Event, Events, direct_conversation_id};

/// Runs an echo bot on `client` until its events end: every text another user sends it in a
/// 1:1 conversation comes back as `echo: <text>`. Returns how many it answered.
pub async fn echo_bot(client: &Client, mut events: Events) -> im_sdk_rust::Result<usize> {
    let me = client.wait_connected().await?;
    let mut answered = 0;
    while let Some(event) = events.next().await {
        let Event::Message(message) = event else {
            continue;
        };
        if message.sender_user_id == me || !message.conversation_id.starts_with("d:") {
            continue;
        }
        if let Body::Content(Content {
            kind: ContentKind::Text(text),
            ..
        }) = &message.body
        {
            let reply = direct_conversation_id(&me, &message.sender_user_id)?;
            client.send_text(&reply, &format!("echo: {text}")).await?;
            client
                .mark_read(&message.conversation_id, message.seq)
                .await?;
            answered += 1;
        }
    }
    Ok(answered)
}

/// What a chat line shows for an event of `conversation`, if anything.
pub fn show(event: &Event, me: &str, conversation: &str) -> Option<String> {
    match event {
        Event::Message(m) if m.conversation_id == conversation => {
            let who = if m.sender_user_id == me {
                "you"
            } else {
                &m.sender_user_id
            };
            let text = match &m.body {
                Body::Content(c) => c.as_text().unwrap_or("[not text]").to_owned(),
                other => format!("{other:?}"),
            };
            Some(format!("[{}] {who}: {text}", m.seq))
        }
        Event::Typing {
            conversation_id,
            user_id,
            active: true,
        } if conversation_id == conversation => Some(format!("({user_id} is typing)")),
        Event::Connection(state) => Some(format!("({state:?})")),
        _ => None,
    }
}
