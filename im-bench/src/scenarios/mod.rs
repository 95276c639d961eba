//! The scenarios: each runs the server (and its baseline) as separate processes, drives them
//! from this one, and returns its figures beside the baseline's, measured in the same run on
//! the same machine.
//!
//! One module per scenario, each saying what it measures and against what:
//!
//! - `idle`: memory per idle authenticated connection, against a bare tokio TCP holder.
//! - `max_connections`: the most authenticated connections held at once (no baseline: the
//!   cap and the open-file limit are shown beside it).
//! - `fanout`: group fan-out deliveries per second, against raw nats-server 1->N pub/sub.
//! - `persist`: acknowledged 1:1 sends per second, against the store's raw batched append.
//! - `latency`: send-to-deliver latency at fixed offered loads, against the same load through
//!   nats-server.
//! - `connect`: authenticated connects per second in a storm, against plain TCP connects.
//! - `cluster`: 1:1 throughput and latency across core nodes, against one core node.
//! - `media`: uploads (create, PUT, complete) per second, against the raw PUTs of the same
//!   bytes to the same store.
//!
//! `pairs` holds the sender -> receiver pairs and the paced load that `latency` and
//! `cluster` both run. This module holds what every scenario may use: the context and options
//! the CLI passes, the entry points it calls, the message body, the server metrics kept beside
//! a figure, and connecting logins as receivers.

mod cluster;
mod connect;
mod fanout;
mod idle;
mod latency;
mod max_connections;
mod media;
mod pairs;
mod persist;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use serde_json::Value;

// The entry points the CLI calls, one per scenario.
pub(crate) use self::{
    cluster::cluster, connect::connect, fanout::fanout, idle::idle, latency::latency,
    max_connections::max_connections, media::media, persist::persist,
};
use crate::{
    client::{self, Measure, Ws},
    procs::Server,
    util::{Result, open_many},
};

/// What every scenario needs.
pub(crate) struct Ctx {
    /// The `im-server` binary.
    pub(crate) server_bin: PathBuf,
    /// `nats-server`, when the NATS baselines run.
    pub(crate) nats: Option<PathBuf>,
}

/// The message text of the throughput scenarios (about the size people send).
const BODY: &str = "a message of about the size people send, some sixty bytes..";

/// The server metrics that explain a throughput figure (group commit sizes and times, pushes
/// resent, slow consumers), from its Prometheus text.
fn key_metrics(text: &str) -> Vec<String> {
    const KEYS: &[&str] = &[
        "im_commit_batch_entries",
        "im_commit_seconds",
        "im_sends_total",
        "im_deliveries",
        "im_pushes_resent_total",
        "im_pushes_skipped_total",
        "im_slow_consumers_total",
        "im_frames_queued_total",
        "im_rate_limited_total",
    ];
    text.lines()
        .filter(|l| !l.starts_with('#') && KEYS.iter().any(|k| l.starts_with(k)))
        .map(str::to_owned)
        .collect()
}

/// A JSON field as f64 (0 when absent).
fn num(value: &Value, key: &str) -> f64 {
    value[key].as_f64().unwrap_or(0.0)
}

/// The loads of the cluster scenario. Here beside [`Ctx`], not in `cluster`, because the CLI
/// builds it: under `all` its window and seconds are persist's and latency's.
pub(crate) struct ClusterLoad {
    /// Core nodes of the cluster measured (the baseline has one).
    pub(crate) nodes: usize,
    /// Sender -> receiver pairs.
    pub(crate) pairs: usize,
    /// Messages of the throughput load, in all.
    pub(crate) messages: usize,
    /// Sends in flight per sender in the throughput load.
    pub(crate) window: usize,
    /// Offered messages per second of the latency load.
    pub(crate) rate: u64,
    /// Seconds the latency load runs.
    pub(crate) seconds: f64,
}

/// Sets a stop flag when dropped, so the receivers and watchers that poll it end on every way
/// out of a scenario, errors included.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Where a connection logs in, and as whom.
#[derive(Debug, Clone)]
struct Login {
    /// The gateway.
    addr: SocketAddr,
    token: String,
}

/// Logins of `users` (device `d`) on `server`'s gateway.
fn logins(server: &Server, users: &[String]) -> Result<Vec<Login>> {
    users
        .iter()
        .map(|user| {
            Ok(Login {
                addr: server.ws,
                token: server.token(user, "d")?,
            })
        })
        .collect()
}

/// Connects every login as a receiver counting into `delivered`, `at_once` at a time.
async fn receivers(
    logins: Vec<Login>,
    at_once: usize,
    delivered: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
    measure: Measure,
    label: &str,
) -> Result<Vec<tokio::task::JoinHandle<hdrhistogram::Histogram<u64>>>> {
    Ok(connect_in_order(logins, at_once, label)
        .await?
        .into_iter()
        .map(|ws| client::spawn_receiver(ws, delivered.clone(), stop.clone(), measure))
        .collect())
}

/// Connects every login, `at_once` at a time, each serving requests (it answered a ping)
/// before the next starts; the connections in the logins' order.
async fn connect_in_order(logins: Vec<Login>, at_once: usize, label: &str) -> Result<Vec<Ws>> {
    let total = logins.len();
    let logins = Arc::new(logins);
    let opened = open_many(label, total, at_once, move |n| {
        let login = logins[n].clone();
        async move {
            let mut ws = client::connect(login.addr, &login.token, "d").await?;
            client::ping(&mut ws).await?;
            Ok((n, ws))
        }
    })
    .await;
    if let Some(error) = opened.error {
        return Err(error.into());
    }
    let mut held = opened.held;
    held.sort_by_key(|(n, _)| *n);
    Ok(held.into_iter().map(|(_, ws)| ws).collect())
}

// The databases other than SQLite: persist runs on PostgreSQL when it is configured, and the
// cluster needs it (its nodes share one database).

/// The value of the first of the environment variables `names` that is set.
fn first_env(names: [&str; 2]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok())
}

/// PostgreSQL's URL: `IM_BENCH_POSTGRES_URL`, or the test services' `IM_TEST_POSTGRES_URL`.
fn postgres_url() -> Option<String> {
    first_env(["IM_BENCH_POSTGRES_URL", "IM_TEST_POSTGRES_URL"])
}
