//! A raw protocol client for tests: real WebSocket, protobuf frames, nothing hidden.
//!
//! [`Client`] panics on what a test does not expect; [`open_url`], [`send_frame`] and
//! [`read_frame`] report instead, for checks that run against any server.

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use futures::{SinkExt, StreamExt};
use im_proto::v1::{
    ClientFrame, DeliveryAck, Error, Hello, Message, MessageBody, Platform, SendAck, SendRequest,
    SeqCursor, ServerFrame, Text, Welcome, client_frame, content, message_body, server_frame,
};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message as WsMessage, client::IntoClientRequest, http::HeaderValue,
        protocol::CloseFrame,
    },
};

/// How long a test waits for a frame it expects.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A client's WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket offering `protocols`; the upgrade response's chosen subprotocol too.
pub async fn open(
    addr: SocketAddr,
    protocols: &[&str],
) -> Result<(Ws, Option<String>), tungstenite::Error> {
    open_url(&format!("ws://{addr}/ws"), protocols).await
}

/// Opens a WebSocket to `url` (`ws://host:port/ws`) offering `protocols`; the upgrade
/// response's chosen subprotocol too.
pub async fn open_url(
    url: &str,
    protocols: &[&str],
) -> Result<(Ws, Option<String>), tungstenite::Error> {
    let mut request = url.into_client_request()?;
    if !protocols.is_empty() {
        let offered = HeaderValue::from_str(&protocols.join(", "))
            .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offered);
    }
    let authority =
        request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .ok_or(tungstenite::Error::Url(
                tungstenite::error::UrlError::NoHostName,
            ))?;
    let stream = TcpStream::connect(authority)
        .await
        .map_err(tungstenite::Error::Io)?;
    let (ws, response) = tokio_tungstenite::client_async(request, stream).await?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, chosen))
}

/// Sends one frame.
pub async fn send_frame(
    ws: &mut Ws,
    request_id: u64,
    body: client_frame::Body,
) -> Result<(), tungstenite::Error> {
    let frame = ClientFrame {
        request_id,
        body: Some(body),
    };
    ws.send(WsMessage::Binary(frame.encode_to_vec().into()))
        .await
}

/// What reading gave: a frame, or the close (with its code, if the server sent one).
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// A server frame.
    Frame(Box<ServerFrame>),
    /// The connection ended.
    Closed(Option<u16>),
}

