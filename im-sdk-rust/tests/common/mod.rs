//! An embedded server for SDK tests (the business and core services on one in-process bus,
//! their SQLite files in a directory that outlives restarts), and a WebSocket proxy between
//! clients and server that can cut every connection or drop chosen frames.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::result_large_err
)]

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{SinkExt, StreamExt};
use im_business::{
    Actor, Business, BusinessConfig, NewGroup, responder::serve_bus_requests, store::SqliteStore,
};
use im_common::{
    auth::{TokenIssuer, TokenVerifier},
    bus::{Bus, LocalBus},
};
use im_proto::v1::ServerFrame;
use im_sdk_rust::{Client, ClientBuilder, Config, Event, StaticToken};
use im_server::{
    server::{RunningCore, start},
    settings::CoreSettings,
};
use prost::Message as _;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tokio_tungstenite::tungstenite::{
    Message as WsMessage,
    client::IntoClientRequest,
    handshake::server::{Request, Response},
    http::HeaderValue,
};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "an-sdk-test-token-secret-of-32-bytes-or-more";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The whole system on a data directory.
pub struct Server {
    pub addr: SocketAddr,
    /// The business HTTP API (users may call it with their own tokens).
    pub http_addr: SocketAddr,
    pub business: Arc<Business>,
    shutdown: CancellationToken,
    core: Option<RunningCore>,
    _responders: JoinSet<()>,
}

impl Server {
    pub async fn start(dir: &Path) -> Server {
        Self::start_with(dir, |_| {}).await
    }

    /// Starts with core settings `tune` adjusts.
    pub async fn start_with(dir: &Path, tune: impl FnOnce(&mut CoreSettings)) -> Server {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::default());
        let store = SqliteStore::open(&dir.join("business.db"), 2)
            .await
            .unwrap();
        let business = Arc::new(
            Business::new(
                Arc::new(store),
                bus.clone(),
                TokenIssuer::new(SECRET.as_bytes()),
                BusinessConfig::default(),
                "business-test",
            )
            .await
            .unwrap(),
        );
        let responders = serve_bus_requests(business.clone(), bus.clone())
            .await
            .unwrap();
        let users = Arc::new(TokenVerifier::new(SECRET.as_bytes(), None).unwrap());
        users.clone().follow(bus.as_ref()).await.unwrap();
        let api = im_business::api::http::ApiState::new(
            business.clone(),
            b"app secret",
            Arc::new(std::sync::atomic::AtomicBool::new(true)),
        )
        .with_user_tokens(users);
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(http, im_business::api::http::router(api)).await });
        let mut settings = CoreSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            database: dir.join("messages.db").display().to_string(),
            token_secret: SECRET.into(),
            messages_per_second: 10_000,
            frames_per_second: 10_000,
            drain_timeout_ms: 2_000,
            reconnect_after_ms: 50,
            ..CoreSettings::default()
        };
        tune(&mut settings);
        let shutdown = CancellationToken::new();
        let verifier = Arc::new(TokenVerifier::new(SECRET.as_bytes(), None).unwrap());
        let core = start(&settings, bus, verifier, shutdown.clone())
            .await
            .unwrap();
        Server {
            addr: core.addr,
            http_addr,
            business,
            shutdown,
            core: Some(core),
            _responders: responders,
        }
    }

    pub async fn users(&self, ids: &[&str]) {
        for id in ids {
            self.business
                .upsert_user(&Actor::App, id, id, "", "{}")
                .await
                .unwrap();
        }
    }

    pub async fn group(&self, id: &str, owner: &str, members: &[&str]) {
        self.business
            .create_group(
                &Actor::App,
                NewGroup {
                    group_id: id.into(),
                    name: id.into(),
                    owner_user_id: owner.into(),
                    member_user_ids: members.iter().map(|m| m.to_string()).collect(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    /// Stops gracefully: connections get SHUTTING_DOWN, sends in flight are answered.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(core) = self.core.take() {
            core.stopped().await;
        }
    }
}

pub fn token(user: &str, device: &str) -> String {
    TokenIssuer::new(SECRET.as_bytes())
        .issue(user, device, now_ms(), 3_600_000)
        .unwrap()
}

/// A client of `addr` with quick reconnects.
pub fn client(addr: SocketAddr, user: &str, device: &str) -> Client {
    let config = Config {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(300),
        ack_delay: Duration::from_millis(20),
        ..Config::default()
    };
    ClientBuilder::new(
        format!("ws://{addr}/ws"),
        device,
        Arc::new(StaticToken(token(user, device))),
    )
    .config(config)
    .build()
    .unwrap()
}

/// Which server-to-client frames the proxy drops.
pub type Filter = Arc<dyn Fn(&ServerFrame) -> bool + Send + Sync>;

/// A WebSocket proxy: clients connect to `addr`, it connects to the current upstream.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    generation: watch::Sender<u64>,
    drop_frame: Arc<Mutex<Option<Filter>>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let (generation, _) = watch::channel(0u64);
        let drop_frame: Arc<Mutex<Option<Filter>>> = Arc::default();
        let (up, cuts, filter) = (upstream.clone(), generation.clone(), drop_frame.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let target = *up.lock().unwrap();
                let cut = cuts.subscribe();
                let filter = filter.clone();
                tokio::spawn(relay(stream, target, cut, filter));
            }
        });
        Proxy {
            addr,
            upstream,
            generation,
            drop_frame,
        }
    }

    /// Later connections go to `upstream`.
    pub fn point_to(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }

    /// Drops every connection at once, without a close frame.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Server frames for which `filter` is true are dropped.
    pub fn drop_frames(&self, filter: Filter) {
        *self.drop_frame.lock().unwrap() = Some(filter);
    }
}

