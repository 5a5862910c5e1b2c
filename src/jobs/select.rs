//! Which items people should label next. Every human label is a cost, so a pick must either
//! fix an item the model has wrong, teach the model a region it is unsure of, or judge the
//! auto-accept threshold honestly:
//!
//! - **First batch** (no model yet): typical points that cover the pile — k-means over the
//!   codes of an autoencoder pretrained on the job's own images, and from each cluster the
//!   item nearest its centre, biggest clusters first (the idea of TypiClust / ProbCover).
//! - **Later rounds** (`Loop`): the model's least certain items (smallest margin between its
//!   two likeliest classes), spread out by k-means over its features so a batch does not
//!   spend many labels on one confusing spot, most uncertain first.
//! - **Evidence**: in every loop batch a random slice of the unreviewed items, interleaved
//!   through the order. Those labels judge the threshold and never train, so the threshold is
//!   judged on the population it faces.

use crate::model::linalg::{matmul, View};
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Share of a loop batch drawn at random as threshold evidence.
pub const EVIDENCE_SHARE: f64 = 0.1;

/// Uncertain candidates considered per pick: the batch's clusters are formed among this many
/// times more of the least certain items than it takes.
pub const CANDIDATES_PER_PICK: usize = 4;

/// k-means iterations (Lloyd); the assignment barely moves after a handful.
const KMEANS_ITERATIONS: usize = 8;

/// How items are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pick {
    /// The loop's strategy: typical points first, then diverse uncertain items, with a random
    /// evidence slice in every batch.
    Loop,
    /// Least certain first (smallest margin between the two likeliest classes).
    Uncertain,
    /// Typical points of clusters of every unreviewed item.
    Diverse,
    /// A uniform random sample.
    Random,
}

impl Pick {
    /// Every strategy, with the name the CLI uses.
    pub const ALL: [(Pick, &'static str); 4] = [
        (Pick::Loop, "loop"),
        (Pick::Uncertain, "uncertain"),
        (Pick::Diverse, "diverse"),
        (Pick::Random, "random"),
    ];

    /// The strategy's name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("loop", |(_, n)| n)
    }
}

/// Why an item was picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Near the centre of a cluster of the pile (first batch, or `Diverse`).
    Typical,
    /// The model is unsure of it.
    Uncertain,
    /// Drawn at random (`Random`).
    Random,
    /// Drawn at random to judge the threshold; it never trains.
    Evidence,
}

impl Reason {
    /// The name `NextItems` answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Typical => "typical",
            Reason::Uncertain => "uncertain",
            Reason::Random => "random",
            Reason::Evidence => "evidence",
        }
    }
}

/// What a selection looks at: the unreviewed items' features and, once a model labelled them,
/// its probabilities. Rows are candidates; the answer indexes them.
#[derive(Clone, Copy, Debug)]
pub struct Candidates<'a> {
    /// `rows × dim` features (autoencoder codes, or the classifier's last hidden layer).
    pub features: &'a [f32],
    /// Feature width.
    pub dim: usize,
    /// `rows × classes` probabilities of the job's current model (`None`: no model yet).
    pub probabilities: Option<&'a [f32]>,
    /// Class count of `probabilities`.
    pub classes: usize,
}

