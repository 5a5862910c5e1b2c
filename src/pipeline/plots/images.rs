//! Originals above their reconstructions, drawn pixel by pixel.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    draw_text, ensure_output, font, input_err, render, size_or_err, text_width, to_i32, PlotError,
};

/// Originals (top row) above reconstructions (bottom row), like Hands-On ML's show_reconstructions.
/// `originals` and `reconstructions`: n images each, row-major, values in [0,1], `width*height` each.
///
/// Pixels are drawn as grey squares with matplotlib's `binary` map: 0 is white, 1 is black
/// (values are clamped to [0,1]; non-finite values are drawn white). Each image gets a thin grey
/// frame, and the rows are labelled "original" and "reconstruction". The pixel scale is chosen so
/// the strip is about 1000 px wide, so keep `n` small (around 5 to 20).
pub fn reconstructions_png(
    path: &Path,
    originals: &[f32],
    reconstructions: &[f32],
    n: usize,
    width: usize,
    height: usize,
) -> Result<(), PlotError> {
    if n == 0 || width == 0 || height == 0 {
        return Err(input_err(
            path,
            format!(
                "n, width and height must be positive (got n={n}, width={width}, height={height})"
            ),
        ));
    }
    let per_image = width
        .checked_mul(height)
        .ok_or_else(|| input_err(path, "width*height overflows"))?;
    let expected = per_image
        .checked_mul(n)
        .ok_or_else(|| input_err(path, "n*width*height overflows"))?;
    for (what, data) in [
        ("originals", originals),
        ("reconstructions", reconstructions),
    ] {
        if data.len() != expected {
            return Err(input_err(
                path,
                format!(
                    "{what} has {} values, expected n*width*height = {n}*{width}*{height} = {expected}",
                    data.len()
                ),
            ));
        }
    }
    ensure_output(path)?;

    // Pixel scale giving a strip about 1000 px wide, between 1 and 10 screen px per image pixel.
    let scale = (1000 / n.saturating_mul(width)).clamp(1, 10);
    let gap = (2 * scale).clamp(4, 12);
    let (margin, row_gap) = (16, 2 * gap);
    let label_font = font(16.0);
    let rows = [("original", originals), ("reconstruction", reconstructions)];
    let label_w = rows
        .iter()
        .map(|(label, _)| text_width(&label_font, label))
        .max()
        .unwrap_or(0)
        + 16;
    let canvas_w = (2 * margin + gap)
        .saturating_add(n.saturating_mul(width.saturating_mul(scale) + gap))
        .saturating_add(usize::try_from(label_w).unwrap_or(0))
        - gap;
    let canvas_h = (2 * margin + row_gap).saturating_add(height.saturating_mul(2 * scale));
    let size = size_or_err(path, canvas_w, canvas_h)?;
    // The canvas size check bounds every coordinate below well inside i32.
    let (scale, gap, margin, row_gap) =
        (to_i32(scale), to_i32(gap), to_i32(margin), to_i32(row_gap));
    let (img_w, img_h) = (to_i32(width) * scale, to_i32(height) * scale);

    render(path, size, |root| {
        let label_style = label_font
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        let frame = RGBColor(180, 180, 180).stroke_width(1);
        for (row, (label, data)) in rows.iter().enumerate() {
            let y0 = margin + to_i32(row) * (img_h + row_gap);
            draw_text(
                root,
                label,
                (margin + label_w - 12, y0 + img_h / 2),
                &label_style,
            )?;
            for (k, image) in data.chunks_exact(per_image).enumerate() {
                let x0 = margin + label_w + to_i32(k) * (img_w + gap);
                for (py, line) in image.chunks_exact(width).enumerate() {
                    for (px, &value) in line.iter().enumerate() {
                        let v = if value.is_finite() {
                            value.clamp(0.0, 1.0)
                        } else {
                            0.0
                        };
                        let grey = (255.0 * (1.0 - v)).round() as u8;
                        if grey == 255 {
                            continue; // the background is already white
                        }
                        let x = x0 + to_i32(px) * scale;
                        let y = y0 + to_i32(py) * scale;
                        root.draw(&Rectangle::new(
                            [(x, y), (x + scale, y + scale)],
                            RGBColor(grey, grey, grey).filled(),
                        ))?;
                    }
                }
                root.draw(&Rectangle::new(
                    [(x0 - 1, y0 - 1), (x0 + img_w, y0 + img_h)],
                    frame,
                ))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_png, noise};
    use super::*;

    #[test]
    fn reconstructions_writes_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("recon.png");
        let (n, w, h) = (4, 8, 6);
        let originals = noise(n * w * h, 1);
        let reconstructions = noise(n * w * h, 2);
        reconstructions_png(&path, &originals, &reconstructions, n, w, h).unwrap();
        assert_png(&path);
    }

    #[test]
    fn reconstructions_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recon.png");
        let ok = vec![0.5; 2 * 4 * 4];
        let short = vec![0.5; 2 * 4 * 4 - 1];
        assert!(matches!(
            reconstructions_png(&path, &ok, &short, 2, 4, 4),
            Err(PlotError::Input { .. })
        ));
        assert!(matches!(
            reconstructions_png(&path, &[], &[], 0, 4, 4),
            Err(PlotError::Input { .. })
        ));
        assert!(!path.exists());
    }
}
