//! `aelabel retrain --job JOB`: a new model from the active one and a job's reviews,
//! registered, compared with the active model, and activated on request when it is better.

use super::registry::{register, DatabaseArgs};
use super::{default_threads, init_threads, runtime};
use crate::config::{aelabel_home, parse_positive};
use crate::model::Model;
use crate::pipeline::retrain::{config_of, retrain, RetrainReport, ReviewedExample};
use crate::progress::Progress;
use crate::store::Store;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

/// Flags of `aelabel retrain`.
#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// The label job whose reviewed items join the training labels.
    #[arg(long)]
    pub job: String,
    /// Activate the new model if it is more accurate on the test images than the one it
    /// started from (running servers switch to it within seconds).
    #[arg(long)]
    pub activate: bool,
    /// Start from this registered version [default: the active one].
    #[arg(long)]
    pub base: Option<String>,
    /// Where the new model and its report go [default: AELABEL_HOME/runs/retrain-<job>-<n>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the data set is now, if it moved since the base model was trained.
    #[arg(long, env = "AELABEL_DATA")]
    pub data: Option<PathBuf>,
    /// Threads for the matrix products.
    #[arg(long, default_value_t = default_threads(), env = "AELABEL_THREADS", value_parser = parse_positive)]
    pub threads: usize,
    /// Database flags.
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// Runs `aelabel retrain`.
pub fn retrain_command(args: RetrainArgs, quiet: bool) -> anyhow::Result<()> {
    init_threads(args.threads);
    let rt = runtime()?;
    let store = rt.block_on(Store::connect(&args.db.url()))?;
    let (record, reviews) = rt.block_on(async {
        let record = match &args.base {
            Some(version) => store.model(version).await?,
            None => store.active_model().await?,
        };
        let spec = store.job_spec(&args.job).await?;
        let reviewed = store.reviewed_images(&args.job).await?;
        let reviews = reviewed
            .into_iter()
            .map(|r| {
                let class_name = spec
                    .class_names
                    .get(r.class as usize)
                    .cloned()
                    .with_context(|| {
                        format!(
                            "item `{}` has class {} outside the job's classes",
                            r.client_id, r.class
                        )
                    })?;
                Ok(ReviewedExample {
                    pixels: r.pixels,
                    class_name,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::Ok((record, reviews))
    })?;
    if reviews.is_empty() {
        anyhow::bail!(
            "job {} has no reviewed items yet; review some with `aelabel jobs review {}` first",
            args.job,
            args.job
        );
    }
    let (base, sha256) = Model::load_with_sha256(&record.path)?;
    if sha256 != record.sha256 {
        anyhow::bail!(
            "{} is not the file registered as {} (checksum differs); register it again or restore it",
            record.path.display(),
            record.version
        );
    }
    let prefix: String = args.job.chars().take(8).collect();
    let out = args.out.clone().unwrap_or_else(|| {
        aelabel_home()
            .join("runs")
            .join(format!("retrain-{prefix}-{}", reviews.len()))
    });
    let config = config_of(&base, out.clone(), args.threads, args.data.clone())?;
    let provenance =
        serde_json::json!({"job": args.job, "reviews": reviews.len(), "base": record.version});
    let report = retrain(&config, &base, &reviews, provenance, &Progress::new(quiet))?;
    print_report(&report);
    println!("report: {}", out.join("retrain.md").display());
    let model = report.model_path.clone();
    rt.block_on(async {
        let line = register(&store, &model).await.with_context(|| {
            format!(
                "the model is saved but could not be registered; register it later with `aelabel models register {}`",
                model.display()
            )
        })?;
        let version = &report.retrained.version;
        if !args.activate {
            println!("{line}");
        } else if report.improved() {
            store.activate(version).await?;
            println!("registered model {version}\nactive: {version}");
        } else {
            println!(
                "registered model {version}; not activated: it is not more accurate than {} on the test images",
                report.previous.version
            );
        }
        store.close().await;
        anyhow::Ok(())
    })
}

fn print_report(r: &RetrainReport) {
    println!(
        "test accuracy {:.2} % → {:.2} % ({:+.2} points); auto-accepted {:.1} % → {:.1} % ({:+.1} points) of {} test images; {} reviews on top of {} labels; {:.0} s",
        100.0 * r.previous.test_accuracy,
        100.0 * r.retrained.test_accuracy,
        r.accuracy_change_points,
        100.0 * r.previous.auto_accepted,
        100.0 * r.retrained.auto_accepted,
        r.auto_accepted_change_points,
        r.test_images,
        r.reviews,
        r.original_labels,
        r.wall_seconds
    );
}
