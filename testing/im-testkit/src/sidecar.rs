//! Real services of a test's or benchmark's own (`nats-server`, `redis-server`), as child
//! processes on a free loopback port, their data and log in a temporary directory: a test may
//! kill and restart them, and they are SIGKILLed when dropped, so a failing run leaves nothing
//! behind. (Tests that only need a service use the shared ones `scripts/services` starts, named
//! by [`service_url`](crate::service_url).)

use std::{
    ffi::OsString,
    io,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long a sidecar may take to accept connections.
const STARTUP: Duration = Duration::from_secs(30);

/// A child process, SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct Proc(Child);

impl Proc {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, as `kill -9` does, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port free right now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where `program` is on PATH, if it is.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `nats-server`; with JetStream, its store in the sidecar's directory, so streams survive
    /// a restart.
    Nats {
        /// Whether JetStream is on.
        jetstream: bool,
    },
    /// `redis-server`, keeping nothing on disk: it comes back empty.
    Redis,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Self::Nats { .. } => "nats-server",
            Self::Redis => "redis-server",
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            Self::Nats { .. } => "nats",
            Self::Redis => "redis",
        }
    }

    fn args(self, port: u16, dir: &Path) -> Vec<OsString> {
        let port = port.to_string();
        let mut args: Vec<OsString> = match self {
            Self::Nats { .. } => ["-a", "127.0.0.1", "-p", &port].map(Into::into).to_vec(),
            Self::Redis => [
                "--bind",
                "127.0.0.1",
                "--port",
                &port,
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
            ]
            .map(Into::into)
            .to_vec(),
        };
        match self {
            Self::Nats { jetstream: true } => {
                args.extend(["-js".into(), "-sd".into(), dir.join("jetstream").into()]);
            }
            Self::Nats { jetstream: false } => {}
            Self::Redis => args.push(dir.into()),
        }
        args
    }
}

/// A service of a test's own.
#[derive(Debug)]
pub struct Sidecar {
    /// `nats://127.0.0.1:<port>` or `redis://127.0.0.1:<port>`.
    pub url: String,
    /// Its port.
    pub port: u16,
    kind: Kind,
    program: PathBuf,
    proc: Option<Proc>,
    dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts `kind` from `program` (a path, or the program's name on PATH) on a free port,
    /// and waits until it accepts connections.
    pub fn start(kind: Kind, program: Option<&Path>) -> io::Result<Self> {
        let program = match program {
            Some(path) => path.to_owned(),
            None => find_on_path(kind.program()).ok_or_else(|| {
                io::Error::other(format!(
                    "{} is not on PATH (./scripts/services start installs it)",
                    kind.program()
                ))
            })?,
        };
        let port = free_port()?;
        let mut sidecar = Self {
            url: format!("{}://127.0.0.1:{port}", kind.scheme()),
            port,
            kind,
            program,
            proc: None,
            dir: tempfile::tempdir()?,
        };
        sidecar.run()?;
        Ok(sidecar)
    }

    /// `nats-server` from PATH.
    pub fn nats(jetstream: bool) -> io::Result<Self> {
        Self::start(Kind::Nats { jetstream }, None)
    }

    /// `redis-server` from PATH.
    pub fn redis() -> io::Result<Self> {
        Self::start(Kind::Redis, None)
    }

    /// Where its data and log are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// SIGKILLs it.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// SIGKILLs it, waits `down`, and starts it again on the same port and directory.
    pub fn restart(&mut self, down: Duration) -> io::Result<()> {
        self.kill();
        std::thread::sleep(down);
        self.run()
    }

    /// Starts the process and waits until it accepts connections. (Blocking: sidecars start
    /// once per test or benchmark, in well under a second.)
    fn run(&mut self) -> io::Result<()> {
        let what = self.kind.program();
        let log = self.dir.path().join(format!("{what}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(&self.program)
            .args(self.kind.args(self.port, self.dir.path()))
            .stdin(Stdio::null())
            .stderr(out.try_clone()?)
            .stdout(out)
            .spawn()
            .map_err(|e| io::Error::other(format!("starting {}: {e}", self.program.display())))?;
        let mut proc = Proc(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.proc = Some(proc);
                return Ok(());
            }
            let exited = proc.try_wait()?;
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "{what} did not start on port {}: {exited:?}\n{log}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
