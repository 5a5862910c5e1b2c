//! TLS and API-key flags: the server's (`aelabel serve`) and the client commands'.

use crate::client::Target;
use crate::config::parse_positive;
use crate::service::auth::ApiKeys;
use crate::service::{Security, TlsConfig};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// TLS, API-key and health-port flags of `aelabel serve`.
#[derive(Debug, Args)]
pub struct ServeSecurityArgs {
    /// PEM certificate chain: serve gRPC and HTTP over TLS (needs --tls-key). The files are
    /// re-read every --tls-reload-secs, so a rotated certificate is served without a restart.
    #[arg(long, env = "AELABEL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "AELABEL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require every client to present a certificate they signed
    /// (mutual TLS; needs --tls-cert).
    #[arg(long, env = "AELABEL_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the certificate files are checked for a new pair, in seconds.
    #[arg(long, default_value_t = 5, env = "AELABEL_TLS_RELOAD_SECS", value_parser = parse_positive)]
    pub tls_reload_secs: usize,
    /// API keys, one a line: `NAME SCOPE[,SCOPE…] KEY` (scopes: label, jobs, train; `#`
    /// starts a comment). Every call but health, reflection and /metrics then needs
    /// `authorization: Bearer KEY` with the door's scope.
    #[arg(long, env = "AELABEL_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// With --api-keys-file, `/metrics` needs a key too (any scope) [default: open, for
    /// scrapers].
    #[arg(long, env = "AELABEL_PROTECT_METRICS")]
    pub protect_metrics: bool,
    /// A plaintext gRPC port answering only grpc.health.v1 (the main port's statuses), for
    /// probes that cannot speak TLS, such as Kubernetes' gRPC probes.
    #[arg(long, env = "AELABEL_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
}

impl ServeSecurityArgs {
    /// The server's settings; reads the keys file, failing with one line naming the file and
    /// the line that is wrong.
    pub fn config(&self) -> anyhow::Result<Security> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                reload_every: Duration::from_secs(self.tls_reload_secs as u64),
            }),
            _ => None,
        };
        let api_keys = match &self.api_keys_file {
            Some(path) => Some(ApiKeys::load(path)?),
            None => None,
        };
        if self.protect_metrics && api_keys.is_none() {
            anyhow::bail!("--protect-metrics needs --api-keys-file (the keys /metrics asks for)");
        }
        Ok(Security {
            tls,
            api_keys,
            open_metrics: !self.protect_metrics,
            health_addr: self.health_addr,
        })
    }
}

/// How a client command reaches its server: TLS and the API key.
#[derive(Debug, Args)]
pub struct ClientSecurityArgs {
    /// PEM CA certificate the server's certificate must chain to (turns TLS on for a bare
    /// `host:port`) [default over https://: the public web roots].
    #[arg(long, env = "AELABEL_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for servers with --tls-client-ca (needs --client-key).
    #[arg(
        long,
        env = "AELABEL_CLIENT_CERT",
        requires = "client_key",
        global = true
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "AELABEL_CLIENT_KEY",
        requires = "client_cert",
        global = true
    )]
    pub client_key: Option<PathBuf>,
    /// API key sent as `authorization: Bearer KEY` (prefer the variable: command lines are
    /// visible to other users of the machine).
    #[arg(long, env = "AELABEL_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

impl ClientSecurityArgs {
    /// `server` reached with these settings.
    pub fn target(&self, server: &str) -> Target {
        Target {
            server: server.to_string(),
            ca_cert: self.ca_cert.clone(),
            client_identity: self.client_cert.clone().zip(self.client_key.clone()),
            api_key: self.api_key.clone(),
        }
    }
}
