//! The processes a benchmark runs beside itself: the `im-server` binary on a temporary data
//! directory (alone, or as the nodes of a cluster), the bare TCP holder (this tool's
//! `hold-tcp`), `nats-server` and `redis-server`. Each is killed when its handle drops, so a
//! failing run leaves nothing behind.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use im_common::auth::TokenIssuer;
pub(crate) use im_testkit::{
    Sidecar,
    sidecar::{Kind, Proc, find_on_path},
};
use serde_json::{Value, json};

use crate::util::{Result, now_ms};

/// The server settings every benchmark raises above the defaults (rate limits are per user and
/// would throttle a load generator; the benchmark measures the server, not its limits).
pub(crate) const SERVER_ENV: &[(&str, &str)] = &[
    ("IM_CORE__MESSAGING__MESSAGES_PER_SECOND", "10000000"),
    ("IM_CORE__GATEWAY__FRAMES_PER_SECOND", "10000000"),
    ("IM_CORE__GATEWAY__ABUSE_THRESHOLD", "10000000"),
    ("IM_CORE__GATEWAY__MAX_SESSIONS", "2000000"),
    ("IM_CORE__GATEWAY__MAX_INFLIGHT_REQUESTS", "4096"),
    ("IM_CORE__GATEWAY__MAX_UNACKED", "1000000"),
    ("IM_CORE__GATEWAY__OUTBOUND_QUEUE", "8192"),
    ("IM_CORE__GATEWAY__IDLE_TIMEOUT", "1h"),
    ("IM_CORE__GATEWAY__HANDSHAKE_TIMEOUT", "2m"),
];

/// Resident memory of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for process {pid}").into())
}

/// A random secret of `len` hex characters (std's hasher keys are random per process).
fn secret(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    let mut n = 0u64;
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u128(Instant::now().elapsed().as_nanos());
        out.push_str(&format!("{:016x}", h.finish()));
        n += 1;
    }
    out.truncate(len);
    out
}

/// Its resident memory in KiB.
pub(crate) fn proc_rss_kib(proc: &Proc) -> Result<u64> {
    rss_kib(proc.pid())
}

/// How long a child may take to print the lines [`wait_line`] waits for.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The last lines of a child's log file (empty without one, or when it cannot be read).
fn log_tail(log: Option<&Path>) -> String {
    const LINES: usize = 40;
    let Some(text) = log.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
    if tail.is_empty() {
        String::new()
    } else {
        format!(
            "; the end of its log ({}):\n{tail}",
            log.map_or_else(String::new, |p| p.display().to_string())
        )
    }
}

/// Reads the child's stdout until `pick` finds what it waits for, for at most
/// [`STARTUP_TIMEOUT`]. A thread reads the lines (so no tokio worker blocks on the pipe) and
/// goes on draining stdout afterwards, so the child never blocks on a full pipe. On a timeout
/// the child is killed; errors carry the tail of `log`.
async fn wait_line<T>(
    child: &mut Child,
    what: &str,
    mut pick: impl FnMut(&str) -> Option<T>,
    log: Option<&Path>,
) -> Result<T> {
    let stdout = child
        .stdout
        .take()
        .ok_or("the child's stdout is not piped")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::Builder::new()
        .name(format!("{what} stdout"))
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Once the waiter is gone the lines are only drained.
                let _ = tx.send(line);
            }
        })?;
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => {
                if let Some(found) = pick(&line) {
                    return Ok(found);
                }
            }
            Ok(None) => {
                let status = child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                return Err(format!(
                    "{what} exited before it was ready ({status}){}",
                    log_tail(log)
                )
                .into());
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what} was not ready within {} s (killed){}",
                    STARTUP_TIMEOUT.as_secs(),
                    log_tail(log)
                )
                .into());
            }
        }
    }
}

/// The secrets every process of one deployment shares: a token signed with one is accepted by
/// every core node, and the app secret opens every business node's API.
struct Secrets {
    token: String,
    app: String,
}

impl Secrets {
    fn random() -> Self {
        Self {
            token: secret(48),
            app: secret(48),
        }
    }
}

/// Which services an `im-server` process runs (`IM_SERVICES`), and so which addresses it
/// prints once it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Services {
    /// Core and business in one process on an in-process bus: the default deployment.
    Embedded,
    /// A cluster's core node: the gateway and the operations endpoint.
    Core,
    /// A cluster's business node: the HTTP API.
    Business,
}

