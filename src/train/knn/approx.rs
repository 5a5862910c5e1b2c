//! Approximate k-NN for pools too large for the exact n² search: an inverted file over k-means
//! clusters (IVF). Every row is compared only with the rows of the `probe` clusters whose
//! centroids lie nearest to it. The rows of one cluster are searched together: for each cluster
//! some of them probe, those rows are scored against its rows in cache-sized matrix products,
//! and each keeps its k best exactly as the exact search does.
//!
//! With about √n clusters of about √n rows, each row meets about `probe · √n` others, so the
//! graph costs about `probe · n^1.5 · dim` multiply-adds instead of `n² · dim`, plus
//! `n^1.5 · dim` to find each row's nearest centroids.

use super::{exact_distances, score_block, Best, KnnGraph, Metric, Scoring};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

/// Queries scored at once against one tile of candidates.
const QUERY_TILE: usize = 64;

/// Candidates scored at once: `QUERY_TILE × CANDIDATE_TILE` scores (256 KiB) stay in cache
/// between the product that writes them and the top-k scan that reads them.
const CANDIDATE_TILE: usize = 1024;

/// Rows assigned to centroids at once.
const ASSIGN_BLOCK: usize = 512;

/// How the approximate search trades time for recall.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApproxKnn {
    /// Clusters (inverted lists); 0 picks ⌈√n⌉.
    pub clusters: usize,
    /// Clusters each row is compared with: those of its nearest centroids (every cluster when
    /// these hold fewer than k + 1 rows). Probing every cluster gives the exact graph.
    pub probe: usize,
    /// Rows of the k-means sample per cluster (the sample is capped at all rows).
    pub sample_per_cluster: usize,
    /// Lloyd iterations on the sample.
    pub iterations: usize,
    /// Seed of the sample, whose first rows are also the starting centroids.
    pub seed: u64,
}

impl Default for ApproxKnn {
    /// The setting [`knn_graph`](super::knn_graph) uses above
    /// [`EXACT_UP_TO`](super::EXACT_UP_TO) rows (chosen in `docs/knn.md`).
    fn default() -> Self {
        Self {
            clusters: 0,
            probe: 6,
            sample_per_cluster: 32,
            iterations: 6,
            seed: 0x006b_6e6e,
        }
    }
}

/// What one approximate build did and needed, for benchmarks.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApproxStats {
    /// Clusters used.
    pub clusters: usize,
    /// Rows in the largest cluster.
    pub largest_cluster: usize,
    /// Query–candidate scores computed (n² for the exact graph).
    pub scored_pairs: u64,
    /// Rows compared with every row because their probed clusters held fewer than k + 1.
    pub rows_searched_exactly: usize,
    /// Seconds spent on k-means and finding each row's nearest centroids.
    pub seconds_clustering: f64,
    /// Seconds spent scoring rows against their candidates.
    pub seconds_search: f64,
    /// Scratch of the `threads` largest cluster searches (which may run at once), bytes.
    pub peak_search_scratch_bytes: usize,
    /// Estimate of everything allocated at once at the peak: the scaled copy of the rows, the
    /// index, the edges and [`Self::peak_search_scratch_bytes`], bytes.
    pub peak_bytes: usize,
}

/// Builds an approximate k-NN graph of `features` (`n × dim` row-major, `dim > 0`; a trailing
/// partial row is ignored) under `metric`, with `threads` threads: each row's neighbours are its
/// `k` best among the rows of the [`ApproxKnn::probe`] clusters nearest to it (see the module
/// docs). Scores and ties are the exact search's, so a neighbour found has the value the exact
/// graph gives it, and probing every cluster gives the exact graph.
///
/// Deterministic: the clusters come from a seeded sample, every score is computed the same way
/// on any thread, and the k best under a total order do not depend on the order in which they
/// were found; the graph does not depend on `threads`. Memory beyond the graph and a copy of the
/// rows is the searches' scratch (see [`ApproxStats`]), never n².
pub fn knn_graph_approx(
    features: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    threads: usize,
    params: &ApproxKnn,
) -> (KnnGraph, ApproxStats) {
    let build = || build(features, dim, k, metric, threads, params);
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(build),
        Err(_) => build(),
    }
}

