//! Retrain from a label job, end to end: read the base model and the job's reviews from the
//! registry, fine-tune ([`super::retrain::retrain`]), register the new model and, when asked,
//! activate it if it is better. `aelabel retrain --job` and the Label Studio backend's
//! `START_TRAINING` both run this one function, on a thread that may block.

use super::retrain::{config_of, retrain, RetrainReport, ReviewedExample};
use super::PipelineError;
use crate::model::{CheckpointError, Model};
use crate::store::{NewModel, Registered, Store, StoreError};
use crate::train::Observer;
use std::path::PathBuf;
use tokio::runtime::Handle;

/// What to retrain from and where the result goes.
#[derive(Clone, Debug)]
pub struct JobRetrain {
    /// The label job whose reviewed items join the training labels.
    pub job: String,
    /// Start from this registered version instead of the active one.
    pub base: Option<String>,
    /// Where the data set is now, if it moved since the base model was trained.
    pub data: Option<PathBuf>,
    /// Threads for the matrix products.
    pub threads: usize,
    /// Activate the new model when it is more accurate than its base.
    pub activate: bool,
}

/// Whether the new model was activated, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// It is active now.
    Activated,
    /// Activation was asked for, but it is not more accurate than its base.
    NotBetter,
    /// Activation was not asked for.
    NotAsked,
}

/// What a job retrain did.
#[derive(Clone, Debug)]
pub struct JobRetrainOutcome {
    /// The comparison of the new model with its base.
    pub report: RetrainReport,
    /// How the registry took the new model.
    pub registered: Registered,
    /// Whether it became active.
    pub activation: Activation,
    /// Reviews trained on.
    pub reviews: usize,
}

/// Why a job retrain stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobRetrainError {
    /// The job has nothing a person decided yet.
    #[error("job {0} has no reviewed items yet; review some with `aelabel jobs review {0}` first")]
    NoReviews(String),
    /// The registry could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The base model file could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The base model's file is not the registered one.
    #[error("{path} is not the file registered as {version} (checksum differs); register it again or restore it")]
    Checksum {
        /// The registered version.
        version: String,
        /// Its artifact path.
        path: PathBuf,
    },
    /// Training failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The new model is saved but could not be registered.
    #[error("the model is saved but could not be registered ({source}); register it later with `aelabel models register {path}`")]
    Register {
        /// The saved model file.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
}

/// Retrains from `spec.job`'s reviews and registers the result in `store`; `out_dir` names
/// the output folder from the number of reviews. Blocks: call it off the async reactor, with
/// `runtime` the runtime the store's connections belong to.
pub fn retrain_job(
    runtime: &Handle,
    store: &Store,
    spec: &JobRetrain,
    out_dir: impl FnOnce(usize) -> PathBuf,
    observer: &dyn Observer,
) -> Result<JobRetrainOutcome, JobRetrainError> {
    let (record, reviews) = runtime.block_on(async {
        let record = match &spec.base {
            Some(version) => store.model(version).await?,
            None => store.active_model().await?,
        };
        let job = store.job_spec(&spec.job).await?;
        let reviews = store
            .reviewed_images(&spec.job)
            .await?
            .into_iter()
            .map(|r| {
                let class_name =
                    job.class_names
                        .get(r.class as usize)
                        .cloned()
                        .ok_or_else(|| StoreError::MalformedJob {
                            job_id: spec.job.clone(),
                            what: "human_class",
                            reason: format!(
                                "item `{}` has class {} outside the job's classes",
                                r.client_id, r.class
                            ),
                        })?;
                Ok(ReviewedExample {
                    pixels: r.pixels,
                    class_name,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok::<_, JobRetrainError>((record, reviews))
    })?;
    if reviews.is_empty() {
        return Err(JobRetrainError::NoReviews(spec.job.clone()));
    }
    let (base, sha256) = Model::load_with_sha256(&record.path)?;
    if sha256 != record.sha256 {
        return Err(JobRetrainError::Checksum {
            version: record.version,
            path: record.path,
        });
    }
    let config = config_of(
        &base,
        out_dir(reviews.len()),
        spec.threads,
        spec.data.clone(),
    )?;
    let provenance =
        serde_json::json!({"job": spec.job, "reviews": reviews.len(), "base": record.version});
    let report = retrain(&config, &base, &reviews, provenance, observer)?;
    let path = std::fs::canonicalize(&report.model_path).unwrap_or(report.model_path.clone());
    let register_failed = |source| JobRetrainError::Register {
        path: path.clone(),
        source,
    };
    let (model, sha256) = Model::load_with_sha256(&path)?;
    let new = NewModel::from_checkpoint(&model.meta, path.clone(), sha256);
    let (registered, activation) = runtime.block_on(async {
        let registered = store.register_model(&new).await.map_err(register_failed)?;
        let activation = if !spec.activate {
            Activation::NotAsked
        } else if report.improved() {
            store.activate(&new.version).await?;
            Activation::Activated
        } else {
            Activation::NotBetter
        };
        Ok::<_, JobRetrainError>((registered, activation))
    })?;
    Ok(JobRetrainOutcome {
        report,
        registered,
        activation,
        reviews: reviews.len(),
    })
}
