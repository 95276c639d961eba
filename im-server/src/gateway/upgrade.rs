//! The WebSocket upgrade: the path, the subprotocol chosen from the client's offer
//! (docs/PROTOCOL.md, "Version names and negotiation"), and the socket's buffers and limits.

use im_proto::version::{BARE_SUBPROTOCOL, SUPPORTED_VERSIONS, negotiate_subprotocol, subprotocol};
use tokio_tungstenite::tungstenite::{
    handshake::server::{ErrorResponse, Request, Response},
    http::{HeaderValue, StatusCode},
    protocol::WebSocketConfig,
};

use super::{Limits, WS_PATH};

/// The write buffer pushes are gathered in before a flush; an idle connection never allocates
/// it, a busy one keeps up to this much (plus a frame) after its first burst.
pub(super) const PUSH_WRITE_BUFFER: usize = 8 * 1024;

impl Limits {
    /// The socket's read buffer, write buffer and frame limit.
    pub(super) fn ws_config(&self) -> WebSocketConfig {
        let max = self.max_frame_bytes as usize + 1;
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_bytes)
            // Single frames are written at once (send = feed + flush); pushes queued together
            // are fed into this buffer and written with one flush, one system call for many.
            .write_buffer_size(PUSH_WRITE_BUFFER)
            .max_write_buffer_size(PUSH_WRITE_BUFFER + 4 * max)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }
}

/// Chooses the subprotocol of an upgrade; `negotiated` is the version chosen, if any (the bare
/// `im` subprotocol completes the upgrade with none, so the Hello can be refused with a typed
/// error).
#[allow(clippy::result_large_err)] // The error type is tungstenite's callback contract.
pub(super) fn upgrade(
    request: &Request,
    mut response: Response,
    negotiated: &mut Option<u32>,
) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, body: String| {
        let mut refusal = ErrorResponse::new(Some(body));
        *refusal.status_mut() = status;
        refusal
    };
    if request.uri().path() != WS_PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("upgrade at {WS_PATH}"),
        ));
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let selected = match negotiate_subprotocol(offered.iter().copied(), SUPPORTED_VERSIONS) {
        Some(version) => {
            *negotiated = Some(version);
            subprotocol(version)
        }
        None if offered.contains(&BARE_SUBPROTOCOL) => BARE_SUBPROTOCOL.to_owned(),
        None => {
            let supported: Vec<String> = SUPPORTED_VERSIONS.iter().map(u32::to_string).collect();
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("UNSUPPORTED_VERSION supported={}", supported.join(",")),
            ));
        }
    };
    if let Ok(value) = HeaderValue::from_str(&selected) {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", value);
    }
    Ok(response)
}
