//! Label jobs: jobs, their deduplicated images, items with each model's answer and people's
//! reviews, and the claims that let several workers (on several replicas) share the labelling
//! without doing an item twice.
//!
//! A prediction is written only by the worker that holds a still-pending item's claim, in the
//! same statement that ends the claim, so an item is labelled at most once even when a claim
//! expired and was taken over; claims that expire (a crashed worker) are simply claimed again.

use super::job_counts::CountDeltas;
use super::{now_ms, Backend, Store, StoreError};
use crate::inference::Prediction;
use crate::jobs::{
    ClaimedItem, ItemCursor, ItemStatus, Job, JobItem, LabelledItem, NewJob, ReviewClass,
};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::time::Duration;

/// The condition of the `items_by_status` index, repeated in the queries it serves: SQLite
/// uses a partial index only where the query states its condition word for word (it does not
/// infer it from `status = 'reviewed'`; counting a 1,000,000-item job's evidence scanned the
/// job, 140 ms, instead).
pub(super) const BY_STATUS: &str = "status <> 'auto_accepted'";

const SELECT_ITEM: &str = "SELECT seq, client_id, status, predicted_class, confidence, \
     probabilities, model_version, human_class FROM items";

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// One exported item as the database writes it in a page's JSON array: position, client
/// id, status, predicted class, confidence, model version, person's class.
type ExportRow = (
    i64,
    String,
    String,
    Option<i64>,
    Option<f64>,
    Option<String>,
    Option<i64>,
);

impl Store {
    /// Creates an empty job and returns it.
    pub async fn create_job(&self, job: &NewJob) -> Result<Job, StoreError> {
        let id = format!("{:032x}", rand::random::<u128>());
        sqlx::query(
            "INSERT INTO jobs (id, name, created_at, auto_accept_threshold, input_width, \
             input_height, class_names, target_accuracy, own_classes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(&job.name)
        .bind(now_ms())
        .bind(job.auto_accept_threshold.map(f64::from))
        .bind(i64::from(job.input_width))
        .bind(i64::from(job.input_height))
        .bind(serde_json::Value::from(job.class_names.clone()).to_string())
        .bind(job.target_accuracy.map(f64::from))
        .bind(i64::from(job.own_classes))
        .execute(&self.pool)
        .await?;
        self.job(&id).await
    }

    /// The job `job_id` with its counts and the model versions that labelled it.
    pub async fn job(&self, job_id: &str) -> Result<Job, StoreError> {
        let (spec, created_ms) = self.spec_and_creation(job_id).await?;
        let (counts, model_versions) = self.kept_counts(job_id).await?;
        let created =
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(created_ms).unwrap_or(0));
        Ok(Job {
            id: job_id.to_string(),
            spec,
            created_at: humantime::format_rfc3339_millis(created).to_string(),
            counts,
            model_versions,
        })
    }

    /// Up to `limit` items of `status` in review order (confidence ascending, then the order
    /// they were added), after `after`; with the cursor of the last one when more follow.
    pub async fn list_items(
        &self,
        job_id: &str,
        status: ItemStatus,
        after: Option<ItemCursor>,
        limit: usize,
    ) -> Result<(Vec<JobItem>, Option<ItemCursor>), StoreError> {
        self.require_job(job_id).await?;
        let after = after.unwrap_or(ItemCursor {
            confidence: -1.0,
            seq: 0,
        });
        // The status is written out, not bound: the review index leaves auto-accepted items
        // out, and a planner uses a partial index only where it sees the condition hold.
        // Unlabelled items have no confidence: they come in the order they were added (and a
        // person's label on an item no model labelled counts as confidence 0).
        let status = status.as_str();
        let indexed = if status == "auto_accepted" {
            String::new()
        } else {
            format!(" AND {BY_STATUS}")
        };
        let limit_row = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let query = if matches!(status, "pending" | "waiting") {
            sqlx::query(&format!(
                "{SELECT_ITEM} WHERE job_id = $1 AND status = '{status}' AND {BY_STATUS} \
                 AND seq > $2 \
                 ORDER BY seq LIMIT $3"
            ))
            .bind(job_id)
            .bind(after.seq)
            .bind(limit_row)
            .fetch_all(self.reads())
            .await?
        } else {
            sqlx::query(&format!(
                "{SELECT_ITEM} WHERE job_id = $1 AND status = '{status}'{indexed} AND \
                 (COALESCE(confidence, 0) > $2 OR (COALESCE(confidence, 0) = $3 AND seq > $4)) \
                 ORDER BY COALESCE(confidence, 0), seq LIMIT $5"
            ))
            .bind(job_id)
            .bind(after.confidence)
            .bind(after.confidence)
            .bind(after.seq)
            .bind(limit_row)
            .fetch_all(self.reads())
            .await?
        };
        let rows = query;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        let mut last = None;
        for row in rows.iter().take(limit) {
            let item = item(row, job_id)?;
            last = Some(ItemCursor {
                confidence: row.try_get::<Option<f64>, _>("confidence")?.unwrap_or(0.0),
                seq: row.try_get("seq")?,
            });
            items.push(item);
        }
        let next = if rows.len() > limit { last } else { None };
        Ok((items, next))
    }