fn build(
    features: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    threads: usize,
    params: &ApproxKnn,
) -> (KnnGraph, ApproxStats) {
    let n = features.len() / dim;
    let k = k.min(n.saturating_sub(1));
    let mut stats = ApproxStats::default();
    if k == 0 {
        let graph = KnnGraph {
            k,
            metric,
            edges: Vec::new(),
        };
        return (graph, stats);
    }
    let started = std::time::Instant::now();
    let count = match params.clusters {
        0 => (n as f64).sqrt().ceil() as usize,
        c => c,
    }
    .clamp(1, n);
    let index = Index::new(features, dim, metric, count, params);
    stats.seconds_clustering = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    // Largest clusters first, so that no long search starts last.
    let mut order: Vec<usize> = (0..count).filter(|&c| index.len(c) > 0).collect();
    order.sort_by_key(|&c| (std::cmp::Reverse(index.len(c)), c));
    let searches: Vec<Search> = order
        .par_iter()
        .map(|&c| search_cluster(&index, c, k))
        .collect();
    let mut edges = vec![(0u32, 0.0f32); n * k];
    for (&c, search) in order.iter().zip(&searches) {
        let rows = &index.original[index.starts[c]..index.starts[c + 1]];
        for (&i, found) in rows.iter().zip(search.found.chunks_exact(k)) {
            edges[i as usize * k..(i as usize + 1) * k].copy_from_slice(found);
        }
    }
    stats.seconds_search = started.elapsed().as_secs_f64();
    stats.clusters = count;
    stats.largest_cluster = order.first().map_or(0, |&c| index.len(c));
    stats.scored_pairs = searches.iter().map(|s| s.scored_pairs).sum();
    stats.rows_searched_exactly = searches.iter().map(|s| s.searched_exactly).sum();
    let mut scratch: Vec<usize> = searches.iter().map(|s| s.scratch_bytes).collect();
    scratch.sort_unstable_by(|a, b| b.cmp(a));
    stats.peak_search_scratch_bytes = scratch.iter().take(threads.max(1)).sum();
    let f32s = std::mem::size_of::<f32>();
    stats.peak_bytes = n * (dim + 1) * f32s // the scaled rows and their norms
        + (2 + index.probe) * n * f32s // row order, its inverse, nearest clusters
        + 2 * n * k * std::mem::size_of::<(u32, f32)>() // per-cluster results and the graph
        + stats.peak_search_scratch_bytes;
    (KnnGraph { k, metric, edges }, stats)
}

/// The inverted file: the rows in cluster order, and each row's nearest clusters.
struct Index {
    /// The scaled rows, cluster by cluster (ascending row index within a cluster).
    scoring: Scoring,
    /// Where each cluster's rows start in [`Self::scoring`] (one more entry than clusters).
    starts: Vec<usize>,
    /// The row index of each position of [`Self::scoring`].
    original: Vec<u32>,
    /// The position of each row in [`Self::scoring`].
    position: Vec<u32>,
    /// Each row's `probe` nearest clusters, nearest (its own) first; by row index.
    nearest: Vec<u32>,
    probe: usize,
}

impl Index {
    fn new(features: &[f32], dim: usize, metric: Metric, count: usize, params: &ApproxKnn) -> Self {
        let probe = params.probe.clamp(1, count);
        let nearest = {
            let scoring = Scoring::new(features, dim, metric);
            let centroids = Centroids::train(&scoring, count, params);
            centroids.nearest(&scoring.rows, dim, probe)
        };
        let mut starts = vec![0usize; count + 1];
        for row in nearest.chunks_exact(probe) {
            starts[row[0] as usize + 1] += 1;
        }
        for c in 0..count {
            starts[c + 1] += starts[c];
        }
        let mut next = starts.clone();
        let mut original = vec![0u32; nearest.len() / probe];
        let mut position = vec![0u32; original.len()];
        for (i, row) in nearest.chunks_exact(probe).enumerate() {
            let c = row[0] as usize;
            original[next[c]] = i as u32;
            position[i] = next[c] as u32;
            next[c] += 1;
        }
        let order = original.iter().map(|&i| i as usize);
        let scoring = Scoring::in_order(features, dim, metric, order);
        Self {
            scoring,
            starts,
            original,
            position,
            nearest,
            probe,
        }
    }

    fn len(&self, cluster: usize) -> usize {
        self.starts[cluster + 1] - self.starts[cluster]
    }

    /// Positions of `cluster`'s rows.
    fn span(&self, cluster: usize) -> std::ops::Range<usize> {
        self.starts[cluster]..self.starts[cluster + 1]
    }
}

