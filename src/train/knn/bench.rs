//! `aelabel bench knn`: the exact and the approximate k-NN graph on the same features, timed,
//! with the approximate graph's recall; and the features it runs on, made from images.

use super::{exact_neighbours_of, knn_graph_approx, knn_graph_exact, ApproxKnn, ApproxStats};
use super::{KnnGraph, Metric};
use crate::model::linalg::{matmul, View};
use crate::model::{autoencoder, encode_rows, Activation, Decoder, Inputs, Loss, Network};
use crate::train::{fit, Examples, FitOptions, Optimizer, Silent, Targets};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use std::time::Instant;

/// Images turned into feature vectors at once.
const FEATURE_CHUNK: usize = 8192;

/// Where benchmark features come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureSource {
    /// Pixels (scaled to [0, 1]) times a fixed Gaussian random matrix.
    Projection,
    /// The codes of a `784-256-dim` SELU autoencoder trained for a few epochs on the source
    /// images: like the classifier's last hidden layer, a learned SELU layer.
    Encoder,
}

/// Features of `count` images made from `source` (`n × width` pixels): image `i` is
/// [`pool_variant`](crate::data::pool_variant) copy `i / n` of source image `i % n` (the
/// source itself first), so a million images come from Fashion-MNIST's 60,000 as
/// `aelabel bench pool` writes them. Returns `count × dim` floats.
pub fn image_features(
    source: &[u8],
    (width, height): (usize, usize),
    count: usize,
    dim: usize,
    kind: FeatureSource,
    epochs: usize,
    threads: usize,
) -> Vec<f32> {
    let size = width * height;
    let n = source.len() / size;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let features_of = match kind {
        FeatureSource::Projection => {
            let scale = 1.0 / (255.0 * (size as f32).sqrt());
            let matrix: Vec<f32> = (0..size * dim)
                .map(|_| StandardNormal.sample(&mut rng))
                .map(|v: f32| v * scale)
                .collect();
            Features::Projection(matrix)
        }
        FeatureSource::Encoder => {
            let mut net = autoencoder(
                &[size, 256, dim],
                Decoder::Separate,
                Activation::Sigmoid,
                &mut rng,
            );
            let options = FitOptions {
                epochs,
                batch_size: 64,
                loss: Loss::BinaryCrossEntropy,
                input_noise: 0.3,
                threads,
                shift: None,
                mixup: 0.0,
                cosine_decay: false,
                epoch_rows: None,
            };
            let train = Examples {
                inputs: Inputs::Bytes(&source[..n * size]),
                targets: Targets::Inputs,
                len: n,
                again: &[],
            };
            let mut adam = Optimizer::adam(1e-3);
            let name = "knn features";
            fit(
                &mut net, &mut adam, &train, None, &options, &mut rng, name, &Silent,
            );
            Features::Encoder(net)
        }
    };
    let mut features = Vec::with_capacity(count * dim);
    let mut pixels = Vec::with_capacity(FEATURE_CHUNK * size);
    for start in (0..count).step_by(FEATURE_CHUNK) {
        pixels.clear();
        for i in start..(start + FEATURE_CHUNK).min(count) {
            let image = &source[(i % n) * size..(i % n + 1) * size];
            match i / n {
                0 => pixels.extend_from_slice(image),
                copy => pixels.extend(crate::data::pool_variant(image, width, height, copy)),
            }
        }
        features.extend(features_of.of(&pixels, size, dim, threads));
    }
    features
}

/// What turns 8-bit images into features.
enum Features {
    /// A `pixels × dim` matrix applied to pixel values.
    Projection(Vec<f32>),
    /// An autoencoder whose codes are the features.
    Encoder(Network),
}

impl Features {
    fn of(&self, pixels: &[u8], size: usize, dim: usize, threads: usize) -> Vec<f32> {
        match self {
            Features::Projection(matrix) => {
                let m = pixels.len() / size;
                let x: Vec<f32> = pixels.iter().map(|&p| f32::from(p)).collect();
                let mut out = vec![0.0f32; m * dim];
                let (a, b) = (View::new(&x, m, size), View::new(matrix, size, dim));
                matmul(&mut out, a, b, false, threads);
                out
            }
            Features::Encoder(net) => encode_rows(net, Inputs::Bytes(pixels), threads),
        }
    }
}

