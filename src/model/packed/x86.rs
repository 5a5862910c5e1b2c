//! The tile kernels: `rows × 2` vector accumulators per panel start from the bias and take one
//! fused multiply-add per input value and vector, in input order; a broadcast of `a[i, p]` is
//! shared by the row's vectors. With few rows the multiply-adds would wait on each other's
//! latency, so short tiles run `P` panels at once. Every output is the same chain of
//! operations whatever the tile's shape, so an image gets bit-identical results alone or
//! merged into any batch. SELU runs on the accumulators before they are stored.

use super::Tile;
use crate::model::net::{SELU_ALPHA, SELU_LAMBDA};
use std::arch::x86_64::*;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Taylor coefficients of eʳ, highest first (as `fastmath::exp`).
const EXP_POLY: [f32; 7] = [
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// SELU of 16 values; `eˣ` for the negative side as `fastmath::exp` computes it.
#[inline]
#[target_feature(enable = "avx512f")]
fn selu_avx512(v: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-87.0)), _mm512_setzero_ps());
    let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
    );
    let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    let e = _mm512_scalef_ps(p, k);
    let negative = _mm512_mul_ps(
        _mm512_sub_ps(e, _mm512_set1_ps(1.0)),
        _mm512_set1_ps(SELU_LAMBDA * SELU_ALPHA),
    );
    let positive = _mm512_mul_ps(v, _mm512_set1_ps(SELU_LAMBDA));
    let mask = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_setzero_ps());
    _mm512_mask_blend_ps(mask, negative, positive)
}

/// SELU of 8 values, as [`selu_avx512`].
#[inline]
#[target_feature(enable = "avx2,fma")]
fn selu_avx2(v: __m256) -> __m256 {
    let x = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-87.0)), _mm256_setzero_ps());
    let k = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(LOG2E),
    ));
    let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
    }
    // 2^k through the exponent bits (k ∈ [-126, 0] here).
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(k),
        _mm256_set1_epi32(127),
    ));
    let e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    let negative = _mm256_mul_ps(
        _mm256_sub_ps(e, _mm256_set1_ps(1.0)),
        _mm256_set1_ps(SELU_LAMBDA * SELU_ALPHA),
    );
    let positive = _mm256_mul_ps(v, _mm256_set1_ps(SELU_LAMBDA));
    let mask = _mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_setzero_ps());
    _mm256_blendv_ps(negative, positive, mask)
}

/// `p / 255` for 16 pixels (already floats), correctly rounded like the division: a
/// product with the reciprocal, then one exact-residual correction.
#[inline]
#[target_feature(enable = "avx512f")]
fn unit_avx512(p: __m512) -> __m512 {
    let q = _mm512_mul_ps(p, _mm512_set1_ps(1.0 / 255.0));
    let residual = _mm512_fnmadd_ps(q, _mm512_set1_ps(255.0), p);
    _mm512_fmadd_ps(residual, _mm512_set1_ps(1.0 / 255.0), q)
}

/// `out[i] = bytes[i] / 255` with AVX-512 (`out` as long as `bytes`).
#[target_feature(enable = "avx512f")]
pub(super) fn bytes_to_unit_avx512(bytes: &[u8], out: &mut [f32]) {
    let mut chunks = bytes.chunks_exact(16);
    let mut outs = out.chunks_exact_mut(16);
    for (src, dst) in (&mut chunks).zip(&mut outs) {
        // SAFETY: `src` holds 16 bytes and `dst` 16 floats.
        unsafe {
            let wide = _mm512_cvtepu8_epi32(_mm_loadu_si128(src.as_ptr().cast()));
            _mm512_storeu_ps(dst.as_mut_ptr(), unit_avx512(_mm512_cvtepi32_ps(wide)));
        }
    }
    crate::data::bytes_to_unit(chunks.remainder(), outs.into_remainder());
}

/// `out[i] = bytes[i] / 255` with AVX2 (`out` as long as `bytes`).
#[target_feature(enable = "avx2,fma")]
pub(super) fn bytes_to_unit_avx2(bytes: &[u8], out: &mut [f32]) {
    let mut chunks = bytes.chunks_exact(8);
    let mut outs = out.chunks_exact_mut(8);
    for (src, dst) in (&mut chunks).zip(&mut outs) {
        // SAFETY: `src` holds 8 bytes and `dst` 8 floats.
        unsafe {
            let wide = _mm256_cvtepu8_epi32(_mm_loadl_epi64(src.as_ptr().cast()));
            let p = _mm256_cvtepi32_ps(wide);
            let q = _mm256_mul_ps(p, _mm256_set1_ps(1.0 / 255.0));
            let residual = _mm256_fnmadd_ps(q, _mm256_set1_ps(255.0), p);
            let unit = _mm256_fmadd_ps(residual, _mm256_set1_ps(1.0 / 255.0), q);
            _mm256_storeu_ps(dst.as_mut_ptr(), unit);
        }
    }
    crate::data::bytes_to_unit(chunks.remainder(), outs.into_remainder());
}

