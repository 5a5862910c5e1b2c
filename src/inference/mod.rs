//! The `Engine`: a loaded model answering batched encode / reconstruct / label work on its own
//! threads, with a dynamic batcher that merges concurrent small requests into big products.
//!
//! Callers hand over validated [`ImageBatch`]es and get a [`Pending`] result back; the engine's
//! worker thread takes every job waiting in its queue (up to `max_batch` images, waiting at
//! most `max_queue_delay` for more), runs one forward pass per task on the merged images inside
//! its own rayon pool, and splits the outputs back. [`Engine::label`] turns class
//! probabilities into domain [`Prediction`]s. Nothing here knows about gRPC.

mod batcher;
mod handle;
mod prediction;

pub use batcher::Pending;
pub use handle::EngineHandle;
pub use prediction::{PendingLabels, Prediction};

use crate::model::{encode, encoder_depth, probabilities, Model, ModelMeta, PackedNetwork};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// What to compute for a batch of images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    /// The encoder's innermost code per image.
    Encode,
    /// The autoencoder's output per image, values in [0, 1].
    Reconstruct,
    /// Class probabilities per image (softmax).
    Label,
}

impl Task {
    /// Lower-case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Task::Encode => "encode",
            Task::Reconstruct => "reconstruct",
            Task::Label => "label",
        }
    }
}

/// Images already at the model's input size: `len × image_size` 8-bit pixels, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageBatch {
    pixels: Vec<u8>,
    image_size: usize,
}

impl ImageBatch {
    /// Wraps pixels of `pixels.len() / image_size` images; `None` unless the length is a
    /// whole, non-zero number of images.
    pub fn new(pixels: Vec<u8>, image_size: usize) -> Option<Self> {
        (image_size > 0 && !pixels.is_empty() && pixels.len().is_multiple_of(image_size))
            .then_some(Self { pixels, image_size })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / self.image_size
    }

    /// Always false: a batch holds at least one image.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Pixels per image.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// All pixels, image after image.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }
}

/// A task's result: `len × width` floats, row-major, in the order of the images.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The values.
    pub values: Vec<f32>,
    /// Floats per image.
    pub width: usize,
}

impl Output {
    /// The values of image `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.width).unwrap_or(0)
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Threads of the engine's own pool for the matrix products.
    pub threads: usize,
    /// Most images merged into one forward pass (one request may carry up to this many).
    pub max_batch: usize,
    /// Longest a queued job waits for others to merge with (zero: take only what is queued).
    pub max_queue_delay: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            threads: 1,
            max_batch: 1024,
            max_queue_delay: Duration::ZERO,
        }
    }
}

/// Why the engine refused or lost a job.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The batch's images are not the model's input size.
    #[error("images have {got} pixels but the model takes {want} ({width}×{height})")]
    WrongImageSize {
        /// Pixels per image in the batch.
        got: usize,
        /// Pixels per image the model takes.
        want: usize,
        /// Model input width.
        width: usize,
        /// Model input height.
        height: usize,
    },
    /// The engine's worker has stopped (shutdown or a crash in the maths).
    #[error("the inference engine has stopped")]
    Stopped,
    /// The engine's thread pool could not be created.
    #[error("cannot start the inference threads: {0}")]
    Threads(String),
}

/// Hooks for metrics: called from the engine's worker thread, so keep them cheap.
pub trait EngineObserver: Send + Sync {
    /// Images waiting in the queue changed.
    fn queue_depth(&self, _images: usize) {}
    /// One forward pass ran on `images` merged images from `jobs` jobs.
    fn batch_done(&self, _task: Task, _images: usize, _jobs: usize, _seconds: f64) {}
}

/// An observer that ignores everything.
pub struct NoObserver;

impl EngineObserver for NoObserver {}

/// Batches up to this many images run on the caller's thread, without the pool.
const SMALL_BATCH: usize = 8;

/// The model plus the pool its forward passes run on.
pub(crate) struct Runner {
    model: Model,
    packed: Option<PackedTasks>,
    pool: rayon::ThreadPool,
    threads: usize,
}

