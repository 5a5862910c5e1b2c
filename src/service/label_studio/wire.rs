//! The JSON Label Studio sends and expects, and the one place where it becomes domain values
//! (project ids, the chosen class) and back. Bodies are read as bytes and parsed here, so a
//! malformed body gets aelabel's JSON error rather than the framework's plain text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A refused request: its HTTP status and a sentence saying what was wrong and what to do,
/// answered as `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What was wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// A refusal with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 422: well-formed JSON that does not make sense.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "label studio request failed");
        } else {
            tracing::info!(status = %self.status, message = %self.message, "label studio request refused");
        }
        let body = serde_json::json!({ "error": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Parses a request body: 400 when it is not JSON, 422 when it is JSON of another shape.
pub fn parse_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the {what} body is not valid JSON ({e}); send the JSON Label Studio sends, with Content-Type: application/json"),
        )
    })?;
    from_value(value, what)
}

/// Reads parsed JSON as `T`: 422 when it has another shape.
pub fn from_value<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::unprocessable(format!(
            "the {what} body is not shaped as Label Studio sends it: {e}"
        ))
    })
}

/// The Label Studio project a request is about: `"12.1700000000"` (id and creation time, as
/// `/setup` and `/predict` send it), `12`, or a project object with an `id` (webhooks).
pub fn project_id(project: Option<&Value>) -> Option<String> {
    let id = match project? {
        Value::String(s) => s.split('.').next().unwrap_or_default().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => return project_id(o.get("id")),
        _ => return None,
    };
    (!id.is_empty()).then_some(id)
}

/// `POST /setup`.
#[derive(Debug, Deserialize)]
pub struct SetupRequest {
    /// The project, `"<id>.<created unix time>"`.
    #[serde(default)]
    pub project: Option<Value>,
    /// The project's label config.
    #[serde(default)]
    pub schema: Option<String>,
}

/// One task of `POST /predict`.
#[derive(Debug, Deserialize)]
pub struct Task {
    /// Label Studio's task id.
    #[serde(default)]
    pub id: Value,
    /// The task data: the image URL sits under the `<Image value="$key">` key.
    #[serde(default)]
    pub data: serde_json::Map<String, Value>,
}

/// `POST /predict`.
#[derive(Debug, Deserialize)]
pub struct PredictRequest {
    /// Tasks to pre-annotate.
    pub tasks: Vec<Task>,
    /// The project, `"<id>.<created unix time>"`.
    #[serde(default)]
    pub project: Option<Value>,
    /// The project's label config (else the one `/setup` received).
    #[serde(default)]
    pub label_config: Option<String>,
}

/// One region of a prediction: a `choices` result.
#[derive(Debug, Serialize)]
pub struct ChoicesResult {
    /// The `<Choices name>`.
    pub from_name: String,
    /// The `<Image name>`.
    pub to_name: String,
    /// Always `choices`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `{"choices": [choice]}`.
    pub value: ChoicesValue,
    /// The model's confidence in it.
    pub score: f32,
}

/// The value of a `choices` result.
#[derive(Debug, Serialize)]
pub struct ChoicesValue {
    /// The chosen choice (as results store it: its alias, else its value).
    pub choices: Vec<String>,
}

/// One task's prediction.
#[derive(Debug, Serialize)]
pub struct TaskPrediction {
    /// Its regions.
    pub result: Vec<ChoicesResult>,
    /// The confidence, so Label Studio can sort tasks for review.
    pub score: f32,
    /// The model that answered.
    pub model_version: String,
}

/// The answer of `POST /predict`.
#[derive(Debug, Serialize)]
pub struct PredictResponse {
    /// One prediction per task, in order.
    pub results: Vec<TaskPrediction>,
    /// The model that answered the last task.
    pub model_version: String,
}

/// One result of an annotation, as Label Studio stores it.
#[derive(Debug, Deserialize)]
pub struct AnnotationResult {
    /// The control tag's name.
    #[serde(default)]
    pub from_name: String,
    /// The result type, e.g. `choices`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// For `choices`: `{"choices": [...]}`.
    #[serde(default)]
    pub value: Value,
}

impl AnnotationResult {
    /// The chosen strings of a `choices` result.
    pub fn choices(&self) -> Vec<String> {
        self.value
            .get("choices")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An annotation in a webhook.
#[derive(Debug, Deserialize)]
pub struct Annotation {
    /// Label Studio's annotation id.
    pub id: Value,
    /// Its results.
    #[serde(default)]
    pub result: Vec<AnnotationResult>,
    /// Whether the task was skipped (then there is nothing to learn).
    #[serde(default)]
    pub was_cancelled: bool,
}

/// A deleted annotation: only its id.
#[derive(Debug, Deserialize)]
pub struct AnnotationRef {
    /// Label Studio's annotation id.
    pub id: Value,
}

/// `POST /webhook`.
#[derive(Debug, Deserialize)]
pub struct WebhookRequest {
    /// The event.
    pub action: String,
    /// The project (an object with `id` and `label_config`).
    #[serde(default)]
    pub project: Option<Value>,
    /// Created or updated annotation.
    #[serde(default)]
    pub annotation: Option<Annotation>,
    /// Deleted annotations (`ANNOTATIONS_DELETED`).
    #[serde(default)]
    pub annotations: Option<Vec<AnnotationRef>>,
    /// The annotated task, with its data.
    #[serde(default)]
    pub task: Option<Task>,
}

impl WebhookRequest {
    /// The project's label config, when the payload carries the project object.
    pub fn label_config(&self) -> Option<&str> {
        self.project.as_ref()?.get("label_config")?.as_str()
    }
}

/// A JSON id (number or string) as text.
pub fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_come_in_three_shapes() {
        let id = |v: Value| project_id(Some(&v));
        assert_eq!(id(serde_json::json!("12.1700000000")), Some("12".into()));
        assert_eq!(id(serde_json::json!(7)), Some("7".into()));
        assert_eq!(
            id(serde_json::json!({"id": 3, "title": "x"})),
            Some("3".into())
        );
        assert_eq!(id(serde_json::json!("")), None);
        assert_eq!(project_id(None), None);
    }
}
