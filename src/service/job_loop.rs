//! The labelling loop's calls on `aelabel.v1.LabelJobs`: which items to label next (chosen on
//! a blocking thread, one selection at a time, since it reads the whole pile), queueing a
//! training run (a worker executes it), and reading runs back.

use super::job_convert as wire;
use super::jobs::LabelJobsService;
use crate::pipeline::job_training::{check_trainable, next_items};
use crate::wire as pb;
use tonic::{Request, Response, Status};

/// Most items one `NextItems` call returns.
pub const MAX_NEXT_ITEMS: u32 = 10_000;

/// Most items one `NextItems` call returns with their images.
pub const MAX_NEXT_WITH_IMAGES: u32 = 1_000;

impl LabelJobsService {
    /// `NextItems`: the items people should label next, in order.
    pub(super) async fn next(
        &self,
        request: Request<pb::NextItemsRequest>,
    ) -> Result<Response<pb::NextItemsResponse>, Status> {
        let request = request.into_inner();
        let job_id = wire::required("job_id", &request.job_id)?.to_string();
        if request.count == 0 || request.count > MAX_NEXT_ITEMS {
            return Err(Status::invalid_argument(format!(
                "count: {} is not between 1 and {MAX_NEXT_ITEMS}",
                request.count
            )));
        }
        let pick = wire::pick(request.pick)?;
        if request.include_images && request.count > MAX_NEXT_WITH_IMAGES {
            return Err(Status::invalid_argument(format!(
                "count: {} items with images is more than {MAX_NEXT_WITH_IMAGES}; ask for fewer",
                request.count
            )));
        }
        let spec = self
            .store()
            .job_spec(&job_id)
            .await
            .map_err(|e| wire::store_status(e, "class"))?;
        // One selection at a time: each holds the job's pixels and features.
        let _turn = self
            .selection()
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let (store, threads) = (self.store().clone(), self.selection_threads());
        let runtime = tokio::runtime::Handle::current();
        let count = request.count as usize;
        let job = job_id.clone();
        let (items, version) = tokio::task::spawn_blocking(move || {
            next_items(&runtime, &store, &job, count, pick, threads)
        })
        .await
        .map_err(|_| Status::internal("item selection stopped unexpectedly"))?
        .map_err(wire::loop_status)?;
        tracing::info!(job = %job_id, picked = items.len(), pick = pick.as_str(), "next items chosen");
        let mut shown = if request.include_images {
            let ids: Vec<String> = items.iter().map(|i| i.client_id.clone()).collect();
            self.store()
                .items_with_images(&job_id, &ids)
                .await
                .map_err(|e| wire::store_status(e, "class"))?
        } else {
            Default::default()
        };
        let (width, height) = (spec.input_width, spec.input_height);
        Ok(Response::new(pb::NextItemsResponse {
            items: items
                .into_iter()
                .map(|item| {
                    let full = shown.remove(&item.client_id).map(|(item, pixels)| {
                        let mut wire_item = wire::item(item, &spec.class_names);
                        wire_item.image = Some(pb::RawImage {
                            width,
                            height,
                            pixels: pixels.into(),
                        });
                        wire_item
                    });
                    let mut next = wire::next_item(item, &spec.class_names);
                    next.item = full;
                    next
                })
                .collect(),
            model_version: version.unwrap_or_default(),
        }))
    }

    /// `TrainJob`: checks the job can train, queues a run (or returns the open one) and wakes
    /// this server's training worker.
    pub(super) async fn train(
        &self,
        request: Request<pb::TrainJobRequest>,
    ) -> Result<Response<pb::TrainingRun>, Status> {
        let request = request.into_inner();
        let job_id = wire::required("job_id", &request.job_id)?;
        let store = self.store();
        let status = |e| wire::store_status(e, "class");
        let spec = store.job_spec(job_id).await.map_err(status)?;
        let pile = store.job_pile(job_id, false).await.map_err(status)?;
        let state = store.loop_state(job_id).await.map_err(status)?;
        check_trainable(job_id, &spec, &pile, state.pretrained).map_err(wire::loop_status)?;
        let (run, queued) = store
            .enqueue_training(job_id, request.activate)
            .await
            .map_err(status)?;
        if queued {
            tracing::info!(job = %job_id, run = %run.id, "training run queued");
            self.wake_trainer();
        }
        Ok(Response::new(wire::training_run(run)))
    }

    /// The automatic trigger (`--retrain-every N`): after a review, queues a run for the job
    /// when N reviews came in since its last round and none is open. Best effort: a job that
    /// cannot train yet (too few classes labelled) simply waits for more reviews.
    pub(super) async fn maybe_retrain(&self, job_id: &str) {
        let Some(every) = self.retrain_every() else {
            return;
        };
        let store = self.store();
        let due = async {
            let state = store.loop_state(job_id).await.ok()?;
            let reviewed = store.job(job_id).await.ok()?.counts.reviewed;
            let trained_on = state.last_round.map_or(0, |r| r.human_labels);
            (state.open_run.is_none() && reviewed >= trained_on + every).then_some(())
        };
        if due.await.is_none() {
            return;
        }
        let request = Request::new(pb::TrainJobRequest {
            job_id: job_id.to_string(),
            activate: false,
        });
        match self.train(request).await {
            Ok(run) => {
                tracing::info!(job = %job_id, run = %run.get_ref().id, every, "training run queued by --retrain-every")
            }
            Err(status) => {
                tracing::debug!(job = %job_id, reason = %status.message(), "--retrain-every: not yet")
            }
        }
    }

    /// `GetTrainingRun`.
    pub(super) async fn run(
        &self,
        request: Request<pb::GetTrainingRunRequest>,
    ) -> Result<Response<pb::TrainingRun>, Status> {
        let request = request.into_inner();
        let run_id = wire::required("run_id", &request.run_id)?;
        let run = self
            .store()
            .training_run(run_id)
            .await
            .map_err(|e| wire::store_status(e, "class"))?;
        Ok(Response::new(wire::training_run(run)))
    }

    /// `ListTrainingRuns`: the job's rounds, oldest first.
    pub(super) async fn runs(
        &self,
        request: Request<pb::ListTrainingRunsRequest>,
    ) -> Result<Response<pb::ListTrainingRunsResponse>, Status> {
        let request = request.into_inner();
        let job_id = wire::required("job_id", &request.job_id)?;
        let runs = self
            .store()
            .training_runs(job_id)
            .await
            .map_err(|e| wire::store_status(e, "class"))?;
        Ok(Response::new(pb::ListTrainingRunsResponse {
            runs: runs.into_iter().map(wire::training_run).collect(),
        }))
    }
}
