//! What the server sends, and what the connection task does with it.
//!
//! A frame with a request id is an answer, taken to what asked for it ([`Requests`]): a send's
//! ack or refusal goes to the [`Sends`], a call's answer to its caller (or back to the queue
//! after a passing refusal), a sync page or a pull's page to the [`Timeline`]. A frame without
//! one is a push: an entry, a read state, a receipt, typing, presence, a conversation's state,
//! or the server ending the session (GoAway, a fatal error).
//!
//! Whatever moves a conversation goes through the [`Timeline`], and its [`Action`]s are carried
//! out here in order: the store writes, the events, the pulls; delivery acknowledgements for
//! what is held are batched and sent from here too. This is the other half of the task's
//! `impl` (the run loop is in [`connection`](super::connection)): frames are handled with the
//! task's whole state, and pulls and sync pages are written on the same link.
//!
//! [`Requests`]: super::calls::Requests
//! [`Sends`]: super::sends::Sends
//! [`Timeline`]: super::timeline::Timeline

use std::collections::HashMap;

use im_proto::{
    ErrorCode,
    v1::{
        self, DeliveryAck, MessageBody, PullRequest, SeqCursor, ServerFrame, SyncRequest,
        client_frame, server_frame,
    },
};
use prost::Message as _;
use tokio::time::Instant;

use super::{
    calls::Request,
    connection::{Connection, Ended},
    delay_ms,
    link::Link,
    timeline::Action,
};
use crate::{
    error::{Error, Result},
    types::{Body, Conversation, Event, Message},
};

/// Whether a refusal ends the client for good (a retry cannot fix it).
fn is_fatal(code: i32) -> bool {
    matches!(
        ErrorCode::try_from(code),
        Ok(ErrorCode::SessionReplaced
            | ErrorCode::TokenRevoked
            | ErrorCode::UserDisabled
            | ErrorCode::Unauthenticated
            | ErrorCode::UnsupportedVersion
            | ErrorCode::InvalidArgument)
    )
}

fn cursors(map: &HashMap<String, u64>) -> Vec<SeqCursor> {
    map.iter()
        .map(|(id, seq)| SeqCursor {
            conversation_id: id.clone(),
            seq: *seq,
        })
        .collect()
}

impl Connection {
    /// Asks for what moved while the client was away: the sync, from what it holds and has
    /// read. Its pages come back through [`Connection::on_frame`].
    pub(super) async fn sync(&mut self, link: &mut Link) -> Result<()> {
        let sync = SyncRequest {
            held: cursors(self.timeline.held()),
            read: cursors(&self.read),
            ..Default::default()
        };
        self.transmit(link, Request::Sync, client_frame::Body::Sync(sync))
            .await
    }

    /// Tells the server how far the conversations that moved are held (batched: the run loop
    /// calls this once the ack delay has passed).
    pub(super) async fn flush_acks(&mut self, link: &mut Link) -> Result<()> {
        let acks: Vec<SeqCursor> = self
            .unacked
            .drain()
            .filter_map(|id| {
                let seq = *self.timeline.held().get(&id)?;
                Some(SeqCursor {
                    conversation_id: id,
                    seq,
                })
            })
            .collect();
        if acks.is_empty() {
            return Ok(());
        }
        link.write(0, client_frame::Body::DeliveryAck(DeliveryAck { acks }))
            .await
    }

