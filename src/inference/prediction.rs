//! The labelling decision for one image: its class, how sure the model is, and whether a person
//! should look at it. Computed here once; the gRPC and CLI layers only copy it onto the wire.

use super::{EngineError, Output, Pending};
use crate::model::{top_class, ModelMeta};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The model's answer for one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Index of the most probable class (the first one on ties).
    pub class_index: usize,
    /// That class's name from the model; empty when the model names fewer classes.
    pub class_name: String,
    /// The probability of that class, the largest of [`Prediction::probabilities`].
    pub confidence: f32,
    /// Softmax probability of every class, in class order.
    pub probabilities: Vec<f32>,
    /// True when `confidence` is below the review threshold; a prediction exactly at the
    /// threshold is accepted.
    pub needs_review: bool,
}

impl Prediction {
    /// The prediction for one image's class `probabilities`, naming classes by `class_names`.
    pub fn new(probabilities: Vec<f32>, class_names: &[String], review_threshold: f32) -> Self {
        let (class_index, confidence) = top_class(&probabilities);
        Self {
            class_index,
            class_name: class_names.get(class_index).cloned().unwrap_or_default(),
            confidence,
            probabilities,
            needs_review: confidence < review_threshold,
        }
    }

    /// One prediction per row of a [`Task::Label`](super::Task::Label) output, in image order.
    pub fn from_output(
        output: &Output,
        class_names: &[String],
        review_threshold: f32,
    ) -> Vec<Self> {
        (0..output.len())
            .map(|i| Self::new(output.row(i).to_vec(), class_names, review_threshold))
            .collect()
    }
}

/// Predictions still being computed, from [`Engine::label`](super::Engine::label). Await it;
/// drop it to cancel.
pub struct PendingLabels {
    output: Pending,
    meta: Arc<ModelMeta>,
    review_threshold: f32,
}

impl PendingLabels {
    pub(super) fn new(output: Pending, meta: Arc<ModelMeta>, review_threshold: f32) -> Self {
        Self {
            output,
            meta,
            review_threshold,
        }
    }
}

impl Future for PendingLabels {
    type Output = Result<Vec<Prediction>, EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        Pin::new(&mut this.output).poll(cx).map(|result| {
            result.map(|output| {
                Prediction::from_output(&output, &this.meta.class_names, this.review_threshold)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Prediction;

    fn names() -> Vec<String> {
        vec!["cat".into(), "dog".into()]
    }

    #[test]
    fn a_prediction_exactly_at_the_threshold_does_not_need_review() {
        let at = Prediction::new(vec![0.25, 0.75], &names(), 0.75);
        assert_eq!((at.class_index, at.class_name.as_str()), (1, "dog"));
        assert_eq!(at.confidence, 0.75);
        assert!(!at.needs_review);

        let below = Prediction::new(vec![0.25, 0.75], &names(), 0.750_001);
        assert!(below.needs_review);
    }

    #[test]
    fn a_class_the_model_does_not_name_gets_an_empty_name() {
        let p = Prediction::new(vec![0.1, 0.2, 0.7], &names(), 0.5);
        assert_eq!((p.class_index, p.class_name.as_str()), (2, ""));
        assert!(!p.needs_review);
    }
}
