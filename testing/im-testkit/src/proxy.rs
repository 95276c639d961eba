//! A WebSocket proxy between clients and a gateway: it can drop every connection at once,
//! without a close frame (as a network that fails does), drop chosen server frames (a push lost
//! on the way, to make a client see a gap), send frames of its own to every client (a push the
//! server could send), and send new connections to another gateway.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use futures::{SinkExt, StreamExt};
use im_proto::v1::ServerFrame;
use prost::Message as _;
use tokio::{
    net::TcpListener,
    sync::{broadcast, watch},
};
use tokio_tungstenite::tungstenite::{
    Message as WsMessage,
    client::IntoClientRequest,
    handshake::server::{ErrorResponse, Request, Response},
    http::HeaderValue,
};

/// Which server-to-client frames the proxy drops.
pub type Filter = Arc<dyn Fn(&ServerFrame) -> bool + Send + Sync>;

/// The gateway URL of an address: `ws://<addr>/ws`.
pub fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

/// The proxy; clients connect to [`Proxy::url`].
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `ws://<addr>/ws`.
    pub url: String,
    upstream: Arc<Mutex<String>>,
    cuts: watch::Sender<u64>,
    drop_frame: Arc<Mutex<Option<Filter>>>,
    inject: broadcast::Sender<bytes::Bytes>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("url", &self.url).finish()
    }
}

impl Proxy {
    /// A proxy in front of the gateway at `upstream` (`ws://host:port/ws`).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(Mutex::new(upstream.to_owned()));
        let (cuts, _) = watch::channel(0u64);
        let drop_frame: Arc<Mutex<Option<Filter>>> = Arc::default();
        let (inject, _) = broadcast::channel(16);
        let (to, generation, filter) = (upstream.clone(), cuts.clone(), drop_frame.clone());
        let injected = inject.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let target = lock(&to).clone();
                let cut = generation.subscribe();
                let frames = injected.subscribe();
                tokio::spawn(relay(stream, target, cut, filter.clone(), frames));
            }
        });
        Ok(Self {
            addr,
            url: ws_url(addr),
            upstream,
            cuts,
            drop_frame,
            inject,
        })
    }

    /// Later connections go to the gateway at `upstream`.
    pub fn point_to(&self, upstream: &str) {
        *lock(&self.upstream) = upstream.to_owned();
    }

    /// Drops every connection now, without a close frame.
    pub fn cut(&self) {
        self.cuts.send_modify(|g| *g += 1);
    }

    /// From now on, server frames for which `filter` is true are dropped.
    pub fn drop_frames(&self, filter: Filter) {
        *lock(&self.drop_frame) = Some(filter);
    }

    /// Sends `frame` to every client connected now, as if the server had.
    pub fn inject(&self, frame: &ServerFrame) {
        let _ = self.inject.send(frame.encode_to_vec().into());
    }

    /// Server frames pass again.
    pub fn pass_frames(&self) {
        *lock(&self.drop_frame) = None;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Accepts the client's upgrade with the first subprotocol it offers (the gateway chooses
/// among the same offer), and keeps the offer for the gateway.
#[allow(clippy::result_large_err)] // tungstenite's callback contract
fn echo_first_protocol(
    request: &Request,
    mut response: Response,
    offered: &mut Option<HeaderValue>,
) -> Result<Response, ErrorResponse> {
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

async fn relay(
    stream: tokio::net::TcpStream,
    upstream: String,
    mut cut: watch::Receiver<u64>,
    filter: Arc<Mutex<Option<Filter>>>,
    mut injected: broadcast::Receiver<bytes::Bytes>,
) {
    let mut offered = None;
    #[allow(clippy::result_large_err)] // tungstenite's callback contract
    let callback = |request: &Request, response: Response| {
        echo_first_protocol(request, response, &mut offered)
    };
    let Ok(client) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let Ok(mut request) = upstream.as_str().into_client_request() else {
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
        return; // the gateway is down: the client sees its connection end
    };
    let Ok((server, _)) = tokio_tungstenite::client_async(request, tcp).await else {
        return;
    };
    let (mut client_tx, mut client_rx) = client.split();
    let (mut server_tx, mut server_rx) = server.split();
    loop {
        tokio::select! {
            _ = cut.changed() => return,
            frame = injected.recv() => {
                let Ok(frame) = frame else { return };
                if client_tx.send(WsMessage::Binary(frame)).await.is_err() {
                    return;
                }
            }
            message = client_rx.next() => {
                let Some(Ok(message)) = message else { return };
                if server_tx.send(message).await.is_err() {
                    return;
                }
            }
            message = server_rx.next() => {
                let Some(Ok(message)) = message else { return };
                if let WsMessage::Binary(bytes) = &message {
                    let dropped = match (lock(&filter).as_ref(), ServerFrame::decode(bytes.clone())) {
                        (Some(drop), Ok(frame)) => drop(&frame),
                        _ => false,
                    };
                    if dropped {
                        continue;
                    }
                }
                if client_tx.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
}
