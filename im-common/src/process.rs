//! What every server binary does around its services: logging set up from `RUST_LOG`, the
//! signals that stop it, the settings it prints, and why a service could not start.

use std::net::SocketAddr;

use serde::Serialize;

use crate::{bus::BusError, settings::SettingsError};

/// Logs to stderr as the `RUST_LOG` filter says (default: info), colored on a terminal.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// Returns at Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Prints settings as JSON (the caller hides the secrets first).
pub fn print_settings(settings: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(settings).unwrap_or_default()
    );
}

/// A cause kept for the error chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Settings it cannot run with.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// Its database could not be opened (the setting is shown without its password).
    #[error("database {database}: {source}")]
    Database {
        /// The `database` setting.
        database: String,
        /// Why.
        source: Cause,
    },
    /// A listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The bus refused a subscription, or another service did not answer in time.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    /// Redis could not be used.
    #[error("redis: {0}")]
    Redis(#[source] Cause),
    /// The node may not run now (another process holds its id).
    #[error(transparent)]
    Node(Cause),
}

impl StartError {
    /// The listener for `addr` could not be bound.
    pub fn listen(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Listen { addr, source }
    }
}
