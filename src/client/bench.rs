//! `aelabel bench --server`: a closed-loop load generator. `concurrency` clients, each on its
//! own connection, send the same request back to back for `duration` and time every answer.

use super::{channel, ClientError, CLIENT_MAX_MESSAGE_BYTES};
use crate::wire::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::wire::inference::{model_infer_request::InferInputTensor, ModelInferRequest};
use crate::wire::labeller_client::LabellerClient;
use crate::wire::{self as pb, code_name};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Which call to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rpc {
    /// `Encode`.
    Encode,
    /// `Label`.
    Label,
    /// `Reconstruct`.
    Reconstruct,
    /// The Open Inference Protocol's `ModelInfer` on `aelabel-encoder`, the images as one raw
    /// UINT8 [batch, height, width] tensor: the same work as `Encode`.
    ModelInfer,
}

/// One load test.
#[derive(Clone, Debug)]
pub struct LoadTest {
    /// The server and how to reach it.
    pub server: super::Target,
    /// Which call.
    pub rpc: Rpc,
    /// Images per request.
    pub batch: usize,
    /// Clients sending at once, one connection each.
    pub concurrency: usize,
    /// How long to send.
    pub duration: Duration,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// What a load test measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Which call.
    pub rpc: Rpc,
    /// Images per request.
    pub batch: usize,
    /// Clients.
    pub concurrency: usize,
    /// Measured wall time.
    pub seconds: f64,
    /// Successful requests.
    pub requests: u64,
    /// Successful requests per second.
    pub requests_per_second: f64,
    /// Images answered per second.
    pub images_per_second: f64,
    /// Latency of successful requests.
    pub latency: Latency,
    /// Failed requests by status code.
    pub errors: BTreeMap<String, u64>,
}

impl LoadReport {
    /// One human-readable paragraph.
    pub fn to_text(&self) -> String {
        let errors = if self.errors.is_empty() {
            "no errors".to_string()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{:?} batch {} × {} clients for {:.1} s: {} requests, {:.0} requests/s, {:.0} images/s; latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {errors}",
            self.rpc, self.batch, self.concurrency, self.seconds, self.requests,
            self.requests_per_second, self.images_per_second, self.latency.p50_ms,
            self.latency.p90_ms, self.latency.p99_ms, self.latency.max_ms
        )
    }
}

/// Deterministic, non-constant pixels so every image exercises the whole model.
fn synthetic_images(batch: usize, width: u32, height: u32) -> Vec<pb::Image> {
    let size = (width * height) as usize;
    (0..batch)
        .map(|k| pb::Image {
            id: k.to_string(),
            data: Some(pb::image::Data::Raw(pb::RawImage {
                width,
                height,
                pixels: (0..size).map(|i| ((i * 7 + k * 13) % 256) as u8).collect(),
            })),
        })
        .collect()
}

