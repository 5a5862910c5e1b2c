//! Label jobs in domain terms: what an item's status is, how a prediction or a review decides
//! it, and what an export row says. The store persists these types and the gRPC layer maps
//! them; neither decides anything about them.

pub mod select;
pub mod training;

use crate::inference::Prediction;
use crate::model::ModelMeta;
use crate::train::metrics::{choose_threshold_at, ACCEPT_NOTHING, BOUND_Z};

/// Where an item of a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ItemStatus {
    /// Not labelled by a model yet.
    Pending,
    /// Not labelled, and no model can label it yet: the job has classes of its own and
    /// waits for its first training run (shown as pending; workers do not claim it).
    Waiting,
    /// Labelled with confidence at or above the job's threshold.
    AutoAccepted,
    /// Labelled below the threshold: waiting for a person.
    NeedsReview,
    /// A person has labelled it.
    Reviewed,
}

impl ItemStatus {
    /// Every status, in the order a job moves through them.
    pub const ALL: [ItemStatus; 5] = [
        ItemStatus::Pending,
        ItemStatus::Waiting,
        ItemStatus::AutoAccepted,
        ItemStatus::NeedsReview,
        ItemStatus::Reviewed,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Waiting => "waiting",
            ItemStatus::AutoAccepted => "auto_accepted",
            ItemStatus::NeedsReview => "needs_review",
            ItemStatus::Reviewed => "reviewed",
        }
    }

    /// The status named `name` (as stored), if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The status a model's prediction gives a pending item.
    pub fn of_prediction(prediction: &Prediction) -> Self {
        if prediction.needs_review {
            ItemStatus::NeedsReview
        } else {
            ItemStatus::AutoAccepted
        }
    }
}

/// How many items of a job are in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Every item.
    pub total: u64,
    /// Not labelled yet.
    pub pending: u64,
    /// Labelled at or above the threshold.
    pub auto_accepted: u64,
    /// Labelled below the threshold, not reviewed.
    pub needs_review: u64,
    /// Labelled by a person.
    pub reviewed: u64,
}

impl JobCounts {
    /// Adds `n` items of `status`.
    pub fn add(&mut self, status: ItemStatus, n: u64) {
        self.total += n;
        match status {
            ItemStatus::Pending | ItemStatus::Waiting => self.pending += n,
            ItemStatus::AutoAccepted => self.auto_accepted += n,
            ItemStatus::NeedsReview => self.needs_review += n,
            ItemStatus::Reviewed => self.reviewed += n,
        }
    }
}

/// What a new job is given.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// A name for people.
    pub name: String,
    /// Auto-accept threshold; `None` uses each labelling model's own.
    pub auto_accept_threshold: Option<f32>,
    /// Accuracy the auto-accepted labels should reach, instead of a fixed threshold.
    pub target_accuracy: Option<f32>,
    /// Input width of the model active at creation: the size images are stored at.
    pub input_width: u32,
    /// Input height, likewise.
    pub input_height: u32,
    /// That model's class names, in class-index order: the classes reviews may use.
    pub class_names: Vec<String>,
    /// The job brought its own classes: no serving model labels it; it waits for its own
    /// first training run. Otherwise the serving model labels it until it has its own.
    pub own_classes: bool,
}

/// The threshold `meta`'s model reaches `target` accuracy at, chosen from its out-of-fold
/// evidence the way training chose its own; `None` when the model was saved without evidence.
pub fn threshold_for_target(meta: &ModelMeta, target: f32) -> Option<f32> {
    let oof = meta
        .calibration
        .as_ref()
        .filter(|o| !o.confidence.is_empty())?;
    // A model judged with a stricter bound than the pipeline's (a label job's, on its random
    // evidence slice) records it; the threshold for another target uses the same bound.
    let z = meta.training["bound_z"].as_f64().unwrap_or(BOUND_Z);
    Some(choose_threshold_at(
        &oof.confidence,
        &oof.correct,
        f64::from(target),
        z,
    ))
}

/// The threshold a job's predictions by `meta`'s model are accepted at: the job's own
/// threshold, else its target accuracy turned into this model's threshold, else the model's
/// threshold (also when the model cannot turn a target into one).
pub fn accept_threshold(threshold: Option<f32>, target: Option<f32>, meta: &ModelMeta) -> f32 {
    threshold
        .or_else(|| target.and_then(|t| threshold_for_target(meta, t)))
        .unwrap_or(meta.auto_accept_threshold)
}

