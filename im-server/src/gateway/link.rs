//! The WebSocket of one connection: frames written within a timeout (a peer that stopped
//! reading holds nothing for long), frames read and decoded, and the protocol's way of ending
//! a connection: an `Error` or a `GoAway` saying why, then a close frame whose code and reason
//! follow from it (docs/PROTOCOL.md, "Closing").

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use im_proto::{
    FrameCodec, FrameError,
    v1::{ClientFrame, Error, ErrorCode, GoAway, server_frame},
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message as WsMessage,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

use super::close_code;
use crate::wire::{error_frame, frame};

/// What reading one WebSocket message gave.
pub(super) enum Read {
    /// A decoded frame, with its bytes.
    Frame(Box<ClientFrame>, Bytes),
    /// A control frame, or an unknown variant already answered.
    Ignored,
    /// The connection is over (closed by either side, or closed here after an error).
    Closed,
}

/// The WebSocket of one connection.
pub(super) struct Link<S> {
    pub(super) ws: WebSocketStream<S>,
    /// A write that cannot finish in this long (a peer that stopped reading) ends the
    /// connection, so no task waits forever on a dead peer.
    pub(super) write_timeout: Duration,
}

/// The error a write or read that took too long ends with.
pub(super) fn timed_out() -> tungstenite::Error {
    tungstenite::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the peer took too long",
    ))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    /// Writes a frame now.
    pub(super) async fn send(&mut self, frame: Bytes) -> Result<(), tungstenite::Error> {
        self.send_message(WsMessage::Binary(frame)).await
    }

    /// Writes a WebSocket message now.
    pub(super) async fn send_message(
        &mut self,
        message: WsMessage,
    ) -> Result<(), tungstenite::Error> {
        tokio::time::timeout(self.write_timeout, self.ws.send(message))
            .await
            .map_err(|_| timed_out())?
    }

    /// Buffers a frame; it reaches the socket once the buffer fills or at the next flush.
    pub(super) async fn feed(&mut self, frame: Bytes) -> Result<(), tungstenite::Error> {
        tokio::time::timeout(self.write_timeout, self.ws.feed(WsMessage::Binary(frame)))
            .await
            .map_err(|_| timed_out())?
    }

    /// Writes what was fed.
    pub(super) async fn flush(&mut self) -> Result<(), tungstenite::Error> {
        tokio::time::timeout(self.write_timeout, self.ws.flush())
            .await
            .map_err(|_| timed_out())?
    }

    /// After the peer's close: the library queued the answering close (RFC 6455, 5.5.1);
    /// write it before the connection is dropped, within the write timeout.
    pub(super) async fn answer_close(&mut self) {
        let _ = self.flush().await;
    }

    /// Sends `error`, then closes with the matching close code and the error's name.
    pub(super) async fn close_with_error(
        &mut self,
        request_id: u64,
        error: Error,
    ) -> Result<(), tungstenite::Error> {
        let code = error.code();
        self.send(error_frame(request_id, error)).await?;
        self.close(code).await
    }

    /// Sends a GoAway, then closes.
    pub(super) async fn go_away(
        &mut self,
        code: ErrorCode,
        reconnect_after_ms: u64,
    ) -> Result<(), tungstenite::Error> {
        let go_away = GoAway {
            code: code as i32,
            message: code.name().to_owned(),
            reconnect_after_ms,
        };
        self.send(frame(0, server_frame::Body::GoAway(go_away)))
            .await?;
        self.close(code).await
    }

    async fn close(&mut self, code: ErrorCode) -> Result<(), tungstenite::Error> {
        let close = CloseFrame {
            code: CloseCode::from(close_code(code)),
            reason: code.name().into(),
        };
        tokio::time::timeout(self.write_timeout, self.ws.close(Some(close)))
            .await
            .map_err(|_| timed_out())??;
        // Let the peer answer the close, briefly; a peer that does not is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
        Ok(())
    }

    /// Decodes a WebSocket message; answers and closes where the protocol says so.
    pub(super) async fn read_frame(
        &mut self,
        message: Result<WsMessage, tungstenite::Error>,
        codec: &FrameCodec,
        authenticated: bool,
    ) -> Result<Read, tungstenite::Error> {
        let bytes = match message {
            Ok(WsMessage::Binary(bytes)) => bytes,
            Ok(WsMessage::Text(_)) => {
                let error = Error::new(ErrorCode::MalformedFrame, "text messages are not frames");
                self.close_with_error(0, error).await?;
                return Ok(Read::Closed);
            }
            Ok(WsMessage::Close(_)) => {
                self.answer_close().await;
                return Ok(Read::Closed);
            }
            Ok(_) => return Ok(Read::Ignored),
            Err(tungstenite::Error::Capacity(_)) => {
                let limit = codec.max_frame_bytes();
                let error = FrameError::TooLarge {
                    size: limit + 1,
                    limit,
                }
                .to_error();
                self.close_with_error(0, error).await?;
                return Ok(Read::Closed);
            }
            Err(error) => return Err(error),
        };
        match codec.decode_client(&bytes) {
            Ok(frame) => Ok(Read::Frame(Box::new(frame), bytes)),
            Err(error @ FrameError::UnknownBody { .. }) if authenticated => {
                // After the Welcome the connection lives on.
                self.send(error_frame(error.request_id(), error.to_error()))
                    .await?;
                Ok(Read::Ignored)
            }
            Err(error) => {
                self.close_with_error(error.request_id(), error.to_error())
                    .await?;
                Ok(Read::Closed)
            }
        }
    }
}
