//! What every server binary does around its services: logging set up from `RUST_LOG`, the
//! signals that stop it, the settings it prints, and why a service could not start.

use std::net::SocketAddr;

use serde::Serialize;

use crate::{bus::BusError, settings::SettingsError};

/// Raises the soft limit on open files to the hard limit, as servers holding many sockets do
/// (the soft default is often 1024); returns the limit in force afterwards.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "the open files limit stays as it was");
            fd_limit()
        }
    }
}

/// The process's soft limit on open files (`u64::MAX` where there is none).
pub fn fd_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft)
}

/// Logs to stderr as the `RUST_LOG` filter says (default: info), colored on a terminal.
pub fn init_tracing() {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::util::SubscriberInitExt::init(log_subscriber(
        std::io::stderr,
        ansi,
        filter,
    ));
}

/// The server's log format, one line per event, written to `writer`. Control characters in
/// a line (newlines, carriage returns, NULs, ...) are escaped whatever field carries them, so
/// text a client sent can never forge a line or hide in one; the fmt layer itself escapes
/// terminal sequences in field values.
pub fn log_subscriber<W>(
    writer: W,
    ansi: bool,
    filter: tracing_subscriber::EnvFilter,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_writer(Escaping(writer))
        .with_ansi(ansi)
        .with_env_filter(filter)
        .finish()
}

/// Makes [`EscapedLines`] writers out of another maker's.
struct Escaping<W>(W);

impl<'a, W: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for Escaping<W>
{
    type Writer = EscapedLines<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapedLines(self.0.make_writer())
    }
}

/// A writer that escapes every control character of a log line but its final newline (and
/// the escape character, which the fmt layer writes only for its colors).
struct EscapedLines<W>(W);

impl<W: std::io::Write> std::io::Write for EscapedLines<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&escape_controls(line))?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `line` with its control characters written as escapes (`\n`, `\r`, `\t`, `\0`,
/// `\x..`), but a final newline and ESC.
fn escape_controls(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let is_control = |b: &u8| (*b < 0x20 || *b == 0x7f) && *b != 0x1b;
    if !body.iter().any(is_control) {
        return line.into();
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0 => out.extend_from_slice(b"\\0"),
            b if is_control(&b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            b => out.push(b),
        }
    }
    if body.len() < line.len() {
        out.push(b'\n');
    }
    out.into()
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
    /// The object store (media) could not be opened or reached.
    #[error("object store: {0}")]
    ObjectStore(#[source] Cause),
}

impl StartError {
    /// The listener for `addr` could not be bound.
    pub fn listen(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Listen { addr, source }
    }
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn log_lines_keep_only_their_final_newline() {
        let forged = b"user=a\n2026-01-01 INFO admin logged in\r\0\x07\n";
        let escaped = escape_controls(forged);
        assert_eq!(
            std::str::from_utf8(&escaped).unwrap(),
            "user=a\\n2026-01-01 INFO admin logged in\\r\\0\\x07\n"
        );
        assert_eq!(escaped.iter().filter(|&&b| b == b'\n').count(), 1);
        // Colors stay; a clean line is passed through as it is.
        let colored = b"\x1b[32mINFO\x1b[0m ready\tnow\n";
        assert_eq!(
            &*escape_controls(colored),
            b"\x1b[32mINFO\x1b[0m ready\\tnow\n"
        );
        assert!(matches!(
            escape_controls(b"plain\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
