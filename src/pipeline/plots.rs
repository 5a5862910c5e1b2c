//! Report figures for the labelling pipeline, rendered to PNG files with plotters.
//!
//! All text uses DejaVu Sans embedded in the binary (the `dejavu` crate) and registered with
//! plotters' `ab_glyph` font backend, so rendering needs no system font libraries at run time.
//! Every function validates its input and returns [`PlotError`] instead of panicking.

use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Family name under which the embedded DejaVu Sans faces are registered with plotters.
const FONT_FAMILY: &str = "aelabel-dejavu-sans";

/// t-SNE perplexity (lowered automatically for fewer than 91 points).
const TSNE_PERPLEXITY: f32 = 30.0;
/// Barnes-Hut accuracy/speed trade-off.
const TSNE_THETA: f32 = 0.5;
/// Gradient-descent iterations (the first 250 use early exaggeration).
const TSNE_EPOCHS: usize = 1000;
/// Fewest points t-SNE is run on (perplexity must stay at least 1).
const TSNE_MIN_POINTS: usize = 4;

/// Size of the scatter and learning-curve figures, in pixels.
const FIGURE_SIZE: (u32, u32) = (900, 600);
/// Height of the title band at the top of a figure, in pixels.
const TITLE_HEIGHT: i32 = 48;

/// Why a figure could not be written; every variant names the output file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The data handed in is inconsistent or unusable (lengths, ranges, non-finite values).
    #[error("cannot plot {path}: {reason}")]
    Input {
        /// The PNG that was to be written.
        path: PathBuf,
        /// What is wrong with the input.
        reason: String,
    },
    /// The directory that should hold the PNG could not be created.
    #[error("cannot create the directory for {path}: {source}")]
    Io {
        /// The PNG that was to be written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded DejaVu font was rejected by plotters (should never happen).
    #[error("cannot plot {path}: the embedded DejaVu Sans font could not be registered")]
    Font {
        /// The PNG that was to be written.
        path: PathBuf,
    },
    /// The t-SNE optimisation failed or produced non-finite coordinates.
    #[error("t-SNE for {path} failed: {reason}")]
    Tsne {
        /// The PNG that was to be written.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Drawing or encoding/writing the PNG failed.
    #[error("cannot draw or write {path}: {reason}")]
    Draw {
        /// The PNG that was to be written.
        path: PathBuf,
        /// The plotters / image error message.
        reason: String,
    },
}

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

/// Scatter of 2-D points coloured by class with a legend of class names.
///
/// `classes[i]` is the class of `points[i]` and indexes `class_names`. Colours follow
/// matplotlib's `tab10` palette (more classes get evenly spread hues); the legend sits in its own
/// panel right of the plot so it never hides points. Points are drawn in input order, slightly
/// transparent, so no class is systematically painted over another.
pub fn scatter_png(
    path: &Path,
    title: &str,
    points: &[[f32; 2]],
    classes: &[u32],
    class_names: &[String],
) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err(input_err(path, "no points to plot"));
    }
    if classes.len() != points.len() {
        return Err(input_err(
            path,
            format!("{} points but {} class labels", points.len(), classes.len()),
        ));
    }
    check_classes(path, classes, class_names)?;
    if let Some(i) = points
        .iter()
        .position(|p| !(p[0].is_finite() && p[1].is_finite()))
    {
        return Err(input_err(
            path,
            format!("point {i} is not finite: {:?}", points[i]),
        ));
    }
    ensure_output(path)?;

    render(path, FIGURE_SIZE, |root| {
        let body = draw_title(root, title)?;
        let legend_font = font(15.0);
        let legend_w = legend_width(&legend_font, class_names, 36);
        let (body_w, _) = body.dim_in_pixel();
        let (chart_area, legend_area) = body.split_horizontally(to_i32_u32(body_w) - legend_w);

        let xs = padded_range(points.iter().map(|p| f64::from(p[0])));
        let ys = padded_range(points.iter().map(|p| f64::from(p[1])));
        let x_fmt = tick_formatter(&xs, 8);
        let y_fmt = tick_formatter(&ys, 8);
        let mut chart = ChartBuilder::on(&chart_area)
            .margin_left(10)
            .margin_right(10)
            .margin_bottom(10)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(xs, ys)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(228, 228, 228))
            .axis_style(RGBColor(120, 120, 120))
            .label_style(font(13.0).color(&RGBColor(60, 60, 60)))
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()?;

        let (radius, alpha) = match points.len() {
            0..=300 => (4, 0.85),
            301..=2000 => (3, 0.7),
            _ => (2, 0.6),
        };
        chart.draw_series(points.iter().zip(classes).map(|(p, &c)| {
            Circle::new(
                (f64::from(p[0]), f64::from(p[1])),
                radius,
                class_color(c as usize).mix(alpha).filled(),
            )
        }))?;

        let entries: Vec<(String, RGBColor)> = class_names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), class_color(i)))
            .collect();
        draw_legend(
            &legend_area,
            &entries,
            &legend_font,
            legend_w,
            |area, (x, y), color| {
                area.draw(&Circle::new((x + 9, y), 6, color.filled()))?;
                Ok(())
            },
        )
    })
}

