//! Training loops, optimisers, metrics, neighbour graphs and t-SNE; progress goes through an
//! [`Observer`], never stdout.

pub mod bench;
pub mod folds;
pub mod knn;
pub mod metrics;
mod optim;
pub mod spreading;
pub mod tsne;

pub use optim::Optimizer;

use crate::model::{Inputs, Loss, Network, StepStats, Target, Workspace, CHUNK_ROWS};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// What a network learns to output for each example.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// The clean input itself (an autoencoder), read through the same [`Inputs`].
    Inputs,
    /// Values (`len × output width`): codes, or one distribution per row for soft labels.
    Values(&'a [f32]),
    /// One class per example.
    Classes(&'a [u32]),
}

/// Inputs with their targets.
#[derive(Clone, Copy, Debug)]
pub struct Examples<'a> {
    /// `len × width` row-major inputs, floats or 8-bit pixels (converted per batch).
    pub inputs: Inputs<'a>,
    /// What the network should output for each input.
    pub targets: Targets<'a>,
    /// Number of examples.
    pub len: usize,
    /// Rows visited once more in every epoch, besides every row once (a row listed twice is
    /// visited twice more): a handful of labelled rows among many unlabelled ones.
    pub again: &'a [usize],
}

/// How one training phase runs.
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Passes over the training examples.
    pub epochs: usize,
    /// Examples per gradient step.
    pub batch_size: usize,
    /// The loss minimised.
    pub loss: Loss,
    /// Probability of zeroing each input value (denoising); targets stay clean.
    pub input_noise: f32,
    /// Threads for the matrix products.
    pub threads: usize,
    /// Random translations of image inputs (none when `None`).
    pub shift: Option<Shift>,
    /// Mixup strength α (0 = off): each example is blended with another of its batch by
    /// λ ~ Beta(α, α), inputs and value targets alike.
    pub mixup: f32,
    /// Decay the learning rate each epoch along a half cosine, from the optimiser's rate in the
    /// first epoch towards 0 (epoch e of E runs at `rate · (1 + cos(π·e/E)) / 2`); the rate is
    /// restored afterwards. Off: the rate stays constant.
    pub cosine_decay: bool,
    /// Rows an epoch visits, drawn afresh each epoch without replacement from the examples
    /// (the `again` rows come on top); `None`, or at least `len`, visits every row. Keeps an
    /// epoch's cost fixed on a pool of millions, where a full pass is tens of thousands of steps.
    pub epoch_rows: Option<usize>,
}

/// Random translation of each training image by up to `max` pixels in x and y (zero fill):
/// cheap augmentation that keeps a few hundred labels from being memorised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shift {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Largest shift in pixels along each axis.
    pub max: usize,
}

impl Shift {
    /// Writes `image` shifted by (`dx`, `dy`) into `out`, filling uncovered pixels with 0.
    pub fn apply(&self, image: &[f32], dx: isize, dy: isize, out: &mut [f32]) {
        out.fill(0.0);
        let (w, h) = (self.width as isize, self.height as isize);
        for y in 0..h {
            let sy = y - dy;
            if !(0..h).contains(&sy) {
                continue;
            }
            let x0 = dx.max(0);
            let x1 = (w + dx).min(w);
            if x0 >= x1 {
                continue;
            }
            let dst = (y * w + x0) as usize..(y * w + x1) as usize;
            let src = (sy * w + x0 - dx) as usize..(sy * w + x1 - dx) as usize;
            out[dst].copy_from_slice(&image[src]);
        }
    }
}

/// One epoch's line, as Keras prints it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EpochLog {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub loss: f64,
    /// Rounded accuracy (reconstruction) or accuracy (classification) over the epoch.
    pub metric: f64,
    /// Validation loss after the epoch, if validation data was given.
    pub valid_loss: Option<f64>,
    /// Validation metric after the epoch.
    pub valid_metric: Option<f64>,
    /// Wall time of the epoch's training steps (validation excluded).
    pub seconds: f64,
}

/// Receives progress from training; the CLI draws bars, tests stay silent.
pub trait Observer: Sync {
    /// A phase with `epochs × steps_per_epoch` steps starts.
    fn phase_started(&self, _phase: &str, _epochs: usize, _steps_per_epoch: usize) {}
    /// One gradient step finished.
    fn step_done(&self) {}
    /// One epoch finished.
    fn epoch_done(&self, _phase: &str, _log: &EpochLog) {}
    /// The phase finished.
    fn phase_done(&self, _phase: &str) {}
    /// A one-line note about the run (e.g. a pseudo-labelling round).
    fn note(&self, _message: &str) {}
}

