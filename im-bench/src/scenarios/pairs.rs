//! Sender -> receiver pairs and the paced load over them, shared by the `latency` scenario
//! (pairs on one server) and the `cluster` scenario (each receiver on the node after its
//! sender's). Not a scenario of its own.
//!
//! The load is open-loop: each sender follows a fixed schedule and stamps every body with the
//! time it was due, not the time it went out, so a sender (or server) that falls behind shows
//! as latency instead of silently lowering the offered rate.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

use super::{BODY, Login, StopOnDrop, connect_in_order, receivers};
use crate::{
    client::{self, Measure, Ws},
    util::{Progress, Result, human_us, micros_histogram, quantiles, wait_for},
};

/// The schedule of one paced sender.
struct Pace {
    /// Messages it sends.
    per_sender: usize,
    /// Messages per second.
    rate: f64,
    /// Where send times are counted from (shared with the receivers).
    origin: Instant,
    /// When the first message is due.
    start: Instant,
    /// Counts what was sent.
    sent_count: Arc<AtomicU64>,
}

/// What one paced sender did.
struct Paced {
    /// Sends the server refused.
    refused: u64,
    /// When its last send was flushed (before its acks were all in).
    last_send: Instant,
}

/// Sends `per_sender` messages at `rate` per second on a fixed schedule from `start`; each
/// body carries its scheduled send time (µs since `origin`), so a sender that falls behind
/// shows as latency. Returns once every ack (or refusal) is in.
async fn paced_sender(ws: Ws, conversation: String, prefix: String, pace: Pace) -> Result<Paced> {
    let Pace {
        per_sender,
        rate,
        origin,
        start,
        sent_count,
    } = pace;
    let (mut sink, mut stream) = ws.split();
    let reader = tokio::spawn(async move {
        let mut refused = 0u64;
        let mut acked = 0u64;
        while acked + refused < per_sender as u64 {
            match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Ok(Some(Ok(message))) => match client::decode(&message).and_then(|f| f.body) {
                    Some(im_proto::v1::server_frame::Body::SendAck(_)) => acked += 1,
                    Some(im_proto::v1::server_frame::Body::Error(_)) => refused += 1,
                    _ => {}
                },
                _ => break,
            }
        }
        refused
    });
    tokio::time::sleep_until(start.into()).await;
    let mut sent = 0usize;
    while sent < per_sender {
        let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(per_sender);
        while sent < due {
            let at = start + Duration::from_secs_f64(sent as f64 / rate);
            let micros = at.duration_since(origin).as_micros();
            let body = client::send(
                &conversation,
                format!("{prefix}-{sent}"),
                &format!("t{micros} {BODY}"),
            );
            sink.feed(client::frame(sent as u64 + 1, body)).await?;
            sent += 1;
            sent_count.fetch_add(1, Ordering::Relaxed);
        }
        sink.flush().await?;
        if sent < per_sender {
            let next = start + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(next.into()).await;
        }
    }
    let last_send = Instant::now();
    let refused = reader.await.unwrap_or(0);
    Ok(Paced { refused, last_send })
}

/// A sender and its receiver: where each logs in, and their 1:1 conversation.
pub(super) struct Pair {
    pub(super) sender: Login,
    pub(super) receiver: Login,
    pub(super) conversation: String,
}

/// What a paced load measured.
pub(super) struct PacedRun {
    /// Messages sent.
    pub(super) sent: u64,
    /// From the first scheduled send to the last sender's last flush.
    send_secs: f64,
    /// From the first scheduled send to the last ack (or refusal).
    acks_done_secs: f64,
    /// Sends the server refused.
    refused: u64,
    /// Distinct entries the receivers got.
    pub(super) delivered: u64,
    /// Send (scheduled) to deliver, in µs.
    pub(super) latency: hdrhistogram::Histogram<u64>,
}

impl PacedRun {
    /// The send rate achieved, messages per second.
    pub(super) fn achieved(&self) -> f64 {
        self.sent as f64 / self.send_secs.max(1e-6)
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "sent": self.sent,
            "send_secs": self.send_secs,
            "achieved_send_per_sec": self.achieved(),
            "acks_done_secs": self.acks_done_secs,
            "refused": self.refused,
            "delivered": self.delivered,
            "latency": quantiles(&self.latency),
        })
    }
}