    /// Records a person's class for item `item_id` of the job; it wins over any model's.
    pub async fn submit_review(
        &self,
        job_id: &str,
        item_id: &str,
        class: &ReviewClass,
    ) -> Result<JobItem, StoreError> {
        let job = self.job_spec(job_id).await?;
        let classes = job.class_names;
        let index = class
            .resolve(&classes)
            .ok_or_else(|| StoreError::UnknownClass {
                class: match class {
                    ReviewClass::Name(name) => format!("class name `{name}`"),
                    ReviewClass::Index(i) => format!("class index {i}"),
                },
                classes: classes.clone(),
            })?;
        let mut tx = self.begin_write().await?;
        let before = sqlx::query(&format!(
            "{SELECT_ITEM} WHERE job_id = $1 AND client_id = $2"
        ))
        .bind(job_id)
        .bind(item_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::UnknownItem {
            job_id: job_id.to_string(),
            item_id: item_id.to_string(),
        })?;
        let before = item(&before, job_id)?;
        sqlx::query(
            "UPDATE items SET status = $1, human_class = $2, reviewed_at = $3 \
             WHERE job_id = $4 AND client_id = $5",
        )
        .bind(ItemStatus::Reviewed.as_str())
        .bind(i64::from(index))
        .bind(now_ms())
        .bind(job_id)
        .bind(item_id)
        .execute(&mut *tx)
        .await?;
        let version = Some(before.model_version.as_str()).filter(|v| !v.is_empty());
        let mut deltas = CountDeltas::default();
        deltas.moved((before.status, version), (ItemStatus::Reviewed, version));
        deltas.apply(&mut tx, self.backend, job_id).await?;
        tx.commit().await?;
        Ok(JobItem {
            status: ItemStatus::Reviewed,
            human_class: Some(index),
            ..before
        })
    }

    /// The job's last item position (0 when empty): where an export stops.
    pub async fn last_seq(&self, job_id: &str) -> Result<i64, StoreError> {
        self.require_job(job_id).await?;
        Ok(
            sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM items WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(self.reads())
                .await?
                .try_get(0)?,
        )
    }

