//! Label spreading (Zhou et al., 2004) over a k-nearest-neighbour graph of feature vectors:
//! labels flow along the data's own neighbourhoods, which a classifier trained on a handful of
//! labels does not see.

use crate::train::knn::KnnGraph;

/// Spreads one-hot labels of `labelled_rows` over the symmetrised graph for `iterations`
/// steps of `F ← α·S·F + (1-α)·Y` and returns one distribution per row (`n × classes`);
/// rows the labels never reach get the uniform distribution.
///
/// `graph` should be a [`Metric::Cosine`](crate::train::knn::Metric::Cosine) graph: edge
/// weights are its similarities clipped at 0, so dissimilar neighbours carry no label.
pub fn spread_labels(
    graph: &KnnGraph,
    labelled_rows: &[usize],
    labels: &[u32],
    classes: usize,
    alpha: f32,
    iterations: usize,
) -> Vec<f32> {
    let n = graph.rows();
    let weight = |similarity: f32| similarity.max(0.0);
    let mut degree = vec![0.0f32; n];
    for (i, row) in graph.neighbours().enumerate() {
        for &(j, similarity) in row {
            let w = weight(similarity);
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
        for (i, row) in graph.neighbours().enumerate() {
            for &(j, similarity) in row {
                let j = j as usize;
                let s = weight(similarity) / (degree[i] * degree[j]).sqrt().max(1e-12);
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
    use crate::train::knn::{knn_graph, Metric};

    #[test]
    fn spreading_carries_each_label_through_its_own_cluster() {
        // Two chains of points, one label at the end of each.
        let f = [
            1.0, 0.0, 0.95, 0.05, 0.9, 0.1, 0.0, 1.0, 0.05, 0.95, 0.1, 0.9,
        ];
        let g = knn_graph(&f, 2, 2, Metric::Cosine, 1);
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
