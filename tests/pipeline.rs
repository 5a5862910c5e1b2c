//! A short end-to-end pipeline on a subset of the real data.

mod common;

use aelabel::model::Model;
use aelabel::pipeline::{run, PipelineConfig};
use aelabel::train::Silent;
use tempfile::tempdir;

fn quick_config(out: &std::path::Path) -> PipelineConfig {
    common::quick_pipeline_config(out)
}

#[test]
fn short_pipeline_learns_and_writes_everything() {
    let dir = tempdir().unwrap();
    let report = run(&quick_config(dir.path()), &Silent).unwrap();

    let curve = &report.pretrain.history[0].epochs;
    assert!(
        curve.last().unwrap().loss < curve[0].loss,
        "pretraining loss did not fall: {curve:?}"
    );
    assert!(
        report.pretrain.valid_bce < 0.45,
        "valid BCE {}",
        report.pretrain.valid_bce
    );
    assert!(
        report.classifier.test_accuracy > 0.6,
        "test accuracy {} is near chance",
        report.classifier.test_accuracy
    );
    assert_eq!(
        report.classifier.confusion.iter().flatten().sum::<u64>(),
        1000
    );
    assert_eq!(report.data.labelled, 200);
    assert_eq!(report.data.unlabelled, 3800);

    for file in [
        "model.safetensors",
        "report.json",
        "report.md",
        "reconstructions.png",
        "tsne.png",
        "pretrain_curves.png",
        "classifier_curves.png",
        "confusion.png",
    ] {
        let meta =
            std::fs::metadata(dir.path().join(file)).unwrap_or_else(|_| panic!("{file} missing"));
        assert!(meta.len() > 100, "{file} is nearly empty");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    for key in [
        "/model_version",
        "/preset",
        "/seed",
        "/labels",
        "/wall_seconds",
        "/pretrain/mode",
        "/pretrain/epochs",
        "/pretrain/valid_bce",
        "/pretrain/valid_rounded_accuracy",
        "/pretrain/epoch_seconds",
        "/classifier/test_accuracy",
        "/classifier/per_class_accuracy",
        "/classifier/confusion",
        "/baselines/scratch/test_accuracy",
        "/baselines/logreg_pixels/test_accuracy",
        "/auto_label/target_accuracy",
        "/auto_label/threshold",
        "/auto_label/test_coverage",
        "/auto_label/test_accuracy",
    ] {
        assert!(json.pointer(key).is_some(), "report.json lacks {key}");
    }
    assert_eq!(
        json.pointer("/classifier/per_class_accuracy")
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        10
    );

    // The saved model is the one that was evaluated.
    let model = Model::load(&dir.path().join("model.safetensors")).unwrap();
    assert_eq!(model.meta.version, report.model_version);
    assert_eq!(
        model.meta.auto_accept_threshold,
        report.auto_label.threshold
    );
    let data = aelabel::data::FashionMnist::load(&common::data_dir()).unwrap();
    let test = data.test.head(1000);
    let probs = aelabel::pipeline::probabilities(&model.classifier, &test.pixels, 1);
    let predicted: Vec<u8> = aelabel::train::metrics::predictions(&probs, 10)
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(
        aelabel::train::metrics::accuracy(&predicted, &test.labels),
        report.classifier.test_accuracy
    );

    // Same seed, data and threads: identical weights (the version carries their hash).
    let again = tempdir().unwrap();
    let second = run(&quick_config(again.path()), &Silent).unwrap();
    assert_eq!(second.model_version, report.model_version);
}

#[test]
fn two_threads_are_deterministic_too() {
    let run_with_two_threads = || {
        let dir = tempdir().unwrap();
        let mut config = quick_config(dir.path());
        config.threads = 2;
        config.tsne_points = 0;
        run(&config, &Silent).unwrap().model_version
    };
    assert_eq!(run_with_two_threads(), run_with_two_threads());
}
