//! `im-bench`: a load generator and benchmark suite for the IM server. Every figure is
//! measured side by side with a baseline in the same run on the same machine: idle memory
//! against a bare tokio TCP holder, group fan-out against raw nats-server pub/sub, persisted
//! sends against the store's raw batched insert, send-to-deliver latency against the same load
//! through NATS, authenticated connects against plain TCP connects, and a cluster of core nodes
//! against the same processes with one core node. The server, the holder and nats-server run
//! as separate processes, so each one's memory is its own.
//!
//! Progress goes to stderr; the table and the JSON (or `--json PATH`) to stdout.

mod client;
mod procs;
mod report;
mod scenarios;
mod util;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

use crate::{
    report::Outcome,
    scenarios::Ctx,
    util::{BoxError, Result},
};

/// A count of at least 1 (connections, messages, senders, ...).
fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A fraction in (0, 1].
fn fraction(text: &str) -> std::result::Result<f64, String> {
    let f: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if f > 0.0 && f <= 1.0 {
        Ok(f)
    } else {
        Err(format!("{f} is not in (0, 1]"))
    }
}

/// A finite number of seconds above 0.
fn positive_seconds(text: &str) -> std::result::Result<f64, String> {
    let s: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if s.is_finite() && s > 0.0 {
        Ok(s)
    } else {
        Err(format!("{s} is not a positive number of seconds"))
    }
}

