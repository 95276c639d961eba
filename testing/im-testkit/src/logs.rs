//! Log lines a test reads back: the servers' own log format
//! ([`im_common::process::log_subscriber`]), written to memory.

use std::{
    io,
    sync::{Arc, Mutex, PoisonError},
};

/// Where a test's log lines go; clones share them.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// A subscriber in the servers' format, writing here the events `filter` lets through
    /// (`"info"`, `"debug"`, ...); install it with `tracing::subscriber::set_default`.
    pub fn subscriber(&self, filter: &str) -> impl tracing::Subscriber + Send + Sync + use<> {
        let sink = self.clone();
        im_common::process::log_subscriber(
            move || sink.clone(),
            false,
            tracing_subscriber::EnvFilter::new(filter),
        )
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