/// Forwards to another observer with `prefix` before every phase name (e.g. `fold 2/5: `),
/// optionally without the per-epoch lines (bars only) for many short phases.
pub struct Prefixed<'a> {
    /// Put before every phase name.
    pub prefix: String,
    /// Where the events go.
    pub inner: &'a dyn Observer,
    /// Forward per-epoch lines too.
    pub epoch_lines: bool,
}

impl Observer for Prefixed<'_> {
    fn phase_started(&self, phase: &str, epochs: usize, steps_per_epoch: usize) {
        self.inner
            .phase_started(&format!("{}{phase}", self.prefix), epochs, steps_per_epoch);
    }
    fn step_done(&self) {
        self.inner.step_done();
    }
    fn epoch_done(&self, phase: &str, log: &EpochLog) {
        if self.epoch_lines {
            self.inner
                .epoch_done(&format!("{}{phase}", self.prefix), log);
        }
    }
    fn phase_done(&self, phase: &str) {
        self.inner.phase_done(&format!("{}{phase}", self.prefix));
    }
    fn note(&self, message: &str) {
        if self.epoch_lines {
            self.inner.note(&format!("{}{message}", self.prefix));
        }
    }
}

/// Forwards only steps to another observer: work running side by side (cross-validation folds
/// on their own threads) advances one shared bar instead of each starting its own.
pub struct StepsOnly<'a>(pub &'a dyn Observer);

impl Observer for StepsOnly<'_> {
    fn step_done(&self) {
        self.0.step_done();
    }
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Name of the per-value metric a loss reports: "rounded_accuracy" or "accuracy".
pub fn metric_name(loss: Loss) -> &'static str {
    match loss {
        Loss::SoftmaxCrossEntropy => "accuracy",
        _ => "rounded_accuracy",
    }
}

/// Mean loss and metric of `net` on `examples`.
pub fn evaluate(net: &Network, examples: &Examples<'_>, loss: Loss, threads: usize) -> (f64, f64) {
    let (in_width, out_width) = (net.input_size(), net.output_size());
    let (mut loss_sum, mut hits, mut hit_total) = (0.0, 0.0, 0.0);
    let mut scratch = Vec::new();
    let mut start = 0;
    while start < examples.len {
        let m = CHUNK_ROWS.min(examples.len - start);
        let x = examples.inputs.chunk(start, m, in_width, &mut scratch);
        let target = match examples.targets {
            Targets::Inputs => Target::Values(x),
            Targets::Values(v) => Target::Values(&v[start * out_width..]),
            Targets::Classes(c) => Target::Classes(&c[start..]),
        };
        let s = net.evaluate(x, target, loss, m, threads);
        loss_sum += s.loss_sum;
        hits += s.hits;
        hit_total += s.hit_total;
        start += m;
    }
    (
        loss_sum / examples.len as f64,
        hits / f64::max(hit_total, 1.0),
    )
}

/// Trains `net` with mini-batches in a fresh random order each epoch.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    net: &mut Network,
    optimizer: &mut Optimizer,
    train: &Examples<'_>,
    valid: Option<&Examples<'_>>,
    options: &FitOptions,
    rng: &mut ChaCha8Rng,
    phase: &str,
    observer: &dyn Observer,
) -> Vec<EpochLog> {
    // Run on a pool thread, so that each step's `rayon::join` hands one half to the other pool
    // thread instead of parking this one and waking two.
    if options.threads >= 2 && rayon::current_thread_index().is_none() {
        return rayon::scope(|_| {
            fit_here(net, optimizer, train, valid, options, rng, phase, observer)
        });
    }
    fit_here(net, optimizer, train, valid, options, rng, phase, observer)
}

