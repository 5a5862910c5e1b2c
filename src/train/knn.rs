//! k-nearest neighbours of feature vectors, for label spreading (cosine) and t-SNE (Euclidean).
//!
//! Two searches share one scoring (blocks of rows times candidate rows as one matrix product)
//! and one top-k, so they rank and value every pair alike: an exact one, a block of rows against
//! all rows (n² · dim), and an approximate one for large pools ([`knn_graph_approx`]: each row against the
//! rows of its nearest k-means clusters, about n^1.5 · dim). [`knn_graph`] picks by size.

use crate::model::linalg::{matmul, View};
use rayon::prelude::*;

mod approx;
pub mod bench;

pub use approx::{knn_graph_approx, ApproxKnn, ApproxStats};

/// How closeness between two feature vectors is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Cosine similarity (rows are scaled to unit length; all-zero rows are similar to nothing).
    /// Edge values are similarities in [-1, 1], most similar first.
    Cosine,
    /// Euclidean distance. Edge values are distances, nearest first.
    Euclidean,
}

/// Each row's `k` nearest other rows under one [`Metric`].
#[derive(Clone, Debug)]
pub struct KnnGraph {
    /// Neighbours per row (the requested k, capped at rows − 1).
    pub k: usize,
    /// The metric the edges were ranked and valued by.
    pub metric: Metric,
    /// `rows × k` pairs of (neighbour index, value), nearest first and ties broken by the lower
    /// index; the value is a cosine similarity or a Euclidean distance as [`Self::metric`] says.
    pub edges: Vec<(u32, f32)>,
}

impl KnnGraph {
    /// Number of rows the graph was built from (0 when `k` is 0).
    pub fn rows(&self) -> usize {
        self.edges.len() / self.k.max(1)
    }

    /// The neighbours of every row in turn, each as `k` (index, value) pairs.
    pub fn neighbours(&self) -> std::slice::ChunksExact<'_, (u32, f32)> {
        self.edges.chunks_exact(self.k.max(1))
    }
}

/// Scores compared with the current k-th best at once when looking for a row's neighbours.
const SCAN_CHUNK: usize = 32;

/// Products with fewer rows or columns than this are padded to it: gemm computes products of at
/// most 16 × 16 (and one-row or one-column ones) with other kernels that sum in another order.
const MIN_PRODUCT_SIDE: usize = 17;

/// Rows scored against all others at once (rows × n floats of scratch).
const BLOCK: usize = 128;

/// Above this many rows [`knn_graph`] builds the approximate graph
/// ([`knn_graph_approx`] with [`ApproxKnn::default`]); up to it, the exact one. At
/// Fashion-MNIST's 55,000 images exact search already takes about 6 s at 30 dimensions against
/// 0.5 s (recall 0.99), and the default pipeline builds 6–7 graphs; at 250,000 it takes
/// 2 minutes against 4 s (`docs/knn.md`). Small pools (digits, tests) stay exact.
pub const EXACT_UP_TO: usize = 20_000;

/// Builds the k-NN graph of `features` (`n × dim` row-major, `dim > 0`; a trailing partial row
/// is ignored) under `metric`, with `threads` threads.
///
/// Up to [`EXACT_UP_TO`] rows the graph is exact ([`knn_graph_exact`]); above, exact search
/// costs n² and the graph comes from [`knn_graph_approx`] with [`ApproxKnn::default`], which
/// found about 98% of the exact neighbours of learned features from 55,000 to 1,000,000 rows
/// (`docs/knn.md`). Either way the result does not depend on `threads`.
pub fn knn_graph(
    features: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    threads: usize,
) -> KnnGraph {
    if features.len() / dim <= EXACT_UP_TO {
        knn_graph_exact(features, dim, k, metric, threads)
    } else {
        knn_graph_approx(features, dim, k, metric, threads, &ApproxKnn::default()).0
    }
}

/// Rows ready to be scored against each other under one metric.
struct Scoring {
    metric: Metric,
    dim: usize,
    /// The rows, scaled to unit length for [`Metric::Cosine`] (all-zero rows stay zero).
    rows: Vec<f32>,
    /// |row|² of [`Self::rows`] (used by [`Metric::Euclidean`]).
    squared_norms: Vec<f32>,
}

