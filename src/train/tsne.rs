//! Barnes-Hut t-SNE of feature vectors to 2-D with the `bhtsne` crate, for the report's map of
//! the learned codes. Neighbours come from [`knn`](crate::train::knn) and the starting layout
//! from a seed, so bhtsne's own randomness is never used.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::train::knn::{knn_graph, Metric};

/// t-SNE perplexity (lowered automatically for fewer than 91 points).
const PERPLEXITY: f32 = 30.0;
/// Barnes-Hut accuracy/speed trade-off.
const THETA: f32 = 0.5;
/// Gradient-descent iterations (the first 250 use early exaggeration).
const EPOCHS: usize = 1000;
/// Fewest points t-SNE is run on (perplexity must stay at least 1).
pub const MIN_POINTS: usize = 4;

/// Why t-SNE could not produce a map.
#[derive(Debug, thiserror::Error)]
pub enum TsneError {
    /// The codes handed in are unusable: wrong length, too few, or not finite.
    #[error("t-SNE cannot run: {reason}")]
    Input {
        /// What is wrong with the codes.
        reason: String,
    },
    /// The optimisation panicked inside bhtsne or diverged to non-finite coordinates.
    #[error("t-SNE failed: {reason}")]
    Optimisation {
        /// What went wrong.
        reason: String,
    },
}

/// Barnes-Hut t-SNE of `n` codes of length `dim` (`codes` is `n × dim`, row-major) to 2-D
/// points, in input order.
///
/// Perplexity 30 (capped at (n-1)/3 for small n), theta 0.5, 1000 iterations and learning rate
/// max(200, n/12). Codes are centred and scaled to max |x| = 1 first; the exact Euclidean
/// neighbours (3 × perplexity of them, ties broken by index) come from
/// [`knn_graph`](crate::train::knn::knn_graph) and the starting layout is drawn from `seed`.
/// Needs at least [`MIN_POINTS`] finite codes.
///
/// Determinism: bhtsne offers no seed and sums in parallel with rayon, whose summation order
/// depends on thread scheduling, so with several rayon threads two runs with the same seed give
/// the same clusters but a different layout. With one rayon thread (`RAYON_NUM_THREADS=1`, or
/// calling this inside a one-thread rayon pool) the result is bit-for-bit reproducible for a
/// given seed. About 13 s for 5,000 × 30 codes on two cores in a release build (17 s on one).
pub fn tsne_2d(codes: &[f32], n: usize, dim: usize, seed: u64) -> Result<Vec<[f32; 2]>, TsneError> {
    check_codes(codes, n, dim)?;
    let data = normalise(codes, n, dim);
    // bhtsne asserts 3 * floor(perplexity) <= n - 1.
    let perplexity = PERPLEXITY.min((n - 1) as f32 / 3.0).max(1.0);
    let k = ((3.0 * perplexity) as usize).clamp(1, n - 1);
    let neighbors = nearest_neighbors(&data, dim, k);
    let init = initial_layout(n, seed);
    let learning_rate = (n as f32 / 12.0).max(200.0);
    let samples: Vec<&[f32]> = data.chunks_exact(dim).collect();

    let embedding = catch_unwind(AssertUnwindSafe(|| {
        let mut tsne: bhtsne::tSNE<f32, &[f32]> = bhtsne::tSNE::new(&samples);
        tsne.embedding_dim(2)
            .perplexity(perplexity)
            .epochs(EPOCHS)
            .learning_rate(learning_rate)
            .initial_embedding(init)
            .barnes_hut_with_neighbors(THETA, &neighbors);
        tsne.embedding()
    }))
    .map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        failed(format!("bhtsne panicked: {message}"))
    })?;

    if embedding.len() != 2 * n {
        return Err(failed(format!(
            "bhtsne returned {} coordinates, expected {}",
            embedding.len(),
            2 * n
        )));
    }
    if embedding.iter().any(|v| !v.is_finite()) {
        return Err(failed("the embedding diverged to non-finite coordinates"));
    }
    Ok(embedding.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
}

