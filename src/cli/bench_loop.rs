//! `aelabel bench loop`: the labelling loop simulated in process on an IDX data set (train +
//! t10k as one pile), true labels standing in for people; prints one line (or JSON object)
//! per round.

use super::{default_threads, parse_pick};
use crate::config::{parse_fraction, parse_positive};
use crate::data::{Dataset, DEFAULT_DATA_DIR};
use crate::jobs::select::Pick;
use crate::pipeline::loop_sim::{simulate_loop, LoopPlan, TruePile};
use crate::progress::Progress;
use clap::Args;
use std::path::PathBuf;

/// Flags of `aelabel bench loop`.
#[derive(Debug, Args)]
pub struct BenchLoopArgs {
    /// Directory with IDX files; the training and t10k images form one pile.
    #[arg(long, env = "AELABEL_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Items labelled per round, comma-separated; the last repeats.
    #[arg(long, default_value = "1000", value_delimiter = ',', value_parser = parse_positive)]
    pub rounds: Vec<usize>,
    /// How picks are chosen: loop, uncertain, diverse or random.
    #[arg(long, default_value = "loop", value_parser = parse_pick)]
    pub pick: Pick,
    /// Share of each loop batch drawn at random to judge the threshold.
    #[arg(long, default_value_t = crate::jobs::select::EVIDENCE_SHARE, value_parser = parse_fraction)]
    pub evidence_share: f64,
    /// Stop once the pool is this accurate.
    #[arg(long, default_value = "0.95", value_parser = parse_fraction)]
    pub stop_at: f64,
    /// Stop once people labelled this many.
    #[arg(long, default_value_t = 25_000, value_parser = parse_positive)]
    pub budget: usize,
    /// Auto-accept target accuracy.
    #[arg(long, default_value = "0.95", value_parser = parse_fraction)]
    pub target_accuracy: f64,
    /// Use only the first N images of the pile (quick runs).
    #[arg(long, value_parser = parse_positive)]
    pub limit: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Threads for the matrix products.
    #[arg(long, default_value_t = default_threads(), value_parser = parse_positive)]
    pub threads: usize,
    /// One JSON object per round instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `aelabel bench loop`.
pub fn bench_loop(args: BenchLoopArgs, quiet: bool) -> anyhow::Result<()> {
    let data = Dataset::idx(&args.data, true)?;
    let mut pixels = data.train.pixels.clone();
    let mut truth: Vec<u32> = data.train.labels.iter().map(|l| l.unwrap_or(0)).collect();
    if let Some(test) = &data.test {
        pixels.extend_from_slice(&test.pixels);
        truth.extend(test.labels.iter().map(|l| l.unwrap_or(0)));
    }
    let size = data.train.image_size();
    if let Some(limit) = args.limit {
        truth.truncate(limit);
        pixels.truncate(limit * size);
    }
    let pile = TruePile {
        pixels: &pixels,
        truth: &truth,
        width: data.train.width,
        height: data.train.height,
        class_names: &data.class_names,
    };
    let plan = LoopPlan {
        rounds: args.rounds,
        pick: args.pick,
        evidence_share: args.evidence_share,
        stop_at: args.stop_at,
        budget: args.budget,
        target_accuracy: args.target_accuracy,
        seed: args.seed,
        threads: args.threads,
    };
    let json = args.json;
    simulate_loop(&pile, &plan, &Progress::new(quiet), |row| {
        if json {
            println!("{}", serde_json::to_string(row).unwrap_or_default());
        } else {
            println!(
                "round {:>2}: {:>6} human labels ({} evidence) → pool {:.2} %, auto-accepted {:.1} % at {} (estimated {}), threshold {:.3}, train {:.1} s, select {:.1} s",
                row.round,
                row.human_labels,
                row.evidence_labels,
                100.0 * row.pool_accuracy,
                100.0 * row.auto_accepted_share,
                row.auto_accepted_accuracy.map_or("–".into(), |a| format!("{:.2} %", 100.0 * a)),
                row.estimated_accepted_accuracy.map_or("–".into(), |a| format!("{:.2} %", 100.0 * a)),
                row.threshold,
                row.train_seconds,
                row.select_seconds
            );
        }
    });
    Ok(())
}

/// Flags of `aelabel bench plot`.
#[derive(Debug, Args)]
pub struct BenchPlotArgs {
    /// A JSON file `{title, x_label, y_label, target: [y, name]?, curves: [{name, points:
    /// [[x, y], …]}]}` (what `benches/labelling_loop.py` writes).
    #[arg(long)]
    pub json: PathBuf,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// The JSON `aelabel bench plot` reads.
#[derive(Debug, serde::Deserialize)]
struct PlotSpec {
    title: String,
    x_label: String,
    y_label: String,
    target: Option<(f64, String)>,
    curves: Vec<PlotCurve>,
}

#[derive(Debug, serde::Deserialize)]
struct PlotCurve {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Runs `aelabel bench plot`: lines over a numeric x axis, for benchmark scripts.
pub fn bench_plot(args: BenchPlotArgs) -> anyhow::Result<()> {
    use crate::pipeline::plots::{xy_curves_png, XyCurve};
    let text = std::fs::read_to_string(&args.json)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.json.display()))?;
    let spec: PlotSpec = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a plot description: {e}", args.json.display()))?;
    let curves: Vec<XyCurve> = spec
        .curves
        .into_iter()
        .map(|c| XyCurve {
            name: c.name,
            points: c.points,
        })
        .collect();
    xy_curves_png(
        &args.out,
        &spec.title,
        (&spec.x_label, &spec.y_label),
        &curves,
        spec.target.as_ref().map(|(y, name)| (*y, name.as_str())),
    )?;
    println!("wrote {}", args.out.display());
    Ok(())
}