impl Services {
    fn env(self) -> &'static str {
        match self {
            Self::Embedded => "core,business",
            Self::Core => "core",
            Self::Business => "business",
        }
    }

    fn core(self) -> bool {
        matches!(self, Self::Embedded | Self::Core)
    }

    fn business(self) -> bool {
        matches!(self, Self::Embedded | Self::Business)
    }
}

/// The addresses an `im-server` process printed on stdout.
#[derive(Debug, Default, Clone)]
struct Printed {
    /// The gateway, `host:port`.
    ws: Option<String>,
    /// The operations endpoint, `host:port`.
    ops: Option<String>,
    /// The business HTTP API, `host:port`.
    api: Option<String>,
}

impl Printed {
    /// Takes the address `line` names, if it names one.
    fn read(&mut self, line: &str) {
        let after_http = || {
            let rest = line.split("http://").nth(1)?;
            rest.split_whitespace().next().map(str::to_owned)
        };
        if let Some(rest) = line.split("ws://").nth(1) {
            self.ws = rest.split("/ws").next().map(str::to_owned);
        } else if line.contains("operations") {
            self.ops = after_http();
        } else if line.contains("business API") {
            self.api = after_http();
        }
    }

    /// Whether every address a process running `services` prints has been seen.
    fn complete(&self, services: Services) -> bool {
        let core = !services.core() || (self.ws.is_some() && self.ops.is_some());
        let business = !services.business() || self.api.is_some();
        core && business
    }

    fn ws(&self) -> Result<SocketAddr> {
        Ok(self.ws.as_deref().ok_or("no gateway address")?.parse()?)
    }

    fn ops(&self) -> Result<SocketAddr> {
        Ok(self
            .ops
            .as_deref()
            .ok_or("no operations address")?
            .parse()?)
    }

    fn api(&self) -> Result<String> {
        let api = self.api.as_deref().ok_or("no business API address")?;
        Ok(format!("http://{api}"))
    }
}

/// How to start one `im-server` process.
struct Launch<'a> {
    services: Services,
    /// Its data goes to `<dir>/<name>`, its log to `<dir>/<name>.log`.
    name: &'a str,
    dir: &'a Path,
    secrets: &'a Secrets,
    /// Overrides on top of the benchmark settings ([`SERVER_ENV`]).
    env: &'a [(&'a str, String)],
}

/// Starts `bin` as `launch` says, on `127.0.0.1:0` listeners, and waits until it printed the
/// addresses of its services.
async fn launch(bin: &Path, launch: &Launch<'_>) -> Result<(Proc, Printed)> {
    let log = launch.dir.join(format!("{}.log", launch.name));
    let secrets = launch.secrets;
    let mut command = Command::new(bin);
    command
        .arg("--data-dir")
        .arg(launch.dir.join(launch.name))
        .env("IM_SERVICES", launch.services.env())
        .env("IM_CORE__LISTEN", "127.0.0.1:0")
        .env("IM_CORE__HTTP_LISTEN", "127.0.0.1:0")
        .env("IM_BUSINESS__HTTP_LISTEN", "127.0.0.1:0")
        .env("IM_BUSINESS__GRPC_LISTEN", "127.0.0.1:0")
        .env("IM_BUSINESS__OPS_LISTEN", "127.0.0.1:0")
        .env("IM_CLUSTER__TOKEN_SECRET", &secrets.token)
        .env("IM_BUSINESS__APP_SECRET", &secrets.app)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?);
    for (key, value) in SERVER_ENV {
        command.env(key, value);
    }
    for (key, value) in launch.env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    // The address lines come in whichever order the server prints them.
    let mut printed = Printed::default();
    let ready = wait_line(
        &mut child,
        &format!("im-server {}", launch.name),
        |line| {
            printed.read(line);
            printed.complete(launch.services).then(|| printed.clone())
        },
        Some(&log),
    )
    .await;
    let proc = Proc::new(child);
    Ok((proc, ready?))
}

