//! Command-line interface: flags (each also an `AELABEL_*` variable) and dispatch.

use crate::config::{aelabel_home, parse_fraction, parse_layers, parse_positive, Widths};
use crate::data::{FashionMnist, DEFAULT_DATA_DIR};
use crate::pipeline::{self, PipelineConfig, Preset, PretrainMode};
use crate::progress::Progress;
use crate::telemetry::LogFormat;
use crate::train::bench::bench_train;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Flags of `aelabel pipeline`.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Directory with the Fashion-MNIST IDX files (gzip or plain).
    #[arg(long, env = "AELABEL_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Output directory [default: <aelabel home>/runs/<preset>-<labels>-seed<seed>].
    #[arg(long, env = "AELABEL_OUT")]
    pub out: Option<PathBuf>,
    /// Labelled training images, drawn stratified by class.
    #[arg(long, default_value_t = 1000, env = "AELABEL_LABELS")]
    pub labels: usize,
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
    #[arg(long)]
    pub pretrain_epochs: Option<usize>,
    /// Fine-tuning epochs (overrides the preset).
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// Self-training rounds (overrides the preset).
    #[arg(long)]
    pub self_training_rounds: Option<usize>,
    /// Accuracy the auto-accepted predictions should reach.
    #[arg(long, default_value = "0.95", value_parser = parse_fraction)]
    pub target_accuracy: f64,
    /// Threads for the matrix products.
    #[arg(long, default_value_t = default_threads(), env = "AELABEL_THREADS", value_parser = parse_positive)]
    pub threads: usize,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N validation and test images (quick runs).
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Validation images on the t-SNE map (0 = no map).
    #[arg(long, default_value_t = 2000)]
    pub tsne_points: usize,
}

/// `aelabel bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time joint pretraining epochs of the reference recipe on the 55,000 training images.
    Train(BenchTrainArgs),
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

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn init_threads(threads: usize) {
    // The matrix products split work over rayon's global pool; size it once.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pipeline(args) => {
            init_threads(args.threads);
            let out = args.out.clone().unwrap_or_else(|| {
                let preset = match args.preset {
                    Preset::Default => "default",
                    Preset::Seed => "seed",
                };
                aelabel_home()
                    .join("runs")
                    .join(format!("{preset}-{}-seed{}", args.labels, args.seed))
            });
            let config = PipelineConfig {
                data_dir: args.data,
                out_dir: out.clone(),
                preset: args.preset,
                labels: args.labels,
                seed: args.seed,
                threads: args.threads,
                mode: args.mode,
                layers: args.layers.map(|w| w.0),
                freeze: args.freeze,
                pretrain_epochs: args.pretrain_epochs,
                finetune_epochs: args.finetune_epochs,
                self_training_rounds: args.self_training_rounds,
                target_accuracy: args.target_accuracy,
                train_limit: args.train_limit,
                eval_limit: args.eval_limit,
                tsne_points: args.tsne_points,
            };
            let progress = Progress::new(cli.quiet);
            let report = pipeline::run(&config, &progress)?;
            println!(
                "test accuracy {:.2} % (from scratch {:.2} %, logistic regression {:.2} %); auto-accept ≥ {:.3}: {:.1} % of test images at {:.2} % accuracy; {:.0} s",
                100.0 * report.classifier.test_accuracy,
                100.0 * report.baselines.scratch.test_accuracy,
                100.0 * report.baselines.logreg_pixels.test_accuracy,
                report.auto_label.threshold,
                100.0 * report.auto_label.test_coverage,
                100.0 * report.auto_label.test_accuracy,
                report.wall_seconds
            );
            println!("report: {}", out.join("report.md").display());
            println!("model:  {}", out.join("model.safetensors").display());
            Ok(())
        }
        Command::Bench(BenchCommand::Train(args)) => {
            init_threads(args.threads);
            let data = FashionMnist::load(&args.data)?;
            let r = bench_train(
                &data.train.pixels,
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
