//! Approximate k-NN for pools too large for the exact n² search: an inverted file over k-means
//! clusters. Rows are grouped by their nearest centroid; the queries of one cluster are scored
//! against the rows of the few clusters whose centroids lie nearest to theirs, in one matrix
//! product per block of queries, and keep their k best exactly as the exact search does.
//!
//! With about √n clusters and a fixed number probed, each row meets about `probe · √n` others,
//! so the whole graph costs about `probe · n^1.5 · dim` multiply-adds instead of `n² · dim`.

use super::{exact_distances, score_block, top_k, KnnGraph, Metric, Scoring};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

/// Queries of one cluster scored at once (query block × candidates floats of scratch).
const QUERY_BLOCK: usize = 256;

/// Rows assigned to centroids at once.
const ASSIGN_BLOCK: usize = 512;

/// How the approximate search trades time for recall.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApproxKnn {
    /// Clusters (inverted lists); 0 picks ⌈√n⌉.
    pub clusters: usize,
    /// Clusters whose rows the queries of one cluster are scored against: their own and the
    /// ones whose centroids are nearest to its centroid (more when these hold fewer than k + 1
    /// rows). Covering every cluster gives the exact graph.
    pub probe: usize,
    /// Nearest centroids of each query whose clusters join its cluster's list (1: its own
    /// only): rows near a cluster's edge find neighbours across it.
    pub query_choices: usize,
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
            probe: 10,
            query_choices: 1,
            sample_per_cluster: 32,
            iterations: 6,
            seed: 0x6b6e_6e,
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
    /// Seconds spent on k-means and assigning rows to clusters.
    pub seconds_clustering: f64,
    /// Seconds spent scoring queries against their candidates.
    pub seconds_search: f64,
    /// Largest scratch of the cluster searches running at once (the `threads` largest), bytes.
    pub peak_search_scratch_bytes: usize,
    /// Estimate of everything allocated at once at the peak: the scaled copy of the rows, the
    /// index, the edges and [`Self::peak_search_scratch_bytes`].
    pub peak_bytes: usize,
}

/// Builds an approximate k-NN graph of `features` (`n × dim` row-major, `dim > 0`; a trailing
/// partial row is ignored) under `metric`, with `threads` threads: each row's neighbours are its
/// `k` best among the rows of the [`ApproxKnn::probe`] clusters nearest to its own (see the
/// module docs). Scores and ties are the exact search's, so a neighbour it finds has the value
/// the exact graph gives it, and probing every cluster gives the exact graph.
///
/// Deterministic: the clusters come from a seeded sample, every cluster is searched on one
/// thread, and the graph does not depend on `threads`. Memory beyond the graph and a copy of
/// the rows is the searches' scratch (see [`ApproxStats`]), never n².
pub fn knn_graph_approx(
    features: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    threads: usize,
    params: &ApproxKnn,
) -> (KnnGraph, ApproxStats) {
    let build = || build(&Scoring::new(features, dim, metric), k, threads, params);
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
    {
        Ok(pool) => pool.install(build),
        Err(_) => build(),
    }
}

fn build(
    scoring: &Scoring,
    k: usize,
    threads: usize,
    params: &ApproxKnn,
) -> (KnnGraph, ApproxStats) {
    let (n, dim, metric) = (scoring.len(), scoring.dim, scoring.metric);
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
    let index = Index::new(scoring, count, k, params);
    stats.seconds_clustering = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    // Largest searches first, so that no long one starts last.
    let mut order: Vec<usize> = (0..count).filter(|&c| index.lists.len(c) > 0).collect();
    let cost = |c: usize| index.lists.len(c) * index.candidates(c);
    order.sort_by_key(|&c| (std::cmp::Reverse(cost(c)), c));
    let searches: Vec<Search> = order
        .par_iter()
        .map(|&c| search_cluster(scoring, &index, c, k))
        .collect();
    let mut edges = vec![(0u32, 0.0f32); n * k];
    for (&c, search) in order.iter().zip(&searches) {
        for (&i, row) in index
            .lists
            .members(c)
            .iter()
            .zip(search.found.chunks_exact(k))
        {
            edges[i as usize * k..(i as usize + 1) * k].copy_from_slice(row);
        }
    }
    stats.seconds_search = started.elapsed().as_secs_f64();
    stats.clusters = count;
    stats.largest_cluster = (0..count).map(|c| index.lists.len(c)).max().unwrap_or(0);
    stats.scored_pairs = searches.iter().map(|s| s.scored_pairs).sum();
    let mut scratch: Vec<usize> = searches.iter().map(|s| s.scratch_bytes).collect();
    scratch.sort_unstable_by(|a, b| b.cmp(a));
    stats.peak_search_scratch_bytes = scratch.iter().take(threads.max(1)).sum();
    let f32s = std::mem::size_of::<f32>();
    stats.peak_bytes = n * (dim + 1) * f32s // the scaled rows and their norms
        + (1 + index.next_width) * n * f32s // rows by cluster, next-nearest clusters
        + 2 * n * k * std::mem::size_of::<(u32, f32)>() // per-cluster results and the graph
        + stats.peak_search_scratch_bytes;
    (KnnGraph { k, metric, edges }, stats)
}

