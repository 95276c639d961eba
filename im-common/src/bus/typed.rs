//! The typed bus: payloads go on the subject their type names ([`BusEvent`], [`BusRequest`])
//! and answers decode as the reply their request names, so no call site encodes, picks a
//! subject or decodes by hand.
//!
//! - [`emit`](dyn Bus::emit) publishes an event; [`events`](dyn Bus::events) follows one kind.
//! - [`call`](dyn Bus::call) asks and decodes the answer; a refusal in it is an error.
//! - [`serve`] answers one kind of request with a handler, a bounded number at a time.

use std::{future::Future, marker::PhantomData, sync::Arc, time::Duration};

use bytes::Bytes;
use im_proto::{
    ErrorCode,
    bus::{BusEvent, BusReply, BusRequest, is_under},
    v1,
};
use prost::Message;

use super::{
    error::BusError,
    transport::{Bus, BusMessage, Subscription},
};

/// Encodes a protobuf payload.
pub fn encode(message: &impl prost::Message) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// Answers a request received in `message` (nothing to do if it asked for no answer).
pub async fn respond(bus: &dyn Bus, message: &BusMessage, payload: Bytes) -> Result<(), BusError> {
    match &message.reply {
        Some(reply) => bus.publish(reply, payload).await,
        None => Ok(()),
    }
}

impl dyn Bus {
    /// Publishes `event` on its subject.
    pub async fn emit<E: BusEvent>(&self, event: &E) -> Result<(), BusError> {
        self.publish(E::SUBJECT, encode(event)).await
    }

    /// Publishes `event` on `subject`, one of its subject's per-node subjects
    /// (`im.deliver.<node>`).
    pub async fn emit_to<E: BusEvent>(&self, subject: &str, event: &E) -> Result<(), BusError> {
        debug_assert!(
            is_under(subject, E::SUBJECT),
            "{subject} is not under {}",
            E::SUBJECT
        );
        self.publish(subject, encode(event)).await
    }

    /// Asks `request` on its subject and decodes the answer; an answer carrying a refusal is
    /// [`BusError::Refused`].
    pub async fn call<R: BusRequest>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Reply, BusError> {
        self.call_to(R::SUBJECT, request, timeout).await
    }

    /// [`Self::call`] on `subject`, one of its subject's per-node subjects (`im.node.<node>`).
    pub async fn call_to<R: BusRequest>(
        &self,
        subject: &str,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Reply, BusError> {
        debug_assert!(
            is_under(subject, R::SUBJECT),
            "{subject} is not under {}",
            R::SUBJECT
        );
        let answer = self.request(subject, encode(request), timeout).await?;
        let reply = R::Reply::decode(answer).map_err(|source| BusError::Malformed {
            subject: subject.to_owned(),
            source,
        })?;
        match reply.refusal() {
            Some(error) => Err(BusError::Refused {
                subject: subject.to_owned(),
                error: error.clone(),
            }),
            None => Ok(reply),
        }
    }

    /// Every event of kind `E` published from now on.
    pub async fn events<E: BusEvent>(&self) -> Result<Events<E>, BusError> {
        self.events_on(E::SUBJECT).await
    }

    /// Every event of kind `E` published on `subject` (one of its per-node subjects) from now
    /// on.
    pub async fn events_on<E: BusEvent>(&self, subject: &str) -> Result<Events<E>, BusError> {
        debug_assert!(
            is_under(subject, E::SUBJECT),
            "{subject} is not under {}",
            E::SUBJECT
        );
        Ok(Events {
            subscription: self.subscribe(subject).await?,
            kind: PhantomData,
        })
    }

    /// Requests of kind `R` on `subject` (its subject, or one of its per-node ones), each to
    /// one member of `group` when given, else to every subscriber.
    pub async fn requests<R: BusRequest>(
        &self,
        subject: &str,
        group: Option<&str>,
    ) -> Result<Requests<R>, BusError> {
        debug_assert!(
            is_under(subject, R::SUBJECT),
            "{subject} is not under {}",
            R::SUBJECT
        );
        let subscription = match group {
            Some(group) => self.queue_subscribe(subject, group).await?,
            None => self.subscribe(subject).await?,
        };
        Ok(Requests {
            subscription,
            kind: PhantomData,
        })
    }
}

/// Events of one kind, decoded. An event that does not decode is logged, counted in
/// `im_bus_malformed_total` and skipped: one bad publisher must not stop a follower.
#[derive(Debug)]
pub struct Events<E> {
    subscription: Subscription,
    kind: PhantomData<fn() -> E>,
}

impl<E: BusEvent> Events<E> {
    /// The next event; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<E> {
        loop {
            let message = self.subscription.next().await?;
            match E::decode(message.payload) {
                Ok(event) => return Some(event),
                Err(error) => malformed(E::SUBJECT, &error),
            }
        }
    }

