//! A stack of dense layers with a hand-written, fused forward and backward pass.
//!
//! Candle's autograd builds a graph and allocates every intermediate on every step; for this
//! small layer stack that costs about three times PyTorch's epoch time. Here each layer writes
//! into buffers that live as long as training does, derivatives are taken from the layer
//! outputs, and the loss gradient is fused with the output activation. `model::oracle` keeps
//! the candle autograd version to check these gradients.

use super::fastmath;
use super::linalg::{matmul, View};
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// SELU's scale (λ) and alpha constants.
pub const SELU_LAMBDA: f32 = 1.050_701;
/// SELU's alpha.
pub const SELU_ALPHA: f32 = 1.673_263_2;

/// The non-linearity applied after a layer's affine map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Self-normalising exponential linear unit (hidden layers).
    Selu,
    /// Logistic function (pixel outputs in [0, 1]).
    Sigmoid,
    /// No activation (logits; the softmax lives in the loss).
    Linear,
}

impl Activation {
    /// Name used in checkpoints and reports.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Selu => "selu",
            Activation::Sigmoid => "sigmoid",
            Activation::Linear => "linear",
        }
    }

    pub(crate) fn apply(self, values: &mut [f32]) {
        fastmath::wide(|| self.apply_scalar(values));
    }

    #[inline(always)]
    fn apply_scalar(self, values: &mut [f32]) {
        match self {
            Activation::Selu => {
                for v in values {
                    *v = if *v > 0.0 {
                        SELU_LAMBDA * *v
                    } else {
                        SELU_LAMBDA * SELU_ALPHA * (fastmath::exp(*v) - 1.0)
                    };
                }
            }
            Activation::Sigmoid => {
                for v in values {
                    *v = 1.0 / (1.0 + fastmath::exp(-*v));
                }
            }
            Activation::Linear => {}
        }
    }

    /// Multiplies `delta` by the derivative, expressed through the layer's output `y`.
    fn backprop(self, delta: &mut [f32], y: &[f32]) {
        fastmath::wide(|| self.backprop_scalar(delta, y));
    }

    #[inline(always)]
    fn backprop_scalar(self, delta: &mut [f32], y: &[f32]) {
        match self {
            Activation::Selu => {
                for (d, &y) in delta.iter_mut().zip(y) {
                    *d *= if y > 0.0 {
                        SELU_LAMBDA
                    } else {
                        y + SELU_LAMBDA * SELU_ALPHA
                    };
                }
            }
            Activation::Sigmoid => {
                for (d, &y) in delta.iter_mut().zip(y) {
                    *d *= y * (1.0 - y);
                }
            }
            Activation::Linear => {}
        }
    }
}

/// A named weight or bias; `shape` is `[rows, cols]` (a bias is `[1, n]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Checkpoint name, e.g. `encoder.0.weight`.
    pub name: String,
    /// `[rows, cols]`, row-major.
    pub shape: [usize; 2],
    /// The values.
    pub value: Vec<f32>,
    /// Frozen parameters get no gradient and are never updated.
    pub frozen: bool,
}

impl Param {
    /// A zero-filled parameter.
    pub fn zeros(name: impl Into<String>, rows: usize, cols: usize) -> Self {
        Self {
            name: name.into(),
            shape: [rows, cols],
            value: vec![0.0; rows * cols],
            frozen: false,
        }
    }
}

/// One dense layer: `y = activation(x · W + b)`, or `x · Wᵀ` when `transposed` (tied decoders).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Index of the weight in `Network::params`; shape `[inputs, outputs]` (or the reverse when transposed).
    pub weight: usize,
    /// Reads the weight transposed, so a decoder layer can share an encoder matrix.
    pub transposed: bool,
    /// Index of the bias in `Network::params`.
    pub bias: usize,
    /// Non-linearity after the affine map.
    pub activation: Activation,
}

/// What a training step compares the network output with.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// Pixel or code targets, same shape as the output; with softmax cross-entropy, one
    /// probability distribution per example (soft labels).
    Values(&'a [f32]),
    /// One class index per example.
    Classes(&'a [u32]),
}

/// The loss a step minimises, averaged over the batch (and over outputs for per-value losses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Binary cross-entropy on a sigmoid output (Keras `binary_crossentropy`).
    BinaryCrossEntropy,
    /// Mean squared error.
    MeanSquaredError,
    /// Softmax cross-entropy on linear logits.
    SoftmaxCrossEntropy,
}

