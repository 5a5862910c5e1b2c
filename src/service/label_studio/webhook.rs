//! `POST /webhook`: Label Studio's annotations become reviews in the project's label job, and
//! `START_TRAINING` retrains from them in the background (one training per project at a
//! time), activating the new model when it is more accurate.

use super::label_config::LabelConfig;
use super::wire::{self, Annotation, ApiError, WebhookRequest};
use super::LabelStudio;
use crate::jobs::{NewJob, ReviewClass};
use crate::pipeline::job_retrain::{retrain_job, Activation, JobRetrain};
use crate::service::job_convert::store_status;
use crate::wire as pb;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The name of a Label Studio project's label job.
pub fn job_name(project: &str) -> String {
    format!("label-studio-project-{project}")
}

/// A project's last training, as `/health` shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Training {
    /// Running now.
    Running {
        /// The job it trains from.
        job_id: String,
    },
    /// Finished: the new model is registered.
    Finished {
        /// The new model.
        model_version: String,
        /// Whether it is active now (it is more accurate than its base).
        activated: bool,
        /// Test accuracy of the model it started from.
        previous_test_accuracy: f64,
        /// Test accuracy of the new model.
        test_accuracy: f64,
        /// Reviews it learned from.
        reviews: usize,
    },
    /// Stopped with an error.
    Failed {
        /// Why.
        error: String,
    },
}

/// The class a person chose in `annotation`, mapped through the label config onto one of
/// `classes`; `None` when the task was skipped.
pub fn review_class(
    annotation: &Annotation,
    config: &LabelConfig,
    classes: &[String],
) -> Result<Option<String>, ApiError> {
    if annotation.was_cancelled {
        return Ok(None);
    }
    let chosen = annotation
        .result
        .iter()
        .find(|r| r.kind == "choices" && r.from_name == config.from_name)
        .map(|r| r.choices())
        .unwrap_or_default();
    let [choice] = chosen.as_slice() else {
        return Err(ApiError::unprocessable(format!(
            "annotation.result: expected exactly one choice of <Choices name=\"{}\">, found {}; aelabel learns one class per image",
            config.from_name,
            chosen.len()
        )));
    };
    let class = config.class_of(choice).unwrap_or(choice);
    if !classes.iter().any(|c| c == class) {
        return Err(ApiError::unprocessable(format!(
            "annotation.result: choice `{choice}` is not one of the model's classes ({}); such a review cannot train it",
            classes.join(", ")
        )));
    }
    Ok(Some(class.to_string()))
}

/// The events this backend acts on (checked before the body's shape, so that other events,
/// whose payloads differ, get a clear answer).
const HANDLED: [&str; 5] = [
    "ANNOTATION_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATION_DELETED",
    "ANNOTATIONS_DELETED",
    "START_TRAINING",
];

/// `POST /webhook`.
pub(super) async fn webhook(
    State(state): State<Arc<LabelStudio>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let value: Value = wire::parse_body(&super::body(raw)?, "/webhook")?;
    let action = value
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // Label Studio's webhook for an ML backend is created for every event (project updates,
    // tasks created, …): those carry nothing to learn from and are acknowledged as ignored.
    // Events that do carry annotations but are not handled (bulk imports) are refused, so
    // that a person sees the annotations did not arrive.
    let carries_annotations = action.starts_with("ANNOTATION");
    if !action.is_empty() && !carries_annotations && action != "START_TRAINING" {
        return Ok((
            StatusCode::OK,
            Json(serde_json::json!({"status": "ignored", "action": action})),
        ));
    }
    if !HANDLED.contains(&action) {
        return Err(ApiError::unprocessable(format!(
            "action: `{action}` is not an event this backend handles; send ANNOTATION_CREATED, ANNOTATION_UPDATED, ANNOTATION_DELETED, ANNOTATIONS_DELETED or START_TRAINING (in Label Studio, tick only those for this webhook)"
        )));
    }
    let request: WebhookRequest = wire::from_value(value, "/webhook")?;
    let project = wire::project_id(request.project.as_ref()).ok_or_else(|| {
        ApiError::unprocessable("project: missing or without an id; Label Studio sends the project object with every event")
    })?;
    match request.action.as_str() {
        "ANNOTATION_CREATED" | "ANNOTATION_UPDATED" => annotate(&state, &project, &request).await,
        "START_TRAINING" => start_training(&state, &project).await,
        _ => delete(&state, &project, &request).await,
    }
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    let status = store_status(e, "class");
    let code = match status.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(code, status.message())
}

