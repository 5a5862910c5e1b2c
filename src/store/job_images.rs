//! A job's stored images read back: to show items to a person, and to train on reviews.

use super::{Store, StoreError};
use sqlx::Row;
use std::collections::HashMap;

/// The pixels of the job's items `wanted` (`(seq, batch_seq)` pairs), read batch by batch:
/// each batch's blob once, however many of its items are wanted. Items whose batch is
/// missing are left out.
pub(super) async fn pixels_of(
    conn: &mut sqlx::AnyConnection,
    job_id: &str,
    wanted: &[(i64, i64)],
) -> Result<HashMap<i64, Vec<u8>>, StoreError> {
    let mut batches: Vec<i64> = wanted.iter().map(|&(_, b)| b).collect();
    batches.sort_unstable();
    batches.dedup();
    let mut blobs: HashMap<i64, (usize, Vec<u8>)> = HashMap::with_capacity(batches.len());
    for chunk in batches.chunks(500) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let rows = sqlx::query(&format!(
            "SELECT first_seq, image_size, pixels FROM image_batches \
             WHERE job_id = $1 AND first_seq IN ({})",
            list.join(", ")
        ))
        .bind(job_id)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let size: i64 = row.try_get("image_size")?;
            blobs.insert(
                row.try_get("first_seq")?,
                (usize::try_from(size).unwrap_or(0), row.try_get("pixels")?),
            );
        }
    }
    Ok(wanted
        .iter()
        .filter_map(|&(seq, batch)| {
            let (size, blob) = blobs.get(&batch)?;
            let start = usize::try_from(seq - batch).ok()? * size;
            Some((seq, blob.get(start..start + size)?.to_vec()))
        })
        .collect())
}

/// A reviewed item's image and the class a person gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewedImage {
    /// The client's id for the image.
    pub client_id: String,
    /// 8-bit grayscale pixels at the job's input size, row-major.
    pub pixels: Vec<u8>,
    /// The person's class index.
    pub class: u32,
}

impl Store {
    /// The stored pixels of the job's items named by `client_ids` (ids the job does not hold
    /// are left out), for a page of items at most.
    pub async fn item_images(
        &self,
        job_id: &str,
        client_ids: &[String],
    ) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        if client_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let placeholders: Vec<String> = (0..client_ids.len())
            .map(|i| format!("${}", i + 2))
            .collect();
        let sql = format!(
            "SELECT client_id, seq, batch_seq FROM items WHERE job_id = $1 AND client_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(job_id);
        for id in client_ids {
            query = query.bind(id);
        }
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut *conn).await?;
        let mut ids = HashMap::with_capacity(rows.len());
        let mut wanted = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            ids.insert(seq, row.try_get::<String, _>("client_id")?);
            wanted.push((seq, row.try_get("batch_seq")?));
        }
        let pixels = pixels_of(&mut conn, job_id, &wanted).await?;
        Ok(pixels
            .into_iter()
            .filter_map(|(seq, p)| Some((ids.remove(&seq)?, p)))
            .collect())
    }

    /// The job's items named by `client_ids` with their stored pixels (ids the job does not
    /// hold are left out), for a page of items at most.
    pub async fn items_with_images(
        &self,
        job_id: &str,
        client_ids: &[String],
    ) -> Result<HashMap<String, (crate::jobs::JobItem, Vec<u8>)>, StoreError> {
        let mut found = HashMap::new();
        let mut conn = self.reads().acquire().await?;
        for chunk in client_ids.chunks(500) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT seq, batch_seq, client_id, status, predicted_class, confidence, \
                 probabilities, model_version, human_class FROM items \
                 WHERE job_id = $1 AND client_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(job_id);
            for id in chunk {
                query = query.bind(id);
            }
            let rows = query.fetch_all(&mut *conn).await?;
            let mut items = HashMap::with_capacity(rows.len());
            let mut wanted = Vec::with_capacity(rows.len());
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                items.insert(seq, super::jobs::item(row, job_id)?);
                wanted.push((seq, row.try_get("batch_seq")?));
            }
            for (seq, pixels) in pixels_of(&mut conn, job_id, &wanted).await? {
                if let Some(item) = items.remove(&seq) {
                    found.insert(item.client_id.clone(), (item, pixels));
                }
            }
        }
        Ok(found)
    }

    /// Every reviewed item of the job with its image and human class, in the order the
    /// images were added: what a retrain learns from.
    pub async fn reviewed_images(&self, job_id: &str) -> Result<Vec<ReviewedImage>, StoreError> {
        self.job_spec(job_id).await?;
        let mut conn = self.reads().acquire().await?;
        let rows = sqlx::query(
            "SELECT client_id, human_class, seq, batch_seq FROM items \
             WHERE job_id = $1 AND status = 'reviewed' ORDER BY seq",
        )
        .bind(job_id)
        .fetch_all(&mut *conn)
        .await?;
        let wanted = rows
            .iter()
            .map(|row| Ok((row.try_get("seq")?, row.try_get("batch_seq")?)))
            .collect::<Result<Vec<(i64, i64)>, StoreError>>()?;
        let mut pixels = pixels_of(&mut conn, job_id, &wanted).await?;
        rows.iter()
            .map(|row| {
                let client_id: String = row.try_get("client_id")?;
                let class: Option<i64> = row.try_get("human_class")?;
                let class = class.and_then(|c| u32::try_from(c).ok()).ok_or_else(|| {
                    StoreError::MalformedJob {
                        job_id: job_id.to_string(),
                        what: "human_class",
                        reason: format!("reviewed item `{client_id}` has no valid class"),
                    }
                })?;
                let seq: i64 = row.try_get("seq")?;
                let pixels = pixels
                    .remove(&seq)
                    .ok_or_else(|| StoreError::MalformedJob {
                        job_id: job_id.to_string(),
                        what: "image batch",
                        reason: format!("reviewed item `{client_id}` has no stored pixels"),
                    })?;
                Ok(ReviewedImage {
                    client_id,
                    pixels,
                    class,
                })
            })
            .collect()
    }
}