/// [`fit`] on the current thread.
#[allow(clippy::too_many_arguments)]
fn fit_here(
    net: &mut Network,
    optimizer: &mut Optimizer,
    train: &Examples<'_>,
    valid: Option<&Examples<'_>>,
    options: &FitOptions,
    rng: &mut ChaCha8Rng,
    phase: &str,
    observer: &dyn Observer,
) -> Vec<EpochLog> {
    let in_width = net.input_size();
    let out_width = net.output_size();
    let batch = options.batch_size.max(1);
    // Sampled epochs draw their rows from `rows`; full ones reshuffle one visiting order.
    let sampled = options.epoch_rows.filter(|&s| s < train.len);
    let mut rows: Vec<usize> = match sampled {
        Some(_) => (0..train.len).collect(),
        None => Vec::new(),
    };
    let mut order: Vec<usize> = match sampled {
        Some(s) => Vec::with_capacity(s + train.again.len()),
        None => (0..train.len).chain(train.again.iter().copied()).collect(),
    };
    let steps = (sampled.unwrap_or(train.len) + train.again.len()).div_ceil(batch);
    observer.phase_started(phase, options.epochs, steps);
    let mut halves = [Workspace::default(), Workspace::default()];
    let mut x = vec![0.0f32; batch * in_width];
    let mut unshifted = vec![0.0f32; in_width];
    let mut values = Vec::new();
    let mut mix_scratch = (Vec::new(), Vec::new());
    let mut classes = Vec::new();
    let mut logs = Vec::with_capacity(options.epochs);
    let base_rate = optimizer.learning_rate();
    for epoch in 1..=options.epochs {
        let started = Instant::now();
        if options.cosine_decay {
            let progress = (epoch - 1) as f32 / options.epochs as f32;
            optimizer.set_learning_rate(
                base_rate * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()),
            );
        }
        if let Some(s) = sampled {
            order.clear();
            order.extend_from_slice(rows.partial_shuffle(rng, s).0);
            order.extend_from_slice(train.again);
        }
        order.shuffle(rng);
        let (mut loss_sum, mut hits, mut hit_total) = (0.0, 0.0, 0.0);
        for chunk in order.chunks(batch) {
            let n = chunk.len();
            for (row, &i) in x.chunks_exact_mut(in_width).zip(chunk) {
                match options.shift {
                    Some(shift) if shift.max > 0 => {
                        let m = shift.max as i64;
                        let (dx, dy) = (
                            rng.random_range(-m..=m) as isize,
                            rng.random_range(-m..=m) as isize,
                        );
                        train.inputs.row_into(i, &mut unshifted);
                        shift.apply(&unshifted, dx, dy, row);
                    }
                    _ => train.inputs.row_into(i, row),
                }
            }
            // An autoencoder's target is its clean input: keep it before noise alters `x`.
            let reconstruct = matches!(train.targets, Targets::Inputs);
            let target_is_x = reconstruct && options.input_noise == 0.0 && options.mixup == 0.0;
            if reconstruct && !target_is_x {
                values.clear();
                values.extend_from_slice(&x[..n * in_width]);
            }
            if options.input_noise > 0.0 {
                for v in &mut x[..n * in_width] {
                    if rng.random::<f32>() < options.input_noise {
                        *v = 0.0;
                    }
                }
            }
            let target = match train.targets {
                Targets::Inputs if target_is_x => Target::Values(&x[..n * in_width]),
                Targets::Inputs => Target::Values(&values),
                Targets::Values(t) => {
                    values.clear();
                    for &i in chunk {
                        values.extend_from_slice(&t[i * out_width..(i + 1) * out_width]);
                    }
                    Target::Values(&values)
                }
                Targets::Classes(c) => {
                    classes.clear();
                    classes.extend(chunk.iter().map(|&i| c[i]));
                    Target::Classes(&classes)
                }
            };
            let target = match target {
                Target::Values(_) if options.mixup > 0.0 && n > 1 => {
                    mix(
                        &mut x[..n * in_width],
                        &mut values[..n * out_width],
                        n,
                        options.mixup,
                        rng,
                        &mut mix_scratch,
                    );
                    Target::Values(&values[..n * out_width])
                }
                other => other,
            };
            let stats = batch_gradients(
                net,
                &mut halves,
                &x[..n * in_width],
                target,
                options.loss,
                options.threads,
            );
            optimizer.step(net, &halves[0].grads);
            loss_sum += stats.loss_sum;
            hits += stats.hits;
            hit_total += stats.hit_total;
            observer.step_done();
        }
        let seconds = started.elapsed().as_secs_f64();
        let (valid_loss, valid_metric) = match valid {
            Some(v) => {
                let (l, m) = evaluate(net, v, options.loss, options.threads);
                (Some(l), Some(m))
            }
            None => (None, None),
        };
        let log = EpochLog {
            epoch,
            loss: loss_sum / order.len() as f64,
            metric: hits / hit_total.max(1.0),
            valid_loss,
            valid_metric,
            seconds,
        };
        observer.epoch_done(phase, &log);
        logs.push(log);
    }
    optimizer.set_learning_rate(base_rate);
    observer.phase_done(phase);
    logs
}

