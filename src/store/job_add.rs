//! Adding images to a job: one row per item (labelled already where a model answered on
//! arrival), one pixel blob per run of [`BATCH_IMAGES`] items, and the job's counters, in one
//! transaction per message.

use super::job_counts::CountDeltas;
use super::jobs::{optional_f32, value_rows, value_rows_after};
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
const LABELLED_COLUMNS: usize = 7;

/// Parameters of one unlabelled item row in [`insert_items`].
const UNLABELLED_COLUMNS: usize = 4;

/// The statement's `n`th parameter (from 1): `$n` on Postgres, `?` on SQLite (bound in the
/// order the placeholders appear).
fn placeholder(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Postgres => format!("${n}"),
        Backend::Sqlite => "?".to_string(),
    }
}

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
            auto_accept_threshold: optional_f32(&row, "auto_accept_threshold")?,
            target_accuracy: optional_f32(&row, "target_accuracy")?,
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
        let added = self
            .add_messages(job_id, &[AddMessage { images, labels }])
            .await?;
        Ok(added[0])
    }

    /// Adds several messages' images to the job in one transaction, in order, as
    /// [`Store::add_labelled`] adds one: what each message added. One commit for messages
    /// that arrived together costs less than one each, and either all of them are in the job
    /// or none.
    pub async fn add_messages(
        &self,
        job_id: &str,
        messages: &[AddMessage<'_>],
    ) -> Result<Vec<Added>, StoreError> {
        if messages.iter().any(|m| {
            m.labels
                .is_some_and(|l| l.predictions.len() != m.images.len())
        }) {
            return Err(StoreError::MalformedJob {
                job_id: job_id.to_string(),
                what: "arrival labels",
                reason: "one prediction per image is needed".into(),
            });
        }
        let mut tx = self.begin_write().await?;
        let job = lock_for_add(&mut tx, self.backend, job_id).await?;
        // Read after the lock is held, in a statement of its own: on Postgres a statement sees
        // the rows committed when it started, and the lock may have waited for another add.
        let mut last: i64 =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM items WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        let mut deltas = CountDeltas::default();
        let mut added = Vec::with_capacity(messages.len());
        for message in messages {
            let rows = ItemRows {
                job_id,
                first_seq: last + 1,
                images: message.images,
                labels: message.labels.filter(|l| job.takes(l)),
                unlabelled: job.unlabelled(),
            };
            let mut inserted = Vec::with_capacity(message.images.len());
            for start in (0..message.images.len()).step_by(ADD_CHUNK) {
                let end = (start + ADD_CHUNK).min(message.images.len());
                inserted.extend(insert_items(&mut tx, self.backend, &rows, start..end).await?);
            }
            inserted.sort_unstable();
            insert_batches(&mut tx, self.backend, &rows, &inserted, job.image_size).await?;
            for &i in &inserted {
                let (status, version) = rows.status(i);
                deltas.add(status, version, 1);
            }
            // Positions of duplicates are skipped: item numbers only need to grow.
            last += message.images.len() as i64;
            added.push(Added {
                added: inserted.len() as u64,
                duplicates: (message.images.len() - inserted.len()) as u64,
            });
        }
        deltas.apply(&mut tx, self.backend, job_id).await?;
        tx.commit().await?;
        Ok(added)
    }
}

/// One message's images for [`Store::add_messages`], with the model's answers if any.
#[derive(Clone, Copy, Debug)]
pub struct AddMessage<'a> {
    /// The images, in order.
    pub images: &'a [NewImage],
    /// The answers of the model that labelled them on arrival.
    pub labels: Option<&'a ArrivalLabels<'a>>,
}

/// What an add needs to know of its job, read with the job's row locked.
struct JobForAdd {
    own_classes: bool,
    model: Option<String>,
    image_size: i64,
}

impl JobForAdd {
    /// Whether answers of `labels`' model still label the job.
    fn takes(&self, labels: &ArrivalLabels<'_>) -> bool {
        if labels.job_model {
            self.model.as_deref() == Some(labels.model_version)
        } else {
            self.model.is_none() && !self.own_classes
        }
    }

