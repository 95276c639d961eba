//! Scenario `persist`: persisted 1:1 sends. Several connections each send their share to a
//! conversation of their own with a window in flight; the figures are messages acknowledged
//! per second (an ack comes after the commit) and the ack latency.
//!
//! Baseline: the same store appending the same number of entries in batches straight from
//! this process (one transaction per batch, the server's default batch size), without the
//! gateway, the checks or the pushes: the most the store gives. It runs on SQLite always, and
//! on PostgreSQL and MariaDB when their URLs are set.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use im_server::store::{EntryKind, MessageStore, NewEntry, SqliteMessageStore};
use prost::Message as _;
use serde_json::{Value, json};

use super::{BODY, Ctx, first_env, key_metrics, num, postgres_url};
use crate::{
    client,
    procs::Server,
    report::{Outcome, Row, verdict},
    util::{Progress, Result, human_count, human_us, micros_histogram, now_ms, quantiles},
};

/// Where the persisted sends are stored.
#[derive(Debug, Clone)]
enum Backend {
    /// The server's default: SQLite in its data directory.
    Sqlite,
    /// PostgreSQL at this URL.
    Postgres(String),
    /// MySQL / MariaDB at this URL.
    Mysql(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
            Self::Mysql(_) => "MariaDB",
        }
    }

    fn key(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
            Self::Mysql(_) => "mariadb",
        }
    }

    /// The backends to measure: SQLite always; PostgreSQL and MariaDB when their URL is in
    /// `IM_BENCH_POSTGRES_URL` / `IM_BENCH_MARIADB_URL` (or the test services' `IM_TEST_*`).
    fn configured() -> Vec<Self> {
        let mut backends = vec![Self::Sqlite];
        if let Some(url) = postgres_url() {
            backends.push(Self::Postgres(url));
        }
        if let Some(url) = first_env(["IM_BENCH_MARIADB_URL", "IM_TEST_MARIADB_URL"]) {
            backends.push(Self::Mysql(url));
        }
        backends
    }
}

/// Scenario `persist`: `senders` connections each send their share of `messages` to a 1:1
/// conversation with `window` in flight; acknowledged (committed) messages per second and
/// ack latency. Baseline: the same store, `append` in batches of `batch` directly. Run on
/// SQLite, and on PostgreSQL and MariaDB when configured ([`Backend::configured`]).
pub(crate) async fn persist(
    ctx: &Ctx,
    messages: usize,
    senders: usize,
    window: usize,
    batch: usize,
) -> Result<Outcome> {
    let mut json = serde_json::Map::new();
    let mut rows = Vec::new();
    for backend in Backend::configured() {
        let (figures, mut backend_rows) =
            persist_on(ctx, &backend, messages, senders, window, batch).await?;
        rows.append(&mut backend_rows);
        if let Backend::Sqlite = backend {
            // The SQLite figures stay at the top level, as before.
            if let Value::Object(fields) = figures {
                json.extend(fields);
            }
        } else {
            json.insert(backend.key().to_owned(), figures);
        }
    }
    Ok(Outcome {
        name: "persist",
        json: Value::Object(json),
        rows,
    })
}

