//! The one matrix product every forward and backward pass goes through.
//!
//! Training steps multiply small matrices (batch 32 × a few hundred), so the product writes
//! straight into preallocated buffers and reads transposes through strides, never copying.

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

/// `dst = a · b`, or `dst += a · b` when `accumulate`; `dst` is row-major `a.rows × b.cols`.
pub fn matmul(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool, threads: usize) {
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
