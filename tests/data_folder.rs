//! Image folders as data sets: class folders, labels files, sizes, corrupt files, class mapping.

mod common;

use aelabel::data::{is_idx_dir, read_image_folder, DataError, FolderData, FolderOptions};
use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tempfile::tempdir;

/// A solid `width × height` RGB image saved at `dir/rel` (PNG or JPEG by extension).
fn rgb(dir: &Path, rel: &str, (width, height): (u32, u32), colour: [u8; 3]) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(width, height, Rgb(colour))
        .save(&path)
        .unwrap();
    path
}

/// A gray `width × height` PNG at `dir/rel` whose pixels are all `value`.
fn gray(dir: &Path, rel: &str, (width, height): (u32, u32), value: u8) -> PathBuf {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    GrayImage::from_pixel(width, height, Luma([value]))
        .save_with_format(&path, ImageFormat::Png)
        .unwrap();
    path
}

fn read(dir: &Path, options: &FolderOptions) -> Result<FolderData, DataError> {
    read_image_folder(dir, options, &|_, _| {})
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Paths relative to `dir`, `/`-separated, for comparing with expected lists.
fn relative(dir: &Path, paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            p.strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect()
}

#[test]
fn class_folders_give_sorted_classes_and_keep_a_shared_size() {
    let dir = tempdir().unwrap();
    let d = dir.path();
    rgb(d, "zebra/a.png", (32, 32), [10, 20, 30]);
    rgb(d, "Cat/nested/deeper/b.JPG", (32, 32), [200, 200, 200]);
    rgb(d, "Cat/a.jpeg", (32, 32), [0, 0, 0]);
    rgb(d, "bird/c.png", (32, 32), [255, 255, 255]);
    gray(d, "unlabelled/x/u1.png", (32, 32), 7);
    gray(d, "top.png", (32, 32), 9);
    std::fs::write(d.join("bird/notes.txt"), "not an image").unwrap();
    std::fs::write(d.join(".hidden.png"), "never read").unwrap();

    let calls = Mutex::new(Vec::new());
    let data = read_image_folder(d, &FolderOptions::default(), &|done, total| {
        calls.lock().unwrap().push((done, total))
    })
    .unwrap();

    // Byte order: uppercase before lowercase, as torchvision's ImageFolder sorts.
    assert_eq!(data.class_names, names(&["Cat", "bird", "zebra"]));
    assert_eq!(
        relative(d, &data.paths),
        [
            "Cat/a.jpeg",
            "Cat/nested/deeper/b.JPG",
            "bird/c.png",
            "top.png",
            "unlabelled/x/u1.png",
            "zebra/a.png",
        ]
    );
    assert_eq!(
        data.images.labels,
        [Some(0), Some(0), Some(1), None, None, Some(2)]
    );
    assert_eq!((data.images.width, data.images.height), (32, 32));
    assert_eq!(data.images.pixels.len(), 6 * 32 * 32);
    assert!(data.skipped.is_empty());
    assert_eq!(data.images.image(3), [9u8; 32 * 32].as_slice());
    assert_eq!(data.images.image(4), [7u8; 32 * 32].as_slice());
    let mut calls = calls.into_inner().unwrap();
    calls.sort();
    assert_eq!(calls, (1..=6).map(|i| (i, 6)).collect::<Vec<_>>());
}

#[test]
fn rgb_becomes_rec709_luma_exactly() {
    let dir = tempdir().unwrap();
    let d = dir.path();
    // Rec. 709 weights, rounded: 0.2126·200 + 0.7152·100 + 0.0722·50 = 117.65 → 118.
    rgb(d, "a/red.png", (5, 3), [200, 100, 50]);
    rgb(d, "b/white.png", (5, 3), [255, 255, 255]);
    // Colour types other than RGB8: RGBA (alpha ignored) and 16-bit gray.
    let rgba = d.join("unlabelled/rgba.png");
    std::fs::create_dir_all(rgba.parent().unwrap()).unwrap();
    RgbaImage::from_pixel(5, 3, Rgba([200, 100, 50, 10]))
        .save(&rgba)
        .unwrap();
    image::ImageBuffer::<Luma<u16>, _>::from_pixel(5, 3, Luma([0x8080u16]))
        .save(d.join("unlabelled/sixteen.png"))
        .unwrap();
    let data = read(d, &FolderOptions::default()).unwrap();
    assert_eq!((data.images.width, data.images.height), (5, 3));
    assert_eq!(data.images.image(0), [118u8; 15].as_slice());
    assert_eq!(data.images.image(1), [255u8; 15].as_slice());
    assert_eq!(data.images.image(2), [118u8; 15].as_slice());
    assert_eq!(data.images.image(3), [0x80u8; 15].as_slice());
}

#[test]
fn mixed_sizes_become_28_by_28_and_an_explicit_size_wins() {
    let dir = tempdir().unwrap();
    let d = dir.path();
    gray(d, "a/big.png", (64, 40), 100);
    rgb(d, "b/small.jpg", (16, 16), [50, 50, 50]);
    let data = read(d, &FolderOptions::default()).unwrap();
    assert_eq!((data.images.width, data.images.height), (28, 28));
    assert_eq!(data.images.pixels.len(), 2 * 28 * 28);
    // A solid image stays solid through the triangle filter.
    assert_eq!(data.images.image(0), [100u8; 28 * 28].as_slice());

    let options = FolderOptions {
        input_size: Some((10, 6)),
        ..FolderOptions::default()
    };
    let data = read(d, &options).unwrap();
    assert_eq!((data.images.width, data.images.height), (10, 6));
    assert_eq!(data.images.image(0), [100u8; 60].as_slice());
}

#[test]
fn labels_file_labels_a_flat_folder() {
    let dir = tempdir().unwrap();
    let d = dir.path();
    gray(d, "img/1.png", (8, 8), 1);
    gray(d, "img/2.png", (8, 8), 2);
    gray(d, "img/a, b.png", (8, 8), 3);
    gray(d, "loose.png", (8, 8), 4);
    let csv = d.join("labels.csv");
    std::fs::write(
        &csv,
        "path,class\n./img/2.png, dog\n\n\"img/a, b.png\",cat\r\nimg/1.png,dog\n",
    )
    .unwrap();
    let options = FolderOptions {
        labels_file: Some(csv),
        ..FolderOptions::default()
    };
    let data = read(d, &options).unwrap();
    assert_eq!(data.class_names, names(&["cat", "dog"]));
    assert_eq!(
        relative(d, &data.paths),
        ["img/1.png", "img/2.png", "img/a, b.png", "loose.png"]
    );
    assert_eq!(data.images.labels, [Some(1), Some(1), Some(0), None]);
    assert_eq!(data.images.pixels[..64], [1u8; 64]);
}

/// Reads `d` with a labels file holding `rows`, expecting a labels-file error.
fn labels_file_error(d: &Path, rows: &str, class_names: Option<&[&str]>) -> (usize, String) {
    let csv = d.join("labels.csv");
    std::fs::write(&csv, rows).unwrap();
    let options = FolderOptions {
        labels_file: Some(csv.clone()),
        class_names: class_names.map(names),
        ..FolderOptions::default()
    };
    match read(d, &options) {
        Err(DataError::LabelsFile { path, row, reason }) => {
            assert_eq!(path, csv);
            (row, reason)
        }
        other => panic!("expected a labels-file error, got {other:?}"),
    }
}

#[test]
fn labels_file_rows_naming_missing_files_duplicates_or_unknown_classes_are_refused() {
    let dir = tempdir().unwrap();
    let d = dir.path();
    gray(d, "a.png", (4, 4), 1);
    gray(d, "b.png", (4, 4), 2);

    let (row, reason) = labels_file_error(d, "path,class\na.png,x\ngone.png,y\n", None);
    assert_eq!(row, 3);
    assert!(
        reason.contains("`gone.png` does not exist under"),
        "{reason}"
    );

    let (row, reason) = labels_file_error(d, "a.png,x\nb.png,y\n./a.png,y\n", None);
    assert_eq!(row, 3);
    assert!(
        reason.contains("`./a.png` is already labelled on row 1"),
        "{reason}"
    );

    let (row, reason) = labels_file_error(d, "a.png,cat\nb.png,zebra\n", Some(&["cat", "dog"]));
    assert_eq!(row, 2);
    assert!(
        reason.contains("class `zebra` is not one of the 2 known classes (`cat`, `dog`)"),
        "{reason}"
    );

    let (row, reason) = labels_file_error(d, "path,class\na.png,cat,extra\n", None);
    assert_eq!(row, 2);
    assert!(reason.contains("has 3 field(s)"), "{reason}");

    let (row, reason) = labels_file_error(d, "a.png,cat\n../b.png,dog\n", None);
    assert_eq!(row, 2);
    assert!(reason.contains("leaves the image folder"), "{reason}");
}

#[test]
fn labels_file_maps_onto_given_class_names() {
    let dir = tempdir().unwrap();
    let d = dir.path();
    gray(d, "a.png", (4, 4), 1);
    gray(d, "b.png", (4, 4), 2);
    let csv = d.join("labels.csv");
    std::fs::write(&csv, "b.png,cat\n").unwrap();
    let options = FolderOptions {
        labels_file: Some(csv),
        class_names: Some(names(&["dog", "cat", "bird"])),
        ..FolderOptions::default()
    };
    let data = read(d, &options).unwrap();
    assert_eq!(data.class_names, names(&["dog", "cat", "bird"]));
    assert_eq!(data.images.labels, [None, Some(1)]);
}

#[test]
fn one_class_folder_is_refused_with_the_fix() {
    let dir = tempdir().unwrap();
    gray(dir.path(), "images/a.png", (4, 4), 1);
    gray(dir.path(), "unlabelled/b.png", (4, 4), 1);
    match read(dir.path(), &FolderOptions::default()) {
        Err(DataError::Folder { path, reason }) => {
            assert_eq!(path, dir.path());
            assert!(
                reason.starts_with(
                    "found one class folder `images`; aelabel needs at least two classes"
                ),
                "{reason}"
            );
            assert!(
                reason.contains("move these images into unlabelled/"),
                "{reason}"
            );
        }
        other => panic!("expected a folder error, got {other:?}"),
    }
}

#[test]
fn missing_or_empty_folder_is_refused() {
    let dir = tempdir().unwrap();
    let missing = dir.path().join("nope");
    match read(&missing, &FolderOptions::default()) {
        Err(DataError::Folder { path, reason }) => {
            assert_eq!(path, missing);
            assert!(reason.starts_with("does not exist"), "{reason}");
        }
        other => panic!("expected a folder error, got {other:?}"),
    }
    std::fs::write(dir.path().join("readme.txt"), "no images").unwrap();
    match read(dir.path(), &FolderOptions::default()) {
        Err(DataError::Folder { path, reason }) => {
            assert_eq!(path, dir.path());
            assert!(
                reason.starts_with("holds no .png, .jpg or .jpeg images"),
                "{reason}"
            );
        }
        other => panic!("expected a folder error, got {other:?}"),
    }
}

#[test]
fn corrupt_image_is_skipped_or_under_strict_refused() {
    let dir = tempdir().unwrap();
    let d = dir.path();
    gray(d, "a/1.png", (6, 6), 10);
    gray(d, "b/2.png", (6, 6), 20);
    let corrupt = d.join("b/broken.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    // A valid header whose pixel data is cut off passes the header pass, fails decoding.
    let truncated = d.join("a/truncated.png");
    let mut bytes = Vec::new();
    GrayImage::from_pixel(6, 6, Luma([1]))
        .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    std::fs::write(&truncated, &bytes[..40]).unwrap();

    let data = read(d, &FolderOptions::default()).unwrap();
    assert_eq!(relative(d, &data.paths), ["a/1.png", "b/2.png"]);
    assert_eq!(data.images.labels, [Some(0), Some(1)]);
    assert_eq!(data.images.pixels, [[10u8; 36], [20u8; 36]].concat());
    let skipped: Vec<_> = data.skipped.iter().map(|s| s.path.clone()).collect();
    assert_eq!(skipped, [truncated.clone(), corrupt.clone()]);
    assert!(
        data.skipped[1]
            .reason
            .starts_with("is not a valid PNG file"),
        "{}",
        data.skipped[1].reason
    );

    // With an explicit size there is no header pass: both fail while decoding.
    let sized = FolderOptions {
        input_size: Some((6, 6)),
        ..FolderOptions::default()
    };
    let data = read(d, &sized).unwrap();
    assert_eq!(data.skipped.len(), 2);
    assert_eq!(data.images.pixels, [[10u8; 36], [20u8; 36]].concat());

    std::fs::remove_file(&truncated).unwrap();
    let data = read(d, &FolderOptions::default()).unwrap();
    assert_eq!(data.skipped.len(), 1);
    assert_eq!(data.skipped[0].path, corrupt);

    let strict = FolderOptions {
        strict: true,
        ..FolderOptions::default()
    };
    match read(d, &strict) {
        Err(e @ DataError::Undecodable { .. }) => {
            let DataError::Undecodable { path, .. } = &e else {
                unreachable!()
            };
            assert_eq!(path, &corrupt);
            assert!(
                e.to_string().contains("broken.png cannot be decoded"),
                "{e}"
            );
        }
        other => panic!("expected an undecodable error, got {other:?}"),
    }
}

#[test]
fn absurd_declared_size_is_taken_as_corrupt() {
    let dir = tempdir().unwrap();
    let d = dir.path();
    gray(d, "ok.png", (4, 4), 3);
    // A PNG header (signature + IHDR) declaring 20000×20000 with no pixel data.
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&20_000u32.to_be_bytes());
    png.extend_from_slice(&20_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 0, 0, 0, 0]);
    let crc = crc32(&png[12..]);
    png.extend_from_slice(&crc.to_be_bytes());
    // An empty IDAT ends the header, so the size is read before any pixel data is missed.
    png.extend_from_slice(b"\x00\x00\x00\x00IDAT");
    png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
    std::fs::write(d.join("bomb.png"), &png).unwrap();
    let data = read(d, &FolderOptions::default()).unwrap();
    assert_eq!(data.images.len(), 1);
    assert_eq!(data.skipped.len(), 1);
    assert_eq!(data.skipped[0].path, d.join("bomb.png"));
    assert!(
        data.skipped[0].reason.contains("20000×20000"),
        "{}",
        data.skipped[0].reason
    );
}

