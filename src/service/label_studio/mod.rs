//! The Label Studio ML backend on aelabel's HTTP port: `GET /health`, `POST /setup`,
//! `POST /predict` and `POST /webhook`, as Label Studio calls them.
//!
//! `/predict` fetches each task's image and labels it through the Labeller's own door
//! ([`LabelDoor`]: the same in-flight slots, decode budget and engine); `/webhook` keeps each
//! project's annotations as reviews in a label job named `label-studio-project-<id>` and runs
//! a retrain for it on `START_TRAINING` ([`webhook`]). Only a server serving from the registry
//! has jobs, so [`ServeConfig`](super::ServeConfig) refuses this backend with `--model`.

mod fetch;
pub mod label_config;
mod webhook;
pub mod wire;

use super::jobs::LabelJobsService;
use super::labeller::LabelDoor;
use crate::inference::Prediction;
use crate::store::Store;
use crate::wire as pb;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use fetch::{FetchError, ImageFetcher};
use label_config::LabelConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use wire::{ApiError, PredictRequest, PredictResponse, SetupRequest, TaskPrediction};

/// Images fetched and held at once across all requests: with `--label-studio-max-image-mib`
/// this bounds the memory fetched images take.
const FETCH_SLOTS: usize = 16;

/// How `aelabel serve` reaches Label Studio.
#[derive(Clone, Debug)]
pub struct LabelStudioConfig {
    /// Label Studio's base URL (`/data/...` paths are fetched through it).
    pub url: reqwest::Url,
    /// Label Studio's access token, sent as `Authorization: Token …`.
    pub token: String,
    /// Largest image fetched, in bytes.
    pub max_image_bytes: u64,
    /// Longest a fetch may take.
    pub fetch_timeout: Duration,
    /// Where retrained models go (`<dir>/label-studio-project-<id>-…`).
    pub runs_dir: PathBuf,
    /// Threads a retrain uses for its matrix products.
    pub train_threads: usize,
}

impl LabelStudioConfig {
    /// The largest request body accepted: two images' worth as `data:` URIs plus the JSON
    /// around them, and at least 4 MiB of tasks.
    fn body_limit(&self) -> usize {
        usize::try_from(self.max_image_bytes.saturating_mul(3))
            .unwrap_or(usize::MAX)
            .max(4 << 20)
    }
}

/// State the routes share.
pub(crate) struct LabelStudio {
    door: LabelDoor,
    jobs: Arc<LabelJobsService>,
    store: Store,
    fetcher: ImageFetcher,
    fetch_slots: Arc<Semaphore>,
    config: LabelStudioConfig,
    /// Label configs `/setup` received, by project id.
    setups: Mutex<HashMap<String, LabelConfig>>,
    /// Each project's job id; the lock also serialises creating it.
    project_jobs: tokio::sync::Mutex<HashMap<String, String>>,
    /// Each project's last training.
    trainings: Mutex<HashMap<String, webhook::Training>>,
}

/// The backend's routes, to merge into the HTTP port's router.
pub(crate) fn routes(
    config: LabelStudioConfig,
    door: LabelDoor,
    jobs: Arc<LabelJobsService>,
    store: Store,
) -> Result<Router, String> {
    let fetcher = ImageFetcher::new(
        config.url.clone(),
        config.token.clone(),
        config.max_image_bytes,
        config.fetch_timeout,
    )?;
    let limit = config.body_limit();
    let state = Arc::new(LabelStudio {
        door,
        jobs,
        store,
        fetcher,
        fetch_slots: Arc::new(Semaphore::new(FETCH_SLOTS)),
        config,
        setups: Mutex::new(HashMap::new()),
        project_jobs: tokio::sync::Mutex::new(HashMap::new()),
        trainings: Mutex::new(HashMap::new()),
    });
    Ok(Router::new()
        .route("/health", get(health))
        .route("/setup", post(setup))
        .route("/predict", post(predict))
        .route("/webhook", post(webhook::webhook))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state))
}

