//! The one place where `aelabel.v1.LabelJobs` wire types become domain types and back, and
//! where store errors become gRPC statuses naming the field at fault.

use crate::jobs::select::Pick;
use crate::jobs::training::{LoopState, TrainingRun, TrainingState};
use crate::jobs::{ItemCursor, ItemStatus, Job, JobCounts, JobItem, NewJob, ReviewClass};
use crate::model::ModelMeta;
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

/// A `CreateJob` request as a job, or the refusal naming the field at fault. With
/// `class_names` the job brings its own classes (the serving model never labels it) and its
/// own input size (default: the serving model's, else 28×28); without, it takes the serving
/// model's (`serving`), which must exist then. Sides may not exceed `max_side`.
pub fn new_job(
    request: pb::CreateJobRequest,
    serving: Option<&ModelMeta>,
    max_side: u32,
) -> Result<NewJob, Status> {
    if request.name.trim().is_empty() {
        return Err(Status::invalid_argument(
            "name: required; give the job a name people recognise",
        ));
    }
    let threshold = auto_accept_threshold(request.auto_accept_threshold)?;
    let target = target_accuracy(request.target_accuracy, threshold)?;
    let class_names = class_names(request.class_names)?;
    let size = input_size(request.input_width, request.input_height, max_side)?;
    if class_names.is_empty() {
        let meta = serving.ok_or_else(|| {
            Status::failed_precondition(
                "no model is active, so the job needs its own classes: pass class_names (`aelabel jobs create --classes a,b,c`)",
            )
        })?;
        return model_job(request.name, threshold, target, size, meta);
    }
    // A target stays stored: the job's own models judge it later.
    let (input_width, input_height) = size.unwrap_or_else(|| match serving {
        Some(meta) => (meta.input_width as u32, meta.input_height as u32),
        None => {
            let (w, h) = crate::data::DEFAULT_INPUT_SIZE;
            (w as u32, h as u32)
        }
    });
    Ok(NewJob {
        name: request.name,
        auto_accept_threshold: threshold,
        target_accuracy: target,
        input_width,
        input_height,
        class_names,
        own_classes: true,
    })
}

/// A job labelled by the serving model (`meta`): its classes and input size (a size asked
/// for must be the model's), and a target accuracy only if the model can turn it into a
/// threshold.
fn model_job(
    name: String,
    threshold: Option<f32>,
    target: Option<f32>,
    size: Option<(u32, u32)>,
    meta: &ModelMeta,
) -> Result<NewJob, Status> {
    let model_size = (meta.input_width as u32, meta.input_height as u32);
    if let Some((w, h)) = size.filter(|s| *s != model_size) {
        return Err(Status::invalid_argument(format!(
            "input_width: {w}×{h} differs from the serving model's input size {}×{}, and a job without its own classes is labelled by that model; leave the size unset, or pass class_names",
            model_size.0, model_size.1
        )));
    }
    if let Some(t) = target {
        if crate::jobs::threshold_for_target(meta, t).is_none() {
            return Err(Status::failed_precondition(format!(
                "target_accuracy: the serving model {} was saved without out-of-fold calibration evidence, so it cannot turn a target into a threshold; retrain it with this version or give auto_accept_threshold instead",
                meta.version
            )));
        }
    }
    Ok(NewJob {
        name,
        auto_accept_threshold: threshold,
        target_accuracy: target,
        input_width: model_size.0,
        input_height: model_size.1,
        class_names: meta.class_names.clone(),
        own_classes: false,
    })
}

/// Most classes a job may bring.
pub const MAX_CLASSES: usize = 1000;

/// A job's own class names, in class-index order: none (the job takes the serving model's), or
/// at least two distinct one-line names.
pub fn class_names(names: Vec<String>) -> Result<Vec<String>, Status> {
    match names.len() {
        0 => return Ok(names),
        1 => {
            return Err(Status::invalid_argument(
                "class_names: 1 class given; a job needs at least 2 (or none, to take the serving model's)",
            ))
        }
        n if n > MAX_CLASSES => {
            return Err(Status::invalid_argument(format!(
                "class_names: {n} classes; a job may have at most {MAX_CLASSES}"
            )))
        }
        _ => {}
    }
    let mut seen = std::collections::HashMap::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let refuse = |rule: String| Status::invalid_argument(format!("class_names[{i}]: {rule}"));
        if name.trim().is_empty() {
            return Err(refuse("empty; every class needs a name".into()));
        }
        if name.trim() != name {
            return Err(refuse(format!(
                "`{name}` begins or ends with white space; remove it"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(refuse(format!(
                "{name:?} holds a control character; a class name is one line of text"
            )));
        }
        if let Some(first) = seen.insert(name.as_str(), i) {
            return Err(refuse(format!(
                "`{name}` repeats class_names[{first}]; name each class once"
            )));
        }
    }
    Ok(names)
}

/// A job's input size: `None` for 0 × 0 (the default), else both sides from 1 to `max_side`.
pub fn input_size(width: u32, height: u32, max_side: u32) -> Result<Option<(u32, u32)>, Status> {
    match (width, height) {
        (0, 0) => Ok(None),
        (0, other) | (other, 0) => {
            let (zero, set) = if width == 0 {
                ("input_width", "input_height")
            } else {
                ("input_height", "input_width")
            };
            Err(Status::invalid_argument(format!(
                "{zero}: 0 while {set} is {other}; give both sides, or neither for the default"
            )))
        }
        (w, h) => {
            for (field, side) in [("input_width", w), ("input_height", h)] {
                if side > max_side {
                    return Err(Status::invalid_argument(format!(
                        "{field}: {side} is more than the server's largest image side, {max_side} (--max-image-side)"
                    )));
                }
            }
            Ok(Some((w, h)))
        }
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
        item: None,
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
