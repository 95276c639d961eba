//! The sends not yet acknowledged: the store's outbox, with who waits for each.
//!
//! A send is kept, in memory and in the store, from the moment the app makes it until the
//! server acknowledges it or refuses it for good. Until then it goes on the wire on every
//! connection with the same client message id, so that the server makes one entry of it
//! however often it arrives; with a persistent store that holds across a restart of the app.
//! A passing refusal (a rate limit) holds the send back for the delay the server asked for; a
//! refusal a retry cannot fix fails it, and the store forgets it.
//!
//! Nothing here touches the socket: the connection task writes what [`Sends::next_due`] gives
//! and hands back the answers.

use im_proto::v1::{MessageBody, SendAck, SendRequest, server_frame};
use prost::Message as _;
use tokio::{sync::oneshot, time::Instant};

use super::{Sent, delay_ms};
use crate::{
    error::{Error, Result},
    store::{LocalStore, Outgoing},
};

/// A send not yet acknowledged.
struct PendingSend {
    outgoing: Outgoing,
    /// Who waits for the ack: the app's call, and any repeat of it with the same id. None for
    /// a send from the outbox of an earlier run of the app.
    waiters: Vec<oneshot::Sender<Result<Sent>>>,
    /// The request id of the copy on the wire, if any.
    in_flight: Option<u64>,
    /// Not to be sent again before this (after a retryable refusal).
    not_before: Option<Instant>,
}

/// The sends not yet acknowledged, oldest first (the order they go on the wire).
#[derive(Default)]
pub(super) struct Sends {
    pending: Vec<PendingSend>,
}

impl Sends {
    /// The outbox of a store just opened: sent again on the first connection, with no one
    /// waiting for the ack.
    pub(super) fn from_outbox(outbox: Vec<Outgoing>) -> Self {
        let pending = outbox
            .into_iter()
            .map(|outgoing| PendingSend {
                outgoing,
                waiters: Vec::new(),
                in_flight: None,
                not_before: None,
            })
            .collect();
        Self { pending }
    }

    fn position(&self, client_msg_id: &str) -> Option<usize> {
        self.pending
            .iter()
            .position(|p| p.outgoing.client_msg_id == client_msg_id)
    }

    /// Adds a send to the pending ones and the store's outbox (`done` learns if the store
    /// fails); a repeat of a pending id just waits for the same ack.
    pub(super) async fn enqueue(
        &mut self,
        store: &dyn LocalStore,
        outgoing: Outgoing,
        done: oneshot::Sender<Result<Sent>>,
    ) {
        if let Some(at) = self.position(&outgoing.client_msg_id) {
            self.pending[at].waiters.push(done);
            return;
        }
        if let Err(error) = store.push_outgoing(&outgoing).await {
            let _ = done.send(Err(error));
            return;
        }
        self.pending.push(PendingSend {
            outgoing,
            waiters: vec![done],
            in_flight: None,
            not_before: None,
        });
    }

    /// The oldest send that is neither on the wire nor waiting out a refusal at `now`, as the
    /// request to write; [`Sends::on_wire`] then says under which id it went.
    pub(super) fn next_due(&self, now: Instant) -> Option<SendRequest> {
        let pending = self
            .pending
            .iter()
            .find(|p| p.in_flight.is_none() && p.not_before.is_none_or(|t| t <= now))?;
        Some(SendRequest {
            client_msg_id: pending.outgoing.client_msg_id.clone(),
            conversation_id: pending.outgoing.conversation_id.clone(),
            body: MessageBody::decode(pending.outgoing.body.as_slice()).ok(),
        })
    }

    /// The send is on the wire, under request id `id`.
    pub(super) fn on_wire(&mut self, client_msg_id: &str, id: u64) {
        if let Some(at) = self.position(client_msg_id) {
            self.pending[at].in_flight = Some(id);
            self.pending[at].not_before = None;
        }
    }

