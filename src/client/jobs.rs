//! `aelabel jobs …`: label jobs on a server through `aelabel.v1.LabelJobs` — create one, add
//! images, follow its counts, review what the model was unsure of, export every final label.

use super::inputs::Inputs;
use super::{
    channel, create, output, progress, read_batches, ClientError, Connection, Target,
    CLIENT_MAX_MESSAGE_BYTES,
};
use crate::wire as pb;
use pb::label_jobs_client::LabelJobsClient;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use super::review::{review_terminal, TerminalReview};

/// A `LabelJobs` client on one new connection to `server`.
pub async fn connect_jobs(server: &Target) -> Result<LabelJobsClient<Connection>, ClientError> {
    Ok(LabelJobsClient::new(channel(server).await?)
        .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(CLIENT_MAX_MESSAGE_BYTES))
}

/// A job's state as `aelabel jobs status` shows it; its JSON keys are a stable interface.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct JobStatus {
    /// The job id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Items in the job.
    pub total: u64,
    /// Not labelled by a model yet.
    pub pending: u64,
    /// Labelled at or above the threshold.
    pub auto_accepted: u64,
    /// Labelled below the threshold, waiting for a person.
    pub needs_review: u64,
    /// Labelled by a person.
    pub reviewed: u64,
    /// Versions of the models that labelled its items.
    pub model_versions: Vec<String>,
    /// The job's fixed threshold, if it set one.
    pub auto_accept_threshold: Option<f32>,
    /// The job's target accuracy, if it set one.
    pub target_accuracy: Option<f32>,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// The size its images are stored at, `[width, height]`.
    pub input_size: [u32; 2],
    /// Its classes, in class-index order.
    pub class_names: Vec<String>,
    /// Items people labelled (every review, threshold evidence included).
    pub human_labels: u64,
    /// Of those, the random slice that judges the threshold.
    pub evidence_labels: u64,
    /// The job's own current model (`null`: none yet).
    pub model_version: Option<String>,
    /// Its auto-accept threshold.
    pub model_threshold: Option<f32>,
    /// The accepted items' accuracy as the evidence estimates it, and its lower bound.
    pub estimated_accepted_accuracy: Option<f64>,
    /// One-sided Wilson lower bound of that estimate.
    pub accepted_accuracy_bound: Option<f64>,
    /// Whether an autoencoder pretrained on the job's images exists.
    pub pretrained: bool,
    /// The queued or running training run: `{id, state, stage, progress}`.
    pub training: Option<serde_json::Value>,
}

impl From<pb::Job> for JobStatus {
    fn from(job: pb::Job) -> Self {
        let c = job.counts.unwrap_or_default();
        Self {
            id: job.id,
            name: job.name,
            total: c.total,
            pending: c.pending,
            auto_accepted: c.auto_accepted,
            needs_review: c.needs_review,
            reviewed: c.reviewed,
            model_versions: job.model_versions,
            auto_accept_threshold: job.auto_accept_threshold,
            target_accuracy: job.target_accuracy,
            created_at: job.created_at,
            input_size: [job.input_width, job.input_height],
            class_names: job.class_names,
            human_labels: job.human_labels,
            evidence_labels: job.evidence_labels,
            model_version: (!job.model_version.is_empty()).then_some(job.model_version),
            model_threshold: job.model_threshold,
            estimated_accepted_accuracy: job.estimated_accepted_accuracy,
            accepted_accuracy_bound: job.accepted_accuracy_bound,
            pretrained: job.pretrained,
            training: job.running_training.map(|r| {
                let state = super::job_loop::state_name(r.state);
                serde_json::json!({"id": r.id, "state": state, "stage": r.stage, "progress": r.progress})
            }),
        }
    }
}

impl JobStatus {
    /// Two lines for a person: the counts and the models.
    pub fn to_text(&self) -> String {
        let share = |n: u64| 100.0 * n as f64 / self.total.max(1) as f64;
        let rule = match (self.auto_accept_threshold, self.target_accuracy) {
            (Some(t), _) => format!("threshold {t}"),
            (None, Some(a)) => format!("target accuracy {:.1} %", 100.0 * a),
            (None, None) => "each model's threshold".to_string(),
        };
        format!(
            "job {} `{}` ({rule}): {} images — {} pending, {} auto-accepted ({:.1} %), {} need review, {} reviewed\nlabelled by: {}",
            self.id,
            self.name,
            self.total,
            self.pending,
            self.auto_accepted,
            share(self.auto_accepted),
            self.needs_review,
            self.reviewed,
            if self.model_versions.is_empty() {
                "no model yet".to_string()
            } else {
                self.model_versions.join(", ")
            }
        )
    }
}

