//! Components every service shares (the "common module" of the design).
//!
//! - [`bus`]: the bus services talk over (typed `call`, `emit`, `serve`), the in-process bus of
//!   the embedded mode, NATS (feature `nats`) for the distributed one, and outboxes (JetStream
//!   streams on NATS, bounded queues in memory in process) for what must not be lost.
//! - [`api`]: what every service API shares: error mapping, the error body, the app secret.
//! - [`auth`]: issuing and verifying access tokens, with revocations.
//! - [`settings`]: defaults, a TOML file and environment overrides, one shape for all services;
//!   the `[cluster]` section; renamed keys; settings reloaded while running.
//! - [`sqlite`]: the embedded stores' SQLite database: WAL, durable commits, one writer.
//! - [`server_db`]: the distributed stores' pooled PostgreSQL or MySQL database.
//! - [`cache`]: caches of other services' answers that events invalidate, caching only while
//!   the events are followed.
//! - [`metrics`]: the process's metrics registry, rendered in the Prometheus text format.
//! - [`ops`]: a service's operations endpoint: `/healthz`, `/readyz`, `/metrics`.
//! - [`process`]: what every server binary does around its services (logging, signals,
//!   printed settings) and why a service could not start.
//!
//! The arrows point one way: `im-proto` <- `im-common` <- services <- binaries.

pub mod api;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod metrics;
pub mod ops;
pub mod process;
pub mod server_db;
pub mod settings;
pub mod sqlite;
pub mod tls;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub use im_proto as proto;
