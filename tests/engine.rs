//! The inference engine skips work whose caller has gone away and labels with domain predictions.

mod common;

use aelabel::inference::{Engine, EngineConfig, EngineObserver, ImageBatch, NoObserver, Task};
use aelabel::model::{top_class, Model};
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
