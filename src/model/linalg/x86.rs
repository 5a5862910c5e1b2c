//! The AVX-512 kernel for the products of one training step (batch 16 or 32 against layers of
//! a few hundred units), where gemm's packing of both operands on every call costs about as
//! much as the multiply-adds.
//!
//! One register-tiled kernel, [`Product::run_tiles`], computes a tile of rows × 16-lane vectors
//! with one fused multiply-add per inner index and vector: a broadcast of `a[i, p]` against a
//! contiguous slice of row `p` of `b`. `a` may have any strides, so `x·W` (forward) and
//! `xᵀ·δ` (weight gradients) run on the operands where they lie. When `b`'s rows are not
//! contiguous (`δ·Wᵀ`, the delta passed down) the product runs transposed, `cᵀ = bᵀ·aᵀ`,
//! with `aᵀ` (16 × a few hundred: the small operand) copied into contiguous rows first and
//! `cᵀ` scattered back into `c`.
//!
//! Every output is the same chain of operations — `c` or zero, then `+ a[i, p]·b[p, j]` for
//! `p = 0, 1, …` in order — whatever tile it falls in, the orientation, or how many threads
//! run the step, so results are deterministic.

use std::arch::x86_64::*;
use std::cell::RefCell;

/// One product `c (+)= a · b` as raw parts; see [`multiply`] for the rules they obey.
#[derive(Clone, Copy, Debug)]
pub(super) struct Product {
    /// Rows of `a` and `c`.
    pub m: usize,
    /// Columns of `b` and `c`.
    pub n: usize,
    /// The inner dimension.
    pub k: usize,
    /// `a[i, p]` is at `a + i·a_row + p·a_col`.
    pub a: *const f32,
    /// Distance between rows of `a`, in floats.
    pub a_row: usize,
    /// Distance between columns of `a`, in floats.
    pub a_col: usize,
    /// `b[p, j]` is at `b + p·b_row + j·b_col`.
    pub b: *const f32,
    /// Distance between rows of `b`, in floats.
    pub b_row: usize,
    /// Distance between columns of `b`, in floats.
    pub b_col: usize,
    /// `c[i, j]` is at `c + i·c_row + j·c_col`.
    pub c: *mut f32,
    /// Distance between rows of `c`, in floats.
    pub c_row: usize,
    /// Distance between columns of `c`, in floats.
    pub c_col: usize,
    /// Add to `c` instead of overwriting it.
    pub accumulate: bool,
}

// SAFETY: a `Product` is a description of memory that the caller of `multiply` vouches for;
// the blocks `split` hands to other threads write disjoint parts of `c` and only read `a`, `b`.
unsafe impl Send for Product {}
unsafe impl Sync for Product {}

impl Product {
    /// At most `parts` products that together compute this one, each writing its own block of
    /// `c`: the longer of the rows and the columns is cut, columns only at multiples of 16 so
    /// that every block keeps whole vectors. Each output's chain of operations is unchanged.
    pub(super) fn split(&self, parts: usize) -> Vec<Product> {
        let by_rows = self.m >= self.n;
        let (len, unit) = if by_rows { (self.m, 1) } else { (self.n, 16) };
        let units = len.div_ceil(unit);
        let parts = parts.clamp(1, units.max(1));
        let mut blocks = Vec::with_capacity(parts);
        let mut start = 0;
        for part in 0..parts {
            let end = ((units * (part + 1)) / parts * unit).min(len);
            if end > start {
                let mut block = *self;
                if by_rows {
                    block.m = end - start;
                    block.a = self.a.wrapping_add(start * self.a_row);
                    block.c = self.c.wrapping_add(start * self.c_row);
                } else {
                    block.n = end - start;
                    block.b = self.b.wrapping_add(start * self.b_col);
                    block.c = self.c.wrapping_add(start * self.c_col);
                }
                blocks.push(block);
            }
            start = end;
        }
        blocks
    }
}

/// Widest tile, in 16-lane vectors.
const MAX_VECTORS: usize = 4;
/// Rows per tile for each width: 12–16 accumulators. Tiles of 24 (of the 32 registers) ran
/// the weight-gradient products (inner dimension 16) 7 % slower and the others no faster.
const ROWS_FOR_WIDTH: [usize; MAX_VECTORS + 1] = [0, 12, 8, 5, 4];