/// Load generator and benchmark suite for im-server; each figure beside a baseline.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The im-server binary (default: `im-server` next to this executable).
    #[arg(long, global = true, env = "IM_BENCH_SERVER_BIN")]
    server_bin: Option<PathBuf>,
    /// Write the results as JSON to this file (default: one JSON line on stdout).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Skip the raw NATS baselines even when nats-server is on PATH.
    #[arg(long, global = true)]
    no_nats: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Server memory per idle authenticated connection, against a bare tokio TCP holder.
    Idle(IdleArgs),
    /// The most authenticated connections held at once (until a failure or the cap).
    MaxConnections(MaxArgs),
    /// Group fan-out deliveries per second, against raw nats-server 1->N pub/sub.
    Fanout(FanoutArgs),
    /// Persisted 1:1 messages per second and ack latency, against the store's raw batched
    /// insert.
    Persist(PersistArgs),
    /// Send-to-deliver latency at fixed offered loads, against the same load through NATS.
    Latency(LatencyArgs),
    /// Connects with authentication per second in a storm, against plain TCP connects.
    Connect(ConnectArgs),
    /// Throughput and latency of 1:1 messages across the core nodes of a cluster (NATS, Redis,
    /// PostgreSQL), against the same processes with one core node.
    Cluster(ClusterArgs),
    /// Uploads (create, PUT, complete) per second, against raw PUTs to the same store.
    Media(MediaArgs),
    /// The whole suite: one JSON, one table.
    All(AllArgs),
    /// (Internal) the bare baseline: accept TCP connections and hold them.
    #[command(hide = true)]
    HoldTcp {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

#[derive(Debug, Clone, Args)]
struct IdleArgs {
    /// Connection counts to measure, each on a fresh server.
    #[arg(long, value_delimiter = ',', default_value = "10000", value_parser = at_least_one)]
    connections: Vec<usize>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    open_concurrency: usize,
}

#[derive(Debug, Clone, Args)]
struct MaxArgs {
    /// Stop after this many connections.
    #[arg(long, default_value_t = 200_000, value_parser = at_least_one)]
    cap: usize,
}

#[derive(Debug, Clone, Args)]
struct FanoutArgs {
    /// Members of the group.
    #[arg(long, default_value_t = 500, value_parser = at_least_one)]
    group_size: usize,
    /// The fraction of members online (0 < f <= 1).
    #[arg(long, default_value_t = 1.0, value_parser = fraction)]
    online: f64,
    /// Messages the sender posts.
    #[arg(long, default_value_t = 200, value_parser = at_least_one)]
    fanout_messages: usize,
    /// Sends in flight.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    fanout_window: usize,
}

#[derive(Debug, Clone, Args)]
struct PersistArgs {
    /// Messages in all.
    #[arg(long, default_value_t = 50_000, value_parser = at_least_one)]
    persist_messages: usize,
    /// Sending connections.
    #[arg(long, default_value_t = 50, value_parser = at_least_one)]
    senders: usize,
    /// Sends in flight per connection (under `all`, the cluster scenario's senders too).
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    window: usize,
    /// Entries per transaction of the raw baseline (the server's default max_batch).
    #[arg(long, default_value_t = 512, value_parser = at_least_one)]
    batch: usize,
}

#[derive(Debug, Clone, Args)]
struct LatencyArgs {
    /// Offered loads, messages per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000,50000",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    rates: Vec<u64>,
    /// Seconds each load runs (under `all`, the cluster scenario's latency load too).
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    seconds: f64,
    /// Sender -> receiver pairs sharing the load.
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    pairs: usize,
}

#[derive(Debug, Clone, Args)]
struct ConnectArgs {
    /// Connections in the storm.
    #[arg(long, default_value_t = 5000, value_parser = at_least_one)]
    total: usize,
    /// Connectors at once.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    connectors: usize,
}

#[derive(Debug, Clone, Args)]
struct MediaArgs {
    /// Uploads in all (and as many raw PUTs).
    #[arg(long, default_value_t = 200, value_parser = at_least_one)]
    uploads: usize,
    /// Bytes per upload.
    #[arg(long, default_value_t = 1 << 20, value_parser = at_least_one)]
    upload_bytes: usize,
    /// Uploads in flight (one user each).
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    uploaders: usize,
}

#[derive(Debug, Clone, Args)]
struct ClusterLoadArgs {
    /// Core nodes of the cluster (the baseline has one).
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    nodes: usize,
    /// Sender -> receiver pairs: sender i on node i % N, its receiver on node (i + 1) % N.
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    cluster_pairs: usize,
    /// Messages of the throughput load, in all.
    #[arg(long, default_value_t = 20_000, value_parser = at_least_one)]
    cluster_messages: usize,
    /// Offered load of the latency load, messages per second.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    cluster_rate: u64,
}

#[derive(Debug, Clone, Args)]
struct ClusterArgs {
    #[command(flatten)]
    load: ClusterLoadArgs,
    /// Sends in flight per sender in the throughput load.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    window: usize,
    /// Seconds the latency load runs.
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    seconds: f64,
}

impl ClusterLoadArgs {
    /// The loads, with the window and seconds given beside them (`all` shares `--window` with
    /// persist and `--seconds` with latency).
    fn load(&self, window: usize, seconds: f64) -> scenarios::ClusterLoad {
        scenarios::ClusterLoad {
            nodes: self.nodes,
            pairs: self.cluster_pairs,
            messages: self.cluster_messages,
            window,
            rate: self.cluster_rate,
            seconds,
        }
    }
}

#[derive(Debug, Clone, Args)]
struct AllArgs {
    /// Tiny sizes everywhere (well under a minute in a debug build): checks the tool works.
    #[arg(long)]
    smoke: bool,
    /// Also measure the most connections held (`--cap`); off by default, it takes minutes.
    #[arg(long)]
    max_connections: bool,
    #[command(flatten)]
    idle: IdleArgs,
    #[command(flatten)]
    max: MaxArgs,
    #[command(flatten)]
    fanout: FanoutArgs,
    #[command(flatten)]
    persist: PersistArgs,
    #[command(flatten)]
    latency: LatencyArgs,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    cluster: ClusterLoadArgs,
    #[command(flatten)]
    media: MediaArgs,
}

impl AllArgs {
    fn shrink(&mut self) {
        self.idle.connections = vec![50];
        self.max.cap = 100;
        self.max_connections = true;
        self.fanout.group_size = 20;
        self.fanout.fanout_messages = 20;
        self.persist.persist_messages = 200;
        self.persist.senders = 4;
        self.latency.rates = vec![200];
        self.latency.seconds = 1.0;
        self.latency.pairs = 4;
        self.connect.total = 50;
        self.connect.connectors = 8;
        self.cluster.nodes = 2;
        self.cluster.cluster_pairs = 4;
        self.cluster.cluster_messages = 200;
        self.cluster.cluster_rate = 200;
        self.media.uploads = 8;
        self.media.upload_bytes = 64 << 10;
        self.media.uploaders = 2;
    }
}

/// Raises this process's open-file limit as far as allowed (children inherit it): to the
/// kernel's `nr_open` when privileged, else the soft limit to the hard one.
fn raise_fd_limit() -> (u64, u64) {
    use rlimit::Resource;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    if Resource::NOFILE.set(nr_open, nr_open).is_err()
        && let Ok((_, hard)) = Resource::NOFILE.get()
    {
        let _ = Resource::NOFILE.set(hard, hard);
    }
    Resource::NOFILE.get().unwrap_or((0, 0))
}

/// The bare holder: accepts, answers one byte, and holds each connection in a tokio task
/// waiting for bytes (and dropping them). It exits when its stdin reaches EOF: the parent
/// keeps the write end, so the holder does not outlive it even when it is killed.
async fn hold_tcp(listen: &str) -> Result<()> {
    std::thread::Builder::new().name("stdin".into()).spawn(|| {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        std::process::exit(0);
    })?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // One byte says "accepted" (the client waits for it, as a WebSocket client
                // waits for the upgrade response); a fresh socket's buffer always has room.
                let _ = stream.try_write(b"k");
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    loop {
                        if stream.readable().await.is_err() {
                            break;
                        }
                        match stream.try_read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => break,
                        }
                    }
                });
            }
            Err(e) => {
                eprintln!("hold-tcp: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "memory_gib": mem_kib as f64 / 1024.0 / 1024.0,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

async fn run(cli: Cli) -> Result<Vec<Outcome>> {
    let server_bin = match cli.server_bin {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("im-server"),
    };
    if !server_bin.is_file() {
        return Err(format!(
            "no im-server binary at {} (build it with `cargo build -p im-all --bin im-server`, or pass --server-bin)",
            server_bin.display()
        )
        .into());
    }
    let nats = if cli.no_nats {
        None
    } else {
        match procs::find_on_path("nats-server") {
            Some(p) => Some(p),
            None if std::env::var_os("CI").is_some() => {
                return Err("nats-server is not on PATH (CI is set: the NATS baselines are required; run scripts/services start)".into());
            }
            None => {
                eprintln!(
                    "!!! nats-server is not on PATH: the raw NATS baselines are SKIPPED (scripts/services start installs it) !!!"
                );
                None
            }
        }
    };
    let ctx = Ctx { server_bin, nats };
    let mut out = Vec::new();
    match cli.command {
        Command::Idle(a) => {
            out.push(scenarios::idle(&ctx, &a.connections, a.open_concurrency).await?)
        }
        Command::MaxConnections(a) => out.push(scenarios::max_connections(&ctx, a.cap, 64).await?),
        Command::Fanout(a) => out.push(
            scenarios::fanout(
                &ctx,
                a.group_size,
                a.online,
                a.fanout_messages,
                a.fanout_window,
            )
            .await?,
        ),
        Command::Persist(a) => out.push(
            scenarios::persist(&ctx, a.persist_messages, a.senders, a.window, a.batch).await?,
        ),
        Command::Latency(a) => {
            out.push(scenarios::latency(&ctx, &a.rates, a.seconds, a.pairs).await?);
        }
        Command::Connect(a) => out.push(scenarios::connect(&ctx, a.total, a.connectors).await?),
        Command::Cluster(a) => {
            out.push(scenarios::cluster(&ctx, &a.load.load(a.window, a.seconds)).await?);
        }
        Command::Media(a) => {
            out.push(scenarios::media(&ctx, a.uploads, a.upload_bytes, a.uploaders).await?);
        }
        Command::All(mut a) => {
            if a.smoke {
                a.shrink();
            }
            // A failed scenario is reported and the suite goes on; the run fails at the end.
            let mut keep = |name: &'static str, result: Result<Outcome>| match result {
                Ok(outcome) => out.push(outcome),
                Err(e) => {
                    let error = util::chain(e.as_ref());
                    eprintln!("im-bench: {name} FAILED: {error}");
                    out.push(Outcome::failed(name, error));
                }
            };
            keep(
                "idle",
                scenarios::idle(&ctx, &a.idle.connections, a.idle.open_concurrency).await,
            );
            if a.max_connections {
                keep(
                    "max_connections",
                    scenarios::max_connections(&ctx, a.max.cap, 64).await,
                );
            }
            let f = &a.fanout;
            keep(
                "fanout",
                scenarios::fanout(
                    &ctx,
                    f.group_size,
                    f.online,
                    f.fanout_messages,
                    f.fanout_window,
                )
                .await,
            );
            let p = &a.persist;
            keep(
                "persist",
                scenarios::persist(&ctx, p.persist_messages, p.senders, p.window, p.batch).await,
            );
            let l = &a.latency;
            keep(
                "latency",
                scenarios::latency(&ctx, &l.rates, l.seconds, l.pairs).await,
            );
            keep(
                "connect",
                scenarios::connect(&ctx, a.connect.total, a.connect.connectors).await,
            );
            let load = a.cluster.load(a.persist.window, a.latency.seconds);
            keep("cluster", scenarios::cluster(&ctx, &load).await);
            let m = &a.media;
            keep(
                "media",
                scenarios::media(&ctx, m.uploads, m.upload_bytes, m.uploaders).await,
            );
        }
        Command::HoldTcp { .. } => {}
    }
    Ok(out)
}

fn report(json_path: Option<&PathBuf>, fd_limit: (u64, u64), outcomes: &[Outcome]) -> Result<()> {
    let mut results = Map::new();
    results.insert("machine".into(), machine());
    results.insert(
        "fd_limit".into(),
        json!({ "soft": fd_limit.0, "hard": fd_limit.1 }),
    );
    results.insert(
        "server_env".into(),
        procs::SERVER_ENV
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect::<Map<_, _>>()
            .into(),
    );
    let mut rows = Vec::new();
    for outcome in outcomes {
        results.insert(outcome.name.into(), outcome.json.clone());
        rows.extend(
            outcome
                .rows
                .iter()
                .map(|r| report::Row::new(&r.figure, &r.value, &r.baseline, &r.target)),
        );
    }
    print!("{}", report::table(&rows));
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.json.get("error").is_some())
        .map(|o| o.name)
        .collect();
    let results = Value::Object(results);
    match json_path {
        Some(path) => {
            std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
            eprintln!("results written to {}", path.display());
        }
        None => println!("{}", serde_json::to_string(&results)?),
    }
    if !failed.is_empty() {
        return Err(format!("scenarios failed: {}", failed.join(", ")).into());
    }
    Ok(())
}

