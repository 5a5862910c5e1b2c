//! What `aelabel serve` asks of its clients and shows them: TLS on both ports, API keys, and a
//! plaintext health-only port for probes that cannot speak TLS.
//!
//! Kubernetes' gRPC probes connect without TLS and without a key, so a server with TLS on
//! keeps them working through [`Security::health_addr`]: a third port that answers only
//! `grpc.health.v1`, in plaintext, from the same health reporter as the main port.

use super::auth::ApiKeys;
use super::tls::TlsConfig;
use std::net::SocketAddr;

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