/// What `aelabel jobs create` asks the server for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewJobRequest {
    /// A name people recognise.
    pub name: String,
    /// A fixed auto-accept threshold; exclusive with `target_accuracy` (the server checks).
    pub threshold: Option<f32>,
    /// The accuracy auto-accepted labels should reach.
    pub target_accuracy: Option<f32>,
    /// The job's own classes; empty takes the serving model's.
    pub class_names: Vec<String>,
    /// The job's own input size (width, height); `None` for the server's default.
    pub input_size: Option<(u32, u32)>,
}

/// Creates a job.
pub async fn create_job(server: &Target, job: NewJobRequest) -> Result<JobStatus, ClientError> {
    let mut client = connect_jobs(server).await?;
    let (input_width, input_height) = job.input_size.unwrap_or((0, 0));
    let job = client
        .create_job(pb::CreateJobRequest {
            name: job.name,
            auto_accept_threshold: job.threshold,
            target_accuracy: job.target_accuracy,
            class_names: job.class_names,
            input_width,
            input_height,
        })
        .await?
        .into_inner();
    Ok(job.into())
}

/// Class names from `--classes a,b,c`: split at commas, each trimmed (the server checks
/// them: empty and repeated names are refused with their index).
pub fn class_list(text: &str) -> Vec<String> {
    text.split(',').map(|c| c.trim().to_string()).collect()
}

/// Class names from a `--classes-file`: one a line, trimmed, blank lines ignored; a name
/// given twice is refused naming both lines.
pub fn class_file(path: &Path) -> Result<Vec<String>, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Usage(format!(
            "cannot read the classes file {}: {e}",
            path.display()
        ))
    })?;
    parse_class_lines(&text).map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
}

