//! `--max-in-flight`: the slots every inference call takes before any work, shared by the
//! `Labeller` and the Open Inference Protocol doors so that one budget bounds them all.

use super::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The server's in-flight slots; clones share them.
#[derive(Clone)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    metrics: Arc<Metrics>,
}

/// How a call waits for an in-flight slot.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    /// Unary calls: fail at once with RESOURCE_EXHAUSTED.
    FailFast,
    /// Stream messages: wait for a slot.
    Queue,
}

impl Admission {
    /// `max_in_flight` slots, counted in `metrics`.
    pub(crate) fn new(max_in_flight: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            metrics,
        }
    }

    /// Takes a slot, or refuses the call (`RESOURCE_EXHAUSTED`) when `wait` is fail-fast and
    /// none is free.
    pub(crate) async fn admit(&self, wait: Wait) -> Result<Slot, Status> {
        let permit = match wait {
            Wait::FailFast => self.slots.clone().try_acquire_owned().map_err(|_| {
                Status::resource_exhausted(format!(
                    "the server is busy: {} requests are in flight; retry with back-off",
                    self.max_in_flight
                ))
            })?,
            Wait::Queue => self
                .slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Status::unavailable("the server is shutting down"))?,
        };
        self.metrics.slot_taken();
        Ok(Slot {
            _permit: permit,
            metrics: self.metrics.clone(),
        })
    }
}

/// An in-flight slot; taking and releasing it moves the gauge by one, atomically, so slots
/// taken and released at the same moment cannot leave it at a stale count.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.slot_released();
    }
}
