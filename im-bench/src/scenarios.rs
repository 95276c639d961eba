//! The scenarios: each runs the server (and its baseline) as separate processes, drives them
//! from this one, and returns its figures.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use im_server::store::{EntryKind, MessageStore, NewEntry, SqliteMessageStore};
use prost::Message as _;
use serde_json::{Value, json};

use crate::{
    client::{self, Measure, Ws},
    procs::{Cluster, ClusterPrograms, Holder, Kind, Server, Sidecar, find_on_path},
    report::{Outcome, Row, verdict},
    util::{
        Progress, Result, human_count, human_us, micros_histogram, now_ms, open_many, quantiles,
        wait_for,
    },
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

// ---- idle -----------------------------------------------------------------------------------

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

// ---- max-connections ------------------------------------------------------------------------

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

// ---- fanout ---------------------------------------------------------------------------------

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

// ---- persist --------------------------------------------------------------------------------

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

/// The value of the first of the environment variables `names` that is set.
fn first_env(names: [&str; 2]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok())
}

/// PostgreSQL's URL: `IM_BENCH_POSTGRES_URL`, or the test services' `IM_TEST_POSTGRES_URL`.
fn postgres_url() -> Option<String> {
    first_env(["IM_BENCH_POSTGRES_URL", "IM_TEST_POSTGRES_URL"])
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

// ---- latency --------------------------------------------------------------------------------

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
struct Pair {
    sender: Login,
    receiver: Login,
    conversation: String,
}

/// What a paced load measured.
struct PacedRun {
    /// Messages sent.
    sent: u64,
    /// From the first scheduled send to the last sender's last flush.
    send_secs: f64,
    /// From the first scheduled send to the last ack (or refusal).
    acks_done_secs: f64,
    /// Sends the server refused.
    refused: u64,
    /// Distinct entries the receivers got.
    delivered: u64,
    /// Send (scheduled) to deliver, in µs.
    latency: hdrhistogram::Histogram<u64>,
}

impl PacedRun {
    /// The send rate achieved, messages per second.
    fn achieved(&self) -> f64 {
        self.sent as f64 / self.send_secs.max(1e-6)
    }

    fn json(&self) -> Value {
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
fn p50_p99_p999(histogram: &hdrhistogram::Histogram<u64>) -> String {
    format!(
        "p50 {} / p99 {} / p99.9 {}",
        human_us(histogram.value_at_quantile(0.5)),
        human_us(histogram.value_at_quantile(0.99)),
        human_us(histogram.value_at_quantile(0.999))
    )
}

/// Pairs connected: the senders in the pairs' order, and the receivers counting what arrives
/// into `delivered` and timing the bodies that carry a send time (µs since `origin`).
struct ConnectedPairs {
    senders: Vec<Ws>,
    conversations: Vec<String>,
    delivered: Arc<AtomicU64>,
    origin: Instant,
    receivers: Vec<tokio::task::JoinHandle<hdrhistogram::Histogram<u64>>>,
    /// Stops the receivers however the scenario ends.
    stop: StopOnDrop,
}

impl ConnectedPairs {
    /// Connects the pairs' receivers, then their senders, `at_once` at a time.
    async fn connect(pairs: &[Pair], at_once: usize, label: &str) -> Result<Self> {
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
    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Waits until the receivers have `target` entries in all, or stall for 10 s; the count
    /// and the time from `since` to the last one.
    async fn wait_delivered(&self, target: u64, since: Instant) -> (u64, Duration) {
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
async fn paced_load(
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

// ---- connect --------------------------------------------------------------------------------

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

// ---- cluster --------------------------------------------------------------------------------

/// The loads of the cluster scenario.
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

/// The programs and database a cluster needs, or what is missing of them.
fn cluster_prerequisites(ctx: &Ctx) -> std::result::Result<(ClusterPrograms, String), String> {
    let nats = ctx.nats.clone().or_else(|| find_on_path("nats-server"));
    let redis = find_on_path("redis-server");
    let database = postgres_url();
    match (nats, redis, database) {
        (Some(nats_server), Some(redis_server), Some(database)) => Ok((
            ClusterPrograms {
                im_server: ctx.server_bin.clone(),
                nats_server,
                redis_server,
            },
            database,
        )),
        (nats, redis, database) => {
            let missing = [
                nats.is_none().then_some("nats-server is not on PATH"),
                redis.is_none().then_some("redis-server is not on PATH"),
                database
                    .is_none()
                    .then_some("neither IM_BENCH_POSTGRES_URL nor IM_TEST_POSTGRES_URL is set"),
            ];
            Err(missing.into_iter().flatten().collect::<Vec<_>>().join(", "))
        }
    }
}

/// `count` pairs on `cluster`: sender i on node i % N, its receiver on node (i + 1) % N, so
/// with more than one node every message crosses nodes. Users are `cs<i>-<run>` and
/// `cr<i>-<run>`: the database outlives runs, each run has users of its own.
fn cross_node_pairs(cluster: &Cluster, count: usize, run: i64) -> Result<(Vec<String>, Vec<Pair>)> {
    let nodes = cluster.cores.len().max(1);
    let mut users = Vec::with_capacity(2 * count);
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let (sender, receiver) = (format!("cs{i}-{run}"), format!("cr{i}-{run}"));
        let login = |user: &str, node: usize| -> Result<Login> {
            Ok(Login {
                addr: cluster.cores[node].ws,
                token: cluster.api.token(user, "d")?,
            })
        };
        pairs.push(Pair {
            sender: login(&sender, i % nodes)?,
            receiver: login(&receiver, (i + 1) % nodes)?,
            conversation: client::direct(&sender, &receiver),
        });
        users.extend([sender, receiver]);
    }
    Ok((users, pairs))
}

/// What a windowed load (each sender as fast as its acks allow) measured.
struct WindowedRun {
    /// Sends acknowledged.
    acked: u64,
    /// Send to ack, in µs.
    ack: hdrhistogram::Histogram<u64>,
    /// From the first send to the last ack.
    ack_secs: f64,
    /// Distinct entries the receivers got.
    delivered: u64,
    /// From the first send to the last delivery seen.
    deliver_secs: f64,
}

impl WindowedRun {
    fn acked_per_sec(&self) -> f64 {
        self.acked as f64 / self.ack_secs.max(1e-6)
    }

    fn deliveries_per_sec(&self) -> f64 {
        self.delivered as f64 / self.deliver_secs.max(1e-6)
    }

    fn json(&self) -> Value {
        json!({
            "acked": self.acked,
            "delivered": self.delivered,
            "all_delivered": self.delivered >= self.acked,
            "ack_secs": self.ack_secs,
            "acked_per_sec": self.acked_per_sec(),
            "deliver_secs": self.deliver_secs,
            "deliveries_per_sec": self.deliveries_per_sec(),
            "ack": quantiles(&self.ack),
        })
    }
}

/// Has each connected sender send its share of `messages` with `window` in flight, then waits
/// for the deliveries of what was acknowledged.
async fn windowed_load(
    connected: &mut ConnectedPairs,
    messages: usize,
    window: usize,
    label: &str,
) -> Result<WindowedRun> {
    let before = connected.delivered();
    let progress = Progress::new(&format!("{label} acks"), messages as u64);
    let counter = progress.counter();
    let senders = std::mem::take(&mut connected.senders);
    let count = senders.len().max(1);
    let started = Instant::now();
    let mut sends = Vec::new();
    for (i, (mut ws, conversation)) in senders
        .into_iter()
        .zip(&connected.conversations)
        .enumerate()
    {
        let share = messages / count + usize::from(i < messages % count);
        let (counter, conversation) = (counter.clone(), conversation.clone());
        sends.push(tokio::spawn(async move {
            let acks =
                client::send_windowed(&mut ws, &conversation, "c", share, window, BODY, &counter)
                    .await?;
            Ok::<_, crate::util::BoxError>((ws, acks))
        }));
    }
    let mut ack = micros_histogram();
    for send in sends {
        let (ws, acks) = send.await??;
        connected.senders.push(ws);
        let _ = ack.add(&acks);
    }
    let ack_secs = started.elapsed().as_secs_f64();
    drop(progress);
    let acked = ack.len();
    let (got, deliver) = connected.wait_delivered(before + acked, started).await;
    Ok(WindowedRun {
        acked,
        ack,
        ack_secs,
        delivered: got - before,
        deliver_secs: deliver.as_secs_f64(),
    })
}

/// The sum of a Prometheus counter's samples (every label set) in `text`.
fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Both loads on one topology.
struct TopologyRun {
    nodes: usize,
    throughput: WindowedRun,
    latency: PacedRun,
    /// Each core node's id and metrics text after both loads.
    metrics: Vec<(String, String)>,
}

impl TopologyRun {
    /// Deliveries handed to another node over NATS, over every node.
    fn forwarded(&self) -> u64 {
        self.metrics
            .iter()
            .map(|(_, text)| counter_sum(text, "im_deliveries_forwarded_total"))
            .sum::<f64>() as u64
    }

    fn json(&self) -> Value {
        let metrics: serde_json::Map<String, Value> = self
            .metrics
            .iter()
            .map(|(id, text)| (id.clone(), json!(key_metrics(text))))
            .collect();
        json!({
            "nodes": self.nodes,
            "throughput": self.throughput.json(),
            "latency": self.latency.json(),
            "deliveries_forwarded": self.forwarded(),
            "server_metrics": metrics,
        })
    }
}

/// Connections opened at once while a cluster's pairs connect. Each answers a ping before it
/// counts as open: a core node records a new session's route in Redis after its Welcome and
/// serves the session's requests only then, so no load starts before its routes exist.
const CLUSTER_CONNECTS_AT_ONCE: usize = 16;

/// Starts a cluster of `nodes` core nodes on `database` and runs both loads on it over the
/// same connections (users of the run's own; the throughput load's bodies carry no send time,
/// so only the latency load's are timed).
async fn cluster_run(
    programs: &ClusterPrograms,
    database: &str,
    nodes: usize,
    load: &ClusterLoad,
) -> Result<TopologyRun> {
    let label = format!("cluster ({})", node_count(nodes));
    eprintln!(
        "{label}: starting nats-server, redis-server, the business node, {} core {}",
        nodes,
        if nodes == 1 { "node" } else { "nodes" }
    );
    let begun = Instant::now();
    let cluster = Cluster::start(programs, database, nodes).await?;
    eprintln!("{label}: up in {:.1} s", begun.elapsed().as_secs_f64());
    let (users, pairs) = cross_node_pairs(&cluster, load.pairs, now_ms())?;
    cluster.api.import_users(&users).await?;
    let mut connected = ConnectedPairs::connect(&pairs, CLUSTER_CONNECTS_AT_ONCE, &label).await?;
    eprintln!(
        "{label}: {} messages over {} pairs, {} in flight each",
        load.messages, load.pairs, load.window
    );
    let throughput = windowed_load(&mut connected, load.messages, load.window, &label).await?;
    eprintln!(
        "{label}: {} messages/s for {} s over {} pairs",
        load.rate, load.seconds, load.pairs
    );
    let latency = paced_load(connected, load.rate, load.seconds, "cl", &label).await?;
    Ok(TopologyRun {
        nodes,
        throughput,
        latency,
        metrics: cluster.metrics().await,
    })
}

/// `1 node`, `3 nodes`.
fn node_count(nodes: usize) -> String {
    if nodes == 1 {
        "1 node".into()
    } else {
        format!("{nodes} nodes")
    }
}

/// `a / b` as `0.93 x 1 node`, for the target column (no target is set for a cluster).
fn ratio_to_one_node(a: f64, b: f64) -> String {
    format!("- ({:.2} x 1 node)", a / b.max(1e-9))
}

/// The table rows: each figure of the cluster beside the same figure on one node.
fn cluster_rows(load: &ClusterLoad, spread: &TopologyRun, single: &TopologyRun) -> Vec<Row> {
    let across = node_count(spread.nodes);
    let (t, t1) = (&spread.throughput, &single.throughput);
    let (l, l1) = (&spread.latency, &single.latency);
    let delivered = |r: &WindowedRun| {
        format!(
            "{} of {} acked delivered",
            human_count(r.delivered as f64),
            human_count(r.acked as f64)
        )
    };
    vec![
        Row::new(
            format!("cluster: 1:1 msgs/s acked across {across} (PostgreSQL)"),
            format!("{}/s", human_count(t.acked_per_sec())),
            format!("{}/s on 1 node", human_count(t1.acked_per_sec())),
            ratio_to_one_node(t.acked_per_sec(), t1.acked_per_sec()),
        ),
        Row::new(
            format!("cluster: deliveries/s across {across}"),
            format!(
                "{}/s ({}, {} forwarded)",
                human_count(t.deliveries_per_sec()),
                delivered(t),
                human_count(spread.forwarded() as f64)
            ),
            format!(
                "{}/s on 1 node ({})",
                human_count(t1.deliveries_per_sec()),
                delivered(t1)
            ),
            ratio_to_one_node(t.deliveries_per_sec(), t1.deliveries_per_sec()),
        ),
        Row::new(
            format!(
                "cluster: send->deliver at {}/s across {across}",
                human_count(load.rate as f64)
            ),
            format!(
                "{} (sent at {}/s)",
                p50_p99_p999(&l.latency),
                human_count(l.achieved())
            ),
            format!(
                "{} on 1 node (sent at {}/s)",
                p50_p99_p999(&l1.latency),
                human_count(l1.achieved())
            ),
            format!(
                "- (p99 {:.2} x 1 node)",
                l.latency.value_at_quantile(0.99) as f64
                    / (l1.latency.value_at_quantile(0.99) as f64).max(1.0)
            ),
        ),
    ]
}

/// Scenario `cluster`: `nodes` core nodes and a business node sharing nats-server (JetStream),
/// redis-server and PostgreSQL; `pairs` sender -> receiver pairs with each receiver on the
/// node after its sender's. Throughput (acked messages/s, deliveries/s, every acked message
/// delivered) and send-to-deliver latency at a fixed offered load. Baseline: the same
/// processes and loads with one core node, on the same database, in the same run.
///
/// Without nats-server, redis-server or a PostgreSQL URL it is skipped, loudly; with `CI` set
/// it fails instead.
pub(crate) async fn cluster(ctx: &Ctx, load: &ClusterLoad) -> Result<Outcome> {
    let (programs, database) = match cluster_prerequisites(ctx) {
        Ok(found) => found,
        Err(missing) if std::env::var_os("CI").is_some() => {
            return Err(format!(
                "{missing} (CI is set: the cluster scenario is required; run scripts/services start)"
            )
            .into());
        }
        Err(missing) => {
            eprintln!(
                "!!! {missing}: the cluster scenario is SKIPPED (scripts/services start runs what it needs) !!!"
            );
            return Ok(Outcome::skipped("cluster", missing));
        }
    };
    eprintln!(
        "cluster: {} core nodes against 1, {} pairs, {} messages, {}/s for {} s",
        load.nodes, load.pairs, load.messages, load.rate, load.seconds
    );
    let spread = cluster_run(&programs, &database, load.nodes, load).await?;
    let single = cluster_run(&programs, &database, 1, load).await?;
    let json = json!({
        "nodes": load.nodes,
        "pairs": load.pairs,
        "messages": load.messages,
        "window": load.window,
        "offered_per_sec": load.rate,
        "seconds": load.seconds,
        "database": "postgres",
        "across_nodes": spread.json(),
        "one_node": single.json(),
    });
    Ok(Outcome {
        name: "cluster",
        json,
        rows: cluster_rows(load, &spread, &single),
    })
}

#[cfg(test)]
mod tests {
    use super::counter_sum;

    #[test]
    fn a_counter_is_summed_over_its_labels_and_only_its_own() {
        let text = "\
# TYPE im_sends_total counter
im_sends_total{outcome=\"stored\"} 280
im_sends_total{outcome=\"duplicate\"} 2
im_sends_total_other 1000
im_deliveries_forwarded_total 210
";
        assert_eq!(counter_sum(text, "im_sends_total"), 282.0);
        assert_eq!(counter_sum(text, "im_deliveries_forwarded_total"), 210.0);
        assert_eq!(counter_sum(text, "im_missing_total"), 0.0);
    }
}
