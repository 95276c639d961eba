//! The committer: checked sends are queued in the order each connection sent them, appended in
//! batches (one transaction, one fsync per batch: group commit) and handed on in commit order
//! to the fan-out, which answers their senders. A batch that fails is answered at once.

use std::sync::Arc;

use im_proto::v1::SendAck;
use tokio::sync::{mpsc, oneshot};

use super::{MessagingError, MessagingResult};
use crate::store::{Appended, MessageStore, NewEntry, StoreError, StoredEntry};

/// How a queued send ends: stored (or found stored), or its batch failed.
type Outcome = Result<Appended, Arc<StoreError>>;

/// A send waiting for the committer.
pub(super) struct Pending {
    pub(super) entry: NewEntry,
    /// The session that sent it: it has the ack and gets no push.
    pub(super) session_id: Option<Arc<str>>,
    pub(super) done: oneshot::Sender<Outcome>,
}

/// A committed entry on its way to the members' devices; its sender is answered once it is
/// on its way.
pub(super) struct Committed {
    pub(super) appended: Appended,
    pub(super) session_id: Option<Arc<str>>,
    pub(super) done: oneshot::Sender<Outcome>,
}

/// The acknowledgement of a queued send: resolves once the batch holding it is durable and
/// its entries have been handed to every node with a recipient online.
pub struct PendingAck {
    conversation_id: String,
    client_msg_id: String,
    done: oneshot::Receiver<Outcome>,
}

impl PendingAck {
    /// An ack known already (a resend of a stored entry, not pushed again).
    pub(super) fn resolved(first: StoredEntry) -> Self {
        let (ack, done) = Self::waiting(&first.conversation_id, &first.client_msg_id);
        let _ = done.send(Ok(Appended::Duplicate(first)));
        ack
    }

    /// An ack of the send `client_msg_id` in `conversation_id`, and where its outcome goes.
    pub(super) fn waiting(
        conversation_id: &str,
        client_msg_id: &str,
    ) -> (Self, oneshot::Sender<Outcome>) {
        let (done, waiting) = oneshot::channel();
        let ack = Self {
            conversation_id: conversation_id.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            done: waiting,
        };
        (ack, done)
    }

    /// Waits for the commit and the fan-out; the `SendAck`.
    pub async fn wait(self) -> MessagingResult<SendAck> {
        match self.done.await {
            Ok(Ok(appended)) => {
                let entry = appended.entry();
                Ok(SendAck {
                    conversation_id: self.conversation_id,
                    client_msg_id: self.client_msg_id,
                    server_msg_id: entry.server_msg_id.clone(),
                    seq: entry.seq as u64,
                    server_time_ms: entry.server_time_ms,
                    duplicate: matches!(appended, Appended::Duplicate(_)),
                })
            }
            Ok(Err(error)) => Err(MessagingError::Commit(error)),
            Err(_) => Err(MessagingError::ShuttingDown),
        }
    }
}

/// Takes queued sends in order, appends them in batches of up to `max_batch`, and passes the
/// entries on in commit order to the fan-out.
pub(super) async fn commit_batches(
    store: Arc<dyn MessageStore>,
    mut queue: mpsc::Receiver<Pending>,
    committed: mpsc::Sender<Committed>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        let entries: Vec<NewEntry> = batch.iter().map(|p| p.entry.clone()).collect();
        let started = std::time::Instant::now();
        let stored = store.append(&entries).await;
        metrics::histogram!("im_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("im_commit_batch_entries").record(entries.len() as f64);
        match stored {
            Ok(results) => {
                let duplicates = results
                    .iter()
                    .filter(|a| matches!(a, Appended::Duplicate(_)))
                    .count() as u64;
                metrics::counter!("im_sends_total", "outcome" => "stored")
                    .increment(results.len() as u64 - duplicates);
                metrics::counter!("im_sends_total", "outcome" => "duplicate").increment(duplicates);
                // Every entry goes to the fan-out, which answers its sender after pushing it:
                // an acknowledged entry is on its way to every online recipient, wherever the
                // node holding them. A resend is pushed again too: its first push may have died
                // with the node that stored it before answering. Clients drop repeats by seq.
                for (pending, appended) in batch.drain(..).zip(results) {
                    let entry = Committed {
                        appended,
                        session_id: pending.session_id,
                        done: pending.done,
                    };
                    if committed.send(entry).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, entries = batch.len(), "a batch was not stored");
                metrics::counter!("im_sends_total", "outcome" => "failed")
                    .increment(batch.len() as u64);
                let error = Arc::new(error);
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(error.clone()));
                }
            }
        }
    }
}
