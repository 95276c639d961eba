//! A WebSocket proxy between drivers and the server that can drop every connection at once
//! (the `cut` step): reconnects in the middle of sends, without the driver's cooperation.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::{net::TcpListener, sync::watch};
use tokio_tungstenite::tungstenite::{
    client::IntoClientRequest,
    handshake::server::{Request, Response},
    http::HeaderValue,
};

/// The proxy; drivers connect to [`Proxy::url`].
#[derive(Debug)]
pub struct Proxy {
    /// `ws://127.0.0.1:<port>/ws`.
    pub url: String,
    cuts: watch::Sender<u64>,
}

impl Proxy {
    /// A proxy in front of the gateway at `upstream` (`ws://host:port/ws`).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/ws", listener.local_addr()?);
        let (cuts, _) = watch::channel(0u64);
        let upstream: Arc<str> = upstream.into();
        let generation = cuts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(relay(stream, upstream.clone(), generation.subscribe()));
            }
        });
        Ok(Self { url, cuts })
    }

    /// Drops every connection now, without a close frame.
    pub fn cut(&self) {
        self.cuts.send_modify(|g| *g += 1);
    }
}

#[allow(clippy::result_large_err)] // tungstenite's callback contract
fn echo_first_protocol(
    request: &Request,
    mut response: Response,
    offered: &mut Option<HeaderValue>,
) -> Result<Response, tokio_tungstenite::tungstenite::handshake::server::ErrorResponse> {
    *offered = request.headers().get("sec-websocket-protocol").cloned();
    let first = offered
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| HeaderValue::from_str(v.trim()).ok());
    if let Some(first) = first {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", first);
    }
    Ok(response)
}

async fn relay(stream: tokio::net::TcpStream, upstream: Arc<str>, mut cut: watch::Receiver<u64>) {
    let mut offered = None;
    #[allow(clippy::result_large_err)] // tungstenite's callback contract
    let callback = |request: &Request, response: Response| {
        echo_first_protocol(request, response, &mut offered)
    };
    let Ok(client) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let Ok(mut request) = upstream.as_ref().into_client_request() else {
        return;
    };
    if let Some(offered) = offered {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offered);
    }
    let Some(authority) = request.uri().authority().map(|a| a.to_string()) else {
        return;
    };
    let Ok(tcp) = tokio::net::TcpStream::connect(authority).await else {
        return; // the server is down: the client sees its connection end
    };
    let Ok((server, _)) = tokio_tungstenite::client_async(request, tcp).await else {
        return;
    };
    let (mut client_tx, mut client_rx) = client.split();
    let (mut server_tx, mut server_rx) = server.split();
    loop {
        tokio::select! {
            _ = cut.changed() => return,
            message = client_rx.next() => {
                let Some(Ok(message)) = message else { return };
                if server_tx.send(message).await.is_err() {
                    return;
                }
            }
            message = server_rx.next() => {
                let Some(Ok(message)) = message else { return };
                if client_tx.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
}