/// `p50 .. / p99 .. / p99.9 ..` of a microsecond histogram.
pub(super) fn p50_p99_p999(histogram: &hdrhistogram::Histogram<u64>) -> String {
    format!(
        "p50 {} / p99 {} / p99.9 {}",
        human_us(histogram.value_at_quantile(0.5)),
        human_us(histogram.value_at_quantile(0.99)),
        human_us(histogram.value_at_quantile(0.999))
    )
}

/// Pairs connected: the senders in the pairs' order, and the receivers counting what arrives
/// into `delivered` and timing the bodies that carry a send time (µs since `origin`).
pub(super) struct ConnectedPairs {
    pub(super) senders: Vec<Ws>,
    pub(super) conversations: Vec<String>,
    delivered: Arc<AtomicU64>,
    origin: Instant,
    receivers: Vec<tokio::task::JoinHandle<hdrhistogram::Histogram<u64>>>,
    /// Stops the receivers however the scenario ends.
    stop: StopOnDrop,
}

impl ConnectedPairs {
    /// Connects the pairs' receivers, then their senders, `at_once` at a time.
    pub(super) async fn connect(pairs: &[Pair], at_once: usize, label: &str) -> Result<Self> {
        let delivered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let origin = Instant::now();
        let receivers = receivers(
            pairs.iter().map(|p| p.receiver.clone()).collect(),
            at_once,
            &delivered,
            &stop,
            Measure::Latency(origin),
            &format!("{label} receivers"),
        )
        .await?;
        let stop = StopOnDrop(stop);
        let senders = connect_in_order(
            pairs.iter().map(|p| p.sender.clone()).collect(),
            at_once,
            &format!("{label} senders"),
        )
        .await?;
        Ok(Self {
            senders,
            conversations: pairs.iter().map(|p| p.conversation.clone()).collect(),
            delivered,
            origin,
            receivers,
            stop,
        })
    }

    /// What the receivers have got so far.
    pub(super) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Waits until the receivers have `target` entries in all, or stall for 10 s; the count
    /// and the time from `since` to the last one.
    pub(super) async fn wait_delivered(&self, target: u64, since: Instant) -> (u64, Duration) {
        wait_for(&self.delivered, target, since, Duration::from_secs(10)).await
    }

    /// Stops the receivers: their send-to-deliver times, merged.
    async fn finish(self) -> Result<hdrhistogram::Histogram<u64>> {
        let Self {
            receivers, stop, ..
        } = self;
        drop(stop);
        let mut latency = micros_histogram();
        for receiver in receivers {
            let _ = latency.add(&receiver.await?);
        }
        Ok(latency)
    }
}

/// Has the connected senders share `rate` messages/s for `seconds` on a fixed schedule
/// ([`paced_sender`]), then stops the receivers. Client message ids start with `prefix`,
/// progress lines with `label`.
pub(super) async fn paced_load(
    mut connected: ConnectedPairs,
    rate: u64,
    seconds: f64,
    prefix: &str,
    label: &str,
) -> Result<PacedRun> {
    let count = connected.senders.len().max(1);
    let per_sender = ((rate as f64 * seconds) / count as f64).ceil().max(1.0) as usize;
    let total = (per_sender * connected.senders.len()) as u64;
    let before = connected.delivered();
    let progress = Progress::new(&format!("{label} sent"), total);
    let sent = progress.counter();
    let start = Instant::now() + Duration::from_millis(100);
    let per_rate = rate as f64 / count as f64;
    let senders = std::mem::take(&mut connected.senders);
    let mut tasks = Vec::new();
    for (ws, conversation) in senders.into_iter().zip(&connected.conversations) {
        tasks.push(tokio::spawn(paced_sender(
            ws,
            conversation.clone(),
            prefix.to_owned(),
            Pace {
                per_sender,
                rate: per_rate,
                origin: connected.origin,
                start,
                sent_count: sent.clone(),
            },
        )));
    }
    let mut refused = 0;
    let mut last_send = start;
    for task in tasks {
        let done = task.await??;
        refused += done.refused;
        last_send = last_send.max(done.last_send);
    }
    // Sending ends at the last sender's last flush; the acks drain after that.
    let send_secs = last_send.duration_since(start).as_secs_f64();
    let acks_done_secs = start.elapsed().as_secs_f64();
    drop(progress);
    let (got, _) = connected.wait_delivered(before + total, start).await;
    Ok(PacedRun {
        sent: total,
        send_secs,
        acks_done_secs,
        refused,
        delivered: got - before,
        latency: connected.finish().await?,
    })
}