thread_local! {
    /// The copy of `aᵀ` a transposed product reads (16 × a few hundred floats per thread).
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `c (+)= a · b`.
///
/// # Safety
/// Every offset the strides reach for `i < m`, `p < k`, `j < n` lies inside the allocation
/// its pointer came from; `c` overlaps neither `a` nor `b`; `a` has contiguous rows
/// (`a_col == 1`) or columns (`a_row == 1`), or `b` has contiguous rows (`b_col == 1`), and
/// when `b` does not, `b` has contiguous rows or columns too; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn multiply(p: &Product) {
    // SAFETY (all calls below): the caller's promises, and what each branch checked.
    unsafe {
        if p.b_col == 1 {
            return p.run_tiles();
        }
        if p.a_row == 1 {
            // aᵀ already has contiguous rows: cᵀ = bᵀ · aᵀ reads it in place.
            return p.transposed(p.a, p.a_col).run_tiles();
        }
        debug_assert!(p.a_col == 1 && p.b_row == 1);
        // Copy the smaller operand into contiguous rows: aᵀ (then run transposed) or b.
        let lanes = |len: usize| len.div_ceil(16) * 16;
        let transposed_cost = p.n * lanes(p.m) * p.k + p.m * p.k + p.m * p.n;
        let direct_cost = p.m * lanes(p.n) * p.k + p.n * p.k;
        PACKED.with_borrow_mut(|packed| {
            if transposed_cost <= direct_cost {
                let stride = lanes(p.m);
                packed.resize(p.k * stride, 0.0);
                transpose_into(p.a, p.m, p.k, p.a_row, packed.as_mut_ptr(), stride);
                p.transposed(packed.as_ptr(), stride).run_tiles();
            } else {
                let stride = lanes(p.n);
                packed.resize(p.k * stride, 0.0);
                transpose_into(p.b, p.n, p.k, p.b_col, packed.as_mut_ptr(), stride);
                let direct = Product {
                    b: packed.as_ptr(),
                    b_row: stride,
                    b_col: 1,
                    ..*p
                };
                direct.run_tiles();
            }
        });
    }
}

impl Product {
    /// `cᵀ (+)= bᵀ · aᵀ` with `aᵀ[p, i]` at `a_t + p·a_t_row + i`.
    fn transposed(&self, a_t: *const f32, a_t_row: usize) -> Product {
        Product {
            m: self.n,
            n: self.m,
            k: self.k,
            a: self.b,
            a_row: self.b_col,
            a_col: self.b_row,
            b: a_t,
            b_row: a_t_row,
            b_col: 1,
            c: self.c,
            c_row: self.c_col,
            c_col: self.c_row,
            accumulate: self.accumulate,
        }
    }

    /// Covers `c` with tiles, columns in blocks as even as possible (7 vectors are 4 + 3, not
    /// 4 + 3 … or 3 + 3 + 1) and rows likewise.
    ///
    /// # Safety
    /// As [`multiply`], with `b_col == 1`.
    #[target_feature(enable = "avx512f")]
    unsafe fn run_tiles(&self) {
        debug_assert_eq!(self.b_col, 1);
        let vectors = self.n.div_ceil(16);
        let tail = match self.n % 16 {
            0 => 0xffff,
            r => (1u16 << r) - 1,
        };
        let column_blocks = vectors.div_ceil(MAX_VECTORS);
        let mut v = 0;
        for block in 0..column_blocks {
            let width = (vectors - v).div_ceil(column_blocks - block);
            let mask = if v + width == vectors { tail } else { 0xffff };
            let row_blocks = self.m.div_ceil(ROWS_FOR_WIDTH[width]);
            let mut i = 0;
            for row_block in 0..row_blocks {
                let rows = (self.m - i).div_ceil(row_blocks - row_block);
                // SAFETY: rows `i..i + rows` and columns `16v..` up to `n` lie inside `c`.
                unsafe { self.tile(rows, width, i, v * 16, mask) };
                i += rows;
            }
            v += width;
        }
    }

