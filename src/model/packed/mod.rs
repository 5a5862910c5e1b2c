//! The serving forward pass: a network's weights packed once into column panels, and a
//! register-tiled kernel chosen at run time (AVX-512 or AVX2 + FMA).
//!
//! Training multiplies batch-32 matrices through `linalg::matmul`; serving runs the same few
//! weight matrices over and over on batches of up to a thousand 8-bit images. Here the weights
//! are laid out once the way the kernel reads them, a batch is split in row blocks across the
//! threads (no synchronisation between layers), and each thread runs the whole layer stack on a
//! handful of rows at a time, so its activations never leave L1: pixels become floats
//! (`p / 255`) right before the first layer, every output tile starts from the bias, and the
//! activation (and softmax) runs while the tile is still in cache.

use super::net::{softmax_into, Activation, Network};
use rayon::prelude::*;

/// Floats a buffer is aligned to (64 bytes: one cache line, one AVX-512 vector).
const ALIGN: usize = 16;

/// A `Vec<f32>` whose usable part starts on a 64-byte boundary, so vector loads of packed
/// weights never straddle cache lines.
struct Aligned {
    buffer: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn zeros(len: usize) -> Self {
        let buffer = vec![0.0f32; len + ALIGN];
        let misalignment = (buffer.as_ptr() as usize / 4) % ALIGN;
        let start = (ALIGN - misalignment) % ALIGN;
        Self { buffer, start, len }
    }

    fn as_slice(&self) -> &[f32] {
        &self.buffer[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buffer[self.start..self.start + self.len]
    }
}

/// The instruction set the tile kernel runs on; fixes the panel width and the rows per tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// 16-lane vectors, 32 registers: 12 rows × 32 columns per tile.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// 8-lane vectors, 16 registers: 6 rows × 16 columns per tile.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The best kernel this CPU runs, or `None` without AVX2 + FMA. `AELABEL_ENGINE_KERNEL`
    /// (`avx512`, `avx2` or `portable`) picks a lesser one, to compare kernels on one machine
    /// or to avoid AVX-512 where it lowers the clock; a kernel the CPU lacks is not taken.
    fn detect() -> Option<Self> {
        let wanted = std::env::var("AELABEL_ENGINE_KERNEL").ok();
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = std::arch::is_x86_feature_detected!("avx512f");
            Self::choose(wanted.as_deref(), avx512, super::fastmath::has_avx2_fma())
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = wanted;
            None
        }
    }

    /// The kernel for a CPU with (`avx512`, `avx2`) when `wanted` names the best one allowed;
    /// an unknown name is ignored with a warning rather than silently meaning `portable`.
    #[cfg(target_arch = "x86_64")]
    fn choose(wanted: Option<&str>, avx512: bool, avx2: bool) -> Option<Self> {
        let ceiling = match wanted {
            None | Some("avx512") => 2,
            Some("avx2") => 1,
            Some("portable") => 0,
            Some(other) => {
                tracing::warn!(
                    value = other,
                    "AELABEL_ENGINE_KERNEL is not avx512, avx2 or portable: using the best kernel"
                );
                2
            }
        };
        if ceiling >= 2 && avx512 {
            Some(Kernel::Avx512)
        } else if ceiling >= 1 && avx2 {
            Some(Kernel::Avx2)
        } else {
            None
        }
    }

    /// Columns per packed panel.
    fn panel_width(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => 32,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 16,
        }
    }

    /// Rows per full tile.
    fn tile_rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => 12,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 6,
        }
    }

    /// Panels one tile of `rows` rows takes at once when `left` remain: 4 for one row, 2 for
    /// two or three (enough independent multiply-adds to hide their latency), else 1.
    fn panels_at_once(self, rows: usize, left: usize) -> usize {
        let wanted = match rows {
            1 => 4,
            2 | 3 => 2,
            _ => 1,
        };
        [4, 2, 1]
            .into_iter()
            .find(|&g| g <= wanted && g <= left)
            .unwrap_or(1)
    }

    /// Computes one tile, see [`Tile`].
    ///
    /// # Safety
    /// `tile.a` holds `rows` rows of `k` floats `lda` apart; `tile.panel` holds `tile.panels`
    /// panels of `k × panel_width` floats and `tile.bias` `tile.panels × panel_width`, both
    /// 64-byte aligned; `tile.c` holds `rows` rows of `tile.panels × panel_width` floats `ldc`
    /// apart; `tile.panels` is what [`Self::panels_at_once`] gave; the CPU has the kernel's
    /// features.
    unsafe fn tile(self, rows: usize, tile: Tile) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x86::tile_avx512(rows, tile),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::tile_avx2(rows, tile),
        }
    }

    /// `out[i] = bytes[i] / 255`, exactly as `data::bytes_to_unit`, in vectors.
    fn bytes_to_unit(self, bytes: &[u8], out: &mut [f32]) {
        // SAFETY: `self` was detected on this CPU, so it has the function's features.
        unsafe {
            match self {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 => x86::bytes_to_unit_avx512(bytes, out),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => x86::bytes_to_unit_avx2(bytes, out),
            }
        }
    }
}

