//! API keys with scopes (`--api-keys-file`): one tower layer in front of every door, gRPC and
//! HTTP alike, so no handler checks a key itself.
//!
//! The file holds one key a line, `NAME SCOPE[,SCOPE…] KEY`, `#` starting a comment. A request
//! carries its key as `authorization: Bearer KEY` (gRPC metadata or an HTTP header). What a
//! request needs follows from its path alone ([`access`]): health, reflection and (unless
//! `--protect-metrics`) `/metrics` are open; every other door needs a key with its scope.
//! No key, or one the file does not hold, is `UNAUTHENTICATED` / 401; a key without the
//! door's scope is `PERMISSION_DENIED` / 403. Keys are compared as SHA-256 digests in constant
//! time, and only a key's name ever reaches the logs and the metrics.

use super::metrics::Metrics;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;
use tonic::codegen::http::{self, header, HeaderValue, Request, Response, StatusCode};
use tracing::Instrument;

/// Shortest key accepted in the file: guessing one must stay out of reach.
pub const MIN_KEY_CHARS: usize = 16;

/// What a key allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Labeller, the Open Inference Protocol (gRPC and REST), Label Studio's `/predict`.
    Label,
    /// LabelJobs (jobs, images, reviews, exports), except starting training.
    Jobs,
    /// Whatever starts training: `LabelJobs/TrainJob`, Label Studio's `/webhook`.
    Train,
}

impl Scope {
    /// Every scope with its name in the keys file.
    pub const ALL: [(Scope, &'static str); 3] = [
        (Scope::Label, "label"),
        (Scope::Jobs, "jobs"),
        (Scope::Train, "train"),
    ];

    /// The scope's name in the keys file and in refusals.
    pub fn name(self) -> &'static str {
        Scope::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }

    fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.iter().find(|(_, n)| *n == text).map(|(s, _)| *s)
    }
}

/// What a request must show to pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nothing: health, reflection, liveness and readiness, open metrics.
    Open,
    /// A key with this scope.
    Scope(Scope),
    /// Any key in the file (paths no door serves, protected metrics).
    AnyKey,
}

/// What a request for `path` (an HTTP path; for gRPC `/package.Service/Method`) must show.
pub fn access(path: &str, open_metrics: bool) -> Access {
    const OPEN: [&str; 7] = [
        "/grpc.health.v1.Health/",
        "/grpc.reflection.",
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        "/v2/health/live",
        "/v2/health/ready",
        "/health",
    ];
    if OPEN
        .iter()
        .any(|open| path.starts_with(open) && (open.ends_with(['/', '.']) || path == *open))
    {
        return Access::Open;
    }
    let scope = match path {
        "/metrics" if open_metrics => return Access::Open,
        "/metrics" => return Access::AnyKey,
        "/aelabel.v1.LabelJobs/TrainJob" | "/webhook" => Scope::Train,
        "/predict" | "/setup" => Scope::Label,
        p if p.starts_with("/aelabel.v1.LabelJobs/") => Scope::Jobs,
        p if p.starts_with("/aelabel.v1.Labeller/")
            || p.starts_with("/inference.GRPCInferenceService/")
            || p == "/v2"
            || p.starts_with("/v2/") =>
        {
            Scope::Label
        }
        _ => return Access::AnyKey,
    };
    Access::Scope(scope)
}

/// One key of the file.
#[derive(Clone)]
struct ApiKey {
    name: String,
    scopes: Vec<Scope>,
    digest: [u8; 32],
}

/// The keys of `--api-keys-file`.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

impl std::fmt::Debug for ApiKeys {
    /// Names and scopes only: the keys themselves are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.name, &k.scopes)))
            .finish()
    }
}

/// Why the keys file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file could not be read.
    #[error("cannot read the API keys file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path} line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the key itself).
        reason: String,
    },
    /// The file holds no key.
    #[error("{path}: no API key in the file; write one a line as `NAME SCOPE[,SCOPE…] KEY`")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the keys file's `text` (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeysError> {
        let mut keys = Vec::new();
        let (mut names, mut digests) = (HashSet::new(), HashSet::new());
        for (index, line) in text.lines().enumerate() {
            let fail = |reason: String| KeysError::Line {
                path: path.to_path_buf(),
                line: index + 1,
                reason,
            };
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let [name, scopes, key] = fields[..] else {
                return Err(fail(format!(
                    "expected `NAME SCOPE[,SCOPE…] KEY` (3 fields), found {}",
                    fields.len()
                )));
            };
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(fail(format!(
                    "the name `{name}` may hold only letters, digits, `-`, `_` and `.`"
                )));
            }
            let scopes = scopes
                .split(',')
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        fail(format!(
                            "`{s}` is not a scope: label, jobs or train (comma-separated)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if key.chars().count() < MIN_KEY_CHARS {
                return Err(fail(format!(
                    "the key of `{name}` is shorter than {MIN_KEY_CHARS} characters; generate one with `openssl rand -hex 32`"
                )));
            }
            if !names.insert(name.to_string()) {
                return Err(fail(format!("the name `{name}` is used twice")));
            }
            let digest = digest(key.as_bytes());
            if !digests.insert(digest) {
                return Err(fail(format!(
                    "the key of `{name}` is also another name's key"
                )));
            }
            keys.push(ApiKey {
                name: name.to_string(),
                scopes,
                digest,
            });
        }
        if keys.is_empty() {
            return Err(KeysError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self { keys })
    }

    /// The key matching `presented`. Every key is compared (as digests, in constant time), so
    /// how long this takes says nothing about which key, or how much of one, matched.
    fn find(&self, presented: &[u8]) -> Option<&ApiKey> {
        let presented = digest(presented);
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        found
    }

    /// Decides a request for `path` with these `headers`.
    fn decide(&self, path: &str, headers: &http::HeaderMap, open_metrics: bool) -> Decision {
        let access = access(path, open_metrics);
        if access == Access::Open {
            return Decision::Open;
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        let Some(presented) = presented else {
            return Decision::Refused(Refusal::NoKey);
        };
        let Some(key) = self.find(presented) else {
            return Decision::Refused(Refusal::UnknownKey);
        };
        match access {
            Access::Scope(scope) if !key.scopes.contains(&scope) => {
                Decision::Refused(Refusal::Scope {
                    name: key.name.clone(),
                    scope,
                })
            }
            _ => Decision::Allowed(key.name.clone()),
        }
    }
}

