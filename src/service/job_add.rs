//! `AddImages`: each message is read, decoded and labelled by the model that labels the job
//! while the message before it is stored, so decoding, inference and the database overlap.
//! Items the model labelled on arrival are stored labelled and never claimed; the worker
//! only labels what could not be labelled then (no model yet, the model switched, a failed
//! inference). Each message is stored in its own transaction, in order: when a message is
//! refused (or the stream breaks), every message before it is in the job and none after it.

use super::convert::ImageRules;
use super::job_convert as wire;
use super::job_labelling::Answers;
use super::jobs::LabelJobsService;
use crate::jobs::{Added, NewImage};
use crate::store::ArrivalLabels;
use crate::wire as pb;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

/// Messages decoded and labelled ahead of the one being stored: bounds the memory a fast
/// client can make the server hold.
const AHEAD: usize = 2;

/// One message, ready to store.
struct Prepared {
    /// Its position in the stream, from 1.
    number: usize,
    job_id: String,
    images: Vec<NewImage>,
    answers: Option<Answers>,
}

/// What the reading side has learnt of the stream so far.
#[derive(Default)]
struct StreamJob {
    job_id: String,
    rules: Option<ImageRules>,
}

impl LabelJobsService {
    /// Adds a stream of messages to one job (see the module's documentation).
    pub(super) async fn add(
        &self,
        request: Request<Streaming<pb::AddImagesRequest>>,
    ) -> Result<Response<pb::AddImagesResponse>, Status> {
        let mut stream = request.into_inner();
        let (tx, mut rx) = mpsc::channel::<Result<Prepared, Status>>(AHEAD);
        let read = async move {
            let mut job = StreamJob::default();
            let mut number = 0;
            loop {
                let message = match stream.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                number += 1;
                let prepared = self.prepare(&mut job, number, message).await;
                let failed = prepared.is_err();
                if tx.send(prepared).await.is_err() || failed {
                    return;
                }
            }
        };
        let store = async {
            let mut total = Added::default();
            let mut job_id = String::new();
            let mut stored = 0;
            while let Some(prepared) = rx.recv().await {
                let prepared = prepared.map_err(|status| kept(status, stored, total))?;
                let labels = prepared.answers.as_ref().map(|a| ArrivalLabels {
                    model_version: &a.version,
                    job_model: a.job_model,
                    predictions: &a.predictions,
                    labelled_by: self.arrival_labeller().unwrap_or_default(),
                });
                let added = self
                    .store()
                    .add_labelled(&prepared.job_id, &prepared.images, labels.as_ref())
                    .await
                    .map_err(|e| {
                        let status = wire::store_status(e, "class");
                        kept(in_message(status, prepared.number), stored, total)
                    })?;
                total.added += added.added;
                total.duplicates += added.duplicates;
                if added.added > 0 && prepared.answers.is_none() {
                    self.wake_worker();
                }
                stored = prepared.number;
                job_id = prepared.job_id;
            }
            Ok::<_, Status>((job_id, total))
        };
        tokio::pin!(read, store);
        // A refused message ends the storing side first: stop reading then, even if the
        // client has not sent its next message yet.
        let (job_id, total) = tokio::select! {
            stored = &mut store => stored,
            () = &mut read => store.await,
        }?;
        wire::required("job_id", &job_id)?;
        Ok(Response::new(pb::AddImagesResponse {
            added: total.added,
            duplicates: total.duplicates,
        }))
    }

    /// Checks, decodes and labels message `number` of the stream.
    async fn prepare(
        &self,
        job: &mut StreamJob,
        number: usize,
        message: pb::AddImagesRequest,
    ) -> Result<Prepared, Status> {
        let rules = match job.rules {
            Some(rules) => {
                if !message.job_id.is_empty() && message.job_id != job.job_id {
                    return Err(in_message(
                        Status::invalid_argument(format!(
                            "job_id: `{}` differs from the stream's first message (`{}`); use one stream per job",
                            message.job_id, job.job_id
                        )),
                        number,
                    ));
                }
                rules
            }
            None => {
                let job_id =
                    wire::required("job_id", &message.job_id).map_err(|s| in_message(s, number))?;
                let spec = self
                    .store()
                    .job_spec(job_id)
                    .await
                    .map_err(|e| in_message(wire::store_status(e, "class"), number))?;
                job.job_id = job_id.to_string();
                *job.rules
                    .insert(self.rules_for(spec.input_width, spec.input_height))
            }
        };
        let images = if message.images.is_empty() {
            Vec::new()
        } else {
            self.parse(message.images, rules)
                .await
                .map_err(|s| in_message(s, number))?
        };
        let answers = self.label_on_arrival(&job.job_id, &images).await;
        Ok(Prepared {
            number,
            job_id: job.job_id.clone(),
            images,
            answers,
        })
    }

    /// The answers of the model that labels the job now, if any; a failure (the engine's
    /// queue full, the model file gone) leaves the images to the worker.
    async fn label_on_arrival(&self, job_id: &str, images: &[NewImage]) -> Option<Answers> {
        if images.is_empty() || self.arrival_labeller().is_none() {
            return None;
        }
        let settings = match self.store().label_settings(job_id).await {
            Ok(settings) => settings,
            Err(e) => {
                tracing::warn!(job = %job_id, error = %e, "label jobs: cannot read the job's settings; its images are left to the worker");
                return None;
            }
        };
        let pixels = images
            .iter()
            .flat_map(|i| i.pixels.iter().copied())
            .collect();
        let engine = self.engine().current();
        match self
            .models()
            .label(engine.as_deref(), &settings, pixels)
            .await
        {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(job = %job_id, error = %e, "label jobs: labelling on arrival failed; the worker labels the images");
                None
            }
        }
    }
}

/// `status` with the message it is about named first.
fn in_message(status: Status, number: usize) -> Status {
    Status::new(
        status.code(),
        format!("AddImages message {number}: {}", status.message()),
    )
}

/// `status` followed by what the job kept: every image of the messages before the refused
/// one, so that the client resends from there.
fn kept(status: Status, stored: usize, total: Added) -> Status {
    let kept = match stored {
        0 => "the job kept nothing of this stream".to_string(),
        1 => format!(
            "the job kept message 1 ({} added, {} duplicates); send again from message 2",
            total.added, total.duplicates
        ),
        n => format!(
            "the job kept messages 1–{n} ({} added, {} duplicates); send again from message {}",
            total.added,
            total.duplicates,
            n + 1
        ),
    };
    Status::new(status.code(), format!("{}; {kept}", status.message()))
}
