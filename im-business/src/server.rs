//! Running the business service: its store, its bus responders and both APIs, with a
//! graceful shutdown. The binary runs it alone; the all-in-one binary composes it with the
//! other services on a shared in-process bus.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use im_common::{
    auth::TokenIssuer,
    bus::{Bus, MEDIA_REFS_KEPT, MEDIA_REFS_STREAM, PUSH_KEPT, PUSH_STREAM},
    process::StartError,
    settings::{ClusterSettings, Database, SettingsError, without_password},
    tls::{TlsFiles, TlsListener},
};
use im_proto::bus;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::{
    Business,
    api::{grpc, http},
    media::{Media, ObjectStore, fs::FsObjectStore, references},
    responder::{serve_bus_requests, serve_media_requests},
    settings::BusinessSettings,
    store::{BusinessStore, SqliteBusinessStore},
    webhook::{self, Webhook},
};

/// How long a client of the HTTPS API has for its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The gRPC listener's identity: the same files as the HTTPS listener's.
fn grpc_identity(files: &TlsFiles) -> Result<tonic::transport::Identity, StartError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| SettingsError::new(format!("tls: {}: {e}", path.display())))
    };
    Ok(tonic::transport::Identity::from_pem(
        read(&files.cert_file)?,
        read(&files.key_file)?,
    ))
}

/// A running business service.
#[derive(Debug)]
pub struct RunningBusiness {
    /// Where the HTTP/JSON API listens.
    pub http_addr: SocketAddr,
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub ops_addr: SocketAddr,
    /// The service itself, for in-process callers.
    pub business: Arc<Business>,
    /// Its media, for in-process callers.
    pub media: Arc<Media>,
    tasks: JoinSet<()>,
}

impl RunningBusiness {
    /// Waits until every server task has stopped (after the shutdown token fired).
    pub async fn stopped(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The store the `database` setting names: a SQLite file, or a PostgreSQL or MySQL/MariaDB URL.
pub async fn open_store(settings: &BusinessSettings) -> Result<Arc<dyn BusinessStore>, StartError> {
    let database = |source: Box<dyn std::error::Error + Send + Sync>| StartError::Database {
        database: without_password(&settings.database),
        source,
    };
    match Database::parse(&settings.database) {
        Database::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| database(Box::new(e)))?;
            }
            let store = SqliteBusinessStore::open(path, settings.max_connections)
                .await
                .map_err(|e| database(Box::new(e)))?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        Database::Postgres(url) => {
            let store =
                crate::store::postgres::PgBusinessStore::connect(url, settings.max_connections)
                    .await
                    .map_err(|e| database(Box::new(e)))?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "mysql")]
        Database::Mysql(url) => {
            let store =
                crate::store::mysql::MysqlBusinessStore::connect(url, settings.max_connections)
                    .await
                    .map_err(|e| database(Box::new(e)))?;
            Ok(Arc::new(store))
        }
        #[allow(unreachable_patterns)]
        _ => Err(database(
            "this build has no support for that database (features postgres, mysql)".into(),
        )),
    }
}

