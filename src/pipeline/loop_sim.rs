//! The labelling loop simulated in one process, with true labels standing in for people:
//! the same round training ([`super::job_round`]) and the same selection
//! ([`crate::jobs::select`]) the server runs, without a server or a database, so strategies
//! and round sizes can be compared in minutes (`aelabel bench loop`). The benchmark of record
//! drives the real CLI (`benches/labelling_loop.py`).

use super::job_round::{selection_inputs, train_round, RoundData, RoundSettings, RoundStart};
use crate::jobs::select::{select, Candidates, Pick, Reason};
use crate::model::{top_class, Model, Network};
use crate::train::Observer;
use serde::Serialize;
use std::time::Instant;

/// A pile with its true labels (only read to answer as people would, and to score).
#[derive(Clone, Copy, Debug)]
pub struct TruePile<'a> {
    /// Every image, row-major 8-bit gray.
    pub pixels: &'a [u8],
    /// The true class of each image.
    pub truth: &'a [u32],
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// Class names.
    pub class_names: &'a [String],
}

/// How the simulated loop runs.
#[derive(Clone, Debug)]
pub struct LoopPlan {
    /// Items people label in each round (the last size repeats).
    pub rounds: Vec<usize>,
    /// How picks are chosen.
    pub pick: Pick,
    /// Stop once the pool is this accurate.
    pub stop_at: f64,
    /// Stop once people labelled this many.
    pub budget: usize,
    /// Auto-accept target.
    pub target_accuracy: f64,
    /// Seed.
    pub seed: u64,
    /// Threads.
    pub threads: usize,
}

/// One round of the loop, as the benchmark reports it.
#[derive(Clone, Debug, Serialize)]
pub struct RoundRow {
    /// 1-based round.
    pub round: usize,
    /// Every label people gave so far (first batch and evidence included).
    pub human_labels: usize,
    /// Of those, the random slice judging the threshold.
    pub evidence_labels: usize,
    /// People's labels + the model's class for every other item, against the truth.
    pub pool_accuracy: f64,
    /// Share of the pile auto-accepted (not labelled by people, at or above the threshold).
    pub auto_accepted_share: f64,
    /// True accuracy of the auto-accepted items.
    pub auto_accepted_accuracy: Option<f64>,
    /// The evidence's estimate of it.
    pub estimated_accepted_accuracy: Option<f64>,
    /// The model's threshold.
    pub threshold: f32,
    /// Training seconds of the round.
    pub train_seconds: f64,
    /// Selection seconds of the round's picks.
    pub select_seconds: f64,
}

