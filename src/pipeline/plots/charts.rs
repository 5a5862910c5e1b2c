//! Charts on axes: class-coloured scatter plots, the t-SNE map of codes, learning curves.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    draw_text, draw_title, ensure_output, font, input_err, render, text_width, to_i32, to_i32_u32,
    truncate_to_width, Area, DrawFail, PlotError,
};
use crate::train::tsne::{tsne_2d, TsneError};

/// Size of the scatter and learning-curve figures, in pixels.
const FIGURE_SIZE: (u32, u32) = (900, 600);

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
                class_color(class_index(c)).mix(alpha).filled(),
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

/// t-SNE of `codes` (n × dim, row-major) to 2-D with [`tsne_2d`], then [`scatter_png`];
/// returns the 2-D points (in input order) too.
///
/// `classes[i]` is the class of code `i`, so `codes` must hold `classes.len() × dim` values.
/// See [`tsne_2d`] for the method, its settings and when the map is reproducible; it needs at
/// least [`MIN_POINTS`](crate::train::tsne::MIN_POINTS) finite codes.
pub fn tsne_png(
    path: &Path,
    title: &str,
    codes: &[f32],
    dim: usize,
    classes: &[u32],
    class_names: &[String],
    seed: u64,
) -> Result<Vec<[f32; 2]>, PlotError> {
    check_classes(path, classes, class_names)?;
    let points = tsne_2d(codes, classes.len(), dim, seed).map_err(|e| match e {
        TsneError::Input { reason } => input_err(path, reason),
        TsneError::Optimisation { reason } => PlotError::Tsne {
            path: path.to_path_buf(),
            reason,
        },
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
        draw_line_legend(&legend_area, &entries, &legend_font, legend_w, markers)
    })
}

/// One line of an [`xy_curves_png`] chart: `(x, y)` points in x order.
#[derive(Clone, Debug, PartialEq)]
pub struct XyCurve {
    /// Legend label of the line.
    pub name: String,
    /// Its points.
    pub points: Vec<(f64, f64)>,
}

/// Lines over a numeric x axis (e.g. human labels → pool accuracy, one line per strategy),
/// with an optional dashed horizontal `target` line (e.g. the 95 % accuracy to reach).
pub fn xy_curves_png(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    curves: &[XyCurve],
    target: Option<(f64, &str)>,
) -> Result<(), PlotError> {
    let all = || curves.iter().flat_map(|c| c.points.iter().copied());
    if let Some(p) = all().find(|p| !(p.0.is_finite() && p.1.is_finite())) {
        return Err(input_err(path, format!("point {p:?} is not finite")));
    }
    if all().next().is_none() {
        return Err(input_err(path, "no points to plot"));
    }
    ensure_output(path)?;
    let mut names: Vec<String> = curves.iter().map(|c| c.name.clone()).collect();
    if let Some((_, name)) = target {
        names.push(name.to_string());
    }
    render(path, FIGURE_SIZE, |root| {
        let body = draw_title(root, title)?;
        let legend_font = font(15.0);
        let legend_w = legend_width(&legend_font, &names, 44);
        let (body_w, _) = body.dim_in_pixel();
        let (chart_area, legend_area) = body.split_horizontally(to_i32_u32(body_w) - legend_w);
        let xs = padded_range(all().map(|p| p.0));
        let ys = padded_range(all().map(|p| p.1).chain(target.map(|t| t.0)));
        let (x_fmt, y_fmt) = (tick_formatter(&xs, 8), tick_formatter(&ys, 8));
        let mut chart = ChartBuilder::on(&chart_area)
            .margin_left(10)
            .margin_right(10)
            .margin_bottom(10)
            .x_label_area_size(46)
            .y_label_area_size(66)
            .build_cartesian_2d(xs.clone(), ys)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(228, 228, 228))
            .axis_style(RGBColor(120, 120, 120))
            .label_style(font(13.0).color(&RGBColor(60, 60, 60)))
            .axis_desc_style(font(15.0).color(&BLACK))
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()?;
        for (i, curve) in curves.iter().enumerate() {
            let color = class_color(i);
            chart.draw_series(LineSeries::new(curve.points.clone(), color.stroke_width(2)))?;
            chart.draw_series(
                curve
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, 3, color.filled())),
            )?;
        }
        let target_color = RGBColor(90, 90, 90);
        if let Some((y, _)) = target {
            // Dashes: short segments along the line.
            let step = (xs.end - xs.start) / 60.0;
            let dashes = (0..60).step_by(2).map(|k| {
                let x0 = xs.start + k as f64 * step;
                PathElement::new(vec![(x0, y), (x0 + step, y)], target_color.stroke_width(2))
            });
            chart.draw_series(dashes)?;
        }
        let mut entries: Vec<(String, RGBColor)> = curves
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), class_color(i)))
            .collect();
        if let Some((_, name)) = target {
            entries.push((name.to_string(), target_color));
        }
        draw_line_legend(&legend_area, &entries, &legend_font, legend_w, false)
    })
}

// ---------------------------------------------------------------------------------------------
// Chart helpers.

/// A legend of coloured line swatches (with a point marker when `markers`), for line charts.
fn draw_line_legend(
    area: &Area<'_>,
    entries: &[(String, RGBColor)],
    font: &FontDesc<'_>,
    width: i32,
    markers: bool,
) -> Result<(), DrawFail> {
    draw_legend(area, entries, font, width, |area, (x, y), color| {
        area.draw(&PathElement::new(
            vec![(x, y), (x + 24, y)],
            color.stroke_width(3),
        ))?;
        if markers {
            area.draw(&Circle::new((x + 12, y), 3, color.filled()))?;
        }
        Ok(())
    })
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

/// Checks that there is at least one class name and every class indexes one.
fn check_classes(path: &Path, classes: &[u32], class_names: &[String]) -> Result<(), PlotError> {
    if class_names.is_empty() {
        return Err(input_err(path, "no class names"));
    }
    if let Some((i, &c)) = classes
        .iter()
        .enumerate()
        .find(|(_, &c)| class_index(c) >= class_names.len())
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

/// A class id as an index into the class names (saturating on targets narrower than 32 bits).
fn class_index(class: u32) -> usize {
    usize::try_from(class).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_png, names, noise};
    use super::*;

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
}