/// Sums over one batch, to be divided by the number of examples (or values) seen.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// Loss summed over examples (each example's loss is already averaged over its outputs).
    pub loss_sum: f64,
    /// Rounded-accuracy pixels (per-value losses) or correct predictions (classification), summed.
    pub hits: f64,
    /// Denominator for `hits`: outputs compared.
    pub hit_total: f64,
}

/// Dense layers sharing a parameter list; the unit that trains, saves and serves.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    /// Weights and biases; layers refer to them by index so decoders can share encoder weights.
    pub params: Vec<Param>,
    /// Layers in forward order.
    pub layers: Vec<Layer>,
}

/// Buffers reused across training steps: layer outputs, deltas and gradients.
#[derive(Debug, Default)]
pub struct Workspace {
    outputs: Vec<Vec<f32>>,
    delta: Vec<f32>,
    delta_below: Vec<f32>,
    /// Gradient per parameter, same layout as `Network::params`.
    pub grads: Vec<Vec<f32>>,
    fresh: Vec<bool>,
}

/// Draws a LeCun-normal matrix (truncated at two standard deviations, as Keras does), the
/// initialisation SELU's self-normalisation assumes.
pub fn lecun_normal(rng: &mut impl Rng, fan_in: usize, len: usize) -> Vec<f32> {
    // Keras divides by the std of a unit normal truncated at ±2 so the result has the target std.
    let std = (1.0 / fan_in as f32).sqrt() / 0.879_625_7;
    let normal = Normal::new(0.0f32, 1.0).expect("unit normal is valid");
    (0..len)
        .map(|_| loop {
            let z: f32 = normal.sample(rng);
            if z.abs() <= 2.0 {
                break z * std;
            }
        })
        .collect()
}

/// Draws a Glorot-uniform matrix, Keras's default for non-SELU layers.
pub fn glorot_uniform(rng: &mut impl Rng, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
    let dist = Uniform::new_inclusive(-limit, limit).expect("finite limits");
    (0..fan_in * fan_out).map(|_| dist.sample(rng)).collect()
}

impl Network {
    /// Input width of the first layer.
    pub fn input_size(&self) -> usize {
        self.layer_dims(0).0
    }

    /// Output width of the last layer.
    pub fn output_size(&self) -> usize {
        self.layers.last().map_or(0, |l| self.layer_dims_of(l).1)
    }

    /// `(inputs, outputs)` of layer `index`.
    pub fn layer_dims(&self, index: usize) -> (usize, usize) {
        self.layer_dims_of(&self.layers[index])
    }

    fn layer_dims_of(&self, layer: &Layer) -> (usize, usize) {
        let [r, c] = self.params[layer.weight].shape;
        if layer.transposed {
            (c, r)
        } else {
            (r, c)
        }
    }

    /// Adds a parameter and returns its index.
    pub fn push_param(&mut self, param: Param) -> usize {
        self.params.push(param);
        self.params.len() - 1
    }

    /// Index of the parameter called `name`.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }

    /// Freezes (or unfreezes) both parameters of every layer below `count`; others become trainable.
    pub fn freeze_lowest(&mut self, count: usize) {
        for p in &mut self.params {
            p.frozen = false;
        }
        for i in 0..count.min(self.layers.len()) {
            let l = self.layers[i];
            self.params[l.weight].frozen = true;
            self.params[l.bias].frozen = true;
        }
    }

    /// Runs layers `range` on `n` row-major inputs and returns the last output (`n × width`).
    pub fn forward_range(
        &self,
        input: &[f32],
        n: usize,
        range: std::ops::Range<usize>,
        threads: usize,
    ) -> Vec<f32> {
        let mut current = input[..n * self.layer_dims(range.start).0].to_vec();
        for index in range {
            let layer = self.layers[index];
            let (inputs, outputs) = self.layer_dims_of(&layer);
            let mut next = vec![0.0; n * outputs];
            self.affine(&layer, &current, n, inputs, &mut next, threads);
            layer.activation.apply(&mut next);
            current = next;
        }
        current
    }

    /// Runs the whole network on `n` inputs.
    pub fn forward(&self, input: &[f32], n: usize, threads: usize) -> Vec<f32> {
        self.forward_range(input, n, 0..self.layers.len(), threads)
    }

