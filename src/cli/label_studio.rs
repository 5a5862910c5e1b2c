//! The flags of `aelabel serve` that connect it to Label Studio as an ML backend.

use crate::config::{aelabel_home, parse_positive};
use crate::service::LabelStudioConfig;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Label Studio ML backend flags of `aelabel serve`.
#[derive(Debug, Args)]
pub struct LabelStudioArgs {
    /// Serve the Label Studio ML backend (`/health`, `/setup`, `/predict`, `/webhook`) on the
    /// HTTP port, for the Label Studio at this URL (task images at `/data/...` are fetched
    /// through it). Needs the registry (no --model).
    #[arg(
        long,
        env = "AELABEL_LABEL_STUDIO_URL",
        requires = "label_studio_token"
    )]
    pub label_studio_url: Option<String>,
    /// Label Studio's access token (Account & Settings), sent as `Authorization: Token …`
    /// when fetching task images from it.
    #[arg(long, env = "AELABEL_LABEL_STUDIO_TOKEN", hide_env_values = true)]
    pub label_studio_token: Option<String>,
    /// Largest task image fetched, in MiB.
    #[arg(long, default_value_t = 8, env = "AELABEL_LABEL_STUDIO_MAX_IMAGE_MIB", value_parser = parse_positive)]
    pub label_studio_max_image_mib: usize,
    /// Longest a task image fetch may take, in seconds.
    #[arg(long, default_value_t = 10, env = "AELABEL_LABEL_STUDIO_FETCH_TIMEOUT_SECS", value_parser = parse_positive)]
    pub label_studio_fetch_timeout_secs: usize,
    /// Where START_TRAINING writes retrained models [default: AELABEL_HOME/runs].
    #[arg(long, env = "AELABEL_LABEL_STUDIO_RUNS")]
    pub label_studio_runs: Option<PathBuf>,
}

impl LabelStudioArgs {
    /// The backend's settings, `None` without `--label-studio-url`; retrains use
    /// `train_threads`.
    pub fn config(&self, train_threads: usize) -> anyhow::Result<Option<LabelStudioConfig>> {
        let Some(url) = &self.label_studio_url else {
            return Ok(None);
        };
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                anyhow::anyhow!("--label-studio-url {url} is not an http(s) URL; give Label Studio's address, e.g. http://localhost:8080")
            })?;
        let token = self.label_studio_token.clone().unwrap_or_default();
        if token.trim().is_empty() {
            anyhow::bail!("--label-studio-token is empty; copy the access token from Label Studio's Account & Settings");
        }
        Ok(Some(LabelStudioConfig {
            url: parsed,
            token,
            max_image_bytes: (self.label_studio_max_image_mib as u64) << 20,
            fetch_timeout: Duration::from_secs(self.label_studio_fetch_timeout_secs as u64),
            runs_dir: self
                .label_studio_runs
                .clone()
                .unwrap_or_else(|| aelabel_home().join("runs")),
            train_threads,
        }))
    }
}
