//! The gateway's WebSocket layer with an echo in place of the protocol: the same socket
//! configuration (buffers, frame and message limits), write timeout and close handling as a
//! client connection, answering each data message with itself. This is what a standard
//! WebSocket compliance suite drives (Autobahn|Testsuite, `testing/autobahn/run`): its cases
//! expect an echo, which the protocol's frames cannot give.

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use super::{Limits, link::Link};

/// Serves one connection as an echo until either side closes it.
pub async fn echo<S>(stream: S, limits: &Limits) -> Result<(), tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let upgrade = tokio_tungstenite::accept_async_with_config(stream, Some(limits.ws_config()));
    let ws = tokio::time::timeout(limits.handshake_timeout, upgrade)
        .await
        .map_err(|_| super::link::timed_out())??;
    let mut link = Link {
        ws,
        write_timeout: limits.write_timeout,
    };
    while let Some(message) = link.ws.next().await {
        match message? {
            message @ (WsMessage::Text(_) | WsMessage::Binary(_)) => {
                link.send_message(message).await?;
            }
            WsMessage::Close(_) => {
                link.answer_close().await;
                break;
            }
            // Pings are answered by the library as it reads; pongs need nothing.
            _ => {}
        }
    }
    Ok(())
}
