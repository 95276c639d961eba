//! The `im-server` binary as its own process, in the embedded mode, on a data directory: for
//! the tests and benchmarks that kill it or measure it alone.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
};

use crate::sidecar::Proc;

/// Starts the binary `bin` on `data` with every listener on an ephemeral port, the rate limits
/// raised out of a load's way, and `env` on top; the process (SIGKILLed when dropped) and the
/// gateway's address, read from what it prints.
pub fn start(bin: &str, data: &Path, env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let (proc, printed) = start_printing(bin, data, env);
    (proc, printed.gateway)
}

/// The addresses a started binary printed.
#[derive(Debug, Clone)]
pub struct Printed {
    /// The gateway (`ws://` or `wss://`).
    pub gateway: SocketAddr,
    /// The business API (`http://` or `https://`).
    pub api: SocketAddr,
    /// The business gRPC API.
    pub grpc: SocketAddr,
}

/// [`start`], with every address the binary printed.
pub fn start_printing(bin: &str, data: &Path, env: &[(&str, &str)]) -> (Proc, Printed) {
    launch(Command::new(bin), bin, data, env)
}

/// [`start`], with the process allowed at most `open_files` file descriptors (soft and hard
/// limit, through util-linux's `prlimit`, which execs the binary: the pid stays its own).
pub fn start_with_open_files(
    bin: &str,
    data: &Path,
    env: &[(&str, &str)],
    open_files: u64,
) -> (Proc, SocketAddr) {
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={open_files}:{open_files}"))
        .arg(bin);
    let (proc, printed) = launch(command, bin, data, env);
    (proc, printed.gateway)
}

/// The address in `line` after `marker` (and after a `scheme://`), up to a space, `/` or `;`.
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let word = rest.split_whitespace().next()?;
    let word = word.split_once("://").map_or(word, |(_, after)| after);
    word.split(['/', ';', ')']).next()?.parse().ok()
}

fn launch(mut command: Command, bin: &str, data: &Path, env: &[(&str, &str)]) -> (Proc, Printed) {
    let mut child = command
        .arg("--data-dir")
        .arg(data)
        .env("IM_CORE__LISTEN", "127.0.0.1:0")
        .env("IM_CORE__HTTP_LISTEN", "127.0.0.1:0")
        .env("IM_CORE__MESSAGING__MESSAGES_PER_SECOND", "1000000")
        .env("IM_CORE__GATEWAY__FRAMES_PER_SECOND", "1000000")
        .env("IM_BUSINESS__HTTP_LISTEN", "127.0.0.1:0")
        .env("IM_BUSINESS__GRPC_LISTEN", "127.0.0.1:0")
        .env("IM_BUSINESS__OPS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} starts: {e}"));
    let Some(stdout) = child.stdout.take() else {
        panic!("{bin}'s stdout is piped");
    };
    let mut proc = Proc::new(child);
    let mut lines = BufReader::new(stdout).lines();
    let (mut gateway, mut api, mut grpc) = (None, None, None);
    let printed = loop {
        let Some(Ok(line)) = lines.next() else {
            proc.kill();
            panic!("{bin} exited before it printed its addresses");
        };
        gateway = gateway.or_else(|| address_after(&line, "WebSocket"));
        if line.contains("business API") {
            api = address_after(&line, "business API");
            grpc = address_after(&line, "gRPC on").or_else(|| address_after(&line, "TLS on"));
        }
        if let (Some(gateway), Some(api), Some(grpc)) = (gateway, api, grpc) {
            break Printed { gateway, api, grpc };
        }
    };
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (proc, printed)
}

/// A token for `user` on `device` from the binary's `token` command (which creates the user).
pub fn token(bin: &str, data: &Path, user: &str, device: &str) -> String {
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(data)
        .args(["token", user, "--device", device])
        .env("RUST_LOG", "error")
        .output()
        .unwrap_or_else(|e| panic!("{bin} token: {e}"));
    assert!(
        out.status.success(),
        "{bin} token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
