//! Prometheus metrics for the server; [`super::http`] serves them at `/metrics`.
//!
//! The `prometheus` crate (TiKV's) keeps typed handles in an explicit registry, so tests can
//! build a server without touching global state, and its text encoder is all `/metrics` needs.

use crate::inference::{EngineObserver, Task};
use crate::wire::code_name;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    images: IntCounterVec,
    batch_images: HistogramVec,
    batch_seconds: HistogramVec,
    queue_depth: IntGauge,
    in_flight: IntGauge,
    model: IntGaugeVec,
    reloads: IntCounterVec,
    auth: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

impl Metrics {
    /// A fresh registry with every metric registered; `model_version` (none while no model is
    /// active) is exported as a label.
    pub fn new(model_version: Option<&str>) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "aelabel_requests_total",
                "gRPC requests (stream messages count one each) by method and status code",
            ),
            &["method", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "aelabel_request_duration_seconds",
                "Time from receiving a request to its answer, by method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )?;
        let images = IntCounterVec::new(
            Opts::new(
                "aelabel_images_total",
                "Images answered successfully, by method",
            ),
            &["method"],
        )?;
        let batch_images = HistogramVec::new(
            HistogramOpts::new(
                "aelabel_batch_images",
                "Images per forward pass after dynamic batching, by task",
            )
            .buckets(BATCH_BUCKETS.to_vec()),
            &["task"],
        )?;
        let batch_seconds = HistogramVec::new(
            HistogramOpts::new("aelabel_batch_seconds", "Time of one forward pass, by task")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["task"],
        )?;
        let queue_depth = IntGauge::new(
            "aelabel_queue_images",
            "Images waiting for the inference engine",
        )?;
        let in_flight = IntGauge::new(
            "aelabel_in_flight_requests",
            "Requests holding an in-flight slot",
        )?;
        let model = IntGaugeVec::new(
            Opts::new(
                "aelabel_model_info",
                "The served model; the value is always 1",
            ),
            &["version"],
        )?;
        if let Some(version) = model_version {
            model.with_label_values(&[version]).set(1);
        }
        let reloads = IntCounterVec::new(
            Opts::new(
                "aelabel_model_reloads_total",
                "Activated registry versions this server tried to load, by outcome (loaded, refused)",
            ),
            &["outcome"],
        )?;
        for outcome in ["loaded", "refused"] {
            reloads.with_label_values(&[outcome]).reset();
        }
        let auth = IntCounterVec::new(
            Opts::new(
                "aelabel_auth_requests_total",
                "Requests checked against --api-keys-file, by key name ((none), (unknown) when no key matched) and outcome (allowed, unauthenticated, permission_denied)",
            ),
            &["key", "outcome"],
        )?;
        registry.register(Box::new(auth.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(images.clone()))?;
        registry.register(Box::new(batch_images.clone()))?;
        registry.register(Box::new(batch_seconds.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(model.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            images,
            batch_images,
            batch_seconds,
            queue_depth,
            in_flight,
            model,
            reloads,
            auth,
        })
    }

    /// The served model changed: `aelabel_model_info` names only `version` from now on.
    pub fn set_model(&self, version: &str) {
        self.model.reset();
        self.model.with_label_values(&[version]).set(1);
    }

    /// Counts one attempt to load an activated version (`loaded` or `refused`).
    pub fn reload_done(&self, loaded: bool) {
        let outcome = if loaded { "loaded" } else { "refused" };
        self.reloads.with_label_values(&[outcome]).inc();
    }

    /// Counts one request the API-key layer decided on: the key's name (never the key) and
    /// the outcome.
    pub fn auth_done(&self, key: &str, outcome: &str) {
        self.auth.with_label_values(&[key, outcome]).inc();
    }

    /// Records one answered request.
    pub fn request_done(&self, method: &str, code: tonic::Code, images: usize, seconds: f64) {
        self.requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        self.latency.with_label_values(&[method]).observe(seconds);
        if code == tonic::Code::Ok {
            self.images
                .with_label_values(&[method])
                .inc_by(images as u64);
        }
    }

    /// One more request holds an in-flight slot.
    pub fn slot_taken(&self) {
        self.in_flight.inc();
    }

    /// One request gave its in-flight slot back.
    pub fn slot_released(&self) {
        self.in_flight.dec();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl EngineObserver for Metrics {
    fn queue_depth(&self, images: usize) {
        self.queue_depth.set(images as i64);
    }

    fn batch_done(&self, task: Task, images: usize, _jobs: usize, seconds: f64) {
        self.batch_images
            .with_label_values(&[task.name()])
            .observe(images as f64);
        self.batch_seconds
            .with_label_values(&[task.name()])
            .observe(seconds);
    }
}