/// Whether `threshold` accepts nothing at all (no threshold reached the target).
pub fn accepts_nothing(threshold: f32) -> bool {
    threshold >= ACCEPT_NOTHING
}

/// A job as stored, with its counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// Its id.
    pub id: String,
    /// Its name, settings and classes.
    pub spec: NewJob,
    /// When it was created, RFC 3339 (UTC).
    pub created_at: String,
    /// Items per status.
    pub counts: JobCounts,
    /// Versions of the models that labelled its items, sorted.
    pub model_versions: Vec<String>,
}

/// One image to add to a job: the client's id and its pixels at the job's input size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewImage {
    /// The client's id, unique within the job.
    pub client_id: String,
    /// 8-bit grayscale pixels at the job's input size, row-major.
    pub pixels: Vec<u8>,
}

impl NewImage {
    /// The image `client_id` with its pixels.
    pub fn new(client_id: String, pixels: Vec<u8>) -> Self {
        Self { client_id, pixels }
    }
}

/// What adding a batch of images did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// New items.
    pub added: u64,
    /// Images whose client id the job already held (not added again).
    pub duplicates: u64,
}

/// One item of a job, as a reviewer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct JobItem {
    /// The client's id.
    pub client_id: String,
    /// Where it stands.
    pub status: ItemStatus,
    /// The model's class, once labelled.
    pub predicted_class: Option<u32>,
    /// The model's confidence in it (0 while pending).
    pub confidence: f32,
    /// Every class's probability (empty while pending).
    pub probabilities: Vec<f32>,
    /// The labelling model's version (empty while pending).
    pub model_version: String,
    /// The person's class, once reviewed.
    pub human_class: Option<u32>,
}

impl JobItem {
    /// The label an export gives it: a person's always wins over the model's.
    pub fn final_label(&self) -> FinalLabel {
        match (self.human_class, self.status) {
            (Some(class), _) => FinalLabel {
                class: Some(class),
                source: LabelSource::Human,
            },
            (None, ItemStatus::AutoAccepted) => FinalLabel {
                class: self.predicted_class,
                source: LabelSource::Auto,
            },
            (None, ItemStatus::NeedsReview | ItemStatus::Reviewed) => FinalLabel {
                class: self.predicted_class,
                source: LabelSource::PendingReview,
            },
            (None, ItemStatus::Pending | ItemStatus::Waiting) => FinalLabel {
                class: None,
                source: LabelSource::Pending,
            },
        }
    }
}

/// Who decided an exported label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelSource {
    /// A person.
    Human,
    /// The model, at or above the threshold.
    Auto,
    /// The model, below the threshold; no person has looked yet.
    PendingReview,
    /// Nobody yet.
    Pending,
}

impl LabelSource {
    /// The name exports use.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelSource::Human => "human",
            LabelSource::Auto => "auto",
            LabelSource::PendingReview => "pending_review",
            LabelSource::Pending => "pending",
        }
    }
}

/// An item's final class and who decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinalLabel {
    /// The class index (none while pending).
    pub class: Option<u32>,
    /// Who decided it.
    pub source: LabelSource,
}

/// The class a reviewer chose, as they named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReviewClass {
    /// By class name.
    Name(String),
    /// By class index.
    Index(u32),
}

impl ReviewClass {
    /// The class index among `class_names`, or `None` when it is not one of them.
    pub fn resolve(&self, class_names: &[String]) -> Option<u32> {
        match self {
            ReviewClass::Name(name) => class_names
                .iter()
                .position(|c| c == name)
                .and_then(|i| u32::try_from(i).ok()),
            ReviewClass::Index(i) => {
                (usize::try_from(*i).is_ok_and(|i| i < class_names.len())).then_some(*i)
            }
        }
    }
}

/// Where a page of [`JobItem`]s ends: the next page starts after this item in the review order
/// (confidence ascending, then the order items were added).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ItemCursor {
    /// The last item's confidence (0 for pending items).
    pub confidence: f64,
    /// The last item's position in the job.
    pub seq: i64,
}

impl ItemCursor {
    /// The opaque text clients pass back.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.confidence, self.seq)
    }

    /// The cursor `text` encodes, if it is one.
    pub fn decode(text: &str) -> Option<Self> {
        let (confidence, seq) = text.split_once(':')?;
        let confidence: f64 = confidence.parse().ok()?;
        confidence.is_finite().then_some(())?;
        Some(Self {
            confidence,
            seq: seq.parse().ok()?,
        })
    }
}

