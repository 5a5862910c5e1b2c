//! The label-job worker: claims pending items in large batches, labels them with the model
//! serving at that moment, and records the predictions. Several servers on one Postgres run
//! one worker each and share the work through the store's claims; a worker that dies leaves
//! claims that expire and are taken over. While no model is active the worker claims nothing
//! (a claim would only hold items back from the first model), and it never labels a job that
//! brought its own classes with the serving model.

use crate::inference::{Engine, EngineError, EngineHandle, ImageBatch};
use crate::jobs::{ClaimedItem, LabelledItem};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// How the worker takes its share of the labelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobWorkerConfig {
    /// Items claimed (and labelled) at once.
    pub claim_batch: usize,
    /// How long a claim holds before another worker may take the items over.
    pub lease: Duration,
    /// How often to look for pending items without being woken (images added through
    /// another server).
    pub poll: Duration,
}

impl Default for JobWorkerConfig {
    fn default() -> Self {
        Self {
            claim_batch: 1024,
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(500),
        }
    }
}

/// Why a round of work stopped.
#[derive(Debug, thiserror::Error)]
enum WorkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Jobs whose `own_classes` the worker remembers before it starts over (it never changes for
/// a job, so forgetting only costs one lookup each).
const KNOWN_JOBS: usize = 10_000;

/// The worker of one server.
pub(crate) struct JobWorker {
    /// Where jobs live.
    pub store: Store,
    /// The model serving now.
    pub engine: Arc<EngineHandle>,
    /// Batch, lease and poll settings.
    pub config: JobWorkerConfig,
    /// Woken when images are added through this server.
    pub work: Arc<Notify>,
    /// Health of the LabelJobs service follows the database.
    pub reporter: HealthReporter,
    /// Turns true when shutdown begins.
    pub stopping: watch::Receiver<bool>,
    /// Whether each job seen brought its own classes (then the serving model never labels it).
    pub own_classes: HashMap<String, bool>,
}

impl JobWorker {
    /// Works until shutdown begins.
    pub(crate) async fn run(mut self) {
        let id = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let mut database_up = None;
        loop {
            let round = self.drain(&id).await;
            let up = !matches!(round, Err(WorkError::Store(_)));
            if database_up != Some(up) {
                let status = if up {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                self.reporter
                    .set_service_status(super::LABEL_JOBS_HEALTH_NAME, status)
                    .await;
                database_up = Some(up);
            }
            if let Err(e) = round {
                tracing::warn!(error = %e, "label jobs: a round of labelling failed; retrying");
            }
            tokio::select! {
                changed = self.stopping.changed() => {
                    if changed.is_err() || *self.stopping.borrow() {
                        break;
                    }
                }
                _ = self.work.notified() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
        self.reporter
            .set_service_status(super::LABEL_JOBS_HEALTH_NAME, ServingStatus::NotServing)
            .await;
    }

    /// Claims, labels and records until nothing is pending. With no model yet it only asks
    /// the database something cheap, so that health still follows it.
    async fn drain(&mut self, worker_id: &str) -> Result<(), WorkError> {
        loop {
            if *self.stopping.borrow() {
                return Ok(());
            }
            let Some(engine) = self.engine.current() else {
                self.store.active_version().await?;
                return Ok(());
            };
            let claimed = self
                .store
                .claim_pending(worker_id, self.config.claim_batch, self.config.lease)
                .await?;
            if claimed.is_empty() {
                return Ok(());
            }
            let labelled = self.label(&engine, claimed).await?;
            let recorded = self.store.record_predictions(worker_id, &labelled).await?;
            tracing::debug!(recorded, "label jobs: recorded predictions");
        }
    }

    /// Labels claimed items with `engine`, one run of equal job settings at a time. Items of a
    /// job with its own classes, or whose image size the model does not take, are left to
    /// their claim's expiry (the job's own model, or a later one, may take them).
    async fn label(
        &mut self,
        engine: &Engine,
        claimed: Vec<ClaimedItem>,
    ) -> Result<Vec<LabelledItem>, WorkError> {
        let version = engine.meta().version.clone();
        let mut labelled = Vec::with_capacity(claimed.len());
        let runs = claimed.chunk_by(|a, b| {
            a.job_id == b.job_id
                && a.auto_accept_threshold == b.auto_accept_threshold
                && a.target_accuracy == b.target_accuracy
        });
        for run in runs {
            let first = &run[0];
            if self.has_own_classes(&first.job_id).await? {
                tracing::debug!(job = %first.job_id,
                    "label jobs: the job has its own classes; the serving model does not label it");
                continue;
            }
            if first.image_size != engine.image_size() {
                tracing::warn!(
                    job = %first.job_id,
                    "label jobs: the job's images are not the serving model's input size; left pending"
                );
                continue;
            }
            let threshold = crate::jobs::accept_threshold(
                first.auto_accept_threshold,
                first.target_accuracy,
                engine.meta(),
            );
            for chunk in run.chunks(engine.max_batch()) {
                let pixels = chunk
                    .iter()
                    .flat_map(|i| i.pixels.iter().copied())
                    .collect();
                let Some(images) = ImageBatch::new(pixels, first.image_size) else {
                    continue;
                };
                let predictions = engine.label(images, threshold)?.await?;
                labelled.extend(chunk.iter().zip(predictions).map(|(item, prediction)| {
                    LabelledItem {
                        job_id: item.job_id.clone(),
                        seq: item.seq,
                        prediction,
                        model_version: version.clone(),
                    }
                }));
            }
        }
        Ok(labelled)
    }

    /// Whether `job_id` brought its own classes, from memory or the store.
    async fn has_own_classes(&mut self, job_id: &str) -> Result<bool, StoreError> {
        if let Some(&own) = self.own_classes.get(job_id) {
            return Ok(own);
        }
        let own = match self.store.job_spec(job_id).await {
            Ok(spec) => spec.own_classes,
            // Deleted meanwhile: nothing to label either way.
            Err(StoreError::UnknownJob(_)) => true,
            Err(e) => return Err(e),
        };
        if self.own_classes.len() >= KNOWN_JOBS {
            self.own_classes.clear();
        }
        self.own_classes.insert(job_id.to_string(), own);
        Ok(own)
    }
}