/// t-SNE of `codes` (n × dim, row-major) to 2-D with the bhtsne crate, then [`scatter_png`];
/// returns the 2-D points (in input order) too.
///
/// Barnes-Hut t-SNE with perplexity 30 (capped at (n-1)/3 for small n), theta 0.5, 1000
/// iterations and learning rate max(200, n/12). Codes are centred and scaled to max |x| = 1 first;
/// the exact Euclidean nearest neighbours are computed here (ties broken by index) and the
/// starting layout is drawn from `seed`, replacing all of bhtsne's own randomness.
///
/// Determinism: bhtsne offers no seed and sums in parallel with rayon, whose summation order
/// depends on thread scheduling, so with several rayon threads two runs with the same seed give
/// the same clusters but a different layout. With one rayon thread (`RAYON_NUM_THREADS=1`, or
/// calling this inside a one-thread rayon pool) the result is bit-for-bit reproducible for a
/// given seed. About 13 s for 5,000 × 30 codes on two cores in a release build (17 s on one).
/// Needs at least 4 points.
pub fn tsne_png(
    path: &Path,
    title: &str,
    codes: &[f32],
    dim: usize,
    classes: &[u32],
    class_names: &[String],
    seed: u64,
) -> Result<Vec<[f32; 2]>, PlotError> {
    if dim == 0 {
        return Err(input_err(path, "code dimension must be positive"));
    }
    if codes.len() % dim != 0 {
        return Err(input_err(
            path,
            format!(
                "codes has {} values, not a multiple of dim = {dim}",
                codes.len()
            ),
        ));
    }
    let n = codes.len() / dim;
    if n != classes.len() {
        return Err(input_err(
            path,
            format!(
                "{n} codes (of dim {dim}) but {} class labels",
                classes.len()
            ),
        ));
    }
    if n < TSNE_MIN_POINTS {
        return Err(input_err(
            path,
            format!("t-SNE needs at least {TSNE_MIN_POINTS} points, got {n}"),
        ));
    }
    if let Some(i) = codes.iter().position(|v| !v.is_finite()) {
        return Err(input_err(
            path,
            format!("code {} (component {}) is not finite", i / dim, i % dim),
        ));
    }
    check_classes(path, classes, class_names)?;

    let points = run_tsne(codes, n, dim, seed).map_err(|reason| PlotError::Tsne {
        path: path.to_path_buf(),
        reason,
    })?;
    scatter_png(path, title, &points, classes, class_names)?;
    Ok(points)
}

/// One learning-curve series: a name (e.g. "pretrain train BCE") and one value per epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Legend label of the series.
    pub name: String,
    /// Value after each epoch; `values[0]` is epoch 1. Non-finite values leave a gap.
    pub values: Vec<f64>,
}