/// `out[i] = bytes[i] / 255`, exactly as `data::bytes_to_unit`, in the widest vectors the CPU
/// has: training converts every batch of byte images through this (the scalar loop took ~4 %
/// of a reference epoch).
pub(crate) fn bytes_to_unit(bytes: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { x86::bytes_to_unit_avx512(bytes, out) };
        }
        if super::fastmath::has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { x86::bytes_to_unit_avx2(bytes, out) };
        }
    }
    crate::data::bytes_to_unit(bytes, out)
}

/// One tile's operands: `c[i, 0..w) = bias + a[i, 0..k) · panel`, through SELU when `selu`,
/// for the rows of `a` and `c` and `panels` consecutive panels (`w` = their width).
#[derive(Clone, Copy)]
struct Tile {
    a: *const f32,
    lda: usize,
    k: usize,
    panel: *const f32,
    panels: usize,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    selu: bool,
}

/// One dense layer, its weights in panels of `panel_width` columns (`k × panel_width` floats
/// each, zero-padded past `outputs`).
struct PackedLayer {
    inputs: usize,
    outputs: usize,
    panels: usize,
    weights: Aligned,
    bias: Aligned,
    activation: Activation,
}

/// Per-thread buffers of [`PackedNetwork::run_block`].
struct Scratch {
    x: Aligned,
    ping: Aligned,
    pong: Aligned,
    probabilities: Vec<f32>,
}

/// Row blocks per thread in a batch: enough for the threads to even out when one of them is
/// preempted, few enough that scheduling them costs nothing measurable.
const BLOCKS_PER_THREAD: usize = 8;

/// Layers of a [`Network`] packed for the serving kernel of this CPU.
pub struct PackedNetwork {
    kernel: Kernel,
    layers: Vec<PackedLayer>,
    softmax: bool,
}

impl PackedNetwork {
    /// Packs layers `range` of `net` (then a softmax over the last outputs when `softmax`), or
    /// `None` when the CPU has neither AVX-512 nor AVX2 + FMA (callers fall back to
    /// [`Network::forward_range`]).
    pub fn new(net: &Network, range: std::ops::Range<usize>, softmax: bool) -> Option<Self> {
        let kernel = Kernel::detect()?;
        Some(Self::with_kernel(kernel, net, range, softmax))
    }

    fn with_kernel(
        kernel: Kernel,
        net: &Network,
        range: std::ops::Range<usize>,
        softmax: bool,
    ) -> Self {
        let nr = kernel.panel_width();
        let layers = net.layers[range]
            .iter()
            .map(|layer| {
                let w = &net.params[layer.weight];
                let [rows, cols] = w.shape;
                let (inputs, outputs) = if layer.transposed {
                    (cols, rows)
                } else {
                    (rows, cols)
                };
                let at = |k: usize, j: usize| {
                    if layer.transposed {
                        w.value[j * cols + k]
                    } else {
                        w.value[k * cols + j]
                    }
                };
                let panels = outputs.div_ceil(nr);
                let mut weights = Aligned::zeros(panels * inputs * nr);
                let mut bias = Aligned::zeros(panels * nr);
                let packed = weights.as_mut_slice();
                for j in 0..outputs {
                    let (p, lane) = (j / nr, j % nr);
                    for k in 0..inputs {
                        packed[(p * inputs + k) * nr + lane] = at(k, j);
                    }
                }
                bias.as_mut_slice()[..outputs].copy_from_slice(&net.params[layer.bias].value);
                PackedLayer {
                    inputs,
                    outputs,
                    panels,
                    weights,
                    bias,
                    activation: layer.activation,
                }
            })
            .collect();
        Self {
            kernel,
            layers,
            softmax,
        }
    }

