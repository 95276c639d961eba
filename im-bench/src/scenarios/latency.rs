//! Scenario `latency`: send-to-deliver latency at fixed offered loads. Sender -> receiver
//! pairs on one server share each rate on a fixed schedule (the paced load of `pairs`); the
//! figures are p50 / p99 / p99.9 from an HDR histogram, and the send rate achieved.
//!
//! Baseline: the same schedule and payloads through raw nats-server, one subject (and one
//! publisher and one subscriber connection) per pair: the latency of a broker hop alone.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{Value, json};

use super::{
    BODY, Ctx, key_metrics, logins,
    pairs::{ConnectedPairs, Pair, p50_p99_p999, paced_load},
};
use crate::{
    client,
    procs::{Kind, Server, Sidecar},
    report::{Outcome, Row, verdict},
    util::{Progress, Result, human_count, human_us, micros_histogram, quantiles},
};

/// Scenario `latency`: `pairs` sender -> receiver pairs share `rate` messages/s for `seconds`;
/// send-to-deliver p50/p99/p99.9 from an HDR histogram. Baseline: the same load through
/// nats-server (one subject per pair).
pub(crate) async fn latency(
    ctx: &Ctx,
    rates: &[u64],
    seconds: f64,
    pairs: usize,
) -> Result<Outcome> {
    let pairs = pairs.max(1);
    let server = Arc::new(Server::start(&ctx.server_bin, &[]).await?);
    let senders: Vec<String> = (0..pairs).map(|i| format!("ls{i}")).collect();
    let receivers: Vec<String> = (0..pairs).map(|i| format!("lr{i}")).collect();
    server
        .import_users(&[senders.clone(), receivers.clone()].concat())
        .await?;
    let sender_logins = logins(&server, &senders)?;
    let receiver_logins = logins(&server, &receivers)?;
    let pairs_of_users: Vec<Pair> = sender_logins
        .into_iter()
        .zip(receiver_logins)
        .enumerate()
        .map(|(i, (sender, receiver))| Pair {
            sender,
            receiver,
            conversation: client::direct(&senders[i], &receivers[i]),
        })
        .collect();
    let mut results = Vec::new();
    let mut rows = Vec::new();
    for (round, &rate) in rates.iter().enumerate() {
        eprintln!("latency: {rate} messages/s for {seconds} s over {pairs} pairs");
        let connected = ConnectedPairs::connect(&pairs_of_users, 64, "latency").await?;
        let run = paced_load(connected, rate, seconds, &format!("l{round}"), "latency").await?;
        let nats = match &ctx.nats {
            Some(bin) => Some(nats_latency(bin, rate, seconds, pairs).await?),
            None => None,
        };
        let p99 = run.latency.value_at_quantile(0.99);
        rows.push(Row::new(
            format!("latency: send->deliver at {}/s", human_count(rate as f64)),
            format!(
                "{} (sent at {}/s)",
                p50_p99_p999(&run.latency),
                human_count(run.achieved())
            ),
            match &nats {
                Some(n) => format!(
                    "p50 {} / p99 {} / p99.9 {} (raw NATS)",
                    human_us(n["latency"]["p50_us"].as_u64().unwrap_or(0)),
                    human_us(n["latency"]["p99_us"].as_u64().unwrap_or(0)),
                    human_us(n["latency"]["p999_us"].as_u64().unwrap_or(0)),
                ),
                None => "skipped (no nats-server)".into(),
            },
            if rate >= 50_000 {
                format!(
                    "p99 < 10 ms at 50,000/s: {}",
                    verdict(p99 < 10_000 && run.delivered == run.sent)
                )
            } else {
                "p99 < 10 ms (at 50,000/s)".into()
            },
        ));
        let mut figures = run.json();
        figures["offered_per_sec"] = json!(rate);
        figures["pairs"] = json!(pairs);
        figures["nats"] = json!(nats);
        figures["server_metrics_cumulative"] = json!(key_metrics(&server.metrics().await));
        results.push(figures);
    }
    Ok(Outcome {
        name: "latency",
        json: Value::Array(results),
        rows,
    })
}

/// The latency baseline through nats-server: `pairs` subjects, one subscriber connection and
/// one publisher connection each, the same schedule and payload.
async fn nats_latency(
    bin: &std::path::Path,
    rate: u64,
    seconds: f64,
    pairs: usize,
) -> Result<Value> {
    let nats = Sidecar::start(Kind::Nats { jetstream: false }, Some(bin))?;
    let per_sender = ((rate as f64 * seconds) / pairs as f64).ceil().max(1.0) as usize;
    let per_rate = rate as f64 / pairs as f64;
    let origin = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for i in 0..pairs {
        let client = async_nats::connect(nats.url.as_str()).await?;
        let mut sub = client.subscribe(format!("bench.lat.{i}")).await?;
        client.flush().await?;
        let d = delivered.clone();
        subs.push(tokio::spawn(async move {
            let _client = client;
            let mut hist = micros_histogram();
            let mut got = 0;
            while got < per_sender {
                let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), sub.next()).await
                else {
                    break;
                };
                got += 1;
                d.fetch_add(1, Ordering::Relaxed);
                let sent = std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|t| t.strip_prefix('t'))
                    .and_then(|t| t.split(' ').next())
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(sent) = sent {
                    let at = u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
                    hist.saturating_record(at.saturating_sub(sent).max(1));
                }
            }
            hist
        }));
    }
    // Every publisher connects first, so the schedule starts with all of them ready.
    let mut clients = Vec::new();
    for _ in 0..pairs {
        clients.push(async_nats::connect(nats.url.as_str()).await?);
    }
    let total = (per_sender * pairs) as u64;
    let progress = Progress::new("nats latency sent", total);
    let sent_count = progress.counter();
    let start = Instant::now() + Duration::from_millis(100);
    let mut pubs = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let sent_count = sent_count.clone();
        pubs.push(tokio::spawn(async move {
            let subject = format!("bench.lat.{i}");
            tokio::time::sleep_until(start.into()).await;
            let mut sent = 0usize;
            while sent < per_sender {
                let due = ((start.elapsed().as_secs_f64() * per_rate) as usize + 1).min(per_sender);
                while sent < due {
                    let at = start + Duration::from_secs_f64(sent as f64 / per_rate);
                    let micros = at.duration_since(origin).as_micros();
                    let payload = format!("t{micros} {BODY}");
                    client.publish(subject.clone(), payload.into()).await?;
                    sent += 1;
                    sent_count.fetch_add(1, Ordering::Relaxed);
                }
                client.flush().await?;
                if sent < per_sender {
                    let next = start + Duration::from_secs_f64(sent as f64 / per_rate);
                    tokio::time::sleep_until(next.into()).await;
                }
            }
            Ok::<_, crate::util::BoxError>(Instant::now())
        }));
    }
    let mut last_send = start;
    for p in pubs {
        last_send = last_send.max(p.await??);
    }
    let send_secs = last_send.duration_since(start).as_secs_f64();
    drop(progress);
    let mut hist = micros_histogram();
    for s in subs {
        let _ = hist.add(&s.await?);
    }
    Ok(json!({
        "sent": total,
        "send_secs": send_secs,
        "achieved_send_per_sec": total as f64 / send_secs.max(1e-6),
        "delivered": delivered.load(Ordering::Relaxed),
        "latency": quantiles(&hist),
    }))
}
