//! A raw protocol client for load generation: the WebSocket with subprotocol `im.v1`,
//! protobuf frames, the Hello; connections bound to spread source addresses.
//!
//! What the workspace's test kit (`im_testkit::client`) already does the same way is taken
//! from it: the [`Ws`] type, the Hello's fields, text bodies, and sending one frame. The rest
//! stays here because the benchmark needs what the kit does not do, or does at a cost:
//!
//! - Opening: the kit's `open` connects from an ephemeral port with tungstenite's default
//!   128 KiB read buffer and offers `im.v1, im`; here every connection is bound to a source
//!   address and port of its own (one source address has too few ports for hundreds of
//!   thousands of connections to one server port) and reads through a 4 KiB buffer (the
//!   client's memory would otherwise dwarf the server's).
//! - Reading: the kit's `read_frame` boxes every frame, fails on bytes it cannot decode and
//!   reports a broken stream as a close; the benchmark reads pushes per message, so it decodes
//!   in place, skips what it cannot read, and keeps the stream's own error (max-connections
//!   reports it as what stopped it).
//! - Sending in batches: [`frame`] builds a message to `feed`, flushed once per batch; the
//!   kit's `send_frame` flushes every frame.
//! - Ping, windowed sends, receivers that acknowledge cumulatively and read send times from the
//!   bodies: the kit has no such thing.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use im_proto::v1::{
    ClientFrame, DeliveryAck, Hello, Ping, SendRequest, SeqCursor, ServerFrame, client_frame,
    server_frame,
};
pub(crate) use im_testkit::client::{Ws, text};
use im_testkit::client::{send_frame, text_of};
use prost::Message as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{
    Message as WsMessage, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig,
};

use crate::util::{Result, micros_histogram, record};

/// Source ports per source address: 10000..32000, below the kernel's ephemeral range
/// (32768..60999 here). Ports chosen by `bind(addr, 0)` would come from that range, and a port
/// taken by an explicit bind (even one in TIME_WAIT) is skipped by every later plain
/// `connect()`: a few tens of thousands of closed benchmark connections would leave the
/// machine without ephemeral ports. Explicit ports below the range avoid that.
const FIRST_PORT: usize = 10_000;
const PORTS: usize = 22_000;

/// Every connection of the run gets its own source address and port.
static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

/// The source of the `n`th connection of the run: 127.0.0.2:10000, 127.0.0.2:10001, ...,
/// then 127.0.0.3, ... (22,000 per address, past the 64k ports of one address).
pub(crate) fn source(n: usize) -> SocketAddrV4 {
    let host = 2 + n / PORTS;
    let ip = Ipv4Addr::new(127, (host >> 16) as u8, (host >> 8) as u8, host as u8);
    SocketAddrV4::new(ip, (FIRST_PORT + n % PORTS) as u16)
}

/// A TCP connection to `to` from the next free source address and port.
pub(crate) async fn tcp(to: SocketAddr) -> Result<TcpStream> {
    let mut tries = 0;
    loop {
        let from = source(NEXT_SOURCE.fetch_add(1, Ordering::Relaxed));
        if from.ip().octets()[3] == 0 || from.ip().octets()[3] == 255 {
            continue;
        }
        let socket = TcpSocket::new_v4().map_err(|e| format!("creating a client socket: {e}"))?;
        // A port left in TIME_WAIT by an earlier run may be bound again.
        socket.set_reuseaddr(true)?;
        let attempt = match socket.bind(SocketAddr::V4(from)) {
            Ok(()) => socket.connect(to).await,
            Err(e) => Err(e),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e)
                if tries < 100
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                    ) =>
            {
                tries += 1;
            }
            Err(e) => return Err(format!("connecting from {from}: {e}").into()),
        }
    }
}

