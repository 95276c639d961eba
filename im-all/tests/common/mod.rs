//! A cluster on this machine: nats-server and redis-server of its own (so a test may kill and
//! restart them), the shared PostgreSQL the services script started, one business process and
//! core nodes, all the `im-server` binary on ephemeral ports, killed when dropped.

#![allow(dead_code, unreachable_pub)]

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use im_conformance::system::{Admin, Target};
use im_sdk_rust::{Body, Client, ClientBuilder, Config, Content, Event, StaticToken};
pub use im_testkit::sidecar::Proc;
use im_testkit::{APP_SECRET, Sidecar, TOKEN_SECRET};

pub const BIN: &str = env!("CARGO_BIN_EXE_im-server");
/// The presence lease of the test cluster's nodes, in milliseconds.
pub const LEASE_MS: u64 = 3_000;

/// Whether the real services are here: PostgreSQL's URL (from `scripts/services`) and the
/// nats-server and redis-server binaries. Outside CI a missing one skips the test loudly.
fn services() -> Option<String> {
    let database = im_testkit::service_url("IM_TEST_POSTGRES_URL", "the cluster tests")?;
    for binary in ["nats-server", "redis-server"] {
        let found = Command::new(binary)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "{binary} is missing: ./scripts/services start installs it"
            );
            eprintln!("SKIPPED: {binary} is missing (run ./scripts/services start)");
            return None;
        }
    }
    Some(database)
}

