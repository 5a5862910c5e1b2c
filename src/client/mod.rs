//! The client commands: `aelabel label`, `aelabel encode` and the `aelabel bench --server`
//! load generator. They talk to any server that speaks `aelabel.v1.Labeller`.

pub mod bench;
mod connect;
pub mod inputs;
pub mod job_loop;
pub mod jobs;
pub mod output;
mod review;

use crate::wire::{self as pb, code_name};
use indicatif::{ProgressBar, ProgressStyle};
use inputs::{InputError, Inputs, Item};
use pb::labeller_client::LabellerClient;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

pub use connect::{channel, BearerKey, Connection, Target};

/// Largest message the client sends or accepts, in bytes.
pub const CLIENT_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is malformed or unreachable.
    #[error("cannot connect to {url}: {reason} (is `aelabel serve` running there?)")]
    Connect {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused a call. Not a `source`: the status's own text would repeat the
    /// message in the printed chain; its causes are said here instead.
    #[error("the server answered {}: {}", code_name(.0.code()), server_said(.0))]
    Status(tonic::Status),
    /// The inputs could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The output file could not be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
}

/// A refusal's message, followed by its causes (a transport error's), each said once.
fn server_said(status: &tonic::Status) -> String {
    let message = status.message().to_string();
    match std::error::Error::source(status) {
        Some(cause) => {
            crate::telemetry::join_causes([message, crate::telemetry::describe_error(cause)])
        }
        None => message,
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

/// A `Labeller` client on one new connection to `target`.
pub async fn connect(target: &Target) -> Result<LabellerClient<Connection>, ClientError> {
    Ok(LabellerClient::new(channel(target).await?)
        .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(CLIENT_MAX_MESSAGE_BYTES))
}

/// Where the rows of `aelabel label` go and in what format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LabelFormat {
    Csv,
    JsonLines,
}

/// `aelabel label`: what to send where.
#[derive(Clone, Debug)]
pub struct LabelJob {
    /// The server and how to reach it.
    pub server: Target,
    /// IDX files, folders, image files.
    pub inputs: Vec<PathBuf>,
    /// `.csv` or `.jsonl` file for the rows.
    pub out: PathBuf,
    /// Images per stream message.
    pub batch: usize,
    /// Overrides the model's review threshold.
    pub review_threshold: Option<f32>,
    /// No progress bar.
    pub quiet: bool,
}

/// What `aelabel label` did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LabelSummary {
    /// Images labelled.
    pub images: usize,
    /// Of those, below the review threshold.
    pub needs_review: usize,
    /// Accuracy against the IDX labels, when the inputs had them.
    pub accuracy: Option<f64>,
    /// Wall time.
    pub seconds: f64,
}

pub(crate) fn create(path: &Path) -> Result<BufWriter<std::fs::File>, ClientError> {
    std::fs::File::create(path)
        .map(BufWriter::new)
        .map_err(|source| ClientError::Output {
            path: path.to_path_buf(),
            source,
        })
}

pub(crate) fn progress(quiet: bool, total: usize) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images  {per_sec}  {elapsed} < ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Reads the items' files on a plain thread into messages of `batch` images each (`message`
/// builds one), at most a few messages ahead of the stream that sends them; `sent` is told
/// each message's image count. Join the thread for the first input error.
pub(crate) fn read_batches<M: Send + 'static>(
    items: Vec<Item>,
    batch: usize,
    message: impl Fn(Vec<pb::Image>) -> M + Send + 'static,
    sent: impl Fn(usize) + Send + 'static,
) -> (
    ReceiverStream<M>,
    std::thread::JoinHandle<Result<(), InputError>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<M>(4);
    let reader = std::thread::spawn(move || {
        for chunk in items.chunks(batch) {
            let images = chunk
                .iter()
                .map(Item::to_wire)
                .collect::<Result<Vec<_>, _>>()?;
            if tx.blocking_send(message(images)).is_err() {
                break;
            }
            sent(chunk.len());
        }
        Ok(())
    });
    (ReceiverStream::new(rx), reader)
}

