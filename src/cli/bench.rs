//! `aelabel bench …`: in-process benchmarks and the tools benchmark scripts use.

use super::{bench_loop, default_model, default_threads, init_threads, seconds, task_of};
use crate::client::{self, bench::Rpc};
use crate::config::{parse_input_size, parse_positive};
use crate::data::{Dataset, DEFAULT_DATA_DIR};
use crate::inference::{Engine, EngineConfig, NoObserver};
use crate::model::Model;
use crate::train::bench::bench_train;
use crate::train::knn::bench::{image_features, FeatureSource};
use crate::train::knn::{ApproxKnn, Metric};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

/// `aelabel bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time joint pretraining epochs of the reference recipe on the 55,000 training images.
    Train(BenchTrainArgs),
    /// Time the in-process inference engine: batched throughput and one-image latency.
    Engine(BenchEngineArgs),
    /// Time reading an image folder: decoding, grayscale and resizing on all threads.
    Decode(BenchDecodeArgs),
    /// Simulate the labelling loop in process (true labels stand in for people).
    Loop(bench_loop::BenchLoopArgs),
    /// Draw lines from a JSON description as a PNG (for benchmark scripts).
    Plot(bench_loop::BenchPlotArgs),
    /// Write a large pool of copies of the training images as IDX: shifted, the nearest shifts
    /// first, then mirrored.
    Pool(BenchPoolArgs),
    /// Time the exact and the approximate k-NN graph of image features, with the recall.
    Knn(BenchKnnArgs),
}

/// Flags of `aelabel bench knn`.
#[derive(Debug, Args)]
pub struct BenchKnnArgs {
    /// Rows of the graph: the training images, then shifted and mirrored copies of them.
    #[arg(long, default_value_t = 55_000, value_parser = parse_positive)]
    pub points: usize,
    /// Feature width.
    #[arg(long, default_value_t = 30, value_parser = parse_positive)]
    pub dim: usize,
    /// Neighbours per row (the default recipe's `spreading_neighbours`).
    #[arg(long, default_value_t = 5, value_parser = parse_positive)]
    pub k: usize,
    /// How closeness is measured.
    #[arg(long, value_enum, default_value = "cosine")]
    pub metric: KnnMetric,
    /// Where the features come from.
    #[arg(long, value_enum, default_value = "encoder")]
    pub features: KnnFeatures,
    /// Training epochs of the encoder that makes `--features encoder`.
    #[arg(long, default_value_t = 2, value_parser = parse_positive)]
    pub encoder_epochs: usize,
    /// Threads.
    #[arg(long, default_value_t = default_threads(), value_parser = parse_positive)]
    pub threads: usize,
    /// Build the exact graph too up to this many points; above, recall is measured on
    /// `--recall-rows` random rows searched exactly.
    #[arg(long, default_value_t = 60_000)]
    pub exact_up_to: usize,
    /// Rows whose exact neighbours measure recall above `--exact-up-to`.
    #[arg(long, default_value_t = 1000, value_parser = parse_positive)]
    pub recall_rows: usize,
    /// Clusters of the approximate search (0: ⌈√points⌉).
    #[arg(long, default_value_t = ApproxKnn::default().clusters)]
    pub clusters: usize,
    /// Clusters each row is compared with: those of its nearest centroids.
    #[arg(long, default_value_t = ApproxKnn::default().probe, value_parser = parse_positive)]
    pub probe: usize,
    /// Directory with the Fashion-MNIST IDX files.
    #[arg(long, env = "AELABEL_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--metric` of `aelabel bench knn`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum KnnMetric {
    /// Cosine similarity (label spreading).
    Cosine,
    /// Euclidean distance (t-SNE).
    Euclidean,
}

/// `--features` of `aelabel bench knn`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum KnnFeatures {
    /// Codes of a `784-256-dim` autoencoder trained for `--encoder-epochs` on the images.
    Encoder,
    /// Pixels times a fixed random matrix.
    Projection,
}

