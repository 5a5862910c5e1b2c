//! The `aelabel.v1.LabelJobs` service: durable label jobs over the store. Handlers parse the
//! request, call one store function and map the answer; the labelling itself happens in the
//! background worker ([`super::job_worker`]).

use super::convert::{self, ImageRules};
use super::job_convert as wire;
use super::job_labelling::JobModels;
use super::labeller::{lower_priority_for_image_work, reserve};
use crate::inference::EngineHandle;
use crate::jobs::NewImage;
use crate::store::Store;
use crate::wire::label_jobs_server::LabelJobs;
use crate::wire::{self as pb};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Items read from the database per export page.
const EXPORT_PAGE: usize = 1000;

/// State shared by every call.
pub struct LabelJobsService {
    store: Store,
    engine: Arc<EngineHandle>,
    rules: ImageRules,
    decode_budget: Arc<Semaphore>,
    work: Arc<Notify>,
    models: Arc<JobModels>,
    /// Labels images as they arrive, recorded as this server's (`None`: the worker does).
    arrival_labeller: Option<String>,
    training: LoopSettings,
}

/// What the loop's calls share: the training worker's wake-up, and one selection at a time.
struct LoopSettings {
    wake: Arc<Notify>,
    selection: Arc<Semaphore>,
    threads: usize,
    retrain_every: Option<u64>,
}

impl LabelJobsService {
    /// A service over `store`; new jobs bring their own classes and input size, or take the
    /// model's serving at creation; `models` label images as they arrive, and `work` wakes
    /// the worker when images arrive that they could not label. `rules` gives the limits (its
    /// width and height are replaced by each job's).
    pub(crate) fn new(
        store: Store,
        engine: Arc<EngineHandle>,
        rules: ImageRules,
        work: Arc<Notify>,
        models: Arc<JobModels>,
    ) -> Self {
        Self {
            store,
            engine,
            rules,
            decode_budget: Arc::new(Semaphore::new(
                usize::try_from(rules.decode_budget.div_ceil(1024))
                    .unwrap_or(Semaphore::MAX_PERMITS)
                    .min(Semaphore::MAX_PERMITS),
            )),
            work,
            models,
            arrival_labeller: None,
            training: LoopSettings {
                wake: Arc::new(Notify::new()),
                selection: Arc::new(Semaphore::new(1)),
                threads: 1,
                retrain_every: None,
            },
        }
    }

    /// Labels images as they arrive, recording them as labelled by `server` (`None`: only
    /// the background worker labels).
    pub(crate) fn labelling_on_arrival(mut self, server: Option<String>) -> Self {
        self.arrival_labeller = server;
        self
    }

    pub(super) fn arrival_labeller(&self) -> Option<&str> {
        self.arrival_labeller.as_deref()
    }

    /// Wakes `wake` when a training run is queued, chooses items with `threads`, and queues a
    /// run by itself once `retrain_every` reviews came in since a job's last round.
    pub fn with_training(
        mut self,
        wake: Arc<Notify>,
        threads: usize,
        retrain_every: Option<u64>,
    ) -> Self {
        self.training.wake = wake;
        self.training.threads = threads.max(1);
        self.training.retrain_every = retrain_every;
        self
    }

    pub(super) fn retrain_every(&self) -> Option<u64> {
        self.training.retrain_every
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    pub(super) fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    pub(super) fn models(&self) -> &JobModels {
        &self.models
    }

    pub(super) fn wake_worker(&self) {
        self.work.notify_one();
    }

    /// The image rules for a job of `width` × `height`.
    pub(super) fn rules_for(&self, width: u32, height: u32) -> ImageRules {
        ImageRules {
            width,
            height,
            ..self.rules
        }
    }

    pub(super) fn selection(&self) -> &Semaphore {
        &self.training.selection
    }

    pub(super) fn selection_threads(&self) -> usize {
        self.training.threads
    }

    pub(super) fn wake_trainer(&self) {
        self.training.wake.notify_one();
    }

    /// Parses images for a job of `width` × `height`, as [`LabelJobs::add_images`] does (the
    /// same limits and decode budget): for the Label Studio backend's annotations.
    pub(super) async fn parse_for_job(
        &self,
        images: Vec<pb::Image>,
        width: u32,
        height: u32,
    ) -> Result<Vec<NewImage>, Status> {
        self.parse(images, self.rules_for(width, height)).await
    }

    /// Parses one message's images at the job's input size, off the reactor.
    pub(super) async fn parse(
        &self,
        images: Vec<pb::Image>,
        rules: ImageRules,
    ) -> Result<Vec<NewImage>, Status> {
        if let Some(i) = images.iter().position(|image| image.id.is_empty()) {
            return Err(Status::invalid_argument(format!(
                "images[{i}].id: image {i} has no id; every image of a job needs one, unique within the job"
            )));
        }
        let budget = self.decode_budget.clone();
        tokio::task::spawn_blocking(move || {
            lower_priority_for_image_work();
            let _held = reserve(&budget, convert::decode_cost(&images, &rules), &rules)?;
            let parsed = convert::parse_images(images, &rules)?;
            let size = parsed.images.image_size();
            Ok(parsed
                .ids
                .into_iter()
                .zip(parsed.images.pixels().chunks_exact(size))
                .map(|(id, pixels)| NewImage::new(id, pixels.to_vec()))
                .collect())
        })
        .await
        .map_err(|_| Status::internal("image decoding stopped unexpectedly"))?
    }
}

type ExportStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ExportedLabel, Status>> + Send>>;

#[tonic::async_trait]
impl LabelJobs for LabelJobsService {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let engine = self.engine.current();
        let spec = wire::new_job(
            request.into_inner(),
            engine.as_ref().map(|e| e.meta()),
            self.rules.limits.max_side,
        )?;
        let job = self
            .store
            .create_job(&spec)
            .await
            .map_err(|e| wire::store_status(e, "class"))?;
        tracing::info!(job = %job.id, name = %job.spec.name, own_classes = job.spec.own_classes, "label job created");
        Ok(Response::new(wire::job(job)))
    }

