//! How the client commands reach a server: its URL, TLS (`https://`, `--ca-cert`, a client
//! certificate for mutual TLS) and the API key sent with every call.

use super::ClientError;
use std::path::PathBuf;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A server and how to talk to it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// `host:port` or a full `http://` / `https://` URL.
    pub server: String,
    /// PEM CA certificate(s) the server's certificate must chain to; `None` over `https://`:
    /// the public web roots.
    pub ca_cert: Option<PathBuf>,
    /// PEM certificate and key this client presents, for servers with `--tls-client-ca`.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Sent as `authorization: Bearer KEY` with every call.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for Target {
    /// Everything but the key, which must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("server", &self.server)
            .field("ca_cert", &self.ca_cert)
            .field("client_identity", &self.client_identity)
            .field("api_key", &self.api_key.as_ref().map(|_| "…"))
            .finish()
    }
}

impl From<&str> for Target {
    /// A plaintext server without a key.
    fn from(server: &str) -> Self {
        Self {
            server: server.to_string(),
            ..Self::default()
        }
    }
}

impl Target {
    /// Whether the connection uses TLS: an `https://` URL, or a bare `host:port` with a CA or
    /// client certificate given.
    pub fn uses_tls(&self) -> bool {
        self.server.starts_with("https://")
            || (!self.server.contains("://")
                && (self.ca_cert.is_some() || self.client_identity.is_some()))
    }

    /// The endpoint URL: the server as given when it has a scheme, else `http://` or
    /// `https://` by [`Self::uses_tls`].
    pub fn url(&self) -> String {
        if self.server.contains("://") {
            self.server.clone()
        } else if self.uses_tls() {
            format!("https://{}", self.server)
        } else {
            format!("http://{}", self.server)
        }
    }

    fn tls_config(&self) -> Result<ClientTlsConfig, ClientError> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|e| {
                ClientError::Usage(format!("cannot read {what} {}: {e}", path.display()))
            })
        };
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_cert {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read(path, "--ca-cert")?)),
            None => tls.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.client_identity {
            tls = tls.identity(Identity::from_pem(
                read(cert, "--client-cert")?,
                read(key, "--client-key")?,
            ));
        }
        Ok(tls)
    }
}

/// Adds the API key to every call's metadata.
#[derive(Clone, Debug)]
pub struct BearerKey(Option<MetadataValue<Ascii>>);

impl BearerKey {
    /// The header value for `key`; refused when a header cannot carry it.
    pub fn new(key: Option<&str>) -> Result<Self, ClientError> {
        key.map(|key| {
            format!("Bearer {key}").parse().map_err(|_| {
                ClientError::Usage(
                    "the API key holds characters an HTTP header cannot carry (use printable ASCII)"
                        .into(),
                )
            })
        })
        .transpose()
        .map(Self)
    }
}

impl tonic::service::Interceptor for BearerKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// One connection to a server, carrying the API key.
pub type Connection = InterceptedService<Channel, BearerKey>;

/// Opens one HTTP/2 connection (TLS when [`Target::uses_tls`]) to `target`.
pub async fn channel(target: &Target) -> Result<Connection, ClientError> {
    let url = target.url();
    let failed = |reason: String| ClientError::Connect {
        url: url.clone(),
        reason,
    };
    if target.server.starts_with("http://")
        && (target.ca_cert.is_some() || target.client_identity.is_some())
    {
        return Err(ClientError::Usage(format!(
            "--ca-cert and --client-cert need TLS, but the server URL {url} is http://; use https://"
        )));
    }
    let key = BearerKey::new(target.api_key.as_deref())?;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| failed(crate::telemetry::describe_error(&e)))?
        .tcp_nodelay(true);
    if target.uses_tls() {
        endpoint = endpoint
            .tls_config(target.tls_config()?)
            .map_err(|e| failed(crate::telemetry::describe_error(&e)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| failed(crate::telemetry::describe_error(&e)))?;
    Ok(InterceptedService::new(channel, key))
}