/// The persist scenario on one backend.
async fn persist_on(
    ctx: &Ctx,
    backend: &Backend,
    messages: usize,
    senders: usize,
    window: usize,
    batch: usize,
) -> Result<(Value, Vec<Row>)> {
    let name = backend.name();
    eprintln!(
        "persist ({name}): {messages} messages from {senders} senders, {window} in flight each"
    );
    let senders = senders.clamp(1, messages.max(1));
    let env: Vec<(&str, String)> = match backend {
        Backend::Sqlite => Vec::new(),
        Backend::Postgres(url) | Backend::Mysql(url) => vec![
            ("IM_CORE__DATABASE", url.clone()),
            ("IM_BUSINESS__DATABASE", url.clone()),
        ],
    };
    let server = Arc::new(Server::start(&ctx.server_bin, &env).await?);
    // A shared database outlives the run: users (so conversations and client ids) of its own.
    let run = now_ms();
    let sender = |i: usize| format!("ps{i}-{run}");
    let receiver = |i: usize| format!("pr{i}-{run}");
    let users: Vec<String> = (0..senders)
        .flat_map(|i| [sender(i), receiver(i)])
        .collect();
    server.import_users(&users).await?;
    let mut conns = Vec::new();
    for i in 0..senders {
        let token = server.token(&sender(i), "d")?;
        conns.push(client::connect(server.ws, &token, "d").await?);
    }
    let progress = Progress::new(&format!("persist acks ({name})"), messages as u64);
    let counter = progress.counter();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut ws) in conns.into_iter().enumerate() {
        let share = messages / senders + usize::from(i < messages % senders);
        let counter = counter.clone();
        let conversation = client::direct(&sender(i), &receiver(i));
        tasks.push(tokio::spawn(async move {
            client::send_windowed(&mut ws, &conversation, "p", share, window, BODY, &counter).await
        }));
    }
    let mut acks = micros_histogram();
    for task in tasks {
        let _ = acks.add(&task.await??);
    }
    let elapsed = started.elapsed();
    drop(progress);
    let rate = acks.len() as f64 / elapsed.as_secs_f64();
    let metrics = server.metrics().await;
    drop(server);

    let raw = match backend {
        Backend::Sqlite => raw_sqlite(messages, senders, batch).await?,
        Backend::Postgres(url) => {
            let store = im_server::store::postgres::PgMessageStore::connect(url, 4).await?;
            raw_append(&store, "raw postgres rows", messages, senders, batch).await?
        }
        Backend::Mysql(url) => {
            let store = im_server::store::mysql::MysqlMessageStore::connect(url, 4).await?;
            raw_append(&store, "raw mariadb rows", messages, senders, batch).await?
        }
    };
    let raw_rate = num(&raw, "rows_per_sec");
    let raw_key = format!("raw_{}", backend.key());
    let mut json = json!({
        "messages": acks.len(),
        "senders": senders,
        "window": window,
        "seconds": elapsed.as_secs_f64(),
        "messages_per_sec": rate,
        "ack": quantiles(&acks),
        "server_metrics": key_metrics(&metrics),
    });
    json[raw_key] = raw;
    let p = |q: f64| human_us(acks.value_at_quantile(q));
    let rows = vec![
        Row::new(
            format!("persist: 1:1 msgs/s acked after commit ({name})"),
            format!("{}/s", human_count(rate)),
            format!(
                "{}/s (raw batched append, batch {batch})",
                human_count(raw_rate)
            ),
            format!(
                ">= 0.5 x raw: {:.2} x, {}",
                rate / raw_rate.max(1.0),
                verdict(rate >= raw_rate / 2.0)
            ),
        ),
        Row::new(
            format!("persist: ack latency p50 / p99 ({name})"),
            format!("{} / {}", p(0.5), p(0.99)),
            "-",
            "-",
        ),
    ];
    Ok((json, rows))
}

/// The store's raw rate: `messages` entries over `conversations` conversations appended in
/// batches of `batch` (one transaction each), on a fresh SQLite file.
async fn raw_sqlite(messages: usize, conversations: usize, batch: usize) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let store = SqliteMessageStore::open(&dir.path().join("raw.db"), 4).await?;
    raw_append(&store, "raw sqlite rows", messages, conversations, batch).await
}

/// Appends `messages` entries in batches straight into `store`; rows per second. Conversation
/// ids carry the run's time, so a database kept between runs gets new conversations.
async fn raw_append(
    store: &impl MessageStore,
    label: &str,
    messages: usize,
    conversations: usize,
    batch: usize,
) -> Result<Value> {
    let body = client::text(BODY).encode_to_vec();
    let run = now_ms();
    let progress = Progress::new(label, messages as u64);
    let counter = progress.counter();
    let started = Instant::now();
    let mut n = 0usize;
    while n < messages {
        let size = batch.max(1).min(messages - n);
        let entries: Vec<NewEntry> = (n..n + size)
            .map(|i| {
                let c = i % conversations.max(1);
                NewEntry {
                    conversation_id: client::direct(&format!("ps{c}"), &format!("pr{c}-{run}")),
                    sender_user_id: format!("ps{c}"),
                    sender_device_id: "d".into(),
                    client_msg_id: format!("raw-{i}"),
                    kind: EntryKind::Content,
                    target_seq: 0,
                    body: body.clone(),
                    server_time_ms: now_ms(),
                }
            })
            .collect();
        store.append(&entries).await?;
        n += size;
        counter.store(n as u64, Ordering::Relaxed);
    }
    let elapsed = started.elapsed();
    drop(progress);
    Ok(json!({
        "rows": messages,
        "batch": batch,
        "seconds": elapsed.as_secs_f64(),
        "rows_per_sec": messages as f64 / elapsed.as_secs_f64(),
    }))
}
