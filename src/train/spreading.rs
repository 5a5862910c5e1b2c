//! Label spreading (Zhou et al., 2004) over a k-nearest-neighbour graph of feature vectors:
//! labels flow along the data's own neighbourhoods, which a classifier trained on a handful of
//! labels does not see.

use crate::model::linalg::{matmul, View};
use rayon::prelude::*;

/// Each row's `k` most similar other rows (cosine similarity, clipped at 0).
#[derive(Clone, Debug)]
pub struct KnnGraph {
    /// Neighbours per row.
    pub k: usize,
    /// `rows × k` pairs of (neighbour index, similarity).
    pub edges: Vec<(u32, f32)>,
}

/// Rows of similarities computed at once (rows × n floats of scratch).
const BLOCK: usize = 128;

/// Builds the cosine k-NN graph of `features` (`n × dim`, row-major).
pub fn knn_graph(features: &[f32], dim: usize, k: usize, threads: usize) -> KnnGraph {
    let n = features.len() / dim;
    let k = k.min(n.saturating_sub(1));
    let mut unit = features[..n * dim].to_vec();
    for row in unit.chunks_exact_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let mut edges = vec![(0u32, 0.0f32); n * k];
    let mut sims = vec![0.0f32; BLOCK * n];
    for start in (0..n).step_by(BLOCK) {
        let m = BLOCK.min(n - start);
        let block = View::new(&unit[start * dim..], m, dim);
        matmul(
            &mut sims,
            block,
            View::new(&unit, n, dim).t(),
            false,
            threads,
        );
        edges[start * k..(start + m) * k]
            .par_chunks_mut(k.max(1))
            .zip(sims[..m * n].par_chunks(n))
            .enumerate()
            .for_each(|(r, (out, row))| top_k(row, start + r, out));
    }
    KnnGraph { k, edges }
}

/// The `out.len()` largest entries of `row` other than `itself`, largest first.
fn top_k(row: &[f32], itself: usize, out: &mut [(u32, f32)]) {
    let k = out.len();
    if k == 0 {
        return;
    }
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    let mut floor = f32::NEG_INFINITY;
    for (j, &s) in row.iter().enumerate() {
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
    for (slot, &(s, j)) in out.iter_mut().zip(&best) {
        *slot = (j, s.max(0.0));
    }
}

/// Spreads one-hot labels of `labelled_rows` over the symmetrised graph for `iterations`
/// steps of `F ← α·S·F + (1-α)·Y` and returns one distribution per row (`n × classes`);
/// rows the labels never reach get the uniform distribution.
pub fn spread_labels(
    graph: &KnnGraph,
    labelled_rows: &[usize],
    labels: &[u32],
    classes: usize,
    alpha: f32,
    iterations: usize,
) -> Vec<f32> {
    let n = graph.edges.len() / graph.k.max(1);
    let mut degree = vec![0.0f32; n];
    for (i, row) in graph.edges.chunks_exact(graph.k.max(1)).enumerate() {
        for &(j, w) in row {
            degree[i] += w;
            degree[j as usize] += w;
        }
    }
    let mut seed = vec![0.0f32; n * classes];
    for (&row, &label) in labelled_rows.iter().zip(labels) {
        seed[row * classes + label as usize] = 1.0;
    }
    let mut f = seed.clone();
    let mut next = vec![0.0f32; n * classes];
    for _ in 0..iterations {
        next.fill(0.0);
        for (i, row) in graph.edges.chunks_exact(graph.k.max(1)).enumerate() {
            for &(j, w) in row {
                let j = j as usize;
                let s = w / (degree[i] * degree[j]).sqrt().max(1e-12);
                for c in 0..classes {
                    next[i * classes + c] += s * f[j * classes + c];
                    next[j * classes + c] += s * f[i * classes + c];
                }
            }
        }
        for ((v, &nv), &y) in f.iter_mut().zip(&next).zip(&seed) {
            *v = alpha * nv + (1.0 - alpha) * y;
        }
    }
    for row in f.chunks_exact_mut(classes) {
        let sum: f32 = row.iter().sum();
        if sum > 0.0 {
            row.iter_mut().for_each(|v| *v /= sum);
        } else {
            row.fill(1.0 / classes as f32);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_the_most_similar_other_rows() {
        // Four 2-d points: two near (1,0), two near (0,1).
        let f = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9];
        let g = knn_graph(&f, 2, 1, 1);
        let nearest: Vec<u32> = g.edges.iter().map(|e| e.0).collect();
        assert_eq!(nearest, vec![1, 0, 3, 2]);
    }

    #[test]
    fn spreading_carries_each_label_through_its_own_cluster() {
        // Two chains of points, one label at the end of each.
        let f = [
            1.0, 0.0, 0.95, 0.05, 0.9, 0.1, 0.0, 1.0, 0.05, 0.95, 0.1, 0.9,
        ];
        let g = knn_graph(&f, 2, 2, 1);
        let p = spread_labels(&g, &[0, 3], &[0, 1], 2, 0.99, 30);
        for i in 0..3 {
            assert!(
                p[i * 2] > p[i * 2 + 1],
                "row {i}: {:?}",
                &p[i * 2..i * 2 + 2]
            );
        }
        for i in 3..6 {
            assert!(
                p[i * 2 + 1] > p[i * 2],
                "row {i}: {:?}",
                &p[i * 2..i * 2 + 2]
            );
        }
    }
}
