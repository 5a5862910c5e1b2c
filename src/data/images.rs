//! Images kept as 8-bit grayscale in memory: a million 28×28 images are 784 MB as bytes and
//! would be four times that as floats, so they become floats one batch at a time.

/// Class index of a labelled image (up to `u32::MAX` classes; class names live beside it).
pub type ClassId = u32;

/// Images of one size as 8-bit grayscale, row-major, one after another, each with its class
/// when it is labelled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSet {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// `len × width × height` bytes.
    pub pixels: Vec<u8>,
    /// One entry per image: its class, or `None` when unlabelled.
    pub labels: Vec<Option<ClassId>>,
}

impl ImageSet {
    /// An empty set of `width × height` images.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            ..Self::default()
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_size(&self) -> usize {
        self.width * self.height
    }

    /// Bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_size();
        &self.pixels[i * s..(i + 1) * s]
    }

    /// Appends one image (exactly `image_size()` bytes) with its class.
    pub fn push(&mut self, pixels: &[u8], label: Option<ClassId>) {
        debug_assert_eq!(pixels.len(), self.image_size());
        self.pixels.extend_from_slice(pixels);
        self.labels.push(label);
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut out = ImageSet::new(self.width, self.height);
        out.pixels.reserve(indices.len() * self.image_size());
        for &i in indices {
            out.push(self.image(i), self.labels[i]);
        }
        out
    }

    /// Keeps the images whose index `keep` accepts, in order, moving them down in place: no
    /// second copy of a pool that may hold a million images.
    pub fn retain(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let size = self.image_size();
        let mut kept = 0;
        for i in 0..self.len() {
            if keep(i) {
                if kept != i {
                    self.pixels
                        .copy_within(i * size..(i + 1) * size, kept * size);
                    self.labels[kept] = self.labels[i];
                }
                kept += 1;
            }
        }
        self.pixels.truncate(kept * size);
        self.labels.truncate(kept);
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn head(&self, n: usize) -> ImageSet {
        self.select(&(0..n.min(self.len())).collect::<Vec<_>>())
    }

    /// Number of labelled images.
    pub fn labelled_count(&self) -> usize {
        self.labels.iter().filter(|l| l.is_some()).count()
    }

    /// True when every image has a class (as Fashion-MNIST's training file does).
    pub fn fully_labelled(&self) -> bool {
        !self.is_empty() && self.labels.iter().all(Option::is_some)
    }

    /// Classes of a fully labelled set; `None` if any image is unlabelled.
    pub fn classes(&self) -> Option<Vec<ClassId>> {
        self.labels.iter().copied().collect()
    }

    /// All pixels as floats in [0, 1] (`pixel / 255`); for small sets and tests only: the
    /// pipeline converts one batch at a time.
    pub fn to_floats(&self) -> Vec<f32> {
        self.pixels.iter().map(|&p| to_unit(p)).collect()
    }
}

/// One pixel byte as the network sees it: `p / 255` in [0, 1]. The one scaling rule shared by
/// training, evaluation and serving.
#[inline]
pub fn to_unit(p: u8) -> f32 {
    f32::from(p) / 255.0
}

/// Writes `bytes` as floats in [0, 1] into `out` (same length).
#[inline]
pub fn bytes_to_unit(bytes: &[u8], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(bytes) {
        *o = to_unit(b);
    }
}

#[cfg(test)]
mod tests {
    use super::ImageSet;

    #[test]
    fn retain_keeps_the_chosen_images_in_order_with_their_labels() {
        // Six 2-pixel images whose pixels are (i, i + 100), labelled i.
        let mut set = ImageSet::new(2, 1);
        (0..6u8).for_each(|i| set.push(&[i, i + 100], Some(u32::from(i))));
        set.retain(|i| i % 3 != 1);
        assert_eq!(set.pixels, vec![0, 100, 2, 102, 3, 103, 5, 105]);
        assert_eq!(set.labels, vec![Some(0), Some(2), Some(3), Some(5)]);
    }
}
