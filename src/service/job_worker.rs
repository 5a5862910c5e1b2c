//! The label-job worker: claims pending items in large batches, labels them with the model
//! serving at that moment, and records the predictions. Several servers on one Postgres run
//! one worker each and share the work through the store's claims; a worker that dies leaves
//! claims that expire and are taken over. A job with a model of its own is labelled by that
//! model; other jobs by the serving model (their items wait while none is active). Items of a
//! job that brought its own classes wait unclaimed (status `waiting`) for its first model.

use super::job_labelling::{JobModels, LabelError};
use crate::inference::{Engine, EngineHandle};
use crate::jobs::{ClaimedItem, LabelledItem};
use crate::store::Store;
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
    /// Label images as AddImages receives them, with the model that labels their job (the
    /// worker then only labels what could not be labelled then).
    pub label_on_arrival: bool,
}

impl Default for JobWorkerConfig {
    fn default() -> Self {
        Self {
            claim_batch: 1024,
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(500),
            label_on_arrival: true,
        }
    }
}

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
    /// The models that label jobs (shared with AddImages).
    pub models: Arc<JobModels>,
    /// This server's instance id: who labelled the items it records.
    pub id: String,
}

impl JobWorker {
    /// Works until shutdown begins.
    pub(crate) async fn run(mut self) {
        let id = self.id.clone();
        let mut database_up = None;
        loop {
            let round = self.drain(&id).await;
            let up = !matches!(round, Err(LabelError::Store(_)));
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

    /// Claims, labels and records until nothing is pending.
    async fn drain(&mut self, worker_id: &str) -> Result<(), LabelError> {
        loop {
            if *self.stopping.borrow() {
                return Ok(());
            }
            let engine = self.engine.current();
            let claimed = self
                .store
                .claim_pending(worker_id, self.config.claim_batch, self.config.lease)
                .await?;
            if claimed.is_empty() {
                return Ok(());
            }
            let labelled = self.label(engine.as_deref(), claimed).await?;
            if labelled.is_empty() {
                // Nothing this worker can label now (no serving model): leave the claims to
                // expire rather than spin on them.
                return Ok(());
            }
            let recorded = self.store.record_predictions(worker_id, &labelled).await?;
            tracing::debug!(recorded, "label jobs: recorded predictions");
        }
    }

    /// Labels claimed items, one run of equal job settings at a time: with the job's own model
    /// where it has one, else with `engine` (the serving model). Items no model can label now
    /// (no serving model, or not its input size) are left to their claim's expiry.
    async fn label(
        &mut self,
        engine: Option<&Engine>,
        claimed: Vec<ClaimedItem>,
    ) -> Result<Vec<LabelledItem>, LabelError> {
        let mut labelled = Vec::with_capacity(claimed.len());
        let runs = claimed.chunk_by(|a, b| {
            a.job_id == b.job_id
                && a.auto_accept_threshold == b.auto_accept_threshold
                && a.target_accuracy == b.target_accuracy
                && a.job_model == b.job_model
        });
        for run in runs {
            let settings = run[0].settings();
            let run: Vec<&ClaimedItem> = run
                .iter()
                .filter(|i| i.pixels.len() == settings.image_size)
                .collect();
            let pixels = run.iter().flat_map(|i| i.pixels.iter().copied()).collect();
            let Some(answers) = self.models.label(engine, &settings, pixels).await? else {
                if let Some(first) = run.first() {
                    tracing::debug!(job = %first.job_id, "label jobs: no model labels the job now; left pending");
                }
                continue;
            };
            labelled.extend(
                run.iter()
                    .zip(answers.predictions)
                    .map(|(item, prediction)| LabelledItem {
                        job_id: item.job_id.clone(),
                        seq: item.seq,
                        prediction,
                        model_version: answers.version.clone(),
                    }),
            );
        }
        Ok(labelled)
    }
}