/// Resolves on the first SIGINT (Ctrl-C) or, on unix, SIGTERM, with the signal's name and
/// the exit code a shell reports for it.
async fn shutdown_signal() -> (&'static str, u8) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No handler could be installed: never resolve (the default action still applies).
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                () = ctrl_c => ("SIGINT", 130),
                _ = term.recv() => ("SIGTERM", 143),
            },
            Err(_) => {
                ctrl_c.await;
                ("SIGINT", 130)
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        ("Ctrl-C", 130)
    }
}

/// How the run ended.
enum Ended {
    /// It finished, well or not.
    Finished(std::result::Result<(), BoxError>),
    /// A signal stopped it: its name and the exit code.
    Signalled(&'static str, u8),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let fd_limit = raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("im-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::HoldTcp { listen } = &cli.command {
        let listen = listen.clone();
        return match runtime.block_on(hold_tcp(&listen)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("im-bench hold-tcp: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let json_path = cli.json.clone();
    // On a signal the run future is dropped: the handles of the servers, holders and
    // nats-servers it started drop with it and kill their processes.
    let ended = runtime.block_on(async {
        let run = async {
            let outcomes = run(cli).await?;
            report(json_path.as_ref(), fd_limit, &outcomes)
        };
        tokio::select! {
            result = run => Ended::Finished(result),
            (name, code) = shutdown_signal() => Ended::Signalled(name, code),
        }
    });
    match ended {
        Ended::Finished(Ok(())) => ExitCode::SUCCESS,
        Ended::Finished(Err(e)) => {
            eprintln!("im-bench: {}", util::chain(e.as_ref()));
            ExitCode::FAILURE
        }
        Ended::Signalled(name, code) => {
            eprintln!("im-bench: interrupted by {name}; stopping the child processes");
            // Spawned tasks may still hold a server handle: shutting the runtime down drops
            // them, and with them the last handles (which kill the children).
            runtime.shutdown_timeout(Duration::from_secs(5));
            ExitCode::from(code)
        }
    }
}
