//! Exact k-nearest neighbours of feature vectors: one blocked search (a block of rows times all
//! rows as one matrix product, then a top-k per row) serves every metric, so label spreading
//! (cosine) and t-SNE (Euclidean) rank neighbours the same way.

use crate::model::linalg::{matmul, View};
use rayon::prelude::*;

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

/// Rows scored against all others at once (rows × n floats of scratch).
const BLOCK: usize = 128;

/// Builds the exact k-NN graph of `features` (`n × dim` row-major, `dim > 0`; a trailing partial
/// row is ignored) under `metric`, with `threads` threads for the matrix products.
///
/// Every row's score against all rows comes from one matrix product per block of rows: the dot
/// product of unit rows for [`Metric::Cosine`], `2·a·b − |b|²` for [`Metric::Euclidean`] (which
/// orders b by |a − b| for a fixed a); the k best scores are kept. Euclidean distances of the
/// kept neighbours are then computed exactly from the rows. The result does not depend on
/// `threads`.
pub fn knn_graph(
    features: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    threads: usize,
) -> KnnGraph {
    let n = features.len() / dim;
    let k = k.min(n.saturating_sub(1));
    let mut rows = features[..n * dim].to_vec();
    let squared_norms: Vec<f32> = rows
        .chunks_exact(dim)
        .map(|row| row.iter().map(|v| v * v).sum())
        .collect();
    if metric == Metric::Cosine {
        for (row, &sq) in rows.chunks_exact_mut(dim).zip(&squared_norms) {
            let norm = sq.sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    let mut edges = vec![(0u32, 0.0f32); n * k];
    let mut scores = vec![0.0f32; BLOCK * n];
    for start in (0..n).step_by(BLOCK) {
        let m = BLOCK.min(n - start);
        let block = View::new(&rows[start * dim..], m, dim);
        matmul(
            &mut scores,
            block,
            View::new(&rows, n, dim).t(),
            false,
            threads,
        );
        let block_scores = &mut scores[..m * n];
        if metric == Metric::Euclidean {
            block_scores.par_chunks_mut(n).for_each(|row| {
                for (s, &sq) in row.iter_mut().zip(&squared_norms) {
                    *s = 2.0 * *s - sq;
                }
            });
        }
        edges[start * k..(start + m) * k]
            .par_chunks_mut(k.max(1))
            .zip(block_scores.par_chunks(n))
            .enumerate()
            .for_each(|(r, (out, row))| {
                let i = start + r;
                top_k(row, i, out);
                if metric == Metric::Euclidean {
                    exact_distances(&rows, dim, i, out);
                }
            });
    }
    KnnGraph { k, metric, edges }
}

/// Replaces the scores in `out` (row `i`'s chosen neighbours) by their exact Euclidean distances
/// and orders them nearest first, ties by index: the score `2·a·b − |b|²` ranks well but loses
/// digits to cancellation when turned back into a distance.
fn exact_distances(rows: &[f32], dim: usize, i: usize, out: &mut [(u32, f32)]) {
    let a = &rows[i * dim..(i + 1) * dim];
    for (j, value) in out.iter_mut() {
        let b = &rows[*j as usize * dim..(*j as usize + 1) * dim];
        *value = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    }
    out.sort_unstable_by(|p, q| p.1.total_cmp(&q.1).then(p.0.cmp(&q.0)));
    for (_, value) in out.iter_mut() {
        *value = value.sqrt();
    }
}

/// The `out.len()` largest entries of `row` other than `itself` as (index, score), largest
/// first; equal scores keep the lower index first.
fn top_k(row: &[f32], itself: usize, out: &mut [(u32, f32)]) {
    let k = out.len();
    if k == 0 {
        return;
    }
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    let mut floor = f32::NEG_INFINITY;
    // Once k scores are kept, almost every chunk lies wholly at or below the floor: its maximum
    // (a vectorised reduction) skips it without a branch per score.
    for (c, chunk) in row.chunks(SCAN_CHUNK).enumerate() {
        if chunk.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s)) <= floor {
            continue;
        }
        for (offset, &s) in chunk.iter().enumerate() {
            let j = c * SCAN_CHUNK + offset;
            if s <= floor || j == itself {
                continue;
            }
            let at = best.partition_point(|&(b, _)| b >= s);
            best.insert(at, (s, j as u32));
            if best.len() > k {
                best.pop();
            }
            if best.len() == k {
                floor = best[k - 1].0;
            }
        }
    }
    for (slot, &(s, j)) in out.iter_mut().zip(&best) {
        *slot = (j, s);
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
    fn k_is_capped_at_the_other_rows() {
        let g = knn_graph(&[0.0, 1.0, 3.0], 1, 5, Metric::Euclidean, 1);
        assert_eq!(g.k, 2);
        assert_eq!(
            g.edges,
            vec![(1, 1.0), (2, 3.0), (0, 1.0), (2, 2.0), (1, 2.0), (0, 3.0)]
        );
    }
}
