//! IDX parsing, the reference splits and labelled subsets.

mod common;

use aelabel::data::{
    read_idx_images, read_idx_labels, read_idx_pair, stratified_subset, DataError, Dataset,
};
use tempfile::tempdir;

#[test]
fn reads_plain_and_gzip_idx_images_identically() {
    let dir = tempdir().unwrap();
    let body: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
    let bytes = common::idx_images(2, 3, 4, &body);
    for name in ["a-idx3-ubyte", "a-idx3-ubyte.gz"] {
        let path = dir.path().join(name);
        common::write(&path, &bytes);
        let images = read_idx_images(&path).unwrap();
        assert_eq!((images.count, images.rows, images.cols), (2, 3, 4));
        assert_eq!(images.pixels, body);
    }
}

#[test]
fn truncated_image_file_is_refused_naming_the_file() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("short.gz");
    common::write(&path, &common::idx_images(3, 2, 2, &[0; 11]));
    let err = read_idx_images(&path).unwrap_err().to_string();
    assert!(
        err.contains("short.gz") && err.contains("truncated") && err.contains("12 bytes"),
        "{err}"
    );
    // A header cut short is refused as well.
    common::write(&path, &[0, 0, 8, 3, 0, 0]);
    let err = read_idx_images(&path).unwrap_err().to_string();
    assert!(err.contains("shorter than its 16-byte header"), "{err}");
}

#[test]
fn wrong_magic_number_is_refused() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("labels-as-images");
    common::write(&path, &common::idx_labels(&[1, 2, 3]));
    let err = read_idx_images(&path).unwrap_err().to_string();
    assert!(
        err.contains("magic number is 0x00000801, expected 0x00000803"),
        "{err}"
    );
}

#[test]
fn label_out_of_range_is_refused_with_its_index() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("labels");
    common::write(&path, &common::idx_labels(&[1, 2, 12, 3]));
    let err = read_idx_labels(&path, 10).unwrap_err().to_string();
    assert!(err.contains("label 12 at index 2"), "{err}");
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = tempdir().unwrap();
    let images = dir.path().join("imgs");
    let labels = dir.path().join("lbls");
    common::write(&images, &common::idx_images(3, 2, 2, &[0; 12]));
    common::write(&labels, &common::idx_labels(&[0, 1]));
    let err = read_idx_pair(&images, &labels).unwrap_err();
    assert!(matches!(
        err,
        DataError::CountMismatch {
            image_count: 3,
            label_count: 2,
            ..
        }
    ));
    assert!(err.to_string().contains("3 images but"), "{err}");
}

#[test]
fn missing_directory_says_how_to_get_the_data() {
    let err = Dataset::idx(std::path::Path::new("/nonexistent/fmnist"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/fmnist")
            && err.contains("apt-get install")
            && err.contains("--data"),
        "{err}"
    );
}

#[test]
fn fashion_mnist_splits_like_the_reference() {
    let data = Dataset::idx(&common::data_dir(), false).unwrap();
    let (valid, test) = (data.valid.unwrap(), data.test.unwrap());
    assert_eq!(
        (data.train.len(), valid.len(), test.len()),
        (55_000, 5_000, 10_000)
    );
    assert_eq!((data.train.width, data.train.height), (28, 28));
    // Images stay 8-bit: 784 bytes each, not 784 floats.
    assert_eq!(data.train.pixels.len(), 55_000 * 784);
    assert_eq!(data.class_names[9], "Ankle boot");
    assert!(data.train.fully_labelled() && test.fully_labelled());
    // Splits keep file order: the first training image of Fashion-MNIST is an ankle boot.
    assert_eq!(
        data.train.labels[0],
        Some(9),
        "first training image of Fashion-MNIST is an ankle boot"
    );
}

#[test]
fn stratified_subset_balances_classes_and_is_reproducible() {
    let labels: Vec<u32> = (0..5000).map(|i| i % 10).collect();
    let a = stratified_subset(&labels, 10, 105, 7).unwrap();
    let b = stratified_subset(&labels, 10, 105, 7).unwrap();
    let c = stratified_subset(&labels, 10, 105, 8).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 105);
    let mut counts = [0usize; 10];
    a.iter().for_each(|&i| counts[labels[i] as usize] += 1);
    assert!(counts.iter().all(|&n| n == 10 || n == 11), "{counts:?}");
    assert_eq!(counts.iter().filter(|&&n| n == 11).count(), 5);
    let err = stratified_subset(&labels, 10, 6000, 7)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--labels 6000 is larger than the 5000"),
        "{err}"
    );
    assert!(stratified_subset(&labels, 10, 5, 7)
        .unwrap_err()
        .to_string()
        .contains("at least one label per class"));
}
