//! Large pools built from a small image set for benchmarks: copies shifted by up to two
//! pixels (zero filled) and mirrored, so that a million 28 × 28 images come from Fashion-MNIST's
//! 60,000 with pixels that differ from copy to copy. Written as plain IDX files, a stream at a
//! time, so the pool never has to fit in memory.

use std::io::Write;
use std::path::Path;

/// Shifts `(dx, dy)` of the copies, nearest first: no shift, the four one-pixel moves, the
/// four diagonal ones, then the two-pixel shifts by distance. A pool of a few copies per image
/// thus holds small shifts in every direction rather than two-pixel ones in a single direction
/// (the first order put (−2, −2), (−1, −2), (0, −2)… first, which made the pool drift upwards).
fn shifts() -> Vec<(i32, i32)> {
    let mut all = Vec::with_capacity(25);
    for dy in -2..=2 {
        for dx in -2..=2 {
            all.push((dx, dy));
        }
    }
    all.sort_by_key(|&(dx, dy)| dx * dx + dy * dy);
    all
}

/// Copy `copy` of one `width` × `height` image: shifted by the copy's shift, mirrored left to
/// right in every second round of 25 shifts.
pub fn pool_variant(image: &[u8], width: usize, height: usize, copy: usize) -> Vec<u8> {
    let shifts = shifts();
    let (dx, dy) = shifts[copy % shifts.len()];
    let mirror = (copy / shifts.len()) % 2 == 1;
    let mut out = vec![0u8; width * height];
    for y in 0..height {
        let sy = y as i32 - dy;
        if sy < 0 || sy >= height as i32 {
            continue;
        }
        for x in 0..width {
            let sx = x as i32 - dx;
            if sx < 0 || sx >= width as i32 {
                continue;
            }
            let sx = if mirror {
                width - 1 - sx as usize
            } else {
                sx as usize
            };
            out[y * width + x] = image[sy as usize * width + sx];
        }
    }
    out
}

/// Writes a pool of `count` images to the IDX files `images_path` and `labels_path`: image
/// `k` is copy `k / n` of source image `k % n` (`n` = the source's count), with its label.
pub fn write_pool(
    source: &super::IdxImages,
    labels: &[u8],
    count: usize,
    images_path: &Path,
    labels_path: &Path,
) -> std::io::Result<()> {
    let n = source.count;
    if n == 0 || labels.len() != n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the source has {n} images and {} labels", labels.len()),
        ));
    }
    let size = source.rows * source.cols;
    let count32 = u32::try_from(count)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "too many images"))?;
    let mut images = std::io::BufWriter::new(std::fs::File::create(images_path)?);
    images.write_all(&0x0803u32.to_be_bytes())?;
    images.write_all(&count32.to_be_bytes())?;
    images.write_all(&(source.rows as u32).to_be_bytes())?;
    images.write_all(&(source.cols as u32).to_be_bytes())?;
    let mut out_labels = std::io::BufWriter::new(std::fs::File::create(labels_path)?);
    out_labels.write_all(&0x0801u32.to_be_bytes())?;
    out_labels.write_all(&count32.to_be_bytes())?;
    for k in 0..count {
        let (copy, i) = (k / n, k % n);
        let image = &source.pixels[i * size..(i + 1) * size];
        if copy == 0 {
            images.write_all(image)?;
        } else {
            images.write_all(&pool_variant(image, source.cols, source.rows, copy))?;
        }
        out_labels.write_all(&[labels[i]])?;
    }
    images.flush()?;
    out_labels.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_shift_and_mirror_the_source() {
        // A 3 × 2 image: 1 2 3 / 4 5 6.
        let image = [1, 2, 3, 4, 5, 6];
        assert_eq!(pool_variant(&image, 3, 2, 0), image);
        // The nearest shifts come first: copy 1 moves up one row, zero filled.
        assert_eq!(shifts()[..5], [(0, 0), (0, -1), (-1, 0), (1, 0), (0, 1)]);
        assert_eq!(pool_variant(&image, 3, 2, 1), [4, 5, 6, 0, 0, 0]);
        // Copy 3 is (+1, 0): one column right.
        assert_eq!(pool_variant(&image, 3, 2, 3), [0, 1, 2, 0, 4, 5]);
        // Two-pixel shifts only after every shift of one pixel; the corners last.
        assert!(shifts()[..9]
            .iter()
            .all(|&(x, y)| x.abs() <= 1 && y.abs() <= 1));
        assert_eq!(
            shifts()[21..]
                .iter()
                .filter(|&&(x, y)| x.abs() == 2 && y.abs() == 2)
                .count(),
            4
        );
        // Copy 25 mirrors without shifting.
        assert_eq!(pool_variant(&image, 3, 2, 25), [3, 2, 1, 6, 5, 4]);
        assert_eq!(shifts().len(), 25);
    }
}
