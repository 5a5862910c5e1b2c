//! `aelabel retrain --job JOB`: a new model from the active one and a job's reviews,
//! registered, compared with the active model, and activated on request when it is better.
//! For a job on the labelling loop (its own classes or models) it queues the job's next
//! training round instead, as `aelabel jobs train` does, and waits for a worker to run it.

use super::registry::{registered_line, DatabaseArgs};
use super::{default_threads, init_threads, runtime};
use crate::config::{aelabel_home, parse_positive};
use crate::pipeline::job_retrain::{retrain_job, Activation, JobRetrain};
use crate::pipeline::retrain::RetrainReport;
use crate::progress::Progress;
use crate::store::Store;
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

/// Whether the job trains its own models (its own classes, autoencoder or model): then a
/// retrain is one of its training rounds, not a fine-tune of the registry's model.
async fn on_the_loop(store: &Store, job: &str) -> anyhow::Result<bool> {
    let spec = store.job_spec(job).await?;
    let state = store.loop_state(job).await?;
    Ok(spec.own_classes || state.pretrained || state.model_version.is_some())
}

/// Queues the job's next training round (what `aelabel jobs train` queues) and waits until
/// a worker (`aelabel serve` or `aelabel worker`) has run it.
async fn enqueue_round(store: &Store, job: &str, activate: bool) -> anyhow::Result<()> {
    let (run, queued) = store.enqueue_training(job, activate).await?;
    eprintln!(
        "{} training run {} of job {job}; a worker (`aelabel serve` or `aelabel worker`) runs it",
        if queued {
            "queued"
        } else {
            "waiting for the open"
        },
        run.id
    );
    let mut run = run;
    while !run.state.is_over() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        run = store.training_run(&run.id).await?;
    }
    match (&run.result, &run.error) {
        (Some(report), _) => println!("{}", crate::client::job_loop::describe_round(report)),
        (None, Some(error)) => anyhow::bail!("job {job}: training run {} failed: {error}", run.id),
        (None, None) => println!("training run {} finished", run.id),
    }
    Ok(())
}

/// Runs `aelabel retrain`.
pub fn retrain_command(args: RetrainArgs, quiet: bool) -> anyhow::Result<()> {
    init_threads(args.threads);
    let rt = runtime()?;
    let store = rt.block_on(Store::connect(&args.db.url()))?;
    if rt.block_on(on_the_loop(&store, &args.job))? {
        return rt.block_on(enqueue_round(&store, &args.job, args.activate));
    }
    let spec = JobRetrain {
        job: args.job.clone(),
        base: args.base.clone(),
        data: args.data.clone(),
        threads: args.threads,
        activate: args.activate,
    };
    let prefix: String = args.job.chars().take(8).collect();
    let out = |reviews: usize| {
        args.out.clone().unwrap_or_else(|| {
            aelabel_home()
                .join("runs")
                .join(format!("retrain-{prefix}-{reviews}"))
        })
    };
    let outcome = retrain_job(rt.handle(), &store, &spec, out, &Progress::new(quiet))?;
    let report = &outcome.report;
    print_report(report);
    println!(
        "report: {}",
        out(outcome.reviews).join("retrain.md").display()
    );
    let version = &report.retrained.version;
    match outcome.activation {
        Activation::NotAsked => {
            println!("{}", registered_line(outcome.registered, version, &store))
        }
        Activation::Activated => println!("registered model {version}\nactive: {version}"),
        Activation::NotBetter => println!(
            "registered model {version}; not activated: it is not more accurate than {} on the test images",
            report.previous.version
        ),
    }
    rt.block_on(store.close());
    Ok(())
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
