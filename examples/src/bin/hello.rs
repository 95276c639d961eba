//! Hello, world: one message to yourself, and the event that shows it arrived.
//!
//! `cargo run -p im-examples --bin hello -- "$(cargo run -q --bin im-server -- token alice --device hello)"`
use std::sync::Arc;

use im_sdk_rust::{ClientBuilder, Event, StaticToken};

#[tokio::main]
async fn main() -> im_sdk_rust::Result<()> {
    let token = std::env::args().nth(1).expect("usage: hello <token>");
    let url = std::env::var("IM_URL").unwrap_or_else(|_| "ws://127.0.0.1:7100/ws".into());
    let client = ClientBuilder::new(url, "hello", Arc::new(StaticToken(token))).build()?;
    let mut events = client.events().expect("the event stream");
    let me = client.wait_connected().await?;
    let notes = im_sdk_rust::direct_conversation_id(&me, &me)?;
    let sent = client.send_text(&notes, "hello, world").await?;
    println!("{me} sent #{} to {notes}", sent.seq);
    while let Some(event) = events.next().await {
        if let Event::Message(message) = event {
            println!("#{}: {:?}", message.seq, message.body);
            break;
        }
    }
    client.close().await;
    Ok(())
}