/// A TCP connection to the bare holder, once the holder has accepted it (it answers one byte).
pub(crate) async fn tcp_accepted(to: SocketAddr) -> Result<TcpStream> {
    let stream = tcp(to).await?;
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            stream.readable().await?;
            match stream.try_read(&mut byte) {
                Ok(0) => return Err(std::io::Error::other("closed by the holder")),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .map_err(|_| "the holder did not accept within 30 s")??;
    Ok(stream)
}

/// A binary WebSocket message carrying `body` with `request_id`, to `feed` in a batch (one
/// frame sent on its own goes through the test kit's `send_frame`).
pub(crate) fn frame(request_id: u64, body: client_frame::Body) -> WsMessage {
    let frame = ClientFrame {
        request_id,
        body: Some(body),
    };
    WsMessage::Binary(frame.encode_to_vec().into())
}

/// A server frame, if `message` is one.
pub(crate) fn decode(message: &WsMessage) -> Option<ServerFrame> {
    match message {
        WsMessage::Binary(bytes) => ServerFrame::decode(bytes.clone()).ok(),
        _ => None,
    }
}

/// A send request.
pub(crate) fn send(conversation: &str, client_msg_id: String, body: &str) -> client_frame::Body {
    client_frame::Body::Send(SendRequest {
        client_msg_id,
        conversation_id: conversation.into(),
        body: Some(text(body)),
    })
}

/// The canonical 1:1 conversation of `a` and `b` (the bench's user ids are valid ones).
pub(crate) fn direct(a: &str, b: &str) -> String {
    let user = |id: &str| im_proto::UserId::new(id.to_owned()).expect("a valid user id");
    im_proto::ConversationId::direct(user(a), user(b)).to_string()
}

/// Opens a connection to the gateway from the next source address and completes the Hello
/// with `token`, within 30 s (a server out of file descriptors leaves connections in its
/// backlog unanswered).
pub(crate) async fn connect(addr: SocketAddr, token: &str, device: &str) -> Result<Ws> {
    tokio::time::timeout(Duration::from_secs(30), connect_now(addr, token, device))
        .await
        .map_err(|_| "no welcome within 30 s")?
}

async fn connect_now(addr: SocketAddr, token: &str, device: &str) -> Result<Ws> {
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("im.v1"));
    let stream = tcp(addr).await?;
    // Small read buffers: the default (128 KiB each) would dominate the client's memory.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    // The kit's Hello, naming this tool as the client (as it always has). The kit's own
    // version string is allocated and dropped: once per connect, never per message.
    let hello = Hello {
        client_version: "im-bench/0".into(),
        ..im_testkit::client::hello(token, device)
    };
    send_frame(&mut ws, 1, client_frame::Body::Hello(hello)).await?;
    loop {
        // Bounded by `connect`'s timeout.
        let message = ws.next().await.ok_or("closed before the welcome")??;
        if let WsMessage::Close(close) = &message {
            return Err(format!("closed before the welcome: {close:?}").into());
        }
        let Some(frame) = decode(&message) else {
            continue;
        };
        if frame.request_id != 1 {
            continue;
        }
        return match frame.body {
            Some(server_frame::Body::Welcome(_)) => Ok(ws),
            other => Err(format!("no welcome: {other:?}").into()),
        };
    }
}

/// Pings and waits for the pong (within 30 s): the session serves requests from then on. A
/// node finishes opening a session (its presence included) after the Welcome, and reads the
/// session's requests only then.
pub(crate) async fn ping(ws: &mut Ws) -> Result<()> {
    const PING_ID: u64 = 2;
    let ping = client_frame::Body::Ping(Ping { client_time_ms: 0 });
    send_frame(ws, PING_ID, ping).await?;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let message = ws.next().await.ok_or("closed before the pong")??;
            if let Some(frame) = decode(&message)
                && frame.request_id == PING_ID
            {
                return match frame.body {
                    Some(server_frame::Body::Pong(_)) => Ok(()),
                    other => Err(format!("no pong: {other:?}").into()),
                };
            }
        }
    })
    .await
    .map_err(|_| "no pong within 30 s")?
}

