//! The gateway's WebSocket layer as an echo server on loopback, for WebSocket compliance
//! suites (`testing/autobahn/run`). Prints `listening ws://ADDR` once it accepts.
//!
//!   cargo run -p im-server --example websocket_echo [127.0.0.1:PORT]

use im_server::gateway::{Limits, echo};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&address).await?;
    println!("listening ws://{}", listener.local_addr()?);
    // The gateway's defaults: what a client of a default server meets.
    let limits = Limits::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let limits = limits.clone();
        tokio::spawn(async move {
            if let Err(error) = echo(stream, &limits).await {
                eprintln!("connection ended with an error: {error}");
            }
        });
    }
}
