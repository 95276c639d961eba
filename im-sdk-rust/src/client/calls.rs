//! The requests that wait for an answer: the app's calls (history, mark read, presence) while
//! offline or in flight, and every request on the wire by its request id.
//!
//! A call made while disconnected waits in the queue for the next connection, as long as the
//! client's request timeout allows; a call the server refused for a passing reason (a rate
//! limit) waits there out the delay the server asked for and is sent again, on this connection
//! or the next. Whatever goes on the wire (calls, sends, sync pages, pulls, pings) is kept here
//! under its request id until its answer comes, so that the answer finds what asked for it;
//! when the connection is lost, the calls on it go back to the queue to be asked again.
//!
//! Nothing here touches the socket (the connection task writes the frames and hands back the
//! answers), so the rules are tested on their own.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use im_proto::{
    ErrorCode,
    v1::{client_frame, server_frame},
};
use tokio::{sync::oneshot, time::Instant};

use super::delay_ms;
use crate::error::{Error, Result};

/// A call waiting for the connection or its answer.
pub(super) struct Call {
    /// The request, kept so that it can be sent again after a lost connection or a refusal.
    pub(super) body: client_frame::Body,
    done: oneshot::Sender<Result<server_frame::Body>>,
    /// When the caller stops waiting.
    deadline: Instant,
    /// After a retryable refusal: not to be sent again before this.
    not_before: Option<Instant>,
}

impl Call {
    /// A call made now, answered through `done`, given up after `timeout`.
    pub(super) fn new(
        body: client_frame::Body,
        done: oneshot::Sender<Result<server_frame::Body>>,
        timeout: Duration,
    ) -> Self {
        Self {
            body,
            done,
            deadline: Instant::now() + timeout,
            not_before: None,
        }
    }

    /// Gives the caller its answer (a caller that stopped waiting is no error).
    pub(super) fn answer(self, answer: Result<server_frame::Body>) {
        let _ = self.done.send(answer);
    }
}

/// What a request on the wire was, so that its answer finds its way.
pub(super) enum Request {
    /// A send, by client message id.
    Send(String),
    /// One of the app's calls.
    Call(Box<Call>),
    /// A page of the sync.
    Sync,
    /// A pull, by conversation.
    Pull(String),
    /// A heartbeat: its answer only shows the server is there.
    Ping,
}

/// The calls not on the wire, and every request that is.
#[derive(Default)]
pub(super) struct Requests {
    /// Calls made while disconnected or waiting out a retryable refusal, oldest first.
    queued: VecDeque<Call>,
    /// Requests on the wire, by request id.
    on_wire: HashMap<u64, Request>,
    /// The request id given last on this connection.
    last_id: u64,
}

impl Requests {
    /// A connection is authenticated: its ids follow the Hello's (1).
    pub(super) fn connected(&mut self) {
        self.last_id = 1;
    }

    /// Puts `request` on the wire under the connection's next id (which the frame must carry).
    pub(super) fn register(&mut self, request: Request) -> u64 {
        self.last_id += 1;
        self.on_wire.insert(self.last_id, request);
        self.last_id
    }

    /// Takes the request with this id off the wire: its answer came, or it could not be
    /// written. `None` for an id not (or no longer) on the wire, such as a call that expired.
    pub(super) fn take(&mut self, id: u64) -> Option<Request> {
        self.on_wire.remove(&id)
    }

    /// Queues a call until the connection is back.
    pub(super) fn queue(&mut self, call: Call) {
        self.queued.push_back(call);
    }

    /// The oldest queued call, whatever its retry time: a new connection sends them all.
    pub(super) fn next_queued(&mut self) -> Option<Call> {
        self.queued.pop_front()
    }

