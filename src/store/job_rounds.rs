//! What a label job's training rounds read and write: the whole pile with people's labels,
//! the random slice marked as threshold evidence, the job's own model, and a finished round's
//! relabelling of every item — in the same transaction that finishes the run.

use super::job_counts::CountDeltas;
use super::jobs::lock_job;
use super::training::finish_run;
use super::{Backend, Store, StoreError};
use crate::jobs::training::{LoopState, RoundReport};
use crate::jobs::ItemStatus;
use sqlx::Row;
use std::path::PathBuf;

/// One item of a job's pile.
#[derive(Clone, Debug, PartialEq)]
pub struct PileItem {
    /// Its position in the job.
    pub seq: i64,
    /// The client's id.
    pub client_id: String,
    /// The person's class, once reviewed.
    pub human_class: Option<u32>,
    /// Picked as part of the random slice that judges the threshold.
    pub evidence: bool,
    /// The current model's class and confidence, once labelled.
    pub predicted: Option<(u32, f32)>,
}

/// A job's items in the order they were added, with their pixels when asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobPile {
    /// Every item.
    pub items: Vec<PileItem>,
    /// Row-major pixels of every item at the job's input size (empty unless asked for).
    pub pixels: Vec<u8>,
}

/// The job's own model and autoencoder, where there are any.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobModel {
    /// The job's current model version and its file.
    pub model: Option<(String, PathBuf)>,
    /// The autoencoder pretrained on the job's images (a model file).
    pub autoencoder: Option<PathBuf>,
}

/// A finished round's new state of the job: its model and every item's prediction.
#[derive(Clone, Debug)]
pub struct Relabel<'a> {
    /// The run that trained it.
    pub run_id: &'a str,
    /// The worker holding the run.
    pub worker_id: &'a str,
    /// The new model's version (`None` when the run only pretrained).
    pub model_version: Option<&'a str>,
    /// The job's autoencoder file.
    pub autoencoder: &'a std::path::Path,
    /// `(seq, class, confidence, probabilities)` of every item, in any order.
    pub predictions: &'a [(i64, u32, f32, Vec<f32>)],
    /// Confidence at or above which a prediction is auto-accepted.
    pub threshold: f32,
    /// The round's report, stored with the run.
    pub report: &'a RoundReport,
}

/// Predictions per multi-row `UPDATE` (5 parameters each).
const RELABEL_CHUNK: usize = 512;

/// Predictions per relabelling transaction: a 70,000-item job in one transaction held
/// SQLite's one connection long enough for other calls to time out waiting (3 s) while the
/// machine was busy.
const RELABEL_TRANSACTION: usize = 4096;