/// One core node: its process and gateway address.
pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    proc: Proc,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub run: String,
    database: String,
    nats: Sidecar,
    redis: Sidecar,
    business: Proc,
    business_env: Vec<(&'static str, String)>,
    /// Settings of every core node on top of the shared ones.
    core_env: Vec<(&'static str, String)>,
    pub api: String,
    pub nodes: Vec<Option<Node>>,
    pub admin: Admin,
}

impl Cluster {
    /// A cluster of `nodes` core nodes and one business node, or `None` (skipped) without the
    /// real services.
    pub async fn start(nodes: usize) -> Option<Cluster> {
        Self::start_with(nodes, Vec::new()).await
    }

    /// A cluster whose business node has `business_env` on top of the shared settings.
    pub async fn start_with(
        nodes: usize,
        business_env: Vec<(&'static str, String)>,
    ) -> Option<Cluster> {
        Self::start_with_envs(nodes, business_env, Vec::new()).await
    }

    /// A cluster whose core nodes have `core_env` on top of the shared settings.
    pub async fn start_with_core(
        nodes: usize,
        core_env: Vec<(&'static str, String)>,
    ) -> Option<Cluster> {
        Self::start_with_envs(nodes, Vec::new(), core_env).await
    }

    async fn start_with_envs(
        nodes: usize,
        business_env: Vec<(&'static str, String)>,
        core_env: Vec<(&'static str, String)>,
    ) -> Option<Cluster> {
        let database = services()?;
        let dir = tempfile::tempdir().unwrap();
        let nats = Sidecar::nats(true).unwrap();
        let redis = Sidecar::redis().unwrap();
        let (business, api) = start_business(dir.path(), &database, nats.port, &business_env);
        let admin = admin_of(&api);
        let mut cluster = Cluster {
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            database,
            nats,
            redis,
            business,
            business_env,
            core_env,
            api,
            nodes: Vec::new(),
            admin,
            dir,
        };
        for i in 0..nodes {
            let node = cluster.start_node(&format!("core-{i}"));
            cluster.nodes.push(Some(node));
        }
        Some(cluster)
    }

    fn start_node(&self, id: &str) -> Node {
        self.start_node_on(id, self.nats.port)
    }

    /// Starts core node `id`, the last of `nodes`.
    pub fn add_node(&mut self, id: &str) {
        let node = self.start_node(id);
        self.nodes.push(Some(node));
    }

    /// Starts core node `id` with its bus connection through a [`BusLink`] the test can
    /// break; the node is the last of `nodes`.
    pub async fn start_node_through_link(&mut self, id: &str) -> BusLink {
        let link = BusLink::start(self.nats.port).await;
        // The node's start blocks this thread while the link's tasks run on the other.
        let node = tokio::task::block_in_place(|| self.start_node_on(id, link.port));
        self.nodes.push(Some(node));
        link
    }

    /// Starts core node `id` expecting it to refuse to start: its exit status and its log.
    pub fn start_node_refused(&self, id: &str) -> (std::process::ExitStatus, String) {
        let name = format!("{id}-refused");
        let env = self.node_env(id, self.nats.port);
        let (mut proc, _lines) = spawn(self.dir.path(), &name, &[("IM_SERVICES", "core")], &env);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = proc.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{name} is still running");
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, std::fs::read_to_string(self.log(&name)).unwrap())
    }

    fn node_env(&self, id: &str, nats_port: u16) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("IM_CLUSTER__NODE_ID", id.to_owned()),
            ("IM_CORE__DATABASE", self.database.clone()),
            ("IM_CLUSTER__REDIS_URL", self.redis.url.clone()),
            (
                "IM_CLUSTER__NATS_URL",
                format!("nats://127.0.0.1:{nats_port}"),
            ),
        ];
        env.extend(self.core_env.iter().cloned());
        env
    }

    fn start_node_on(&self, id: &str, nats_port: u16) -> Node {
        let env = self.node_env(id, nats_port);
        let (proc, lines) = spawn(self.dir.path(), id, &[("IM_SERVICES", "core")], &env);
        let addr = address_after(&lines, "ws://", self.dir.path(), id)
            .trim_end_matches("/ws")
            .parse()
            .unwrap();
        Node {
            id: id.to_owned(),
            addr,
            proc,
        }
    }

    /// Every gateway URL, starting with node `first`'s.
    pub fn urls(&self, first: usize) -> Vec<String> {
        let live: Vec<&Node> = self.nodes.iter().flatten().collect();
        let mut urls: Vec<String> = live.iter().map(|n| format!("ws://{}/ws", n.addr)).collect();
        let len = urls.len();
        urls.rotate_left(first % len);
        urls
    }

    /// `name` made unique to this run.
    pub fn user(&self, name: &str) -> String {
        format!("{name}-{}", self.run)
    }

    /// A client of `user` that connects to node `first` first and fails over to the others.
    pub async fn client(&self, user: &str, device: &str, first: usize) -> Client {
        let urls = self.urls(first);
        self.client_of(user, device, urls).await
    }

    /// A client of `user` that only knows the gateways `urls`.
    pub async fn client_of(&self, user: &str, device: &str, urls: Vec<String>) -> Client {
        self.admin.user(user).await.unwrap();
        let token = self.admin.token(user, device).await.unwrap();
        let config = Config {
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            ack_delay: Duration::from_millis(20),
            ..Config::default()
        };
        let client = ClientBuilder::new(urls[0].clone(), device, Arc::new(StaticToken(token)))
            .more_urls(urls[1..].to_vec())
            .config(config)
            .build()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), client.wait_connected())
            .await
            .expect("connects in time")
            .unwrap();
        client
    }

    /// `user` adds `contact` as a contact, which shows `user`'s presence to `contact`.
    pub async fn add_contact(&self, user: &str, contact: &str) {
        let path = format!("/v1/users/{user}/contacts/{contact}");
        self.admin
            .call(reqwest::Method::PUT, &path, Some(serde_json::json!({})))
            .await
            .unwrap();
    }

    /// SIGKILLs core node `i`.
    pub fn kill_node(&mut self, i: usize) -> String {
        let mut node = self.nodes[i].take().expect("running");
        node.proc.kill();
        node.id
    }

    /// SIGKILLs the business node.
    pub fn kill_business(&mut self) {
        self.business.kill();
    }

    /// Starts the business node again (its API moves to a new port).
    pub fn restart_business(&mut self) {
        let (business, api) = start_business(
            self.dir.path(),
            &self.database,
            self.nats.port,
            &self.business_env,
        );
        self.business = business;
        self.admin = admin_of(&api);
        self.api = api;
    }

    /// SIGKILLs nats-server, waits `down`, and starts it again on the same port (its
    /// JetStream store kept).
    pub fn restart_nats(&mut self, down: Duration) {
        self.nats.restart(down).unwrap();
    }

    /// SIGKILLs redis-server (which keeps nothing on disk), waits `down`, and starts it again
    /// empty on the same port.
    pub fn restart_redis(&mut self, down: Duration) {
        self.redis.restart(down).unwrap();
    }

    /// Where a process's log is.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }
}

fn admin_of(api: &str) -> Admin {
    Admin::new(&Target {
        url: String::new(),
        api: api.to_owned(),
        app_secret: APP_SECRET.into(),
    })
}