/// The mean gradient of one mini-batch, computed as two halves (the first one row longer when `n`
/// is odd) whose gradients are combined by their sizes into `halves[0].grads`. With two or more
/// threads each half runs on its own thread with single-threaded matrix products: one hand-off
/// per step instead of one per matrix product, which on 2-core machines cost more than the
/// products saved. The split is the same whatever `threads` is, so the weights do not depend on it.
fn batch_gradients(
    net: &Network,
    halves: &mut [Workspace; 2],
    x: &[f32],
    target: Target<'_>,
    loss: Loss,
    threads: usize,
) -> StepStats {
    let width = net.input_size();
    let n = x.len() / width;
    if n < 2 {
        return net.compute_gradients(&mut halves[0], x, target, loss, n, 1);
    }
    let first = n.div_ceil(2);
    let (x0, x1) = x.split_at(first * width);
    let (t0, t1) = match target {
        Target::Values(v) => {
            let (a, b) = v.split_at(first * (v.len() / n));
            (Target::Values(a), Target::Values(b))
        }
        Target::Classes(c) => {
            let (a, b) = c.split_at(first);
            (Target::Classes(a), Target::Classes(b))
        }
    };
    let [w0, w1] = halves;
    let mut run0 = move || net.compute_gradients(w0, x0, t0, loss, first, 1);
    let mut run1 = move || net.compute_gradients(w1, x1, t1, loss, n - first, 1);
    let (s0, s1) = if threads >= 2 {
        rayon::join(run0, run1)
    } else {
        (run0(), run1())
    };
    let [w0, w1] = halves;
    let (a, b) = (first as f32 / n as f32, (n - first) as f32 / n as f32);
    for ((g0, g1), p) in w0.grads.iter_mut().zip(&w1.grads).zip(&net.params) {
        if !p.frozen {
            g0.iter_mut().zip(g1).for_each(|(u, v)| *u = a * *u + b * v);
        }
    }
    StepStats {
        loss_sum: s0.loss_sum + s1.loss_sum,
        hits: s0.hits + s1.hits,
        hit_total: s0.hit_total + s1.hit_total,
    }
}

/// Mixup: row k becomes λ_k·row_k + (1-λ_k)·row_(k+1 mod n) in both `x` and `y`.
fn mix(
    x: &mut [f32],
    y: &mut [f32],
    n: usize,
    alpha: f32,
    rng: &mut ChaCha8Rng,
    scratch: &mut (Vec<f32>, Vec<f32>),
) {
    let beta = rand_distr::Beta::new(alpha, alpha).expect("alpha > 0");
    scratch.0.clear();
    scratch.0.extend_from_slice(x);
    scratch.1.clear();
    scratch.1.extend_from_slice(y);
    let (xw, yw) = (x.len() / n, y.len() / n);
    for k in 0..n {
        let lambda: f32 = rand_distr::Distribution::sample(&beta, rng);
        let j = (k + 1) % n;
        for (v, (&a, &b)) in x[k * xw..(k + 1) * xw].iter_mut().zip(
            scratch.0[k * xw..]
                .iter()
                .zip(&scratch.0[j * xw..(j + 1) * xw]),
        ) {
            *v = lambda * a + (1.0 - lambda) * b;
        }
        for (v, (&a, &b)) in y[k * yw..(k + 1) * yw].iter_mut().zip(
            scratch.1[k * yw..]
                .iter()
                .zip(&scratch.1[j * yw..(j + 1) * yw]),
        ) {
            *v = lambda * a + (1.0 - lambda) * b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{mix, Shift};
    use rand::SeedableRng;

    #[test]
    fn mixup_blends_each_row_with_its_neighbour_in_inputs_and_targets_alike() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut x = vec![0.0, 0.0, 1.0, 1.0, 4.0, 4.0];
        let mut y = vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.5];
        mix(
            &mut x,
            &mut y,
            3,
            0.4,
            &mut rng,
            &mut (Vec::new(), Vec::new()),
        );
        for k in 0..3 {
            // Row k is λ·row_k + (1-λ)·row_(k+1): recover λ from x, check y agrees.
            let (a, b) = ([0.0, 1.0, 4.0][k], [0.0, 1.0, 4.0][(k + 1) % 3]);
            let lambda = if a == b {
                None
            } else {
                Some((x[2 * k] - b) / (a - b))
            };
            assert_eq!(x[2 * k], x[2 * k + 1]);
            assert!(
                (y[2 * k] + y[2 * k + 1] - 1.0).abs() < 1e-6,
                "targets stay distributions"
            );
            if let Some(l) = lambda {
                assert!((0.0..=1.0).contains(&l));
                let ya = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]];
                let want = l * ya[k][0] + (1.0 - l) * ya[(k + 1) % 3][0];
                assert!((y[2 * k] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn shift_moves_pixels_and_fills_the_gap_with_zero() {
        let s = Shift {
            width: 3,
            height: 2,
            max: 1,
        };
        let image = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = [9.0; 6];
        s.apply(&image, 1, 0, &mut out);
        assert_eq!(out, [0.0, 1.0, 2.0, 0.0, 4.0, 5.0]);
        s.apply(&image, -1, 1, &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 2.0, 3.0, 0.0]);
        s.apply(&image, 0, 0, &mut out);
        assert_eq!(out, image);
    }
}