/// A body, or the refusal of one over the size limit.
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("the request body could not be read: {}; send images as URLs rather than inline data: URIs, or fewer tasks per request", e.body_text()),
        )
    })
}

impl LabelStudio {
    /// The label config of a request: the one it carries, else the one `/setup` received
    /// for its project.
    fn label_config(
        &self,
        sent: Option<&str>,
        project: Option<&str>,
    ) -> Result<LabelConfig, ApiError> {
        if let Some(xml) = sent.filter(|x| !x.trim().is_empty()) {
            return LabelConfig::parse(xml).map_err(|e| ApiError::unprocessable(e.to_string()));
        }
        project
            .and_then(|p| self.lock_setups().get(p).cloned())
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "label_config: missing, and /setup has not been called for this project; send the project's label_config (Label Studio does) or connect the model again",
                )
            })
    }

    fn lock_setups(&self) -> std::sync::MutexGuard<'_, HashMap<String, LabelConfig>> {
        self.setups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetches the images of `references` (at most [`FETCH_SLOTS`]) concurrently while
    /// holding that many fetch slots; `names` says which task each belongs to in errors.
    async fn fetch_all(
        &self,
        references: &[String],
        names: &[String],
    ) -> Result<(Vec<Vec<u8>>, tokio::sync::OwnedSemaphorePermit), ApiError> {
        let permits = self
            .fetch_slots
            .clone()
            .acquire_many_owned(references.len() as u32)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down",
                )
            })?;
        let fetched =
            futures_util::future::join_all(references.iter().map(|r| self.fetcher.fetch(r))).await;
        let mut images = Vec::with_capacity(fetched.len());
        for (result, name) in fetched.into_iter().zip(names) {
            images.push(result.map_err(|e| fetch_error(name, e))?);
        }
        Ok((images, permits))
    }
}

/// The status and message of a failed fetch for task `name`.
fn fetch_error(name: &str, e: FetchError) -> ApiError {
    let status = match &e {
        FetchError::Unsupported(_) | FetchError::DataUri(_) => StatusCode::UNPROCESSABLE_ENTITY,
        FetchError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        FetchError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        FetchError::Unauthorized { .. }
        | FetchError::Status { .. }
        | FetchError::TokenRefresh { .. }
        | FetchError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, format!("{name}: {e}"))
}

/// The HTTP status for a refusal of the labelling path; `names[k]` names the request's
/// image `k` (the Labeller's messages say `images[k]`).
fn label_error(status: tonic::Status, names: &[String]) -> ApiError {
    let code = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = status.message();
    // "images[k].encoded: image k is …" → "tasks[i] (task id): the image is …".
    let renamed = message
        .strip_prefix("images[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(k, rest)| {
            let name = names.get(k.parse::<usize>().ok()?)?;
            let detail = rest.split_once(": ")?.1;
            let detail = detail
                .strip_prefix(&format!("image {k} "))
                .unwrap_or(detail);
            Some(format!("{name}: the image {detail}"))
        });
    ApiError::new(code, renamed.unwrap_or_else(|| message.to_string()))
}

/// Labels fetched images (one per name) as encoded files through the Labeller's door.
async fn label_images(
    door: &LabelDoor,
    method: &'static str,
    images: Vec<Vec<u8>>,
    names: &[String],
) -> Result<(String, Vec<Prediction>), ApiError> {
    let images = images
        .into_iter()
        .map(|bytes| pb::Image {
            id: String::new(),
            data: Some(pb::image::Data::Encoded(bytes.into())),
        })
        .collect();
    door.label(method, images)
        .await
        .map_err(|s| label_error(s, names))
}