/// One cluster's search: its rows' neighbours and what it cost.
struct Search {
    /// `k` neighbours of each of the cluster's rows, in the cluster's order.
    found: Vec<(u32, f32)>,
    scored_pairs: u64,
    searched_exactly: usize,
    scratch_bytes: usize,
}

/// The `k` nearest neighbours of each row of `cluster` among the rows of its probed clusters
/// (of every cluster when those hold fewer than k + 1 rows).
fn search_cluster(index: &Index, cluster: usize, k: usize) -> Search {
    let scoring = &index.scoring;
    let dim = scoring.dim;
    let span = index.span(cluster);
    let clusters = index.starts.len() - 1;
    // (probed cluster, query position within this cluster), grouped by probed cluster.
    let mut visits: Vec<(u32, u32)> = Vec::with_capacity(span.len() * index.probe);
    let mut searched_exactly = 0;
    for (q, &i) in index.original[span.clone()].iter().enumerate() {
        let probed = &index.nearest[i as usize * index.probe..(i as usize + 1) * index.probe];
        let held: usize = probed.iter().map(|&c| index.len(c as usize)).sum();
        if held > k {
            visits.extend(probed.iter().map(|&c| (c, q as u32)));
        } else {
            searched_exactly += 1;
            visits.extend((0..clusters as u32).map(|c| (c, q as u32)));
        }
    }
    // The own cluster first: its rows set a high floor that most other scores then fall below.
    visits.sort_unstable_by_key(|&(c, q)| (c != cluster as u32, c, q));
    let mut best: Vec<Best> = (0..span.len()).map(|_| Best::new(k)).collect();
    let mut scores = vec![0.0f32; QUERY_TILE * CANDIDATE_TILE];
    let mut tile_rows = Vec::with_capacity(QUERY_TILE * dim);
    let mut scored_pairs = 0u64;
    for group in visits.chunk_by(|a, b| a.0 == b.0) {
        let candidates = index.span(group[0].0 as usize);
        scored_pairs += (group.len() * candidates.len()) as u64;
        for tile in group.chunks(QUERY_TILE) {
            let m = tile.len();
            tile_rows.clear();
            for &(_, q) in tile {
                tile_rows.extend_from_slice(scoring.row(span.start + q as usize));
            }
            for from in candidates.clone().step_by(CANDIDATE_TILE) {
                let to = (from + CANDIDATE_TILE).min(candidates.end);
                let rows = &scoring.rows[from * dim..to * dim];
                let norms = &scoring.squared_norms[from..to];
                let metric = scoring.metric;
                score_block(&mut scores, &tile_rows, m, rows, norms, dim, metric, 1);
                let originals = &index.original[from..to];
                for (&(_, q), row) in tile.iter().zip(scores.chunks(to - from)) {
                    let itself = index.original[span.start + q as usize];
                    best[q as usize].offer(row, |p| originals[p], itself);
                }
            }
        }
    }
    let mut found = vec![(0u32, 0.0f32); span.len() * k];
    for ((best, found), &i) in best
        .iter()
        .zip(found.chunks_mut(k))
        .zip(&index.original[span])
    {
        best.write(found);
        if scoring.metric == Metric::Euclidean {
            let row_of = |j: u32| scoring.row(index.position[j as usize] as usize);
            exact_distances(row_of(i), row_of, found);
        }
    }
    let scratch_bytes = (scores.capacity() + tile_rows.capacity() + 2 * visits.capacity()) * 4
        + best.len() * (k + 1) * 8
        + found.capacity() * 8;
    Search {
        found,
        scored_pairs,
        searched_exactly,
        scratch_bytes,
    }
}

/// k-means centroids, scaled to unit length for [`Metric::Cosine`] (spherical k-means).
struct Centroids {
    metric: Metric,
    dim: usize,
    rows: Vec<f32>,
    squared_norms: Vec<f32>,
}