impl Candidates<'_> {
    /// Number of candidate items.
    pub fn len(&self) -> usize {
        self.features.len() / self.dim.max(1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Margin between the two likeliest classes of row `r` (0: torn between two; 1: sure).
    fn margin(&self, r: usize) -> f32 {
        let Some(p) = self.probabilities else {
            return 1.0;
        };
        let row = &p[r * self.classes..(r + 1) * self.classes];
        let (mut first, mut second) = (0.0f32, 0.0f32);
        for &v in row {
            if v > first {
                second = first;
                first = v;
            } else if v > second {
                second = v;
            }
        }
        first - second
    }
}

/// Up to `n` candidates in the order people should label them, each with why; deterministic
/// for a seed. `threads` bound the distance products.
pub fn select(
    candidates: &Candidates<'_>,
    n: usize,
    pick: Pick,
    seed: u64,
    threads: usize,
) -> Vec<(usize, Reason)> {
    let total = candidates.len();
    let n = n.min(total);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    if n == 0 {
        return Vec::new();
    }
    let all: Vec<usize> = (0..total).collect();
    match pick {
        Pick::Random => random_sample(&all, n, &mut rng)
            .into_iter()
            .map(|r| (r, Reason::Random))
            .collect(),
        Pick::Uncertain => least_certain(candidates, &all, n)
            .into_iter()
            .map(|r| (r, Reason::Uncertain))
            .collect(),
        Pick::Diverse => typical(candidates, &all, n, &mut rng, threads)
            .into_iter()
            .map(|r| (r, Reason::Typical))
            .collect(),
        Pick::Loop => {
            let evidence_n = ((n as f64 * EVIDENCE_SHARE).round() as usize).min(n);
            let evidence = random_sample(&all, evidence_n, &mut rng);
            let mut taken = vec![false; total];
            evidence.iter().for_each(|&r| taken[r] = true);
            let rest: Vec<usize> = all.into_iter().filter(|&r| !taken[r]).collect();
            let informative = match candidates.probabilities {
                None => typical(candidates, &rest, n - evidence_n, &mut rng, threads)
                    .into_iter()
                    .map(|r| (r, Reason::Typical))
                    .collect(),
                Some(_) => diverse_uncertain(candidates, &rest, n - evidence_n, &mut rng, threads)
                    .into_iter()
                    .map(|r| (r, Reason::Uncertain))
                    .collect(),
            };
            interleave(
                informative,
                evidence.into_iter().map(|r| (r, Reason::Evidence)).collect(),
            )
        }
    }
}

/// `a` with `b` spread evenly through it, so that any prefix holds its share of both.
fn interleave(a: Vec<(usize, Reason)>, b: Vec<(usize, Reason)>) -> Vec<(usize, Reason)> {
    let total = a.len() + b.len();
    let mut out = Vec::with_capacity(total);
    let (mut ia, mut ib) = (a.into_iter(), b.into_iter().peekable());
    let b_len = ib.len();
    for position in 0..total {
        // Take from `b` whenever it has fallen behind its share of the positions so far.
        let due = (position + 1) * b_len / total.max(1);
        let next = if out.iter().filter(|(_, r)| *r == Reason::Evidence).count() < due {
            ib.next().or_else(|| ia.next())
        } else {
            ia.next().or_else(|| ib.next())
        };
        out.extend(next);
    }
    out
}

/// `n` distinct rows of `rows` drawn uniformly.
fn random_sample(rows: &[usize], n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    rows.choose_multiple(rng, n.min(rows.len()))
        .copied()
        .collect()
}

/// The `n` rows of `rows` with the smallest margin, least certain first (ties: lower row).
fn least_certain(c: &Candidates<'_>, rows: &[usize], n: usize) -> Vec<usize> {
    let mut by_margin: Vec<(f32, usize)> = rows.iter().map(|&r| (c.margin(r), r)).collect();
    let n = n.min(by_margin.len());
    if n < by_margin.len() {
        by_margin.select_nth_unstable_by(n, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        by_margin.truncate(n);
    }
    by_margin.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    by_margin.into_iter().map(|(_, r)| r).collect()
}

/// `n` diverse uncertain rows: the `CANDIDATES_PER_PICK · n` least certain, clustered into
/// `n` groups; the least certain of each group, least certain first.
fn diverse_uncertain(
    c: &Candidates<'_>,
    rows: &[usize],
    n: usize,
    rng: &mut ChaCha8Rng,
    threads: usize,
) -> Vec<usize> {
    let pool = least_certain(c, rows, n.saturating_mul(CANDIDATES_PER_PICK));
    if pool.len() <= n {
        return pool;
    }
    let assignment = kmeans(c, &pool, n, rng, threads).assignment;
    // `pool` is least certain first, so the first member met of each cluster is its pick.
    let mut seen = vec![false; n];
    let mut picks = Vec::with_capacity(n);
    for (&row, &cluster) in pool.iter().zip(&assignment) {
        if !seen[cluster] {
            seen[cluster] = true;
            picks.push(row);
        }
    }
    // Empty clusters leave room: fill it with the least certain rows not yet picked.
    let mut taken: std::collections::HashSet<usize> = picks.iter().copied().collect();
    for &row in &pool {
        if picks.len() >= n {
            break;
        }
        if taken.insert(row) {
            picks.push(row);
        }
    }
    let order: std::collections::HashMap<usize, usize> =
        pool.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    picks.sort_by_key(|r| order[r]);
    picks
}

/// `n` typical rows: `rows` clustered into `n` groups, from each the row nearest its centre,
/// biggest groups first.
fn typical(
    c: &Candidates<'_>,
    rows: &[usize],
    n: usize,
    rng: &mut ChaCha8Rng,
    threads: usize,
) -> Vec<usize> {
    if rows.len() <= n {
        return rows.to_vec();
    }
    let km = kmeans(c, rows, n, rng, threads);
    let mut best: Vec<Option<(f32, usize)>> = vec![None; n];
    let mut size = vec![0usize; n];
    for (i, (&cluster, &d)) in km.assignment.iter().zip(&km.distance).enumerate() {
        size[cluster] += 1;
        if best[cluster].is_none_or(|(bd, _)| d < bd) {
            best[cluster] = Some((d, rows[i]));
        }
    }
    let mut picks: Vec<(usize, usize)> = best
        .iter()
        .enumerate()
        .filter_map(|(k, b)| b.map(|(_, r)| (size[k], r)))
        .collect();
    picks.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut out: Vec<usize> = picks.into_iter().map(|(_, r)| r).collect();
    // Clusters that ended empty: fill with random rows not yet taken.
    if out.len() < n {
        let taken: std::collections::HashSet<usize> = out.iter().copied().collect();
        let rest: Vec<usize> = rows.iter().copied().filter(|r| !taken.contains(r)).collect();
        out.extend(random_sample(&rest, n - out.len(), rng));
    }
    out
}

/// A clustering of some candidate rows.
struct Clusters {
    /// Cluster of each row, in the order the rows were given.
    assignment: Vec<usize>,
    /// Squared distance of each row to its cluster's centre.
    distance: Vec<f32>,
}

/// Lloyd's k-means of `rows`' features into `k` clusters, started from `k` random rows.
/// Distances come from one matrix product per iteration (‖x‖² − 2 x·c + ‖c‖²).
fn kmeans(c: &Candidates<'_>, rows: &[usize], k: usize, rng: &mut ChaCha8Rng, threads: usize) -> Clusters {
    let dim = c.dim;
    let m = rows.len();
    let k = k.clamp(1, m.max(1));
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&r| c.features[r * dim..(r + 1) * dim].iter().copied())
        .collect();
    let x_norm: Vec<f32> = x.chunks_exact(dim).map(|v| v.iter().map(|a| a * a).sum()).collect();
    let mut centres: Vec<f32> = random_sample(&(0..m).collect::<Vec<_>>(), k, rng)
        .into_iter()
        .flat_map(|i| x[i * dim..(i + 1) * dim].to_vec())
        .collect();
    let mut assignment = vec![0usize; m];
    let mut distance = vec![0f32; m];
    let mut dots = vec![0f32; m * k];
    for iteration in 0..=KMEANS_ITERATIONS {
        matmul(
            &mut dots,
            View::new(&x, m, dim),
            View::new(&centres, k, dim).t(),
            false,
            threads,
        );
        let c_norm: Vec<f32> = centres
            .chunks_exact(dim)
            .map(|v| v.iter().map(|a| a * a).sum())
            .collect();
        for i in 0..m {
            let row = &dots[i * k..(i + 1) * k];
            let (mut best, mut best_d) = (0, f32::INFINITY);
            for (j, (&dot, &cn)) in row.iter().zip(&c_norm).enumerate() {
                let d = x_norm[i] - 2.0 * dot + cn;
                if d < best_d {
                    best = j;
                    best_d = d;
                }
            }
            assignment[i] = best;
            distance[i] = best_d.max(0.0);
        }
        if iteration == KMEANS_ITERATIONS {
            break;
        }
        let mut sums = vec![0f32; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &a) in assignment.iter().enumerate() {
            counts[a] += 1;
            for (s, v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(&x[i * dim..(i + 1) * dim]) {
                *s += v;
            }
        }
        for (j, &count) in counts.iter().enumerate() {
            // An empty cluster keeps its centre.
            if count > 0 {
                for (cv, s) in centres[j * dim..(j + 1) * dim]
                    .iter_mut()
                    .zip(&sums[j * dim..(j + 1) * dim])
                {
                    *cv = s / count as f32;
                }
            }
        }
    }
    Clusters {
        assignment,
        distance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three tight groups of 2-d points: 60 near (0,0), 30 near (10,0), 10 near (0,10).
    fn groups() -> Vec<f32> {
        let mut f = Vec::new();
        for (centre, count) in [((0.0, 0.0), 60), ((10.0, 0.0), 30), ((0.0, 10.0), 10)] {
            for i in 0..count {
                let jitter = (i % 7) as f32 * 0.01;
                f.extend([centre.0 + jitter, centre.1 - jitter]);
            }
        }
        f
    }

    #[test]
    fn typical_picks_cover_every_group_biggest_first() {
        let f = groups();
        let c = Candidates {
            features: &f,
            dim: 2,
            probabilities: None,
            classes: 0,
        };
        let picks = select(&c, 3, Pick::Diverse, 1, 1);
        let group = |r: usize| if r < 60 { 0 } else if r < 90 { 1 } else { 2 };
        let groups: Vec<usize> = picks.iter().map(|&(r, _)| group(r)).collect();
        assert_eq!(groups, vec![0, 1, 2]);
    }

    #[test]
    fn loop_batches_interleave_a_random_evidence_slice() {
        let f = groups();
        let probs: Vec<f32> = (0..100)
            .flat_map(|i| {
                let p = 0.5 + 0.005 * i as f32;
                [p, 1.0 - p]
            })
            .collect();
        let c = Candidates {
            features: &f,
            dim: 2,
            probabilities: Some(&probs),
            classes: 2,
        };
        let picks = select(&c, 20, Pick::Loop, 3, 1);
        assert_eq!(picks.len(), 20);
        let evidence: Vec<usize> = picks
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| *r == Reason::Evidence)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(evidence.len(), 2);
        // Spread through the order, not bunched at one end.
        assert!(evidence[0] < 10 && evidence[1] >= 10, "{evidence:?}");
        let distinct: std::collections::HashSet<usize> = picks.iter().map(|p| p.0).collect();
        assert_eq!(distinct.len(), 20);
    }

    #[test]
    fn uncertain_is_smallest_margin_first() {
        let f = vec![0.0; 8];
        let probs = [0.9, 0.1, 0.55, 0.45, 0.7, 0.3, 0.5, 0.5];
        let c = Candidates {
            features: &f,
            dim: 2,
            probabilities: Some(&probs),
            classes: 2,
        };
        let picks: Vec<usize> = select(&c, 3, Pick::Uncertain, 0, 1)
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(picks, vec![3, 1, 2]);
    }
}
