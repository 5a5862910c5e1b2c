//! Fetching a task's image: Label Studio's own `/data/...` paths through its base URL with the
//! token, other `http(s)://` URLs directly (the token only goes to Label Studio's own origin),
//! and `data:` URIs decoded in place. Every fetch has a size limit and a timeout, and the body
//! is read in chunks so an oversized answer is cut off at the limit, never held whole.

use base64::Engine as _;
use futures_util::StreamExt;
use reqwest::header::AUTHORIZATION;
use reqwest::{StatusCode, Url};
use std::time::Duration;

/// Why an image could not be fetched; the message names the URL and what to do.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not a URL form aelabel can fetch.
    #[error("`{0}` is not an image URL aelabel can fetch; use Label Studio's /data/… paths, http(s):// URLs or data: URIs")]
    Unsupported(String),
    /// A `data:` URI that is not base64 or does not decode.
    #[error("the data: URI is not valid base64 image data ({0})")]
    DataUri(String),
    /// Bigger than the limit.
    #[error("the image at {url} is larger than the {limit_mib} MiB limit (--label-studio-max-image-mib); send a smaller image")]
    TooLarge {
        /// What was fetched.
        url: String,
        /// The limit.
        limit_mib: u64,
    },
    /// The server refused the credentials.
    #[error("Label Studio refused the image request {url} with {status}; check --label-studio-token (Label Studio: Account & Settings → access token) and --label-studio-url")]
    Unauthorized {
        /// What was fetched.
        url: String,
        /// The answer's status.
        status: StatusCode,
    },
    /// Another error status.
    #[error("fetching {url} answered {status}; check that the task's image exists")]
    Status {
        /// What was fetched.
        url: String,
        /// The answer's status.
        status: StatusCode,
    },
    /// No answer in time.
    #[error("fetching {url} took longer than {seconds} s (--label-studio-fetch-timeout-secs); is the server reachable?")]
    Timeout {
        /// What was fetched.
        url: String,
        /// The timeout.
        seconds: u64,
    },
    /// No connection or a broken transfer.
    #[error("cannot fetch {url}: {reason}; check that --label-studio-url ({base}) is reachable from aelabel")]
    Unreachable {
        /// What was fetched.
        url: String,
        /// Label Studio's base URL.
        base: String,
        /// The client's error.
        reason: String,
    },
}

/// Fetches task images under the backend's limits.
#[derive(Clone, Debug)]
pub struct ImageFetcher {
    client: reqwest::Client,
    base: Url,
    token: String,
    max_bytes: u64,
    timeout: Duration,
}

impl ImageFetcher {
    /// A fetcher for Label Studio at `base` (its token `token`), refusing images over
    /// `max_bytes` and fetches slower than `timeout`.
    pub fn new(
        base: Url,
        token: String,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Self {
            client,
            base,
            token,
            max_bytes,
            timeout,
        })
    }

    /// The image bytes `reference` (a task data value) points at.
    pub async fn fetch(&self, reference: &str) -> Result<Vec<u8>, FetchError> {
        if let Some(rest) = reference.strip_prefix("data:") {
            return self.data_uri(rest);
        }
        let url = if reference.starts_with("http://") || reference.starts_with("https://") {
            Url::parse(reference).map_err(|_| FetchError::Unsupported(reference.to_string()))?
        } else if reference.starts_with('/') {
            self.base
                .join(reference.trim_start_matches('/'))
                .map_err(|_| FetchError::Unsupported(reference.to_string()))?
        } else {
            return Err(FetchError::Unsupported(reference.to_string()));
        };
        self.get(url).await
    }

    fn data_uri(&self, rest: &str) -> Result<Vec<u8>, FetchError> {
        let (header, payload) = rest
            .split_once(',')
            .ok_or_else(|| FetchError::DataUri("no `,` before the data".into()))?;
        if !header.ends_with(";base64") {
            return Err(FetchError::DataUri(
                "only ;base64 data: URIs are images".into(),
            ));
        }
        // Base64 carries 3 bytes in 4 characters: refuse before decoding anything too big.
        if (payload.len() as u64) / 4 * 3 > self.max_bytes {
            return Err(self.too_large("the data: URI"));
        }
        base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map_err(|e| FetchError::DataUri(e.to_string()))
    }

    fn too_large(&self, url: &str) -> FetchError {
        FetchError::TooLarge {
            url: url.to_string(),
            limit_mib: self.max_bytes.div_ceil(1 << 20),
        }
    }

    async fn get(&self, url: Url) -> Result<Vec<u8>, FetchError> {
        let shown = url.to_string();
        let mut request = self.client.get(url.clone());
        // The token is Label Studio's: it goes to Label Studio's own origin only.
        if url.origin() == self.base.origin() {
            request = request.header(AUTHORIZATION, format!("Token {}", self.token));
        }
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout {
                    url: shown.clone(),
                    seconds: self.timeout.as_secs().max(1),
                }
            } else {
                FetchError::Unreachable {
                    url: shown.clone(),
                    base: self.base.to_string(),
                    reason: e.to_string(),
                }
            }
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(FetchError::Unauthorized { url: shown, status });
        }
        if !status.is_success() {
            return Err(FetchError::Status { url: shown, status });
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(self.too_large(&shown));
        }
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(failed)?;
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(self.too_large(&shown));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