    /// The server's answer to the send `client_msg_id`. An ack resolves the waiters and takes
    /// the send out of the store's outbox; it is returned with the send, for the sender's own
    /// entry to take its place in the conversation. A passing refusal holds the send back for
    /// the delay the server asked for; any other refusal fails it for good.
    pub(super) async fn on_answer(
        &mut self,
        store: &dyn LocalStore,
        client_msg_id: &str,
        body: server_frame::Body,
    ) -> Result<Option<(SendAck, Outgoing)>> {
        // An answer to a send no longer pending: one already failed, say.
        let Some(at) = self.position(client_msg_id) else {
            return Ok(None);
        };
        match body {
            server_frame::Body::SendAck(ack) => {
                let pending = self.pending.remove(at);
                let sent = Sent {
                    conversation_id: ack.conversation_id.clone(),
                    client_msg_id: ack.client_msg_id.clone(),
                    seq: ack.seq,
                    server_msg_id: ack.server_msg_id.clone(),
                    server_time_ms: ack.server_time_ms,
                    duplicate: ack.duplicate,
                };
                for waiter in pending.waiters {
                    let _ = waiter.send(Ok(sent.clone()));
                }
                store.remove_outgoing(client_msg_id).await?;
                Ok(Some((ack, pending.outgoing)))
            }
            server_frame::Body::Error(error) => {
                let error = Error::from(error);
                if error.is_retryable() {
                    let wait = delay_ms(error.retry_after_ms.max(200));
                    self.pending[at].in_flight = None;
                    self.pending[at].not_before = Some(Instant::now() + wait);
                } else {
                    self.fail(store, client_msg_id, error).await?;
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Drops a send refused for good: its waiters learn why, the store forgets it.
    pub(super) async fn fail(
        &mut self,
        store: &dyn LocalStore,
        client_msg_id: &str,
        error: Error,
    ) -> Result<()> {
        if let Some(at) = self.position(client_msg_id) {
            let pending = self.pending.remove(at);
            for waiter in pending.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        store.remove_outgoing(client_msg_id).await
    }

    /// The connection is gone: every send goes on the wire again on the next one, with its id,
    /// so that the server's answer to it, lost with the connection, comes again.
    pub(super) fn connection_lost(&mut self) {
        for pending in &mut self.pending {
            pending.in_flight = None;
        }
    }

    /// The client stops: every waiter learns why; the outbox stays in the store, for the next
    /// run of the app.
    pub(super) fn stop(&mut self, error: &Error) {
        for pending in self.pending.drain(..) {
            for waiter in pending.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use im_proto::{ErrorCode, v1};

    use super::*;
    use crate::store::MemoryStore;

    fn outgoing(id: &str) -> Outgoing {
        Outgoing {
            client_msg_id: id.into(),
            conversation_id: "d:alice:bob".into(),
            body: Vec::new(),
        }
    }

    fn ack(id: &str, seq: u64) -> server_frame::Body {
        server_frame::Body::SendAck(SendAck {
            conversation_id: "d:alice:bob".into(),
            client_msg_id: id.into(),
            seq,
            ..Default::default()
        })
    }

    fn refusal(code: ErrorCode, retry_after_ms: u64) -> server_frame::Body {
        server_frame::Body::Error(v1::Error {
            retry_after_ms,
            ..v1::Error::new(code, "refused")
        })
    }

    async fn outbox(store: &MemoryStore) -> Vec<String> {
        let snapshot = store.load().await.unwrap();
        snapshot
            .outbox
            .into_iter()
            .map(|o| o.client_msg_id)
            .collect()
    }

    /// `m1` enqueued with one waiter, and put on the wire as request 2.
    async fn one_on_the_wire(store: &MemoryStore) -> (Sends, oneshot::Receiver<Result<Sent>>) {
        let mut sends = Sends::default();
        let (done, sent) = oneshot::channel();
        sends.enqueue(store, outgoing("m1"), done).await;
        let request = sends.next_due(Instant::now()).unwrap();
        sends.on_wire(&request.client_msg_id, 2);
        (sends, sent)
    }

    #[tokio::test]
    async fn sends_go_on_the_wire_in_order_each_once_per_connection() {
        let store = MemoryStore::default();
        let mut sends = Sends::from_outbox(vec![outgoing("m1")]);
        let (done, _sent) = oneshot::channel();
        sends.enqueue(&store, outgoing("m2"), done).await;
        assert_eq!(outbox(&store).await, ["m2"], "m1 was in the store already");
        let now = Instant::now();
        for (id, expected) in [(2, "m1"), (3, "m2")] {
            let request = sends.next_due(now).unwrap();
            assert_eq!(request.client_msg_id, expected);
            sends.on_wire(&request.client_msg_id, id);
        }
        assert!(sends.next_due(now).is_none());
        sends.connection_lost();
        assert_eq!(sends.next_due(now).unwrap().client_msg_id, "m1");
    }

    #[tokio::test]
    async fn a_repeated_id_waits_for_the_same_ack_which_empties_the_outbox() {
        let store = MemoryStore::default();
        let (mut sends, mut first) = one_on_the_wire(&store).await;
        let (done, mut again) = oneshot::channel();
        sends.enqueue(&store, outgoing("m1"), done).await;
        assert_eq!(outbox(&store).await, ["m1"]);
        let acked = sends.on_answer(&store, "m1", ack("m1", 7)).await.unwrap();
        let (ack, sent) = acked.expect("the ack, with its send");
        assert_eq!((ack.seq, sent.client_msg_id.as_str()), (7, "m1"));
        for waiter in [&mut first, &mut again] {
            assert_eq!(waiter.try_recv().unwrap().unwrap().seq, 7);
        }
        assert!(outbox(&store).await.is_empty());
        assert!(sends.next_due(Instant::now()).is_none());
    }

    #[tokio::test]
    async fn a_passing_refusal_holds_the_send_back_for_the_delay_the_server_asked_for() {
        let store = MemoryStore::default();
        let (mut sends, mut sent) = one_on_the_wire(&store).await;
        let answer = refusal(ErrorCode::RateLimited, 5_000);
        assert!(
            sends
                .on_answer(&store, "m1", answer)
                .await
                .unwrap()
                .is_none()
        );
        assert!(sends.next_due(Instant::now()).is_none());
        let later = Instant::now() + Duration::from_secs(6);
        assert_eq!(sends.next_due(later).unwrap().client_msg_id, "m1");
        assert!(sent.try_recv().is_err(), "still waiting");
        assert_eq!(outbox(&store).await, ["m1"]);
    }

    #[tokio::test]
    async fn a_refusal_a_retry_cannot_fix_fails_the_send_and_the_store_forgets_it() {
        let store = MemoryStore::default();
        let (mut sends, mut sent) = one_on_the_wire(&store).await;
        let answer = refusal(ErrorCode::NotAMember, 0);
        assert!(
            sends
                .on_answer(&store, "m1", answer)
                .await
                .unwrap()
                .is_none()
        );
        let error = sent.try_recv().unwrap().unwrap_err();
        assert_eq!(error.error_code(), Some(ErrorCode::NotAMember));
        assert!(outbox(&store).await.is_empty());
        assert!(sends.next_due(Instant::now()).is_none());
        let late = sends.on_answer(&store, "m1", ack("m1", 7)).await.unwrap();
        assert!(late.is_none(), "an answer to a send no longer pending");
    }

    #[tokio::test]
    async fn stopping_answers_every_waiter_and_keeps_the_outbox() {
        let store = MemoryStore::default();
        let (mut sends, mut sent) = one_on_the_wire(&store).await;
        sends.stop(&Error::new(ErrorCode::Unavailable, "the client was closed"));
        let error = sent.try_recv().unwrap().unwrap_err();
        assert_eq!(error.error_code(), Some(ErrorCode::Unavailable));
        assert_eq!(outbox(&store).await, ["m1"]);
    }
}