/// AVX-512 tile: up to 12 rows × 32 columns (24 accumulators).
///
/// # Safety
/// As [`super::Kernel::tile`], on a CPU with AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_avx512(rows: usize, t: Tile) {
    match (rows, t.panels) {
        (1, 4) => rows_avx512::<1, 4>(t),
        (1, 2) => rows_avx512::<1, 2>(t),
        (2, 2) => rows_avx512::<2, 2>(t),
        (3, 2) => rows_avx512::<3, 2>(t),
        (1, _) => rows_avx512::<1, 1>(t),
        (2, _) => rows_avx512::<2, 1>(t),
        (3, _) => rows_avx512::<3, 1>(t),
        (4, _) => rows_avx512::<4, 1>(t),
        (5, _) => rows_avx512::<5, 1>(t),
        (6, _) => rows_avx512::<6, 1>(t),
        (7, _) => rows_avx512::<7, 1>(t),
        (8, _) => rows_avx512::<8, 1>(t),
        (9, _) => rows_avx512::<9, 1>(t),
        (10, _) => rows_avx512::<10, 1>(t),
        (11, _) => rows_avx512::<11, 1>(t),
        _ => rows_avx512::<12, 1>(t),
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512<const M: usize, const P: usize>(t: Tile) {
    let Tile {
        a,
        lda,
        k,
        panel,
        bias,
        c,
        ldc,
        selu,
        ..
    } = t;
    let zero = _mm512_setzero_ps();
    let mut lo = [[zero; M]; P];
    let mut hi = [[zero; M]; P];
    for q in 0..P {
        lo[q] = [_mm512_load_ps(bias.add(q * 32)); M];
        hi[q] = [_mm512_load_ps(bias.add(q * 32 + 16)); M];
    }
    for p in 0..k {
        for q in 0..P {
            let b = panel.add((q * k + p) * 32);
            let (b0, b1) = (_mm512_load_ps(b), _mm512_load_ps(b.add(16)));
            for i in 0..M {
                let x = _mm512_set1_ps(*a.add(i * lda + p));
                lo[q][i] = _mm512_fmadd_ps(x, b0, lo[q][i]);
                hi[q][i] = _mm512_fmadd_ps(x, b1, hi[q][i]);
            }
        }
    }
    for q in 0..P {
        for i in 0..M {
            let (mut l, mut h) = (lo[q][i], hi[q][i]);
            if selu {
                l = selu_avx512(l);
                h = selu_avx512(h);
            }
            _mm512_storeu_ps(c.add(i * ldc + q * 32), l);
            _mm512_storeu_ps(c.add(i * ldc + q * 32 + 16), h);
        }
    }
}

/// AVX2 + FMA tile: up to 6 rows × 16 columns (12 accumulators).
///
/// # Safety
/// As [`super::Kernel::tile`], on a CPU with AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_avx2(rows: usize, t: Tile) {
    match (rows, t.panels) {
        (1, 4) => rows_avx2::<1, 4>(t),
        (1, 2) => rows_avx2::<1, 2>(t),
        (2, 2) => rows_avx2::<2, 2>(t),
        (3, 2) => rows_avx2::<3, 2>(t),
        (1, _) => rows_avx2::<1, 1>(t),
        (2, _) => rows_avx2::<2, 1>(t),
        (3, _) => rows_avx2::<3, 1>(t),
        (4, _) => rows_avx2::<4, 1>(t),
        (5, _) => rows_avx2::<5, 1>(t),
        _ => rows_avx2::<6, 1>(t),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<const M: usize, const P: usize>(t: Tile) {
    let Tile {
        a,
        lda,
        k,
        panel,
        bias,
        c,
        ldc,
        selu,
        ..
    } = t;
    let zero = _mm256_setzero_ps();
    let mut lo = [[zero; M]; P];
    let mut hi = [[zero; M]; P];
    for q in 0..P {
        lo[q] = [_mm256_load_ps(bias.add(q * 16)); M];
        hi[q] = [_mm256_load_ps(bias.add(q * 16 + 8)); M];
    }
    for p in 0..k {
        for q in 0..P {
            let b = panel.add((q * k + p) * 16);
            let (b0, b1) = (_mm256_load_ps(b), _mm256_load_ps(b.add(8)));
            for i in 0..M {
                let x = _mm256_set1_ps(*a.add(i * lda + p));
                lo[q][i] = _mm256_fmadd_ps(x, b0, lo[q][i]);
                hi[q][i] = _mm256_fmadd_ps(x, b1, hi[q][i]);
            }
        }
    }
    for q in 0..P {
        for i in 0..M {
            let (mut l, mut h) = (lo[q][i], hi[q][i]);
            if selu {
                l = selu_avx2(l);
                h = selu_avx2(h);
            }
            _mm256_storeu_ps(c.add(i * ldc + q * 16), l);
            _mm256_storeu_ps(c.add(i * ldc + q * 16 + 8), h);
        }
    }
}
