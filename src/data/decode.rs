//! Single images from the outside world: PNG/JPEG bytes or raw pixels, turned into 8-bit
//! grayscale at the model's input size.
//!
//! Encoded files are size-checked from their header before any pixel is decoded, so a small
//! file that declares a huge image (a decompression bomb) is refused without allocating it.

use super::gray::{luma8, resize_triangle};
use image::{DynamicImage, GrayImage, ImageFormat, ImageReader, Limits};
use std::io::{BufRead, Cursor, Seek};

/// How large an incoming image may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest width or height accepted, in pixels (raw or declared by a file header).
    pub max_side: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_side: 4096 }
    }
}

/// Why an image was refused; messages read as the second half of "image N …".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Width or height is zero.
    #[error("has a zero dimension ({width}×{height}); width and height must be at least 1")]
    ZeroSize {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// Width or height is over the limit.
    #[error("is {width}×{height}, over the {max}-pixel side limit; scale it down first")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit.
        max: u32,
    },
    /// Raw pixel count and dimensions disagree.
    #[error("has {got} pixel bytes but width × height = {width} × {height} = {want}")]
    PixelCount {
        /// Bytes sent.
        got: usize,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// width × height.
        want: u64,
    },
    /// The bytes are not a PNG or JPEG file.
    #[error("is not a PNG or JPEG file (send raw pixels or an encoded PNG/JPEG)")]
    UnknownFormat,
    /// The file is a PNG or JPEG but cannot be decoded.
    #[error("cannot be decoded as {format}: {reason}")]
    Undecodable {
        /// PNG or JPEG.
        format: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// Neither pixels nor file bytes were sent.
    #[error("has no data; set either raw pixels or encoded bytes")]
    Missing,
}

fn check_side(width: u32, height: u32, limits: ImageLimits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize { width, height });
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(ImageError::TooLarge {
            width,
            height,
            max: limits.max_side,
        });
    }
    Ok(())
}

/// Raw row-major 8-bit pixels, resized to `to_width × to_height` when they differ.
pub fn raw_to_input(
    width: u32,
    height: u32,
    pixels: Vec<u8>,
    (to_width, to_height): (u32, u32),
    limits: ImageLimits,
) -> Result<Vec<u8>, ImageError> {
    check_side(width, height, limits)?;
    let want = u64::from(width) * u64::from(height);
    if pixels.len() as u64 != want {
        return Err(ImageError::PixelCount {
            got: pixels.len(),
            width,
            height,
            want,
        });
    }
    if (width, height) == (to_width, to_height) {
        return Ok(pixels);
    }
    let image = GrayImage::from_raw(width, height, pixels).ok_or(ImageError::PixelCount {
        got: 0,
        width,
        height,
        want,
    })?;
    Ok(resize_triangle(&image, (to_width, to_height)))
}

/// Bytes decoding `bytes` (a PNG or JPEG) can take at its peak, from its header alone: the
/// decoded image at its widest pixel type (16-bit RGBA for PNG, 4 channels for JPEG) plus its
/// 8-bit gray copy. 0 when the header cannot be read or breaks `limits`, or a JPEG's markers
/// are refused: validation refuses such a file before anything is decoded, and a file that can
/// never decode must not be told to retry for want of budget.
pub fn decode_cost(bytes: &[u8], limits: ImageLimits) -> u64 {
    let Ok(format) = sniff_format(bytes) else {
        return 0;
    };
    if format.0 == ImageFormat::Jpeg && super::jpeg::check_jpeg(bytes).is_err() {
        return 0;
    }
    let Ok((width, height)) =
        ImageReader::with_format(Cursor::new(bytes), format.0).into_dimensions()
    else {
        return 0;
    };
    if check_side(width, height, limits).is_err() {
        return 0;
    }
    let per_pixel = if format.0 == ImageFormat::Png {
        8 + 1
    } else {
        4 + 1
    };
    u64::from(width) * u64::from(height) * per_pixel
}

/// PNG or JPEG, told from the file's first bytes (never from its name), with its display name.
pub(crate) fn sniff_format(head: &[u8]) -> Result<(ImageFormat, &'static str), ImageError> {
    match image::guess_format(head) {
        Ok(ImageFormat::Png) => Ok((ImageFormat::Png, "PNG")),
        Ok(ImageFormat::Jpeg) => Ok((ImageFormat::Jpeg, "JPEG")),
        _ => Err(ImageError::UnknownFormat),
    }
}

/// The width and height a PNG or JPEG header declares, checked against `limits` without
/// decoding a pixel: bombs are refused before the decoder allocates anything.
pub(crate) fn declared_size<R: BufRead + Seek>(
    reader: R,
    (format, name): (ImageFormat, &'static str),
    limits: ImageLimits,
) -> Result<(u32, u32), ImageError> {
    let (width, height) = ImageReader::with_format(reader, format)
        .into_dimensions()
        .map_err(|e| undecodable(name, e))?;
    check_side(width, height, limits)?;
    Ok((width, height))
}

fn undecodable(format: &'static str, e: image::ImageError) -> ImageError {
    ImageError::Undecodable {
        format,
        reason: e.to_string(),
    }
}

/// A decoded image of any colour type as the model's input: 8-bit luma, resized to `target`
/// with a triangle filter. Training data and served images both go through here so that they
/// are preprocessed identically.
fn to_input(image: DynamicImage, target: (u32, u32)) -> Vec<u8> {
    let gray = luma8(image);
    if gray.dimensions() == target {
        return gray.into_raw();
    }
    resize_triangle(&gray, target)
}

/// A PNG or JPEG file decoded, converted to grayscale and resized to `to_width × to_height`.
pub fn decode_to_input(
    bytes: &[u8],
    target: (u32, u32),
    limits: ImageLimits,
) -> Result<Vec<u8>, ImageError> {
    let format = sniff_format(bytes)?;
    if format.0 == ImageFormat::Jpeg {
        super::jpeg::check_jpeg(bytes).map_err(|reason| ImageError::Undecodable {
            format: format.1,
            reason,
        })?;
    }
    declared_size(Cursor::new(bytes), format, limits)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.0);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    reader.limits(decoder_limits);
    let image = reader.decode().map_err(|e| undecodable(format.1, e))?;
    Ok(to_input(image, target))
}
