//! Training flags shared by `aelabel serve` and `aelabel worker`, and `aelabel worker` itself:
//! a process that only executes the queued training runs of label jobs.

use super::{default_threads, runtime};
use crate::config::{aelabel_home, parse_positive};
use crate::service::shutdown_signal;
use crate::service::training_worker::{TrainingWorker, TrainingWorkerConfig};
use crate::store::Store;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where job models go and how training runs are executed.
#[derive(Debug, Args)]
pub struct TrainingArgs {
    /// Where label jobs' models are written (`DIR/<job id>/`); every replica and worker must
    /// see the same folder [default: AELABEL_HOME/jobs].
    #[arg(long, env = "AELABEL_JOBS_DIR")]
    pub jobs_dir: Option<PathBuf>,
    /// Threads a training run uses for its matrix products.
    #[arg(long, default_value_t = default_threads(), env = "AELABEL_TRAINING_THREADS", value_parser = parse_positive)]
    pub training_threads: usize,
    /// How long a training run's claim holds without progress before another worker takes it
    /// over, in seconds.
    #[arg(long, default_value_t = 120, env = "AELABEL_TRAINING_LEASE_SECS", value_parser = parse_positive)]
    pub training_lease_secs: usize,
}

impl TrainingArgs {
    /// The worker settings; `background` runs training at the lowest CPU priority.
    pub fn config(&self, background: bool) -> TrainingWorkerConfig {
        TrainingWorkerConfig {
            dir: self
                .jobs_dir
                .clone()
                .unwrap_or_else(|| aelabel_home().join("jobs")),
            threads: self.training_threads,
            lease: Duration::from_secs(self.training_lease_secs as u64),
            poll: Duration::from_millis(500),
            background,
        }
    }
}

/// Flags of `aelabel worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Registry database flags.
    #[command(flatten)]
    pub db: super::registry::DatabaseArgs,
    /// Training flags.
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Exit once no training run is queued (a Kubernetes Job) instead of waiting for more.
    #[arg(long)]
    pub once: bool,
}

/// Runs `aelabel worker` until SIGTERM/SIGINT (or, with `--once`, an empty queue).
pub fn worker_command(args: WorkerArgs) -> anyhow::Result<()> {
    super::init_threads(args.training.training_threads);
    runtime()?.block_on(async move {
        let store = Store::connect(&args.db.url()).await?;
        let (stop_tx, stopping) = tokio::sync::watch::channel(false);
        let stop = shutdown_signal();
        tokio::spawn(async move {
            stop.await;
            let _ = stop_tx.send(true);
        });
        tracing::info!(once = args.once, "training worker started");
        TrainingWorker {
            store,
            config: args.training.config(false),
            wake: Arc::new(tokio::sync::Notify::new()),
            stopping,
        }
        .run(args.once)
        .await;
        tracing::info!("training worker stopped");
        Ok(())
    })
}
