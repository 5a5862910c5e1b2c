//! The served model behind one swappable handle, so a new version can replace the old while
//! calls run: each call takes the engine current when it starts and finishes on it; the old
//! engine's threads stop once its last call has let go of it. A server on a registry with no
//! active model yet starts with an empty handle; the first activation fills it.

use super::Engine;
use std::sync::{Arc, RwLock};

/// The engine currently answering calls, if a model has been loaded.
pub struct EngineHandle {
    current: RwLock<Option<Arc<Engine>>>,
}

impl EngineHandle {
    /// A handle serving `engine`.
    pub fn new(engine: Engine) -> Self {
        Self {
            current: RwLock::new(Some(Arc::new(engine))),
        }
    }

    /// A handle with no model yet: [`EngineHandle::current`] answers `None` until the first
    /// [`EngineHandle::swap`].
    pub fn empty() -> Self {
        Self {
            current: RwLock::new(None),
        }
    }

    /// The engine to run one call on (rules, maths and the version it reports all come from
    /// this one snapshot), or `None` while no model has been loaded.
    pub fn current(&self) -> Option<Arc<Engine>> {
        // A panic while holding the lock cannot leave the Arc half-written: ignore poisoning.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Serves `engine` from now on and hands back the one it replaces, if any.
    pub fn swap(&self, engine: Engine) -> Option<Arc<Engine>> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.replace(Arc::new(engine))
    }
}
