//! Progress for people: a bar with ETA per training phase and a Keras-style line per epoch.

use crate::model::Loss;
use crate::train::{metric_name, EpochLog, Observer};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;

/// Draws indicatif bars, or (quiet) only logs epoch lines through `tracing`.
pub struct Progress {
    quiet: bool,
    bar: Mutex<(Option<ProgressBar>, usize)>,
}

impl Progress {
    /// Bars on stderr unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bar: Mutex::new((None, 0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<ProgressBar>, usize)> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The line Keras prints after an epoch.
pub fn epoch_line(phase: &str, epochs: usize, log: &EpochLog) -> String {
    let metric = if phase.contains("pretrain") || phase == "bench" {
        metric_name(Loss::BinaryCrossEntropy)
    } else {
        metric_name(Loss::SoftmaxCrossEntropy)
    };
    let mut s = format!(
        "{phase} epoch {}/{epochs} - loss: {:.4} - {metric}: {:.4}",
        log.epoch, log.loss, log.metric
    );
    if let (Some(vl), Some(vm)) = (log.valid_loss, log.valid_metric) {
        s.push_str(&format!(" - val_loss: {vl:.4} - val_{metric}: {vm:.4}"));
    }
    s.push_str(&format!(" - {:.2}s", log.seconds));
    s
}

impl Observer for Progress {
    fn phase_started(&self, phase: &str, epochs: usize, steps_per_epoch: usize) {
        if self.quiet {
            tracing::info!(phase, epochs, steps_per_epoch, "phase started");
            *self.lock() = (None, epochs);
            return;
        }
        let bar = ProgressBar::new((epochs * steps_per_epoch) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>18} [{bar:30}] {pos}/{len} steps  {elapsed} < ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_string());
        *self.lock() = (Some(bar), epochs);
    }

    fn step_done(&self) {
        if let Some(bar) = &self.lock().0 {
            bar.inc(1);
        }
    }

    fn epoch_done(&self, phase: &str, log: &EpochLog) {
        let guard = self.lock();
        let line = epoch_line(phase, guard.1, log);
        match &guard.0 {
            Some(bar) => bar.println(line),
            None => tracing::info!("{line}"),
        }
    }

    fn phase_done(&self, phase: &str) {
        if let Some(bar) = self.lock().0.take() {
            bar.finish_and_clear();
        }
        tracing::debug!(phase, "phase done");
    }

    fn note(&self, message: &str) {
        match &self.lock().0 {
            Some(bar) => bar.println(message),
            None if !self.quiet => eprintln!("{message}"),
            None => tracing::info!("{message}"),
        }
    }
}