    /// Takes out the queued calls whose retry time has come, oldest first; the others stay.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Call> {
        let (due, waiting): (Vec<Call>, Vec<Call>) = self
            .queued
            .drain(..)
            .partition(|c| c.not_before.is_none_or(|t| t <= now));
        self.queued = waiting.into();
        due
    }

    /// The server refused a call. A passing refusal queues it until the delay the server asked
    /// for has passed, if the caller is still waiting by then; otherwise the caller learns why.
    pub(super) fn refused(&mut self, mut call: Box<Call>, error: Error) {
        let retry_at = Instant::now() + delay_ms(error.retry_after_ms.max(100));
        if error.is_retryable() && retry_at < call.deadline {
            // Retried on this connection when due, or on the next one.
            call.not_before = Some(retry_at);
            self.queued.push_back(*call);
        } else {
            call.answer(Err(error));
        }
    }

    /// Fails the calls whose deadline has passed at `now`: UNAVAILABLE for those never sent
    /// (the client was offline all along), TIMEOUT for those on the wire.
    pub(super) fn expire(&mut self, now: Instant) {
        let (expired, kept): (Vec<Call>, Vec<Call>) =
            self.queued.drain(..).partition(|c| c.deadline <= now);
        self.queued = kept.into();
        for call in expired {
            call.answer(Err(Error::new(
                ErrorCode::Unavailable,
                "not connected before the request timeout",
            )));
        }
        let late: Vec<u64> = self
            .on_wire
            .iter()
            .filter(|(_, r)| matches!(r, Request::Call(c) if c.deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            // An answer that still comes finds no request and is dropped.
            if let Some(Request::Call(call)) = self.on_wire.remove(&id) {
                call.answer(Err(Error::new(ErrorCode::Timeout, "no answer in time")));
            }
        }
    }

    /// The connection is gone, and nothing on it will be answered. The calls go back to the
    /// queue, to be asked again on the next connection; the rest is asked again by what made
    /// it (the sends are resent, the sync and the pulls start over).
    pub(super) fn connection_lost(&mut self) {
        for (_, request) in self.on_wire.drain() {
            if let Request::Call(call) = request {
                self.queued.push_back(*call);
            }
        }
    }

    /// The client stops: every queued caller learns why.
    pub(super) fn stop(&mut self, error: &Error) {
        for call in self.queued.drain(..) {
            call.answer(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use im_proto::v1::{MarkRead, ReadState};

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn call(timeout: Duration) -> (Call, oneshot::Receiver<Result<server_frame::Body>>) {
        let (done, answer) = oneshot::channel();
        let body = client_frame::Body::MarkRead(MarkRead {
            conversation_id: "d:alice:bob".into(),
            seq: 1,
        });
        (Call::new(body, done, timeout), answer)
    }

    fn code(answer: &mut oneshot::Receiver<Result<server_frame::Body>>) -> Option<ErrorCode> {
        answer.try_recv().unwrap().unwrap_err().error_code()
    }

    #[test]
    fn the_ids_of_a_connection_follow_the_hello_and_find_their_request() {
        let mut requests = Requests::default();
        requests.connected();
        assert_eq!(requests.register(Request::Sync), 2);
        assert_eq!(requests.register(Request::Pull("g:team".into())), 3);
        assert!(matches!(requests.take(3), Some(Request::Pull(c)) if c == "g:team"));
        assert!(requests.take(3).is_none(), "an answer is taken once");
        requests.connection_lost();
        requests.connected();
        assert_eq!(
            requests.register(Request::Ping),
            2,
            "each connection starts over"
        );
    }

    #[test]
    fn a_call_queued_offline_fails_as_unavailable_at_its_deadline() {
        let mut requests = Requests::default();
        let (queued, mut answer) = call(MINUTE);
        requests.queue(queued);
        requests.expire(Instant::now());
        assert!(answer.try_recv().is_err(), "still waiting");
        requests.expire(Instant::now() + 2 * MINUTE);
        assert_eq!(code(&mut answer), Some(ErrorCode::Unavailable));
        assert!(requests.next_queued().is_none());
    }

    #[test]
    fn a_call_on_the_wire_fails_as_timeout_at_its_deadline_and_its_late_answer_finds_nothing() {
        let mut requests = Requests::default();
        requests.connected();
        let (sent, mut answer) = call(MINUTE);
        let id = requests.register(Request::Call(Box::new(sent)));
        let sync = requests.register(Request::Sync);
        requests.expire(Instant::now() + 2 * MINUTE);
        assert_eq!(code(&mut answer), Some(ErrorCode::Timeout));
        assert!(requests.take(id).is_none());
        assert!(requests.take(sync).is_some(), "only calls expire");
    }

    #[test]
    fn a_lost_connection_queues_its_calls_again_and_forgets_the_other_requests() {
        let mut requests = Requests::default();
        requests.connected();
        let (sent, mut answer) = call(MINUTE);
        let id = requests.register(Request::Call(Box::new(sent)));
        requests.register(Request::Send("m1".into()));
        requests.connection_lost();
        assert!(requests.take(id).is_none());
        let again = requests.next_queued().expect("the call, queued again");
        assert!(matches!(again.body, client_frame::Body::MarkRead(_)));
        assert!(requests.next_queued().is_none(), "only the call");
        again.answer(Ok(server_frame::Body::ReadState(ReadState::default())));
        assert!(answer.try_recv().unwrap().is_ok());
    }

    #[test]
    fn a_passing_refusal_queues_the_call_until_the_delay_the_server_asked_for() {
        let mut requests = Requests::default();
        let (refused, mut answer) = call(MINUTE);
        let rate_limited = Error {
            retry_after_ms: 5_000,
            ..Error::new(ErrorCode::RateLimited, "slow down")
        };
        requests.refused(Box::new(refused), rate_limited);
        assert!(requests.due(Instant::now()).is_empty());
        assert_eq!(requests.due(Instant::now() + MINUTE / 2).len(), 1);
        assert!(answer.try_recv().is_err(), "still waiting");
    }

    #[test]
    fn a_refusal_the_caller_cannot_wait_out_or_a_retry_cannot_fix_reaches_the_caller() {
        let mut requests = Requests::default();
        let (short, mut too_late) = call(Duration::from_secs(1));
        let rate_limited = Error {
            retry_after_ms: 5_000,
            ..Error::new(ErrorCode::RateLimited, "slow down")
        };
        requests.refused(Box::new(short), rate_limited);
        assert_eq!(code(&mut too_late), Some(ErrorCode::RateLimited));
        let (refused, mut for_good) = call(MINUTE);
        requests.refused(Box::new(refused), Error::new(ErrorCode::NotAMember, "no"));
        assert_eq!(code(&mut for_good), Some(ErrorCode::NotAMember));
        assert!(requests.due(Instant::now() + MINUTE).is_empty());
    }

    #[test]
    fn stopping_answers_every_queued_call() {
        let mut requests = Requests::default();
        let (queued, mut answer) = call(MINUTE);
        requests.queue(queued);
        requests.stop(&Error::new(ErrorCode::Unavailable, "the client was closed"));
        assert_eq!(code(&mut answer), Some(ErrorCode::Unavailable));
    }
}
