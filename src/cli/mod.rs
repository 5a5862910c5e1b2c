//! Command-line interface: flags (each also an `AELABEL_*` variable) and dispatch.

mod bench;
mod bench_loop;
mod jobs;
mod label_studio;
mod registry;
mod retrain;
mod security;
mod worker;

pub use jobs::{JobsArgs, JobsCommand};
pub use registry::{DatabaseArgs, DbArgs, DbCommand, ModelsArgs, ModelsCommand};
pub use retrain::RetrainArgs;

use crate::client::{self, bench::LoadTest, bench::Rpc, EncodeJob, LabelJob};
use crate::config::{
    aelabel_home, parse_fraction, parse_input_size, parse_layers, parse_positive, Widths,
};
use crate::data::{is_idx_dir, DataOptions, DEFAULT_DATA_DIR, DEFAULT_LABELS};
use crate::inference::{EngineConfig, Task};
use crate::pipeline::{self, PipelineConfig, Preset, PretrainMode};
use crate::progress::Progress;
use crate::service::{
    shutdown_signal, Application, JobWorkerConfig, ModelSource, ServeConfig, DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
};
use crate::store::Store;
use crate::telemetry::LogFormat;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Semi-supervised image labelling: pretrain on all images, fine-tune on a few labels.
#[derive(Debug, Parser)]
#[command(name = "aelabel", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "AELABEL_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// No progress bars (logs still go to stderr).
    #[arg(long, short, global = true, env = "AELABEL_QUIET")]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train end to end: pretrain, transfer, fine-tune, evaluate, write model + report + PNGs.
    Pipeline(PipelineArgs),
    /// Serve a trained model over gRPC (health, reflection, Prometheus metrics).
    Serve(ServeArgs),
    /// Label images through a server: IDX files, folders of PNG/JPEG, image files.
    Label(LabelArgs),
    /// Fetch embeddings from a server for IDX files, folders of PNG/JPEG, image files.
    Encode(EncodeArgs),
    /// Benchmarks: load a server (`--server URL`), or `bench train` / `bench engine`.
    Bench(BenchArgs),
    /// The model registry: list, show, activate, roll back, register.
    Models(ModelsArgs),
    /// Database maintenance (`db migrate`).
    Db(DbArgs),
    /// Label jobs on a server: create, add images, status, review, export.
    Jobs(JobsArgs),
    /// Execute queued training runs of label jobs (a dedicated worker or a Kubernetes Job).
    Worker(worker::WorkerArgs),
    /// Fine-tune a new model from the active one plus a job's reviews, register it, compare.
    Retrain(RetrainArgs),
}

