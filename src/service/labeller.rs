//! The `aelabel.v1.Labeller` service: parse the request, take an in-flight slot, hand the
//! images to the engine, await the result, convert it back. No maths runs here.

use super::admission::{Admission, Slot, Wait};
use super::convert::{self, ImageRules, ParsedImages};
use super::metrics::Metrics;
use crate::inference::{Engine, EngineError, EngineHandle, Output, Prediction, Task};
use crate::wire::{self as pb, code_name};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Requests of one `LabelStream` that may be queued or computing at once; beyond this the
/// server stops reading the stream, so HTTP/2 flow control pushes back on the client.
const STREAM_WINDOW: usize = 4;

/// How many nice levels below the server's own priority image work runs where the
/// `SCHED_IDLE` policy is refused (a seccomp profile may forbid `sched_setscheduler`).
const IMAGE_WORK_NICE_INCREMENT: i32 = 10;

/// Moves the calling blocking-pool thread to the `SCHED_IDLE` policy (nice +10 if that is
/// refused), once per thread, so that decoding and resizing never delay the reactor: a reactor
/// thread that wakes up preempts an idle-policy thread at once, where a nice +10 one may keep
/// its core for a few more milliseconds. Measured on 2 cores under 8 concurrent 4096×4000 raw
/// images: health p99 15–20 ms with nice +10, 4–6 ms with `SCHED_IDLE`. The price: on a core
/// kept 100 % busy by normal-priority work (the engine itself), image work waits until that
/// work pauses; the decode budget and `--max-in-flight` then refuse new calls. A thread keeps
/// the policy for whatever blocking work it runs later (an unprivileged thread cannot return
/// to the normal policy).
pub(super) fn lower_priority_for_image_work() {
    thread_local!(static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    LOWERED.with(|lowered| {
        if !lowered.replace(true) {
            #[cfg(target_os = "linux")]
            // SAFETY: both calls only read their arguments and change the calling thread's
            // scheduling (pid 0 is the calling thread). A failure leaves it as it was.
            unsafe {
                let param = libc::sched_param { sched_priority: 0 };
                if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
                    libc::nice(IMAGE_WORK_NICE_INCREMENT);
                }
            }
        }
    });
}

/// State shared by every call.
pub struct LabellerService {
    engine: Arc<EngineHandle>,
    rules: ImageRules,
    admission: Admission,
    metrics: Arc<Metrics>,
    decode_budget: Arc<Semaphore>,
}