/// [`class_file`]'s rules on the file's text.
fn parse_class_lines(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut lines = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() {
            continue;
        }
        if let Some(first) = lines.insert(name.to_string(), i + 1) {
            return Err(format!(
                "line {}: class `{name}` repeats line {first}; name each class once",
                i + 1
            ));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// The job's counts now.
pub async fn job_status(server: &Target, job_id: &str) -> Result<JobStatus, ClientError> {
    let mut client = connect_jobs(server).await?;
    let job = client
        .get_job(pb::GetJobRequest {
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner();
    Ok(job.into())
}

/// What `aelabel jobs add` did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AddSummary {
    /// Images sent.
    pub sent: usize,
    /// New items.
    pub added: u64,
    /// Client ids the job already held.
    pub duplicates: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Streams every input image into the job, `batch` images per message.
pub async fn add_images(
    server: &Target,
    job_id: &str,
    inputs: &[PathBuf],
    batch: usize,
    quiet: bool,
) -> Result<AddSummary, ClientError> {
    if batch == 0 {
        return Err(ClientError::Usage("--batch must be at least 1".into()));
    }
    let started = Instant::now();
    let Inputs { items, .. } = Inputs::collect(inputs)?;
    let total = items.len();
    let mut client = connect_jobs(server).await?;
    let bar = progress(quiet, total);
    let job = job_id.to_string();
    let progress_bar = bar.clone();
    let (requests, reader) = read_batches(
        items,
        batch,
        move |images| pb::AddImagesRequest {
            images,
            job_id: job.clone(),
        },
        move |n| progress_bar.inc(n as u64),
    );
    let response = client.add_images(requests).await;
    bar.finish_and_clear();
    match reader.join() {
        Ok(result) => result?,
        Err(_) => return Err(ClientError::Usage("the input reader crashed".into())),
    }
    let response = response?.into_inner();
    Ok(AddSummary {
        sent: total,
        added: response.added,
        duplicates: response.duplicates,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One row of a review file: a client id and the class name a person chose.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
struct ReviewRow {
    id: String,
    class: String,
}

/// Reads `id,class` rows (header required, as `aelabel jobs export` writes them; other
/// columns are ignored, so an edited export works too).
fn read_reviews(path: &Path) -> Result<Vec<ReviewRow>, ClientError> {
    let bad = |reason: String| ClientError::Usage(format!("{}: {reason}", path.display()));
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    if !headers.iter().any(|h| h == "id") || !headers.iter().any(|h| h == "class") {
        return Err(bad(format!(
            "the first line must name the columns `id,class`, found `{}`",
            headers.iter().collect::<Vec<_>>().join(",")
        )));
    }
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize::<ReviewRow>().enumerate() {
        let row = row.map_err(|e| bad(format!("row {}: {e}", i + 2)))?;
        if row.id.is_empty() || row.class.is_empty() {
            return Err(bad(format!(
                "row {}: `id` and `class` must not be empty",
                i + 2
            )));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Submits every review in the `id,class` file; all rows are checked before any is sent.
/// Returns how many were stored.
pub async fn review_csv(server: &Target, job_id: &str, path: &Path) -> Result<usize, ClientError> {
    let rows = read_reviews(path)?;
    let mut client = connect_jobs(server).await?;
    for (i, row) in rows.iter().enumerate() {
        client
            .submit_review(pb::SubmitReviewRequest {
                job_id: job_id.to_string(),
                item_id: row.id.clone(),
                class: Some(pb::submit_review_request::Class::ClassName(
                    row.class.clone(),
                )),
            })
            .await
            .map_err(|status| {
                ClientError::Usage(format!(
                    "{} row {} (`{}` → `{}`): the server answered {}: {}; the {i} rows before it are stored",
                    path.display(),
                    i + 2,
                    row.id,
                    row.class,
                    pb::code_name(status.code()),
                    status.message()
                ))
            })?;
    }
    Ok(rows.len())
}

/// What `aelabel jobs export` wrote.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ExportSummary {
    /// Rows written.
    pub rows: usize,
    /// Rows labelled by a person.
    pub human: usize,
    /// Rows auto-accepted.
    pub auto: usize,
    /// Rows still waiting for a person or a model.
    pub pending: usize,
}

/// Writes every item's final label to `out` (`.csv` or `.jsonl`), in the order added.
pub async fn export(
    server: &Target,
    job_id: &str,
    out: &Path,
    quiet: bool,
) -> Result<ExportSummary, ClientError> {
    let jsonl = match output::extension(out).as_str() {
        "csv" => false,
        "jsonl" | "ndjson" => true,
        other => {
            return Err(ClientError::Usage(format!(
                "--out {} has extension `{other}`; use .csv or .jsonl",
                out.display()
            )))
        }
    };
    let mut client = connect_jobs(server).await?;
    let request = || pb::ExportLabelsRequest {
        job_id: job_id.to_string(),
    };
    let total = client
        .get_job(pb::GetJobRequest {
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner()
        .counts
        .map_or(0, |c| c.total);
    let mut stream = client.export_labels(request()).await?.into_inner();
    let file = create(out)?;
    let write_err =
        |e: csv::Error| ClientError::Usage(format!("cannot write {}: {e}", out.display()));
    let (mut csv_out, mut json_out) = if jsonl {
        (None, Some(file))
    } else {
        (Some(csv::Writer::from_writer(file)), None)
    };
    if let Some(w) = csv_out.as_mut() {
        w.write_record(["id", "class", "source", "confidence", "model_version"])
            .map_err(write_err)?;
    }
    let bar = progress(quiet, usize::try_from(total).unwrap_or(usize::MAX));
    let mut summary = ExportSummary::default();
    while let Some(row) = stream.message().await? {
        match row.source.as_str() {
            "human" => summary.human += 1,
            "auto" => summary.auto += 1,
            _ => summary.pending += 1,
        }
        summary.rows += 1;
        let confidence = format!("{:.6}", row.confidence);
        if let Some(w) = csv_out.as_mut() {
            w.write_record([
                &row.id,
                &row.class_name,
                &row.source,
                &confidence,
                &row.model_version,
            ])
            .map_err(write_err)?;
        } else if let Some(w) = json_out.as_mut() {
            let line = serde_json::json!({
                "id": row.id,
                "class": row.class_name,
                "source": row.source,
                "confidence": row.confidence,
                "model_version": row.model_version,
            });
            writeln!(w, "{line}").map_err(|source| ClientError::Output {
                path: out.to_path_buf(),
                source,
            })?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(mut w) = csv_out {
        w.flush().map_err(|source| ClientError::Output {
            path: out.to_path_buf(),
            source,
        })?;
    }
    if let Some(mut w) = json_out {
        w.flush().map_err(|source| ClientError::Output {
            path: out.to_path_buf(),
            source,
        })?;
    }
    Ok(summary)
}
