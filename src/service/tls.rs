//! TLS on the gRPC and HTTP ports (`--tls-cert`, `--tls-key`, `--tls-client-ca`), with rustls.
//!
//! The certificate is not fixed at start-up: [`ReloadingCert`] answers every handshake with the
//! pair it last read, and a task re-reads the files every [`TlsConfig::reload_every`], so a
//! certificate cert-manager rotates (a Kubernetes Secret volume swaps both files at once) is
//! served to new connections without a restart. A pair that does not load (a half-written
//! file, a key that does not match) is logged and the previous one kept.
//!
//! Handshakes run in tasks of their own ([`accept_tls`]), so a client that stalls its
//! handshake holds nobody else up; the servers see only finished TLS streams.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take over its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// How often the certificate files are looked at unless set otherwise.
pub const DEFAULT_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Where the server's certificate, key and (for mutual TLS) client CA are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates; set, every client must present one.
    pub client_ca: Option<PathBuf>,
    /// How often the certificate and key files are re-read.
    pub reload_every: Duration,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file was read but holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The PEM certificates in `bytes` (from `path`), at least one.
fn certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The ring provider, the one crypto back end this build carries.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The served certificate and key, re-read from their files by [`ReloadingCert::reload`].
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The file contents last loaded, and last refused (so a bad pair is logged once).
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
    refused: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl ReloadingCert {
    /// Reads the pair once; fails naming the file when it does not load.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = provider();
        let (cert_bytes, key_bytes) = (read(cert)?, read(key)?);
        let certified = Self::certified(cert, key, &cert_bytes, &key_bytes, &provider)?;
        Ok(Self {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(certified)),
            seen: Mutex::new((cert_bytes, key_bytes)),
            refused: Mutex::new(None),
        })
    }

    fn certified(
        cert: &Path,
        key: &Path,
        cert_bytes: &[u8],
        key_bytes: &[u8],
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, TlsError> {
        let chain = certificates(cert, cert_bytes)?;
        let private = PrivateKeyDer::from_pem_slice(key_bytes)
            .map_err(|e| invalid(key, format!("not a PEM private key ({e})")))?;
        CertifiedKey::from_der(chain, private, provider).map_err(|e| {
            invalid(
                key,
                format!("does not fit the certificate in {}: {e}", cert.display()),
            )
        })
    }

    /// Re-reads the files and serves the pair they hold from the next handshake on, when it
    /// differs from the one served and loads. Returns whether the certificate changed.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_bytes = read(&self.cert_path)?;
        let key_bytes = read(&self.key_path)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0 == cert_bytes && seen.1 == key_bytes {
            return Ok(false);
        }
        let certified = Self::certified(
            &self.cert_path,
            &self.key_path,
            &cert_bytes,
            &key_bytes,
            &self.provider,
        )?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        *seen = (cert_bytes, key_bytes);
        Ok(true)
    }

    /// [`Self::reload`], logging the outcome: a new certificate at info, a pair that does not
    /// load at warn (once per distinct content; the previous certificate stays).
    fn reload_and_log(&self) {
        match self.reload() {
            Ok(true) => {
                tracing::info!(cert = %self.cert_path.display(), "serving a new TLS certificate")
            }
            Ok(false) => {}
            Err(e) => {
                let now = (
                    std::fs::read(&self.cert_path).unwrap_or_default(),
                    std::fs::read(&self.key_path).unwrap_or_default(),
                );
                let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                if refused.as_ref() != Some(&now) {
                    tracing::warn!(error = %e, "keeping the current TLS certificate: the new files do not load");
                    *refused = Some(now);
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// The rustls settings of both ports: one certificate, each port its own ALPN protocols.
pub(crate) struct ServerTls {
    /// The certificate both ports serve.
    pub cert: Arc<ReloadingCert>,
    /// For the gRPC port (`h2`).
    pub grpc: TlsAcceptor,
    /// For the HTTP port (`http/1.1`).
    pub http: TlsAcceptor,
}

impl ServerTls {
    /// Loads the certificate, key and client CA of `config`.
    pub fn new(config: &TlsConfig) -> Result<Self, TlsError> {
        let cert = Arc::new(ReloadingCert::load(&config.cert, &config.key)?);
        let verifier = match &config.client_ca {
            None => None,
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates(path, &read(path)?)? {
                    roots.add(ca).map_err(|e| invalid(path, e))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    cert.provider.clone(),
                )
                .build()
                .map_err(|e| invalid(path, e))?;
                Some(verifier)
            }
        };
        let acceptor = |alpn: &[u8]| -> Result<TlsAcceptor, TlsError> {
            let builder = ServerConfig::builder_with_provider(cert.provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(&config.cert, e))?;
            let builder = match &verifier {
                Some(v) => builder.with_client_cert_verifier(v.clone()),
                None => builder.with_no_client_auth(),
            };
            let mut server = builder.with_cert_resolver(cert.clone());
            server.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsAcceptor::from(Arc::new(server)))
        };
        Ok(Self {
            grpc: acceptor(b"h2")?,
            http: acceptor(b"http/1.1")?,
            cert,
        })
    }
}

/// Re-reads the certificate every `every` until `stopping` turns true.
pub(crate) async fn follow_files(
    cert: Arc<ReloadingCert>,
    every: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let cert = cert.clone();
                // File reads and key parsing are blocking work: off the reactor.
                let _ = tokio::task::spawn_blocking(move || cert.reload_and_log()).await;
            }
            changed = stopping.changed() => {
                if changed.is_err() || *stopping.borrow() {
                    return;
                }
            }
        }
    }
}

/// TLS connections of one port whose handshakes are done, for tonic (as a stream) and axum
/// (as an [`axum::serve::Listener`]).
pub(crate) struct TlsIncoming {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsIncoming {
    /// The stream tonic's `serve_with_incoming_shutdown` takes.
    pub fn into_stream(
        self,
    ) -> impl tokio_stream::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
        use tokio_stream::StreamExt;
        tokio_stream::wrappers::ReceiverStream::new(self.accepted).map(|(stream, _)| Ok(stream))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accepting task is gone: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts TCP connections on `listener` and runs each TLS handshake in a task of its own;
/// connections whose handshake fails (plaintext, an untrusted client certificate, a timeout)
/// are closed and logged at debug level.
pub(crate) fn accept_tls(listener: TcpListener, acceptor: TlsAcceptor) -> TlsIncoming {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (tx, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                result = listener.accept() => match result {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    TlsIncoming { accepted, local }
}