/// One run of [`bench_knn`].
#[derive(Clone, Debug, Serialize)]
pub struct KnnBench {
    /// Rows of the graph.
    pub points: usize,
    /// Feature width.
    pub dim: usize,
    /// Neighbours per row.
    pub k: usize,
    /// The metric ranked by.
    pub metric: &'static str,
    /// Threads.
    pub threads: usize,
    /// The approximate search's setting.
    pub approx: ApproxKnn,
    /// Seconds of the approximate graph.
    pub approx_seconds: f64,
    /// What the approximate build did, and its memory estimate.
    pub approx_stats: ApproxStats,
    /// Seconds of the exact graph (`None` above `--exact-up-to` points).
    pub exact_seconds: Option<f64>,
    /// Memory estimate of the exact graph: its scaled copy of the rows, a block of scores and
    /// the edges, bytes.
    pub exact_peak_bytes: usize,
    /// Share of the exact neighbours the approximate graph found, over `recall_rows` rows.
    pub recall: f64,
    /// Rows the recall was measured on: all when the exact graph was built, else a random
    /// sample searched exactly.
    pub recall_rows: usize,
    /// Seconds of the exact search of the sampled rows (0 when the exact graph was built).
    pub recall_sample_seconds: f64,
}

/// Builds the approximate graph of `features` (`points × dim`), and the exact one when there
/// are at most `exact_up_to` points; above, the exact neighbours of `sample` random rows alone.
/// Reports times, memory estimates and the approximate graph's recall.
#[allow(clippy::too_many_arguments)]
pub fn bench_knn(
    features: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
    threads: usize,
    approx: &ApproxKnn,
    exact_up_to: usize,
    sample: usize,
) -> KnnBench {
    let n = features.len() / dim;
    let started = Instant::now();
    let (graph, approx_stats) = knn_graph_approx(features, dim, k, metric, threads, approx);
    let approx_seconds = started.elapsed().as_secs_f64();
    let k = graph.k;
    let (mut exact_seconds, mut recall_sample_seconds) = (None, 0.0);
    let (rows, exact): (Vec<usize>, Vec<(u32, f32)>) = if n <= exact_up_to {
        let started = Instant::now();
        let exact = knn_graph_exact(features, dim, k, metric, threads);
        exact_seconds = Some(started.elapsed().as_secs_f64());
        ((0..n).collect(), exact.edges)
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut rows = rand::seq::index::sample(&mut rng, n, sample.min(n)).into_vec();
        rows.sort_unstable();
        let started = Instant::now();
        let exact = exact_neighbours_of(features, dim, k, metric, &rows, threads);
        recall_sample_seconds = started.elapsed().as_secs_f64();
        (rows, exact)
    };
    let f32s = std::mem::size_of::<f32>();
    KnnBench {
        points: n,
        dim,
        k,
        metric: match metric {
            Metric::Cosine => "cosine",
            Metric::Euclidean => "euclidean",
        },
        threads,
        approx: approx.clone(),
        approx_seconds,
        approx_stats,
        exact_seconds,
        exact_peak_bytes: n * (dim + 1) * f32s
            + super::BLOCK.min(n) * n * f32s
            + n * k * std::mem::size_of::<(u32, f32)>(),
        recall: recall(&graph, &rows, &exact),
        recall_rows: rows.len(),
        recall_sample_seconds,
    }
}

/// Share of the true neighbours `exact` (`k` per row of `rows`, in turn) that `graph` found for
/// those rows, as sets of indices.
pub fn recall(graph: &KnnGraph, rows: &[usize], exact: &[(u32, f32)]) -> f64 {
    let k = graph.k;
    if k == 0 || rows.is_empty() {
        return 1.0;
    }
    let found: usize = rows
        .iter()
        .zip(exact.chunks_exact(k))
        .map(|(&i, truth)| {
            let row = &graph.edges[i * k..(i + 1) * k];
            truth
                .iter()
                .filter(|t| row.iter().any(|e| e.0 == t.0))
                .count()
        })
        .sum();
    found as f64 / (rows.len() * k) as f64
}
