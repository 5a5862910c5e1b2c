//! Training runs of label jobs: a queue in the job database. Whoever asks for training only
//! inserts a row; a worker claims the oldest queued run (or one whose worker's claim expired)
//! for a lease, reports progress (which renews the lease), and finishes or fails it. A run is
//! finished or failed only by the worker holding its claim, so two workers never both
//! complete one run; on Postgres the claim skips rows another worker is claiming right now.

use super::jobs::lock_job;
use super::{now_ms, Backend, Store, StoreError};
use crate::jobs::training::{RoundReport, TrainingRun, TrainingState};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::time::Duration;

const SELECT_RUN: &str = "SELECT id, job_id, created_at, activate, state, progress, stage, \
     result, error, started_at, finished_at FROM training_runs";

impl Store {
    /// Queues a training run for the job, or returns the one already queued or running (one
    /// at a time per job: a second request while one waits would train on the same labels).
    pub async fn enqueue_training(
        &self,
        job_id: &str,
        activate: bool,
    ) -> Result<(TrainingRun, bool), StoreError> {
        let mut tx = self.begin_write().await?;
        lock_job(&mut tx, self.backend, job_id).await?;
        let open = sqlx::query(&format!(
            "{SELECT_RUN} WHERE job_id = $1 AND state IN ($2, $3) ORDER BY created_at LIMIT 1"
        ))
        .bind(job_id)
        .bind(TrainingState::Queued.as_str())
        .bind(TrainingState::Running.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = open {
            tx.commit().await?;
            return Ok((run(&row)?, false));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        sqlx::query(
            "INSERT INTO training_runs (id, job_id, created_at, activate, state) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(job_id)
        .bind(now_ms())
        .bind(i64::from(activate))
        .bind(TrainingState::Queued.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((self.training_run(&id).await?, true))
    }

    /// The run `run_id`.
    pub async fn training_run(&self, run_id: &str) -> Result<TrainingRun, StoreError> {
        let row = sqlx::query(&format!("{SELECT_RUN} WHERE id = $1"))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::UnknownRun(run_id.to_string()))?;
        run(&row)
    }

    /// Every run of the job, oldest first.
    pub async fn training_runs(&self, job_id: &str) -> Result<Vec<TrainingRun>, StoreError> {
        self.job_spec(job_id).await?;
        let rows = sqlx::query(&format!(
            "{SELECT_RUN} WHERE job_id = $1 ORDER BY created_at, id"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run).collect()
    }

    /// The job's queued or running run, if any.
    pub async fn open_training(&self, job_id: &str) -> Result<Option<TrainingRun>, StoreError> {
        let row = sqlx::query(&format!(
            "{SELECT_RUN} WHERE job_id = $1 AND state IN ($2, $3) ORDER BY created_at LIMIT 1"
        ))
        .bind(job_id)
        .bind(TrainingState::Queued.as_str())
        .bind(TrainingState::Running.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run).transpose()
    }

    /// Claims the oldest queued run, or a running one whose claim expired (its worker died),
    /// for `worker_id` until `lease` from now.
    pub async fn claim_training(
        &self,
        worker_id: &str,
        lease: Duration,
    ) -> Result<Option<TrainingRun>, StoreError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let pick = match self.backend {
            Backend::Postgres => {
                "SELECT id FROM training_runs WHERE state = $1 \
                 OR (state = $2 AND claimed_until < $3) \
                 ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT id FROM training_runs WHERE state = $1 \
                 OR (state = $2 AND claimed_until < $3) ORDER BY created_at LIMIT 1"
            }
        };
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(pick)
            .bind(TrainingState::Queued.as_str())
            .bind(TrainingState::Running.as_str())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
        else {
            tx.commit().await?;
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        sqlx::query(
            "UPDATE training_runs SET state = $1, claimed_by = $2, claimed_until = $3, \
             started_at = $4, attempts = attempts + 1, progress = 0, stage = '' WHERE id = $5",
        )
        .bind(TrainingState::Running.as_str())
        .bind(worker_id)
        .bind(until)
        .bind(now)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(self.training_run(&id).await?))
    }

    /// Records progress and renews the claim; false when `worker_id` no longer holds the run
    /// (its claim expired and another worker took it over: this one should stop).
    pub async fn report_training(
        &self,
        run_id: &str,
        worker_id: &str,
        progress: f32,
        stage: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let until = now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE training_runs SET progress = $1, stage = $2, claimed_until = $3 \
             WHERE id = $4 AND claimed_by = $5 AND state = $6",
        )
        .bind(f64::from(progress.clamp(0.0, 1.0)))
        .bind(stage)
        .bind(until)
        .bind(run_id)
        .bind(worker_id)
        .bind(TrainingState::Running.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// Marks the run failed with `error`, if `worker_id` still holds it; the job keeps its
    /// model. Returns whether it did.
    pub async fn fail_training(
        &self,
        run_id: &str,
        worker_id: &str,
        error: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE training_runs SET state = $1, error = $2, finished_at = $3, \
             claimed_until = NULL WHERE id = $4 AND claimed_by = $5 AND state = $6",
        )
        .bind(TrainingState::Failed.as_str())
        .bind(error)
        .bind(now_ms())
        .bind(run_id)
        .bind(worker_id)
        .bind(TrainingState::Running.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated == 1)
    }
}

/// Marks the run finished with `report` inside `tx`, if `worker_id` still holds it.
pub(super) async fn finish_run(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    run_id: &str,
    worker_id: &str,
    report: &RoundReport,
) -> Result<bool, StoreError> {
    let result = serde_json::to_string(report).map_err(|e| StoreError::MalformedRun {
        run_id: run_id.to_string(),
        reason: e.to_string(),
    })?;
    let updated = sqlx::query(
        "UPDATE training_runs SET state = $1, result = $2, finished_at = $3, progress = 1, \
         stage = '', claimed_until = NULL WHERE id = $4 AND claimed_by = $5 AND state = $6",
    )
    .bind(TrainingState::Finished.as_str())
    .bind(result)
    .bind(now_ms())
    .bind(run_id)
    .bind(worker_id)
    .bind(TrainingState::Running.as_str())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

fn run(row: &AnyRow) -> Result<TrainingRun, StoreError> {
    let id: String = row.try_get("id")?;
    let malformed = |reason: String| StoreError::MalformedRun {
        run_id: id.clone(),
        reason,
    };
    let state: String = row.try_get("state")?;
    let state =
        TrainingState::parse(&state).ok_or_else(|| malformed(format!("state `{state}`")))?;
    let result = row
        .try_get::<Option<String>, _>("result")?
        .map(|text| serde_json::from_str::<RoundReport>(&text))
        .transpose()
        .map_err(|e| malformed(format!("result: {e}")))?;
    let started: Option<i64> = row.try_get("started_at")?;
    let finished: Option<i64> = row.try_get("finished_at")?;
    let seconds = match (started, finished) {
        (Some(s), Some(f)) => (f - s).max(0) as f64 / 1000.0,
        _ => 0.0,
    };
    Ok(TrainingRun {
        job_id: row.try_get("job_id")?,
        state,
        progress: row.try_get::<f64, _>("progress")? as f32,
        stage: row.try_get("stage")?,
        error: row.try_get("error")?,
        result,
        activate: row.try_get::<i64, _>("activate")? != 0,
        created_ms: row.try_get("created_at")?,
        seconds,
        id,
    })
}