/// The inverted file: which rows each cluster holds and which clusters its queries search.
struct Index {
    lists: Lists,
    /// For each cluster: itself, then the clusters whose rows its queries are all scored
    /// against (see [`Centroids::probe_lists`]).
    probes: Vec<Vec<usize>>,
    /// Each row's next-nearest clusters after its own (`rows × next_width`), nearest first.
    next: Vec<u32>,
    next_width: usize,
}

impl Index {
    fn new(scoring: &Scoring, count: usize, k: usize, params: &ApproxKnn) -> Self {
        let centroids = Centroids::train(scoring, count, params);
        let choices = params.query_choices.clamp(1, count);
        let nearest = centroids.nearest(&scoring.rows, scoring.dim, choices);
        let own: Vec<u32> = nearest.iter().step_by(choices).copied().collect();
        let lists = Lists::new(&own, count);
        drop(own);
        let next = if choices > 1 {
            nearest
                .chunks_exact(choices)
                .flat_map(|row| row[1..].iter().copied())
                .collect()
        } else {
            Vec::new()
        };
        let probes = centroids.probe_lists(&lists, params.probe, k + 1);
        Self {
            lists,
            probes,
            next,
            next_width: choices - 1,
        }
    }

    /// Rows all queries of `cluster` are scored against.
    fn candidates(&self, cluster: usize) -> usize {
        self.probes[cluster]
            .iter()
            .map(|&p| self.lists.len(p))
            .sum()
    }

    /// The next-nearest clusters of row `i` after its own.
    fn next_of(&self, i: usize) -> &[u32] {
        &self.next[i * self.next_width..(i + 1) * self.next_width]
    }
}

/// One cluster's search: its queries' neighbours and what it cost.
struct Search {
    /// `k` neighbours per query of the cluster, in the order of its rows.
    found: Vec<(u32, f32)>,
    scored_pairs: u64,
    scratch_bytes: usize,
}

/// Gathered rows to score queries against: ascending indices (so that `top_k`, which keeps the
/// lower position on equal scores, keeps the lower index), their rows and squared norms.
#[derive(Default)]
struct Candidates {
    indices: Vec<u32>,
    rows: Vec<f32>,
    norms: Vec<f32>,
}

impl Candidates {
    fn gather(&mut self, scoring: &Scoring, indices: impl Iterator<Item = u32>, sort: bool) {
        self.indices.clear();
        self.indices.extend(indices);
        if sort {
            self.indices.sort_unstable();
        }
        self.rows.clear();
        self.norms.clear();
        for &j in &self.indices {
            self.rows.extend_from_slice(scoring.row(j as usize));
            self.norms.push(scoring.squared_norms[j as usize]);
        }
    }

    fn bytes(&self) -> usize {
        (self.indices.capacity() + self.rows.capacity() + self.norms.capacity()) * 4
    }
}

