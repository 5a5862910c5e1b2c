//! `aelabel serve`: the gRPC server around an [`Engine`](crate::inference::Engine).
//!
//! [`Application::build`] loads the model, starts the engine and binds the ports;
//! [`Application::start`] begins serving with the `Labeller` health status `NOT_SERVING`;
//! [`Running::warm_up`] runs the model once and flips it to `SERVING`; the shutdown future
//! flips it back to `NOT_SERVING`, stops accepting, and lets in-flight calls finish within
//! the grace period. Serving from the registry, the server also answers `LabelJobs` and runs a
//! worker that labels the jobs' pending items (health name `aelabel.v1.LabelJobs`, `SERVING`
//! while the database answers). A registry with no active model yet is a normal start: jobs
//! are accepted, calls that need a model answer `UNAVAILABLE` ([`NO_MODEL`]), and the first
//! activation is loaded like any later one.

mod admission;
pub mod auth;
pub mod codec;
mod codes;
pub mod convert;
pub mod http;
mod job_add;
pub mod job_convert;
mod job_labelling;
mod job_loop;
mod job_worker;
mod jobs;
pub mod label_studio;
mod labeller;
pub mod metrics;
pub mod oip;
mod reload;
pub mod security;
pub mod tls;
pub mod training_worker;

pub use job_worker::JobWorkerConfig;
pub use jobs::LabelJobsService;
pub use label_studio::LabelStudioConfig;
pub use labeller::{LabelDoor, LabellerService};
pub use security::{Security, DEFAULT_HEALTH_PORT};
pub use tls::{TlsConfig, TlsError};

use crate::data::ImageLimits;
use crate::inference::{Engine, EngineConfig, EngineError, EngineHandle};
use crate::model::{CheckpointError, Model};
use crate::store::{Store, StoreError};
use crate::wire::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use crate::wire::label_jobs_server::LabelJobsServer;
use crate::wire::labeller_server::LabellerServer;
use convert::ImageRules;
use metrics::Metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The gRPC port `aelabel serve` listens on unless `--addr` says otherwise; the port the
/// Kubernetes probes in `deploy/k8s/` ask.
pub const DEFAULT_GRPC_PORT: u16 = 50051;

/// The HTTP port (`/metrics` and the other HTTP routes) unless `--http-addr` says otherwise.
pub const DEFAULT_HTTP_PORT: u16 = 9090;

/// The `grpc.health.v1` name of the whole server: what a probe that names no service asks.
/// `SERVING` once start-up is done (the model, if one is active, warmed up), `NOT_SERVING`
/// while a loaded model's engine has died and from shutdown on. It follows the Labeller
/// except that "no model is active yet" is a healthy state: such a server accepts label jobs.
pub const SERVER_HEALTH_NAME: &str = "";

/// What calls that need a model answer (`UNAVAILABLE`, HTTP 503) while the registry has no
/// active model.
pub const NO_MODEL: &str = "no model is active yet: train one with `aelabel pipeline` (the first registered model becomes active) or a label job's `aelabel jobs train JOB --activate`, or activate a registered one with `aelabel models activate VERSION`";

/// The `grpc.health.v1` name of the Labeller: `SERVING` while a warmed-up model answers and
/// the engine is alive (what readiness asks).
pub const LABELLER_HEALTH_NAME: &str =
    <LabellerServer<LabellerService> as tonic::server::NamedService>::NAME;

/// The `grpc.health.v1` name of `LabelJobs`: `SERVING` while the job database answers.
pub const LABEL_JOBS_HEALTH_NAME: &str =
    <LabelJobsServer<LabelJobsService> as tonic::server::NamedService>::NAME;

/// How often a server serving a file checks its engine is alive.
const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// Largest HTTP/2 frame the server accepts (h2's default is 16 KiB). A 16 MB request then
/// arrives in 16 frames instead of 1,024, which cuts the reactor's work per large request:
/// measured on 2 cores under 8 concurrent 4096×4000 raw images, health p99 fell from 12–16 ms
/// to 3–7 ms and large calls answered rose by about half. Flow-control windows stay at their
/// defaults: a 16 MiB connection window raised p99 again (more bytes per reactor wakeup), and
/// the stream window is what bounds a `LabelStream` client that stops reading.
const MAX_FRAME_BYTES: u32 = 1 << 20;

/// Protobuf bytes of one raw image beyond its pixels (tags, lengths, width, height, an id).
const IMAGE_OVERHEAD_BYTES: usize = 64;

