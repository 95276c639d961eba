//! A request, read: its request id and rate checked, then one handler per `ClientFrame` body,
//! which asks the module that does the work and frames its answer.

use bytes::Bytes;
use im_common::now_ms;
use im_proto::v1::{
    ClientFrame, Error, ErrorCode, HistoryRequest, Ok as OkBody, Pong, PullRequest, SendRequest,
    client_frame, server_frame,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite;

use super::connection::{Connection, Flow};
use crate::{
    messaging::MessagingError,
    wire::{self, RawBody, error_frame, frame},
};

/// An answer: its body, or the error to answer with.
type Answered = Result<server_frame::Body, Error>;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Handles one frame; `bytes` is the frame as received.
    pub(super) async fn request(
        &mut self,
        request: ClientFrame,
        bytes: &Bytes,
    ) -> Result<Flow, tungstenite::Error> {
        let request_id = request.request_id;
        let Some(body) = request.body else {
            return Ok(Flow::Continue);
        };
        let unanswered = matches!(
            body,
            client_frame::Body::DeliveryAck(_) | client_frame::Body::Typing(_)
        );
        if !unanswered && request_id == 0 {
            let error = Error::new(
                ErrorCode::InvalidArgument,
                "a request that expects an answer needs a request_id",
            );
            self.link.close_with_error(0, error).await?;
            return Ok(Flow::Close);
        }
        if let Some(error) = self.rate_limited() {
            if self.strikes > self.limits.abuse_threshold {
                let mut error = error;
                error.message = "rate limit exceeded repeatedly".into();
                self.link.close_with_error(0, error).await?;
                return Ok(Flow::Close);
            }
            if !unanswered {
                self.link.send(error_frame(request_id, error)).await?;
            }
            return Ok(Flow::Continue);
        }
        let answer: Answered = match body {
            client_frame::Body::Hello(_) => {
                let error = Error::new(ErrorCode::AlreadyAuthenticated, "already authenticated");
                self.link.close_with_error(request_id, error).await?;
                return Ok(Flow::Close);
            }
            client_frame::Body::Ping(ping) => Ok(server_frame::Body::Pong(Pong {
                client_time_ms: ping.client_time_ms,
                server_time_ms: now_ms(),
            })),
            client_frame::Body::Send(send) => return self.send(request_id, send, bytes).await,
            client_frame::Body::DeliveryAck(ack) => {
                self.delivery_ack(&ack);
                return Ok(Flow::Continue);
            }
            client_frame::Body::Typing(typing) => {
                let messaging = self.gateway.messaging.clone();
                messaging
                    .typing(&self.session, &typing.conversation_id, typing.active)
                    .await;
                return Ok(Flow::Continue);
            }
            client_frame::Body::History(history) => {
                return self.history(request_id, &history).await;
            }
            client_frame::Body::Pull(pull) => return self.pull(request_id, &pull).await,
            client_frame::Body::Sync(sync) => {
                let messaging = self.gateway.messaging.clone();
                messaging
                    .sync(&self.session.user, sync, self.client_frame_limit)
                    .await
                    .map(server_frame::Body::Sync)
                    .map_err(|e| e.to_error())
            }
            client_frame::Body::MarkRead(mark) => {
                let messaging = self.gateway.messaging.clone();
                messaging
                    .mark_read(&self.session, &mark)
                    .await
                    .map(server_frame::Body::ReadState)
                    .map_err(|e| e.to_error())
            }
            client_frame::Body::ReadCursors(request) => {
                let messaging = self.gateway.messaging.clone();
                messaging
                    .read_cursors(&self.session.user, &request)
                    .await
                    .map(server_frame::Body::ReadCursors)
                    .map_err(|e| e.to_error())
            }
            client_frame::Body::PresenceSubscribe(subscribe) => {
                let presence = self.gateway.presence.clone();
                presence
                    .subscribe(&self.session, &subscribe.user_ids)
                    .await
                    .map(server_frame::Body::Presences)
            }
            client_frame::Body::PresenceUnsubscribe(unsubscribe) => {
                self.gateway
                    .presence
                    .unsubscribe(&self.session, &unsubscribe.user_ids);
                Ok(server_frame::Body::Ok(OkBody {}))
            }
            client_frame::Body::SetPresence(set) => {
                let presence = self.gateway.presence.clone();
                presence
                    .set(&self.session.user, &set)
                    .await
                    .map(|()| server_frame::Body::Ok(OkBody {}))
            }
        };
        let framed = match answer {
            Ok(body) => frame(request_id, body),
            Err(error) => error_frame(request_id, error),
        };
        self.link.send(framed).await?;
        Ok(Flow::Continue)
    }

    /// A send is checked now and answered once its batch is committed and fanned out, in
    /// request order with the other answers still being worked on.
    async fn send(
        &mut self,
        request_id: u64,
        send: SendRequest,
        bytes: &Bytes,
    ) -> Result<Flow, tungstenite::Error> {
        let body = RawBody::of_send_frame(bytes);
        let messaging = self.gateway.messaging.clone();
        match messaging.submit(&self.session, &send, body).await {
            Ok(pending) => self.inflight.push_back(Box::pin(async move {
                match pending.wait().await {
                    Ok(ack) => frame(request_id, server_frame::Body::SendAck(ack)),
                    Err(error) => error_frame(request_id, error.to_error()),
                }
            })),
            Err(error) => {
                self.link
                    .send(error_frame(request_id, error.to_error()))
                    .await?
            }
        }
        Ok(Flow::Continue)
    }

    async fn history(
        &mut self,
        request_id: u64,
        history: &HistoryRequest,
    ) -> Result<Flow, tungstenite::Error> {
        let messaging = self.gateway.messaging.clone();
        let page = messaging
            .history(&self.session.user, history, self.client_frame_limit)
            .await;
        self.page(request_id, page).await
    }

    async fn pull(
        &mut self,
        request_id: u64,
        pull: &PullRequest,
    ) -> Result<Flow, tungstenite::Error> {
        let messaging = self.gateway.messaging.clone();
        let page = messaging
            .pull(&self.session.user, pull, self.client_frame_limit)
            .await;
        self.page(request_id, page).await
    }

    async fn page(
        &mut self,
        request_id: u64,
        page: Result<wire::Page, MessagingError>,
    ) -> Result<Flow, tungstenite::Error> {
        let framed = match page {
            Ok(page) => wire::page_frame(request_id, &page),
            Err(error) => error_frame(request_id, error.to_error()),
        };
        self.link.send(framed).await?;
        Ok(Flow::Continue)
    }
}