/// Runs the loop until the pool reaches `plan.stop_at` or people labelled `plan.budget`.
pub fn simulate_loop(
    pile: &TruePile<'_>,
    plan: &LoopPlan,
    observer: &dyn Observer,
    mut on_round: impl FnMut(&RoundRow),
) -> Vec<RoundRow> {
    let n = pile.truth.len();
    let classes = pile.class_names.len();
    let settings = |round: usize| RoundSettings {
        target_accuracy: plan.target_accuracy,
        seed: plan.seed.wrapping_add(round as u64),
        threads: plan.threads,
    };
    let (mut training, mut evidence) = (Vec::new(), Vec::new());
    let mut reviewed = vec![false; n];
    let mut rows = Vec::new();
    let started = Instant::now();
    let first = train_round(&data(pile, &[], &[]), RoundStart::Nothing, &settings(0), observer)
        .expect("pretraining needs no labels");
    observer.note(&format!(
        "pretrained the autoencoder in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let autoencoder: Network = first.autoencoder;
    let mut model: Option<Model> = None;
    let mut probabilities: Option<Vec<f32>> = None;
    for round in 1.. {
        let batch = plan.rounds[(round - 1).min(plan.rounds.len() - 1)];
        let clock = Instant::now();
        let unreviewed: Vec<usize> = (0..n).filter(|&r| !reviewed[r]).collect();
        let picks = pick(
            pile,
            &unreviewed,
            model.as_ref().map(|m| &m.classifier),
            &autoencoder,
            batch,
            plan,
            round,
        );
        let select_seconds = clock.elapsed().as_secs_f64();
        for (row, reason) in picks {
            reviewed[row] = true;
            let pair = (row, pile.truth[row]);
            if reason == Reason::Evidence {
                evidence.push(pair);
            } else {
                training.push(pair);
            }
        }
        let start = match &model {
            Some(m) => RoundStart::Previous(m),
            None => RoundStart::Autoencoder(&autoencoder),
        };
        let clock = Instant::now();
        let outcome = match train_round(&data(pile, &training, &evidence), start, &settings(round), observer)
        {
            Ok(o) => o,
            Err(e) => {
                observer.note(&format!("round {round}: {e}; labelling more first"));
                continue;
            }
        };
        let train_seconds = clock.elapsed().as_secs_f64();
        let Some(trained) = outcome.trained else {
            break;
        };
        let row = score(
            pile,
            &reviewed,
            &trained.probabilities,
            classes,
            trained.model.meta.auto_accept_threshold,
            RoundRow {
                round,
                human_labels: training.len() + evidence.len(),
                evidence_labels: evidence.len(),
                pool_accuracy: 0.0,
                auto_accepted_share: 0.0,
                auto_accepted_accuracy: None,
                estimated_accepted_accuracy: trained.accepted.accuracy,
                threshold: trained.model.meta.auto_accept_threshold,
                train_seconds,
                select_seconds,
            },
        );
        on_round(&row);
        let done = row.pool_accuracy >= plan.stop_at || row.human_labels >= plan.budget;
        rows.push(row);
        probabilities = Some(trained.probabilities);
        model = Some(trained.model);
        if done {
            break;
        }
    }
    drop(probabilities);
    rows
}

/// Rows to label next among `unreviewed`, with why.
fn pick(
    pile: &TruePile<'_>,
    unreviewed: &[usize],
    classifier: Option<&Network>,
    autoencoder: &Network,
    batch: usize,
    plan: &LoopPlan,
    round: usize,
) -> Vec<(usize, Reason)> {
    let size = pile.width * pile.height;
    let pixels: Vec<u8> = unreviewed
        .iter()
        .flat_map(|&r| pile.pixels[r * size..(r + 1) * size].iter().copied())
        .collect();
    let (features, dim, probs) = selection_inputs(classifier, autoencoder, &pixels, plan.threads);
    let candidates = Candidates {
        features: &features,
        dim,
        probabilities: probs.as_deref(),
        classes: pile.class_names.len(),
    };
    // Without a model every strategy but random starts from typical points.
    let strategy = match (plan.pick, classifier) {
        (Pick::Random, _) => Pick::Random,
        (_, None) => Pick::Loop,
        (p, Some(_)) => p,
    };
    select(
        &candidates,
        batch,
        strategy,
        plan.seed.wrapping_mul(31).wrapping_add(round as u64),
        plan.threads,
    )
    .into_iter()
    .map(|(i, reason)| (unreviewed[i], reason))
    .collect()
}

/// Fills `row`'s pool accuracy and auto-accepted figures from the truth.
fn score(
    pile: &TruePile<'_>,
    reviewed: &[bool],
    probabilities: &[f32],
    classes: usize,
    threshold: f32,
    mut row: RoundRow,
) -> RoundRow {
    let n = pile.truth.len();
    let (mut right, mut accepted, mut accepted_right) = (0usize, 0usize, 0usize);
    for r in 0..n {
        if reviewed[r] {
            right += 1;
            continue;
        }
        let (class, confidence) = top_class(&probabilities[r * classes..(r + 1) * classes]);
        let ok = class == pile.truth[r] as usize;
        right += usize::from(ok);
        if confidence >= threshold {
            accepted += 1;
            accepted_right += usize::from(ok);
        }
    }
    row.pool_accuracy = right as f64 / n.max(1) as f64;
    row.auto_accepted_share = accepted as f64 / n.max(1) as f64;
    row.auto_accepted_accuracy = (accepted > 0).then(|| accepted_right as f64 / accepted as f64);
    row
}

/// The round data of `pile` with these labels.
fn data<'a>(
    pile: &TruePile<'a>,
    training: &'a [(usize, u32)],
    evidence: &'a [(usize, u32)],
) -> RoundData<'a> {
    RoundData {
        pixels: pile.pixels,
        width: pile.width,
        height: pile.height,
        class_names: pile.class_names,
        training,
        evidence,
    }
}
