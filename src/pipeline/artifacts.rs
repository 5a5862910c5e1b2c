//! Report stage: the pictures people look at and `report.json` / `report.md`.

use super::classifier::TrainedClassifier;
use super::pretrain::Pretrained;
use super::{plots, PipelineError};
use crate::data::TrainingData;
use crate::model::{encode_rows, probabilities_rows, Inputs};
use crate::train::metrics::predictions;
use std::path::Path;

/// Most classes drawn as a confusion heat map.
pub const MAX_CONFUSION_CLASSES: usize = 100;

/// Writes the PNGs and returns their file names: reconstructions, the t-SNE map of validation
/// codes, learning curves and (with a test set) the confusion matrix.
#[allow(clippy::too_many_arguments)]
pub fn pictures(
    out_dir: &Path,
    embedding_size: usize,
    pretrained: &Pretrained,
    trained: &TrainedClassifier,
    scratch: &TrainedClassifier,
    data: &TrainingData,
    test_confusion: Option<(&[Vec<u64>], f64)>,
    tsne_points: usize,
    seed: u64,
    threads: usize,
) -> Result<Vec<String>, PipelineError> {
    let out = |name: &str| out_dir.join(name);
    let mut written = Vec::new();
    let valid = &data.valid;
    let (width, height) = (valid.width, valid.height);
    let image_size = valid.image_size();
    let shown = 10.min(valid.len());
    let originals = valid.head(shown).to_floats();
    let reconstructions = pretrained.network.forward(&originals, shown, threads);
    plots::reconstructions_png(
        &out("reconstructions.png"),
        &originals,
        &reconstructions,
        shown,
        width,
        height,
    )?;
    written.push("reconstructions.png".to_string());

    let tsne_n = tsne_points.min(valid.len());
    if tsne_n >= 10 {
        let sample = Inputs::Bytes(&valid.pixels[..tsne_n * image_size]);
        let codes = encode_rows(&pretrained.network, sample, threads);
        // Validation images carry their class when the source labels them (Fashion-MNIST);
        // otherwise the map is coloured by the classifier's prediction and says so.
        let (classes, colouring): (Vec<u32>, &str) = match valid.head(tsne_n).classes() {
            Some(c) => (c, "true class"),
            None => (
                predictions(
                    &probabilities_rows(&trained.network, sample, threads),
                    data.classes(),
                )
                .iter()
                .map(|p| p.0)
                .collect(),
                "predicted class",
            ),
        };
        let title = format!(
            "t-SNE of {tsne_n} validation images' {}-d codes, by {colouring}",
            embedding_size
        );
        let draw = || {
            plots::tsne_png(
                &out("tsne.png"),
                &title,
                &codes,
                embedding_size,
                &classes,
                &data.class_names,
                seed,
            )
        };
        // t-SNE's parallel sums depend on thread timing; one thread makes the map reproducible.
        match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
            Ok(pool) => pool.install(draw)?,
            Err(_) => draw()?,
        };
        written.push("tsne.png".into());
    }
    curves(out_dir, pretrained, trained, scratch)?;
    written.push("pretrain_curves.png".into());
    written.push("classifier_curves.png".into());
    // A heat map stays readable up to about a hundred classes; beyond that the matrix is only
    // in report.json.
    let test_confusion = test_confusion.filter(|_| data.classes() <= MAX_CONFUSION_CLASSES);
    if let Some((confusion, accuracy)) = test_confusion {
        plots::confusion_png(
            &out("confusion.png"),
            &format!("Test confusion matrix, accuracy {:.2} %", 100.0 * accuracy),
            confusion,
            &data.class_names,
        )?;
        written.push("confusion.png".into());
    }
    Ok(written)
}

fn curves(
    out_dir: &Path,
    pretrained: &Pretrained,
    trained: &TrainedClassifier,
    scratch: &TrainedClassifier,
) -> Result<(), PipelineError> {
    let pretrain_curves: Vec<plots::Curve> = pretrained
        .phases
        .iter()
        .flat_map(|p| {
            [
                plots::Curve {
                    name: format!("{} train {}", p.name, p.loss),
                    values: p.epochs.iter().map(|e| e.loss).collect(),
                },
                plots::Curve {
                    name: format!("{} valid {}", p.name, p.loss),
                    values: p.epochs.iter().filter_map(|e| e.valid_loss).collect(),
                },
            ]
        })
        .filter(|c| !c.values.is_empty())
        .collect();
    plots::curves_png(
        &out_dir.join("pretrain_curves.png"),
        "Autoencoder pretraining",
        "loss",
        &pretrain_curves,
    )?;
    let classifier_curves: Vec<plots::Curve> = trained
        .phases
        .iter()
        .map(|p| plots::Curve {
            name: format!("{} loss", p.name),
            values: p.epochs.iter().map(|e| e.loss).collect(),
        })
        .chain([plots::Curve {
            name: "from scratch (baseline) loss".into(),
            values: scratch
                .phases
                .iter()
                .flat_map(|p| p.epochs.iter().map(|e| e.loss))
                .collect(),
        }])
        .collect();
    plots::curves_png(
        &out_dir.join("classifier_curves.png"),
        "Classifier training (labels, then teacher predictions on unlabelled images)",
        "cross-entropy",
        &classifier_curves,
    )?;
    Ok(())
}

/// Writes `contents` to `path`, naming the file on failure.
pub fn write_file(path: &Path, contents: &str) -> Result<(), PipelineError> {
    std::fs::write(path, contents).map_err(|source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    })
}