/// Learning curves (x = epoch starting at 1, y = value), one coloured line per curve, legend, axis labels, title.
///
/// Curves may have different lengths; the x axis spans the longest. Points are marked when there
/// are at most 40 epochs. Non-finite values (a diverged loss) are skipped and break the line. The
/// legend has its own panel right of the plot so it never hides a curve.
pub fn curves_png(
    path: &Path,
    title: &str,
    y_label: &str,
    curves: &[Curve],
) -> Result<(), PlotError> {
    if curves.is_empty() {
        return Err(input_err(path, "no curves to plot"));
    }
    if let Some(c) = curves.iter().find(|c| c.values.is_empty()) {
        return Err(input_err(path, format!("curve {:?} has no values", c.name)));
    }
    let finite = || {
        curves
            .iter()
            .flat_map(|c| c.values.iter().copied())
            .filter(|v| v.is_finite())
    };
    if finite().next().is_none() {
        return Err(input_err(path, "no curve has a finite value"));
    }
    ensure_output(path)?;

    let epochs = curves.iter().map(|c| c.values.len()).max().unwrap_or(1);
    render(path, FIGURE_SIZE, |root| {
        let body = draw_title(root, title)?;
        let legend_font = font(15.0);
        let names: Vec<String> = curves.iter().map(|c| c.name.clone()).collect();
        let legend_w = legend_width(&legend_font, &names, 44);
        let (body_w, _) = body.dim_in_pixel();
        let (chart_area, legend_area) = body.split_horizontally(to_i32_u32(body_w) - legend_w);

        let xs = 0.5..(epochs as f64 + 0.5);
        let ys = padded_range(finite());
        let y_fmt = tick_formatter(&ys, 8);
        let x_fmt = |x: &f64| {
            if (x - x.round()).abs() < 1e-6 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        };
        let mut chart = ChartBuilder::on(&chart_area)
            .margin_left(10)
            .margin_right(10)
            .margin_bottom(10)
            .x_label_area_size(46)
            .y_label_area_size(66)
            .build_cartesian_2d(xs, ys)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(228, 228, 228))
            .axis_style(RGBColor(120, 120, 120))
            .label_style(font(13.0).color(&RGBColor(60, 60, 60)))
            .axis_desc_style(font(15.0).color(&BLACK))
            .x_labels(epochs.min(12))
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .x_desc("epoch")
            .y_desc(y_label)
            .draw()?;

        let markers = epochs <= 40;
        for (i, curve) in curves.iter().enumerate() {
            let color = class_color(i);
            for segment in finite_segments(&curve.values) {
                chart.draw_series(LineSeries::new(segment.clone(), color.stroke_width(2)))?;
                if markers {
                    chart.draw_series(
                        segment
                            .into_iter()
                            .map(|p| Circle::new(p, 3, color.filled())),
                    )?;
                }
            }
        }

        let entries: Vec<(String, RGBColor)> = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| (name, class_color(i)))
            .collect();
        draw_legend(
            &legend_area,
            &entries,
            &legend_font,
            legend_w,
            |area, (x, y), color| {
                area.draw(&PathElement::new(
                    vec![(x, y), (x + 24, y)],
                    color.stroke_width(3),
                ))?;
                if markers {
                    area.draw(&Circle::new((x + 12, y), 3, color.filled()))?;
                }
                Ok(())
            },
        )
    })
}

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

// ---------------------------------------------------------------------------------------------
// Drawing helpers.

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Any drawing failure, reduced to its message (converted to [`PlotError::Draw`] by [`render`]).
struct DrawFail(String);

impl<E: Display> From<E> for DrawFail {
    fn from(e: E) -> Self {
        DrawFail(e.to_string())
    }
}

fn input_err(path: &Path, reason: impl Into<String>) -> PlotError {
    PlotError::Input {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Registers the embedded DejaVu faces once per process; `false` if plotters rejected them.
fn font_registered() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        register_font(FONT_FAMILY, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT_FAMILY, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    })
}

