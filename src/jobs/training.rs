//! Training runs of a label job in domain terms: their states, and what a finished round
//! reports. Runs are queued by whoever asks (CLI, Label Studio, a review trigger) and executed
//! by a worker, never on a request path.

use serde::{Deserialize, Serialize};

/// Where a training run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrainingState {
    /// Waiting for a worker.
    Queued,
    /// A worker holds it (its claim expires if the worker dies; another then takes it over).
    Running,
    /// Done: the job has the new model.
    Finished,
    /// Stopped with an error; the job kept its model.
    Failed,
}

impl TrainingState {
    /// Every state.
    pub const ALL: [TrainingState; 4] = [
        TrainingState::Queued,
        TrainingState::Running,
        TrainingState::Finished,
        TrainingState::Failed,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TrainingState::Queued => "queued",
            TrainingState::Running => "running",
            TrainingState::Finished => "finished",
            TrainingState::Failed => "failed",
        }
    }

    /// The state named `name` (as stored), if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the run is over.
    pub fn is_over(self) -> bool {
        matches!(self, TrainingState::Finished | TrainingState::Failed)
    }
}

/// A training run as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingRun {
    /// Its id.
    pub id: String,
    /// The job it trains for.
    pub job_id: String,
    /// Where it stands.
    pub state: TrainingState,
    /// 0 to 1.
    pub progress: f32,
    /// The stage running now.
    pub stage: String,
    /// Why it failed.
    pub error: Option<String>,
    /// What a finished round reports.
    pub result: Option<RoundReport>,
    /// Make the new model the registry's active one.
    pub activate: bool,
    /// When it was queued (Unix ms).
    pub created_ms: i64,
    /// How long it ran, once over (seconds).
    pub seconds: f64,
}

/// What one finished round reports: the rounds of a job's loop are these, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// The job's new model (`None` when the run only pretrained the autoencoder).
    pub model_version: Option<String>,
    /// Everything people had labelled when the round trained (evidence included).
    pub human_labels: u64,
    /// Of those, the random slice that judged the threshold (never trains).
    pub evidence_labels: u64,
    /// Items in the job.
    pub total: u64,
    /// The new model's auto-accept threshold.
    pub threshold: Option<f32>,
    /// Share of the job's unreviewed items at or above it.
    pub auto_accepted_share: f64,
    /// Accuracy of the accepted evidence items (the estimate of the auto-accepted items').
    pub estimated_accepted_accuracy: Option<f64>,
    /// Its one-sided Wilson lower bound (z = 1).
    pub accepted_accuracy_bound: Option<f64>,
    /// The model's accuracy over all evidence: the estimate for every unreviewed item.
    pub estimated_model_accuracy: Option<f64>,
    /// People's labels plus the model's estimated accuracy on the rest, over the job.
    pub estimated_pool_accuracy: Option<f64>,
    /// Whether this round pretrained the job's autoencoder.
    pub pretrained: bool,
    /// Whether the new model was made the registry's active one.
    pub activated: bool,
    /// Wall seconds of each stage.
    pub stage_seconds: Vec<(String, f64)>,
    /// Wall seconds of the whole run (training, saving, relabelling).
    pub seconds: f64,
}

impl RoundReport {
    /// People's labels count as right; every other item as right with the evidence's
    /// estimate of the model's accuracy.
    pub fn pool_estimate(human: u64, total: u64, model_accuracy: Option<f64>) -> Option<f64> {
        let rest = total.saturating_sub(human) as f64;
        model_accuracy.map(|a| (human as f64 + a * rest) / (total.max(1) as f64))
    }
}

/// Where a job's loop stands: what `GetJob` adds to the counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoopState {
    /// The job's own current model.
    pub model_version: Option<String>,
    /// Whether the job has an autoencoder pretrained on its images.
    pub pretrained: bool,
    /// Reviewed items of the random slice that judges the threshold.
    pub evidence_labels: u64,
    /// A queued or running training run.
    pub open_run: Option<TrainingRun>,
    /// The newest finished round's report.
    pub last_round: Option<RoundReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in TrainingState::ALL {
            assert_eq!(TrainingState::parse(s.as_str()), Some(s));
        }
        assert_eq!(TrainingState::parse("done"), None);
        assert!(TrainingState::Failed.is_over() && !TrainingState::Running.is_over());
    }

    #[test]
    fn the_pool_estimate_counts_people_as_right() {
        // 1,000 of 10,000 by people, the model 90 % right on the other 9,000: 91 %.
        let e = RoundReport::pool_estimate(1_000, 10_000, Some(0.9)).unwrap();
        assert!((e - 0.91).abs() < 1e-12);
        assert_eq!(RoundReport::pool_estimate(1, 2, None), None);
    }
}
