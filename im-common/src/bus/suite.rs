//! The suites every [`Bus`] and every [`Outbox`] implementation runs: the in-process ones in
//! their own tests, the NATS and JetStream ones against a real server.
//! `bus_suite!(async { Some((bus, subject_prefix)) })` and `outbox_suite!(async { Some(outbox) })`
//! (`None` skips: a server that is not there).

// A test suite: a panic is how it reports a failure.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use im_proto::v1;

use super::{
    error::BusError,
    outbox::{Outbox, OutboxReader},
    transport::{Bus, BusMessage, Subscription},
    typed::{respond, serve},
};

/// Runs every bus suite function, each as a test of its own, on the bus `$make` yields with a
/// subject prefix of its own (a server may be shared).
#[macro_export]
macro_rules! bus_suite {
    ($make:expr) => {
        $crate::bus_suite!(@each $make;
            fan_out,
            queue_groups,
            request_reply,
            unsubscribe_on_drop,
            typed_calls_and_events,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some((bus, prefix)) = $make.await else { return };
                $crate::bus::suite::$name(bus, &prefix).await;
            }
        )*
    };
}

/// Runs the outbox suite on the outbox `$make` yields (a fresh one, of its own name).
#[macro_export]
macro_rules! outbox_suite {
    ($make:expr) => {
        #[tokio::test]
        async fn an_outbox_keeps_items_until_acknowledged() {
            let Some(outbox) = $make.await else { return };
            $crate::bus::suite::keeps_items_until_acknowledged(outbox, "worker").await;
        }
    };
}

async fn next(subscription: &mut Subscription) -> BusMessage {
    tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("a message in time")
        .expect("the subscription is open")
}

/// Every subscriber of a subject gets each message; subjects are separate.
pub(crate) async fn fan_out(bus: Arc<dyn Bus>, prefix: &str) {
    let (member, group) = (format!("{prefix}.member"), format!("{prefix}.group"));
    let mut a = bus.subscribe(&member).await.unwrap();
    let mut b = bus.subscribe(&member).await.unwrap();
    let mut other = bus.subscribe(&group).await.unwrap();
    bus.publish(&member, Bytes::from_static(b"x"))
        .await
        .unwrap();
    bus.publish(&group, Bytes::from_static(b"y")).await.unwrap();
    assert_eq!(next(&mut a).await.payload, "x");
    assert_eq!(next(&mut b).await.payload, "x");
    assert_eq!(next(&mut other).await.payload, "y", "subjects are separate");
}

/// A queue group gets each message once, shared among its members; another group gets
/// every message too.
pub(crate) async fn queue_groups(bus: Arc<dyn Bus>, prefix: &str) {
    let subject = format!("{prefix}.auth");
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(bus.queue_subscribe(&subject, "business").await.unwrap());
    }
    let mut other = bus.queue_subscribe(&subject, "audit").await.unwrap();
    for n in 0..30u8 {
        bus.publish(&subject, Bytes::from(vec![n])).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..30 {
        seen.push(next(&mut other).await.payload[0]);
    }
    assert_eq!(
        seen,
        (0..30).collect::<Vec<u8>>(),
        "the other group gets all, in order"
    );
    let mut shared = Vec::new();
    while shared.len() < 30 {
        for member in &mut members {
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(20), member.next()).await
            {
                shared.push(m.payload[0]);
            }
        }
    }
    shared.sort_unstable();
    assert_eq!(
        shared,
        (0..30).collect::<Vec<u8>>(),
        "each message to one member"
    );
}

/// Requests find their responder; without one, or without an answer, they fail fast.
pub(crate) async fn request_reply(bus: Arc<dyn Bus>, prefix: &str) {
    let subject = format!("{prefix}.req");
    let err = bus
        .request(&subject, Bytes::new(), Duration::from_millis(500))
        .await;
    assert!(matches!(err, Err(BusError::NoResponders(_))), "{err:?}");
    let mut responder = bus.queue_subscribe(&subject, "business").await.unwrap();
    let server = bus.clone();
    tokio::spawn(async move {
        while let Some(message) = responder.next().await {
            let answer = [b"re:".as_slice(), &message.payload].concat();
            respond(server.as_ref(), &message, Bytes::from(answer))
                .await
                .unwrap();
        }
    });
    let answer = bus
        .request(&subject, Bytes::from_static(b"q"), Duration::from_secs(5))
        .await;
    assert_eq!(answer.unwrap(), "re:q");
    let silent_subject = format!("{prefix}.silent");
    let _silent = bus.subscribe(&silent_subject).await.unwrap();
    let err = bus
        .request(&silent_subject, Bytes::new(), Duration::from_millis(50))
        .await;
    assert!(matches!(err, Err(BusError::Timeout { .. })), "{err:?}");
}

