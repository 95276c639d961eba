//! One authenticated connection's task: it reads requests (handed to [`dispatch`](super::dispatch))
//! and writes their answers in request order, writes the pushes queued for its session, keeps
//! the idle deadline, resends pushed entries until they are acknowledged, and ends the session
//! when told to (replaced, revoked, shutting down, too slow), saying why.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures::{SinkExt, StreamExt, stream::FuturesOrdered};
use governor::{DefaultDirectRateLimiter, RateLimiter, clock::Clock};
use im_proto::{
    FrameCodec,
    v1::{DeliveryAck, Error, ErrorCode, Resync, server_frame},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{OwnedSemaphorePermit, mpsc},
    time::{Instant, Sleep},
};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use super::{
    Gateway, Limits,
    handshake::millis,
    link::{Link, Read, timed_out},
};
use crate::{
    rate::quota,
    sessions::{Outbound, SessionHandle},
};

/// Pushes written with one flush at most.
const PUSH_BATCH: usize = 64;

/// A pushed entry not yet acknowledged.
struct Unacked {
    conversation_id: Arc<str>,
    seq: u64,
    frame: Bytes,
    sent_at: Instant,
}

/// An answer still being worked on: a send waiting for its commit.
pub(super) type Answer = Pin<Box<dyn std::future::Future<Output = Bytes> + Send>>;

/// Whether the connection goes on after a request.
pub(super) enum Flow {
    Continue,
    Close,
}

/// One authenticated connection.
pub(super) struct Connection<S> {
    pub(super) gateway: Arc<Gateway>,
    /// The limits in force when it opened.
    pub(super) limits: Arc<Limits>,
    pub(super) link: Link<S>,
    pub(super) session: SessionHandle,
    inbox: mpsc::Receiver<Arc<Outbound>>,
    codec: FrameCodec,
    /// The largest frame the client accepts.
    pub(super) client_frame_limit: usize,
    limiter: DefaultDirectRateLimiter,
    /// Rate-limited frames in a row.
    pub(super) strikes: u32,
    unacked: VecDeque<Unacked>,
    acked: HashMap<Arc<str>, u64>,
    /// Answers still being worked on (sends waiting for their commit), in request order.
    pub(super) inflight: FuturesOrdered<Answer>,
    _slot: OwnedSemaphorePermit,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection whose Welcome has been sent.
    pub(super) fn new(
        gateway: Arc<Gateway>,
        limits: Arc<Limits>,
        link: Link<S>,
        session: SessionHandle,
        inbox: mpsc::Receiver<Arc<Outbound>>,
        client_frame_limit: usize,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let limiter = RateLimiter::direct(quota(limits.frames_per_second));
        let codec = FrameCodec::new(limits.max_frame_bytes as usize);
        Self {
            gateway,
            limits,
            link,
            session,
            inbox,
            codec,
            client_frame_limit,
            limiter,
            strikes: 0,
            unacked: VecDeque::new(),
            acked: HashMap::new(),
            inflight: FuturesOrdered::new(),
            _slot: slot,
        }
    }

    /// The session this connection holds.
    pub(super) fn session(&self) -> &SessionHandle {
        &self.session
    }

