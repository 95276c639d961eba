//! Running the business service: its store, its bus responders and both APIs, with a
//! graceful shutdown. The binary runs it alone; the all-in-one binary composes it with the
//! other services on a shared in-process bus.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use im_common::{
    auth::{TokenIssuer, TokenVerifier},
    bus::Bus,
    bus::{PUSH_KEPT, PUSH_STREAM},
    settings::{Database, SettingsError, without_password},
};
use im_proto::bus;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::{
    Business,
    api::{grpc, http},
    responder::serve_bus_requests,
    settings::BusinessSettings,
    store::{BusinessStore, SqliteStore},
    webhook::{self, Webhook},
};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Bad settings.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The database could not be opened.
    #[error("database {path}: {reason}")]
    Database {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The bus refused a subscription.
    #[error("bus: {0}")]
    Bus(#[from] im_common::bus::BusError),
}

/// A running business service.
#[derive(Debug)]
pub struct RunningBusiness {
    /// Where the HTTP/JSON API listens.
    pub http_addr: SocketAddr,
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// The service itself, for in-process callers.
    pub business: Arc<Business>,
    tasks: JoinSet<()>,
}

impl RunningBusiness {
    /// Waits until every server task has stopped (after the shutdown token fired).
    pub async fn stopped(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The store the `database` setting names: a SQLite file, or a PostgreSQL or MySQL/MariaDB URL.
pub async fn open_store(settings: &BusinessSettings) -> Result<Arc<dyn BusinessStore>, String> {
    match Database::parse(&settings.database) {
        Database::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            let store = SqliteStore::open(path, settings.max_connections)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        Database::Postgres(url) => {
            let store = crate::store::postgres::PgStore::connect(url, settings.max_connections)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "mysql")]
        Database::Mysql(url) => {
            let store = crate::store::mysql::MysqlStore::connect(url, settings.max_connections)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(store))
        }
        #[allow(unreachable_patterns)]
        _ => Err("this build has no support for that database (features postgres, mysql)".into()),
    }
}

/// Starts the service on `bus`; it drains and stops when `shutdown` is cancelled.
pub async fn start(
    settings: &BusinessSettings,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> Result<RunningBusiness, StartError> {
    settings.validate()?;
    let database = |reason: String| StartError::Database {
        path: without_password(&settings.database),
        reason,
    };
    let store = open_store(settings).await.map_err(database)?;
    let business = Business::new(
        store,
        bus.clone(),
        TokenIssuer::new(settings.token_secret.expose().as_bytes()),
        settings.rules(),
        settings.node_id.clone(),
    )
    .await?;
    let business = Arc::new(business);
    let mut tasks = JoinSet::new();
    if !settings.push_webhook_url.is_empty() {
        let pushes = bus.outbox(PUSH_STREAM, bus::PUSH, PUSH_KEPT).await?;
        let webhook = Webhook::new(
            &settings.push_webhook_url,
            settings.push_webhook_secret.expose(),
            Duration::from_millis(settings.push_webhook_timeout_ms),
        )
        .map_err(SettingsError::new)?;
        let ack_wait = Duration::from_millis(settings.push_webhook_timeout_ms.saturating_mul(3));
        let reader = pushes.take(webhook::CONSUMER, ack_wait).await?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = webhook::run(reader, webhook) => {}
                () = stop.cancelled() => {}
            }
        });
    }
    let mut responders = serve_bus_requests(business.clone(), bus.clone()).await?;
    // Users' own tokens on the HTTP API: revocations on record, then those announced.
    let verifier = Arc::new(
        TokenVerifier::new(settings.token_secret.expose().as_bytes(), None)
            .map_err(|e| SettingsError::new(e.to_string()))?,
    );
    for r in business
        .all_revocations()
        .await
        .map_err(|e| database(e.to_string()))?
    {
        verifier.revoke(&r.user_id, &r.device_id, r.revoked_before_ms);
    }
    let following = verifier.clone().follow(bus.as_ref()).await?;
    let stop = shutdown.clone();
    tasks.spawn(async move {
        stop.cancelled().await;
        responders.abort_all();
        following.abort();
    });

    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })
    };
    let http_listener = bind(settings.http_listen).await?;
    let grpc_listener = bind(settings.grpc_listen).await?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Listen {
            addr: settings.http_listen,
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| StartError::Listen {
            addr: settings.grpc_listen,
            source,
        })?;

    let ready = Arc::new(AtomicBool::new(false));
    let state = http::ApiState::new(
        business.clone(),
        settings.app_secret.expose().as_bytes(),
        ready.clone(),
    )
    .with_user_tokens(verifier);
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let serving = axum::serve(http_listener, http::router(state))
            .with_graceful_shutdown(stop.cancelled_owned());
        if let Err(error) = serving.await {
            tracing::error!(%error, "http api stopped");
        }
    });
    let routes = grpc::routes(business.clone(), settings.app_secret.expose().as_bytes());
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let serving = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpIncoming::from(grpc_listener), stop.cancelled_owned());
        if let Err(error) = serving.await {
            tracing::error!(%error, "grpc api stopped");
        }
    });
    ready.store(true, Ordering::SeqCst);
    let stop = shutdown;
    tasks.spawn(async move {
        stop.cancelled().await;
        ready.store(false, Ordering::SeqCst);
    });
    tracing::info!(node_id = %settings.node_id, %http_addr, %grpc_addr, "business service ready");
    Ok(RunningBusiness {
        http_addr,
        grpc_addr,
        business,
        tasks,
    })
}