/// CRC-32 as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn test_folder_maps_onto_the_training_classes() {
    let dir = tempdir().unwrap();
    let d = dir.path();
    gray(d, "cat/1.png", (4, 4), 1);
    let given = names(&["dog", "cat", "bird"]);
    let options = FolderOptions {
        class_names: Some(given.clone()),
        ..FolderOptions::default()
    };
    // One class folder is fine when the classes are given.
    let data = read(d, &options).unwrap();
    assert_eq!(data.class_names, given);
    assert_eq!(data.images.labels, [Some(1)]);

    gray(d, "zebra/2.png", (4, 4), 1);
    match read(d, &options) {
        Err(DataError::Folder { path, reason }) => {
            assert_eq!(path, d.join("zebra"));
            assert!(
                reason.starts_with(
                    "class folder `zebra` is not one of the 3 known classes (`dog`, `cat`, `bird`)"
                ),
                "{reason}"
            );
        }
        other => panic!("expected a folder error, got {other:?}"),
    }
}

#[test]
fn idx_dirs_are_told_apart_from_image_folders() {
    let dir = tempdir().unwrap();
    assert!(!is_idx_dir(dir.path()));
    gray(dir.path(), "a.png", (4, 4), 1);
    assert!(!is_idx_dir(dir.path()));
    common::write(&dir.path().join("train-images-idx3-ubyte.gz"), b"x");
    assert!(is_idx_dir(dir.path()));
    assert!(!is_idx_dir(&dir.path().join("missing")));
}