/// Sends `count` messages to `conversation` with at most `window` unanswered; the ack
/// latencies (send to `SendAck`) are recorded. Any error answer fails the run.
pub(crate) async fn send_windowed(
    ws: &mut Ws,
    conversation: &str,
    prefix: &str,
    count: usize,
    window: usize,
    body: &str,
    done: &AtomicU64,
) -> Result<Histogram<u64>> {
    let mut pending = std::collections::HashMap::new();
    let mut latency = micros_histogram();
    let mut sent = 0usize;
    let mut next_id = 1u64;
    while sent < count || !pending.is_empty() {
        let mut fed = false;
        while sent < count && pending.len() < window.max(1) {
            next_id += 1;
            ws.feed(frame(
                next_id,
                send(conversation, format!("{prefix}-{sent}"), body),
            ))
            .await?;
            pending.insert(next_id, Instant::now());
            sent += 1;
            fed = true;
        }
        if fed {
            ws.flush().await?;
        }
        let message = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .map_err(|_| "no answer within 60 s")?
            .ok_or("the connection closed")??;
        let Some(frame) = decode(&message) else {
            continue;
        };
        let Some(at) = pending.remove(&frame.request_id) else {
            continue;
        };
        match frame.body {
            Some(server_frame::Body::SendAck(_)) => {
                record(&mut latency, at.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            other => return Err(format!("send refused: {other:?}").into()),
        }
    }
    Ok(latency)
}

/// What a receiving connection does with each new pushed entry.
#[derive(Clone, Copy)]
pub(crate) enum Measure {
    /// Only counts.
    Count,
    /// Also records `now - t` for bodies `t<micros since origin>`.
    Latency(Instant),
}

/// What a receiver has of one conversation, for cumulative acks: an ack covers every seq up to
/// it, so it names only the end of the run received without a gap.
#[derive(Debug, Default)]
struct Received {
    /// Every seq up to this one has arrived (counted from the first seen).
    through: u64,
    /// Seqs that arrived beyond a gap.
    beyond: BTreeSet<u64>,
    /// The last `through` acknowledged.
    acked: u64,
    /// Since when a gap has held the acks back.
    gap_since: Option<Instant>,
}

/// How long a gap may hold the acks back: a missing entry the server holds for this session
/// comes again within its resend period (`resend_after_ms`, 5 s by default); one it never
/// had (lost before it reached this node) would hold them back for good, so acks move past it.
const GAP_PATIENCE: Duration = Duration::from_secs(15);

impl Received {
    fn add(&mut self, seq: u64, now: Instant) {
        if self.through == 0 {
            // The first push of the conversation: what came before is not this run's.
            self.through = seq;
        } else if seq > self.through {
            self.beyond.insert(seq);
        }
        while self.beyond.remove(&(self.through + 1)) {
            self.through += 1;
        }
        match (&self.gap_since, self.beyond.last()) {
            (_, None) => self.gap_since = None,
            (Some(since), Some(&last)) if now.duration_since(*since) > GAP_PATIENCE => {
                self.through = last;
                self.beyond.clear();
                self.gap_since = None;
            }
            (None, Some(_)) => self.gap_since = Some(now),
            (Some(_), Some(_)) => {}
        }
    }
}

/// Reads pushes until `stop`: counts each new entry once (pushes may repeat), acknowledges
/// them in batches, and with [`Measure::Latency`] records send-to-deliver times.
pub(crate) fn spawn_receiver(
    mut ws: Ws,
    delivered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    measure: Measure,
) -> tokio::task::JoinHandle<Histogram<u64>> {
    tokio::spawn(async move {
        let mut latency = micros_histogram();
        let mut seen: HashSet<(String, u64)> = HashSet::new();
        let mut received: HashMap<String, Received> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            let next = tokio::time::timeout(Duration::from_millis(50), ws.next()).await;
            let message = match next {
                Err(_) => None,
                Ok(Some(Ok(message))) => Some(message),
                Ok(_) => break,
            };
            if let Some(server_frame::Body::Message(m)) =
                message.as_ref().and_then(decode).and_then(|f| f.body)
            {
                let now = Instant::now();
                if seen.insert((m.conversation_id.clone(), m.seq)) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    if let Measure::Latency(origin) = measure {
                        let sent = text_of(&m)
                            .and_then(|t| t.strip_prefix('t'))
                            .and_then(|t| t.split(' ').next())
                            .and_then(|t| t.parse::<u64>().ok());
                        if let Some(sent) = sent {
                            let at = u64::try_from(now.duration_since(origin).as_micros())
                                .unwrap_or(u64::MAX);
                            latency.saturating_record(at.saturating_sub(sent).max(1));
                        }
                    }
                }
                received
                    .entry(m.conversation_id)
                    .or_default()
                    .add(m.seq, now);
                if !seen.len().is_multiple_of(64) {
                    continue;
                }
            }
            // A timeout, another frame, or every 64th entry: acknowledge what arrived without
            // a gap (what is missing the server resends).
            let acks: Vec<SeqCursor> = received
                .iter_mut()
                .filter(|(_, r)| r.through > r.acked)
                .map(|(conversation, r)| {
                    r.acked = r.through;
                    SeqCursor {
                        conversation_id: conversation.clone(),
                        seq: r.through,
                    }
                })
                .collect();
            if !acks.is_empty() {
                let body = client_frame::Body::DeliveryAck(DeliveryAck { acks });
                if send_frame(&mut ws, 0, body).await.is_err() {
                    break;
                }
            }
        }
        latency
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{GAP_PATIENCE, Received};

    #[test]
    fn acks_stop_at_the_first_gap() {
        let now = Instant::now();
        let mut received = Received::default();
        for seq in [3, 4, 6, 7] {
            received.add(seq, now);
        }
        assert_eq!(received.through, 4, "5 is missing: 6 and 7 wait");
        received.add(5, now);
        assert_eq!(received.through, 7);
        received.add(4, now);
        assert_eq!(received.through, 7, "a repeat changes nothing");
    }

    #[test]
    fn a_gap_that_never_fills_holds_acks_back_only_for_a_while() {
        let start = Instant::now();
        let mut received = Received::default();
        for seq in [1, 3] {
            received.add(seq, start);
        }
        received.add(4, start + GAP_PATIENCE);
        assert_eq!(received.through, 1, "2 may still come");
        received.add(5, start + GAP_PATIENCE + Duration::from_millis(1));
        assert_eq!(received.through, 5, "2 is given up on");
    }
}
