//! A team's own image folder, end to end through the real binary: `aelabel pipeline --data`
//! trains on class sub-folders plus unlabelled images, `aelabel serve` serves it with the
//! folder's class names, and `aelabel label` labels the test folder through gRPC.

mod common;

use common::process::{serve_command, ServerProcess};
use image::{imageops, GrayImage, Rgb, RgbImage};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Fashion-MNIST classes used, under the names the folder gives them.
const CLASSES: [(u32, &str); 3] = [(9, "boot"), (1, "trouser"), (8, "bag")];

/// A 28×28 Fashion-MNIST image as a tinted 32×32 RGB PNG: resizing and colour conversion
/// both have work to do.
fn save_rgb(path: &Path, pixels: &[u8]) {
    let gray = GrayImage::from_raw(28, 28, pixels.to_vec()).unwrap();
    let big = imageops::resize(&gray, 32, 32, imageops::FilterType::Triangle);
    let rgb = RgbImage::from_fn(32, 32, |x, y| {
        let p = big.get_pixel(x, y).0[0];
        Rgb([p, p.saturating_sub(20), p / 2])
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    rgb.save(path).unwrap();
}

/// `root/{boot,trouser,bag}/` with `per_class` labelled images each, and `unlabelled` images
/// of the same classes under `root/unlabelled/`, drawn from `images` in order.
fn write_folder(root: &Path, images: &[(Vec<u8>, u32)], per_class: usize, unlabelled: usize) {
    let mut taken = BTreeMap::new();
    let mut loose = 0;
    for (i, (pixels, label)) in images.iter().enumerate() {
        let Some(&(_, name)) = CLASSES.iter().find(|c| c.0 == *label) else {
            continue;
        };
        let n = taken.entry(name).or_insert(0usize);
        if *n < per_class {
            *n += 1;
            save_rgb(&root.join(name).join(format!("{i}.png")), pixels);
        } else if loose < unlabelled {
            loose += 1;
            save_rgb(&root.join("unlabelled").join(format!("{i}.png")), pixels);
        }
    }
    assert_eq!(
        loose, unlabelled,
        "not enough images for the unlabelled pool"
    );
}

/// Fashion-MNIST images of the three classes, from the training file or the test file.
fn source(file: &str, n: usize) -> Vec<(Vec<u8>, u32)> {
    let dir = common::data_dir();
    let images =
        aelabel::data::read_idx_images(&dir.join(format!("{file}-images-idx3-ubyte.gz"))).unwrap();
    let labels =
        aelabel::data::read_idx_labels(&dir.join(format!("{file}-labels-idx1-ubyte.gz")), 10)
            .unwrap();
    images
        .pixels
        .chunks_exact(784)
        .zip(labels)
        .filter(|(_, l)| CLASSES.iter().any(|c| c.0 == u32::from(*l)))
        .take(n)
        .map(|(p, l)| (p.to_vec(), u32::from(l)))
        .collect()
}

#[test]
fn a_folder_of_rgb_images_trains_serves_its_class_names_and_labels_its_test_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (data, test, out) = (
        dir.path().join("photos"),
        dir.path().join("holdout"),
        dir.path().join("run"),
    );
    let registry = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("registry.db").display()
    );
    write_folder(&data, &source("train", 3000), 20, 2000);
    write_folder(&test, &source("t10k", 600), 100, 0);

    let (code, stdout, stderr) = common::aelabel_quiet(&[
        "pipeline",
        "--data",
        data.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--threads",
        "1",
        "--tsne-points",
        "200",
        "--database-url",
        &registry,
    ]);
    assert_eq!(code, 0, "pipeline failed:\n{stdout}\n{stderr}");
    // The run registered its model, and as the registry's first it is active.
    let (code, listed, stderr) =
        common::aelabel_quiet(&["models", "list", "--json", "--database-url", &registry]);
    assert_eq!(code, 0, "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let model = aelabel::model::Model::load(&out.join("model.safetensors")).unwrap();
    assert_eq!(
        listed[0]["version"],
        model.meta.version.as_str(),
        "{stdout}"
    );
    assert_eq!(listed[0]["active"], true);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let d = &report["data"];
    assert_eq!(d["source"], "folder");
    assert_eq!(d["input_size"], serde_json::json!([32, 32]));
    assert_eq!(
        (d["classes"].as_u64(), d["labelled"].as_u64()),
        (Some(3), Some(60))
    );
    // 10 % of the 2,000 unlabelled images validate the autoencoder; the rest join the pool.
    assert_eq!(
        (d["valid_images"].as_u64(), d["unlabelled"].as_u64()),
        (Some(200), Some(1800))
    );
    assert_eq!(d["test_images"].as_u64(), Some(300));
    assert_eq!(
        report["classifier"]["class_names"],
        serde_json::json!(["bag", "boot", "trouser"]),
        "class names come from the folders, sorted"
    );
    assert_eq!(
        report["recipe"]["pretrain"]["widths"][0], 1024,
        "first width follows 32×32"
    );
    let accuracy = report["classifier"]["test_accuracy"].as_f64().unwrap();
    assert!(
        accuracy > 0.85,
        "test accuracy {accuracy} on 3 classes (chance 0.33)"
    );

    // The guard kills the server even when an assertion fails.
    let mut command = serve_command(&out.join("model.safetensors"));
    command.arg("--no-http");
    let server = ServerProcess::spawn(command);
    let addr = server.addr.to_string();
    let labels_csv = dir.path().join("labels.csv");
    let started = Instant::now();
    let (code, stdout, stderr) = common::aelabel_quiet(&[
        "label",
        "--server",
        &addr,
        test.to_str().unwrap(),
        "--out",
        labels_csv.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "label failed:\n{stdout}\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let rows = std::fs::read_to_string(&labels_csv).unwrap();
    let mut right = 0;
    let mut total = 0;
    for row in rows.lines().skip(1) {
        let fields: Vec<&str> = row.split(',').collect();
        let path = PathBuf::from(fields[0]);
        let truth = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let predicted = fields[2];
        assert!(["bag", "boot", "trouser"].contains(&predicted), "{row}");
        total += 1;
        right += usize::from(predicted == truth);
    }
    assert_eq!(total, 300);
    let served_accuracy = right as f64 / total as f64;
    // The server prepares PNG bytes as training did: same images, same predictions.
    assert!(
        (served_accuracy - accuracy).abs() < 0.01,
        "served {served_accuracy} vs pipeline {accuracy}"
    );
}

#[test]
fn a_thousand_classes_train_with_class_names_from_the_folders() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("many");
    // Class k is a distinct 8×8 pattern (its index in binary across the pixels) plus noise.
    let pattern = |k: u32, noise: u8| {
        GrayImage::from_fn(8, 8, |x, y| {
            let bit = (k >> ((x + 8 * y) % 10)) & 1;
            image::Luma([if bit == 1 { 220 - noise } else { 30 + noise }])
        })
    };
    for k in 0..1000u32 {
        for i in 0..2u8 {
            let path = data.join(format!("c{k:04}")).join(format!("{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            pattern(k, 7 * i).save(path).unwrap();
        }
    }
    let config = aelabel::pipeline::PipelineConfig {
        data: aelabel::data::DataOptions {
            dir: data,
            ..Default::default()
        },
        labels: None,
        pretrain_epochs: Some(1),
        finetune_epochs: Some(2),
        self_training_rounds: Some(0),
        epoch_images: None,
        train_limit: None,
        eval_limit: None,
        tsne_points: 0,
        ..common::quick_pipeline_config(&dir.path().join("run"))
    };
    let report = aelabel::pipeline::run(&config, &aelabel::train::Silent).unwrap();
    assert_eq!((report.data.classes, report.labels), (1000, 2000));
    assert_eq!(report.classifier.class_names[999], "c0999");
    assert_eq!(
        report.classifier.test_accuracy, None,
        "no test set was given"
    );
    let model = aelabel::model::Model::load(&dir.path().join("run/model.safetensors")).unwrap();
    assert_eq!((model.classes(), model.meta.input_width), (1000, 8));
    assert!(!report.artifacts.iter().any(|a| a == "confusion.png"));
}
