//! The one place where `aelabel.v1.LabelJobs` wire types become domain types and back, and
//! where store errors become gRPC statuses naming the field at fault.

use crate::jobs::select::Pick;
use crate::jobs::training::{LoopState, TrainingRun, TrainingState};
use crate::jobs::{ItemCursor, ItemStatus, Job, JobCounts, JobItem, ReviewClass};
use crate::pipeline::job_training::{JobLoopError, NextItem};
use crate::store::StoreError;
use crate::wire as pb;
use tonic::Status;

/// Items per `ListItems` page when the request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most items per `ListItems` page.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The status for a store error; `field` names the request field an unknown class came from.
pub fn store_status(e: StoreError, class_field: &str) -> Status {
    match e {
        StoreError::UnknownJob(_) => Status::not_found(format!("job_id: {e}")),
        StoreError::UnknownItem { .. } => Status::not_found(format!("item_id: {e}")),
        StoreError::UnknownRun(_) => Status::not_found(format!("run_id: {e}")),
        StoreError::UnknownClass { .. } => {
            Status::invalid_argument(format!("{class_field}: {e}"))
        }
        StoreError::Query(sqlx::Error::Database(db)) => {
            Status::internal(format!("label jobs: the database refused a statement: {db}"))
        }
        StoreError::Query(_) | StoreError::Connect { .. } => Status::unavailable(format!(
            "label jobs are unavailable: the job database cannot be reached ({e}); the Labeller service still answers, retry later"
        )),
        other => Status::internal(format!("label jobs: {other}")),
    }
}

/// A required id field, or `INVALID_ARGUMENT` naming it.
pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!(
            "{field}: required; pass the id CreateJob or AddImages returned"
        )))
    } else {
        Ok(value)
    }
}

/// A job's threshold override: a probability, or none.
pub fn auto_accept_threshold(value: Option<f32>) -> Result<Option<f32>, Status> {
    match value {
        Some(t) if !(0.0..=1.0).contains(&t) => Err(Status::invalid_argument(format!(
            "auto_accept_threshold: {t} is not a probability; use a value in [0, 1] or leave it unset for the model's own"
        ))),
        other => Ok(other),
    }
}

/// A job's target accuracy: a probability above 0, or none; never together with a threshold.
pub fn target_accuracy(value: Option<f32>, threshold: Option<f32>) -> Result<Option<f32>, Status> {
    match (value, threshold) {
        (Some(_), Some(_)) => Err(Status::invalid_argument(
            "target_accuracy: set either it or auto_accept_threshold, not both",
        )),
        (Some(t), None) if !(t > 0.0 && t <= 1.0) => Err(Status::invalid_argument(format!(
            "target_accuracy: {t} is not an accuracy; use a value in (0, 1], e.g. 0.95"
        ))),
        (value, _) => Ok(value),
    }
}

/// The status a `ListItems` request asks for.
pub fn item_status(value: i32) -> Result<ItemStatus, Status> {
    match pb::ItemStatus::try_from(value) {
        Ok(pb::ItemStatus::Pending) => Ok(ItemStatus::Pending),
        Ok(pb::ItemStatus::AutoAccepted) => Ok(ItemStatus::AutoAccepted),
        Ok(pb::ItemStatus::NeedsReview) => Ok(ItemStatus::NeedsReview),
        Ok(pb::ItemStatus::Reviewed) => Ok(ItemStatus::Reviewed),
        _ => Err(Status::invalid_argument(format!(
            "status: {value} is not an item status; use PENDING, AUTO_ACCEPTED, NEEDS_REVIEW or REVIEWED"
        ))),
    }
}

/// A `ListItems` page size: 0 means the default; more than the maximum is refused.
pub fn page_size(value: u32) -> Result<usize, Status> {
    match usize::try_from(value) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) if n <= MAX_PAGE_SIZE => Ok(n),
        _ => Err(Status::invalid_argument(format!(
            "page_size: {value} is more than {MAX_PAGE_SIZE}; ask for fewer items per page"
        ))),
    }
}

/// A `ListItems` cursor: empty for the first page.
pub fn cursor(value: &str) -> Result<Option<ItemCursor>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    ItemCursor::decode(value).map(Some).ok_or_else(|| {
        Status::invalid_argument(
            "cursor: not a cursor this server issued; pass a previous response's next_cursor, or empty for the first page",
        )
    })
}

/// The class a review names, and the request field it came from.
pub fn review_class(
    class: Option<pb::submit_review_request::Class>,
) -> Result<(ReviewClass, &'static str), Status> {
    use pb::submit_review_request::Class;
    match class {
        Some(Class::ClassName(name)) => Ok((ReviewClass::Name(name), "class_name")),
        Some(Class::ClassIndex(i)) => Ok((ReviewClass::Index(i), "class_index")),
        None => Err(Status::invalid_argument(
            "class: required; set class_name or class_index",
        )),
    }
}

fn wire_status(status: ItemStatus) -> pb::ItemStatus {
    match status {
        ItemStatus::Pending | ItemStatus::Waiting => pb::ItemStatus::Pending,
        ItemStatus::AutoAccepted => pb::ItemStatus::AutoAccepted,
        ItemStatus::NeedsReview => pb::ItemStatus::NeedsReview,
        ItemStatus::Reviewed => pb::ItemStatus::Reviewed,
    }
}

