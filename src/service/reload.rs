//! Following the registry: when another version is activated, load it in the background,
//! check its checksum, warm it up and swap it in; meanwhile keep health true to the engine.
//! A server that started with no active model loads the first activation the same way, and
//! its Labeller turns `SERVING` then.
//!
//! The server polls the registry's newest activation (one indexed row) instead of listening
//! for Postgres notifications: the same code then serves SQLite and Postgres, needs no
//! long-lived connection (so it rides out database restarts and connection poolers), and the
//! interval (`--registry-poll-ms`, 1 s by default) bounds how late a switch can be.

use super::metrics::Metrics;
use super::{set_status, ServeConfig, ServeError};
use crate::inference::{Engine, EngineHandle};
use crate::model::Model;
use crate::store::{ModelRecord, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Loads a registered model's artifact off the reactor and checks it is the file that was
/// registered: same SHA-256, same version inside.
pub(crate) async fn load_record(record: &ModelRecord) -> Result<Model, ServeError> {
    let path = record.path.clone();
    let (model, sha256) = tokio::task::spawn_blocking(move || Model::load_with_sha256(&path))
        .await
        .map_err(|e| ServeError::Config(format!("model loading stopped: {e}")))??;
    let refuse = |reason: String| ServeError::Artifact {
        version: record.version.clone(),
        path: record.path.clone(),
        reason,
    };
    if sha256 != record.sha256 {
        return Err(refuse(format!(
            "its SHA-256 is {sha256} but the registry recorded {}: the file changed after it was registered (register it again, or activate another version)",
            record.sha256
        )));
    }
    if model.meta.version != record.version {
        return Err(refuse(format!(
            "the file holds model version `{}`",
            model.meta.version
        )));
    }
    Ok(model)
}

/// What the follower needs from the server.
pub(crate) struct Follower {
    /// The engine to swap.
    pub handle: Arc<EngineHandle>,
    /// The registry, when serving its active version.
    pub store: Option<Store>,
    /// Settings for new engines and the checks a model must pass.
    pub config: ServeConfig,
    /// How often to look at the registry and the engine.
    pub poll: Duration,
    /// Model info and reload counters.
    pub metrics: Arc<Metrics>,
    /// Health to keep true.
    pub reporter: HealthReporter,
    /// Turns true when shutdown begins.
    pub stopping: watch::Receiver<bool>,
}

/// What the follower remembers between polls.
#[derive(Default)]
struct Seen {
    database_down: bool,
    engine_down: bool,
    /// The last refused (version, sha256, path): not retried until one of them changes.
    refused: Option<(String, String, PathBuf)>,
}

impl Follower {
    /// Polls until shutdown begins.
    pub(crate) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = Seen::default();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.stopping.changed() => {}
            }
            if *self.stopping.borrow() {
                return;
            }
            self.check_engine(&mut seen).await;
            if self.store.is_some() {
                self.check_registry(&mut seen).await;
            }
        }
    }

    /// Health follows the engine's worker: `NOT_SERVING` once it has died, `SERVING` again
    /// when a healthy engine has been swapped in.
    async fn check_engine(&self, seen: &mut Seen) {
        // No model yet: nothing to watch.
        let Some(engine) = self.handle.current() else {
            return;
        };
        let running = engine.is_running();
        // Nothing changed: running and not known down, or stopped and known down.
        if running != seen.engine_down {
            return;
        }
        seen.engine_down = !running;
        if running {
            tracing::info!("a working inference engine is in place again: serving");
            set_status(&self.reporter, ServingStatus::Serving).await;
        } else {
            tracing::error!("the inference engine's worker has stopped: reporting NOT_SERVING");
            set_status(&self.reporter, ServingStatus::NotServing).await;
        }
    }

    async fn check_registry(&self, seen: &mut Seen) {
        let Some(store) = &self.store else { return };
        let current = self.handle.current().map(|e| e.meta().version.clone());
        let serving = current.as_deref().unwrap_or("no model");
        let active = match store.active_version().await {
            Ok(active) => active,
            Err(e) => {
                if !seen.database_down {
                    tracing::warn!(database = store.url(), error = %e,
                        "the registry is unreachable: still serving {serving}, retrying");
                    seen.database_down = true;
                }
                return;
            }
        };
        if std::mem::take(&mut seen.database_down) {
            tracing::info!(database = store.url(), "the registry is reachable again");
        }
        let Some(version) = active.filter(|v| Some(v) != current.as_ref()) else {
            return;
        };
        let record = match store.model(&version).await {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(version, error = %e, "cannot read the activated model's record");
                return;
            }
        };
        let key = (
            record.version.clone(),
            record.sha256.clone(),
            record.path.clone(),
        );
        if seen.refused.as_ref() == Some(&key) {
            return;
        }
        tracing::info!(from = serving, to = version, "loading the activated model");
        match self.swap_in(&record).await {
            Ok(()) => {
                seen.refused = None;
                self.metrics.reload_done(true);
                self.metrics.set_model(&version);
                tracing::info!(from = serving, to = version, "now serving");
                // The first model: the Labeller (and the whole server with it) serves from now
                // on. Later swaps replace a serving engine, whose health check_engine keeps.
                if current.is_none() && !*self.stopping.borrow() {
                    set_status(&self.reporter, ServingStatus::Serving).await;
                }
            }
            Err(e) => {
                seen.refused = Some(key);
                self.metrics.reload_done(false);
                tracing::warn!(version, reason = %e,
                    "refused the activated model: still serving {serving}");
            }
        }
    }

    /// Loads, checks, starts and warms up `record`'s model, then swaps it in. Calls already
    /// running finish on the engine they started with.
    async fn swap_in(&self, record: &ModelRecord) -> Result<(), ServeError> {
        let model = load_record(record).await?;
        self.config
            .validate(Some(model.meta.input_width * model.meta.input_height))?;
        let engine_config = self.config.engine.clone();
        let observer = self.metrics.clone();
        let engine = tokio::task::spawn_blocking(move || {
            let engine = Engine::start(model, &engine_config, observer)?;
            engine.warm_up()?;
            Ok::<_, ServeError>(engine)
        })
        .await
        .map_err(|e| ServeError::Config(format!("model warm-up stopped: {e}")))??;
        self.handle.swap(engine);
        Ok(())
    }
}