    /// Input width (pixels per image).
    pub fn input_size(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    /// Output width per image.
    pub fn output_size(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// Runs the network on `pixels` (whole images of [`Self::input_size`] 8-bit pixels, scaled
    /// by 1/255) and returns `images × output_size` floats. With `threads > 1` the rows are
    /// cut in about eight blocks per thread on the current rayon pool: each block runs the
    /// whole stack with no synchronisation between layers, and a thread that the OS preempts
    /// on a busy machine has its blocks taken by the others.
    pub fn run(&self, pixels: &[u8], threads: usize) -> Vec<f32> {
        let (input, output) = (self.input_size(), self.output_size());
        let n = pixels.len() / input.max(1);
        let mut out = vec![0.0f32; n * output];
        if n == 0 || output == 0 {
            return out;
        }
        let mr = self.kernel.tile_rows();
        let block = n.div_ceil(threads.max(1) * BLOCKS_PER_THREAD).div_ceil(mr) * mr;
        if threads <= 1 || block >= n {
            self.run_block(&pixels[..n * input], &mut out, &mut self.scratch());
        } else {
            pixels[..n * input]
                .par_chunks(block * input)
                .zip(out.par_chunks_mut(block * output))
                .for_each_init(
                    || self.scratch(),
                    |scratch, (p, o)| self.run_block(p, o, scratch),
                );
        }
        out
    }

    /// Buffers for one thread's tiles: inputs as floats, two layer outputs, one softmax row.
    fn scratch(&self) -> Scratch {
        let mr = self.kernel.tile_rows();
        let nr = self.kernel.panel_width();
        let widest = self.layers.iter().map(|l| l.panels * nr).max().unwrap_or(0);
        Scratch {
            x: Aligned::zeros(mr * self.input_size()),
            ping: Aligned::zeros(mr * widest),
            pong: Aligned::zeros(mr * widest),
            probabilities: vec![0.0; self.output_size()],
        }
    }

    /// The whole stack on a block of rows, [`Kernel::tile_rows`] at a time.
    fn run_block(&self, pixels: &[u8], out: &mut [f32], scratch: &mut Scratch) {
        let mr = self.kernel.tile_rows();
        let nr = self.kernel.panel_width();
        let input = self.input_size();
        let output = self.output_size();
        let Scratch {
            x,
            ping,
            pong,
            probabilities,
        } = scratch;
        for (images, results) in pixels.chunks(mr * input).zip(out.chunks_mut(mr * output)) {
            let rows = images.len() / input;
            for (src, dst) in images
                .chunks_exact(input)
                .zip(x.as_mut_slice().chunks_exact_mut(input))
            {
                self.kernel.bytes_to_unit(src, dst);
            }
            let mut stride = input;
            for (index, layer) in self.layers.iter().enumerate() {
                let ldc = layer.panels * nr;
                let a = if index == 0 {
                    x.as_slice()
                } else {
                    ping.as_slice()
                };
                let c = &mut pong.as_mut_slice()[..rows * ldc];
                self.layer_tile(layer, rows, a, stride, c, ldc);
                if layer.activation != Activation::Selu {
                    layer.activation.apply(c);
                }
                std::mem::swap(ping, pong);
                stride = ldc;
            }
            for (row, dst) in ping
                .as_slice()
                .chunks(stride)
                .take(rows)
                .zip(results.chunks_exact_mut(output))
            {
                if self.softmax {
                    softmax_into(&row[..output], probabilities);
                    dst.copy_from_slice(probabilities);
                } else {
                    dst.copy_from_slice(&row[..output]);
                }
            }
        }
    }

    /// One layer on `rows` rows of `a` (`lda` apart) into `c` (`ldc` apart), panel by panel:
    /// the rows of `a` stay in L1 while the panels stream from L2. (Slicing the inputs so that
    /// panels would stay in L1 instead measured slower.)
    fn layer_tile(
        &self,
        layer: &PackedLayer,
        rows: usize,
        a: &[f32],
        lda: usize,
        c: &mut [f32],
        ldc: usize,
    ) {
        let nr = self.kernel.panel_width();
        let k = layer.inputs;
        assert!(rows <= self.kernel.tile_rows() && rows > 0);
        assert!(a.len() >= (rows - 1) * lda + k && c.len() >= (rows - 1) * ldc + layer.panels * nr);
        let weights = layer.weights.as_slice();
        let bias = layer.bias.as_slice();
        let mut p = 0;
        while p < layer.panels {
            let group = self.kernel.panels_at_once(rows, layer.panels - p);
            let tile = Tile {
                a: a.as_ptr(),
                lda,
                k,
                panel: weights[p * k * nr..(p + group) * k * nr].as_ptr(),
                panels: group,
                bias: bias[p * nr..(p + group) * nr].as_ptr(),
                // SAFETY: `p * nr < ldc` and the assert above bounds `c`'s rows.
                c: unsafe { c.as_mut_ptr().add(p * nr) },
                ldc,
                selu: layer.activation == Activation::Selu,
            };
            // SAFETY: the asserts above bound every row of `a` and `c` the kernel touches; the
            // panel slice is `group` panels of `k × nr` floats and the bias `group × nr`, both
            // 64-byte aligned (nr × 4 bytes is a multiple of 64); `self.kernel` was detected
            // on this CPU.
            unsafe { self.kernel.tile(rows, tile) };
            p += group;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{autoencoder, classifier_from_encoder, Decoder};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn aelabel_engine_kernel_caps_the_kernel_at_what_the_cpu_has() {
        use Kernel::{Avx2, Avx512};
        let pick = |wanted, avx512, avx2| Kernel::choose(wanted, avx512, avx2);
        assert!(matches!(pick(None, true, true), Some(Avx512)));
        assert!(matches!(pick(Some("avx512"), true, true), Some(Avx512)));
        assert!(matches!(pick(Some("avx2"), true, true), Some(Avx2)));
        assert!(pick(Some("portable"), true, true).is_none());
        assert!(matches!(pick(Some("avx512"), false, true), Some(Avx2)));
        assert!(matches!(pick(Some("avx3"), true, true), Some(Avx512)));
        assert!(pick(Some("avx2"), false, false).is_none());
        assert!(matches!(pick(None, false, true), Some(Avx2)));
    }

    /// Every kernel this CPU runs, not only the one `detect` picks.
    fn kernels() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut found = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                found.push(Kernel::Avx512);
            }
            if crate::model::fastmath::has_avx2_fma() {
                found.push(Kernel::Avx2);
            }
        }
        found
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{what}: value {i} is {g}, the reference gives {w}"
            );
        }
    }

    #[test]
    fn packed_kernels_match_the_reference_forward_pass_on_any_row_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // Widths that are not multiples of any panel width; a tied decoder reads transposes.
        for decoder in [Decoder::Separate, Decoder::Tied] {
            let mut ae = autoencoder(&[50, 37, 9], decoder, Activation::Sigmoid, &mut rng);
            for p in &mut ae.params {
                for v in &mut p.value {
                    *v += rng.random_range(-0.1..0.1);
                }
            }
            let clf = classifier_from_encoder(&ae, 5, &mut rng);
            for kernel in kernels() {
                for rows in [1, 2, 3, 5, 6, 7, 12, 13, 31, 100] {
                    let pixels: Vec<u8> = (0..rows * 50).map(|_| rng.random()).collect();
                    let floats: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
                    for (net, range, softmax) in
                        [(&ae, 0..2, false), (&ae, 0..4, false), (&clf, 0..3, true)]
                    {
                        let packed =
                            PackedNetwork::with_kernel(kernel, net, range.clone(), softmax);
                        let mut want = net.forward_range(&floats, rows, range.clone(), 1);
                        if softmax {
                            let mut row = vec![0.0; 5];
                            for chunk in want.chunks_exact_mut(5) {
                                softmax_into(chunk, &mut row);
                                chunk.copy_from_slice(&row);
                            }
                        }
                        for threads in [1, 2] {
                            let what = format!(
                                "{kernel:?} {decoder:?} {range:?} {rows} rows {threads} threads"
                            );
                            assert_close(&packed.run(&pixels, threads), &want, &what);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn vector_pixel_scaling_equals_the_division_for_every_byte() {
        // Every byte value, at every position of a vector and in the scalar tail.
        let bytes: Vec<u8> = (0..=255u8)
            .chain(0..=255u8)
            .rev()
            .chain([7, 255, 0])
            .collect();
        let want: Vec<f32> = bytes.iter().map(|&b| crate::data::to_unit(b)).collect();
        for kernel in kernels() {
            let mut got = vec![0.0; bytes.len()];
            kernel.bytes_to_unit(&bytes, &mut got);
            let same = got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same, "{kernel:?} scales some byte differently from p / 255");
        }
    }

    #[test]
    fn an_image_gets_bit_identical_outputs_alone_or_anywhere_in_a_batch() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let ae = autoencoder(
            &[70, 90, 33],
            Decoder::Separate,
            Activation::Sigmoid,
            &mut rng,
        );
        let pixels: Vec<u8> = (0..41 * 70).map(|_| rng.random()).collect();
        for kernel in kernels() {
            let packed = PackedNetwork::with_kernel(kernel, &ae, 0..4, false);
            let batch = packed.run(&pixels, 2);
            for (i, image) in pixels.chunks_exact(70).enumerate() {
                for n in [1, 2, 3, 5] {
                    // The image first in a batch of n (repeated), so every tile shape is used.
                    let repeated: Vec<u8> = image.iter().copied().cycle().take(n * 70).collect();
                    let alone = packed.run(&repeated, 1);
                    let want = &batch[i * 70..(i + 1) * 70];
                    let same = alone[..70]
                        .iter()
                        .zip(want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{kernel:?}: image {i} in a batch of {n} differs");
                }
            }
        }
    }
}