    /// The items at positions `after_seq + 1 ..= after_seq + span` (positions of duplicates
    /// and removed items hold none) in the order they were added, each with its position;
    /// without their probabilities (an export does not show them). A span of positions, not
    /// a `LIMIT`: with stale statistics Postgres planned `seq > $2 … LIMIT` as a scan of
    /// every later item, each page. The database hands the page over as one JSON array:
    /// read row by row, the driver's per-row work was most of an export's cost (70,000 rows
    /// on SQLite: 117,000 → 290,000 rows/s).
    pub async fn export_page(
        &self,
        job_id: &str,
        after_seq: i64,
        span: usize,
    ) -> Result<Vec<(i64, JobItem)>, StoreError> {
        let (aggregate, array) = match self.backend {
            Backend::Postgres => ("json_agg", "json_build_array"),
            Backend::Sqlite => ("json_group_array", "json_array"),
        };
        let page: Option<String> = sqlx::query(&format!(
            "SELECT CAST({aggregate}({array}(seq, client_id, status, predicted_class, \
             confidence, model_version, human_class) ORDER BY seq) AS TEXT) FROM \
             (SELECT seq, client_id, status, predicted_class, confidence, model_version, \
             human_class FROM items WHERE job_id = $1 AND seq > $2 AND seq <= $3) AS page"
        ))
        .bind(job_id)
        .bind(after_seq)
        .bind(after_seq.saturating_add(i64::try_from(span).unwrap_or(i64::MAX)))
        .fetch_one(self.reads())
        .await?
        .try_get(0)?;
        let malformed = |reason: String| StoreError::MalformedJob {
            job_id: job_id.to_string(),
            what: "export page",
            reason,
        };
        let rows: Vec<ExportRow> = match page {
            Some(json) => serde_json::from_str(&json).map_err(|e| malformed(e.to_string()))?,
            None => Vec::new(),
        };
        rows.into_iter()
            .map(
                |(seq, client_id, status, predicted, confidence, version, human)| {
                    let class = |c: Option<i64>| {
                        c.map(|c| u32::try_from(c).map_err(|e| malformed(e.to_string())))
                            .transpose()
                    };
                    let item = JobItem {
                        client_id,
                        status: ItemStatus::parse(&status)
                            .ok_or_else(|| malformed(format!("`{status}` is not a status")))?,
                        predicted_class: class(predicted)?,
                        confidence: confidence.unwrap_or(0.0) as f32,
                        probabilities: Vec::new(),
                        model_version: version.unwrap_or_default(),
                        human_class: class(human)?,
                    };
                    Ok((seq, item))
                },
            )
            .collect()
    }