    fn affine(
        &self,
        layer: &Layer,
        x: &[f32],
        n: usize,
        inputs: usize,
        out: &mut [f32],
        threads: usize,
    ) {
        let w = &self.params[layer.weight];
        let mut wv = View::new(&w.value, w.shape[0], w.shape[1]);
        if layer.transposed {
            wv = wv.t();
        }
        let bias = &self.params[layer.bias].value;
        let outputs = bias.len();
        for row in out.chunks_exact_mut(outputs).take(n) {
            row.copy_from_slice(bias);
        }
        matmul(out, View::new(x, n, inputs), wv, true, threads);
    }

    /// Index of the first layer that has something to train; layers below it are skipped in the
    /// backward pass (no gradient is ever needed there).
    fn first_trainable_layer(&self) -> usize {
        self.layers
            .iter()
            .position(|l| !self.params[l.weight].frozen || !self.params[l.bias].frozen)
            .unwrap_or(self.layers.len())
    }

    /// Forward and backward pass on one batch; gradients land in `ws.grads`.
    pub fn compute_gradients(
        &self,
        ws: &mut Workspace,
        input: &[f32],
        target: Target<'_>,
        loss: Loss,
        n: usize,
        threads: usize,
    ) -> StepStats {
        let depth = self.layers.len();
        ws.outputs.resize_with(depth + 1, Vec::new);
        ws.grads.resize_with(self.params.len(), Vec::new);
        ws.fresh.clear();
        ws.fresh.resize(self.params.len(), true);
        // outputs[0] stays empty: layer 0 reads `input` directly instead of a copy.
        let input = &input[..n * self.input_size()];
        for index in 0..depth {
            let layer = self.layers[index];
            let (inputs, outputs) = self.layer_dims_of(&layer);
            let (below, above) = ws.outputs.split_at_mut(index + 1);
            let x = if index == 0 { input } else { &below[index][..] };
            let out = &mut above[0];
            out.resize(n * outputs, 0.0);
            self.affine(&layer, x, n, inputs, out, threads);
            layer.activation.apply(out);
        }

        let out_width = self.output_size();
        let last = self.layers[depth - 1];
        let stats = output_delta(
            &ws.outputs[depth],
            target,
            loss,
            last.activation,
            n,
            out_width,
            &mut ws.delta,
        );

        let stop = self.first_trainable_layer();
        for index in (stop..depth).rev() {
            let layer = self.layers[index];
            let (inputs, outputs) = self.layer_dims_of(&layer);
            let x = if index == 0 {
                input
            } else {
                &ws.outputs[index][..]
            };
            let delta = &ws.delta[..n * outputs];

            let bias = &self.params[layer.bias];
            if !bias.frozen {
                let g = &mut ws.grads[layer.bias];
                g.resize(outputs, 0.0);
                if ws.fresh[layer.bias] {
                    g.fill(0.0);
                    ws.fresh[layer.bias] = false;
                }
                for row in delta.chunks_exact(outputs) {
                    for (gi, di) in g.iter_mut().zip(row) {
                        *gi += di;
                    }
                }
            }
            let weight = &self.params[layer.weight];
            if !weight.frozen {
                let g = &mut ws.grads[layer.weight];
                g.resize(inputs * outputs, 0.0);
                let accumulate = !ws.fresh[layer.weight];
                ws.fresh[layer.weight] = false;
                let xv = View::new(x, n, inputs);
                let dv = View::new(delta, n, outputs);
                if layer.transposed {
                    matmul(g, dv.t(), xv, accumulate, threads);
                } else {
                    matmul(g, xv.t(), dv, accumulate, threads);
                }
            }
            if index > stop {
                let mut wv = View::new(&weight.value, weight.shape[0], weight.shape[1]);
                if !layer.transposed {
                    wv = wv.t();
                }
                ws.delta_below.resize(n * inputs, 0.0);
                matmul(
                    &mut ws.delta_below,
                    View::new(delta, n, outputs),
                    wv,
                    false,
                    threads,
                );
                self.layers[index - 1]
                    .activation
                    .backprop(&mut ws.delta_below, x);
                std::mem::swap(&mut ws.delta, &mut ws.delta_below);
            }
        }
        // A parameter used by no trained layer keeps a zero gradient rather than a stale one.
        for (i, fresh) in ws.fresh.iter().enumerate() {
            if *fresh {
                let len = self.params[i].value.len();
                ws.grads[i].clear();
                ws.grads[i].resize(len, 0.0);
            }
        }
        stats
    }
}

