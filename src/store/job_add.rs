//! Adding images to a job: one row per item (labelled already where a model answered on
//! arrival), one pixel blob per run of [`BATCH_IMAGES`] items, and the job's counters, in one
//! transaction per message.

use super::job_counts::CountDeltas;
use super::jobs::value_rows;
use super::{Backend, Store, StoreError};
use crate::inference::Prediction;
use crate::jobs::{Added, ItemStatus, LabelSettings, NewImage};
use sqlx::Row;

/// Items whose pixels share one blob: reading one item's pixels reads its whole batch
/// (64 × 784 bytes = 49 KiB at 28 × 28), and a job of a million items holds 15,625 blob rows
/// instead of a million.
pub(super) const BATCH_IMAGES: i64 = 64;

/// Items per multi-row `INSERT` (at most [`LABELLED_COLUMNS`] parameters each, below
/// SQLite's 32,766 and Postgres' 65,535).
const ADD_CHUNK: usize = 1000;

/// Parameters of one labelled item row in [`insert_items`].
const LABELLED_COLUMNS: usize = 11;

/// Parameters of one unlabelled item row in [`insert_items`].
const UNLABELLED_COLUMNS: usize = 5;

/// A model's answers for a message's images, computed as they arrived.
#[derive(Clone, Copy, Debug)]
pub struct ArrivalLabels<'a> {
    /// The registry version of the model that answered.
    pub model_version: &'a str,
    /// True when it is the job's own model; false for the serving model of a job that
    /// follows it.
    pub job_model: bool,
    /// One prediction per image, in order.
    pub predictions: &'a [Prediction],
    /// Who labelled them (kept as the items' `labelled_by`).
    pub labelled_by: &'a str,
}

impl Store {
    /// What decides how the job's images are labelled now: its own model, whether it waits
    /// for one, its threshold or target, its input size.
    pub async fn label_settings(&self, job_id: &str) -> Result<LabelSettings, StoreError> {
        let row = sqlx::query(
            "SELECT model_version, own_classes, auto_accept_threshold, target_accuracy, \
             input_width * input_height AS size FROM jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_optional(self.reads())
        .await?
        .ok_or_else(|| StoreError::UnknownJob(job_id.to_string()))?;
        Ok(LabelSettings {
            job_model: row.try_get("model_version")?,
            own_classes: row.try_get::<i64, _>("own_classes")? != 0,
            auto_accept_threshold: row
                .try_get::<Option<f64>, _>("auto_accept_threshold")?
                .map(|t| t as f32),
            target_accuracy: row
                .try_get::<Option<f64>, _>("target_accuracy")?
                .map(|t| t as f32),
            image_size: usize::try_from(row.try_get::<i64, _>("size")?).unwrap_or(0),
        })
    }

    /// Adds `images` to the job unlabelled (pending, or waiting for the job's first model):
    /// the background worker labels them.
    pub async fn add_images(&self, job_id: &str, images: &[NewImage]) -> Result<Added, StoreError> {
        self.add_labelled(job_id, images, None).await
    }

    /// Adds `images` to the job in one transaction; an image whose client id the job already
    /// holds is a duplicate and changes nothing. With `labels` the items are stored labelled
    /// (auto-accepted or needing review), never to be claimed, when that model still labels
    /// the job: its own model is still the job's, or the job still follows the serving
    /// model. Otherwise (a round finished meanwhile) they are stored pending, and a waiting
    /// job's items wait.
    pub async fn add_labelled(
        &self,
        job_id: &str,
        images: &[NewImage],
        labels: Option<&ArrivalLabels<'_>>,
    ) -> Result<Added, StoreError> {
        if labels.is_some_and(|l| l.predictions.len() != images.len()) {
            return Err(StoreError::MalformedJob {
                job_id: job_id.to_string(),
                what: "arrival labels",
                reason: "one prediction per image is needed".into(),
            });
        }
        let mut tx = self.begin_write().await?;
        // On Postgres the job row's lock serialises adders of one job, so item numbers do
        // not collide; SQLite has one writer anyway. It also orders adds with a training
        // run's finish, which sets the job's model in the same row.
        let lock = match self.backend {
            Backend::Postgres => {
                "SELECT own_classes, model_version, input_width * input_height AS size \
                 FROM jobs WHERE id = $1 FOR UPDATE"
            }
            Backend::Sqlite => {
                "SELECT own_classes, model_version, input_width * input_height AS size \
                 FROM jobs WHERE id = $1"
            }
        };
        let job = sqlx::query(lock)
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::UnknownJob(job_id.to_string()))?;
        let own_classes = job.try_get::<i64, _>("own_classes")? != 0;
        let job_model: Option<String> = job.try_get("model_version")?;
        let image_size: i64 = job.try_get("size")?;
        let labels = labels.filter(|l| {
            if l.job_model {
                job_model.as_deref() == Some(l.model_version)
            } else {
                job_model.is_none() && !own_classes
            }
        });
        let unlabelled = if own_classes && job_model.is_none() {
            ItemStatus::Waiting
        } else {
            ItemStatus::Pending
        };
        let last: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM items WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let rows = ItemRows {
            job_id,
            first_seq: last + 1,
            images,
            labels,
            unlabelled,
        };
        let mut inserted = Vec::with_capacity(images.len());
        for start in (0..images.len()).step_by(ADD_CHUNK) {
            let end = (start + ADD_CHUNK).min(images.len());
            inserted.extend(insert_items(&mut tx, self.backend, &rows, start..end).await?);
        }
        inserted.sort_unstable();
        insert_batches(&mut tx, self.backend, &rows, &inserted, image_size).await?;
        let mut deltas = CountDeltas::default();
        for &i in &inserted {
            let (status, version) = rows.status(i);
            deltas.add(status, version, 1);
        }
        deltas.apply(&mut tx, job_id).await?;
        tx.commit().await?;
        Ok(Added {
            added: inserted.len() as u64,
            duplicates: (images.len() - inserted.len()) as u64,
        })
    }
}