    /// Claims up to `limit` pending items for `worker_id` for `lease` (items whose earlier
    /// claim expired included) and returns them with their pixels. On Postgres, rows other
    /// workers are claiming right now are skipped, not waited for.
    pub async fn claim_pending(
        &self,
        worker_id: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedItem>, StoreError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let claim = match self.backend {
            // Walks `items_to_claim` (expired claims first, then never-claimed items), so a
            // claim costs the same late in a job as early (ordering by the primary key walked
            // past every labelled item); the picked rows are updated by their physical row id,
            // locked until the statement ends (a join back by key scanned the whole table:
            // 75 ms → 34 ms a 1,024-item claim at 60,000 items, `EXPLAIN ANALYZE`).
            Backend::Postgres => {
                "UPDATE items SET claimed_by = $3, claimed_until = $4 WHERE ctid = ANY(ARRAY(\
                 SELECT ctid FROM items WHERE status = 'pending' \
                 AND (claimed_until IS NULL OR claimed_until < $1) \
                 ORDER BY status, claimed_until LIMIT $2 FOR UPDATE SKIP LOCKED))"
            }
            // No ORDER BY: sorting every pending item took ~20 ms a claim at 70,000 pending;
            // walking `items_to_claim` (status, claimed_until) meets never-claimed items
            // first, in the order they were added, then expired claims, and stops at the limit.
            Backend::Sqlite => {
                "UPDATE items SET claimed_by = $3, claimed_until = $4 \
                 WHERE (job_id, seq) IN (SELECT job_id, seq FROM items WHERE status = 'pending' \
                 AND (claimed_until IS NULL OR claimed_until < $1) LIMIT $2)"
            }
        };
        let mut tx = self.begin_write().await?;
        // The status is written out, not bound: the claim index holds pending items only,
        // and a planner uses a partial index only where it sees the condition hold.
        let claimed = sqlx::query(claim)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(worker_id)
            .bind(until)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if claimed == 0 {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT i.job_id, i.seq, i.batch_seq, j.auto_accept_threshold, j.target_accuracy, \
             j.input_width, j.input_height, j.model_version AS job_model \
             FROM items i JOIN jobs j ON j.id = i.job_id \
             WHERE i.claimed_by = $1 AND i.claimed_until = $2 AND i.status = 'pending' \
             ORDER BY i.job_id, i.seq",
        )
        .bind(worker_id)
        .bind(until)
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed: Vec<ClaimedItem> =
            rows.iter().map(claimed_item).collect::<Result<_, _>>()?;
        for run in claimed.chunk_by_mut(|a, b| a.job_id == b.job_id) {
            let wanted: Vec<(i64, i64)> = run.iter().map(|i| (i.seq, i.batch_seq)).collect();
            let mut pixels = super::job_images::pixels_of(&mut tx, &run[0].job_id, &wanted).await?;
            for item in run.iter_mut() {
                item.pixels = pixels.remove(&item.seq).unwrap_or_default();
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records each labelled item's prediction, in one transaction, where `worker_id` still
    /// holds the claim of a pending item; returns how many were recorded (the others were
    /// reviewed meanwhile, or their claim expired and was taken over).
    pub async fn record_predictions(
        &self,
        worker_id: &str,
        labelled: &[LabelledItem],
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut recorded = Vec::new();
        // One statement per few hundred items: a statement per item cost more than the
        // labelling (on SQLite too: ~30 µs each through sqlx's connection thread).
        for chunk in labelled.chunks(RECORD_CHUNK) {
            recorded.extend(match self.backend {
                Backend::Postgres => record_predictions_postgres(&mut tx, worker_id, chunk).await?,
                Backend::Sqlite => record_predictions_sqlite(&mut tx, worker_id, chunk).await?,
            });
        }
        // Every recorded item was pending and unlabelled.
        let mut deltas: std::collections::BTreeMap<String, CountDeltas> = Default::default();
        for row in &recorded {
            let job_id: String = row.try_get("job_id")?;
            let version: Option<String> = row.try_get("model_version")?;
            let to = (status(row, &job_id)?, version.as_deref());
            deltas
                .entry(job_id.clone())
                .or_default()
                .moved((ItemStatus::Pending, None), to);
        }
        for (job_id, deltas) in deltas {
            deltas.apply(&mut tx, self.backend, &job_id).await?;
        }
        tx.commit().await?;
        Ok(recorded.len() as u64)
    }

    /// The id of the oldest job named `name`, if any: how a front door that names its jobs
    /// (a Label Studio project's) finds its job again after a restart.
    pub async fn job_id_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT id FROM jobs WHERE name = $1 ORDER BY created_at, id LIMIT 1")
                .bind(name)
                .fetch_optional(self.reads())
                .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Removes item `item_id` from the job (its review with it); true when it was there. The
    /// image stays stored for other items with the same pixels.
    pub async fn remove_item(&self, job_id: &str, item_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let removed = sqlx::query(
            "DELETE FROM items WHERE job_id = $1 AND client_id = $2 RETURNING status, model_version",
        )
        .bind(job_id)
        .bind(item_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = removed else {
            tx.rollback().await?;
            return Ok(false);
        };
        let mut deltas = CountDeltas::default();
        let version: Option<String> = row.try_get("model_version")?;
        deltas.add(status(&row, job_id)?, version.as_deref(), -1);
        deltas.apply(&mut tx, self.backend, job_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn require_job(&self, job_id: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT id FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(self.reads())
            .await?
            .map(|_| ())
            .ok_or_else(|| StoreError::UnknownJob(job_id.to_string()))
    }

    /// The job's settings and classes (without counting its items).
    pub async fn job_spec(&self, job_id: &str) -> Result<NewJob, StoreError> {
        Ok(self.spec_and_creation(job_id).await?.0)
    }

    /// The job's settings and when it was created (Unix ms), or `UnknownJob`.
    async fn spec_and_creation(&self, job_id: &str) -> Result<(NewJob, i64), StoreError> {
        let row = sqlx::query(
            "SELECT id, name, created_at, auto_accept_threshold, target_accuracy, input_width, \
             input_height, class_names, own_classes FROM jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_optional(self.reads())
        .await?
        .ok_or_else(|| StoreError::UnknownJob(job_id.to_string()))?;
        job_spec(&row)
    }
}

/// Locks the job's row until `tx` ends (Postgres; SQLite has one writer anyway), so that
/// writers of one job's loop state (a run queued, a round finished) take turns; `UnknownJob`
/// when there is no such job.
pub(super) async fn lock_job(
    tx: &mut Tx<'_>,
    backend: Backend,
    job_id: &str,
) -> Result<(), StoreError> {
    let lock = match backend {
        Backend::Postgres => "SELECT id FROM jobs WHERE id = $1 FOR UPDATE",
        Backend::Sqlite => "SELECT id FROM jobs WHERE id = $1",
    };
    sqlx::query(lock)
        .bind(job_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::UnknownJob(job_id.to_string()))?;
    Ok(())
}

/// Items per multi-row `UPDATE` (7 parameters each, below SQLite's 32,766 and Postgres'
/// 65,535).
const RECORD_CHUNK: usize = 512;

/// The bytes stored for a prediction's probabilities: little-endian `f32`s.
pub(super) fn probability_bytes(p: &Prediction) -> Vec<u8> {
    p.probabilities
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// Records the predictions of `items` in one statement (`UPDATE … FROM VALUES`) where
/// `worker_id` still holds the claim of a pending item; returns the job, status and model
/// version of each item recorded.
async fn record_predictions_postgres(
    tx: &mut Tx<'_>,
    worker_id: &str,
    items: &[LabelledItem],
) -> Result<Vec<AnyRow>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<String> = (0..items.len())
        .map(|i| {
            let p = 3 + i * 7;
            format!(
                "(${}::text, ${}::bigint, ${}::text, ${}::bigint, ${}::float8, ${}::bytea, ${}::text)",
                p,
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6
            )
        })
        .collect();
    let sql = format!(
        "UPDATE items SET status = v.status, predicted_class = v.predicted_class, \
         confidence = v.confidence, probabilities = v.probabilities, \
         model_version = v.model_version, labelled_by = $1, \
         labellings = items.labellings + 1, claimed_by = NULL, claimed_until = NULL \
         FROM (VALUES {}) AS v (job_id, seq, status, predicted_class, confidence, \
         probabilities, model_version) \
         WHERE items.job_id = v.job_id AND items.seq = v.seq AND items.status = $2 \
         AND items.claimed_by = $1 \
         RETURNING items.job_id, items.status, items.model_version",
        rows.join(", ")
    );
    let mut query = sqlx::query(&sql)
        .bind(worker_id)
        .bind(ItemStatus::Pending.as_str());
    for item in items {
        query = bind_prediction(query, item);
    }
    Ok(query.fetch_all(&mut **tx).await?)
}

/// Binds one labelled item's row of a multi-row record statement: job, seq, status, class,
/// confidence, probabilities, model version (the `VALUES` column order of both backends).
fn bind_prediction<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    item: &'q LabelledItem,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let p = &item.prediction;
    query
        .bind(&item.job_id)
        .bind(item.seq)
        .bind(ItemStatus::of_prediction(p).as_str())
        .bind(i64::try_from(p.class_index).unwrap_or(i64::MAX))
        .bind(f64::from(p.confidence))
        .bind(probability_bytes(p))
        .bind(&item.model_version)
}

/// [`record_predictions_postgres`] for SQLite, whose `VALUES` take no column names or casts:
/// a `WITH` names them, and anonymous `?` placeholders keep binding linear (sqlx looks up
/// each numbered parameter's name, a scan of all of them in SQLite).
async fn record_predictions_sqlite(
    tx: &mut Tx<'_>,
    worker_id: &str,
    items: &[LabelledItem],
) -> Result<Vec<AnyRow>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "WITH v (job_id, seq, status, predicted_class, confidence, probabilities, \
         model_version) AS (VALUES {}) \
         UPDATE items SET status = v.status, predicted_class = v.predicted_class, \
         confidence = v.confidence, probabilities = v.probabilities, \
         model_version = v.model_version, labelled_by = ?, \
         labellings = items.labellings + 1, claimed_by = NULL, claimed_until = NULL \
         FROM v WHERE items.job_id = v.job_id AND items.seq = v.seq AND items.status = ? \
         AND items.claimed_by = ? RETURNING job_id, status, model_version",
        value_rows(Backend::Sqlite, items.len(), 7)
    );
    let mut query = sqlx::query(&sql);
    for item in items {
        query = bind_prediction(query, item);
    }
    let query = query
        .bind(worker_id)
        .bind(ItemStatus::Pending.as_str())
        .bind(worker_id);
    Ok(query.fetch_all(&mut **tx).await?)
}

/// `rows` parenthesised rows of `columns` placeholders for a multi-row `VALUES`, the
/// statement's only parameters: `$1, $2, …` on Postgres, `?` on SQLite (numbered ones make
/// sqlx's SQLite binding quadratic in the parameter count).
pub(super) fn value_rows(backend: Backend, rows: usize, columns: usize) -> String {
    value_rows_after(backend, rows, columns, 0)
}

/// [`value_rows`] whose Postgres placeholders follow the statement's first `before`
/// parameters (`$before+1, …`).
pub(super) fn value_rows_after(
    backend: Backend,
    rows: usize,
    columns: usize,
    before: usize,
) -> String {
    let row = |r: usize| -> String {
        let cells: Vec<String> = (0..columns)
            .map(|c| match backend {
                Backend::Postgres => format!("${}", before + r * columns + c + 1),
                Backend::Sqlite => "?".to_string(),
            })
            .collect();
        format!("({})", cells.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// A nullable `DOUBLE PRECISION` column read as the `f32` the domain keeps.
pub(super) fn optional_f32(row: &AnyRow, column: &str) -> Result<Option<f32>, sqlx::Error> {
    Ok(row.try_get::<Option<f64>, _>(column)?.map(|t| t as f32))
}

fn job_spec(row: &AnyRow) -> Result<(NewJob, i64), StoreError> {
    let id: String = row.try_get("id")?;
    let malformed = |what: &'static str, reason: String| StoreError::MalformedJob {
        job_id: id.clone(),
        what,
        reason,
    };
    let names: String = row.try_get("class_names")?;
    let class_names =
        serde_json::from_str(&names).map_err(|e| malformed("class_names", e.to_string()))?;
    let side = |column: &'static str| -> Result<u32, StoreError> {
        let v: i64 = row.try_get(column)?;
        u32::try_from(v).map_err(|e| malformed(column, e.to_string()))
    };
    let spec = NewJob {
        name: row.try_get("name")?,
        auto_accept_threshold: optional_f32(row, "auto_accept_threshold")?,
        target_accuracy: optional_f32(row, "target_accuracy")?,
        input_width: side("input_width")?,
        input_height: side("input_height")?,
        class_names,
        own_classes: row.try_get::<i64, _>("own_classes")? != 0,
    };
    Ok((spec, row.try_get("created_at")?))
}

fn status(row: &AnyRow, job_id: &str) -> Result<ItemStatus, StoreError> {
    let name: String = row.try_get("status")?;
    ItemStatus::parse(&name).ok_or_else(|| StoreError::MalformedJob {
        job_id: job_id.to_string(),
        what: "item status",
        reason: format!("`{name}` is not a status"),
    })
}

fn class(row: &AnyRow, column: &'static str, job_id: &str) -> Result<Option<u32>, StoreError> {
    row.try_get::<Option<i64>, _>(column)?
        .map(|c| {
            u32::try_from(c).map_err(|e| StoreError::MalformedJob {
                job_id: job_id.to_string(),
                what: column,
                reason: e.to_string(),
            })
        })
        .transpose()
}

pub(super) fn item(row: &AnyRow, job_id: &str) -> Result<JobItem, StoreError> {
    let probabilities = row
        .try_get::<Option<Vec<u8>>, _>("probabilities")?
        .unwrap_or_default()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(JobItem {
        client_id: row.try_get("client_id")?,
        status: status(row, job_id)?,
        predicted_class: class(row, "predicted_class", job_id)?,
        confidence: row.try_get::<Option<f64>, _>("confidence")?.unwrap_or(0.0) as f32,
        probabilities,
        model_version: row
            .try_get::<Option<String>, _>("model_version")?
            .unwrap_or_default(),
        human_class: class(row, "human_class", job_id)?,
    })
}

fn claimed_item(row: &AnyRow) -> Result<ClaimedItem, StoreError> {
    let job_id: String = row.try_get("job_id")?;
    let side = |column: &'static str| -> Result<usize, StoreError> {
        let v: i64 = row.try_get(column)?;
        usize::try_from(v).map_err(|e| StoreError::MalformedJob {
            job_id: job_id.clone(),
            what: column,
            reason: e.to_string(),
        })
    };
    Ok(ClaimedItem {
        seq: row.try_get("seq")?,
        auto_accept_threshold: optional_f32(row, "auto_accept_threshold")?,
        target_accuracy: optional_f32(row, "target_accuracy")?,
        image_size: side("input_width")? * side("input_height")?,
        job_model: row.try_get("job_model")?,
        batch_seq: row.try_get("batch_seq")?,
        pixels: Vec::new(),
        job_id,
    })
}
