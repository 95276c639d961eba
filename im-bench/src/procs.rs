//! The processes a benchmark runs beside itself: the `im-server` binary on a temporary data
//! directory, the bare TCP holder (this tool's `hold-tcp`), and `nats-server`. Each is killed
//! when its handle drops, so a failing run leaves nothing behind.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use im_common::auth::TokenIssuer;
use serde_json::{Value, json};

use crate::util::{Result, now_ms};

/// The server settings every benchmark raises above the defaults (rate limits are per user and
/// would throttle a load generator; the benchmark measures the server, not its limits).
pub(crate) const SERVER_ENV: &[(&str, &str)] = &[
    ("IM_CORE__MESSAGES_PER_SECOND", "10000000"),
    ("IM_CORE__FRAMES_PER_SECOND", "10000000"),
    ("IM_CORE__ABUSE_THRESHOLD", "10000000"),
    ("IM_CORE__MAX_SESSIONS", "2000000"),
    ("IM_CORE__MAX_INFLIGHT_REQUESTS", "4096"),
    ("IM_CORE__MAX_UNACKED", "1000000"),
    ("IM_CORE__OUTBOUND_QUEUE", "8192"),
    ("IM_CORE__IDLE_TIMEOUT_MS", "3600000"),
    ("IM_CORE__HANDSHAKE_TIMEOUT_MS", "120000"),
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

/// A loopback port free right now.
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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

/// A child process, killed (SIGKILL) and reaped on drop.
pub(crate) struct Proc(Child);

impl Proc {
    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// The `im-server` binary running on a temporary data directory.
pub(crate) struct Server {
    proc: Proc,
    /// The WebSocket gateway.
    pub(crate) ws: SocketAddr,
    /// The core's operations endpoint (`/metrics`).
    pub(crate) ops: SocketAddr,
    /// The business HTTP API, `http://host:port`.
    api: String,
    app_secret: String,
    issuer: TokenIssuer,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin` with the benchmark settings plus `extra` environment overrides.
    pub(crate) async fn start(bin: &Path, extra: &[(&str, String)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let token_secret = secret(48);
        let app_secret = secret(48);
        let ops = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = dir.path().join("server.log");
        let mut command = Command::new(bin);
        command
            .arg("--data-dir")
            .arg(dir.path())
            .env("IM_CORE__LISTEN", "127.0.0.1:0")
            .env("IM_CORE__HTTP_LISTEN", ops.to_string())
            .env("IM_BUSINESS__HTTP_LISTEN", "127.0.0.1:0")
            .env("IM_BUSINESS__GRPC_LISTEN", "127.0.0.1:0")
            .env("IM_CORE__TOKEN_SECRET", &token_secret)
            .env("IM_BUSINESS__TOKEN_SECRET", &token_secret)
            .env("IM_BUSINESS__APP_SECRET", &app_secret)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        for (key, value) in SERVER_ENV {
            command.env(key, value);
        }
        for (key, value) in extra {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        // The gateway and business API lines, in whichever order the server prints them.
        let (mut ws, mut api) = (None, None);
        let picked = wait_line(
            &mut child,
            "im-server",
            |line| {
                if let Some(rest) = line.split("ws://").nth(1) {
                    ws = rest.split("/ws").next().map(str::to_owned);
                } else if line.contains("business API")
                    && let Some(rest) = line.split("http://").nth(1)
                {
                    api = rest
                        .split_whitespace()
                        .next()
                        .map(|a| format!("http://{a}"));
                }
                Some((ws.clone()?, api.clone()?))
            },
            Some(&log),
        )
        .await;
        let proc = Proc(child);
        let (ws, api) = picked?;
        Ok(Self {
            proc,
            ws: ws.parse()?,
            ops,
            api,
            app_secret,
            issuer: TokenIssuer::new(token_secret.as_bytes()),
            http: reqwest::Client::new(),
            _dir: dir,
        })
    }

    /// The server's resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        self.proc.rss_kib()
    }

    /// A token for `user` on `device`, valid for a day.
    pub(crate) fn token(&self, user: &str, device: &str) -> Result<String> {
        Ok(self.issuer.issue(user, device, now_ms(), 86_400_000)?)
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.api))
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

    /// The core's Prometheus metrics, as text (empty when unreachable).
    pub(crate) async fn metrics(&self) -> String {
        match self
            .http
            .get(format!("http://{}/metrics", self.ops))
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
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
        let proc = Proc(child);
        Ok(Self {
            addr: addr?.trim().parse()?,
            proc,
        })
    }

    /// Its resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        self.proc.rss_kib()
    }
}

/// `nats-server` on a free loopback port, for the raw baselines.
pub(crate) struct Nats {
    _proc: Proc,
    /// `nats://127.0.0.1:<port>`.
    pub(crate) url: String,
}

/// Where `nats-server` is on PATH, if it is.
pub(crate) fn find_nats() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

impl Nats {
    /// Starts `bin -a 127.0.0.1 -p <free port>` and waits until it accepts.
    pub(crate) async fn start(bin: &Path) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let proc = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err("nats-server did not start listening within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            _proc: proc,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }
}