/// Checks the `.png` extension (the encoder picks the format from it) and registers the font.
fn ensure_output(path: &Path) -> Result<(), PlotError> {
    let is_png = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(input_err(path, "the output file name must end in .png"));
    }
    if !font_registered() {
        return Err(PlotError::Font {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Creates the parent directory of `path`, draws onto a white `size` canvas with `draw` and
/// writes it to `path` as PNG.
fn render<F>(path: &Path, size: (u32, u32), draw: F) -> Result<(), PlotError>
where
    F: FnOnce(&Area<'_>) -> Result<(), DrawFail>,
{
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| PlotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let root = BitMapBackend::new(path, size).into_drawing_area();
    let outcome = root
        .fill(&WHITE)
        .map_err(DrawFail::from)
        .and_then(|()| draw(&root))
        .and_then(|()| root.present().map_err(DrawFail::from));
    outcome.map_err(|DrawFail(reason)| PlotError::Draw {
        path: path.to_path_buf(),
        reason,
    })
}

/// Longest canvas side accepted, in pixels.
const MAX_SIDE: usize = 30_000;

/// The canvas size as plotters wants it, or an error if a side exceeds [`MAX_SIDE`] or the
/// pixel buffer would be absurd (> 100 megapixels).
fn size_or_err(path: &Path, w: usize, h: usize) -> Result<(u32, u32), PlotError> {
    if w > MAX_SIDE || h > MAX_SIDE || w.saturating_mul(h) > 100_000_000 {
        return Err(input_err(
            path,
            format!("the figure would be {w}×{h} pixels; plot fewer items"),
        ));
    }
    let side = |v: usize| u32::try_from(v.max(1)).unwrap_or(1);
    Ok((side(w), side(h)))
}

fn font(size: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FONT_FAMILY), size, FontStyle::Normal)
}

fn title_font() -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FONT_FAMILY), 20.0, FontStyle::Bold)
}

/// Rendered width of `text` in pixels (a rough estimate if the font cannot be measured).
fn text_width(font: &FontDesc<'_>, text: &str) -> i32 {
    match font.box_size(text) {
        Ok((w, _)) => to_i32_u32(w),
        Err(_) => (text.chars().count() as f64 * font.get_size() * 0.6) as i32,
    }
}

/// `text` itself if it is at most `max_w` pixels wide, otherwise its start and end joined by
/// "…" (the end often tells similar names apart), as long as fits.
fn truncate_to_width(font: &FontDesc<'_>, text: &str, max_w: i32) -> String {
    if text_width(font, text) <= max_w {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return String::new();
    }
    let shortened = |keep: usize| -> String {
        let head: String = chars[..keep.div_ceil(2)].iter().collect();
        let tail: String = chars[chars.len() - keep / 2..].iter().collect();
        format!("{}…{}", head.trim_end(), tail.trim_start())
    };
    // Binary search for the most characters kept that still fit (width grows with `keep`).
    let (mut lo, mut hi) = (0, chars.len() - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if text_width(font, &shortened(mid)) <= max_w {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    shortened(lo)
}

/// Tick label formatter for a linear axis over `range` with about `ticks` labels: as many
/// decimals as plotters' 1-2-5 tick step needs, and no "-0".
fn tick_formatter(range: &std::ops::Range<f64>, ticks: usize) -> impl Fn(&f64) -> String {
    let span = range.end - range.start;
    let decimals = if span > 0.0 && span.is_finite() {
        let rough = span / ticks.max(1) as f64;
        let magnitude = 10f64.powf(rough.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * magnitude)
            .find(|step| *step >= rough * (1.0 - 1e-9))
            .unwrap_or(10.0 * magnitude);
        (-(step.log10() + 1e-9).floor()).clamp(0.0, 12.0) as usize
    } else {
        2
    };
    move |v: &f64| {
        let text = format!("{v:.decimals$}");
        match text.strip_prefix('-') {
            Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
            _ => text,
        }
    }
}

/// Draws `text` at `pos` (anchored as `style` says).
fn draw_text(
    area: &Area<'_>,
    text: &str,
    pos: (i32, i32),
    style: &TextStyle<'_>,
) -> Result<(), DrawFail> {
    area.draw(&Text::new(text, pos, style.clone()))?;
    Ok(())
}

/// Writes the bold title centred in a band at the top and returns the area below it.
fn draw_title<'a>(root: &Area<'a>, title: &str) -> Result<Area<'a>, DrawFail> {
    let (band, body) = root.split_vertically(TITLE_HEIGHT);
    let (w, _) = band.dim_in_pixel();
    let style = title_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    let title = truncate_to_width(&title_font(), title, to_i32_u32(w) - 20);
    draw_text(
        &band,
        &title,
        (to_i32_u32(w) / 2, TITLE_HEIGHT / 2 + 4),
        &style,
    )?;
    Ok(body)
}