    /// The status of an item no model labelled.
    fn unlabelled(&self) -> ItemStatus {
        if self.own_classes && self.model.is_none() {
            ItemStatus::Waiting
        } else {
            ItemStatus::Pending
        }
    }
}

/// Reads the job's model and input size, locking its row on Postgres: the lock serialises
/// adders of one job, so item numbers do not collide (SQLite has one writer anyway), and
/// orders adds with a training run's finish, which sets the job's model in the same row.
async fn lock_for_add(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    job_id: &str,
) -> Result<JobForAdd, StoreError> {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let job = sqlx::query(&format!(
        "SELECT own_classes, model_version, input_width * input_height AS size \
         FROM jobs WHERE id = $1{lock}"
    ))
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::UnknownJob(job_id.to_string()))?;
    Ok(JobForAdd {
        own_classes: job.try_get::<i64, _>("own_classes")? != 0,
        model: job.try_get("model_version")?,
        image_size: job.try_get("size")?,
    })
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
/// (into the add's images) of those inserted. What all rows share (the job, and for
/// labelled rows the model and the labeller) is bound once, ahead of the rows' own values.
/// Unlabelled items leave the prediction columns out rather than binding nulls: sqlx 0.8's
/// `Any` driver binds a null `f64` as a Postgres `float4`, and a cached statement prepared
/// that way then refuses a real `f64`. (Sending the rows as one JSON document for the
/// database to unpack was slower on both: SQLite 1.2 → 1.7 s of server time for 70,000
/// items, Postgres 1.5 → 1.8 s of its own.)
async fn insert_items(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    rows: &ItemRows<'_>,
    range: std::ops::Range<usize>,
) -> Result<Vec<usize>, StoreError> {
    let sql = match rows.labels {
        Some(_) => format!(
            "INSERT INTO items (job_id, model_version, labelled_by, labellings, seq, client_id, \
             batch_seq, status, predicted_class, confidence, probabilities) \
             SELECT {}, {}, {}, 1, column1, column2, column3, column4, column5, column6, column7 \
             FROM (VALUES {}) AS v WHERE true \
             ON CONFLICT (job_id, client_id) DO NOTHING",
            placeholder(backend, 1),
            placeholder(backend, 2),
            placeholder(backend, 3),
            value_rows_after(backend, range.len(), LABELLED_COLUMNS, 3)
        ),
        None => format!(
            "INSERT INTO items (job_id, seq, client_id, batch_seq, status) \
             SELECT {}, column1, column2, column3, column4 FROM (VALUES {}) AS v WHERE true \
             ON CONFLICT (job_id, client_id) DO NOTHING",
            placeholder(backend, 1),
            value_rows_after(backend, range.len(), UNLABELLED_COLUMNS, 1)
        ),
    };
    let mut query = sqlx::query(&sql).bind(rows.job_id);
    if let Some(labels) = rows.labels {
        query = query.bind(labels.model_version).bind(labels.labelled_by);
    }
    for i in range.clone() {
        query = query
            .bind(rows.seq(i))
            .bind(rows.images[i].client_id.as_str())
            .bind(rows.batch_seq(i))
            .bind(rows.status(i).0.as_str());
        if let Some(labels) = rows.labels {
            let p = &labels.predictions[i];
            query = query
                .bind(i64::try_from(p.class_index).unwrap_or(i64::MAX))
                .bind(f64::from(p.confidence))
                .bind(super::jobs::probability_bytes(p));
        }
    }
    let inserted = query.execute(&mut *tx).await?.rows_affected();
    inserted_rows(tx, rows, range, inserted).await
}

/// The indices of the images of `range` that an insert of `inserted` rows put in.
async fn inserted_rows(
    tx: &mut sqlx::AnyConnection,
    rows: &ItemRows<'_>,
    range: std::ops::Range<usize>,
    inserted: u64,
) -> Result<Vec<usize>, StoreError> {
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
