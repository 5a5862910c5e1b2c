//! The Open Inference Protocol (KServe v2, Triton's `inference` package): existing Triton and
//! KServe clients use aelabel unchanged, over gRPC on the `aelabel.v1` port ([`grpc`]) and
//! REST on the HTTP port ([`rest`]).
//!
//! Both doors map their wire types onto [`tensors`]' plain types and call one
//! [`OpenInference`] facade, which takes the `Labeller`'s in-flight slots, the engine's dynamic
//! batching and readiness from the same `grpc.health.v1` status.

pub mod grpc;
pub mod rest;
pub mod tensors;

use super::admission::{Admission, Slot, Wait};
use super::labeller::{engine_status, observed};
use super::metrics::Metrics;
use crate::inference::{Engine, EngineHandle, Task};
use std::sync::Arc;
use tensors::{
    check_version, output_tensors, Computed, InferRequest, ModelKind, ModelMetadata, OipError,
    OutputTensor, TensorData,
};
use tonic::{Code, Status};
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
use tonic_health::server::HealthService;

/// The server name `ServerMetadata` reports.
pub const SERVER_NAME: &str = "aelabel";

/// Tensors with more elements than this are converted on the blocking pool, not on the async
/// reactor.
const REACTOR_ELEMENTS: usize = 1 << 18;

/// An inference answer, whichever door asked.
#[derive(Debug)]
pub struct InferAnswer {
    /// The model that answered.
    pub model: &'static str,
    /// Its version.
    pub version: String,
    /// The request's id.
    pub id: String,
    /// The outputs, in the order asked.
    pub outputs: Vec<OutputTensor>,
}

/// The one facade both doors call: readiness, metadata, inference.
#[derive(Clone)]
pub struct OpenInference {
    engine: Arc<EngineHandle>,
    admission: Admission,
    health: Arc<HealthService>,
    max_batch: usize,
    metrics: Arc<Metrics>,
}

impl OpenInference {
    /// A facade over `engine`, sharing `admission`'s slots and reading readiness from
    /// `health` (the server's `grpc.health.v1` statuses).
    pub(crate) fn new(
        engine: Arc<EngineHandle>,
        admission: Admission,
        health: HealthService,
        max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            engine,
            admission,
            health: Arc::new(health),
            max_batch,
            metrics,
        }
    }

    /// True while `grpc.health.v1` reports the Labeller `SERVING`.
    pub async fn ready(&self) -> bool {
        let request = tonic::Request::new(HealthCheckRequest {
            service: super::LABELLER_HEALTH_NAME.into(),
        });
        match self.health.check(request).await {
            Ok(response) => response.into_inner().status == ServingStatus::Serving as i32,
            Err(_) => false,
        }
    }

    /// False while no model is active (the registry has none yet).
    pub fn has_model(&self) -> bool {
        self.engine.current().is_some()
    }

    /// Whether model `name` at `version` (empty: the served one) is ready: false while no
    /// model is active (its name is still checked).
    pub async fn model_ready(&self, name: &str, version: &str) -> Result<bool, OipError> {
        if self.engine.current().is_none() {
            ModelKind::find(name)?;
            return Ok(false);
        }
        self.metadata(name, version)?;
        Ok(self.ready().await)
    }

    /// Model `name`'s metadata, for `version` (empty: the served one); `Unavailable` while no
    /// model is active.
    pub fn metadata(&self, name: &str, version: &str) -> Result<ModelMetadata, OipError> {
        let kind = ModelKind::find(name)?;
        let engine = self.engine()?;
        check_version(kind, version, &engine.meta().version)?;
        Ok(ModelMetadata::new(kind, engine.meta()))
    }

    /// The engine serving now, or `Unavailable` saying no model is active yet.
    fn engine(&self) -> Result<Arc<Engine>, OipError> {
        super::serving_engine(&self.engine).map_err(from_status)
    }

    /// Takes one of the server's in-flight slots, or refuses (`RESOURCE_EXHAUSTED`) when
    /// none is free. REST takes it before reading the body, so that `--max-in-flight` bounds
    /// the memory bodies and their parsing hold.
    pub async fn admit(&self) -> Result<Admitted, OipError> {
        let slot = self.admission.admit(Wait::FailFast).await;
        slot.map(|slot| Admitted { _slot: slot })
            .map_err(from_status)
    }

    /// Runs `request` on the served model in the slot `admitted` (`None`: take one now),
    /// counted in the metrics as `method`.
    pub async fn infer(
        &self,
        method: &'static str,
        request: InferRequest,
        admitted: Option<Admitted>,
    ) -> Result<InferAnswer, OipError> {
        let images = request
            .inputs
            .first()
            .and_then(|i| i.shape.first())
            .map_or(0, |&n| usize::try_from(n).unwrap_or(0));
        let mut refusal = None;
        let result = observed(&self.metrics, method, images, async {
            let run = async {
                let admitted = match admitted {
                    Some(admitted) => admitted,
                    None => self.admit().await?,
                };
                self.run(request, admitted).await
            };
            run.await.map_err(|e| {
                let status = Status::new(code(&e), e.to_string());
                refusal = Some(e);
                status
            })
        })
        .await;
        result.map_err(|status| refusal.unwrap_or_else(|| from_status(status)))
    }

    async fn run(&self, request: InferRequest, _slot: Admitted) -> Result<InferAnswer, OipError> {
        // One model for the whole call, even if another is swapped in meanwhile.
        let engine = self.engine()?;
        let id = request.id.clone();
        let max_batch = self.max_batch;
        let input_elements = request.inputs.iter().map(|i| elements(&i.data)).sum();
        let meta = engine.clone();
        let parsed = off_reactor(input_elements, move || {
            tensors::parse(request, meta.meta(), max_batch)
        })
        .await??;
        let n = parsed.images.len();
        let computed = compute(&engine, parsed.kind, parsed.images).await?;
        let output_elements = n * computed.width();
        let outputs = off_reactor(output_elements, move || {
            output_tensors(&parsed.outputs, computed, n)
        })
        .await?;
        Ok(InferAnswer {
            model: parsed.kind.name(),
            version: engine.meta().version.clone(),
            id,
            outputs,
        })
    }
}

