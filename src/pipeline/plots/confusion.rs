//! The confusion matrix as a heat map with counts in its cells.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    draw_text, draw_title, ensure_output, font, input_err, render, size_or_err, text_width,
    title_font, to_i32, to_usize, truncate_to_width, PlotError, MAX_SIDE, TITLE_HEIGHT,
};

/// Confusion matrix heat map (rows = true class, columns = predicted), counts written in each cell, class names on both axes, title.
///
/// Cell colour runs from white (0) to dark blue (the largest count) on a linear scale; counts
/// are written in dark text on light cells and white text on dark cells. Row names are written
/// horizontally, column names vertically; names longer than about 170 px are cut with "…".
pub fn confusion_png(
    path: &Path,
    title: &str,
    confusion: &[Vec<u64>],
    class_names: &[String],
) -> Result<(), PlotError> {
    let k = class_names.len();
    if k == 0 {
        return Err(input_err(path, "no class names"));
    }
    if confusion.len() != k {
        return Err(input_err(
            path,
            format!(
                "confusion matrix has {} rows but there are {k} class names",
                confusion.len()
            ),
        ));
    }
    if let Some((i, row)) = confusion.iter().enumerate().find(|(_, row)| row.len() != k) {
        return Err(input_err(
            path,
            format!(
                "confusion matrix row {i} has {} columns, expected {k}",
                row.len()
            ),
        ));
    }
    ensure_output(path)?;

    let cell = to_i32((600 / k).clamp(16, 64));
    let name_font = font(if cell >= 28 { 14.0 } else { 11.0 });
    let max_name_w = 170;
    let names: Vec<String> = class_names
        .iter()
        .map(|name| truncate_to_width(&name_font, name, max_name_w))
        .collect();
    let names_w = names
        .iter()
        .map(|name| text_width(&name_font, name))
        .max()
        .unwrap_or(0);
    let axis_font = font(15.0);
    let axis_title_h = 30;
    let grid_px = k.saturating_mul(to_usize(cell));
    if grid_px > MAX_SIDE {
        return Err(input_err(
            path,
            format!("{k} classes are too many for a readable confusion matrix"),
        ));
    }
    let grid = to_i32(grid_px);
    let left = 16 + axis_title_h + names_w + 10;
    let top = TITLE_HEIGHT + 8;
    let bottom = 10 + names_w + 8 + axis_title_h + 10;
    // Wide enough for the title too (draw_title shortens titles that still do not fit).
    let title_w = (text_width(&title_font(), title) + 40).min(1200);
    let canvas_w = (left + grid + 30).max(title_w);
    let canvas_h = top + grid + bottom;
    let size = size_or_err(path, to_usize(canvas_w), to_usize(canvas_h))?;

    let max_count = confusion.iter().flatten().copied().max().unwrap_or(0);
    // Largest count font that fits the cell width for every count.
    let widest = format!("{max_count}");
    let mut count_size = (f64::from(cell) * 0.3).clamp(9.0, 16.0);
    while count_size > 7.0 && text_width(&font(count_size), &widest) > cell - 6 {
        count_size -= 1.0;
    }
    let count_font = font(count_size);

    render(path, size, |root| {
        let _ = draw_title(root, title)?;
        let grid_left = left + (canvas_w - left - grid - 30) / 2;
        let centre_x = |j: i32| grid_left + j * cell + cell / 2;
        let centre_y = |i: i32| top + i * cell + cell / 2;
        let cell_border = RGBColor(225, 225, 225).stroke_width(1);
        for (i, row) in confusion.iter().enumerate() {
            for (j, &count) in row.iter().enumerate() {
                let (i, j) = (to_i32(i), to_i32(j));
                let t = if max_count == 0 {
                    0.0
                } else {
                    count as f64 / max_count as f64
                };
                let fill = heat_color(t);
                let (x0, y0) = (grid_left + j * cell, top + i * cell);
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell, y0 + cell)],
                    fill.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell, y0 + cell)],
                    cell_border,
                ))?;
                let text_color = if luminance(fill) < 0.5 {
                    WHITE
                } else if count == 0 {
                    RGBColor(170, 170, 170)
                } else {
                    RGBColor(20, 20, 20)
                };
                let style = count_font
                    .color(&text_color)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                draw_text(root, &count.to_string(), (centre_x(j), centre_y(i)), &style)?;
            }
        }
        root.draw(&Rectangle::new(
            [(grid_left, top), (grid_left + grid, top + grid)],
            RGBColor(120, 120, 120).stroke_width(1),
        ))?;

        let row_style = name_font
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        // Rotated 270°: the anchor is the end of the text, which then runs downwards from it.
        let col_style = name_font
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center))
            .transform(FontTransform::Rotate270);
        for (i, name) in names.iter().enumerate() {
            let i = to_i32(i);
            draw_text(root, name, (grid_left - 8, centre_y(i)), &row_style)?;
            draw_text(root, name, (centre_x(i), top + grid + 8), &col_style)?;
        }

        let axis_style = axis_font
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        draw_text(
            root,
            "predicted class",
            (
                grid_left + grid / 2,
                top + grid + 8 + names_w + 8 + axis_title_h / 2,
            ),
            &axis_style,
        )?;
        draw_text(
            root,
            "true class",
            (
                grid_left - 10 - names_w - 8 - axis_title_h / 2,
                top + grid / 2,
            ),
            &axis_style.transform(FontTransform::Rotate270),
        )?;
        Ok(())
    })
}

/// White → dark blue ramp (ColorBrewer "Blues" stops) for `t` in [0,1].
fn heat_color(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (255.0, 255.0, 255.0),
        (198.0, 219.0, 239.0),
        (107.0, 174.0, 214.0),
        (33.0, 113.0, 181.0),
        (8.0, 48.0, 107.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let scaled = t * (STOPS.len() - 1) as f64;
    let i = (scaled.floor() as usize).min(STOPS.len() - 2);
    let f = scaled - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Perceived brightness of a colour in [0,1].
fn luminance(c: RGBColor) -> f64 {
    (0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2)) / 255.0
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_png, names};
    use super::*;

    #[test]
    fn confusion_writes_png_and_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.png");
        let confusion = vec![vec![50, 3, 0], vec![4, 40, 6], vec![0, 2, 61]];
        confusion_png(&path, "confusion", &confusion, &names(3)).unwrap();
        assert_png(&path);

        let bad = dir.path().join("bad.png");
        assert!(matches!(
            confusion_png(&bad, "c", &confusion, &names(2)),
            Err(PlotError::Input { .. })
        ));
        let ragged = vec![vec![1, 2, 3], vec![4, 5], vec![6, 7, 8]];
        assert!(matches!(
            confusion_png(&bad, "c", &ragged, &names(3)),
            Err(PlotError::Input { .. })
        ));
    }
}
