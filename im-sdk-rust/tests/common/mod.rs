//! An embedded server for SDK tests (`im_testkit::Embedded`: the business and core services on
//! one in-process bus, their SQLite files in a directory that outlives restarts), quick
//! clients, and the proxy that cuts connections or drops chosen frames.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::result_large_err
)]

use std::{net::SocketAddr, path::Path, time::Duration};

use im_server::settings::CoreSettings;
pub use im_testkit::{
    Embedded,
    proxy::ws_url,
    sdk::{client, collect_until, messages_in},
    token,
};

/// The whole system on a data directory, with rates high enough for bursts and quick
/// reconnects.
pub struct Server(Embedded);

impl std::ops::Deref for Server {
    type Target = Embedded;

    fn deref(&self) -> &Embedded {
        &self.0
    }
}

impl Server {
    pub async fn start(dir: &Path) -> Server {
        Self::start_with(dir, |_| {}).await
    }

    /// Starts with core settings `tune` adjusts.
    pub async fn start_with(
        dir: &Path,
        tune: impl FnOnce(&mut CoreSettings) + Send + 'static,
    ) -> Server {
        let system = Embedded::builder()
            .dir(dir)
            .core(|s| {
                s.messaging.messages_per_second = 10_000;
                s.gateway.frames_per_second = 10_000;
                s.gateway.drain_timeout = Duration::from_secs(2);
                s.gateway.reconnect_after = Duration::from_millis(50);
            })
            .core(tune)
            .start()
            .await;
        Server(system)
    }

    /// Starts with business settings `tune` adjusts.
    pub async fn start_with_business(
        dir: &Path,
        tune: impl FnOnce(&mut im_business::settings::BusinessSettings) + Send + 'static,
    ) -> Server {
        let system = Embedded::builder().dir(dir).business(tune).start().await;
        Server(system)
    }

    /// Stops gracefully: connections get SHUTTING_DOWN, sends in flight are answered.
    pub async fn stop(mut self) {
        self.0.stop().await;
    }
}

/// A proxy in front of the gateway at `addr`.
pub struct Proxy(im_testkit::Proxy);

impl std::ops::Deref for Proxy {
    type Target = im_testkit::Proxy;

    fn deref(&self) -> &im_testkit::Proxy {
        &self.0
    }
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        Proxy(im_testkit::Proxy::start(&ws_url(upstream)).await.unwrap())
    }

    /// Later connections go to `upstream`.
    pub fn point_to(&self, upstream: SocketAddr) {
        self.0.point_to(&ws_url(upstream));
    }
}