    /// Handles a frame from the server; `Some` when the session must end.
    pub(super) async fn on_frame(
        &mut self,
        link: &mut Link,
        frame: ServerFrame,
    ) -> Result<Option<Ended>> {
        let Some(body) = frame.body else {
            return Ok(None);
        };
        if frame.request_id != 0 {
            match self.requests.take(frame.request_id) {
                Some(Request::Send(client_msg_id)) => {
                    self.on_send_answer(link, &client_msg_id, body).await?
                }
                Some(Request::Call(call)) => match body {
                    server_frame::Body::Error(error) => self.requests.refused(call, error.into()),
                    other => {
                        // The device's own mark_read moves its conversation list too.
                        if let server_frame::Body::ReadState(state) = &other {
                            self.read
                                .insert(state.conversation_id.clone(), state.read_seq);
                            let (read_seq, unread_count) = (state.read_seq, state.unread_count);
                            self.touch(&state.conversation_id, |c| {
                                c.read_seq = read_seq;
                                c.unread_count = unread_count;
                            })
                            .await?;
                        }
                        call.answer(Ok(other));
                    }
                },
                Some(Request::Sync) => self.on_sync(link, body).await?,
                Some(Request::Pull(conversation)) => {
                    self.on_pull(link, &conversation, body).await?
                }
                // A ping's answer, or one to a call that expired.
                Some(Request::Ping) | None => {}
            }
            return Ok(None);
        }
        match body {
            server_frame::Body::Message(message) => {
                let actions = self.timeline.on_entry(Message::from(&message));
                self.act(link, actions).await?;
            }
            server_frame::Body::ReadState(state) => {
                self.read
                    .insert(state.conversation_id.clone(), state.read_seq);
                self.touch(&state.conversation_id, |c| {
                    c.read_seq = state.read_seq;
                    c.unread_count = state.unread_count;
                })
                .await?;
                self.emit(Event::ReadState {
                    conversation_id: state.conversation_id,
                    read_seq: state.read_seq,
                    unread_count: state.unread_count,
                });
            }
            server_frame::Body::ReadReceipt(receipt) => {
                self.emit(Event::Receipt {
                    conversation_id: receipt.conversation_id,
                    user_id: receipt.user_id,
                    read_seq: receipt.read_seq,
                });
            }
            server_frame::Body::Typing(typing) => {
                self.emit(Event::Typing {
                    conversation_id: typing.conversation_id,
                    user_id: typing.user_id,
                    active: typing.active,
                });
            }
            server_frame::Body::Presence(presence) => self.emit(Event::Presence(presence)),
            server_frame::Body::Conversation(state) => self.on_conversation(link, &state).await?,
            // Pushes may have been lost: sync on this connection, once the server's wait is
            // over (the run loop sends it).
            server_frame::Body::Resync(resync) => {
                self.resync_due = Some(Instant::now() + delay_ms(resync.sync_after_ms));
            }
            server_frame::Body::GoAway(go_away) => {
                let error = Error {
                    code: go_away.code,
                    message: go_away.message,
                    retry_after_ms: 0,
                };
                return Ok(Some(if go_away.code == ErrorCode::TokenExpired as i32 {
                    Ended::TokenExpired
                } else if is_fatal(go_away.code) {
                    Ended::Fatal(error)
                } else {
                    Ended::Lost(error.to_string(), delay_ms(go_away.reconnect_after_ms))
                }));
            }
            server_frame::Body::Error(error) if error.code == ErrorCode::TokenExpired as i32 => {
                return Ok(Some(Ended::TokenExpired));
            }
            server_frame::Body::Error(error) if is_fatal(error.code) => {
                return Ok(Some(Ended::Fatal(error.into())));
            }
            // Other pushes (and unknown ones, from a newer server) are ignored.
            _ => {}
        }
        Ok(None)
    }

    /// The answer to a send; once acknowledged, the sender's own entry takes its place in the
    /// conversation like any other.
    async fn on_send_answer(
        &mut self,
        link: &mut Link,
        client_msg_id: &str,
        body: server_frame::Body,
    ) -> Result<()> {
        let acked = self
            .sends
            .on_answer(&*self.store, client_msg_id, body)
            .await?;
        let Some((ack, outgoing)) = acked else {
            return Ok(());
        };
        let body = MessageBody::decode(outgoing.body.as_slice()).ok();
        let own = Message {
            conversation_id: ack.conversation_id,
            seq: ack.seq,
            server_msg_id: ack.server_msg_id,
            sender_user_id: self.user_id.clone(),
            sender_device_id: self.device_id.clone(),
            client_msg_id: ack.client_msg_id,
            server_time_ms: ack.server_time_ms,
            body: Body::from(body.as_ref()),
            state: None,
        };
        let actions = self.timeline.on_entry(own);
        self.act(link, actions).await
    }