/// A dropped subscription receives nothing more, and the others go on.
pub(crate) async fn unsubscribe_on_drop(bus: Arc<dyn Bus>, prefix: &str) {
    let subject = format!("{prefix}.ban");
    let dropped = bus.subscribe(&subject).await.unwrap();
    let mut kept = bus.subscribe(&subject).await.unwrap();
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.publish(&subject, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(next(&mut kept).await.payload, "after");
}

/// The typed layer on this bus: a served request is answered with its reply type, a refusal
/// comes back as an error with its code, a malformed request is refused rather than left to
/// time out, and events decode as their type.
pub(crate) async fn typed_calls_and_events(bus: Arc<dyn Bus>, prefix: &str) {
    // Typed subjects are fixed: a prefix of their own would not be theirs. Only the members
    // query is served here, under a queue group no other test uses.
    let _ = prefix;
    let group = format!("suite-{}", uuid_like());
    let serving = serve(
        bus.clone(),
        &group,
        4,
        |query: v1::MembersQuery| async move {
            if query.group_id == "gone" {
                v1::MemberList {
                    error: Some(v1::Error::new(
                        v1::ErrorCode::GroupNotFound,
                        "no such group",
                    )),
                    ..Default::default()
                }
            } else {
                v1::MemberList {
                    user_ids: vec![format!("{}-member", query.group_id)],
                    ..Default::default()
                }
            }
        },
    )
    .await
    .unwrap();
    let served = tokio::spawn(serving);
    let wait = Duration::from_secs(5);
    let query = |group_id: &str| v1::MembersQuery {
        group_id: group_id.into(),
        ..Default::default()
    };
    let list = bus.call(&query("team"), wait).await.unwrap();
    assert_eq!(list.user_ids, ["team-member"]);
    let refused = bus.call(&query("gone"), wait).await.unwrap_err();
    assert_eq!(refused.code(), v1::ErrorCode::GroupNotFound, "{refused}");
    let malformed = bus
        .request(im_proto::bus::MEMBERS, Bytes::from_static(b"\xff"), wait)
        .await
        .unwrap();
    let answer = <v1::MemberList as prost::Message>::decode(malformed).unwrap();
    assert_eq!(
        answer.error.map(|e| e.code()),
        Some(v1::ErrorCode::InvalidArgument),
        "a malformed request is refused, not left unanswered"
    );
    served.abort();

    let mut events = bus.events::<v1::MonitorAlert>().await.unwrap();
    bus.publish(im_proto::bus::MONITOR, Bytes::from_static(b"\xff"))
        .await
        .unwrap();
    let alert = v1::MonitorAlert {
        name: format!("suite-{group}"),
        ..Default::default()
    };
    bus.emit(&alert).await.unwrap();
    let got = tokio::time::timeout(wait, events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got, alert,
        "the undecodable one was skipped, the next one decoded"
    );
}

/// A name no other run on a shared server uses.
fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), crate::now_ms())
}

/// Items come in order, each until acknowledged; a retried one comes again; an id put twice
/// is handed out once.
pub(crate) async fn keeps_items_until_acknowledged(outbox: Arc<dyn Outbox>, consumer: &str) {
    let quick = Duration::from_secs(30);
    for n in 1..=3u8 {
        outbox.put(Bytes::from(vec![n])).await.expect("stored");
    }
    let mut reader = outbox.take(consumer, quick).await.expect("taken");
    let next = async |reader: &mut OutboxReader| {
        tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .expect("an item in time")
            .expect("the outbox lives")
    };
    let first = next(&mut reader).await;
    assert_eq!((first.payload.as_ref(), first.attempt), (&[1u8][..], 1));
    first.retry(Duration::ZERO).await.expect("settled");
    // A retried item comes again (after the ones already on their way, at the latest).
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let item = next(&mut reader).await;
        seen.push((item.payload[0], item.attempt));
        item.ack().await.expect("settled");
    }
    seen.sort_unstable();
    assert_eq!(seen, [(1, 2), (2, 1), (3, 1)]);
    // Acknowledged items never come again; new ones do.
    let quiet = tokio::time::timeout(Duration::from_millis(500), reader.next()).await;
    assert!(quiet.is_err(), "nothing but new items");
    outbox.put(Bytes::from_static(&[4])).await.expect("stored");
    let item = next(&mut reader).await;
    assert_eq!((item.payload.as_ref(), item.attempt), (&[4u8][..], 1));
    item.ack().await.expect("settled");
    // An item put twice under one id is handed out once.
    for _ in 0..2 {
        outbox
            .put_once("five", Bytes::from_static(&[5]))
            .await
            .expect("stored");
    }
    outbox.put(Bytes::from_static(&[6])).await.expect("stored");
    let mut after = Vec::new();
    for _ in 0..2 {
        let item = next(&mut reader).await;
        after.push(item.payload[0]);
        item.ack().await.expect("settled");
    }
    assert_eq!(after, [5, 6], "the second put of 'five' stored nothing");
}