/// A request's fate.
enum Decision {
    Open,
    Allowed(String),
    Refused(Refusal),
}

/// Why a request was refused.
enum Refusal {
    NoKey,
    UnknownKey,
    Scope { name: String, scope: Scope },
}

impl Refusal {
    /// The key name for logs and metrics (`(none)` and `(unknown)` cannot be names in the file).
    fn key_label(&self) -> &str {
        match self {
            Refusal::NoKey => "(none)",
            Refusal::UnknownKey => "(unknown)",
            Refusal::Scope { name, .. } => name,
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Refusal::NoKey | Refusal::UnknownKey => "unauthenticated",
            Refusal::Scope { .. } => "permission_denied",
        }
    }

    fn message(&self, path: &str) -> String {
        match self {
            Refusal::NoKey => format!("{path} needs an API key: send `authorization: Bearer KEY` (the client commands take --api-key or AELABEL_API_KEY)"),
            Refusal::UnknownKey => "the API key is not one this server holds; check it against the server's --api-keys-file".into(),
            Refusal::Scope { name, scope } => format!(
                "the API key `{name}` lacks the `{}` scope that {path} needs; add it to the key's line in --api-keys-file",
                scope.name()
            ),
        }
    }

    /// The answer: a gRPC status for gRPC requests, else HTTP 401/403 with a JSON error.
    fn response(&self, path: &str, grpc: bool) -> Response<tonic::body::Body> {
        let message = self.message(path);
        let unauthenticated = matches!(self, Refusal::NoKey | Refusal::UnknownKey);
        if grpc {
            let status = if unauthenticated {
                tonic::Status::unauthenticated(message)
            } else {
                tonic::Status::permission_denied(message)
            };
            return status.into_http();
        }
        let code = if unauthenticated {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        let body = serde_json::json!({ "error": message }).to_string();
        let mut response = Response::new(tonic::body::Body::new(body));
        *response.status_mut() = code;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The layer in front of every door: passes everything when no keys are configured.
#[derive(Clone)]
pub struct AuthLayer {
    keys: Option<Arc<ApiKeys>>,
    metrics: Arc<Metrics>,
    open_metrics: bool,
}

impl AuthLayer {
    /// Checks requests against `keys` (`None`: no checks), counting outcomes in `metrics`.
    pub fn new(keys: Option<ApiKeys>, metrics: Arc<Metrics>, open_metrics: bool) -> Self {
        Self {
            keys: keys.map(Arc::new),
            metrics,
            open_metrics,
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            layer: self.clone(),
        }
    }
}

/// [`AuthLayer`]'s service around one door.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, ResBody> tower::Service<Request<B>> for Authenticate<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone that was made ready serves this call; the fresh one waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let decision = match &self.layer.keys {
            None => Decision::Open,
            Some(keys) => keys.decide(
                request.uri().path(),
                request.headers(),
                self.layer.open_metrics,
            ),
        };
        let metrics = self.layer.metrics.clone();
        match decision {
            Decision::Open => Box::pin(async move {
                let response = inner.call(request).await?;
                Ok(response.map(tonic::body::Body::new))
            }),
            Decision::Allowed(name) => {
                metrics.auth_done(&name, "allowed");
                let span = tracing::info_span!("request", key = %name);
                Box::pin(
                    async move {
                        let response = inner.call(request).await?;
                        Ok(response.map(tonic::body::Body::new))
                    }
                    .instrument(span),
                )
            }
            Decision::Refused(refusal) => {
                let path = request.uri().path().to_string();
                let grpc = request
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                metrics.auth_done(refusal.key_label(), refusal.outcome());
                tracing::info!(key = refusal.key_label(), %path, outcome = refusal.outcome(), "request refused");
                let response = refusal.response(&path, grpc);
                Box::pin(async move { Ok(response) })
            }
        }
    }
}