    async fn add_images(
        &self,
        request: Request<Streaming<pb::AddImagesRequest>>,
    ) -> Result<Response<pb::AddImagesResponse>, Status> {
        self.add(request).await
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let request = request.into_inner();
        let job_id = wire::required("job_id", &request.job_id)?;
        let failed = |e| wire::store_status(e, "class");
        let job = self.store.job(job_id).await.map_err(failed)?;
        let state = self.store.loop_state(job_id).await.map_err(failed)?;
        Ok(Response::new(wire::job_with_loop(job, state)))
    }

    async fn list_items(
        &self,
        request: Request<pb::ListItemsRequest>,
    ) -> Result<Response<pb::ListItemsResponse>, Status> {
        let request = request.into_inner();
        let job_id = wire::required("job_id", &request.job_id)?;
        let status = wire::item_status(request.status)?;
        let page_size = wire::page_size(request.page_size)?;
        let after = wire::cursor(&request.cursor)?;
        let failed = |e| wire::store_status(e, "class");
        let spec = self.store.job_spec(job_id).await.map_err(failed)?;
        let (items, next) = self
            .store
            .list_items(job_id, status, after, page_size)
            .await
            .map_err(failed)?;
        let mut images = if request.include_images {
            let ids: Vec<String> = items.iter().map(|i| i.client_id.clone()).collect();
            self.store.item_images(job_id, &ids).await.map_err(failed)?
        } else {
            Default::default()
        };
        Ok(Response::new(pb::ListItemsResponse {
            items: items
                .into_iter()
                .map(|i| {
                    let pixels = images.remove(&i.client_id);
                    let mut item = wire::item(i, &spec.class_names);
                    item.image = pixels.map(|p| pb::RawImage {
                        width: spec.input_width,
                        height: spec.input_height,
                        pixels: p.into(),
                    });
                    item
                })
                .collect(),
            next_cursor: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn submit_review(
        &self,
        request: Request<pb::SubmitReviewRequest>,
    ) -> Result<Response<pb::Item>, Status> {
        let request = request.into_inner();
        let job_id = wire::required("job_id", &request.job_id)?;
        let item_id = wire::required("item_id", &request.item_id)?;
        let (class, field) = wire::review_class(request.class)?;
        let spec = self
            .store
            .job_spec(job_id)
            .await
            .map_err(|e| wire::store_status(e, field))?;
        let item = self
            .store
            .submit_review(job_id, item_id, &class)
            .await
            .map_err(|e| wire::store_status(e, field))?;
        self.maybe_retrain(job_id).await;
        Ok(Response::new(wire::item(item, &spec.class_names)))
    }

    type ExportLabelsStream = ExportStream;

    async fn export_labels(
        &self,
        request: Request<pb::ExportLabelsRequest>,
    ) -> Result<Response<Self::ExportLabelsStream>, Status> {
        let request = request.into_inner();
        let job_id = wire::required("job_id", &request.job_id)?.to_string();
        let spec = self
            .store
            .job_spec(&job_id)
            .await
            .map_err(|e| wire::store_status(e, "class"))?;
        let store = self.store.clone();
        // A small channel: a slow reader holds the export back instead of filling memory.
        let (tx, rx) = mpsc::channel(2 * EXPORT_PAGE);
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                let page = match store.export_page(&job_id, after, EXPORT_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(wire::store_status(e, "class"))).await;
                        return;
                    }
                };
                let Some((last, _)) = page.last() else {
                    return;
                };
                after = *last;
                for (_, item) in page {
                    if tx
                        .send(Ok(wire::exported(item, &spec.class_names)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn next_items(
        &self,
        request: Request<pb::NextItemsRequest>,
    ) -> Result<Response<pb::NextItemsResponse>, Status> {
        self.next(request).await
    }

    async fn train_job(
        &self,
        request: Request<pb::TrainJobRequest>,
    ) -> Result<Response<pb::TrainingRun>, Status> {
        self.train(request).await
    }

    async fn get_training_run(
        &self,
        request: Request<pb::GetTrainingRunRequest>,
    ) -> Result<Response<pb::TrainingRun>, Status> {
        self.run(request).await
    }

    async fn list_training_runs(
        &self,
        request: Request<pb::ListTrainingRunsRequest>,
    ) -> Result<Response<pb::ListTrainingRunsResponse>, Status> {
        self.runs(request).await
    }
}