/// `GET /health`: `{"status": "UP"}`, the model answering (`model_version` null and no
/// classes while no model is active) and each project's last training.
async fn health(State(state): State<Arc<LabelStudio>>) -> Json<serde_json::Value> {
    let engine = state.door.current().ok();
    let trainings = state
        .trainings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(serde_json::json!({
        "status": "UP",
        "model_class": "aelabel",
        "model_version": engine.as_ref().map(|e| e.meta().version.clone()),
        "classes": engine.as_ref().map_or_else(Vec::new, |e| e.meta().class_names.clone()),
        "trainings": trainings,
    }))
}

/// `POST /setup`: checks the project's label config against the model's classes and answers
/// the model version.
async fn setup(
    State(state): State<Arc<LabelStudio>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let request: SetupRequest = wire::parse_body(&body(raw)?, "/setup")?;
    let project = wire::project_id(request.project.as_ref());
    let xml = request
        .schema
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            ApiError::unprocessable("schema: missing; send the project's label config as `schema`")
        })?;
    let config = LabelConfig::parse(xml).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let engine = state.door.current().map_err(|s| label_error(s, &[]))?;
    config
        .results_for(&engine.meta().class_names)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    if let Some(project) = project {
        let mut setups = state.lock_setups();
        // A bound on what callers can make the server keep.
        if setups.len() >= 4096 && !setups.contains_key(&project) {
            setups.clear();
        }
        setups.insert(project, config);
    }
    Ok(Json(
        serde_json::json!({ "model_version": engine.meta().version }),
    ))
}

/// `POST /predict`: one `choices` prediction per task, with the confidence as `score`.
async fn predict(
    State(state): State<Arc<LabelStudio>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<PredictResponse>, ApiError> {
    let request: PredictRequest = wire::parse_body(&body(raw)?, "/predict")?;
    let project = wire::project_id(request.project.as_ref());
    let config = state.label_config(request.label_config.as_deref(), project.as_deref())?;
    let engine = state.door.current().map_err(|s| label_error(s, &[]))?;
    config
        .results_for(&engine.meta().class_names)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    if request.tasks.is_empty() {
        return Err(ApiError::unprocessable(
            "tasks: empty; send at least one task",
        ));
    }
    let mut references = Vec::with_capacity(request.tasks.len());
    let mut names = Vec::with_capacity(request.tasks.len());
    for (i, task) in request.tasks.iter().enumerate() {
        let name = match wire::id_text(&task.id) {
            Some(id) => format!("tasks[{i}] (task {id})"),
            None => format!("tasks[{i}]"),
        };
        let reference = task.data.get(&config.data_key).and_then(|v| v.as_str()).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "{name}.data.{}: missing or not a string; the label config's <Image name=\"{}\"> reads the image URL from there",
                config.data_key, config.to_name
            ))
        })?;
        references.push(reference.to_string());
        names.push(name);
    }
    let mut results = Vec::with_capacity(references.len());
    let mut version = engine.meta().version.clone();
    for (refs, names) in references
        .chunks(FETCH_SLOTS)
        .zip(names.chunks(FETCH_SLOTS))
    {
        let (images, _held) = state.fetch_all(refs, names).await?;
        let (answered_by, predictions) =
            label_images(&state.door, "LabelStudio/predict", images, names).await?;
        for p in predictions {
            let choice = config.choices.iter().find(|c| c.value == p.class_name).ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    format!("the model {answered_by} answered class `{}`, which the label config has no choice for (the model changed during the request?); retry", p.class_name),
                )
            })?;
            results.push(TaskPrediction {
                result: vec![wire::ChoicesResult {
                    from_name: config.from_name.clone(),
                    to_name: config.to_name.clone(),
                    kind: "choices",
                    value: wire::ChoicesValue {
                        choices: vec![choice.result.clone()],
                    },
                    score: p.confidence,
                }],
                score: p.confidence,
                model_version: answered_by.clone(),
            });
        }
        version = answered_by;
    }
    Ok(Json(PredictResponse {
        results,
        model_version: version,
    }))
}
