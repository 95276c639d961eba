//! Scenario `idle`: the server's memory per idle authenticated connection (upgrade, Hello,
//! Welcome, then nothing), at each connection count asked for.
//!
//! Baseline: the bare tokio TCP holder (this tool's `hold-tcp`), holding as many plain TCP
//! connections. Both are separate processes, so each RSS is its own; the figure that matters is
//! how much more the server takes per connection than a task holding a socket.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};

use super::{Ctx, num};
use crate::{
    client,
    procs::{Holder, Server},
    report::{Outcome, Row, verdict},
    util::{Result, human_count, open_many},
};

/// Opens `count` authenticated connections to a fresh server and `count` plain TCP connections
/// to a fresh bare holder; memory per connection of each (RSS after - before, over count).
async fn idle_one(ctx: &Ctx, count: usize, concurrency: usize) -> Result<Value> {
    let server = Arc::new(Server::start(&ctx.server_bin, &[]).await?);
    let addr = server.ws;
    // One connection first, so the baseline includes what a first session allocates.
    let first = client::connect(addr, &server.token("first", "d")?, "d").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib()?;
    let s = server.clone();
    let opened = open_many("idle im-server", count, concurrency, move |n| {
        let token = s.token(&format!("idle{n}"), "d");
        async move { client::connect(addr, &token?, "d").await }
    })
    .await;
    if let Some(error) = opened.error {
        return Err(format!("idle: after {} connections: {error}", opened.held.len()).into());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib()?;
    let server_held = opened.held.len();
    drop((opened.held, first));
    drop(server);

    let holder = Holder::start().await?;
    let to = holder.addr;
    let first = client::tcp_accepted(to).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let holder_before = holder.rss_kib()?;
    let held = open_many(
        "idle bare holder",
        count,
        concurrency,
        move |_| async move { client::tcp_accepted(to).await },
    )
    .await;
    if let Some(error) = held.error {
        return Err(format!("idle holder: {error}").into());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let holder_after = holder.rss_kib()?;
    let holder_held = held.held.len();
    drop((held.held, first));
    let per = |b: u64, a: u64| a.saturating_sub(b) as f64 * 1024.0 / count as f64;
    Ok(json!({
        "requested": count,
        // The connections actually held while the memory was read.
        "connections": server_held,
        "server": {
            "connections": server_held,
            "rss_kib_before": before,
            "rss_kib_after": after,
            "bytes_per_connection": per(before, after),
            "connects_per_sec": count as f64 / opened.elapsed.as_secs_f64(),
        },
        "holder": {
            "connections": holder_held,
            "rss_kib_before": holder_before,
            "rss_kib_after": holder_after,
            "bytes_per_connection": per(holder_before, holder_after),
        },
    }))
}

/// Scenario `idle`: memory per idle authenticated connection, at each count.
pub(crate) async fn idle(ctx: &Ctx, counts: &[usize], concurrency: usize) -> Result<Outcome> {
    let mut results = Vec::new();
    let mut rows = Vec::new();
    for &count in counts {
        eprintln!("idle: {count} connections");
        let r = idle_one(ctx, count, concurrency).await?;
        let server = num(&r["server"], "bytes_per_connection");
        let holder = num(&r["holder"], "bytes_per_connection");
        let above = server - holder;
        rows.push(Row::new(
            format!("idle: RSS per connection at {}", human_count(count as f64)),
            format!("{:.2} KiB", server / 1024.0),
            format!("{:.2} KiB (bare tokio TCP holder)", holder / 1024.0),
            format!(
                "<= 8 KiB above: {:.2} KiB above, {}",
                above / 1024.0,
                verdict(above <= 8192.0)
            ),
        ));
        results.push(r);
    }
    Ok(Outcome {
        name: "idle",
        json: Value::Array(results),
        rows,
    })
}