/// The core's Prometheus metrics at `ops`, as text (empty when unreachable).
async fn fetch_metrics(http: &reqwest::Client, ops: SocketAddr) -> String {
    match http.get(format!("http://{ops}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A deployment's business HTTP API and token secret: creates users and groups, signs tokens.
pub(crate) struct Api {
    /// `http://host:port`.
    url: String,
    app_secret: String,
    issuer: TokenIssuer,
    http: reqwest::Client,
}

impl Api {
    fn new(url: String, secrets: &Secrets) -> Self {
        Self {
            url,
            app_secret: secrets.app.clone(),
            issuer: TokenIssuer::new(secrets.token.as_bytes()),
            http: reqwest::Client::new(),
        }
    }

    /// A token for `user` on `device`, valid for a day.
    pub(crate) fn token(&self, user: &str, device: &str) -> Result<String> {
        Ok(self.issuer.issue(user, device, now_ms(), 86_400_000)?)
    }

    /// POSTs `body` to `path` with the app secret; the answer's JSON, or an error with it.
    pub(crate) async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.app_secret)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("POST {path}: {status} {value}").into());
        }
        Ok(value)
    }

    /// Creates the users (senders and group members must exist), in batches of 1000.
    pub(crate) async fn import_users(&self, users: &[String]) -> Result<()> {
        for chunk in users.chunks(1000) {
            let users: Vec<Value> = chunk.iter().map(|u| json!({ "user_id": u })).collect();
            self.post("/v1/users/import", json!({ "users": users }))
                .await?;
        }
        Ok(())
    }

    /// Creates group `group_id` owned by `owner` with `members` (added 1000 at a time).
    pub(crate) async fn create_group(
        &self,
        group_id: &str,
        owner: &str,
        members: &[String],
    ) -> Result<()> {
        let mut chunks = members.chunks(1000);
        let first = chunks.next().unwrap_or_default();
        self.post(
            "/v1/groups",
            json!({
                "group_id": group_id,
                "name": "bench",
                "owner_user_id": owner,
                "member_user_ids": first,
                "kind": "group",
            }),
        )
        .await?;
        for chunk in chunks {
            self.post(
                &format!("/v1/groups/{group_id}/members"),
                json!({ "user_ids": chunk }),
            )
            .await?;
        }
        Ok(())
    }
}

