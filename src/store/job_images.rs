//! A job's stored images read back: to show items to a person, and to train on reviews.

use super::{Store, StoreError};
use crate::jobs::ItemStatus;
use sqlx::Row;
use std::collections::HashMap;

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
            "SELECT i.client_id, p.pixels FROM items i JOIN job_images p \
             ON p.job_id = i.job_id AND p.sha256 = i.image_sha256 \
             WHERE i.job_id = $1 AND i.client_id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(job_id);
        for id in client_ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| Ok((row.try_get("client_id")?, row.try_get("pixels")?)))
            .collect()
    }

    /// The job's items named by `client_ids` with their stored pixels (ids the job does not
    /// hold are left out), for a page of items at most.
    pub async fn items_with_images(
        &self,
        job_id: &str,
        client_ids: &[String],
    ) -> Result<HashMap<String, (crate::jobs::JobItem, Vec<u8>)>, StoreError> {
        let mut found = HashMap::new();
        for chunk in client_ids.chunks(500) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT i.seq, i.client_id, i.status, i.predicted_class, i.confidence, \
                 i.probabilities, i.model_version, i.human_class, p.pixels FROM items i \
                 JOIN job_images p ON p.job_id = i.job_id AND p.sha256 = i.image_sha256 \
                 WHERE i.job_id = $1 AND i.client_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(job_id);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                let item = super::jobs::item(&row, job_id)?;
                found.insert(item.client_id.clone(), (item, row.try_get("pixels")?));
            }
        }
        Ok(found)
    }

    /// Every reviewed item of the job with its image and human class, in the order the
    /// images were added: what a retrain learns from.
    pub async fn reviewed_images(&self, job_id: &str) -> Result<Vec<ReviewedImage>, StoreError> {
        self.job_spec(job_id).await?;
        let rows = sqlx::query(
            "SELECT i.client_id, i.human_class, p.pixels FROM items i JOIN job_images p \
             ON p.job_id = i.job_id AND p.sha256 = i.image_sha256 \
             WHERE i.job_id = $1 AND i.status = $2 ORDER BY i.seq",
        )
        .bind(job_id)
        .bind(ItemStatus::Reviewed.as_str())
        .fetch_all(&self.pool)
        .await?;
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
                Ok(ReviewedImage {
                    client_id,
                    pixels: row.try_get("pixels")?,
                    class,
                })
            })
            .collect()
    }
}
