//! The model registry: every trained model, and which one is active.
//!
//! Activations are an append-only history; the newest names the active model, so "rollback"
//! is simply a new activation of the version active before the current one, and every
//! replica polling the newest row agrees on what to serve.

use super::{now_ms, Store, StoreError};
use crate::model::ModelMeta;
use sqlx::any::AnyRow;
use sqlx::Row;
use std::path::PathBuf;

/// A model to record, as the pipeline produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewModel {
    /// The checkpoint's version (preset, labels and a hash of the weights).
    pub version: String,
    /// Recipe preset name.
    pub preset: String,
    /// The run's settings (the report's `config`).
    pub settings: serde_json::Value,
    /// What it was trained on (folder or IDX directory).
    pub dataset: String,
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// Accuracy on the test set, when there was one.
    pub test_accuracy: Option<f64>,
    /// The report's headline metrics.
    pub metrics: serde_json::Value,
    /// Absolute path of `model.safetensors`.
    pub path: PathBuf,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// The label job it was trained for (its lineage); such a model is never made active
    /// just for being the first registered: a job's models label that job.
    pub job_id: Option<String>,
}

impl NewModel {
    /// The record of a checkpoint at `path` (absolute) with file checksum `sha256`: settings
    /// and headline metrics come from the training summary the pipeline stored in it.
    pub fn from_checkpoint(meta: &ModelMeta, path: PathBuf, sha256: String) -> Self {
        let training = &meta.training;
        let field = |key: &str| training.get(key).cloned().unwrap_or_default();
        Self {
            version: meta.version.clone(),
            preset: training
                .get("preset")
                .and_then(|p| p.as_str())
                .unwrap_or("unknown")
                .to_string(),
            settings: serde_json::json!({
                "labels": field("labels"),
                "seed": field("seed"),
                "target_accuracy": field("target_accuracy"),
                "encoder_widths": meta.widths,
                "decoder": meta.decoder,
                "input_size": [meta.input_width, meta.input_height],
            }),
            dataset: training
                .get("dataset")
                .and_then(|d| d.as_str())
                .unwrap_or("")
                .to_string(),
            class_names: meta.class_names.clone(),
            test_accuracy: training.get("test_accuracy").and_then(|a| a.as_f64()),
            metrics: training.clone(),
            path,
            sha256,
            job_id: None,
        }
    }
}

/// A registered model.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelRecord {
    /// The checkpoint's version.
    pub version: String,
    /// Whether it is the active model now.
    pub active: bool,
    /// When it was registered, RFC 3339 (UTC).
    pub created_at: String,
    /// Recipe preset name.
    pub preset: String,
    /// Accuracy on the test set, when there was one.
    pub test_accuracy: Option<f64>,
    /// Path of `model.safetensors`.
    pub path: PathBuf,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// What it was trained on.
    pub dataset: String,
    /// Class names in output order.
    pub class_names: Vec<String>,
    /// The run's settings.
    pub settings: serde_json::Value,
    /// The report's headline metrics.
    pub metrics: serde_json::Value,
}

/// What [`Store::register_model`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// A new version; `active` when it was the first and so became active.
    New {
        /// Whether it became the active model.
        active: bool,
    },
    /// The version was known (same weights): its path and checksum were updated.
    Existing,
}

const SELECT_MODELS: &str = "SELECT version, created_at, preset, settings, dataset, class_names, \
     test_accuracy, metrics, path, sha256 FROM models";