/// Streams every input image through `LabelStream` and writes one row per image.
pub async fn label(job: LabelJob) -> Result<LabelSummary, ClientError> {
    let format = match output::extension(&job.out).as_str() {
        "csv" => LabelFormat::Csv,
        "jsonl" | "ndjson" => LabelFormat::JsonLines,
        other => {
            return Err(ClientError::Usage(format!(
                "--out {} has extension `{other}`; use .csv or .jsonl",
                job.out.display()
            )))
        }
    };
    if job.batch == 0 {
        return Err(ClientError::Usage("--batch must be at least 1".into()));
    }
    let started = Instant::now();
    let Inputs { items, labels } = Inputs::collect(&job.inputs)?;
    let total = items.len();
    let mut client = connect(&job.server).await?;
    let mut out = create(&job.out)?;
    let write_err = |source| ClientError::Output {
        path: job.out.clone(),
        source,
    };
    if format == LabelFormat::Csv {
        writeln!(out, "id,class_index,class,confidence,needs_review").map_err(write_err)?;
    }

    let threshold = job.review_threshold;
    let (requests, reader) = read_batches(
        items,
        job.batch,
        move |images| pb::LabelRequest {
            images,
            review_threshold: threshold,
        },
        |_| {},
    );
    let bar = progress(job.quiet, total);
    let mut responses = client.label_stream(requests).await?.into_inner();
    let (mut done, mut needs_review, mut correct) = (0usize, 0usize, 0usize);
    let outcome: Result<(), ClientError> = async {
        while let Some(response) = responses.message().await? {
            for p in &response.predictions {
                match format {
                    LabelFormat::Csv => writeln!(
                        out,
                        "{},{},{},{:.6},{}",
                        output::csv_field(&p.id),
                        p.class_index,
                        output::csv_field(&p.class_name),
                        p.confidence,
                        p.needs_review
                    ),
                    LabelFormat::JsonLines => writeln!(
                        out,
                        "{}",
                        serde_json::json!({
                            "id": p.id,
                            "class_index": p.class_index,
                            "class": p.class_name,
                            "confidence": p.confidence,
                            "needs_review": p.needs_review,
                        })
                    ),
                }
                .map_err(write_err)?;
                needs_review += usize::from(p.needs_review);
                if let Some(labels) = &labels {
                    correct += usize::from(labels.get(done) == Some(&(p.class_index as u8)));
                }
                done += 1;
            }
            bar.set_position(done as u64);
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    drop(responses);
    match reader.join() {
        Ok(result) => result?,
        Err(_) => return Err(ClientError::Usage("the input reader crashed".into())),
    }
    outcome?;
    out.flush().map_err(write_err)?;
    if done != total {
        return Err(ClientError::Usage(format!(
            "the server answered {done} of {total} images; the stream ended early"
        )));
    }
    Ok(LabelSummary {
        images: done,
        needs_review,
        accuracy: labels.map(|_| correct as f64 / done.max(1) as f64),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `aelabel encode`: what to send where.
#[derive(Clone, Debug)]
pub struct EncodeJob {
    /// The server and how to reach it.
    pub server: Target,
    /// IDX files, folders, image files.
    pub inputs: Vec<PathBuf>,
    /// `.csv` or `.npy` file for the embeddings.
    pub out: PathBuf,
    /// Images per request.
    pub batch: usize,
    /// No progress bar.
    pub quiet: bool,
}

/// Sends every input image to `Encode` and writes the embeddings in input order.
/// Returns `(images, embedding size)`.
pub async fn encode(job: EncodeJob) -> Result<(usize, usize), ClientError> {
    let ext = output::extension(&job.out);
    if ext != "csv" && ext != "npy" {
        return Err(ClientError::Usage(format!(
            "--out {} has extension `{ext}`; use .csv or .npy",
            job.out.display()
        )));
    }
    if job.batch == 0 {
        return Err(ClientError::Usage("--batch must be at least 1".into()));
    }
    let Inputs { items, .. } = Inputs::collect(&job.inputs)?;
    let mut client = connect(&job.server).await?;
    let bar = progress(job.quiet, items.len());
    let (mut ids, mut values, mut width) = (Vec::new(), Vec::new(), 0usize);
    for chunk in items.chunks(job.batch) {
        let images = chunk
            .iter()
            .map(Item::to_wire)
            .collect::<Result<Vec<_>, _>>()?;
        let response = client
            .encode(pb::EncodeRequest { images })
            .await?
            .into_inner();
        width = response.embedding_size as usize;
        for e in response.embeddings {
            values.extend_from_slice(&e.values);
            ids.push(e.id);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let mut out = create(&job.out)?;
    let write_err = |source| ClientError::Output {
        path: job.out.clone(),
        source,
    };
    if ext == "npy" {
        output::write_npy(&mut out, &values, ids.len(), width).map_err(write_err)?;
    } else {
        let header: Vec<String> = (0..width).map(|i| format!("e{i}")).collect();
        writeln!(out, "id,{}", header.join(",")).map_err(write_err)?;
        for (id, row) in ids.iter().zip(values.chunks_exact(width.max(1))) {
            let row: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            writeln!(out, "{},{}", output::csv_field(id), row.join(",")).map_err(write_err)?;
        }
    }
    out.flush().map_err(write_err)?;
    Ok((ids.len(), width))
}
