//! `aelabel jobs …`: label jobs on a running server. Scripts depend on the output shapes:
//! `create` prints the job id as its last line, `status --json` one object.

use super::parse_probability;
use crate::client::job_loop;
use crate::client::jobs::{self as client, NewJobRequest, TerminalReview};
use crate::config::{parse_input_size, parse_positive};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `aelabel jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Server address (`host:port`, `http://host:port` or `https://host:port`).
    #[arg(
        long,
        default_value = "127.0.0.1:50051",
        env = "AELABEL_SERVER",
        global = true
    )]
    pub server: String,
    /// TLS and API key.
    #[command(flatten)]
    pub connection: super::security::ClientSecurityArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// The label-job commands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Create an empty job; prints its id as the last line.
    Create {
        /// A name people recognise.
        #[arg(long)]
        name: String,
        /// The job's own classes, comma-separated (`--classes cat,dog,bird`): needed when no
        /// model is active [default: the serving model's].
        #[arg(long, conflicts_with = "classes_file")]
        classes: Option<String>,
        /// The job's own classes from a file, one name a line (blank lines ignored).
        #[arg(long)]
        classes_file: Option<PathBuf>,
        /// Size images are stored and trained at, `N` or `W×H` [default: the serving model's
        /// input size, else 28×28].
        #[arg(long, value_parser = parse_input_size)]
        input_size: Option<(usize, usize)>,
        /// Auto-accept predictions whose expected accuracy reaches this (each model turns it
        /// into its own threshold) [default: the model's own threshold].
        #[arg(long, value_parser = parse_probability, conflicts_with = "threshold")]
        target_accuracy: Option<f32>,
        /// Auto-accept predictions at or above this confidence instead.
        #[arg(long, value_parser = parse_probability)]
        threshold: Option<f32>,
    },
    /// Add images: IDX files (ids `FILE#index`), folders and PNG/JPEG files (ids: paths).
    /// Adding the same ids again adds nothing.
    Add {
        /// The job id.
        job: String,
        /// IDX image files, folders, PNG/JPEG files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Images per stream message.
        #[arg(long, default_value_t = 256, value_parser = parse_positive)]
        batch: usize,
    },
    /// Counts per status and the models that labelled the job.
    Status {
        /// The job id.
        job: String,
        /// Print one JSON object (keys total, pending, auto_accepted, needs_review, reviewed,
        /// model_versions, …).
        #[arg(long)]
        json: bool,
    },
    /// Review items: from an `id,class` CSV file, or one by one at the terminal (least
    /// confident first).
    Review {
        /// The job id.
        job: String,
        /// Rows `id,class` (client id, class name) with that header line.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// At the terminal: stop after this many reviews.
        #[arg(long, value_parser = parse_positive, conflicts_with = "csv")]
        limit: Option<usize>,
    },
    /// Write the items people should label next, in order, to a CSV file (`id` first). A job
    /// with no model yet first pretrains an autoencoder on its images (waited for, with a
    /// progress bar) so that the first batch covers the pile.
    Next {
        /// The job id.
        job: String,
        /// How many items.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        n: u32,
        /// Output CSV: columns id,reason,predicted,confidence.
        #[arg(long)]
        out: PathBuf,
        /// How to choose: loop (diverse uncertain items plus a random slice that judges the
        /// threshold; the first batch covers the pile), uncertain, diverse or random.
        #[arg(long, default_value = "loop", value_parser = super::parse_pick)]
        pick: crate::jobs::select::Pick,
    },
    /// Train the job's next model on what people labelled (a worker runs it); waits with a
    /// progress bar and prints the result.
    Train {
        /// The job id.
        job: String,
        /// Print the run id and return at once.
        #[arg(long)]
        no_wait: bool,
        /// Print the finished run as one JSON object.
        #[arg(long)]
        json: bool,
        /// Make the new model the registry's active one (what `Label` serves).
        #[arg(long)]
        activate: bool,
    },
    /// Write the rounds so far: rounds.json, rounds.md and curve.png.
    Report {
        /// The job id.
        job: String,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write every item's final label (a person's wins) as `.csv` or `.jsonl`.
    Export {
        /// The job id.
        job: String,
        /// Output file: columns id,class,source,confidence,model_version.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs one `aelabel jobs` command.
pub async fn jobs_command(args: JobsArgs, quiet: bool) -> anyhow::Result<()> {
    let server = &args.connection.target(&args.server);
    match args.command {
        JobsCommand::Create {
            name,
            classes,
            classes_file,
            input_size,
            target_accuracy,
            threshold,
        } => {
            let class_names = match (classes, classes_file) {
                (Some(list), _) => client::class_list(&list),
                (None, Some(path)) => client::class_file(&path)?,
                (None, None) => Vec::new(),
            };
            let request = NewJobRequest {
                name,
                threshold,
                target_accuracy,
                class_names,
                // parse_input_size keeps each side within 1..=4096.
                input_size: input_size.map(|(w, h)| (w as u32, h as u32)),
            };
            let job = client::create_job(server, request).await?;
            eprintln!("created job `{}`", job.name);
            println!("{}", job.id);
        }
        JobsCommand::Add { job, inputs, batch } => {
            let s = client::add_images(server, &job, &inputs, batch, quiet).await?;
            println!(
                "sent {} images in {:.1} s ({:.0} images/s): {} added, {} already in the job",
                s.sent,
                s.seconds,
                s.sent as f64 / s.seconds.max(1e-9),
                s.added,
                s.duplicates
            );
        }
        JobsCommand::Status { job, json } => {
            let status = client::job_status(server, &job).await?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                println!("{}", status.to_text());
            }
        }
        JobsCommand::Review {
            job,
            csv: Some(path),
            ..
        } => {
            let n = client::review_csv(server, &job, &path).await?;
            println!("stored {n} reviews from {}", path.display());
        }
        JobsCommand::Review {
            job,
            csv: None,
            limit,
        } => {
            client::review_terminal(&TerminalReview {
                server: server.clone(),
                job_id: job,
                limit,
            })
            .await?;
        }
        JobsCommand::Next { job, n, out, pick } => {
            let s = job_loop::next(server, &job, n, pick, &out, quiet).await?;
            println!(
                "wrote {} items to label next to {} ({} judge the threshold){}",
                s.items,
                out.display(),
                s.evidence,
                if s.model_version.is_empty() {
                    " — the first batch, chosen to cover the pile".to_string()
                } else {
                    format!(", chosen with model {}", s.model_version)
                }
            );
        }
        JobsCommand::Train {
            job,
            no_wait,
            json,
            activate,
        } => {
            let run = job_loop::train_job(server, &job, activate, no_wait, quiet).await?;
            let failed = run.state == crate::wire::TrainingState::Failed as i32;
            if json {
                let result: serde_json::Value =
                    serde_json::from_str(&run.result_json).unwrap_or(serde_json::Value::Null);
                let state = job_loop::state_name(run.state);
                println!(
                    "{}",
                    serde_json::json!({"run_id": run.id, "job_id": run.job_id, "state": state,
                        "error": (!run.error.is_empty()).then_some(&run.error),
                        "seconds": run.seconds, "result": result})
                );
            } else if no_wait {
                println!("queued training run {}", run.id);
            } else if !failed {
                match serde_json::from_str(&run.result_json) {
                    Ok(report) => println!("{}", job_loop::describe_round(&report)),
                    Err(_) => println!("training run {} finished", run.id),
                }
            }
            if failed {
                anyhow::bail!("job {job}: training run {} failed: {}", run.id, run.error);
            }
        }
        JobsCommand::Report { job, out } => {
            let rounds = job_loop::rounds(server, &job).await?;
            let files = job_loop::write_report(&out, &job, &rounds)?;
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!("{} rounds: wrote {}", rounds.len(), names.join(", "));
        }
        JobsCommand::Export { job, out } => {
            let s = client::export(server, &job, &out, quiet).await?;
            println!(
                "exported {} labels to {}: {} by people, {} auto-accepted, {} still pending",
                s.rows,
                out.display(),
                s.human,
                s.auto,
                s.pending
            );
        }
    }
    Ok(())
}