impl LabelStudio {
    fn lock_trainings(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Training>> {
        self.trainings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The project's job id, if one exists.
    async fn project_job(&self, project: &str) -> Result<Option<String>, ApiError> {
        let mut known = self.project_jobs.lock().await;
        if let Some(id) = known.get(project) {
            return Ok(Some(id.clone()));
        }
        let found = self
            .store
            .job_id_by_name(&job_name(project))
            .await
            .map_err(store_error)?;
        if let Some(id) = &found {
            known.insert(project.to_string(), id.clone());
        }
        Ok(found)
    }

    /// The project's job, created with the serving model's input size and classes when it
    /// does not exist yet (the lock keeps two first webhooks from creating two).
    async fn project_job_or_create(&self, project: &str) -> Result<String, ApiError> {
        let mut known = self.project_jobs.lock().await;
        if let Some(id) = known.get(project) {
            return Ok(id.clone());
        }
        let name = job_name(project);
        let id = match self
            .store
            .job_id_by_name(&name)
            .await
            .map_err(store_error)?
        {
            Some(id) => id,
            None => {
                let engine = self
                    .door
                    .current()
                    .map_err(|s| super::label_error(s, &[]))?;
                let meta = engine.meta();
                let spec = NewJob {
                    name,
                    auto_accept_threshold: None,
                    target_accuracy: None,
                    input_width: meta.input_width as u32,
                    input_height: meta.input_height as u32,
                    class_names: meta.class_names.clone(),
                    own_classes: false,
                };
                let job = self.store.create_job(&spec).await.map_err(store_error)?;
                tracing::info!(job = %job.id, project, "label job created for a Label Studio project");
                job.id
            }
        };
        known.insert(project.to_string(), id.clone());
        Ok(id)
    }
}

/// ANNOTATION_CREATED / ANNOTATION_UPDATED: the task's image (at the job's input size) and
/// the person's class become a reviewed item `annotation-<id>`; an update replaces the review.
async fn annotate(
    state: &LabelStudio,
    project: &str,
    request: &WebhookRequest,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let annotation = request.annotation.as_ref().ok_or_else(|| {
        ApiError::unprocessable(format!(
            "annotation: missing; {} events carry the annotation",
            request.action
        ))
    })?;
    let item_id = wire::id_text(&annotation.id)
        .map(|id| format!("annotation-{id}"))
        .ok_or_else(|| ApiError::unprocessable("annotation.id: missing; it names the review"))?;
    let config = state.label_config(request.label_config(), Some(project))?;
    let engine = state
        .door
        .current()
        .map_err(|s| super::label_error(s, &[]))?;
    let Some(class) = review_class(annotation, &config, &engine.meta().class_names)? else {
        return Ok((
            StatusCode::OK,
            Json(json!({"status": "ignored: a skipped task has no class"})),
        ));
    };
    let task = request.task.as_ref().ok_or_else(|| {
        ApiError::unprocessable("task: missing; the webhook must send its payload (in Label Studio: Webhooks → Send payload)")
    })?;
    let reference = task.data.get(&config.data_key).and_then(Value::as_str).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "task.data.{}: missing or not a string; the label config's <Image name=\"{}\"> reads the image URL from there",
            config.data_key, config.to_name
        ))
    })?;
    let name = "task".to_string();
    let (mut images, held) = state
        .fetch_all(&[reference.to_string()], std::slice::from_ref(&name))
        .await?;
    let bytes = images.pop().unwrap_or_default();
    let job_id = state.project_job_or_create(project).await?;
    let spec = state.store.job_spec(&job_id).await.map_err(store_error)?;
    let image = pb::Image {
        id: item_id.clone(),
        data: Some(pb::image::Data::Encoded(bytes.into())),
    };
    let parsed = state
        .jobs
        .parse_for_job(vec![image], spec.input_width, spec.input_height)
        .await
        .map_err(|s| super::label_error(s, &[name]))?;
    drop(held);
    state
        .store
        .add_images(&job_id, &parsed)
        .await
        .map_err(store_error)?;
    state
        .store
        .submit_review(&job_id, &item_id, &ReviewClass::Name(class.clone()))
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"job_id": job_id, "item_id": item_id, "class": class})),
    ))
}

