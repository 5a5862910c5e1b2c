//! One small model trained once per test binary, and a real server on 127.0.0.1:0 around it.
//! A server whose settings ask for TLS and API keys ([`super::tls::Doors`]) is reached the
//! same way: the harness's clients trust the test CA and send the key with every scope.

use aelabel::client::{Connection, Target};
use aelabel::inference::EngineConfig;
use aelabel::pipeline::{run, PipelineConfig};
use aelabel::service::{Application, JobWorkerConfig, ModelSource, Running, Security, ServeConfig};
use aelabel::train::Silent;
use aelabel::wire::labeller_client::LabellerClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// The test models' folders: temporary directories, removed when the test process exits.
static MODEL_DIRS: Mutex<Vec<tempfile::TempDir>> = Mutex::new(Vec::new());

extern "C" {
    /// The C library's exit hook: statics are never dropped, so this is how the model folders
    /// are removed at the end of the test binary.
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn remove_model_dirs() {
    if let Ok(dirs) = MODEL_DIRS.lock() {
        for dir in dirs.iter() {
            let _ = std::fs::remove_dir_all(dir.path());
        }
    }
}

/// Trains a small model on a data subset (with `seed`, else the quick pipeline's), in a fresh
/// temporary folder that is removed when the test process exits; returns its file.
fn train_test_model(seed: Option<u64>) -> PathBuf {
    static CLEAN_UP_AT_EXIT: Once = Once::new();
    // SAFETY: registers a plain function with no arguments; it only reads a static.
    CLEAN_UP_AT_EXIT.call_once(|| unsafe {
        atexit(remove_model_dirs);
    });
    let dir = tempfile::Builder::new()
        .prefix("aelabel-test-model-")
        .tempdir()
        .expect("a temporary folder for the test model");
    let config = PipelineConfig {
        pretrain_epochs: Some(1),
        finetune_epochs: Some(5),
        self_training_rounds: Some(0),
        train_limit: Some(3000),
        eval_limit: Some(500),
        tsne_points: 0,
        ..super::quick_pipeline_config(dir.path())
    };
    let config = PipelineConfig {
        seed: seed.unwrap_or(config.seed),
        ..config
    };
    run(&config, &Silent).expect("the test model trains");
    let path = dir.path().join("model.safetensors");
    MODEL_DIRS.lock().expect("the model folder list").push(dir);
    path
}

/// Trains (once per process) a small model on a data subset; returns its file.
pub fn model_path() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| train_test_model(None))
}

/// A second test model, trained like [`model_path`]'s with another seed: a different version.
pub fn second_model_path() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| train_test_model(Some(11)))
}

/// Registers the test model ([`model_path`]) in the registry at `url`, where it becomes the
/// active version; returns that version.
pub async fn register_test_model(url: &str) -> String {
    use aelabel::store::{NewModel, Store};
    let store = Store::connect(url).await.expect("the registry opens");
    let path = model_path();
    let (model, sha256) =
        aelabel::model::Model::load_with_sha256(path).expect("the test model loads");
    let record = NewModel::from_checkpoint(&model.meta, path.to_path_buf(), sha256);
    store
        .register_model(&record)
        .await
        .expect("the test model registers");
    store.close().await;
    record.version
}

/// Server settings for tests: loopback port 0, metrics on, small limits.
pub fn config() -> ServeConfig {
    settings(ModelSource::File(model_path().to_path_buf()))
}

/// [`config`]'s settings following the registry at `url` (polled every `poll`, the job worker
/// too), without training the test model: for servers that start with no model.
pub fn registry_config(url: &str, poll: Duration) -> ServeConfig {
    ServeConfig {
        jobs: JobWorkerConfig {
            poll,
            ..JobWorkerConfig::default()
        },
        ..settings(ModelSource::Registry {
            database_url: url.to_string(),
            poll,
        })
    }
}

/// The test settings around `model`.
fn settings(model: ModelSource) -> ServeConfig {
    ServeConfig {
        model,
        addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        engine: EngineConfig {
            threads: 1,
            max_batch: 512,
            max_queue_delay: Duration::ZERO,
        },
        max_in_flight: 64,
        max_message_bytes: 4 << 20,
        max_image_side: 1024,
        max_decode_bytes: 256 << 20,
        shutdown_grace: Duration::from_secs(5),
        jobs: JobWorkerConfig::default(),
        label_studio: None,
        training: None,
        retrain_every: None,
        security: Security::default(),
    }
}