/// Checks that `codes` holds `n ≥ MIN_POINTS` finite rows of `dim > 0` values.
fn check_codes(codes: &[f32], n: usize, dim: usize) -> Result<(), TsneError> {
    let input = |reason: String| Err(TsneError::Input { reason });
    if dim == 0 {
        return input("the code dimension must be positive".to_string());
    }
    if Some(codes.len()) != n.checked_mul(dim) {
        return input(format!(
            "codes has {} values, expected n × dim = {n} × {dim}",
            codes.len()
        ));
    }
    if n < MIN_POINTS {
        return input(format!("t-SNE needs at least {MIN_POINTS} points, got {n}"));
    }
    if let Some(i) = codes.iter().position(|v| !v.is_finite()) {
        return input(format!(
            "code {} (component {}) is not finite",
            i / dim,
            i % dim
        ));
    }
    Ok(())
}

fn failed(reason: impl Into<String>) -> TsneError {
    TsneError::Optimisation {
        reason: reason.into(),
    }
}

/// Centres every component and scales so the largest |value| is 1 (as the reference bhtsne does),
/// which keeps the perplexity search well conditioned whatever the code scale.
fn normalise(codes: &[f32], n: usize, dim: usize) -> Vec<f32> {
    let mut mean = vec![0.0f64; dim];
    for row in codes.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let centred: Vec<f64> = codes
        .chunks_exact(dim)
        .flat_map(|row| row.iter().zip(&mean).map(|(&v, m)| f64::from(v) - m))
        .collect();
    let max_abs = centred.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
    let scale = if max_abs > 0.0 { 1.0 / max_abs } else { 1.0 };
    centred.iter().map(|v| (v * scale) as f32).collect()
}

/// The `k` nearest neighbours (Euclidean) of every row in bhtsne's form.
fn nearest_neighbors(data: &[f32], dim: usize, k: usize) -> Vec<Vec<bhtsne::Neighbor<f32>>> {
    // The current rayon pool's size: one thread inside the one-thread pool that keeps the map
    // reproducible (the graph itself does not depend on the thread count).
    let graph = knn_graph(
        data,
        dim,
        k,
        Metric::Euclidean,
        rayon::current_num_threads(),
    );
    graph
        .neighbours()
        .map(|row| {
            row.iter()
                .map(|&(j, distance)| bhtsne::Neighbor {
                    index: j as usize,
                    distance,
                })
                .collect()
        })
        .collect()
}

/// Starting layout: i.i.d. N(0, 1e-4²) coordinates (as bhtsne's own initialisation) from `seed`.
fn initial_layout(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut next_unit = move || {
        // SplitMix64, mapped to (0, 1].
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(2 * n);
    while out.len() < 2 * n {
        // Box–Muller: two independent standard normals per pair of uniforms.
        let (u1, u2) = (next_unit(), next_unit());
        let r = (-2.0 * u1.ln()).sqrt() * 1e-4;
        let angle = std::f64::consts::TAU * u2;
        out.push((r * angle.cos()) as f32);
        out.push((r * angle.sin()) as f32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two well separated blobs of `n / 2` points each in `dim` dimensions.
    fn two_blobs(n: usize, dim: usize) -> Vec<f32> {
        let mut s = 12345u64;
        (0..n * dim)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (s >> 40) as f32 / (1u64 << 24) as f32;
                noise + if (i / dim) % 2 == 1 { 5.0 } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn separated_blobs_stay_apart_and_a_seed_repeats_the_map() {
        let (n, dim) = (60, 4);
        let codes = two_blobs(n, dim);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let first = pool.install(|| tsne_2d(&codes, n, dim, 9)).unwrap();
        let again = pool.install(|| tsne_2d(&codes, n, dim, 9)).unwrap();
        assert_eq!(first, again);
        assert_eq!(first.len(), n);
        // Every point's nearest other point on the map is from its own blob.
        for (i, p) in first.iter().enumerate() {
            let nearest = (0..n)
                .filter(|&j| j != i)
                .min_by(|&a, &b| {
                    let d = |q: &[f32; 2]| (q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2);
                    d(&first[a]).total_cmp(&d(&first[b]))
                })
                .unwrap();
            assert_eq!(nearest % 2, i % 2, "point {i}");
        }
    }

    #[test]
    fn unusable_codes_are_refused() {
        let codes = two_blobs(10, 3);
        for (codes, n, dim) in [
            (&codes[..], 10, 0),
            (&codes[1..], 10, 3),
            (&codes[..9], 3, 3),
        ] {
            assert!(matches!(
                tsne_2d(codes, n, dim, 1),
                Err(TsneError::Input { .. })
            ));
        }
        let mut nan = codes.clone();
        nan[4] = f32::NAN;
        assert!(matches!(
            tsne_2d(&nan, 10, 3, 1),
            Err(TsneError::Input { .. })
        ));
    }
}