fn counts(c: JobCounts) -> pb::JobCounts {
    pb::JobCounts {
        total: c.total,
        pending: c.pending,
        auto_accepted: c.auto_accepted,
        needs_review: c.needs_review,
        reviewed: c.reviewed,
    }
}

/// A job on the wire.
pub fn job(job: Job) -> pb::Job {
    pb::Job {
        id: job.id,
        name: job.spec.name,
        counts: Some(counts(job.counts)),
        model_versions: job.model_versions,
        auto_accept_threshold: job.spec.auto_accept_threshold,
        target_accuracy: job.spec.target_accuracy,
        created_at: job.created_at,
        input_width: job.spec.input_width,
        input_height: job.spec.input_height,
        class_names: job.spec.class_names,
        ..Default::default()
    }
}

fn class_name(class: Option<u32>, class_names: &[String]) -> String {
    class
        .and_then(|c| class_names.get(usize::try_from(c).ok()?))
        .cloned()
        .unwrap_or_default()
}

/// An item on the wire, its classes named by the job's class names.
pub fn item(item: JobItem, class_names: &[String]) -> pb::Item {
    pb::Item {
        predicted_name: class_name(item.predicted_class, class_names),
        human_name: class_name(item.human_class, class_names),
        id: item.client_id,
        status: wire_status(item.status) as i32,
        predicted_class: item.predicted_class,
        confidence: item.confidence,
        probabilities: item.probabilities,
        model_version: item.model_version,
        human_class: item.human_class,
        image: None,
    }
}

/// An item's final label on the wire.
pub fn exported(item: JobItem, class_names: &[String]) -> pb::ExportedLabel {
    let label = item.final_label();
    pb::ExportedLabel {
        class_name: class_name(label.class, class_names),
        source: label.source.as_str().to_string(),
        id: item.client_id,
        confidence: item.confidence,
        model_version: item.model_version,
    }
}

/// A job with where its loop stands, on the wire.
pub fn job_with_loop(job: Job, state: LoopState) -> pb::Job {
    let human = job.counts.reviewed;
    let mut wire = self::job(job);
    wire.human_labels = human;
    wire.model_version = state.model_version.unwrap_or_default();
    wire.pretrained = state.pretrained;
    wire.evidence_labels = state.evidence_labels;
    wire.running_training = state.open_run.map(training_run);
    if let Some(round) = state.last_round {
        wire.model_threshold = round.threshold;
        wire.estimated_accepted_accuracy = round.estimated_accepted_accuracy;
        wire.accepted_accuracy_bound = round.accepted_accuracy_bound;
    }
    wire
}

/// A training run on the wire.
pub fn training_run(run: TrainingRun) -> pb::TrainingRun {
    let state = match run.state {
        TrainingState::Queued => pb::TrainingState::Queued,
        TrainingState::Running => pb::TrainingState::Running,
        TrainingState::Finished => pb::TrainingState::Finished,
        TrainingState::Failed => pb::TrainingState::Failed,
    };
    let created = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(run.created_ms).unwrap_or(0));
    pb::TrainingRun {
        id: run.id,
        job_id: run.job_id,
        state: state as i32,
        progress: run.progress,
        stage: run.stage,
        error: run.error.unwrap_or_default(),
        result_json: run
            .result
            .and_then(|r| serde_json::to_string(&r).ok())
            .unwrap_or_default(),
        created_at: humantime::format_rfc3339_millis(created).to_string(),
        seconds: run.seconds,
    }
}

/// The pick strategy a `NextItems` request asks for.
pub fn pick(value: i32) -> Result<Pick, Status> {
    match pb::Pick::try_from(value) {
        Ok(pb::Pick::Loop) => Ok(Pick::Loop),
        Ok(pb::Pick::Uncertain) => Ok(Pick::Uncertain),
        Ok(pb::Pick::Diverse) => Ok(Pick::Diverse),
        Ok(pb::Pick::Random) => Ok(Pick::Random),
        Err(_) => Err(Status::invalid_argument(format!(
            "pick: {value} is not a pick strategy (0 loop, 1 uncertain, 2 diverse, 3 random)"
        ))),
    }
}

/// A picked item on the wire, its class named by the job's class names.
pub fn next_item(item: NextItem, class_names: &[String]) -> pb::NextItem {
    pb::NextItem {
        id: item.client_id,
        reason: item.reason.as_str().to_string(),
        predicted_class: item.predicted.map(|(c, _)| c),
        predicted_name: class_name(item.predicted.map(|(c, _)| c), class_names),
        confidence: item.predicted.map_or(0.0, |(_, p)| p),
    }
}

/// The status for a loop error: what the job lacks is `FAILED_PRECONDITION`, naming the job
/// and what to do.
pub fn loop_status(e: JobLoopError) -> Status {
    match e {
        JobLoopError::Store(e) => store_status(e, "class"),
        JobLoopError::NothingToPick(_)
        | JobLoopError::NotPretrained(_)
        | JobLoopError::Round { .. } => Status::failed_precondition(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}