/// The rows one add writes: image `i` becomes item `first_seq + i`.
struct ItemRows<'a> {
    job_id: &'a str,
    first_seq: i64,
    images: &'a [NewImage],
    labels: Option<&'a ArrivalLabels<'a>>,
    unlabelled: ItemStatus,
}

impl ItemRows<'_> {
    fn seq(&self, i: usize) -> i64 {
        self.first_seq + i as i64
    }

    /// The first item of image `i`'s pixel batch: batches start every [`BATCH_IMAGES`]
    /// items from the add's first.
    fn batch_seq(&self, i: usize) -> i64 {
        self.first_seq + (i as i64 / BATCH_IMAGES) * BATCH_IMAGES
    }

    fn status(&self, i: usize) -> (ItemStatus, Option<&str>) {
        match self.labels {
            Some(l) => (
                ItemStatus::of_prediction(&l.predictions[i]),
                Some(l.model_version),
            ),
            None => (self.unlabelled, None),
        }
    }
}

/// Inserts the items of images `range` whose client ids the job lacks; returns the indices
/// (into the add's images) of those inserted. Unlabelled items leave the prediction columns
/// out rather than binding nulls: sqlx 0.8's `Any` driver binds a null `f64` as a Postgres
/// `float4`, and a cached statement prepared that way then refuses a real `f64`.
async fn insert_items(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    rows: &ItemRows<'_>,
    range: std::ops::Range<usize>,
) -> Result<Vec<usize>, StoreError> {
    let (columns, count) = match rows.labels {
        Some(_) => (
            "job_id, seq, client_id, batch_seq, status, predicted_class, confidence, \
             probabilities, model_version, labelled_by, labellings",
            LABELLED_COLUMNS,
        ),
        None => (
            "job_id, seq, client_id, batch_seq, status",
            UNLABELLED_COLUMNS,
        ),
    };
    let sql = format!(
        "INSERT INTO items ({columns}) VALUES {} \
         ON CONFLICT (job_id, client_id) DO NOTHING",
        value_rows(backend, range.len(), count)
    );
    let mut query = sqlx::query(&sql);
    for i in range.clone() {
        let (status, version) = rows.status(i);
        query = query
            .bind(rows.job_id)
            .bind(rows.seq(i))
            .bind(rows.images[i].client_id.as_str())
            .bind(rows.batch_seq(i))
            .bind(status.as_str());
        if let Some(labels) = rows.labels {
            let p = &labels.predictions[i];
            query = query
                .bind(i64::try_from(p.class_index).unwrap_or(i64::MAX))
                .bind(f64::from(p.confidence))
                .bind(super::jobs::probability_bytes(p))
                .bind(version)
                .bind(labels.labelled_by)
                .bind(1_i64);
        }
    }
    let inserted = query.execute(&mut *tx).await?.rows_affected();
    // Which rows went in is only asked when some did not (duplicates): `RETURNING` streamed a
    // row back for every item, which cost more than inserting it on SQLite.
    if inserted == range.len() as u64 {
        return Ok(range.collect());
    }
    if inserted == 0 {
        return Ok(Vec::new());
    }
    let (first, last) = (rows.seq(range.start), rows.seq(range.end - 1));
    let found = sqlx::query(
        "SELECT seq FROM items WHERE job_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq",
    )
    .bind(rows.job_id)
    .bind(first)
    .bind(last)
    .fetch_all(&mut *tx)
    .await?;
    found
        .iter()
        .map(|row| {
            let seq: i64 = row.try_get(0)?;
            Ok(usize::try_from(seq - rows.first_seq).unwrap_or(usize::MAX))
        })
        .collect()
}

/// Stores the pixel blobs of the batches that hold at least one inserted item (`inserted`:
/// sorted image indices); a batch's blob holds all its positions, duplicates' included, so
/// an item's offset is its distance from the batch's first item.
async fn insert_batches(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    rows: &ItemRows<'_>,
    inserted: &[usize],
    image_size: i64,
) -> Result<(), StoreError> {
    let mut batches: Vec<usize> = inserted
        .iter()
        .map(|&i| i / BATCH_IMAGES as usize)
        .collect();
    batches.dedup();
    // A few hundred blobs per statement keep it well under any parameter limit.
    for chunk in batches.chunks(256) {
        let sql = format!(
            "INSERT INTO image_batches (job_id, first_seq, image_size, pixels) VALUES {}",
            value_rows(backend, chunk.len(), 4)
        );
        let mut query = sqlx::query(&sql);
        for &b in chunk {
            let start = b * BATCH_IMAGES as usize;
            let end = (start + BATCH_IMAGES as usize).min(rows.images.len());
            let mut pixels = Vec::with_capacity((end - start) * image_size as usize);
            for image in &rows.images[start..end] {
                pixels.extend_from_slice(&image.pixels);
            }
            query = query
                .bind(rows.job_id)
                .bind(rows.batch_seq(start))
                .bind(image_size)
                .bind(pixels);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}
