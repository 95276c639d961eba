//! A service's operations endpoint, on a listener of its own (never the API's), for load
//! balancers and monitoring: `GET /healthz` (the process lives), `GET /readyz` (it takes
//! traffic: 503 before it does and once it drains) and `GET /metrics` (Prometheus text format).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::net::TcpListener;

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> (StatusCode, &'static str) {
    if ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics() -> String {
    crate::metrics::render()
}

/// The routes; `ready` is false until the service takes traffic and once it drains.
pub fn router(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ready)
}

/// Serves the routes on `listener` until `stop` completes (the process's registry is
/// installed first, so that `/metrics` has one to render).
pub async fn serve(
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    crate::metrics::prometheus();
    let served = axum::serve(listener, router(ready)).with_graceful_shutdown(stop);
    if let Err(error) = served.await {
        tracing::error!(%error, "operations endpoint failed");
    }
}