/// A started server and the means to stop it.
pub struct TestServer {
    /// gRPC address.
    pub addr: SocketAddr,
    /// Metrics address.
    pub http_addr: SocketAddr,
    /// The plaintext health-only address, when the settings asked for one.
    pub health_addr: Option<SocketAddr>,
    /// How clients reach it: TLS trusting the test CA, and the admin key, when asked for.
    target: Target,
    stop: Option<oneshot::Sender<()>>,
    running: Option<Running>,
}

impl TestServer {
    /// Builds and starts a server; warms it up (SERVING) unless `warm` is false.
    pub async fn start(config: ServeConfig, warm: bool) -> Self {
        // TestPki keeps its CA beside the server certificate.
        let ca_cert = (config.security.tls.as_ref()).map(|tls| tls.cert.with_file_name("ca.pem"));
        let api_key =
            (config.security.api_keys.as_ref()).map(|_| super::tls::admin_key().to_string());
        let app = Application::build(config).await.expect("server builds");
        let addr = app.grpc_addr();
        let http_addr = app.http_addr().expect("the HTTP port on");
        let health_addr = app.health_addr();
        let target = Target {
            server: addr.to_string(),
            ca_cert,
            client_identity: None,
            api_key,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let running = app
            .start(async {
                let _ = stopped.await;
            })
            .await
            .expect("server starts");
        if warm {
            running.warm_up().await.expect("warm-up");
        }
        Self {
            addr,
            http_addr,
            health_addr,
            target,
            stop: Some(stop),
            running: Some(running),
        }
    }

    /// The default test server, warmed up.
    pub async fn default() -> Self {
        Self::start(config(), true).await
    }

    /// `http://127.0.0.1:PORT`, or `https://` over TLS.
    pub fn url(&self) -> String {
        self.target.url()
    }

    /// How a client reaches the gRPC port (TLS and key as the server asks).
    pub fn target(&self) -> Target {
        self.target.clone()
    }

    /// A fresh connection, sending the admin key when the server asks for keys.
    pub async fn channel(&self) -> Connection {
        aelabel::client::channel(&self.target)
            .await
            .expect("connects")
    }

    /// `http(s)://127.0.0.1:PORT{path}` on the HTTP port.
    pub fn http_url(&self, path: &str) -> String {
        let scheme = if self.target.uses_tls() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{path}", self.http_addr)
    }

    /// An HTTP client for the HTTP port: trusts the test CA when the server speaks TLS.
    /// Requests carry no key; add `bearer_auth` where one is needed.
    pub fn http_client(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &self.target.ca_cert {
            let pem = std::fs::read(ca).expect("the test CA reads");
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA"));
        }
        builder.build().expect("an HTTP client")
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let response = self
            .http_client()
            .get(self.http_url("/metrics"))
            .send()
            .await
            .expect("/metrics answers");
        assert_eq!(response.status(), 200, "/metrics");
        response.text().await.expect("the /metrics text")
    }

    /// A Labeller client on a fresh connection.
    pub async fn client(&self) -> LabellerClient<Connection> {
        LabellerClient::new(self.channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Runs the deferred warm-up of a server started with `warm = false`.
    pub async fn warm_up(&self) {
        self.running
            .as_ref()
            .expect("running")
            .warm_up()
            .await
            .expect("warm-up");
    }

    /// Ends the engine's worker thread as a crash would (the server's test hook).
    pub fn stop_engine_worker(&self) {
        let running = self.running.as_ref().expect("running");
        assert!(running.stop_engine_worker(), "the server has a model");
    }

    /// Starts shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Starts shutdown and waits until the server has stopped.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(20), running.stopped())
                .await
                .expect("stops within the grace period")
                .expect("stops cleanly");
        }
    }
}

/// A raw 28×28 wire image.
pub fn raw_image(id: &str, pixels: &[u8]) -> aelabel::wire::Image {
    use aelabel::wire as pb;
    pb::Image {
        id: id.to_string(),
        data: Some(pb::image::Data::Raw(pb::RawImage {
            width: 28,
            height: 28,
            pixels: pixels.to_vec().into(),
        })),
    }
}

/// The first `n` test images as 8-bit pixels, with their labels.
pub fn test_images(n: usize) -> (Vec<u8>, Vec<u8>) {
    let dir = super::data_dir();
    let images = aelabel::data::read_idx_images(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let labels =
        aelabel::data::read_idx_labels(&dir.join("t10k-labels-idx1-ubyte.gz"), 10).unwrap();
    (images.pixels[..n * 784].to_vec(), labels[..n].to_vec())
}