/// Where the served model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// One `model.safetensors`, served until the process ends; the registry is not read.
    File(PathBuf),
    /// The registry's active version, followed as other versions are activated.
    Registry {
        /// `sqlite://…` or `postgres://…`.
        database_url: String,
        /// How often to look for a new activation.
        poll: Duration,
    },
}

/// Everything `aelabel serve` needs, validated by [`ServeConfig::validate`].
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The model to serve.
    pub model: ModelSource,
    /// gRPC listen address.
    pub addr: SocketAddr,
    /// HTTP listen address (`/metrics` and the other HTTP routes); `None` turns the port off.
    pub http_addr: Option<SocketAddr>,
    /// Engine threads, batching and queue delay.
    pub engine: EngineConfig,
    /// Requests admitted at once; more get `RESOURCE_EXHAUSTED` (unary) or wait (streams).
    pub max_in_flight: usize,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Largest image side accepted (raw, or declared in a PNG/JPEG header).
    pub max_image_side: u32,
    /// Bytes all in-flight image decodes together may hold; calls beyond it get
    /// `RESOURCE_EXHAUSTED` naming the budget.
    pub max_decode_bytes: u64,
    /// How long in-flight calls may run on after shutdown starts.
    pub shutdown_grace: Duration,
    /// How the label-job worker claims work (used when serving from the registry).
    pub jobs: JobWorkerConfig,
    /// The Label Studio ML backend on the HTTP port, when set (needs the registry).
    pub label_studio: Option<LabelStudioConfig>,
    /// Execute label jobs' training runs in this server (registry only); `None`: leave them
    /// to `aelabel worker`.
    pub training: Option<training_worker::TrainingWorkerConfig>,
    /// Queue a label job's training run by itself once this many reviews came in since its
    /// last round (`--retrain-every`).
    pub retrain_every: Option<u64>,
    /// TLS, API keys and the plaintext health-only port.
    pub security: Security,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The model file could not be read.
    #[error(transparent)]
    Model(#[from] CheckpointError),
    /// The registry could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A registered model's file is not the one that was registered.
    #[error("refusing model `{version}` at {path}: {reason}")]
    Artifact {
        /// The registered version.
        version: String,
        /// Its artifact path.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The settings contradict each other.
    #[error("{0}")]
    Config(String),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source} (is another server running there? pick another with --addr / --http-addr)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up from the descriptors.
    #[error("cannot set up server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Metrics could not be registered.
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The TLS certificate, key or client CA could not be loaded.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] TlsError),
}

impl ServeConfig {
    /// Checks the settings against each other and, when a model is loaded, against its input
    /// size (`image_bytes`, pixels per image).
    pub fn validate(&self, image_bytes: Option<usize>) -> Result<(), ServeError> {
        let engine = &self.engine;
        if engine.max_batch == 0 || engine.threads == 0 || self.max_in_flight == 0 {
            return Err(ServeError::Config(
                "--max-batch, --threads and --max-in-flight must be at least 1".into(),
            ));
        }
        if self.label_studio.is_some() {
            if matches!(self.model, ModelSource::File(_)) {
                return Err(ServeError::Config(
                    "--label-studio-url needs the model registry (annotations become label-job reviews and START_TRAINING registers new models); drop --model and serve the registry's active model".into(),
                ));
            }
            if self.http_addr.is_none() {
                return Err(ServeError::Config(
                    "--label-studio-url serves on the HTTP port; drop --no-http".into(),
                ));
            }
        }
        let Some(image_bytes) = image_bytes else {
            return Ok(());
        };
        // A full batch of reconstructions with float values is the largest answer.
        let need = engine.max_batch * (image_bytes * 5 + IMAGE_OVERHEAD_BYTES);
        if self.max_message_bytes < need {
            return Err(ServeError::Config(format!(
                "--max-message-bytes {} cannot carry --max-batch {} images of {image_bytes} pixels (needs {need}); raise it or lower --max-batch",
                self.max_message_bytes, engine.max_batch
            )));
        }
        Ok(())
    }
}

/// A loaded, bound server that has not started answering yet.
pub struct Application {
    config: ServeConfig,
    engine: Arc<EngineHandle>,
    store: Option<Store>,
    metrics: Arc<Metrics>,
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    http_listener: Option<TcpListener>,
    http_addr: Option<SocketAddr>,
    health_listener: Option<TcpListener>,
    tls: Option<tls::ServerTls>,
}