/// The `im-server` binary running embedded (core and business in one process) on a temporary
/// data directory.
pub(crate) struct Server {
    proc: Proc,
    /// The WebSocket gateway.
    pub(crate) ws: SocketAddr,
    /// The core's operations endpoint (`/metrics`).
    pub(crate) ops: SocketAddr,
    api: Api,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin` with the benchmark settings plus `extra` environment overrides.
    pub(crate) async fn start(bin: &Path, extra: &[(&str, String)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let secrets = Secrets::random();
        let (proc, printed) = launch(
            bin,
            &Launch {
                services: Services::Embedded,
                name: "server",
                dir: dir.path(),
                secrets: &secrets,
                env: extra,
            },
        )
        .await?;
        Ok(Self {
            proc,
            ws: printed.ws()?,
            ops: printed.ops()?,
            api: Api::new(printed.api()?, &secrets),
            _dir: dir,
        })
    }

    /// The server's resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        proc_rss_kib(&self.proc)
    }

    /// A token for `user` on `device`, valid for a day.
    pub(crate) fn token(&self, user: &str, device: &str) -> Result<String> {
        self.api.token(user, device)
    }

    /// Creates the users (senders and group members must exist).
    pub(crate) async fn import_users(&self, users: &[String]) -> Result<()> {
        self.api.import_users(users).await
    }

    /// Creates group `group_id` owned by `owner` with `members`.
    pub(crate) async fn create_group(
        &self,
        group_id: &str,
        owner: &str,
        members: &[String],
    ) -> Result<()> {
        self.api.create_group(group_id, owner, members).await
    }

    /// The core's Prometheus metrics, as text (empty when unreachable).
    pub(crate) async fn metrics(&self) -> String {
        fetch_metrics(&self.api.http, self.ops).await
    }

    /// The business HTTP API.
    pub(crate) fn api(&self) -> &Api {
        &self.api
    }
}

/// The programs a cluster runs.
pub(crate) struct ClusterPrograms {
    pub(crate) im_server: PathBuf,
    pub(crate) nats_server: PathBuf,
    pub(crate) redis_server: PathBuf,
}

/// One core node of a [`Cluster`].
pub(crate) struct CoreNode {
    _proc: Proc,
    /// Its `node_id`.
    pub(crate) id: String,
    /// Its WebSocket gateway.
    pub(crate) ws: SocketAddr,
    /// Its operations endpoint (`/metrics`).
    ops: SocketAddr,
}

/// A cluster on this machine: a nats-server (with JetStream) and a redis-server of its own, a
/// shared database, one business node and core nodes, every one a process killed on drop.
/// The nodes' data directories and logs are in one temporary directory.
pub(crate) struct Cluster {
    /// The core nodes, `core-0`, `core-1`, ...
    pub(crate) cores: Vec<CoreNode>,
    /// The business node's API.
    pub(crate) api: Api,
    _business: Proc,
    _redis: Sidecar,
    _nats: Sidecar,
    /// Last, so the processes writing into it are gone before it is removed.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts nats-server, redis-server, the business node, then `nodes` core nodes one after
    /// the other (a core node waits for the business node; one at a time, they do not race to
    /// create the database's tables).
    pub(crate) async fn start(
        programs: &ClusterPrograms,
        database: &str,
        nodes: usize,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let nats = Sidecar::start(Kind::Nats { jetstream: true }, Some(&programs.nats_server))?;
        let redis = Sidecar::start(Kind::Redis, Some(&programs.redis_server))?;
        let secrets = Secrets::random();
        let bus = ("IM_CLUSTER__NATS_URL", nats.url.clone());
        let (business, printed) = launch(
            &programs.im_server,
            &Launch {
                services: Services::Business,
                name: "business",
                dir: dir.path(),
                secrets: &secrets,
                env: &[bus.clone(), ("IM_BUSINESS__DATABASE", database.to_owned())],
            },
        )
        .await?;
        let api = Api::new(printed.api()?, &secrets);
        let mut cores = Vec::with_capacity(nodes);
        for i in 0..nodes {
            let id = format!("core-{i}");
            let env = [
                bus.clone(),
                ("IM_CLUSTER__NODE_ID", id.clone()),
                ("IM_CORE__DATABASE", database.to_owned()),
                ("IM_CLUSTER__REDIS_URL", redis.url.clone()),
            ];
            let launched = Launch {
                services: Services::Core,
                name: &id,
                dir: dir.path(),
                secrets: &secrets,
                env: &env,
            };
            let (proc, printed) = launch(&programs.im_server, &launched).await?;
            cores.push(CoreNode {
                _proc: proc,
                ws: printed.ws()?,
                ops: printed.ops()?,
                id,
            });
        }
        Ok(Self {
            cores,
            api,
            _business: business,
            _redis: redis,
            _nats: nats,
            _dir: dir,
        })
    }

    /// Each core node's id and Prometheus metrics text.
    pub(crate) async fn metrics(&self) -> Vec<(String, String)> {
        let mut all = Vec::with_capacity(self.cores.len());
        for core in &self.cores {
            all.push((
                core.id.clone(),
                fetch_metrics(&self.api.http, core.ops).await,
            ));
        }
        all
    }
}

/// The bare TCP holder: this tool's `hold-tcp` subcommand as a child process.
pub(crate) struct Holder {
    proc: Proc,
    /// Where it accepts.
    pub(crate) addr: SocketAddr,
}

impl Holder {
    /// Starts `im-bench hold-tcp` from this executable. Its stdin is a pipe whose write end
    /// stays in the child handle: when this process dies, the holder reads EOF and exits.
    pub(crate) async fn start() -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["hold-tcp", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let addr = wait_line(
            &mut child,
            "hold-tcp",
            |line| line.strip_prefix("listening ").map(str::to_owned),
            None,
        )
        .await;
        let proc = Proc::new(child);
        Ok(Self {
            addr: addr?.trim().parse()?,
            proc,
        })
    }

    /// Its resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        proc_rss_kib(&self.proc)
    }
}

#[cfg(test)]
mod tests {
    use super::{Printed, Services};

    /// What `im-server` prints once its services run (im-all's main.rs).
    const CORE: &str = "  WebSocket     ws://127.0.0.1:7100/ws  (subprotocol im.v1; node core-0)";
    const OPS: &str = "  operations    http://127.0.0.1:7103  (/healthz, /readyz, /metrics)";
    const API: &str =
        "  business API  http://127.0.0.1:7101  (OpenAPI at /openapi.json; gRPC on 127.0.0.1:7102)";

    #[test]
    fn a_node_is_ready_with_the_addresses_of_its_services() {
        let mut printed = Printed::default();
        printed.read("im-server 0.1.0 is running");
        printed.read(API);
        assert!(printed.complete(Services::Business));
        assert!(!printed.complete(Services::Embedded));
        printed.read(CORE);
        assert!(
            !printed.complete(Services::Core),
            "the operations line is missing"
        );
        printed.read(OPS);
        assert!(printed.complete(Services::Core));
        assert!(printed.complete(Services::Embedded));
        assert_eq!(printed.ws().ok(), "127.0.0.1:7100".parse().ok());
        assert_eq!(printed.ops().ok(), "127.0.0.1:7103".parse().ok());
        assert_eq!(printed.api().ok().as_deref(), Some("http://127.0.0.1:7101"));
    }
}