impl Scoring {
    fn new(features: &[f32], dim: usize, metric: Metric) -> Self {
        let n = features.len() / dim;
        Self::in_order(features, dim, metric, 0..n)
    }

    /// The rows `order` of `features`, in that order.
    fn in_order(
        features: &[f32],
        dim: usize,
        metric: Metric,
        order: impl ExactSizeIterator<Item = usize>,
    ) -> Self {
        let mut rows = Vec::with_capacity(order.len() * dim);
        let mut squared_norms = Vec::with_capacity(order.len());
        for i in order {
            let row = &features[i * dim..(i + 1) * dim];
            match metric {
                Metric::Cosine => {
                    let norm = squared_norm(row).sqrt().max(1e-12);
                    let start = rows.len();
                    rows.extend(row.iter().map(|v| v / norm));
                    squared_norms.push(squared_norm(&rows[start..]));
                }
                Metric::Euclidean => {
                    rows.extend_from_slice(row);
                    squared_norms.push(squared_norm(row));
                }
            }
        }
        Self {
            metric,
            dim,
            rows,
            squared_norms,
        }
    }

    fn len(&self) -> usize {
        self.squared_norms.len()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }
}

fn squared_norm(row: &[f32]) -> f32 {
    row.iter().map(|v| v * v).sum()
}

/// `scores` (`m × candidates`) ← the score of each of `m` query rows against each candidate row
/// (both row-major with `dim` columns), larger meaning nearer: the dot product for
/// [`Metric::Cosine`] (unit rows), `2·a·b − |b|²` for [`Metric::Euclidean`] (which orders b by
/// |a − b| for a fixed a). `candidate_norms` holds |b|² (read only for Euclidean).
///
/// Every score is one fused multiply-add chain over the columns in order, whatever the block's
/// shape or thread count (for `dim` up to 512, which gemm never splits), so a pair scores the
/// same in the exact and the approximate search.
#[allow(clippy::too_many_arguments)]
fn score_block(
    scores: &mut [f32],
    queries: &[f32],
    m: usize,
    candidates: &[f32],
    candidate_norms: &[f32],
    dim: usize,
    metric: Metric,
    threads: usize,
) {
    let c = candidate_norms.len();
    if m.min(c) < MIN_PRODUCT_SIDE {
        // gemm sums small products (m·c ≤ 256, or one row or column) in another order: pad.
        let (m2, c2) = (m.max(MIN_PRODUCT_SIDE), c.max(MIN_PRODUCT_SIDE));
        let pad = |rows: &[f32], count: usize, to: usize| {
            let mut padded = rows[..count * dim].to_vec();
            padded.resize(to * dim, 0.0);
            padded
        };
        let (queries, candidates) = (pad(queries, m, m2), pad(candidates, c, c2));
        let mut padded = vec![0.0f32; m2 * c2];
        let (a, b) = (
            View::new(&queries, m2, dim),
            View::new(&candidates, c2, dim),
        );
        matmul(&mut padded, a, b.t(), false, threads);
        for (row, padded) in scores.chunks_mut(c).zip(padded.chunks(c2)).take(m) {
            row.copy_from_slice(&padded[..c]);
        }
    } else {
        let (a, b) = (View::new(queries, m, dim), View::new(candidates, c, dim));
        matmul(scores, a, b.t(), false, threads);
    }
    if metric == Metric::Euclidean {
        let adjust = |row: &mut [f32]| {
            for (s, &sq) in row.iter_mut().zip(candidate_norms) {
                *s = 2.0 * *s - sq;
            }
        };
        if threads > 1 {
            scores[..m * c].par_chunks_mut(c).for_each(adjust);
        } else {
            scores[..m * c].chunks_mut(c).for_each(adjust);
        }
    }
}

/// Builds the exact k-NN graph of `features` (`n × dim` row-major, `dim > 0`; a trailing partial
/// row is ignored) under `metric`, with `threads` threads for the matrix products.
///
/// Every row's score against all rows comes from one matrix product per block of rows: the dot
/// product of unit rows for [`Metric::Cosine`], `2·a·b − |b|²` for [`Metric::Euclidean`] (which
/// orders b by |a − b| for a fixed a); the k best scores are kept, ties to the lower index. Euclidean distances of the kept neighbours are
/// then computed exactly from the rows. Costs n² · dim multiply-adds and `128 · n` floats of
/// scratch. The result does not depend on `threads`.
pub fn knn_graph_exact(
    features: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    threads: usize,
) -> KnnGraph {
    let scoring = Scoring::new(features, dim, metric);
    let n = scoring.len();
    let k = k.min(n.saturating_sub(1));
    let queries: Vec<usize> = (0..n).collect();
    let edges = exact_neighbours(&scoring, &queries, k, threads);
    KnnGraph { k, metric, edges }
}

