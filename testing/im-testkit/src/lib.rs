//! What the tests share, in one place:
//!
//! - [`embedded`]: the whole system in the test's process (business and core on one
//!   in-process bus), as the `im-server` binary composes it, on ephemeral ports.
//! - [`binary`]: the `im-server` binary as a process of its own, and its `token` command.
//! - [`client`]: a raw protocol client: real WebSocket, protobuf frames, nothing hidden.
//! - [`proxy`]: a WebSocket proxy that cuts every connection at once or drops chosen frames.
//! - [`sidecar`]: nats-server and redis-server as child processes of their own, killed on drop.
//! - [`db`]: a fresh database on a real PostgreSQL or MariaDB server.
//! - [`logs`]: log lines captured in the servers' own format, for tests that read them.
//! - [`sdk`]: clients of the Rust SDK that reconnect quickly, and what they show.
//! - [`service_url`], [`now_ms`] and [`token`]: the services the environment names, the clock,
//!   tokens signed with [`TOKEN_SECRET`].
//!
//! Tests panic on failure; the fallible pieces (the client's `open` and `read`, the proxy) also
//! serve the conformance runner, which reports instead.

pub mod binary;
pub mod client;
pub mod db;
pub mod embedded;
pub mod logs;
pub mod proxy;
pub mod sdk;
pub mod sidecar;

pub use client::Client;
pub use embedded::Embedded;
pub use proxy::Proxy;
pub use sidecar::Sidecar;

/// The token secret of every test system.
pub const TOKEN_SECRET: &str = "a-test-token-secret-of-at-least-32-bytes";

/// The app secret of every test system.
pub const APP_SECRET: &str = "a-test-app-secret";

/// The URL of a real service the tests need, from the environment variable `var` (as
/// `scripts/services start` prints them). Without it a test skips, saying so loudly; in CI
/// (`CI` set) it fails instead, since `.ci/run` starts every service.
pub fn service_url(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set in CI: scripts/services start must run first")
        }
        _ => {
            eprintln!("SKIPPED: {what} needs {var} (eval \"$(scripts/services start)\")");
            None
        }
    }
}

/// Unix time in milliseconds: the clock tests compare with the server's.
pub fn now_ms() -> i64 {
    im_common::now_ms()
}

/// A token for `user` on `device`, valid for an hour, signed with [`TOKEN_SECRET`].
pub fn token(user: &str, device: &str) -> String {
    im_common::auth::TokenIssuer::new(TOKEN_SECRET.as_bytes())
        .issue(user, device, now_ms(), 3_600_000)
        .unwrap_or_else(|e| panic!("a token: {e}"))
}