/// Width of a legend panel: swatch + the widest name, within [140, 320] px.
fn legend_width(font: &FontDesc<'_>, names: &[String], swatch: i32) -> i32 {
    let widest = names.iter().map(|n| text_width(font, n)).max().unwrap_or(0);
    (swatch + widest + 24).clamp(140, 320)
}

/// Draws one legend row per entry (swatch via `swatch`, then the name) in `area`.
fn draw_legend<S>(
    area: &Area<'_>,
    entries: &[(String, RGBColor)],
    font: &FontDesc<'_>,
    width: i32,
    swatch: S,
) -> Result<(), DrawFail>
where
    S: Fn(&Area<'_>, (i32, i32), RGBColor) -> Result<(), DrawFail>,
{
    let (_, h) = area.dim_in_pixel();
    let rows = to_i32(entries.len().max(1));
    let row_h = ((to_i32_u32(h) - 40) / rows).clamp(8, 26);
    // Shrink the text when many entries must share the height.
    let font = font.resize(font.get_size().min(f64::from(row_h) * 0.8));
    let swatch_w = 34;
    let style = font.color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    let max_name_w = width - swatch_w - 16;
    for (i, (name, color)) in entries.iter().enumerate() {
        let y = 24 + to_i32(i) * row_h;
        swatch(area, (6, y), *color)?;
        let name = truncate_to_width(&font, name, max_name_w);
        draw_text(area, &name, (6 + swatch_w, y), &style)?;
    }
    Ok(())
}

/// Range covering all values with 5% padding on each side (never empty).
fn padded_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !(lo.is_finite() && hi.is_finite()) {
        return 0.0..1.0;
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        0.05 * span
    } else {
        (0.1 * lo.abs()).max(1e-3)
    };
    (lo - pad)..(hi + pad)
}

