//! The two pixel operations every image goes through on its way to the model, shared by
//! training (image folders) and serving (encoded images in requests) so that both see the
//! same bytes: conversion to 8-bit luma and a triangle-filter resize.
//!
//! Both are written out here rather than taken from `image` because the generic versions cost
//! more than decoding a small PNG (they go through four `f32` channels per pixel), which would
//! cap folder reading far below 20,000 images/s on two cores.

use image::{DynamicImage, GrayImage};

/// Rec. 709 luma weights (0.2126, 0.7152, 0.0722) in 16-bit fixed point; they sum to 65,536
/// so gray stays gray, and the integer maths vectorises.
const LUMA_WEIGHTS: [u32; 3] = [13_933, 46_871, 4_732];

/// The 8-bit luma of a decoded image of any colour type: gray is kept, colour becomes
/// `0.2126 R + 0.7152 G + 0.0722 B` (rounded) from 8-bit channels, alpha is dropped, as
/// `image`'s `into_luma8` does (its float path differs by one level on about 0.4 % of
/// colours). 16-bit gray is scaled by `image`; other types are first brought to 8-bit RGB.
pub(crate) fn luma8(image: DynamicImage) -> GrayImage {
    let (width, height) = (image.width(), image.height());
    let pixels = match image {
        DynamicImage::ImageLuma8(gray) => return gray,
        DynamicImage::ImageLumaA8(gray) => gray.into_raw().chunks_exact(2).map(|p| p[0]).collect(),
        DynamicImage::ImageRgb8(rgb) => rgb_luma::<3>(rgb.as_raw()),
        DynamicImage::ImageRgba8(rgba) => rgb_luma::<4>(rgba.as_raw()),
        DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) => {
            return image.into_luma8();
        }
        other => rgb_luma::<3>(other.into_rgb8().as_raw()),
    };
    GrayImage::from_raw(width, height, pixels).unwrap_or_default()
}

/// Luma of interleaved 8-bit pixels of `N` channels whose first three are R, G, B.
fn rgb_luma<const N: usize>(channels: &[u8]) -> Vec<u8> {
    let [wr, wg, wb] = LUMA_WEIGHTS;
    let mut out = vec![0u8; channels.len() / N];
    for (y, p) in out.iter_mut().zip(channels.chunks_exact(N)) {
        let sum = wr * u32::from(p[0]) + wg * u32::from(p[1]) + wb * u32::from(p[2]);
        *y = ((sum + (1 << 15)) >> 16) as u8;
    }
    out
}

/// For each output pixel along one axis: the first input pixel it reads and the normalised
/// triangle weights of the input pixels from there on.
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

/// Triangle-filter taps from `from` pixels to `to`, computed exactly as `image`'s
/// `imageops::resize` with `FilterType::Triangle` does (same `f32` steps in the same order),
/// so the result is bit-identical to it.
fn triangle_taps(from: u32, to: u32) -> Taps {
    let ratio = from as f32 / to as f32;
    let scale = ratio.max(1.0);
    let support = scale;
    let mut taps = Taps {
        start: Vec::with_capacity(to as usize),
        weights: Vec::with_capacity(to as usize),
    };
    for out in 0..to {
        let centre = (out as f32 + 0.5) * ratio;
        let left = ((centre - support).floor() as i64).clamp(0, i64::from(from) - 1);
        let right = ((centre + support).ceil() as i64).clamp(left + 1, i64::from(from));
        let centre = centre - 0.5;
        let mut weights: Vec<f32> = (left..right)
            .map(|i| {
                let x = ((i as f32 - centre) / scale).abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            })
            .collect();
        let sum = weights.iter().fold(0.0f32, |sum, w| sum + w);
        for w in &mut weights {
            *w /= sum;
        }
        taps.start.push(left as usize);
        taps.weights.push(weights);
    }
    taps
}

/// `gray` resized to `to_width × to_height` with a triangle (bilinear) filter: columns first
/// into `f32`, then rows, rounded to the nearest level (bit-identical to `image`'s resize).
pub(crate) fn resize_triangle(gray: &GrayImage, (to_width, to_height): (u32, u32)) -> Vec<u8> {
    let (width, height) = gray.dimensions();
    if (width, height) == (to_width, to_height) {
        return gray.as_raw().clone();
    }
    let src = gray.as_raw();
    let w = width as usize;
    let vertical = triangle_taps(height, to_height);
    let mut columns = vec![0.0f32; w * to_height as usize];
    for (row, (&start, weights)) in columns
        .chunks_exact_mut(w)
        .zip(vertical.start.iter().zip(&vertical.weights))
    {
        for (k, &weight) in weights.iter().enumerate() {
            let line = &src[(start + k) * w..(start + k + 1) * w];
            for (acc, &p) in row.iter_mut().zip(line) {
                *acc += f32::from(p) * weight;
            }
        }
    }
    let horizontal = triangle_taps(width, to_width);
    let mut out = Vec::with_capacity(to_width as usize * to_height as usize);
    for row in columns.chunks_exact(w) {
        for (&start, weights) in horizontal.start.iter().zip(&horizontal.weights) {
            let sum = weights
                .iter()
                .zip(&row[start..])
                .fold(0.0f32, |acc, (&weight, &p)| acc + p * weight);
            out.push(sum.clamp(0.0, 255.0).round() as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::FilterType;
    use image::{Rgb, RgbImage};

    /// Deterministic noise so that every rounding path is exercised.
    fn noise(width: u32, height: u32, seed: u32) -> GrayImage {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        GrayImage::from_fn(width, height, |_, _| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            image::Luma([(s >> 7) as u8])
        })
    }

    #[test]
    fn triangle_resize_is_bit_identical_to_image() {
        let sizes = [
            ((64, 64), (28, 28)),
            ((32, 32), (28, 28)),
            ((100, 37), (28, 28)),
            ((28, 28), (64, 40)),
            ((5, 3), (28, 28)),
            ((28, 28), (28, 10)),
            ((1, 1), (3, 2)),
            ((640, 480), (28, 28)),
        ];
        for (i, ((w, h), to)) in sizes.into_iter().enumerate() {
            let gray = noise(w, h, i as u32 + 1);
            let expected = image::imageops::resize(&gray, to.0, to.1, FilterType::Triangle);
            assert_eq!(
                resize_triangle(&gray, to),
                expected.into_raw(),
                "{w}×{h} → {to:?}"
            );
        }
    }

    #[test]
    fn luma_uses_rec709_weights_and_keeps_gray() {
        let rgb = RgbImage::from_fn(3, 1, |x, _| match x {
            0 => Rgb([200, 100, 50]),
            1 => Rgb([255, 255, 255]),
            _ => Rgb([0, 0, 187]),
        });
        // 117.65 → 118; 255; 13.50 → 14.
        assert_eq!(
            luma8(DynamicImage::ImageRgb8(rgb)).into_raw(),
            [118, 255, 14]
        );
        let gray = noise(16, 16, 9);
        let as_rgb = DynamicImage::ImageLuma8(gray.clone()).into_rgb8();
        assert_eq!(luma8(DynamicImage::ImageRgb8(as_rgb)), gray);
    }
}
