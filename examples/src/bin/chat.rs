//! A terminal chat. In two terminals:
//!
//! ```sh
//! cargo run -p im-examples --bin chat -- "$(cargo run -q --bin im-server -- token alice --device chat)" bob
//! cargo run -p im-examples --bin chat -- "$(cargo run -q --bin im-server -- token bob --device chat)" alice
//! ```
//!
//! Type a line and press Enter to send it; what the other side writes appears as it arrives.

use std::sync::Arc;

use im_sdk_rust::{ClientBuilder, StaticToken, direct_conversation_id, proto::v1::Platform};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> im_sdk_rust::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(token), Some(peer)) = (args.next(), args.next()) else {
        eprintln!("usage: chat <token> <peer user id>");
        std::process::exit(2);
    };
    let url = std::env::var("IM_URL").unwrap_or_else(|_| "ws://127.0.0.1:7100/ws".into());
    let client = Arc::new(
        ClientBuilder::new(url, "chat", Arc::new(StaticToken(token)))
            .platform(Platform::Desktop)
            .build()?,
    );
    let mut events = client.events().expect("the event stream");
    let me = client.wait_connected().await?;
    let conversation = direct_conversation_id(&me, &peer)?;
    println!("{me} chatting with {peer} in {conversation}; type and press Enter");

    let shown = conversation.clone();
    let printer = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Some(line) = im_examples::show(&event, &me, &shown) {
                println!("{line}");
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        if let Err(error) = client.send_text(&conversation, &line).await {
            eprintln!("not sent: {error}");
        }
    }
    client.close().await;
    printer.abort();
    Ok(())
}