/// The next frame within `wait`, or the close; an error for nothing in time or bytes that are
/// no server frame.
pub async fn read_frame(ws: &mut Ws, wait: Duration) -> Result<Read, String> {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return Err("nothing arrived in time".into()),
            Ok(None) | Ok(Some(Err(_))) => return Ok(Read::Closed(None)),
            Ok(Some(Ok(WsMessage::Close(close)))) => {
                return Ok(Read::Closed(close.map(|c| u16::from(c.code))));
            }
            Ok(Some(Ok(WsMessage::Binary(bytes)))) => {
                return ServerFrame::decode(bytes)
                    .map(|frame| Read::Frame(Box::new(frame)))
                    .map_err(|e| e.to_string());
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A Hello for version 1 with `token` on `device`.
pub fn hello(token: &str, device: &str) -> Hello {
    Hello {
        protocol_versions: vec![1],
        token: token.into(),
        device_id: device.into(),
        platform: Platform::Desktop as i32,
        client_version: "test/0".into(),
        max_frame_bytes: 0,
        // No Resync: a bus loss ends this client's session with a GoAway.
        features: Vec::new(),
    }
}

/// A text message body.
pub fn text(body: &str) -> MessageBody {
    MessageBody {
        kind: Some(message_body::Kind::Content(im_proto::v1::Content {
            kind: Some(content::Kind::Text(Text { text: body.into() })),
            ..Default::default()
        })),
    }
}

/// The text of a content entry, if it is one.
pub fn text_of(message: &Message) -> Option<&str> {
    match message.body.as_ref()?.kind.as_ref()? {
        message_body::Kind::Content(c) => match c.kind.as_ref()? {
            content::Kind::Text(t) => Some(&t.text),
            _ => None,
        },
        _ => None,
    }
}

/// One connection, with the pushes that arrived while it waited for answers.
pub struct Client {
    /// The WebSocket, for tests that write or read it directly.
    pub ws: Ws,
    /// What the server said in its Welcome.
    pub welcome: Welcome,
    next_id: u64,
    pushes: VecDeque<ServerFrame>,
    answers: Vec<ServerFrame>,
}

impl Client {
    /// Connects with `im.v1` and completes the Hello; panics unless welcomed.
    pub async fn connect(addr: SocketAddr, token: &str, device: &str) -> Client {
        Self::connect_with(addr, hello(token, device)).await
    }

    /// Connects with the given Hello; panics unless welcomed.
    pub async fn connect_with(addr: SocketAddr, hello: Hello) -> Client {
        let (ws, _) = open(addr, &["im.v1", "im"]).await.expect("upgrade");
        let mut client = Client {
            ws,
            welcome: Welcome::default(),
            next_id: 0,
            pushes: VecDeque::new(),
            answers: Vec::new(),
        };
        match client.call(client_frame::Body::Hello(hello)).await {
            server_frame::Body::Welcome(welcome) => client.welcome = welcome,
            other => panic!("no welcome: {other:?}"),
        }
        client
    }

    /// Like `connect`, but returns the first answer (an error, usually) and the close.
    pub async fn refused(addr: SocketAddr, hello: Hello) -> (ServerFrame, Option<CloseFrame>) {
        let (mut ws, _) = open(addr, &["im.v1", "im"]).await.expect("upgrade");
        let frame = ClientFrame {
            request_id: 1,
            body: Some(client_frame::Body::Hello(hello)),
        };
        ws.send(WsMessage::Binary(frame.encode_to_vec().into()))
            .await
            .expect("sends");
        let (frames, close) = drain(&mut ws).await;
        (frames.into_iter().next().expect("an answer"), close)
    }

    /// The user the server authenticated.
    pub fn user(&self) -> &str {
        &self.welcome.user_id
    }

    /// Sends a frame with a fresh request id; returns the id.
    pub async fn send(&mut self, body: client_frame::Body) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send_with_id(id, body).await;
        id
    }

    /// Sends a frame with `request_id`.
    pub async fn send_with_id(&mut self, request_id: u64, body: client_frame::Body) {
        let frame = ClientFrame {
            request_id,
            body: Some(body),
        };
        self.send_bytes(frame.encode_to_vec()).await;
    }

    /// Sends raw bytes as one binary message.
    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(WsMessage::Binary(bytes.into()))
            .await
            .expect("sends");
    }

    /// The next frame from the wire.
    pub async fn read(&mut self) -> Option<ServerFrame> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time")?;
            match message {
                Ok(WsMessage::Binary(bytes)) => {
                    return Some(ServerFrame::decode(bytes).expect("a server frame"));
                }
                Ok(WsMessage::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The answer to request `id`; pushes and other answers that arrive first are kept.
    pub async fn answer(&mut self, id: u64) -> server_frame::Body {
        if let Some(at) = self.answers.iter().position(|f| f.request_id == id) {
            return self.answers.remove(at).body.expect("a body");
        }
        loop {
            let frame = self.read().await.expect("connection open");
            match frame.request_id {
                0 => self.pushes.push_back(frame),
                n if n == id => return frame.body.expect("a body"),
                _ => self.answers.push(frame),
            }
        }
    }

    /// Sends a request and waits for its answer.
    pub async fn call(&mut self, body: client_frame::Body) -> server_frame::Body {
        let id = self.send(body).await;
        self.answer(id).await
    }

    /// Sends `text` to a conversation; the ack (panics on an error).
    pub async fn say(&mut self, conversation: &str, client_msg_id: &str, body: &str) -> SendAck {
        match self
            .send_message(conversation, client_msg_id, text(body))
            .await
        {
            Ok(ack) => ack,
            Err(error) => panic!("send refused: {error:?}"),
        }
    }

    /// Sends `body` to a conversation; the ack or the error.
    pub async fn send_message(
        &mut self,
        conversation: &str,
        client_msg_id: &str,
        body: MessageBody,
    ) -> Result<SendAck, Error> {
        let answer = self
            .call(client_frame::Body::Send(SendRequest {
                client_msg_id: client_msg_id.into(),
                conversation_id: conversation.into(),
                body: Some(body),
            }))
            .await;
        match answer {
            server_frame::Body::SendAck(ack) => Ok(ack),
            server_frame::Body::Error(error) => Err(error),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// The next push `pick` accepts; other pushes stay queued.
    pub async fn expect<T>(&mut self, pick: impl Fn(&server_frame::Body) -> Option<T>) -> T {
        for at in 0..self.pushes.len() {
            if let Some(found) = self.pushes[at].body.as_ref().and_then(&pick) {
                self.pushes.remove(at);
                return found;
            }
        }
        loop {
            let frame = self.read().await.expect("connection open");
            if frame.request_id != 0 {
                self.answers.push(frame);
                continue;
            }
            if let Some(found) = frame.body.as_ref().and_then(&pick) {
                return found;
            }
            self.pushes.push_back(frame);
        }
    }

    /// The next pushed entry.
    pub async fn message(&mut self) -> Message {
        self.expect(|b| match b {
            server_frame::Body::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Whether a push `pick` accepts arrives within `wait` (for things that must not come).
    pub async fn sees_within<T>(
        &mut self,
        wait: Duration,
        pick: impl Fn(&server_frame::Body) -> Option<T>,
    ) -> Option<T> {
        if let Some(at) = self
            .pushes
            .iter()
            .position(|f| f.body.as_ref().and_then(&pick).is_some())
        {
            return self
                .pushes
                .remove(at)
                .and_then(|f| f.body.as_ref().and_then(&pick));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            let Ok(Some(Ok(WsMessage::Binary(bytes)))) = next else {
                return None;
            };
            let frame = ServerFrame::decode(bytes).expect("a server frame");
            if frame.request_id != 0 {
                self.answers.push(frame);
            } else if let Some(found) = frame.body.as_ref().and_then(&pick) {
                return Some(found);
            } else {
                self.pushes.push_back(frame);
            }
        }
    }

    /// Acknowledges every entry of `conversation` up to `seq`.
    pub async fn ack(&mut self, conversation: &str, seq: u64) {
        let ack = DeliveryAck {
            acks: vec![SeqCursor {
                conversation_id: conversation.into(),
                seq,
            }],
        };
        self.send_with_id(0, client_frame::Body::DeliveryAck(ack))
            .await;
    }

    /// Reads until the server closes: the frames it sent first, and its close frame.
    pub async fn closed(mut self) -> (Vec<ServerFrame>, Option<CloseFrame>) {
        let (mut frames, close) = drain(&mut self.ws).await;
        let mut kept: Vec<ServerFrame> = self.pushes.drain(..).collect();
        kept.append(&mut frames);
        (kept, close)
    }
}

/// Reads frames until the close.
pub async fn drain(ws: &mut Ws) -> (Vec<ServerFrame>, Option<CloseFrame>) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Err(_) => panic!("the server did not close the connection"),
            Ok(None) | Ok(Some(Err(_))) => return (frames, None),
            Ok(Some(Ok(WsMessage::Binary(bytes)))) => {
                frames.push(ServerFrame::decode(bytes).expect("a server frame"));
            }
            Ok(Some(Ok(WsMessage::Close(close)))) => return (frames, close),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// The error a frame carries, if it is one.
pub fn error_of(frame: &ServerFrame) -> Option<&Error> {
    match frame.body.as_ref()? {
        server_frame::Body::Error(error) => Some(error),
        _ => None,
    }
}
