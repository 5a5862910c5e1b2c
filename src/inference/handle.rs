//! The served model behind one swappable handle, so a new version can replace the old while
//! calls run: each call takes the engine current when it starts and finishes on it; the old
//! engine's threads stop once its last call has let go of it.

use super::Engine;
use std::sync::{Arc, RwLock};

/// The engine currently answering calls.
pub struct EngineHandle {
    current: RwLock<Arc<Engine>>,
}

impl EngineHandle {
    /// A handle serving `engine`.
    pub fn new(engine: Engine) -> Self {
        Self {
            current: RwLock::new(Arc::new(engine)),
        }
    }

    /// The engine to run one call on: rules, maths and the version it reports all come from
    /// this one snapshot.
    pub fn current(&self) -> Arc<Engine> {
        // A panic while holding the lock cannot leave the Arc half-written: ignore poisoning.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Serves `engine` from now on and hands back the one it replaces.
    pub fn swap(&self, engine: Engine) -> Arc<Engine> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *current, Arc::new(engine))
    }
}
