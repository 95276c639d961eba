//! Scenario `max-connections`: the most authenticated connections one server holds at once,
//! opened until one fails or the cap is reached.
//!
//! No baseline process: the figure stands beside the cap asked for and this process's
//! open-file limit (each connection costs a descriptor on both sides), since either may be
//! what stopped it. The server's session limit is raised above the cap so that it does not.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use super::Ctx;
use crate::{
    client,
    procs::Server,
    report::{Outcome, Row, verdict},
    util::{Result, human_count, open_many},
};

/// Scenario `max-connections`: opens authenticated connections until one fails or `cap`.
pub(crate) async fn max_connections(ctx: &Ctx, cap: usize, concurrency: usize) -> Result<Outcome> {
    eprintln!("max-connections: up to {cap}");
    let server = Arc::new(
        Server::start(
            &ctx.server_bin,
            &[("IM_CORE__GATEWAY__MAX_SESSIONS", (cap + 16).to_string())],
        )
        .await?,
    );
    let addr = server.ws;
    let s = server.clone();
    let opened = open_many("max-connections", cap, concurrency, move |n| {
        let token = s.token(&format!("max{n}"), "d");
        async move { client::connect(addr, &token?, "d").await }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = server.rss_kib()?;
    let count = opened.held.len();
    drop(opened.held);
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((0, 0));
    let json = json!({
        "cap": cap,
        "held": count,
        "stopped_by": opened.error,
        "server_rss_kib": rss,
        "seconds": opened.elapsed.as_secs_f64(),
        "fd_limit": limit.0,
    });
    let row = Row::new(
        "max-connections: held at once",
        human_count(count as f64),
        format!(
            "cap {} (fd limit {})",
            human_count(cap as f64),
            human_count(limit.0 as f64)
        ),
        format!("200,000: {}", verdict(count >= 200_000)),
    );
    Ok(Outcome {
        name: "max_connections",
        json,
        rows: vec![row],
    })
}