impl Centroids {
    /// `count` centroids from Lloyd iterations on a seeded sample of the rows, started from
    /// the sample's first rows. A cluster that empties keeps its centroid.
    fn train(scoring: &Scoring, count: usize, params: &ApproxKnn) -> Self {
        let (n, dim) = (scoring.len(), scoring.dim);
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let size = count
            .saturating_mul(params.sample_per_cluster)
            .clamp(count, n);
        let sample: Vec<f32> = rand::seq::index::sample(&mut rng, n, size)
            .into_iter()
            .flat_map(|i| scoring.row(i).iter().copied())
            .collect();
        let mut centroids = Self {
            metric: scoring.metric,
            dim,
            rows: sample[..count * dim].to_vec(),
            squared_norms: Vec::new(),
        };
        centroids.update_norms();
        for _ in 0..params.iterations {
            let nearest = centroids.nearest(&sample, dim, 1);
            let mut sums = vec![0.0f64; count * dim];
            let mut sizes = vec![0usize; count];
            for (row, &c) in sample.chunks_exact(dim).zip(&nearest) {
                let c = c as usize;
                sizes[c] += 1;
                for (s, &v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(row) {
                    *s += f64::from(v);
                }
            }
            for ((centroid, sum), &size) in centroids
                .rows
                .chunks_exact_mut(dim)
                .zip(sums.chunks_exact(dim))
                .zip(&sizes)
            {
                if size == 0 {
                    continue;
                }
                let mean: Vec<f64> = sum.iter().map(|s| s / size as f64).collect();
                let scale = match centroids.metric {
                    Metric::Euclidean => 1.0,
                    Metric::Cosine => {
                        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
                        if norm == 0.0 {
                            continue;
                        }
                        1.0 / norm
                    }
                };
                for (c, m) in centroid.iter_mut().zip(&mean) {
                    *c = (m * scale) as f32;
                }
            }
            centroids.update_norms();
        }
        centroids
    }

    fn update_norms(&mut self) {
        self.squared_norms = self
            .rows
            .chunks_exact(self.dim)
            .map(super::squared_norm)
            .collect();
    }

    fn len(&self) -> usize {
        self.squared_norms.len()
    }

    /// The `choices` nearest centroids of each of `rows` (`dim` columns), nearest first and
    /// ties to the lower index: `rows × choices` cluster indices.
    fn nearest(&self, rows: &[f32], dim: usize, choices: usize) -> Vec<u32> {
        let count = self.len();
        let choices = choices.clamp(1, count);
        let mut nearest = vec![0u32; rows.len() / dim * choices];
        nearest
            .par_chunks_mut(ASSIGN_BLOCK * choices)
            .zip(rows.par_chunks(ASSIGN_BLOCK * dim))
            .for_each(|(nearest, block)| {
                let m = block.len() / dim;
                let mut scores = vec![0.0f32; m * count];
                let (centroids, norms) = (&self.rows, &self.squared_norms);
                score_block(&mut scores, block, m, centroids, norms, dim, self.metric, 1);
                for (slots, row) in nearest
                    .chunks_exact_mut(choices)
                    .zip(scores.chunks_exact(count))
                {
                    let mut best = Best::new(choices);
                    best.offer(row, |c| c as u32, u32::MAX);
                    for (slot, &(_, c)) in slots.iter_mut().zip(&best.kept) {
                        *slot = c;
                    }
                }
            });
        nearest
    }
}

#[cfg(test)]
mod tests {
    use super::super::{exact_neighbours_of, knn_graph_exact};
    use super::*;
    use crate::train::knn::bench::recall;
    use rand::Rng;

    /// `n` points in `dim` dimensions around `blobs` random centres (spread 0.3 around centres
    /// with coordinates in [0, 1)), from a fixed seed.
    fn blobs(n: usize, dim: usize, blobs: usize) -> Vec<f32> {
        blobs_spread(n, dim, blobs, 0.3)
    }