/// Each task's layers packed for this CPU's serving kernel.
struct PackedTasks {
    encode: PackedNetwork,
    reconstruct: PackedNetwork,
    label: PackedNetwork,
}

impl PackedTasks {
    /// `None` when the CPU has no serving kernel (the reference forward pass runs instead).
    fn new(model: &Model) -> Option<Self> {
        let ae = &model.autoencoder;
        let clf = &model.classifier;
        Some(Self {
            encode: PackedNetwork::new(ae, 0..encoder_depth(ae), false)?,
            reconstruct: PackedNetwork::new(ae, 0..ae.layers.len(), false)?,
            label: PackedNetwork::new(clf, 0..clf.layers.len(), true)?,
        })
    }

    fn get(&self, task: Task) -> &PackedNetwork {
        match task {
            Task::Encode => &self.encode,
            Task::Reconstruct => &self.reconstruct,
            Task::Label => &self.label,
        }
    }
}

impl Runner {
    /// Packs `model`'s weights for this CPU once, for every later pass.
    fn new(model: Model, pool: rayon::ThreadPool, threads: usize) -> Self {
        Self {
            packed: PackedTasks::new(&model),
            model,
            pool,
            threads,
        }
    }

    /// Runs `task` on `pixels` (`n` images): small batches on the calling thread (waking
    /// the pool's parked threads costs more than the maths), large ones inside the pool.
    fn run(&self, task: Task, pixels: &[u8], n: usize) -> Output {
        if n <= SMALL_BATCH {
            return self.compute(task, pixels, n, 1);
        }
        self.pool
            .install(|| self.compute(task, pixels, n, self.threads))
    }

    /// Runs `task` for `n` images on the calling thread (rows are split across the current
    /// rayon pool when `threads > 1`): the packed kernel when this CPU has one, else the
    /// training code's forward pass.
    fn compute(&self, task: Task, pixels: &[u8], n: usize, threads: usize) -> Output {
        match &self.packed {
            Some(packed) => {
                let net = packed.get(task);
                Output {
                    width: net.output_size(),
                    values: net.run(pixels, threads),
                }
            }
            None => reference_compute(&self.model, task, pixels, n, threads),
        }
    }
}

/// Runs `task` for `n` images with the training code's forward pass (matrix products may fan
/// out to the current rayon pool when `threads > 1`).
fn reference_compute(model: &Model, task: Task, pixels: &[u8], n: usize, threads: usize) -> Output {
    // The same scaling the training data gets (`data::read_pair`): pixel / 255.
    let input: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    match task {
        Task::Encode => Output {
            width: model.embedding_size(),
            values: encode(&model.autoencoder, &input, threads),
        },
        Task::Reconstruct => Output {
            values: model.autoencoder.forward(&input, n, threads),
            width: model.autoencoder.output_size(),
        },
        Task::Label => Output {
            values: probabilities(&model.classifier, &input, threads),
            width: model.classifier.output_size(),
        },
    }
}

/// A loaded model serving batched work on a dedicated worker thread and thread pool.
pub struct Engine {
    meta: Arc<ModelMeta>,
    image_size: usize,
    max_batch: usize,
    runner: Arc<Runner>,
    queue: mpsc::Sender<batcher::Job>,
    queued_images: Arc<AtomicUsize>,
    observer: Arc<dyn EngineObserver>,
    alive: Arc<AtomicBool>,
    halt: Arc<AtomicBool>,
}

