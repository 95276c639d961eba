//! Talking to a driver process: commands out on its stdin, answers and events back on its
//! stdout, one JSON object per line (docs/CONFORMANCE.md, "The driver protocol").

use std::{
    collections::{HashMap, VecDeque},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::{Notify, oneshot},
};

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// Events per session, in arrival order.
#[derive(Default)]
struct Inbox {
    events: Mutex<HashMap<String, VecDeque<Value>>>,
    arrived: Notify,
}

/// A running driver.
pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    next_id: u64,
    waiters: Waiters,
    inbox: Arc<Inbox>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

/// How long an answer may take (a send across a reconnect included).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(30);

impl Driver {
    /// Starts `program` with `args`.
    pub fn spawn(program: &str, args: &[String]) -> std::io::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let waiters: Waiters = Arc::default();
        let inbox = Arc::new(Inbox::default());
        let (w, i) = (waiters.clone(), inbox.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("driver: not a JSON line on stdout: {line}");
                    continue;
                };
                if let Some(event) = value.get("event") {
                    let session = event["session"].as_str().unwrap_or_default().to_owned();
                    if let Ok(mut events) = i.events.lock() {
                        events.entry(session).or_default().push_back(event.clone());
                    }
                    i.arrived.notify_waiters();
                } else if let Some(id) = value["id"].as_u64() {
                    let waiter = w.lock().ok().and_then(|mut w| w.remove(&id));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(value);
                    }
                } else {
                    eprintln!(
                        "driver: a line that is neither an event nor an answer with a numeric id: {line}"
                    );
                }
            }
            // The driver is gone: every answer still awaited fails now, not after a timeout.
            if let Ok(mut waiters) = w.lock() {
                waiters.clear();
            }
        });
        Ok(Self {
            child,
            stdin,
            next_id: 0,
            waiters,
            inbox,
        })
    }

    /// Sends a command without waiting; the answer comes from [`Pending::answer`].
    pub async fn start(&mut self, mut command: Value) -> Result<Pending, String> {
        self.next_id += 1;
        let id = self.next_id;
        command["id"] = json!(id);
        let (done, answer) = oneshot::channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(id, done);
        }
        let line = format!("{command}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("driver stdin: {e}"))?;
        self.stdin.flush().await.map_err(|e| e.to_string())?;
        Ok(Pending(answer))
    }

    /// Sends a command and waits for its answer.
    pub async fn call(&mut self, command: Value) -> Result<Value, String> {
        self.start(command).await?.answer().await
    }

    /// The first event of `session` that `pick` accepts, waiting up to `within`. Events that
    /// `skip` says may be passed over are removed; any other event before it is left queued.
    /// `reject` fails the wait (an event that must not come before the one sought).
    pub async fn next_event(
        &self,
        session: &str,
        within: Duration,
        pick: &dyn Fn(&Value) -> bool,
        reject: &dyn Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.inbox.arrived.notified();
            if let Ok(mut events) = self.inbox.events.lock() {
                let queue = events.entry(session.to_owned()).or_default();
                if let Some(at) = queue.iter().position(|e| pick(e) || reject(e)) {
                    let found = queue.remove(at).unwrap_or_default();
                    return if pick(&found) {
                        Ok(found)
                    } else {
                        Err(format!("unexpected event {found}"))
                    };
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let queued = self
                    .inbox
                    .events
                    .lock()
                    .map(|e| e.get(session).map(|q| q.len()).unwrap_or(0))
                    .unwrap_or(0);
                return Err(format!(
                    "no such event within {within:?} ({queued} other events queued)"
                ));
            }
        }
    }

    /// Ends the driver.
    pub async fn stop(mut self) {
        let _ = self.stdin.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// An answer on its way.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Value>);

impl Pending {
    /// The answer (`ok` true or false), or why none came.
    pub async fn answer(self) -> Result<Value, String> {
        match tokio::time::timeout(ANSWER_WITHIN, self.0).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err("the driver ended".into()),
            Err(_) => Err(format!("no answer within {ANSWER_WITHIN:?}")),
        }
    }
}
