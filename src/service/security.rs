//! What `aelabel serve` asks of its clients and shows them: TLS on both ports, API keys, and a
//! plaintext health-only port for probes that cannot speak TLS.
//!
//! Kubernetes' gRPC probes connect without TLS and without a key, so a server with TLS on
//! keeps them working through [`Security::health_addr`]: a third port that answers only
//! `grpc.health.v1`, in plaintext, from the same health reporter as the main port.

use super::auth::ApiKeys;
use super::tls::TlsConfig;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::{HealthReporter, HealthService};

/// The gRPC health-only port the manifests probe when TLS is on (`--health-addr`).
pub const DEFAULT_HEALTH_PORT: u16 = 50052;

/// TLS, API keys, metrics access and the health-only port of one server.
#[derive(Clone, Debug)]
pub struct Security {
    /// TLS on the gRPC and HTTP ports; `None`: plaintext, as before.
    pub tls: Option<TlsConfig>,
    /// Keys every door but health, reflection and open metrics asks for; `None`: no checks.
    pub api_keys: Option<ApiKeys>,
    /// `/metrics` answers without a key (Prometheus scrapers usually send none).
    pub open_metrics: bool,
    /// A plaintext port answering only `grpc.health.v1`; `None`: no such port.
    pub health_addr: Option<SocketAddr>,
}

impl Default for Security {
    /// Plaintext, no keys, open metrics, no health-only port: the server as it was.
    fn default() -> Self {
        Self {
            tls: None,
            api_keys: None,
            open_metrics: true,
            health_addr: None,
        }
    }
}

/// Serves only `grpc.health.v1`, with `reporter`'s statuses, in plaintext on `listener`: the
/// probes' own port (`--health-addr`). It stops when the task is aborted at shutdown's end,
/// so probes see `NOT_SERVING` while the server drains.
pub(crate) fn spawn_health_port(
    listener: TcpListener,
    reporter: &HealthReporter,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let health = tonic_health::pb::health_server::HealthServer::new(
        HealthService::from_health_reporter(reporter.clone()),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    )
}