/// A pending item a worker has claimed: its pixels and the job's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedItem {
    /// The job.
    pub job_id: String,
    /// The item's position in the job.
    pub seq: i64,
    /// The job's threshold, if it set one.
    pub auto_accept_threshold: Option<f32>,
    /// The job's target accuracy, if it set one.
    pub target_accuracy: Option<f32>,
    /// The job's input size (width × height pixels).
    pub image_size: usize,
    /// The job's own model, which labels it instead of the serving model once it has one.
    pub job_model: Option<String>,
    /// The first item of the run of items whose pixels are stored with its own.
    pub batch_seq: i64,
    /// The image.
    pub pixels: Vec<u8>,
}

/// A model's answer for one claimed item, to record.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledItem {
    /// The job.
    pub job_id: String,
    /// The item's position in the job.
    pub seq: i64,
    /// The prediction (its `needs_review` decides the status).
    pub prediction: Prediction,
    /// The model that made it.
    pub model_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_classes_resolve_by_name_or_index_within_the_classes() {
        let names = vec!["cat".to_string(), "dog".to_string()];
        assert_eq!(ReviewClass::Name("dog".into()).resolve(&names), Some(1));
        assert_eq!(ReviewClass::Name("cow".into()).resolve(&names), None);
        assert_eq!(ReviewClass::Index(0).resolve(&names), Some(0));
        assert_eq!(ReviewClass::Index(2).resolve(&names), None);
    }

    #[test]
    fn a_target_becomes_a_threshold_under_the_bound_the_model_was_judged_with() {
        // 98 of 100 evidence items right at one confidence: the Wilson bound clears 95 % at
        // z = 1 (0.9605) but not at a label job's z = 1.645 (0.9384).
        let meta = |training| ModelMeta {
            version: "v".into(),
            widths: vec![4, 2],
            decoder: crate::model::Decoder::Separate,
            input_width: 2,
            input_height: 2,
            class_names: vec!["a".into(), "b".into()],
            auto_accept_threshold: 0.5,
            training,
            calibration: Some(crate::model::OutOfFold {
                confidence: vec![0.9; 100],
                correct: (0..100).map(|i| i >= 2).collect(),
            }),
        };
        let pipeline = meta(serde_json::json!({}));
        assert_eq!(threshold_for_target(&pipeline, 0.95), Some(0.9));
        let job = meta(serde_json::json!({"bound_z": 1.645}));
        assert_eq!(threshold_for_target(&job, 0.95), Some(ACCEPT_NOTHING));
        assert_eq!(accept_threshold(None, Some(0.95), &job), ACCEPT_NOTHING);
        assert_eq!(accept_threshold(Some(0.7), Some(0.95), &job), 0.7);
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = ItemCursor {
            confidence: 0.123_456_789_012_345_67,
            seq: 42,
        };
        assert_eq!(ItemCursor::decode(&c.encode()), Some(c));
        assert_eq!(ItemCursor::decode("x:1"), None);
        assert_eq!(ItemCursor::decode("NaN:1"), None);
        assert_eq!(ItemCursor::decode("0.5"), None);
    }

    #[test]
    fn a_human_label_wins_on_export() {
        let item = JobItem {
            client_id: "a".into(),
            status: ItemStatus::Reviewed,
            predicted_class: Some(1),
            confidence: 0.4,
            probabilities: vec![0.6, 0.4],
            model_version: "v".into(),
            human_class: Some(0),
        };
        assert_eq!(
            item.final_label(),
            FinalLabel {
                class: Some(0),
                source: LabelSource::Human
            }
        );
    }
}

/// What decides which model labels a job's images and where it accepts: read per AddImages
/// message and per claimed run of items.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSettings {
    /// The job's own model, which labels it once it has one.
    pub job_model: Option<String>,
    /// The job brought its own classes: without a model of its own its items wait.
    pub own_classes: bool,
    /// The job's threshold, if it set one.
    pub auto_accept_threshold: Option<f32>,
    /// The job's target accuracy, if it set one.
    pub target_accuracy: Option<f32>,
    /// The job's input size (width × height pixels).
    pub image_size: usize,
}

impl ClaimedItem {
    /// The labelling settings the item was claimed with (claimed items never wait).
    pub fn settings(&self) -> LabelSettings {
        LabelSettings {
            job_model: self.job_model.clone(),
            own_classes: false,
            auto_accept_threshold: self.auto_accept_threshold,
            target_accuracy: self.target_accuracy,
            image_size: self.image_size,
        }
    }
}