/// Flags of `aelabel serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve this model.safetensors and ignore the registry [default: the registry's active
    /// version, switching when another is activated].
    #[arg(long, env = "AELABEL_MODEL")]
    pub model: Option<PathBuf>,
    /// Registry database flags.
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// How often to look for a newly activated model, in milliseconds.
    #[arg(long, default_value_t = 1000, env = "AELABEL_REGISTRY_POLL_MS", value_parser = parse_positive)]
    pub registry_poll_ms: usize,
    /// gRPC listen address.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_GRPC_PORT)), env = "AELABEL_ADDR")]
    pub addr: SocketAddr,
    /// HTTP listen address: Prometheus `/metrics` and the other HTTP routes
    /// (`--metrics-addr` is its older name) [default: 0.0.0.0:9090].
    #[arg(long, alias = "metrics-addr", env = "AELABEL_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// `AELABEL_METRICS_ADDR`, the older name of `AELABEL_HTTP_ADDR`, still honoured.
    #[arg(
        long = "legacy-metrics-addr",
        hide = true,
        env = "AELABEL_METRICS_ADDR"
    )]
    pub legacy_metrics_addr: Option<SocketAddr>,
    /// Turn the HTTP port off: metrics and every HTTP route (`--no-metrics` is its older name).
    #[arg(long, alias = "no-metrics", env = "AELABEL_NO_HTTP")]
    pub no_http: bool,
    /// `AELABEL_NO_METRICS`, the older name of `AELABEL_NO_HTTP`, still honoured.
    #[arg(long = "legacy-no-metrics", hide = true, env = "AELABEL_NO_METRICS")]
    pub legacy_no_metrics: bool,
    /// Threads for the matrix products (the engine's own pool).
    #[arg(long, default_value_t = default_threads(), env = "AELABEL_THREADS", value_parser = parse_positive)]
    pub threads: usize,
    /// Most images in one request, and in one merged forward pass.
    #[arg(long, default_value_t = 1024, env = "AELABEL_MAX_BATCH", value_parser = parse_positive)]
    pub max_batch: usize,
    /// Longest a request waits in the queue for others to merge with, in microseconds.
    #[arg(long, default_value_t = 0, env = "AELABEL_MAX_QUEUE_DELAY_US")]
    pub max_queue_delay_us: u64,
    /// Requests admitted at once; unary calls beyond it get RESOURCE_EXHAUSTED, streams wait.
    #[arg(long, default_value_t = 256, env = "AELABEL_MAX_IN_FLIGHT", value_parser = parse_positive)]
    pub max_in_flight: usize,
    /// Largest gRPC message accepted or sent, in bytes (must fit --max-batch images).
    #[arg(long, default_value_t = 16 << 20, env = "AELABEL_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: usize,
    /// Largest image width or height accepted, checked before decoding.
    #[arg(long, default_value_t = 4096, env = "AELABEL_MAX_IMAGE_SIDE")]
    pub max_image_side: u32,
    /// MiB of decoded pixels all in-flight requests together may hold (a 4096×4096 16-bit
    /// RGBA PNG takes 144 MiB); requests beyond it get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 256, env = "AELABEL_MAX_DECODE_MIB", value_parser = parse_positive)]
    pub max_decode_mib: usize,
    /// Seconds in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 10.0, env = "AELABEL_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: f64,
    /// Label-job items the worker claims, labels and records at once (a smaller batch
    /// commits progress more often; a larger one makes fewer database round trips).
    #[arg(long, default_value_t = 1024, env = "AELABEL_JOB_BATCH", value_parser = parse_positive)]
    pub job_batch: usize,
    /// Seconds a worker's claim on label-job items holds before another worker (or this
    /// one, after a restart) may take the items over.
    #[arg(long, default_value_t = 60.0, env = "AELABEL_JOB_CLAIM_SECS")]
    pub job_claim_secs: f64,
    /// Label job images only in the background worker, never as they arrive: AddImages then
    /// only stores them (for ingest replicas that should spend no CPU on inference).
    #[arg(long, env = "AELABEL_JOB_WORKER_ONLY")]
    pub job_worker_only: bool,
    /// How often the worker looks for pending label-job items it was not told about
    /// (images added through another server), in milliseconds.
    #[arg(long, default_value_t = 500, env = "AELABEL_JOB_POLL_MS", value_parser = parse_positive)]
    pub job_poll_ms: usize,
    /// Label Studio ML backend flags.
    #[command(flatten)]
    pub label_studio: label_studio::LabelStudioArgs,
    /// Training flags (label jobs' training runs, executed by this server's worker).
    #[command(flatten)]
    pub training: worker::TrainingArgs,
    /// Do not execute label jobs' training runs here (leave them to `aelabel worker`).
    #[arg(long, env = "AELABEL_NO_TRAINING")]
    pub no_training: bool,
    /// Queue a label job's training run by itself once this many reviews came in (through
    /// SubmitReview) since its last round.
    #[arg(long, env = "AELABEL_RETRAIN_EVERY", value_parser = parse_positive)]
    pub retrain_every: Option<usize>,
    /// TLS, API keys and the health-only port.
    #[command(flatten)]
    pub security: security::ServeSecurityArgs,
}