impl Application {
    /// Loads the model (the file, or the registry's active version: none yet is fine),
    /// starts the engine and binds both ports.
    pub async fn build(config: ServeConfig) -> Result<Self, ServeError> {
        let (model, store) = match &config.model {
            ModelSource::File(path) => {
                let path = path.clone();
                let model = tokio::task::spawn_blocking(move || Model::load(&path))
                    .await
                    .map_err(|e| ServeError::Config(format!("model loading stopped: {e}")))??;
                (Some(model), None)
            }
            ModelSource::Registry { database_url, .. } => {
                let store = Store::connect(database_url).await?;
                let model = match store.active_model().await {
                    Ok(record) => Some(reload::load_record(&record).await?),
                    Err(StoreError::Empty) => {
                        tracing::info!("no model is active yet: serving label jobs; the Labeller answers once a model is activated");
                        None
                    }
                    Err(e) => return Err(e.into()),
                };
                (model, Some(store))
            }
        };
        config.validate(
            model
                .as_ref()
                .map(|m| m.meta.input_width * m.meta.input_height),
        )?;
        let metrics = Arc::new(Metrics::new(
            model.as_ref().map(|m| m.meta.version.as_str()),
        )?);
        let engine = Arc::new(match model {
            Some(model) => {
                EngineHandle::new(Engine::start(model, &config.engine, metrics.clone())?)
            }
            None => EngineHandle::empty(),
        });
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let grpc = bind(config.addr).await?;
        let grpc_addr = grpc.local_addr().map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
        let (http_listener, http_addr) = match config.http_addr {
            Some(addr) => {
                let listener = bind(addr).await?;
                let local = listener
                    .local_addr()
                    .map_err(|source| ServeError::Bind { addr, source })?;
                (Some(listener), Some(local))
            }
            None => (None, None),
        };
        let health_listener = match config.security.health_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let tls = match &config.security.tls {
            Some(settings) => Some(tls::ServerTls::new(settings)?),
            None => None,
        };
        Ok(Self {
            config,
            engine,
            store,
            metrics,
            grpc,
            grpc_addr,
            http_listener,
            http_addr,
            health_listener,
            tls,
        })
    }

