//! The labelling loop from the command line: which items to label next (as a CSV people or
//! scripts fill in), a training round (queued on the server, followed with a progress bar),
//! and the report of the rounds so far (JSON, Markdown and a PNG curve).

use super::jobs::connect_jobs;
use super::{ClientError, Target};
use crate::jobs::select::Pick;
use crate::jobs::training::RoundReport;
use crate::wire as pb;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::time::Duration;

/// How often `jobs train` asks how its run is doing.
const POLL: Duration = Duration::from_millis(500);

/// What `jobs next` wrote.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NextSummary {
    /// Items written.
    pub items: usize,
    /// Of those, the random slice that will judge the threshold.
    pub evidence: usize,
    /// The model whose predictions chose them (empty: the first batch).
    pub model_version: String,
}

/// Writes the `n` items people should label next to `out` (`id,reason,predicted,confidence`,
/// in order). A job with nothing trained yet first gets its autoencoder pretrained (a
/// training run, waited for), so that the first batch covers the pile.
pub async fn next(
    server: &Target,
    job_id: &str,
    n: u32,
    pick: Pick,
    out: &Path,
    quiet: bool,
) -> Result<NextSummary, ClientError> {
    let mut client = connect_jobs(server).await?;
    let job = client
        .get_job(pb::GetJobRequest {
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner();
    if !job.pretrained && job.model_version.is_empty() && pick != Pick::Random {
        if !quiet {
            eprintln!("job {job_id} has no model yet: pretraining an autoencoder on its images to choose the first batch");
        }
        let run = train(server, job_id, false, quiet).await?;
        if run.state != pb::TrainingState::Finished as i32 {
            return Err(ClientError::Usage(format!(
                "job {job_id}: pretraining failed: {}",
                run.error
            )));
        }
    }
    let wire_pick = match pick {
        Pick::Loop => pb::Pick::Loop,
        Pick::Uncertain => pb::Pick::Uncertain,
        Pick::Diverse => pb::Pick::Diverse,
        Pick::Random => pb::Pick::Random,
    };
    let answer = client
        .next_items(pb::NextItemsRequest {
            job_id: job_id.to_string(),
            count: n,
            pick: wire_pick as i32,
            include_images: false,
        })
        .await?
        .into_inner();
    let mut writer = csv::Writer::from_path(out).map_err(|e| output_error(out, e))?;
    writer
        .write_record(["id", "reason", "predicted", "confidence"])
        .map_err(|e| output_error(out, e))?;
    for item in &answer.items {
        let confidence = if item.predicted_class.is_some() {
            format!("{:.4}", item.confidence)
        } else {
            String::new()
        };
        writer
            .write_record([&item.id, &item.reason, &item.predicted_name, &confidence])
            .map_err(|e| output_error(out, e))?;
    }
    writer.flush().map_err(|e| ClientError::Output {
        path: out.to_path_buf(),
        source: e,
    })?;
    Ok(NextSummary {
        items: answer.items.len(),
        evidence: answer
            .items
            .iter()
            .filter(|i| i.reason == "evidence")
            .count(),
        model_version: answer.model_version,
    })
}

fn output_error(path: &Path, e: csv::Error) -> ClientError {
    ClientError::Output {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Queues a training run and (unless `no_wait`) follows it with a progress bar until it
/// finishes or fails; returns the run as it ended (or as queued).
pub async fn train_job(
    server: &Target,
    job_id: &str,
    activate: bool,
    no_wait: bool,
    quiet: bool,
) -> Result<pb::TrainingRun, ClientError> {
    if no_wait {
        let mut client = connect_jobs(server).await?;
        return Ok(client
            .train_job(pb::TrainJobRequest {
                job_id: job_id.to_string(),
                activate,
            })
            .await?
            .into_inner());
    }
    train(server, job_id, activate, quiet).await
}

async fn train(
    server: &Target,
    job_id: &str,
    activate: bool,
    quiet: bool,
) -> Result<pb::TrainingRun, ClientError> {
    let mut client = connect_jobs(server).await?;
    let mut run = client
        .train_job(pb::TrainJobRequest {
            job_id: job_id.to_string(),
            activate,
        })
        .await?
        .into_inner();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>16} {bar:30} {percent:>3} %  {elapsed} < ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let mut stage = String::new();
    while run.state == pb::TrainingState::Queued as i32
        || run.state == pb::TrainingState::Running as i32
    {
        if run.state == pb::TrainingState::Queued as i32 {
            bar.set_message("queued");
        } else if run.stage != stage {
            stage = run.stage.clone();
            bar.set_message(stage.clone());
            bar.reset_eta();
        }
        bar.set_position((run.progress.clamp(0.0, 1.0) * 1000.0) as u64);
        tokio::time::sleep(POLL).await;
        run = poll_run(&mut client, &run.id).await?;
    }
    bar.finish_and_clear();
    Ok(run)
}

/// How long `jobs train` keeps asking while the server answers UNAVAILABLE (the database
/// busy or restarting): the run goes on without the client.
const UNAVAILABLE_PATIENCE: Duration = Duration::from_secs(120);

/// The run as the server sees it now, asking again while the server is briefly unavailable.
async fn poll_run(
    client: &mut pb::label_jobs_client::LabelJobsClient<super::Connection>,
    run_id: &str,
) -> Result<pb::TrainingRun, ClientError> {
    let since = std::time::Instant::now();
    loop {
        let answer = client
            .get_training_run(pb::GetTrainingRunRequest {
                run_id: run_id.to_string(),
            })
            .await;
        match answer {
            Ok(run) => return Ok(run.into_inner()),
            Err(s)
                if s.code() == tonic::Code::Unavailable
                    && since.elapsed() < UNAVAILABLE_PATIENCE =>
            {
                tokio::time::sleep(POLL).await;
            }
            Err(s) => return Err(s.into()),
        }
    }
}

/// The finished rounds of a job, oldest first.
pub async fn rounds(server: &Target, job_id: &str) -> Result<Vec<RoundReport>, ClientError> {
    let mut client = connect_jobs(server).await?;
    let runs = client
        .list_training_runs(pb::ListTrainingRunsRequest {
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner()
        .runs;
    Ok(runs
        .into_iter()
        .filter(|r| r.state == pb::TrainingState::Finished as i32)
        .filter_map(|r| serde_json::from_str::<RoundReport>(&r.result_json).ok())
        .filter(|r| r.model_version.is_some())
        .collect())
}

/// A run state's name as scripts see it: `queued`, `running`, `finished`, `failed`.
pub fn state_name(state: i32) -> String {
    pb::TrainingState::try_from(state).map_or("unknown".to_string(), |s| {
        s.as_str_name()
            .trim_start_matches("TRAINING_STATE_")
            .to_lowercase()
    })
}

/// One line for a person about a finished run.
pub fn describe_round(report: &RoundReport) -> String {
    let pct = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.2} %", 100.0 * v));
    match &report.model_version {
        None => format!(
            "pretrained the job's autoencoder on its {} images in {:.1} s; label the first batch (`aelabel jobs next`)",
            report.total, report.seconds
        ),
        Some(version) => format!(
            "model {version}: {} human labels ({} judging the threshold); threshold {} auto-accepts {:.1} % of the unreviewed items, estimated {} right (bound {}); estimated pool accuracy {}; {:.1} s",
            report.human_labels,
            report.evidence_labels,
            report
                .threshold
                .map_or("–".to_string(), |t| format!("{t:.3}")),
            100.0 * report.auto_accepted_share,
            pct(report.estimated_accepted_accuracy),
            pct(report.accepted_accuracy_bound),
            pct(report.estimated_pool_accuracy),
            report.seconds
        ),
    }
}

/// Writes the rounds so far to `dir`: `rounds.json`, `rounds.md` and `curve.png` (human labels
/// → estimated pool accuracy and auto-accepted share). Returns the files written.
pub fn write_report(
    dir: &Path,
    job_id: &str,
    rounds: &[RoundReport],
) -> Result<Vec<std::path::PathBuf>, ClientError> {
    use crate::pipeline::plots::{xy_curves_png, XyCurve};
    if rounds.is_empty() {
        return Err(ClientError::Usage(format!(
            "job {job_id} has no finished round yet; train one with `aelabel jobs train {job_id}`"
        )));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ClientError::Output { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let json_path = dir.join("rounds.json");
    let json = serde_json::json!({"job_id": job_id, "rounds": rounds});
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| ClientError::Usage(format!("cannot write the report: {e}")))?;
    std::fs::write(&json_path, text).map_err(io(&json_path))?;
    let pct = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.2} %", 100.0 * v));
    let mut md = format!(
        "# Labelling loop of job {job_id}\n\n| round | human labels | evidence | threshold | auto-accepted | estimated accepted accuracy (bound) | estimated pool accuracy | seconds |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    for (i, r) in rounds.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} % | {} ({}) | {} | {:.1} |\n",
            i + 1,
            r.human_labels,
            r.evidence_labels,
            r.threshold.map_or("–".into(), |t| format!("{t:.3}")),
            100.0 * r.auto_accepted_share,
            pct(r.estimated_accepted_accuracy),
            pct(r.accepted_accuracy_bound),
            pct(r.estimated_pool_accuracy),
            r.seconds
        ));
    }
    md.push_str("\nEstimates come from the reviewed random slice (evidence), which never trains.\n\n![curve](curve.png)\n");
    let md_path = dir.join("rounds.md");
    std::fs::write(&md_path, md).map_err(io(&md_path))?;
    let png = dir.join("curve.png");
    let series = |name: &str, f: &dyn Fn(&RoundReport) -> Option<f64>| XyCurve {
        name: name.to_string(),
        points: rounds
            .iter()
            .filter_map(|r| f(r).map(|y| (r.human_labels as f64, 100.0 * y)))
            .collect(),
    };
    let curves = vec![
        series("estimated pool accuracy", &|r| r.estimated_pool_accuracy),
        series("auto-accepted share", &|r| Some(r.auto_accepted_share)),
    ];
    xy_curves_png(
        &png,
        &format!("Labelling loop of job {job_id}"),
        ("human labels", "%"),
        &curves,
        Some((95.0, "95 %")),
    )
    .map_err(|e| ClientError::Usage(e.to_string()))?;
    Ok(vec![json_path, md_path, png])
}