async fn relay(
    stream: tokio::net::TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<u64>,
    filter: Arc<Mutex<Option<Filter>>>,
) {
    let mut offered = None;
    let callback = |request: &Request, mut response: Response| {
        offered = request.headers().get("sec-websocket-protocol").cloned();
        if let Some(first) = offered
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(first.trim()).unwrap(),
            );
        }
        Ok(response)
    };
    let Ok(client) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let mut request = format!("ws://{target}/ws").into_client_request().unwrap();
    if let Some(offered) = offered {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offered);
    }
    let Ok(upstream) = tokio::net::TcpStream::connect(target).await else {
        return; // the server is down: the client sees the connection end
    };
    let Ok((server, _)) = tokio_tungstenite::client_async(request, upstream).await else {
        return;
    };
    let (mut client_tx, mut client_rx) = client.split();
    let (mut server_tx, mut server_rx) = server.split();
    loop {
        tokio::select! {
            _ = cut.changed() => return,
            message = client_rx.next() => match message {
                Some(Ok(message)) => if server_tx.send(message).await.is_err() { return },
                _ => return,
            },
            message = server_rx.next() => match message {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    let dropped = {
                        let filter = filter.lock().unwrap();
                        match (filter.as_ref(), ServerFrame::decode(bytes.clone())) {
                            (Some(f), Ok(frame)) => f(&frame),
                            _ => false,
                        }
                    };
                    if !dropped && client_tx.send(WsMessage::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(message)) => if client_tx.send(message).await.is_err() { return },
                _ => return,
            },
        }
    }
}

/// Collects events until `done` says the collection is complete (or panics after a while).
pub async fn collect_until(
    events: &mut im_sdk_rust::Events,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("the client stopped; seen: {seen:?}"),
            Err(_) => panic!("timed out; seen {} events: {seen:#?}", seen.len()),
        }
    }
    seen
}

/// The seqs and client ids of the messages of `conversation` among `events`, in order.
pub fn messages_in(events: &[Event], conversation: &str) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) if m.conversation_id == conversation => {
                Some((m.seq, m.client_msg_id.clone()))
            }
            _ => None,
        })
        .collect()
}