/// ANNOTATION(S)_DELETED: the reviews of the deleted annotations are removed.
async fn delete(
    state: &LabelStudio,
    project: &str,
    request: &WebhookRequest,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut ids: Vec<Value> = request
        .annotations
        .iter()
        .flatten()
        .map(|a| a.id.clone())
        .collect();
    if let Some(a) = &request.annotation {
        ids.push(a.id.clone());
    }
    if ids.is_empty() {
        return Err(ApiError::unprocessable(format!(
            "annotations: missing; {} events name the deleted annotations",
            request.action
        )));
    }
    let Some(job_id) = state.project_job(project).await? else {
        return Ok((StatusCode::OK, Json(json!({"removed": 0}))));
    };
    let mut removed = 0;
    for id in &ids {
        let id = wire::id_text(id)
            .ok_or_else(|| ApiError::unprocessable("annotations[].id: missing"))?;
        if state
            .store
            .remove_item(&job_id, &format!("annotation-{id}"))
            .await
            .map_err(store_error)?
        {
            removed += 1;
        }
    }
    Ok((
        StatusCode::OK,
        Json(json!({"job_id": job_id, "removed": removed})),
    ))
}

/// START_TRAINING: retrains from the project's job on a blocking thread and answers at once.
async fn start_training(
    state: &Arc<LabelStudio>,
    project: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let job_id = state.project_job(project).await?.ok_or_else(|| {
        ApiError::unprocessable(format!(
            "project {project} has no annotations in aelabel yet; annotate some tasks (with this webhook connected) before training"
        ))
    })?;
    {
        let mut trainings = state.lock_trainings();
        if matches!(trainings.get(project), Some(Training::Running { .. })) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("project {project} is training already; wait until GET /health shows it finished"),
            ));
        }
        trainings.insert(
            project.to_string(),
            Training::Running {
                job_id: job_id.clone(),
            },
        );
    }
    let spec = JobRetrain {
        job: job_id.clone(),
        base: None,
        data: None,
        threads: state.config.train_threads,
        activate: true,
    };
    let runtime = tokio::runtime::Handle::current();
    let store = state.store.clone();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let runs = state.config.runs_dir.clone();
    let folder = job_name(project);
    let task_state = state.clone();
    let project_id = project.to_string();
    // A thread of its own, not tokio's blocking pool: the runtime waits for its blocking
    // tasks when it shuts down, and a retrain takes minutes; this thread ends with the process.
    let spawned = std::thread::Builder::new()
        .name(format!("train-ls-{project}"))
        .spawn(move || {
            let out = |reviews: usize| runs.join(format!("{folder}-{reviews}-{stamp}"));
            let outcome = match retrain_job(&runtime, &store, &spec, out, &crate::train::Silent) {
                Ok(o) => {
                    tracing::info!(project = %project_id, model = %o.report.retrained.version, activated = o.activation == Activation::Activated, "Label Studio training finished");
                    Training::Finished {
                        model_version: o.report.retrained.version.clone(),
                        activated: o.activation == Activation::Activated,
                        previous_test_accuracy: o.report.previous.test_accuracy,
                        test_accuracy: o.report.retrained.test_accuracy,
                        reviews: o.reviews,
                    }
                }
                Err(e) => {
                    tracing::warn!(project = %project_id, error = %e, "Label Studio training failed");
                    Training::Failed { error: e.to_string() }
                }
            };
            task_state.lock_trainings().insert(project_id, outcome);
        });
    if let Err(e) = spawned {
        let error = format!("cannot start the training thread: {e}");
        state.lock_trainings().insert(
            project.to_string(),
            Training::Failed {
                error: error.clone(),
            },
        );
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"status": "training", "project": project, "job_id": job_id})),
    ))
}
