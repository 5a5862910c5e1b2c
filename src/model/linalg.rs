//! The one matrix product every forward and backward pass goes through.
//!
//! Training steps multiply small matrices (batch 32 × a few hundred), so the product writes
//! straight into preallocated buffers and reads transposes through strides, never copying.
//! Products that small run on hand-written AVX-512 kernels where the CPU has them (gemm's
//! stable-Rust build stops at AVX2 and packs both operands on every call); everything else,
//! and every other CPU, goes through gemm.

#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

/// A read-only view of an `f32` matrix; transposing only swaps strides.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> View<'a> {
    /// A row-major `rows × cols` matrix stored in `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix buffer too short");
        Self {
            data,
            rows,
            cols,
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    /// The transpose of this view.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Below this many multiply-adds a product runs on the calling thread: splitting a batch-32
/// product across threads costs more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 20;

/// Up to this many multiply-adds a product may take a hand-written kernel (a batch-32 step of
/// the reference recipe has at most 32·784·100 ≈ 2.5 M). The choice depends on the shape alone,
/// never on `threads`, so results do not depend on the thread count.
const SMALL_PRODUCT: usize = 1 << 22;

/// The code that runs small products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Hand-written AVX-512F kernels (`linalg/x86.rs`).
    Avx512,
    /// The gemm crate (AVX2 + FMA or portable, its own choice).
    Gemm,
}

impl Kernel {
    /// The kernel this process uses, chosen once: the AVX-512 kernel where the CPU has
    /// AVX-512F, gemm elsewhere or when `AELABEL_TRAIN_KERNEL=gemm` asks for it. On a Zen 4 EPYC
    /// one pretraining epoch of the reference recipe took 0.66 s against gemm's 0.84 s on 1
    /// thread and 0.56 s against 0.68 s on 2, and the 55,000-image pipeline was no slower
    /// (docs/training-scale.md).
    pub fn current() -> Self {
        static CHOSEN: OnceLock<Kernel> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let wanted = std::env::var("AELABEL_TRAIN_KERNEL").ok();
            #[cfg(target_arch = "x86_64")]
            let avx512 = std::arch::is_x86_feature_detected!("avx512f");
            #[cfg(not(target_arch = "x86_64"))]
            let avx512 = false;
            Self::choose(wanted.as_deref(), avx512)
        })
    }

    /// The kernel for a CPU with or without AVX-512F when `wanted` names one; an unknown name
    /// is ignored with a warning rather than silently meaning gemm.
    fn choose(wanted: Option<&str>, avx512: bool) -> Self {
        match wanted {
            None | Some("avx512") => {}
            Some("gemm") => return Kernel::Gemm,
            Some(other) => {
                tracing::warn!(
                    value = other,
                    "AELABEL_TRAIN_KERNEL is not avx512 or gemm: using gemm"
                );
                return Kernel::Gemm;
            }
        }
        if avx512 {
            Kernel::Avx512
        } else {
            Kernel::Gemm
        }
    }
}

/// `dst = a · b`, or `dst += a · b` when `accumulate`; `dst` is row-major `a.rows × b.cols`.
pub fn matmul(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool, threads: usize) {
    matmul_on(Kernel::current(), dst, a, b, accumulate, threads);
}