fn start_business(
    dir: &Path,
    database: &str,
    nats_port: u16,
    extra: &[(&'static str, String)],
) -> (Proc, String) {
    let mut env = vec![(
        "IM_CLUSTER__NATS_URL",
        format!("nats://127.0.0.1:{nats_port}"),
    )];
    env.extend(extra.iter().cloned());
    let (business, lines) = spawn(
        dir,
        "business",
        &[("IM_BUSINESS__DATABASE", database)],
        &env,
    );
    let api = format!(
        "http://{}",
        address_after(&lines, "business API  http://", dir, "business")
    );
    (business, api)
}

/// Starts `im-server` as `name` with the cluster's shared settings plus `env`; its stdout
/// lines arrive on the returned channel, its log goes to `<dir>/<name>.log`.
fn spawn(
    dir: &Path,
    name: &str,
    fixed: &[(&str, &str)],
    env: &[(&str, String)],
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["--data-dir", dir.join(name).to_str().unwrap()])
        .env("IM_SERVICES", "business")
        .env("IM_CLUSTER__TOKEN_SECRET", TOKEN_SECRET)
        .env("IM_BUSINESS__APP_SECRET", APP_SECRET)
        .env("IM_BUSINESS__HTTP_LISTEN", "127.0.0.1:0")
        .env("IM_BUSINESS__GRPC_LISTEN", "127.0.0.1:0")
        .env("IM_BUSINESS__OPS_LISTEN", "127.0.0.1:0")
        .env("IM_CORE__LISTEN", "127.0.0.1:0")
        .env("IM_CORE__HTTP_LISTEN", "127.0.0.1:0")
        .env("IM_CORE__MESSAGING__MESSAGES_PER_SECOND", "10000")
        .env("IM_CORE__GATEWAY__FRAMES_PER_SECOND", "10000")
        .env("IM_CORE__PRESENCE_LEASE", format!("{LEASE_MS}ms"))
        .env("IM_CORE__BUS_TIMEOUT", "2s")
        .env("IM_CORE__GATEWAY__RESEND_AFTER", "1s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log);
    for (key, value) in fixed {
        command.env(key, value);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, receiver) = std::sync::mpsc::channel();
    // Drained for the process's whole life, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send(line);
        }
    });
    (Proc::new(child), receiver)
}

/// The address printed after `marker`, or a panic with the process's log.
fn address_after(
    lines: &std::sync::mpsc::Receiver<String>,
    marker: &str,
    dir: &Path,
    name: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.split(marker).nth(1) {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
            }
            Err(_) => panic!(
                "{name} did not start: {}",
                std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
            ),
        }
    }
}

/// A TCP relay between one node and nats-server, standing for the network between them: it can
/// turn into a black hole (bytes read and thrown away, as on a link that broke silently) and
/// then be cut (every connection through it closed; new ones pass normally).
pub struct BusLink {
    pub port: u16,
    dropping: Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
    accepting: tokio::task::JoinHandle<()>,
}

impl BusLink {
    async fn start(nats_port: u16) -> BusLink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dropping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cuts, cut) = tokio::sync::watch::channel(0u64);
        let relaying = dropping.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((node, _)) = listener.accept().await {
                let Ok(nats) = tokio::net::TcpStream::connect(("127.0.0.1", nats_port)).await
                else {
                    continue;
                };
                let (dropping, mut cut) = (relaying.clone(), cut.clone());
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let (from_node, to_node) = node.into_split();
                    let (from_nats, to_nats) = nats.into_split();
                    // Whichever ends first closes both connections.
                    tokio::select! {
                        () = relay(from_node, to_nats, dropping.clone()) => {}
                        () = relay(from_nats, to_node, dropping) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        BusLink {
            port,
            dropping,
            cuts,
            accepting,
        }
    }

    /// From now on the link carries nothing, in either direction, but stays open.
    pub fn black_hole(&self) {
        self.dropping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every connection through the link; new ones pass normally.
    pub fn cut(&self) {
        self.dropping
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for BusLink {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dropping: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if dropping.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// What one receiving client has shown, as the app sees it.
#[derive(Default, Debug)]
pub struct Seen {
    /// client_msg_id -> times shown.
    pub shown: HashMap<String, u32>,
    /// (conversation, seq) pairs shown.
    pub seqs: HashSet<(String, u64)>,
    /// Entries shown twice, by (conversation, seq) or by client id.
    pub duplicates: u64,
}

/// Collects the messages `client` shows, until `stop` fires.
pub fn watch(client: &Client, seen: Arc<std::sync::Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    let mut events = client.events().expect("the event stream");
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Event::Message(message) = event {
                let mut seen = seen.lock().unwrap();
                let again = !seen
                    .seqs
                    .insert((message.conversation_id.clone(), message.seq));
                let count = seen.shown.entry(message.client_msg_id.clone()).or_default();
                *count += 1;
                if again || *count > 1 {
                    seen.duplicates += 1;
                }
            }
        }
    })
}

/// A text body.
pub fn text(text: &str) -> Body {
    Body::Content(Content::text(text))
}

/// Figures of one failover run, printed for the closing note.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
}
