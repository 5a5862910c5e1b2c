//! The training worker: claims queued training runs of label jobs from the store and executes
//! them on a thread of its own, reporting progress (which renews its claim) as it goes. A
//! serving replica runs one beside its label worker, at the lowest CPU priority so that
//! `Label` keeps answering; `aelabel worker` runs one alone (`--once`: until the queue is
//! empty, as a Kubernetes Job does).

use crate::jobs::training::TrainingRun;
use crate::pipeline::job_training::{execute_run, JobLoopError, JobTrainer};
use crate::store::Store;
use crate::train::{EpochLog, Observer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};

/// How the training worker claims and runs training.
#[derive(Clone, Debug)]
pub struct TrainingWorkerConfig {
    /// Where job models are written (`<dir>/<job id>/`).
    pub dir: std::path::PathBuf,
    /// Threads for the matrix products.
    pub threads: usize,
    /// How long a claim holds without a progress report before another worker takes over.
    pub lease: Duration,
    /// How often to look for queued runs without being woken.
    pub poll: Duration,
    /// Run training threads at the lowest CPU priority (a serving replica).
    pub background: bool,
}

/// One training worker.
pub struct TrainingWorker {
    /// Where runs are queued.
    pub store: Store,
    /// Settings.
    pub config: TrainingWorkerConfig,
    /// Woken when a run is queued through this process.
    pub wake: Arc<Notify>,
    /// Turns true when shutdown begins.
    pub stopping: watch::Receiver<bool>,
}

impl TrainingWorker {
    /// Works until shutdown begins, or (`once`) until no run is queued.
    pub async fn run(mut self, once: bool) {
        let worker_id = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        if self.config.background {
            // Training runs on rayon's global pool; a serving replica's engine has its own.
            rayon::broadcast(|_| super::labeller::lower_priority_for_image_work());
        }
        loop {
            if *self.stopping.borrow() {
                break;
            }
            match self
                .store
                .claim_training(&worker_id, self.config.lease)
                .await
            {
                Ok(Some(run)) => {
                    self.execute(run, &worker_id).await;
                    continue;
                }
                Ok(None) if once => break,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "training worker: cannot claim a run; retrying")
                }
            }
            tokio::select! {
                changed = self.stopping.changed() => {
                    if changed.is_err() || *self.stopping.borrow() {
                        break;
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// Executes one claimed run on a blocking thread and records how it ended.
    async fn execute(&self, run: TrainingRun, worker_id: &str) {
        tracing::info!(run = %run.id, job = %run.job_id, "training run started");
        let (store, config, id) = (
            self.store.clone(),
            self.config.clone(),
            worker_id.to_string(),
        );
        let runtime = Handle::current();
        let task_run = run.clone();
        let result = tokio::task::spawn_blocking(move || {
            let reporter = ProgressReporter::new(&runtime, &store, &task_run, &id, config.lease);
            let trainer = JobTrainer {
                dir: config.dir.clone(),
                threads: config.threads,
            };
            execute_run(&runtime, &store, &trainer, &task_run, &id, &reporter)
        })
        .await;
        let error = match result {
            Ok(Ok(report)) => {
                tracing::info!(
                    run = %run.id,
                    job = %run.job_id,
                    model = report.model_version.as_deref().unwrap_or("(autoencoder only)"),
                    seconds = report.seconds,
                    "training run finished"
                );
                return;
            }
            Ok(Err(JobLoopError::TakenOver(_))) => {
                tracing::warn!(run = %run.id, "training run was taken over by another worker");
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the training thread stopped: {e}"),
        };
        tracing::warn!(run = %run.id, job = %run.job_id, error = %error, "training run failed");
        if let Err(e) = self.store.fail_training(&run.id, worker_id, &error).await {
            tracing::warn!(run = %run.id, error = %e, "cannot record the failed training run");
        }
    }
}

/// Turns training progress into the run's `progress` and `stage`, written at most once a
/// second (each write renews the claim).
struct ProgressReporter<'a> {
    runtime: &'a Handle,
    store: &'a Store,
    run_id: String,
    worker_id: String,
    lease: Duration,
    phase: Mutex<(String, usize)>,
    steps: AtomicUsize,
    last: Mutex<Instant>,
}

impl<'a> ProgressReporter<'a> {
    fn new(
        runtime: &'a Handle,
        store: &'a Store,
        run: &TrainingRun,
        worker_id: &str,
        lease: Duration,
    ) -> Self {
        Self {
            runtime,
            store,
            run_id: run.id.clone(),
            worker_id: worker_id.to_string(),
            lease,
            phase: Mutex::new((String::new(), 1)),
            steps: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    fn report(&self, force: bool) {
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if !force && last.elapsed() < Duration::from_secs(1) {
                return;
            }
            *last = Instant::now();
        }
        let (stage, total) = self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let progress = self.steps.load(Ordering::Relaxed) as f32 / total.max(1) as f32;
        let write =
            self.store
                .report_training(&self.run_id, &self.worker_id, progress, &stage, self.lease);
        if let Err(e) = self.runtime.block_on(write) {
            tracing::debug!(error = %e, "training progress not recorded");
        }
    }
}

impl Observer for ProgressReporter<'_> {
    fn phase_started(&self, phase: &str, epochs: usize, steps_per_epoch: usize) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) =
            (phase.to_string(), epochs * steps_per_epoch);
        self.steps.store(0, Ordering::Relaxed);
        self.report(true);
    }
    fn step_done(&self) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.report(false);
    }
    fn epoch_done(&self, phase: &str, log: &EpochLog) {
        tracing::debug!(phase, epoch = log.epoch, loss = log.loss, "training epoch");
    }
}