/// An in-flight slot held for one inference call, from [`OpenInference::admit`].
pub struct Admitted {
    _slot: Slot,
}

/// Runs `work` on the blocking pool when it handles more than [`REACTOR_ELEMENTS`]
/// `elements`, else right here (a small copy costs less than the hand-over).
pub(crate) async fn off_reactor<T: Send + 'static>(
    elements: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, OipError> {
    if elements <= REACTOR_ELEMENTS {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| OipError::Internal("tensor conversion stopped unexpectedly".into()))
}

/// Queues `images` on the engine for `kind` and awaits the result.
async fn compute(
    engine: &Engine,
    kind: ModelKind,
    images: crate::inference::ImageBatch,
) -> Result<Computed, OipError> {
    let failed = |e| from_status(engine_status(e));
    Ok(match kind {
        ModelKind::Encoder => Computed::Rows(
            engine
                .submit(Task::Encode, images)
                .map_err(failed)?
                .await
                .map_err(failed)?,
        ),
        ModelKind::Decoder => Computed::Rows(
            engine
                .submit(Task::Reconstruct, images)
                .map_err(failed)?
                .await
                .map_err(failed)?,
        ),
        ModelKind::Classifier => Computed::Predictions(
            engine
                .label(images, engine.meta().auto_accept_threshold)
                .map_err(failed)?
                .await
                .map_err(failed)?,
        ),
    })
}

/// Input elements a tensor carries (bytes for raw contents).
fn elements(data: &TensorData) -> usize {
    match data {
        TensorData::Raw(bytes) => bytes.len(),
        TensorData::Uint(v) => v.len(),
        TensorData::Fp32(v) => v.len(),
        TensorData::Other => 0,
    }
}

/// The gRPC code of a refusal.
pub fn code(error: &OipError) -> Code {
    match error {
        OipError::NotFound(_) => Code::NotFound,
        OipError::Invalid(_) => Code::InvalidArgument,
        OipError::Busy(_) => Code::ResourceExhausted,
        OipError::Unavailable(_) => Code::Unavailable,
        OipError::Internal(_) => Code::Internal,
    }
}

/// A refusal from code shared with `aelabel.v1` (admission, the engine) as an [`OipError`].
fn from_status(status: Status) -> OipError {
    let message = status.message().to_string();
    match status.code() {
        Code::NotFound => OipError::NotFound(message),
        Code::InvalidArgument => OipError::Invalid(message),
        Code::ResourceExhausted => OipError::Busy(message),
        Code::Unavailable => OipError::Unavailable(message),
        _ => OipError::Internal(message),
    }
}