/// The exact `k` nearest neighbours (of all rows) of the rows `queries`, one row of the graph
/// per query in turn: what [`knn_graph_exact`] would give those rows, at `|queries| · n · dim`
/// multiply-adds. `k` is capped at rows − 1. Serves recall measurements of approximate graphs
/// too large to build exactly.
pub fn exact_neighbours_of(
    features: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    queries: &[usize],
    threads: usize,
) -> Vec<(u32, f32)> {
    let scoring = Scoring::new(features, dim, metric);
    let k = k.min(scoring.len().saturating_sub(1));
    exact_neighbours(&scoring, queries, k, threads)
}

fn exact_neighbours(
    scoring: &Scoring,
    queries: &[usize],
    k: usize,
    threads: usize,
) -> Vec<(u32, f32)> {
    let (n, dim) = (scoring.len(), scoring.dim);
    let mut edges = vec![(0u32, 0.0f32); queries.len() * k];
    if k == 0 {
        return edges;
    }
    let mut scores = vec![0.0f32; BLOCK.min(queries.len()) * n];
    let mut block_rows = Vec::with_capacity(BLOCK * dim);
    for (b, block) in queries.chunks(BLOCK).enumerate() {
        let m = block.len();
        block_rows.clear();
        block
            .iter()
            .for_each(|&i| block_rows.extend_from_slice(scoring.row(i)));
        score_block(
            &mut scores,
            &block_rows,
            m,
            &scoring.rows,
            &scoring.squared_norms,
            dim,
            scoring.metric,
            threads,
        );
        edges[b * BLOCK * k..(b * BLOCK + m) * k]
            .par_chunks_mut(k)
            .zip(scores[..m * n].par_chunks(n))
            .zip(block)
            .for_each(|((out, row), &i)| {
                let mut best = Best::new(k);
                best.offer(row, |j| j as u32, i as u32);
                best.write(out);
                if scoring.metric == Metric::Euclidean {
                    exact_distances(scoring.row(i), |j| scoring.row(j as usize), out);
                }
            });
    }
    edges
}

/// Replaces the scores in `out` (row `i`'s chosen neighbours) by their exact Euclidean distances
/// and orders them nearest first, ties by index: the score `2·a·b − |b|²` ranks well but loses
/// digits to cancellation when turned back into a distance.
fn exact_distances<'a>(a: &[f32], row_of: impl Fn(u32) -> &'a [f32], out: &mut [(u32, f32)]) {
    for (j, value) in out.iter_mut() {
        let b = row_of(*j);
        *value = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    }
    out.sort_unstable_by(|p, q| p.1.total_cmp(&q.1).then(p.0.cmp(&q.0)));
    for (_, value) in out.iter_mut() {
        *value = value.sqrt();
    }
}

/// The largest of `chunk` (NaN ignored), kept in eight lanes so that it compiles to vector
/// maxima.
fn chunk_max(chunk: &[f32]) -> f32 {
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut eights = chunk.chunks_exact(8);
    for eight in &mut eights {
        for (lane, &s) in lanes.iter_mut().zip(eight) {
            *lane = larger(*lane, s);
        }
    }
    let rest = eights
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &s| larger(m, s));
    lanes.iter().fold(rest, |m, &l| larger(m, l))
}

/// The best `k` (score, index) pairs offered so far: higher score first, and the lower index
/// first on equal scores. Being a total order, the result does not depend on the order in
/// which candidates are offered.
struct Best {
    k: usize,
    kept: Vec<(f32, u32)>,
}

impl Best {
    fn new(k: usize) -> Self {
        Self {
            k,
            kept: Vec::with_capacity(k + 1),
        }
    }