/// Writes dLoss/d(pre-activation output) into `delta` and returns the batch's loss and hits.
fn output_delta(
    y: &[f32],
    target: Target<'_>,
    loss: Loss,
    activation: Activation,
    n: usize,
    width: usize,
    delta: &mut Vec<f32>,
) -> StepStats {
    delta.resize(n * width, 0.0);
    #[cfg(target_arch = "x86_64")]
    {
        if fastmath::has_avx2_fma() {
            // SAFETY: the CPU supports the features the function is compiled with.
            return unsafe { output_delta_avx2(y, target, loss, activation, n, width, delta) };
        }
    }
    output_delta_into(y, target, loss, activation, n, width, delta)
}

/// Predictions are clamped to `[ε, 1 − ε]` before the logarithms of the BCE loss.
const BCE_EPS: f32 = 1e-7;

/// The BCE loss and delta of [`output_delta_into`] over whole groups of eight values, with the
/// scalar loop's operations lane for lane (the same bits); returns how many values it took.
/// Left to the autovectoriser this loop ran one value at a time (2.5× slower).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn bce_groups_avx2(
    delta: &mut [f32],
    y: &[f32],
    t: &[f32],
    scale: f32,
    lanes: &mut [f32; 8],
    hit_lanes: &mut [u32; 8],
) -> usize {
    use std::arch::x86_64::*;
    let groups = delta.len().min(y.len()).min(t.len()) / 8;
    let one = _mm256_set1_ps(1.0);
    let half = _mm256_set1_ps(0.5);
    // SAFETY: `lanes` and `hit_lanes` hold eight values each.
    let (mut loss, mut hits) = unsafe {
        (
            _mm256_loadu_ps(lanes.as_ptr()),
            _mm256_loadu_si256(hit_lanes.as_ptr().cast()),
        )
    };
    for g in 0..groups {
        // SAFETY: values `8g..8g + 8` lie inside all three slices.
        let (p, t) = unsafe {
            (
                _mm256_loadu_ps(y.as_ptr().add(8 * g)),
                _mm256_loadu_ps(t.as_ptr().add(8 * g)),
            )
        };
        let d = _mm256_mul_ps(_mm256_sub_ps(p, t), _mm256_set1_ps(scale));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(delta.as_mut_ptr().add(8 * g), d) };
        let pc = _mm256_min_ps(
            _mm256_max_ps(p, _mm256_set1_ps(BCE_EPS)),
            _mm256_set1_ps(1.0 - BCE_EPS),
        );
        let term = _mm256_add_ps(
            _mm256_mul_ps(t, fastmath::ln_avx2(pc)),
            _mm256_mul_ps(
                _mm256_sub_ps(one, t),
                fastmath::ln_avx2(_mm256_sub_ps(one, pc)),
            ),
        );
        loss = _mm256_sub_ps(loss, term);
        // A hit when both sides of 0.5 agree: 1 + (all ones where they differ).
        let differ = _mm256_xor_ps(
            _mm256_cmp_ps::<_CMP_GE_OQ>(p, half),
            _mm256_cmp_ps::<_CMP_GE_OQ>(t, half),
        );
        hits = _mm256_add_epi32(
            hits,
            _mm256_add_epi32(_mm256_set1_epi32(1), _mm256_castps_si256(differ)),
        );
    }
    // SAFETY: as for the loads.
    unsafe {
        _mm256_storeu_ps(lanes.as_mut_ptr(), loss);
        _mm256_storeu_si256(hit_lanes.as_mut_ptr().cast(), hits);
    }
    groups * 8
}

/// [`output_delta_into`] compiled for AVX2 + FMA (too large for `fastmath::wide`'s closure
/// to be inlined).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_delta_avx2(
    y: &[f32],
    target: Target<'_>,
    loss: Loss,
    activation: Activation,
    n: usize,
    width: usize,
    delta: &mut [f32],
) -> StepStats {
    output_delta_into(y, target, loss, activation, n, width, delta)
}