/// The `k` nearest neighbours of each row of `cluster` among the rows of its probed clusters
/// and of the row's own next-nearest clusters. Scores are those of the exact search; merged
/// lists keep its order (score, then lower index).
fn search_cluster(scoring: &Scoring, index: &Index, cluster: usize, k: usize) -> Search {
    let (dim, metric) = (scoring.dim, scoring.metric);
    let queries = index.lists.members(cluster);
    let mut candidates = Candidates::default();
    let probes = &index.probes[cluster];
    let members = |p: &usize| index.lists.members(*p).iter().copied();
    candidates.gather(scoring, probes.iter().flat_map(members), true);
    let c = candidates.indices.len();
    let mut scores = vec![0.0f32; QUERY_BLOCK.min(queries.len()) * c];
    let mut block_rows = Vec::with_capacity(QUERY_BLOCK * dim);
    let mut found = vec![(0u32, 0.0f32); queries.len() * k];
    let mut scored_pairs = (queries.len() * c) as u64;
    for (block, found) in queries
        .chunks(QUERY_BLOCK)
        .zip(found.chunks_mut(QUERY_BLOCK * k))
    {
        gather_rows(&mut block_rows, scoring, block.iter().map(|&i| i as usize));
        let (rows, norms) = (&candidates.rows, &candidates.norms);
        score_block(
            &mut scores,
            &block_rows,
            block.len(),
            rows,
            norms,
            dim,
            metric,
            1,
        );
        for ((&i, row), found) in block.iter().zip(scores.chunks(c)).zip(found.chunks_mut(k)) {
            let itself = candidates.indices.binary_search(&i).unwrap_or(usize::MAX);
            top_k(row, itself, found);
            for edge in found.iter_mut() {
                edge.0 = candidates.indices[edge.0 as usize];
            }
        }
    }
    let mut scratch_bytes = candidates.bytes() + scores.capacity() * 4;
    // (next-nearest cluster, query position) for clusters the probe list left out.
    let mut probed = probes.clone();
    probed.sort_unstable();
    let mut extra: Vec<(u32, u32)> = Vec::new();
    for (position, &i) in queries.iter().enumerate() {
        for &o in index.next_of(i as usize) {
            if probed.binary_search(&(o as usize)).is_err() {
                extra.push((o, position as u32));
            }
        }
    }
    extra.sort_unstable();
    let mut more = vec![(0u32, 0.0f32); k];
    for group in extra.chunk_by(|a, b| a.0 == b.0) {
        candidates.gather(scoring, members(&(group[0].0 as usize)), false);
        let c = candidates.indices.len();
        if c == 0 {
            continue;
        }
        scored_pairs += (group.len() * c) as u64;
        let mut scores = vec![0.0f32; QUERY_BLOCK.min(group.len()) * c];
        for block in group.chunks(QUERY_BLOCK) {
            let rows = block.iter().map(|&(_, q)| queries[q as usize] as usize);
            gather_rows(&mut block_rows, scoring, rows);
            let (rows, norms) = (&candidates.rows, &candidates.norms);
            score_block(
                &mut scores,
                &block_rows,
                block.len(),
                rows,
                norms,
                dim,
                metric,
                1,
            );
            for (&(_, q), row) in block.iter().zip(scores.chunks(c)) {
                let more = &mut more[..k.min(c)];
                top_k(row, usize::MAX, more);
                for edge in more.iter_mut() {
                    edge.0 = candidates.indices[edge.0 as usize];
                }
                let q = q as usize;
                merge_best(&mut found[q * k..(q + 1) * k], more);
            }
        }
        scratch_bytes = scratch_bytes.max(candidates.bytes() + scores.capacity() * 4);
    }
    if metric == Metric::Euclidean {
        for (&i, found) in queries.iter().zip(found.chunks_mut(k)) {
            exact_distances(scoring, i as usize, found);
        }
    }
    scratch_bytes += (block_rows.capacity() + extra.capacity() * 2) * 4
        + found.capacity() * std::mem::size_of::<(u32, f32)>();
    Search {
        found,
        scored_pairs,
        scratch_bytes,
    }
}

/// `out` ← the rows `rows` of `scoring`, one after another.
fn gather_rows(out: &mut Vec<f32>, scoring: &Scoring, rows: impl Iterator<Item = usize>) {
    out.clear();
    rows.for_each(|i| out.extend_from_slice(scoring.row(i)));
}