/// [`matmul`] with the small-product kernel given (tests compare both on one machine).
fn matmul_on(
    kernel: Kernel,
    dst: &mut [f32],
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
    threads: usize,
) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(dst.len() >= m * n, "destination buffer too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = kernel;
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx512 && m * n * k <= SMALL_PRODUCT {
        let parts = if m * n * k >= PARALLEL_MIN_WORK {
            threads.max(1)
        } else {
            1
        };
        small_product(dst, a, b, accumulate, parts);
        return;
    }
    if m == 1 && (b.col_stride == 1 || b.row_stride == 1) {
        vector_matrix(&mut dst[..n], a, b, accumulate);
        return;
    }
    let parallelism = if threads > 1 && m * n * k >= PARALLEL_MIN_WORK {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above guarantee that every index the strides reach lies inside the
    // three slices, and `dst` is borrowed mutably so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride,
            a.row_stride,
            b.data.as_ptr(),
            b.col_stride,
            b.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Runs `dst (+)= a · b` on the AVX-512 kernel, split into `parts` blocks of rows (or of
/// 16-lane column groups, whichever dimension is longer) that run on rayon's threads. Every
/// output keeps the same chain of multiply-adds whichever block it falls in, so results do not
/// depend on `parts`; gemm would run these products on `threads`, and the kernel on one thread
/// made the 2-thread pipeline slower than gemm.
#[cfg(target_arch = "x86_64")]
fn small_product(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool, parts: usize) {
    let whole = x86::Product {
        m: a.rows,
        n: b.cols,
        k: a.cols,
        a: a.data.as_ptr(),
        a_row: a.row_stride as usize,
        a_col: a.col_stride as usize,
        b: b.data.as_ptr(),
        b_row: b.row_stride as usize,
        b_col: b.col_stride as usize,
        c: dst.as_mut_ptr(),
        c_row: b.cols,
        c_col: 1,
        accumulate,
    };
    let blocks = whole.split(parts);
    // SAFETY: `View::new` checked that each buffer holds its rows × cols, a view is row-major
    // or the transpose of one (so one of its strides is 1), `matmul` checked that `dst` holds
    // m × n and borrows it mutably (so it cannot alias `a` or `b`), the blocks of `split`
    // write disjoint parts of `dst`, and `Kernel::Avx512` is only chosen on a CPU with AVX-512F.
    if blocks.len() == 1 {
        unsafe { x86::multiply(&blocks[0]) }
    } else {
        use rayon::prelude::*;
        blocks
            .par_iter()
            .for_each(|block| unsafe { x86::multiply(block) });
    }
}

/// `dst (+)= x · b` for a single row `x`. gemm packs `b` before multiplying, which costs
/// more than the product itself for one image (single-image serving). Exact-zero inputs
/// (blank pixels) are skipped, which halves the work on typical images.
fn vector_matrix(dst: &mut [f32], x: View<'_>, b: View<'_>, accumulate: bool) {
    if !accumulate {
        dst.fill(0.0);
    }
    let k = x.cols;
    let xi = |i: usize| x.data[i * x.col_stride as usize];
    if b.col_stride == 1 {
        // Rows of b are contiguous: accumulate x_i · b[i, :].
        for i in 0..k {
            let v = xi(i);
            if v == 0.0 {
                continue;
            }
            let start = i * b.row_stride as usize;
            for (d, &w) in dst.iter_mut().zip(&b.data[start..start + b.cols]) {
                *d += v * w;
            }
        }
    } else {
        // Columns of b are contiguous (a transposed view): one dot product per output.
        let xs: Vec<f32> = (0..k).map(xi).collect();
        for (j, d) in dst.iter_mut().enumerate() {
            let start = j * b.col_stride as usize;
            let column = &b.data[start..start + k];
            let mut lanes = [0.0f32; 8];
            for (xc, wc) in xs.chunks(8).zip(column.chunks(8)) {
                for ((lane, &x), &w) in lanes.iter_mut().zip(xc).zip(wc) {
                    *lane += x * w;
                }
            }
            *d += lanes.iter().sum::<f32>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    /// Row-major `rows × cols` values in [-1, 1], about a third of them exactly zero (like
    /// blank pixels), from a fixed seed.
    fn values(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let x = ((i as f32 + 1.0) * (0.618 + seed as f32 * 0.1)).sin();
                if x.abs() < 0.5 {
                    0.0
                } else {
                    x
                }
            })
            .collect()
    }

    /// `dst (+)= a · b` as one fused multiply-add chain per output, inner index in order:
    /// the sum order the AVX-512 kernel promises.
    fn in_order_product(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
        for i in 0..m {
            for j in 0..n {
                let start = dst[i * n + j];
                dst[i * n + j] =
                    (0..k).fold(start, |sum, p| a[i * k + p].mul_add(b[p * n + j], sum));
            }
        }
    }

    /// (m, n, k) of every product in a reference-recipe half-batch step (forward, weight
    /// gradient, delta passed down), a full batch, single rows, and odd sizes that leave
    /// partial vectors and tiles everywhere.
    const SHAPES: [(usize, usize, usize); 18] = [
        (16, 100, 784),
        (16, 30, 100),
        (16, 100, 30),
        (16, 784, 100),
        (784, 100, 16),
        (100, 30, 16),
        (30, 100, 16),
        (100, 784, 16),
        (32, 100, 784),
        (1, 100, 784),
        (1, 1, 1),
        (3, 47, 1),
        (17, 33, 19),
        (33, 5, 65),
        (2000, 10, 30),
        (7, 300, 5),
        (1500, 37, 20),
        (20, 1111, 50),
    ];

    /// Runs `a · b` (m × k times k × n) on `kernel` with `a` and `b` stored as given (a
    /// transposed operand is stored transposed and read through a transposed view), into a
    /// destination that starts at `start` and has a sentinel tail.
    #[allow(clippy::too_many_arguments)]
    fn product_through_views(
        kernel: Kernel,
        a: &[f32],
        b: &[f32],
        (m, n, k): (usize, usize, usize),
        a_transposed: bool,
        b_transposed: bool,
        start: &[f32],
        accumulate: bool,
        threads: usize,
    ) -> Vec<f32> {
        let transpose = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
            (0..rows * cols)
                .map(|i| x[(i % rows) * cols + i / rows])
                .collect()
        };
        let a_stored = if a_transposed {
            transpose(a, m, k)
        } else {
            a.to_vec()
        };
        let b_stored = if b_transposed {
            transpose(b, k, n)
        } else {
            b.to_vec()
        };
        let av = if a_transposed {
            View::new(&a_stored, k, m).t()
        } else {
            View::new(&a_stored, m, k)
        };
        let bv = if b_transposed {
            View::new(&b_stored, n, k).t()
        } else {
            View::new(&b_stored, k, n)
        };
        let mut dst = start.to_vec();
        dst.extend_from_slice(&[7.5; 5]);
        matmul_on(kernel, &mut dst, av, bv, accumulate, threads);
        assert_eq!(dst[m * n..], [7.5; 5], "wrote past the product");
        dst.truncate(m * n);
        dst
    }

    #[test]
    fn avx512_products_equal_the_in_order_fused_chain_for_every_layout() {
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        #[cfg(not(target_arch = "x86_64"))]
        return;
        for (m, n, k) in SHAPES {
            let a = values(m, k, 1);
            let b = values(k, n, 2);
            let start = values(m, n, 3);
            for accumulate in [false, true] {
                let mut want = if accumulate {
                    start.clone()
                } else {
                    vec![0.0; m * n]
                };
                in_order_product(&mut want, &a, &b, m, k, n);
                let layouts = [(false, false), (true, false), (false, true), (true, true)];
                for ((at, bt), threads) in layouts.into_iter().flat_map(|l| [(l, 1), (l, 3)]) {
                    let got = product_through_views(
                        Kernel::Avx512,
                        &a,
                        &b,
                        (m, n, k),
                        at,
                        bt,
                        &start,
                        accumulate,
                        threads,
                    );
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(g, w)| g.to_bits() == w.to_bits());
                    assert!(
                        same,
                        "{m}×{k}·{k}×{n}, aᵀ {at}, bᵀ {bt}, accumulate {accumulate}, {threads} threads"
                    );
                }
            }
        }
    }

    #[test]
    fn gemm_products_match_the_naive_product_for_every_layout() {
        for (m, n, k) in SHAPES {
            let a = values(m, k, 4);
            let b = values(k, n, 5);
            let start = values(m, n, 6);
            let mut want = start.clone();
            in_order_product(&mut want, &a, &b, m, k, n);
            for (at, bt) in [(false, false), (true, false), (false, true), (true, true)] {
                let got =
                    product_through_views(Kernel::Gemm, &a, &b, (m, n, k), at, bt, &start, true, 2);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4, "{m}×{k}·{k}×{n}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn products_do_not_depend_on_the_thread_count() {
        for (m, n, k) in [(16, 100, 784), (784, 100, 16), (1024, 100, 784)] {
            let a = values(m, k, 7);
            let b = values(k, n, 8);
            let run = |threads: usize| {
                let mut dst = vec![0.0; m * n];
                matmul(
                    &mut dst,
                    View::new(&a, m, k),
                    View::new(&b, k, n),
                    false,
                    threads,
                );
                dst.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(run(1), run(2), "{m}×{k}·{k}×{n}");
        }
    }

    #[test]
    fn train_kernel_follows_the_cpu_and_the_override() {
        assert_eq!(Kernel::choose(None, true), Kernel::Avx512);
        assert_eq!(Kernel::choose(None, false), Kernel::Gemm);
        assert_eq!(Kernel::choose(Some("gemm"), true), Kernel::Gemm);
        assert_eq!(Kernel::choose(Some("avx512"), true), Kernel::Avx512);
        assert_eq!(Kernel::choose(Some("avx512"), false), Kernel::Gemm);
        assert_eq!(Kernel::choose(Some("avx-512"), true), Kernel::Gemm);
    }

    #[test]
    fn matmul_matches_naive_product_with_and_without_transposes() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut got = vec![0.0; m * n];
        matmul(&mut got, View::new(&a, m, k), View::new(&b, k, n), false, 1);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5);
        }
        // (bᵀ aᵀ)ᵀ = a b: compute bᵀ·aᵀ from transposed views of the same buffers.
        let mut gt = vec![0.0; n * m];
        matmul(
            &mut gt,
            View::new(&b, k, n).t(),
            View::new(&a, m, k).t(),
            false,
            1,
        );
        for i in 0..m {
            for j in 0..n {
                assert!((gt[j * m + i] - want[i * n + j]).abs() < 1e-5);
            }
        }
        matmul(&mut got, View::new(&a, m, k), View::new(&b, k, n), true, 1);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - 2.0 * w).abs() < 1e-4);
        }
        // A single row takes the vector path, for row-major and transposed right operands.
        let mut row = vec![0.0; n];
        matmul(
            &mut row,
            View::new(&a[..k], 1, k),
            View::new(&b, k, n),
            false,
            1,
        );
        for (g, w) in row.iter().zip(&want[..n]) {
            assert!((g - w).abs() < 1e-5);
        }
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        matmul(
            &mut row,
            View::new(&a[..k], 1, k),
            View::new(&bt, n, k).t(),
            false,
            1,
        );
        for (g, w) in row.iter().zip(&want[..n]) {
            assert!((g - w).abs() < 1e-5);
        }
    }
}
