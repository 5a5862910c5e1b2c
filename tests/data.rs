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

/// 100 tiny images whose first byte is their index; the first 20 labelled (classes 0/1).
fn partly_labelled() -> aelabel::data::Dataset {
    let mut train = aelabel::data::ImageSet::new(2, 1);
    for i in 0..100u8 {
        train.push(&[i, 0], (i < 20).then_some(u32::from(i % 2)));
    }
    aelabel::data::Dataset {
        kind: aelabel::data::SourceKind::Folder,
        dir: "photos".into(),
        class_names: vec!["a".into(), "b".into()],
        train,
        valid: None,
        test: None,
        skipped: Vec::new(),
    }
}

#[test]
fn split_keeps_every_label_of_a_partly_labelled_set_and_validates_on_unlabelled_images() {
    use aelabel::data::{split, SplitOptions};
    let options = SplitOptions {
        valid_fraction: Some(0.25),
        folds: 5,
        seed: 1,
        ..SplitOptions::default()
    };
    let data = split(partly_labelled(), &options).unwrap();
    assert_eq!((data.pool.len(), data.valid.len()), (80, 20));
    assert_eq!(data.labels.len(), 20);
    // Validation images come from the unlabelled 80 and carry no class.
    assert!(data.valid.pixels.chunks(2).all(|p| p[0] >= 20));
    assert!(data.valid.labels.iter().all(Option::is_none));
    for (&row, &label) in data.labelled_rows.iter().zip(&data.labels) {
        let index = data.pool.image(row)[0];
        assert_eq!((index < 20, u32::from(index % 2)), (true, label));
    }
    assert_eq!(
        split(partly_labelled(), &options).unwrap().valid,
        data.valid,
        "seeded"
    );
}

#[test]
fn split_draws_a_stratified_subset_and_drops_every_other_label() {
    use aelabel::data::{split, SplitOptions};
    let options = SplitOptions {
        labels: Some(6),
        folds: 5,
        ..SplitOptions::default()
    };
    let data = split(partly_labelled(), &options).unwrap();
    assert_eq!(data.labels.iter().filter(|&&c| c == 0).count(), 3);
    assert_eq!(
        data.pool.labelled_count(),
        6,
        "the other 14 labels are gone"
    );
    let err = split(
        partly_labelled(),
        &SplitOptions {
            labels: Some(4),
            folds: 5,
            ..SplitOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("4 labelled images are fewer than the 5 cross-validation folds"),
        "{err}"
    );
}

#[test]
fn a_class_with_one_labelled_image_is_refused_by_name() {
    let mut data = partly_labelled();
    for l in data
        .train
        .labels
        .iter_mut()
        .filter(|l| **l == Some(1))
        .skip(1)
    {
        *l = Some(0);
    }
    let err = aelabel::data::split(
        data,
        &aelabel::data::SplitOptions {
            folds: 5,
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("class `b` has 1 labelled image; every class needs at least 2"),
        "{err}"
    );
}