/// `best` ← the best `best.len()` of `best` and `more` (two disjoint lists, each best first:
/// higher score, then lower index).
fn merge_best(best: &mut [(u32, f32)], more: &[(u32, f32)]) {
    let before = |a: &(u32, f32), b: &(u32, f32)| a.1 > b.1 || (a.1 == b.1 && a.0 < b.0);
    let old = best.to_vec();
    let (mut a, mut b) = (0, 0);
    for slot in best.iter_mut() {
        let take_old = b == more.len() || (a < old.len() && before(&old[a], &more[b]));
        if take_old {
            *slot = old[a];
            a += 1;
        } else {
            *slot = more[b];
            b += 1;
        }
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
                let mut best = vec![(0u32, 0.0f32); choices];
                for (slots, row) in nearest
                    .chunks_exact_mut(choices)
                    .zip(scores.chunks_exact(count))
                {
                    top_k(row, usize::MAX, &mut best);
                    for (slot, &(c, _)) in slots.iter_mut().zip(&best) {
                        *slot = c;
                    }
                }
            });
        nearest
    }

    /// For each cluster, the clusters its queries are scored against: itself, then the others
    /// by nearness of their centroids to its own (ties to the lower index), skipping empty
    /// ones, until `probe` are taken and they hold at least `rows` rows.
    fn probe_lists(&self, lists: &Lists, probe: usize, rows: usize) -> Vec<Vec<usize>> {
        let count = self.len();
        let mut scores = vec![0.0f32; count * count];
        scores
            .par_chunks_mut(ASSIGN_BLOCK * count)
            .zip(self.rows.par_chunks(ASSIGN_BLOCK * self.dim))
            .for_each(|(scores, block)| {
                let m = block.len() / self.dim;
                let (centroids, norms) = (&self.rows, &self.squared_norms);
                score_block(scores, block, m, centroids, norms, self.dim, self.metric, 1);
            });
        scores
            .par_chunks(count)
            .enumerate()
            .map(|(c, row)| {
                let mut others: Vec<usize> =
                    (0..count).filter(|&o| o != c && lists.len(o) > 0).collect();
                others.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                let mut taken = vec![c];
                let mut held = lists.len(c);
                for o in others {
                    if taken.len() >= probe.max(1) && held >= rows {
                        break;
                    }
                    taken.push(o);
                    held += lists.len(o);
                }
                taken
            })
            .collect()
    }
}

/// The rows of each cluster, ascending (an inverted file).
struct Lists {
    starts: Vec<usize>,
    rows: Vec<u32>,
}

impl Lists {
    fn new(cluster_of: &[u32], count: usize) -> Self {
        let mut starts = vec![0usize; count + 1];
        for &c in cluster_of {
            starts[c as usize + 1] += 1;
        }
        for c in 0..count {
            starts[c + 1] += starts[c];
        }
        let mut next = starts.clone();
        let mut rows = vec![0u32; cluster_of.len()];
        for (i, &c) in cluster_of.iter().enumerate() {
            rows[next[c as usize]] = i as u32;
            next[c as usize] += 1;
        }
        Self { starts, rows }
    }

    fn members(&self, cluster: usize) -> &[u32] {
        &self.rows[self.starts[cluster]..self.starts[cluster + 1]]
    }

    fn len(&self, cluster: usize) -> usize {
        self.starts[cluster + 1] - self.starts[cluster]
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
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let centres: Vec<f32> = (0..blobs * dim).map(|_| rng.random::<f32>()).collect();
        (0..n)
            .flat_map(|_| {
                let c = rng.random_range(0..blobs);
                let jitter: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
                (0..dim)
                    .map(|d| centres[c * dim + d] + 0.3 * jitter[d])
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn all_rows(n: usize) -> Vec<usize> {
        (0..n).collect()
    }

    #[test]
    fn approximate_graph_finds_95_percent_of_the_exact_neighbours() {
        let (n, dim, k) = (5000, 16, 10);
        let features = blobs(n, dim, 40);
        for metric in [Metric::Cosine, Metric::Euclidean] {
            let exact = knn_graph_exact(&features, dim, k, metric, 2);
            let (approx, stats) =
                knn_graph_approx(&features, dim, k, metric, 2, &ApproxKnn::default());
            let r = recall(&approx, &all_rows(n), &exact.edges);
            println!("{metric:?}: recall {r:.4}, {stats:?}");
            assert!(r >= 0.95, "{metric:?}: recall {r}");
            assert_eq!(stats.clusters, 71);
            assert!(stats.scored_pairs < (n * n) as u64 / 3, "{stats:?}");
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
