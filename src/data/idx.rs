//! The IDX format (LeCun's MNIST files), gzip-compressed or plain, fully validated.

use super::DataError;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// IDX magic for unsigned bytes with three dimensions (images).
const MAGIC_IMAGES: u32 = 0x0000_0803;
/// IDX magic for unsigned bytes with one dimension (labels).
const MAGIC_LABELS: u32 = 0x0000_0801;
/// Largest image side accepted; guards against a corrupt header asking for huge buffers.
const MAX_SIDE: usize = 4096;

/// A stack of 8-bit grayscale images from one IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows (height) of each image.
    pub rows: usize,
    /// Columns (width) of each image.
    pub cols: usize,
    /// `count × rows × cols` pixels, row-major.
    pub pixels: Vec<u8>,
}

fn read_all(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Invalid {
                path: path.to_path_buf(),
                reason: format!("gzip stream is corrupt or truncated ({e})"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(path: &Path, bytes: &[u8], magic: u32, dims: usize) -> Result<Vec<usize>, DataError> {
    let invalid = |reason: String| DataError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let need = 4 + 4 * dims;
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if bytes.len() >= 4 && word(0) != magic {
        return Err(invalid(format!(
            "magic number is 0x{:08x}, expected 0x{magic:08x} ({})",
            word(0),
            if magic == MAGIC_IMAGES {
                "unsigned-byte images, 3 dimensions"
            } else {
                "unsigned-byte labels, 1 dimension"
            }
        )));
    }
    if bytes.len() < need {
        return Err(invalid(format!(
            "file has {} bytes, shorter than its {need}-byte header",
            bytes.len()
        )));
    }
    Ok((0..dims).map(|d| word(4 + 4 * d) as usize).collect())
}

/// Reads an IDX image file (magic 0x00000803), plain or gzip.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let bytes = read_all(path)?;
    let dims = header(path, &bytes, MAGIC_IMAGES, 3)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    let invalid = |reason: String| DataError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE {
        return Err(invalid(format!(
            "image size {rows}×{cols} is outside 1..={MAX_SIDE}"
        )));
    }
    let body = &bytes[16..];
    let expected = count
        .checked_mul(rows * cols)
        .ok_or_else(|| invalid(format!("{count} images of {rows}×{cols} overflow")))?;
    if body.len() != expected {
        return Err(invalid(format!(
            "header promises {count} images of {rows}×{cols} ({expected} bytes) but the body has {} bytes{}",
            body.len(),
            if body.len() < expected { " (truncated)" } else { " (trailing data)" }
        )));
    }
    let mut pixels = bytes;
    pixels.drain(..16);
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX label file (magic 0x00000801), plain or gzip; every label must be below `classes`.
pub fn read_idx_labels(path: &Path, classes: usize) -> Result<Vec<u8>, DataError> {
    let bytes = read_all(path)?;
    let dims = header(path, &bytes, MAGIC_LABELS, 1)?;
    let count = dims[0];
    let body = &bytes[8..];
    let invalid = |reason: String| DataError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if body.len() != count {
        return Err(invalid(format!(
            "header promises {count} labels but the body has {} bytes{}",
            body.len(),
            if body.len() < count {
                " (truncated)"
            } else {
                " (trailing data)"
            }
        )));
    }
    if let Some(i) = body.iter().position(|&l| usize::from(l) >= classes) {
        return Err(invalid(format!(
            "label {} at index {i} is not a class index below {classes}",
            body[i]
        )));
    }
    Ok(body.to_vec())
}