/// How often notices not appended yet are asked again, and how old they must be by then.
const NOTICE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a media reference taken from the outbox may take to record before it comes again.
const REFERENCES_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Starts the service on `bus`; it drains and stops when `shutdown` is cancelled.
pub async fn start(
    cluster: &ClusterSettings,
    settings: &BusinessSettings,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> Result<RunningBusiness, StartError> {
    cluster.validate()?;
    settings.validate()?;
    let store = open_store(settings).await?;
    let business = Business::new(
        store,
        bus.clone(),
        TokenIssuer::new(cluster.token_secret.expose().as_bytes()),
        settings.rules(),
        cluster.node_id.clone(),
    )
    .await?;
    let business = Arc::new(business);
    let mut tasks = JoinSet::new();
    if !settings.push_webhook_url.is_empty() {
        let pushes = bus.outbox(PUSH_STREAM, bus::PUSH, PUSH_KEPT).await?;
        let webhook = Webhook::new(
            &settings.push_webhook_url,
            settings.push_webhook_secret.expose(),
            settings.push_webhook_timeout,
        )
        .map_err(SettingsError::new)?;
        let ack_wait = settings.push_webhook_timeout.saturating_mul(3);
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
    // Notices no core node took when their change was stored, asked again until one does.
    let (notices, stop) = (business.clone(), shutdown.clone());
    tasks.spawn(async move {
        let mut every = tokio::time::interval(NOTICE_RETRY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = stop.cancelled() => return,
            }
            if let Err(error) = notices
                .append_pending_notices(NOTICE_RETRY.as_millis() as i64)
                .await
            {
                tracing::warn!(%error, "pending notices not read");
            }
        }
    });
    // Users' own tokens on the HTTP API: revocations on record, then those announced.
    let verifier = Arc::new(cluster.token_verifier()?);
    let revoked = business
        .all_revocations()
        .await
        .map_err(|e| StartError::Database {
            database: without_password(&settings.database),
            source: Box::new(e),
        })?;
    for r in revoked {
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
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(StartError::listen(addr))?;
        let bound = listener.local_addr().map_err(StartError::listen(addr))?;
        Ok::<_, StartError>((listener, bound))
    };
    let (http_listener, http_addr) = bind(settings.http_listen).await?;
    let (grpc_listener, grpc_addr) = bind(settings.grpc_listen).await?;
    let (ops_listener, ops_addr) = bind(settings.ops_listen).await?;

    let ready = Arc::new(AtomicBool::new(false));
    tasks.spawn(im_common::ops::serve(
        ops_listener,
        ready.clone(),
        shutdown.clone().cancelled_owned(),
    ));
    let (objects, blob_routes) = open_objects(settings, http_addr).await?;
    let media = Arc::new(Media::new(
        business.store(),
        objects.clone(),
        bus.clone(),
        settings.media.clone(),
    ));
    let mut media_responders = serve_media_requests(media.clone(), bus.clone()).await?;
    // The media committed entries reference, from the core's outbox.
    let references = bus
        .outbox(MEDIA_REFS_STREAM, im_proto::bus::MEDIA_REF, MEDIA_REFS_KEPT)
        .await?
        .take(references::CONSUMER, REFERENCES_ACK_WAIT)
        .await?;
    let (recorder, stop) = (media.clone(), shutdown.clone());
    tasks.spawn(async move {
        tokio::select! {
            () = references::run(references, recorder) => {}
            () = stop.cancelled() => {}
        }
    });
    let (sweeper, stop) = (media.clone(), shutdown.clone());
    tasks.spawn(async move {
        sweeper.sweep_expired(stop).await;
        media_responders.abort_all();
    });
    let state = http::ApiState::new(business.clone(), settings.app_secret.expose().as_bytes())
        .with_user_tokens(verifier)
        .with_media(media.clone());
    let stop = shutdown.clone();
    let mut router = http::router(state);
    if let Some(blob_routes) = blob_routes {
        router = router.merge(blob_routes);
    }
    match &settings.tls {
        None => {
            tasks.spawn(async move {
                let serving = axum::serve(http_listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned());
                if let Err(error) = serving.await {
                    tracing::error!(%error, "http api stopped");
                }
            });
        }
        Some(files) => {
            let acceptor = files.acceptor(&[b"http/1.1"])?;
            let listener = TlsListener::new(http_listener, acceptor, TLS_HANDSHAKE_TIMEOUT)
                .map_err(StartError::listen(http_addr))?;
            tasks.spawn(async move {
                let serving =
                    axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
                if let Err(error) = serving.await {
                    tracing::error!(%error, "https api stopped");
                }
            });
        }
    }
    let routes = grpc::routes(
        business.clone(),
        Some(media.clone()),
        settings.app_secret.expose().as_bytes(),
    );
    let mut grpc_server = tonic::transport::Server::builder();
    if let Some(files) = &settings.tls {
        let identity = grpc_identity(files)?;
        grpc_server = grpc_server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| StartError::Settings(SettingsError::new(format!("tls: {e}"))))?;
    }
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let serving = grpc_server
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
    tracing::info!(node_id = %cluster.node_id, %http_addr, %grpc_addr, %ops_addr, "business service ready");
    Ok(RunningBusiness {
        http_addr,
        grpc_addr,
        ops_addr,
        business,
        media,
        tasks,
    })
}

/// The object store media live in: the S3 bucket of `[business.media_s3]`, or files under
/// `media_dir` with their signed URLs served by the HTTP listener (the routes to merge).
async fn open_objects(
    settings: &BusinessSettings,
    http_addr: SocketAddr,
) -> Result<(Arc<dyn ObjectStore>, Option<axum::Router>), StartError> {
    #[cfg(feature = "s3")]
    if let Some(s3) = &settings.media_s3 {
        let store = crate::media::s3::S3ObjectStore::open(s3)
            .await
            .map_err(|e| StartError::ObjectStore(Box::new(e)))?;
        tracing::info!(endpoint = %s3.endpoint, bucket = %s3.bucket, "media on S3");
        return Ok((Arc::new(store), None));
    }
    let public_url = if settings.media_public_url.is_empty() {
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{http_addr}")
    } else {
        settings.media_public_url.clone()
    };
    let store = FsObjectStore::open(
        &settings.media_dir,
        &public_url,
        settings.app_secret.expose().as_bytes(),
    )
    .map(Arc::new)
    .map_err(|e| {
        SettingsError::new(format!(
            "business.media_dir {}: {e}",
            settings.media_dir.display()
        ))
    })?;
    Ok((store.clone(), Some(store.routes())))
}
