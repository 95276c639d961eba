//! Scenario `fanout`: group fan-out. One sender posts to a group of which a fraction of the
//! members is connected; the figure is deliveries per second to the online members (each new
//! entry counted once, however often it is pushed).
//!
//! Baseline: raw nats-server 1->N pub/sub, one publisher and as many subscriber connections as
//! online members, payloads the size of the pushed entry. It is what a broker alone does with
//! the same fan-out, without storing, ordering or acknowledging anything.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use prost::Message as _;
use serde_json::{Value, json};

use super::{BODY, Ctx, StopOnDrop, key_metrics, logins, num, receivers};
use crate::{
    client::{self, Measure},
    procs::{Kind, Server, Sidecar},
    report::{Outcome, Row, verdict},
    util::{Progress, Result, human_count, now_ms, quantiles, wait_for},
};

/// The size of a pushed entry carrying `text` (the NATS baseline sends payloads this large).
fn push_size(text: &str) -> usize {
    let frame = im_proto::v1::ServerFrame {
        request_id: 0,
        body: Some(im_proto::v1::server_frame::Body::Message(
            im_proto::v1::Message {
                conversation_id: "g:bench".into(),
                seq: 1000,
                server_msg_id: "0123456789abcdef0123".into(),
                sender_user_id: "fsend".into(),
                sender_device_id: "d".into(),
                client_msg_id: "fan-100".into(),
                server_time_ms: now_ms(),
                body: Some(client::text(text)),
                state: None,
            },
        )),
    };
    frame.encoded_len()
}

/// Scenario `fanout`: one sender posts `messages` to a group of `size` members of whom
/// `online` (a fraction) are connected; deliveries per second. Baseline: nats-server, one
/// publisher and as many subscribers as online members, the same payload size.
pub(crate) async fn fanout(
    ctx: &Ctx,
    size: usize,
    online: f64,
    messages: usize,
    window: usize,
) -> Result<Outcome> {
    eprintln!(
        "fanout: group of {size}, {:.0}% online, {messages} messages",
        online * 100.0
    );
    let online_count = ((size as f64 * online).round() as usize).clamp(1, size);
    let server = Arc::new(Server::start(&ctx.server_bin, &[]).await?);
    let members: Vec<String> = (0..size).map(|i| format!("fm{i}")).collect();
    let mut users = members.clone();
    users.push("fsend".into());
    server.import_users(&users).await?;
    server.create_group("bench", "fsend", &members).await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = receivers(
        logins(&server, &members[..online_count])?,
        64,
        &delivered,
        &stop,
        Measure::Count,
        "fanout receivers",
    )
    .await?;
    let stop_guard = StopOnDrop(stop.clone());
    let mut sender = client::connect(server.ws, &server.token("fsend", "d")?, "d").await?;
    let target = (messages * online_count) as u64;
    let progress = Progress::with_counter("fanout deliveries", target, delivered.clone());
    let acked = AtomicU64::new(0);
    let started = Instant::now();
    let acks = client::send_windowed(
        &mut sender,
        "g:bench",
        "fan",
        messages,
        window,
        BODY,
        &acked,
    )
    .await?;
    let (got, elapsed) = wait_for(&delivered, target, started, Duration::from_secs(10)).await;
    drop(stop_guard);
    drop(progress);
    for task in tasks {
        let _ = task.await;
    }
    let rate = got as f64 / elapsed.as_secs_f64();
    let metrics = server.metrics().await;
    drop(sender);
    drop(server);

    let nats = match &ctx.nats {
        Some(bin) => Some(nats_fanout(bin, online_count, messages, push_size(BODY)).await?),
        None => None,
    };
    let nats_rate = nats.as_ref().map_or(0.0, |n| num(n, "deliveries_per_sec"));
    let json = json!({
        "group_size": size,
        "online": online_count,
        "messages": messages,
        "expected_deliveries": target,
        "deliveries": got,
        "seconds": elapsed.as_secs_f64(),
        "deliveries_per_sec": rate,
        "send_ack": quantiles(&acks),
        "nats": nats,
        "server_metrics": key_metrics(&metrics),
    });
    let row = Row::new(
        format!("fanout: deliveries/s, group {size}, {online_count} online"),
        format!("{}/s ({got} of {target})", human_count(rate)),
        if nats.is_some() {
            format!(
                "{}/s (raw nats-server 1->{online_count})",
                human_count(nats_rate)
            )
        } else {
            "skipped (no nats-server)".into()
        },
        if nats.is_some() {
            format!(
                ">= 0.5 x NATS: {:.2} x, {}",
                rate / nats_rate.max(1.0),
                verdict(rate >= nats_rate / 2.0)
            )
        } else {
            ">= 0.5 x NATS".into()
        },
    );
    Ok(Outcome {
        name: "fanout",
        json,
        rows: vec![row],
    })
}

/// Raw NATS fan-out: `subscribers` connections subscribed to one subject, one publisher
/// publishing `messages` payloads of `payload` bytes; deliveries per second.
async fn nats_fanout(
    bin: &std::path::Path,
    subscribers: usize,
    messages: usize,
    payload: usize,
) -> Result<Value> {
    let nats = Sidecar::start(Kind::Nats { jetstream: false }, Some(bin))?;
    let delivered = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let client = async_nats::connect(nats.url.as_str()).await?;
        let mut sub = client.subscribe("bench.fanout").await?;
        client.flush().await?;
        let d = delivered.clone();
        tasks.push(tokio::spawn(async move {
            let _client = client;
            while sub.next().await.is_some() {
                d.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let publisher = async_nats::connect(nats.url.as_str()).await?;
    let body = bytes::Bytes::from(vec![b'x'; payload]);
    let target = (messages * subscribers) as u64;
    let progress = Progress::new("nats fanout deliveries", target);
    let started = Instant::now();
    for _ in 0..messages {
        publisher.publish("bench.fanout", body.clone()).await?;
    }
    publisher.flush().await?;
    let (got, elapsed) = wait_for(&delivered, target, started, Duration::from_secs(5)).await;
    drop(progress);
    for task in tasks {
        task.abort();
    }
    Ok(json!({
        "subscribers": subscribers,
        "messages": messages,
        "payload_bytes": payload,
        "deliveries": got,
        "seconds": elapsed.as_secs_f64(),
        "deliveries_per_sec": got as f64 / elapsed.as_secs_f64(),
    }))
}