impl Store {
    /// Every item of the job in order, with people's labels and the current predictions,
    /// and their pixels when `with_pixels`.
    pub async fn job_pile(&self, job_id: &str, with_pixels: bool) -> Result<JobPile, StoreError> {
        self.job_spec(job_id).await?;
        let mut conn = self.reads().acquire().await?;
        let rows = sqlx::query(
            "SELECT seq, batch_seq, client_id, human_class, evidence, predicted_class, \
             confidence FROM items WHERE job_id = $1 ORDER BY seq",
        )
        .bind(job_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut pile = JobPile::default();
        let mut batches = Vec::new();
        let class = |v: Option<i64>| v.and_then(|c| u32::try_from(c).ok());
        for row in &rows {
            let predicted = class(row.try_get("predicted_class")?).map(|c| {
                let confidence: Option<f64> = row.try_get("confidence").ok().flatten();
                (c, confidence.unwrap_or(0.0) as f32)
            });
            pile.items.push(PileItem {
                seq: row.try_get("seq")?,
                client_id: row.try_get("client_id")?,
                human_class: class(row.try_get("human_class")?),
                evidence: row.try_get::<i64, _>("evidence")? != 0,
                predicted,
            });
            batches.push(row.try_get::<i64, _>("batch_seq")?);
        }
        drop(rows);
        if with_pixels {
            pile.pixels = pile_pixels(&mut conn, job_id, &pile.items, &batches).await?;
        }
        Ok(pile)
    }

    /// The job's own model (with its registered file) and autoencoder.
    pub async fn job_model(&self, job_id: &str) -> Result<JobModel, StoreError> {
        let row = sqlx::query(
            "SELECT j.model_version, j.autoencoder_path, m.path FROM jobs j \
             LEFT JOIN models m ON m.version = j.model_version WHERE j.id = $1",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::UnknownJob(job_id.to_string()))?;
        let version: Option<String> = row.try_get("model_version")?;
        let path: Option<String> = row.try_get("path")?;
        Ok(JobModel {
            model: version.zip(path.map(PathBuf::from)),
            autoencoder: row
                .try_get::<Option<String>, _>("autoencoder_path")?
                .map(PathBuf::from),
        })
    }

    /// Where the job's loop stands: its own model, autoencoder, evidence count, open run and
    /// newest finished round.
    pub async fn loop_state(&self, job_id: &str) -> Result<LoopState, StoreError> {
        let job_model = self.job_model(job_id).await?;
        let evidence: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM items WHERE job_id = $1 AND status = 'reviewed' AND {} \
             AND evidence = 1",
            super::jobs::BY_STATUS
        ))
        .bind(job_id)
        .fetch_one(self.reads())
        .await?
        .try_get(0)?;
        let last_round = self
            .training_runs(job_id)
            .await?
            .into_iter()
            .rev()
            .find_map(|r| r.result.filter(|report| report.model_version.is_some()));
        Ok(LoopState {
            model_version: job_model.model.map(|(v, _)| v),
            pretrained: job_model.autoencoder.is_some(),
            evidence_labels: u64::try_from(evidence).unwrap_or(0),
            open_run: self.open_training(job_id).await?,
            last_round,
        })
    }

    /// Marks items `seqs` of the job as threshold evidence (picked at random); reviewed
    /// items keep what they were picked as.
    pub async fn mark_evidence(&self, job_id: &str, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in seqs.chunks(1000) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            sqlx::query(&format!(
                "UPDATE items SET evidence = 1 WHERE job_id = $1 AND status <> $2 \
                 AND seq IN ({})",
                list.join(", ")
            ))
            .bind(job_id)
            .bind(ItemStatus::Reviewed.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Finishes a round, if `relabel.worker_id` still holds its run: every item takes its new
    /// prediction (status by the threshold; reviewed items stay reviewed), a few thousand
    /// items a transaction so that other calls are not held back (on SQLite one connection
    /// serves them all); then one transaction finishes the run, gives the job its new model
    /// and autoencoder, and makes items that waited for a model pending (added while the
    /// round trained: the label worker labels them with the job's model). Returns false (and
    /// leaves the job's model as it was) when the run was taken over; the worker that took
    /// it relabels the pile again.
    pub async fn finish_round(
        &self,
        job_id: &str,
        relabel: &Relabel<'_>,
    ) -> Result<bool, StoreError> {
        if let Some(version) = relabel.model_version {
            for batch in relabel.predictions.chunks(RELABEL_TRANSACTION) {
                let mut tx = self.begin_write().await?;
                for chunk in batch.chunks(RELABEL_CHUNK) {
                    relabel_chunk(
                        &mut tx,
                        self.backend,
                        job_id,
                        version,
                        relabel.threshold,
                        chunk,
                    )
                    .await?;
                }
                tx.commit().await?;
            }
        }
        let mut tx = self.begin_write().await?;
        lock_job(&mut tx, self.backend, job_id).await?;
        if !finish_run(&mut tx, relabel.run_id, relabel.worker_id, relabel.report).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE jobs SET model_version = COALESCE($1, model_version), autoencoder_path = $2 \
             WHERE id = $3",
        )
        .bind(relabel.model_version)
        .bind(relabel.autoencoder.display().to_string())
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        if relabel.model_version.is_some() {
            let woken = sqlx::query(
                "UPDATE items SET status = $1 WHERE job_id = $2 AND status = 'waiting'",
            )
            .bind(ItemStatus::Pending.as_str())
            .bind(job_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let woken = i64::try_from(woken).unwrap_or(i64::MAX);
            let mut deltas = CountDeltas::default();
            deltas.add(ItemStatus::Waiting, None, -woken);
            deltas.add(ItemStatus::Pending, None, woken);
            deltas.apply(&mut tx, self.backend, job_id).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// The pixels of `items` (in order; `batches[i]` is item `i`'s batch), streaming the job's
/// blobs in order so that only one is held besides the result.
async fn pile_pixels(
    conn: &mut sqlx::AnyConnection,
    job_id: &str,
    items: &[PileItem],
    batches: &[i64],
) -> Result<Vec<u8>, StoreError> {
    use futures_util::TryStreamExt;
    let mut pixels = Vec::new();
    let mut next = 0;
    let mut blobs = sqlx::query(
        "SELECT first_seq, image_size, pixels FROM image_batches WHERE job_id = $1 \
         ORDER BY first_seq",
    )
    .bind(job_id)
    .fetch(&mut *conn);
    while let Some(row) = blobs.try_next().await? {
        let first: i64 = row.try_get("first_seq")?;
        let size = usize::try_from(row.try_get::<i64, _>("image_size")?).unwrap_or(0);
        let blob: Vec<u8> = row.try_get("pixels")?;
        if next == 0 {
            pixels.reserve(items.len() * size);
        }
        while next < items.len() && batches[next] == first {
            let start = usize::try_from(items[next].seq - first).unwrap_or(usize::MAX) * size;
            let image = blob
                .get(start..start + size)
                .ok_or_else(|| StoreError::MalformedJob {
                    job_id: job_id.to_string(),
                    what: "image batch",
                    reason: format!("item {} lies outside its batch {first}", items[next].seq),
                })?;
            pixels.extend_from_slice(image);
            next += 1;
        }
    }
    if next < items.len() {
        return Err(StoreError::MalformedJob {
            job_id: job_id.to_string(),
            what: "image batch",
            reason: format!("item {} has no stored pixels", items[next].seq),
        });
    }
    Ok(pixels)
}

/// Writes one chunk of predictions: class, confidence, probabilities and model; the status
/// of items people have not reviewed follows the threshold.
async fn relabel_chunk(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    job_id: &str,
    version: &str,
    threshold: f32,
    chunk: &[(i64, u32, f32, Vec<f32>)],
) -> Result<(), StoreError> {
    let deltas = relabel_deltas(tx, backend, job_id, version, threshold, chunk).await?;
    let values = super::jobs::value_rows(backend, chunk.len(), 5);
    let reviewed = ItemStatus::Reviewed.as_str();
    let sql = match backend {
        Backend::Postgres => {
            let (job, model) = (5 * chunk.len() + 1, 5 * chunk.len() + 2);
            format!(
                "UPDATE items SET predicted_class = v.predicted_class::bigint, \
                 confidence = v.confidence::float8, probabilities = v.probabilities::bytea, \
                 model_version = ${model}::text, \
                 status = CASE WHEN items.status = '{reviewed}' THEN items.status \
                 ELSE v.status::text END \
                 FROM (VALUES {values}) AS v (seq, predicted_class, confidence, probabilities, \
                 status) WHERE items.job_id = ${job}::text AND items.seq = v.seq::bigint"
            )
        }
        Backend::Sqlite => format!(
            "WITH v (seq, predicted_class, confidence, probabilities, status) AS \
             (VALUES {values}) \
             UPDATE items SET predicted_class = v.predicted_class, confidence = v.confidence, \
             probabilities = v.probabilities, model_version = ?, \
             status = CASE WHEN items.status = '{reviewed}' THEN items.status ELSE v.status END \
             FROM v WHERE items.job_id = ? AND items.seq = v.seq"
        ),
    };
    let mut query = sqlx::query(&sql);
    for (seq, class, confidence, probabilities) in chunk {
        let status = status_at(*confidence, threshold);
        let bytes: Vec<u8> = probabilities.iter().flat_map(|v| v.to_le_bytes()).collect();
        query = query
            .bind(*seq)
            .bind(i64::from(*class))
            .bind(f64::from(*confidence))
            .bind(bytes)
            .bind(status.as_str());
    }
    let query = match backend {
        Backend::Postgres => query.bind(job_id).bind(version),
        Backend::Sqlite => query.bind(version).bind(job_id),
    };
    query.execute(&mut **tx).await?;
    deltas.apply(tx, backend, job_id).await
}

/// The status a prediction of `confidence` gives an item people have not reviewed.
fn status_at(confidence: f32, threshold: f32) -> ItemStatus {
    if confidence >= threshold {
        ItemStatus::AutoAccepted
    } else {
        ItemStatus::NeedsReview
    }
}

/// How relabelling `chunk` changes the job's counts: each item's stored status and model
/// (read, and on Postgres locked, first) against what the chunk writes.
async fn relabel_deltas(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    job_id: &str,
    version: &str,
    threshold: f32,
    chunk: &[(i64, u32, f32, Vec<f32>)],
) -> Result<CountDeltas, StoreError> {
    let list: Vec<String> = chunk.iter().map(|(seq, ..)| seq.to_string()).collect();
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let rows = sqlx::query(&format!(
        "SELECT seq, status, model_version FROM items WHERE job_id = $1 AND seq IN ({}){lock}",
        list.join(", ")
    ))
    .bind(job_id)
    .fetch_all(&mut **tx)
    .await?;
    let confidence: std::collections::HashMap<i64, f32> =
        chunk.iter().map(|(seq, _, c, _)| (*seq, *c)).collect();
    let mut deltas = CountDeltas::default();
    for row in rows {
        let name: String = row.try_get("status")?;
        let old = ItemStatus::parse(&name).ok_or_else(|| StoreError::MalformedJob {
            job_id: job_id.to_string(),
            what: "item status",
            reason: format!("`{name}` is not a status"),
        })?;
        let old_version: Option<String> = row.try_get("model_version")?;
        let new = if old == ItemStatus::Reviewed {
            old
        } else {
            status_at(confidence[&row.try_get::<i64, _>("seq")?], threshold)
        };
        deltas.moved((old, old_version.as_deref()), (new, Some(version)));
    }
    Ok(deltas)
}