    /// Offers `scores`, the score of candidate `index_of(p)` at position `p`, except `itself`.
    fn offer(&mut self, scores: &[f32], index_of: impl Fn(usize) -> u32, itself: u32) {
        let k = self.k;
        if k == 0 {
            return;
        }
        let ahead = |a: (f32, u32), b: (f32, u32)| a.0 > b.0 || (a.0 == b.0 && a.1 < b.1);
        let mut floor = self.floor();
        // Once k scores are kept, almost every chunk lies wholly below the floor: its maximum
        // (a vectorised reduction) skips it without a branch per score.
        for (c, chunk) in scores.chunks(SCAN_CHUNK).enumerate() {
            if chunk_max(chunk) < floor.0 {
                continue;
            }
            for (offset, &s) in chunk.iter().enumerate() {
                if s < floor.0 {
                    continue;
                }
                let j = index_of(c * SCAN_CHUNK + offset);
                if j == itself || (self.kept.len() == k && !ahead((s, j), floor)) {
                    continue;
                }
                let at = self.kept.partition_point(|&b| ahead(b, (s, j)));
                self.kept.insert(at, (s, j));
                self.kept.truncate(k);
                floor = self.floor();
            }
        }
    }

    /// The entry a candidate must beat once `k` are kept (nothing to beat before).
    fn floor(&self) -> (f32, u32) {
        match self.kept.len() == self.k {
            true => self.kept[self.k - 1],
            false => (f32::NEG_INFINITY, u32::MAX),
        }
    }

    /// Writes the kept pairs into `out` as (index, score), best first.
    fn write(&self, out: &mut [(u32, f32)]) {
        for (slot, &(s, j)) in out.iter_mut().zip(&self.kept) {
            *slot = (j, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_neighbours_are_the_most_similar_other_rows() {
        // Four 2-d points: two near (1,0), two near (0,1).
        let f = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9];
        let g = knn_graph(&f, 2, 1, Metric::Cosine, 1);
        let nearest: Vec<u32> = g.edges.iter().map(|e| e.0).collect();
        assert_eq!(nearest, vec![1, 0, 3, 2]);
        assert_eq!(g.rows(), 4);
    }

    #[test]
    fn euclidean_neighbours_match_brute_force_with_distances() {
        // 300 points (more than one block) on a coarse grid, so ties occur and are broken by index.
        let (n, dim, k) = (300, 3, 7);
        let features: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 7919) % 11) as f32 * 0.5)
            .collect();
        let g = knn_graph(&features, dim, k, Metric::Euclidean, 2);
        assert_eq!((g.k, g.rows()), (k, n));
        let rows: Vec<&[f32]> = features.chunks_exact(dim).collect();
        for (i, found) in g.neighbours().enumerate() {
            let mut all: Vec<(f32, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let d2: f32 = rows[i]
                        .iter()
                        .zip(rows[j])
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum();
                    (d2, j)
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (&(j, d), &(d2, want)) in found.iter().zip(&all) {
                assert_eq!(j as usize, want, "row {i}: {found:?}");
                assert!(
                    (d - d2.sqrt()).abs() < 1e-3,
                    "row {i}: {d} vs {}",
                    d2.sqrt()
                );
            }
        }
    }

    #[test]
    fn the_graph_is_exact_up_to_the_limit_and_approximate_above() {
        // Pseudo-random 8-d points, as many as the limit, then one more row.
        let dim = 8;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut value = |_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let above: Vec<f32> = (0..(EXACT_UP_TO + 1) * dim).map(&mut value).collect();
        let at = &above[..EXACT_UP_TO * dim];
        let graph = |f: &[f32]| knn_graph(f, dim, 5, Metric::Cosine, 2).edges;
        assert_eq!(
            graph(at),
            knn_graph_exact(at, dim, 5, Metric::Cosine, 2).edges
        );
        let approx = knn_graph_approx(&above, dim, 5, Metric::Cosine, 2, &ApproxKnn::default());
        let exact = knn_graph_exact(&above, dim, 5, Metric::Cosine, 2).edges;
        assert_eq!(graph(&above), approx.0.edges);
        assert_ne!(
            approx.0.edges, exact,
            "the data should tell the two searches apart"
        );
    }

    #[test]
    fn k_is_capped_at_the_other_rows() {
        let g = knn_graph(&[0.0, 1.0, 3.0], 1, 5, Metric::Euclidean, 1);
        assert_eq!(g.k, 2);
        assert_eq!(
            g.edges,
            vec![(1, 1.0), (2, 3.0), (0, 1.0), (2, 2.0), (1, 2.0), (0, 3.0)]
        );
    }
}