    /// Carries out the timeline's actions in order; the first failure ends them (and the
    /// session: the sync after the reconnect starts again from what was stored).
    async fn act(&mut self, link: &mut Link, actions: Vec<Action>) -> Result<()> {
        for action in actions {
            match action {
                Action::Store(message) => self.store.put_message(&message).await?,
                Action::SetHeld { conversation, seq } => {
                    self.store.set_held(&conversation, seq).await?;
                    self.timeline.held_stored(&conversation, seq);
                }
                Action::Advance {
                    conversation,
                    held,
                    from_others,
                } => {
                    // Messages from others newer than what the conversation's state already
                    // counts.
                    self.touch(&conversation, |c| {
                        let fresh = from_others
                            .iter()
                            .filter(|seq| **seq > c.last_seq && **seq > c.read_seq)
                            .count() as u64;
                        c.unread_count += fresh;
                        c.last_seq = c.last_seq.max(held);
                    })
                    .await?;
                    self.unacked.insert(conversation);
                }
                Action::Show(message) => {
                    let event = match message.body {
                        Body::Content(_) => Event::Message(message),
                        _ => Event::Change(message),
                    };
                    self.emit(event);
                }
                Action::Pull {
                    conversation,
                    after_seq,
                } => {
                    let body = client_frame::Body::Pull(PullRequest {
                        conversation_id: conversation.clone(),
                        after_seq,
                        limit: 0,
                    });
                    self.transmit(link, Request::Pull(conversation), body)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn on_pull(
        &mut self,
        link: &mut Link,
        conversation: &str,
        body: server_frame::Body,
    ) -> Result<()> {
        match body {
            server_frame::Body::Messages(page) => {
                let actions = self.timeline.on_page(conversation, &page);
                self.act(link, actions).await
            }
            // A passing refusal: reconnect, sync and pull again (the connection's end forgets
            // the pull).
            server_frame::Body::Error(error) if Error::from(error.clone()).is_retryable() => {
                Err(error.into())
            }
            // Refused for good (the user left, say).
            _ => {
                self.timeline.on_pull_refused(conversation);
                Ok(())
            }
        }
    }

    async fn on_sync(&mut self, link: &mut Link, body: server_frame::Body) -> Result<()> {
        let sync = match body {
            server_frame::Body::Sync(sync) => sync,
            // Without a sync the client would miss what moved: reconnect and sync again.
            server_frame::Body::Error(error) => return Err(error.into()),
            _ => return Ok(()),
        };
        for state in &sync.conversations {
            self.on_conversation(link, state).await?;
        }
        if !sync.next_page_token.is_empty() {
            let next = SyncRequest {
                page_token: sync.next_page_token,
                ..Default::default()
            };
            self.transmit(link, Request::Sync, client_frame::Body::Sync(next))
                .await?;
        }
        Ok(())
    }

    /// Updates the stored state of a conversation (created if the client did not know it yet:
    /// a 1:1 conversation starts with its first message).
    async fn touch(
        &mut self,
        conversation: &str,
        change: impl FnOnce(&mut Conversation),
    ) -> Result<()> {
        let mut state = self
            .store
            .conversations()
            .await?
            .into_iter()
            .find(|c| c.conversation_id == conversation)
            .unwrap_or_else(|| Conversation {
                conversation_id: conversation.to_owned(),
                kind: if conversation.starts_with("d:") {
                    v1::ConversationType::Direct as i32
                } else {
                    v1::ConversationType::Group as i32
                },
                last_seq: 0,
                read_seq: 0,
                unread_count: 0,
                active: true,
            });
        change(&mut state);
        self.store.put_conversation(&state).await
    }

    async fn on_conversation(
        &mut self,
        link: &mut Link,
        state: &v1::ConversationState,
    ) -> Result<()> {
        if !state.active {
            // Out of the conversation: what the client knew of it stays, marked inactive.
            let known = self
                .store
                .conversations()
                .await?
                .into_iter()
                .find(|c| c.conversation_id == state.conversation_id);
            let conversation = match known {
                Some(known) => Conversation {
                    active: false,
                    ..known
                },
                None => Conversation::from(state),
            };
            self.store.put_conversation(&conversation).await?;
            self.emit(Event::Conversation(conversation));
            return Ok(());
        }
        let floor = self
            .timeline
            .on_visible_from(&state.conversation_id, state.visible_from_seq);
        self.act(link, floor).await?;
        let conversation = Conversation::from(state);
        self.read
            .insert(conversation.conversation_id.clone(), conversation.read_seq);
        self.store.put_conversation(&conversation).await?;
        self.emit(Event::Conversation(conversation));
        let catch_up = self
            .timeline
            .on_last_seq(&state.conversation_id, state.last_seq);
        self.act(link, catch_up).await
    }
}