/// Runs of consecutive finite values as (epoch, value) points, epochs counted from 1.
fn finite_segments(values: &[f64]) -> Vec<Vec<(f64, f64)>> {
    let mut segments = Vec::new();
    let mut current = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        if v.is_finite() {
            current.push(((i + 1) as f64, v));
        } else if !current.is_empty() {
            segments.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

/// Colour of class / series `i`: matplotlib's `tab10`, then hues spaced by the golden angle.
fn class_color(i: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    match TAB10.get(i) {
        Some(&(r, g, b)) => RGBColor(r, g, b),
        None => {
            let hue = (i as f64 * 0.618_033_988_749_895).fract();
            let (r, g, b) = HSLColor(hue, 0.65, 0.45).rgb();
            RGBColor(r, g, b)
        }
    }
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

/// Checks that there is at least one class name and every class indexes one.
fn check_classes(path: &Path, classes: &[u32], class_names: &[String]) -> Result<(), PlotError> {
    if class_names.is_empty() {
        return Err(input_err(path, "no class names"));
    }
    if let Some((i, &c)) = classes
        .iter()
        .enumerate()
        .find(|(_, &c)| c as usize >= class_names.len())
    {
        return Err(input_err(
            path,
            format!(
                "classes[{i}] = {c} but there are only {} class names",
                class_names.len()
            ),
        ));
    }
    Ok(())
}

fn to_i32(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn to_i32_u32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn to_usize(v: i32) -> usize {
    usize::try_from(v).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// t-SNE.

/// Barnes-Hut t-SNE of `n` finite codes of length `dim` (n ≥ 4) to 2-D.
fn run_tsne(codes: &[f32], n: usize, dim: usize, seed: u64) -> Result<Vec<[f32; 2]>, String> {
    let data = normalise(codes, n, dim);
    // bhtsne asserts 3 * floor(perplexity) <= n - 1.
    let perplexity = TSNE_PERPLEXITY.min((n - 1) as f32 / 3.0).max(1.0);
    let k = ((3.0 * perplexity) as usize).clamp(1, n - 1);
    let neighbors = nearest_neighbors(&data, n, dim, k);
    let init = initial_layout(n, seed);
    let learning_rate = (n as f32 / 12.0).max(200.0);
    let samples: Vec<&[f32]> = data.chunks_exact(dim).collect();

    let embedding = catch_unwind(AssertUnwindSafe(|| {
        let mut tsne: bhtsne::tSNE<f32, &[f32]> = bhtsne::tSNE::new(&samples);
        tsne.embedding_dim(2)
            .perplexity(perplexity)
            .epochs(TSNE_EPOCHS)
            .learning_rate(learning_rate)
            .initial_embedding(init)
            .barnes_hut_with_neighbors(TSNE_THETA, &neighbors);
        tsne.embedding()
    }))
    .map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        format!("bhtsne panicked: {message}")
    })?;

    if embedding.len() != 2 * n {
        return Err(format!(
            "bhtsne returned {} coordinates, expected {}",
            embedding.len(),
            2 * n
        ));
    }
    if embedding.iter().any(|v| !v.is_finite()) {
        return Err("the embedding diverged to non-finite coordinates".to_string());
    }
    Ok(embedding.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
}

/// Centres every component and scales so the largest |value| is 1 (as the reference bhtsne does),
/// which keeps the perplexity search well conditioned whatever the code scale.
fn normalise(codes: &[f32], n: usize, dim: usize) -> Vec<f32> {
    let mut mean = vec![0.0f64; dim];
    for row in codes.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let centred: Vec<f64> = codes
        .chunks_exact(dim)
        .flat_map(|row| row.iter().zip(&mean).map(|(&v, m)| f64::from(v) - m))
        .collect();
    let max_abs = centred.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
    let scale = if max_abs > 0.0 { 1.0 / max_abs } else { 1.0 };
    centred.iter().map(|v| (v * scale) as f32).collect()
}

/// Exact `k` nearest neighbours (Euclidean) of every row, nearest first, ties broken by index.
fn nearest_neighbors(
    data: &[f32],
    n: usize,
    dim: usize,
    k: usize,
) -> Vec<Vec<bhtsne::Neighbor<f32>>> {
    let rows: Vec<&[f32]> = data.chunks_exact(dim).collect();
    let order = |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    let mut candidates: Vec<(f32, usize)> = Vec::with_capacity(n);
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            candidates.clear();
            candidates.extend(rows.iter().enumerate().filter(|&(j, _)| j != i).map(
                |(j, other)| {
                    let d2: f32 = row.iter().zip(*other).map(|(a, b)| (a - b) * (a - b)).sum();
                    (d2, j)
                },
            ));
            if k < candidates.len() {
                candidates.select_nth_unstable_by(k - 1, order);
                candidates.truncate(k);
            }
            candidates.sort_unstable_by(order);
            candidates
                .iter()
                .map(|&(d2, j)| bhtsne::Neighbor {
                    index: j,
                    distance: d2.sqrt(),
                })
                .collect()
        })
        .collect()
}

/// Starting layout: i.i.d. N(0, 1e-4²) coordinates (as bhtsne's own initialisation) from `seed`.
fn initial_layout(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut next_unit = move || {
        // SplitMix64, mapped to (0, 1].
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(2 * n);
    while out.len() < 2 * n {
        // Box–Muller: two independent standard normals per pair of uniforms.
        let (u1, u2) = (next_unit(), next_unit());
        let r = (-2.0 * u1.ln()).sqrt() * 1e-4;
        let angle = std::f64::consts::TAU * u2;
        out.push((r * angle.cos()) as f32);
        out.push((r * angle.sin()) as f32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    fn assert_png(path: &Path) {
        let bytes = std::fs::read(path).expect("PNG was written");
        assert!(bytes.len() > 100, "{} is too small", path.display());
        assert_eq!(bytes[..8], PNG_SIGNATURE, "{} is not a PNG", path.display());
    }

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("class {i}")).collect()
    }

    /// Deterministic pseudo-random values in [0, 1).
    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    }

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

    #[test]
    fn scatter_writes_png_and_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scatter.png");
        let xs = noise(60, 3);
        let points: Vec<[f32; 2]> = xs.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
        let classes: Vec<u32> = (0..30).map(|i| i % 3).collect();
        scatter_png(&path, "scatter", &points, &classes, &names(3)).unwrap();
        assert_png(&path);

        let bad = dir.path().join("bad.png");
        let err = scatter_png(&bad, "t", &points, &classes[1..], &names(3)).unwrap_err();
        assert!(matches!(err, PlotError::Input { .. }));
        assert!(err.to_string().contains("bad.png"), "{err}");
        let err = scatter_png(&bad, "t", &points, &classes, &names(2)).unwrap_err();
        assert!(matches!(err, PlotError::Input { .. }));
        let mut nan_points = points.clone();
        nan_points[5][1] = f32::NAN;
        let err = scatter_png(&bad, "t", &nan_points, &classes, &names(3)).unwrap_err();
        assert!(matches!(err, PlotError::Input { .. }));
        let not_png = dir.path().join("scatter.jpg");
        let err = scatter_png(&not_png, "t", &points, &classes, &names(3)).unwrap_err();
        assert!(matches!(err, PlotError::Input { .. }));
    }

    #[test]
    fn tsne_writes_png_and_returns_points() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tsne.png");
        let (n, dim) = (40, 5);
        let mut codes = noise(n * dim, 4);
        let classes: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        for (row, &c) in codes.chunks_exact_mut(dim).zip(&classes) {
            row[0] += 5.0 * c as f32;
        }
        let points = tsne_png(&path, "t-SNE", &codes, dim, &classes, &names(2), 7).unwrap();
        assert_eq!(points.len(), n);
        assert!(points.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
        assert_png(&path);
    }

    #[test]
    fn tiny_inputs_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny_tsne.png");
        let codes = noise(TSNE_MIN_POINTS * 3, 6);
        let classes = vec![0u32; TSNE_MIN_POINTS];
        let points = tsne_png(&path, "tiny", &codes, 3, &classes, &names(1), 3).unwrap();
        assert_eq!(points.len(), TSNE_MIN_POINTS);
        assert_png(&path);

        let path = dir.path().join("one_point.png");
        scatter_png(&path, "one point", &[[1.0, 1.0]], &[0], &names(1)).unwrap();
        assert_png(&path);

        let path = dir.path().join("one_epoch.png");
        let curve = Curve {
            name: "flat".to_string(),
            values: vec![0.0],
        };
        curves_png(&path, "one epoch", "loss", &[curve]).unwrap();
        assert_png(&path);

        let path = dir.path().join("empty_confusion.png");
        confusion_png(&path, "all zero", &[vec![0]], &names(1)).unwrap();
        assert_png(&path);
    }

    #[test]
    fn tsne_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tsne.png");
        let codes = noise(40 * 5, 5);
        let classes = vec![0u32; 40];
        let run = |codes: &[f32], dim: usize, classes: &[u32]| {
            tsne_png(&path, "t", codes, dim, classes, &names(1), 1)
        };
        assert!(matches!(
            run(&codes[1..], 5, &classes),
            Err(PlotError::Input { .. })
        ));
        assert!(matches!(
            run(&codes, 5, &classes[1..]),
            Err(PlotError::Input { .. })
        ));
        assert!(matches!(
            run(&codes, 0, &classes),
            Err(PlotError::Input { .. })
        ));
        assert!(matches!(
            run(&codes[..15], 5, &classes[..3]),
            Err(PlotError::Input { .. })
        ));
        let mut bad_class = classes.clone();
        bad_class[7] = 1;
        assert!(matches!(
            run(&codes, 5, &bad_class),
            Err(PlotError::Input { .. })
        ));
    }

    #[test]
    fn curves_writes_png_and_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let curves = vec![
            Curve {
                name: "train".to_string(),
                values: vec![0.7, 0.5, 0.4, f64::NAN, 0.3],
            },
            Curve {
                name: "validation".to_string(),
                values: vec![0.72, 0.55],
            },
        ];
        curves_png(&path, "loss", "BCE", &curves).unwrap();
        assert_png(&path);

        let bad = dir.path().join("bad.png");
        assert!(matches!(
            curves_png(&bad, "loss", "BCE", &[]),
            Err(PlotError::Input { .. })
        ));
        let empty = [Curve {
            name: "empty".to_string(),
            values: vec![],
        }];
        assert!(matches!(
            curves_png(&bad, "loss", "BCE", &empty),
            Err(PlotError::Input { .. })
        ));
    }

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
