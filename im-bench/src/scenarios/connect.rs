//! Scenario `connect`: a connect storm. Many connectors at once each open an authenticated
//! connection (TCP, WebSocket upgrade, Hello, Welcome) and hold it; the figures are connects
//! per second and the connect latency.
//!
//! Baseline: the same storm of plain TCP connects to the bare tokio holder, which answers one
//! byte on accept: the cost of a connection before any protocol, on the same machine.

use std::sync::Arc;

use serde_json::json;

use super::Ctx;
use crate::{
    client,
    procs::{Holder, Server},
    report::{Outcome, Row},
    util::{Result, human_count, human_us, open_many, quantiles},
};

/// Scenario `connect`: `total` connections with authentication (upgrade + Hello + Welcome)
/// opened by `connectors` concurrent connectors and held; connects per second. Baseline: the
/// same storm of plain TCP connects to the bare holder.
pub(crate) async fn connect(ctx: &Ctx, total: usize, connectors: usize) -> Result<Outcome> {
    eprintln!("connect: {total} connects, {connectors} concurrent");
    let server = Server::start(&ctx.server_bin, &[]).await?;
    let addr = server.ws;
    // Tokens are signed first, so the storm measures the server, not the signing.
    let tokens: Vec<String> = (0..total)
        .map(|n| server.token(&format!("c{n}"), "d"))
        .collect::<Result<_>>()?;
    let tokens = Arc::new(tokens);
    let opened = open_many("connect storm", total, connectors, move |n| {
        let tokens = tokens.clone();
        async move { client::connect(addr, &tokens[n], "d").await }
    })
    .await;
    if let Some(error) = &opened.error {
        return Err(format!("connect storm: {error}").into());
    }
    let connected = opened.held.len();
    let rate = connected as f64 / opened.elapsed.as_secs_f64();
    drop(opened.held);
    drop(server);

    let holder = Holder::start().await?;
    let to = holder.addr;
    let tcp = open_many(
        "tcp connect storm",
        total,
        connectors,
        move |_| async move { client::tcp_accepted(to).await },
    )
    .await;
    if let Some(error) = &tcp.error {
        return Err(format!("tcp connect storm: {error}").into());
    }
    let tcp_connected = tcp.held.len();
    let tcp_rate = tcp_connected as f64 / tcp.elapsed.as_secs_f64();
    drop(tcp.held);
    let json = json!({
        "total": total,
        "connectors": connectors,
        "connected": connected,
        "seconds": opened.elapsed.as_secs_f64(),
        "connects_per_sec": rate,
        "connect_latency": quantiles(&opened.latency),
        "tcp_baseline": {
            "connected": tcp_connected,
            "seconds": tcp.elapsed.as_secs_f64(),
            "connects_per_sec": tcp_rate,
            "connect_latency": quantiles(&tcp.latency),
        },
    });
    let row = Row::new(
        format!("connect: authenticated connects/s ({connectors} at once)"),
        format!(
            "{}/s (p99 {})",
            human_count(rate),
            human_us(opened.latency.value_at_quantile(0.99))
        ),
        format!(
            "{}/s (TCP connect + accept by the bare holder)",
            human_count(tcp_rate)
        ),
        "-",
    );
    Ok(Outcome {
        name: "connect",
        json,
        rows: vec![row],
    })
}