impl Store {
    /// Records `model`. The first model ever registered becomes active; a version already
    /// known keeps its history and takes the new path and checksum.
    pub async fn register_model(&self, model: &NewModel) -> Result<Registered, StoreError> {
        let mut tx = self.begin_write().await?;
        let known = sqlx::query("SELECT version FROM models WHERE version = $1")
            .bind(&model.version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let path = model.path.display().to_string();
        if known {
            sqlx::query("UPDATE models SET path = $1, sha256 = $2 WHERE version = $3")
                .bind(&path)
                .bind(&model.sha256)
                .bind(&model.version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Registered::Existing);
        }
        sqlx::query(
            "INSERT INTO models (version, created_at, preset, settings, dataset, class_names, \
             test_accuracy, metrics, path, sha256, job_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&model.version)
        .bind(now_ms())
        .bind(&model.preset)
        .bind(model.settings.to_string())
        .bind(&model.dataset)
        .bind(serde_json::Value::from(model.class_names.clone()).to_string())
        .bind(model.test_accuracy)
        .bind(model.metrics.to_string())
        .bind(&path)
        .bind(&model.sha256)
        .bind(&model.job_id)
        .execute(&mut *tx)
        .await?;
        let first = model.job_id.is_none()
            && sqlx::query("SELECT seq FROM activations LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?
                .is_none();
        if first {
            append_activation(&mut tx, &model.version).await?;
        }
        tx.commit().await?;
        Ok(Registered::New { active: first })
    }

    /// Every registered model, newest first.
    pub async fn models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        let active = self.active_version().await?;
        let rows = sqlx::query(&format!(
            "{SELECT_MODELS} ORDER BY created_at DESC, version"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| record(row, active.as_deref()))
            .collect()
    }

    /// One model by version.
    pub async fn model(&self, version: &str) -> Result<ModelRecord, StoreError> {
        let active = self.active_version().await?;
        let row = sqlx::query(&format!("{SELECT_MODELS} WHERE version = $1"))
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::UnknownVersion(version.to_string()))?;
        record(&row, active.as_deref())
    }

    /// The version of the active model, if any model was ever activated. One indexed row:
    /// cheap enough for every server to poll.
    pub async fn active_version(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT version FROM activations ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// The active model's record.
    pub async fn active_model(&self) -> Result<ModelRecord, StoreError> {
        match self.active_version().await? {
            Some(version) => self.model(&version).await,
            None => Err(StoreError::Empty),
        }
    }

    /// Makes `version` the active model (a no-op when it already is).
    pub async fn activate(&self, version: &str) -> Result<ModelRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let known = sqlx::query("SELECT version FROM models WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !known {
            return Err(StoreError::UnknownVersion(version.to_string()));
        }
        let current = current_version(&mut tx).await?;
        if current.as_deref() != Some(version) {
            append_activation(&mut tx, version).await?;
        }
        tx.commit().await?;
        self.model(version).await
    }

    /// Re-activates the version that was active before the current one.
    pub async fn rollback(&self) -> Result<ModelRecord, StoreError> {
        let mut tx = self.begin_write().await?;
        let current = current_version(&mut tx).await?.ok_or(StoreError::Empty)?;
        let previous = sqlx::query(
            "SELECT version FROM activations WHERE version <> $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(&current)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get::<String, _>(0))
        .transpose()?
        .ok_or(StoreError::NothingToRollBack(current))?;
        append_activation(&mut tx, &previous).await?;
        tx.commit().await?;
        self.model(&previous).await
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

async fn current_version(tx: &mut Tx<'_>) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT version FROM activations ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
}

/// Appends an activation of `version` after the newest one. Two writers racing on Postgres
/// collide on the primary key and one of them fails: it can simply retry.
async fn append_activation(tx: &mut Tx<'_>, version: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO activations (seq, version, activated_at) \
         SELECT COALESCE(MAX(seq), 0) + 1, $1, $2 FROM activations",
    )
    .bind(version)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn record(row: &AnyRow, active: Option<&str>) -> Result<ModelRecord, StoreError> {
    let version: String = row.try_get("version")?;
    let json = |column: &'static str| -> Result<serde_json::Value, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|e| StoreError::Malformed {
            version: version.clone(),
            what: column,
            reason: e.to_string(),
        })
    };
    let class_names =
        serde_json::from_value(json("class_names")?).map_err(|e| StoreError::Malformed {
            version: version.clone(),
            what: "class_names",
            reason: e.to_string(),
        })?;
    let created_ms: i64 = row.try_get("created_at")?;
    let created = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(created_ms).unwrap_or(0));
    Ok(ModelRecord {
        active: active == Some(version.as_str()),
        created_at: humantime::format_rfc3339_millis(created).to_string(),
        preset: row.try_get("preset")?,
        test_accuracy: row.try_get("test_accuracy")?,
        path: PathBuf::from(row.try_get::<String, _>("path")?),
        sha256: row.try_get("sha256")?,
        dataset: row.try_get("dataset")?,
        class_names,
        settings: json("settings")?,
        metrics: json("metrics")?,
        version,
    })
}