    /// The bound gRPC address (the real port when 0 was asked for).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address, if the port is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound plaintext health-only address, if `--health-addr` asked for one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Serves, warms up, and runs until `shutdown` resolves and in-flight calls are done.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let running = self.start(shutdown).await?;
        running.warm_up().await?;
        running.stopped().await
    }

    /// Starts answering with `Labeller` reported `NOT_SERVING`; call [`Running::warm_up`]
    /// to make it `SERVING`.
    pub async fn start(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Running, ServeError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        set_status(&reporter, ServingStatus::NotServing).await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::wire::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(crate::wire::inference::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::wire::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(crate::wire::inference::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        // Width and height are set per call: the answering model's, or the job's.
        let rules = ImageRules {
            width: 0,
            height: 0,
            limits: ImageLimits {
                max_side: self.config.max_image_side,
            },
            max_batch: self.config.engine.max_batch,
            decode_budget: self.config.max_decode_bytes,
        };
        let labeller = LabellerService::new(
            self.engine.clone(),
            rules,
            self.config.max_in_flight,
            self.metrics.clone(),
        );
        // The Open Inference Protocol shares the Labeller's slots and health status.
        let inference = oip::OpenInference::new(
            self.engine.clone(),
            labeller.admission(),
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
            self.config.engine.max_batch,
            self.metrics.clone(),
        );
        let inference_grpc = GrpcInferenceServiceServer::new(inference.clone())
            .max_decoding_message_size(self.config.max_message_bytes)
            .max_encoding_message_size(self.config.max_message_bytes);
        let door = labeller.door();
        let labeller = LabellerServer::new(labeller)
            .max_decoding_message_size(self.config.max_message_bytes)
            .max_encoding_message_size(self.config.max_message_bytes);
        // Label jobs live in the registry's database: only a registry-backed server has them.
        let work = Arc::new(Notify::new());
        let training_wake = Arc::new(Notify::new());
        let selection_threads = self.config.training.as_ref().map_or(1, |t| t.threads);
        // Who labelled an item: this server's worker, or `…/add` for its AddImages.
        let instance = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let models = self
            .store
            .clone()
            .map(|store| Arc::new(job_labelling::JobModels::new(store)));
        let jobs_service = self
            .store
            .clone()
            .zip(models.clone())
            .map(|(store, models)| {
                Arc::new(
                    LabelJobsService::new(store, self.engine.clone(), rules, work.clone(), models)
                        .labelling_on_arrival(
                            self.config
                                .jobs
                                .label_on_arrival
                                .then(|| format!("{instance}/add")),
                        )
                        .with_training(
                            training_wake.clone(),
                            selection_threads,
                            self.config.retrain_every,
                        ),
                )
            });
        let label_jobs = jobs_service.clone().map(|service| {
            LabelJobsServer::from_arc(service)
                .max_decoding_message_size(self.config.max_message_bytes)
                .max_encoding_message_size(self.config.max_message_bytes)
        });
        if label_jobs.is_some() {
            reporter
                .set_service_status(LABEL_JOBS_HEALTH_NAME, ServingStatus::NotServing)
                .await;
        }

        let security = &self.config.security;
        let auth = auth::AuthLayer::new(
            security.api_keys.clone(),
            self.metrics.clone(),
            security.open_metrics,
        );
        let (stopping_tx, stopping) = watch::channel(false);
        let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .max_frame_size(Some(MAX_FRAME_BYTES))
            .layer(tower::util::MapResponseLayer::new(codes::remap_response))
            .layer(auth.clone())
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(labeller)
            .add_service(inference_grpc)
            .add_optional_service(label_jobs);
        let grpc_stopped = async {
            let _ = grpc_stopped.await;
        };
        let mut server = match &self.tls {
            Some(tls) => tokio::spawn(router.serve_with_incoming_shutdown(
                tls::accept_tls(self.grpc, tls.grpc.clone()).into_stream(),
                grpc_stopped,
            )),
            None => tokio::spawn(router.serve_with_incoming_shutdown(
                TcpIncoming::from(self.grpc).with_nodelay(Some(true)),
                grpc_stopped,
            )),
        };
        if let (Some(tls), Some(settings)) = (&self.tls, &security.tls) {
            let cert = tls.cert.clone();
            tokio::spawn(tls::follow_files(
                cert,
                settings.reload_every,
                stopping.clone(),
            ));
        }
        let health_task =
            (self.health_listener).map(|listener| security::spawn_health_port(listener, &reporter));

        let (stop_http, http_stopped) = oneshot::channel::<()>();
        let mut routes = http::metrics_routes(self.metrics.clone())
            .merge(oip::rest::routes(inference, self.config.max_message_bytes));
        if let (Some(config), Some(jobs), Some(store)) = (
            self.config.label_studio.clone(),
            jobs_service,
            self.store.clone(),
        ) {
            routes = routes.merge(
                label_studio::routes(config, door, jobs, store).map_err(ServeError::Config)?,
            );
        }
        let http_task = self.http_listener.map(|listener| {
            let tls = self.tls.as_ref().map(|tls| tls.http.clone());
            http::spawn(listener, routes.layer(auth), tls, async {
                let _ = http_stopped.await;
            })
        });

        let grace = self.config.shutdown_grace;
        let status = reporter.clone();
        // Logged here, not in the task below, so that it always precedes warm-up's "serving".
        tracing::info!(addr = %self.grpc_addr, "listening");
        let task = tokio::spawn(async move {
            let finished = tokio::select! {
                _ = shutdown => None,
                result = &mut server => Some(result),
            };
            let _ = stopping_tx.send(true);
            set_status(&status, ServingStatus::NotServing).await;
            let _ = stop_http.send(());
            let result = match finished {
                Some(result) => result,
                None => {
                    tracing::info!(
                        grace_seconds = grace.as_secs_f64(),
                        "shutting down: finishing in-flight requests"
                    );
                    let _ = stop_grpc.send(());
                    match tokio::time::timeout(grace, &mut server).await {
                        Ok(result) => result,
                        Err(_) => {
                            tracing::warn!("grace period over: dropping the calls still open");
                            server.abort();
                            Ok(Ok(()))
                        }
                    }
                }
            };
            if let Some(task) = http_task {
                task.abort();
            }
            if let Some(task) = health_task {
                task.abort();
            }
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ServeError::Transport(e)),
                Err(e) => Err(ServeError::Config(format!("the server task failed: {e}"))),
            }
        });
        let poll = match &self.config.model {
            ModelSource::Registry { poll, .. } => *poll,
            ModelSource::File(_) => DEFAULT_POLL,
        };
        let trainer =
            self.store
                .clone()
                .zip(self.config.training.clone())
                .map(|(store, config)| training_worker::TrainingWorker {
                    store,
                    config,
                    wake: training_wake,
                    stopping: stopping.clone(),
                });
        let worker = self
            .store
            .clone()
            .zip(models)
            .map(|(store, models)| job_worker::JobWorker {
                store,
                engine: self.engine.clone(),
                config: self.config.jobs,
                work,
                reporter: reporter.clone(),
                stopping: stopping.clone(),
                models,
                id: instance,
            });
        let follower = reload::Follower {
            handle: self.engine.clone(),
            store: self.store,
            config: self.config,
            poll,
            metrics: self.metrics,
            reporter: reporter.clone(),
            stopping,
        };
        Ok(Running {
            engine: self.engine,
            reporter,
            task,
            follower: std::sync::Mutex::new(Some(follower)),
            worker: std::sync::Mutex::new(worker),
            trainer: std::sync::Mutex::new(trainer),
        })
    }
}

