//! The inference engine skips work whose caller has gone away and labels with domain predictions.

mod common;

use aelabel::inference::{Engine, EngineConfig, EngineObserver, ImageBatch, NoObserver, Task};
use aelabel::model::{encode, probabilities, top_class, Model};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct CountImages(AtomicUsize);

impl EngineObserver for CountImages {
    fn batch_done(&self, _task: Task, images: usize, _jobs: usize, _seconds: f64) {
        self.0.fetch_add(images, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_dropped_before_it_runs_is_never_computed() {
    let model = Model::load(common::server::model_path()).unwrap();
    let size = model.meta.input_width * model.meta.input_height;
    let counter = Arc::new(CountImages::default());
    let config = EngineConfig {
        threads: 1,
        max_batch: 1024,
        max_queue_delay: Duration::ZERO,
    };
    let engine = Engine::start(model, &config, counter.clone()).unwrap();
    let (images, _) = common::server::test_images(1024);

    // A fills a whole batch, so B cannot be merged with it and waits its turn; B's caller
    // leaves (drops its pending result) long before A's forward pass is done.
    let a = engine
        .submit(Task::Encode, ImageBatch::new(images.clone(), size).unwrap())
        .unwrap();
    let b = engine
        .submit(
            Task::Encode,
            ImageBatch::new(images[..size].to_vec(), size).unwrap(),
        )
        .unwrap();
    drop(b);
    assert_eq!(a.await.unwrap().len(), 1024);
    let c = engine
        .submit(
            Task::Encode,
            ImageBatch::new(images[..2 * size].to_vec(), size).unwrap(),
        )
        .unwrap();
    assert_eq!(c.await.unwrap().len(), 2);

    // C ran after B's turn, so B has been seen and skipped: only A's and C's images were computed.
    assert_eq!(counter.0.load(Ordering::SeqCst), 1024 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_predicts_the_most_probable_class_with_the_model_class_names() {
    let model = Model::load(common::server::model_path()).unwrap();
    let size = model.meta.input_width * model.meta.input_height;
    let names = model.meta.class_names.clone();
    let engine = Engine::start(model, &EngineConfig::default(), Arc::new(NoObserver)).unwrap();
    let (images, _) = common::server::test_images(16);

    let probabilities = engine
        .submit(Task::Label, ImageBatch::new(images.clone(), size).unwrap())
        .unwrap()
        .await
        .unwrap();
    let threshold = 0.9;
    let predictions = engine
        .label(ImageBatch::new(images, size).unwrap(), threshold)
        .unwrap()
        .await
        .unwrap();

    assert_eq!(predictions.len(), 16);
    for (i, p) in predictions.iter().enumerate() {
        let (class, confidence) = top_class(probabilities.row(i));
        assert_eq!(p.class_index, class);
        assert_eq!(p.class_name, names[class]);
        assert_eq!(p.confidence, confidence);
        assert_eq!(p.probabilities, probabilities.row(i));
        assert_eq!(p.needs_review, confidence < threshold);
    }
}

/// Largest difference between `got` and `want`, relative to the value where it exceeds 1.
fn worst_difference(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0.0, f32::max)
}

#[test]
fn engine_outputs_match_the_reference_forward_pass_on_real_weights() {
    let model = Model::load(common::server::model_path()).unwrap();
    let size = model.meta.input_width * model.meta.input_height;
    // 1031 images: more than a full batch of tiles in every block, and a ragged last tile.
    let (images, _) = common::server::test_images(1031);
    let floats: Vec<f32> = images.iter().map(|&p| aelabel::data::to_unit(p)).collect();
    let codes = encode(&model.autoencoder, &floats, 1);
    let reconstructions = model.autoencoder.forward(&floats, 1031, 1);
    let classes = probabilities(&model.classifier, &floats, 1);

    for threads in [1, 2] {
        let config = EngineConfig {
            threads,
            max_batch: 2048,
            max_queue_delay: Duration::ZERO,
        };
        let engine = Engine::start(model.clone(), &config, Arc::new(NoObserver)).unwrap();
        for n in [1, 2, 5, 13, 100, 1031] {
            let batch = ImageBatch::new(images[..n * size].to_vec(), size).unwrap();
            for (task, want) in [
                (Task::Encode, &codes),
                (Task::Reconstruct, &reconstructions),
                (Task::Label, &classes),
            ] {
                let got = engine.run_blocking(task, &batch).unwrap();
                let width = want.len() / 1031;
                assert_eq!(got.width, width);
                let worst = worst_difference(&got.values, &want[..n * width]);
                assert!(
                    worst < 1e-5,
                    "{} of {n} images on {threads} thread(s) differs from the reference by {worst}",
                    task.name()
                );
            }
        }
    }
}

/// Panics in the worker thread after its first forward pass, like a crash in the maths.
struct CrashAfterOneBatch;

impl EngineObserver for CrashAfterOneBatch {
    fn batch_done(&self, _task: Task, _images: usize, _jobs: usize, _seconds: f64) {
        panic!("simulated crash in the engine's worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_whose_worker_died_says_so_and_refuses_work() {
    let model = Model::load(common::server::model_path()).unwrap();
    let size = model.meta.input_width * model.meta.input_height;
    let config = EngineConfig {
        threads: 1,
        max_batch: 1024,
        max_queue_delay: Duration::ZERO,
    };
    let engine = Engine::start(model, &config, Arc::new(CrashAfterOneBatch)).unwrap();
    assert!(engine.is_running());
    let (images, _) = common::server::test_images(2);
    let first = engine
        .submit(Task::Encode, ImageBatch::new(images.clone(), size).unwrap())
        .unwrap();
    // The worker computed the batch, then died before answering.
    assert_eq!(first.await, Err(aelabel::inference::EngineError::Stopped));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while engine.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the engine still claims to run"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = engine.submit(Task::Encode, ImageBatch::new(images, size).unwrap());
    assert!(matches!(
        refused,
        Err(aelabel::inference::EngineError::Stopped)
    ));
}