/// Takes `bytes` (rounded up to KiB) of the decode budget, or refuses the call naming it.
pub(super) fn reserve(
    budget: &Arc<Semaphore>,
    bytes: u64,
    rules: &ImageRules,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Status> {
    if bytes == 0 {
        return Ok(None);
    }
    let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
    budget.clone().try_acquire_many_owned(kib).map(Some).map_err(|_| {
        Status::resource_exhausted(format!(
            "images: decoding this request needs up to {} MiB, more than is free of the server's decode budget of {} MiB (--max-decode-mib); retry later, or send smaller images",
            bytes.div_ceil(1 << 20),
            rules.decode_budget >> 20
        ))
    })
}

impl LabellerService {
    /// A service over the engine behind `engine` that admits `max_in_flight` requests at
    /// once. `rules` gives the limits; its width and height are replaced per call by the
    /// input size of the model answering it.
    pub fn new(
        engine: Arc<EngineHandle>,
        rules: ImageRules,
        max_in_flight: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            engine,
            rules,
            admission: Admission::new(max_in_flight, metrics.clone()),
            metrics,
            decode_budget: Arc::new(Semaphore::new(
                usize::try_from(rules.decode_budget.div_ceil(1024))
                    .unwrap_or(Semaphore::MAX_PERMITS)
                    .min(Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// The in-flight slots this service takes, for other doors onto the same engine.
    pub(crate) fn admission(&self) -> Admission {
        self.admission.clone()
    }

    fn shared(&self) -> Shared {
        Shared {
            engine: self.engine.clone(),
            rules: self.rules,
            admission: self.admission.clone(),
            metrics: self.metrics.clone(),
            decode_budget: self.decode_budget.clone(),
        }
    }
}

/// The Labeller's own labelling path for the service's other front doors (the Label Studio
/// backend): the same in-flight slots (failing fast), decode budget, off-reactor decoding and
/// engine, so a second door cannot bypass a limit.
#[derive(Clone)]
pub struct LabelDoor(Shared);

/// What [`LabelDoor::label`] answers: the version of the model that labelled, and one
/// prediction per image in order.
pub type Labelled = (String, Vec<Prediction>);

impl LabellerService {
    /// The door other front doors label through.
    pub fn door(&self) -> LabelDoor {
        LabelDoor(self.shared())
    }
}

impl LabelDoor {
    /// Labels `images` with the model serving now, at its own review threshold; `method`
    /// names the call in the metrics and logs.
    pub async fn label(
        &self,
        method: &'static str,
        images: Vec<pb::Image>,
    ) -> Result<Labelled, Status> {
        let shared = &self.0;
        observed(&shared.metrics, method, images.len(), async {
            let engine = shared.engine()?;
            let threshold = engine.meta().auto_accept_threshold;
            let slot = shared.admit(Wait::FailFast).await?;
            let parsed = shared.parse(&engine, images).await?;
            let (_, predictions) = shared.label(&engine, parsed, threshold, slot)?.await?;
            Ok((engine.meta().version.clone(), predictions))
        })
        .await
    }

    /// The model serving now (its version, classes and input size), or `UNAVAILABLE` while
    /// no model is active.
    pub fn current(&self) -> Result<Arc<Engine>, Status> {
        self.0.engine()
    }
}

/// The cloneable parts a stream's background tasks need.
#[derive(Clone)]
struct Shared {
    engine: Arc<EngineHandle>,
    rules: ImageRules,
    admission: Admission,
    metrics: Arc<Metrics>,
    decode_budget: Arc<Semaphore>,
}

impl Shared {
    /// The engine to run one call on, or `UNAVAILABLE` while no model is active.
    fn engine(&self) -> Result<Arc<Engine>, Status> {
        super::serving_engine(&self.engine)
    }

    /// The request rules for `engine`'s model.
    fn rules(&self, engine: &Engine) -> ImageRules {
        ImageRules {
            width: engine.meta().input_width as u32,
            height: engine.meta().input_height as u32,
            ..self.rules
        }
    }

    async fn parse(&self, engine: &Engine, images: Vec<pb::Image>) -> Result<ParsedImages, Status> {
        let rules = self.rules(engine);
        if convert::needs_decoding(&images, &rules) {
            // Decoding and resizing are real CPU work: keep them off the reactor, and hold
            // their peak memory against the decode budget while they run.
            let budget = self.decode_budget.clone();
            tokio::task::spawn_blocking(move || {
                lower_priority_for_image_work();
                let _held = reserve(&budget, convert::decode_cost(&images, &rules), &rules)?;
                convert::parse_images(images, &rules)
            })
            .await
            .map_err(|_| Status::internal("image decoding stopped unexpectedly"))?
        } else {
            convert::parse_images(images, &rules)
        }
    }

    async fn admit(&self, wait: Wait) -> Result<Slot, Status> {
        self.admission.admit(wait).await
    }

    /// Queues `task` on the parsed images; the returned future holds the in-flight slot
    /// until the result is in.
    fn run(
        &self,
        engine: &Engine,
        task: Task,
        parsed: ParsedImages,
        slot: Slot,
    ) -> Result<impl Future<Output = Answer<Output>>, Status> {
        let pending = engine.submit(task, parsed.images).map_err(engine_status)?;
        Ok(hold_slot(slot, parsed.ids, pending))
    }

    /// Queues the parsed images for labelling; the returned future holds the in-flight slot
    /// until the predictions are in.
    fn label(
        &self,
        engine: &Engine,
        parsed: ParsedImages,
        review_threshold: f32,
        slot: Slot,
    ) -> Result<impl Future<Output = Answer<Vec<Prediction>>>, Status> {
        let pending = engine
            .label(parsed.images, review_threshold)
            .map_err(engine_status)?;
        Ok(hold_slot(slot, parsed.ids, pending))
    }
}

/// An engine result with the request's image ids, or why the call failed.
type Answer<T> = Result<(Vec<String>, T), Status>;

/// Awaits an engine result already queued, keeping `slot` until it is in.
async fn hold_slot<T>(
    slot: Slot,
    ids: Vec<String>,
    pending: impl Future<Output = Result<T, EngineError>>,
) -> Answer<T> {
    let result = pending.await.map_err(engine_status)?;
    drop(slot);
    Ok((ids, result))
}

pub(super) fn engine_status(e: EngineError) -> Status {
    match e {
        EngineError::Stopped => Status::unavailable("the inference engine has stopped"),
        other => Status::internal(other.to_string()),
    }
}

/// Runs one call inside a span that records method, batch size, status and latency, and
/// counts it in the metrics.
pub(super) async fn observed<T>(
    metrics: &Metrics,
    method: &'static str,
    images: usize,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let span = tracing::info_span!(
        "rpc",
        method,
        batch_size = images,
        status = tracing::field::Empty,
        latency_us = tracing::field::Empty
    );
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    span.record("status", code_name(code));
    span.record("latency_us", (seconds * 1e6) as u64);
    span.in_scope(|| match &result {
        Ok(_) => tracing::debug!("answered"),
        Err(status) => tracing::info!(message = status.message(), "refused"),
    });
    metrics.request_done(method, code, images, seconds);
    result
}

type LabelStreamItems =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LabelResponse, Status>> + Send>>;
type PendingLabel = Pin<Box<dyn Future<Output = Result<pb::LabelResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::labeller_server::Labeller for LabellerService {
    async fn encode(
        &self,
        request: Request<pb::EncodeRequest>,
    ) -> Result<Response<pb::EncodeResponse>, Status> {
        let shared = self.shared();
        let images = request.into_inner().images;
        observed(&self.metrics, "Encode", images.len(), async {
            let engine = shared.engine()?;
            let slot = shared.admit(Wait::FailFast).await?;
            let parsed = shared.parse(&engine, images).await?;
            let (ids, output) = shared.run(&engine, Task::Encode, parsed, slot)?.await?;
            Ok(Response::new(convert::encode_response(
                ids,
                &output,
                &engine.meta().version,
            )))
        })
        .await
    }

    async fn reconstruct(
        &self,
        request: Request<pb::ReconstructRequest>,
    ) -> Result<Response<pb::ReconstructResponse>, Status> {
        let shared = self.shared();
        let request = request.into_inner();
        let include_values = request.include_values;
        let images = request.images;
        observed(&self.metrics, "Reconstruct", images.len(), async {
            let engine = shared.engine()?;
            let slot = shared.admit(Wait::FailFast).await?;
            let parsed = shared.parse(&engine, images).await?;
            let (ids, output) = shared
                .run(&engine, Task::Reconstruct, parsed, slot)?
                .await?;
            Ok(Response::new(convert::reconstruct_response(
                ids,
                &output,
                include_values,
                engine.meta(),
            )))
        })
        .await
    }

    async fn label(
        &self,
        request: Request<pb::LabelRequest>,
    ) -> Result<Response<pb::LabelResponse>, Status> {
        let shared = self.shared();
        let request = request.into_inner();
        observed(&self.metrics, "Label", request.images.len(), async {
            let pending = label_pending(&shared, request, Wait::FailFast).await?;
            Ok(Response::new(pending.await?))
        })
        .await
    }

    type LabelStreamStream = LabelStreamItems;

    async fn label_stream(
        &self,
        request: Request<Streaming<pb::LabelRequest>>,
    ) -> Result<Response<Self::LabelStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let shared = self.shared();
        // Reader → (in order) → writer → client. Both channels are bounded, so a client that
        // stops reading stops the reader; a client that goes away drops the receiver, which
        // stops the writer, drops the pending results and with them their queued engine jobs.
        let (pending_tx, mut pending_rx) = mpsc::channel::<PendingLabel>(STREAM_WINDOW);
        let (out_tx, out_rx) = mpsc::channel(STREAM_WINDOW);
        tokio::spawn(async move {
            loop {
                let request = match inbound.message().await {
                    Ok(Some(request)) => request,
                    Ok(None) => break,
                    Err(status) => {
                        let status = super::codes::remap_status(status);
                        let _ = pending_tx.send(Box::pin(async move { Err(status) })).await;
                        break;
                    }
                };
                let started = Instant::now();
                let images = request.images.len();
                let metrics = shared.metrics.clone();
                let result = label_pending(&shared, request, Wait::Queue).await;
                let failed = result.is_err();
                let pending: PendingLabel = Box::pin(async move {
                    let result = match result {
                        Ok(pending) => pending.await,
                        Err(status) => Err(status),
                    };
                    let code = result
                        .as_ref()
                        .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
                    metrics.request_done(
                        "LabelStream",
                        code,
                        images,
                        started.elapsed().as_secs_f64(),
                    );
                    result
                });
                if pending_tx.send(pending).await.is_err() || failed {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(pending) = pending_rx.recv().await {
                let result = pending.await;
                let stop = result.is_err();
                if out_tx.send(result).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn get_model_info(
        &self,
        _request: Request<pb::GetModelInfoRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let engine = super::serving_engine(&self.engine)?;
        Ok(Response::new(convert::model_info(
            engine.meta(),
            self.rules.max_batch,
        )))
    }
}

/// Parses and queues one Label request; the future yields its response.
async fn label_pending(
    shared: &Shared,
    request: pb::LabelRequest,
    admission: Wait,
) -> Result<PendingLabel, Status> {
    // One model for the whole call, even if another is swapped in meanwhile.
    let engine = shared.engine()?;
    let threshold = convert::review_threshold(
        request.review_threshold,
        engine.meta().auto_accept_threshold,
    )?;
    // Admission first: decoding costs memory and CPU, so --max-in-flight must bound it too.
    let slot = shared.admit(admission).await?;
    let parsed = shared.parse(&engine, request.images).await?;
    let result = shared.label(&engine, parsed, threshold, slot)?;
    Ok(Box::pin(async move {
        let (ids, predictions) = result.await?;
        Ok(convert::label_response(
            ids,
            predictions,
            threshold,
            &engine.meta().version,
        ))
    }))
}