    /// Serves the connection until it ends.
    pub(super) async fn run(mut self) -> Result<(), tungstenite::Error> {
        let idle = self.limits.idle_timeout;
        let resend_after = self.limits.resend_after.max(Duration::from_millis(1));
        let max_inflight = self.limits.max_inflight_requests as usize;
        let ending = self.session.ending().clone();
        let shutdown = self.gateway.shutdown.clone();
        let mut deadline: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(idle));
        let mut resend = Box::pin(tokio::time::sleep(resend_after));
        loop {
            // Unbiased: neither a stream of pushes nor a chatty client starves the other side.
            tokio::select! {
                () = ending.token.cancelled() => {
                    let reason = ending.reason.get().copied().unwrap_or(ErrorCode::ShuttingDown);
                    return Box::pin(self.finish(reason)).await;
                }
                () = shutdown.cancelled() => return Box::pin(self.finish(ErrorCode::ShuttingDown)).await,
                Some(answer) = self.inflight.next(), if !self.inflight.is_empty() => {
                    Box::pin(self.link.send(answer)).await?;
                }
                Some(outbound) = self.inbox.recv() => {
                    if !Box::pin(self.push_queued(outbound)).await? {
                        return Box::pin(self.finish(ErrorCode::SlowConsumer)).await;
                    }
                    // Frames were dropped for a full queue: the client syncs to get them.
                    if self.session.take_overflow() {
                        let resync = Resync { sync_after_ms: 0 };
                        let frame = crate::wire::frame(0, server_frame::Body::Resync(resync));
                        Box::pin(self.link.send(frame)).await?;
                    }
                }
                message = self.link.ws.next(), if self.inflight.len() < max_inflight => {
                    let Some(message) = message else { return Ok(()) };
                    deadline.as_mut().reset(Instant::now() + idle);
                    match Box::pin(self.link.read_frame(message, &self.codec, true)).await? {
                        Read::Frame(frame, bytes) => {
                            if let Flow::Close = Box::pin(self.request(*frame, &bytes)).await? {
                                return Ok(());
                            }
                        }
                        Read::Ignored => {}
                        Read::Closed => return Ok(()),
                    }
                }
                () = deadline.as_mut() => {
                    return Box::pin(self.link.go_away(ErrorCode::HeartbeatTimeout, 0)).await;
                }
                () = resend.as_mut(), if !self.unacked.is_empty() => {
                    Box::pin(self.resend(resend_after)).await?;
                    resend.as_mut().reset(Instant::now() + resend_after);
                }
            }
        }
    }

    /// Ends the session: finishes what is in flight (up to the drain timeout), then says why.
    async fn finish(mut self, reason: ErrorCode) -> Result<(), tungstenite::Error> {
        let deadline = Instant::now() + self.limits.drain_timeout;
        while !self.inflight.is_empty() {
            match tokio::time::timeout_at(deadline, self.inflight.next()).await {
                Ok(Some(answer)) => self.link.send(answer).await?,
                Ok(None) | Err(_) => break,
            }
        }
        let wait = go_away_wait(reason, millis(self.limits.reconnect_after));
        self.link.go_away(reason, wait).await
    }

    /// Writes `first` and whatever else is queued now (up to [`PUSH_BATCH`] frames) with one
    /// flush. Returns false when too many pushes wait for their acknowledgement.
    async fn push_queued(&mut self, first: Arc<Outbound>) -> Result<bool, tungstenite::Error> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(outbound) = next.take() {
            if !self.push(outbound).await? {
                return Ok(false);
            }
            written += 1;
            if written < PUSH_BATCH {
                next = self.inbox.try_recv().ok();
            }
        }
        self.link.flush().await?;
        Ok(true)
    }

    /// Feeds a frame from the outbound queue to the socket's buffer; entries are kept until
    /// acknowledged. Returns false when too many pushes wait for their acknowledgement.
    async fn push(&mut self, outbound: Arc<Outbound>) -> Result<bool, tungstenite::Error> {
        if let Some((conversation_id, seq)) = outbound.entry.clone() {
            if self.acked.get(&conversation_id).is_some_and(|a| *a >= seq) {
                return Ok(true);
            }
            if self.unacked.len() >= self.limits.max_unacked {
                metrics::counter!("im_slow_consumers_total", "cause" => "unacknowledged")
                    .increment(1);
                return Ok(false);
            }
            self.unacked.push_back(Unacked {
                conversation_id,
                seq,
                frame: outbound.frame.clone(),
                sent_at: Instant::now(),
            });
        }
        self.link.feed(outbound.frame.clone()).await?;
        Ok(true)
    }

    async fn resend(&mut self, after: Duration) -> Result<(), tungstenite::Error> {
        let now = Instant::now();
        let write_timeout = self.link.write_timeout;
        let (unacked, ws) = (&mut self.unacked, &mut self.link.ws);
        let resent = async move {
            for unacked in unacked.iter_mut() {
                if now.duration_since(unacked.sent_at) >= after {
                    unacked.sent_at = now;
                    metrics::counter!("im_pushes_resent_total").increment(1);
                    ws.feed(WsMessage::Binary(unacked.frame.clone())).await?;
                }
            }
            ws.flush().await
        };
        tokio::time::timeout(write_timeout, resent)
            .await
            .map_err(|_| timed_out())?
    }

    /// The client holds every entry up to each cursor: those pushes need no resend.
    pub(super) fn delivery_ack(&mut self, ack: &DeliveryAck) {
        for cursor in &ack.acks {
            // Only conversations with pushes waiting: a client cannot grow this map at will.
            if !self
                .unacked
                .iter()
                .any(|u| *u.conversation_id == *cursor.conversation_id)
            {
                continue;
            }
            let conversation: Arc<str> = cursor.conversation_id.as_str().into();
            let held = self.acked.entry(conversation.clone()).or_insert(0);
            *held = (*held).max(cursor.seq);
            let held = *held;
            self.unacked
                .retain(|u| !(u.conversation_id == conversation && u.seq <= held));
        }
        if self.unacked.is_empty() {
            // Nothing to track: give the memory back (idle connections stay small).
            self.unacked.shrink_to_fit();
        }
    }

    /// Applies the per-connection rate limit. `None`: go on.
    pub(super) fn rate_limited(&mut self) -> Option<Error> {
        match self.limiter.check() {
            Ok(()) => {
                self.strikes = 0;
                None
            }
            Err(not_until) => {
                self.strikes += 1;
                metrics::counter!("im_rate_limited_total", "scope" => "connection").increment(1);
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let mut error = Error::new(ErrorCode::RateLimited, "too many frames");
                error.retry_after_ms = wait.as_millis().max(1) as u64;
                Some(error)
            }
        }
    }
}

/// The `reconnect_after_ms` of a GoAway (docs/PROTOCOL.md, "GoAway"): `after` (the
/// `reconnect_after` setting), 0 for a session that must not come back as it was, and for
/// UNAVAILABLE a uniform pick in `after ..= 4 * after`: every session of the node is told at
/// once, and spread over four times the wait they do not all come back in the same instant.
fn go_away_wait(reason: ErrorCode, after: u64) -> u64 {
    match reason {
        ErrorCode::SessionReplaced | ErrorCode::TokenRevoked | ErrorCode::UserDisabled => 0,
        ErrorCode::Unavailable => super::spread(after),
        _ => after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_go_away_waits_as_the_protocol_document_says() {
        assert_eq!(go_away_wait(ErrorCode::ShuttingDown, 1000), 1000);
        assert_eq!(go_away_wait(ErrorCode::SlowConsumer, 1000), 1000);
        for no_return in [
            ErrorCode::SessionReplaced,
            ErrorCode::TokenRevoked,
            ErrorCode::UserDisabled,
        ] {
            assert_eq!(go_away_wait(no_return, 1000), 0);
        }
        let waits: Vec<u64> = (0..2000)
            .map(|_| go_away_wait(ErrorCode::Unavailable, 1000))
            .collect();
        assert!(waits.iter().all(|w| (1000..=4000).contains(w)), "{waits:?}");
        // Spread over the range, not bunched at one end.
        assert!(waits.iter().any(|w| *w < 1500) && waits.iter().any(|w| *w > 3500));
        assert_eq!(go_away_wait(ErrorCode::Unavailable, 0), 0);
    }
}