/// The engine serving now, or `UNAVAILABLE` with [`NO_MODEL`] while there is none.
pub(crate) fn serving_engine(handle: &EngineHandle) -> Result<Arc<Engine>, tonic::Status> {
    handle
        .current()
        .ok_or_else(|| tonic::Status::unavailable(NO_MODEL))
}

/// Sets the Labeller's status and the whole server's with it: both follow a loaded model.
/// (With no model yet, [`Running::warm_up`] reports the whole server alone `SERVING`.)
async fn set_status(reporter: &HealthReporter, status: ServingStatus) {
    reporter
        .set_service_status(SERVER_HEALTH_NAME, status)
        .await;
    reporter
        .set_service_status(LABELLER_HEALTH_NAME, status)
        .await;
}

/// A server that is answering calls.
pub struct Running {
    engine: Arc<EngineHandle>,
    reporter: HealthReporter,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    follower: std::sync::Mutex<Option<reload::Follower>>,
    worker: std::sync::Mutex<Option<job_worker::JobWorker>>,
    trainer: std::sync::Mutex<Option<training_worker::TrainingWorker>>,
}

impl Running {
    /// Test hook, not an API: ends the current engine's worker thread as a crash would (see
    /// [`crate::inference::Engine::stop_worker`]), so tests can check that health follows it
    /// through the real server. False when no model is loaded.
    #[doc(hidden)]
    pub fn stop_engine_worker(&self) -> bool {
        match self.engine.current() {
            Some(engine) => {
                engine.stop_worker();
                true
            }
            None => false,
        }
    }

    /// Runs the model once on the engine's threads, reports `SERVING`, and from then on
    /// follows the registry (when serving from it) and the engine's health. With no model
    /// yet, only the whole server turns `SERVING`; the Labeller follows the first activation.
    pub async fn warm_up(&self) -> Result<(), ServeError> {
        match self.engine.current() {
            Some(engine) => {
                let version = engine.meta().version.clone();
                tokio::task::spawn_blocking(move || engine.warm_up())
                    .await
                    .map_err(|e| ServeError::Config(format!("warm-up stopped: {e}")))??;
                set_status(&self.reporter, ServingStatus::Serving).await;
                tracing::info!(model = %version, "serving");
            }
            None => {
                self.reporter
                    .set_service_status(SERVER_HEALTH_NAME, ServingStatus::Serving)
                    .await;
                // "serving", like a server with a model: start-up is done.
                tracing::info!(model = "none yet", "serving");
            }
        }
        let follower = self
            .follower
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(follower) = follower {
            tokio::spawn(follower.run());
        }
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(worker) = worker {
            tokio::spawn(worker.run());
        }
        let trainer = self
            .trainer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(trainer) = trainer {
            tokio::spawn(trainer.run(false));
        }
        Ok(())
    }

    /// Waits until shutdown has finished.
    pub async fn stopped(self) -> Result<(), ServeError> {
        self.task
            .await
            .map_err(|e| ServeError::Config(format!("the server task failed: {e}")))?
    }
}

/// Waits for `signal`, or forever when it could not be installed.
#[cfg(unix)]
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Installs SIGINT (Ctrl-C) and SIGTERM handlers now, and returns a future that resolves when
/// either arrives. Installing before the server announces itself means a signal sent right
/// after "serving" is a graceful shutdown, not the default kill. Call inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).ok();
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                _ = recv(terminate.as_mut()) => {},
                _ = recv(interrupt.as_mut()) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
