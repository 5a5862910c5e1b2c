//! The one HTTP port of `aelabel serve` (`--http-addr`): Prometheus `/metrics` today, and the
//! routes other front doors add to the same [`axum::Router`] (Open Inference Protocol REST,
//! Label Studio ML backend).
//!
//! axum comes with tonic already; one router means one listener, one graceful shutdown and one
//! port for Kubernetes to scrape and probe.

use super::metrics::Metrics;
use axum::http::header::CONTENT_TYPE;
use axum::Router;
use std::future::Future;
use std::sync::Arc;

/// The Prometheus text exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: every metric of `metrics`, rendered at request time.
pub fn metrics_routes(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { ([(CONTENT_TYPE, PROMETHEUS_TEXT)], metrics.render()) }
        }),
    )
}

/// Serves `routes` on `listener` in a task, over TLS when `tls` is set, until `shutdown`
/// resolves.
pub(crate) fn spawn(
    listener: tokio::net::TcpListener,
    routes: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    match tls {
        Some(tls) => tokio::spawn(serve(
            super::tls::accept_tls(listener, tls),
            routes,
            shutdown,
        )),
        None => tokio::spawn(serve(listener, routes, shutdown)),
    }
}

/// Serves `routes` on `listener` (plain TCP, or TLS connections) until `shutdown` resolves.
pub async fn serve<L>(
    listener: L,
    routes: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown)
        .await
}