/// Flags of `aelabel label`.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// Server address (`host:port`, `http://host:port` or `https://host:port`).
    #[arg(long, default_value = "127.0.0.1:50051", env = "AELABEL_SERVER")]
    pub server: String,
    /// TLS and API key.
    #[command(flatten)]
    pub connection: security::ClientSecurityArgs,
    /// IDX image files (labels beside them are used for accuracy), folders, PNG/JPEG files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output rows: `.csv` or `.jsonl`.
    #[arg(long, default_value = "labels.csv", env = "AELABEL_LABELS_OUT")]
    pub out: PathBuf,
    /// Images per stream message.
    #[arg(long, default_value_t = 256, value_parser = parse_positive)]
    pub batch: usize,
    /// Confidence below which a row needs review [default: the model's threshold].
    #[arg(long, value_parser = parse_probability)]
    pub review_threshold: Option<f32>,
}

/// Flags of `aelabel encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Server address (`host:port`, `http://host:port` or `https://host:port`).
    #[arg(long, default_value = "127.0.0.1:50051", env = "AELABEL_SERVER")]
    pub server: String,
    /// TLS and API key.
    #[command(flatten)]
    pub connection: security::ClientSecurityArgs,
    /// IDX image files, folders, PNG/JPEG files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output: `.csv` (id + values) or `.npy` (float32, images × embedding size).
    #[arg(long, default_value = "embeddings.npy", env = "AELABEL_EMBEDDINGS_OUT")]
    pub out: PathBuf,
    /// Images per request.
    #[arg(long, default_value_t = 256, value_parser = parse_positive)]
    pub batch: usize,
}

/// `aelabel bench`: a load test against `--server`, or a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// In-process benchmarks.
    #[command(subcommand)]
    pub command: Option<bench::BenchCommand>,
    /// Server to load (`host:port`, `http://host:port` or `https://host:port`).
    #[arg(long)]
    pub server: Option<String>,
    /// TLS and API key.
    #[command(flatten)]
    pub connection: security::ClientSecurityArgs,
    /// Which call to send.
    #[arg(long, value_enum, default_value = "encode")]
    pub rpc: Rpc,
    /// Images per request.
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub batch: usize,
    /// Clients sending at once, one connection each.
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub concurrency: usize,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `aelabel pipeline`.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// The images: a directory of IDX files (gzip or plain), or an image folder with one
    /// sub-folder per class (labelled) and `unlabelled/` or loose images (unlabelled).
    #[arg(long, env = "AELABEL_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// `path,class` CSV labelling the images of a flat folder (paths relative to --data).
    #[arg(long, env = "AELABEL_LABELS_FILE")]
    pub labels_file: Option<PathBuf>,
    /// Labelled images to measure the classifier on: a folder of class sub-folders or an IDX
    /// directory [default: IDX's t10k files; none for a folder].
    #[arg(long, env = "AELABEL_TEST")]
    pub test: Option<PathBuf>,
    /// Model input size, `W×H` or `N` for N×N [default: the images' own size when all share
    /// one, else 28×28].
    #[arg(long, value_parser = parse_input_size)]
    pub input_size: Option<(usize, usize)>,
    /// Stop on an undecodable image instead of skipping it with a warning.
    #[arg(long)]
    pub strict: bool,
    /// Share of the unlabelled images kept to validate the autoencoder [default: IDX's last
    /// 5,000, else 0.1].
    #[arg(long, value_parser = parse_fraction)]
    pub valid_fraction: Option<f64>,
    /// Output directory [default: <aelabel home>/runs/<preset>-<labels>-seed<seed>].
    #[arg(long, env = "AELABEL_OUT")]
    pub out: Option<PathBuf>,
    /// Labelled training images, drawn stratified by class [default: 1,000 of an IDX set such
    /// as Fashion-MNIST, every labelled image of a folder].
    #[arg(long, env = "AELABEL_LABELS", value_parser = parse_positive)]
    pub labels: Option<usize>,
    /// Seed for initialisation, sampling and shuffling.
    #[arg(long, default_value_t = 42, env = "AELABEL_SEED")]
    pub seed: u64,
    /// Recipe: aelabel's semi-supervised default, or the reference's (Hands-On ML 17.3).
    #[arg(long, value_enum, default_value = "default", env = "AELABEL_PRESET")]
    pub preset: Preset,
    /// Pretraining mode (overrides the preset).
    #[arg(long, value_enum)]
    pub mode: Option<PretrainMode>,
    /// Encoder widths from input to code, e.g. 784,100,30 (overrides the preset).
    #[arg(long, value_parser = parse_layers)]
    pub layers: Option<Widths>,
    /// Lowest encoder layers kept frozen during fine-tuning (overrides the preset).
    #[arg(long)]
    pub freeze: Option<usize>,
    /// Pretraining epochs (overrides the preset).
    #[arg(long, value_parser = parse_positive)]
    pub pretrain_epochs: Option<usize>,
    /// Fine-tuning epochs (overrides the preset).
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// Self-training rounds (overrides the preset).
    #[arg(long)]
    pub self_training_rounds: Option<usize>,
    /// Images an epoch visits, sampled afresh each epoch from a larger pool; also the size of
    /// cross-validation's pool sample (overrides the preset's 60,000 · √(pool / 60,000) for
    /// pools above 60,000, and its 60,000 for the folds).
    #[arg(long, value_parser = parse_positive)]
    pub epoch_images: Option<usize>,
    /// Accuracy the auto-accepted predictions should reach.
    #[arg(long, default_value = "0.95", value_parser = parse_fraction)]
    pub target_accuracy: f64,
    /// Threads for the matrix products.
    #[arg(long, default_value_t = default_threads(), env = "AELABEL_THREADS", value_parser = parse_positive)]
    pub threads: usize,
    /// Use only the first N training images (quick runs).
    #[arg(long, value_parser = parse_positive)]
    pub train_limit: Option<usize>,
    /// Use only the first N validation and test images (quick runs).
    #[arg(long, value_parser = parse_positive)]
    pub eval_limit: Option<usize>,
    /// Validation images on the t-SNE map (0 = no map).
    #[arg(long, default_value_t = 2000)]
    pub tsne_points: usize,
    /// Do not record the model in the registry.
    #[arg(long, env = "AELABEL_NO_REGISTER")]
    pub no_register: bool,
    /// Registry database flags.
    #[command(flatten)]
    pub db: DatabaseArgs,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses a pick strategy name (`loop`, `uncertain`, `diverse`, `random`).
