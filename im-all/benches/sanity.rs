//! First sanity figures for the embedded server (`cargo bench -p im-all --bench sanity`):
//! persisted messages per second through the gateway on SQLite, and the server's memory per
//! idle authenticated connection. The `im-server` binary runs as its own process so that its
//! memory is measured alone. Sizes: IM_SANITY_CONNECTIONS (default 10000), IM_SANITY_MESSAGES
//! (default 50000), IM_SANITY_SENDERS (default 50).

#![allow(clippy::unwrap_used)]

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use im_common::auth::TokenIssuer;
use im_proto::v1::{SendRequest, client_frame, server_frame};
use im_testkit::{
    client::{self, Client},
    now_ms,
    sidecar::Proc,
};

const BIN: &str = env!("CARGO_BIN_EXE_im-server");

fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start(data: &Path) -> (Proc, SocketAddr) {
    im_testkit::binary::start(BIN, data, &[])
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A token for `user`, who is created (senders must exist; idle connections need not).
fn user_token(data: &Path, user: &str) -> String {
    im_testkit::binary::token(BIN, data, user, "dev")
}

fn token_secret(data: &Path) -> String {
    user_token(data, "warmup");
    let text = std::fs::read_to_string(data.join("secrets.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    table["token_secret"].as_str().unwrap().to_owned()
}

async fn idle_memory(addr: SocketAddr, pid: u32, issuer: &TokenIssuer, count: usize) {
    let token = |user: &str| issuer.issue(user, "d", now_ms(), 3_600_000).unwrap();
    // One connection first, so the baseline includes everything a first session allocates.
    let _first = Client::connect(addr, &token("first"), "d").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let mut held = Vec::with_capacity(count);
    let started = Instant::now();
    for n in 0..count {
        held.push(Client::connect(addr, &token(&format!("idle{n}")), "d").await);
        if (n + 1) % 2000 == 0 {
            eprintln!("  {} connections", n + 1);
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / count as f64;
    println!(
        "idle connections: {count} authenticated; server RSS {before} KiB -> {after} KiB: {per:.0} bytes ({:.2} KiB) per connection",
        per / 1024.0
    );
    println!(
        "connects with authentication: {:.0}/s (sequential, one client)",
        count as f64 / connect_secs
    );
}

async fn throughput(addr: SocketAddr, data: &Path, senders: usize, messages: usize) {
    let per_sender = messages / senders;
    let window = 64;
    let mut tasks = Vec::new();
    let tokens: Vec<String> = (0..senders)
        .map(|s| user_token(data, &format!("s{s}")))
        .collect();
    let started = Instant::now();
    for (s, token) in tokens.into_iter().enumerate() {
        let user = format!("s{s}");
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, &token, "dev").await;
            let conversation = format!("d:{user}:{user}");
            let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
            let mut latencies = Vec::with_capacity(per_sender);
            let mut sent = 0;
            while sent < per_sender || !pending.is_empty() {
                while sent < per_sender && pending.len() < window {
                    let id = client
                        .send(client_frame::Body::Send(SendRequest {
                            client_msg_id: format!("m{sent}"),
                            conversation_id: conversation.clone(),
                            body: Some(client::text("a message of about the size people send")),
                        }))
                        .await;
                    pending.push_back((id, Instant::now()));
                    sent += 1;
                }
                let (id, at) = pending.pop_front().unwrap();
                match client.answer(id).await {
                    server_frame::Body::SendAck(_) => latencies.push(at.elapsed()),
                    other => panic!("{other:?}"),
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "persisted sends: {} in {secs:.2} s = {:.0} messages/s acknowledged after commit ({senders} connections, {window} in flight each); ack latency p50 {:?}, p99 {:?}",
        latencies.len(),
        latencies.len() as f64 / secs,
        at(0.5),
        at(0.99)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let issuer = TokenIssuer::new(token_secret(dir.path()).as_bytes());
        let (mut server, addr) = start(dir.path());
        idle_memory(
            addr,
            server.pid(),
            &issuer,
            size("IM_SANITY_CONNECTIONS", 10_000),
        )
        .await;
        throughput(
            addr,
            dir.path(),
            size("IM_SANITY_SENDERS", 50),
            size("IM_SANITY_MESSAGES", 50_000),
        )
        .await;
        server.kill();
    });
}
