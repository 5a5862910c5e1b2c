//! Labelling a job's images with the model that labels that job: its own model once it has
//! one, else the serving model (a job with classes of its own waits for its first model).
//! Shared by AddImages (images labelled as they arrive) and the worker (items that could not
//! be labelled then).

use crate::inference::{Engine, EngineError, ImageBatch, Prediction};
use crate::jobs::LabelSettings;
use crate::model::Model;
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// Why images could not be labelled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LabelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Model(String),
}

/// A model's answers for a run of images.
#[derive(Clone, Debug)]
pub(crate) struct Answers {
    /// The registry version that answered.
    pub version: String,
    /// True when it is the job's own model.
    pub job_model: bool,
    /// One prediction per image, in order.
    pub predictions: Vec<Prediction>,
}

/// The job models loaded from the registry (the last one kept while consecutive calls use
/// it).
pub(crate) struct JobModels {
    store: Store,
    cache: tokio::sync::Mutex<Option<(String, Arc<Model>)>>,
}

impl JobModels {
    /// An empty cache over the registry of `store`.
    pub(crate) fn new(store: Store) -> Self {
        Self {
            store,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Labels `pixels` (whole images at `settings.image_size`) for a job with `settings`:
    /// `None` when no model labels the job now (it waits for its first model, no model is
    /// serving, or the serving model takes another input size).
    pub(crate) async fn label(
        &self,
        engine: Option<&Engine>,
        settings: &LabelSettings,
        pixels: Vec<u8>,
    ) -> Result<Option<Answers>, LabelError> {
        if let Some(version) = &settings.job_model {
            let model = self.model(version).await?;
            let predictions = label_with_model(model, settings, pixels).await?;
            return Ok(Some(Answers {
                version: version.clone(),
                job_model: true,
                predictions,
            }));
        }
        let Some(engine) = engine.filter(|_| !settings.own_classes) else {
            return Ok(None);
        };
        if settings.image_size != engine.image_size() {
            return Ok(None);
        }
        let threshold = crate::jobs::accept_threshold(
            settings.auto_accept_threshold,
            settings.target_accuracy,
            engine.meta(),
        );
        let step = engine.max_batch() * settings.image_size;
        let mut predictions = Vec::with_capacity(pixels.len() / settings.image_size.max(1));
        for chunk in pixels.chunks(step.max(1)) {
            let Some(images) = ImageBatch::new(chunk.to_vec(), settings.image_size) else {
                return Ok(None);
            };
            predictions.extend(engine.label(images, threshold)?.await?);
        }
        Ok(Some(Answers {
            version: engine.meta().version.clone(),
            job_model: false,
            predictions,
        }))
    }

    /// The job model `version`, from the cache or loaded from its registered file.
    async fn model(&self, version: &str) -> Result<Arc<Model>, LabelError> {
        let mut cache = self.cache.lock().await;
        if let Some((cached, model)) = cache.as_ref() {
            if cached == version {
                return Ok(model.clone());
            }
        }
        let record = self.store.model(version).await?;
        let path = record.path.clone();
        let model = tokio::task::spawn_blocking(move || Model::load(&path))
            .await
            .map_err(|e| LabelError::Model(format!("model loading stopped: {e}")))?
            .map_err(|e| LabelError::Model(e.to_string()))?;
        let model = Arc::new(model);
        *cache = Some((version.to_string(), model.clone()));
        Ok(model)
    }
}

/// Labels `pixels` with a job's own `model` on a blocking thread, at the job's threshold for
/// that model.
async fn label_with_model(
    model: Arc<Model>,
    settings: &LabelSettings,
    pixels: Vec<u8>,
) -> Result<Vec<Prediction>, LabelError> {
    let threshold = crate::jobs::accept_threshold(
        settings.auto_accept_threshold,
        settings.target_accuracy,
        &model.meta,
    );
    let size = model.meta.input_width * model.meta.input_height;
    if size != settings.image_size {
        return Err(LabelError::Model(format!(
            "the job's model takes {size}-pixel images but the job stores {}-pixel images",
            settings.image_size
        )));
    }
    tokio::task::spawn_blocking(move || {
        let probabilities = crate::model::probabilities_rows(
            &model.classifier,
            crate::model::Inputs::Bytes(&pixels),
            1,
        );
        let names = &model.meta.class_names;
        probabilities
            .chunks_exact(names.len())
            .map(|p| Prediction::new(p.to_vec(), names, threshold))
            .collect()
    })
    .await
    .map_err(|e| LabelError::Model(format!("labelling stopped: {e}")))
}
