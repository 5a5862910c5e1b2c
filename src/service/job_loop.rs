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
        Ok(Response::new(pb::NextItemsResponse {
            items: items
                .into_iter()
                .map(|item| wire::next_item(item, &spec.class_names))
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