/// `images` (raw, all `width` × `height`) as one `ModelInfer` request to `aelabel-encoder`.
fn model_infer_request(images: &[pb::Image], width: u32, height: u32) -> ModelInferRequest {
    let pixels: Vec<u8> = images
        .iter()
        .filter_map(|image| match &image.data {
            Some(pb::image::Data::Raw(raw)) => Some(raw.pixels.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    ModelInferRequest {
        model_name: "aelabel-encoder".into(),
        inputs: vec![InferInputTensor {
            name: "images".into(),
            datatype: "UINT8".into(),
            shape: vec![images.len() as i64, i64::from(height), i64::from(width)],
            parameters: Default::default(),
            contents: None,
        }],
        raw_input_contents: vec![pixels.into()],
        ..Default::default()
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs the load test and summarises it.
pub async fn run_load(test: &LoadTest) -> Result<LoadReport, ClientError> {
    if test.batch == 0 || test.concurrency == 0 {
        return Err(ClientError::Usage(
            "--batch and --concurrency must be at least 1".into(),
        ));
    }
    let mut probe = super::connect(&test.server).await?;
    let info = probe
        .get_model_info(pb::GetModelInfoRequest {})
        .await?
        .into_inner();
    let images = synthetic_images(test.batch, info.input_width, info.input_height);
    let infer = model_infer_request(&images, info.input_width, info.input_height);
    let mut channels = Vec::with_capacity(test.concurrency);
    for _ in 0..test.concurrency {
        channels.push(channel(&test.server).await?);
    }
    let started = Instant::now();
    let deadline = started + test.duration;
    let mut tasks = Vec::new();
    for channel in channels {
        let mut client = LabellerClient::new(channel.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(CLIENT_MAX_MESSAGE_BYTES);
        let mut inference = GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(CLIENT_MAX_MESSAGE_BYTES);
        let infer = infer.clone();
        let images = images.clone();
        let rpc = test.rpc;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                let images = images.clone();
                let sent = Instant::now();
                let result = match rpc {
                    Rpc::Encode => client
                        .encode(pb::EncodeRequest { images })
                        .await
                        .map(|_| ()),
                    Rpc::Label => client
                        .label(pb::LabelRequest {
                            images,
                            review_threshold: None,
                        })
                        .await
                        .map(|_| ()),
                    Rpc::Reconstruct => client
                        .reconstruct(pb::ReconstructRequest {
                            images,
                            include_values: false,
                        })
                        .await
                        .map(|_| ()),
                    Rpc::ModelInfer => inference.model_infer(infer.clone()).await.map(|_| ()),
                };
                match result {
                    Ok(()) => latencies.push(sent.elapsed().as_secs_f64() * 1e3),
                    Err(status) => {
                        *errors
                            .entry(code_name(status.code()).to_string())
                            .or_default() += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let (l, e) = task
            .await
            .map_err(|e| ClientError::Usage(format!("a load client crashed: {e}")))?;
        latencies.extend(l);
        for (code, n) in e {
            *errors.entry(code).or_default() += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let requests = latencies.len() as u64;
    Ok(LoadReport {
        rpc: test.rpc,
        batch: test.batch,
        concurrency: test.concurrency,
        seconds,
        requests,
        requests_per_second: requests as f64 / seconds,
        images_per_second: (requests as usize * test.batch) as f64 / seconds,
        latency: Latency {
            p50_ms: percentile(&latencies, 0.5),
            p90_ms: percentile(&latencies, 0.9),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: latencies.last().copied().unwrap_or(0.0),
        },
        errors,
    })
}

/// In-process engine throughput and single-image latency (`aelabel bench engine`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EngineReport {
    /// Task measured.
    pub task: String,
    /// Images per batched pass.
    pub batch: usize,
    /// Engine threads.
    pub threads: usize,
    /// Batched throughput.
    pub images_per_second: f64,
    /// Batched images per second of CPU time spent by the whole process (Linux; `null`
    /// elsewhere): on a shared machine it shows the engine's own efficiency where wall time
    /// also shows the neighbours.
    pub images_per_cpu_second: Option<f64>,
    /// Median time of a one-image pass, in microseconds.
    pub single_image_p50_us: f64,
    /// 99th percentile of a one-image pass, in microseconds.
    pub single_image_p99_us: f64,
}

/// Times `Engine::run_blocking`: batches of `batch` for `duration`, then one-image passes.
pub fn bench_engine(
    engine: &crate::inference::Engine,
    task: crate::inference::Task,
    batch: usize,
    threads: usize,
    duration: Duration,
    sample: &[u8],
) -> Result<EngineReport, crate::inference::EngineError> {
    use crate::inference::ImageBatch;
    let size = engine.image_size();
    // Real images (blank pixels included) cycled to fill the batch.
    let pixels: Vec<u8> = sample.iter().copied().cycle().take(batch * size).collect();
    let images = ImageBatch::new(pixels, size).ok_or(crate::inference::EngineError::Stopped)?;
    engine.run_blocking(task, &images)?;
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let mut passes = 0usize;
    while started.elapsed() < duration {
        std::hint::black_box(engine.run_blocking(task, &images)?);
        passes += 1;
    }
    let images_per_second = (passes * batch) as f64 / started.elapsed().as_secs_f64();
    let images_per_cpu_second = cpu_before
        .zip(process_cpu_seconds())
        .map(|(before, after)| (passes * batch) as f64 / (after - before).max(1e-9));
    let singles: Vec<ImageBatch> = images
        .pixels()
        .chunks_exact(size)
        .filter_map(|p| ImageBatch::new(p.to_vec(), size))
        .collect();
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration / 2 || times.len() < 100 {
        let one = &singles[times.len() % singles.len()];
        let t = Instant::now();
        std::hint::black_box(engine.run_blocking(task, one)?);
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(EngineReport {
        task: task.name().to_string(),
        batch,
        threads,
        images_per_second,
        images_per_cpu_second,
        single_image_p50_us: percentile(&times, 0.5),
        single_image_p99_us: percentile(&times, 0.99),
    })
}

/// CPU time all threads of this process have run, from `/proc/self/task/*/schedstat`
/// (nanoseconds on a CPU); `None` where that is not readable. Threads that already ended are
/// not counted, which suits the engine's long-lived pool.
fn process_cpu_seconds() -> Option<f64> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        nanos += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(nanos as f64 * 1e-9)
}