impl Engine {
    /// Starts the worker thread and the pool for `model`.
    pub fn start(
        model: Model,
        config: &EngineConfig,
        observer: Arc<dyn EngineObserver>,
    ) -> Result<Self, EngineError> {
        let threads = config.threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("aelabel-infer-{i}"))
            .build()
            .map_err(|e| EngineError::Threads(e.to_string()))?;
        let meta = Arc::new(model.meta.clone());
        let image_size = meta.input_width * meta.input_height;
        let runner = Arc::new(Runner::new(model, pool, threads));
        let queued_images = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let halt = Arc::new(AtomicBool::new(false));
        let queue = batcher::spawn(
            runner.clone(),
            config.max_batch.max(1),
            config.max_queue_delay,
            queued_images.clone(),
            observer.clone(),
            alive.clone(),
            halt.clone(),
        )
        .map_err(|e| EngineError::Threads(e.to_string()))?;
        Ok(Self {
            meta,
            image_size,
            max_batch: config.max_batch.max(1),
            runner,
            queue,
            queued_images,
            observer,
            alive,
            halt,
        })
    }

    /// Test hook, not an API: ends the worker thread as a crash in the maths would (the jobs
    /// it holds are dropped and their callers get [`EngineError::Stopped`]; then
    /// [`Engine::is_running`] turns false), so tests can watch a server's health follow a dead
    /// engine without a model that crashes.
    #[doc(hidden)]
    pub fn stop_worker(&self) {
        self.halt.store(true, Ordering::Release);
        // Wakes the worker with one blank image whose answer nobody waits for.
        if let Some(blank) = ImageBatch::new(vec![0; self.image_size], self.image_size) {
            drop(self.submit(Task::Encode, blank));
        }
    }

    /// False once the worker thread has ended (only a crash ends it while the engine lives):
    /// health reports `NOT_SERVING` then.
    pub fn is_running(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// The served model's metadata.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Pixels per input image (width × height).
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Most images merged into one pass.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Images waiting for the worker right now.
    pub fn queued_images(&self) -> usize {
        self.queued_images.load(Ordering::Relaxed)
    }

    fn check(&self, images: &ImageBatch) -> Result<(), EngineError> {
        if images.image_size() != self.image_size {
            return Err(EngineError::WrongImageSize {
                got: images.image_size(),
                want: self.image_size,
                width: self.meta.input_width,
                height: self.meta.input_height,
            });
        }
        Ok(())
    }

    /// Queues `task` on `images` for the worker; await the returned [`Pending`] for the result.
    /// Dropping the `Pending` cancels the job if the worker has not started it.
    pub fn submit(&self, task: Task, images: ImageBatch) -> Result<Pending, EngineError> {
        self.check(&images)?;
        let n = images.len();
        let (job, pending) = batcher::Job::new(task, images);
        let depth = self.queued_images.fetch_add(n, Ordering::Relaxed) + n;
        self.observer.queue_depth(depth);
        self.queue.send(job).map_err(|_| {
            self.queued_images.fetch_sub(n, Ordering::Relaxed);
            EngineError::Stopped
        })?;
        Ok(pending)
    }

    /// Queues `images` for labelling; the returned [`PendingLabels`] yields one
    /// [`Prediction`] per image, named by this model's class names, that needs review when its
    /// confidence is below `review_threshold`. Dropping it cancels the job like [`Pending`].
    pub fn label(
        &self,
        images: ImageBatch,
        review_threshold: f32,
    ) -> Result<PendingLabels, EngineError> {
        let output = self.submit(Task::Label, images)?;
        Ok(PendingLabels::new(
            output,
            self.meta.clone(),
            review_threshold,
        ))
    }

    /// Runs `task` on `images` right now on the calling thread with the engine's pool,
    /// bypassing the queue (benchmarks, warm-up). Blocks: never call it from async code.
    pub fn run_blocking(&self, task: Task, images: &ImageBatch) -> Result<Output, EngineError> {
        self.check(images)?;
        Ok(self.runner.run(task, images.pixels(), images.len()))
    }

    /// Runs every task once on a blank batch so that first requests do not pay for page
    /// faults and pool start-up. Blocks.
    pub fn warm_up(&self) -> Result<(), EngineError> {
        let images = ImageBatch::new(vec![0; self.image_size * 8], self.image_size)
            .ok_or(EngineError::Stopped)?;
        for task in [Task::Encode, Task::Reconstruct, Task::Label] {
            self.run_blocking(task, &images)?;
        }
        Ok(())
    }
}
