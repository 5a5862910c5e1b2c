//! Network inputs as rows of floats or of 8-bit pixels. Data sets stay 8-bit in memory and
//! become floats (`p / 255`) one chunk at a time, so a large set never exists as floats.

use super::packed::bytes_to_unit;

/// Rows a network reads: floats already in the network's scale, or 8-bit pixels scaled by
/// `1 / 255` as they are read.
#[derive(Clone, Copy, Debug)]
pub enum Inputs<'a> {
    /// Row-major floats (`len × width`).
    Floats(&'a [f32]),
    /// Row-major 8-bit pixels (`len × width`).
    Bytes(&'a [u8]),
}

/// Rows converted at once when a whole set goes through a network: bounds the float copy.
pub const CHUNK_ROWS: usize = 1024;

impl<'a> Inputs<'a> {
    /// Number of rows of `width` values.
    pub fn rows(&self, width: usize) -> usize {
        match self {
            Inputs::Floats(v) => v.len() / width.max(1),
            Inputs::Bytes(v) => v.len() / width.max(1),
        }
    }

    /// Writes row `i` (`out.len()` values wide) into `out` as floats.
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        let w = out.len();
        match self {
            Inputs::Floats(v) => out.copy_from_slice(&v[i * w..(i + 1) * w]),
            Inputs::Bytes(v) => bytes_to_unit(&v[i * w..(i + 1) * w], out),
        }
    }

    /// Rows `start..start + n` as floats: borrowed when they already are, else converted into
    /// `scratch`.
    pub fn chunk<'s>(
        &'s self,
        start: usize,
        n: usize,
        width: usize,
        scratch: &'s mut Vec<f32>,
    ) -> &'s [f32] {
        let range = start * width..(start + n) * width;
        match self {
            Inputs::Floats(v) => &v[range],
            Inputs::Bytes(v) => {
                scratch.resize(n * width, 0.0);
                bytes_to_unit(&v[range], scratch);
                &scratch[..]
            }
        }
    }
}
