//! The socket of one connection: opening it (TCP, the WebSocket upgrade offering the protocol
//! versions this SDK speaks, the Hello and the server's Welcome) and the frames to and from it.
//!
//! A [`Link`] lives as long as its connection: the frame size limit it encodes against is the
//! one the server announced in this connection's Welcome. What the frames mean is the
//! connection task's business; here they are only encoded, bounded in time, and decoded.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use im_proto::{
    ErrorCode, FrameCodec,
    v1::{ClientFrame, Hello, ServerFrame, Welcome, client_frame, server_frame},
    version::{BARE_SUBPROTOCOL, SUPPORTED_VERSIONS, subprotocol},
};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, Message as WsMessage, client::IntoClientRequest, http::HeaderValue},
};

use super::builder::Endpoint;
use crate::error::{Error, Result};

/// How long one write to the server may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The request id of the Hello; the connection's other requests follow it.
const HELLO_REQUEST_ID: u64 = 1;

/// An authenticated connection to a gateway.
pub(super) struct Link {
    ws: WebSocketStream<TcpStream>,
    /// Encodes against the server's announced frame size limit.
    codec: FrameCodec,
}

impl Link {
    /// Connects to `endpoint` and sends `hello` (its request id is set here); the link and the
    /// server's Welcome, or the server's refusal.
    pub(super) async fn open(endpoint: &Endpoint, hello: Hello) -> Result<(Self, Welcome)> {
        let unavailable =
            |e: &dyn std::fmt::Display| Error::new(ErrorCode::Unavailable, e.to_string());
        let tcp = TcpStream::connect(&endpoint.host_port)
            .await
            .map_err(|e| unavailable(&e))?;
        let _ = tcp.set_nodelay(true);
        let mut request = endpoint
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| unavailable(&e))?;
        let mut offered: Vec<String> = SUPPORTED_VERSIONS.iter().map(|v| subprotocol(*v)).collect();
        offered.push(BARE_SUBPROTOCOL.to_owned());
        let offered = HeaderValue::from_str(&offered.join(", ")).map_err(|e| unavailable(&e))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offered);
        let (mut ws, _) = tokio_tungstenite::client_async(request, tcp)
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(response) if response.status() == 400 => Error::new(
                    ErrorCode::UnsupportedVersion,
                    "no protocol version in common",
                ),
                other => unavailable(&other),
            })?;
        let hello = ClientFrame {
            request_id: HELLO_REQUEST_ID,
            body: Some(client_frame::Body::Hello(hello)),
        };
        ws.send(WsMessage::Binary(hello.encode_to_vec().into()))
            .await
            .map_err(|e| unavailable(&e))?;
        loop {
            let frame = match ws.next().await {
                Some(Ok(WsMessage::Binary(bytes))) => ServerFrame::decode(bytes)
                    .map_err(|e| Error::new(ErrorCode::MalformedFrame, e.to_string()))?,
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(unavailable(&e)),
                None => {
                    return Err(Error::new(
                        ErrorCode::Unavailable,
                        "closed during the Hello",
                    ));
                }
            };
            match frame.body {
                Some(server_frame::Body::Welcome(welcome)) => {
                    let limit = welcome.limits.as_ref().map_or(0, |l| l.max_frame_bytes);
                    let codec = FrameCodec::announced(limit);
                    return Ok((Self { ws, codec }, welcome));
                }
                Some(server_frame::Body::Error(error)) => return Err(error.into()),
                _ => continue,
            }
        }
    }

    /// Writes a frame (request id 0: one with no answer). A frame too large for the server is
    /// FRAME_TOO_LARGE and nothing is written; a server that stops reading is UNAVAILABLE after
    /// [`WRITE_TIMEOUT`], so that it cannot hold the task (and the app) forever.
    pub(super) async fn write(&mut self, request_id: u64, body: client_frame::Body) -> Result<()> {
        let frame = ClientFrame {
            request_id,
            body: Some(body),
        };
        let bytes = self
            .codec
            .encode(&frame)
            .map_err(|e| Error::from(e.to_error()))?;
        tokio::time::timeout(WRITE_TIMEOUT, self.ws.send(WsMessage::Binary(bytes)))
            .await
            .map_err(|_| Error::new(ErrorCode::Unavailable, "the server stopped reading"))?
            .map_err(|e| Error::new(ErrorCode::Unavailable, e.to_string()))
    }

    /// The next frame from the server, or why the connection is gone. Cancel-safe, as it waits
    /// in the session's `select!`: dropped while waiting, it has taken nothing.
    pub(super) async fn read(&mut self) -> std::result::Result<ServerFrame, String> {
        loop {
            match self.ws.next().await {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    return ServerFrame::decode(bytes).map_err(|e| e.to_string());
                }
                Some(Ok(WsMessage::Close(close))) => {
                    let reason = close.map(|c| c.reason.to_string()).unwrap_or_default();
                    return Err(format!("closed by the server: {reason}"));
                }
                // Text, pings and pongs carry nothing for the client.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("connection lost".into()),
            }
        }
    }

    /// Closes the connection, waiting for the server at most [`WRITE_TIMEOUT`].
    pub(super) async fn close(&mut self) {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, self.ws.close(None)).await;
    }
}