#[inline(always)]
fn output_delta_into(
    y: &[f32],
    target: Target<'_>,
    loss: Loss,
    activation: Activation,
    n: usize,
    width: usize,
    delta: &mut [f32],
) -> StepStats {
    let mut stats = StepStats::default();
    match (loss, target) {
        (Loss::BinaryCrossEntropy, Target::Values(t)) => {
            assert_eq!(
                activation,
                Activation::Sigmoid,
                "BCE expects a sigmoid output"
            );
            let scale = 1.0 / (n * width) as f32;
            // Eight independent lanes (one f64 sum would serialise the loop), value `i` in lane
            // `i % 8`, whether the AVX2 loop or the scalar one adds it.
            let mut lanes = [0.0f32; 8];
            let mut hit_lanes = [0u32; 8];
            let (delta, y, t) = (&mut delta[..n * width], &y[..n * width], &t[..n * width]);
            #[allow(unused_mut)]
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if fastmath::has_avx2_fma() {
                // SAFETY: the CPU has AVX2.
                done = unsafe { bce_groups_avx2(delta, y, t, scale, &mut lanes, &mut hit_lanes) };
            }
            let rest = delta[done..].iter_mut().zip(&y[done..]).zip(&t[done..]);
            for (i, ((d, &p), &t)) in rest.enumerate() {
                // Sigmoid and BCE fused: the derivative w.r.t. the logit is p - t.
                *d = (p - t) * scale;
                let pc = p.clamp(BCE_EPS, 1.0 - BCE_EPS);
                lanes[i % 8] -= t * fastmath::ln(pc) + (1.0 - t) * fastmath::ln(1.0 - pc);
                hit_lanes[i % 8] += u32::from((p >= 0.5) == (t >= 0.5));
            }
            stats.loss_sum = fastmath::sum(&lanes) / width as f64;
            stats.hits = hit_lanes.iter().map(|&h| f64::from(h)).sum();
            stats.hit_total = (n * width) as f64;
        }
        (Loss::MeanSquaredError, Target::Values(t)) => {
            let scale = 2.0 / (n * width) as f32;
            let mut total = 0.0f64;
            let mut hits = 0usize;
            for ((d, &p), &t) in delta.iter_mut().zip(&y[..n * width]).zip(&t[..n * width]) {
                let e = p - t;
                *d = e * scale;
                total += f64::from(e * e);
                hits += usize::from((p >= 0.5) == (t >= 0.5));
            }
            activation.backprop(delta, &y[..n * width]);
            stats.loss_sum = total / width as f64;
            stats.hits = hits as f64;
            stats.hit_total = (n * width) as f64;
        }
        (Loss::SoftmaxCrossEntropy, target) => {
            // Hard classes, or soft targets (a distribution per row, e.g. a teacher's).
            assert_eq!(
                activation,
                Activation::Linear,
                "softmax cross-entropy expects logits"
            );
            let scale = 1.0 / n as f32;
            let mut total = 0.0f64;
            let mut hits = 0usize;
            let rows = delta.chunks_exact_mut(width).zip(y.chunks_exact(width));
            for (i, (row, logits)) in rows.take(n).enumerate() {
                let q = |j: usize| match target {
                    Target::Classes(c) => f32::from(u8::from(c[i] as usize == j)),
                    Target::Values(v) => v[i * width + j],
                };
                let truth = match target {
                    Target::Classes(c) => c[i] as usize,
                    Target::Values(v) => argmax(&v[i * width..(i + 1) * width]),
                };
                softmax_into(logits, row);
                hits += usize::from(argmax(row) == truth);
                for (j, d) in row.iter_mut().enumerate() {
                    let (p, qj) = (*d, q(j));
                    if qj > 0.0 {
                        total -= f64::from(qj * p.max(1e-30).ln());
                    }
                    *d = (p - qj) * scale;
                }
            }
            stats.loss_sum = total;
            stats.hits = hits as f64;
            stats.hit_total = n as f64;
        }
        (loss, _) => panic!("loss {loss:?} does not take this kind of target"),
    }
    stats
}

/// Numerically stable softmax of `logits` into `out`.
pub fn softmax_into(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = fastmath::exp(l - max);
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

impl Network {
    /// Loss and hits of the network on `n` examples, without a backward pass.
    pub fn evaluate(
        &self,
        input: &[f32],
        target: Target<'_>,
        loss: Loss,
        n: usize,
        threads: usize,
    ) -> StepStats {
        const CHUNK: usize = 1024;
        let in_width = self.input_size();
        let out_width = self.output_size();
        let activation = self.layers[self.layers.len() - 1].activation;
        let mut total = StepStats::default();
        let mut scratch = Vec::new();
        let mut start = 0;
        while start < n {
            let m = CHUNK.min(n - start);
            let y = self.forward(&input[start * in_width..], m, threads);
            let t = match target {
                Target::Values(v) => Target::Values(&v[start * out_width..]),
                Target::Classes(c) => Target::Classes(&c[start..]),
            };
            let s = output_delta(&y, t, loss, activation, m, out_width, &mut scratch);
            total.loss_sum += s.loss_sum;
            total.hits += s.hits;
            total.hit_total += s.hit_total;
            start += m;
        }
        total
    }
}
