//! A label job's loop, end to end against the store: executing a claimed training run (read
//! the pile and people's labels, train the round, save and register the job's new model,
//! relabel the pile, finish the run) and choosing the items people should label next. Both
//! block: workers call them on threads of their own, never on an async reactor.

use super::job_round::{
    selection_inputs, train_round, RoundData, RoundError, RoundSettings, RoundStart,
};
use crate::jobs::select::{select, Candidates, Pick, Reason, EVIDENCE_SHARE};
use crate::jobs::training::{RoundReport, TrainingRun};
use crate::jobs::{accept_threshold, NewJob};
use crate::model::{classifier_from_encoder, top_class, CheckpointError, Model, Network};
use crate::store::{JobPile, NewModel, Relabel, Store, StoreError};
use crate::train::metrics::ACCEPT_NOTHING;
use crate::train::Observer;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::runtime::Handle;

/// Why a training run or a selection failed.
#[derive(Debug, thiserror::Error)]
pub enum JobLoopError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A model file could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The round cannot train on what the job holds.
    #[error("job {job}: {source}")]
    Round {
        /// The job.
        job: String,
        /// Why.
        source: RoundError,
    },
    /// The job holds nothing to pick from.
    #[error("job {0} holds no unreviewed items; add images with `aelabel jobs add {0} …`")]
    NothingToPick(String),
    /// The job has no autoencoder yet, so no first batch can be chosen.
    #[error("job {0} has no model yet; run `aelabel jobs train {0}` first (with no labels it pretrains an autoencoder on the job's images to choose the first batch)")]
    NotPretrained(String),
    /// The run was taken over by another worker (this one's claim expired).
    #[error("training run {0} was taken over by another worker")]
    TakenOver(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where a worker keeps job models, and with how many threads it trains.
#[derive(Clone, Debug)]
pub struct JobTrainer {
    /// Job models go to `<dir>/<job id>/`.
    pub dir: PathBuf,
    /// Threads for the matrix products.
    pub threads: usize,
}

/// `(row, class)` pairs people gave.
type Labels = Vec<(usize, u32)>;

/// The job's items split by what people said: `(row, class)` that train, and the evidence.
fn labels_of(pile: &JobPile) -> (Labels, Labels) {
    let (mut training, mut evidence) = (Vec::new(), Vec::new());
    for (row, item) in pile.items.iter().enumerate() {
        if let Some(class) = item.human_class {
            if item.evidence {
                evidence.push((row, class));
            } else {
                training.push((row, class));
            }
        }
    }
    (training, evidence)
}

/// The job's last model and its autoencoder, loaded from their files.
struct Loaded {
    model: Option<Model>,
    autoencoder: Option<Network>,
}

fn load_job_model(runtime: &Handle, store: &Store, job_id: &str) -> Result<Loaded, JobLoopError> {
    let job_model = runtime.block_on(store.job_model(job_id))?;
    let model = match &job_model.model {
        Some((_, path)) => Some(Model::load(path)?),
        None => None,
    };
    let autoencoder = match (&model, &job_model.autoencoder) {
        (Some(m), _) => Some(m.autoencoder.clone()),
        (None, Some(path)) => Some(Model::load(path)?.autoencoder),
        (None, None) => None,
    };
    Ok(Loaded { model, autoencoder })
}

/// Refuses a round that could not train, before any work: what `TrainJob` checks when it
/// queues a run, and the worker again when it runs it.
pub fn check_trainable(
    job_id: &str,
    spec: &NewJob,
    pile: &JobPile,
    pretrained: bool,
) -> Result<(), JobLoopError> {
    if pile.items.is_empty() {
        return Err(JobLoopError::NothingToPick(job_id.to_string()));
    }
    let (training, _) = labels_of(pile);
    if training.is_empty() && !pretrained {
        return Ok(());
    }
    let classes = spec.class_names.len();
    let mut seen = vec![false; classes];
    training
        .iter()
        .filter(|(_, c)| (*c as usize) < classes)
        .for_each(|&(_, c)| seen[c as usize] = true);
    let classes_seen = seen.iter().filter(|&&s| s).count();
    if classes_seen < classes {
        return Err(JobLoopError::Round {
            job: job_id.to_string(),
            source: RoundError::TooFewLabels {
                have: training.len(),
                classes_seen,
                classes,
            },
        });
    }
    Ok(())
}

/// Executes `run` for `worker_id`: trains the job's next model (or, for a job with nothing
/// yet and no labels, its autoencoder), saves and registers it, relabels the pile and
/// finishes the run. The observer sees the training's progress.
pub fn execute_run(
    runtime: &Handle,
    store: &Store,
    trainer: &JobTrainer,
    run: &TrainingRun,
    worker_id: &str,
    observer: &dyn Observer,
) -> Result<RoundReport, JobLoopError> {
    let started = Instant::now();
    let job_id = &run.job_id;
    let (spec, pile) = runtime.block_on(async {
        Ok::<_, StoreError>((
            store.job_spec(job_id).await?,
            store.job_pile(job_id, true).await?,
        ))
    })?;
    let loaded = load_job_model(runtime, store, job_id)?;
    check_trainable(job_id, &spec, &pile, loaded.autoencoder.is_some())?;
    let (training, evidence) = labels_of(&pile);
    let data = RoundData {
        pixels: &pile.pixels,
        width: spec.input_width as usize,
        height: spec.input_height as usize,
        class_names: &spec.class_names,
        training: &training,
        evidence: &evidence,
    };
    let start = match (&loaded.model, &loaded.autoencoder) {
        (Some(m), _) => RoundStart::Previous(m),
        (None, Some(ae)) => RoundStart::Autoencoder(ae),
        (None, None) => RoundStart::Nothing,
    };
    let target = f64::from(spec.target_accuracy.unwrap_or(0.95));
    let settings = RoundSettings {
        target_accuracy: target,
        seed: seed_of(job_id, training.len() + evidence.len()),
        threads: trainer.threads,
    };
    let outcome =
        train_round(&data, start, &settings, observer).map_err(|source| JobLoopError::Round {
            job: job_id.clone(),
            source,
        })?;
    let dir = trainer.dir.join(job_id);
    create_dir(&dir)?;
    let autoencoder_path = dir.join("autoencoder.safetensors");
    if outcome.pretrained {
        save_autoencoder(&outcome.autoencoder, &spec, &autoencoder_path)?;
    }
    let human = (training.len() + evidence.len()) as u64;
    let total = pile.items.len() as u64;
    let mut report = RoundReport {
        model_version: None,
        human_labels: human,
        evidence_labels: evidence.len() as u64,
        total,
        threshold: None,
        auto_accepted_share: 0.0,
        estimated_accepted_accuracy: None,
        accepted_accuracy_bound: None,
        estimated_model_accuracy: None,
        estimated_pool_accuracy: None,
        pretrained: outcome.pretrained,
        activated: false,
        stage_seconds: outcome.stage_seconds.clone(),
        seconds: 0.0,
    };
    let mut predictions = Vec::new();
    let mut threshold = ACCEPT_NOTHING;
    if let Some(trained) = &outcome.trained {
        let classes = spec.class_names.len();
        threshold = accept_threshold(
            spec.auto_accept_threshold,
            spec.target_accuracy,
            &trained.model.meta,
        );
        let mut accepted = 0u64;
        for (item, p) in pile
            .items
            .iter()
            .zip(trained.probabilities.chunks_exact(classes))
        {
            let (class, confidence) = top_class(p);
            if item.human_class.is_none() && confidence >= threshold {
                accepted += 1;
            }
            predictions.push((item.seq, class as u32, confidence, p.to_vec()));
        }
        let path = dir.join(format!("{}.safetensors", trained.model.meta.version));
        trained.model.save(&path)?;
        let (_, sha256) = Model::load_with_sha256(&path)?;
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        let mut record = NewModel::from_checkpoint(&trained.model.meta, path, sha256);
        record.dataset = format!("label job {job_id}");
        record.job_id = Some(job_id.clone());
        runtime.block_on(async {
            store.register_model(&record).await?;
            if run.activate {
                store.activate(&record.version).await?;
            }
            Ok::<_, StoreError>(())
        })?;
        report.activated = run.activate;
        report.model_version = Some(trained.model.meta.version.clone());
        report.threshold = Some(threshold);
        report.auto_accepted_share = accepted as f64 / total.saturating_sub(human).max(1) as f64;
        report.estimated_accepted_accuracy = trained.accepted.accuracy;
        report.accepted_accuracy_bound = trained.accepted.bound;
        report.estimated_model_accuracy = trained.accepted.overall_accuracy;
        report.estimated_pool_accuracy =
            RoundReport::pool_estimate(human, total, trained.accepted.overall_accuracy);
    }
    report.seconds = started.elapsed().as_secs_f64();
    let version = report.model_version.clone();
    let finished = runtime.block_on(store.finish_round(
        job_id,
        &Relabel {
            run_id: &run.id,
            worker_id,
            model_version: version.as_deref(),
            autoencoder: &autoencoder_path,
            predictions: &predictions,
            threshold,
            report: &report,
        },
    ))?;
    if !finished {
        return Err(JobLoopError::TakenOver(run.id.clone()));
    }
    Ok(report)
}

/// A seed for the job's round with `labels` labels: reproducible, different per round.
fn seed_of(job_id: &str, labels: usize) -> u64 {
    let h = crate::model::sha256_hex(job_id.as_bytes());
    u64::from_str_radix(&h[..16], 16).unwrap_or(0) ^ labels as u64
}

fn create_dir(dir: &Path) -> Result<(), JobLoopError> {
    std::fs::create_dir_all(dir).map_err(|source| JobLoopError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Saves the job's autoencoder as a model file whose classifier is the transferred encoder
/// with an untrained head (never registered or served: the first batch reads its codes, the
/// first round its encoder).
fn save_autoencoder(ae: &Network, spec: &NewJob, path: &Path) -> Result<(), JobLoopError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let classifier = classifier_from_encoder(ae, spec.class_names.len(), &mut rng);
    let widths: Vec<usize> = (0..crate::model::encoder_depth(ae))
        .map(|i| ae.layer_dims(i).0)
        .chain(std::iter::once(
            ae.layer_dims(crate::model::encoder_depth(ae) - 1).1,
        ))
        .collect();
    let model = Model {
        meta: crate::model::ModelMeta {
            version: "job-autoencoder".into(),
            widths,
            decoder: crate::model::Decoder::Separate,
            input_width: spec.input_width as usize,
            input_height: spec.input_height as usize,
            class_names: spec.class_names.clone(),
            auto_accept_threshold: ACCEPT_NOTHING,
            training: serde_json::json!({"preset": "job", "autoencoder_only": true}),
            calibration: None,
        },
        autoencoder: ae.clone(),
        classifier,
    };
    Ok(model.save(path)?)
}

/// One item to label next.
#[derive(Clone, Debug, PartialEq)]
pub struct NextItem {
    /// The client's id.
    pub client_id: String,
    /// Why it was picked.
    pub reason: Reason,
    /// The job's current class and confidence for it.
    pub predicted: Option<(u32, f32)>,
}

/// The `n` unreviewed items of the job people should label next, in order, with the model
/// version whose predictions chose them; marks the random evidence slice in the store.
pub fn next_items(
    runtime: &Handle,
    store: &Store,
    job_id: &str,
    n: usize,
    pick: Pick,
    threads: usize,
) -> Result<(Vec<NextItem>, Option<String>), JobLoopError> {
    let spec = runtime.block_on(store.job_spec(job_id))?;
    let loaded = load_job_model(runtime, store, job_id)?;
    let pile = runtime.block_on(store.job_pile(job_id, true))?;
    let size = (spec.input_width * spec.input_height) as usize;
    let unreviewed: Vec<usize> = (0..pile.items.len())
        .filter(|&r| pile.items[r].human_class.is_none())
        .collect();
    if unreviewed.is_empty() {
        return Err(JobLoopError::NothingToPick(job_id.to_string()));
    }
    let autoencoder = match (&loaded.autoencoder, pick) {
        (Some(ae), _) => Some(ae),
        (None, Pick::Random) => None,
        (None, _) => return Err(JobLoopError::NotPretrained(job_id.to_string())),
    };
    let candidates_pixels: Vec<u8> = unreviewed
        .iter()
        .flat_map(|&r| pile.pixels[r * size..(r + 1) * size].iter().copied())
        .collect();
    drop(pile.pixels);
    let classifier = loaded.model.as_ref().map(|m| &m.classifier);
    let (features, dim, probabilities) = match autoencoder {
        Some(ae) => selection_inputs(classifier, ae, &candidates_pixels, threads),
        None => (vec![0.0; unreviewed.len()], 1, None),
    };
    drop(candidates_pixels);
    let candidates = Candidates {
        features: &features,
        dim,
        probabilities: probabilities.as_deref(),
        classes: spec.class_names.len(),
    };
    let pick = match (pick, classifier) {
        // Without a classifier there is no uncertainty: every strategy but random covers the
        // pile with typical points.
        (Pick::Random, _) => Pick::Random,
        (_, None) => Pick::Loop,
        (p, Some(_)) => p,
    };
    let seed = seed_of(job_id, pile.items.len() - unreviewed.len());
    let picks = select(&candidates, n, pick, EVIDENCE_SHARE, seed, threads);
    let evidence: Vec<i64> = picks
        .iter()
        .filter(|(_, r)| *r == Reason::Evidence)
        .map(|&(i, _)| pile.items[unreviewed[i]].seq)
        .collect();
    runtime.block_on(store.mark_evidence(job_id, &evidence))?;
    let items = picks
        .into_iter()
        .map(|(i, reason)| {
            let item = &pile.items[unreviewed[i]];
            NextItem {
                client_id: item.client_id.clone(),
                reason,
                predicted: item.predicted,
            }
        })
        .collect();
    Ok((items, loaded.model.map(|m| m.meta.version)))
}