    fn blobs_spread(n: usize, dim: usize, blobs: usize, spread: f32) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let centres: Vec<f32> = (0..blobs * dim).map(|_| rng.random::<f32>()).collect();
        (0..n)
            .flat_map(|_| {
                let c = rng.random_range(0..blobs);
                let jitter: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
                (0..dim)
                    .map(|d| centres[c * dim + d] + spread * jitter[d])
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn all_rows(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    #[test]
    fn approximate_graph_finds_95_percent_of_the_exact_neighbours() {
        // Overlapping blobs in 8 dimensions: a true neighbour often lies in another cluster.
        let (n, dim, k) = (5000, 8, 10);
        let features = blobs_spread(n, dim, 40, 0.6);
        for metric in [Metric::Cosine, Metric::Euclidean] {
            let exact = knn_graph_exact(&features, dim, k, metric, 2);
            let (approx, stats) =
                knn_graph_approx(&features, dim, k, metric, 2, &ApproxKnn::default());
            let r = recall(&approx, &all_rows(n), &exact.edges);
            println!("{metric:?}: recall {r:.4}, {stats:?}");
            assert!(r >= 0.95, "{metric:?}: recall {r}");
            assert_eq!(stats.clusters, 71);
            // Probing 6 of 71 clusters scores under a fifth of all pairs.
            assert!(stats.scored_pairs < (n * n / 5) as u64, "{stats:?}");
            // A neighbour found has the value the exact graph gives it.
            for (a, e) in approx.neighbours().zip(exact.neighbours()) {
                for edge in a {
                    if let Some(same) = e.iter().find(|x| x.0 == edge.0) {
                        assert_eq!(same.1, edge.1);
                    }
                }
            }
        }
    }

    #[test]
    fn probing_every_cluster_gives_the_exact_graph() {
        // 1,001 rows: the last query block of some cluster holds a single row.
        let (n, dim, k) = (1001, 8, 7);
        let features = blobs(n, dim, 12);
        let params = ApproxKnn {
            clusters: 9,
            probe: 9,
            ..ApproxKnn::default()
        };
        for metric in [Metric::Cosine, Metric::Euclidean] {
            let exact = knn_graph_exact(&features, dim, k, metric, 1);
            let (approx, stats) = knn_graph_approx(&features, dim, k, metric, 2, &params);
            assert_eq!(stats.scored_pairs, (n * n) as u64);
            assert_eq!(approx.edges, exact.edges, "{metric:?}");
        }
    }

    #[test]
    fn approximate_graph_does_not_depend_on_threads() {
        let (n, dim, k) = (3000, 12, 5);
        let features = blobs(n, dim, 25);
        let params = ApproxKnn {
            probe: 3,
            ..ApproxKnn::default()
        };
        for metric in [Metric::Cosine, Metric::Euclidean] {
            let one = knn_graph_approx(&features, dim, k, metric, 1, &params).0;
            let two = knn_graph_approx(&features, dim, k, metric, 2, &params).0;
            assert_eq!(one.edges.len(), n * k);
            assert_eq!(one.edges, two.edges, "{metric:?}");
        }
    }

    #[test]
    fn k_is_capped_at_the_other_rows() {
        let (g, _) = knn_graph_approx(
            &[0.0, 1.0, 3.0],
            1,
            5,
            Metric::Euclidean,
            1,
            &ApproxKnn::default(),
        );
        assert_eq!(g.k, 2);
        assert_eq!(
            g.edges,
            vec![(1, 1.0), (2, 3.0), (0, 1.0), (2, 2.0), (1, 2.0), (0, 3.0)]
        );
    }

    #[test]
    fn cosine_zero_rows_are_similar_to_nothing() {
        let (n, dim, k) = (2000, 6, 4);
        let mut features = blobs(n, dim, 10);
        let zero_rows = [0usize, 777, 1999];
        for &i in &zero_rows {
            features[i * dim..(i + 1) * dim].fill(0.0);
        }
        let params = ApproxKnn {
            probe: 2,
            ..ApproxKnn::default()
        };
        let (g, _) = knn_graph_approx(&features, dim, k, Metric::Cosine, 2, &params);
        for (i, row) in g.neighbours().enumerate() {
            if zero_rows.contains(&i) {
                // Every row scores 0 against a zero row: its neighbours are all at similarity 0.
                assert!(
                    row.iter().all(|&(j, s)| s == 0.0 && j as usize != i),
                    "{row:?}"
                );
            } else {
                // Blob points (all coordinates positive) are more similar to each other.
                assert!(row
                    .iter()
                    .all(|&(j, s)| s > 0.5 && !zero_rows.contains(&(j as usize))));
            }
        }
    }

    #[test]
    fn exact_neighbours_of_some_rows_are_their_rows_of_the_exact_graph() {
        let (n, dim, k) = (700, 5, 6);
        let features = blobs(n, dim, 7);
        let rows = [0, 1, 128, 129, 500, 699];
        let exact = knn_graph_exact(&features, dim, k, Metric::Euclidean, 1);
        let some = exact_neighbours_of(&features, dim, k, Metric::Euclidean, &rows, 2);
        for (&i, found) in rows.iter().zip(some.chunks_exact(k)) {
            assert_eq!(found, &exact.edges[i * k..(i + 1) * k]);
        }
        assert_eq!(recall(&exact, &rows, &some), 1.0);
    }
}
