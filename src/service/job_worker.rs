//! The label-job worker: claims pending items in large batches, labels them with the model
//! serving at that moment, and records the predictions. Several servers on one Postgres run
//! one worker each and share the work through the store's claims; a worker that dies leaves
//! claims that expire and are taken over. A job with a model of its own is labelled by that
//! model; other jobs by the serving model (their items wait while none is active). Items of a
//! job that brought its own classes wait unclaimed (status `waiting`) for its first model.

use crate::inference::Prediction;
use crate::inference::{Engine, EngineError, EngineHandle, ImageBatch};
use crate::jobs::{ClaimedItem, LabelledItem};
use crate::model::Model;
use crate::store::{Store, StoreError};
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
    #[error("{0}")]
    Model(String),
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
    /// The job model labelling now, kept between claims.
    pub job_models: tokio::sync::Mutex<Option<(String, Arc<Model>)>>,
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

    /// Claims, labels and records until nothing is pending.
    async fn drain(&mut self, worker_id: &str) -> Result<(), WorkError> {
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
    ) -> Result<Vec<LabelledItem>, WorkError> {
        let mut labelled = Vec::with_capacity(claimed.len());
        let runs = claimed.chunk_by(|a, b| {
            a.job_id == b.job_id
                && a.auto_accept_threshold == b.auto_accept_threshold
                && a.target_accuracy == b.target_accuracy
                && a.job_model == b.job_model
        });
        for run in runs {
            let first = &run[0];
            if let Some(version) = &first.job_model {
                labelled.extend(self.label_with_job_model(run, version).await?);
                continue;
            }
            let Some(engine) = engine else {
                continue;
            };
            let version = engine.meta().version.clone();
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

    /// Labels items of a job that has its own model with that model (loaded from the
    /// registry, kept while consecutive claims use it), on a blocking thread.
    async fn label_with_job_model(
        &self,
        run: &[ClaimedItem],
        version: &str,
    ) -> Result<Vec<LabelledItem>, WorkError> {
        let model = self.job_model(version).await?;
        let first = &run[0];
        let threshold = crate::jobs::accept_threshold(
            first.auto_accept_threshold,
            first.target_accuracy,
            &model.meta,
        );
        let items: Vec<(String, i64, Vec<u8>)> = run
            .iter()
            .map(|i| (i.job_id.clone(), i.seq, i.pixels.clone()))
            .collect();
        let version = version.to_string();
        let labelled = tokio::task::spawn_blocking(move || {
            let size = model.meta.input_width * model.meta.input_height;
            let pixels: Vec<u8> = items
                .iter()
                .filter(|(_, _, p)| p.len() == size)
                .flat_map(|(_, _, p)| p.iter().copied())
                .collect();
            let probabilities = crate::model::probabilities_rows(
                &model.classifier,
                crate::model::Inputs::Bytes(&pixels),
                1,
            );
            let classes = model.meta.class_names.len();
            items
                .into_iter()
                .filter(|(_, _, p)| p.len() == size)
                .zip(probabilities.chunks_exact(classes))
                .map(|((job_id, seq, _), p)| LabelledItem {
                    job_id,
                    seq,
                    prediction: Prediction::new(p.to_vec(), &model.meta.class_names, threshold),
                    model_version: version.clone(),
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| WorkError::Model(format!("labelling stopped: {e}")))?;
        Ok(labelled)
    }

    /// The job model `version`, from the cache or loaded from its registered file.
    async fn job_model(&self, version: &str) -> Result<Arc<Model>, WorkError> {
        let mut cache = self.job_models.lock().await;
        if let Some((cached, model)) = cache.as_ref() {
            if cached == version {
                return Ok(model.clone());
            }
        }
        let record = self.store.model(version).await?;
        let path = record.path.clone();
        let model = tokio::task::spawn_blocking(move || Model::load(&path))
            .await
            .map_err(|e| WorkError::Model(format!("model loading stopped: {e}")))?
            .map_err(|e| WorkError::Model(e.to_string()))?;
        let model = Arc::new(model);
        *cache = Some((version.to_string(), model.clone()));
        Ok(model)
    }
}
