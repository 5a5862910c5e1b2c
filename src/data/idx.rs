//! The IDX format (LeCun's MNIST files), gzip-compressed or plain, fully validated.

use super::DataError;
use flate2::read::GzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
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

/// An IDX file opened for reading, gunzipped on the fly when it starts with gzip's magic.
fn open(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
    let gzip = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gzip {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// Reads up to `buf.len()` bytes (fewer only at the end of the stream); a corrupt gzip stream
/// is an error naming the file.
fn read_up_to(path: &Path, reader: &mut dyn Read, buf: &mut [u8]) -> Result<usize, DataError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(DataError::Invalid {
                    path: path.to_path_buf(),
                    reason: format!("gzip stream is corrupt or truncated ({e})"),
                })
            }
        }
    }
    Ok(filled)
}

/// The header (`4 + 4·dims` bytes) and a reader positioned at the body.
fn read_header(
    path: &Path,
    magic: u32,
    dims: usize,
) -> Result<(Vec<usize>, Box<dyn Read>), DataError> {
    let mut reader = open(path)?;
    let mut head = vec![0u8; 4 + 4 * dims];
    let got = read_up_to(path, &mut reader, &mut head)?;
    let dims = header(path, &head[..got], magic, dims)?;
    Ok((dims, reader))
}

/// Reads a body of exactly `expected` bytes into one buffer reserved at that size (no second
/// copy of a large file in memory; pages are touched only as data arrives, so a header that
/// lies about its size costs nothing); `Err(len)` gives the body's actual length when it
/// differs.
fn read_body(
    path: &Path,
    reader: &mut dyn Read,
    expected: usize,
) -> Result<Result<Vec<u8>, usize>, DataError> {
    let mut body = Vec::new();
    body.try_reserve_exact(expected)
        .map_err(|_| DataError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "its header promises {expected} bytes, more than this machine can hold"
            ),
        })?;
    let corrupt = |e: std::io::Error| DataError::Invalid {
        path: path.to_path_buf(),
        reason: format!("gzip stream is corrupt or truncated ({e})"),
    };
    (&mut *reader)
        .take(expected as u64)
        .read_to_end(&mut body)
        .map_err(corrupt)?;
    let mut rest = [0u8; 1 << 12];
    let mut extra = 0;
    loop {
        let n = read_up_to(path, reader, &mut rest)?;
        extra += n;
        if n < rest.len() {
            break;
        }
    }
    Ok(if body.len() == expected && extra == 0 {
        Ok(body)
    } else {
        Err(body.len() + extra)
    })
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
    let (dims, mut reader) = read_header(path, MAGIC_IMAGES, 3)?;
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
    let expected = count
        .checked_mul(rows * cols)
        .ok_or_else(|| invalid(format!("{count} images of {rows}×{cols} overflow")))?;
    match read_body(path, &mut reader, expected)? {
        Ok(pixels) => Ok(IdxImages {
            count,
            rows,
            cols,
            pixels,
        }),
        Err(len) => Err(invalid(format!(
            "header promises {count} images of {rows}×{cols} ({expected} bytes) but the body has {len} bytes{}",
            if len < expected { " (truncated)" } else { " (trailing data)" }
        ))),
    }
}

/// Reads an IDX label file (magic 0x00000801), plain or gzip; every label must be below `classes`.
pub fn read_idx_labels(path: &Path, classes: usize) -> Result<Vec<u8>, DataError> {
    let (dims, mut reader) = read_header(path, MAGIC_LABELS, 1)?;
    let count = dims[0];
    let invalid = |reason: String| DataError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let body = read_body(path, &mut reader, count)?.map_err(|len| {
        invalid(format!(
            "header promises {count} labels but the body has {len} bytes{}",
            if len < count {
                " (truncated)"
            } else {
                " (trailing data)"
            }
        ))
    })?;
    if let Some(i) = body.iter().position(|&l| usize::from(l) >= classes) {
        return Err(invalid(format!(
            "label {} at index {i} is not a class index below {classes}",
            body[i]
        )));
    }
    Ok(body)
}