pub(crate) fn parse_pick(text: &str) -> Result<crate::jobs::select::Pick, String> {
    crate::jobs::select::Pick::ALL
        .iter()
        .find(|(_, name)| *name == text)
        .map(|(p, _)| *p)
        .ok_or_else(|| {
            format!("`{text}` is not a pick strategy: loop, uncertain, diverse or random")
        })
}

/// Parses a probability in [0, 1].
fn parse_probability(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a number between 0 and 1")),
    }
}

/// Parses seconds: a finite number above 0.
fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    if value.is_finite() && value > 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        anyhow::bail!("{flag} {value} is not a positive number of seconds")
    }
}

/// Where `aelabel pipeline` writes its model with default flags.
fn default_model() -> PathBuf {
    aelabel_home()
        .join("runs")
        .join("default-1000-seed42")
        .join("model.safetensors")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn task_of(rpc: Rpc) -> Task {
    match rpc {
        // `bench engine` runs what ModelInfer's encoder runs.
        Rpc::Encode | Rpc::ModelInfer => Task::Encode,
        Rpc::Label => Task::Label,
        Rpc::Reconstruct => Task::Reconstruct,
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig {
        model: match args.model {
            Some(path) => ModelSource::File(path),
            None => ModelSource::Registry {
                database_url: args.db.url(),
                poll: Duration::from_millis(args.registry_poll_ms as u64),
            },
        },
        addr: args.addr,
        http_addr: (!(args.no_http || args.legacy_no_metrics)).then(|| {
            args.http_addr
                .or(args.legacy_metrics_addr)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_HTTP_PORT)))
        }),
        engine: EngineConfig {
            threads: args.threads,
            max_batch: args.max_batch,
            max_queue_delay: Duration::from_micros(args.max_queue_delay_us),
        },
        max_in_flight: args.max_in_flight,
        max_message_bytes: args.max_message_bytes,
        max_image_side: args.max_image_side,
        max_decode_bytes: (args.max_decode_mib as u64) << 20,
        shutdown_grace: seconds(args.shutdown_grace_secs, "--shutdown-grace-secs")?,
        jobs: JobWorkerConfig {
            claim_batch: args.job_batch,
            lease: seconds(args.job_claim_secs, "--job-claim-secs")?,
            poll: Duration::from_millis(args.job_poll_ms as u64),
            label_on_arrival: !args.job_worker_only,
        },
        label_studio: args.label_studio.config(args.threads)?,
        training: (!args.no_training).then(|| args.training.config(true)),
        retrain_every: args.retrain_every.map(|n| n as u64),
        security: args.security.config()?,
    };
    runtime()?.block_on(async move {
        let stop = shutdown_signal();
        let app = Application::build(config).await?;
        if let Some(addr) = app.http_addr() {
            tracing::info!(%addr, "http listening");
        }
        app.run_until_stopped(stop).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

fn init_threads(threads: usize) {
    // The matrix products split work over rayon's global pool; size it once.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
}

/// `aelabel pipeline`: trains, prints the headline numbers and where the files are.
fn pipeline_command(args: PipelineArgs, quiet: bool) -> anyhow::Result<()> {
    init_threads(args.threads);
    let out = args.out.clone().unwrap_or_else(|| default_run_dir(&args));
    let config = PipelineConfig {
        data: DataOptions {
            dir: args.data,
            labels_file: args.labels_file,
            test: args.test,
            input_size: args.input_size,
            strict: args.strict,
            merge_idx_valid: false,
        },
        out_dir: out.clone(),
        preset: args.preset,
        labels: args.labels,
        valid_fraction: args.valid_fraction,
        seed: args.seed,
        threads: args.threads,
        mode: args.mode,
        layers: args.layers.map(|w| w.0),
        freeze: args.freeze,
        pretrain_epochs: args.pretrain_epochs,
        finetune_epochs: args.finetune_epochs,
        self_training_rounds: args.self_training_rounds,
        epoch_images: args.epoch_images,
        target_accuracy: args.target_accuracy,
        train_limit: args.train_limit,
        eval_limit: args.eval_limit,
        tsne_points: args.tsne_points,
    };
    let progress = Progress::new(quiet);
    let report = pipeline::run(&config, &progress)?;
    let a = &report.auto_label;
    let auto = match (a.test_coverage, a.test_accuracy, a.calibration_accuracy) {
        (Some(coverage), Some(acc), _) => format!(
            "auto-accept ≥ {:.3}: {:.1} % of test images at {:.2} % accuracy",
            a.threshold,
            100.0 * coverage,
            100.0 * acc
        ),
        (None, _, Some(acc)) => format!(
            "auto-accept ≥ {:.3}: {:.1} % of labelled images out of fold at {:.2} % accuracy",
            a.threshold,
            100.0 * a.calibration_coverage,
            100.0 * acc
        ),
        _ => format!(
            "no threshold reaches {:.0} % on cross-validation: everything goes to review",
            100.0 * a.target_accuracy
        ),
    };
    let pct = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{:.2} %", 100.0 * x));
    match report.classifier.test_accuracy {
        Some(_) => println!(
            "test accuracy {} (from scratch {}, logistic regression {}); {auto}; {:.0} s",
            pct(report.classifier.test_accuracy),
            pct(report.baselines.scratch.test_accuracy),
            pct(report.baselines.logreg_pixels.test_accuracy),
            report.wall_seconds
        ),
        None => println!(
            "no test set (pass --test DIR): cross-validated accuracy {:.2} % over the {} labelled images; {auto}; {:.0} s",
            100.0 * a.cross_validated_accuracy,
            report.labels,
            report.wall_seconds
        ),
    }
    if report.data.skipped_images > 0 {
        println!(
            "skipped {} undecodable image file(s): see the warnings above and report.json `data.skipped`",
            report.data.skipped_images
        );
    }
    println!("report: {}", out.join("report.md").display());
    let model = out.join("model.safetensors");
    println!("model:  {}", model.display());
    if !args.no_register {
        let url = args.db.url();
        let line = runtime()?
            .block_on(async {
                let store = Store::connect(&url).await?;
                let line = registry::register(&store, &model).await;
                store.close().await;
                line
            })
            .with_context(|| {
                format!(
                    "the model is saved but could not be registered; register it later with `aelabel models register {}`",
                    model.display()
                )
            })?;
        println!("{line}");
    }
    Ok(())
}

/// `<aelabel home>/runs/<preset>-<labels>-seed<seed>`, prefixed by the folder's name for image
/// folders (`photos-default-all-seed42`).
fn default_run_dir(args: &PipelineArgs) -> PathBuf {
    let preset = pipeline::preset_name(args.preset);
    let idx = is_idx_dir(&args.data) && args.labels_file.is_none();
    let labels = match args.labels {
        Some(n) => n.to_string(),
        None if idx => DEFAULT_LABELS.to_string(),
        None => "all".into(),
    };
    let mut name = format!("{preset}-{labels}-seed{}", args.seed);
    if !idx {
        let folder = args
            .data
            .file_name()
            .map_or("data".into(), |n| n.to_string_lossy().into_owned());
        name = format!("{folder}-{name}");
    }
    aelabel_home().join("runs").join(name)
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pipeline(args) => pipeline_command(args, cli.quiet),
        Command::Models(args) => runtime()?.block_on(registry::models_command(args)),
        Command::Db(args) => runtime()?.block_on(registry::db_command(args)),
        Command::Retrain(args) => retrain::retrain_command(args, cli.quiet),
        Command::Jobs(args) => runtime()?.block_on(jobs::jobs_command(args, cli.quiet)),
        Command::Serve(args) => serve(args),
        Command::Worker(args) => worker::worker_command(args),
        Command::Label(args) => {
            let job = LabelJob {
                server: args.connection.target(&args.server),
                inputs: args.inputs,
                out: args.out.clone(),
                batch: args.batch,
                review_threshold: args.review_threshold,
                quiet: cli.quiet,
            };
            let summary = runtime()?.block_on(client::label(job))?;
            let mut line = format!(
                "labelled {} images in {:.1} s ({:.0} images/s): {} need review ({:.1} %)",
                summary.images,
                summary.seconds,
                summary.images as f64 / summary.seconds.max(1e-9),
                summary.needs_review,
                100.0 * summary.needs_review as f64 / summary.images.max(1) as f64
            );
            if let Some(accuracy) = summary.accuracy {
                line.push_str(&format!("; accuracy {:.2} %", 100.0 * accuracy));
            }
            println!("{line}");
            println!("rows: {}", args.out.display());
            Ok(())
        }
        Command::Encode(args) => {
            let job = EncodeJob {
                server: args.connection.target(&args.server),
                inputs: args.inputs,
                out: args.out.clone(),
                batch: args.batch,
                quiet: cli.quiet,
            };
            let (images, width) = runtime()?.block_on(client::encode(job))?;
            println!(
                "encoded {images} images into {width}-d embeddings: {}",
                args.out.display()
            );
            Ok(())
        }
        Command::Bench(BenchArgs {
            command: None,
            server,
            connection,
            rpc,
            batch,
            concurrency,
            duration,
            json,
        }) => {
            let Some(server) = server else {
                anyhow::bail!("bench needs --server URL to load a server, or a subcommand: `bench train`, `bench engine`");
            };
            let test = LoadTest {
                server: connection.target(&server),
                rpc,
                batch,
                concurrency,
                duration: seconds(duration, "--duration")?,
            };
            let report = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(client::bench::run_load(&test))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.to_text());
            }
            Ok(())
        }
        Command::Bench(BenchArgs {
            command: Some(command),
            ..
        }) => bench::bench_command(command, cli.quiet),
    }
}