/// `aelabel bench knn`: features of the Fashion-MNIST training images (and copies), then both
/// graphs.
fn bench_knn(args: BenchKnnArgs) -> anyhow::Result<()> {
    init_threads(args.threads);
    let images = crate::data::read_idx_images(&args.data.join("train-images-idx3-ubyte.gz"))?;
    let kind = match args.features {
        KnnFeatures::Encoder => FeatureSource::Encoder,
        KnnFeatures::Projection => FeatureSource::Projection,
    };
    let started = std::time::Instant::now();
    let features = image_features(
        &images.pixels,
        (images.cols, images.rows),
        args.points,
        args.dim,
        kind,
        args.encoder_epochs,
        args.threads,
    );
    let feature_seconds = started.elapsed().as_secs_f64();
    let metric = match args.metric {
        KnnMetric::Cosine => Metric::Cosine,
        KnnMetric::Euclidean => Metric::Euclidean,
    };
    let approx = ApproxKnn {
        clusters: args.clusters,
        probe: args.probe,
        ..ApproxKnn::default()
    };
    let r = crate::train::knn::bench::bench_knn(
        &features,
        args.dim,
        args.k,
        metric,
        args.threads,
        &approx,
        args.exact_up_to,
        args.recall_rows,
    );
    if args.json {
        let mut value = serde_json::to_value(&r)?;
        value["features"] = serde_json::to_value(kind)?;
        value["feature_seconds"] = feature_seconds.into();
        println!("{value}");
    } else {
        let exact = r
            .exact_seconds
            .map_or("not built".to_string(), |s| format!("{s:.2} s"));
        println!(
            "k-NN of {} {:?} features ({}-d, k {}, {}) on {} thread(s): approximate {:.2} s \
             ({} clusters, probe {}, ~{:.0} MB), exact {exact} (~{:.0} MB); recall {:.4} over {} rows",
            r.points,
            kind,
            r.dim,
            r.k,
            r.metric,
            r.threads,
            r.approx_seconds,
            r.approx_stats.clusters,
            r.approx.probe,
            r.approx_stats.peak_bytes as f64 / 1e6,
            r.exact_peak_bytes as f64 / 1e6,
            r.recall,
            r.recall_rows
        );
    }
    Ok(())
}

/// Flags of `aelabel bench decode`.
#[derive(Debug, Args)]
pub struct BenchDecodeArgs {
    /// The image folder (class sub-folders and/or unlabelled images).
    pub dir: PathBuf,
    /// Resize to this size (`N` or `W×H`) [default: the images' own size when all share one].
    #[arg(long, value_parser = parse_input_size)]
    pub input_size: Option<(usize, usize)>,
    /// Threads decoding in parallel.
    #[arg(long, default_value_t = default_threads(), value_parser = parse_positive)]
    pub threads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `aelabel bench engine`.
#[derive(Debug, Args)]
pub struct BenchEngineArgs {
    /// The model [default: the default pipeline run's model.safetensors].
    #[arg(long, env = "AELABEL_MODEL")]
    pub model: Option<PathBuf>,
    /// Task to time.
    #[arg(long, value_enum, default_value = "encode")]
    pub rpc: Rpc,
    /// Images per batched pass.
    #[arg(long, default_value_t = 1024, value_parser = parse_positive)]
    pub batch: usize,
    /// Engine threads.
    #[arg(long, default_value_t = 2, value_parser = parse_positive)]
    pub threads: usize,
    /// Directory with Fashion-MNIST; its t10k images are the benchmark's inputs.
    #[arg(long, env = "AELABEL_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Seconds of batched passes (half as long again for one-image passes).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `aelabel bench train`.
#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Directory with the Fashion-MNIST IDX files.
    #[arg(long, env = "AELABEL_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Threads for the matrix products.
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub threads: usize,
    /// Epochs to time (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = parse_positive)]
    pub epochs: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `aelabel bench decode`: reads a folder the way the pipeline does and reports images/s.
fn bench_decode(args: BenchDecodeArgs) -> anyhow::Result<()> {
    init_threads(args.threads);
    let options = crate::data::FolderOptions {
        input_size: args.input_size,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let read = crate::data::read_image_folder(&args.dir, &options, &|_, _| {})?;
    let seconds = started.elapsed().as_secs_f64();
    let images = read.images.len();
    let rate = images as f64 / seconds.max(1e-9);
    let (w, h) = (read.images.width, read.images.height);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"images": images, "skipped": read.skipped.len(), "seconds": seconds,
                "images_per_second": rate, "threads": args.threads, "input_size": [w, h]})
        );
    } else {
        println!(
            "decoded {images} images to {w}×{h} grayscale in {seconds:.2} s on {} thread(s): {rate:.0} images/s ({} skipped)",
            args.threads,
            read.skipped.len()
        );
    }
    Ok(())
}