    /// Runs the monomorphised tile for `rows × width`.
    ///
    /// # Safety
    /// As [`Self::run_tiles`], for a tile inside `c`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile(&self, rows: usize, width: usize, i: usize, j: usize, mask: __mmask16) {
        macro_rules! by_rows {
            ($v:literal, $($r:literal)*) => {
                match rows {
                    $($r => self.rows::<$r, $v>(i, j, mask),)*
                    _ => unreachable!("tile of {rows} rows × {} vectors", $v),
                }
            };
        }
        // SAFETY: forwarded from the caller.
        unsafe {
            match width {
                1 => by_rows!(1, 1 2 3 4 5 6 7 8 9 10 11 12),
                2 => by_rows!(2, 1 2 3 4 5 6 7 8),
                3 => by_rows!(3, 1 2 3 4 5),
                _ => by_rows!(4, 1 2 3 4),
            }
        }
    }

    /// `R` rows × `V` vectors of `c` from (`i0`, `j0`); the last vector keeps `mask`'s lanes.
    ///
    /// # Safety
    /// As [`Self::tile`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize, const V: usize>(&self, i0: usize, j0: usize, mask: __mmask16) {
        let lanes = |v: usize| if v + 1 == V { mask } else { 0xffff };
        // Lane offsets of one vector of `c` when its columns are not contiguous.
        let spread = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(self.c_col as i32),
        );
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        // SAFETY (whole body): the caller keeps every reached offset inside the operands.
        unsafe {
            let a = self.a.add(i0 * self.a_row);
            let b = self.b.add(j0);
            let c = self.c.add(i0 * self.c_row + j0 * self.c_col);
            let at = |r: usize, v: usize| c.add(r * self.c_row + v * 16 * self.c_col);
            if self.accumulate {
                for (r, row) in acc.iter_mut().enumerate() {
                    for (v, sum) in row.iter_mut().enumerate() {
                        *sum = if self.c_col == 1 {
                            _mm512_maskz_loadu_ps(lanes(v), at(r, v))
                        } else {
                            _mm512_mask_i32gather_ps::<4>(*sum, lanes(v), spread, at(r, v))
                        };
                    }
                }
            }
            for q in 0..self.k {
                let b_row = b.add(q * self.b_row);
                let mut bv = [_mm512_setzero_ps(); V];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(lanes(v), b_row.add(v * 16));
                }
                let a_col = a.add(q * self.a_col);
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a_col.add(r * self.a_row));
                    for (sum, &y) in row.iter_mut().zip(&bv) {
                        *sum = _mm512_fmadd_ps(x, y, *sum);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, &sum) in row.iter().enumerate() {
                    if self.c_col == 1 {
                        _mm512_mask_storeu_ps(at(r, v), lanes(v), sum);
                    } else {
                        _mm512_mask_i32scatter_ps::<4>(at(r, v), lanes(v), spread, sum);
                    }
                }
            }
        }
    }
}

/// `dst[c·dst_row + r] = src[r·src_row + c]` for `r < rows`, `c < cols`, in 16 × 16 blocks
/// transposed in registers (four rounds of two-source permutes, each swapping one bit of the
/// row index with the same bit of the column index).
///
/// # Safety
/// `src` holds `rows` rows of `cols` floats `src_row` apart, `dst` holds `cols` rows of
/// `rows` floats `dst_row` apart, they do not overlap, and the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_into(
    src: *const f32,
    rows: usize,
    cols: usize,
    src_row: usize,
    dst: *mut f32,
    dst_row: usize,
) {
    const BITS: [usize; 4] = [8, 4, 2, 1];
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // For bit `b`, the low row of a pair keeps its lanes without `b` and takes the high row's
    // lanes `c - b` for the others; the high row takes `c + b` from the low row, keeps its own.
    let picks = BITS.map(|bit| {
        let step = _mm512_set1_epi32(bit as i32);
        let has_bit = _mm512_test_epi32_mask(lane, step);
        let low = _mm512_mask_add_epi32(lane, has_bit, lane, _mm512_set1_epi32(16 - bit as i32));
        let high = _mm512_mask_add_epi32(
            _mm512_add_epi32(lane, step),
            has_bit,
            lane,
            _mm512_set1_epi32(16),
        );
        (low, high)
    });
    let mask = |len: usize| if len >= 16 { 0xffff } else { (1u16 << len) - 1 };
    for r0 in (0..rows).step_by(16) {
        let row_count = 16.min(rows - r0);
        for c0 in (0..cols).step_by(16) {
            let col_count = 16.min(cols - c0);
            let mut block = [_mm512_setzero_ps(); 16];
            for (t, row) in block.iter_mut().enumerate().take(row_count) {
                // SAFETY: row `r0 + t`, columns `c0..c0 + col_count` lie inside `src`.
                *row = unsafe {
                    _mm512_maskz_loadu_ps(mask(col_count), src.add((r0 + t) * src_row + c0))
                };
            }
            for (bit, (low, high)) in BITS.into_iter().zip(picks) {
                for i in (0..16).filter(|i| i & bit == 0) {
                    let (x, y) = (block[i], block[i + bit]);
                    block[i] = _mm512_permutex2var_ps(x, low, y);
                    block[i + bit] = _mm512_permutex2var_ps(x, high, y);
                }
            }
            for (c, column) in block.iter().enumerate().take(col_count) {
                // SAFETY: row `c0 + c`, columns `r0..r0 + row_count` lie inside `dst`.
                unsafe {
                    _mm512_mask_storeu_ps(
                        dst.add((c0 + c) * dst_row + r0),
                        mask(row_count),
                        *column,
                    )
                };
            }
        }
    }
}
