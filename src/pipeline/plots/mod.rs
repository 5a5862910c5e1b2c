//! Report figures for the labelling pipeline, rendered to PNG files with plotters.
//!
//! All text uses DejaVu Sans embedded in the binary (the `dejavu` crate) and registered with
//! plotters' `ab_glyph` font backend, so rendering needs no system font libraries at run time.
//! Every function validates its input and returns [`PlotError`] instead of panicking.
//!
//! This module holds the error type and the drawing helpers every figure shares; the figures
//! live in `images` (reconstructions), `charts` (scatter, t-SNE map, learning curves) and
//! `confusion` (confusion matrix). The maths behind a figure (t-SNE) lives in [`crate::train`].

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

mod charts;
mod confusion;
mod images;

pub use charts::{curves_png, scatter_png, tsne_png, xy_curves_png, Curve, XyCurve};
pub use confusion::confusion_png;
pub use images::reconstructions_png;

/// Family name under which the embedded DejaVu Sans faces are registered with plotters.
const FONT_FAMILY: &str = "aelabel-dejavu-sans";

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

// ---------------------------------------------------------------------------------------------
// Drawing helpers shared by every figure.

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

fn to_i32(v: usize) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn to_i32_u32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn to_usize(v: i32) -> usize {
    usize::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod test_support {
    //! Helpers shared by the figure tests.

    use std::path::Path;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    pub(super) fn assert_png(path: &Path) {
        let bytes = std::fs::read(path).expect("PNG was written");
        assert!(bytes.len() > 100, "{} is too small", path.display());
        assert_eq!(bytes[..8], PNG_SIGNATURE, "{} is not a PNG", path.display());
    }

    pub(super) fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("class {i}")).collect()
    }

    /// Deterministic pseudo-random values in [0, 1).
    pub(super) fn noise(len: usize, seed: u64) -> Vec<f32> {
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
}

#[cfg(test)]
mod tests {
    use super::test_support::{assert_png, names, noise};
    use super::*;
    use crate::train::tsne::MIN_POINTS;

    #[test]
    fn tiny_inputs_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny_tsne.png");
        let codes = noise(MIN_POINTS * 3, 6);
        let classes = vec![0u32; MIN_POINTS];
        let points = tsne_png(&path, "tiny", &codes, 3, &classes, &names(1), 3).unwrap();
        assert_eq!(points.len(), MIN_POINTS);
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
}