    /// The next event with the subject it came on (for per-node subjects).
    pub async fn next_with_subject(&mut self) -> Option<(String, E)> {
        loop {
            let message = self.subscription.next().await?;
            match E::decode(message.payload) {
                Ok(event) => return Some((message.subject, event)),
                Err(error) => malformed(E::SUBJECT, &error),
            }
        }
    }
}

fn malformed(subject: &'static str, error: &prost::DecodeError) {
    tracing::warn!(subject, %error, "undecodable bus payload dropped");
    metrics::counter!("im_bus_malformed_total", "subject" => subject).increment(1);
}

/// Requests of one kind, as they arrive.
#[derive(Debug)]
pub struct Requests<R> {
    subscription: Subscription,
    kind: PhantomData<fn() -> R>,
}

impl<R: BusRequest> Requests<R> {
    /// The next request; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Incoming<R>> {
        let message = self.subscription.next().await?;
        Some(Incoming {
            request: R::decode(message.payload),
            responder: Responder {
                reply: message.reply,
                kind: PhantomData,
            },
        })
    }
}

/// A request received, and where its answer goes.
#[derive(Debug)]
pub struct Incoming<R> {
    /// The request, or why it does not decode.
    pub request: Result<R, prost::DecodeError>,
    /// Where the answer goes.
    pub responder: Responder<R>,
}

/// Where the answer to one request goes.
#[derive(Debug)]
pub struct Responder<R> {
    reply: Option<String>,
    kind: PhantomData<fn() -> R>,
}

impl<R: BusRequest> Responder<R> {
    /// Sends `reply` to the asker (nothing happens if it asked for no answer).
    pub async fn answer(&self, bus: &dyn Bus, reply: &R::Reply) -> Result<(), BusError> {
        match &self.reply {
            Some(subject) => bus.publish(subject, encode(reply)).await,
            None => Ok(()),
        }
    }
}

/// Answers every request of kind `R` with `handler`, each to one member of `group` on a
/// shared bus, at most `concurrency` at once (more wait their turn). A request that does not
/// decode is answered with a refusal (INVALID_ARGUMENT) rather than left to time out.
///
/// The subscription is made before this returns, so a request sent afterwards finds the
/// responder; the returned future answers until the bus is gone (spawn it).
pub async fn serve<R, F, Fut>(
    bus: Arc<dyn Bus>,
    group: &str,
    concurrency: usize,
    handler: F,
) -> Result<impl Future<Output = ()> + Send + 'static, BusError>
where
    R: BusRequest,
    F: Fn(R) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R::Reply> + Send + 'static,
{
    let mut requests = bus.requests::<R>(R::SUBJECT, Some(group)).await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let handler = Arc::new(handler);
    Ok(async move {
        while let Some(Incoming { request, responder }) = requests.next().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (bus, handler) = (bus.clone(), handler.clone());
            tokio::spawn(async move {
                let reply = match request {
                    Ok(request) => handler(request).await,
                    Err(error) => {
                        tracing::warn!(subject = R::SUBJECT, %error, "malformed request");
                        R::Reply::refused(v1::Error::new(
                            ErrorCode::InvalidArgument,
                            format!("malformed request on {}: {error}", R::SUBJECT),
                        ))
                    }
                };
                if let Err(error) = responder.answer(bus.as_ref(), &reply).await {
                    tracing::warn!(subject = R::SUBJECT, %error, "answer not sent");
                }
                drop(slot);
            });
        }
    })
}
