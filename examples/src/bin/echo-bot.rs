//! An echo bot: `cargo run -p im-examples --bin echo-bot -- "$(cargo run -q --bin im-server -- token echo --device bot)"`,
//! then send it a 1:1 message (as in `chat`, with `echo` as the peer).

use std::sync::Arc;

use im_sdk_rust::{ClientBuilder, StaticToken, proto::v1::Platform};

#[tokio::main]
async fn main() -> im_sdk_rust::Result<()> {
    let token = std::env::args().nth(1).expect("usage: echo-bot <token>");
    let url = std::env::var("IM_URL").unwrap_or_else(|_| "ws://127.0.0.1:7100/ws".into());
    let client = ClientBuilder::new(url, "bot", Arc::new(StaticToken(token)))
        .platform(Platform::Bot)
        .build()?;
    let events = client.events().expect("the event stream");
    println!("echo bot running; Ctrl-C stops it");
    im_examples::echo_bot(&client, events).await?;
    Ok(())
}