/// Runs a `bench` subcommand.
pub(super) fn bench_command(command: BenchCommand, quiet: bool) -> anyhow::Result<()> {
    match command {
        BenchCommand::Engine(args) => {
            let model = Model::load(&args.model.unwrap_or_else(default_model))?;
            let engine = Engine::start(
                model,
                &EngineConfig {
                    threads: args.threads,
                    ..EngineConfig::default()
                },
                Arc::new(NoObserver),
            )?;
            let sample =
                crate::data::read_idx_images(&args.data.join("t10k-images-idx3-ubyte.gz"))?.pixels;
            let r = client::bench::bench_engine(
                &engine,
                task_of(args.rpc),
                args.batch,
                args.threads,
                seconds(args.seconds, "--seconds")?,
                &sample,
            )?;
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                "engine {} batch {} on {} thread(s): {:.0} images/s; one image p50 {:.1} µs, p99 {:.1} µs",
                r.task, r.batch, r.threads, r.images_per_second, r.single_image_p50_us, r.single_image_p99_us
            );
            }
            Ok(())
        }
        BenchCommand::Decode(args) => bench_decode(args),
        BenchCommand::Loop(args) => {
            init_threads(args.threads);
            bench_loop::bench_loop(args, quiet)
        }
        BenchCommand::Plot(args) => bench_loop::bench_plot(args),
        BenchCommand::Pool(args) => bench_pool(args),
        BenchCommand::Knn(args) => bench_knn(args),
        BenchCommand::Train(args) => {
            init_threads(args.threads);
            let data = Dataset::idx(&args.data, false)?;
            let r = bench_train(
                crate::model::Inputs::Bytes(&data.train.pixels),
                data.train.len(),
                &[784, 100, 30],
                args.epochs,
                args.threads,
            );
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                "joint pretraining, reference recipe (784-100-30-100-784, SGD 1.5, batch 32), {} thread(s): {:.3} s/epoch (median of {}), {:.0} images/s, final loss {:.4}",
                r.threads, r.seconds_per_epoch, r.epoch_seconds.len(), r.images_per_second, r.final_loss
            );
            }
            Ok(())
        }
    }
}

/// Flags of `aelabel bench pool`.
#[derive(Debug, Args)]
pub struct BenchPoolArgs {
    /// Images in the pool (copies of the training images, shifted and mirrored).
    #[arg(long, value_parser = parse_positive)]
    pub images: usize,
    /// Folder to write: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` (the pool) and
    /// links to the source's `t10k-*` files (the test set stays as it is).
    #[arg(long)]
    pub out: PathBuf,
    /// Directory with the Fashion-MNIST IDX files.
    #[arg(long, env = "AELABEL_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
}

/// `aelabel bench pool`: writes a pool of shifted and mirrored training images as IDX.
fn bench_pool(args: BenchPoolArgs) -> anyhow::Result<()> {
    let images = crate::data::read_idx_images(&args.data.join("train-images-idx3-ubyte.gz"))?;
    let labels = crate::data::read_idx_labels(&args.data.join("train-labels-idx1-ubyte.gz"), 256)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    let started = std::time::Instant::now();
    crate::data::write_pool(
        &images,
        &labels,
        args.images,
        &args.out.join("train-images-idx3-ubyte"),
        &args.out.join("train-labels-idx1-ubyte"),
    )
    .map_err(|e| anyhow::anyhow!("cannot write the pool in {}: {e}", args.out.display()))?;
    for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        let link = args.out.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(args.data.join(name), &link)
                .map_err(|e| anyhow::anyhow!("cannot link {}: {e}", link.display()))?;
        }
    }
    println!(
        "wrote a pool of {} images ({} copies of {} training images) to {} in {:.1} s",
        args.images,
        args.images.div_ceil(images.count),
        images.count,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
